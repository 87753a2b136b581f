//! Operator command `kura query --extract DIR "SQL"`: runs one query through the whole
//! query path over an application's extract and prints the released result — a table
//! for people, or `--json` in the API.md shape for scripts.
//!
//! Guarantees: the command prints only what the query path released (suppressed cells
//! stay suppressed and are marked); refusals print their stable code and fix; execution
//! and internal errors print only the generic message and a reference id, never the
//! engine detail, which can contain data values.
//!
//! The query path itself (`query::suppression::run_query`, guard → rewrite → execute → check)
//! is passed in by the caller as `run`, so this module never offers a way around it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use serde_json::{Value, json};

use crate::catalog::Catalog;
use crate::engine::{Limits, open_extract};
use crate::privacy::ReleasedResult;
use crate::query::{QueryError, QueryOutcome};
use crate::sql::extract::EXTRACT_MANIFEST;

/// Arguments of `kura query`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// Extract directory: one version (holds extract.json), or the application's folder
    /// when it holds exactly one version.
    #[arg(long)]
    pub extract: PathBuf,
    /// Catalogue file (default: the catalogue compiled into kura).
    #[arg(long, env = "KURA_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Memory pool for the query, in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory_mb: usize,
    /// Wall-clock limit, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// Maximum number of result rows.
    #[arg(long, default_value_t = 10_000)]
    pub max_rows: usize,
    /// Print the API.md JSON shape instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Read the SQL from this file instead of the command line.
    #[arg(long, conflicts_with = "sql")]
    pub file: Option<PathBuf>,
    /// The SQL query.
    #[arg(required_unless_present = "file")]
    pub sql: Option<String>,
}

impl QueryArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.memory_mb.saturating_mul(1 << 20),
            timeout: Duration::from_secs(self.timeout_secs),
            max_rows: self.max_rows,
        }
    }
}

/// A fresh reference id for an error report (`r_` + 16 hex digits).
pub fn new_ref() -> String {
    format!("r_{:016x}", rand::random::<u64>())
}

/// A fresh query id (`q_` + 16 hex digits).
pub fn new_query_id() -> String {
    format!("q_{:016x}", rand::random::<u64>())
}

/// The API.md success body for a released result.
pub fn result_json(query_id: &str, result: &ReleasedResult) -> Value {
    json!({
        "query_id": query_id,
        "columns": result.columns,
        "rows": result.rows,
        "disclosure": result.disclosure,
    })
}

/// The API.md error body: stable code, public message, reference id — never detail.
pub fn error_json(err: &QueryError, reference: &str) -> Value {
    json!({"error": {"code": err.code(), "message": err.public_message(), "ref": reference}})
}

/// Terminal columns a string occupies: East Asian wide characters take two.
fn display_width(s: &str) -> usize {
    s.chars()
        .map(|c| {
            let c = c as u32;
            let wide = (0x1100..=0x115F).contains(&c)
                || (0x2E80..=0xA4CF).contains(&c)
                || (0xAC00..=0xD7A3).contains(&c)
                || (0xF900..=0xFAFF).contains(&c)
                || (0xFE30..=0xFE4F).contains(&c)
                || (0xFF00..=0xFF60).contains(&c)
                || (0xFFE0..=0xFFE6).contains(&c)
                || (0x20000..=0x3FFFD).contains(&c);
            if wide { 2 } else { 1 }
        })
        .sum()
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A readable table of the released result, suppressed cells shown as `*`, followed
/// by the disclosure summary in Japanese and English.
pub fn render_table(result: &ReleasedResult) -> String {
    let suppressed: std::collections::BTreeSet<(usize, usize)> = result
        .disclosure
        .suppressed
        .iter()
        .map(|[r, c]| (*r, *c))
        .collect();
    let header: Vec<String> = result.columns.iter().map(|c| c.name.clone()).collect();
    let body: Vec<Vec<String>> = result
        .rows
        .iter()
        .enumerate()
        .map(|(r, row)| {
            row.iter()
                .enumerate()
                .map(|(c, v)| {
                    if suppressed.contains(&(r, c)) {
                        "*".into()
                    } else {
                        cell_text(v)
                    }
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| display_width(h)).collect();
    for row in &body {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(display_width(cell));
            }
        }
    }
    let numeric: Vec<bool> = result
        .columns
        .iter()
        .map(|c| {
            c.type_name.starts_with("Int")
                || c.type_name.starts_with("UInt")
                || c.type_name.starts_with("Float")
                || c.type_name.starts_with("Decimal")
        })
        .collect();
    let line = |cells: &[String], align_numbers: bool| -> String {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let pad = " ".repeat(widths[i].saturating_sub(display_width(s)));
                if align_numbers && numeric[i] {
                    format!("{pad}{s}")
                } else {
                    format!("{s}{pad}")
                }
            })
            .collect();
        format!("| {} |", parts.join(" | "))
    };
    let rule = format!(
        "+{}+",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let mut out = String::new();
    out.push_str(&rule);
    out.push('\n');
    out.push_str(&line(&header, false));
    out.push('\n');
    out.push_str(&rule);
    out.push('\n');
    for row in &body {
        out.push_str(&line(row, true));
        out.push('\n');
    }
    out.push_str(&rule);
    out.push('\n');
    let d = &result.disclosure;
    out.push_str(&format!(
        "{} rows / {} 行; suppressed cells (*) / 秘匿セル: {} (k = {}); dropped rows / 除外行: {}\n",
        result.rows.len(),
        result.rows.len(),
        d.suppressed_cells,
        d.threshold,
        d.dropped_rows
    ));
    if let Some(base) = d.rounding {
        out.push_str(&format!(
            "counts rounded to base {base} / 件数は {base} 単位に丸めています\n"
        ));
    }
    for note in &d.notes {
        out.push_str(note);
        out.push('\n');
    }
    out
}

/// The extract version to open: `dir` itself when it holds a manifest, else its only
/// version folder (extracts are versioned, `<application>/<extract id>/`). A folder with
/// none or several is refused with what to pass instead.
fn extract_version(dir: &Path) -> Result<PathBuf, String> {
    if dir.join(EXTRACT_MANIFEST).is_file() {
        return Ok(dir.to_path_buf());
    }
    let versions: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            format!(
                "cannot read {}: {e} / 抽出データのフォルダを読めません",
                dir.display()
            )
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.join(EXTRACT_MANIFEST).is_file())
        .collect();
    match versions.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "{} holds no extract ({EXTRACT_MANIFEST}); build it first / 抽出データがありません（先に作成してください）",
            dir.display()
        )),
        _ => Err(format!(
            "{} holds {} extract versions; pass one of them with --extract / 抽出データが複数あります。--extract でどれか一つを指定してください",
            dir.display(),
            versions.len()
        )),
    }
}

/// Run `kura query`. `run` is the query path (`query::suppression::run_query` with the
/// disclosure rules bound); it receives the extract's session, the SQL, the catalogue
/// and the limits. Exit code 0 on a released result, 2 on a refusal the caller can fix,
/// 1 on an execution or internal error.
pub async fn query<F>(args: QueryArgs, run: F) -> ExitCode
where
    F: AsyncFnOnce(&SessionContext, &str, &Catalog, &Limits) -> Result<QueryOutcome, QueryError>,
{
    let catalog = match &args.catalog {
        Some(path) => Catalog::load(path),
        None => Catalog::embedded(),
    };
    let catalog = match catalog {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kura query: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sql = match (&args.sql, &args.file) {
        (Some(sql), _) => sql.clone(),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "kura query: cannot read {}: {e} / SQL ファイルを読めません",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        },
        (None, None) => {
            eprintln!("kura query: give the SQL or --file / SQL か --file を指定してください");
            return ExitCode::from(2);
        }
    };
    let extract = match extract_version(&args.extract) {
        Ok(dir) => dir,
        Err(msg) => {
            eprintln!("kura query: {msg}");
            return ExitCode::from(2);
        }
    };
    let limits = args.limits();
    let outcome = match open_extract(&extract, &catalog, &limits) {
        Ok(ctx) => run(&ctx, &sql, &catalog, &limits).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(outcome) => {
            if args.json {
                println!("{}", result_json(&new_query_id(), &outcome.result));
            } else {
                print!("{}", render_table(&outcome.result));
                if std::io::stdout().is_terminal() {
                    println!("({:.1} ms)", outcome.duration.as_secs_f64() * 1e3);
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            let reference = new_ref();
            if args.json {
                println!("{}", error_json(&err, &reference));
            } else {
                eprintln!(
                    "error {}: {} (ref {reference})",
                    err.code(),
                    err.public_message()
                );
            }
            tracing::debug!(code = err.code(), reference, "query refused or failed");
            if err.http_status() < 500 {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::{Disclosure, DisclosureMode, ReleasedColumn};

    fn sample() -> ReleasedResult {
        ReleasedResult {
            columns: vec![
                ReleasedColumn {
                    name: "prefecture_code".into(),
                    type_name: "Utf8".into(),
                },
                ReleasedColumn {
                    name: "n".into(),
                    type_name: "Int64".into(),
                },
            ],
            rows: vec![
                vec![json!("13"), json!(412)],
                vec![json!("東京"), Value::Null],
            ],
            disclosure: Disclosure {
                mode: DisclosureMode::Suppression,
                threshold: 5,
                suppressed: vec![[1, 1]],
                suppressed_cells: 1,
                differencing: Vec::new(),
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
    fn table_marks_suppressed_cells_and_aligns_wide_text() {
        let t = render_table(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[3].contains("| 13 "), "{t}");
        assert!(lines[3].contains("412 |"), "{t}");
        assert!(lines[4].contains("*"), "{t}");
        assert!(!lines[4].contains("NULL"), "{t}");
        // Every table line has the same display width although 東京 is two wide chars.
        let widths: Vec<usize> = lines[..6].iter().map(|l| display_width(l)).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{widths:?}\n{t}");
        assert!(t.contains("秘匿セル: 1"), "{t}");
    }

    #[test]
    fn json_has_api_shape_and_errors_hide_detail() {
        let v = result_json("q_1", &sample());
        assert_eq!(v["rows"][1][1], Value::Null);
        assert_eq!(v["disclosure"]["suppressed"][0], json!([1, 1]));
        assert_eq!(v["columns"][1]["type"], "Int64");
        let err = QueryError::execution(datafusion::error::DataFusionError::Execution(
            "Cast error: cannot cast 'secret-value'".into(),
        ));
        let e = error_json(&err, "r_1");
        assert_eq!(e["error"]["code"], "execution_error");
        assert!(!e.to_string().contains("secret-value"), "{e}");
    }
}
