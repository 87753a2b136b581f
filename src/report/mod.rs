//! Reports stage: the usage report (使用状況報告書, 要綱 第4章 4) of one application and
//! fiscal year — who worked, sessions, queries answered / refused / failed, suppressed
//! cells by reason, ε spent, releases, recommendations and extract events — counted from
//! the verified, signed audit log ([`usage`]) and rendered as JSON, CSV and a bilingual
//! HTML document in the ministry's form style ([`render`]); plus the files the CLI writes.
//!
//! Guarantees: a report is only ever built from a chain that verifies; the formats are
//! views of one [`UsageReport`] value.

// seeds (issue 16 §2 §5): the facility feedback report, approval and refusal notices
pub mod feedback;
pub mod notice;
pub mod render;
pub mod usage;

use std::path::{Path, PathBuf};

pub use usage::{ReportError, UsageReport, UserUsage, fiscal_period, usage_report};

/// Output formats of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Html,
}

impl Format {
    /// Parse `json` | `csv` | `html`; `pdf` and others are refused by the caller.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Self::Json),
            "csv" => Some(Self::Csv),
            "html" => Some(Self::Html),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Csv => "csv",
            Self::Html => "html",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Html => "text/html; charset=utf-8",
        }
    }
}

/// The report rendered in `format`.
pub fn rendered(r: &UsageReport, format: Format) -> Result<String, String> {
    match format {
        Format::Json => serde_json::to_string_pretty(r).map_err(|e| e.to_string()),
        Format::Csv => render::csv(r).map_err(|e| e.to_string()),
        Format::Html => Ok(render::html(r)),
    }
}

/// Write the report in every format into `dir` as `usage-<app>-FY<fy>.<ext>`; the paths.
pub fn write_files(r: &UsageReport, dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for f in [Format::Json, Format::Csv, Format::Html] {
        let path = dir.join(format!(
            "usage-{}-FY{}.{}",
            r.application,
            r.fiscal_year,
            f.extension()
        ));
        std::fs::write(&path, rendered(r, f)?)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
