//! Form 3 and the end of a study over HTTP (seed 002 要綱 第2章2(2)): the research
//! lead's consent to a co-investigator's application (主任研究者の承諾書), given from the
//! lead's own account, and the applicant's withdrawal of an approved study.
//!
//! Guarantees:
//! - A co-investigator's application (one naming `lead_investigator`) cannot be submitted,
//!   nor its change approved, until the named lead consented from their own account; the
//!   consent records the lead's name, institution and title from that account and the
//!   date, is saved with its history entry and audit event, and is never taken from an
//!   applicant's form (create, edit and change drop whatever the applicant sends).
//! - An edit that changes anything but the consent clears it: the lead consents to the
//!   application as it will be submitted, not to an earlier draft.
//! - Only the applicant withdraws, only an approved study in its term, with a reason;
//!   the withdrawn study stays on the public register with its status.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::AppState;
use super::applications::{authorize, load_visible};
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::audit::AuditEvent;
use crate::policy::Action;
use crate::policy::workflow::{self, FieldError};
use crate::store::model::{Application, ApplicationForm, LeadConsent, Person, Status};

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// The form a lead consents to now: a pending change application, else the form.
fn form_in_question(app: &Application) -> &ApplicationForm {
    app.pending_change.as_ref().unwrap_or(&app.form)
}

/// Whether `username` is the research lead named by the form in question.
pub fn is_lead(app: &Application, username: &str) -> bool {
    [Some(&app.form), app.pending_change.as_ref()]
        .into_iter()
        .flatten()
        .any(|f| f.lead_investigator.as_deref() == Some(username))
}

/// Whether a form needs a lead's consent it does not have (a co-investigator applying).
fn missing_consent(form: &ApplicationForm, applicant_name: Option<&str>) -> Option<String> {
    let lead = form.lead_investigator.as_deref()?;
    if Some(lead) == applicant_name {
        return None;
    }
    match &form.lead_consent {
        Some(c) if c.username == lead => None,
        _ => Some(lead.to_string()),
    }
}

/// `409 lead_consent_required` unless the form's research lead consented (or none is named).
pub fn require_lead_consent(form: &ApplicationForm) -> Result<(), ApiError> {
    match missing_consent(form, None) {
        None => Ok(()),
        Some(lead) => Err(ApiError::conflict(
            "lead_consent_required",
            format!(
                "The research lead `{lead}` has not consented to this co-investigator's application (form 3); the lead consents from their own account with POST /api/v1/applications/{{id}}/lead-consent, then submit again. / 主任研究者の承諾（様式3）がまだありません。主任研究者本人のアカウントで承諾してから提出してください。"
            ),
        )),
    }
}

/// The form an applicant's edit leaves: theirs, keeping the stored consent only when
/// nothing else changed (an applicant's own `lead_consent` is never kept).
pub fn edited(stored: &ApplicationForm, mut incoming: ApplicationForm) -> ApplicationForm {
    incoming.lead_consent = None;
    let mut before = stored.clone();
    before.lead_consent = None;
    if before == incoming {
        incoming.lead_consent = stored.lead_consent.clone();
    }
    incoming
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LeadConsentRequest {
    /// Must be `true`: the lead agrees to the text of form 3 (the applicant uses the records
    /// under the 要綱, and the lead supervises their handling).
    pub agree: bool,
}

/// The research lead consents to a co-investigator's application (form 3 承諾書).
#[utoipa::path(post, path = "/api/v1/applications/{id}/lead-consent", tag = "applications",
    params(("id" = String, Path)), request_body = LeadConsentRequest,
    responses((status = 200, body = Application), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn lead_consent(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
    body: JsonBody<LeadConsentRequest>,
) -> Result<Json<Application>, ApiError> {
    let Json(req) = body?;
    authorize(&st, &who, Action::Apply, Some(&id)).await?;
    let app = load_visible(&st, &who, &id).await?;
    let form = form_in_question(&app);
    if form.lead_investigator.as_deref() != Some(who.user.username.as_str()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Only the research lead named on this application consents to it (form 3). / 承諾できるのは申請書に記載された主任研究者のみです。",
        ));
    }
    if !req.agree {
        return Err(ApiError::invalid_application(vec![FieldError {
            field: "agree".into(),
            message: "send \"agree\": true to consent to form 3; not consenting needs no request / 承諾する場合は agree に true を指定してください".into(),
        }]));
    }
    let open = matches!(app.status, Status::Draft | Status::CorrectionRequested)
        || (app.status == Status::Approved && app.pending_change.is_some());
    if !open {
        return Err(ApiError::conflict(
            "invalid_transition",
            "Consent is given to a draft, an application returned for correction, or a pending change application. / 承諾できるのは下書き・補正中の申請または審査前の変更申請です。",
        ));
    }
    let consent = LeadConsent {
        lead: Person {
            name: who.user.display_name.clone(),
            affiliation: who.user.affiliation.clone(),
            title: who.user.title.clone(),
        },
        consented_on: st.today(),
        username: who.user.username.clone(),
        consented_at: Some(Utc::now()),
    };
    let mut next = app.clone();
    match next.pending_change.as_mut() {
        Some(change) => change.lead_consent = Some(consent.clone()),
        None => next.form.lead_consent = Some(consent.clone()),
    }
    let ev = AuditEvent::ok(
        &who.user.username,
        "application.lead_consent",
        Some(&id),
        json!({"lead": consent.lead, "consented_on": consent.consented_on}),
    );
    let saved = st
        .store
        .transition(&next, app.updated_at, app.status, "lead_consent", None, &ev)
        .await?;
    Ok(Json(saved))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct WithdrawRequest {
    /// Why the study ends early (kept in the history; not published).
    pub reason: String,
}

/// The applicant withdraws an approved study (取り下げ). Takes effect on the next request.
#[utoipa::path(post, path = "/api/v1/applications/{id}/withdraw", tag = "applications",
    params(("id" = String, Path)), request_body = WithdrawRequest,
    responses((status = 200, body = Application), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn withdraw(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
    body: JsonBody<WithdrawRequest>,
) -> Result<Json<Application>, ApiError> {
    let Json(req) = body?;
    let app = load_visible(&st, &who, &id).await?;
    if app.applicant != who.user.username {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Only the applicant withdraws a study. / 取り下げは申請者のみが行えます。",
        ));
    }
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > 2000 {
        return Err(ApiError::invalid_application(vec![FieldError {
            field: "reason".into(),
            message: "give the reason for withdrawing (at most 2000 characters) / 取り下げの理由を 2000 文字以内で記入してください".into(),
        }]));
    }
    if app.effective_status(st.today()) != Status::Approved {
        return Err(ApiError::conflict(
            "invalid_transition",
            "Only an approved study in its term can be withdrawn. / 取り下げできるのは使用期間中の承認済みの研究のみです。",
        ));
    }
    let mut next = app.clone();
    next.status = workflow::next_status(app.status, "withdraw")
        .map_err(|m| ApiError::conflict("invalid_transition", m))?;
    next.pending_change = None;
    let ev = AuditEvent::ok(
        &who.user.username,
        "application.withdraw",
        Some(&id),
        json!({"reason": reason}),
    );
    let saved = st
        .store
        .transition(
            &next,
            app.updated_at,
            app.status,
            "withdraw",
            Some(reason),
            &ev,
        )
        .await?;
    st.policy.reload(&st.store).await?;
    Ok(Json(saved))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(lead: Option<&str>, consent_by: Option<&str>) -> ApplicationForm {
        ApplicationForm {
            title: "t".into(),
            lead_investigator: lead.map(String::from),
            lead_consent: consent_by.map(|u| LeadConsent {
                lead: Person::default(),
                consented_on: chrono::NaiveDate::from_ymd_opt(2026, 4, 1).unwrap(),
                username: u.into(),
                consented_at: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_named_leads_consent_counts() {
        assert!(require_lead_consent(&form(None, None)).is_ok());
        assert!(require_lead_consent(&form(Some("lead"), Some("lead"))).is_ok());
        let e = require_lead_consent(&form(Some("lead"), None)).unwrap_err();
        assert_eq!(e.code, "lead_consent_required");
        // Consent recorded for someone else (e.g. a lead changed after consent) does not count.
        assert!(require_lead_consent(&form(Some("lead"), Some("other"))).is_err());
    }

    #[test]
    fn an_edit_keeps_consent_only_when_nothing_else_changed() {
        let stored = form(Some("lead"), Some("lead"));
        // The applicant re-sends the same form: consent stays.
        assert!(
            edited(&stored, form(Some("lead"), None))
                .lead_consent
                .is_some()
        );
        // The applicant forges a consent on a changed form: dropped.
        let mut changed = form(Some("lead"), Some("lead"));
        changed.title = "another".into();
        assert!(edited(&stored, changed).lead_consent.is_none());
        // A forged consent on an unconsented draft is dropped too.
        let unconsented = form(Some("lead"), None);
        assert!(
            edited(&unconsented, form(Some("lead"), Some("lead")))
                .lead_consent
                .is_none()
        );
    }
}
