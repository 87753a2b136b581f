//! Engine stage: runs guarded, scoped and privacy-rewritten plans on DataFusion under a
//! memory pool, a wall-clock limit and an output row cap, and never lets an engine
//! message (which can contain data values) reach the caller.

// scale-out (issue 15 §3): rewritten plans executed on a Ballista cluster
pub mod accumulate;
#[cfg(feature = "ballista")]
pub mod ballista;
pub mod contributors;
pub mod distinct_count;
pub mod exec;
pub mod keep_groups;
pub mod keep_rows;
pub mod ledger_pids;
// production (issue 14): the global memory pool and the query runtime
pub mod memory;
pub mod patient_index;
pub mod patient_no;
pub mod reference;
pub mod runtime;
pub mod session;
mod set_groups;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use exec::collect_limited;
pub use patient_index::PatientIndex;
pub use session::open_extract;

/// Resource limits applied to every query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory pool size for DataFusion's memory-hungry operators (bytes).
    pub memory_bytes: usize,
    /// Wall-clock limit for planning plus execution.
    #[serde(with = "secs")]
    pub timeout: Duration,
    /// Maximum number of released rows.
    pub max_rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 2 << 30,
            timeout: Duration::from_secs(60),
            max_rows: 10_000,
        }
    }
}

impl Limits {
    /// The row cap for a plan whose raw output is filtered before release (failing rows
    /// under suppression, groups outside the key domain under DP): some slack over the
    /// released row cap, which is enforced exactly on the released rows.
    pub fn for_raw_output(&self) -> Limits {
        Limits {
            max_rows: self
                .max_rows
                .saturating_mul(4)
                .max(self.max_rows.saturating_add(1000)),
            ..self.clone()
        }
    }
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}
