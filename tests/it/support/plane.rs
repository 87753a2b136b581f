//! The one test double of the data plane (`kura::query::plane::DataPlane`), so the
//! control plane's guarantees are pinned whatever the query core computes. It answers
//! from markers in the SQL (`FAIL_EXEC`, `OUT_OF_SCOPE`, `DP_UNSUPPORTED`, `DIFFERENCING`,
//! `SET=lo..hi`: the released cell's contributor set, default `0..412`), gives fresh
//! Laplace noise on every DP answer (so only the release cache can make repeats agree),
//! and records what it was asked. `FakePlane::offline()` is the plane of servers whose
//! tests must never reach data (TLS): it refuses every build and query.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use kura::privacy::disclosure::trace::{AnswerTrace, CellTrace, ColumnKind, ColumnTrace};
use kura::privacy::result::{
    Disclosure, DisclosureMode, DpColumn, DpDisclosure, ReleasedColumn, ReleasedResult,
};
use kura::query::plane::{AuthorisedQuery, BuiltExtract, DataPlane, DpPreview, ExtractFailure};
use kura::query::{QueryError, QueryOutcome};
use kura::sql::scope::Scope;

/// Test double of the data plane: builds empty extract directories and answers from
/// markers in the SQL.
#[derive(Default)]
pub struct FakePlane {
    /// Where extract directories are made; `None` for the offline plane.
    root: Option<PathBuf>,
    pub seen: Mutex<Vec<AuthorisedQuery>>,
    /// Extract generation: bumping it makes the next build a new extract version.
    pub generation: AtomicUsize,
    /// Delay of every DP answer (concurrency tests).
    pub dp_delay_ms: AtomicU64,
    /// DP answers computed (each with fresh noise).
    pub dp_runs: AtomicUsize,
    /// Delay of every suppression answer (concurrency tests).
    pub query_delay_ms: AtomicU64,
    /// Suppression queries running now, and the most that ever ran at once.
    pub running: AtomicUsize,
    pub max_running: AtomicUsize,
    /// Suppression queries between their ledger read and the end of their check (inside
    /// the query's turn, `query/serial.rs`), now and at most.
    pub in_turn: AtomicUsize,
    pub max_in_turn: AtomicUsize,
}

const OFFLINE: &str = "no data plane in TLS tests";

/// The execution error of `FAIL_EXEC`: an engine message that carries a data value.
pub fn exec_failure() -> QueryError {
    QueryError::execution(datafusion::error::DataFusionError::Execution(
        "Cast error: cannot cast string '1987-03-02' to Int32".into(),
    ))
}

fn column(name: &str, type_name: &str) -> ReleasedColumn {
    ReleasedColumn {
        name: name.into(),
        type_name: type_name.into(),
    }
}

/// The contributor set of the released cell of a suppression answer: `SET=lo..hi` in the
/// SQL (patients `lo` to `hi - 1` of the extract's index), else patients 0 to 411. The
/// fake plane checks nothing: whatever it releases goes into the release ledger as the
/// gateway records it, like an answer whose query-time differencing check was off.
pub fn released_set(sql: &str) -> roaring::RoaringBitmap {
    let range = sql.split("SET=").nth(1).and_then(|rest| {
        let spec: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let (lo, hi) = spec.split_once("..")?;
        Some(lo.parse::<u32>().ok()?..hi.parse::<u32>().ok()?)
    });
    range.unwrap_or(0..412).collect()
}

/// The disclosure trace of the fake suppression answer: a public key column and a
/// protected count whose released cell (row 0) uses the answer's one set.
fn suppression_trace() -> AnswerTrace {
    let column = |kind| ColumnTrace {
        kind,
        facility: false,
        dominance: false,
        differencing: kind == ColumnKind::Protected,
        rounding: None,
    };
    AnswerTrace {
        columns: vec![column(ColumnKind::Key), column(ColumnKind::Protected)],
        cells: vec![
            vec![
                None,
                Some(CellTrace {
                    band: Some((200, Some(499))),
                    sets: vec![0],
                }),
            ],
            vec![None, None],
        ],
    }
}

fn offline() -> QueryError {
    QueryError::UnsupportedQuery {
        message: OFFLINE.into(),
    }
}

impl FakePlane {
    /// A plane that makes extract directories under `root` and answers queries.
    pub fn new(root: PathBuf) -> FakePlane {
        FakePlane {
            root: Some(root),
            ..FakePlane::default()
        }
    }

    /// A plane that refuses every build and query and knows no disease.
    pub fn offline() -> FakePlane {
        FakePlane::default()
    }

    /// The release key a data plane derives: the normalised question and its DP
    /// parameters (here: the SQL with whitespace collapsed, ε and the bounds).
    fn release_key(q: &AuthorisedQuery) -> String {
        let dp = q.dp.expect("DP parameters");
        let sql = q.sql.split_whitespace().collect::<Vec<_>>().join(" ");
        format!(
            "rk:{sql}|{}|{}|{}",
            dp.epsilon, dp.bounds.max_groups_per_patient, dp.bounds.max_rows_per_group
        )
    }

    fn dp_disclosure(q: &AuthorisedQuery) -> DpDisclosure {
        let dp = q.dp.expect("DP parameters");
        let sensitivity = f64::from(dp.bounds.max_groups_per_patient);
        let scale = sensitivity / dp.epsilon;
        DpDisclosure {
            epsilon: dp.epsilon,
            cached: false,
            mechanism: "laplace".into(),
            bounds: dp.bounds,
            release_threshold: 5.0 + 3.0 * scale,
            columns: vec![DpColumn {
                index: 1,
                name: "n".into(),
                aggregate: "count_distinct_pid".into(),
                epsilon: dp.epsilon,
                sensitivity,
                noise_scale: scale,
                ci95_half_width: Some(scale * (1.0f64 / 0.05).ln()),
                clamp: None,
            }],
            intervals: vec![],
        }
    }

    /// A noisy count with fresh Laplace noise on every call (an averaging attack on a
    /// plane without the cache would narrow it).
    fn dp_outcome(&self, q: &AuthorisedQuery) -> QueryOutcome {
        use rand::Rng;
        self.dp_runs.fetch_add(1, Ordering::SeqCst);
        let d = Self::dp_disclosure(q);
        let scale = d.columns[0].noise_scale;
        let u: f64 = rand::rng().random_range(-0.5..0.5);
        let noise = -scale * u.signum() * (1.0 - 2.0 * u.abs()).ln();
        QueryOutcome {
            result: ReleasedResult {
                columns: vec![column("sex", "Utf8"), column("n", "Float64")],
                rows: vec![vec![json!("1"), json!(412.0 + noise)]],
                disclosure: Disclosure {
                    mode: DisclosureMode::Dp,
                    threshold: q.threshold,
                    suppressed: vec![],
                    suppressed_cells: 0,
                    differencing: Vec::new(),
                    dropped_rows: 0,
                    rounding: None,
                    epsilon_spent: Some(d.epsilon),
                    epsilon_remaining: None,
                    notes: vec![],
                    dp: Some(d),
                },
            },
            plan_fingerprint: "fp_dp".into(),
            released_sets: Vec::new(),
            trace: Default::default(),
            tables: vec!["patient".into()],
            duration: Duration::from_millis(3),
        }
    }
}

impl DataPlane for FakePlane {
    fn build_extract<'a>(
        &'a self,
        application: &'a str,
        _scope: &'a Scope,
    ) -> BoxFuture<'a, Result<BuiltExtract, ExtractFailure>> {
        Box::pin(async move {
            let Some(root) = &self.root else {
                return Err(ExtractFailure {
                    application: application.into(),
                    source: OFFLINE.into(),
                });
            };
            let path = root.join(application);
            std::fs::create_dir_all(&path).map_err(|e| ExtractFailure {
                application: application.into(),
                source: Box::new(e),
            })?;
            let generation = self.generation.load(Ordering::SeqCst);
            Ok(BuiltExtract {
                extract_id: if generation == 0 {
                    format!("x_{application}")
                } else {
                    format!("x_{application}_g{generation}")
                },
                path,
            })
        })
    }

    fn query(&self, q: AuthorisedQuery) -> BoxFuture<'_, Result<QueryOutcome, QueryError>> {
        Box::pin(async move {
            if self.root.is_none() {
                return Err(offline());
            }
            self.seen.lock().unwrap().push(q.clone());
            if q.sql.contains("FAIL_EXEC") {
                return Err(exec_failure());
            }
            if q.sql.contains("OUT_OF_SCOPE") {
                return Err(QueryError::OutOfScope {
                    message: "table `adverse_event` is not in this approval's datasets".into(),
                });
            }
            if q.dp.is_some() {
                let ms = self.dp_delay_ms.load(Ordering::SeqCst);
                if ms > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                return Ok(self.dp_outcome(&q));
            }
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            let ms = self.query_delay_ms.load(Ordering::SeqCst);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
            // The check, as the real plane does it: the ledger is read after execution
            // (which takes the query's turn), then the cells are checked.
            if let Some(ledger) = &q.ledger {
                ledger.near(&[412], q.threshold).await?;
                let now = self.in_turn.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_in_turn.fetch_max(now, Ordering::SeqCst);
                if ms > 0 {
                    tokio::time::sleep(Duration::from_millis(ms / 3)).await;
                }
                self.in_turn.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(QueryOutcome {
                result: ReleasedResult {
                    columns: vec![column("prefecture_code", "Utf8"), column("n", "Int64")],
                    rows: vec![
                        vec![json!("13"), json!(412)],
                        vec![json!("31"), Value::Null],
                    ],
                    disclosure: Disclosure {
                        mode: q.mode,
                        threshold: q.threshold,
                        suppressed: vec![[1, 1]],
                        suppressed_cells: 1,
                        // `DIFFERENCING`: the suppressed cell was suppressed for differencing.
                        differencing: if q.sql.contains("DIFFERENCING") {
                            vec![[1, 1]]
                        } else {
                            Vec::new()
                        },
                        dropped_rows: 0,
                        rounding: None,
                        epsilon_spent: q.dp.map(|d| d.epsilon),
                        epsilon_remaining: None,
                        notes: vec![],
                        dp: None,
                    },
                },
                plan_fingerprint: "fp_test".into(),
                tables: vec!["patient".into()],
                duration: Duration::from_millis(3),
                released_sets: vec![released_set(&q.sql)],
                trace: suppression_trace(),
            })
        })
    }

    fn dp_preview(&self, q: AuthorisedQuery) -> BoxFuture<'_, Result<DpPreview, QueryError>> {
        Box::pin(async move {
            if self.root.is_none() {
                return Err(offline());
            }
            if q.sql.contains("DP_UNSUPPORTED") || q.dp.is_none() {
                return Err(QueryError::UnsupportedQuery {
                    message: "MIN is not supported under DP; use COUNT, SUM or AVG".into(),
                });
            }
            Ok(DpPreview {
                release_key: Self::release_key(&q),
                disclosure: Self::dp_disclosure(&q),
            })
        })
    }

    fn diseases(&self) -> BTreeSet<i32> {
        if self.root.is_none() {
            return BTreeSet::new();
        }
        [2, 11, 13, 51].into_iter().collect()
    }
}
