//! Privacy stage, the disclosure check: executed batches + [`Release`] → [`ReleasedResult`].
//!
//! The last gate before anything leaves. For every row and every released column it
//! evaluates the column's guards (contributor count ≥ k, distinct facilities ≥ facility_k,
//! nk-dominance and p% for SUM on per-patient totals, non-negative contributions). A row
//! with a failing cell stays — failing cells set to null and listed in `suppressed` — only
//! if all its group keys are public-domain values; otherwise it is dropped and counted.
//! Hidden helper columns never leave. Counts are rounded if the rules ask for it. The
//! row cap is enforced on what is released.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::arrow::util::display::array_value_to_string;
use serde_json::Value;

use crate::engine::QueryError;
use crate::privacy::result::{Disclosure, DisclosureMode, ReleasedColumn, ReleasedResult};
use crate::privacy::rules::RuleSet;
use crate::sql::privacy::{Guard, Release};

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::Internal {
        detail: format!("disclosure check: {e}"),
    }
}

/// Apply the disclosure rules to an executed result.
pub fn check(
    batches: &[RecordBatch],
    release: &Release,
    rules: &RuleSet,
    max_rows: usize,
) -> Result<ReleasedResult, QueryError> {
    let mut rows: Vec<Vec<Value>> = Vec::new();
    let mut suppressed: Vec<[usize; 2]> = Vec::new();
    let mut dropped_rows = 0usize;
    let columns: Vec<ReleasedColumn> = match batches.first() {
        Some(b) => release
            .columns
            .iter()
            .map(|c| ReleasedColumn {
                name: c.name.clone(),
                type_name: b.schema().field(c.index).data_type().to_string(),
            })
            .collect(),
        None => release
            .columns
            .iter()
            .map(|c| ReleasedColumn {
                name: c.name.clone(),
                type_name: "Null".into(),
            })
            .collect(),
    };
    let any_key_nonpublic =
        release.drop_on_fail || release.columns.iter().any(|c| c.key && !c.public);

    // Guards of inner aggregates that were sealed in the plan have no columns here.
    let used: std::collections::BTreeSet<usize> = release
        .columns
        .iter()
        .flat_map(|c| c.guards.iter().copied())
        .collect();
    for batch in batches {
        let helpers = Helpers::new(batch, &release.guards, &used)?;
        let arrays: Vec<ArrayRef> = release
            .columns
            .iter()
            .map(|c| normalize(batch.column(c.index)))
            .collect();
        for r in 0..batch.num_rows() {
            let pass: Vec<bool> = (0..release.guards.len())
                .map(|g| !used.contains(&g) || helpers.pass(g, r, rules))
                .collect();
            let failing: Vec<usize> = release
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.guards.iter().any(|&g| !pass[g]))
                .map(|(k, _)| k)
                .collect();
            if !failing.is_empty() && any_key_nonpublic {
                dropped_rows += 1;
                continue;
            }
            let out_row = rows.len();
            let mut row = Vec::with_capacity(release.columns.len());
            for (k, c) in release.columns.iter().enumerate() {
                let arr = &arrays[k];
                if failing.contains(&k) && !(c.key && c.public) {
                    row.push(Value::Null);
                    suppressed.push([out_row, k]);
                    continue;
                }
                let mut v = json_value(arr, r);
                if c.count_like
                    && let (Some(base), Some(n)) = (rules.rounding, v.as_i64())
                {
                    v = Value::from(round_to(n, base));
                }
                row.push(v);
            }
            rows.push(row);
            if rows.len() > max_rows {
                return Err(QueryError::ResourceLimit {
                    message: format!(
                        "the result has more than {max_rows} rows; aggregate more coarsely or add a filter / 結果が {max_rows} 行を超えました。集計単位を粗くするか条件を追加してください"
                    ),
                });
            }
        }
    }

    let mut notes = Vec::new();
    if !suppressed.is_empty() {
        notes.push(format!(
            "{} cell(s) were suppressed: fewer than {} contributing patients, fewer than {} facilities, or one or two patients dominating a sum. / {} 個のセルを秘匿しました（寄与患者数 {} 未満、施設数 {} 未満、または少数の患者が合計の大半を占めるため）。",
            suppressed.len(), rules.k, rules.facility_k, suppressed.len(), rules.k, rules.facility_k
        ));
    }
    if dropped_rows > 0 {
        notes.push(format!(
            "{dropped_rows} row(s) were removed because a cell failed the rules and their keys are not public-domain values. / 規則を満たさないセルを含み、かつキーが公開ドメインの値でない {dropped_rows} 行を除外しました。"
        ));
    }
    if release.inner_sealed {
        notes.push("Cells of an inner aggregation that failed the rules were removed before the outer computation. / 内側の集計で規則を満たさないセルは、外側の計算の前に除外しました。".to_string());
    }
    if let Some(base) = rules.rounding {
        notes.push(format!(
            "Counts are rounded to a multiple of {base}. / 件数は {base} の倍数に丸めています。"
        ));
    }
    Ok(ReleasedResult {
        columns,
        rows,
        disclosure: Disclosure {
            mode: DisclosureMode::Suppression,
            threshold: rules.k,
            suppressed_cells: suppressed.len(),
            suppressed,
            dropped_rows,
            rounding: rules.rounding,
            epsilon_spent: None,
            epsilon_remaining: None,
            notes,
        },
    })
}

fn round_to(n: i64, base: u32) -> i64 {
    let b = base as i64;
    ((n + b / 2).div_euclid(b)) * b
}

/// Helper columns of one batch, cast once.
struct Helpers<'a> {
    guards: &'a [Guard],
    ints: HashMap<String, ArrayRef>,
    floats: HashMap<String, ArrayRef>,
}

impl<'a> Helpers<'a> {
    fn new(
        batch: &RecordBatch,
        guards: &'a [Guard],
        used: &std::collections::BTreeSet<usize>,
    ) -> Result<Self, QueryError> {
        let mut ints = HashMap::new();
        let mut floats = HashMap::new();
        let get = |name: &str| -> Result<ArrayRef, QueryError> {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| internal(format!("helper column {name} missing")))
        };
        for g in used.iter().map(|&i| &guards[i]) {
            for n in std::iter::once(&g.n).chain(g.facilities.iter()) {
                ints.insert(
                    n.clone(),
                    cast(&get(n)?, &DataType::Int64).map_err(internal)?,
                );
            }
            if let Some(d) = &g.dominance {
                for n in [&d.top1, &d.top2, &d.total, &d.min] {
                    floats.insert(
                        n.clone(),
                        cast(&get(n)?, &DataType::Float64).map_err(internal)?,
                    );
                }
            }
        }
        Ok(Self {
            guards,
            ints,
            floats,
        })
    }

    fn int(&self, name: &str, r: usize) -> Option<i64> {
        let a = self.ints.get(name)?.as_primitive::<Int64Type>();
        a.is_valid(r).then(|| a.value(r))
    }

    fn float(&self, name: &str, r: usize) -> Option<f64> {
        let a = self.floats.get(name)?.as_primitive::<Float64Type>();
        a.is_valid(r).then(|| a.value(r))
    }

    /// Fail closed: a missing or NULL helper fails the guard.
    fn pass(&self, g: usize, r: usize, rules: &RuleSet) -> bool {
        let guard = &self.guards[g];
        if self.int(&guard.n, r).is_none_or(|n| n < rules.k as i64) {
            return false;
        }
        for f in &guard.facilities {
            if self.int(f, r).is_none_or(|n| n < rules.facility_k as i64) {
                return false;
            }
        }
        if let Some(d) = &guard.dominance
            && (rules.dominance_k < 1.0 || rules.p_ratio > 0.0)
        {
            let (Some(t1), Some(t2), Some(tot), Some(mn)) = (
                self.float(&d.top1, r),
                self.float(&d.top2, r),
                self.float(&d.total, r),
                self.float(&d.min, r),
            ) else {
                return false;
            };
            // The rules are defined for non-negative contributions only.
            if mn < 0.0 || t2 > rules.dominance_k * tot || tot - t2 < rules.p_ratio * t1 {
                return false;
            }
        }
        true
    }
}

/// Cast integer columns to Int64 and float/decimal columns to Float64 once per batch.
fn normalize(arr: &ArrayRef) -> ArrayRef {
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

/// One cell as JSON: numbers stay numbers, dates as ISO strings, other types as text.
fn json_value(arr: &ArrayRef, r: usize) -> Value {
    if arr.is_null(r) {
        return Value::Null;
    }
    match arr.data_type() {
        DataType::Int64 => Value::from(arr.as_primitive::<Int64Type>().value(r)),
        DataType::UInt64 => Value::from(
            arr.as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
                .value(r),
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_multiple() {
        assert_eq!(round_to(12, 5), 10);
        assert_eq!(round_to(13, 5), 15);
        assert_eq!(round_to(0, 5), 0);
    }
}
