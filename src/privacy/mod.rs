//! Privacy stage: disclosure rules (thresholds, dominance, rounding) applied to executed
//! results, the differential-privacy mechanisms, and the shape of a released result.

pub mod budget;
pub mod disclosure;
pub mod dp;
pub mod ledger;
pub mod result;
pub mod rules;

pub use result::{Disclosure, DisclosureMode, ReleasedColumn, ReleasedResult};
pub use rules::{Defences, DisclosureRules, RuleSet, RulesError};
