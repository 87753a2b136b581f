//! The output airlock, `result-N.xlsx` (rust_xlsxwriter): sheet `result` holds the
//! released table (numbers as numbers, a suppressed cell as its marker text on a grey
//! fill), sheet `disclosure` what was done to it (the query, the mode, k, rounding, the
//! notes, and per column the rules and, under DP, ε, noise scale and interval).
//!
//! Guarantees: the same cells as the CSV, never a suppressed value; every text is written
//! as a string (never a formula), so a cell starting with `=` cannot run in a
//! spreadsheet.

use rust_xlsxwriter::{Color, Format, Workbook, Worksheet, XlsxError};
use serde_json::Value;

use super::super::cells::{ColumnRecord, marker, suppressed};
use super::super::snapshot::OutputSnapshot;
use crate::privacy::result::ReleasedResult;

/// Excel's limit on the characters of one cell (a long SQL is cut, with a mark).
const CELL_CHARS: usize = 32_000;

/// `s` cut to what one cell holds.
fn fit(s: &str) -> String {
    if s.chars().count() <= CELL_CHARS {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(CELL_CHARS).collect::<String>())
    }
}

/// The workbook of one output.
pub fn render(s: &OutputSnapshot, result: &ReleasedResult) -> Result<Vec<u8>, String> {
    build(s, result).map_err(|e| e.to_string())
}

fn build(s: &OutputSnapshot, result: &ReleasedResult) -> Result<Vec<u8>, XlsxError> {
    let mut book = Workbook::new();
    let bold = Format::new().set_bold();
    let hidden = Format::new()
        .set_background_color(Color::RGB(0xE6E1DA))
        .set_italic();
    {
        let sheet = book.add_worksheet().set_name("result")?;
        table(sheet, result, &bold, &hidden)?;
    }
    {
        let sheet = book.add_worksheet().set_name("disclosure")?;
        disclosure(sheet, s, &bold)?;
    }
    book.save_to_buffer()
}

fn table(
    sheet: &mut Worksheet,
    result: &ReleasedResult,
    bold: &Format,
    hidden_format: &Format,
) -> Result<(), XlsxError> {
    let mark = marker(result);
    let hidden = suppressed(result);
    for (k, c) in result.columns.iter().enumerate() {
        sheet.write_string_with_format(0, k as u16, fit(&c.name), bold)?;
        sheet.set_column_width(k as u16, (c.name.chars().count() + 4).clamp(10, 40) as f64)?;
    }
    for (r, row) in result.rows.iter().enumerate() {
        let at = (r + 1) as u32;
        for (k, v) in row.iter().enumerate() {
            let col = k as u16;
            if hidden.contains(&[r, k]) {
                sheet.write_string_with_format(at, col, &mark, hidden_format)?;
                continue;
            }
            match v {
                Value::Null => {}
                Value::Number(n) => match n.as_f64() {
                    Some(f) => {
                        sheet.write_number(at, col, f)?;
                    }
                    None => {
                        sheet.write_string(at, col, n.to_string())?;
                    }
                },
                Value::String(t) => {
                    sheet.write_string(at, col, fit(t))?;
                }
                Value::Bool(b) => {
                    sheet.write_boolean(at, col, *b)?;
                }
                other => {
                    sheet.write_string(at, col, other.to_string())?;
                }
            }
        }
    }
    Ok(())
}

fn disclosure(sheet: &mut Worksheet, s: &OutputSnapshot, bold: &Format) -> Result<(), XlsxError> {
    sheet.set_column_width(0, 28)?;
    sheet.set_column_width(1, 90)?;
    let d = &s.disclosure;
    let rounding = d.rounding.map(|b| b.to_string()).unwrap_or_default();
    let facts: Vec<(&str, String)> = vec![
        ("output / 出力", s.name.clone()),
        ("query id / クエリ ID", s.query_id.clone()),
        ("SQL", s.sql.clone()),
        ("plan fingerprint / 計画指紋", s.plan_fingerprint.clone()),
        ("extract / 抽出データ", s.extract_id.clone()),
        ("mode / 開示方式", s.mode.clone()),
        (
            "k (min. patients per cell) / 最小人数",
            d.threshold.to_string(),
        ),
        ("rounding base / 丸め", rounding),
        (
            "suppressed cells / 秘匿セル数",
            d.suppressed_cells.to_string(),
        ),
        ("answered at / 回答日時", s.answered_at.to_rfc3339()),
        ("answer SHA-256 / 回答のハッシュ", s.result_sha256.clone()),
    ];
    let mut row = 0u32;
    for (label, value) in facts {
        sheet.write_string_with_format(row, 0, label, bold)?;
        sheet.write_string(row, 1, fit(&value))?;
        row += 1;
    }
    for note in &d.notes {
        sheet.write_string_with_format(row, 0, "note / 注記", bold)?;
        sheet.write_string(row, 1, fit(note))?;
        row += 1;
    }
    row += 1;
    sheet.write_string_with_format(row, 0, "column / 列", bold)?;
    sheet.write_string_with_format(row, 1, "rules / 適用した規則", bold)?;
    row += 1;
    for c in &s.column_rules {
        sheet.write_string(row, 0, &c.name)?;
        sheet.write_string(row, 1, column_text(c))?;
        row += 1;
    }
    Ok(())
}

/// One column's rules as a line of text.
fn column_text(c: &ColumnRecord) -> String {
    let mut parts = vec![c.kind.clone()];
    if !c.rules.is_empty() {
        parts.push(c.rules.join(", "));
    }
    if let Some(b) = c.rounding {
        parts.push(format!("rounded to {b}"));
    }
    if let Some(dp) = &c.dp {
        parts.push(format!(
            "{} ε={} scale={} ci95±{}",
            dp["aggregate"].as_str().unwrap_or_default(),
            dp["epsilon"],
            dp["noise_scale"],
            dp["ci95_half_width"]
        ));
    }
    parts.join(" · ")
}
