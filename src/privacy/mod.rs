//! Privacy stage: disclosure rules (thresholds, dominance, rounding) applied to executed
//! results, and the shape of a released result.

pub mod result;

pub use result::{Disclosure, DisclosureMode, ReleasedColumn, ReleasedResult};
