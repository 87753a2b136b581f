//! Scope: what one approval (or one PMS team's standing access) may see.
//!
//! Scope is never enforced by a filter above the researcher's query: DataFusion merges
//! predicates, so a user expression could run on hidden rows and leak them through an
//! error. Instead each approval gets its own materialised extract (see `extract`), and
//! queries run only over that.

use serde::{Deserialize, Serialize};

/// The approved record scope. `None` on a dimension means "no restriction on it".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Scope {
    /// Approvable datasets (catalogue `[[dataset]]` names); at least one.
    pub datasets: Vec<String>,
    /// Designated disease numbers.
    pub diseases: Option<Vec<i32>>,
    /// Fiscal years of records.
    pub fiscal_years: Option<Vec<i32>>,
    /// Prefecture codes ("01".."47"); `None` = nationwide.
    pub prefectures: Option<Vec<String>>,
    /// Manufacturer codes (PMS teams see only patients treated with their products).
    pub manufacturers: Option<Vec<String>>,
    /// Facility codes (a medical institution sees only the rows written at its own
    /// facility, of the patients it has records of: see `sql::extract`). Left out of the
    /// serialised scope when absent, so extract ids of other scopes did not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facilities: Option<Vec<String>>,
}
