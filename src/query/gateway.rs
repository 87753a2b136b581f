//! Query stage, the entry point: one call from "a named user sent SQL" to "an answer that
//! passed the disclosure check and whose audit event committed". HTTP calls it, and later
//! Flight SQL; neither decides anything about a query. (The operator CLI runs the data
//! plane directly on an extract it names: no user, no approval, no audit.)
//!
//! Order: resolve and authorize the application ([`crate::policy::Policy::resolve`]) →
//! check the approved disclosure mode → (DP: the budgeted path, `budgeted.rs`) → the
//! scope's own extract → (suppression: the extract's turn, `serial.rs`) → the data plane
//! (guard → rewrite → execute → disclosure check, differencing against the release
//! ledger) → history row, audit event and new ledger sets in one transaction → the answer.
//!
//! Guarantees: a refusal at any step is recorded under the query id before it is
//! returned; an answer whose record did not commit is never returned (no audit, no
//! answer); execution errors reach the caller as a code and the query id only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde_json::{Value, json};
use tracing::Instrument;

use super::admission::Admission;
use super::plane::{AuthorisedQuery, DataPlane};
use super::record::{RanOn, Recorder};
use super::refusal::{Refusal, Refused};
use super::request::QueryRequest;
use super::serial::{EndsTurn, LinedLedger, Turn};
use crate::policy::{Action, Grant, Policy, check_mode};
use crate::privacy::budget::Ledger;
use crate::privacy::result::{DisclosureMode, ReleasedResult};
use crate::store::Store;
use crate::store::ledger::LedgerWrite;
use crate::store::model::{ExtractInfo, User};

/// A released answer and the id it was recorded under.
#[derive(Debug)]
pub struct Answer {
    pub query_id: String,
    pub result: ReleasedResult,
}

/// The services a query passes through.
#[derive(Clone)]
pub struct Gateway {
    pub store: Store,
    pub policy: Arc<Policy>,
    pub data: Arc<dyn DataPlane>,
    pub ledger: Ledger,
    /// Shared by every request of the server: one suppression query per extract at a
    /// time (from ledger read to record), and the per-user limit.
    pub(super) admission: Arc<Admission>,
}

/// One authorised request on its way through the gateway.
pub(super) struct Call<'a> {
    pub rec: Recorder<'a>,
    pub grant: Grant,
    pub mode: DisclosureMode,
}

impl Gateway {
    /// `stale_after`: DP reservations older than this can no longer settle;
    /// `admission`: the server's one admission state.
    pub fn new(
        store: Store,
        policy: Arc<Policy>,
        data: Arc<dyn DataPlane>,
        stale_after: Duration,
        admission: Arc<Admission>,
    ) -> Self {
        let ledger = Ledger::new(store.clone(), stale_after);
        Self {
            store,
            policy,
            data,
            ledger,
            admission,
        }
    }

    /// Run a query under the caller's approval, in its trace span (`kura.query`: the
    /// query id, the mode and the outcome code; nothing of the SQL or the user).
    pub async fn run(
        &self,
        user: &User,
        req: &QueryRequest,
        today: NaiveDate,
    ) -> Result<Answer, Refused> {
        let query_id = super::new_query_id();
        let span = tracing::info_span!(
            "kura.query",
            query_id = %query_id,
            mode = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let result = self
            .run_as(&query_id, user, req, today)
            .instrument(span.clone())
            .await;
        let outcome = match &result {
            Ok(_) => "answered",
            Err(r) => r.cause.code(),
        };
        span.record("outcome", outcome);
        result
    }

    /// [`Gateway::run`] under a query id made for it.
    async fn run_as(
        &self,
        query_id: &str,
        user: &User,
        req: &QueryRequest,
        today: NaiveDate,
    ) -> Result<Answer, Refused> {
        let rec = Recorder {
            store: &self.store,
            user,
            req,
            query_id,
        };
        let Some(_slot) = self.admission.admit(&user.username) else {
            let cause = Refusal::TooManyQueries {
                limit: self.admission.per_user(),
            };
            return Err(rec
                .refused(cause, json!({"limit": self.admission.per_user()}))
                .await);
        };
        let (grant, mode) = match self.authorize(user, req, today).await? {
            Ok(g) => g,
            Err((cause, detail)) => return Err(rec.refused(cause, detail).await),
        };
        tracing::Span::current().record("mode", mode.to_string().as_str());
        let call = Call { rec, grant, mode };
        if mode == DisclosureMode::Dp {
            return self.run_dp(call, today).await;
        }
        self.run_suppressed(call).await
    }

    /// Resolve the application, authorize `Action::Query` and check the mode. A refusal
    /// comes back with its audit detail.
    pub(super) async fn authorize(
        &self,
        user: &User,
        req: &QueryRequest,
        today: NaiveDate,
    ) -> Result<Result<(Grant, DisclosureMode), (Refusal, Value)>, Refused> {
        let resolved = self
            .policy
            .resolve(
                &self.store,
                user,
                &req.application,
                Action::Query,
                today,
                req.origin,
            )
            .await?;
        let grant = match resolved {
            Ok(g) => g,
            Err(d) => {
                let detail = json!({"rule": d.code, "origin": req.origin});
                return Ok(Err((Refusal::Denied(d), detail)));
            }
        };
        match check_mode(&grant, req.mode) {
            Ok(mode) => Ok(Ok((grant, mode))),
            Err(requested) => Ok(Err((
                Refusal::ModeNotApproved {
                    approved: grant.mode,
                    requested,
                },
                json!({"requested_mode": requested.to_string()}),
            ))),
        }
    }

    /// The live extract of a grant, if it exists and was not destroyed.
    pub(super) async fn extract(&self, grant: &Grant) -> Result<Option<ExtractInfo>, Refused> {
        let x = self.store.extract(&grant.id).await?;
        Ok(x.filter(|x| x.destroyed_at.is_none()))
    }

    /// The suppression path: extract → data plane → record → answer.
    async fn run_suppressed(&self, call: Call<'_>) -> Result<Answer, Refused> {
        let Call { rec, grant, mode } = call;
        let Some(extract) = self.extract(&grant).await? else {
            let detail = json!({"detail": "extract missing or destroyed"});
            return Err(rec.refused(Refusal::ExtractMissing, detail).await);
        };
        let started = Instant::now();
        let mut q = authorised(&grant, &extract, mode, None, &rec.req.sql);
        // The query's turn (`serial.rs`) is taken by its first ledger read and held here
        // until the record below commits (or the query fails): execution runs before it.
        let turn = Turn::default();
        let _ends = EndsTurn(turn.clone());
        q.ledger = Some(Arc::new(LinedLedger {
            inner: self.store.ledger_view(&extract.extract_id),
            extract_id: extract.extract_id.clone(),
            locks: self.admission.extracts.clone(),
            line: self.admission.ledger_line.clone(),
            turn: turn.clone(),
        }));
        // Other applications' releases too, read inside the same turn.
        q.elsewhere = Some(Arc::new(self.store.ledger_elsewhere(&extract.extract_id)));
        let outcome = self.data.query(q).await;
        let elapsed_ms = started.elapsed().as_millis() as i64;
        let out = match outcome {
            Ok(out) => out,
            Err(qe) => {
                let on = RanOn {
                    application: &grant.id,
                    extract_id: &extract.extract_id,
                    elapsed_ms,
                };
                return Err(rec.failed(on, qe, None).await);
            }
        };
        let d = &out.result.disclosure;
        let record = rec.answer_row(&grant.id, d, elapsed_ms, None);
        let on = RanOn {
            application: &grant.id,
            extract_id: &extract.extract_id,
            elapsed_ms,
        };
        let mode_name = mode.to_string();
        let fp = &out.plan_fingerprint;
        let answer = rec.stored_answer(&on, &mode_name, fp, &out.result, &out.trace)?;
        let ev = rec.answer_event(
            &answer,
            json!({
                "sql": rec.req.sql,
                "plan_fingerprint": out.plan_fingerprint,
                "extract_id": extract.extract_id,
                "tables": out.tables,
                "mode": mode.to_string(),
                "threshold": d.threshold,
                "suppressed": d.suppressed,
                "suppressed_cells": d.suppressed_cells,
                "differencing": d.differencing,
                "dropped_rows": d.dropped_rows,
                "epsilon_spent": null,
                "rows": out.result.rows.len(),
                "released_sets": out.released_sets.len(),
                "duration_ms": out.duration.as_millis() as u64,
            }),
        );
        let released = LedgerWrite {
            extract_id: extract.extract_id.clone(),
            query_id: rec.query_id.to_string(),
            sets: out.released_sets,
        };
        rec.answered_releasing(record, ev, answer, released).await?;
        Ok(Answer {
            query_id: rec.query_id.to_string(),
            result: out.result,
        })
    }
}

/// The data plane's input for a grant over its extract.
pub(super) fn authorised(
    grant: &Grant,
    extract: &ExtractInfo,
    mode: DisclosureMode,
    dp: Option<crate::privacy::result::DpParams>,
    sql: &str,
) -> AuthorisedQuery {
    AuthorisedQuery {
        application: grant.id.clone(),
        extract_dir: extract.path.clone().into(),
        scope: grant.scope.clone(),
        mode,
        threshold: grant.threshold,
        dp,
        sql: sql.to_string(),
        ledger: None,
        elsewhere: None,
    }
}
