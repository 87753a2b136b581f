//! SQL stage 1, error hardening: scalar functions in their NULL-on-failure form.
//!
//! [`SafeFunction`] wraps an allow-listed scalar function. It evaluates the function on the
//! whole batch; only if that fails does it evaluate it again row by row, with every
//! argument as a scalar, and yield NULL for each row on which the function fails. So
//! whether a value is NULL depends only on that row's own arguments (never on the batch it
//! came in, which would depend on other rows), and no data value can turn an answer into
//! an `execution_error`: `to_date('x' || pid)`, `make_date(y, 13, 1)`, `split_part(s, '-', 0)`,
//! `sqrt(-x)`, `regexp_like(s, pid || '(')`, `abs(i32::MIN)` all give NULL where they would
//! have failed. The wrapper keeps the inner function's name, signature, type coercion and
//! output names, so plans and released column names are unchanged; it never forwards the
//! inner function's `simplify`, whose rewrites (e.g. `regexp_like` → `~`) would escape it.
//!
//! Functions that pick an argument without computing on it (`coalesce`, `nullif`, `nvl`,
//! `nvl2`, `ifnull`) and functions without data arguments (`now`, `current_date`, `pi`)
//! cannot fail on a value and must be simplified by DataFusion, so they stay unwrapped
//! ([`CANNOT_FAIL`]). Everything else on the allow-list is wrapped: a function added later
//! is safe by default. The argument caps that keep outputs small are in `output_cap.rs`.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, new_null_array};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// Allow-listed scalar functions that cannot fail on any argument value, with the reason
/// (the table in docs/privacy.md "Allowed functions" repeats it).
pub const CANNOT_FAIL: &[(&str, &str)] = &[
    ("coalesce", "returns one of its arguments; types are checked when planning"),
    ("nullif", "compares two values of one type (comparisons never fail)"),
    ("nvl", "alias of coalesce for two arguments"),
    ("nvl2", "returns one of its arguments"),
    ("ifnull", "alias of coalesce for two arguments"),
    ("now", "no argument: one constant per query"),
    ("current_date", "no argument: one constant per query"),
    ("pi", "no argument: a constant"),
];

/// Whether `name` (lower case, as DataFusion names it) runs unwrapped.
pub fn cannot_fail(name: &str) -> bool {
    CANNOT_FAIL.iter().any(|(n, _)| *n == name)
}

/// `f(args)` in its NULL-on-failure form, unless `f` cannot fail or is already wrapped.
pub fn safe_call(f: ScalarFunction) -> Expr {
    let name = f.func.name().to_ascii_lowercase();
    if cannot_fail(&name) || is_safe(&f.func) {
        return Expr::ScalarFunction(f);
    }
    let wrapped = ScalarUDF::new_from_impl(SafeFunction {
        inner: f.func.clone(),
    });
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(wrapped), f.args))
}

/// Whether `f` is already in its NULL-on-failure form.
pub fn is_safe(f: &ScalarUDF) -> bool {
    f.inner().as_ref().downcast_ref::<SafeFunction>().is_some()
}

/// A scalar function that yields NULL on the rows where `inner` fails.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SafeFunction {
    inner: Arc<ScalarUDF>,
}

impl SafeFunction {
    /// The wrapped function.
    pub fn inner(&self) -> &ScalarUDF {
        &self.inner
    }

    /// Evaluate `inner` once per row on scalar arguments; a failing row is NULL.
    fn row_by_row(&self, args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
        let out_type = args.return_field.data_type().clone();
        let mut pieces: Vec<ArrayRef> = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            pieces.push(self.one_row(args, row, &out_type));
        }
        if pieces.is_empty() {
            return Ok(ColumnarValue::Array(new_null_array(&out_type, 0)));
        }
        let refs: Vec<&dyn datafusion::arrow::array::Array> =
            pieces.iter().map(|a| a.as_ref()).collect();
        Ok(ColumnarValue::Array(concat(&refs)?))
    }

    /// Row `row` as a one-element array of `out_type`, NULL if the function fails there.
    fn one_row(&self, args: &ScalarFunctionArgs, row: usize, out_type: &DataType) -> ArrayRef {
        let value = || -> Result<ArrayRef> {
            let scalars = args
                .args
                .iter()
                .map(|a| match a {
                    ColumnarValue::Scalar(s) => Ok(ColumnarValue::Scalar(s.clone())),
                    ColumnarValue::Array(arr) => {
                        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(arr, row)?))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let one = self.inner.invoke_with_args(ScalarFunctionArgs {
                args: scalars,
                arg_fields: args.arg_fields.clone(),
                number_rows: 1,
                return_field: args.return_field.clone(),
                config_options: args.config_options.clone(),
            })?;
            let arr = one.into_array(1)?;
            if arr.len() != 1 || arr.data_type() != out_type {
                return datafusion::common::exec_err!("unexpected result shape");
            }
            Ok(arr)
        };
        value().unwrap_or_else(|_| new_null_array(out_type, 1))
    }
}

impl ScalarUDFImpl for SafeFunction {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    /// The inner function's type, always nullable: a failing row is NULL.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let f = self.inner.return_field_from_args(args)?;
        Ok(Arc::new(
            Field::new(f.name(), f.data_type().clone(), true).with_metadata(f.metadata().clone()),
        ))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let batch = ScalarFunctionArgs {
            args: args.args.clone(),
            arg_fields: args.arg_fields.clone(),
            number_rows: args.number_rows,
            return_field: args.return_field.clone(),
            config_options: args.config_options.clone(),
        };
        match self.inner.invoke_with_args(batch) {
            Ok(v) => Ok(v),
            Err(_) => self.row_by_row(&args),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, Int64Array, StringArray};
    use datafusion::common::config::ConfigOptions;
    use datafusion::functions::expr_fn::{coalesce, split_part};
    use datafusion::logical_expr::{col, lit};

    use super::*;

    #[test]
    fn failing_rows_are_null_and_the_others_keep_their_value() {
        let Expr::ScalarFunction(f) = split_part(col("s"), lit("-"), col("n")) else {
            panic!("split_part is a scalar function");
        };
        let Expr::ScalarFunction(safe) = safe_call(f) else {
            panic!("still a scalar function");
        };
        assert!(is_safe(&safe.func));
        assert_eq!(safe.func.name(), "split_part", "the name is kept");
        let s: ArrayRef = Arc::new(StringArray::from(vec!["a-b", "a-b", "a-b"]));
        let n: ArrayRef = Arc::new(Int64Array::from(vec![1, 0, 2]));
        let out = safe
            .func
            .invoke_with_args(ScalarFunctionArgs {
                args: vec![ColumnarValue::Array(s), ColumnarValue::Array(n)],
                arg_fields: vec![
                    Arc::new(Field::new("s", DataType::Utf8, true)),
                    Arc::new(Field::new("n", DataType::Int64, true)),
                ],
                number_rows: 3,
                return_field: Arc::new(Field::new("r", DataType::Utf8, true)),
                config_options: Arc::new(ConfigOptions::default()),
            })
            .expect("never fails")
            .into_array(3)
            .unwrap();
        let out = out.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(out.value(0), "a");
        assert!(out.is_null(1), "position 0 fails in split_part");
        assert_eq!(out.value(2), "b");
    }

    #[test]
    fn conditionals_stay_unwrapped() {
        let e = coalesce(vec![col("a"), lit(1)]);
        let Expr::ScalarFunction(f) = e else {
            panic!("coalesce is a scalar function");
        };
        let Expr::ScalarFunction(g) = safe_call(f) else {
            panic!("unchanged");
        };
        assert!(!is_safe(&g.func));
    }
}
