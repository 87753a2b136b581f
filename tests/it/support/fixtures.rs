//! Named fixtures of the control plane: the accounts (one per role, `pms1` bound to
//! manufacturer M01), the application form, and the approved applications the API tests
//! rely on (A-1, A-DP, A-OLD, A-NOPLEDGE). A test that says "researcher3 on A-OLD"
//! means the same account and the same expired approval everywhere.

use std::sync::OnceLock;

use chrono::{NaiveDate, Utc};
use serde_json::json;

use kura::audit::{AuditEvent, AuditKey};
use kura::policy::workflow::fiscal_year_end;
use kura::privacy::result::DisclosureMode;
use kura::sql::scope::Scope;
use kura::store::Store;
use kura::store::model::*;

/// The password of every fixture account (and of the demo accounts the binary tests start).
pub const PASSWORD: &str = "correct horse battery staple";

/// The audit key of every fixture store; reopening a store (a restart) needs the same one.
pub fn audit_key() -> AuditKey {
    AuditKey::from_bytes(&[9u8; 32]).unwrap()
}

/// Hashing is slow on purpose, so all fixture accounts share one hash.
pub fn password_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| kura::auth::hash_password(PASSWORD).unwrap())
}

/// Today in Japan Standard Time, the calendar terms are decided in.
pub fn today() -> NaiveDate {
    (Utc::now() + chrono::Duration::hours(9)).date_naive()
}

/// Every fixture account: name, role and (for PMS teams) manufacturer.
pub const USERS: [(&str, Role, Option<&str>); 8] = [
    ("researcher1", Role::Researcher, None),
    ("researcher2", Role::Researcher, None),
    ("researcher3", Role::Researcher, None),
    ("reviewer1", Role::Reviewer, None),
    ("reviewer2", Role::Reviewer, None),
    ("auditor1", Role::Auditor, None),
    ("pms1", Role::Pms, Some("M01")),
    ("admin1", Role::Admin, None),
];

/// Open a fresh store in `dir` holding the fixture accounts named in `names`.
pub async fn store_with_users(dir: &std::path::Path, names: &[&str]) -> Store {
    let store = kura::store::testing::open(dir, audit_key()).await;
    for (name, role, manufacturer) in USERS.iter().filter(|u| names.contains(&u.0)) {
        let user = NewUser {
            username: (*name).into(),
            password_hash: password_hash().into(),
            roles: vec![*role],
            manufacturer: manufacturer.map(Into::into),
            display_name: (*name).into(),
            affiliation: "Org".into(),
            title: String::new(),
        };
        store.create_user(&user, "test").await.unwrap();
    }
    store
}

fn named(users: &[&str]) -> Vec<NamedUser> {
    users
        .iter()
        .map(|u| NamedUser {
            username: (*u).into(),
            affiliation: "Univ".into(),
            title: "PI".into(),
        })
        .collect()
}

/// A complete application form naming `users` (it passes submission as it is).
pub fn full_form(users: &[&str]) -> ApplicationForm {
    ApplicationForm {
        title: "ALS progression".into(),
        research_group: "Neuro group".into(),
        applicant: Person {
            name: "R One".into(),
            affiliation: "Univ".into(),
            title: "Prof".into(),
        },
        lead_consent: None,
        diseases: vec![2],
        purpose: "p".into(),
        necessity: "n".into(),
        expected_results: "e".into(),
        prior_work: "w".into(),
        plan_and_methods: "m".into(),
        ethics_review: EthicsReview {
            committee: "IRB".into(),
            approval_number: "2026-1".into(),
        },
        other_matters: String::new(),
        named_users: named(users),
        scope: RequestedScope {
            datasets: vec!["als".into(), "nanbyo".into()],
            fiscal_years: vec![2023, 2024],
            prefectures: None,
        },
        term: Some(Term {
            start: today(),
            end: fiscal_year_end(today()),
        }),
        place_of_use: "Room 1".into(),
        publication_plan: "paper".into(),
        contact: "office".into(),
        ..Default::default()
    }
}

/// One approved application of the fixture (approved by reviewer1 over the ALS and
/// nanbyo datasets, disease 2, k = 5).
pub struct Approved {
    pub id: &'static str,
    pub named: &'static [&'static str],
    pub term: Term,
    pub mode: DisclosureMode,
    pub epsilon_budget: Option<f64>,
    /// Named users who have accepted the pledge.
    pub pledged: &'static [&'static str],
}

/// A-1 (suppression; researcher1 and reviewer2 named), A-DP (DP, ε budget 1.0),
/// A-OLD (researcher3, term ended 2025-03-31) and A-NOPLEDGE (researcher1, no pledge).
pub fn approved_applications() -> [Approved; 4] {
    let current = Term {
        start: today(),
        end: fiscal_year_end(today()),
    };
    let past = Term {
        start: NaiveDate::from_ymd_opt(2024, 4, 1).unwrap(),
        end: NaiveDate::from_ymd_opt(2025, 3, 31).unwrap(),
    };
    let suppression = |id, named: &'static [&'static str], term, pledged| Approved {
        id,
        named,
        term,
        mode: DisclosureMode::Suppression,
        epsilon_budget: None,
        pledged,
    };
    [
        suppression(
            "A-1",
            &["researcher1", "reviewer2"],
            current,
            &["researcher1"],
        ),
        Approved {
            id: "A-DP",
            named: &["researcher1"],
            term: current,
            mode: DisclosureMode::Dp,
            epsilon_budget: Some(1.0),
            pledged: &["researcher1"],
        },
        suppression("A-OLD", &["researcher3"], past, &["researcher3"]),
        suppression("A-NOPLEDGE", &["researcher1"], current, &[]),
    ]
}

/// Store `a` as submitted by researcher1 and approved by reviewer1, with its pledges.
pub async fn approve(store: &Store, a: &Approved) {
    let scope = Scope {
        datasets: vec!["als".into(), "nanbyo".into()],
        diseases: Some(vec![2]),
        ..Default::default()
    };
    approve_scoped(store, a, scope).await;
}

/// Store `a` approved over `scope` (otherwise as [`approve`]).
pub async fn approve_scoped(store: &Store, a: &Approved, scope: Scope) {
    let mut form = full_form(a.named);
    form.title = format!("study {}", a.id);
    let created = store
        .create_application(Some(a.id), "researcher1", &form)
        .await
        .unwrap();
    let mut next = created.clone();
    next.status = Status::Approved;
    next.approval = Some(Approval {
        term: a.term,
        scope,
        mode: a.mode,
        k: 5,
        epsilon_budget: a.epsilon_budget,
        dp_bounds: None,
        release_checkers: None,
        approved_by: "reviewer1".into(),
        approved_at: Utc::now(),
        networks: None,
        published: None,
    });
    let ev = AuditEvent::ok("reviewer1", "application.approve", Some(a.id), json!({}));
    store
        .transition(
            &next,
            created.updated_at,
            Status::Submitted,
            "approve",
            None,
            &ev,
        )
        .await
        .unwrap();
    for u in a.pledged {
        store.accept_pledge(a.id, u).await.unwrap();
    }
}
