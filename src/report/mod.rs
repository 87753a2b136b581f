//! Reports: the usage report (使用状況報告書, 要綱 第3章) of one application — who used it,
//! how often, what was refused, what privacy budget was spent, and what recommendations
//! and extract events there were. Built only from the store, so it matches the audit log.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::model::{Application, ExtractInfo, Recommendation, Status, Term};
use crate::store::{Store, StoreError};

/// Per-user counts.
#[derive(Debug, Clone, Default, Serialize, ToSchema, PartialEq)]
pub struct UserUsage {
    pub queries: u64,
    pub ok: u64,
    pub denied: u64,
    pub errors: u64,
    pub pledged: bool,
}

/// The usage report of one application.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct UsageReport {
    pub application: String,
    pub title: String,
    pub status: Status,
    pub term: Option<Term>,
    pub queries_total: u64,
    pub queries_ok: u64,
    pub queries_denied: u64,
    pub queries_error: u64,
    pub suppressed_cells: i64,
    pub dropped_rows: i64,
    pub epsilon_spent: f64,
    pub by_user: BTreeMap<String, UserUsage>,
    pub recommendations: Vec<Recommendation>,
    pub extract: Option<ExtractInfo>,
}

/// Build the usage report of `app` as of `today`.
pub async fn usage_report(
    store: &Store,
    app: &Application,
    today: NaiveDate,
) -> Result<UsageReport, StoreError> {
    let queries = store.queries(Some(&app.id), None, i64::MAX).await?;
    let pledges = store.pledges(&app.id).await?;
    let mut by_user: BTreeMap<String, UserUsage> = app
        .form
        .named_users
        .iter()
        .map(|n| {
            let pledged = pledges.iter().any(|p| p.username == n.username);
            (
                n.username.clone(),
                UserUsage {
                    pledged,
                    ..Default::default()
                },
            )
        })
        .collect();
    let mut r = UsageReport {
        application: app.id.clone(),
        title: app.form.title.clone(),
        status: app.effective_status(today),
        term: app.approval.as_ref().map(|a| a.term),
        queries_total: 0,
        queries_ok: 0,
        queries_denied: 0,
        queries_error: 0,
        suppressed_cells: 0,
        dropped_rows: 0,
        epsilon_spent: 0.0,
        by_user: BTreeMap::new(),
        recommendations: store.recommendations(&app.id).await?,
        extract: store.extract(&app.id).await?,
    };
    for q in &queries {
        let u = by_user.entry(q.username.clone()).or_default();
        u.queries += 1;
        r.queries_total += 1;
        match q.outcome.as_str() {
            "ok" => {
                u.ok += 1;
                r.queries_ok += 1;
            }
            "error" => {
                u.errors += 1;
                r.queries_error += 1;
            }
            _ => {
                u.denied += 1;
                r.queries_denied += 1;
            }
        }
        r.suppressed_cells += q.suppressed_cells.unwrap_or(0);
        r.dropped_rows += q.dropped_rows.unwrap_or(0);
        r.epsilon_spent += q.epsilon_spent.unwrap_or(0.0);
    }
    r.by_user = by_user;
    Ok(r)
}
