//! Reports, PDF for filing: a [`Document`] laid out on A4 pages (portrait for forms,
//! landscape for wide statistical tables) with a Japanese font, written with pdf-writer; the
//! font is embedded as a subset of the glyphs used (subsetter), as a CID font with a
//! ToUnicode map so that the text can be searched and extracted. Tables repeat their header
//! on a new page and shrink their type to fit the page width; charts are vector bars with
//! their values.
//!
//! The font is found at run time: the configured `report_font`, else Debian's IPA Gothic
//! (`fonts-ipafont-gothic`, IPA Font Licence: redistribution allowed) or another common
//! Japanese font. Without one, rendering fails with [`PdfError::NoFont`], a bilingual
//! message that says what to install.
//!
//! Guarantees: the PDF carries exactly the text of the document it renders (suppressed
//! cells as the document writes them, never a number); a character the font lacks is
//! written as a close equivalent or `?`, never dropped silently into a missing glyph.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use pdf_writer::types::{CidFontType, FontFlags, SystemInfo, UnicodeCmap};
use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref, Str, TextStr};
use subsetter::GlyphRemapper;

use super::document::{Block, Chart, Document, Table, chart_max, colour};

/// Fonts tried when `report_font` is not set, in order.
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
    "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf",
    "/usr/share/fonts/truetype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
];

/// Why a PDF could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error(
        "no font that renders Japanese was found for PDF reports (tried {tried}); install Debian's fonts-ipafont-gothic (`apt-get install fonts-ipafont-gothic`) or set `report_font` (KURA_REPORT_FONT) to a TrueType/OpenType font file / PDF 報告書用の日本語フォントが見つかりません。fonts-ipafont-gothic をインストールするか、report_font にフォントファイルを指定してください"
    )]
    NoFont { tried: String },
    #[error(
        "the report font {path} cannot be used ({reason}); set `report_font` to a TrueType/OpenType font that covers Japanese / 指定された報告書用フォント {path} を使用できません"
    )]
    BadFont { path: PathBuf, reason: String },
    #[error("the PDF could not be written: {0}")]
    Write(String),
}

/// A font file held in memory (read once per process and path).
#[derive(Clone)]
pub struct ReportFont {
    pub path: PathBuf,
    data: Arc<Vec<u8>>,
}

impl std::fmt::Debug for ReportFont {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportFont")
            .field("path", &self.path)
            .finish()
    }
}

impl ReportFont {
    /// The configured font, else the first candidate present.
    pub fn find(configured: Option<&Path>) -> Result<Self, PdfError> {
        match configured {
            Some(p) => Self::load(p),
            None => FONT_CANDIDATES
                .iter()
                .map(Path::new)
                .find(|p| p.is_file())
                .map(Self::load)
                .unwrap_or_else(|| {
                    Err(PdfError::NoFont {
                        tried: FONT_CANDIDATES.join(", "),
                    })
                }),
        }
    }

    fn load(path: &Path) -> Result<Self, PdfError> {
        static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Vec<u8>>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(hit) = cache.lock().expect("font cache").get(path) {
            return Ok(Self {
                path: path.to_path_buf(),
                data: hit.clone(),
            });
        }
        let bad = |reason: String| PdfError::BadFont {
            path: path.to_path_buf(),
            reason,
        };
        let data = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let face = ttf_parser::Face::parse(&data, 0).map_err(|e| bad(e.to_string()))?;
        if face.glyph_index('秘').is_none() || face.glyph_index('A').is_none() {
            return Err(bad("it has no Japanese glyphs".into()));
        }
        let data = Arc::new(data);
        cache
            .lock()
            .expect("font cache")
            .insert(path.to_path_buf(), data.clone());
        Ok(Self {
            path: path.to_path_buf(),
            data,
        })
    }
}

/// Text measuring with one font.
struct Type<'a> {
    face: ttf_parser::Face<'a>,
}

impl Type<'_> {
    /// Width of `text` at `size` points.
    fn width(&self, text: &str, size: f32) -> f32 {
        let units: f32 = text
            .chars()
            .map(|c| {
                self.face
                    .glyph_index(c)
                    .and_then(|g| self.face.glyph_hor_advance(g))
                    .unwrap_or(0) as f32
            })
            .sum();
        units * size / f32::from(self.face.units_per_em())
    }

    /// The text with characters the font lacks replaced.
    fn clean(&self, text: &str) -> String {
        text.chars()
            .map(|c| {
                if self.face.glyph_index(c).is_some() || c == ' ' {
                    return c;
                }
                let alt = match c {
                    '–' | '—' | '−' | '‐' => '-',
                    '〜' | '～' => '~',
                    '“' | '”' => '"',
                    '‘' | '’' => '\'',
                    _ => '?',
                };
                if self.face.glyph_index(alt).is_some() {
                    alt
                } else {
                    '?'
                }
            })
            .collect()
    }

    /// Lines of `text` no wider than `max` (breaks at a space where one is near).
    fn wrap(&self, text: &str, size: f32, max: f32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut line = String::new();
        for c in text.chars() {
            line.push(c);
            if self.width(&line, size) > max && line.chars().count() > 1 {
                line.pop();
                let cut = line
                    .rfind(' ')
                    .filter(|&i| i > line.len() / 2)
                    .unwrap_or(line.len());
                let rest = line[cut..].trim_start().to_string();
                lines.push(line[..cut].to_string());
                line = rest;
                line.push(c);
            }
        }
        if !line.is_empty() || lines.is_empty() {
            lines.push(line);
        }
        lines
    }
}

const MARGIN: f32 = 42.0;
/// The page being filled.
struct Cursor {
    y: f32,
    width: f32,
    height: f32,
}

/// One drawing operation on a page (y measured down from the top).
enum Op {
    Text {
        x: f32,
        y: f32,
        size: f32,
        s: String,
    },
    Rect {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        c: (u8, u8, u8),
    },
    Line {
        x0: f32,
        y0: f32,
        x1: f32,
        y1: f32,
        width: f32,
    },
}

/// The glyphs a document uses, renumbered for the subset font, with their text.
struct Glyphs {
    remapper: GlyphRemapper,
    /// Original glyph id of each new one, in new order.
    olds: Vec<u16>,
    /// The character each new glyph stands for (for the ToUnicode map).
    chars: Vec<Option<char>>,
}

impl Glyphs {
    fn new() -> Self {
        let mut g = Glyphs {
            remapper: GlyphRemapper::new(),
            olds: Vec::new(),
            chars: Vec::new(),
        };
        g.id(0, None);
        g
    }

    fn id(&mut self, old: u16, c: Option<char>) -> u16 {
        let new = self.remapper.remap(old);
        if usize::from(new) == self.olds.len() {
            self.olds.push(old);
            self.chars.push(c);
        }
        new
    }

    /// The text as two-byte codes of the subset font (Identity-H).
    fn encode(&mut self, ty: &Type, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() * 2);
        for c in ty.clean(text).chars() {
            let old = ty.face.glyph_index(c).map_or(0, |g| g.0);
            out.extend_from_slice(&self.id(old, Some(c)).to_be_bytes());
        }
        out
    }
}

/// Render `doc` as PDF with `font`; `landscape` for wide statistical tables.
pub fn render(doc: &Document, font: &ReportFont, landscape: bool) -> Result<Vec<u8>, PdfError> {
    let bad = |reason: String| PdfError::BadFont {
        path: font.path.clone(),
        reason,
    };
    let face = ttf_parser::Face::parse(&font.data, 0).map_err(|e| bad(e.to_string()))?;
    let ty = Type { face };
    let (w, h) = if landscape {
        (842.0, 595.0)
    } else {
        (595.0, 842.0)
    };
    let pages = paginate(doc, &ty, w, h);
    let mut glyphs = Glyphs::new();
    let contents: Vec<Vec<u8>> = pages
        .iter()
        .map(|ops| content(ops, &ty, &mut glyphs, h))
        .collect();
    let subset = subsetter::subset(&font.data, 0, &glyphs.remapper)
        .map_err(|e| bad(format!("subsetting failed: {e}")))?;
    Ok(write_pdf(doc, &ty, &glyphs, &subset, &contents, (w, h)))
}

const FONT: Name = Name(b"F1");

/// One page's content stream (PDF coordinates: y up from the bottom).
fn content(ops: &[Op], ty: &Type, glyphs: &mut Glyphs, h: f32) -> Vec<u8> {
    let mut c = Content::new();
    let rgb = |v: u8| f32::from(v) / 255.0;
    for op in ops {
        match op {
            Op::Text { x, y, size, s } => {
                let codes = glyphs.encode(ty, s);
                c.set_fill_rgb(0.0, 0.0, 0.0);
                c.begin_text();
                c.set_font(FONT, *size);
                c.next_line(*x, h - *y);
                c.show(Str(&codes));
                c.end_text();
            }
            Op::Rect {
                x,
                y,
                w,
                h: rh,
                c: (r, g, b),
            } => {
                c.set_fill_rgb(rgb(*r), rgb(*g), rgb(*b));
                c.rect(*x, h - *y - *rh, w.max(0.1), rh.max(0.1));
                c.fill_nonzero();
            }
            Op::Line {
                x0,
                y0,
                x1,
                y1,
                width,
            } => {
                c.set_stroke_rgb(0.0, 0.0, 0.0);
                c.set_line_width(*width);
                c.move_to(*x0, h - *y0);
                c.line_to(*x1, h - *y1);
                c.stroke();
            }
        }
    }
    c.finish().to_vec()
}

/// The font's PostScript name (for the subset's BaseFont).
fn ps_name(face: &ttf_parser::Face) -> String {
    face.names()
        .into_iter()
        .find(|n| n.name_id == ttf_parser::name_id::POST_SCRIPT_NAME)
        .and_then(|n| n.to_string())
        .filter(|n| !n.is_empty() && n.is_ascii() && !n.contains(' '))
        .unwrap_or_else(|| "KuraReportFont".into())
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

/// The PDF objects: catalog, page tree, pages, the subset Type 0 font and its ToUnicode.
fn write_pdf(
    doc: &Document,
    ty: &Type,
    glyphs: &Glyphs,
    subset: &[u8],
    contents: &[Vec<u8>],
    (w, h): (f32, f32),
) -> Vec<u8> {
    let mut pdf = Pdf::new();
    let mut next = 0;
    let mut alloc = || {
        next += 1;
        Ref::new(next)
    };
    let (catalog, tree, info) = (alloc(), alloc(), alloc());
    let (type0, cid, descriptor, file, cmap) = (alloc(), alloc(), alloc(), alloc(), alloc());
    let page_ids: Vec<(Ref, Ref)> = contents.iter().map(|_| (alloc(), alloc())).collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(page_ids.iter().map(|(p, _)| *p))
        .count(page_ids.len() as i32);
    pdf.document_info(info)
        .title(TextStr(&doc.title))
        .creator(TextStr("kura"));
    for ((page, content_id), bytes) in page_ids.iter().zip(contents) {
        let mut p = pdf.page(*page);
        p.media_box(Rect::new(0.0, 0.0, w, h));
        p.parent(tree);
        p.contents(*content_id);
        p.resources().fonts().pair(FONT, type0);
        p.finish();
        pdf.stream(*content_id, bytes);
    }
    let base = format!("KURAAA+{}", ps_name(&ty.face));
    let upem = f32::from(ty.face.units_per_em());
    let scale = |v: i16| f32::from(v) * 1000.0 / upem;
    pdf.type0_font(type0)
        .base_font(Name(base.as_bytes()))
        .encoding_predefined(Name(b"Identity-H"))
        .descendant_font(cid)
        .to_unicode(cmap);
    let system = SystemInfo {
        registry: Str(b"Adobe"),
        ordering: Str(b"Identity"),
        supplement: 0,
    };
    let widths: Vec<f32> = glyphs
        .olds
        .iter()
        .map(|&g| {
            let adv = ty
                .face
                .glyph_hor_advance(ttf_parser::GlyphId(g))
                .unwrap_or(0);
            f32::from(adv) * 1000.0 / upem
        })
        .collect();
    let mut c = pdf.cid_font(cid);
    c.subtype(CidFontType::Type2)
        .base_font(Name(base.as_bytes()))
        .system_info(system)
        .font_descriptor(descriptor)
        .default_width(1000.0)
        .cid_to_gid_map_predefined(Name(b"Identity"));
    c.widths().consecutive(0, widths);
    c.finish();
    let bbox = ty.face.global_bounding_box();
    pdf.font_descriptor(descriptor)
        .name(Name(base.as_bytes()))
        .flags(FontFlags::SYMBOLIC)
        .bbox(Rect::new(
            scale(bbox.x_min),
            scale(bbox.y_min),
            scale(bbox.x_max),
            scale(bbox.y_max),
        ))
        .italic_angle(0.0)
        .ascent(scale(ty.face.ascender()))
        .descent(scale(ty.face.descender()))
        .cap_height(scale(
            ty.face.capital_height().unwrap_or(ty.face.ascender()),
        ))
        .stem_v(80.0)
        .font_file2(file);
    let packed = deflate(subset);
    pdf.stream(file, &packed).filter(Filter::FlateDecode);
    let mut map = UnicodeCmap::new(Name(b"Custom"), system);
    for (new, ch) in glyphs.chars.iter().enumerate() {
        if let Some(ch) = ch {
            map.pair(new as u16, *ch);
        }
    }
    pdf.stream(cmap, &map.finish());
    pdf.finish()
}

/// Pages of operations: the layout, separate from drawing.
struct Layout<'a> {
    ty: &'a Type<'a>,
    pages: Vec<Vec<Op>>,
    c: Cursor,
}

impl Layout<'_> {
    fn bottom(&self) -> f32 {
        self.c.height - MARGIN
    }

    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.c.y = MARGIN;
    }

    /// Make room for `h` points, starting a page if needed.
    fn room(&mut self, h: f32) {
        if self.c.y + h > self.bottom() && self.c.y > MARGIN + 1.0 {
            self.new_page();
        }
    }

    fn op(&mut self, op: Op) {
        self.pages.last_mut().expect("a page").push(op);
    }

    fn text_at(&mut self, x: f32, size: f32, s: &str) {
        let y = self.c.y + size;
        self.op(Op::Text {
            x,
            y,
            size,
            s: s.to_string(),
        });
    }

    /// A wrapped paragraph at `x` with `size`, aligned left, right or centred.
    fn para(&mut self, s: &str, size: f32, align: Align, space: f32) {
        let max = match align {
            Align::Half => self.c.width / 2.0 - MARGIN,
            _ => self.c.width - 2.0 * MARGIN,
        };
        for l in self.ty.wrap(s, size, max) {
            self.room(size * 1.5);
            let w = self.ty.width(&l, size);
            let x = match align {
                Align::Left => MARGIN,
                Align::Right => self.c.width - MARGIN - w,
                Align::Centre => (self.c.width - w) / 2.0,
                Align::Half => self.c.width / 2.0,
            };
            self.text_at(x, size, &l);
            self.c.y += size * 1.5;
        }
        self.c.y += space;
    }

    fn table(&mut self, t: &Table) {
        let max = self.c.width - 2.0 * MARGIN;
        let ncols = t
            .rows
            .iter()
            .map(Vec::len)
            .chain([t.head.len()])
            .max()
            .unwrap_or(0);
        let natural = |size: f32| -> Vec<f32> {
            let mut w = vec![0.0f32; ncols];
            for (j, h) in t.head.iter().enumerate() {
                w[j] = self.ty.width(h, size);
            }
            for r in &t.rows {
                for (j, cell) in r.iter().enumerate() {
                    if let Some(x) = w.get_mut(j) {
                        *x = x.max(self.ty.width(cell, size));
                    }
                }
            }
            w.iter().map(|x| x + size).collect()
        };
        let mut size = 8.5f32;
        let mut widths = natural(size);
        while widths.iter().sum::<f32>() > max && size > 4.5 {
            size -= 0.5;
            widths = natural(size);
        }
        let row_h = size * 1.7;
        let header = |l: &mut Layout| {
            if !t.head.is_empty() {
                l.row(&t.head, &widths, size, row_h, None, true);
            }
        };
        self.room(row_h * 2.0);
        header(self);
        for (i, r) in t.rows.iter().enumerate() {
            if self.c.y + row_h > self.bottom() {
                self.new_page();
                header(self);
            }
            let total = t.total_rows.get(i).copied().unwrap_or(false);
            self.row(r, &widths, size, row_h, Some(&t.numeric), total);
        }
        self.c.y += size;
    }

    /// One table row with its rules.
    fn row(
        &mut self,
        cells: &[String],
        widths: &[f32],
        size: f32,
        h: f32,
        numeric: Option<&[bool]>,
        shade: bool,
    ) {
        let y = self.c.y;
        let total: f32 = widths.iter().sum();
        if shade {
            self.op(Op::Rect {
                x: MARGIN,
                y,
                w: total,
                h,
                c: (235, 235, 235),
            });
        }
        let mut x = MARGIN;
        for (j, w) in widths.iter().enumerate() {
            let s = cells.get(j).map(String::as_str).unwrap_or("");
            let right = numeric.is_some_and(|n| n.get(j).copied().unwrap_or(false)) && j > 0;
            let tx = if right {
                x + w - size / 2.0 - self.ty.width(s, size)
            } else {
                x + size / 2.0
            };
            self.op(Op::Text {
                x: tx,
                y: y + h * 0.72,
                size,
                s: s.to_string(),
            });
            self.op(Op::Line {
                x0: x,
                y0: y,
                x1: x,
                y1: y + h,
                width: 0.4,
            });
            x += w;
        }
        self.op(Op::Line {
            x0: x,
            y0: y,
            x1: x,
            y1: y + h,
            width: 0.4,
        });
        for yy in [y, y + h] {
            self.op(Op::Line {
                x0: MARGIN,
                y0: yy,
                x1: MARGIN + total,
                y1: yy,
                width: 0.4,
            });
        }
        self.c.y += h;
    }

    fn chart(&mut self, c: &Chart) {
        let size = 7.5f32;
        let bar_h = 11.0f32;
        let label_w = c
            .bars
            .iter()
            .map(|(l, _)| self.ty.width(l, size))
            .fold(0.0f32, f32::max)
            .min(200.0)
            + 6.0;
        let bar_w = (self.c.width - 2.0 * MARGIN - label_w - 90.0).max(100.0);
        let max = chart_max(c) as f32;
        self.room(bar_h * 3.0);
        self.text_at(MARGIN, 9.0, &c.title);
        self.c.y += 15.0;
        for (label, segments) in &c.bars {
            self.room(bar_h);
            let y = self.c.y;
            let lw = self.ty.width(label, size);
            self.op(Op::Text {
                x: MARGIN + label_w - 6.0 - lw.min(label_w - 6.0),
                y: y + bar_h * 0.75,
                size,
                s: label.clone(),
            });
            let mut x = MARGIN + label_w;
            for (j, v) in segments.iter().enumerate() {
                if let Some(v) = v {
                    let w = bar_w * (*v as f32) / max;
                    self.op(Op::Rect {
                        x,
                        y: y + 1.5,
                        w,
                        h: bar_h - 3.0,
                        c: colour(j),
                    });
                    x += w;
                }
            }
            let known: i64 = segments.iter().flatten().sum();
            let hidden = segments.iter().any(Option::is_none);
            let value = match (known, hidden) {
                (0, true) => c.suppressed.clone(),
                (n, true) => format!("{n}+ ({})", c.suppressed),
                (n, false) => n.to_string(),
            };
            self.op(Op::Text {
                x: x + 3.0,
                y: y + bar_h * 0.75,
                size,
                s: value,
            });
            self.c.y += bar_h;
        }
        if c.series.len() > 1 {
            self.c.y += 4.0;
            let mut x = MARGIN;
            for (j, name) in c.series.iter().enumerate() {
                let w = 14.0 + self.ty.width(name, size) + 10.0;
                if x + w > self.c.width - MARGIN {
                    x = MARGIN;
                    self.c.y += bar_h;
                }
                self.room(bar_h);
                let y = self.c.y;
                self.op(Op::Rect {
                    x,
                    y: y + 2.0,
                    w: 8.0,
                    h: 8.0,
                    c: colour(j),
                });
                self.op(Op::Text {
                    x: x + 11.0,
                    y: y + 9.0,
                    size,
                    s: name.clone(),
                });
                x += w;
            }
            self.c.y += bar_h;
        }
        self.c.y += 10.0;
    }
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
    Centre,
    Half,
}

fn paginate(doc: &Document, ty: &Type, width: f32, height: f32) -> Vec<Vec<Op>> {
    let mut l = Layout {
        ty,
        pages: vec![Vec::new()],
        c: Cursor {
            y: MARGIN,
            width,
            height,
        },
    };
    for b in &doc.blocks {
        match b {
            Block::Right(s) => l.para(s, 10.0, Align::Right, 4.0),
            Block::Line(s) => l.para(s, 10.0, Align::Left, 4.0),
            Block::From(s) => l.para(s, 10.0, Align::Half, 2.0),
            Block::Title(s) => {
                l.c.y += 10.0;
                l.para(s, 14.0, Align::Centre, 12.0);
            }
            Block::Heading(s) => {
                l.room(60.0);
                l.c.y += 6.0;
                l.para(s, 12.0, Align::Left, 2.0);
                let y = l.c.y;
                l.op(Op::Line {
                    x0: MARGIN,
                    y0: y,
                    x1: l.c.width - MARGIN,
                    y1: y,
                    width: 0.8,
                });
                l.c.y += 6.0;
            }
            Block::Subheading(s) => {
                l.room(50.0);
                l.c.y += 4.0;
                l.para(s, 10.5, Align::Left, 3.0);
            }
            Block::Para(s) => l.para(s, 10.0, Align::Left, 6.0),
            Block::Small(s) => l.para(s, 8.0, Align::Left, 4.0),
            Block::Table(t) => l.table(t),
            Block::Chart(c) => l.chart(c),
            Block::NewPart { .. } => l.new_page(),
        }
    }
    l.pages.retain(|p| !p.is_empty());
    if l.pages.is_empty() {
        l.pages.push(Vec::new());
    }
    l.pages
}
