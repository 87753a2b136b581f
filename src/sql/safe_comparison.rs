//! SQL stage 1, error hardening: comparisons between values of different types compare
//! through `TRY_CAST`.
//!
//! The planner makes both sides of a comparison one type by casting, and those casts are
//! inserted after the guard has turned the query's own casts into `TRY_CAST`:
//! `to_date('2020-01-01') > sex` casts every `sex` to a date and fails on the first value
//! that is not one — an error that a data value decides. Here each side of a comparison
//! whose type differs from the common type DataFusion would choose is wrapped in
//! `TRY_CAST(side AS common)`, so a value that does not convert is NULL and the
//! comparison is unknown, as for any NULL. Comparisons between two numeric types are left
//! alone: the planner only widens there (Int32 → Int64), which never fails. `IN (…)` lists get the same treatment per item,
//! `BETWEEN` becomes its two comparisons, and `CASE x WHEN v …` becomes
//! `CASE WHEN x = v …`, so their comparisons are hardened too.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::logical_expr::expr::{Between, Case, InList};
use datafusion::logical_expr::type_coercion::binary::comparison_coercion;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Operator, TryCast};

/// `x` hardened if it is a comparison, `IN` list, `BETWEEN` or `CASE x WHEN …` whose
/// sides have different types; `None` otherwise.
pub fn hardened_expr(x: &Expr, schema: &DFSchema) -> Option<Expr> {
    match x {
        Expr::BinaryExpr(b) => hardened(b, schema),
        Expr::InList(l) => in_list(l, schema),
        Expr::Between(b) if mixed(&b.expr, [&*b.low, &*b.high], schema) => Some(between(b, schema)),
        Expr::Case(c)
            if c.expr
                .as_deref()
                .is_some_and(|x| mixed(x, c.when_then_expr.iter().map(|(w, _)| &**w), schema)) =>
        {
            Some(searched(c, schema))
        }
        _ => None,
    }
}

/// Whether some of `others` has a type other than `x`'s (or a type that cannot be known).
fn mixed<'a>(x: &Expr, others: impl IntoIterator<Item = &'a Expr>, schema: &DFSchema) -> bool {
    let Ok(t) = x.get_type(schema) else {
        return true;
    };
    others.into_iter().any(|o| {
        o.get_type(schema)
            .map_or(true, |u| u != t && may_fail(&t, &u))
    })
}

/// Whether the cast to a common type of `l` and `r` can fail on a value: it parses text
/// or converts between temporal types. Between numbers the planner only widens.
fn may_fail(l: &DataType, r: &DataType) -> bool {
    let risky = |t: &DataType| {
        t.is_string()
            || t.is_temporal()
            || matches!(t, DataType::Interval(_) | DataType::Duration(_))
    };
    risky(l) || risky(r)
}

fn in_list(l: &InList, schema: &DFSchema) -> Option<Expr> {
    let mut common = l.expr.get_type(schema).ok()?;
    let mut mixed = false;
    for item in &l.list {
        let t = item.get_type(schema).ok()?;
        mixed |= t != common && may_fail(&t, &common);
        common = comparison_coercion(&common, &t)?;
    }
    if !mixed {
        return None;
    }
    let cast = |x: &Expr| to_type(x, &common, schema);
    Some(Expr::InList(InList {
        expr: Box::new(cast(&l.expr)),
        list: l.list.iter().map(cast).collect(),
        negated: l.negated,
    }))
}

fn between(b: &Between, schema: &DFSchema) -> Expr {
    let x = *b.expr.clone();
    let (lo, hi) = (*b.low.clone(), *b.high.clone());
    let cmp = |l: Expr, op, r: Expr| {
        let e = BinaryExpr::new(Box::new(l), op, Box::new(r));
        hardened(&e, schema).unwrap_or(Expr::BinaryExpr(e))
    };
    if b.negated {
        cmp(x.clone(), Operator::Lt, lo).or(cmp(x, Operator::Gt, hi))
    } else {
        cmp(x.clone(), Operator::GtEq, lo).and(cmp(x, Operator::LtEq, hi))
    }
}

fn searched(c: &Case, schema: &DFSchema) -> Expr {
    let operand = c
        .expr
        .as_deref()
        .cloned()
        .unwrap_or(Expr::Literal(datafusion::common::ScalarValue::Null, None));
    let when_then = c
        .when_then_expr
        .iter()
        .map(|(w, t)| {
            let e = BinaryExpr::new(Box::new(operand.clone()), Operator::Eq, w.clone());
            let cond = hardened(&e, schema).unwrap_or(Expr::BinaryExpr(e));
            (Box::new(cond), t.clone())
        })
        .collect();
    Expr::Case(Case {
        expr: None,
        when_then_expr: when_then,
        else_expr: c.else_expr.clone(),
    })
}

fn to_type(x: &Expr, t: &DataType, schema: &DFSchema) -> Expr {
    match x.get_type(schema) {
        Ok(own) if &own == t => x.clone(),
        _ => Expr::TryCast(TryCast::new(Box::new(x.clone()), t.clone())),
    }
}

/// `e` with each side of a mixed-type comparison cast with `TRY_CAST`; `None` if `e` is
/// not such a comparison.
pub fn hardened(e: &BinaryExpr, schema: &DFSchema) -> Option<Expr> {
    use Operator as O;
    if !matches!(
        e.op,
        O::Eq
            | O::NotEq
            | O::Lt
            | O::LtEq
            | O::Gt
            | O::GtEq
            | O::IsDistinctFrom
            | O::IsNotDistinctFrom
    ) {
        return None;
    }
    let l = e.left.get_type(schema).ok()?;
    let r = e.right.get_type(schema).ok()?;
    if l == r || !may_fail(&l, &r) {
        return None;
    }
    let common = comparison_coercion(&l, &r)?;
    Some(Expr::BinaryExpr(BinaryExpr {
        left: Box::new(to_type(&e.left, &common, schema)),
        op: e.op,
        right: Box::new(to_type(&e.right, &common, schema)),
    }))
}
