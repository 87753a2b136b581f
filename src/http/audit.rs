//! Audit over HTTP: filtered, paginated events, the CSV export of a filtered log, and
//! chain verification (auditor, reviewer). Reading the log is itself logged; an export is
//! logged as `audit.export` with its filters and row count before the file is returned (no
//! audit, no export).

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::audit::{AuditEvent, AuditRecord, Verification};
use crate::policy::{Action, Target};
use crate::store::AuditFilter;

async fn authorize(st: &AppState, who: &AuthUser) -> Result<(), ApiError> {
    if let Err(d) = st
        .policy
        .authorize(&who.user, Action::AuditRead, &Target::None, st.today())
        .await
    {
        return Err(super::denied::denied(st, &who.user, "audit.read", None, &d, json!({})).await);
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct EventParams {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub user: Option<String>,
    pub application: Option<String>,
    /// Action name or prefix, e.g. `query` or `query.run`.
    pub action: Option<String>,
    /// Only events older than this `seq`: pass the last `seq` of a page to get the next
    /// page unaffected by events logged meanwhile.
    pub before: Option<i64>,
    /// 0-based page of `page_size` (default 100) events, newest first.
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    /// Only the event with this reference id (the `ref` of an error a caller quotes).
    pub reference: Option<String>,
    /// Only events with this outcome: `ok`, `denied` or `error`.
    pub outcome: Option<String>,
}

/// Longest filter value accepted (user, application, action, reference).
const MAX_FILTER: usize = 200;

impl EventParams {
    fn filter(self, page: u32, page_size: u32) -> Result<AuditFilter, ApiError> {
        for v in [
            &self.user,
            &self.application,
            &self.action,
            &self.reference,
            &self.outcome,
        ]
        .into_iter()
        .flatten()
        {
            if v.chars().count() > MAX_FILTER {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!(
                        "A filter is longer than {MAX_FILTER} characters; shorten it. / 絞り込み条件は {MAX_FILTER} 文字以内にしてください。"
                    ),
                ));
            }
        }
        if let Some(o) = &self.outcome
            && !o.is_empty()
            && !["ok", "denied", "error"].contains(&o.as_str())
        {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`outcome` must be ok, denied or error. / outcome は ok・denied・error のいずれかです。",
            ));
        }
        let some = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        Ok(AuditFilter {
            from: self.from,
            to: self.to,
            user: some(self.user),
            application: some(self.application),
            action: some(self.action),
            before: self.before,
            page,
            page_size,
            reference: some(self.reference),
            outcome: some(self.outcome),
        })
    }
}

/// Audit events, newest first.
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", params(EventParams),
    responses((status = 200, body = Vec<AuditRecord>), (status = 403, body = ErrorBody)))]
pub async fn events(
    State(st): State<AppState>,
    who: AuthUser,
    params: Result<Query<EventParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    let Query(p) = params?;
    authorize(&st, &who).await?;
    let (page, size) = (p.page.unwrap_or(0), p.page_size.unwrap_or(100));
    let f = p.filter(page, size)?;
    let out = st.store.audit_events(&f).await?;
    st.store
        .record(&AuditEvent::ok(
            &who.user.username,
            "audit.read",
            None,
            json!({"page": f.page, "returned": out.len()}),
        ))
        .await?;
    Ok(Json(out))
}

/// Verify the hash chain: `{"ok": true, "events": N, "head": "…"}` or the first broken link.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, body = Verification), (status = 403, body = ErrorBody)))]
pub async fn verify(
    State(st): State<AppState>,
    who: AuthUser,
) -> Result<Json<Verification>, ApiError> {
    authorize(&st, &who).await?;
    // Verify first, so the report describes the chain as it was when asked.
    let v = st.store.verify_audit().await?;
    st.store
        .record(&AuditEvent::ok(
            &who.user.username,
            "audit.verify",
            None,
            json!({"ok": v.ok, "events": v.events}),
        ))
        .await?;
    Ok(Json(v))
}

/// Most events one export may hold; a larger log is exported in narrower time windows.
pub const MAX_EXPORT_ROWS: usize = 100_000;

/// The filtered log as CSV (same filters as `/audit/events`, all pages), newest first:
/// seq, at, actor, action, application, outcome, code, reference, sql, detail, prev, mac.
/// The export is recorded as `audit.export` before the file is returned.
#[utoipa::path(get, path = "/api/v1/audit/events.csv", tag = "audit", params(EventParams),
    responses((status = 200, content_type = "text/csv", body = String), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn export_csv(
    State(st): State<AppState>,
    who: AuthUser,
    params: Result<Query<EventParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let Query(p) = params?;
    authorize(&st, &who).await?;
    let mut f = p.filter(0, 500)?;
    let mut rows: Vec<AuditRecord> = Vec::new();
    loop {
        let page = st.store.audit_events(&f).await?;
        let last = page.last().map(|r| r.seq);
        rows.extend(page);
        if rows.len() > MAX_EXPORT_ROWS {
            return Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "resource_limit",
                format!(
                    "More than {MAX_EXPORT_ROWS} events match; narrow the time window (from, to) and export in parts. / 該当する記録が多すぎます。期間を絞って分けて出力してください。"
                ),
            ));
        }
        match last {
            Some(seq) => f.before = Some(seq),
            None => break,
        }
    }
    let body = audit_csv(&rows).map_err(|e| ApiError::internal(&e))?;
    let filters = json!({
        "from": f.from, "to": f.to, "user": f.user, "application": f.application,
        "action": f.action, "reference": f.reference, "outcome": f.outcome,
    });
    st.store
        .record(&AuditEvent::ok(
            &who.user.username,
            "audit.export",
            None,
            json!({"filters": filters, "rows": rows.len(), "format": "csv"}),
        ))
        .await?;
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        axum::http::header::CONTENT_DISPOSITION,
        axum::http::HeaderValue::from_static("attachment; filename=\"kura-audit-log.csv\""),
    );
    Ok(r)
}

fn audit_csv(rows: &[AuditRecord]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "seq",
        "at",
        "actor",
        "action",
        "application",
        "outcome",
        "code",
        "reference",
        "sql",
        "detail",
        "prev",
        "mac",
    ])?;
    for r in rows {
        let e = &r.event;
        let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
        let detail = &e["detail"];
        let fields = [
            r.seq.to_string(),
            r.at.to_rfc3339(),
            s("actor"),
            s("action"),
            s("application"),
            s("outcome"),
            s("code"),
            s("reference"),
            detail["sql"].as_str().unwrap_or("").to_string(),
            if detail.is_null() {
                String::new()
            } else {
                crate::audit::canonical_json(detail)
            },
            r.prev.clone(),
            r.mac.clone(),
        ];
        w.write_record(fields.iter().map(|f| formula_safe(f).into_owned()))?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A spreadsheet opening the export must not run a formula a researcher typed into SQL or a
/// name (`=HYPERLINK(…)`): text starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`
/// (OWASP CSV injection). The audit log itself keeps the text unchanged.
pub fn formula_safe(v: &str) -> std::borrow::Cow<'_, str> {
    match v.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => std::borrow::Cow::Owned(format!("'{v}")),
        _ => std::borrow::Cow::Borrowed(v),
    }
}
