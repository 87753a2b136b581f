//! The output airlock, the files a release consists of: per output `result-N.csv` (the
//! snapshot's own text), `result-N.xlsx` and `result-N.png` (its chart), rendered when the
//! release is requested and sealed with it; and `release.json`, the release record,
//! added when the last required reviewer approves.
//!
//! Guarantees: every file is derived from the sealed snapshot only (never from the
//! database again), is stored with its SHA-256, and names of files are fixed
//! ([`is_release_file`]): nothing else can be asked for.

pub mod chart;
pub mod csv;
pub mod record;
pub mod xlsx;

use super::snapshot::OutputSnapshot;
use super::{AirlockError, Result};
use crate::privacy::result::ReleasedResult;
use crate::store::model::ReleaseFileInfo;
use crate::store::releases::NewFile;
use crate::store::results::sha256_hex;

pub const CSV: &str = "text/csv; charset=utf-8";
pub const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
pub const PNG: &str = "image/png";
pub const JSON: &str = "application/json";

/// The name of the release record.
pub const RECORD: &str = "release.json";

/// Whether `name` is a name a release file can have (`result-<n>.csv|xlsx|png` or
/// `release.json`); anything else is refused before the store is asked.
pub fn is_release_file(name: &str) -> bool {
    if name == RECORD {
        return true;
    }
    let Some(rest) = name.strip_prefix("result-") else {
        return false;
    };
    let Some((n, ext)) = rest.split_once('.') else {
        return false;
    };
    !n.is_empty()
        && n.len() <= 3
        && n.bytes().all(|b| b.is_ascii_digit())
        && !n.starts_with('0')
        && matches!(ext, "csv" | "xlsx" | "png")
}

/// A file with its hash.
pub fn file(name: String, media_type: &str, content: Vec<u8>) -> NewFile {
    NewFile {
        sha256: sha256_hex(&content),
        name,
        media_type: media_type.to_string(),
        content,
    }
}

/// Its description (no content).
pub fn info(f: &NewFile) -> ReleaseFileInfo {
    ReleaseFileInfo {
        name: f.name.clone(),
        media_type: f.media_type.clone(),
        bytes: f.content.len() as u64,
        sha256: f.sha256.clone(),
    }
}

/// The table and chart files of one output.
pub fn render_output(s: &OutputSnapshot, result: &ReleasedResult) -> Result<Vec<NewFile>> {
    let render = |file: &str, cause: String| AirlockError::Render {
        file: file.to_string(),
        cause,
    };
    let mut out = vec![file(
        format!("{}.csv", s.name),
        CSV,
        s.csv.clone().into_bytes(),
    )];
    let book = xlsx::render(s, result).map_err(|e| render("xlsx", e))?;
    out.push(file(format!("{}.xlsx", s.name), XLSX, book));
    let title = format!("{} — {}", s.name, s.query_id);
    let mark = super::cells::marker(result);
    let png =
        chart::render(result, &s.column_rules, &title, &mark).map_err(|e| render("png", e))?;
    if let Some(png) = png {
        out.push(file(format!("{}.png", s.name), PNG, png));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_release_file_names_are_accepted() {
        for ok in [
            "result-1.csv",
            "result-10.xlsx",
            "result-2.png",
            "release.json",
        ] {
            assert!(is_release_file(ok), "{ok}");
        }
        for bad in [
            "result-0.csv",
            "result-01.csv",
            "result-1.txt",
            "../kura.db",
            "result-1.csv/../../x",
            "result-.csv",
            "result-1000.csv",
            "RELEASE.JSON",
            "",
        ] {
            assert!(!is_release_file(bad), "{bad}");
        }
    }
}
