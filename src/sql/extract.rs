//! Scope stage, materialised: builds one application's **extract** — its own Parquet
//! copy of the registry holding only the approved datasets' tables, only in-scope
//! patients and records, with `pid` re-pseudonymised under the application's key.
//!
//! Guarantees:
//! - Rows outside the scope are never written, so no later query (and no error or
//!   timing of one) can touch them; the optimizer cannot merge a scope filter with the
//!   researcher's predicates because there is no scope filter at query time.
//! - `pid` in the extract is the lowercase hex of the first 16 bytes of
//!   HMAC-SHA256(app_key, source pid): two applications' outputs cannot be joined on it,
//!   and no source pid appears in an extract. The mapping is never written anywhere.
//! - Every patient gets a dense `u32` index: its rank among the extract's pids, written as
//!   `patient_index.txt` (hashed in the manifest), so that the privacy rewrite can hold a
//!   cell's contributors as a set (`engine::patient_index`, `engine::contributors`).
//! - The extract is written into a temporary sibling directory and renamed into place
//!   (files and directories fsynced, so the rename survives a crash), so a failed build
//!   leaves no half extract; `extract.json` records the scope, the source manifest hash,
//!   a key fingerprint, row counts and file hashes, and the extract is rebuilt when the
//!   source data or the scope changes. Leftovers of a build a crash interrupted
//!   (`.*.tmp-*`, `.*.old-*`: patient rows) are removed by [`sweep_leftovers`] at start.
//! - The server keeps one directory per extract version (`extracts/<application>/<extract
//!   id>`, [`planned_id`]): a new version is built beside the live one, never over it, and
//!   becomes live only when the store registers it (with the approval that asked for it).
//!
//! The patient-set rule is documented in `docs/extracts.md`; in short, a patient is in
//! scope when (1) their `patient` row passes the patient table's own scope columns, (2)
//! they have at least one record passing all scope columns of that table in some
//! patient table of an approved dataset, and (3) for every restricted dimension, some
//! source record of theirs carries an approved value (e.g. with a disease list, an ALS
//! registry patient needs a clinical survey with an approved disease number). Every
//! patient table of an approved dataset is then cut to that patient set *and* its own
//! scope columns. Filtering runs as DataFusion plans over record batches (semi-joins,
//! `IN` lists), never row by row.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, JoinType, col, lit};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::errors::ParquetError;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use ring::{digest, hmac};
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, ScopeDim, Table, TableKind};
use crate::engine::patient_index::{PATIENT_INDEX_FILE, PatientIndex};
use crate::sql::scope::Scope;

/// Version of the extract layout and manifest written by this build.
pub const EXTRACT_VERSION: u32 = 2;
/// File name of the extract manifest inside an extract directory.
pub const EXTRACT_MANIFEST: &str = "extract.json";
/// File name of the ingest manifest inside a source dataset directory.
pub const SOURCE_MANIFEST: &str = "manifest.json";
/// Shortest application key accepted: shorter keys make the pseudonyms guessable.
pub const MIN_KEY_BYTES: usize = 16;

/// Failures while building or checking an extract. Each names the object and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("invalid scope: {0}")]
    Scope(String),
    #[error(
        "the application key is {0} bytes; at least {MIN_KEY_BYTES} random bytes are required (generate one with `openssl rand -hex 32`) / アプリケーション鍵が短すぎます（{MIN_KEY_BYTES} バイト以上必要）"
    )]
    KeyTooShort(usize),
    #[error(
        "source dataset {path} has no readable {SOURCE_MANIFEST}; run `kura ingest` into it first / 元データに manifest.json がありません。先に kura ingest を実行してください"
    )]
    SourceManifest {
        path: PathBuf,
        #[source]
        source: crate::ingest::IngestError,
    },
    #[error(
        "source table `{table}` is missing ({path}); re-run `kura ingest` / 元データのテーブル `{table}` がありません"
    )]
    SourceTableMissing { table: String, path: PathBuf },
    #[error(
        "source table `{table}` does not match the catalogue: {detail}; re-run `kura ingest` with this catalogue / 元データのテーブル `{table}` がカタログと一致しません"
    )]
    SourceSchema { table: String, detail: String },
    #[error(
        "{path} exists and is not a kura extract; choose another output directory / 出力先は kura の抽出データではありません"
    )]
    NotAnExtract { path: PathBuf },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("query engine failed while building table `{table}`")]
    Engine {
        table: String,
        #[source]
        source: DataFusionError,
    },
    #[error("cannot write Parquet for table `{table}`")]
    Parquet {
        table: String,
        #[source]
        source: ParquetError,
    },
    #[error("cannot encode or decode extract manifest {path}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One table of an extract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractTable {
    /// File name inside the extract directory (`<table>.parquet`).
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the Parquet file.
    pub sha256: String,
}

/// The manifest of one extract (`extract.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractManifest {
    pub version: u32,
    /// Stable id derived from scope, source manifest hash and key fingerprint: the same
    /// inputs give the same id, so an id names one exact content.
    pub extract_id: String,
    /// The scope, normalised (lists sorted, duplicates removed).
    pub scope: Scope,
    /// SHA-256 of the source dataset's `manifest.json`.
    pub source_manifest_sha256: String,
    /// Identifies the application key without revealing it (HMAC of a fixed label).
    pub key_fingerprint: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Distinct patients in the extract.
    pub patients: u64,
    /// Rows of patient tables written (the build-speed denominator).
    pub patient_rows: u64,
    /// Build duration in milliseconds.
    pub build_ms: u64,
    pub tables: BTreeMap<String, ExtractTable>,
    /// SHA-256 of the patient index file (`engine::patient_index`): the extract's pids,
    /// sorted, one per line; a patient's line number is its dense index.
    #[serde(default)]
    pub patient_index_sha256: String,
}

impl ExtractManifest {
    /// Read `extract.json` from an extract directory.
    pub fn read(dir: &Path) -> Result<Self, ExtractError> {
        let path = dir.join(EXTRACT_MANIFEST);
        let text = fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&text).map_err(|source| ExtractError::Manifest { path, source })
    }
}

/// The scope with every list sorted and deduplicated, so that equal approvals compare
/// equal whatever order their lists were written in.
pub fn normalise_scope(scope: &Scope) -> Scope {
    fn norm<T: Ord + Clone>(v: &Option<Vec<T>>) -> Option<Vec<T>> {
        v.as_ref().map(|v| {
            let mut v = v.clone();
            v.sort();
            v.dedup();
            v
        })
    }
    Scope {
        datasets: norm(&Some(scope.datasets.clone())).unwrap_or_default(),
        diseases: norm(&scope.diseases),
        fiscal_years: norm(&scope.fiscal_years),
        prefectures: norm(&scope.prefectures),
        manufacturers: norm(&scope.manufacturers),
        facilities: norm(&scope.facilities),
    }
}

/// SHA-256 of the source dataset's manifest; it changes whenever ingest rewrites data
/// (new records, withdrawn consent), which is what makes an extract stale.
/// The version of the source dataset: the SHA-256 of its ingest manifest, which itself
/// pins every table file's hash. An extract built from another version is stale.
fn source_manifest_hash(source: &Path) -> Result<String, ExtractError> {
    crate::ingest::try_manifest_hash(source).map_err(|e| ExtractError::SourceManifest {
        path: source.to_path_buf(),
        source: e,
    })
}

fn key_fingerprint(app_key: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, app_key);
    hex::encode(&hmac::sign(&key, b"kura extract key fingerprint v1").as_ref()[..8])
}

fn extract_id(scope: &Scope, source_hash: &str, key_fp: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(serde_json::to_string(scope).unwrap_or_default().as_bytes());
    ctx.update(b"\0");
    ctx.update(source_hash.as_bytes());
    ctx.update(b"\0");
    ctx.update(key_fp.as_bytes());
    format!("x_{}", &hex::encode(ctx.finish().as_ref())[..20])
}

/// The id the extract of `scope` over `source` with `app_key` will have (the name of its
/// version directory), without building it.
pub fn planned_id(source: &Path, scope: &Scope, app_key: &[u8]) -> Result<String, ExtractError> {
    let scope = normalise_scope(scope);
    Ok(extract_id(
        &scope,
        &source_manifest_hash(source)?,
        &key_fingerprint(app_key),
    ))
}

/// Whether a directory name is a leftover of an interrupted build or replacement.
fn is_leftover(name: &str) -> bool {
    name.starts_with('.') && (name.contains(".tmp-") || name.contains(".old-"))
}

/// Remove the leftovers of interrupted builds under `extracts` (the directory itself and
/// one level of application directories). Run at start, when no build is in flight.
/// Returns what was removed.
pub fn sweep_leftovers(extracts: &Path) -> Result<Vec<PathBuf>, ExtractError> {
    let mut removed = Vec::new();
    if !extracts.is_dir() {
        return Ok(removed);
    }
    let mut dirs = vec![extracts.to_path_buf()];
    for entry in fs::read_dir(extracts).map_err(io_err(extracts))? {
        let path = entry.map_err(io_err(extracts))?.path();
        if path.is_dir() && !path.join(EXTRACT_MANIFEST).exists() {
            dirs.push(path);
        }
    }
    for dir in dirs {
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if path.is_dir() && name.as_deref().is_some_and(is_leftover) {
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
                removed.push(path);
            }
        }
        crate::durable::sync_dir(&dir).map_err(io_err(&dir))?;
    }
    Ok(removed)
}

/// Remove the version directories of one application's extracts other than `keep` (and
/// leave in-flight builds, whose names start with a dot, alone). Returns what was removed.
pub fn retire_versions(app_dir: &Path, keep: &Path) -> Result<Vec<PathBuf>, ExtractError> {
    let mut removed = Vec::new();
    if !app_dir.is_dir() || app_dir.join(EXTRACT_MANIFEST).exists() {
        return Ok(removed);
    }
    for entry in fs::read_dir(app_dir).map_err(io_err(app_dir))? {
        let path = entry.map_err(io_err(app_dir))?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if path.is_dir() && !hidden && path != keep {
            fs::remove_dir_all(&path).map_err(io_err(&path))?;
            removed.push(path);
        }
    }
    crate::durable::sync_dir(app_dir).map_err(io_err(app_dir))?;
    Ok(removed)
}

fn file_sha256(path: &Path) -> Result<(String, u64), ExtractError> {
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        n_total += n as u64;
        ctx.update(&buf[..n]);
    }
    Ok((hex::encode(ctx.finish().as_ref()), n_total))
}

/// Re-pseudonymise one pid: lowercase hex of the first 16 bytes of HMAC-SHA256.
pub fn repseudonymise(key: &hmac::Key, pid: &str) -> String {
    hex::encode(&hmac::sign(key, pid.as_bytes()).as_ref()[..16])
}

/// A restricted dimension: an approval dimension of the catalogue (`scope = …`), or the
/// facility (columns marked `facility = true`) of a medical institution's standing scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dim {
    Scope(ScopeDim),
    Facility,
}

impl Dim {
    /// The column of `table` carrying this dimension, if any.
    fn column(self, table: &Table) -> Option<&crate::catalog::Column> {
        match self {
            Dim::Scope(d) => table.scope_column(d),
            Dim::Facility => table.columns.iter().find(|c| c.facility),
        }
    }
}

/// The approved values per restricted dimension, as literal lists.
fn restrictions(scope: &Scope) -> Vec<(Dim, Vec<Expr>)> {
    let mut out = Vec::new();
    if let Some(v) = &scope.fiscal_years {
        out.push((
            Dim::Scope(ScopeDim::FiscalYear),
            v.iter().map(|x| lit(*x)).collect(),
        ));
    }
    if let Some(v) = &scope.diseases {
        out.push((
            Dim::Scope(ScopeDim::Disease),
            v.iter().map(|x| lit(*x)).collect(),
        ));
    }
    if let Some(v) = &scope.prefectures {
        out.push((
            Dim::Scope(ScopeDim::Region),
            v.iter().map(|x| lit(x.clone())).collect(),
        ));
    }
    if let Some(v) = &scope.manufacturers {
        out.push((
            Dim::Scope(ScopeDim::Manufacturer),
            v.iter().map(|x| lit(x.clone())).collect(),
        ));
    }
    if let Some(v) = &scope.facilities {
        out.push((Dim::Facility, v.iter().map(|x| lit(x.clone())).collect()));
    }
    out
}

/// `col IN (values)`; an empty approved list admits nothing (fail closed).
fn in_list(column: &str, values: &[Expr]) -> Expr {
    if values.is_empty() {
        lit(false)
    } else {
        col(column).in_list(values.to_vec(), false)
    }
}

/// The conjunction of a table's own scope columns, or `None` when it carries none of
/// the restricted dimensions.
fn record_predicate(table: &Table, restr: &[(Dim, Vec<Expr>)]) -> Option<Expr> {
    restr
        .iter()
        .filter_map(|(dim, values)| dim.column(table).map(|c| in_list(&c.name, values)))
        .reduce(Expr::and)
}

fn validate_scope(scope: &Scope, catalog: &Catalog) -> Result<(), ExtractError> {
    if scope.datasets.is_empty() {
        return Err(ExtractError::Scope(
            "no dataset approved; list at least one dataset / データセットが指定されていません"
                .into(),
        ));
    }
    for d in &scope.datasets {
        if catalog.dataset(d).is_none() {
            let known: Vec<&str> = catalog.datasets.iter().map(|d| d.name.as_str()).collect();
            return Err(ExtractError::Scope(format!(
                "unknown dataset `{d}`; known datasets: {} / 不明なデータセット",
                known.join(", ")
            )));
        }
    }
    if let Some(p) = &scope.prefectures
        && let Some(bad) = p
            .iter()
            .find(|c| !(c.len() == 2 && c.bytes().all(|b| b.is_ascii_digit())))
    {
        return Err(ExtractError::Scope(format!(
            "prefecture code `{bad}` must be two digits \"01\"..\"47\" / 都道府県コードは 2 桁で指定してください"
        )));
    }
    Ok(())
}

/// Tables an extract of `scope` contains: every reference table, and every patient
/// table of an approved dataset. Under a facility restriction a patient table must say
/// where each row was written (a facility column): the others are left out (fail
/// closed), except the one-row `patient` table, whose sex, birth year and prefecture
/// describe the facility's own patient rather than another facility's record.
pub fn extract_tables<'a>(catalog: &'a Catalog, scope: &Scope) -> Vec<&'a Table> {
    catalog
        .tables
        .iter()
        .filter(|t| {
            t.kind == TableKind::Reference
                || (t.datasets.iter().any(|d| scope.datasets.contains(d))
                    && facility_may_see(t, scope))
        })
        .collect()
}

/// Whether a facility-restricted scope may hold patient table `t` (always true for other
/// scopes): it records the facility of each row, or it is the patient master table.
fn facility_may_see(t: &Table, scope: &Scope) -> bool {
    scope.facilities.is_none() || t.name == "patient" || Dim::Facility.column(t).is_some()
}

async fn register_source(
    ctx: &SessionContext,
    source: &Path,
    table: &Table,
) -> Result<(), ExtractError> {
    let path = source.join(format!("{}.parquet", table.name));
    if !path.is_file() {
        return Err(ExtractError::SourceTableMissing {
            table: table.name.clone(),
            path,
        });
    }
    let engine = |source| ExtractError::Engine {
        table: table.name.clone(),
        source,
    };
    ctx.register_parquet(
        &table.name,
        path.to_string_lossy().as_ref(),
        ParquetReadOptions::default(),
    )
    .await
    .map_err(engine)?;
    // Check the file against the catalogue contract instead of trusting it: a column
    // missing or retyped would otherwise silently change what the scope filter means.
    let found = ctx.table(&table.name).await.map_err(engine)?;
    let found = found.schema();
    let expected = table.arrow_schema();
    if found.fields().len() != expected.fields().len() {
        return Err(ExtractError::SourceSchema {
            table: table.name.clone(),
            detail: format!(
                "{} columns, catalogue has {}",
                found.fields().len(),
                expected.fields().len()
            ),
        });
    }
    for (f, e) in found.fields().iter().zip(expected.fields()) {
        if f.name() != e.name() || f.data_type() != e.data_type() {
            return Err(ExtractError::SourceSchema {
                table: table.name.clone(),
                detail: format!(
                    "column `{}` {} where the catalogue has `{}` {}",
                    f.name(),
                    f.data_type(),
                    e.name(),
                    e.data_type()
                ),
            });
        }
    }
    Ok(())
}

const SRC_PID: &str = "__kura_src_pid";
const NEW_PID: &str = "__kura_new_pid";

/// The in-scope patient set as a DataFrame of distinct source pids (column `pid`).
async fn patient_set(
    ctx: &SessionContext,
    catalog: &Catalog,
    scope: &Scope,
    restr: &[(Dim, Vec<Expr>)],
) -> Result<DataFrame, ExtractError> {
    let engine = |table: &str| {
        let table = table.to_string();
        move |source| ExtractError::Engine { table, source }
    };
    let patient = catalog
        .table("patient")
        .ok_or_else(|| ExtractError::Scope("the catalogue has no `patient` table".into()))?;
    let mut set = ctx.table("patient").await.map_err(engine("patient"))?;
    if let Some(p) = record_predicate(patient, restr) {
        set = set.filter(p).map_err(engine("patient"))?;
    }
    set = set.select(vec![col("pid")]).map_err(engine("patient"))?;

    // (2) an in-scope record in a patient table of an approved dataset.
    let mut anchors: Option<DataFrame> = None;
    for t in catalog.tables_in(&scope.datasets) {
        if t.kind != TableKind::Patient || t.name == "patient" || !facility_may_see(t, scope) {
            continue;
        }
        let mut df = ctx.table(&t.name).await.map_err(engine(&t.name))?;
        if let Some(p) = record_predicate(t, restr) {
            df = df.filter(p).map_err(engine(&t.name))?;
        }
        let df = df
            .select(vec![col("pid").alias(SRC_PID)])
            .map_err(engine(&t.name))?;
        anchors = Some(match anchors {
            None => df,
            Some(a) => a.union(df).map_err(engine(&t.name))?,
        });
    }
    let Some(anchors) = anchors else {
        return Err(ExtractError::Scope(
            "the approved datasets have no patient record tables / 承認データセットに患者記録がありません".into(),
        ));
    };
    set = set
        .join(anchors, JoinType::LeftSemi, &["pid"], &[SRC_PID], None)
        .map_err(engine("patient"))?;

    // (3) evidence for every restricted dimension, from any source patient table that
    // carries it (the patient table itself was handled in (1)).
    for (dim, values) in restr {
        let mut evidence: Option<DataFrame> = None;
        for t in catalog.patient_tables() {
            if t.name == "patient" {
                continue;
            }
            let Some(c) = dim.column(t) else {
                continue;
            };
            let df = ctx
                .table(&t.name)
                .await
                .and_then(|df| df.filter(in_list(&c.name, values)))
                .and_then(|df| df.select(vec![col("pid").alias(SRC_PID)]))
                .map_err(engine(&t.name))?;
            evidence = Some(match evidence {
                None => df,
                Some(e) => e.union(df).map_err(engine(&t.name))?,
            });
        }
        if let Some(evidence) = evidence {
            set = set
                .join(evidence, JoinType::LeftSemi, &["pid"], &[SRC_PID], None)
                .map_err(engine("patient"))?;
        } else if dim.column(patient).is_none() {
            // A restriction nothing can satisfy or check: refuse rather than ignore it.
            return Err(ExtractError::Scope(format!(
                "no table carries the {dim:?} dimension, so the restriction cannot be applied"
            )));
        }
    }
    set.distinct().map_err(engine("patient"))
}

/// Compute the pid mapping (source pid → application pid) for the patient set, as an
/// in-memory table. HMAC runs once per patient, not once per row.
async fn pid_mapping(set: DataFrame, app_key: &[u8]) -> Result<Mapping, ExtractError> {
    let engine = |source| ExtractError::Engine {
        table: "patient".into(),
        source,
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, app_key);
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new(SRC_PID, DataType::Utf8, false),
        Field::new(NEW_PID, DataType::Utf8, false),
    ]));
    let mut stream = set.execute_stream().await.map_err(engine)?;
    let mut batches = Vec::new();
    let mut pids = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(engine)?;
        let src = batch.column(0);
        let src = src
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| engine(DataFusionError::Internal("pid column is not Utf8".into())))?;
        let mut out = StringBuilder::with_capacity(src.len(), src.len() * 32);
        for pid in src.iter() {
            match pid {
                Some(pid) => out.append_value(repseudonymise(&key, pid)),
                // A null pid cannot be attributed to a patient: the catalogue forbids it
                // and we refuse rather than write an unattributed row.
                None => {
                    return Err(engine(DataFusionError::Execution(
                        "null pid in source".into(),
                    )));
                }
            }
        }
        let out = out.finish();
        pids.extend(out.iter().flatten().map(String::from));
        let cols: Vec<ArrayRef> = vec![Arc::new(src.clone()), Arc::new(out)];
        batches.push(RecordBatch::try_new(schema.clone(), cols).map_err(|e| engine(e.into()))?);
    }
    let table = MemTable::try_new(schema, vec![batches]).map_err(engine)?;
    Ok(Mapping { table, pids })
}

/// The pid mapping of an extract and its new pids.
struct Mapping {
    table: MemTable,
    pids: Vec<String>,
}

/// Write the patient index (`engine::patient_index`) and return its SHA-256.
fn write_patient_index(dir: &Path, pids: Vec<String>) -> Result<String, ExtractError> {
    let path = dir.join(PATIENT_INDEX_FILE);
    let text = PatientIndex::file_text(pids);
    let mut f = fs::File::create(&path).map_err(io_err(&path))?;
    std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))?;
    Ok(hex::encode(digest::digest(
        &digest::SHA256,
        text.as_bytes(),
    )))
}

/// A table the catalogue marks `one_row_per_patient` holds no patient twice in the
/// source (so neither in the extract, whose pid mapping is one to one). DP mode relies on
/// it to skip contribution bounding; a source that breaks it builds no extract.
async fn check_one_row_per_patient(ctx: &SessionContext, t: &Table) -> Result<(), ExtractError> {
    let engine = |source| ExtractError::Engine {
        table: t.name.clone(),
        source,
    };
    let sql = format!(
        "SELECT count(*) - count(DISTINCT pid) AS extra FROM \"{}\"",
        t.name
    );
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(engine)?
        .collect()
        .await
        .map_err(engine)?;
    let extra = batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>()
        })
        .map(|a| a.value(0))
        .unwrap_or(0);
    if extra != 0 {
        return Err(ExtractError::SourceSchema {
            table: t.name.clone(),
            detail: "a patient has more than one row in a table marked one_row_per_patient".into(),
        });
    }
    Ok(())
}

/// Stream a DataFrame into `<dir>/<table>.parquet` with exactly the catalogue schema.
async fn write_table(
    df: DataFrame,
    dir: &Path,
    table: &Table,
) -> Result<ExtractTable, ExtractError> {
    let engine = |source| ExtractError::Engine {
        table: table.name.clone(),
        source,
    };
    let file = format!("{}.parquet", table.name);
    let path = dir.join(&file);
    let schema = table.arrow_schema();
    let out = fs::File::create(&path).map_err(io_err(&path))?;
    let parquet = |source| ExtractError::Parquet {
        table: table.name.clone(),
        source,
    };
    let mut writer = ArrowWriter::try_new(out, schema.clone(), None).map_err(parquet)?;
    let mut rows = 0u64;
    let mut stream = df.execute_stream().await.map_err(engine)?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(engine)?;
        // try_new re-checks types and that non-nullable columns (pid) hold no nulls.
        let batch = RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
            .map_err(|e| engine(e.into()))?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).map_err(parquet)?;
    }
    let out = writer.into_inner().map_err(parquet)?;
    out.sync_all().map_err(io_err(&path))?;
    let (sha256, bytes) = file_sha256(&path)?;
    Ok(ExtractTable {
        file,
        rows,
        bytes,
        sha256,
    })
}

async fn build_into(
    source: &Path,
    dir: &Path,
    scope: &Scope,
    app_key: &[u8],
    catalog: &Catalog,
    source_hash: String,
) -> Result<ExtractManifest, ExtractError> {
    let started = Instant::now();
    let restr = restrictions(scope);
    let mut config = SessionConfig::new()
        .with_target_partitions(2)
        .with_information_schema(false);
    // Read strings as plain Utf8, the catalogue type, so batches can be written back
    // with exactly the catalogue schema (DataFusion otherwise reads Utf8View).
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    let ctx = SessionContext::new_with_config(config);
    // Every source table is registered: dimension evidence may come from a dataset the
    // application cannot see; only approved tables are written.
    for t in &catalog.tables {
        register_source(&ctx, source, t).await?;
    }
    let set = patient_set(&ctx, catalog, scope, &restr).await?;
    let Mapping {
        table: mapping,
        pids,
    } = pid_mapping(set, app_key).await?;
    let patients = pids.len() as u64;
    let patient_index_sha256 = write_patient_index(dir, pids)?;
    ctx.register_table("__kura_pid_map", Arc::new(mapping))
        .map_err(|source| ExtractError::Engine {
            table: "patient".into(),
            source,
        })?;

    let mut tables = BTreeMap::new();
    let mut patient_rows = 0u64;
    for t in extract_tables(catalog, scope) {
        let engine = |source| ExtractError::Engine {
            table: t.name.clone(),
            source,
        };
        if t.one_row_per_patient {
            check_one_row_per_patient(&ctx, t).await?;
        }
        let mut df = ctx.table(&t.name).await.map_err(engine)?;
        if t.kind == TableKind::Patient {
            if let Some(p) = record_predicate(t, &restr) {
                df = df.filter(p).map_err(engine)?;
            }
            let map = ctx.table("__kura_pid_map").await.map_err(engine)?;
            df = df
                .join(map, JoinType::Inner, &["pid"], &[SRC_PID], None)
                .map_err(engine)?;
            let cols: Vec<Expr> = t
                .columns
                .iter()
                .map(|c| {
                    if c.privacy_unit {
                        col(NEW_PID).alias(&c.name)
                    } else {
                        Expr::Column(datafusion::common::Column::new(
                            Some(t.name.as_str()),
                            &c.name,
                        ))
                    }
                })
                .collect();
            df = df.select(cols).map_err(engine)?;
            // Rows in pid order: the patient index is the pids' sorted order, so the
            // contributor sets of a query look up each row's pid next to the last one
            // (`PatientIndex::get_near`) and add to their bitmaps in ascending order.
            if let Some(unit) = t.columns.iter().find(|c| c.privacy_unit) {
                let by = Expr::Column(datafusion::common::Column::from_name(&unit.name));
                df = df.sort(vec![by.sort(true, false)]).map_err(engine)?;
            }
        }
        let entry = write_table(df, dir, t).await?;
        if t.kind == TableKind::Patient {
            patient_rows += entry.rows;
        }
        tables.insert(t.name.clone(), entry);
    }
    let key_fp = key_fingerprint(app_key);
    let manifest = ExtractManifest {
        version: EXTRACT_VERSION,
        extract_id: extract_id(scope, &source_hash, &key_fp),
        scope: scope.clone(),
        source_manifest_sha256: source_hash,
        key_fingerprint: key_fp,
        created_at: chrono::Utc::now().to_rfc3339(),
        patients,
        patient_rows,
        build_ms: started.elapsed().as_millis() as u64,
        tables,
        patient_index_sha256,
    };
    let path = dir.join(EXTRACT_MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|source| ExtractError::Manifest {
        path: path.clone(),
        source,
    })?;
    let mut f = fs::File::create(&path).map_err(io_err(&path))?;
    std::io::Write::write_all(&mut f, &json).map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))?;
    Ok(manifest)
}

fn sibling(out: &Path, tag: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nonce: u64 = rand::random();
    out.with_file_name(format!(".{name}.{tag}-{}-{nonce:016x}", std::process::id()))
}

/// Extract directories hold patient records: readable by the kura service user only.
fn create_private_dir(path: &Path) -> Result<(), ExtractError> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(io_err(path))
}

/// Build the extract of `scope` from the ingested dataset at `source` into `out`.
///
/// Atomic: the extract is written to a temporary sibling directory and renamed into
/// place; on any error the temporary directory is removed and an existing extract at
/// `out` is left untouched. Callers serialise builds of the same `out` (the gateway
/// holds one lock per application).
pub async fn build_extract(
    source: &Path,
    out: &Path,
    scope: &Scope,
    app_key: &[u8],
    catalog: &Catalog,
) -> Result<ExtractManifest, ExtractError> {
    if app_key.len() < MIN_KEY_BYTES {
        return Err(ExtractError::KeyTooShort(app_key.len()));
    }
    let scope = normalise_scope(scope);
    validate_scope(&scope, catalog)?;
    let source_hash = source_manifest_hash(source)?;
    if out.exists() && !out.join(EXTRACT_MANIFEST).is_file() {
        // Never replace (and then delete) a directory we did not write.
        let empty = out.is_dir() && fs::read_dir(out).map_err(io_err(out))?.next().is_none();
        if !empty {
            return Err(ExtractError::NotAnExtract {
                path: out.to_path_buf(),
            });
        }
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = sibling(out, "tmp");
    create_private_dir(&tmp)?;
    let built = build_into(source, &tmp, &scope, app_key, catalog, source_hash).await;
    let manifest = match built.and_then(|m| {
        crate::durable::sync_dir(&tmp).map_err(io_err(&tmp))?;
        Ok(m)
    }) {
        Ok(m) => m,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    crate::durable::pause_point("extract.built");
    // Linux cannot swap two directories in one rename, so the old extract is moved
    // aside first; in the short gap `out` is absent and opening it fails closed.
    let old = sibling(out, "old");
    if out.exists()
        && let Err(e) = fs::rename(out, &old)
    {
        let _ = fs::remove_dir_all(&tmp);
        return Err(io_err(out)(e));
    }
    crate::durable::pause_point("extract.between_renames");
    if let Err(e) = fs::rename(&tmp, out) {
        let _ = fs::rename(&old, out);
        let _ = fs::remove_dir_all(&tmp);
        return Err(io_err(out)(e));
    }
    crate::durable::sync_parent(out).map_err(io_err(out))?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    Ok(manifest)
}

/// Whether the extract at `out` was built from the current source data for exactly
/// this scope (and its files are all present with their recorded sizes). A missing or
/// unreadable manifest means "not current", never an error, so callers rebuild.
pub fn extract_is_current(source: &Path, out: &Path, scope: &Scope) -> Result<bool, ExtractError> {
    let Ok(manifest) = ExtractManifest::read(out) else {
        return Ok(false);
    };
    let source_hash = source_manifest_hash(source)?;
    if manifest.version != EXTRACT_VERSION
        || manifest.source_manifest_sha256 != source_hash
        || manifest.scope != normalise_scope(scope)
    {
        return Ok(false);
    }
    if !out.join(PATIENT_INDEX_FILE).is_file() {
        return Ok(false);
    }
    Ok(manifest.tables.values().all(|t| {
        fs::metadata(out.join(&t.file))
            .map(|m| m.is_file() && m.len() == t.bytes)
            .unwrap_or(false)
    }))
}

/// Whether the extract at `out` is current ([`extract_is_current`]) and was built with
/// `app_key` (the check [`ensure_extract`] makes before reusing it).
pub fn extract_is_current_with_key(
    source: &Path,
    out: &Path,
    scope: &Scope,
    app_key: &[u8],
) -> Result<bool, ExtractError> {
    if !extract_is_current(source, out, scope)? {
        return Ok(false);
    }
    Ok(ExtractManifest::read(out)?.key_fingerprint == key_fingerprint(app_key))
}

/// Return the extract at `out`, rebuilding it first when the source data, the scope or
/// the application key changed.
pub async fn ensure_extract(
    source: &Path,
    out: &Path,
    scope: &Scope,
    app_key: &[u8],
    catalog: &Catalog,
) -> Result<ExtractManifest, ExtractError> {
    if app_key.len() >= MIN_KEY_BYTES && extract_is_current(source, out, scope)? {
        let manifest = ExtractManifest::read(out)?;
        if manifest.key_fingerprint == key_fingerprint(app_key) {
            return Ok(manifest);
        }
    }
    build_extract(source, out, scope, app_key, catalog).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repseudonymised_pid_is_32_hex_and_key_dependent() {
        let k1 = hmac::Key::new(hmac::HMAC_SHA256, b"application-key-number-one-32byt");
        let k2 = hmac::Key::new(hmac::HMAC_SHA256, b"application-key-number-two-32byt");
        let a = repseudonymise(&k1, "0123456789abcdef0123456789abcdef");
        let b = repseudonymise(&k2, "0123456789abcdef0123456789abcdef");
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_ne!(a, b);
        assert_eq!(a, repseudonymise(&k1, "0123456789abcdef0123456789abcdef"));
    }

    #[test]
    fn scope_normalisation_ignores_order_and_duplicates() {
        let a = Scope {
            datasets: vec!["nanbyo".into(), "als".into()],
            diseases: Some(vec![2, 1, 2]),
            ..Default::default()
        };
        let b = Scope {
            datasets: vec!["als".into(), "nanbyo".into()],
            diseases: Some(vec![1, 2]),
            ..Default::default()
        };
        assert_eq!(normalise_scope(&a), normalise_scope(&b));
        assert_ne!(
            normalise_scope(&a),
            normalise_scope(&Scope {
                diseases: None,
                ..b
            })
        );
    }

    #[test]
    fn scope_validation_names_the_problem() {
        let cat = Catalog::embedded().unwrap();
        let err = validate_scope(&Scope::default(), &cat)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no dataset"), "{err}");
        let err = validate_scope(
            &Scope {
                datasets: vec!["nope".into()],
                ..Default::default()
            },
            &cat,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`nope`") && err.contains("nanbyo"), "{err}");
        let err = validate_scope(
            &Scope {
                datasets: vec!["nanbyo".into()],
                prefectures: Some(vec!["13'".into()]),
                ..Default::default()
            },
            &cat,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("two digits"), "{err}");
    }

    #[test]
    fn extract_tables_are_approved_patient_tables_plus_references() {
        let cat = Catalog::embedded().unwrap();
        let names: Vec<&str> = extract_tables(
            &cat,
            &Scope {
                datasets: vec!["nanbyo".into()],
                ..Default::default()
            },
        )
        .iter()
        .map(|t| t.name.as_str())
        .collect();
        assert!(names.contains(&"patient") && names.contains(&"nanbyo_survey"));
        assert!(names.contains(&"product") && names.contains(&"disease"));
        assert!(!names.contains(&"als_visit") && !names.contains(&"regen_treatment"));
    }
}

#[cfg(test)]
mod one_row_tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;

    async fn check(pids: Vec<&str>) -> Result<(), ExtractError> {
        let catalog = Catalog::embedded().unwrap();
        let table = catalog.table("patient").unwrap().clone();
        assert!(table.one_row_per_patient, "the catalogue marks patient");
        let schema = Arc::new(Schema::new(vec![
            Field::new("pid", DataType::Utf8, false),
            Field::new("birth_year", DataType::Int32, true),
        ]));
        let n = pids.len() as i32;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(pids)),
                Arc::new(Int32Array::from_iter_values(0..n)),
            ],
        )
        .unwrap();
        let ctx = SessionContext::new();
        let mem = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        ctx.register_table("patient", Arc::new(mem)).unwrap();
        check_one_row_per_patient(&ctx, &table).await
    }

    #[tokio::test]
    async fn a_second_row_for_a_patient_builds_no_extract() {
        assert!(check(vec!["a", "b", "c"]).await.is_ok());
        let e = check(vec!["a", "b", "a"]).await.unwrap_err().to_string();
        assert!(
            e.contains("one_row_per_patient") && !e.contains("\"a\""),
            "{e}"
        );
    }
}
