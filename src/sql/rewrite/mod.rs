//! SQL stage 3, the privacy rewrite (suppression mode): guarded logical plan → a plan
//! whose every released cell carries its contributor counts, plus a [`Release`] telling
//! the disclosure check which hidden columns guard which released column.
//!
//! Every plan node is tagged (Qrlew-style property lattice):
//! - [`Kind::Public`]: reference data, or results that are already safe (sealed);
//! - [`Kind::Rows`]: patient rows; they carry the privacy unit `pid` (kept as a hidden
//!   column when the query drops it) and any facility columns;
//! - [`Kind::Protected`]: an aggregation over patients whose cells each carry hidden
//!   contributor counts (distinct `pid`s whose rows feed that cell after FILTER and CASE,
//!   NULLs excluded, zero excluded for SUM), distinct facility counts, and for SUM the
//!   per-patient top-two / total for the dominance rules.
//!
//! Only Public and Protected plans are released; Rows at the top is `row_level_output`.
//! Whenever a Protected result is consumed by anything other than a projection, alias,
//! limit or the release itself (filters, sorts, windows, joins, unions, outer aggregates,
//! subqueries), it is first *sealed*: the disclosure rules are applied inside the plan, so
//! rows with a failing cell are removed (and the other cells guarded) before any further
//! computation can see them. This closes HAVING/ORDER BY/window/nested-aggregate oracles.
//!
//! Guarantees: subqueries are rewritten too (every node is visited by this recursive
//! rewrite, and expression subqueries are analysed explicitly); joins between patient
//! tables must be equi-joins on `pid`; a patient relation may never filter a public one.
//!
//! One rule per plan-node kind, each in its own file (as DataFusion keeps one optimizer
//! rule per file): [`Rewriter::rel`] only dispatches. The shared lineage helpers are in
//! `lineage`, the description of what is released in `release`.

mod aggregate;
mod allow_list;
mod distinct;
mod dominance;
pub mod dp;
mod filter;
mod join;
mod lineage;
mod min_max;
mod over_cells;
mod per_patient;
mod projection;
mod release;
mod scan;
mod seal;
mod set_sizes;
mod sort_limit;
mod subquery;
mod union;
mod window;

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::logical_expr::{AggregateUDF, LogicalPlan};

use crate::catalog::Catalog;
use crate::engine::PatientIndex;
use crate::engine::contributors::Contributors;
use crate::privacy::rules::RuleSet;
use crate::query::QueryError;

use lineage::public_rel;
pub(crate) use lineage::{col_at, has_subquery, pid_index, strip_alias};
pub use seal::pass_expr;

/// What the node's rows are, privacy-wise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Public,
    Rows,
    Protected { sealed: bool },
}

/// Hidden helper columns guarding one aggregate cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    /// The contributor set: the patients whose rows feed the cell, as a serialised roaring
    /// bitmap over the extract's patient index (`engine::contributors`); its size is the
    /// distinct-patient count the threshold rule reads.
    pub n: String,
    /// Distinct contributing facilities, one per facility column feeding the cell.
    pub facilities: Vec<String>,
    /// Dominance data for SUM cells.
    pub dominance: Option<Dominance>,
}

/// Per-patient SUM contributions of one cell: largest, two largest together, total, smallest.
#[derive(Debug, Clone, PartialEq)]
pub struct Dominance {
    pub top1: String,
    pub top2: String,
    pub total: String,
    pub min: String,
}

/// Lineage of one output column.
#[derive(Debug, Clone, Default)]
pub(crate) struct Col {
    /// Added by the rewrite; never released.
    hidden: bool,
    /// This column is the privacy unit.
    pid: bool,
    /// The value is a function of the patient alone: the pid, a column of a table with
    /// one row per patient, a per-patient aggregate, or a deterministic expression over
    /// only such columns. A key of this kind puts each patient in exactly one group.
    unit_level: bool,
    /// A facility-identifying column.
    facility: bool,
    /// Values come only from public domains (safe to show as keys).
    public: bool,
    /// Derived only from group keys (not from aggregate values).
    key: bool,
    /// A COUNT value (subject to rounding).
    count_like: bool,
    /// Guards (indices into the rewriter's arena) whose failure suppresses this column.
    guards: BTreeSet<usize>,
    /// Of those, the guards whose contributor sets this column's values are computed from
    /// (an aggregate cell's own guard; every such guard of the cells an expression reads):
    /// what secondary suppression compares and the release ledger records.
    sets: BTreeSet<usize>,
    /// Where the values come from, when that is known exactly (a bare catalogue column
    /// or a literal); the disclosure check enumerates the domain from it for padding.
    source: Option<KeySource>,
    /// `(aggregation id, key position)` when this column is, unchanged, a group key of a
    /// protected aggregation.
    group_of: Option<(usize, usize)>,
}

/// The exact origin of a released key column's values.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    /// A bare column of a catalogue table.
    Column { table: String, column: String },
    /// A constant.
    Literal(datafusion::common::ScalarValue),
}

/// How the released rows relate to the group keys of the protected aggregation.
#[derive(Debug, Clone, PartialEq)]
pub enum Grouping {
    /// Nothing protected is released (reference-only results): no cell can fail.
    Public,
    /// An aggregation without GROUP BY: exactly one row always exists.
    Ungrouped,
    /// Every group key of the protected aggregation is released as a bare column (or a
    /// literal), so the rows can be padded to the product of the key domains.
    Keys,
    /// Anything else (computed or hidden keys, several aggregations): rows with a failing
    /// cell cannot be padded and must be dropped.
    Opaque,
}

/// A rewritten node with its tag and per-column lineage (aligned with its schema).
#[derive(Debug, Clone)]
pub(crate) struct Rel {
    plan: LogicalPlan,
    kind: Kind,
    cols: Vec<Col>,
    /// A group key of the protected aggregate below is not public-domain (even if the
    /// query no longer shows it): failing rows must be dropped, not shown with nulls.
    drop_on_fail: bool,
}

/// One released column as the disclosure check sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseColumn {
    /// Index in the executed plan's output.
    pub index: usize,
    pub name: String,
    pub key: bool,
    pub public: bool,
    pub count_like: bool,
    pub guards: Vec<usize>,
    /// The guards whose contributor sets the column's numbers are computed from.
    pub sets: Vec<usize>,
    /// Exact origin of the values (bare catalogue column or literal), if known.
    pub source: Option<KeySource>,
}

/// What the disclosure check needs to know about the executed plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub columns: Vec<ReleaseColumn>,
    pub guards: Vec<Guard>,
    /// Drop (rather than null) rows with a failing cell: some group key is not public.
    pub drop_on_fail: bool,
    /// Some inner aggregate was sealed in-plan (its failing cells were nulled/removed
    /// before an outer computation); reported in the notes.
    pub inner_sealed: bool,
    /// Whether the rows can be padded to their key domains (see [`Grouping`]).
    pub grouping: Grouping,
    /// The query orders its released rows (a top-level ORDER BY); otherwise the check
    /// sorts them by their values.
    pub ordered: bool,
    /// Sealed inner aggregations whose cells leave the plan only through a public result
    /// (a UNION of aggregates, an outer aggregate, a join, a subquery): each as a plan of
    /// its own, for the differencing check (see [`SideRelease`]).
    pub side: Vec<SideRelease>,
}

/// A sealed inner aggregation whose cells feed a public result. The numbers released
/// are computed from its cells, so its cells count as released for differencing: the
/// check runs `plan` (the sealed aggregation, failing rows already removed) and compares
/// the contributor sets in `sets` like any released cell's.
#[derive(Debug, Clone, PartialEq)]
pub struct SideRelease {
    pub plan: LogicalPlan,
    /// Names of the set columns (in `plan`'s output) the visible cells are computed from.
    pub sets: Vec<String>,
    /// The plan refers to an outer query (a correlated subquery) and cannot run alone.
    pub correlated: bool,
}

/// The rewritten plan and its release description.
#[derive(Debug, Clone)]
pub struct Rewritten {
    pub plan: LogicalPlan,
    pub release: Release,
}

/// Rewrite a guarded, hardened plan for suppression mode.
pub fn rewrite(
    plan: &LogicalPlan,
    catalog: &Catalog,
    rules: &RuleSet,
    index: Arc<PatientIndex>,
) -> Result<Rewritten, QueryError> {
    let mut rw = Rewriter::new(catalog, rules.clone(), index);
    let rel = rw.rel(plan)?;
    if rel.kind == Kind::Rows {
        return Err(QueryError::RowLevelOutput {
            message: "the query releases patient rows; aggregate with GROUP BY and COUNT(DISTINCT pid), SUM, AVG … / 患者単位の行は出力できません。GROUP BY と COUNT(DISTINCT pid) などで集計してください".into(),
        });
    }
    let mut release = rw.release(&rel);
    release.ordered = ordered(plan);
    Ok(Rewritten {
        plan: rel.plan,
        release,
    })
}

/// Whether the top of the plan (below projections, aliases and limits) is a sort.
fn ordered(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Sort(_) => true,
        LogicalPlan::Projection(_) | LogicalPlan::SubqueryAlias(_) | LogicalPlan::Limit(_) => {
            plan.inputs().first().is_some_and(|p| ordered(p))
        }
        _ => false,
    }
}

pub(crate) struct Rewriter<'a> {
    catalog: &'a Catalog,
    rules: RuleSet,
    /// `__kura_contributors` over the extract's patient index.
    contributors: Arc<AggregateUDF>,
    counter: usize,
    guards: Vec<Guard>,
    inner_sealed: bool,
    /// Sealed aggregations published into public results (see [`SideRelease`]).
    side: Vec<SideRelease>,
    /// Protected aggregations in rewrite order: (first guard index, number of group keys).
    /// An aggregation's guards are pushed contiguously, so a guard belongs to the last
    /// aggregation whose first guard is ≤ it.
    aggs: Vec<(usize, usize)>,
}

fn unsupported(msg: &str) -> QueryError {
    QueryError::UnsupportedQuery {
        message: msg.to_string(),
    }
}

impl<'a> Rewriter<'a> {
    pub(crate) fn new(catalog: &'a Catalog, rules: RuleSet, index: Arc<PatientIndex>) -> Self {
        Rewriter {
            catalog,
            rules,
            contributors: Contributors::udaf(index),
            counter: 0,
            guards: Vec::new(),
            inner_sealed: false,
            side: Vec::new(),
            aggs: Vec::new(),
        }
    }

    pub(crate) fn fresh(&mut self, what: &str) -> String {
        self.counter += 1;
        format!("__kura_{what}_{}", self.counter)
    }

    /// Rewrite one plan node (and, through the rule of its kind, everything below it).
    pub(crate) fn rel(&mut self, plan: &LogicalPlan) -> Result<Rel, QueryError> {
        use LogicalPlan as P;
        match plan {
            P::TableScan(scan) => self.scan(plan, scan),
            P::Values(_) | P::EmptyRelation(_) => Ok(public_rel(plan.clone())),
            P::Projection(p) => self.projection(p),
            P::SubqueryAlias(a) => self.subquery_alias(a),
            P::Filter(f) => self.filter(f),
            P::Sort(_) | P::Limit(_) => self.sort_limit(plan),
            P::Distinct(d) => self.distinct(plan, d),
            P::Aggregate(a) => self.aggregate(a),
            P::Window(w) => self.window(w),
            P::Join(j) => self.join(plan, j),
            P::Union(u) => self.union(u),
            P::Subquery(s) => self.rel(&s.subquery),
            other => Err(QueryError::internal(
                "privacy rewrite",
                format!("unexpected plan node {}", other.display()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::datasource::MemTable;
    use datafusion::execution::context::SessionContext;

    use super::*;
    use crate::sql::guard::{harden, plan_guarded};

    async fn rewritten(sql: &str) -> Result<Rewritten, QueryError> {
        let catalog = Catalog::embedded().unwrap();
        let ctx = SessionContext::new();
        for t in ["patient", "nanbyo_survey", "disease"] {
            let schema = catalog.table(t).unwrap().arrow_schema();
            ctx.register_table(
                t,
                Arc::new(MemTable::try_new(schema, vec![vec![]]).unwrap()),
            )
            .unwrap();
        }
        let plan = harden(
            plan_guarded(&ctx, sql, &catalog).await?,
            &crate::privacy::rules::Defences::ALL,
        )?;
        let index = Arc::new(PatientIndex::from_pids("test", vec![]).unwrap());
        rewrite(&plan, &catalog, &RuleSet::off(), index)
    }

    #[tokio::test]
    async fn protected_aggregate_tags_keys_and_cells() {
        let r = rewritten("SELECT sex, count(*) AS n, sum(severity) AS s FROM patient JOIN nanbyo_survey USING (pid) GROUP BY sex")
            .await
            .unwrap();
        let cols = &r.release.columns;
        assert_eq!(
            cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["sex", "n", "s"]
        );
        assert!(cols[0].key && cols[0].public);
        assert!(!cols[1].key && cols[1].count_like && !cols[1].guards.is_empty());
        // The SUM cell has its own guard (non-zero contributors) besides the group guard,
        // and a facility count because nanbyo_survey carries facility_id.
        assert_eq!(cols[2].guards.len(), 2);
        let own = cols[2].guards.iter().copied().max().unwrap();
        assert_eq!(r.release.guards[own].facilities.len(), 1);
        // All helper columns are in the plan output, none is released.
        let names: Vec<String> = r
            .plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert!(
            names.iter().filter(|n| n.starts_with("__kura_")).count() >= 3,
            "{names:?}"
        );
    }

    #[tokio::test]
    async fn dropped_pid_is_carried_hidden_and_rows_are_refused() {
        let e = rewritten("SELECT sex FROM patient").await.unwrap_err();
        assert_eq!(e.code(), "row_level_output");
        let r = rewritten("SELECT s, count(*) FROM (SELECT sex AS s FROM patient) t GROUP BY s")
            .await
            .unwrap();
        assert_eq!(r.release.columns.len(), 2);
        assert!(!r.release.drop_on_fail);
        let r = rewritten("SELECT count(*) FROM patient GROUP BY birth_year")
            .await
            .unwrap();
        assert!(
            r.release.drop_on_fail,
            "a hidden non-public key still drops failing rows"
        );
    }

    #[tokio::test]
    async fn reference_only_queries_are_public() {
        let r = rewritten("SELECT disease_group, count(*) FROM disease GROUP BY disease_group")
            .await
            .unwrap();
        assert!(r.release.columns.iter().all(|c| c.guards.is_empty()));
        assert!(r.release.guards.is_empty());
    }
}
