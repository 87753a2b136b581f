//! The output airlock, `result-N.png`: a bar chart of the released table, drawn in pure
//! Rust (plotters' bitmap backend, ab_glyph text, PNG by the `png` crate) with a font
//! that shows Japanese labels (the configured `chart_font`, else IPAexGothic / IPAGothic /
//! Noto Sans CJK from the system).
//!
//! Guarantees: a suppressed cell is never drawn (no bar, not a zero bar) and a note under
//! the chart says so; only released values are read. The categories are the first key
//! column, bars are grouped by the second key column (if any), their length is the last
//! protected or noised column; a few short categories stand as vertical bars, many or
//! long ones (disease names) lie as horizontal bars with their labels in full. Without a usable font no chart is made (the release still has its
//! table and record) and the operator is told once in the log.

use std::path::PathBuf;
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde_json::Value;

use super::super::cells::{ColumnRecord, suppressed};
use crate::privacy::result::ReleasedResult;

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 640;
const FONT: &str = "sans-serif";
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x5b, 0x3a, 0x1e),
    RGBColor(0xc0, 0x63, 0x2b),
    RGBColor(0x3a, 0x6e, 0xa5),
    RGBColor(0x6a, 0x99, 0x4e),
    RGBColor(0x8e, 0x5e, 0xa2),
    RGBColor(0xd1, 0xa1, 0x2b),
    RGBColor(0x4d, 0x90, 0x8e),
    RGBColor(0xb2, 0x3a, 0x48),
];

/// Font files tried in order when `KURA_CHART_FONT` is not set (Debian's IPA and Noto
/// CJK packages, then DejaVu, which shows Latin labels only).
const CANDIDATES: [&str; 6] = [
    "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf",
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
];

/// The font the operator configured (`chart_font`), tried before the system fonts.
static CONFIGURED: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Set the configured font (once, at start; later calls are ignored).
pub fn configure_font(path: Option<PathBuf>) {
    let _ = CONFIGURED.set(path);
}

/// Register the chart font once per process; `false` when none could be loaded.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let configured = CONFIGURED.get().cloned().flatten();
        let system = CANDIDATES.iter().map(PathBuf::from);
        for path in configured.into_iter().chain(system) {
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            // plotters keeps registered fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
        tracing::warn!(
            "no chart font found (set chart_font / KURA_CHART_FONT to a TTF/OTF with Japanese glyphs, e.g. from Debian's fonts-ipafont-gothic); release charts are not rendered"
        );
        false
    })
}

/// What a chart shows: category labels, series names, and per series the bar heights
/// (`None`: suppressed or missing, not drawn).
struct Plot {
    x_name: String,
    y_name: String,
    categories: Vec<String>,
    series: Vec<(String, Vec<Option<f64>>)>,
    suppressed: usize,
}

/// Pick the axes from the column records: x = first key column, series = second key
/// column, y = last protected or noised column. `None` when there is nothing to plot.
fn plot(result: &ReleasedResult, columns: &[ColumnRecord]) -> Option<Plot> {
    let keys: Vec<usize> = (0..columns.len())
        .filter(|&k| columns[k].kind == "key")
        .collect();
    let y = (0..columns.len())
        .rev()
        .find(|&k| matches!(columns[k].kind.as_str(), "protected" | "noised"))?;
    let x = keys.first().copied();
    let s = keys.get(1).copied();
    let hidden = suppressed(result);
    let label = |row: &[Value], k: Option<usize>| -> String {
        k.and_then(|k| row.get(k))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Null => "—".to_string(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    let mut categories: Vec<String> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut cells: Vec<(usize, usize, Option<f64>)> = Vec::new();
    let mut count = 0;
    for (r, row) in result.rows.iter().enumerate() {
        let c = label(row, x);
        let n = if s.is_some() {
            label(row, s)
        } else {
            result.columns[y].name.clone()
        };
        let ci = position(&mut categories, c);
        let si = position(&mut names, n);
        let value = if hidden.contains(&[r, y]) {
            count += 1;
            None
        } else {
            row.get(y).and_then(Value::as_f64)
        };
        cells.push((ci, si, value));
    }
    let mut series: Vec<(String, Vec<Option<f64>>)> = names
        .into_iter()
        .map(|n| (n, vec![None; categories.len()]))
        .collect();
    for (ci, si, v) in cells {
        if let Some(v) = v {
            let slot = &mut series[si].1[ci];
            *slot = Some(slot.unwrap_or(0.0) + v);
        }
    }
    Some(Plot {
        x_name: x
            .map(|x| result.columns[x].name.clone())
            .unwrap_or_default(),
        y_name: result.columns[y].name.clone(),
        categories,
        series,
        suppressed: count,
    })
}

fn position(list: &mut Vec<String>, item: String) -> usize {
    match list.iter().position(|x| *x == item) {
        Some(i) => i,
        None => {
            list.push(item);
            list.len() - 1
        }
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 14 {
        format!("{}…", s.chars().take(13).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Few short categories stand as vertical bars; many or long ones (disease names) lie as
/// horizontal bars with their labels in full on the left.
fn horizontal(p: &Plot) -> bool {
    p.categories.len() > 12 || p.categories.iter().any(|c| c.chars().count() > 8)
}

/// The canvas of a chart: horizontal charts grow with their categories.
fn canvas(p: &Plot) -> (u32, u32) {
    if !horizontal(p) {
        return (WIDTH, HEIGHT);
    }
    let band = 8 + 10 * p.series.len().max(1) as u32;
    let height = 150 + band * p.categories.len() as u32;
    (WIDTH, height.clamp(HEIGHT, 6000))
}

/// A value on an axis: whole numbers without decimals.
fn value_label(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

/// The PNG of the chart of `result`, or `None` when it has nothing to plot or no font is
/// available. `title` heads the chart; `marker` is how suppressed cells are named.
pub fn render(
    result: &ReleasedResult,
    columns: &[ColumnRecord],
    title: &str,
    marker: &str,
) -> Result<Option<Vec<u8>>, String> {
    let Some(p) = plot(result, columns) else {
        return Ok(None);
    };
    if p.categories.is_empty() || !font_ready() {
        return Ok(None);
    }
    let (w, h) = canvas(&p);
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    draw(&mut rgb, (w, h), &p, title, marker).map_err(|e| e.to_string())?;
    encode(&rgb, w, h).map(Some)
}

type Drawn = Result<(), Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw(rgb: &mut [u8], (w, h): (u32, u32), p: &Plot, title: &str, marker: &str) -> Drawn {
    let root = BitMapBackend::with_buffer(rgb, (w, h)).into_drawing_area();
    root.fill(&WHITE)?;
    let (body, foot) = root.split_vertically((h - 40) as i32);
    if horizontal(p) {
        draw_horizontal(&body, p, title)?;
    } else {
        draw_vertical(&body, p, title)?;
    }
    let note = if p.suppressed > 0 {
        format!(
            "{marker}: {} suppressed cell(s), not drawn / 秘匿したセル {} 件は描画していません",
            p.suppressed, p.suppressed
        )
    } else {
        "No cell suppressed / 秘匿セルなし".to_string()
    };
    foot.draw_text(&note, &(FONT, 15).into_font().color(&BLACK), (16, 10))?;
    root.present()?;
    Ok(())
}

/// The value range of the bars, zero included, with some head room.
fn range(p: &Plot) -> (f64, f64) {
    let values = p.series.iter().flat_map(|(_, v)| v.iter().flatten());
    let (lo, hi) = values.fold((0f64, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if hi <= lo {
        (lo, lo + 1.0)
    } else {
        (lo, hi + (hi - lo) * 0.08)
    }
}

/// The label of category position `x` (an axis position near a whole number).
fn category_label(labels: &[String], x: f64, chars: usize) -> String {
    let i = x.round();
    if (x - i).abs() > 1e-6 || i < 0.0 || i as usize >= labels.len() {
        return String::new();
    }
    let l = &labels[i as usize];
    if l.chars().count() > chars {
        format!("{}…", l.chars().take(chars - 1).collect::<String>())
    } else {
        l.clone()
    }
}

fn draw_vertical(body: &Area<'_>, p: &Plot, title: &str) -> Drawn {
    let (lo, hi) = range(p);
    let n = p.categories.len();
    let mut chart = ChartBuilder::on(body)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), lo..hi)?;
    let labels = p.categories.clone();
    let x_label = move |x: &f64| category_label(&labels, *x, 12);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&x_label)
        .y_label_formatter(&value_label)
        .x_desc(p.x_name.as_str())
        .y_desc(p.y_name.as_str())
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    let width = 0.8 / p.series.len().max(1) as f64;
    for (si, (name, values)) in p.series.iter().enumerate() {
        let color = PALETTE[si % PALETTE.len()];
        let bars = values.iter().enumerate().filter_map(|(ci, v)| {
            let x0 = ci as f64 - 0.4 + si as f64 * width;
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + width * 0.92, (*v)?)],
                color.filled(),
            ))
        });
        let drawn = chart.draw_series(bars)?;
        if p.series.len() > 1 {
            drawn.label(short(name)).legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled())
            });
        }
    }
    legend(&mut chart, p)
}

fn draw_horizontal(body: &Area<'_>, p: &Plot, title: &str) -> Drawn {
    let (lo, hi) = range(p);
    let n = p.categories.len();
    // The first category on top.
    let at = |ci: usize| (n - 1 - ci) as f64;
    let longest = p
        .categories
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(1);
    let label_area = (longest.min(24) as u32 * 15 + 24).clamp(80, 380);
    let mut chart = ChartBuilder::on(body)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(label_area)
        .build_cartesian_2d(lo..hi, -0.5f64..(n as f64 - 0.5))?;
    let labels: Vec<String> = p.categories.iter().rev().cloned().collect();
    let y_label = move |y: &f64| category_label(&labels, *y, 24);
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n + 1)
        .y_label_formatter(&y_label)
        .x_label_formatter(&value_label)
        .y_desc(p.x_name.as_str())
        .x_desc(p.y_name.as_str())
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    let height = 0.8 / p.series.len().max(1) as f64;
    for (si, (name, values)) in p.series.iter().enumerate() {
        let color = PALETTE[si % PALETTE.len()];
        let bars = values.iter().enumerate().filter_map(|(ci, v)| {
            let y0 = at(ci) + 0.4 - (si as f64 + 1.0) * height;
            Some(Rectangle::new(
                [(0.0, y0), ((*v)?, y0 + height * 0.92)],
                color.filled(),
            ))
        });
        let drawn = chart.draw_series(bars)?;
        if p.series.len() > 1 {
            drawn.label(short(name)).legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled())
            });
        }
    }
    legend(&mut chart, p)
}

/// The series legend, when bars are grouped by a second key.
fn legend<'a>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    p: &Plot,
) -> Drawn {
    if p.series.len() > 1 {
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

fn encode(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(rgb).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}
