//! Notebooks, Jupyter format: a kura notebook as an nbformat 4.5 document and back.
//!
//! Export: Markdown cells become markdown cells; SQL cells become code cells whose first
//! line is the cell magic `%%kura` (the Python example in `docs/jupyter.md` defines it over
//! Flight SQL, so the exported notebook runs in JupyterLab); a cell that was run for the
//! export carries its released answer as an `execute_result` (HTML and text tables, the
//! columns and rows as JSON, and a bar chart as PNG when the answer has something to plot,
//! drawn by the airlock's renderer from released values only, suppressed cells never
//! drawn) and its query id and disclosure record in the cell's `metadata.kura`; a refused
//! cell carries an `error` output with the code and message.
//!
//! Import: only `nbformat` 4; Markdown cells and `%%kura` code cells come back as cells;
//! any other code or raw cell is kept as Markdown text in a fenced block (nothing is lost,
//! nothing is run); outputs, attachments and metadata are dropped — outputs are
//! recomputed by running the cells, never trusted. Cell count, cell size and title length
//! are limited ([`super::MAX_CELLS`], [`super::MAX_SOURCE`], [`super::MAX_TITLE`]); every
//! problem is refused naming the cell and the fix.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{Cell, CellKind, MAX_CELLS, MAX_SOURCE, MAX_TITLE, table};
use crate::privacy::result::ReleasedResult;
use crate::store::model::Notebook;

/// The first line of a kura SQL cell in Jupyter.
pub const MAGIC: &str = "%%kura";

/// What running one SQL cell for the export gave.
#[derive(Debug, Clone)]
pub enum Run {
    Answered {
        query_id: String,
        result: Box<ReleasedResult>,
        /// The answer's bar chart (PNG bytes), when it has something to plot.
        chart: Option<Vec<u8>>,
    },
    Refused {
        code: String,
        message: String,
        reference: String,
    },
}

/// nbformat's multiline string: the text split after each newline.
fn lines(text: &str) -> Value {
    Value::Array(
        text.split_inclusive('\n')
            .map(|l| Value::String(l.to_string()))
            .collect(),
    )
}

fn markdown_cell(i: usize, source: &str) -> Value {
    json!({"cell_type": "markdown", "id": format!("kura-{i}"), "metadata": {}, "source": lines(source)})
}

/// The output and the `metadata.kura` of a run SQL cell.
fn output(run: &Run, n: usize, application: &str) -> (Value, Value) {
    match run {
        Run::Answered {
            query_id,
            result,
            chart,
        } => (
            json!({
                "output_type": "execute_result",
                "execution_count": n,
                "metadata": {},
                "data": answer_data(result, chart.as_deref()),
            }),
            json!({
                "query_id": query_id,
                "application": application,
                "disclosure": result.disclosure,
            }),
        ),
        Run::Refused {
            code,
            message,
            reference,
        } => (
            json!({
                "output_type": "error",
                "ename": code,
                "evalue": message,
                "traceback": [format!("{code}: {message} (ref {reference})")],
            }),
            json!({"application": application, "refused": {"code": code, "ref": reference}}),
        ),
    }
}

/// The MIME bundle of an answer: HTML and text tables, JSON, and the chart if any
/// (nbformat wants PNG as one base64 string).
fn answer_data(result: &ReleasedResult, chart: Option<&[u8]>) -> Value {
    use base64::Engine;
    let mut data = json!({
        "text/html": lines(&table::html(result)),
        "text/plain": lines(&table::text(result)),
        "application/json": {"columns": result.columns, "rows": result.rows},
    });
    if let Some(png) = chart {
        data["image/png"] = Value::String(base64::engine::general_purpose::STANDARD.encode(png));
    }
    data
}

fn sql_cell(i: usize, source: &str, run: Option<&Run>, n: usize, application: &str) -> Value {
    let text = format!("{MAGIC}\n{source}");
    let (outputs, count, kura) = match run {
        Some(r) => {
            let (out, meta) = output(r, n, application);
            (vec![out], json!(n), meta)
        }
        None => (vec![], Value::Null, json!({"application": application})),
    };
    json!({
        "cell_type": "code",
        "id": format!("kura-{i}"),
        "metadata": {"kura": kura},
        "execution_count": count,
        "outputs": outputs,
        "source": lines(&text),
    })
}

/// The notebook as nbformat 4.5 JSON; `runs[i]` is the run of cell `i`, if it was run.
pub fn export(
    nb: &Notebook,
    cells: &[Cell],
    runs: &[Option<Run>],
    by: &str,
    at: DateTime<Utc>,
) -> Value {
    let mut executed = 0;
    let out: Vec<Value> = cells
        .iter()
        .enumerate()
        .map(|(i, c)| match c.kind {
            CellKind::Markdown => markdown_cell(i + 1, &c.source),
            CellKind::Sql => {
                let run = runs.get(i).and_then(Option::as_ref);
                executed += usize::from(run.is_some());
                sql_cell(i + 1, &c.source, run, executed, &nb.application_id)
            }
        })
        .collect();
    json!({
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "kura": {
                "notebook_id": nb.id,
                "title": nb.title,
                "application": nb.application_id,
                "exported_by": by,
                "exported_at": at.to_rfc3339(),
                "outputs": if runs.iter().any(Option::is_some) { "run at export" } else { "none" },
                "notice": {
                    "en": "Released answers for work within the approved study. Publishing any result needs a release request (output check) in kura.",
                    "ja": "承認された研究の範囲内で使う公開済みの集計結果です。成果を公表するには kura で持ち出し審査（リリース申請）を受けてください。",
                },
            },
        },
        "cells": out,
    })
}

/// An import that cannot be made, naming where and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ImportError {
    /// `notebook`, `nbformat`, `cells`, `cells[3]`, `title`.
    pub field: String,
    pub message: String,
}

fn refuse(field: impl Into<String>, message: String) -> ImportError {
    ImportError {
        field: field.into(),
        message,
    }
}

/// An imported notebook: its cells, a title from its metadata if any, and the cells that
/// were kept as Markdown text (1-based, as Jupyter numbers them).
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub title: Option<String>,
    pub cells: Vec<Cell>,
    pub kept_as_text: Vec<usize>,
}

/// A cell source: a string or a list of strings (nbformat's multiline string).
fn source_of(cell: &Map<String, Value>, n: usize) -> Result<String, ImportError> {
    let text = match cell.get("source") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| p.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.concat())
            .ok_or_else(|| bad_cell(n, "its source is a list with non-text entries"))?,
        None => String::new(),
        Some(_) => return Err(bad_cell(n, "its source is not text")),
    };
    if text.chars().count() > MAX_SOURCE {
        return Err(refuse(
            format!("cells[{n}]"),
            format!(
                "cell {n} has more than {MAX_SOURCE} characters; split it into smaller cells / セル {n} が長すぎます（{MAX_SOURCE} 文字まで）。分割してください"
            ),
        ));
    }
    Ok(text)
}

fn bad_cell(n: usize, what: &str) -> ImportError {
    refuse(
        format!("cells[{n}]"),
        format!(
            "cell {n} is not a valid Jupyter cell: {what}; save the notebook again from Jupyter / セル {n} が Jupyter のセルとして不正です"
        ),
    )
}

/// The kura cell of one Jupyter cell (1-based `n`), and whether it was kept as text.
fn cell_of(v: &Value, n: usize) -> Result<(Cell, bool), ImportError> {
    let cell = v.as_object().ok_or_else(|| bad_cell(n, "not an object"))?;
    let source = source_of(cell, n)?;
    let kind = cell.get("cell_type").and_then(Value::as_str);
    match kind {
        Some("markdown") => Ok((Cell::markdown(source), false)),
        Some("code") => match source.split_once('\n') {
            Some((first, rest)) if first.trim() == MAGIC => Ok((Cell::sql(rest), false)),
            None if source.trim() == MAGIC => Ok((Cell::sql(""), false)),
            _ => Ok((kept(&source, "python"), true)),
        },
        Some("raw") => Ok((kept(&source, "text"), true)),
        _ => Err(bad_cell(n, "cell_type is not markdown, code or raw")),
    }
}

/// A non-kura cell kept as Markdown: its text in a fenced block, with a note.
fn kept(source: &str, lang: &str) -> Cell {
    let longest = source
        .lines()
        .map(|l| l.chars().take_while(|c| *c == '`').count())
        .max()
        .unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    Cell::markdown(format!(
        "*Imported from Jupyter; kura runs SQL cells only (`%%kura`), so this cell is kept as text. / Jupyter から取り込んだセルです。kura は SQL セル（%%kura）のみ実行するため、テキストとして保存しています。*\n\n{fence}{lang}\n{source}\n{fence}"
    ))
}

/// Read an uploaded `.ipynb` (already parsed as JSON).
pub fn import(doc: &Value) -> Result<Imported, ImportError> {
    let doc = doc.as_object().ok_or_else(|| {
        refuse(
            "notebook",
            "`notebook` must be the .ipynb file's JSON object / notebook には .ipynb ファイルの JSON を指定してください".into(),
        )
    })?;
    if doc.get("nbformat").and_then(Value::as_u64) != Some(4) {
        return Err(refuse(
            "nbformat",
            "only nbformat 4 notebooks (Jupyter 4.0 and later) can be imported; open and save it in a current JupyterLab first / nbformat 4 のノートブックのみ取り込めます".into(),
        ));
    }
    let cells = doc.get("cells").and_then(Value::as_array).ok_or_else(|| {
        refuse(
            "cells",
            "the notebook has no `cells` list / cells がありません".into(),
        )
    })?;
    if cells.len() > MAX_CELLS {
        return Err(refuse(
            "cells",
            format!(
                "the notebook has {} cells; at most {MAX_CELLS} can be imported — split it / セルが多すぎます（{MAX_CELLS} 個まで）",
                cells.len()
            ),
        ));
    }
    let mut out = Imported {
        title: title_of(doc)?,
        cells: Vec::with_capacity(cells.len()),
        kept_as_text: Vec::new(),
    };
    for (i, v) in cells.iter().enumerate() {
        let (cell, as_text) = cell_of(v, i + 1)?;
        if as_text {
            out.kept_as_text.push(i + 1);
        }
        out.cells.push(cell);
    }
    Ok(out)
}

/// The title kura exported into the metadata, if any (checked like a typed one).
fn title_of(doc: &Map<String, Value>) -> Result<Option<String>, ImportError> {
    let t = doc
        .get("metadata")
        .and_then(|m| m.get("kura"))
        .and_then(|k| k.get("title"))
        .and_then(Value::as_str);
    match t {
        Some(t) => check_title(t).map(Some),
        None => Ok(None),
    }
}

/// A title within [`MAX_TITLE`] characters, trimmed.
pub fn check_title(t: &str) -> Result<String, ImportError> {
    let t = t.trim();
    if t.chars().count() > MAX_TITLE {
        return Err(refuse(
            "title",
            format!(
                "the title has more than {MAX_TITLE} characters; shorten it / タイトルが長すぎます（{MAX_TITLE} 文字まで）"
            ),
        ));
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nb(cells: Value) -> Value {
        json!({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells})
    }

    #[test]
    fn kura_cells_round_trip_and_other_cells_are_kept_as_text() {
        let doc = nb(json!([
            {"cell_type": "markdown", "metadata": {}, "source": ["# Study\n", "notes"]},
            {"cell_type": "code", "metadata": {}, "outputs": [{"output_type": "stream", "text": "forged"}],
             "execution_count": 3, "source": "%%kura\nSELECT sex, count(*) AS n\nFROM patient GROUP BY sex"},
            {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": null, "source": "df.plot()"},
            {"cell_type": "raw", "metadata": {}, "source": "raw text"},
        ]));
        let got = import(&doc).unwrap();
        assert_eq!(got.cells[0], Cell::markdown("# Study\nnotes"));
        assert_eq!(
            got.cells[1],
            Cell::sql("SELECT sex, count(*) AS n\nFROM patient GROUP BY sex")
        );
        assert!(got.cells[2].source.contains("```python\ndf.plot()\n```"));
        assert_eq!(got.cells[2].kind, CellKind::Markdown);
        assert_eq!(got.kept_as_text, vec![3, 4]);
        // The forged output is gone: only text came in.
        assert!(
            !serde_json::to_string(&got.cells)
                .unwrap()
                .contains("forged")
        );
    }

    #[test]
    fn a_fence_inside_a_cell_cannot_close_the_block_early() {
        let c = kept("```\nx\n````", "python");
        assert!(c.source.contains("`````python\n"), "{}", c.source);
    }

    #[test]
    fn bad_files_are_refused_naming_the_place() {
        assert_eq!(import(&json!([])).unwrap_err().field, "notebook");
        let v3 = json!({"nbformat": 3, "worksheets": []});
        assert_eq!(import(&v3).unwrap_err().field, "nbformat");
        let many = nb(Value::Array(vec![
            json!({"cell_type": "markdown", "source": "x"});
            MAX_CELLS + 1
        ]));
        assert_eq!(import(&many).unwrap_err().field, "cells");
        let long = nb(json!([{"cell_type": "markdown", "source": "x".repeat(MAX_SOURCE + 1)}]));
        assert_eq!(import(&long).unwrap_err().field, "cells[1]");
        let odd = nb(json!([{"cell_type": "markdown", "source": "ok"}, {"cell_type": "widget"}]));
        assert_eq!(import(&odd).unwrap_err().field, "cells[2]");
        let title = json!({"nbformat": 4, "metadata": {"kura": {"title": "t".repeat(MAX_TITLE + 1)}}, "cells": []});
        assert_eq!(import(&title).unwrap_err().field, "title");
    }
}
