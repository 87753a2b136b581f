//! Flight SQL stage, answers waiting to be fetched. Flight SQL runs a statement in two
//! calls: `GetFlightInfo` (kura runs the query through the gateway here, so the disclosure
//! record can go into the FlightInfo) and `DoGet` with the ticket it returned. Between the
//! two, the released answer waits here.
//!
//! Guarantees: only released answers are held (whose audit event committed); a ticket is
//! 128 random bits and is fetched by the user it was issued to only — another user's
//! ticket is "not found", like an unknown one; answers expire after [`TTL`] and at most
//! [`PER_USER`] wait per user and [`TOTAL`] in all (the oldest go first), so memory stays
//! bounded whatever clients do.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;

/// How long an answer waits for its `DoGet`.
pub const TTL: Duration = Duration::from_secs(600);
/// Answers waiting per user.
pub const PER_USER: usize = 32;
/// Answers waiting in all.
pub const TOTAL: usize = 2048;

struct Waiting {
    owner: String,
    batch: RecordBatch,
    at: Instant,
}

/// The answers waiting for their `DoGet`.
#[derive(Default)]
pub struct Results {
    map: Mutex<HashMap<String, Waiting>>,
}

impl Results {
    /// Keep `batch` for `owner`; returns the ticket.
    pub fn put(&self, owner: &str, batch: RecordBatch) -> Result<String, crate::auth::AuthError> {
        let ticket = crate::auth::random_hex(16)?;
        let mut map = self.map.lock().expect("flight results");
        let now = Instant::now();
        map.retain(|_, w| now.duration_since(w.at) < TTL);
        evict_oldest(&mut map, |w| w.owner == owner, PER_USER - 1);
        evict_oldest(&mut map, |_| true, TOTAL - 1);
        map.insert(
            ticket.clone(),
            Waiting {
                owner: owner.to_string(),
                batch,
                at: now,
            },
        );
        Ok(ticket)
    }

    /// The answer of `ticket` if `owner` holds it and it has not expired. It stays until it
    /// expires, so a client may fetch it again (a retried `DoGet`).
    pub fn get(&self, owner: &str, ticket: &str) -> Option<RecordBatch> {
        let map = self.map.lock().expect("flight results");
        map.get(ticket)
            .filter(|w| w.owner == owner && w.at.elapsed() < TTL)
            .map(|w| w.batch.clone())
    }
}

/// Remove the oldest entries matching `which` until at most `keep` of them remain.
fn evict_oldest(map: &mut HashMap<String, Waiting>, which: impl Fn(&Waiting) -> bool, keep: usize) {
    let mut mine: Vec<(Instant, String)> = map
        .iter()
        .filter(|(_, w)| which(w))
        .map(|(k, w)| (w.at, k.clone()))
        .collect();
    if mine.len() <= keep {
        return;
    }
    mine.sort();
    for (_, k) in mine.iter().take(mine.len() - keep) {
        map.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![n]))]).unwrap()
    }

    #[test]
    fn a_ticket_is_fetched_by_its_owner_only() {
        let r = Results::default();
        let t = r.put("researcher1", batch(1)).unwrap();
        assert_eq!(t.len(), 32);
        assert!(r.get("researcher2", &t).is_none(), "another user's ticket");
        assert!(r.get("researcher1", "no-such-ticket").is_none());
        assert_eq!(r.get("researcher1", &t).unwrap().num_rows(), 1);
    }

    #[test]
    fn each_user_keeps_a_bounded_number_of_answers() {
        let r = Results::default();
        let first = r.put("u", batch(0)).unwrap();
        let mut last = String::new();
        for i in 1..=PER_USER as i64 {
            last = r.put("u", batch(i)).unwrap();
        }
        assert!(r.get("u", &first).is_none(), "the oldest answer went first");
        assert!(r.get("u", &last).is_some());
        let other = r.put("v", batch(9)).unwrap();
        assert!(r.get("v", &other).is_some(), "other users keep theirs");
    }
}
