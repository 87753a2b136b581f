//! Reports, the document model: a report laid out once as blocks (form-style header lines,
//! title, headings, paragraphs, tables, bar charts) and rendered from that one value as an
//! HTML document with inline SVG charts (`html`) and as PDF (`report::pdf`).
//!
//! Guarantees: every text is HTML-escaped; the HTML loads nothing (no script, no external
//! file; its one `<style>` element is allowed by the hash the server sends in its
//! Content-Security-Policy, [`style_hash`]); a suppressed cell has one rendering wherever it
//! appears ([`SUPPRESSED_JA`] / [`SUPPRESSED_EN`]), never a number.

use std::fmt::Write;

/// How a suppressed cell reads in Japanese and in English.
pub const SUPPRESSED_JA: &str = "秘匿";
pub const SUPPRESSED_EN: &str = "x";

/// A bar chart: one bar per row, stacked by series; `None` segments (suppressed) are left
/// out of the bar and counted in its note.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    /// Legend labels, one per series (one series: no legend).
    pub series: Vec<String>,
    pub bars: Vec<(String, Vec<Option<i64>>)>,
    /// The text of a bar that has suppressed segments.
    pub suppressed: String,
}

/// A table: header, rows of text, which columns are numbers, which rows are totals.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub head: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub numeric: Vec<bool>,
    pub total_rows: Vec<bool>,
}

/// One block of a document.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A line set to the right (the date of a form).
    Right(String),
    /// A line set to the left (the addressee).
    Line(String),
    /// A line set to the right half (the sender's block).
    From(String),
    Title(String),
    Heading(String),
    Subheading(String),
    Para(String),
    Small(String),
    Table(Table),
    Chart(Chart),
    /// The next language's version starts on a new page.
    NewPart {
        lang: &'static str,
    },
}

/// A report as blocks, in reading order.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub title: String,
    pub blocks: Vec<Block>,
}

/// Escape text for HTML.
pub fn esc(s: &str) -> String {
    super::render::esc(s)
}

/// The stylesheet of every report document (form style: centred title, right-aligned date,
/// ruled tables).
pub const STYLE: &str = "body{font-family:'IPAexGothic','IPAGothic','Noto Sans CJK JP',sans-serif;max-width:60em;margin:2em auto;line-height:1.6;color:#000}\
.right{text-align:right}.from{margin-left:55%}h1{text-align:center;font-size:1.3em;margin:1.5em 0}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #000}\
h3{font-size:1em;margin-top:1.2em}table{border-collapse:collapse;margin:.3em 0 1em}th,td{border:1px solid #000;padding:.15em .45em;text-align:left}\
td.n{text-align:right}tr.total td,tr.total th{font-weight:bold;background:#f2f2f2}.small{font-size:.85em}.wide{overflow-x:auto}\
section.part{margin-top:3em;border-top:2px solid #000;padding-top:1em}svg{display:block;margin:.3em 0 1.2em}";

/// The `style-src` source that allows [`STYLE`] (a CSP hash), for the report's response.
pub fn style_hash() -> String {
    use base64::Engine;
    let d = ring::digest::digest(&ring::digest::SHA256, STYLE.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(d.as_ref())
    )
}

/// Colours of chart series (light to dark blues and greens, readable in black and white).
pub const PALETTE: [(u8, u8, u8); 8] = [
    (31, 78, 140),
    (86, 143, 201),
    (46, 125, 82),
    (128, 186, 120),
    (140, 86, 31),
    (214, 160, 90),
    (96, 96, 96),
    (170, 170, 170),
];

/// The colour of series `i`: the palette, lighter on each round.
pub fn colour(i: usize) -> (u8, u8, u8) {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    let lift = |c: u8| c.saturating_add(((i / PALETTE.len()) * 40) as u8);
    (lift(r), lift(g), lift(b))
}

fn table_html(out: &mut String, t: &Table) {
    out.push_str("<div class=\"wide\"><table>");
    if !t.head.is_empty() {
        out.push_str("<thead><tr>");
        for h in &t.head {
            let _ = write!(out, "<th scope=\"col\">{}</th>", esc(h));
        }
        out.push_str("</tr></thead>");
    }
    out.push_str("<tbody>");
    for (i, row) in t.rows.iter().enumerate() {
        let total = t.total_rows.get(i).copied().unwrap_or(false);
        out.push_str(if total {
            "<tr class=\"total\">"
        } else {
            "<tr>"
        });
        for (j, cell) in row.iter().enumerate() {
            if j == 0 {
                let _ = write!(out, "<th scope=\"row\">{}</th>", esc(cell));
            } else if t.numeric.get(j).copied().unwrap_or(false) {
                let _ = write!(out, "<td class=\"n\">{}</td>", esc(cell));
            } else {
                let _ = write!(out, "<td>{}</td>", esc(cell));
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
}

/// The largest bar total of a chart (at least 1).
pub fn chart_max(c: &Chart) -> i64 {
    c.bars
        .iter()
        .map(|(_, s)| s.iter().flatten().sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1)
}

/// A chart as inline SVG: horizontal stacked bars, labels on the left, value on the right.
pub fn chart_svg(c: &Chart) -> String {
    let (label_w, bar_w, row_h, top) = (190.0, 380.0, 18.0, 22.0);
    let legend_h = if c.series.len() > 1 {
        16.0 * c.series.len().div_ceil(4) as f64
    } else {
        0.0
    };
    let height = top + row_h * c.bars.len() as f64 + legend_h + 6.0;
    let width = label_w + bar_w + 110.0;
    let max = chart_max(c) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-size=\"11\" font-family=\"sans-serif\"><title>{t}</title><text x=\"0\" y=\"14\" font-weight=\"bold\">{t}</text>",
        t = esc(&c.title)
    );
    for (i, (label, segments)) in c.bars.iter().enumerate() {
        let y = top + row_h * i as f64;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            label_w - 6.0,
            y + 12.0,
            esc(label)
        );
        let mut x = label_w;
        for (j, v) in segments.iter().enumerate() {
            if let Some(v) = v {
                let w = bar_w * (*v as f64) / max;
                let (r, g, b) = colour(j);
                let _ = write!(
                    s,
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"rgb({r},{g},{b})\"/>",
                    y + 2.0,
                    row_h - 5.0
                );
                x += w;
            }
        }
        let known: i64 = segments.iter().flatten().sum();
        let hidden = segments.iter().any(Option::is_none);
        let text = match (known, hidden) {
            (0, true) => c.suppressed.clone(),
            (n, true) => format!("{n}+ ({})", c.suppressed),
            (n, false) => n.to_string(),
        };
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\">{}</text>",
            x + 4.0,
            y + 12.0,
            esc(&text)
        );
    }
    if c.series.len() > 1 {
        let y0 = top + row_h * c.bars.len() as f64 + 4.0;
        for (j, name) in c.series.iter().enumerate() {
            let (x, y) = (
                label_w + 150.0 * (j % 4) as f64 - 150.0,
                y0 + 16.0 * (j / 4) as f64,
            );
            let (r, g, b) = colour(j);
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"10\" height=\"10\" fill=\"rgb({r},{g},{b})\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                x + 14.0,
                y + 9.0,
                esc(name)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// The document as one HTML page (`lang` of the first part).
pub fn html(d: &Document, lang: &str) -> String {
    let mut out = format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body><section class=\"{lang}\" lang=\"{lang}\">",
        esc(&d.title)
    );
    for b in &d.blocks {
        match b {
            Block::Right(t) => {
                let _ = write!(out, "<p class=\"right\">{}</p>", esc(t));
            }
            Block::Line(t) => {
                let _ = write!(out, "<p>{}</p>", esc(t));
            }
            Block::From(t) => {
                let _ = write!(out, "<p class=\"from\">{}</p>", esc(t));
            }
            Block::Title(t) => {
                let _ = write!(out, "<h1>{}</h1>", esc(t));
            }
            Block::Heading(t) => {
                let _ = write!(out, "<h2>{}</h2>", esc(t));
            }
            Block::Subheading(t) => {
                let _ = write!(out, "<h3>{}</h3>", esc(t));
            }
            Block::Para(t) => {
                let _ = write!(out, "<p>{}</p>", esc(t));
            }
            Block::Small(t) => {
                let _ = write!(out, "<p class=\"small\">{}</p>", esc(t));
            }
            Block::Table(t) => table_html(&mut out, t),
            Block::Chart(c) => out.push_str(&chart_svg(c)),
            Block::NewPart { lang } => {
                let _ = write!(
                    out,
                    "</section><section class=\"part {lang}\" lang=\"{lang}\">"
                );
            }
        }
    }
    out.push_str("</section></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_text_and_draws_suppressed_bars_without_a_number() {
        let d = Document {
            title: "t<".into(),
            blocks: vec![
                Block::Title("<script>".into()),
                Block::Chart(Chart {
                    title: "c".into(),
                    series: vec!["M".into(), "F".into()],
                    bars: vec![("P01".into(), vec![Some(12), None])],
                    suppressed: SUPPRESSED_JA.into(),
                }),
            ],
        };
        let h = html(&d, "ja");
        assert!(!h.contains("<script>") && h.contains("&lt;script&gt;"));
        assert!(h.contains("12+ (秘匿)"), "{h}");
        assert!(h.contains(&format!("<style>{STYLE}</style>")));
        assert!(style_hash().starts_with("'sha256-") && style_hash().ends_with("='"));
    }
}
