//! Flight SQL stage, prepared statements and parameter binding for read-only SELECTs.
//!
//! A prepared statement is its SQL text and the parameters bound to it (one row, sent with
//! `DoPut`). Each execution binds the parameters *as SQL literals* into the statement's
//! syntax tree (`?` in order, or `$1`, `$2`, …) and sends the resulting SQL text through
//! the gateway like any statement: guard, rewrite, limits, disclosure, ledger and audit see
//! exactly what ran, and the audit log records the SQL with its values.
//!
//! Guarantees: a value can only ever become one literal (a string is a quoted string
//! literal however many quotes it holds — the syntax tree prints it escaped — never SQL
//! syntax); the statement is checked for depth and size before it is parsed (`sql::depth`),
//! like every statement; types other than text, integers, finite floats, booleans, dates
//! and NULL are refused, as is a parameter count that does not match; a handle belongs to
//! the user who created it (another user's handle is "not found"); at most [`PER_USER`]
//! statements per user and [`TOTAL`] in all are kept, idle ones expire after [`TTL`].

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    DataType as SqlType, Expr, Value, ValueWithSpan, visit_expressions_mut,
};

use crate::query::QueryError;

/// Idle prepared statements expire after this.
pub const TTL: Duration = Duration::from_secs(3600);
/// Prepared statements per user.
pub const PER_USER: usize = 64;
/// Prepared statements in all.
pub const TOTAL: usize = 4096;
/// The longest text parameter (the SQL itself is bounded by the message size).
const MAX_TEXT: usize = 4096;

/// A prepared statement.
#[derive(Debug, Clone)]
pub struct Prepared {
    owner: String,
    pub sql: String,
    pub params: Vec<ScalarValue>,
    used: Instant,
}

/// The prepared statements of all users.
#[derive(Default)]
pub struct Statements {
    map: Mutex<HashMap<String, Prepared>>,
}

impl Statements {
    /// Keep `sql` for `owner`; returns the handle.
    pub fn create(&self, owner: &str, sql: String) -> Result<String, crate::auth::AuthError> {
        let handle = format!("ps_{}", crate::auth::random_hex(16)?);
        let mut map = self.map.lock().expect("prepared statements");
        let now = Instant::now();
        map.retain(|_, p| now.duration_since(p.used) < TTL);
        for (which, keep) in [(Some(owner), PER_USER - 1), (None, TOTAL - 1)] {
            let mut ids: Vec<(Instant, String)> = map
                .iter()
                .filter(|(_, p)| which.is_none_or(|o| p.owner == o))
                .map(|(k, p)| (p.used, k.clone()))
                .collect();
            ids.sort();
            for (_, k) in ids.iter().take(ids.len().saturating_sub(keep)) {
                map.remove(k);
            }
        }
        let p = Prepared {
            owner: owner.to_string(),
            sql,
            params: Vec::new(),
            used: now,
        };
        map.insert(handle.clone(), p);
        Ok(handle)
    }

    /// The statement of `handle` if `owner` holds it.
    pub fn get(&self, owner: &str, handle: &str) -> Option<Prepared> {
        let mut map = self.map.lock().expect("prepared statements");
        let p = map
            .get_mut(handle)
            .filter(|p| p.owner == owner && p.used.elapsed() < TTL)?;
        p.used = Instant::now();
        Some(p.clone())
    }

    /// Bind `params` to `owner`'s statement `handle`; false if there is no such statement.
    pub fn bind(&self, owner: &str, handle: &str, params: Vec<ScalarValue>) -> bool {
        let mut map = self.map.lock().expect("prepared statements");
        match map.get_mut(handle).filter(|p| p.owner == owner) {
            Some(p) => {
                p.params = params;
                p.used = Instant::now();
                true
            }
            None => false,
        }
    }

    /// Forget `owner`'s statement `handle`.
    pub fn close(&self, owner: &str, handle: &str) {
        let mut map = self.map.lock().expect("prepared statements");
        if map.get(handle).is_some_and(|p| p.owner == owner) {
            map.remove(handle);
        }
    }
}

fn invalid(message: String) -> QueryError {
    QueryError::InvalidSql { message }
}

/// The one row of parameters in `batches`, as scalars; refused unless exactly one row.
pub fn parameter_row(batches: &[RecordBatch]) -> Result<Vec<ScalarValue>, QueryError> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows != 1 {
        return Err(invalid(format!(
            "bind exactly one row of parameters per execution (got {rows}); run the statement once per row / パラメータは 1 回の実行につき 1 行だけ指定してください（{rows} 行）"
        )));
    }
    let batch = batches.iter().find(|b| b.num_rows() == 1).expect("one row");
    batch
        .columns()
        .iter()
        .map(|c: &ArrayRef| {
            ScalarValue::try_from_array(c.as_ref(), 0).map_err(|_| {
                invalid("a parameter could not be read / パラメータを読み取れません".into())
            })
        })
        .collect()
}

/// The parameter as a SQL literal, or the refusal naming its position.
fn literal(i: usize, v: &ScalarValue) -> Result<Expr, QueryError> {
    let value = |v: Value| Ok(Expr::Value(ValueWithSpan::from(v)));
    let too_long = || {
        invalid(format!(
            "parameter {n} is longer than {MAX_TEXT} characters / パラメータ {n} が長すぎます",
            n = i + 1
        ))
    };
    if v.is_null() {
        return value(Value::Null);
    }
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => {
            if s.chars().count() > MAX_TEXT {
                return Err(too_long());
            }
            value(Value::SingleQuotedString(s.clone()))
        }
        ScalarValue::Boolean(Some(b)) => value(Value::Boolean(*b)),
        ScalarValue::Float32(Some(f)) if f.is_finite() => {
            value(Value::Number(f.to_string(), false))
        }
        ScalarValue::Float64(Some(f)) if f.is_finite() => {
            value(Value::Number(f.to_string(), false))
        }
        ScalarValue::Date32(Some(_)) => Ok(Expr::TypedString(
            datafusion::sql::sqlparser::ast::TypedString {
                data_type: SqlType::Date,
                value: ValueWithSpan::from(Value::SingleQuotedString(v.to_string())),
                uses_odbc_syntax: false,
            },
        )),
        v if v.data_type().is_integer() => value(Value::Number(v.to_string(), false)),
        v => Err(invalid(format!(
            "parameter {n} has type {t}, which cannot be bound; send text, an integer, a number, a boolean or a date / パラメータ {n} の型 {t} は使えません（文字列・整数・数値・真偽値・日付）",
            n = i + 1,
            t = v.data_type()
        ))),
    }
}

/// Which parameter a placeholder names: `?` in order, `$n` by number.
fn position(p: &str, next: &mut usize) -> Result<usize, QueryError> {
    if p == "?" {
        *next += 1;
        return Ok(*next - 1);
    }
    p.strip_prefix('$')
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n >= 1)
        .map(|n| n - 1)
        .ok_or_else(|| {
            invalid(format!(
                "placeholder `{p}` is not supported; use ? or $1, $2, … / プレースホルダー {p} は使えません（? または $1, $2, …）"
            ))
        })
}

/// `sql` with every placeholder replaced by its parameter as a literal.
pub fn bind(sql: &str, params: &[ScalarValue]) -> Result<String, QueryError> {
    crate::sql::depth::check_depth(sql)?;
    let mut statements = DFParserBuilder::new(sql)
        .with_recursion_limit(crate::sql::depth::PARSER_RECURSION_LIMIT)
        .build()
        .and_then(|mut p| p.parse_statements())
        .map_err(crate::sql::depth::parse_error)?;
    let (Some(DfStatement::Statement(mut st)), true) =
        (statements.pop_front(), statements.is_empty())
    else {
        return Err(QueryError::StatementNotAllowed {
            message: "prepare exactly one SELECT statement / SELECT 文を 1 つだけ準備してください"
                .into(),
        });
    };
    let (mut next, mut used) = (0usize, vec![false; params.len()]);
    let flow = visit_expressions_mut(&mut *st, |e| {
        let Expr::Value(ValueWithSpan {
            value: Value::Placeholder(p),
            ..
        }) = e
        else {
            return ControlFlow::Continue(());
        };
        let bound = position(p, &mut next).and_then(|i| match params.get(i) {
            Some(v) => {
                used[i] = true;
                literal(i, v)
            }
            None => Err(invalid(format!(
                "the statement has more placeholders than the {} parameter(s) bound / プレースホルダーの数がパラメータ（{} 個）より多いです",
                params.len(),
                params.len()
            ))),
        });
        match bound {
            Ok(lit) => {
                *e = lit;
                ControlFlow::Continue(())
            }
            Err(err) => ControlFlow::Break(err),
        }
    });
    if let ControlFlow::Break(err) = flow {
        return Err(err);
    }
    if used.iter().any(|u| !u) {
        return Err(invalid(format!(
            "{} parameter(s) were bound but the statement does not use them all / 使われないパラメータがあります",
            params.len()
        )));
    }
    Ok(st.to_string())
}

/// How many parameters `sql` takes (its placeholders); 0 if it does not parse (the
/// gateway refuses it then, with the parser's message).
pub fn placeholder_count(sql: &str) -> usize {
    if crate::sql::depth::check_depth(sql).is_err() {
        return 0;
    }
    let Ok(mut statements) = DFParserBuilder::new(sql)
        .with_recursion_limit(crate::sql::depth::PARSER_RECURSION_LIMIT)
        .build()
        .and_then(|mut p| p.parse_statements())
    else {
        return 0;
    };
    let Some(DfStatement::Statement(mut st)) = statements.pop_front() else {
        return 0;
    };
    let (mut next, mut highest) = (0usize, 0usize);
    let _ = visit_expressions_mut(&mut *st, |e| {
        if let Expr::Value(ValueWithSpan {
            value: Value::Placeholder(p),
            ..
        }) = e
            && let Ok(i) = position(p, &mut next)
        {
            highest = highest.max(i + 1);
        }
        ControlFlow::<()>::Continue(())
    });
    highest
}

/// The Arrow type a parameter column of a prepared statement is declared as.
pub fn parameter_type() -> DataType {
    DataType::Utf8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> ScalarValue {
        ScalarValue::Utf8(Some(v.into()))
    }

    #[test]
    fn parameters_become_literals_never_syntax() {
        let sql =
            "SELECT sex, count(*) AS n FROM patient WHERE sex = ? AND birth_year > ? GROUP BY sex";
        let bound = bind(sql, &[s("F' OR '1'='1"), ScalarValue::Int64(Some(1950))]).unwrap();
        assert!(bound.contains("sex = 'F'' OR ''1''=''1'"), "{bound}");
        assert!(bound.contains("birth_year > 1950"), "{bound}");
        let dollar = bind(
            "SELECT $2 AS a, $1 AS b",
            &[s("x"), ScalarValue::Boolean(Some(true))],
        )
        .unwrap();
        assert_eq!(dollar, "SELECT true AS a, 'x' AS b");
        let date = bind("SELECT ? AS d", &[ScalarValue::Date32(Some(19_000))]).unwrap();
        assert!(date.contains("DATE '2022-01-08'"), "{date}");
        assert_eq!(
            bind("SELECT ? AS x", &[ScalarValue::Int64(None)]).unwrap(),
            "SELECT NULL AS x"
        );
    }

    #[test]
    fn mismatched_or_unbindable_parameters_are_refused() {
        assert!(bind("SELECT ? AS a, ? AS b", &[s("x")]).is_err());
        assert!(bind("SELECT ? AS a", &[s("x"), s("y")]).is_err());
        assert!(bind("SELECT ? AS a", &[ScalarValue::Float64(Some(f64::NAN))]).is_err());
        assert!(bind("SELECT ? AS a", &[s(&"x".repeat(MAX_TEXT + 1))]).is_err());
        assert!(bind("SELECT 1; SELECT 2", &[]).is_err());
        assert_eq!(placeholder_count("SELECT ? AS a, ? AS b"), 2);
        assert_eq!(placeholder_count("SELECT $3 AS a"), 3);
    }

    #[test]
    fn statements_belong_to_their_owner() {
        let st = Statements::default();
        let h = st.create("researcher1", "SELECT 1".into()).unwrap();
        assert!(st.get("researcher2", &h).is_none());
        assert!(!st.bind("researcher2", &h, vec![]));
        st.close("researcher2", &h);
        assert!(
            st.get("researcher1", &h).is_some(),
            "another user cannot close it"
        );
        st.close("researcher1", &h);
        assert!(st.get("researcher1", &h).is_none());
    }
}
