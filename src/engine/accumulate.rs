//! Engine stage, pieces shared by kura's aggregates (contributor sets, facility counts, the
//! DP row and group choices): whether a row passes the aggregate's filter, the one binary
//! column their partial states travel in, and the refusal of a call without GROUP BY where
//! only the groups accumulator is written.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::DataFusionError;

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
