//! SQL stage 1, error hardening: date and time arithmetic in a NULL-on-failure form.
//!
//! `date ± interval` (and the same on timestamps, times and durations) is computed by
//! Arrow's checked kernels, which fail the whole query when one row's result leaves the
//! type's range: `make_date(y, 1, 1) + INTERVAL '2147464000 days'` overflows for the rows
//! whose date is late enough, so the error class would say whether one hidden patient's
//! row exists (issue 11, item 3). [`SafeTemporal`] computes the same operator on the
//! batch; only if that fails does it compute it row by row and yield NULL for each row
//! that fails — so a value is NULL because of its own row, never because of the batch.
//! Integer arithmetic wraps and float arithmetic goes to infinity (they cannot fail);
//! DECIMAL values are refused (`decimal.rs`); division and modulo get a NULL divisor
//! (`guard::harden`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, new_null_array};
use datafusion::arrow::compute::concat;
use datafusion::arrow::compute::kernels::numeric;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};

/// `left op right` in its NULL-on-failure form when it is date/time arithmetic.
pub fn hardened(b: &BinaryExpr, schema: &DFSchema) -> Option<Expr> {
    if !matches!(b.op, Operator::Plus | Operator::Minus) {
        return None;
    }
    let (l, r) = (
        b.left.get_type(schema).ok()?,
        b.right.get_type(schema).ok()?,
    );
    if !(temporal(&l) || temporal(&r)) {
        return None;
    }
    let safe = SafeTemporal::new(b.op);
    if !safe.computes(&l, &r) {
        return None;
    }
    let udf = ScalarUDF::new_from_impl(safe);
    Some(Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(udf),
        vec![(*b.left).clone(), (*b.right).clone()],
    )))
}

fn temporal(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(..)
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Interval(_)
            | DataType::Duration(_)
    )
}

/// Date/time `+` or `-` that yields NULL on the rows where Arrow's kernel fails.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SafeTemporal {
    op: Operator,
    name: &'static str,
    signature: Signature,
}

impl SafeTemporal {
    fn new(op: Operator) -> Self {
        let name = if op == Operator::Plus {
            "__kura_safe_date_plus"
        } else {
            "__kura_safe_date_minus"
        };
        Self {
            op,
            name,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }

    /// `+` (`plus`) or `-` as a function (what a Ballista node rebuilds from the plan).
    pub fn udf(plus: bool) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self::new(if plus {
            Operator::Plus
        } else {
            Operator::Minus
        }))
    }

    /// Whether this is `+` (else `-`).
    pub fn is_plus(&self) -> bool {
        self.op == Operator::Plus
    }

    /// Whether Arrow's kernel takes these operand types and gives the type the planner
    /// expects (tried on typed NULLs); otherwise the expression is left as DataFusion
    /// plans it.
    fn computes(&self, l: &DataType, r: &DataType) -> bool {
        let (Ok(ln), Ok(rn)) = (ScalarValue::try_from(l), ScalarValue::try_from(r)) else {
            return false;
        };
        let expected = self.return_type(&[l.clone(), r.clone()]);
        let got = self.apply(&ColumnarValue::Scalar(ln), &ColumnarValue::Scalar(rn));
        matches!((expected, got), (Ok(t), Ok(v)) if v.data_type() == t)
    }

    fn apply(&self, l: &ColumnarValue, r: &ColumnarValue) -> Result<ColumnarValue> {
        let is_scalar = matches!((l, r), (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)));
        let (l, r) = (datum(l)?, datum(r)?);
        let out = match self.op {
            Operator::Plus => numeric::add(l.as_ref(), r.as_ref())?,
            _ => numeric::sub(l.as_ref(), r.as_ref())?,
        };
        Ok(if is_scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }

    /// One row at a time; a failing row is NULL.
    fn row_by_row(&self, args: &ScalarFunctionArgs, out_type: &DataType) -> ColumnarValue {
        let n = args.number_rows;
        let one = |row: usize| -> Result<ArrayRef> {
            let pick = |v: &ColumnarValue| -> Result<ColumnarValue> {
                Ok(match v {
                    ColumnarValue::Scalar(s) => ColumnarValue::Scalar(s.clone()),
                    ColumnarValue::Array(a) => {
                        ColumnarValue::Scalar(ScalarValue::try_from_array(a, row)?)
                    }
                })
            };
            let v = self.apply(&pick(&args.args[0])?, &pick(&args.args[1])?)?;
            let a = v.into_array(1)?;
            if a.data_type() != out_type {
                return datafusion::common::exec_err!("unexpected result type");
            }
            Ok(a)
        };
        let pieces: Vec<ArrayRef> = (0..n)
            .map(|row| one(row).unwrap_or_else(|_| new_null_array(out_type, 1)))
            .collect();
        let refs: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
        let all = if refs.is_empty() {
            Ok(new_null_array(out_type, 0))
        } else {
            concat(&refs)
        };
        ColumnarValue::Array(all.unwrap_or_else(|_| new_null_array(out_type, n)))
    }
}

/// A value as an Arrow datum (a scalar stays a one-element scalar datum).
fn datum(v: &ColumnarValue) -> Result<Box<dyn datafusion::arrow::array::Datum>> {
    Ok(match v {
        ColumnarValue::Array(a) => Box::new(a.clone()),
        ColumnarValue::Scalar(s) => Box::new(s.to_scalar()?),
    })
}

impl ScalarUDFImpl for SafeTemporal {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        BinaryTypeCoercer::new(&arg_types[0], &self.op, &arg_types[1]).get_result_type()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let out_type = args.return_field.data_type().clone();
        match self.apply(&args.args[0], &args.args[1]) {
            Ok(ColumnarValue::Array(a)) if a.data_type() == &out_type => {
                Ok(ColumnarValue::Array(a))
            }
            Ok(ColumnarValue::Scalar(s)) if s.data_type() == out_type => {
                Ok(ColumnarValue::Scalar(s))
            }
            _ => Ok(self.row_by_row(&args, &out_type)),
        }
    }
}
