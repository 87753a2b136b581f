//! Reports over HTTP: the usage report (使用状況報告書) of an application and fiscal year
//! as JSON, CSV or HTML; the applicant's filing of it; the reviewer's list of filed and
//! missing reports; publication reports (seed 002 様式2 item 3).
//!
//! Guarantees: reports are read by the applicant, reviewers and auditors only (the
//! enforcement point's `usage_report` action, or being the applicant); only the
//! applicant files and records publications, each change audited in its transaction;
//! a report is built only from a verified audit chain (`409 audit_chain_broken` names
//! the first broken entry otherwise); every text field has a length limit.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::AppState;
use super::applications::load_visible;
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::audit::AuditEvent;
use crate::policy::{Action, Target, fiscal_year};
use crate::report::{self, Format, ReportError, UsageReport};
use crate::store::model::Application;
use crate::store::oversight::{Filing, Publication};

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::BrokenChain { .. } => {
                ApiError::new(StatusCode::CONFLICT, "audit_chain_broken", e.to_string())
            }
            ReportError::FiscalYear(_) => ApiError::bad_request("invalid_request", e.to_string()),
            ReportError::Store(s) => s.into(),
        }
    }
}

fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "Usage reports are for the applicant, reviewers and auditors. / 使用状況報告は申請者・審査担当・監査担当のみ閲覧できます。",
    )
}

/// Whether the caller may oversee reports (reviewer, auditor) through the enforcement point.
async fn oversees(st: &AppState, who: &AuthUser) -> bool {
    st.policy
        .authorize(&who.user, Action::UsageReport, &Target::None, st.today())
        .await
        .is_ok()
}

/// The application, if the caller is its applicant or oversees reports.
async fn readable(
    st: &AppState,
    who: &AuthUser,
    id: &str,
) -> Result<(Application, bool), ApiError> {
    let app = load_visible(st, who, id).await?;
    let oversight = oversees(st, who).await;
    if !oversight && app.applicant != who.user.username {
        return Err(forbidden());
    }
    Ok((app, oversight))
}

/// The application, if the caller is its applicant; else `403 forbidden` with `why`.
async fn applicant_only(
    st: &AppState,
    who: &AuthUser,
    id: &str,
    why: &str,
) -> Result<Application, ApiError> {
    let app = load_visible(st, who, id).await?;
    if app.applicant != who.user.username {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", why));
    }
    Ok(app)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ReportParams {
    /// Fiscal year (April–March); default: the current one.
    pub fy: Option<i32>,
    /// `json` (default), `csv`, `html` or `pdf`.
    pub format: Option<String>,
}

/// The `format` parameter (`json` when absent).
pub fn format_of(name: Option<&str>) -> Result<Format, ApiError> {
    Format::parse(name.unwrap_or("json")).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_request",
            "`format` is json, csv, html or pdf / format は json・csv・html・pdf のいずれかです",
        )
    })
}

impl From<crate::report::RenderError> for ApiError {
    fn from(e: crate::report::RenderError) -> Self {
        match e {
            crate::report::RenderError::Pdf(p @ crate::report::pdf::PdfError::NoFont { .. })
            | crate::report::RenderError::Pdf(p @ crate::report::pdf::PdfError::BadFont { .. }) => {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "pdf_unavailable",
                    p.to_string(),
                )
            }
            other => ApiError::internal(&other),
        }
    }
}

/// A rendered report file as the response: its content type, an inline file name, and for
/// HTML a Content-Security-Policy that allows only the document's own stylesheet.
pub fn file_response(name: &str, f: Format, body: Vec<u8>) -> Response {
    let mut headers = vec![
        (header::CONTENT_TYPE, f.content_type().to_string()),
        (
            header::CONTENT_DISPOSITION,
            format!("inline; filename=\"{name}.{}\"", f.extension()),
        ),
    ];
    if f == Format::Html {
        headers.push((
            header::CONTENT_SECURITY_POLICY,
            format!(
                "default-src 'none'; style-src {}; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                crate::report::document::style_hash()
            ),
        ));
    }
    let mut resp = body.into_response();
    for (k, v) in headers {
        if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

fn document(st: &AppState, r: &UsageReport, f: Format) -> Result<Response, ApiError> {
    if f == Format::Json {
        return Ok(Json(r).into_response());
    }
    let body = report::rendered(r, f, st.settings.report_font.as_deref())?;
    let name = format!("usage-{}-FY{}", r.application, r.fiscal_year);
    Ok(file_response(&name, f, body))
}

/// The usage report (使用状況報告書) of an application and fiscal year.
#[utoipa::path(get, path = "/api/v1/applications/{id}/usage-report", tag = "reports",
    params(("id" = String, Path), ReportParams),
    responses((status = 200, body = UsageReport), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "audit_chain_broken: the log does not verify", body = ErrorBody)))]
pub async fn usage_report(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
    params: Result<Query<ReportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let format = format_of(p.format.as_deref())?;
    let (app, _) = readable(&st, &who, &id).await?;
    let fy = p.fy.unwrap_or_else(|| fiscal_year(st.today()));
    let r = report::usage_report(&st.store, &app, fy, st.today()).await?;
    let ev = AuditEvent::ok(
        &who.user.username,
        "report.usage",
        Some(&id),
        json!({"fiscal_year": fy, "format": format.extension()}),
    );
    // Render before the audit event: a report that cannot be rendered is not recorded
    // as generated; one whose event cannot be written is not returned.
    let body = document(&st, &r, format)?;
    st.store.record(&ev).await?;
    Ok(body)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct FileRequest {
    /// Fiscal year filed; default: the current one.
    pub fy: Option<i32>,
}

/// The applicant files the usage report of a fiscal year (once).
#[utoipa::path(post, path = "/api/v1/applications/{id}/usage-report/file", tag = "reports",
    params(("id" = String, Path)), request_body = FileRequest,
    responses((status = 201, body = Filing), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn file_usage_report(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
    body: JsonBody<FileRequest>,
) -> Result<(StatusCode, Json<Filing>), ApiError> {
    let Json(req) = body?;
    let app = applicant_only(
        &st,
        &who,
        &id,
        "Only the applicant files the usage report. / 使用状況報告書を提出できるのは申請者のみです。",
    )
    .await?;
    let fy = req.fy.unwrap_or_else(|| fiscal_year(st.today()));
    let r = report::usage_report(&st.store, &app, fy, st.today()).await?;
    let filing = Filing {
        application: id.clone(),
        fiscal_year: fy,
        filed_by: who.user.username.clone(),
        filed_at: Utc::now(),
        audit_head: r.audit.head.clone(),
        report: serde_json::to_value(&r).map_err(|e| ApiError::internal(&e))?,
    };
    let saved = st.store.file_usage_report(&filing).await.map_err(|e| match e {
        crate::store::StoreError::Conflict(_) => ApiError::conflict(
            "already_filed",
            "The usage report of this fiscal year is already filed. / この年度の使用状況報告書は提出済みです。",
        ),
        other => other.into(),
    })?;
    Ok((StatusCode::CREATED, Json(saved)))
}

/// A report that is due and not filed.
#[derive(Debug, Serialize, ToSchema)]
pub struct MissingReport {
    pub application: String,
    pub fiscal_year: i32,
    pub applicant: String,
    pub term_end: NaiveDate,
}

/// Filed and missing usage reports (reviewers, auditors).
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReports {
    pub filed: Vec<Filing>,
    pub missing: Vec<MissingReport>,
}

/// The fiscal years of `app`'s term that are due by `today`: every year of a term that
/// has ended, and every year that has ended within a running term.
fn due_years(app: &Application, today: NaiveDate) -> Vec<i32> {
    let Some(a) = &app.approval else {
        return Vec::new();
    };
    let (first, last) = (fiscal_year(a.term.start), fiscal_year(a.term.end));
    let term_over = a.term.end < today;
    (first..=last)
        .filter(|fy| term_over || *fy < fiscal_year(today))
        .collect()
}

/// The reviewer's list: every filed report and every due one not filed.
#[utoipa::path(get, path = "/api/v1/reports/usage", tag = "reports",
    responses((status = 200, body = UsageReports), (status = 403, body = ErrorBody)))]
pub async fn usage_reports(
    State(st): State<AppState>,
    who: AuthUser,
) -> Result<Json<UsageReports>, ApiError> {
    if !oversees(&st, &who).await {
        return Err(forbidden());
    }
    let filed = st.store.usage_filings(None).await?;
    let mut missing = Vec::new();
    for app in st.store.applications().await? {
        for fy in due_years(&app, st.today()) {
            let done = filed
                .iter()
                .any(|f| f.application == app.id && f.fiscal_year == fy);
            if !done {
                missing.push(MissingReport {
                    application: app.id.clone(),
                    fiscal_year: fy,
                    applicant: app.applicant.clone(),
                    term_end: app
                        .approval
                        .as_ref()
                        .map(|a| a.term.end)
                        .unwrap_or_default(),
                });
            }
        }
    }
    Ok(Json(UsageReports { filed, missing }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PublicationRequest {
    /// Citation (authors, title, journal or meeting), at most 1000 characters.
    pub citation: String,
    /// Publication date.
    pub date: NaiveDate,
    /// Release ids the publication used.
    #[serde(default)]
    pub releases: Vec<String>,
}

fn invalid(message: &str) -> ApiError {
    ApiError::bad_request("invalid_request", message.to_string())
}

/// The applicant records a publication (seed 002 様式2 item 3).
#[utoipa::path(post, path = "/api/v1/applications/{id}/publications", tag = "reports",
    params(("id" = String, Path)), request_body = PublicationRequest,
    responses((status = 201, body = Publication), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn add_publication(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
    body: JsonBody<PublicationRequest>,
) -> Result<(StatusCode, Json<Publication>), ApiError> {
    let Json(req) = body?;
    applicant_only(
        &st,
        &who,
        &id,
        "Only the applicant records publications. / 公表の報告は申請者が行います。",
    )
    .await?;
    let citation = req.citation.trim();
    if citation.is_empty() || citation.chars().count() > 1000 {
        return Err(invalid(
            "`citation` needs 1–1000 characters / 公表内容（引用）を 1〜1000 文字で記入してください",
        ));
    }
    let ok_ids =
        req.releases.len() <= 50 && req.releases.iter().all(|r| !r.is_empty() && r.len() <= 64);
    if !ok_ids {
        return Err(invalid(
            "`releases`: at most 50 release ids of at most 64 characters / releases の指定が不正です",
        ));
    }
    let p = st
        .store
        .add_publication(&id, &who.user.username, citation, req.date, &req.releases)
        .await?;
    Ok((StatusCode::CREATED, Json(p)))
}

/// The publications of an application (applicant, reviewers, auditors).
#[utoipa::path(get, path = "/api/v1/applications/{id}/publications", tag = "reports",
    params(("id" = String, Path)),
    responses((status = 200, body = Vec<Publication>), (status = 403, body = ErrorBody)))]
pub async fn publications(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Vec<Publication>>, ApiError> {
    readable(&st, &who, &id).await?;
    Ok(Json(st.store.publications(&id).await?))
}
