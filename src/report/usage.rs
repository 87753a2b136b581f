//! Reports, the usage report (使用状況報告書, 要綱 第4章 4) of one application and fiscal
//! year, counted from the signed audit log.
//!
//! Guarantees: the chain is verified first and a broken chain fails the report, naming
//! the first broken entry ([`ReportError::BrokenChain`]); every figure is counted from
//! the verified entries of the fiscal year (1 April – 31 March, JST) — no unsigned table
//! feeds a figure. Only the named users' pledges and the current extract state come from
//! the store, as context.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::audit::AuditRecord;
use crate::store::model::{Application, ExtractInfo, Person, Recommendation, Status, Term};
use crate::store::{Store, StoreError};

/// Errors of report generation.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "the audit log does not verify: the chain breaks at entry {seq} ({reason}); no report is built from a tampered log — ask the operator to investigate (kura audit verify) / 監査ログの検証に失敗しました（{seq} 番）。改ざんされたログから報告書は作成できません"
    )]
    BrokenChain { seq: i64, reason: String },
    #[error("fiscal year {0} is outside 2000–2100 / 年度の指定が不正です")]
    FiscalYear(i32),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Per-user counts (the fields of the first usage report, kept for its clients).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct UserUsage {
    pub queries: u64,
    pub ok: u64,
    pub denied: u64,
    pub errors: u64,
    pub pledged: bool,
    /// Logins in the fiscal year.
    #[serde(default)]
    pub sessions: u64,
}

/// Which part of the audit log a report was counted from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct AuditBasis {
    /// Entries in the whole verified chain, and its head.
    pub chain_events: i64,
    pub head: String,
    /// Entries of the fiscal year read (all applications).
    pub period_events: usize,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
}

/// The usage report of one application and fiscal year.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct UsageReport {
    pub application: String,
    pub title: String,
    pub status: Status,
    pub term: Option<Term>,
    pub applicant: Person,
    pub research_group: String,
    pub fiscal_year: i32,
    /// First and last day of the fiscal year.
    pub period: Term,
    pub generated_at: DateTime<Utc>,
    /// Users who ran at least one query.
    pub users: Vec<String>,
    /// Logins of those users in the fiscal year.
    pub sessions: u64,
    pub queries_total: u64,
    pub queries_ok: u64,
    pub queries_denied: u64,
    pub queries_error: u64,
    /// Refusals and failures by stable code.
    pub refused_by_code: BTreeMap<String, u64>,
    pub failed_by_code: BTreeMap<String, u64>,
    pub suppressed_cells: i64,
    /// Suppressed cells by reason: `differencing` and `primary_or_secondary` (k, dominance
    /// and the complementary cells suppressed with them).
    pub suppressed_by_reason: BTreeMap<String, i64>,
    pub dropped_rows: i64,
    pub epsilon_spent: f64,
    pub releases_requested: u64,
    pub releases_approved: u64,
    pub releases_rejected: u64,
    pub recommendations: Vec<Recommendation>,
    pub extract_built: u64,
    pub extract_destroyed: u64,
    /// The extract as it stands now (context, from the store).
    pub extract: Option<ExtractInfo>,
    pub by_user: BTreeMap<String, UserUsage>,
    pub audit: AuditBasis,
}

/// First and last day of fiscal year `fy`, and its bounds as UTC instants (JST midnights).
pub fn fiscal_period(fy: i32) -> Result<(Term, DateTime<Utc>, DateTime<Utc>), ReportError> {
    if !(2000..=2100).contains(&fy) {
        return Err(ReportError::FiscalYear(fy));
    }
    let jst = chrono::FixedOffset::east_opt(9 * 3600).expect("valid offset");
    let start = NaiveDate::from_ymd_opt(fy, 4, 1).ok_or(ReportError::FiscalYear(fy))?;
    let next = NaiveDate::from_ymd_opt(fy + 1, 4, 1).ok_or(ReportError::FiscalYear(fy))?;
    let at = |d: NaiveDate| {
        jst.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
            .single()
            .expect("fixed offset")
            .with_timezone(&Utc)
    };
    let end = next.pred_opt().ok_or(ReportError::FiscalYear(fy))?;
    Ok((Term { start, end }, at(start), at(next)))
}

/// The id a release event names (`detail.release`, else its reference).
fn release_id(e: &Value) -> Option<String> {
    e["detail"]["release"]
        .as_str()
        .or_else(|| e["reference"].as_str())
        .map(str::to_string)
}

fn count_of(e: &Value, field: &str) -> i64 {
    e["detail"][field].as_i64().unwrap_or(0)
}

/// Running tallies while the entries are read.
#[derive(Default)]
struct Tally {
    users: BTreeSet<String>,
    by_user: BTreeMap<String, UserUsage>,
    requested: BTreeSet<String>,
    approved: BTreeSet<String>,
    rejected: BTreeSet<String>,
    recommendations: Vec<Recommendation>,
}

/// Count one entry of this application into `r` and `t`.
fn count(r: &mut UsageReport, t: &mut Tally, rec: &AuditRecord) {
    let e = &rec.event;
    let actor = e["actor"].as_str().unwrap_or_default().to_string();
    let code = e["code"].as_str().unwrap_or("unknown").to_string();
    match e["action"].as_str().unwrap_or_default() {
        "query.run" => {
            t.users.insert(actor.clone());
            let u = t.by_user.entry(actor).or_default();
            u.queries += 1;
            r.queries_total += 1;
            match e["outcome"].as_str().unwrap_or_default() {
                "ok" => {
                    u.ok += 1;
                    r.queries_ok += 1;
                    let suppressed = count_of(e, "suppressed_cells");
                    let differencing =
                        e["detail"]["differencing"].as_array().map_or(0, Vec::len) as i64;
                    r.suppressed_cells += suppressed;
                    *r.suppressed_by_reason
                        .entry("differencing".into())
                        .or_default() += differencing;
                    *r.suppressed_by_reason
                        .entry("primary_or_secondary".into())
                        .or_default() += suppressed - differencing;
                    r.dropped_rows += count_of(e, "dropped_rows");
                    r.epsilon_spent += e["detail"]["epsilon_spent"].as_f64().unwrap_or(0.0);
                }
                "error" => {
                    u.errors += 1;
                    r.queries_error += 1;
                    *r.failed_by_code.entry(code).or_default() += 1;
                }
                _ => {
                    u.denied += 1;
                    r.queries_denied += 1;
                    *r.refused_by_code.entry(code).or_default() += 1;
                }
            }
        }
        "budget.reservation_spent" => {
            r.epsilon_spent += e["detail"]["epsilon"].as_f64().unwrap_or(0.0);
        }
        "release.request" if e["outcome"] == "ok" => t.requested.extend(release_id(e)),
        "release.approve" if e["outcome"] == "ok" => t.approved.extend(release_id(e)),
        "release.reject" if e["outcome"] == "ok" => t.rejected.extend(release_id(e)),
        "application.recommendation" => t.recommendations.push(Recommendation {
            at: rec.at,
            reviewer: actor,
            text: e["detail"]["text"].as_str().unwrap_or_default().to_string(),
        }),
        "extract.build" if e["outcome"] == "ok" => r.extract_built += 1,
        "extract.destroy" if e["outcome"] == "ok" => r.extract_destroyed += 1,
        _ => {}
    }
}

fn empty_report(app: &Application, fy: i32, period: Term, today: NaiveDate) -> UsageReport {
    UsageReport {
        application: app.id.clone(),
        title: app.form.title.clone(),
        status: app.effective_status(today),
        term: app.approval.as_ref().map(|a| a.term),
        applicant: app.form.applicant.clone(),
        research_group: app.form.research_group.clone(),
        fiscal_year: fy,
        period,
        generated_at: Utc::now(),
        users: Vec::new(),
        sessions: 0,
        queries_total: 0,
        queries_ok: 0,
        queries_denied: 0,
        queries_error: 0,
        refused_by_code: BTreeMap::new(),
        failed_by_code: BTreeMap::new(),
        suppressed_cells: 0,
        suppressed_by_reason: BTreeMap::new(),
        dropped_rows: 0,
        epsilon_spent: 0.0,
        releases_requested: 0,
        releases_approved: 0,
        releases_rejected: 0,
        recommendations: Vec::new(),
        extract_built: 0,
        extract_destroyed: 0,
        extract: None,
        by_user: BTreeMap::new(),
        audit: AuditBasis {
            chain_events: 0,
            head: String::new(),
            period_events: 0,
            first_seq: None,
            last_seq: None,
        },
    }
}

/// Build the usage report of `app` for fiscal year `fy` from the verified audit log.
pub async fn usage_report(
    store: &Store,
    app: &Application,
    fy: i32,
    today: NaiveDate,
) -> Result<UsageReport, ReportError> {
    let (period, from, to) = fiscal_period(fy)?;
    let v = store.verify_audit().await?;
    if !v.ok {
        return Err(ReportError::BrokenChain {
            seq: v.broken_at.unwrap_or(0),
            reason: v.reason.unwrap_or_default(),
        });
    }
    let entries = store.audit_range(from, to).await?;
    let mut r = empty_report(app, fy, period, today);
    let mut t = Tally::default();
    for rec in entries
        .iter()
        .filter(|x| x.event["application"] == app.id.as_str())
    {
        count(&mut r, &mut t, rec);
    }
    // Sessions: logins of the users who worked (logins name no application).
    for rec in &entries {
        let e = &rec.event;
        let actor = e["actor"].as_str().unwrap_or_default();
        if e["action"] == "session.login" && e["outcome"] == "ok" && t.users.contains(actor) {
            r.sessions += 1;
            t.by_user.entry(actor.to_string()).or_default().sessions += 1;
        }
    }
    let pledges = store.pledges(&app.id).await?;
    for n in &app.form.named_users {
        let u = t.by_user.entry(n.username.clone()).or_default();
        u.pledged = pledges.iter().any(|p| p.username == n.username);
    }
    r.users = t.users.into_iter().collect();
    r.by_user = t.by_user;
    r.releases_requested = t.requested.len() as u64;
    r.releases_approved = t.approved.len() as u64;
    r.releases_rejected = t.rejected.len() as u64;
    r.recommendations = t.recommendations;
    r.extract = store.extract(&app.id).await?;
    r.audit = AuditBasis {
        chain_events: v.events,
        head: v.head,
        period_events: entries.len(),
        first_seq: entries.first().map(|e| e.seq),
        last_seq: entries.last().map(|e| e.seq),
    };
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fiscal_year_runs_april_to_march_in_jst() {
        let (term, from, to) = fiscal_period(2026).unwrap();
        assert_eq!(term.start.to_string(), "2026-04-01");
        assert_eq!(term.end.to_string(), "2027-03-31");
        assert_eq!(from.to_rfc3339(), "2026-03-31T15:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2027-03-31T15:00:00+00:00");
        assert!(fiscal_period(1999).is_err());
    }
}
