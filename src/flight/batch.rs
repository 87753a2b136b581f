//! Flight SQL stage, results: a released answer as one Arrow record batch.
//!
//! The columns keep the types the answer reports (`Int64`, `Utf8`, `Float64`, `Date32`, …;
//! a type name Arrow cannot read, or a column whose values do not convert, travels as
//! `Utf8` text exactly as the HTTP API shows it). A suppressed cell is NULL, as in the
//! JSON `rows`. The schema carries the disclosure record as JSON under the metadata key
//! `kura.disclosure` and the query id under `kura.query_id`, so a client that sees only
//! the Arrow table (pandas via ADBC, R, DBeaver) still has both; Flight SQL's
//! `app_metadata` of the FlightInfo and of its endpoint carry the same JSON.
//!
//! Guarantees: exactly the released values, rows and order; nothing is added that the
//! JSON answer does not hold.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, new_empty_array};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use serde_json::Value;

use crate::privacy::result::ReleasedResult;

/// Schema metadata key of the disclosure record (JSON).
pub const DISCLOSURE: &str = "kura.disclosure";
/// Schema metadata key of the query id.
pub const QUERY_ID: &str = "kura.query_id";

/// One cell as the text Arrow casts from: strings as they are, numbers and booleans in
/// their JSON form, NULL as NULL.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Column `j` of the answer as an array of `target` (or Utf8 if it does not convert).
fn column(result: &ReleasedResult, j: usize, target: &DataType) -> (ArrayRef, DataType) {
    let strings: StringArray = result
        .rows
        .iter()
        .map(|r| r.get(j).and_then(text))
        .collect();
    let strings: ArrayRef = Arc::new(strings);
    if *target == DataType::Utf8 {
        return (strings, DataType::Utf8);
    }
    // `safe: false`: a value that does not convert fails the whole column, which then
    // stays text; it never becomes a silent NULL.
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    match cast_with_options(&strings, target, &options) {
        Ok(a) => (a, target.clone()),
        Err(_) => (strings, DataType::Utf8),
    }
}

/// The answer as a schema (with the disclosure metadata) and one record batch.
pub fn to_batch(query_id: &str, result: &ReleasedResult) -> Result<RecordBatch, ArrowError> {
    let mut fields = Vec::with_capacity(result.columns.len());
    let mut arrays = Vec::with_capacity(result.columns.len());
    for (j, c) in result.columns.iter().enumerate() {
        let target = DataType::from_str(&c.type_name).unwrap_or(DataType::Utf8);
        let (array, data_type) = if result.rows.is_empty() {
            (new_empty_array(&target), target)
        } else {
            column(result, j, &target)
        };
        fields.push(Field::new(&c.name, data_type, true));
        arrays.push(array);
    }
    let schema = Schema::new(fields).with_metadata(metadata(query_id, result));
    RecordBatch::try_new(Arc::new(schema), arrays)
}

/// The schema metadata: query id and disclosure record.
fn metadata(query_id: &str, result: &ReleasedResult) -> HashMap<String, String> {
    let disclosure = serde_json::to_string(&result.disclosure).unwrap_or_default();
    HashMap::from([
        (QUERY_ID.to_string(), query_id.to_string()),
        (DISCLOSURE.to_string(), disclosure),
    ])
}

/// The JSON app metadata of a result's FlightInfo and endpoint.
pub fn app_metadata(query_id: &str, result: &ReleasedResult) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "query_id": query_id,
        "disclosure": result.disclosure,
    }))
    .unwrap_or_default()
}

/// The schema of a batch (for FlightInfo).
pub fn schema(batch: &RecordBatch) -> SchemaRef {
    batch.schema()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::result::{Disclosure, DisclosureMode, ReleasedColumn};
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::Int64Type;
    use serde_json::json;

    fn answer(columns: &[(&str, &str)], rows: Vec<Vec<Value>>) -> ReleasedResult {
        ReleasedResult {
            columns: columns
                .iter()
                .map(|(n, t)| ReleasedColumn {
                    name: (*n).into(),
                    type_name: (*t).into(),
                })
                .collect(),
            rows,
            disclosure: Disclosure {
                mode: DisclosureMode::Suppression,
                threshold: 5,
                suppressed: vec![[1, 1]],
                suppressed_cells: 1,
                differencing: vec![],
                dropped_rows: 0,
                rounding: None,
                epsilon_spent: None,
                epsilon_remaining: None,
                notes: vec![],
                dp: None,
            },
        }
    }

    #[test]
    fn types_survive_and_suppressed_cells_are_null() {
        let a = answer(
            &[
                ("prefecture_code", "Utf8"),
                ("n", "Int64"),
                ("day", "Date32"),
            ],
            vec![
                vec![json!("13"), json!(412), json!("2024-04-01")],
                vec![json!("31"), Value::Null, json!("2024-05-01")],
            ],
        );
        let b = to_batch("q_1", &a).unwrap();
        assert_eq!(b.schema().field(1).data_type(), &DataType::Int64);
        assert_eq!(b.schema().field(2).data_type(), &DataType::Date32);
        let n = b.column(1).as_primitive::<Int64Type>();
        assert_eq!(n.value(0), 412);
        assert!(n.is_null(1), "the suppressed cell is NULL");
        let meta = b.schema().metadata().clone();
        assert_eq!(meta[QUERY_ID], "q_1");
        let d: Value = serde_json::from_str(&meta[DISCLOSURE]).unwrap();
        assert_eq!(d["suppressed"], json!([[1, 1]]));
    }

    #[test]
    fn values_that_do_not_convert_stay_text_not_null() {
        let a = answer(
            &[("x", "Int64")],
            vec![vec![json!("12")], vec![json!("n/a")]],
        );
        let b = to_batch("q_2", &a).unwrap();
        assert_eq!(b.schema().field(0).data_type(), &DataType::Utf8);
        assert_eq!(b.column(0).as_string::<i32>().value(1), "n/a");
        let unknown = answer(&[("x", "NoSuchType")], vec![vec![json!(1)]]);
        let b = to_batch("q_3", &unknown).unwrap();
        assert_eq!(b.schema().field(0).data_type(), &DataType::Utf8);
        let empty = answer(&[("n", "Int64")], vec![]);
        assert_eq!(to_batch("q_4", &empty).unwrap().num_rows(), 0);
    }
}
