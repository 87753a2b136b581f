//! Query stage, the record: every query attempt — refused, failed or answered — writes its
//! history row and its audit event (and settles its ε reservation, stores a fresh DP
//! answer, or appends a suppression answer's contributor sets to the release ledger) in
//! ONE store transaction.
//!
//! Guarantees: no audit, no answer — [`Recorder::answered`] fails when that transaction
//! fails, and the caller then returns nothing but an internal error; execution errors are
//! counted per user in the same transaction; the audit event holds the internal detail of
//! a failure, the caller only its code and the query id.

use chrono::Utc;
use serde_json::{Value, json};

use super::QueryError;
use super::refusal::{Refusal, Refused};
use super::request::QueryRequest;
use crate::audit::AuditEvent;
use crate::privacy::Disclosure;
use crate::store::budget::{CacheWrite, Settle};
use crate::store::ledger::LedgerWrite;
use crate::store::model::{QueryRecord, User};
use crate::store::{QueryWrite, Store};

/// The writer of one query attempt's history and audit.
pub(super) struct Recorder<'a> {
    pub store: &'a Store,
    pub user: &'a User,
    pub req: &'a QueryRequest,
    pub query_id: &'a str,
}

/// Where a query ran, for its failure record.
pub(super) struct RanOn<'a> {
    pub application: &'a str,
    pub extract_id: &'a str,
    pub elapsed_ms: i64,
}

impl Recorder<'_> {
    /// A history row of this attempt with the given outcome (figures filled by callers).
    pub fn row(&self, application: &str, outcome: &str, code: Option<&str>) -> QueryRecord {
        QueryRecord {
            query_id: self.query_id.to_string(),
            application_id: application.to_string(),
            username: self.user.username.clone(),
            at: Utc::now(),
            sql: self.req.sql.clone(),
            outcome: outcome.into(),
            code: code.map(str::to_string),
            duration_ms: None,
            epsilon_spent: None,
            suppressed_cells: None,
            dropped_rows: None,
        }
    }

    /// The history row of an answer: its figures from the released disclosure.
    pub fn answer_row(
        &self,
        application: &str,
        d: &Disclosure,
        duration_ms: i64,
        epsilon_spent: Option<f64>,
    ) -> QueryRecord {
        let mut record = self.row(application, "ok", None);
        record.duration_ms = Some(duration_ms);
        record.epsilon_spent = epsilon_spent;
        record.suppressed_cells = Some(d.suppressed_cells as i64);
        record.dropped_rows = Some(d.dropped_rows as i64);
        record
    }

    /// The audit event of an answer (`query.run`, ok) with its detail.
    pub fn answer_event(&self, application: &str, detail: Value) -> AuditEvent {
        AuditEvent::ok(&self.user.username, "query.run", Some(application), detail)
    }

    /// Record a refusal before the data plane ran, and return it under the query id.
    pub async fn refused(&self, cause: Refusal, detail: Value) -> Refused {
        let record = self.row(&self.req.application, "denied", Some(cause.code()));
        let ev = AuditEvent::denied(
            &self.user.username,
            "query.run",
            Some(&self.req.application),
            cause.code(),
            json!({"sql": self.req.sql, "detail": detail}),
        )
        .with_reference(self.query_id);
        match self.write(record, ev, None, None, false, None).await {
            Ok(()) => Refused::new(Some(self.query_id), cause),
            Err(e) => Refused::new(None, e),
        }
    }

    /// Record a data-plane refusal or failure (settling the ε reservation, if any).
    pub async fn failed(&self, on: RanOn<'_>, qe: QueryError, ledger: Option<Settle>) -> Refused {
        let execution_error = matches!(qe, QueryError::Execution { .. });
        let server_side = qe.http_status() >= 500;
        let outcome = if server_side { "error" } else { "denied" };
        let mut record = self.row(on.application, outcome, Some(qe.code()));
        record.duration_ms = Some(on.elapsed_ms);
        let mut ev = AuditEvent::denied(
            &self.user.username,
            "query.run",
            Some(on.application),
            qe.code(),
            json!({
                "sql": self.req.sql,
                "extract_id": on.extract_id,
                "internal_detail": qe.internal_detail(),
                "duration_ms": on.elapsed_ms,
                "user_execution_errors": self.user.execution_errors + execution_error as i64,
                "epsilon_reservation": ledger.as_ref().map(|l| l.state.as_str()),
            }),
        )
        .with_reference(self.query_id);
        if server_side {
            ev.outcome = "error".into();
        }
        match self
            .write(record, ev, ledger, None, execution_error, None)
            .await
        {
            Ok(()) => Refused::new(Some(self.query_id), qe),
            Err(e) => Refused::new(Some(self.query_id), e),
        }
    }

    /// Record an answer; only if this commits may the answer be returned.
    pub async fn answered(
        &self,
        record: QueryRecord,
        ev: AuditEvent,
        ledger: Option<Settle>,
        cache: Option<CacheWrite>,
    ) -> Result<(), Refused> {
        let ev = ev.with_reference(self.query_id);
        self.write(record, ev, ledger, cache, false, None)
            .await
            .map_err(|e| Refused::new(Some(self.query_id), e))?;
        crate::durable::pause_point("query.recorded");
        Ok(())
    }

    /// Record a suppression answer with the contributor sets it releases (the release
    /// ledger); only if this commits may the answer be returned.
    pub async fn answered_releasing(
        &self,
        record: QueryRecord,
        ev: AuditEvent,
        released: LedgerWrite,
    ) -> Result<(), Refused> {
        let ev = ev.with_reference(self.query_id);
        self.write(record, ev, None, None, false, Some(released))
            .await
            .map_err(|e| Refused::new(Some(self.query_id), e))?;
        crate::durable::pause_point("query.recorded");
        Ok(())
    }

    async fn write(
        &self,
        record: QueryRecord,
        ev: AuditEvent,
        ledger: Option<Settle>,
        cache: Option<CacheWrite>,
        execution_error: bool,
        released: Option<LedgerWrite>,
    ) -> Result<(), crate::store::StoreError> {
        let write = QueryWrite {
            record,
            ledger,
            cache,
            execution_error,
            released,
        };
        let started = std::time::Instant::now();
        let written = self.store.record_query(&write, &ev).await.map(|_| ());
        crate::metrics::stage("audit", started.elapsed());
        written
    }
}
