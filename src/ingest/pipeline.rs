//! The streaming CSV → Arrow → Parquet pipeline of ingest.
//!
//! Each catalogue table is planned from its [`SourceTable`] (which source column feeds which
//! catalogue column, and how), then streamed in batches of [`BATCH_ROWS`] rows. Consent is
//! decided once: `patients.csv` merged with `consent_withdrawals.csv` gives a small on-disk
//! index of usable registry numbers and their pseudonyms (inside the staging directory, removed
//! before commit); each patient table is then merged with that index on `registry_no`, so
//! memory does not depend on the number of patients. Every value is checked against the
//! catalogue's domain and bounds; a violation stops the run with file, line and column, and
//! nothing is written.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;

use super::key::PseudonymKey;
use super::manifest::{self, Manifest, ManifestTable};
use super::source::{self, Derive, SourceTable};
use super::staging::Staging;
use super::{IngestError, IngestOptions};
use crate::catalog::{Catalog, Column, Domain, Table, TableKind};

/// Rows per Arrow batch: large enough to amortise per-batch work, small enough that memory
/// stays a few tens of megabytes per table whatever the registry size.
pub const BATCH_ROWS: usize = 65_536;

/// Settings beyond [`IngestOptions`].
#[derive(Debug, Clone, Default)]
pub struct RunSettings {
    /// Replace an existing output directory (atomically) instead of refusing.
    pub replace: bool,
    /// Tables processed in parallel; `0` means one per available core.
    pub threads: usize,
}

/// Parquet settings shared by ingest and the benchmark's baseline, so they compare like with like.
pub(crate) fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        // The writer buffers a whole row group; capping it keeps peak memory flat in N.
        .set_max_row_group_row_count(Some(4 * BATCH_ROWS))
        // A fixed writer string keeps files byte-identical across kura builds of one parquet version.
        .set_created_by("kura ingest".to_string())
        .build()
}

/// Ingest `opts.source` into `opts.out` under `key`; refuses an existing `opts.out`.
pub fn run(opts: &IngestOptions, key: &PseudonymKey) -> Result<Manifest, IngestError> {
    run_with(opts, key, &RunSettings::default())
}

/// [`run`] with explicit settings.
pub fn run_with(
    opts: &IngestOptions,
    key: &PseudonymKey,
    settings: &RunSettings,
) -> Result<Manifest, IngestError> {
    let catalog = &opts.catalog;
    // Plan everything before writing anything: a bad catalogue or header fails fast.
    let mut plans = Vec::new();
    for table in &catalog.tables {
        plans.push(TablePlan::new(table, &opts.source)?);
    }
    let staging = Staging::new(&opts.out, settings.replace)?;
    let out_dir = staging.path().to_path_buf();
    // Consent is decided once, before any table; the index never leaves the staging directory.
    let index = out_dir.join(".consent-index");
    ConsentCursor::open(&opts.source, key)?.write_index(&index)?;

    // Reference tables first: their values are the domains of patient columns.
    let mut domains: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let wanted_refs = referenced_columns(catalog);
    let mut entries = BTreeMap::new();
    for plan in plans.iter().filter(|p| !p.patient) {
        let Some((entry, values)) =
            ingest_table(plan, &out_dir, &index, &domains, &wanted_refs, None)?
        else {
            return Err(IngestError::Mismatch {
                detail: format!("table `{}` stopped early", plan.table),
            });
        };
        domains.extend(values);
        entries.insert(plan.table.clone(), entry);
    }

    let mut patient_plans: Vec<&TablePlan> = plans.iter().filter(|p| p.patient).collect();
    // Largest source first, so the longest table never starts last on a busy worker.
    patient_plans.sort_by_key(|p| {
        std::cmp::Reverse(std::fs::metadata(&p.file).map(|m| m.len()).unwrap_or(0))
    });
    let threads = match settings.threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    }
    .min(patient_plans.len().max(1));
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let bars = indicatif::MultiProgress::new();
    if !opts.progress {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let results: Vec<Result<Option<(String, ManifestTable)>, IngestError>> =
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::SeqCst);
                            let Some(plan) = patient_plans.get(i) else {
                                break;
                            };
                            if abort.load(Ordering::SeqCst) {
                                break;
                            }
                            let bar = bars.add(spinner(&plan.table));
                            let r = ingest_table(
                                plan,
                                &out_dir,
                                &index,
                                &domains,
                                &BTreeSet::new(),
                                Some((&abort, &bar)),
                            )
                            .map(|r| r.map(|(entry, _)| (plan.table.clone(), entry)));
                            bar.finish_and_clear();
                            if r.is_err() {
                                abort.store(true, Ordering::SeqCst);
                            }
                            done.push(r);
                        }
                        done
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
    // Report the first real error; tables that stopped because of it return `None`.
    for r in results {
        if let Some((name, entry)) = r? {
            entries.insert(name, entry);
        }
    }
    if entries.len() != catalog.tables.len() {
        return Err(IngestError::Mismatch {
            detail: "not every catalogue table was written".into(),
        });
    }

    std::fs::remove_file(&index).map_err(|source| IngestError::Io {
        path: index.clone(),
        source,
    })?;
    let manifest = Manifest::new(key.fingerprint(), catalog, entries);
    manifest.write(&out_dir)?;
    staging.commit()?;
    Ok(manifest)
}

fn spinner(table: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} {msg}: {pos} rows ({per_sec})")
    {
        bar.set_style(style);
    }
    bar.set_message(table.to_string());
    bar
}

/// Columns of reference tables that some patient column uses as its domain.
fn referenced_columns(catalog: &Catalog) -> BTreeSet<(String, String)> {
    catalog
        .tables
        .iter()
        .flat_map(|t| &t.columns)
        .filter_map(|c| match &c.domain {
            Some(Domain::Ref { table, column }) => Some((table.clone(), column.clone())),
            _ => None,
        })
        .collect()
}

/// How one output column is computed, with source columns resolved to field positions.
#[derive(Debug, Clone, Copy)]
enum Op {
    Pid,
    Copy(usize),
    Year(usize),
    FiscalYear(usize),
    AgeBand(usize),
    Prefecture(usize),
    Months(usize, usize),
    /// A severity criterion over the source columns of its items (`severity.rs`).
    Criterion(
        &'static super::severity::Criterion,
        [usize; super::severity::MAX_ITEMS],
    ),
}

#[derive(Debug, Clone)]
enum Check {
    Values(BTreeSet<String>),
    RefValues(String, String),
    Range(i64, i64),
    Bounds(f64, f64),
}

#[derive(Debug)]
struct ColPlan {
    name: String,
    op: Op,
    ty: DataType,
    /// The source column reported in errors (1-based position and name).
    source_label: String,
    checks: Vec<Check>,
}

#[derive(Debug)]
struct TablePlan {
    table: String,
    patient: bool,
    file: PathBuf,
    schema: SchemaRef,
    columns: Vec<ColPlan>,
    registry_ix: Option<usize>,
    /// The catalogue says at most one row per patient (`one_row_per_patient`).
    one_row: bool,
}

fn header_index(path: &Path) -> Result<Vec<String>, IngestError> {
    // open_csv has already read (and validated as CSV) the header row.
    let mut rdr = open_csv(path)?;
    let headers = rdr.byte_headers().map_err(|source| IngestError::Csv {
        file: path.to_path_buf(),
        line: 1,
        source,
    })?;
    headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            std::str::from_utf8(h)
                .map(|s| s.trim_start_matches('\u{feff}').to_string())
                .map_err(|_| IngestError::Encoding {
                    file: path.to_path_buf(),
                    line: 1,
                    column: format!("{}", i + 1),
                })
        })
        .collect()
}

fn find(headers: &[String], file: &Path, name: &str) -> Result<usize, IngestError> {
    headers
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| IngestError::MissingColumn {
            file: file.to_path_buf(),
            column: name.to_string(),
        })
}

impl TablePlan {
    fn new(table: &Table, source_dir: &Path) -> Result<Self, IngestError> {
        let catalog_err = |detail: String| IngestError::Catalog {
            table: table.name.clone(),
            detail,
        };
        let Some(src) = source::source_for(&table.name) else {
            let known: Vec<&str> = source::SOURCE_TABLES.iter().map(|s| s.table).collect();
            return Err(catalog_err(format!(
                "kura has no source file for this table; ingest knows {}",
                known.join(", ")
            )));
        };
        if src.patient != (table.kind == TableKind::Patient) {
            return Err(catalog_err(
                "its kind (patient/reference) differs from its source file".into(),
            ));
        }
        let file = source_dir.join(src.file);
        let headers = header_index(&file)?;
        let mut columns = Vec::new();
        for col in &table.columns {
            columns.push(plan_column(src, col, &headers, &file).map_err(|e| match e {
                PlanError::Io(e) => e,
                PlanError::Catalog(d) => catalog_err(format!("column `{}`: {d}", col.name)),
            })?);
        }
        let registry_ix = if src.patient {
            Some(find(&headers, &file, "registry_no")?)
        } else {
            None
        };
        Ok(Self {
            table: table.name.clone(),
            patient: src.patient,
            file,
            schema: table.arrow_schema(),
            columns,
            registry_ix,
            one_row: table.one_row_per_patient,
        })
    }
}

enum PlanError {
    Io(IngestError),
    Catalog(String),
}

fn plan_column(
    src: &SourceTable,
    col: &Column,
    headers: &[String],
    file: &Path,
) -> Result<ColPlan, PlanError> {
    let derive = src.derivation(&col.name);
    if derive.copies_identifier() {
        return Err(PlanError::Catalog(
            "it would copy a direct identifier from the source; remove it from the catalogue"
                .into(),
        ));
    }
    let ty = col.data_type();
    let ix = |name: &str| find(headers, file, name).map_err(PlanError::Io);
    let type_ok = match derive {
        Derive::Pid | Derive::AgeBand(_) | Derive::PrefectureOfAddress(_) => ty == DataType::Utf8,
        Derive::Year(_) | Derive::FiscalYear(_) => matches!(ty, DataType::Int32 | DataType::Int64),
        Derive::MonthsBetween(..) => ty == DataType::Float64,
        Derive::Criterion(_) => ty == DataType::Boolean,
        Derive::Copy(_) => true,
    };
    if !type_ok {
        return Err(PlanError::Catalog(format!(
            "type {} cannot hold the value ingest derives for it ({derive:?})",
            col.type_name
        )));
    }
    let op = match derive {
        Derive::Pid => Op::Pid,
        Derive::Copy(c) => Op::Copy(ix(c)?),
        Derive::Year(c) => Op::Year(ix(c)?),
        Derive::FiscalYear(c) => Op::FiscalYear(ix(c)?),
        Derive::AgeBand(c) => Op::AgeBand(ix(c)?),
        Derive::PrefectureOfAddress(c) => Op::Prefecture(ix(c)?),
        Derive::MonthsBetween(a, b) => Op::Months(ix(a)?, ix(b)?),
        Derive::Criterion(c) => {
            let mut at = [0; super::severity::MAX_ITEMS];
            for (slot, item) in at.iter_mut().zip(c.items) {
                *slot = ix(item.source)?;
            }
            Op::Criterion(c, at)
        }
    };
    let inputs = derive.inputs();
    let source_label = inputs
        .iter()
        .map(|n| match headers.iter().position(|h| h == n) {
            Some(i) => format!("{} (`{n}`)", i + 1),
            None => format!("`{n}`"),
        })
        .collect::<Vec<_>>()
        .join(" / ");
    let mut checks = Vec::new();
    match &col.domain {
        Some(Domain::Values { values }) if ty != DataType::Boolean => {
            checks.push(Check::Values(values.iter().cloned().collect()))
        }
        Some(Domain::Range { range: [lo, hi] }) => checks.push(Check::Range(*lo, *hi)),
        Some(Domain::Ref { table, column }) => {
            checks.push(Check::RefValues(table.clone(), column.clone()))
        }
        _ => {}
    }
    if let Some([lo, hi]) = col.bounds {
        checks.push(Check::Bounds(lo, hi));
    }
    Ok(ColPlan {
        name: col.name.clone(),
        op,
        ty,
        source_label,
        checks,
    })
}

/// A typed value derived from one source row, before it is appended to its column.
enum Val<'a> {
    Null,
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Date(i32),
}

enum Builder {
    Utf8(StringBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
}

impl Builder {
    fn new(ty: &DataType) -> Self {
        match ty {
            DataType::Utf8 => {
                Builder::Utf8(StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 8))
            }
            DataType::Int32 => Builder::I32(Int32Builder::with_capacity(BATCH_ROWS)),
            DataType::Int64 => Builder::I64(Int64Builder::with_capacity(BATCH_ROWS)),
            DataType::Float64 => Builder::F64(Float64Builder::with_capacity(BATCH_ROWS)),
            DataType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(BATCH_ROWS)),
            // The catalogue admits only these six types (validated at load).
            _ => Builder::Date(Date32Builder::with_capacity(BATCH_ROWS)),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Utf8(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
        }
    }
}

/// Merge of `patients.csv` and `consent_withdrawals.csv` (both sorted by `registry_no`)
/// deciding, patient by patient, whether their rows may be used.
struct ConsentCursor<'k> {
    key: &'k PseudonymKey,
    patients: csv::Reader<BufReader<File>>,
    patients_path: PathBuf,
    p_reg: usize,
    p_consent: usize,
    withdrawals: csv::Reader<BufReader<File>>,
    withdrawals_path: PathBuf,
    w_reg: usize,
    rec: csv::ByteRecord,
    patient_headers: Vec<String>,
    withdrawal_headers: Vec<String>,
    /// Current patient: registry number and whether their rows may be used.
    cur: Option<(Vec<u8>, bool)>,
    wd: Option<Vec<u8>>,
    wd_done: bool,
}

fn open_csv(path: &Path) -> Result<csv::Reader<BufReader<File>>, IngestError> {
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => IngestError::MissingFile {
            file: path.to_path_buf(),
        },
        _ => IngestError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(BufReader::with_capacity(1 << 18, file));
    // Read the header now so record positions below are data lines.
    rdr.byte_headers().map_err(|source| IngestError::Csv {
        file: path.to_path_buf(),
        line: 1,
        source,
    })?;
    Ok(rdr)
}

fn line_of(rec: &csv::ByteRecord) -> u64 {
    rec.position().map(|p| p.line()).unwrap_or(0)
}

fn csv_err(file: &Path, source: csv::Error) -> IngestError {
    let line = source.position().map(|p| p.line()).unwrap_or(0);
    IngestError::Csv {
        file: file.to_path_buf(),
        line,
        source,
    }
}

/// Reject a record that is not UTF-8 as a whole, naming the first bad field.
fn check_utf8<'r>(
    rec: &'r csv::ByteRecord,
    file: &Path,
    headers: Option<&[String]>,
) -> Result<&'r str, IngestError> {
    if let Ok(text) = std::str::from_utf8(rec.as_slice()) {
        return Ok(text);
    }
    let bad = rec
        .iter()
        .position(|f| std::str::from_utf8(f).is_err())
        .unwrap_or(0);
    let name = headers
        .and_then(|h| h.get(bad))
        .map(|n| format!(" (`{n}`)"))
        .unwrap_or_default();
    Err(IngestError::Encoding {
        file: file.to_path_buf(),
        line: line_of(rec),
        column: format!("{}{name}", bad + 1),
    })
}

impl<'k> ConsentCursor<'k> {
    fn open(dir: &Path, key: &'k PseudonymKey) -> Result<Self, IngestError> {
        let patients_path = dir.join(source::PATIENTS);
        let withdrawals_path = dir.join(source::WITHDRAWALS);
        let ph = header_index(&patients_path)?;
        let wh = header_index(&withdrawals_path)?;
        Ok(Self {
            key,
            p_reg: find(&ph, &patients_path, "registry_no")?,
            p_consent: find(&ph, &patients_path, "consent")?,
            w_reg: find(&wh, &withdrawals_path, "registry_no")?,
            patients: open_csv(&patients_path)?,
            withdrawals: open_csv(&withdrawals_path)?,
            patients_path,
            withdrawals_path,
            rec: csv::ByteRecord::new(),
            patient_headers: ph,
            withdrawal_headers: wh,
            cur: None,
            wd: None,
            wd_done: false,
        })
    }

    /// Whether `reg` has been withdrawn; advances the withdrawal cursor up to `reg`.
    fn withdrawn(&mut self, reg: &[u8]) -> Result<bool, IngestError> {
        loop {
            match &self.wd {
                Some(w) if w.as_slice() >= reg => return Ok(w.as_slice() == reg),
                _ if self.wd_done => return Ok(false),
                _ => {}
            }
            if !self
                .withdrawals
                .read_byte_record(&mut self.rec)
                .map_err(|e| csv_err(&self.withdrawals_path, e))?
            {
                self.wd_done = true;
                continue;
            }
            check_utf8(
                &self.rec,
                &self.withdrawals_path,
                Some(&self.withdrawal_headers),
            )?;
            let next = self.rec.get(self.w_reg).unwrap_or_default().to_vec();
            if self.wd.as_ref().is_some_and(|w| next < *w) {
                return Err(IngestError::Unsorted {
                    file: self.withdrawals_path.clone(),
                    line: line_of(&self.rec),
                });
            }
            self.wd = Some(next);
        }
    }

    /// Read the next patient into `cur`; `false` at the end of `patients.csv`.
    fn advance(&mut self) -> Result<bool, IngestError> {
        if !self
            .patients
            .read_byte_record(&mut self.rec)
            .map_err(|e| csv_err(&self.patients_path, e))?
        {
            return Ok(false);
        }
        check_utf8(&self.rec, &self.patients_path, Some(&self.patient_headers))?;
        let line = line_of(&self.rec);
        let next = self.rec.get(self.p_reg).unwrap_or_default().to_vec();
        if self.cur.as_ref().is_some_and(|(k, _)| next == *k) {
            // The patient table is one row per patient (catalogue: one_row_per_patient).
            return Err(IngestError::SecondRow {
                file: self.patients_path.clone(),
                line,
            });
        }
        if self.cur.as_ref().is_some_and(|(k, _)| next < *k) {
            return Err(IngestError::Unsorted {
                file: self.patients_path.clone(),
                line,
            });
        }
        let consent = match self.rec.get(self.p_consent).unwrap_or_default() {
            b"1" => true,
            b"0" => false,
            _ => {
                return Err(IngestError::Value {
                    file: self.patients_path.clone(),
                    line,
                    column: format!("{} (`consent`)", self.p_consent + 1),
                    expected: "expected 1 (consented) or 0".into(),
                });
            }
        };
        let usable = consent && !self.withdrawn(&next)?;
        self.cur = Some((next, usable));
        Ok(true)
    }

    /// Write the consent index: for every usable patient in registry order, the registry
    /// number and its pseudonym. Each table then merges against this small file instead of
    /// re-reading `patients.csv`, and the HMAC runs once per patient.
    fn write_index(mut self, path: &Path) -> Result<(), IngestError> {
        let io = |source| IngestError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut w = std::io::BufWriter::with_capacity(1 << 18, File::create(path).map_err(io)?);
        let mut pid = String::with_capacity(32);
        while self.advance()? {
            let Some((reg, true)) = &self.cur else {
                continue;
            };
            let len = u16::try_from(reg.len()).map_err(|_| IngestError::Value {
                file: self.patients_path.clone(),
                line: line_of(&self.rec),
                column: format!("{} (`registry_no`)", self.p_reg + 1),
                expected: "expected a registry number shorter than 65536 bytes".into(),
            })?;
            pid.clear();
            self.key.pseudonym_into(reg, &mut pid);
            w.write_all(&len.to_le_bytes()).map_err(io)?;
            w.write_all(reg).map_err(io)?;
            w.write_all(pid.as_bytes()).map_err(io)?;
        }
        w.flush().map_err(io)
    }
}

/// Reader of the consent index written by [`ConsentCursor::write_index`]: answers "may this
/// registry number's rows be used, and under which pseudonym?" for non-decreasing keys.
/// Registry numbers absent from the index (no consent, withdrawn, or unknown to
/// `patients.csv`) get `None`: fail closed.
struct ConsentIndex {
    r: BufReader<File>,
    path: PathBuf,
    cur: Vec<u8>,
    pid: String,
    done: bool,
    started: bool,
}

impl ConsentIndex {
    fn open(path: &Path) -> Result<Self, IngestError> {
        let f = File::open(path).map_err(|source| IngestError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            r: BufReader::with_capacity(1 << 16, f),
            path: path.to_path_buf(),
            cur: Vec::new(),
            pid: String::with_capacity(32),
            done: false,
            started: false,
        })
    }

    fn next(&mut self) -> Result<bool, IngestError> {
        use std::io::Read;
        let io = |source| IngestError::Io {
            path: self.path.clone(),
            source,
        };
        let mut len = [0u8; 2];
        match self.r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(io(e)),
        }
        self.cur.resize(u16::from_le_bytes(len) as usize, 0);
        self.r.read_exact(&mut self.cur).map_err(io)?;
        let mut pid = [0u8; 32];
        self.r.read_exact(&mut pid).map_err(io)?;
        self.pid.clear();
        self.pid
            .push_str(std::str::from_utf8(&pid).unwrap_or_default());
        Ok(true)
    }

    fn lookup(&mut self, reg: &[u8]) -> Result<Option<&str>, IngestError> {
        while !self.done && (!self.started || self.cur.as_slice() < reg) {
            self.started = true;
            if !self.next()? {
                self.done = true;
            }
        }
        Ok((!self.done && self.cur.as_slice() == reg).then_some(self.pid.as_str()))
    }
}

type RefValues = BTreeMap<(String, String), BTreeSet<String>>;

/// Stream one table from its source file into `<out>/<table>.parquet`. Parsing and Parquet
/// encoding run on two threads joined by a small bounded channel, so the largest table uses
/// both cores and memory stays at a few batches. Returns `None` when stopped because another
/// table failed.
fn ingest_table(
    plan: &TablePlan,
    out_dir: &Path,
    index: &Path,
    domains: &RefValues,
    collect: &BTreeSet<(String, String)>,
    progress: Option<(&AtomicBool, &indicatif::ProgressBar)>,
) -> Result<Option<(ManifestTable, RefValues)>, IngestError> {
    let file_name = format!("{}.parquet", plan.table);
    let out_path = out_dir.join(&file_name);
    let out = File::create(&out_path).map_err(|source| IngestError::Io {
        path: out_path.clone(),
        source,
    })?;
    let pq_err = |source| IngestError::Parquet {
        path: out_path.clone(),
        source,
    };
    let mut writer = ArrowWriter::try_new(out, plan.schema.clone(), Some(writer_properties()))
        .map_err(pq_err)?;

    let (parsed, written) = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(2);
        let encoder = s.spawn(move || -> Result<File, IngestError> {
            for batch in rx {
                writer.write(&batch).map_err(pq_err)?;
            }
            writer.into_inner().map_err(pq_err)
        });
        let parsed = parse_table(plan, index, domains, collect, progress, &mut |batch| {
            // A closed channel means the encoder failed; its error is reported below.
            tx.send(batch).is_ok()
        });
        drop(tx);
        let written = encoder
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (parsed, written)
    });
    let file = written?;
    let Some((rows, source_rows, collected)) = parsed? else {
        return Ok(None);
    };
    file.sync_all().map_err(|source| IngestError::Io {
        path: out_path.clone(),
        source,
    })?;
    drop(file);
    let sha256 = manifest::sha256_file(&out_path)?;
    let entry = ManifestTable {
        file: file_name,
        rows,
        sha256,
        source_rows,
        dropped_rows: source_rows - rows,
    };
    Ok(Some((entry, collected)))
}

/// One catalogue check with reference values resolved, for the per-cell hot path.
enum Resolved {
    Set {
        strs: HashSet<String>,
        ints: HashSet<i64>,
        describe: String,
    },
    Range(i64, i64),
    Bounds(f64, f64),
}

fn resolve(col: &ColPlan, domains: &RefValues) -> Vec<Resolved> {
    let set = |values: &BTreeSet<String>, describe: String| Resolved::Set {
        strs: values.iter().cloned().collect(),
        ints: values.iter().filter_map(|v| v.parse().ok()).collect(),
        describe,
    };
    col.checks
        .iter()
        .map(|c| match c {
            Check::Values(v) => set(
                v,
                format!(
                    "value of `{}` is outside the catalogue domain ({})",
                    col.name,
                    v.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ),
            Check::RefValues(t, c) => set(
                domains
                    .get(&(t.clone(), c.clone()))
                    .unwrap_or(&BTreeSet::new()),
                format!("value of `{}` is not a known {t}.{c}", col.name),
            ),
            Check::Range(lo, hi) => Resolved::Range(*lo, *hi),
            Check::Bounds(lo, hi) => Resolved::Bounds(*lo, *hi),
        })
        .collect()
}

/// (rows kept, rows read, collected reference values), or `None` if stopped early.
type Parsed = Option<(u64, u64, RefValues)>;

fn parse_table(
    plan: &TablePlan,
    index: &Path,
    domains: &RefValues,
    collect: &BTreeSet<(String, String)>,
    progress: Option<(&AtomicBool, &indicatif::ProgressBar)>,
    sink: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<Parsed, IngestError> {
    let headers = header_index(&plan.file)?;
    let mut rdr = open_csv(&plan.file)?;
    let mut cursor = if plan.patient {
        Some(ConsentIndex::open(index)?)
    } else {
        None
    };
    let checks: Vec<Vec<Resolved>> = plan.columns.iter().map(|c| resolve(c, domains)).collect();
    let mut builders: Vec<Builder> = plan.columns.iter().map(|c| Builder::new(&c.ty)).collect();
    // Values of the columns other tables' domains are read from, per column.
    let mut collecting: Vec<Option<BTreeSet<String>>> = plan
        .columns
        .iter()
        .map(|c| {
            let k = (plan.table.clone(), c.name.clone());
            collect.contains(&k).then(BTreeSet::new)
        })
        .collect();
    let mut rec = csv::ByteRecord::new();
    let (mut source_rows, mut rows, mut in_batch) = (0u64, 0u64, 0usize);
    let mut last_reg: Vec<u8> = Vec::new();
    let mut pid = String::with_capacity(32);

    let mut flush = |builders: &mut Vec<Builder>| -> Result<bool, IngestError> {
        let arrays: Vec<ArrayRef> = builders.iter_mut().map(Builder::finish).collect();
        let batch = RecordBatch::try_new(plan.schema.clone(), arrays).map_err(|source| {
            IngestError::Arrow {
                table: plan.table.clone(),
                source,
            }
        })?;
        Ok(sink(batch))
    };

    while rdr
        .read_byte_record(&mut rec)
        .map_err(|e| csv_err(&plan.file, e))?
    {
        source_rows += 1;
        let text = check_utf8(&rec, &plan.file, Some(&headers))?;
        let line = line_of(&rec);
        if let (Some(cursor), Some(reg_ix)) = (cursor.as_mut(), plan.registry_ix) {
            let reg = rec.get(reg_ix).unwrap_or_default();
            if reg < last_reg.as_slice() {
                return Err(IngestError::Unsorted {
                    file: plan.file.clone(),
                    line,
                });
            }
            if reg == last_reg.as_slice() && plan.one_row && source_rows > 1 {
                return Err(IngestError::SecondRow {
                    file: plan.file.clone(),
                    line,
                });
            }
            if reg != last_reg.as_slice() {
                last_reg.clear();
                last_reg.extend_from_slice(reg);
            }
            match cursor.lookup(reg)? {
                Some(p) => {
                    pid.clear();
                    pid.push_str(p);
                }
                None => continue,
            }
        }
        for (i, col) in plan.columns.iter().enumerate() {
            let bad = |expected: String| IngestError::Value {
                file: plan.file.clone(),
                line,
                column: col.source_label.clone(),
                expected,
            };
            let val = derive(col, &rec, text, &pid).map_err(bad)?;
            check(&col.name, &checks[i], &val).map_err(bad)?;
            if let Some(values) = &mut collecting[i] {
                collect_value(values, &val);
            }
            append(&mut builders[i], val).map_err(bad)?;
        }
        rows += 1;
        in_batch += 1;
        if in_batch == BATCH_ROWS {
            in_batch = 0;
            if !flush(&mut builders)? {
                return Ok(None);
            }
            if let Some((abort, bar)) = progress {
                bar.set_position(rows);
                if abort.load(Ordering::Relaxed) {
                    // Another table failed; its error is what the caller reports.
                    return Ok(None);
                }
            }
        }
    }
    if (in_batch > 0 || rows == 0) && !flush(&mut builders)? {
        return Ok(None);
    }
    let collected: RefValues = plan
        .columns
        .iter()
        .zip(collecting)
        .filter_map(|(c, v)| {
            let v = v.filter(|v| !v.is_empty())?;
            Some(((plan.table.clone(), c.name.clone()), v))
        })
        .collect();
    Ok(Some((rows, source_rows, collected)))
}

/// Add a value to a collected set, allocating only the first time it is seen.
fn collect_value(values: &mut BTreeSet<String>, v: &Val) {
    match v {
        Val::Str(s) if values.contains(*s) => {}
        _ => {
            values.insert(val_string(v));
        }
    }
}

fn val_string(v: &Val) -> String {
    match v {
        Val::Null => String::new(),
        Val::Str(s) => s.to_string(),
        Val::Int(i) => i.to_string(),
        Val::Float(f) => f.to_string(),
        Val::Bool(b) => b.to_string(),
        Val::Date(d) => d.to_string(),
    }
}

fn date_of(s: &str) -> Result<Option<(i32, u32, u32)>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    source::parse_ymd(s)
        .map(Some)
        .ok_or_else(|| "expected a date YYYY-MM-DD".to_string())
}

/// Field `i` of a record whose bytes `text` were checked as UTF-8 once (a missing field is
/// empty). The fields are stored back to back, so a field can still split a character with
/// its neighbour; that field is refused.
fn field<'a>(rec: &csv::ByteRecord, text: &'a str, i: usize) -> Result<&'a str, String> {
    match rec.range(i) {
        None => Ok(""),
        Some(r) => text.get(r).ok_or_else(|| "expected UTF-8 text".to_string()),
    }
}

/// Compute one output value from the source fields. Errors say what was expected, never
/// what was found: source values identify people.
fn derive<'a>(
    col: &ColPlan,
    rec: &csv::ByteRecord,
    text: &'a str,
    pid: &'a str,
) -> Result<Val<'a>, String> {
    let f = |i: usize| field(rec, text, i);
    Ok(match col.op {
        Op::Pid => Val::Str(pid),
        Op::Copy(i) => {
            let s = f(i)?;
            if s.is_empty() {
                return Ok(Val::Null);
            }
            match col.ty {
                DataType::Utf8 => Val::Str(s),
                DataType::Int32 | DataType::Int64 => {
                    Val::Int(s.parse().map_err(|_| "expected an integer")?)
                }
                DataType::Float64 => {
                    let x: f64 = s.parse().map_err(|_| "expected a number")?;
                    if !x.is_finite() {
                        return Err("expected a finite number".into());
                    }
                    Val::Float(x)
                }
                DataType::Boolean => Val::Bool(match s {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err("expected 1/0 or true/false".into()),
                }),
                _ => match date_of(s)? {
                    Some((y, m, d)) => Val::Date(source::days_since_epoch(y, m, d)),
                    None => Val::Null,
                },
            }
        }
        Op::Year(i) => date_of(f(i)?)?.map_or(Val::Null, |(y, _, _)| Val::Int(y as i64)),
        Op::FiscalYear(i) => date_of(f(i)?)?.map_or(Val::Null, |(y, m, _)| {
            Val::Int(source::fiscal_year(y, m) as i64)
        }),
        Op::AgeBand(i) => {
            let s = f(i)?;
            if s.is_empty() {
                Val::Null
            } else {
                let age: i64 = s.parse().map_err(|_| "expected an age in whole years")?;
                if !(0..=130).contains(&age) {
                    return Err("expected an age between 0 and 130".into());
                }
                Val::Str(source::age_band(age))
            }
        }
        Op::Prefecture(i) => {
            let s = f(i)?;
            if s.is_empty() {
                Val::Null
            } else {
                let p = super::reference::prefecture_of_address(s)
                    .ok_or("expected an address beginning with a prefecture name (e.g. 東京都)")?;
                Val::Str(p.code)
            }
        }
        Op::Months(a, b) => match (date_of(f(a)?)?, date_of(f(b)?)?) {
            (Some((y1, m1, d1)), Some((y2, m2, d2))) => {
                let days =
                    source::days_since_epoch(y2, m2, d2) - source::days_since_epoch(y1, m1, d1);
                Val::Float((days as f64 / 30.4375 * 10.0).round() / 10.0)
            }
            _ => Val::Null,
        },
        Op::Criterion(c, at) => {
            let mut values = [None; super::severity::MAX_ITEMS];
            for (v, &i) in values.iter_mut().zip(&at[..c.items.len()]) {
                let s = f(i)?;
                if !s.is_empty() {
                    let x: f64 = s.parse().map_err(|_| "expected a number")?;
                    if !x.is_finite() {
                        return Err("expected a finite number".into());
                    }
                    *v = Some(x);
                }
            }
            c.judge(&values[..c.items.len()])
                .map_or(Val::Null, Val::Bool)
        }
    })
}

fn check(name: &str, checks: &[Resolved], v: &Val) -> Result<(), String> {
    if matches!(v, Val::Null) {
        return Ok(());
    }
    for c in checks {
        let ok = match (c, v) {
            (Resolved::Set { strs, .. }, Val::Str(s)) => strs.contains(*s),
            (Resolved::Set { ints, .. }, Val::Int(i)) => ints.contains(i),
            (Resolved::Set { strs, .. }, v) => strs.contains(&val_string(v)),
            (Resolved::Range(lo, hi), Val::Int(i)) => (*lo..=*hi).contains(i),
            (Resolved::Bounds(lo, hi), Val::Int(i)) => (*lo..=*hi).contains(&(*i as f64)),
            (Resolved::Bounds(lo, hi), Val::Float(x)) => (*lo..=*hi).contains(x),
            (Resolved::Range(..) | Resolved::Bounds(..), _) => false,
        };
        if !ok {
            return Err(match c {
                Resolved::Set { describe, .. } => describe.clone(),
                Resolved::Range(lo, hi) => {
                    format!("value of `{name}` is outside the catalogue domain {lo}..={hi}")
                }
                Resolved::Bounds(lo, hi) => {
                    format!("value of `{name}` is outside the catalogue bounds [{lo}, {hi}]")
                }
            });
        }
    }
    Ok(())
}

fn append(b: &mut Builder, v: Val) -> Result<(), String> {
    match (b, v) {
        (Builder::Utf8(b), Val::Str(s)) => b.append_value(s),
        (Builder::Utf8(b), Val::Null) => b.append_null(),
        (Builder::I32(b), Val::Int(i)) => {
            b.append_value(i32::try_from(i).map_err(|_| "expected a 32-bit integer")?)
        }
        (Builder::I32(b), Val::Null) => b.append_null(),
        (Builder::I64(b), Val::Int(i)) => b.append_value(i),
        (Builder::I64(b), Val::Null) => b.append_null(),
        (Builder::F64(b), Val::Float(x)) => b.append_value(x),
        (Builder::F64(b), Val::Int(i)) => b.append_value(i as f64),
        (Builder::F64(b), Val::Null) => b.append_null(),
        (Builder::Bool(b), Val::Bool(x)) => b.append_value(x),
        (Builder::Bool(b), Val::Null) => b.append_null(),
        (Builder::Date(b), Val::Date(d)) => b.append_value(d),
        (Builder::Date(b), Val::Null) => b.append_null(),
        _ => return Err("value does not fit the catalogue type".into()),
    }
    Ok(())
}
