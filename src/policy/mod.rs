//! Authorization stage: casbin enforcement of the approval rules of seed 002 (別添2 要綱)
//! and the PMS standing access of seed 001.
//!
//! [`Policy::authorize`] is the one enforcement point every API action passes. casbin
//! (`policies/model.conf`, static role rules in `policies/policy.csv`, approval-derived
//! `g2` lines rebuilt from the store) makes the decision; the same function then names the
//! rule that failed so the caller gets a stable code (`not_named_user`, `term_expired`, …).
//! It fails closed both ways: a casbin denial with no nameable reason is `forbidden`, and
//! a casbin allow that contradicts a fresh store fact (e.g. a revocation not yet folded
//! into `g2`) is still denied — revocation takes effect on the next request.

pub mod approval;
// seeds (issue 16 §2): medical institutions' standing scopes
pub mod facility;
// seeds (issue 16 §1): place of use
pub mod place;
pub mod resolve;
pub mod workflow;

pub use resolve::{Grant, PMS_PREFIX, check_mode, pms_scope, pms_terms};

use casbin::{CoreApi, DefaultModel, Enforcer, StringAdapter};
use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use tokio::sync::RwLock;

use crate::store::model::{Application, Role, Status, User};
use crate::store::{Store, StoreError};

/// The casbin model, compiled in so the binary needs no files beside it.
pub const MODEL: &str = include_str!("../../policies/model.conf");
/// The static role rules.
pub const STATIC_POLICY: &str = include_str!("../../policies/policy.csv");

/// Errors of the policy layer (not denials: those are [`Denial`]).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("casbin failed: {0}")]
    Casbin(#[from] casbin::Error),
    #[error("loading policy inputs from the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("the disclosure rules do not load: {0}")]
    Rules(#[from] crate::privacy::RulesError),
}

/// API actions guarded by the enforcement point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Query,
    Catalog,
    RequestRelease,
    Notebook,
    /// Download row-level data or an extract. No role holds it (third-party provision
    /// and taking records out of the facility are forbidden by 要綱 第3章 3, 6).
    Export,
    Apply,
    Review,
    AuditRead,
    UsageReport,
    /// The annual report of seed 001 items 10 and 12 (custodian, reviewer; a PMS team on
    /// its own standing scope).
    AnnualReport,
    ManageUsers,
    /// A medical institution's feedback report (its figures beside the national ones).
    FacilityReport,
    /// The custodian's data operations: extracts (status, rebuild, destroy), registry and
    /// key fingerprints (issue 17).
    Operate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Query => "query",
            Action::Catalog => "catalog",
            Action::RequestRelease => "request_release",
            Action::Notebook => "notebook",
            Action::Export => "export",
            Action::Apply => "apply",
            Action::Review => "review",
            Action::AuditRead => "audit_read",
            Action::UsageReport => "usage_report",
            Action::AnnualReport => "annual_report",
            Action::ManageUsers => "manage_users",
            Action::FacilityReport => "facility_report",
            Action::Operate => "operate",
        }
    }
}

/// What an action is aimed at.
#[derive(Debug, Clone)]
pub enum Target<'a> {
    /// Role-level actions (review, audit, user management, apply).
    None,
    /// An application; `pledged` says whether the caller accepted its pledge, `origin`
    /// where the request came from (checked against the approval's place of use).
    Application {
        app: &'a Application,
        pledged: bool,
        origin: place::Origin,
    },
    /// A PMS standing scope such as `PMS-M01`.
    Pms { scope_id: &'a str },
    /// A medical institution's standing scope such as `FAC-F13001`.
    Facility { scope_id: &'a str },
}

/// A refusal with its stable API code and a message (ja / en) naming the way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub code: &'static str,
    pub message: String,
}

impl Denial {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Japanese fiscal year (1 April – 31 March) of a date.
pub fn fiscal_year(d: NaiveDate) -> i32 {
    if d.month() >= 4 {
        d.year()
    } else {
        d.year() - 1
    }
}

/// The standing scope id of a manufacturer's PMS team.
pub fn pms_scope_id(manufacturer: &str) -> String {
    format!("PMS-{manufacturer}")
}

#[derive(Serialize, Hash)]
struct Sub<'a> {
    name: &'a str,
}

#[derive(Serialize, Hash)]
struct Obj<'a> {
    kind: &'a str,
    id: &'a str,
    status: &'a str,
    start: String,
    end: String,
    start_fy: i32,
    end_fy: i32,
    pledged: bool,
    /// The caller's address (`""` unknown) and the approved networks (`*` unrestricted).
    origin: String,
    networks: String,
}

impl<'a> Obj<'a> {
    /// An object with no approval term (role-level actions, PMS standing scopes).
    fn without_term(kind: &'a str, id: &'a str) -> Self {
        Obj {
            kind,
            id,
            status: "",
            start: String::new(),
            end: String::new(),
            start_fy: 0,
            end_fy: 0,
            pledged: false,
            origin: String::new(),
            networks: String::new(),
        }
    }
}

#[derive(Serialize, Hash)]
struct Env {
    today: String,
}

/// Today's date for term checks: terms are whole days of the ministry's calendar, so
/// Japan Standard Time (UTC+9) decides which day it is.
pub fn today() -> NaiveDate {
    (chrono::Utc::now() + chrono::Duration::hours(9)).date_naive()
}

/// The enforcement point.
pub struct Policy {
    enforcer: RwLock<Enforcer>,
    static_rules: Vec<[String; 3]>,
    /// k of PMS standing scopes: the disclosure rules' k for the regen dataset.
    pms_threshold: u32,
    /// k of facility standing scopes: the strictest k of the facility registries.
    facility_threshold: u32,
    /// The lowest k an approval may set: the disclosure rules' default k.
    min_threshold: u32,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Policy")
    }
}

fn parse_static() -> Vec<[String; 3]> {
    STATIC_POLICY
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("p,"))
        .filter_map(|l| {
            let f: Vec<String> = l.split(',').map(|s| s.trim().to_string()).collect();
            (f.len() == 4).then(|| [f[1].clone(), f[2].clone(), f[3].clone()])
        })
        .collect()
}

async fn build_enforcer(derived: &str) -> Result<Enforcer, PolicyError> {
    let model = DefaultModel::from_str(MODEL).await?;
    let text = format!("{STATIC_POLICY}\n{derived}");
    let adapter = StringAdapter::new(text);
    let mut e = Enforcer::new(model, adapter).await?;
    // seeds (issue 16 §1): the place of use, in the matcher itself
    e.add_function(
        "placeOfUse",
        casbin::function_map::OperatorFunction::Arg2(place::casbin_place_of_use),
    );
    Ok(e)
}

/// An application's approved networks in casbin's form (`*`: no network restriction;
/// an application without an approval admits nothing).
fn approved_networks(app: &Application) -> String {
    match &app.approval {
        Some(a) => place::networks_text(a.networks.as_deref()),
        None => String::new(),
    }
}

/// The approval-derived and account-derived policy lines, from the store.
pub async fn derived_lines(store: &Store) -> Result<String, PolicyError> {
    let mut out = String::new();
    for u in store.users().await? {
        if u.disabled {
            continue;
        }
        for r in &u.roles {
            out.push_str(&format!("g, {}, {}\n", u.username, r.as_str()));
        }
        if let (true, Some(m)) = (u.has(Role::Pms), &u.manufacturer) {
            out.push_str(&format!("g2, {}, {}\n", u.username, pms_scope_id(m)));
        }
        // seeds (issue 16 §2): a facility account reaches its own facility's scope only;
        // a code that is not a plain token never becomes a policy line.
        if let (true, Some(f)) = (u.has(Role::Facility), &u.facility)
            && facility::valid_facility_code(f)
        {
            let id = facility::facility_scope_id(f);
            out.push_str(&format!("g2, {}, {id}\n", u.username));
        }
    }
    for a in store.applications().await? {
        if a.status == Status::Approved {
            for n in &a.form.named_users {
                out.push_str(&format!("g2, {}, {}\n", n.username, a.id));
            }
        }
    }
    Ok(out)
}

impl Policy {
    /// Build the enforcer from the embedded model and rules plus the store's lines.
    pub async fn load(store: &Store) -> Result<Self, PolicyError> {
        let enforcer = build_enforcer(&derived_lines(store).await?).await?;
        let rules = crate::privacy::DisclosureRules::embedded()?;
        Ok(Self {
            enforcer: RwLock::new(enforcer),
            static_rules: parse_static(),
            pms_threshold: rules.effective(["regen"]).k,
            facility_threshold: rules.effective(facility::FACILITY_DATASETS).k,
            min_threshold: rules.defaults.k,
        })
    }

    /// The lowest k an approval may set (the disclosure rules' default k).
    pub fn min_threshold(&self) -> u32 {
        self.min_threshold
    }

    /// Rebuild the derived lines after accounts or approvals changed.
    pub async fn reload(&self, store: &Store) -> Result<(), PolicyError> {
        let fresh = build_enforcer(&derived_lines(store).await?).await?;
        *self.enforcer.write().await = fresh;
        Ok(())
    }

    fn role_grants(&self, user: &User, kind: &str, act: &str) -> bool {
        self.static_rules.iter().any(|[sub, obj, a]| {
            a == act
                && (obj == kind || obj == "any")
                && user.roles.iter().any(|r| r.as_str() == sub)
        })
    }

    /// The one enforcement point: may `user` perform `action` on `target` on `today`?
    pub async fn authorize(
        &self,
        user: &User,
        action: Action,
        target: &Target<'_>,
        today: NaiveDate,
    ) -> Result<(), Denial> {
        let act = action.as_str();
        let env = Env {
            today: today.format("%Y-%m-%d").to_string(),
        };
        let obj = match target {
            Target::None => Obj::without_term("none", ""),
            Target::Pms { scope_id } => Obj::without_term("pms", scope_id),
            Target::Facility { scope_id } => Obj::without_term("facility", scope_id),
            Target::Application {
                app,
                pledged,
                origin,
            } => {
                let term = app.approval.as_ref().map(|a| a.term);
                Obj {
                    kind: "application",
                    id: &app.id,
                    status: app.status.as_str(),
                    start: term
                        .map(|t| t.start.format("%Y-%m-%d").to_string())
                        .unwrap_or_default(),
                    end: term
                        .map(|t| t.end.format("%Y-%m-%d").to_string())
                        .unwrap_or_default(),
                    start_fy: term.map(|t| fiscal_year(t.start)).unwrap_or(0),
                    end_fy: term.map(|t| fiscal_year(t.end)).unwrap_or(-1),
                    pledged: *pledged,
                    origin: origin.text(),
                    networks: approved_networks(app),
                }
            }
        };
        let allowed = {
            let e = self.enforcer.read().await;
            e.enforce((
                Sub {
                    name: &user.username,
                },
                obj,
                act,
                env,
            ))
        };
        let allowed = match allowed {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "casbin enforcement failed; denying");
                false
            }
        };
        let reason = self.diagnose(user, action, target, today);
        match (allowed, reason) {
            (true, None) => Ok(()),
            (_, Some(d)) => {
                if allowed {
                    tracing::warn!(user = %user.username, action = act, code = d.code, "casbin allowed but a store fact denies; denying");
                }
                Err(d)
            }
            (false, None) => Err(Denial::new(
                "forbidden",
                "This action is not permitted for your account. / この操作は許可されていません。",
            )),
        }
    }

    /// Name the first rule `user` fails for this action, from fresh store facts.
    fn diagnose(
        &self,
        user: &User,
        action: Action,
        target: &Target<'_>,
        today: NaiveDate,
    ) -> Option<Denial> {
        let act = action.as_str();
        if action == Action::Export {
            return Some(Denial::new(
                "export_not_permitted",
                "Row-level data and extracts never leave the enclave (要綱 第3章 3・6); run an aggregate query and request a release instead. / 個票データや抽出データの持ち出しはできません。集計クエリを実行し、公表用の出力申請をしてください。",
            ));
        }
        if user.disabled {
            return Some(Denial::new(
                "forbidden",
                "This account is disabled. / このアカウントは無効です。",
            ));
        }
        let kind = match target {
            Target::None => "none",
            Target::Application { .. } => "application",
            Target::Pms { .. } => "pms_scope",
            Target::Facility { .. } => "facility_scope",
        };
        if !self.role_grants(user, kind, act) {
            let msg = match (action, kind) {
                (Action::Query | Action::Catalog, _) => {
                    "Your role may not read registry data; only named researchers of an approved application, PMS teams and medical institutions (their own scope) may query. / このロールではデータを参照できません。"
                }
                _ => {
                    "Your role does not permit this action. / このロールではこの操作はできません。"
                }
            };
            return Some(Denial::new("forbidden", msg));
        }
        match target {
            Target::None => None,
            Target::Pms { scope_id } => {
                let own = user.manufacturer.as_deref().map(pms_scope_id);
                (own.as_deref() != Some(*scope_id)).then(|| {
                    Denial::new(
                        "forbidden",
                        "A PMS team may use only its own manufacturer's standing scope; use the scope shown by GET /api/v1/me. / 自社の製品の PMS スコープのみ利用できます。",
                    )
                })
            }
            Target::Facility { scope_id } => {
                let own = user
                    .facility
                    .as_deref()
                    .filter(|f| facility::valid_facility_code(f))
                    .map(facility::facility_scope_id);
                (own.as_deref() != Some(*scope_id)).then(|| {
                    Denial::new(
                        "forbidden",
                        "A medical institution may use only its own facility's scope; use the scope shown by GET /api/v1/me. / 自施設のスコープのみ利用できます。",
                    )
                })
            }
            Target::Application {
                app,
                pledged,
                origin,
            } => {
                if !app
                    .form
                    .named_users
                    .iter()
                    .any(|n| n.username == user.username)
                {
                    return Some(Denial::new(
                        "not_named_user",
                        "You are not a named user of this application; ask the applicant to add you through a change application. / この申請の使用者として登録されていません。変更申請で追加を依頼してください。",
                    ));
                }
                match app.status {
                    Status::Revoked => {
                        return Some(Denial::new(
                            "revoked",
                            "The approval of this application was revoked; contact the reviewing division. / この申請の承認は取り消されました。",
                        ));
                    }
                    Status::Approved => {}
                    Status::Withdrawn => {
                        return Some(Denial::new(
                            "not_approved",
                            "This study was withdrawn by its applicant; file a new application to use the records again. / この研究は申請者により取り下げられました。",
                        ));
                    }
                    _ => {
                        return Some(Denial::new(
                            "not_approved",
                            "This application is not approved; submit it and wait for the reviewer's decision. / この申請は承認されていません。",
                        ));
                    }
                }
                let Some(approval) = &app.approval else {
                    return Some(Denial::new(
                        "not_approved",
                        "This application has no approval on record. / 承認記録がありません。",
                    ));
                };
                let t = approval.term;
                if today < t.start || today > t.end || fiscal_year(t.start) != fiscal_year(t.end) {
                    return Some(Denial::new(
                        "term_expired",
                        format!(
                            "Today is outside the approved period of use {} – {}; file a new or change application for a new term. / 承認された使用期間外です。",
                            t.start, t.end
                        ),
                    ));
                }
                if !place::admits(&origin.text(), &approved_networks(app)) {
                    return Some(outside_place_of_use(app, *origin));
                }
                if !pledged {
                    return Some(Denial::new(
                        "pledge_required",
                        format!(
                            "Accept the pledge (form 2) first: POST /api/v1/applications/{}/pledge. / 誓約書（様式2）への同意が必要です。",
                            app.id
                        ),
                    ));
                }
                None
            }
        }
    }
}

/// The refusal of a request from outside the approved networks (要綱 第3章6).
fn outside_place_of_use(app: &Application, origin: place::Origin) -> Denial {
    let from = match origin.0 {
        Some(a) => a.to_string(),
        None => "an address kura could not determine / 判別できない接続元".into(),
    };
    Denial::new(
        "outside_place_of_use",
        format!(
            "This request came from {from}, outside the place of use approved for {} (要綱 第3章6: records may be used only at the research facility); connect from the facility's network named in the approval, or file a change application for a new place of use. / 承認された使用場所（研究施設のネットワーク）の外からの接続です。研究施設から接続するか、変更申請をしてください。",
            app.id
        ),
    )
}

#[cfg(test)]
mod tests;
