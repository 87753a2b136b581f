//! The public transparency register (seed 003: 「提供したデータの研究における活用状況や
//! 成果について、患者側にフィードバックする」): `GET /api/v1/public/studies`, no login.
//! The console shows it at `/#/register`.
//!
//! Guarantees:
//! - Every study that was ever approved is listed — in its term, expired, revoked or
//!   withdrawn — with its status; drafts, refusals and pending applications never are.
//! - What is shown of a study is what the reviewer published at approval (title,
//!   institution, purpose summary: `Approval::published`) plus the approved scope and
//!   term; never a researcher's notebook, a named user, a network, or the form's other
//!   fields.
//! - Releases appear only once approved, as their id and date; publications as reported
//!   (citation and date). Usage per fiscal year and dataset counts studies and answered
//!   queries from control-plane records. Nothing here reads a patient row.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use crate::policy::facility::{FACILITY_PREFIX, facility_scope};
use crate::policy::{PMS_PREFIX, fiscal_year, pms_scope};
use crate::store::model::{Application, Status, Term};

/// One approved release, as the register shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicRelease {
    pub id: String,
    pub requested_on: NaiveDate,
}

/// One reported publication.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicPublication {
    pub citation: String,
    pub published_on: NaiveDate,
}

/// One study on the register.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicStudy {
    /// The application number (承認番号).
    pub id: String,
    pub title: String,
    /// Lead institution (申請者所属).
    pub institution: String,
    /// Purpose summary.
    pub summary: String,
    pub datasets: Vec<String>,
    /// Designated disease numbers (`null`: not restricted).
    pub diseases: Option<Vec<i32>>,
    /// Fiscal years of records (`null`: all).
    pub fiscal_years: Option<Vec<i32>>,
    /// Prefecture codes (`null`: nationwide).
    pub regions: Option<Vec<String>>,
    pub term: Term,
    /// `approved` (in its term), `expired`, `revoked` or `withdrawn`.
    #[schema(value_type = String)]
    pub status: Status,
    pub approved_on: NaiveDate,
    pub releases: Vec<PublicRelease>,
    pub publications: Vec<PublicPublication>,
}

/// Use of one dataset in one fiscal year.
#[derive(Debug, Serialize, ToSchema, PartialEq, Eq)]
pub struct DatasetUsage {
    pub fiscal_year: i32,
    pub dataset: String,
    /// Approved studies whose term lies in the fiscal year and whose scope includes it.
    pub studies: i64,
    /// Answered queries of those studies.
    pub queries: i64,
    /// Answered queries of standing access (PMS teams, medical institutions).
    pub standing_queries: i64,
}

/// The register.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicRegister {
    pub generated_at: DateTime<Utc>,
    pub studies: Vec<PublicStudy>,
    pub usage: Vec<DatasetUsage>,
}

/// The approved studies with their published fields, releases and publications, and
/// the use of each dataset per fiscal year. No login.
#[utoipa::path(get, path = "/api/v1/public/studies", tag = "register",
    responses((status = 200, body = PublicRegister)))]
pub async fn studies(State(st): State<AppState>) -> Result<Json<PublicRegister>, ApiError> {
    let today = st.today();
    let apps: Vec<Application> = st
        .store
        .applications()
        .await?
        .into_iter()
        .filter(|a| {
            a.approval.is_some()
                && matches!(
                    a.status,
                    Status::Approved | Status::Revoked | Status::Withdrawn
                )
        })
        .collect();
    let mut releases: BTreeMap<String, Vec<PublicRelease>> = BTreeMap::new();
    for r in st.store.approved_releases().await? {
        releases
            .entry(r.application)
            .or_default()
            .push(PublicRelease {
                id: r.id,
                requested_on: jst_date(r.requested_at),
            });
    }
    let mut studies = Vec::new();
    for a in &apps {
        let publications = st
            .store
            .publications(&a.id)
            .await?
            .into_iter()
            .map(|p| PublicPublication {
                citation: p.citation,
                published_on: p.published_on,
            })
            .collect();
        studies.push(study(
            a,
            today,
            releases.remove(&a.id).unwrap_or_default(),
            publications,
        ));
    }
    let usage = usage(&st, &apps).await?;
    Ok(Json(PublicRegister {
        generated_at: Utc::now(),
        studies,
        usage,
    }))
}

fn jst_date(t: DateTime<Utc>) -> NaiveDate {
    (t + chrono::Duration::hours(9)).date_naive()
}

/// A study's public entry: the published fields, the approved scope, term and status.
fn study(
    a: &Application,
    today: NaiveDate,
    releases: Vec<PublicRelease>,
    publications: Vec<PublicPublication>,
) -> PublicStudy {
    let approval = a.approval.as_ref().expect("filtered to approved studies");
    let published = approval.published.clone().unwrap_or_default();
    PublicStudy {
        id: a.id.clone(),
        title: published.title,
        institution: published.institution,
        summary: published.summary,
        datasets: approval.scope.datasets.clone(),
        diseases: approval.scope.diseases.clone(),
        fiscal_years: approval.scope.fiscal_years.clone(),
        regions: approval.scope.prefectures.clone(),
        term: approval.term,
        status: a.effective_status(today),
        approved_on: jst_date(approval.approved_at),
        releases,
        publications,
    }
}

/// Studies and answered queries per fiscal year and dataset.
async fn usage(st: &AppState, apps: &[Application]) -> Result<Vec<DatasetUsage>, ApiError> {
    let mut table: Usage = BTreeMap::new();
    let mut datasets_of: BTreeMap<&str, &[String]> = BTreeMap::new();
    for a in apps {
        let approval = a.approval.as_ref().expect("filtered to approved studies");
        for d in &approval.scope.datasets {
            row(&mut table, fiscal_year(approval.term.start), d).studies += 1;
        }
        datasets_of.insert(&a.id, &approval.scope.datasets);
    }
    for c in st.store.answered_query_counts().await? {
        let Some(fy) = hour_fiscal_year(&c.hour) else {
            continue;
        };
        if let Some(datasets) = datasets_of.get(c.application.as_str()) {
            for d in datasets.iter() {
                row(&mut table, fy, d).queries += c.queries;
            }
        } else if let Some(datasets) = standing_datasets(&c.application) {
            for d in &datasets {
                row(&mut table, fy, d).standing_queries += c.queries;
            }
        }
    }
    Ok(table.into_values().collect())
}

type Usage = BTreeMap<(i32, String), DatasetUsage>;

/// The usage row of a fiscal year and dataset, created at zero.
fn row<'a>(table: &'a mut Usage, fy: i32, dataset: &str) -> &'a mut DatasetUsage {
    table
        .entry((fy, dataset.to_string()))
        .or_insert_with(|| DatasetUsage {
            fiscal_year: fy,
            dataset: dataset.to_string(),
            studies: 0,
            queries: 0,
            standing_queries: 0,
        })
}

/// The datasets of a standing scope id (PMS team or medical institution).
fn standing_datasets(id: &str) -> Option<Vec<String>> {
    if let Some(m) = id.strip_prefix(PMS_PREFIX) {
        return Some(pms_scope(m).datasets);
    }
    id.strip_prefix(FACILITY_PREFIX)
        .map(|f| facility_scope(f).datasets)
}

/// The fiscal year (in Japan Standard Time) of a UTC hour `YYYY-MM-DDTHH`.
fn hour_fiscal_year(hour: &str) -> Option<i32> {
    let t = NaiveDateTime::parse_from_str(&format!("{hour}:00"), "%Y-%m-%dT%H:%M").ok()?;
    Some(fiscal_year((t + chrono::Duration::hours(9)).date()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_fall_into_the_japanese_fiscal_year() {
        // 31 March 2026 14:59 UTC is 23:59 JST: still FY2025.
        assert_eq!(hour_fiscal_year("2026-03-31T14"), Some(2025));
        // 31 March 2026 15:00 UTC is 1 April 00:00 JST: FY2026.
        assert_eq!(hour_fiscal_year("2026-03-31T15"), Some(2026));
        assert_eq!(hour_fiscal_year("garbage"), None);
    }
}
