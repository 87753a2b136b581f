//! Disclosure check, cell rendering: one Arrow cell (or scalar) → the JSON value a released
//! result carries. It decides nothing about disclosure; it guarantees that a value has one
//! rendering wherever it appears (released cells, padding values, domain and scope
//! comparison, DP results): integers of every width as JSON integers, floats and decimals
//! as JSON numbers (a non-finite float as `null`), booleans as booleans, everything else
//! (dates as ISO strings) as Arrow's display text.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::common::ScalarValue;
use serde_json::Value;

/// Cast integer columns to Int64 and float/decimal columns to Float64 once per batch, so
/// that [`json_value`] has one case per JSON kind.
pub(super) fn normalize(arr: &ArrayRef) -> ArrayRef {
    let target = match arr.data_type() {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => DataType::Int64,
        DataType::Float16 | DataType::Float32 | DataType::Decimal128(..) => DataType::Float64,
        _ => return arr.clone(),
    };
    cast(arr, &target).unwrap_or_else(|_| arr.clone())
}

/// One cell of any Arrow array as the JSON value a released result would carry.
pub fn cell_to_json(arr: &ArrayRef, r: usize) -> Value {
    json_value(&normalize(arr), r)
}

/// A scalar as the JSON value a released result would carry.
pub fn scalar_to_json(v: &ScalarValue) -> Value {
    v.to_array()
        .map(|a| cell_to_json(&a, 0))
        .unwrap_or(Value::Null)
}

/// One cell of a [`normalize`]d array as JSON.
pub(super) fn json_value(arr: &ArrayRef, r: usize) -> Value {
    if arr.is_null(r) {
        return Value::Null;
    }
    match arr.data_type() {
        DataType::Int64 => Value::from(arr.as_primitive::<Int64Type>().value(r)),
        DataType::UInt64 => Value::from(arr.as_primitive::<UInt64Type>().value(r)),
        DataType::Float64 => {
            serde_json::Number::from_f64(arr.as_primitive::<Float64Type>().value(r))
                .map(Value::Number)
                .unwrap_or(Value::Null)
        }
        DataType::Boolean => Value::Bool(arr.as_boolean().value(r)),
        _ => array_value_to_string(arr, r)
            .map(Value::String)
            .unwrap_or(Value::Null),
    }
}
