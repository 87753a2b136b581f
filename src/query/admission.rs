//! Query stage, admission: what one server shares between all requests of the query
//! stage — the per-extract locks (`serial.rs`) and the per-user limit on queries in flight.
//!
//! Guarantees: one instance lives for the whole server (in `http::AppState`), so the
//! per-extract serialisation holds across requests (a gateway built per request with its
//! own locks serialised nothing); a user never has more than `per_user` queries running —
//! one more is refused at once with `429 too_many_queries` (audited like every refusal),
//! so one account cannot take every execution slot or the whole memory pool while the
//! others wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use super::serial::ExtractLocks;

/// Queries one user may run at once unless configured.
pub const DEFAULT_PER_USER: usize = 4;

/// The query stage's shared admission state.
#[derive(Debug)]
pub struct Admission {
    pub(super) extracts: Arc<ExtractLocks>,
    /// One line for every suppression query of the server, from its first ledger read to
    /// its commit (`serial.rs`; differencing across applications).
    pub(super) ledger_line: Arc<tokio::sync::Mutex<()>>,
    per_user: usize,
    users: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Default for Admission {
    fn default() -> Self {
        Self::new(DEFAULT_PER_USER)
    }
}

impl Admission {
    pub fn new(per_user: usize) -> Self {
        Self {
            extracts: Arc::default(),
            ledger_line: Arc::default(),
            per_user: per_user.max(1),
            users: Mutex::default(),
        }
    }

    /// The most queries one user may run at once.
    pub fn per_user(&self) -> usize {
        self.per_user
    }

    /// Wait for, and hold, the per-extract lock named `key` (an extract id; the output
    /// airlock also orders the decisions on one request under `release:<id>`).
    pub async fn hold_extract(&self, key: &str) -> OwnedMutexGuard<()> {
        self.extracts.hold(key).await
    }

    /// A slot for one more query of `user`, held until the permit is dropped; `None`
    /// when the user already runs `per_user` queries.
    pub fn admit(&self, user: &str) -> Option<OwnedSemaphorePermit> {
        let slots = {
            let mut users = self.users.lock().expect("admission users");
            users
                .entry(user.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_user)))
                .clone()
        };
        slots.try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_gets_their_own_slots() {
        let a = Admission::new(2);
        let p1 = a.admit("alice").unwrap();
        let _p2 = a.admit("alice").unwrap();
        assert!(
            a.admit("alice").is_none(),
            "a third query of alice waits for none"
        );
        assert!(a.admit("bob").is_some(), "bob is not held up by alice");
        drop(p1);
        assert!(
            a.admit("alice").is_some(),
            "a finished query frees its slot"
        );
    }
}
