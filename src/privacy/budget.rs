//! Privacy stage, DP budget: the ε ledger as a service with reserve → settle, over the
//! store's ledger tables (`store::budget`).
//!
//! Guarantees: ε is reserved before a DP query reads any data, atomically against the
//! yearly budget (spent + reserved + ε ≤ budget), so concurrent queries never overspend;
//! once the data plane has been asked to run the query (patient data may have been read)
//! the reservation settles as `spent`, whether an answer was released or the run failed
//! ([`Ledger::after_read`]) — its error class is then a paid answer, not a free oracle;
//! a reservation settles only inside the transaction that writes the query's history row
//! and audit event; reservations that cannot settle (a crash, a dropped request, a failed
//! audit write) are converted to spent by the store, so a crash can over-charge, never
//! under-charge. Budgets are per application and fiscal year and renew on 1 April
//! ([`renews_on`]).

use std::time::Duration;

use chrono::NaiveDate;
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::budget::{BudgetUse, CacheKey, CachedRelease, LedgerState, Reservation, Settle};
use crate::store::{Store, StoreError};

/// The date a fiscal year's budget renews: 1 April of the next year.
pub fn renews_on(fiscal_year: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(fiscal_year + 1, 4, 1).expect("1 April exists")
}

/// What a `budget_exhausted` refusal adds to the error: what was asked, what is left,
/// and when the budget renews (fiscal years start on 1 April).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BudgetRefusal {
    pub epsilon_requested: f64,
    pub epsilon_budget: f64,
    /// Spent plus reserved by queries still running.
    pub epsilon_spent: f64,
    pub epsilon_remaining: f64,
    pub fiscal_year: i32,
    pub renews_on: NaiveDate,
}

impl BudgetRefusal {
    pub fn new(epsilon_requested: f64, fiscal_year: i32, u: BudgetUse) -> Self {
        Self {
            epsilon_requested,
            epsilon_budget: u.budget,
            epsilon_spent: u.used,
            epsilon_remaining: u.remaining(),
            fiscal_year,
            renews_on: renews_on(fiscal_year),
        }
    }
}

/// The ε ledger of every DP application.
#[derive(Clone)]
pub struct Ledger {
    store: Store,
    /// Reservations older than this can no longer settle (the request was cut off).
    stale_after: Duration,
    /// Attack-test control only ([`Ledger::refunding_after_read`]): give a failed run's
    /// reservation back, as kura did before issue 11.
    refund_after_read: bool,
}

impl Ledger {
    pub fn new(store: Store, stale_after: Duration) -> Self {
        Self {
            store,
            stale_after,
            refund_after_read: false,
        }
    }

    /// The *control* of the no-refund attack test, never used outside tests: a ledger
    /// that returns the reservation of a run that failed after reading data, so the test
    /// can show that the error class of such a query would be a free oracle. (The
    /// defence lives in the ledger, not in [`crate::privacy::Defences`]: those switches
    /// travel with the disclosure rules to the data plane, which never sees the budget.)
    #[doc(hidden)]
    pub fn refunding_after_read(mut self) -> Self {
        self.refund_after_read = true;
        self
    }

    /// ε spent or reserved by `application` in `fiscal_year`.
    pub async fn used(&self, application: &str, fiscal_year: i32) -> Result<f64, StoreError> {
        self.store.epsilon_spent(application, fiscal_year).await
    }

    /// The stored answer to the identical question on the same extract version.
    pub async fn cached(&self, key: &CacheKey) -> Result<Option<CachedRelease>, StoreError> {
        self.store.dp_cached(key).await
    }

    /// Reserve ε for one query; `Err(use)` when the budget cannot cover it.
    pub async fn reserve(
        &self,
        r: &Reservation,
        budget: f64,
    ) -> Result<Result<(), BudgetUse>, StoreError> {
        Ok(self
            .store
            .reserve_epsilon(r, budget, self.stale_after)
            .await?
            .map(|_| ()))
    }

    /// The settlement of a released answer: its ε is spent.
    pub fn spend(query_id: &str) -> Settle {
        Settle {
            query_id: query_id.to_string(),
            state: LedgerState::Spent,
        }
    }

    /// The settlement of a run that failed after the data plane was asked to run it
    /// (execution error, resource limit, timeout, a failed release step): patient data
    /// may have been read, so its ε is spent like that of an answer.
    pub fn after_read(&self, query_id: &str) -> Settle {
        if self.refund_after_read {
            return Settle {
                query_id: query_id.to_string(),
                state: LedgerState::Released,
            };
        }
        Self::spend(query_id)
    }
}
