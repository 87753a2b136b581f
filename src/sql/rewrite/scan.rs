//! Privacy rewrite rule: table scans (the leaves).
//!
//! A scan of a patient table is [`Kind::Rows`]: its rows are individual patients', and
//! its catalogue tags say which column is the privacy unit `pid`, which identify a
//! facility and which take values only from a public domain. A reference table is
//! [`Kind::Public`]. Every scanned column records its catalogue origin, so a key released
//! unchanged can be padded to its domain later. (VALUES and empty relations are public
//! literals; they are dispatched straight to `public_rel`.) Exercised by every case of
//! `tests/slt/accepted.slt` ("Reference data is public" for the reference side) and
//! `tests/slt/refusals.slt` ("SELECT pid, sex FROM patient": rows at the top).

use datafusion::logical_expr::{LogicalPlan, TableScan};

use super::{Col, KeySource, Kind, Rel, Rewriter};
use crate::catalog::TableKind;
use crate::query::QueryError;

impl Rewriter<'_> {
    pub(super) fn scan(&mut self, plan: &LogicalPlan, scan: &TableScan) -> Result<Rel, QueryError> {
        let name = scan.table_name.table();
        let table = self.catalog.table(name).ok_or_else(|| {
            QueryError::internal("privacy rewrite", format!("table {name} not in catalogue"))
        })?;
        let cols = scan
            .projected_schema
            .fields()
            .iter()
            .map(|f| {
                let c = table.column(f.name());
                Col {
                    pid: c.is_some_and(|c| c.privacy_unit),
                    unit_level: table.kind == TableKind::Patient
                        && (table.one_row_per_patient || c.is_some_and(|c| c.privacy_unit)),
                    facility: c.is_some_and(|c| c.facility),
                    public: c.is_some_and(|c| c.public_domain),
                    key: true,
                    source: c.map(|c| KeySource::Column {
                        table: table.name.clone(),
                        column: c.name.clone(),
                    }),
                    ..Col::default()
                }
            })
            .collect();
        let kind = match table.kind {
            TableKind::Patient => Kind::Rows,
            TableKind::Reference => Kind::Public,
        };
        Ok(Rel {
            plan: plan.clone(),
            kind,
            cols,
            drop_on_fail: false,
        })
    }
}
