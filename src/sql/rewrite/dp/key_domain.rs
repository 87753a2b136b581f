//! DP rewrite, key domain: every group key takes its values from a domain known without
//! reading patient data, either a public-domain catalogue column (its catalogue domain,
//! restricted to the approved scope) or the constant results of a `CASE` expression. The
//! release zero-fills and shows exactly that domain, so which groups appear never depends
//! on the data: there is no data-dependent partition selection. Grouping by the privacy
//! unit is row-level output.
//!
//! Golden cases in `tests/slt/dp/`: `rewrite.slt` "COUNT(DISTINCT pid) by a public-domain
//! key", "FILTER and a CASE bucket with constant results", "Join to a reference table";
//! `refusals.slt` "GROUP BY birth_year" (no public domain) and "GROUP BY substr(…)"
//! (a computed key that is not a constant CASE).

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{Aggregate, Expr};

use super::{Rows, SUPPORTED, unsupported};
use crate::query::QueryError;
use crate::sql::rewrite::{KeySource, has_subquery, strip_alias};

/// The values a group key can take, known without reading patient data.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyDomain {
    /// A public-domain catalogue column (domain from the catalogue, restricted to scope).
    Column { table: String, column: String },
    /// The constant results of a CASE expression (NULL included when it has no ELSE).
    Literals(Vec<ScalarValue>),
}

/// One group key of the protected aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct DpKey {
    /// The key as the researcher wrote it (for messages).
    pub name: String,
    pub domain: KeyDomain,
    pub data_type: DataType,
}

/// The group keys of the aggregation, each with its public domain.
pub(super) fn keys(aggregate: &Aggregate, rows: &Rows) -> Result<Vec<DpKey>, QueryError> {
    aggregate
        .group_expr
        .iter()
        .enumerate()
        .map(|(j, g)| key(aggregate, j, g, rows))
        .collect()
}

fn key(aggregate: &Aggregate, j: usize, g: &Expr, rows: &Rows) -> Result<DpKey, QueryError> {
    let name = aggregate.schema.field(j).name().clone();
    if has_subquery(g) {
        return Err(unsupported(format!(
            "GROUP BY `{name}`: subqueries in keys are not supported in DP mode. {SUPPORTED}"
        )));
    }
    let data_type = aggregate.schema.field(j).data_type().clone();
    let domain = match strip_alias(g) {
        Expr::Column(c) => column_domain(&name, c, rows)?,
        e => match constant_results(e) {
            Some(values) => KeyDomain::Literals(values),
            None => {
                return Err(unsupported(format!(
                    "GROUP BY `{name}`: under DP a computed key must be a CASE expression whose results are constants (e.g. CASE WHEN age < 40 THEN '00-39' ELSE '40+' END), so its values are known without the data / 計算したキーは結果が定数の CASE 式にしてください"
                )));
            }
        },
    };
    Ok(DpKey {
        name,
        domain,
        data_type,
    })
}

/// The domain of a bare column key: the catalogue column it comes from, if that column
/// is public-domain.
fn column_domain(name: &str, c: &Column, rows: &Rows) -> Result<KeyDomain, QueryError> {
    let i = rows
        .rel
        .plan
        .schema()
        .index_of_column(c)
        .map_err(|e| QueryError::internal("dp rewrite", e))?;
    let lin = &rows.rel.cols[i];
    if lin.pid {
        return Err(QueryError::RowLevelOutput {
            message: "GROUP BY pid releases one row per patient; group by public-domain columns / pid による GROUP BY は患者単位の出力になります".into(),
        });
    }
    match (&lin.source, lin.public) {
        (Some(KeySource::Column { table, column }), true) => Ok(KeyDomain::Column {
            table: table.clone(),
            column: column.clone(),
        }),
        _ => Err(unsupported(format!(
            "GROUP BY `{name}`: under DP a group key must be a public-domain catalogue column (its values are then released in full, zero-filled) or a CASE expression with constant results; `{name}` has no public domain. Bucket it with CASE WHEN … THEN '…' END, or use a public-domain column / DP 方式では公開ドメインの列か定数を返す CASE 式でのみグループ化できます"
        ))),
    }
}

/// The constant results of a CASE expression (with NULL when there is no ELSE), or of a
/// bare constant.
fn constant_results(e: &Expr) -> Option<Vec<ScalarValue>> {
    fn constant(e: &Expr) -> Option<ScalarValue> {
        match e {
            Expr::Literal(v, _) => Some(v.clone()),
            Expr::Alias(a) => constant(&a.expr),
            Expr::Cast(c) => constant(&c.expr)?.cast_to(c.field.data_type()).ok(),
            Expr::TryCast(c) => constant(&c.expr)?.cast_to(c.field.data_type()).ok(),
            _ => None,
        }
    }
    match e {
        Expr::Case(c) => {
            let mut out = Vec::new();
            for (_, then) in &c.when_then_expr {
                out.push(constant(then)?);
            }
            match &c.else_expr {
                Some(e) => out.push(constant(e)?),
                None => out.push(ScalarValue::Null),
            }
            Some(out)
        }
        other => constant(other).map(|v| vec![v]),
    }
}
