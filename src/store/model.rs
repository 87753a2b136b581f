//! Control-plane records: accounts, applications (form 1 + annex, form 2 pledges, form 3
//! lead consent of seed 002), approvals and the small records around them. These are the
//! shapes the store persists and the HTTP API shows.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::privacy::result::{DisclosureMode, DpBounds};
use crate::sql::scope::Scope;

/// Account roles. A PMS account is bound to one manufacturer, a facility account to one
/// medical facility.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Researcher,
    Reviewer,
    Auditor,
    Pms,
    Admin,
    /// A medical institution (seed 001 item 8): its own patients' records.
    Facility,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Researcher => "researcher",
            Role::Reviewer => "reviewer",
            Role::Auditor => "auditor",
            Role::Pms => "pms",
            Role::Admin => "admin",
            Role::Facility => "facility",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "researcher" => Role::Researcher,
            "reviewer" => Role::Reviewer,
            "auditor" => Role::Auditor,
            "pms" => Role::Pms,
            "admin" => Role::Admin,
            "facility" => Role::Facility,
            _ => return None,
        })
    }
}

/// An account as the rest of kura sees it (no password hash).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct User {
    pub username: String,
    pub roles: Vec<Role>,
    /// Manufacturer code of a PMS team account.
    pub manufacturer: Option<String>,
    /// Facility code of a medical institution's account (`Store::set_facility`).
    #[serde(default)]
    pub facility: Option<String>,
    pub display_name: String,
    pub affiliation: String,
    pub title: String,
    pub disabled: bool,
    /// Execution errors this account caused so far (repeated errors are an oracle).
    pub execution_errors: i64,
}

impl User {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub password_hash: String,
    pub roles: Vec<Role>,
    pub manufacturer: Option<String>,
    pub display_name: String,
    pub affiliation: String,
    pub title: String,
}

/// Workflow states. `Expired` is never stored: an approved application reads as expired
/// once its term has ended (see [`Application::effective_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Draft,
    Submitted,
    CorrectionRequested,
    Approved,
    Rejected,
    Revoked,
    Expired,
    /// The applicant ended an approved study before its term (取り下げ); it stays on
    /// the public register with this status.
    Withdrawn,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Submitted => "submitted",
            Status::CorrectionRequested => "correction_requested",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Revoked => "revoked",
            Status::Expired => "expired",
            Status::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "draft" => Status::Draft,
            "submitted" => Status::Submitted,
            "correction_requested" => Status::CorrectionRequested,
            "approved" => Status::Approved,
            "rejected" => Status::Rejected,
            "revoked" => Status::Revoked,
            "expired" => Status::Expired,
            "withdrawn" => Status::Withdrawn,
            _ => return None,
        })
    }
}

/// Period of use (使用期間). Inclusive dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Term {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

/// Applicant or named user with affiliation and title (所属・職名).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
pub struct Person {
    pub name: String,
    pub affiliation: String,
    pub title: String,
}

/// A named user (使用者): an existing account plus affiliation and title.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NamedUser {
    pub username: String,
    #[serde(default)]
    pub affiliation: String,
    #[serde(default)]
    pub title: String,
}

/// Form 3: the research lead's consent when a co-investigator applies. Recorded by the
/// lead's own action (`POST /applications/{id}/lead-consent`), never from the applicant's
/// form: kura drops any value an applicant sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeadConsent {
    pub lead: Person,
    pub consented_on: NaiveDate,
    /// The lead's account, which consented.
    #[serde(default)]
    pub username: String,
    /// When it consented (the form as it stood then; an edit asks for consent again).
    #[serde(default)]
    pub consented_at: Option<DateTime<Utc>>,
}

/// Ethics review (倫理審査): committee and approval number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
pub struct EthicsReview {
    pub committee: String,
    pub approval_number: String,
}

/// Requested record scope (fiscal years, regions, datasets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
pub struct RequestedScope {
    pub datasets: Vec<String>,
    pub fiscal_years: Vec<i32>,
    /// Prefecture codes "01".."47"; `null` = nationwide (全国).
    pub prefectures: Option<Vec<String>>,
}

/// Form 1 and its annex (様式1・様式1別紙).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, Default)]
#[serde(default)]
pub struct ApplicationForm {
    pub title: String,
    pub research_group: String,
    pub applicant: Person,
    /// Set when a co-investigator applies (form 3).
    pub lead_consent: Option<LeadConsent>,
    /// Target diseases by designated disease number (告示番号).
    pub diseases: Vec<i32>,
    pub purpose: String,
    pub necessity: String,
    pub expected_results: String,
    pub prior_work: String,
    pub plan_and_methods: String,
    pub ethics_review: EthicsReview,
    pub other_matters: String,
    pub named_users: Vec<NamedUser>,
    pub scope: RequestedScope,
    pub term: Option<Term>,
    pub place_of_use: String,
    pub publication_plan: String,
    pub contact: String,
    /// Item 6 as networks: the CIDR blocks of the research facility, suggested to the
    /// reviewer, who sets the approved ones (the place of use checked on every request).
    pub networks: Vec<String>,
    /// A co-investigator's application (分担研究者, 要綱 第2章2(2)) names the account of
    /// the research lead (主任研究者), whose own consent (form 3) must be on record
    /// (`lead_consent`, set only by the lead's action) before it can be submitted.
    pub lead_investigator: Option<String>,
}

/// What a reviewer approved: the terms that bind every query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Approval {
    pub term: Term,
    #[schema(value_type = Object)]
    pub scope: Scope,
    #[schema(value_type = String)]
    pub mode: DisclosureMode,
    /// k: minimum distinct patients per released cell.
    pub k: u32,
    /// ε budget per fiscal year under DP.
    pub epsilon_budget: Option<f64>,
    /// Default per-patient contribution bounds of DP queries (`None`: kura's defaults).
    /// Approvals stored before DP bounds existed load with `None`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub dp_bounds: Option<DpBounds>,
    pub approved_by: String,
    pub approved_at: DateTime<Utc>,
    /// Place of use (要綱 第3章6): the networks (CIDR blocks) of the research facility
    /// every request must come from; `None` = not restricted by network.
    #[serde(default)]
    pub networks: Option<Vec<String>>,
    /// What the public transparency register shows of this study, chosen by the
    /// reviewer at approval; `None` = only the number, datasets, scope, term and status.
    #[serde(default)]
    pub published: Option<Published>,
}

/// The published fields of an approved study (seed 003: tell patients how their data
/// is used): taken from form 1 or written by the reviewer, never from notebooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
pub struct Published {
    pub title: String,
    /// The lead institution (申請者所属).
    pub institution: String,
    /// A summary of the purpose (研究の目的の要旨).
    pub summary: String,
}

/// An application with its current state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Application {
    pub id: String,
    pub status: Status,
    pub applicant: String,
    pub form: ApplicationForm,
    pub approval: Option<Approval>,
    /// A change application (変更申請) under review; the approval stays in force meanwhile.
    pub pending_change: Option<ApplicationForm>,
    pub revoked_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Application {
    /// The status as of `today`: an approved application whose term has ended is expired.
    pub fn effective_status(&self, today: NaiveDate) -> Status {
        match (&self.status, &self.approval) {
            (Status::Approved, Some(a)) if today > a.term.end => Status::Expired,
            (s, _) => *s,
        }
    }

    /// Whether `username` is a named user of the form in force (approved form, or draft).
    pub fn is_named(&self, username: &str) -> bool {
        self.form.named_users.iter().any(|n| n.username == username)
            || self
                .pending_change
                .as_ref()
                .is_some_and(|f| f.named_users.iter().any(|n| n.username == username))
    }
}

/// One entry of an application's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub reason: Option<String>,
}

/// A corrective recommendation (是正勧告).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Recommendation {
    pub at: DateTime<Utc>,
    pub reviewer: String,
    pub text: String,
}

/// A pledge (form 2) accepted by a named user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Pledge {
    pub username: String,
    pub accepted_at: DateTime<Utc>,
}

/// The materialised extract of one application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExtractInfo {
    pub application_id: String,
    pub extract_id: String,
    pub path: String,
    pub built_at: DateTime<Utc>,
    pub destroyed_at: Option<DateTime<Utc>>,
}

/// One row of the query history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueryRecord {
    pub query_id: String,
    pub application_id: String,
    pub username: String,
    pub at: DateTime<Utc>,
    pub sql: String,
    pub outcome: String,
    pub code: Option<String>,
    pub duration_ms: Option<i64>,
    pub epsilon_spent: Option<f64>,
    pub suppressed_cells: Option<i64>,
    pub dropped_rows: Option<i64>,
}

/// A notebook of SQL / markdown cells, per user and application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Notebook {
    pub id: String,
    pub owner: String,
    pub application_id: String,
    pub title: String,
    #[schema(value_type = Object)]
    pub cells: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A request to release a result for publication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseRequest {
    pub id: String,
    pub application_id: String,
    pub requester: String,
    pub query_id: String,
    pub justification: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
}
