//! Annual reports over HTTP (issue 13 §3): `GET /api/v1/reports/annual?fy=&format=` for
//! the data custodian and reviewers, with `?manufacturer=` / `?product=` for PMS teams
//! (their own products only); `GET /api/v1/reports/annual/register`, what was published.
//!
//! Guarantees: who sees what is decided by the enforcement point (`annual_report` on no
//! object for custodians and reviewers; on the team's standing scope `PMS-<maker>` for a
//! PMS team) before anything is computed, and a product is checked against its maker
//! before anything is published; every refusal is a 403 with its audit event (`denied`);
//! a report is returned only after its ledger entry and `report.annual` audit event
//! committed; parameters are bounded and never echoed into messages.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::denied::denied;
use super::error::{ApiError, ErrorBody};
use super::reports::{file_response, format_of};
use super::session::AuthUser;
use crate::policy::{Action, Denial, Target, fiscal_year, pms_scope_id};
use crate::privacy::Defences;
use crate::report::annual::{self, AnnualError, AnnualReport, Audience, Definitions};
use crate::report::{Format, pdf::ReportFont};
use crate::store::annual::AnnualRecord;

impl From<AnnualError> for ApiError {
    fn from(e: AnnualError) -> Self {
        match e {
            AnnualError::FiscalYear(_) => ApiError::bad_request("invalid_request", e.to_string()),
            AnnualError::NoProducts(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "No product of this manufacturer is in the report. / 該当する製品がありません。",
            ),
            AnnualError::Query(q) if q.code() == "resource_limit" => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "resource_limit",
                q.public_message(),
            ),
            AnnualError::Query(q) => ApiError::internal(&format!(
                "annual report table failed: {} {}",
                q.code(),
                q.internal_detail()
            )),
            AnnualError::Definition(d) => ApiError::internal(&d),
            AnnualError::Store(s) => s.into(),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AnnualParams {
    /// Fiscal year (April–March); default: the last completed one.
    pub fy: Option<i32>,
    /// `json` (default), `csv`, `html` or `pdf`.
    pub format: Option<String>,
    /// One product (code, e.g. `P01`).
    pub product: Option<String>,
    /// One manufacturer's products (code, e.g. `M01`); a PMS team: its own.
    pub manufacturer: Option<String>,
}

/// A product or manufacturer code: 1–16 ASCII letters, digits, `-` or `_`.
fn code_param(v: &Option<String>, name: &str) -> Result<(), ApiError> {
    match v {
        Some(s)
            if s.is_empty()
                || s.len() > 16
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Err(ApiError::bad_request(
                "invalid_request",
                format!(
                    "`{name}` is a code of 1–16 letters, digits, - or _ / {name} の指定が不正です"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// The annual report definitions in force (`annual_reports_dir`, else the embedded ones).
pub fn definitions(st: &AppState) -> Result<Definitions, ApiError> {
    match &st.settings.annual_reports_dir {
        Some(dir) => Definitions::load_dir(dir, &st.catalog),
        None => Definitions::embedded(&st.catalog),
    }
    .map_err(|e| ApiError::internal(&e))
}

/// Whom the caller may ask for: everything (custodian, reviewer), or a PMS team's own
/// manufacturer.
enum Reader {
    Custodian,
    Pms(String),
}

async fn reader(
    st: &AppState,
    who: &AuthUser,
    p: &AnnualParams,
    fy: i32,
) -> Result<Reader, ApiError> {
    let today = st.today();
    let role = st
        .policy
        .authorize(&who.user, Action::AnnualReport, &Target::None, today)
        .await;
    let role_denial = match role {
        Ok(()) => return Ok(Reader::Custodian),
        Err(d) => d,
    };
    let detail = json!({"fiscal_year": fy, "manufacturer": p.manufacturer, "product": p.product});
    let Some(m) = p
        .manufacturer
        .clone()
        .or_else(|| who.user.manufacturer.clone())
    else {
        return Err(denied(st, &who.user, "report.annual", None, &role_denial, detail).await);
    };
    let scope = pms_scope_id(&m);
    let target = Target::Pms { scope_id: &scope };
    match st
        .policy
        .authorize(&who.user, Action::AnnualReport, &target, today)
        .await
    {
        Ok(()) => Ok(Reader::Pms(m)),
        Err(d) => Err(denied(st, &who.user, "report.annual", None, &d, detail).await),
    }
}

/// The annual report (seed 001 items 10 and 12) of a fiscal year.
#[utoipa::path(get, path = "/api/v1/reports/annual", tag = "reports",
    params(AnnualParams),
    responses((status = 200, body = AnnualReport), (status = 400, body = ErrorBody),
        (status = 403, description = "not a custodian or reviewer, or another manufacturer's products", body = ErrorBody),
        (status = 503, description = "pdf_unavailable: no Japanese font for the PDF", body = ErrorBody)))]
pub async fn annual_report(
    State(st): State<AppState>,
    who: AuthUser,
    params: Result<Query<AnnualParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let format = format_of(p.format.as_deref())?;
    code_param(&p.product, "product")?;
    code_param(&p.manufacturer, "manufacturer")?;
    let fy = p.fy.unwrap_or_else(|| fiscal_year(st.today()) - 1);
    let reader = reader(&st, &who, &p, fy).await?;
    if format == Format::Pdf {
        ReportFont::find(st.settings.report_font.as_deref())
            .map_err(crate::report::RenderError::from)?;
    }
    let defs = definitions(&st)?;
    let computed = annual::compute(&st.store, &st.data, &defs, fy, Defences::ALL).await?;
    let audience = match (&reader, &p.product, &p.manufacturer) {
        (_, Some(product), _) => {
            let owner = computed.manufacturer_of(product);
            match (&reader, owner) {
                (Reader::Pms(m), Some(o)) if &o == m => Audience::Product {
                    manufacturer: o,
                    product: product.clone(),
                },
                (Reader::Pms(_), _) => {
                    drop(computed);
                    let d = Denial {
                        code: "forbidden",
                        message: "A PMS team may see only its own manufacturer's products. / 自社製品の報告のみ閲覧できます。".into(),
                    };
                    let detail = json!({"fiscal_year": fy, "product": product});
                    return Err(denied(&st, &who.user, "report.annual", None, &d, detail).await);
                }
                (Reader::Custodian, Some(o)) => Audience::Product {
                    manufacturer: o,
                    product: product.clone(),
                },
                (Reader::Custodian, None) => return Err(ApiError::not_found("product")),
            }
        }
        (Reader::Pms(m), None, _) => Audience::Manufacturer(m.clone()),
        (Reader::Custodian, None, Some(m)) => Audience::Manufacturer(m.clone()),
        (Reader::Custodian, None, None) => Audience::All,
    };
    let detail = json!({"format": format.extension(), "via": "api"});
    let report = annual::publish(
        &st.store,
        &defs,
        computed,
        &audience,
        &who.user.username,
        detail,
    )
    .await?;
    if format == Format::Json {
        return Ok(Json(report).into_response());
    }
    let body = crate::report::annual_rendered(&report, format, st.settings.report_font.as_deref())?;
    Ok(file_response(&format!("annual-FY{fy}"), format, body))
}

/// The register of generated annual reports (custodians, reviewers).
#[utoipa::path(get, path = "/api/v1/reports/annual/register", tag = "reports",
    responses((status = 200, body = Vec<AnnualRecord>), (status = 403, body = ErrorBody)))]
pub async fn annual_register(
    State(st): State<AppState>,
    who: AuthUser,
) -> Result<Json<Vec<AnnualRecord>>, ApiError> {
    if let Err(d) = st
        .policy
        .authorize(&who.user, Action::AnnualReport, &Target::None, st.today())
        .await
    {
        return Err(denied(
            &st,
            &who.user,
            "report.annual_register",
            None,
            &d,
            json!({}),
        )
        .await);
    }
    Ok(Json(st.store.annual_reports().await?))
}
