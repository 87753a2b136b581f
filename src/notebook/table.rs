//! Notebooks, a released answer as a table: HTML (what JupyterLab shows) and plain text
//! (what a terminal or a diff shows).
//!
//! Guarantees: exactly the released rows and values; a cell the disclosure record lists
//! as suppressed shows the marker the console uses (`<k` under suppression, `—` under DP),
//! never a number, and carries its reason as a tooltip in HTML; a genuine NULL is empty;
//! every name and value is HTML-escaped, so a column alias or a value cannot inject markup.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::privacy::result::{DisclosureMode, ReleasedResult};

/// How a cell of the answer is shown.
enum Shown {
    Value(String),
    Null,
    Suppressed { differencing: bool },
}

fn suppressed_marker(r: &ReleasedResult) -> String {
    match r.disclosure.mode {
        DisclosureMode::Suppression => format!("<{}", r.disclosure.threshold),
        DisclosureMode::Dp => "—".to_string(),
    }
}

/// Every cell of the answer, row by row.
fn cells(r: &ReleasedResult) -> Vec<Vec<Shown>> {
    let hidden: BTreeSet<[usize; 2]> = r.disclosure.suppressed.iter().copied().collect();
    let differencing: BTreeSet<[usize; 2]> = r.disclosure.differencing.iter().copied().collect();
    r.rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            row.iter()
                .enumerate()
                .map(|(j, v)| {
                    if hidden.contains(&[i, j]) {
                        return Shown::Suppressed {
                            differencing: differencing.contains(&[i, j]),
                        };
                    }
                    match v {
                        Value::Null => Shown::Null,
                        Value::String(s) => Shown::Value(s.clone()),
                        other => Shown::Value(other.to_string()),
                    }
                })
                .collect()
        })
        .collect()
}

/// Escape text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn reason(r: &ReleasedResult, differencing: bool) -> String {
    match (r.disclosure.mode, differencing) {
        (DisclosureMode::Dp, _) => {
            "hidden: the noisy patient count is below the DP release threshold / DP の公開閾値未満のため非表示".into()
        }
        (_, true) => {
            "suppressed: differs from another released cell by fewer than k patients (differencing) / 差分による特定を防ぐため秘匿".into()
        }
        (_, false) => format!(
            "suppressed: fewer than {} patients / {} 人未満のため秘匿",
            r.disclosure.threshold, r.disclosure.threshold
        ),
    }
}

/// The answer as an HTML table, with the disclosure notes below it.
pub fn html(r: &ReleasedResult) -> String {
    let mut s = String::from("<table class=\"kura-result\">\n<thead><tr>");
    for c in &r.columns {
        s.push_str(&format!(
            "<th title=\"{}\">{}</th>",
            escape(&c.type_name),
            escape(&c.name)
        ));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    let marker = escape(&suppressed_marker(r));
    for row in cells(r) {
        s.push_str("<tr>");
        for cell in row {
            match cell {
                Shown::Value(v) => s.push_str(&format!("<td>{}</td>", escape(&v))),
                Shown::Null => s.push_str("<td></td>"),
                Shown::Suppressed { differencing } => s.push_str(&format!(
                    "<td class=\"kura-suppressed\" title=\"{}\">{marker}</td>",
                    escape(&reason(r, differencing))
                )),
            }
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody>\n</table>\n");
    if !r.disclosure.notes.is_empty() {
        s.push_str("<ul class=\"kura-notes\">\n");
        for n in &r.disclosure.notes {
            s.push_str(&format!("<li>{}</li>\n", escape(n)));
        }
        s.push_str("</ul>\n");
    }
    s
}

/// The answer as an aligned plain-text table, with the disclosure notes below it.
pub fn text(r: &ReleasedResult) -> String {
    let marker = suppressed_marker(r);
    let body: Vec<Vec<String>> = cells(r)
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|c| match c {
                    Shown::Value(v) => v,
                    Shown::Null => String::new(),
                    Shown::Suppressed { .. } => marker.clone(),
                })
                .collect()
        })
        .collect();
    let head: Vec<String> = r.columns.iter().map(|c| c.name.clone()).collect();
    let width = |j: usize| {
        std::iter::once(&head[j])
            .chain(body.iter().filter_map(|row| row.get(j)))
            .map(|v| v.chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..head.len()).map(width).collect();
    let line = |row: &[String]| {
        row.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}", w = *w))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(&head)];
    out.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    out.extend(body.iter().map(|r| line(r)));
    out.extend(r.disclosure.notes.iter().map(|n| format!("* {n}")));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::result::{Disclosure, ReleasedColumn};
    use serde_json::json;

    fn answer() -> ReleasedResult {
        ReleasedResult {
            columns: vec![
                ReleasedColumn {
                    name: "<script>alert(1)</script>".into(),
                    type_name: "Utf8".into(),
                },
                ReleasedColumn {
                    name: "n".into(),
                    type_name: "Int64".into(),
                },
            ],
            rows: vec![
                vec![json!("13"), json!(412)],
                vec![json!("31"), Value::Null],
                vec![json!("<b>x</b>"), Value::Null],
            ],
            disclosure: Disclosure {
                mode: DisclosureMode::Suppression,
                threshold: 5,
                suppressed: vec![[1, 1]],
                suppressed_cells: 1,
                differencing: vec![],
                dropped_rows: 0,
                rounding: None,
                epsilon_spent: None,
                epsilon_remaining: None,
                notes: vec!["1 cell suppressed / 1 セル秘匿".into()],
                dp: None,
            },
        }
    }

    #[test]
    fn suppressed_cells_show_the_marker_and_nulls_stay_empty() {
        let t = text(&answer());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[2], "13                         412");
        assert_eq!(lines[3], "31                         <5");
        assert_eq!(lines[4], "<b>x</b>", "a genuine NULL is empty, not <5");
        assert!(t.ends_with("* 1 cell suppressed / 1 セル秘匿"));
        let h = html(&answer());
        assert!(
            h.contains("<td class=\"kura-suppressed\" title=\"suppressed: fewer than 5 patients")
        );
        assert!(h.contains("&lt;5</td>"));
    }

    #[test]
    fn names_and_values_cannot_inject_markup() {
        let h = html(&answer());
        assert!(!h.contains("<script>") && !h.contains("<b>x"), "{h}");
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(h.contains("&lt;b&gt;x&lt;/b&gt;"));
    }
}
