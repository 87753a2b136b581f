//! Query stage, suppression mode: the stages one query passes, each taking one type and
//! returning the next —
//! SQL → [`GuardedPlan`] (read-only, allow-listed, error-hardened; its rules chosen by
//! the datasets it reads) → [`RewrittenPlan`] (every released number carries its
//! contributor sets; padding decided from the release shape) → [`ExecutedBatches`]
//! (DataFusion under the memory pool, time limit and row cap) → [`QueryOutcome`] (the
//! disclosure check's released result, differencing checked against the release ledger,
//! and the contributor sets it releases).
//!
//! Guarantees: nothing reaches the caller that did not pass the disclosure check; every
//! engine error becomes `execution_error` (detail for the audit log only) or
//! `resource_limit`; planning and execution together are bounded by `limits.timeout`, and
//! dropping the future cancels the query.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::LogicalPlan;

pub use super::fingerprint::fingerprint;
use super::{QueryError, QueryOutcome};
use crate::catalog::Catalog;
use crate::engine::Limits;
use roaring::RoaringBitmap;
use tracing::{Instrument, info_span};

use crate::privacy::disclosure::{self, Earlier, Padding, differencing};
use crate::privacy::ledger::{LedgerView, NoLedger};
use crate::privacy::rules::{DisclosureRules, RuleSet};
use crate::sql::rewrite::{Release, Rewritten};
use crate::sql::{guard, rewrite};

/// A read-only, allow-listed, error-hardened plan and the rules that apply to it.
pub struct GuardedPlan {
    pub plan: LogicalPlan,
    /// Catalogue tables the plan reads.
    pub tables: Vec<String>,
    /// The strictest rules of the datasets those tables belong to.
    pub rules: RuleSet,
    pub fingerprint: String,
}

/// The privacy-rewritten plan, with the column types and padding of its release.
pub struct RewrittenPlan {
    pub guarded: GuardedPlan,
    pub rewritten: Rewritten,
    pub types: Vec<DataType>,
    /// Decided before execution, from the release shape and the catalogue only.
    pub padding: Padding,
}

/// The raw output of the rewritten plan, not yet checked (never leaves this module).
pub struct ExecutedBatches {
    pub rewritten: RewrittenPlan,
    pub batches: Vec<RecordBatch>,
}

/// Run one researcher query in suppression mode over the tables registered in `ctx`
/// (the caller's extract), with differencing checked within the answer only.
pub async fn run_query(
    ctx: &SessionContext,
    sql: &str,
    catalog: &Catalog,
    rules: &DisclosureRules,
    limits: &Limits,
) -> Result<QueryOutcome, QueryError> {
    run_query_with(ctx, sql, catalog, rules, limits, &NoLedger).await
}

/// [`run_query`] against the application's release ledger: a cell whose contributors
/// differ by fewer than k from an earlier released cell's is suppressed too.
pub async fn run_query_with(
    ctx: &SessionContext,
    sql: &str,
    catalog: &Catalog,
    rules: &DisclosureRules,
    limits: &Limits,
    ledger: &dyn LedgerView,
) -> Result<QueryOutcome, QueryError> {
    let mut times = StageTimes::default();
    let outcome = run_query_staged(ctx, sql, catalog, rules, limits, ledger, &mut times).await;
    for (stage, took) in [
        ("guard", times.guard),
        ("rewrite", times.rewrite),
        ("execute", times.execute),
        ("disclosure", times.check),
    ] {
        if !took.is_zero() {
            crate::metrics::stage(stage, took);
        }
    }
    outcome
}

/// One table of a standard report (the annual report, `report::annual`): the released
/// result exactly as [`run_query_with`] gives it, plus the contributor set behind every
/// cell of every executed row (`disclosure::cell_sets`), so that the report can check its
/// tables together (`disclosure::margins`). The sets stay in the process.
pub struct ReportTable {
    pub outcome: QueryOutcome,
    pub rows: Vec<disclosure::RowSets>,
}

/// [`run_query_with`] for one table of a standard report (see [`ReportTable`]).
pub async fn run_report_query(
    ctx: &SessionContext,
    sql: &str,
    catalog: &Catalog,
    rules: &DisclosureRules,
    limits: &Limits,
    ledger: &dyn LedgerView,
) -> Result<ReportTable, QueryError> {
    let started = Instant::now();
    let work = async {
        let guarded = guarded(ctx, sql, catalog, rules).await?;
        let rewritten = rewritten(ctx, guarded, catalog, limits).await?;
        let executed = executed(ctx, rewritten, limits).await?;
        let rows = disclosure::cell_sets(&executed.batches, &executed.rewritten.rewritten.release)?;
        let outcome = checked(ctx, executed, limits, started, ledger).await?;
        Ok(ReportTable { outcome, rows })
    };
    crate::engine::exec::within_timeout(limits, work).await
}

/// Wall-clock time of each stage of one query (`kura bench query --stages`).
#[derive(Debug, Default, Clone, Copy)]
pub struct StageTimes {
    pub guard: Duration,
    pub rewrite: Duration,
    pub execute: Duration,
    pub check: Duration,
}

/// [`run_query_with`], recording how long each stage took.
pub async fn run_query_staged(
    ctx: &SessionContext,
    sql: &str,
    catalog: &Catalog,
    rules: &DisclosureRules,
    limits: &Limits,
    ledger: &dyn LedgerView,
    times: &mut StageTimes,
) -> Result<QueryOutcome, QueryError> {
    let started = Instant::now();
    let work = async {
        let mut t = Instant::now();
        let mut lap = |slot: &mut Duration| {
            *slot = t.elapsed();
            t = Instant::now();
        };
        let guarded = guarded(ctx, sql, catalog, rules)
            .instrument(info_span!("kura.guard"))
            .await?;
        lap(&mut times.guard);
        let rewritten = rewritten(ctx, guarded, catalog, limits)
            .instrument(info_span!("kura.rewrite"))
            .await?;
        lap(&mut times.rewrite);
        let executed = executed(ctx, rewritten, limits)
            .instrument(info_span!("kura.execute"))
            .await?;
        lap(&mut times.execute);
        let outcome = checked(ctx, executed, limits, started, ledger)
            .instrument(info_span!("kura.disclosure"))
            .await;
        lap(&mut times.check);
        outcome
    };
    crate::engine::exec::within_timeout(limits, work).await
}

/// SQL → guarded plan: parse and plan under the guard, pick the rules of the datasets
/// read, harden error-prone expressions, fingerprint the shape.
pub async fn guarded(
    ctx: &SessionContext,
    sql: &str,
    catalog: &Catalog,
    rules: &DisclosureRules,
) -> Result<GuardedPlan, QueryError> {
    let plan = guard::plan_guarded(ctx, sql, catalog).await?;
    let tables = guard::tables_read(&plan);
    let datasets: Vec<&str> = tables
        .iter()
        .filter_map(|t| catalog.table(t))
        .flat_map(|t| t.datasets.iter().map(String::as_str))
        .collect();
    let rules = rules.effective(datasets);
    let plan = guard::harden(plan, &rules.defences)?;
    let fingerprint = fingerprint(&plan);
    Ok(GuardedPlan {
        plan,
        tables,
        rules,
        fingerprint,
    })
}

/// Guarded plan → rewritten plan with contributor counts, and its padding.
async fn rewritten(
    ctx: &SessionContext,
    guarded: GuardedPlan,
    catalog: &Catalog,
    limits: &Limits,
) -> Result<RewrittenPlan, QueryError> {
    let index = crate::engine::session::patient_index(ctx, catalog).await?;
    let rewritten = rewrite::rewrite(&guarded.plan, catalog, &guarded.rules, index)?;
    let schema = rewritten.plan.schema().clone();
    let types: Vec<_> = rewritten
        .release
        .columns
        .iter()
        .map(|c| schema.field(c.index).data_type().clone())
        .collect();
    let padding =
        disclosure::padding(ctx, &rewritten.release, catalog, &types, limits.max_rows).await;
    Ok(RewrittenPlan {
        guarded,
        rewritten,
        types,
        padding,
    })
}

/// Execute under the session's memory pool and the caller's limits. Rows can still be
/// dropped by the disclosure check, so the raw-row cap allows some slack; the released row
/// cap is enforced exactly by the check. Execution errors are tallied (see below).
async fn executed(
    ctx: &SessionContext,
    rewritten: RewrittenPlan,
    limits: &Limits,
) -> Result<ExecutedBatches, QueryError> {
    let plan = rewritten.rewritten.plan.clone();
    let result = crate::engine::exec::collect_limited(ctx, plan, &limits.for_raw_output()).await;
    if let Err(QueryError::Execution { .. }) = &result {
        EXECUTION_ERRORS.fetch_add(1, Ordering::Relaxed);
    }
    Ok(ExecutedBatches {
        rewritten,
        batches: result?,
    })
}

/// Executed batches → the released result, through the disclosure check: the ledger is
/// read for sets near the sizes of the cells that pass the primary rules (and of the
/// cells of sealed inner aggregations the answer is computed from), then every rule runs,
/// differencing included.
async fn checked(
    ctx: &SessionContext,
    executed: ExecutedBatches,
    limits: &Limits,
    started: Instant,
    ledger: &dyn LedgerView,
) -> Result<QueryOutcome, QueryError> {
    let ExecutedBatches { rewritten, batches } = executed;
    let (release, rules) = (&rewritten.rewritten.release, &rewritten.guarded.rules);
    let evaluation = disclosure::Evaluation::of(&batches, release, rules)?;
    let (earlier, inner) = if rules.defences.differencing {
        let inner = side_sets(ctx, release, limits).await?;
        let mut sizes = evaluation.candidate_sizes();
        sizes.extend(inner.iter().map(RoaringBitmap::len));
        (Earlier::new(ledger.near(&sizes, rules.k).await?), inner)
    } else {
        (Earlier::default(), Vec::new())
    };
    if differencing::any_unsafe(&inner, &earlier, rules.k) {
        return Err(QueryError::UnsupportedQuery {
            message: INNER_DIFFERENCING.into(),
        });
    }
    let mut checked = disclosure::check(
        &batches,
        release,
        rules,
        limits.max_rows,
        &rewritten.types,
        &rewritten.padding,
        evaluation,
        &earlier,
    )?;
    // The inner cells go after the answer's own sets, whose indices the trace holds.
    differencing::append_distinct(&mut checked.released_sets, inner);
    Ok(QueryOutcome {
        result: checked.result,
        plan_fingerprint: rewritten.guarded.fingerprint,
        tables: rewritten.guarded.tables,
        duration: started.elapsed(),
        released_sets: checked.released_sets,
        trace: checked.trace,
    })
}

const INNER_DIFFERENCING: &str = "this answer is computed from cells of an inner aggregation whose patients differ by fewer than k from another cell of the answer or from a cell released earlier to this application (differencing), so it is not released; ask with groups that differ by at least k patients, or ask the inner aggregation as its own query / この回答は内側の集計のセルから計算されていますが、そのセルの寄与患者が回答内の別のセルまたは本申請で以前に公開したセルと k 人未満しか違わないため（差分による特定）、公開しません。k 人以上異なる集団で集計するか、内側の集計を単独のクエリとして実行してください";

/// The contributor sets of the cells of every sealed inner aggregation whose cells leave
/// the plan through a public result (`Release::side`): each runs as a plan of its own.
/// The union of each one's sets counts too (an outer total over its cells). Correlated
/// ones cannot run alone and are not checked (docs/privacy.md §4a, open).
async fn side_sets(
    ctx: &SessionContext,
    release: &Release,
    limits: &Limits,
) -> Result<Vec<RoaringBitmap>, QueryError> {
    let mut out: Vec<RoaringBitmap> = Vec::new();
    for side in release.side.iter().filter(|s| !s.correlated) {
        let batches =
            crate::engine::exec::collect_limited(ctx, side.plan.clone(), &limits.for_raw_output())
                .await?;
        // An outer aggregate over the inner cells (a sum of the groups) is computed from
        // all of them: their union is checked as a cell too.
        let mut all = RoaringBitmap::new();
        for b in &batches {
            for name in &side.sets {
                for set in disclosure::read_sets(b, name)? {
                    all |= &set;
                    out.push(set);
                }
            }
        }
        out.push(all);
    }
    Ok(differencing::distinct(out))
}

/// Execution errors since start. Repeated errors are an oracle (each one says "some
/// row made this fail"), so the audit stage alerts on them; this is the process-wide tally.
static EXECUTION_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Number of `execution_error` outcomes since the process started.
pub fn execution_errors() -> u64 {
    EXECUTION_ERRORS.load(Ordering::Relaxed)
}
