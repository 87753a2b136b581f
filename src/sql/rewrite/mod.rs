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

mod aggregate;
pub mod dp;
mod seal;

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, JoinType};
use datafusion::logical_expr::{
    Distinct, Expr, LogicalPlan, Projection, SubqueryAlias, Union, Window,
};
use datafusion::logical_expr::{Filter, utils::split_conjunction};

use crate::catalog::{Catalog, TableKind};
use crate::privacy::rules::RuleSet;
use crate::query::QueryError;

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
    /// Distinct contributing patients.
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
) -> Result<Rewritten, QueryError> {
    let mut rw = Rewriter {
        catalog,
        rules: rules.clone(),
        counter: 0,
        guards: Vec::new(),
        inner_sealed: false,
        aggs: Vec::new(),
    };
    let rel = rw.rel(plan)?;
    if rel.kind == Kind::Rows {
        return Err(QueryError::RowLevelOutput {
            message: "the query releases patient rows; aggregate with GROUP BY and COUNT(DISTINCT pid), SUM, AVG … / 患者単位の行は出力できません。GROUP BY と COUNT(DISTINCT pid) などで集計してください".into(),
        });
    }
    let columns = rel
        .cols
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.hidden)
        .map(|(i, c)| ReleaseColumn {
            index: i,
            name: rel.plan.schema().field(i).name().clone(),
            key: c.key,
            public: c.public,
            count_like: c.count_like,
            guards: if rel.kind == Kind::Public {
                vec![]
            } else {
                c.guards.iter().copied().collect()
            },
            source: c.source.clone(),
        })
        .collect();
    let grouping = if rel.kind == Kind::Public {
        Grouping::Public
    } else {
        rw.grouping(&rel)
    };
    Ok(Rewritten {
        plan: rel.plan,
        release: Release {
            columns,
            guards: rw.guards,
            drop_on_fail: rel.kind != Kind::Public && rel.drop_on_fail,
            inner_sealed: rw.inner_sealed,
            grouping,
        },
    })
}

pub(crate) struct Rewriter<'a> {
    catalog: &'a Catalog,
    rules: RuleSet,
    counter: usize,
    guards: Vec<Guard>,
    inner_sealed: bool,
    /// Protected aggregations in rewrite order: (first guard index, number of group keys).
    /// An aggregation's guards are pushed contiguously, so a guard belongs to the last
    /// aggregation whose first guard is ≤ it.
    aggs: Vec<(usize, usize)>,
}

pub(crate) fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::internal("privacy rewrite", e.to_string())
}

fn unsupported(msg: &str) -> QueryError {
    QueryError::UnsupportedQuery {
        message: msg.to_string(),
    }
}

/// A qualified reference to field `i` of a plan's output.
pub(crate) fn col_at(plan: &LogicalPlan, i: usize) -> Expr {
    Expr::Column(Column::from(plan.schema().qualified_field(i)))
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

/// The column an expression is, if it is a plain (possibly aliased) column reference.
fn plain_col(e: &Expr) -> Option<&Column> {
    match e {
        Expr::Alias(a) => plain_col(&a.expr),
        Expr::Column(c) => Some(c),
        _ => None,
    }
}

fn has_subquery(e: &Expr) -> bool {
    e.exists(|x| {
        Ok(matches!(
            x,
            Expr::ScalarSubquery(_)
                | Expr::InSubquery(_)
                | Expr::Exists(_)
                | Expr::SetComparison(_)
        ))
    })
    .unwrap_or(true)
}

/// Input column indices an expression reads.
fn refs(e: &Expr, schema: &DFSchema) -> Result<Vec<usize>, QueryError> {
    e.column_refs()
        .into_iter()
        .map(|c| schema.index_of_column(c).map_err(internal))
        .collect()
}

impl Rewriter<'_> {
    pub(crate) fn fresh(&mut self, what: &str) -> String {
        self.counter += 1;
        format!("__kura_{what}_{}", self.counter)
    }

    /// Which protected aggregation a guard belongs to.
    fn agg_of(&self, g: usize) -> Option<usize> {
        self.aggs.iter().rposition(|&(first, _)| first <= g)
    }

    /// Classify the released rows of a protected result (see [`Grouping`]).
    fn grouping(&self, rel: &Rel) -> Grouping {
        let visible: Vec<&Col> = rel.cols.iter().filter(|c| !c.hidden).collect();
        let aggs: BTreeSet<Option<usize>> = visible
            .iter()
            .flat_map(|c| c.guards.iter().map(|&g| self.agg_of(g)))
            .collect();
        let Some(&Some(a)) = aggs.iter().next().filter(|_| aggs.len() == 1) else {
            return if aggs.is_empty() {
                Grouping::Public
            } else {
                Grouping::Opaque
            };
        };
        let nkeys = self.aggs[a].1;
        let mut seen = BTreeSet::new();
        for c in visible.iter().filter(|c| c.key) {
            match (c.group_of, &c.source) {
                (Some((ga, j)), Some(_)) if ga == a => {
                    seen.insert(j);
                }
                (None, Some(KeySource::Literal(_))) => {}
                _ => return Grouping::Opaque,
            }
        }
        if nkeys == 0 {
            Grouping::Ungrouped
        } else if seen.len() == nkeys {
            Grouping::Keys
        } else {
            Grouping::Opaque
        }
    }

    /// Lineage of a derived expression over `input`.
    fn derive(&self, e: &Expr, input: &Rel) -> Result<Col, QueryError> {
        let schema = input.plan.schema();
        let r = refs(e, schema)?;
        let sub = has_subquery(e);
        let plain = plain_col(e)
            .map(|c| schema.index_of_column(c).map_err(internal))
            .transpose()?;
        let mut col = Col {
            public: !sub && r.iter().all(|&i| input.cols[i].public),
            key: !sub && r.iter().all(|&i| input.cols[i].key),
            ..Col::default()
        };
        for &i in &r {
            col.guards.extend(input.cols[i].guards.iter().copied());
        }
        if let Some(i) = plain {
            col.pid = input.cols[i].pid;
            col.facility = input.cols[i].facility;
            col.count_like = input.cols[i].count_like;
            col.source = input.cols[i].source.clone();
            col.group_of = input.cols[i].group_of;
        } else if !sub && let Expr::Literal(v, _) = strip_alias(e) {
            col.source = Some(KeySource::Literal(v.clone()));
        }
        if input.kind == Kind::Rows {
            col.key = false;
        }
        Ok(col)
    }

    pub(crate) fn rel(&mut self, plan: &LogicalPlan) -> Result<Rel, QueryError> {
        use LogicalPlan as P;
        match plan {
            P::TableScan(scan) => {
                let name = scan.table_name.table();
                let table = self
                    .catalog
                    .table(name)
                    .ok_or_else(|| internal(format!("table {name} not in catalogue")))?;
                let cols = scan
                    .projected_schema
                    .fields()
                    .iter()
                    .map(|f| {
                        let c = table.column(f.name());
                        Col {
                            pid: c.is_some_and(|c| c.privacy_unit),
                            facility: c.is_some_and(|c| c.facility),
                            public: c.is_some_and(|c| c.public_domain),
                            key: true,
                            source: c.map(|c| KeySource::Column {
                                table: table.name.clone(),
                                column: c.name.clone(),
                            }),
                            ..Col::default()
                        }
                    })
                    .collect();
                let kind = match table.kind {
                    TableKind::Patient => Kind::Rows,
                    TableKind::Reference => Kind::Public,
                };
                Ok(Rel {
                    plan: plan.clone(),
                    kind,
                    cols,
                    drop_on_fail: false,
                })
            }
            P::Values(_) | P::EmptyRelation(_) => Ok(Rel {
                plan: plan.clone(),
                kind: Kind::Public,
                cols: plan
                    .schema()
                    .fields()
                    .iter()
                    .map(|_| Col {
                        public: true,
                        key: true,
                        ..Col::default()
                    })
                    .collect(),
                drop_on_fail: false,
            }),
            P::Projection(p) => {
                let input = self.rel(&p.input)?;
                let exprs = self.subqueries(p.expr.clone(), &input)?;
                self.project(input, exprs)
            }
            P::Filter(f) => {
                let mut input = self.rel(&f.input)?;
                if input.kind == (Kind::Protected { sealed: false }) {
                    input = self.seal(input)?;
                }
                let pred = self
                    .subqueries(vec![f.predicate.clone()], &input)?
                    .pop()
                    .expect("one predicate");
                let plan = LogicalPlan::Filter(
                    Filter::try_new(pred, Arc::new(input.plan)).map_err(internal)?,
                );
                Ok(Rel { plan, ..input })
            }
            P::Sort(_) | P::Limit(_) => {
                let mut input = self.rel(plan.inputs()[0])?;
                // A sort only nulls failing cells (the final check re-orders and pads those
                // rows); a limit must not pick rows by a failing cell, so it seals fully.
                let sort_only = matches!(plan, P::Sort(s) if s.fetch.is_none());
                if input.kind == (Kind::Protected { sealed: false }) {
                    input = if sort_only {
                        self.seal_for_sort(input)?
                    } else {
                        self.seal(input)?
                    };
                }
                let exprs = self.subqueries(plan.expressions(), &input)?;
                let new = plan
                    .with_new_exprs(exprs, vec![input.plan])
                    .map_err(internal)?;
                Ok(Rel { plan: new, ..input })
            }
            P::SubqueryAlias(a) => {
                let input = self.rel(&a.input)?;
                let new = SubqueryAlias::try_new(Arc::new(input.plan), a.alias.clone())
                    .map_err(internal)?;
                Ok(Rel {
                    plan: LogicalPlan::SubqueryAlias(new),
                    ..input
                })
            }
            P::Subquery(s) => self.rel(&s.subquery),
            P::Distinct(d) => {
                let (input_plan, on) = match d {
                    Distinct::All(i) => (i, false),
                    Distinct::On(o) => (&o.input, true),
                };
                let input = self.rel(input_plan)?;
                match input.kind {
                    Kind::Rows if on => Err(unsupported(
                        "DISTINCT ON over patient rows is not supported; use GROUP BY / 患者行への DISTINCT ON には対応していません。GROUP BY を使ってください",
                    )),
                    Kind::Rows => {
                        // SELECT DISTINCT over patients is a GROUP BY without aggregates: each
                        // released row is a group that needs k patients.
                        let group: Vec<Expr> = (0..input.cols.len())
                            .filter(|&i| !input.cols[i].hidden)
                            .map(|i| col_at(&input.plan, i))
                            .collect();
                        self.aggregate(input, group, vec![])
                    }
                    _ => {
                        let input = self.publish(input)?;
                        let new = plan
                            .with_new_exprs(plan.expressions(), vec![input.plan])
                            .map_err(internal)?;
                        Ok(public_rel(new))
                    }
                }
            }
            P::Aggregate(a) => {
                let input = self.rel(&a.input)?;
                let group = self.subqueries(a.group_expr.clone(), &input)?;
                let aggr = self.subqueries(a.aggr_expr.clone(), &input)?;
                match input.kind {
                    Kind::Rows => self.aggregate(input, group, aggr),
                    _ => {
                        let input = self.publish(input)?;
                        let agg = datafusion::logical_expr::Aggregate::try_new(
                            Arc::new(input.plan),
                            group,
                            aggr,
                        )
                        .map_err(internal)?;
                        Ok(public_rel(LogicalPlan::Aggregate(agg)))
                    }
                }
            }
            P::Window(w) => {
                let mut input = self.rel(&w.input)?;
                if input.kind == (Kind::Protected { sealed: false }) {
                    input = self.seal(input)?;
                }
                let exprs = self.subqueries(w.window_expr.clone(), &input)?;
                if input.kind == Kind::Rows {
                    for e in &exprs {
                        if !self.partitioned_by_pid(e, &input)? {
                            return Err(unsupported(
                                "window functions over patient rows must be PARTITION BY pid; otherwise aggregate first and apply the window to the aggregate / 患者行へのウィンドウ関数は PARTITION BY pid が必要です。先に集計してください",
                            ));
                        }
                    }
                }
                let n = exprs.len();
                let new = Window::try_new(exprs, Arc::new(input.plan)).map_err(internal)?;
                let mut cols = input.cols;
                cols.extend((0..n).map(|_| Col::default()));
                Ok(Rel {
                    plan: LogicalPlan::Window(new),
                    kind: input.kind,
                    cols,
                    drop_on_fail: input.drop_on_fail,
                })
            }
            P::Join(j) => {
                let left = self.rel(&j.left)?;
                let right = self.rel(&j.right)?;
                let left = self.seal_if_protected(left)?;
                let right = self.seal_if_protected(right)?;
                let (keep_l, keep_r) = match j.join_type {
                    JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => (true, false),
                    JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
                        (false, true)
                    }
                    _ => (true, true),
                };
                let (lr, rr) = (left.kind == Kind::Rows, right.kind == Kind::Rows);
                if ((lr && !keep_l) || (rr && !keep_r)) && !(lr && rr) {
                    return Err(unsupported(
                        "patient rows may not be used to filter a reference table (semi/anti join, IN/EXISTS); join the other way round / 患者行で参照テーブルを絞り込むことはできません",
                    ));
                }
                if lr && rr && !self.joined_on_pid(j, &left, &right)? {
                    return Err(unsupported(
                        "joins between patient tables must be equi-joins on pid (… JOIN t2 ON t1.pid = t2.pid); other joins mix patients / 患者テーブル同士の結合は pid による等価結合に限られます",
                    ));
                }
                let exprs = plan.expressions();
                let new = plan
                    .with_new_exprs(exprs, vec![left.plan.clone(), right.plan.clone()])
                    .map_err(internal)?;
                let mut cols = Vec::new();
                if keep_l {
                    cols.extend(left.cols.iter().cloned());
                }
                if keep_r {
                    cols.extend(right.cols.iter().cloned());
                }
                while cols.len() < new.schema().fields().len() {
                    cols.push(Col::default()); // mark column of mark joins
                }
                let kind = if (lr && keep_l) || (rr && keep_r) {
                    Kind::Rows
                } else {
                    Kind::Public
                };
                if kind == Kind::Public {
                    for c in &mut cols {
                        c.public = true;
                    }
                }
                Ok(Rel {
                    plan: new,
                    kind,
                    cols,
                    drop_on_fail: false,
                })
            }
            P::Union(u) => {
                let mut branches = Vec::new();
                for i in &u.inputs {
                    let r = self.rel(i)?;
                    branches.push(self.seal_if_protected(r)?);
                }
                if branches.iter().all(|b| b.kind == Kind::Public) {
                    let inputs = branches.into_iter().map(|b| Arc::new(b.plan)).collect();
                    let new = Union::try_new(inputs).map_err(internal)?;
                    return Ok(public_rel(LogicalPlan::Union(new)));
                }
                self.union_rows(branches)
            }
            other => Err(internal(format!(
                "unexpected plan node {}",
                other.display()
            ))),
        }
    }

    fn project(&mut self, input: Rel, mut exprs: Vec<Expr>) -> Result<Rel, QueryError> {
        let mut cols = exprs
            .iter()
            .map(|e| self.derive(e, &input))
            .collect::<Result<Vec<_>, _>>()?;
        match input.kind {
            Kind::Rows => {
                // Keep the unit (and facilities) even when the query drops them: an aggregate
                // above must still count contributors.
                let schema = input.plan.schema().clone();
                let passed: BTreeSet<usize> = exprs
                    .iter()
                    .filter_map(plain_col)
                    .filter_map(|c| schema.index_of_column(c).ok())
                    .collect();
                let pid = pid_index(&input)?;
                if !cols.iter().any(|c| c.pid) {
                    let name = self.fresh("pid");
                    exprs.push(col_at(&input.plan, pid).alias(name));
                    cols.push(Col {
                        hidden: true,
                        pid: true,
                        ..Col::default()
                    });
                }
                for (i, c) in input.cols.iter().enumerate() {
                    if c.facility && !passed.contains(&i) {
                        let name = self.fresh("fac");
                        exprs.push(col_at(&input.plan, i).alias(name));
                        cols.push(Col {
                            hidden: true,
                            facility: true,
                            ..Col::default()
                        });
                    }
                }
            }
            Kind::Protected { .. } => {
                for (i, c) in input.cols.iter().enumerate() {
                    if c.hidden {
                        exprs.push(col_at(&input.plan, i));
                        cols.push(c.clone());
                    }
                }
            }
            Kind::Public => {}
        }
        let plan = LogicalPlan::Projection(
            Projection::try_new(exprs, Arc::new(input.plan)).map_err(internal)?,
        );
        Ok(Rel {
            plan,
            kind: input.kind,
            cols,
            drop_on_fail: input.drop_on_fail,
        })
    }

    fn partitioned_by_pid(&self, e: &Expr, input: &Rel) -> Result<bool, QueryError> {
        let mut w = e;
        while let Expr::Alias(a) = w {
            w = &a.expr;
        }
        let Expr::WindowFunction(wf) = w else {
            return Ok(false);
        };
        for p in &wf.params.partition_by {
            if let Some(c) = plain_col(p) {
                let i = input.plan.schema().index_of_column(c).map_err(internal)?;
                if input.cols[i].pid {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn joined_on_pid(
        &self,
        j: &datafusion::logical_expr::Join,
        left: &Rel,
        right: &Rel,
    ) -> Result<bool, QueryError> {
        let is_pid = |e: &Expr, r: &Rel| -> bool {
            plain_col(e)
                .and_then(|c| r.plan.schema().index_of_column(c).ok())
                .is_some_and(|i| r.cols[i].pid)
        };
        for (l, r) in &j.on {
            if is_pid(l, left) && is_pid(r, right) {
                return Ok(true);
            }
        }
        if let Some(f) = &j.filter {
            for c in split_conjunction(f) {
                if let Expr::BinaryExpr(b) = c
                    && b.op == datafusion::logical_expr::Operator::Eq
                    && ((is_pid(&b.left, left) && is_pid(&b.right, right))
                        || (is_pid(&b.right, left) && is_pid(&b.left, right)))
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// UNION with patient branches: align every branch to `visible…, pid, facilities…`,
    /// with NULL pid for public branches so padding rows never count as contributors.
    fn union_rows(&mut self, branches: Vec<Rel>) -> Result<Rel, QueryError> {
        let nfac = branches
            .iter()
            .map(|b| {
                b.cols
                    .iter()
                    .filter(|c| c.facility && c.hidden)
                    .count()
                    .max(b.cols.iter().filter(|c| c.facility).count())
            })
            .max()
            .unwrap_or(0);
        let pid_name = self.fresh("pid");
        let fac_names: Vec<String> = (0..nfac).map(|_| self.fresh("fac")).collect();
        let nvis = branches[0].cols.iter().filter(|c| !c.hidden).count();
        let mut public = vec![true; nvis];
        let mut inputs = Vec::new();
        for b in &branches {
            let vis: Vec<usize> = (0..b.cols.len()).filter(|&i| !b.cols[i].hidden).collect();
            if vis.len() != nvis {
                return Err(internal("union branches differ in width"));
            }
            let mut exprs: Vec<Expr> = vis.iter().map(|&i| col_at(&b.plan, i)).collect();
            for (k, &i) in vis.iter().enumerate() {
                public[k] &= b.cols[i].public;
            }
            let null_utf8 = || Expr::Literal(datafusion::common::ScalarValue::Utf8(None), None);
            if b.kind == Kind::Rows {
                exprs.push(col_at(&b.plan, pid_index(b)?).alias(&pid_name));
            } else {
                exprs.push(null_utf8().alias(&pid_name));
            }
            let facs: Vec<usize> = (0..b.cols.len()).filter(|&i| b.cols[i].facility).collect();
            for (k, name) in fac_names.iter().enumerate() {
                match facs.get(k) {
                    Some(&i) if b.kind == Kind::Rows => exprs.push(col_at(&b.plan, i).alias(name)),
                    _ => exprs.push(null_utf8().alias(name)),
                }
            }
            let p = Projection::try_new(exprs, Arc::new(b.plan.clone())).map_err(internal)?;
            inputs.push(Arc::new(LogicalPlan::Projection(p)));
        }
        let new = Union::try_new_with_loose_types(inputs).map_err(internal)?;
        let mut cols: Vec<Col> = public
            .into_iter()
            .map(|p| Col {
                public: p,
                ..Col::default()
            })
            .collect();
        cols.push(Col {
            hidden: true,
            pid: true,
            ..Col::default()
        });
        for _ in 0..nfac {
            cols.push(Col {
                hidden: true,
                facility: true,
                ..Col::default()
            });
        }
        Ok(Rel {
            plan: LogicalPlan::Union(new),
            kind: Kind::Rows,
            cols,
            drop_on_fail: false,
        })
    }

    fn seal_if_protected(&mut self, r: Rel) -> Result<Rel, QueryError> {
        match r.kind {
            Kind::Protected { .. } => self.publish(r),
            _ => Ok(r),
        }
    }

    /// Rewrite subqueries inside expressions of a node over `input`.
    fn subqueries(&mut self, exprs: Vec<Expr>, input: &Rel) -> Result<Vec<Expr>, QueryError> {
        exprs
            .into_iter()
            .map(|e| {
                let mut err = None;
                let out = e
                    .transform_down(|x| {
                        if err.is_some() {
                            return Ok(Transformed::no(x));
                        }
                        match self.subquery_expr(x, input) {
                            Ok(t) => Ok(t),
                            Err(q) => {
                                err = Some(q);
                                Ok(Transformed::no(Expr::Literal(
                                    datafusion::common::ScalarValue::Null,
                                    None,
                                )))
                            }
                        }
                    })
                    .map_err(internal)?
                    .data;
                match err {
                    Some(q) => Err(q),
                    None => Ok(out),
                }
            })
            .collect()
    }

    fn subquery_expr(&mut self, x: Expr, input: &Rel) -> Result<Transformed<Expr>, QueryError> {
        match x {
            Expr::ScalarSubquery(mut sq) => {
                let r = self.rel(&sq.subquery)?;
                sq.subquery = Arc::new(self.subquery_plan(r)?);
                Ok(Transformed::yes(Expr::ScalarSubquery(sq)))
            }
            Expr::Exists(mut ex) => {
                let r = self.rel(&ex.subquery.subquery)?;
                ex.subquery.subquery = Arc::new(self.subquery_plan(r)?);
                Ok(Transformed::yes(Expr::Exists(ex)))
            }
            Expr::SetComparison(mut sc) => {
                let r = self.rel(&sc.subquery.subquery)?;
                sc.subquery.subquery = Arc::new(self.subquery_plan(r)?);
                Ok(Transformed::yes(Expr::SetComparison(sc)))
            }
            Expr::InSubquery(mut ins) => {
                let r = self.rel(&ins.subquery.subquery)?;
                if r.kind == Kind::Rows {
                    // `pid IN (SELECT pid …)` keeps each patient's rows decided by that same
                    // patient's rows, so the unit is preserved; nothing else is.
                    let outer_is_pid = plain_col(&ins.expr)
                        .and_then(|c| input.plan.schema().index_of_column(c).ok())
                        .is_some_and(|i| input.kind == Kind::Rows && input.cols[i].pid);
                    let vis: Vec<usize> =
                        (0..r.cols.len()).filter(|&i| !r.cols[i].hidden).collect();
                    if !(outer_is_pid && vis.len() == 1 && r.cols[vis[0]].pid) {
                        return Err(unsupported(
                            "a subquery over patient rows may only be used as `pid IN (SELECT pid …)`; aggregate it otherwise / 患者行のサブクエリは `pid IN (SELECT pid …)` の形でのみ使えます",
                        ));
                    }
                    ins.subquery.subquery = Arc::new(visible_only(&r)?);
                } else {
                    ins.subquery.subquery = Arc::new(self.subquery_plan(r)?);
                }
                Ok(Transformed::new(
                    Expr::InSubquery(ins),
                    true,
                    datafusion::common::tree_node::TreeNodeRecursion::Jump,
                ))
            }
            other => Ok(Transformed::no(other)),
        }
    }

    fn subquery_plan(&mut self, r: Rel) -> Result<LogicalPlan, QueryError> {
        match r.kind {
            Kind::Rows => Err(unsupported(
                "a subquery over patient rows cannot feed a value or an EXISTS test; aggregate it (its cells then follow the disclosure rules) / 患者行のサブクエリは値や EXISTS に使えません。集計してください",
            )),
            Kind::Public => visible_only(&r),
            Kind::Protected { .. } => Ok(self.publish(r)?.plan),
        }
    }

    /// Seal a protected relation and keep only its visible columns: the result is safe
    /// to compute on further.
    fn publish(&mut self, r: Rel) -> Result<Rel, QueryError> {
        match r.kind {
            Kind::Public => Ok(r),
            Kind::Rows => Err(internal("publish on patient rows")),
            Kind::Protected { .. } => {
                let sealed = if r.kind == (Kind::Protected { sealed: true }) {
                    r
                } else {
                    self.seal(r)?
                };
                self.inner_sealed = true;
                let plan = visible_only(&sealed)?;
                Ok(public_rel(plan))
            }
        }
    }
}

fn pid_index(r: &Rel) -> Result<usize, QueryError> {
    r.cols
        .iter()
        .position(|c| c.pid)
        .ok_or_else(|| internal("patient relation without privacy unit"))
}

fn public_rel(plan: LogicalPlan) -> Rel {
    let n = plan.schema().fields().len();
    Rel {
        plan,
        kind: Kind::Public,
        cols: (0..n)
            .map(|_| Col {
                public: true,
                key: true,
                ..Col::default()
            })
            .collect(),
        drop_on_fail: false,
    }
}

/// Project away hidden columns (keeping qualifiers).
fn visible_only(r: &Rel) -> Result<LogicalPlan, QueryError> {
    if r.cols.iter().all(|c| !c.hidden) {
        return Ok(r.plan.clone());
    }
    let exprs = (0..r.cols.len())
        .filter(|&i| !r.cols[i].hidden)
        .map(|i| col_at(&r.plan, i))
        .collect();
    Ok(LogicalPlan::Projection(
        Projection::try_new(exprs, Arc::new(r.plan.clone())).map_err(internal)?,
    ))
}

#[cfg(test)]
mod tests {
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
        let plan = harden(plan_guarded(&ctx, sql, &catalog).await?)?;
        rewrite(&plan, &catalog, &RuleSet::off())
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
