//! SQL stage 3, the privacy rewrite in differential-privacy mode: guarded logical plan →
//! a *bounded* plan that computes the exact per-group quantities to be noised, plus what
//! the DP release (`query::dp`, `privacy::dp`) needs to noise them and to finish the query.
//!
//! Supported: one aggregation over patient rows (WHERE on any column, joins on `pid`
//! between patient tables and to reference tables below it) with `COUNT(*)`,
//! `COUNT(expr)`, `COUNT(DISTINCT pid)`, `SUM(col)` and `AVG(col)` for columns with
//! catalogue bounds, optional `FILTER (WHERE …)`; group keys that are public-domain
//! catalogue columns or `CASE` expressions with constant results (their domain is the
//! constants); above it only projections, aliases, HAVING, ORDER BY and LIMIT, which run
//! on the noisy values (post-processing). Everything else is refused with a message that
//! says what would work.
//!
//! [`plan`] composes four steps, one file each, and each keeps one of the properties the
//! sensitivities in `privacy::dp::sensitivity` and the zero-filled release rely on:
//! `post_processing` (only post-processing above the aggregation), `key_domain` (keys from
//! public domains only), `clamping` (every per-row value bounded) and `bounding` (at most
//! `m` rows per patient and group, at most `L` groups per patient). The golden files of
//! `tests/slt/dp/` show the accepted plans (`rewrite.slt`) and the refusals
//! (`refusals.slt`).

mod bounding;
mod clamping;
mod key_domain;
mod patient_shape;
mod post_processing;

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::logical_expr::{Aggregate, LogicalPlan};

use crate::catalog::Catalog;
use crate::engine::PatientIndex;
use crate::privacy::result::DpBounds;
use crate::privacy::rules::{Defences, RuleSet};
use crate::query::QueryError;
use crate::sql::rewrite::{Kind, Rel, Rewriter, pid_index};

pub use key_domain::{DpKey, KeyDomain};
pub use patient_shape::PatientShape;

/// The aggregates DP mode answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureKind {
    /// COUNT(*) or COUNT(expr).
    Count,
    /// COUNT(DISTINCT pid).
    CountDistinctPid,
    Sum,
    Avg,
}

impl MeasureKind {
    pub fn name(self) -> &'static str {
        match self {
            MeasureKind::Count => "count",
            MeasureKind::CountDistinctPid => "count_distinct_pid",
            MeasureKind::Sum => "sum",
            MeasureKind::Avg => "avg",
        }
    }
}

/// One aggregate of the protected aggregation and where the bounded plan computes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Measure {
    pub kind: MeasureKind,
    /// Output field name of the aggregate in the user's plan.
    pub name: String,
    /// `[lo, hi]` clamp (SUM, AVG).
    pub clamp: Option<(f64, f64)>,
    /// Column of the bounded plan: the count, distinct count or (centred) sum.
    pub value: usize,
    /// AVG: column of the bounded plan with the count of values.
    pub count: Option<usize>,
}

/// Output of the DP rewrite.
#[derive(Debug, Clone)]
pub struct DpPlan {
    /// Output: the group keys (in order), then the measure columns, then the number of
    /// (patient, group) pairs kept (the patient count behind the release threshold).
    pub bounded: LogicalPlan,
    pub keys: Vec<DpKey>,
    pub measures: Vec<Measure>,
    /// Column of the bounded plan with the distinct patients per group after bounding.
    pub patients: usize,
    /// A measure that is exactly the distinct patients of the group (unfiltered COUNT
    /// DISTINCT of the privacy unit): its noisy value doubles as the release-threshold count.
    pub gate_measure: Option<usize>,
    /// The user's aggregation (its schema is what the release rebuilds).
    pub aggregate: Aggregate,
    /// The user's plan above and including the aggregation.
    pub top: LogicalPlan,
    /// For every output column of `top`: the aggregate output columns it is computed from.
    pub lineage: Vec<BTreeSet<usize>>,
    /// For every output column of `top`: the aggregate output column it passes unchanged.
    pub passes: Vec<Option<usize>>,
    /// One group / one row per patient, as the data guarantees (`patient_shape`).
    pub shape: PatientShape,
}

/// The patient rows the protected aggregation reads, as the suppression rewriter tagged
/// them (privacy unit, public-domain and catalogue origin of every column).
struct Rows {
    rel: Rel,
    /// Column of `rel` holding the relation's own privacy unit.
    pid: usize,
    /// What the rows guarantee per patient (no bounding needed where they do).
    shape: PatientShape,
}

fn unsupported(msg: String) -> QueryError {
    QueryError::UnsupportedQuery { message: msg }
}

const SUPPORTED: &str = "DP mode answers one aggregation over patient rows with COUNT(*), COUNT(col), COUNT(DISTINCT pid), SUM(col) or AVG(col) (col with catalogue bounds), GROUP BY public-domain columns or CASE buckets, and ORDER BY / LIMIT / HAVING on the result / DP 方式で回答できるのは、患者行に対する 1 回の集計（COUNT(*)、COUNT(列)、COUNT(DISTINCT pid)、範囲が定義された列の SUM・AVG、公開ドメイン列または CASE による GROUP BY）と、その結果への ORDER BY・LIMIT・HAVING です";

/// Plan a DP query: find the protected aggregation, check it, and build its bounded plan.
/// `defences` are the rules' second-line defences (the relation walk below the aggregation
/// refuses ordered selection and cross-patient subqueries exactly as in suppression mode).
pub fn plan(
    user: &LogicalPlan,
    catalog: &Catalog,
    bounds: DpBounds,
    defences: Defences,
    index: Arc<PatientIndex>,
) -> Result<DpPlan, QueryError> {
    bounding::check(bounds)?;
    let aggregate = post_processing::find_aggregate(user)?.clone();
    let (lineage, passes) = post_processing::lineage(user)?;
    let rows = patient_rows(&aggregate, catalog, defences)?;
    let shape = rows.shape;
    let keys = key_domain::keys(&aggregate, &rows)?;
    let specs = clamping::specs(&aggregate, &rows, catalog)?;
    let bounded = bounding::bounded(&aggregate, &rows, &specs, bounds, index)?;
    let gate_measure = specs
        .iter()
        .position(|s| s.kind == MeasureKind::CountDistinctPid && s.filter.is_none() && s.primary);
    Ok(DpPlan {
        bounded: bounded.plan,
        keys,
        measures: bounded.measures,
        patients: bounded.patients,
        gate_measure,
        aggregate,
        top: user.clone(),
        lineage,
        passes,
        shape,
    })
}

/// Tag the aggregation's input with the suppression rewriter and check that it is plain
/// patient rows: no aggregation below (one per query) and not only reference tables. The
/// walk applies the same `defences` as suppression mode: no LIMIT/OFFSET or window across
/// patients below the aggregation, and only per-patient `pid IN (SELECT pid …)` subqueries
/// over patient rows (an EXISTS or a value from other patients' rows could move every row
/// at once, far beyond the per-patient sensitivity the noise is calibrated to).
fn patient_rows(
    aggregate: &Aggregate,
    catalog: &Catalog,
    defences: Defences,
) -> Result<Rows, QueryError> {
    // DP releases no contributor sets (DP composes); a guard the walk might add makes the
    // query refused below, before anything runs, so an empty index is never consulted.
    let unindexed = Arc::new(PatientIndex::from_pids("dp", vec![])?);
    let rules = RuleSet {
        defences,
        ..RuleSet::off()
    };
    let mut rw = Rewriter::new(catalog, rules, unindexed);
    let rel = rw.rel(&aggregate.input)?;
    if !rw.guards.is_empty() || rw.inner_sealed || matches!(rel.kind, Kind::Protected { .. }) {
        return Err(unsupported(format!(
            "nested aggregations over patients are not supported in DP mode (one aggregation per query; pre-aggregation GROUP BY pid is allowed). {SUPPORTED}"
        )));
    }
    if rel.kind != Kind::Rows {
        return Err(unsupported(format!(
            "this aggregation reads no patient rows (only reference tables); browse reference tables in the catalogue. {SUPPORTED}"
        )));
    }
    let pid = pid_index(&rel)?;
    let mut rows = Rows {
        rel,
        pid,
        shape: PatientShape::default(),
    };
    rows.shape = patient_shape::shape(&rw, aggregate, &rows, catalog);
    Ok(rows)
}
