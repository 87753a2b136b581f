//! SQL stage 1, the guard: researcher SQL → a read-only, allow-listed, error-hardened
//! [`LogicalPlan`].
//!
//! Guarantees on success:
//! - the text was exactly one `SELECT`/`WITH`/set-operation query (no DDL, DML, COPY, SET,
//!   PREPARE, EXPLAIN [ANALYZE], DESCRIBE, CREATE EXTERNAL TABLE, several statements);
//! - every table read is a catalogue table registered in the session (no URL tables, no
//!   table functions), and out-of-scope catalogue tables are refused as `out_of_scope`;
//! - every plan node, including those inside subqueries, is one of the read-only kinds;
//! - every scalar, aggregate and window function is on an allow-list;
//! - no expression can fail because of a data value on the paths we know of: division and
//!   modulo by zero yield NULL, casts become `TRY_CAST` ([`harden`]).
//!
//! DataFusion's `SQLOptions::verify_plan` is applied too, but it lets EXPLAIN, EXPLAIN
//! ANALYZE (which runs the query and prints per-operator row counts) and DESCRIBE through,
//! which is why the statement kind and the node kinds are allow-listed here as well.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use datafusion::common::DFSchema;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::functions::expr_fn::nullif;
use datafusion::logical_expr::expr::WindowFunctionDefinition;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{BinaryExpr, Cast, Expr, LogicalPlan, Operator, TryCast, lit};
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Statement as SqlStatement, TableFactor, Visit, Visitor};

use super::{case_nullability, fallible, output_cap, safe_comparison, safe_function};
use crate::catalog::Catalog;
use crate::privacy::rules::Defences;
use crate::query::QueryError;

/// Prefix of the helper columns the privacy rewrite adds; user SQL may not use it, so a
/// query cannot spoof or read a contributor count.
pub const RESERVED_PREFIX: &str = "__kura";

/// Aggregates allowed over patient data. MIN/MAX are handled by the privacy rewrite
/// (public-domain columns only, or inside a per-patient group).
pub const ALLOWED_AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "stddev",
    "stddev_pop",
    "var",
    "var_pop",
    "median",
    "approx_median",
    "approx_percentile_cont",
    "percentile_cont",
    "approx_distinct",
    "min",
    "max",
];

/// Aggregates allowed only inside a per-patient `GROUP BY pid` (or over public data):
/// there they summarise one patient's own rows (e.g. an ALSFRS-R slope per patient) and
/// nothing is released directly. Over patients they would carry one patient's value out.
pub const PER_PATIENT_AGGREGATES: &[&str] = &[
    "regr_slope",
    "regr_intercept",
    "regr_count",
    "regr_r2",
    "corr",
    "covar_samp",
    "covar_pop",
    "first_value",
    "last_value",
];

fn aggregate_allowed(name: &str) -> bool {
    ALLOWED_AGGREGATES.contains(&name) || PER_PATIENT_AGGREGATES.contains(&name)
}

/// Window functions allowed (over aggregates, or within one patient's rows).
pub const ALLOWED_WINDOW_FUNCTIONS: &[&str] = &[
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
];

/// Scalar functions allowed: arithmetic, strings, dates and conditionals. None of them
/// reads files, the environment or other sessions.
pub const ALLOWED_SCALAR_FUNCTIONS: &[&str] = &[
    // math
    "abs",
    "ceil",
    "floor",
    "round",
    "trunc",
    "sqrt",
    "cbrt",
    "power",
    "pow",
    "exp",
    "ln",
    "log",
    "log10",
    "log2",
    "signum",
    "greatest",
    "least",
    "isnan",
    "iszero",
    "pi",
    // conditional
    "coalesce",
    "nullif",
    "nvl",
    "nvl2",
    "ifnull",
    // strings
    "lower",
    "upper",
    "substr",
    "substring",
    "left",
    "right",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "concat",
    "concat_ws",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "lpad",
    "rpad",
    "replace",
    "starts_with",
    "ends_with",
    "strpos",
    "split_part",
    "initcap",
    "reverse",
    "repeat",
    "translate",
    "regexp_like",
    "regexp_match",
    "like",
    // dates
    "date_part",
    "datepart",
    "date_trunc",
    "datetrunc",
    "to_char",
    "to_date",
    "make_date",
    "current_date",
    "now",
    "date_bin",
    "to_timestamp",
    "extract",
];

/// Parse, plan and check one researcher query. The session must hold only the tables
/// of the caller's extract.
pub async fn plan_guarded(
    ctx: &SessionContext,
    sql: &str,
    catalog: &Catalog,
) -> Result<LogicalPlan, QueryError> {
    // Before any expression tree exists: a too-deep one overflows the stack (depth.rs).
    super::depth::check_depth(sql)?;
    let mut statements = DFParserBuilder::new(sql)
        .with_recursion_limit(super::depth::PARSER_RECURSION_LIMIT)
        .build()
        .and_then(|mut p| p.parse_statements())
        .map_err(super::depth::parse_error)?;
    if statements.len() != 1 {
        return Err(not_allowed(
            "send exactly one SELECT statement per request / 1 回の要求では SELECT 文を 1 つだけ送ってください",
        ));
    }
    let statement = statements.pop_front().expect("one statement");
    check_statement_kind(&statement)?;
    if let DfStatement::Statement(st) = &statement {
        let mut v = TableFunctionFinder;
        if st.visit(&mut v).is_break() {
            return Err(not_allowed(
                "table functions (read_parquet, generate_series, …) are not allowed; query the catalogue tables / テーブル関数は使えません。カタログのテーブルを使ってください",
            ));
        }
    }

    let state = ctx.state();
    let refs = state
        .resolve_table_references(&statement)
        .map_err(|e| super::sql_error::plan_refusal(&e))?;
    for r in &refs {
        let name = r.table();
        if name.contains(['/', '.', ':', '\\']) {
            return Err(not_allowed(
                "reading files or URLs is not allowed; query the catalogue tables / ファイルや URL は読み込めません。カタログのテーブルを使ってください",
            ));
        }
        let registered = ctx.table_exist(name).unwrap_or(false);
        if catalog.table(name).is_some() && !registered {
            return Err(QueryError::OutOfScope {
                message: format!(
                    "table `{name}` is not in this application's approved scope / テーブル `{name}` は承認された範囲に含まれていません"
                ),
            });
        }
    }

    let plan = state
        .statement_to_plan(statement)
        .await
        .map_err(|e| super::sql_error::plan_refusal(&e))?;
    // Before the rewrite and the optimizer: a huge but shallow plan is refused (size.rs).
    super::size::check_plan_size(&plan)?;
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| not_allowed(&format!("{e}")))?;
    check_plan(&plan, catalog)?;
    Ok(plan)
}

/// Finds table functions in the SQL text (`FROM read_parquet('…')`, `FROM f(…)`): some
/// plan to scans whose provider reads files, so they are refused before planning.
struct TableFunctionFinder;

impl Visitor for TableFunctionFinder {
    type Break = ();
    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        match t {
            TableFactor::Table { args: Some(_), .. }
            | TableFactor::TableFunction { .. }
            | TableFactor::Function { .. } => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    }
}

fn not_allowed(message: &str) -> QueryError {
    QueryError::StatementNotAllowed {
        message: message.to_string(),
    }
}

fn check_statement_kind(statement: &DfStatement) -> Result<(), QueryError> {
    let what = match statement {
        DfStatement::Statement(s) => match s.as_ref() {
            SqlStatement::Query(_) => return Ok(()),
            SqlStatement::Explain { .. } | SqlStatement::ExplainTable { .. } => {
                "EXPLAIN / DESCRIBE"
            }
            SqlStatement::Set(_) => "SET",
            SqlStatement::Prepare { .. } | SqlStatement::Execute { .. } => "PREPARE / EXECUTE",
            SqlStatement::Insert(_) | SqlStatement::Update(_) | SqlStatement::Delete(_) => "DML",
            _ => "this statement",
        },
        DfStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE",
        DfStatement::CopyTo(_) => "COPY",
        DfStatement::Explain(_) => "EXPLAIN",
        DfStatement::Reset(_) => "RESET",
    };
    Err(not_allowed(&format!(
        "{what} is not allowed; only read-only SELECT queries are accepted / {what} は使えません。読み取り専用の SELECT 文のみ受け付けます"
    )))
}

/// Node and function allow-lists over the whole plan, subqueries included.
fn check_plan(plan: &LogicalPlan, catalog: &Catalog) -> Result<(), QueryError> {
    let mut err: Option<QueryError> = None;
    let mut set = |e: QueryError| {
        err = Some(e);
        Ok(TreeNodeRecursion::Stop)
    };
    plan.apply_with_subqueries(|node| {
        use LogicalPlan as P;
        match node {
            P::Projection(_)
            | P::Filter(_)
            | P::Window(_)
            | P::Aggregate(_)
            | P::Sort(_)
            | P::Join(_)
            | P::Union(_)
            | P::EmptyRelation(_)
            | P::Subquery(_)
            | P::SubqueryAlias(_)
            | P::Limit(_)
            | P::Values(_)
            | P::Distinct(_) => {}
            P::TableScan(scan) => {
                let name = scan.table_name.table();
                if catalog.table(name).is_none() {
                    return set(not_allowed(
                        "table functions and tables outside the catalogue are not allowed / テーブル関数やカタログ外のテーブルは使えません",
                    ));
                }
            }
            P::RecursiveQuery(_) => {
                return set(QueryError::UnsupportedQuery {
                    message: "recursive queries are not supported / 再帰クエリには対応していません".into(),
                });
            }
            P::Unnest(_) => {
                return set(QueryError::UnsupportedQuery {
                    message: "UNNEST is not supported / UNNEST には対応していません".into(),
                });
            }
            other => {
                return set(not_allowed(&format!(
                    "{} is not allowed; only read-only SELECT queries are accepted / 読み取り専用の SELECT 文のみ受け付けます",
                    node_kind(other)
                )));
            }
        }
        for f in node.schema().fields() {
            if f.name().starts_with(RESERVED_PREFIX) {
                return set(QueryError::InvalidSql {
                    message: format!(
                        "names starting with `{RESERVED_PREFIX}` are reserved; rename the column / `{RESERVED_PREFIX}` で始まる名前は予約されています"
                    ),
                });
            }
        }
        let mut inner: Option<QueryError> = None;
        let in_filter = matches!(node, P::Filter(_));
        node.apply_expressions(|e| {
            e.apply(|x| match check_expr(x).and_then(|()| check_subquery_place(x, in_filter)) {
                Ok(()) => Ok(TreeNodeRecursion::Continue),
                Err(q) => {
                    inner = Some(q);
                    Ok(TreeNodeRecursion::Stop)
                }
            })
        })?;
        match inner {
            Some(q) => set(q),
            None => Ok(TreeNodeRecursion::Continue),
        }
    })
    .map_err(|e| QueryError::internal("guard", e))?;
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn node_kind(p: &LogicalPlan) -> &'static str {
    match p {
        LogicalPlan::Explain(_) => "EXPLAIN",
        LogicalPlan::Analyze(_) => "EXPLAIN ANALYZE",
        LogicalPlan::DescribeTable(_) => "DESCRIBE",
        LogicalPlan::Copy(_) => "COPY",
        LogicalPlan::Ddl(_) => "DDL",
        LogicalPlan::Dml(_) => "DML",
        LogicalPlan::Statement(_) => "SET / PREPARE / transaction statements",
        _ => "this plan node",
    }
}

fn unsupported_aggregate(name: &str) -> QueryError {
    QueryError::UnsupportedAggregate {
        message: format!(
            "`{name}` is not allowed; use count, count(DISTINCT …), sum, avg, stddev/variance, median or approx_percentile_cont / `{name}` は使えません。count, sum, avg, stddev, variance, median, approx_percentile_cont などを使ってください"
        ),
    }
}

/// `IN (SELECT …)` and `EXISTS` run only as a WHERE/HAVING condition: DataFusion cannot
/// execute them inside a SELECT list or an aggregate's argument (`sum(CASE WHEN pid IN
/// (SELECT …) …)` ended in `execution_error`), so they are refused there with the way out.
fn check_subquery_place(e: &Expr, in_filter: bool) -> Result<(), QueryError> {
    if !in_filter && matches!(e, Expr::InSubquery(_) | Expr::Exists(_)) {
        return Err(QueryError::UnsupportedQuery {
            message: "IN (SELECT …) and EXISTS work only in WHERE or HAVING; to count a subgroup, join the subquery (… JOIN (SELECT DISTINCT pid …) s USING (pid)) or use FILTER (WHERE …) / IN (SELECT …) と EXISTS は WHERE・HAVING でのみ使えます。部分集団には JOIN か FILTER を使ってください".into(),
        });
    }
    Ok(())
}

fn check_expr(e: &Expr) -> Result<(), QueryError> {
    match e {
        Expr::ScalarFunction(f) => {
            let name = f.func.name().to_ascii_lowercase();
            if !ALLOWED_SCALAR_FUNCTIONS.contains(&name.as_str()) {
                return Err(QueryError::UnsupportedQuery {
                    message: format!(
                        "function `{name}` is not on the allow-list / 関数 `{name}` は許可されていません"
                    ),
                });
            }
        }
        Expr::AggregateFunction(f) => {
            let name = f.func.name().to_ascii_lowercase();
            if !aggregate_allowed(&name) {
                return Err(unsupported_aggregate(&name));
            }
        }
        Expr::WindowFunction(w) => match &w.fun {
            WindowFunctionDefinition::AggregateUDF(a) => {
                let name = a.name().to_ascii_lowercase();
                if !aggregate_allowed(&name) {
                    return Err(unsupported_aggregate(&name));
                }
            }
            WindowFunctionDefinition::WindowUDF(f) => {
                let name = f.name().to_ascii_lowercase();
                if !ALLOWED_WINDOW_FUNCTIONS.contains(&name.as_str()) {
                    return Err(unsupported_aggregate(&name));
                }
            }
        },
        Expr::Placeholder(_) | Expr::ScalarVariable(..) => {
            return Err(not_allowed(
                "parameters and variables are not allowed / パラメータや変数は使えません",
            ));
        }
        Expr::Unnest(_)
        | Expr::HigherOrderFunction(_)
        | Expr::Lambda(_)
        | Expr::LambdaVariable(_) => {
            return Err(QueryError::UnsupportedQuery {
                message: "this expression is not supported / この式には対応していません".into(),
            });
        }
        Expr::GroupingSet(_) => {
            return Err(QueryError::UnsupportedQuery {
                message: "GROUPING SETS / ROLLUP / CUBE are not supported; send one query per grouping / GROUPING SETS・ROLLUP・CUBE には対応していません。集計単位ごとにクエリを分けてください".into(),
            });
        }
        _ => {}
    }
    Ok(())
}

/// Error hardening: rewrite every expression (subqueries included) so that data values
/// cannot make it fail. Division and modulo get a NULL divisor instead of zero; casts
/// become `TRY_CAST`; CASE expressions the two planners would type differently are marked
/// nullable (`case_nullability`). With `defences.safe_functions`, every scalar function
/// that could fail runs in its NULL-on-failure form (`safe_function`), growing string
/// functions are capped (`output_cap`), mixed-type comparisons convert with `TRY_CAST`
/// (`safe_comparison`), and expressions that would fail on every row they
/// reach are refused (`fallible`). Output names are preserved so the plan's schema does
/// not change.
pub fn harden(plan: LogicalPlan, defences: &Defences) -> Result<LogicalPlan, QueryError> {
    if defences.safe_functions {
        fallible::check(&plan)?;
        super::decimal::check(&plan)?;
    }
    let safe = defences.safe_functions;
    plan.transform_up_with_subqueries(|node| {
        let preserver = NamePreserver::new(&node);
        // Sort keys are not named outputs; an alias there would only confuse planning.
        let keep_names = !matches!(node, LogicalPlan::Sort(_));
        let schema = expression_schema(&node);
        let t = node.map_expressions(|e| {
            let saved = preserver.save(&e);
            let t = e.transform_up(|x| Ok(harden_expr(x, &schema, safe)))?;
            Ok(if keep_names {
                t.update_data(|e| saved.restore(e))
            } else {
                t
            })
        })?;
        if t.transformed {
            Ok(Transformed::yes(t.data.recompute_schema()?))
        } else {
            Ok(t)
        }
    })
    .map(|t| t.data)
    .map_err(|e| QueryError::internal("error hardening", e))
}

/// The columns a node's expressions can refer to: all its inputs' columns.
fn expression_schema(node: &LogicalPlan) -> DFSchema {
    let mut schema = DFSchema::empty();
    for input in node.inputs() {
        schema.merge(input.schema());
    }
    schema
}

/// One expression node, hardened (its children already are).
fn harden_expr(x: Expr, schema: &DFSchema, safe: bool) -> Transformed<Expr> {
    match x {
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Divide | Operator::Modulo) =>
        {
            Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                left,
                op,
                right: Box::new(nullif(*right, lit(0))),
            }))
        }
        Expr::Cast(Cast { expr, field }) => {
            Transformed::yes(Expr::TryCast(TryCast { expr, field }))
        }
        Expr::BinaryExpr(b) if safe && super::safe_temporal::hardened(&b, schema).is_some() => {
            Transformed::yes(
                super::safe_temporal::hardened(&b, schema).unwrap_or(Expr::BinaryExpr(b)),
            )
        }
        x @ (Expr::BinaryExpr(_) | Expr::InList(_) | Expr::Between(_) | Expr::Case(_))
            if safe && safe_comparison::hardened_expr(&x, schema).is_some() =>
        {
            let e = safe_comparison::hardened_expr(&x, schema).unwrap_or(x);
            Transformed::yes(match e {
                case @ Expr::Case(_) => case_nullability::consistent(case, schema),
                other => other,
            })
        }
        case @ Expr::Case(_) => match case_nullability::consistent(case, schema) {
            e @ Expr::ScalarFunction(_) => Transformed::yes(e),
            e => Transformed::no(e),
        },
        Expr::ScalarFunction(f) if safe => {
            let before = f.func.name().to_string();
            match safe_function::safe_call(output_cap::capped(f)) {
                Expr::ScalarFunction(g) if !safe_function::is_safe(&g.func) => {
                    debug_assert_eq!(g.func.name(), before);
                    Transformed::no(Expr::ScalarFunction(g))
                }
                e => Transformed::yes(e),
            }
        }
        other => Transformed::no(other),
    }
}

/// Names of the catalogue tables a plan reads (subqueries included), sorted.
pub fn tables_read(plan: &LogicalPlan) -> Vec<String> {
    let mut out = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|n| {
        if let LogicalPlan::TableScan(s) = n {
            out.insert(s.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::datasource::MemTable;

    use super::*;

    fn ctx(catalog: &Catalog) -> SessionContext {
        let ctx = SessionContext::new();
        let schema = catalog.table("patient").unwrap().arrow_schema();
        let t = MemTable::try_new(schema, vec![vec![]]).unwrap();
        ctx.register_table("patient", Arc::new(t)).unwrap();
        ctx
    }

    #[tokio::test]
    async fn hardening_rewrites_division_and_cast_but_keeps_names() {
        let catalog = Catalog::embedded().unwrap();
        let ctx = ctx(&catalog);
        let plan = plan_guarded(
            &ctx,
            "SELECT birth_year / 0 AS a, CAST(sex AS INT) AS b, birth_year % 7 FROM patient",
            &catalog,
        )
        .await
        .unwrap();
        let before: Vec<String> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let hardened = harden(plan, &Defences::ALL).unwrap();
        let text = format!("{}", hardened.display_indent());
        assert!(text.contains("nullif"), "{text}");
        assert!(text.contains("TRY_CAST"), "{text}");
        assert!(!text.contains(" CAST("), "{text}");
        let after: Vec<String> = hardened
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(before, after);
    }

    #[tokio::test]
    async fn explain_and_describe_are_refused_before_planning() {
        let catalog = Catalog::embedded().unwrap();
        let ctx = ctx(&catalog);
        for sql in [
            "EXPLAIN ANALYZE SELECT 1",
            "EXPLAIN VERBOSE SELECT 1",
            "DESCRIBE patient",
            "SHOW TABLES",
        ] {
            let e = plan_guarded(&ctx, sql, &catalog).await.unwrap_err();
            assert_eq!(e.code(), "statement_not_allowed", "{sql}");
        }
    }

    #[tokio::test]
    async fn subquery_functions_are_checked_too() {
        let catalog = Catalog::embedded().unwrap();
        let ctx = ctx(&catalog);
        let e = plan_guarded(
            &ctx,
            "SELECT count(*) FROM patient WHERE sex IN (SELECT string_agg(pid, ',') FROM patient)",
            &catalog,
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), "unsupported_aggregate");
        assert_eq!(
            tables_read(
                &plan_guarded(&ctx, "SELECT count(*) FROM patient", &catalog)
                    .await
                    .unwrap()
            ),
            vec!["patient"]
        );
    }
}
