//! Privacy rewrite check: the allow-list of aggregates over patient rows.
//!
//! Only aggregates that summarise many patients into one value may run over patients
//! (`ALLOWED_AGGREGATES`); those that can carry one patient's own values out (regression
//! and correlation coefficients, first/last value: `PER_PATIENT_AGGREGATES`) run only
//! inside a per-patient `GROUP BY pid`, whose result is not released; anything else, and
//! `SUM(DISTINCT …)` over patients, is refused. Exercised by `tests/slt/refusals.slt`
//! (`array_agg(pid)`) and `tests/slt/rewrite/aggregate.slt` (`corr` over patients and per
//! patient, `SUM(DISTINCT …)`).

use crate::query::QueryError;
use crate::sql::guard::{ALLOWED_AGGREGATES, PER_PATIENT_AGGREGATES};

/// Refuse aggregate `name` (lower case) unless it is allowed here. `per_patient`: inside a
/// GROUP BY pid, where the result is not released.
pub(super) fn check_allowed(
    name: &str,
    distinct: bool,
    per_patient: bool,
) -> Result<(), QueryError> {
    let per_patient_only = PER_PATIENT_AGGREGATES.contains(&name);
    if per_patient_only && !per_patient {
        return Err(QueryError::UnsupportedAggregate {
            message: format!(
                "`{name}` over patients would release one patient's values; use it only inside a per-patient subquery (… GROUP BY pid) and aggregate its result / `{name}` は患者ごとの集計（GROUP BY pid）の中でのみ使えます"
            ),
        });
    }
    if !per_patient_only && !ALLOWED_AGGREGATES.contains(&name) {
        return Err(QueryError::UnsupportedAggregate {
            message: format!(
                "`{name}` is not allowed over patient data / `{name}` は患者データには使えません"
            ),
        });
    }
    if name == "sum" && distinct && !per_patient {
        return Err(QueryError::UnsupportedAggregate {
            message: "SUM(DISTINCT …) is not supported over patients; use SUM / SUM(DISTINCT …) には対応していません".into(),
        });
    }
    Ok(())
}
