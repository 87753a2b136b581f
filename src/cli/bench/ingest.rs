//! `kura bench ingest`: measures synth and ingest against a baseline taken in the same run —
//! a plain Parquet write of exactly the rows ingest produced, with the same writer settings.
//! Speed is reported as rows per second and as the ratio ingest / baseline, never as a
//! pass/fail time, so figures from different machines stay comparable.
//!
//! The baseline times only the Parquet writes (rows are read back from ingest's output
//! outside the timed part), single-threaded; ingest is timed wall-clock with its usual
//! per-table parallelism (`threads` in the report). Run with `--threads 1` for a
//! one-core-against-one-core comparison.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatchReader;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::catalog::Catalog;
use crate::ingest::pipeline::{RunSettings, run_with, writer_properties};
use crate::ingest::synth::{SynthOptions, generate};
use crate::ingest::{IngestError, IngestOptions, PseudonymKey};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub patients: u64,
    pub seed: u64,
    /// Working directory; a fresh temporary one (removed afterwards) when `None`.
    pub dir: Option<PathBuf>,
    /// Ingest threads; 0 = one per core.
    pub threads: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub patients: u64,
    pub threads: usize,
    pub synth_secs: f64,
    pub synth_patients_per_min: f64,
    pub source_rows: u64,
    pub ingest_secs: f64,
    pub output_rows: u64,
    pub ingest_rows_per_sec: f64,
    pub baseline_secs: f64,
    pub baseline_rows_per_sec: f64,
    /// ingest rows/s ÷ baseline rows/s (goal ≥ 0.5).
    pub ratio: f64,
    /// Peak resident memory of the process (VmHWM), in MiB; `None` where /proc is absent.
    pub peak_rss_mib: Option<f64>,
    pub debug_build: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Synth(#[from] crate::ingest::synth::SynthError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// Run the benchmark; the working directory's contents are removed at the end.
pub fn run(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let (dir, owned) = match &opts.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("kura-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).map_err(|source| IngestError::Io {
        path: dir.clone(),
        source,
    })?;
    let result = bench_in(opts, &dir);
    let _ = std::fs::remove_dir_all(dir.join("source"));
    let _ = std::fs::remove_dir_all(dir.join("out"));
    let _ = std::fs::remove_dir_all(dir.join("baseline"));
    if owned {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn bench_in(opts: &BenchOptions, dir: &Path) -> Result<BenchReport, BenchError> {
    let source = dir.join("source");
    let out = dir.join("out");
    let t = Instant::now();
    let synth = generate(&SynthOptions {
        patients: opts.patients,
        seed: opts.seed,
        out: source.clone(),
        progress: false,
    })?;
    let synth_time = t.elapsed();

    let key = PseudonymKey::generate();
    let catalog = Catalog::embedded().map_err(|e| IngestError::Catalog {
        table: "*".into(),
        detail: e.to_string(),
    })?;
    let threads = match opts.threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    let t = Instant::now();
    let manifest = run_with(
        &IngestOptions {
            source,
            out: out.clone(),
            catalog,
            progress: false,
        },
        &key,
        &RunSettings {
            replace: false,
            threads,
        },
    )?;
    let ingest_time = t.elapsed();

    let baseline_dir = dir.join("baseline");
    std::fs::create_dir_all(&baseline_dir).map_err(|source| IngestError::Io {
        path: baseline_dir.clone(),
        source,
    })?;
    let mut baseline_time = Duration::ZERO;
    for entry in manifest.tables.values() {
        baseline_time += plain_write(&out.join(&entry.file), &baseline_dir.join(&entry.file))?;
    }

    let output_rows: u64 = manifest.tables.values().map(|e| e.rows).sum();
    let source_rows: u64 = manifest.tables.values().map(|e| e.source_rows).sum();
    let per_sec = |rows: u64, d: Duration| rows as f64 / d.as_secs_f64().max(1e-9);
    let ingest_rps = per_sec(output_rows, ingest_time);
    let baseline_rps = per_sec(output_rows, baseline_time);
    Ok(BenchReport {
        patients: synth.patients,
        threads,
        synth_secs: synth_time.as_secs_f64(),
        synth_patients_per_min: synth.patients as f64 / synth_time.as_secs_f64().max(1e-9) * 60.0,
        source_rows,
        ingest_secs: ingest_time.as_secs_f64(),
        output_rows,
        ingest_rows_per_sec: ingest_rps,
        baseline_secs: baseline_time.as_secs_f64(),
        baseline_rows_per_sec: baseline_rps,
        ratio: ingest_rps / baseline_rps.max(1e-9),
        peak_rss_mib: peak_rss_mib(),
        debug_build: cfg!(debug_assertions),
    })
}

/// Write the rows of `from` to `to` with ingest's writer settings; returns the time spent in
/// the writer only (reading the rows back is not part of the baseline).
fn plain_write(from: &Path, to: &Path) -> Result<Duration, IngestError> {
    let pq = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IngestError::Parquet {
            path: path.clone(),
            source,
        }
    };
    let file = std::fs::File::open(from).map_err(|source| IngestError::Io {
        path: from.to_path_buf(),
        source,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(pq(from))?
        .with_batch_size(crate::ingest::pipeline::BATCH_ROWS)
        .build()
        .map_err(pq(from))?;
    let out = std::fs::File::create(to).map_err(|source| IngestError::Io {
        path: to.to_path_buf(),
        source,
    })?;
    let t = Instant::now();
    let mut writer =
        ArrowWriter::try_new(out, reader.schema(), Some(writer_properties())).map_err(pq(to))?;
    let mut spent = t.elapsed();
    for batch in reader {
        let batch = batch.map_err(|source| IngestError::Arrow {
            table: from.display().to_string(),
            source,
        })?;
        let t = Instant::now();
        writer.write(&batch).map_err(pq(to))?;
        spent += t.elapsed();
    }
    let t = Instant::now();
    let file = writer.into_inner().map_err(pq(to))?;
    file.sync_all().map_err(|source| IngestError::Io {
        path: to.to_path_buf(),
        source,
    })?;
    Ok(spent + t.elapsed())
}

/// Peak resident set size from `/proc/self/status` (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.debug_build {
            writeln!(
                f,
                "NOTE: debug build; figures are not representative / デバッグビルドの参考値です"
            )?;
        }
        writeln!(f, "patients / 患者数:            {}", self.patients)?;
        writeln!(
            f,
            "synth / 合成:                 {:.2} s, {:.0} patients/min",
            self.synth_secs, self.synth_patients_per_min
        )?;
        writeln!(
            f,
            "ingest / 取込 ({} threads):    {:.2} s, {} rows out of {}, {:.0} rows/s",
            self.threads,
            self.ingest_secs,
            self.output_rows,
            self.source_rows,
            self.ingest_rows_per_sec
        )?;
        writeln!(
            f,
            "baseline Parquet write / 基準: {:.2} s, {:.0} rows/s (1 thread, writer time only)",
            self.baseline_secs, self.baseline_rows_per_sec
        )?;
        writeln!(
            f,
            "ratio ingest/baseline / 比:    {:.2} (goal ≥ 0.5)",
            self.ratio
        )?;
        match self.peak_rss_mib {
            Some(m) => writeln!(f, "peak RSS / 最大常駐メモリ:     {m:.0} MiB"),
            None => writeln!(f, "peak RSS / 最大常駐メモリ:     unavailable"),
        }
    }
}
