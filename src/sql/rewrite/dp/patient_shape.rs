//! DP rewrite, what the data allows without bounding: two facts about the aggregation's
//! input that the catalogue and the relation walk prove, never the query's say-so.
//!
//! - **One group per patient**: every GROUP BY key is a function of the patient alone
//!   (`Col::unit_level`: the pid, a column of a `one_row_per_patient` table reached
//!   through inner joins on pid, a per-patient aggregate, or a deterministic expression
//!   of those). A patient's rows then all fall in one group, so `L` is 1 whatever the
//!   approval allows, and the random choice of groups (P3) has nothing to do.
//! - **One row per patient**: the rows are a scan of a `one_row_per_patient` table under
//!   filters, projections and aliases only (ingest and extract build refuse a source with
//!   a second row for a patient). `m` is then 1 and neither the row choice (P1) nor the
//!   per-patient pre-aggregation (P2) is needed.
//!
//! The sensitivities of `privacy::dp::sensitivity` are computed from the bounds these
//! facts give (`DpPlan::effective`), so a count by sex over `patient` has sensitivity 1,
//! as SmartNoise SQL gives it with `max_ids: 1`.

use datafusion::logical_expr::{Aggregate, LogicalPlan};

use super::Rows;
use crate::catalog::Catalog;
use crate::sql::rewrite::Rewriter;

/// What the input of the aggregation guarantees per patient.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PatientShape {
    /// Every patient falls in at most one group.
    pub one_group: bool,
    /// Every patient has at most one row.
    pub one_row: bool,
}

/// The shape of `rows`, the input of `aggregate`.
pub(super) fn shape(
    rw: &Rewriter,
    aggregate: &Aggregate,
    rows: &Rows,
    catalog: &Catalog,
) -> PatientShape {
    let one_row = one_row(&aggregate.input, catalog);
    let keys_of_patient = aggregate
        .group_expr
        .iter()
        .all(|g| rw.derive(g, &rows.rel).is_ok_and(|c| c.unit_level));
    PatientShape {
        one_group: one_row || keys_of_patient,
        one_row,
    }
}

/// At most one row per patient: a one-row-per-patient table, filtered and projected.
fn one_row(plan: &LogicalPlan, catalog: &Catalog) -> bool {
    match plan {
        LogicalPlan::TableScan(s) => catalog
            .table(s.table_name.table())
            .is_some_and(|t| t.one_row_per_patient),
        LogicalPlan::Projection(p) => one_row(&p.input, catalog),
        LogicalPlan::Filter(f) => one_row(&f.input, catalog),
        LogicalPlan::SubqueryAlias(a) => one_row(&a.input, catalog),
        _ => false,
    }
}
