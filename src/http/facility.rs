//! A medical institution's feedback report over HTTP (seed 001 item 8):
//! `GET /api/v1/facility/report?format=json|html` — the facility's own figures beside
//! the national ones (`report::feedback`).
//!
//! Guarantees: only a facility account reaches it, for its own facility only (the same
//! resolution as its queries: the standing scope `FAC-<code>` through the enforcement
//! point, action `facility_report`); the national side comes out of the data plane
//! already under the disclosure rules; every report is audited (`report.facility`)
//! before it is returned, and a refusal is audited too.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::audit::AuditEvent;
use crate::policy::Action;
use crate::policy::facility::facility_scope_id;
use crate::report::feedback::{FeedbackReport, html};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct FacilityReportParams {
    /// `json` (default) or `html`.
    pub format: Option<String>,
}

/// The caller's facility feedback report.
#[utoipa::path(get, path = "/api/v1/facility/report", tag = "reports", params(FacilityReportParams),
    responses((status = 200, body = FeedbackReport), (status = 403, body = ErrorBody)))]
pub async fn report(
    State(st): State<AppState>,
    who: AuthUser,
    params: Result<Query<FacilityReportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let html_wanted = match p.format.as_deref().unwrap_or("json") {
        "json" => false,
        "html" => true,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`format` is json or html / format は json または html です",
            ));
        }
    };
    let code = who.user.facility.clone().unwrap_or_default();
    let id = facility_scope_id(&code);
    let resolved = st
        .policy
        .resolve(
            &st.store,
            &who.user,
            &id,
            Action::FacilityReport,
            st.today(),
            who.origin,
        )
        .await?;
    if let Err(d) = resolved {
        let detail = json!({"origin": who.origin});
        return Err(super::denied::denied(
            &st,
            &who.user,
            "report.facility",
            Some(&id),
            &d,
            detail,
        )
        .await);
    }
    let r = st.data.facility_report(&code).await.map_err(|e| {
        let api = ApiError::query(&e, &crate::query::new_ref());
        let cause = crate::errors::chain(&e);
        tracing::error!(reference = %api.reference, error = %cause, "facility report failed");
        api
    })?;
    let ev = AuditEvent::ok(
        &who.user.username,
        "report.facility",
        Some(&id),
        json!({"format": if html_wanted { "html" } else { "json" }}),
    );
    st.store.record(&ev).await?;
    if !html_wanted {
        return Ok(Json(r).into_response());
    }
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html(&r),
    )
        .into_response())
}
