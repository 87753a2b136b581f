//! SQL stage 1, error hardening: CASE expressions that DataFusion's logical and physical
//! planners would type differently are marked nullable.
//!
//! DataFusion 55 infers a searched CASE's nullability twice, and the two disagree. The
//! logical side (`Expr::nullable`, predicate bounds) proves that in
//! `CASE WHEN sex = 'F' AND birth_year > 1970 THEN birth_year ELSE 0 END` the nullable
//! `birth_year` branch is never taken when `birth_year` is NULL, so the CASE is NOT NULL;
//! the physical side (`CaseExpr::nullable`) substitutes NULL and tries to constant-fold
//! `sex = 'F' AND NULL > 1970`, cannot, and says nullable. Wherever such a CASE is
//! computed in a plan node that feeds an aggregation, the physical planner's check
//! "physical input schema should be the same as the one converted from logical input
//! schema" fails, and the query ends in `execution_error`. The privacy rewrite makes this
//! happen for a plain `sum(CASE …)`: the cell's contributor count repeats the argument
//! (`count(DISTINCT CASE WHEN arg IS NOT NULL AND arg <> 0 THEN pid END)`), and so does
//! the dominance plan, so common-subexpression elimination computes the CASE once in a
//! projection below the aggregate. A researcher's `SELECT sum(x) FROM (SELECT CASE … AS x
//! …)` fails the same way without any rewrite.
//!
//! The fix: every CASE whose nullability could rest on such a proof (it has an ELSE and a
//! nullable THEN branch) is wrapped in [`Nullable`]. The test is made before the optimizer
//! runs, and the optimizer can rewrite a predicate into a form the logical side proves
//! (e.g. by removing a cast), so it does not ask whether the logical side proves it now.
//! [`Nullable`] is an identity function whose result is nullable to both planners, and
//! whose name is its argument's, so output names do not change. Only the declared
//! nullability changes, never a value; the contributor helpers then add an `IS NOT NULL`
//! that always holds.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DFSchema, Result, exec_err};
use datafusion::logical_expr::expr::{Case, ScalarFunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};

/// `e`, wrapped in [`Nullable`] if it is a CASE the two planners could disagree on.
pub fn consistent(e: Expr, schema: &DFSchema) -> Expr {
    let Expr::Case(case) = &e else {
        return e;
    };
    if !disagrees(case, schema) {
        return e;
    }
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(Nullable::udf()), vec![e]))
}

/// A CASE with an ELSE and a nullable THEN branch: whether it is NOT NULL rests on a proof
/// about its predicates, which the logical planner may find (now, or after the optimizer
/// has rewritten the predicates) and the physical planner may not. Without an ELSE, or
/// with only NOT NULL branches, both planners agree.
fn disagrees(case: &Case, schema: &DFSchema) -> bool {
    case.else_expr.is_some()
        && case
            .when_then_expr
            .iter()
            .any(|(_, t)| t.nullable(schema).unwrap_or(true))
}

/// The identity, declared nullable.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Nullable {
    signature: Signature,
}

impl Nullable {
    fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }

    /// The function.
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self::new())
    }
}

impl ScalarUDFImpl for Nullable {
    fn name(&self) -> &str {
        "nullable"
    }

    /// The argument's own name, so column names stay as the researcher wrote them.
    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        match args {
            [a] => Ok(a.schema_name().to_string()),
            _ => exec_err!("nullable takes one argument"),
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [t] => Ok(t.clone()),
            _ => exec_err!("nullable takes one argument"),
        }
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        match args.arg_fields {
            [f] => Ok(Arc::new(Field::new(
                self.name(),
                f.data_type().clone(),
                true,
            ))),
            _ => exec_err!("nullable takes one argument"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match <[ColumnarValue; 1]>::try_from(args.args) {
            Ok([v]) => Ok(v),
            Err(_) => exec_err!("nullable takes one argument"),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::Schema;
    use datafusion::logical_expr::{col, lit, when};

    use super::*;

    fn schema() -> DFSchema {
        DFSchema::try_from(Schema::new(vec![
            Field::new("sex", DataType::Utf8, true),
            Field::new("birth_year", DataType::Int32, true),
        ]))
        .unwrap()
    }

    #[test]
    fn a_case_proved_not_null_by_its_predicate_is_marked_nullable() {
        let by = col("birth_year");
        let case = when(col("sex").eq(lit("F")).and(by.clone().gt(lit(1970))), by)
            .otherwise(lit(0i64))
            .unwrap();
        assert!(!case.nullable(&schema()).unwrap(), "the logical proof");
        let e = consistent(case.clone(), &schema());
        assert!(matches!(&e, Expr::ScalarFunction(f) if f.func.name() == "nullable"));
        assert!(e.nullable(&schema()).unwrap());
        assert_eq!(e.schema_name().to_string(), case.schema_name().to_string());
    }

    #[test]
    fn other_cases_are_left_alone() {
        let constant = when(col("sex").eq(lit("F")), lit(1))
            .otherwise(lit(0))
            .unwrap();
        assert_eq!(consistent(constant.clone(), &schema()), constant);
        let no_else = when(col("sex").eq(lit("F")), col("birth_year"))
            .end()
            .unwrap();
        assert_eq!(consistent(no_else.clone(), &schema()), no_else);
    }
}
