//! The output airlock, `result-N.csv`: the released table as UTF-8 CSV (RFC 4180 quoting,
//! `\n` line ends), header row of column names.
//!
//! Guarantees: a suppressed cell is written as its marker (`<k`, or `—` under DP), never
//! as a number; a NULL cell as an empty field; numbers exactly as the answer released
//! them; a text cell that a spreadsheet would run as a formula (starting with `=`, `+`,
//! `-`, `@`, tab or carriage return) is prefixed with `'` (CSV injection). The text is
//! what the snapshot holds and what the requester downloads, byte for byte.

use serde_json::Value;

use crate::airlock::cells::{marker, suppressed};
use crate::privacy::result::ReleasedResult;

/// The text of one cell as it leaves in a file.
pub fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => neutralise(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => neutralise(&other.to_string()),
    }
}

/// A text value a spreadsheet would evaluate, made inert.
pub fn neutralise(s: &str) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_string(),
    }
}

/// The CSV text of a released result.
pub fn render(result: &ReleasedResult) -> String {
    let mark = marker(result);
    let hidden = suppressed(result);
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let header: Vec<String> = result.columns.iter().map(|c| neutralise(&c.name)).collect();
    // Writing to a Vec cannot fail.
    let _ = w.write_record(&header);
    for (r, row) in result.rows.iter().enumerate() {
        let fields: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(k, v)| {
                if hidden.contains(&[r, k]) {
                    mark.clone()
                } else {
                    cell_text(v)
                }
            })
            .collect();
        let _ = w.write_record(&fields);
    }
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::result::{Disclosure, DisclosureMode, ReleasedColumn};
    use serde_json::json;

    fn result(rows: Vec<Vec<Value>>, suppressed: Vec<[usize; 2]>) -> ReleasedResult {
        ReleasedResult {
            columns: vec![
                ReleasedColumn {
                    name: "label".into(),
                    type_name: "Utf8".into(),
                },
                ReleasedColumn {
                    name: "n".into(),
                    type_name: "Int64".into(),
                },
            ],
            rows,
            disclosure: Disclosure {
                mode: DisclosureMode::Suppression,
                threshold: 5,
                suppressed_cells: suppressed.len(),
                suppressed,
                differencing: vec![],
                dropped_rows: 0,
                rounding: None,
                epsilon_spent: None,
                epsilon_remaining: None,
                notes: vec![],
                dp: None,
            },
        }
    }

    #[test]
    fn suppressed_cells_leave_as_their_marker_and_never_as_a_number() {
        let r = result(
            vec![
                vec![json!("13"), json!(412)],
                vec![json!("31"), Value::Null],
                vec![json!("a, \"b\""), json!(2.5)],
            ],
            vec![[1, 1]],
        );
        assert_eq!(render(&r), "label,n\n13,412\n31,<5\n\"a, \"\"b\"\"\",2.5\n");
    }

    #[test]
    fn attack_csv_formula_injection_is_made_inert() {
        let r = result(
            vec![vec![json!("=HYPERLINK(\"http://x\")"), json!(-3)]],
            vec![],
        );
        let text = render(&r);
        assert!(text.contains("\"'=HYPERLINK(\"\"http://x\"\")\""), "{text}");
        assert!(
            text.contains(",-3\n"),
            "numbers are numbers, never prefixed: {text}"
        );
    }
}
