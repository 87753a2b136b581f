//! Engine stage, pieces shared by kura's aggregates (contributor sets, facility counts, the
//! DP row and group choices): whether a row passes the aggregate's filter, the one binary
//! column their partial states travel in, the refusal of a call without GROUP BY where
//! only the groups accumulator is written, and how the DP choices add values up.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type};
use datafusion::common::DataFusionError;
use serde::{Deserialize, Serialize};

/// At most this many values per DP choice aggregate (one validity bit each in a `u64`).
pub const MAX_VALUES: usize = 64;

/// How a DP choice aggregate adds a value up per (patient, group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Add {
    /// The number of non-NULL values (`Int64`).
    CountNonNull,
    /// Their sum (`Int64` or `Float64`, as the value; NULL when there is none).
    Sum,
}

impl Add {
    /// The type of a value of type `t` once added up; `None` if it cannot be.
    pub fn output_type(self, t: &DataType) -> Option<DataType> {
        match (self, t) {
            (Add::CountNonNull, _) => Some(DataType::Int64),
            (Add::Sum, DataType::Int64 | DataType::Float64) => Some(t.clone()),
            (Add::Sum, _) => None,
        }
    }
}

/// Row `i` of a value column as a word: the bits of an `f64` (`float`) or of an `i64`.
pub fn value_word(v: &ArrayRef, i: usize, float: bool) -> u64 {
    if float {
        v.as_primitive::<Float64Type>().value(i).to_bits()
    } else {
        v.as_primitive::<Int64Type>().value(i) as u64
    }
}

/// The row passes the aggregate's filter (or there is none).
pub fn passes(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

/// The partial state of aggregate `name`: one binary column labelled `what`.
pub fn binary_state(name: &str, what: &str) -> Vec<FieldRef> {
    vec![Arc::new(Field::new(
        format!("{name}[{what}]"),
        DataType::Binary,
        true,
    ))]
}

/// `function` is only planned grouped; an ungrouped call is a planning bug.
pub fn grouped_only(function: &str) -> DataFusionError {
    DataFusionError::NotImplemented(format!("{function} without GROUP BY"))
}
