//! Benchmark `kura bench query`: the cost of the protected query path (suppression, or
//! DP with `--dp-epsilon`) against raw DataFusion, measured in the same run on the same
//! machine.
//!
//! It builds an unrestricted extract of an ingested dataset (timing the build in
//! patient-rows per second), then runs every example query (`queries/examples/*.sql`)
//! as plain DataFusion over the unscoped source and through the full path (`run`, i.e.
//! guard + rewrite + execute + check) over the extract, alternating the two, and prints
//! per-query medians, the ratio full/raw, the median and maximum ratio, and the peak
//! resident memory (VmHWM). Only ratios are compared; absolute times depend on the host.
//! With `--scheduler df://host:port` the full path also runs with execution on a Ballista
//! cluster, in the same run, and each query's Ballista/local ratio is printed (issue 15 §3).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::catalog::Catalog;
use crate::engine::session::{empty_session, register_table};
use crate::engine::{Limits, open_extract};
use crate::query::suppression::StageTimes;
use crate::query::{QueryError, QueryOutcome};
use crate::sql::extract::{ExtractError, build_extract};
use crate::sql::scope::Scope;

/// Arguments of `kura bench query`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchQueryArgs {
    /// Ingested dataset directory (output of `kura ingest`: <table>.parquet + manifest.json).
    #[arg(long)]
    pub data: PathBuf,
    /// Directory of example queries (*.sql).
    #[arg(long, default_value = "queries/examples")]
    pub queries: PathBuf,
    /// Measured repetitions per query and path (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Where to build the benchmark extract (default: a temporary directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Catalogue file (default: the catalogue compiled into kura).
    #[arg(long, env = "KURA_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Memory pool per query, in MiB.
    #[arg(long, default_value_t = 8192)]
    pub memory_mb: usize,
    /// Run the full path in differential-privacy mode with this ε per query (default
    /// contribution bounds); use with `--queries queries/dp`.
    #[arg(long)]
    pub dp_epsilon: Option<f64>,
    /// Also run the suppression path against a release ledger holding this many earlier
    /// cells (issue 11), beside the same path with an empty ledger.
    #[arg(long, default_value_t = 0)]
    pub ledger_cells: usize,
    /// Also time the stages of the suppression path apart (guard, rewrite, execution,
    /// disclosure check), in one more run per repetition.
    #[arg(long)]
    pub stages: bool,
    /// Print the report as JSON (for the peer benchmark, `tests/bench/peers`).
    #[arg(long)]
    pub json: bool,
    /// Also run the full path with execution on a Ballista cluster (`df://host:port`),
    /// beside the local engine, in the same run. Its scheduler and executors must read
    /// `--work-dir` at the same path (`kura scheduler/executor --extracts-dir <work-dir>`).
    #[arg(long, value_name = "df://HOST:PORT", requires = "work_dir")]
    pub scheduler: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot build the benchmark extract")]
    Extract(#[from] ExtractError),
    #[error("no *.sql files in {0}")]
    NoQueries(PathBuf),
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("query `{name}` failed on the {path} path ({})", .source.code())]
    Query {
        name: String,
        path: &'static str,
        #[source]
        source: QueryError,
    },
}

/// Timing of one example query.
#[derive(Debug, Clone)]
pub struct QueryTiming {
    pub name: String,
    pub raw: Duration,
    pub full: Duration,
    pub raw_rows: usize,
    pub full_rows: usize,
    /// The full path against the filled ledger (`--ledger-cells`).
    pub ledger: Option<Duration>,
    /// Median of each stage of the suppression path (`--stages`).
    pub stages: Option<StageTimes>,
    /// The full path with execution on the Ballista cluster (`--scheduler`).
    pub ballista: Option<Duration>,
}

impl QueryTiming {
    pub fn ratio(&self) -> f64 {
        self.full.as_secs_f64() / self.raw.as_secs_f64().max(1e-9)
    }
    /// Ballista over the local engine (the same full path).
    pub fn ballista_ratio(&self) -> Option<f64> {
        self.ballista
            .map(|b| b.as_secs_f64() / self.full.as_secs_f64().max(1e-9))
    }
    /// Ledger over empty ledger (the full path has no earlier cells).
    pub fn ledger_ratio(&self) -> Option<f64> {
        self.ledger
            .map(|l| l.as_secs_f64() / self.full.as_secs_f64().max(1e-9))
    }
}

/// Everything `kura bench query` measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub patients: u64,
    pub patient_rows: u64,
    pub extract_time: Duration,
    pub queries: Vec<QueryTiming>,
    /// Peak resident set size of the process in KiB (VmHWM), where the OS reports it.
    pub peak_rss_kib: Option<u64>,
    /// The full path ran in DP mode (different goal).
    pub dp: bool,
}

impl BenchReport {
    pub fn extract_rows_per_sec(&self) -> f64 {
        self.patient_rows as f64 / self.extract_time.as_secs_f64().max(1e-9)
    }
    pub fn median_ratio(&self) -> f64 {
        median(self.queries.iter().map(QueryTiming::ratio).collect())
    }
    pub fn ledger_ratios(&self) -> Vec<f64> {
        self.queries
            .iter()
            .filter_map(QueryTiming::ledger_ratio)
            .collect()
    }
    pub fn max_ratio(&self) -> f64 {
        self.queries
            .iter()
            .map(QueryTiming::ratio)
            .fold(0.0, f64::max)
    }
}

impl BenchReport {
    /// The report as JSON: times in milliseconds, ratios as printed.
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let queries: Vec<_> = self
            .queries
            .iter()
            .map(|q| {
                serde_json::json!({
                    "name": q.name,
                    "raw_ms": ms(q.raw),
                    "full_ms": ms(q.full),
                    "ratio": q.ratio(),
                    "rows": q.full_rows,
                    "ledger_ms": q.ledger.map(ms),
                    "ballista_ms": q.ballista.map(ms),
                    "stages_ms": q.stages.map(|t| serde_json::json!({
                        "guard": ms(t.guard), "rewrite": ms(t.rewrite),
                        "execute": ms(t.execute), "check": ms(t.check),
                    })),
                })
            })
            .collect();
        serde_json::json!({
            "mode": if self.dp { "dp" } else { "suppression" },
            "patients": self.patients,
            "patient_rows": self.patient_rows,
            "extract_ms": ms(self.extract_time),
            "extract_rows_per_sec": self.extract_rows_per_sec(),
            "median_ratio": self.median_ratio(),
            "max_ratio": self.max_ratio(),
            "peak_rss_kib": self.peak_rss_kib,
            "queries": queries,
        })
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn median_duration(v: &[Duration]) -> Duration {
    Duration::from_secs_f64(median(v.iter().map(Duration::as_secs_f64).collect()))
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "extract build / 抽出作成: {} patients, {} patient-rows in {:.2} s = {:.0} rows/s",
            self.patients,
            self.patient_rows,
            self.extract_time.as_secs_f64(),
            self.extract_rows_per_sec()
        )?;
        writeln!(
            f,
            "{:<40} {:>10} {:>10} {:>7} {:>6}",
            "query / クエリ", "raw ms", "full ms", "ratio", "rows"
        )?;
        for q in &self.queries {
            writeln!(
                f,
                "{:<40} {:>10.1} {:>10.1} {:>6.2}x {:>6}",
                q.name,
                q.raw.as_secs_f64() * 1e3,
                q.full.as_secs_f64() * 1e3,
                q.ratio(),
                q.full_rows
            )?;
        }
        writeln!(
            f,
            "median ratio / 中央値: {:.2}x   max / 最大: {:.2}x   (goal: {})",
            self.median_ratio(),
            self.max_ratio(),
            if self.dp {
                "DP: median <= 1.5x"
            } else {
                "median <= 1.15x, max <= 1.5x"
            }
        )?;
        let lr = self.ledger_ratios();
        if !lr.is_empty() {
            for q in &self.queries {
                if let (Some(l), Some(r)) = (q.ledger, q.ledger_ratio()) {
                    writeln!(
                        f,
                        "ledger / 台帳 {:<31} {:>10.1} ms {:>6.2}x of the empty ledger",
                        q.name,
                        l.as_secs_f64() * 1e3,
                        r
                    )?;
                }
            }
            let max = lr.iter().copied().fold(0.0, f64::max);
            writeln!(
                f,
                "ledger median / 台帳 中央値: {:.2}x   max / 最大: {max:.2}x   (goal: <= 1.10x)",
                median(lr)
            )?;
        }
        for q in &self.queries {
            if let Some(t) = &q.stages {
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                writeln!(
                    f,
                    "stages / 段階 {:<31} guard {:>7.1}  rewrite {:>7.1}  execute {:>8.1}  check {:>7.1} ms",
                    q.name,
                    ms(t.guard),
                    ms(t.rewrite),
                    ms(t.execute),
                    ms(t.check)
                )?;
            }
        }
        self.fmt_ballista(f)?;
        match self.peak_rss_kib {
            Some(k) => writeln!(f, "peak RSS / 最大常駐メモリ: {:.1} MiB", k as f64 / 1024.0),
            None => writeln!(f, "peak RSS / 最大常駐メモリ: not reported by this OS"),
        }
    }
}

impl BenchReport {
    /// Local against Ballista per query (`--scheduler`).
    fn fmt_ballista(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for q in &self.queries {
            if let (Some(b), Some(r)) = (q.ballista, q.ballista_ratio()) {
                writeln!(
                    f,
                    "ballista / 分散実行 {:<26} local {:>9.1} ms  ballista {:>9.1} ms  {:>6.2}x",
                    q.name,
                    q.full.as_secs_f64() * 1e3,
                    b.as_secs_f64() * 1e3,
                    r
                )?;
            }
        }
        Ok(())
    }
}

/// Peak resident set size (VmHWM) of this process in KiB, on Linux.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The example queries of a directory, as `(file stem, SQL)`, sorted by name.
pub fn load_queries(dir: &Path) -> Result<Vec<(String, String)>, BenchError> {
    let io = |source| BenchError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "sql") {
            let sql = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
                path: path.clone(),
                source,
            })?;
            let name = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            out.push((name, sql));
        }
    }
    if out.is_empty() {
        return Err(BenchError::NoQueries(dir.to_path_buf()));
    }
    out.sort();
    Ok(out)
}

async fn run_raw(ctx: &SessionContext, sql: &str, limits: &Limits) -> Result<usize, QueryError> {
    let map = |e| crate::engine::exec::map_engine_error(e, limits);
    let df = ctx.sql(sql).await.map_err(map)?;
    let mut stream = df.execute_stream().await.map_err(map)?;
    let mut rows = 0;
    while let Some(b) = stream.next().await {
        rows += b.map_err(map)?.num_rows();
    }
    Ok(rows)
}

/// Run the benchmark. `run` is the full query path (`query::suppression::run_query` with the
/// disclosure rules bound).
pub async fn bench_query<F>(
    args: &BenchQueryArgs,
    catalog: &Catalog,
    run: F,
) -> Result<BenchReport, BenchError>
where
    F: AsyncFn(&SessionContext, &str, &Catalog, &Limits) -> Result<QueryOutcome, QueryError>,
{
    let queries = load_queries(&args.queries)?;
    let limits = Limits {
        memory_bytes: args.memory_mb.saturating_mul(1 << 20),
        timeout: Duration::from_secs(3600),
        max_rows: 1_000_000,
    };
    let tmp;
    let work = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => {
            tmp = TempDir::new()?;
            tmp.0.clone()
        }
    };
    let out = work.join("bench-extract");
    let scope = Scope {
        datasets: catalog.datasets.iter().map(|d| d.name.clone()).collect(),
        ..Default::default()
    };
    let key: [u8; 32] = rand::random();
    let started = Instant::now();
    let manifest = build_extract(&args.data, &out, &scope, &key, catalog).await?;
    let extract_time = started.elapsed();

    let query_err = |name: &str, path: &'static str| {
        let name = name.to_string();
        move |source| BenchError::Query { name, path, source }
    };
    let raw_ctx = empty_session(&limits).map_err(query_err("(setup)", "raw"))?;
    for t in &catalog.tables {
        register_table(&raw_ctx, &args.data, &t.name, catalog)
            .map_err(query_err("(setup)", "raw"))?;
    }
    let full_ctx = open_extract(&out, catalog, &limits).map_err(query_err("(setup)", "full"))?;
    let cluster_ctx = distributed(args, &work, &out, catalog, &limits)?;
    let ledger = if args.ledger_cells > 0 && args.dp_epsilon.is_none() {
        let view = super::ledger::filled(
            &work,
            &manifest.extract_id,
            manifest.patients,
            args.ledger_cells,
        )
        .await
        .map_err(|e| BenchError::Io {
            path: work.clone(),
            source: std::io::Error::other(e),
        })?;
        Some(view)
    } else {
        None
    };
    let rules = crate::privacy::DisclosureRules::embedded().map_err(|e| BenchError::Io {
        path: work.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;

    let mut timings = Vec::new();
    for (name, sql) in &queries {
        // One unmeasured run of each path warms the page cache and the allocator.
        let mut raw_rows = run_raw(&raw_ctx, sql, &limits)
            .await
            .map_err(query_err(name, "raw"))?;
        let mut full_rows = run(&full_ctx, sql, catalog, &limits)
            .await
            .map_err(query_err(name, "full"))?
            .result
            .rows
            .len();
        let (mut raw, mut full, mut with_ledger) = (Vec::new(), Vec::new(), Vec::new());
        let mut on_cluster = Vec::new();
        if let Some(ctx) = &cluster_ctx {
            // Warm the cluster too (connections, the executors' page cache).
            run(ctx, sql, catalog, &limits)
                .await
                .map_err(query_err(name, "ballista"))?;
        }
        let mut stages = Vec::new();
        for _ in 0..args.repeat.max(1) {
            if args.stages && args.dp_epsilon.is_none() {
                let mut times = StageTimes::default();
                let none = crate::privacy::ledger::NoLedger;
                crate::query::suppression::run_query_staged(
                    &full_ctx, sql, catalog, &rules, &limits, &none, &mut times,
                )
                .await
                .map_err(query_err(name, "stages"))?;
                stages.push(times);
            }
            if let Some(view) = &ledger {
                let t = Instant::now();
                crate::query::run_query_with(&full_ctx, sql, catalog, &rules, &limits, view)
                    .await
                    .map_err(query_err(name, "ledger"))?;
                with_ledger.push(t.elapsed());
            }
            let t = Instant::now();
            raw_rows = run_raw(&raw_ctx, sql, &limits)
                .await
                .map_err(query_err(name, "raw"))?;
            raw.push(t.elapsed());
            let t = Instant::now();
            full_rows = run(&full_ctx, sql, catalog, &limits)
                .await
                .map_err(query_err(name, "full"))?
                .result
                .rows
                .len();
            full.push(t.elapsed());
            if let Some(ctx) = &cluster_ctx {
                let t = Instant::now();
                run(ctx, sql, catalog, &limits)
                    .await
                    .map_err(query_err(name, "ballista"))?;
                on_cluster.push(t.elapsed());
            }
        }
        timings.push(QueryTiming {
            name: name.clone(),
            raw: median_duration(&raw),
            full: median_duration(&full),
            raw_rows,
            full_rows,
            ledger: (!with_ledger.is_empty()).then(|| median_duration(&with_ledger)),
            stages: median_stages(&stages),
            ballista: (!on_cluster.is_empty()).then(|| median_duration(&on_cluster)),
        });
    }
    Ok(BenchReport {
        patients: manifest.patients,
        patient_rows: manifest.patient_rows,
        extract_time,
        queries: timings,
        peak_rss_kib: peak_rss_kib(),
        dp: args.dp_epsilon.is_some(),
    })
}

/// The session on the Ballista cluster of `--scheduler`, if given.
fn distributed(
    args: &BenchQueryArgs,
    work: &Path,
    extract: &Path,
    catalog: &Catalog,
    limits: &Limits,
) -> Result<Option<SessionContext>, BenchError> {
    let Some(addr) = &args.scheduler else {
        return Ok(None);
    };
    let setup = |e: String| BenchError::Io {
        path: work.to_path_buf(),
        source: std::io::Error::other(e),
    };
    let engine = crate::config::EngineConfig {
        mode: "ballista".into(),
        scheduler: Some(addr.clone()),
    };
    let crate::config::EngineMode::Ballista { host, port } = engine.engine_mode().map_err(setup)?
    else {
        return Ok(None);
    };
    on_cluster(&host, port, work, extract, catalog, limits).map_err(setup)
}

/// A session over `extract` executing on the scheduler at `host:port`.
#[cfg(feature = "ballista")]
fn on_cluster(
    host: &str,
    port: u16,
    work: &Path,
    extract: &Path,
    catalog: &Catalog,
    limits: &Limits,
) -> Result<Option<SessionContext>, String> {
    let cluster = crate::engine::ballista::Cluster::new(host, port, work)?;
    let ctx = open_extract(extract, catalog, limits).map_err(|e| e.to_string())?;
    let ctx = cluster.distribute(ctx).map_err(|e| e.to_string())?;
    Ok(Some(ctx))
}

/// Without the `ballista` feature there is no cluster to run on.
#[cfg(not(feature = "ballista"))]
fn on_cluster(
    _: &str,
    _: u16,
    _: &Path,
    _: &Path,
    _: &Catalog,
    _: &Limits,
) -> Result<Option<SessionContext>, String> {
    Err("--scheduler: this kura was built without the `ballista` feature".into())
}

/// The median of each stage over the runs (`None` without runs).
fn median_stages(runs: &[StageTimes]) -> Option<StageTimes> {
    if runs.is_empty() {
        return None;
    }
    let of =
        |f: fn(&StageTimes) -> Duration| median_duration(&runs.iter().map(f).collect::<Vec<_>>());
    Some(StageTimes {
        guard: of(|t| t.guard),
        rewrite: of(|t| t.rewrite),
        execute: of(|t| t.execute),
        check: of(|t| t.check),
    })
}

/// A temporary directory removed on drop (the benchmark extract can be large).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, BenchError> {
        let path = std::env::temp_dir().join(format!(
            "kura-bench-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&path).map_err(|source| BenchError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn peak_rss_is_reported_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_kib().is_some_and(|k| k > 0));
        }
    }
}
