//! Engine, public reference labels (issue 17 §2): the names beside the codes the console
//! shows (disease 2 → 筋萎縮性側索硬化症 / ALS, prefecture 13 → 東京都 / Tokyo), read once from
//! the ingested **reference** tables of the catalogue (`kind = "reference"`, released freely).
//!
//! Guarantees: only reference tables are read, never a patient table; a table whose code
//! column or name columns cannot be read is left out (labels are cosmetic: the console then
//! shows the bare code); codes come back in domain order (numeric order for numbers, text
//! order otherwise).

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::catalog::{Catalog, TableKind};
use crate::query::plane::RefLabel;

/// Labels per code column: for every reference table with `name_ja` / `name_en`, its
/// public-domain code column (the one with a scope dimension, e.g. `disease_no`).
pub async fn read_reference_labels(
    registry: &Path,
    catalog: &Catalog,
) -> BTreeMap<String, Vec<RefLabel>> {
    let mut out = BTreeMap::new();
    for table in catalog.reference_tables() {
        if table.kind != TableKind::Reference {
            continue;
        }
        let Some(code) = table.columns.iter().find(|c| c.scope.is_some()) else {
            continue;
        };
        if table.column("name_ja").is_none() || table.column("name_en").is_none() {
            continue;
        }
        let file = registry.join(format!("{}.parquet", table.name));
        match read_one(&file, &code.name).await {
            Ok(mut labels) => {
                sort_domain(&mut labels, &code.data_type());
                out.insert(code.name.clone(), labels);
            }
            Err(e) => tracing::warn!(table = %table.name, error = %e, "reference labels not read"),
        }
    }
    out
}

async fn read_one(file: &Path, code: &str) -> datafusion::error::Result<Vec<RefLabel>> {
    let ctx = SessionContext::new();
    let df = ctx
        .read_parquet(
            file.to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await?
        .select_columns(&[code, "name_ja", "name_en"])?;
    let mut labels = Vec::new();
    for batch in df.collect().await? {
        let cols: Vec<_> = (0..3)
            .map(|i| cast(batch.column(i), &DataType::Utf8))
            .collect::<Result<_, _>>()?;
        let as_str = |i: usize| cols[i].as_any().downcast_ref::<StringArray>().cloned();
        let (Some(c), Some(ja), Some(en)) = (as_str(0), as_str(1), as_str(2)) else {
            continue;
        };
        for r in 0..c.len() {
            if c.is_null(r) {
                continue;
            }
            let text = |a: &StringArray| {
                if a.is_null(r) {
                    String::new()
                } else {
                    a.value(r).to_string()
                }
            };
            labels.push(RefLabel {
                code: c.value(r).to_string(),
                ja: text(&ja),
                en: text(&en),
            });
        }
    }
    Ok(labels)
}

fn sort_domain(labels: &mut [RefLabel], t: &DataType) {
    if t.is_integer() {
        labels.sort_by_key(|l| l.code.parse::<i64>().unwrap_or(i64::MAX));
    } else {
        labels.sort_by(|a, b| a.code.cmp(&b.code));
    }
}
