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
use datafusion::arrow::compute::{CastOptions, cast_with_options, concat};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::type_coercion::functions::fields_with_udf;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// Allow-listed scalar functions that cannot fail on any argument value, with the reason
/// (the table in docs/privacy.md "Allowed functions" repeats it).
pub const CANNOT_FAIL: &[(&str, &str)] = &[
    (
        "coalesce",
        "returns one of its arguments; types are checked when planning",
    ),
    (
        "nullif",
        "compares two values of one type (comparisons never fail)",
    ),
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
    let wrapped = SafeFunction::wrap(f.func.clone());
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(wrapped), f.args))
}

/// Whether `f` is already in its NULL-on-failure form.
pub fn is_safe(f: &ScalarUDF) -> bool {
    f.inner().as_ref().downcast_ref::<SafeFunction>().is_some()
}

/// A scalar function that yields NULL on the rows where `inner` fails.
///
/// The wrapper coerces the arguments itself, with casts that yield NULL where a value does
/// not fit (`round(x, 9223372036854775807)` would otherwise fail in the Int64 → Int32 cast
/// the planner inserts in front of the function, outside any wrapper).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SafeFunction {
    inner: Arc<ScalarUDF>,
    /// User-defined: the planner inserts no casts; [`SafeFunction::coerced`] does.
    signature: Signature,
}

impl SafeFunction {
    /// `inner` in its NULL-on-failure form.
    pub fn wrap(inner: Arc<ScalarUDF>) -> ScalarUDF {
        ScalarUDF::new_from_impl(SafeFunction {
            signature: Signature::user_defined(inner.signature().volatility),
            inner,
        })
    }

    /// The wrapped function.
    pub fn inner(&self) -> &ScalarUDF {
        &self.inner
    }

    /// The argument fields the inner function's signature asks for.
    fn inner_fields(&self, fields: &[FieldRef]) -> Result<Vec<FieldRef>> {
        fields_with_udf(fields, self.inner.as_ref())
    }

    /// `args` cast to what the inner function takes, NULL where a value does not fit.
    fn coerced(&self, args: ScalarFunctionArgs) -> Result<ScalarFunctionArgs> {
        let fields = self.inner_fields(&args.arg_fields)?;
        let options = CastOptions {
            safe: true,
            ..Default::default()
        };
        let values = args
            .args
            .into_iter()
            .zip(&fields)
            .map(|(v, f)| match v {
                ColumnarValue::Array(a) if a.data_type() != f.data_type() => Ok(
                    ColumnarValue::Array(cast_with_options(&a, f.data_type(), &options)?),
                ),
                ColumnarValue::Scalar(s) if &s.data_type() != f.data_type() => Ok(
                    ColumnarValue::Scalar(s.cast_to_with_options(f.data_type(), &options)?),
                ),
                other => Ok(other),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ScalarFunctionArgs {
            args: values,
            arg_fields: fields,
            ..args
        })
    }

    /// Evaluate `inner` once per row on scalar arguments; a failing row is NULL.
    fn row_by_row(&self, args: &ScalarFunctionArgs) -> ColumnarValue {
        let out_type = args.return_field.data_type().clone();
        let mut pieces: Vec<ArrayRef> = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            pieces.push(self.one_row(args, row, &out_type));
        }
        let refs: Vec<&dyn datafusion::arrow::array::Array> =
            pieces.iter().map(|a| a.as_ref()).collect();
        let all = if refs.is_empty() {
            Ok(new_null_array(&out_type, 0))
        } else {
            concat(&refs)
        };
        ColumnarValue::Array(all.unwrap_or_else(|_| new_null_array(&out_type, args.number_rows)))
    }

    /// The inner function; a panic counts as a failure.
    fn invoke_inner(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let inner = &self.inner;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            inner.invoke_with_args(args)
        }))
        .unwrap_or_else(|_| datafusion::common::exec_err!("function panicked"))
    }

    /// Row `row` as a one-element array of `out_type`, NULL if the function fails there.
    fn one_row(&self, args: &ScalarFunctionArgs, row: usize, out_type: &DataType) -> ArrayRef {
        let value = || -> Result<ArrayRef> {
            let scalars = args
                .args
                .iter()
                .map(|a| match a {
                    ColumnarValue::Scalar(s) => Ok(ColumnarValue::Scalar(s.clone())),
                    ColumnarValue::Array(arr) => Ok(ColumnarValue::Scalar(
                        ScalarValue::try_from_array(arr, row)?,
                    )),
                })
                .collect::<Result<Vec<_>>>()?;
            let one = self.invoke_inner(clone_args(args, scalars, 1))?;
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
        &self.signature
    }

    /// Arguments stay as they are (a planning error if the inner function refuses them).
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let fields: Vec<FieldRef> = arg_types
            .iter()
            .map(|t| Arc::new(Field::new("a", t.clone(), true)))
            .collect();
        self.inner_fields(&fields)?;
        Ok(arg_types.to_vec())
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let fields: Vec<FieldRef> = arg_types
            .iter()
            .map(|t| Arc::new(Field::new("a", t.clone(), true)))
            .collect();
        let inner: Vec<DataType> = self
            .inner_fields(&fields)?
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        self.inner.return_type(&inner)
    }

    /// The inner function's type for the coerced arguments, always nullable: a failing
    /// row is NULL.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let fields = self.inner_fields(args.arg_fields)?;
        let options = CastOptions {
            safe: true,
            ..Default::default()
        };
        let scalars: Vec<Option<ScalarValue>> = args
            .scalar_arguments
            .iter()
            .zip(&fields)
            .map(|(s, f)| s.and_then(|s| s.cast_to_with_options(f.data_type(), &options).ok()))
            .collect();
        let refs: Vec<Option<&ScalarValue>> = scalars.iter().map(Option::as_ref).collect();
        let f = self.inner.return_field_from_args(ReturnFieldArgs {
            arg_fields: &fields,
            scalar_arguments: &refs,
        })?;
        Ok(Arc::new(
            Field::new(f.name(), f.data_type().clone(), true).with_metadata(f.metadata().clone()),
        ))
    }

    /// Never fails: a batch the inner function fails on (or panics on) is evaluated row
    /// by row, and a row that still fails is NULL.
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let out_type = args.return_field.data_type().clone();
        let rows = args.number_rows;
        let Ok(args) = self.coerced(args) else {
            return Ok(ColumnarValue::Array(new_null_array(&out_type, rows)));
        };
        match self.invoke_inner(clone_args(&args, args.args.clone(), rows)) {
            Ok(v) => Ok(v),
            Err(_) => Ok(self.row_by_row(&args)),
        }
    }
}

fn clone_args(
    args: &ScalarFunctionArgs,
    values: Vec<ColumnarValue>,
    rows: usize,
) -> ScalarFunctionArgs {
    ScalarFunctionArgs {
        args: values,
        arg_fields: args.arg_fields.clone(),
        number_rows: rows,
        return_field: args.return_field.clone(),
        config_options: args.config_options.clone(),
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
                args: vec![
                    ColumnarValue::Array(s),
                    ColumnarValue::Scalar(ScalarValue::from("-")),
                    ColumnarValue::Array(n),
                ],
                arg_fields: vec![
                    Arc::new(Field::new("s", DataType::Utf8, true)),
                    Arc::new(Field::new("d", DataType::Utf8, false)),
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
