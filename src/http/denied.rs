//! The one way a handler refuses on policy: the denial becomes a 403 with its stable code
//! and the attempt is audited under the same reference. If the audit write fails, the
//! caller gets an internal error instead (no audit, no answer — not even a refusal).

use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use crate::audit::AuditEvent;
use crate::policy::Denial;
use crate::store::model::User;

/// Audit `d` as a denied `action` by `user` (on `application`) and build its error.
pub async fn denied(
    st: &AppState,
    user: &User,
    action: &str,
    application: Option<&str>,
    d: &Denial,
    detail: Value,
) -> ApiError {
    let e = ApiError::denied(d);
    let ev = AuditEvent::denied(&user.username, action, application, d.code, detail)
        .with_reference(&e.reference);
    match st.store.record(&ev).await {
        Ok(_) => e,
        Err(err) => err.into(),
    }
}
