//! Reports stage: the usage report (使用状況報告書, 要綱 第4章 4) of one application and
//! fiscal year — who worked, sessions, queries answered / refused / failed, suppressed
//! cells by reason, ε spent, releases, recommendations and extract events — counted from
//! the verified, signed audit log ([`usage`]) and rendered as JSON, CSV, a bilingual HTML
//! document in the ministry's form style ([`render`]) and PDF for filing ([`pdf`]); the
//! annual report of seed 001 items 10 and 12 ([`annual`]); plus the files the CLI writes.
//!
//! Guarantees: a usage report is only ever built from a chain that verifies; an annual
//! report only from cells the disclosure rules released; the formats are views of one
//! report value ([`document`] lays out the HTML and the PDF once).

// seeds (issue 16 §2 §5): the facility feedback report, approval and refusal notices
pub mod annual;
pub mod document;
pub mod feedback;
pub mod notice;
pub mod pdf;
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
    Pdf,
}

impl Format {
    /// Every format, in the order files are written.
    pub const ALL: [Format; 4] = [Format::Json, Format::Csv, Format::Html, Format::Pdf];

    /// Parse `json` | `csv` | `html` | `pdf`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Self::Json),
            "csv" => Some(Self::Csv),
            "html" => Some(Self::Html),
            "pdf" => Some(Self::Pdf),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Csv => "csv",
            Self::Html => "html",
            Self::Pdf => "pdf",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Html => "text/html; charset=utf-8",
            Self::Pdf => "application/pdf",
        }
    }
}

/// Why a report could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Pdf(#[from] pdf::PdfError),
    #[error("the report could not be rendered: {0}")]
    Other(String),
}

fn other(e: impl std::fmt::Display) -> RenderError {
    RenderError::Other(e.to_string())
}

/// The usage report rendered in `format` (`font`: the configured `report_font`).
pub fn rendered(
    r: &UsageReport,
    format: Format,
    font: Option<&Path>,
) -> Result<Vec<u8>, RenderError> {
    Ok(match format {
        Format::Json => serde_json::to_vec_pretty(r).map_err(other)?,
        Format::Csv => render::csv(r).map_err(other)?.into_bytes(),
        Format::Html => render::html(r).into_bytes(),
        Format::Pdf => {
            let font = pdf::ReportFont::find(font)?;
            pdf::render(&render::document(r), &font, false)?
        }
    })
}

/// The annual report rendered in `format`.
pub fn annual_rendered(
    r: &annual::AnnualReport,
    format: Format,
    font: Option<&Path>,
) -> Result<Vec<u8>, RenderError> {
    Ok(match format {
        Format::Json => serde_json::to_vec_pretty(r).map_err(other)?,
        Format::Csv => annual::render::csv(r).map_err(other)?.into_bytes(),
        Format::Html => document::html(&annual::render::document(r), "ja").into_bytes(),
        Format::Pdf => {
            let font = pdf::ReportFont::find(font)?;
            pdf::render(&annual::render::document(r), &font, true)?
        }
    })
}

/// Render every format first, then write them into `dir` as `<stem>.<ext>` (nothing is
/// written if one format fails); the paths.
fn write_all(
    dir: &Path,
    stem: &str,
    render: impl Fn(Format) -> Result<Vec<u8>, RenderError>,
) -> Result<Vec<PathBuf>, String> {
    let files: Vec<(Format, Vec<u8>)> = Format::ALL
        .iter()
        .map(|&f| render(f).map(|b| (f, b)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for (f, bytes) in files {
        let path = dir.join(format!("{stem}.{}", f.extension()));
        std::fs::write(&path, bytes)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Write the usage report in every format into `dir` as `usage-<app>-FY<fy>.<ext>`.
pub fn write_files(
    r: &UsageReport,
    dir: &Path,
    font: Option<&Path>,
) -> Result<Vec<PathBuf>, String> {
    let stem = format!("usage-{}-FY{}", r.application, r.fiscal_year);
    write_all(dir, &stem, |f| rendered(r, f, font))
}

/// Write the annual report in every format into `dir` as `annual-FY<fy>.<ext>`.
pub fn write_annual_files(
    r: &annual::AnnualReport,
    dir: &Path,
    font: Option<&Path>,
) -> Result<Vec<PathBuf>, String> {
    let stem = format!("annual-FY{}", r.fiscal_year);
    write_all(dir, &stem, |f| annual_rendered(r, f, font))
}
