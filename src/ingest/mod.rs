//! Ingest — the stage before every query: turns source registry extracts (which carry direct
//! identifiers) into pseudonymised, consent-filtered Parquet plus a manifest. It also holds the
//! synthetic source generator and the ingest benchmark.
//!
//! ```text
//!  source CSV (patients, withdrawals, clinical, reference)
//!     ─► parse + validate (file, line, column on error)      source.rs / pipeline.rs
//!     ─► consent index: patients ⋈ withdrawals → (registry_no, pid) for usable patients
//!        pid = HMAC-SHA256(key, registry_no)[..16]           pipeline.rs / key.rs
//!     ─► consent filter: each table merged with the index    pipeline.rs
//!     ─► drop identifiers, coarsen (birth year, prefecture)  source.rs
//!     ─► Parquet per catalogue table + manifest.json          manifest.rs
//!     ─► fsync + rename into place                           staging.rs
//! ```
//!
//! Guarantees: output tables have exactly the catalogue's Arrow schema; no direct identifier
//! column is ever copied (a catalogue asking for one is refused); only patients who consented
//! and did not withdraw appear, in every table; values lie inside the catalogue's domains and
//! bounds; the output directory appears complete or not at all; the manifest records the key's
//! fingerprint, never the key. Memory stays flat in the number of patients: every file is
//! streamed in batches, and the consent filter is a merge with a small on-disk index over files
//! sorted by `registry_no`.

// seeds (issue 16 §6): JaSMIn reference lists and registrants
pub mod jasmin;
mod key;
mod manifest;
pub(crate) mod pipeline;
pub mod reference;
// seeds (issue 16 §4): machine judgement of the severity criteria
pub mod severity;
pub mod source;
mod staging;
pub mod synth;

use std::path::PathBuf;

pub use key::PseudonymKey;
pub use manifest::{
    Manifest, ManifestTable, manifest_hash, try_manifest_hash, verify_against_catalog,
};
pub use pipeline::{RunSettings, run, run_with};
pub use staging::StagingError;

use crate::catalog::Catalog;

/// What to ingest and where to.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Directory holding the source CSV files (`docs/data.md`).
    pub source: PathBuf,
    /// Output directory; created atomically.
    pub out: PathBuf,
    /// The catalogue the output must match.
    pub catalog: Catalog,
    /// Show progress bars on the terminal.
    pub progress: bool,
}

/// Why ingest (or a key operation, or a check of ingest output) failed. Errors name the file,
/// line and column and the fix; they never quote a source value, since source values are
/// identifying and errors end up in logs.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(
        "no pseudonymisation key at {path}. Create one with `kura keygen --out {path}` and keep it outside the repository / 仮名化鍵がありません。`kura keygen --out {path}` で作成してください",
        path = path.display()
    )]
    KeyMissing { path: PathBuf },
    #[error(
        "{path} already exists; kura keygen never overwrites a key (every pseudonym would change). Choose another path / 鍵ファイルが既に存在します（上書きしません）",
        path = path.display()
    )]
    KeyExists { path: PathBuf },
    #[error(
        "pseudonymisation key is malformed: {detail}. Create a new one with `kura keygen --out FILE` / 鍵の形式が不正です"
    )]
    KeyFormat { detail: String },
    #[error("{path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Output(#[from] StagingError),
    #[error("source file {file} is missing; see docs/data.md for the files a source directory holds / 入力ファイルがありません", file = file.display())]
    MissingFile { file: PathBuf },
    #[error("{file}: header has no column `{column}`; add it (see docs/data.md) / 列 `{column}` がありません", file = file.display())]
    MissingColumn { file: PathBuf, column: String },
    #[error("{file}:{line}: malformed CSV row ({source}); fix the row and run again / CSV 行が不正です", file = file.display())]
    Csv {
        file: PathBuf,
        line: u64,
        #[source]
        source: csv::Error,
    },
    #[error("{file}:{line}: column {column} is not valid UTF-8; re-export the file as UTF-8 / UTF-8 ではありません", file = file.display())]
    Encoding {
        file: PathBuf,
        line: u64,
        column: String,
    },
    #[error("{file}:{line}: column {column}: {expected} / 値が不正です", file = file.display())]
    Value {
        file: PathBuf,
        line: u64,
        column: String,
        expected: String,
    },
    #[error("{file}:{line}: rows must be sorted by registry_no (byte order); sort the file and run again / registry_no 順に並べてください", file = file.display())]
    Unsorted { file: PathBuf, line: u64 },
    #[error("{file}:{line}: a second row for the same registry_no in a table with one row per patient (one_row_per_patient in the catalogue); remove the duplicate and run again / 患者ごとに 1 行の表に同じ registry_no の行が 2 行あります。重複を削除してください", file = file.display())]
    SecondRow { file: PathBuf, line: u64 },
    #[error("catalogue table `{table}`: {detail}")]
    Catalog { table: String, detail: String },
    #[error("writing {path}: {source}", path = path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: datafusion::parquet::errors::ParquetError,
    },
    #[error("building table `{table}`: {source}")]
    Arrow {
        table: String,
        #[source]
        source: datafusion::arrow::error::ArrowError,
    },
    #[error("{path}: manifest is unreadable: {detail}", path = path.display())]
    Manifest { path: PathBuf, detail: String },
    #[error("ingest output does not match the catalogue: {detail} / 出力がカタログと一致しません")]
    Mismatch { detail: String },
    #[error(
        "{file} does not match the SHA-256 in manifest.json: it was modified or corrupted after ingest; ingest again / ファイルが改ざんまたは破損しています",
        file = file.display()
    )]
    Tampered { file: PathBuf },
}
