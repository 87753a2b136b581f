//! Query stage, the record: every query attempt — refused, failed or answered — writes its
//! history row and its audit event (and settles its ε reservation, stores a fresh DP
//! answer, or appends a suppression answer's contributor sets to the release ledger) in
//! ONE store transaction. An answer is also stored as released, with its disclosure
//! trace, and its hash goes into the event (`result_sha256`): the output airlock
//! snapshots only answers the signed log vouches for.
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
use crate::privacy::ReleasedResult;
use crate::privacy::disclosure::AnswerTrace;
use crate::store::budget::{CacheWrite, Settle};
use crate::store::ledger::LedgerWrite;
use crate::store::model::{QueryRecord, User};
use crate::store::results::{AnswerWrite, StoredAnswerBody};
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

    /// The audit event of an answer (`query.run`, ok) with its detail, which names the
    /// stored answer's hash (`result_sha256`).
    pub fn answer_event(&self, answer: &AnswerWrite, mut detail: Value) -> AuditEvent {
        detail["result_sha256"] = Value::from(answer.sha256.clone());
        let application = Some(answer.application_id.as_str());
        AuditEvent::ok(&self.user.username, "query.run", application, detail)
    }

    /// The answer as it will be stored for the output airlock: the released result and
    /// the disclosure trace, sealed (canonical JSON and its SHA-256).
    pub fn stored_answer(
        &self,
        on: &RanOn<'_>,
        mode: &str,
        plan_fingerprint: &str,
        result: &ReleasedResult,
        trace: &AnswerTrace,
    ) -> Result<AnswerWrite, Refused> {
        let body = StoredAnswerBody {
            result: result.clone(),
            trace: trace.clone(),
        };
        let (answer, sha256) =
            AnswerWrite::seal(&body).map_err(|e| Refused::new(Some(self.query_id), e))?;
        Ok(AnswerWrite {
            query_id: self.query_id.to_string(),
            application_id: on.application.to_string(),
            username: self.user.username.clone(),
            extract_id: on.extract_id.to_string(),
            mode: mode.to_string(),
            plan_fingerprint: plan_fingerprint.to_string(),
            answer,
            sha256,
        })
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
        match self.write(record, ev, Settlement::default()).await {
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
        let settle = Settlement {
            ledger,
            execution_error,
            ..Settlement::default()
        };
        match self.write(record, ev, settle).await {
            Ok(()) => Refused::new(Some(self.query_id), qe),
            Err(e) => Refused::new(Some(self.query_id), e),
        }
    }

    /// Record a DP answer (stored as `answer`); only if this commits may the answer be
    /// returned.
    pub async fn answered(
        &self,
        record: QueryRecord,
        ev: AuditEvent,
        answer: AnswerWrite,
        ledger: Option<Settle>,
        cache: Option<CacheWrite>,
    ) -> Result<(), Refused> {
        let ev = ev.with_reference(self.query_id);
        let settle = Settlement {
            ledger,
            cache,
            answer: Some(answer),
            ..Settlement::default()
        };
        self.write(record, ev, settle)
            .await
            .map_err(|e| Refused::new(Some(self.query_id), e))?;
        crate::durable::pause_point("query.recorded");
        Ok(())
    }

    /// Record a suppression answer (stored as `answer`) with the contributor sets it
    /// releases (the release ledger); only if this commits may the answer be returned.
    pub async fn answered_releasing(
        &self,
        record: QueryRecord,
        ev: AuditEvent,
        answer: AnswerWrite,
        released: LedgerWrite,
    ) -> Result<(), Refused> {
        let ev = ev.with_reference(self.query_id);
        let settle = Settlement {
            released: Some(released),
            answer: Some(answer),
            ..Settlement::default()
        };
        self.write(record, ev, settle)
            .await
            .map_err(|e| Refused::new(Some(self.query_id), e))?;
        crate::durable::pause_point("query.recorded");
        Ok(())
    }

    /// One transaction: history row, settlement and hash-chained audit event.
    #[tracing::instrument(name = "kura.record", skip_all)]
    async fn write(
        &self,
        record: QueryRecord,
        ev: AuditEvent,
        s: Settlement,
    ) -> Result<(), crate::store::StoreError> {
        let write = QueryWrite {
            record,
            ledger: s.ledger,
            cache: s.cache,
            execution_error: s.execution_error,
            released: s.released,
            answer: s.answer,
        };
        let started = std::time::Instant::now();
        let written = self.store.record_query(&write, &ev).await.map(|_| ());
        crate::metrics::stage("audit", started.elapsed());
        written
    }
}

/// What an attempt settles besides its history row and event.
#[derive(Default)]
struct Settlement {
    ledger: Option<Settle>,
    cache: Option<CacheWrite>,
    execution_error: bool,
    released: Option<LedgerWrite>,
    answer: Option<AnswerWrite>,
}
