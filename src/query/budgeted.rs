//! Query stage, the DP path through the ε ledger: validate → preview (no data read) →
//! cache lookup → reserve → run → settle, and the dry run that prices a query.
//!
//! Guarantees: nothing is reserved before the request and the data plane's preview
//! pass (guard, DP rewrite, pricing: no patient row is read), and a refusal up to there
//! (request, policy, preview, budget) costs nothing; an identical question on the same
//! extract version is re-released from the cache and spends nothing; from the moment the
//! data plane is asked to run the query — the first moment patient data can be read — the
//! reservation is spent whatever happens next (answer, execution error, resource or time
//! limit, a release step that fails, an unsound answer withheld), so the answer/error
//! class of a DP query is never a free oracle; a dropped request, a crash or a failed
//! audit write leaves the reservation open, and the store converts it to spent; the
//! spend, the cache entry, the history row and the audit event commit together.

use std::time::Instant;

use chrono::NaiveDate;
use serde_json::{Value, json};

use super::gateway::{Answer, Call, Gateway, authorised};
use super::plane::{AuthorisedQuery, DpPreview};
use super::record::{RanOn, Recorder};
use super::refusal::{Refusal, Refused};
use super::request::{CostResponse, QueryRequest};
use super::{QueryError, QueryOutcome};
use crate::audit::AuditEvent;
use crate::policy::{Grant, fiscal_year};
use crate::privacy::budget::{BudgetRefusal, Ledger, renews_on};
use crate::privacy::result::{DisclosureMode, DpDisclosure, DpParams, ReleasedResult};
use crate::store::budget::{
    BudgetUse, CacheKey, CacheWrite, CachedRelease, LedgerState, Reservation,
};
use crate::store::model::User;

/// A checked and priced DP query, before any budget is touched.
struct Priced {
    params: DpParams,
    fiscal_year: i32,
    budget: f64,
    extract_id: String,
    aq: AuthorisedQuery,
    preview: DpPreview,
    key: CacheKey,
    cached: Option<CachedRelease>,
}

/// Why a DP query stopped before reserving anything.
enum Unpriced {
    /// A control-plane refusal (bad ε or bounds, missing extract) with audit detail.
    Refused(Refusal, Value),
    /// The data plane refused the query in its preview (with the extract id).
    Plane(QueryError, String),
    /// The store failed.
    Failed(Refused),
}

impl From<Refused> for Unpriced {
    fn from(e: Refused) -> Self {
        Unpriced::Failed(e)
    }
}

impl Gateway {
    /// Validate → preview → cache lookup. Nothing is reserved here.
    async fn price(
        &self,
        req: &QueryRequest,
        grant: &Grant,
        today: NaiveDate,
    ) -> Result<Priced, Unpriced> {
        let params = req
            .dp_params(grant)
            .map_err(|e| Unpriced::Refused(e, req.dp_detail()))?;
        let Some(extract) = self.extract(grant).await? else {
            let detail = json!({"detail": "extract missing or destroyed"});
            return Err(Unpriced::Refused(Refusal::ExtractMissing, detail));
        };
        let aq = authorised(grant, &extract, DisclosureMode::Dp, Some(params), &req.sql);
        let preview = self
            .data
            .dp_preview(aq.clone())
            .await
            .map_err(|qe| Unpriced::Plane(qe, extract.extract_id.clone()))?;
        let key = CacheKey {
            application_id: grant.id.clone(),
            release_key: preview.release_key.clone(),
            extract_id: extract.extract_id.clone(),
            epsilon: params.epsilon,
            bounds: params.bounds,
        };
        let cached = self.ledger.cached(&key).await.map_err(Refused::from)?;
        Ok(Priced {
            params,
            fiscal_year: fiscal_year(today),
            budget: grant.epsilon_budget.unwrap_or(0.0),
            extract_id: extract.extract_id,
            aq,
            preview,
            key,
            cached,
        })
    }

    /// The DP query path: price → cached re-release, or reserve → run → commit.
    pub(super) async fn run_dp(&self, call: Call<'_>, today: NaiveDate) -> Result<Answer, Refused> {
        let Call { rec, grant, .. } = call;
        let p = match self.price(rec.req, &grant, today).await {
            Ok(p) => p,
            Err(Unpriced::Refused(cause, detail)) => return Err(rec.refused(cause, detail).await),
            Err(Unpriced::Plane(qe, extract_id)) => {
                let on = RanOn {
                    application: &grant.id,
                    extract_id: &extract_id,
                    elapsed_ms: 0,
                };
                return Err(rec.failed(on, qe, None).await);
            }
            Err(Unpriced::Failed(e)) => {
                return Err(Refused {
                    reference: Some(rec.query_id.to_string()),
                    ..e
                });
            }
        };
        if let Some(c) = p.cached.clone() {
            return self.rerelease(&rec, &grant, &p, c).await;
        }
        let reservation = Reservation {
            query_id: rec.query_id.to_string(),
            application_id: grant.id.clone(),
            fiscal_year: p.fiscal_year,
            epsilon: p.params.epsilon,
        };
        if let Err(u) = self.ledger.reserve(&reservation, p.budget).await? {
            let (eps, fy) = (p.params.epsilon, p.fiscal_year);
            let detail =
                json!({"epsilon": eps, "spent": u.used, "budget": u.budget, "fiscal_year": fy});
            return Err(rec.refused(exhausted(&grant.id, eps, fy, u), detail).await);
        }
        crate::durable::pause_point("query.reserved");
        self.spend(&rec, &grant, p).await
    }

    /// An identical question on the same extract version: re-release, spend nothing.
    async fn rerelease(
        &self,
        rec: &Recorder<'_>,
        grant: &Grant,
        p: &Priced,
        c: CachedRelease,
    ) -> Result<Answer, Refused> {
        let mut result = c.result;
        let Some(dpd) = result.disclosure.dp.as_mut() else {
            let e = QueryError::internal("dp cache", "stored DP answer has no DP disclosure");
            return Err(Refused::new(Some(rec.query_id), e));
        };
        dpd.cached = true;
        let dp_detail = dp_audit(dpd);
        self.charge(&mut result, grant, p, 0.0).await?;
        let record = rec.answer_row(&grant.id, &result.disclosure, 0, Some(0.0));
        let ev = rec.answer_event(
            &grant.id,
            json!({
                "sql": rec.req.sql,
                "extract_id": p.extract_id,
                "release_key": p.key.release_key,
                "mode": "dp",
                "cached": true,
                "original_query_id": c.query_id,
                "epsilon_spent": 0.0,
                "dp": dp_detail,
                "rows": result.rows.len(),
            }),
        );
        rec.answered(record, ev, None, None).await?;
        Ok(Answer {
            query_id: rec.query_id.to_string(),
            result,
        })
    }

    /// State on the answer what it spent and what is left of the year's budget.
    async fn charge(
        &self,
        result: &mut ReleasedResult,
        grant: &Grant,
        p: &Priced,
        spent: f64,
    ) -> Result<(), Refused> {
        let used = self.ledger.used(&grant.id, p.fiscal_year).await?;
        result.disclosure.epsilon_spent = Some(spent);
        result.disclosure.epsilon_remaining = Some((p.budget - used).max(0.0));
        Ok(())
    }

    /// Run a reserved DP query and settle its reservation with its record.
    async fn spend(&self, rec: &Recorder<'_>, grant: &Grant, p: Priced) -> Result<Answer, Refused> {
        let started = Instant::now();
        // Nothing between the reservation and this call reads data; from here on patient
        // rows may be read, so every way out below spends the reservation (a dropped
        // request leaves it open, and the store converts it to spent).
        let outcome = self.data.query(p.aq.clone()).await;
        let on = RanOn {
            application: &grant.id,
            extract_id: &p.extract_id,
            elapsed_ms: started.elapsed().as_millis() as i64,
        };
        let qe = match outcome {
            Ok(out) if sound(&out, &p.params) => {
                let elapsed_ms = on.elapsed_ms;
                return self.settle(rec, grant, p, out, elapsed_ms).await;
            }
            Ok(_) => QueryError::internal(
                "dp release",
                "DP answer without a matching DP disclosure; not released",
            ),
            Err(qe) => qe,
        };
        let settle = self.ledger.after_read(rec.query_id);
        let spent = settle.state == LedgerState::Spent;
        let refused = rec.failed(on, qe, Some(settle)).await;
        Err(if spent {
            refused.spent_after_read(p.params.epsilon)
        } else {
            refused
        })
    }

    /// Commit the spend, the cache entry, the history row and the audit event together.
    async fn settle(
        &self,
        rec: &Recorder<'_>,
        grant: &Grant,
        p: Priced,
        out: QueryOutcome,
        elapsed_ms: i64,
    ) -> Result<Answer, Refused> {
        let mut result = out.result;
        self.charge(&mut result, grant, &p, p.params.epsilon)
            .await?;
        let d = &result.disclosure;
        let record = rec.answer_row(&grant.id, d, elapsed_ms, Some(p.params.epsilon));
        let ev = rec.answer_event(
            &grant.id,
            json!({
                "sql": rec.req.sql,
                "plan_fingerprint": out.plan_fingerprint,
                "extract_id": p.extract_id,
                "release_key": p.key.release_key,
                "tables": out.tables,
                "mode": "dp",
                "cached": false,
                "epsilon_spent": p.params.epsilon,
                "fiscal_year": p.fiscal_year,
                "dp": d.dp.as_ref().map(dp_audit),
                "suppressed_cells": d.suppressed_cells,
                "dropped_rows": d.dropped_rows,
                "rows": result.rows.len(),
                "duration_ms": out.duration.as_millis() as u64,
            }),
        );
        let cache = CacheWrite {
            key: p.key,
            result: result.clone(),
            query_id: rec.query_id.to_string(),
        };
        let ledger = Some(Ledger::spend(rec.query_id));
        // No audit, no answer. If this fails the reservation stays and is converted to spent.
        rec.answered(record, ev, ledger, Some(cache)).await?;
        Ok(Answer {
            query_id: rec.query_id.to_string(),
            result,
        })
    }

    /// Dry run: check and price a DP query. Nothing is reserved or read; the call is
    /// audited as `query.cost`.
    pub async fn cost(
        &self,
        user: &User,
        req: &QueryRequest,
        today: NaiveDate,
    ) -> Result<CostResponse, Refused> {
        let deny = |cause: Refusal, detail: Value| self.deny_cost(user, req, cause, detail);
        let (grant, mode) = match self.authorize(user, req, today).await? {
            Ok(g) => g,
            Err((cause, detail)) => return Err(deny(cause, detail).await),
        };
        if mode != DisclosureMode::Dp {
            return Err(deny(Refusal::NotDp, json!({})).await);
        }
        let p = match self.price(req, &grant, today).await {
            Ok(p) => p,
            Err(Unpriced::Refused(cause, detail)) => return Err(deny(cause, detail).await),
            Err(Unpriced::Plane(qe, extract_id)) => {
                let detail =
                    json!({"extract_id": extract_id, "internal_detail": qe.internal_detail()});
                return Err(deny(Refusal::Query(qe), detail).await);
            }
            Err(Unpriced::Failed(e)) => return Err(e),
        };
        let used = self.ledger.used(&grant.id, p.fiscal_year).await?;
        let u = BudgetUse {
            budget: p.budget,
            used,
        };
        let cached = p.cached.is_some();
        let cost = if cached { 0.0 } else { p.params.epsilon };
        if !cached && used + cost > p.budget + 1e-9 {
            let detail = json!({"epsilon": p.params.epsilon, "spent": used, "budget": p.budget});
            let cause = exhausted(&grant.id, p.params.epsilon, p.fiscal_year, u);
            return Err(deny(cause, detail).await);
        }
        self.priced(user, req, grant, p, u, cost).await
    }

    /// Audit a successful dry run and build its answer.
    async fn priced(
        &self,
        user: &User,
        req: &QueryRequest,
        grant: Grant,
        p: Priced,
        u: BudgetUse,
        cost: f64,
    ) -> Result<CostResponse, Refused> {
        let cached = p.cached.is_some();
        let d = p.preview.disclosure;
        let ev = AuditEvent::ok(
            &user.username,
            "query.cost",
            Some(&grant.id),
            json!({
                "sql": req.sql,
                "extract_id": p.extract_id,
                "release_key": p.key.release_key,
                "cached": cached,
                "cost": cost,
                "dp": dp_audit(&d),
            }),
        );
        self.store.record(&ev).await?;
        Ok(CostResponse {
            application: grant.id,
            epsilon: p.params.epsilon,
            cost,
            epsilon_remaining: u.remaining(),
            epsilon_remaining_after: (u.remaining() - cost).max(0.0),
            epsilon_budget: p.budget,
            fiscal_year: p.fiscal_year,
            renews_on: renews_on(p.fiscal_year),
            cached,
            bounds: p.params.bounds,
            columns: d.columns,
            release_threshold: d.release_threshold,
            mechanism: d.mechanism,
        })
    }

    /// Audit a refused dry run under a fresh reference.
    async fn deny_cost(
        &self,
        user: &User,
        req: &QueryRequest,
        cause: Refusal,
        detail: Value,
    ) -> Refused {
        let reference = super::new_ref();
        let ev = AuditEvent::denied(
            &user.username,
            "query.cost",
            Some(&req.application),
            cause.code(),
            json!({"sql": req.sql, "detail": detail}),
        )
        .with_reference(&reference);
        match self.store.record(&ev).await {
            Ok(_) => Refused::new(Some(&reference), cause),
            Err(e) => Refused::new(None, e),
        }
    }
}

/// An answer may be released only if it says how it was noised, was freshly computed,
/// and charged no more than was reserved.
fn sound(out: &QueryOutcome, params: &DpParams) -> bool {
    out.result
        .disclosure
        .dp
        .as_ref()
        .is_some_and(|d| !d.cached && d.epsilon <= params.epsilon + 1e-9)
}

/// The `budget_exhausted` refusal for `eps` asked under `u`.
fn exhausted(application: &str, eps: f64, fy: i32, u: BudgetUse) -> Refusal {
    Refusal::BudgetExhausted {
        application: application.to_string(),
        refusal: BudgetRefusal::new(eps, fy, u),
    }
}

/// The DP part of an audit event (from the release's disclosure).
fn dp_audit(d: &DpDisclosure) -> Value {
    json!({
        "epsilon": d.epsilon,
        "mechanism": d.mechanism,
        "bounds": d.bounds,
        "release_threshold": d.release_threshold,
        "columns": d.columns.iter().map(|c| json!({
            "index": c.index,
            "name": c.name,
            "aggregate": c.aggregate,
            "epsilon": c.epsilon,
            "sensitivity": c.sensitivity,
            "noise_scale": c.noise_scale,
            "clamp": c.clamp,
        })).collect::<Vec<_>>(),
    })
}
