//! One test per regulation rule (issue 4 §4), each a table of cases run through the
//! real enforcement point with casbin and a real store: who asks, what they ask about
//! (the application as the caller presents it, a PMS scope, or a role-level action),
//! on which day, for which action — and the expected allow or denial code. Every case
//! gets a fresh store, so no case depends on another.

use chrono::{Duration, NaiveDate, Utc};

use Action::{AuditRead, Catalog, Export, ManageUsers, Query, Review};
use Day::{AfterEnd, BeforeStart, EndOfTerm, Today};
use On::{App, Facility, NoTarget, Pms};

use super::*;
use crate::audit::AuditKey;
use crate::privacy::result::DisclosureMode;
use crate::sql::scope::Scope;
use crate::store::model::*;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
}

fn user(name: &str, role: Role, manufacturer: Option<&str>) -> NewUser {
    NewUser {
        username: name.into(),
        password_hash: "x".into(),
        roles: vec![role],
        manufacturer: manufacturer.map(Into::into),
        display_name: String::new(),
        affiliation: String::new(),
        title: String::new(),
    }
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store =
        crate::store::testing::open(dir.path(), AuditKey::from_bytes(&[3u8; 32]).unwrap()).await;
    for (n, r, m) in [
        ("res1", Role::Researcher, None),
        ("res2", Role::Researcher, None),
        ("rev1", Role::Reviewer, None),
        ("aud1", Role::Auditor, None),
        ("pms1", Role::Pms, Some("M01")),
        ("fac1", Role::Facility, None),
        ("fac0", Role::Facility, None),
    ] {
        store.create_user(&user(n, r, m), "test").await.unwrap();
    }
    // fac1 is bound to facility F1; fac0 to no facility.
    store
        .set_facility("fac1", Some("F1"), "test")
        .await
        .unwrap();
    Fixture { _dir: dir, store }
}

fn approved(
    id: &str,
    named: &[&str],
    start: NaiveDate,
    end: NaiveDate,
    status: Status,
) -> Application {
    Application {
        id: id.into(),
        status,
        applicant: "res1".into(),
        form: ApplicationForm {
            named_users: named
                .iter()
                .map(|u| NamedUser {
                    username: (*u).into(),
                    affiliation: String::new(),
                    title: String::new(),
                })
                .collect(),
            ..Default::default()
        },
        approval: Some(Approval {
            term: Term { start, end },
            scope: Scope {
                datasets: vec!["nanbyo".into()],
                ..Default::default()
            },
            mode: DisclosureMode::Suppression,
            k: 5,
            epsilon_budget: None,
            dp_bounds: None,
            approved_by: "rev1".into(),
            approved_at: Utc::now(),
            networks: None,
            published: None,
        }),
        pending_change: None,
        revoked_reason: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

/// A term that contains today and stays inside today's fiscal year.
fn current_term() -> (NaiveDate, NaiveDate) {
    (today(), workflow::fiscal_year_end(today()))
}

async fn with_app(f: &Fixture, app: &Application) -> Policy {
    let created = f
        .store
        .create_application(Some(&app.id), &app.applicant, &app.form)
        .await
        .unwrap();
    let ev = crate::audit::AuditEvent::ok(
        "rev1",
        "application.approve",
        Some(&app.id),
        serde_json::json!({}),
    );
    f.store
        .transition(
            app,
            created.updated_at,
            Status::Submitted,
            "approve",
            None,
            &ev,
        )
        .await
        .unwrap();
    Policy::load(&f.store).await.unwrap()
}

async fn u(f: &Fixture, name: &str) -> User {
    f.store.user(name).await.unwrap().unwrap()
}

/// The day a case is decided on, relative to the application's term where it has one.
#[derive(Debug, Clone, Copy)]
enum Day {
    Today,
    BeforeStart,
    AfterEnd,
    EndOfTerm,
    Date(i32, u32, u32),
}

/// Application A-1 as stored (approved by rev1 for res1 from today to the end of the
/// fiscal year) and presented by the caller with its pledge accepted — or with one
/// thing changed.
#[derive(Debug, Clone, Copy)]
enum A1 {
    AsApproved,
    /// The caller presents a newer status than the enforcer's `g2` lines know.
    PresentedAs(Status),
    Unpledged,
    Naming(&'static [&'static str]),
    /// A term of 2026-03-01 to 2026-04-30, across the fiscal-year boundary.
    CrossingFiscalYear,
    /// Decided by an enforcer loaded before the approval was stored (no `g2` line).
    StaleEnforcer,
    /// That stale enforcer, reloaded.
    ReloadedEnforcer,
    /// Restricted to 192.0.2.0/24 as its place of use, asked from this address ("" unknown).
    From(&'static str),
}

/// What the enforcement point is asked about.
#[derive(Debug, Clone, Copy)]
enum On {
    /// A role-level action (`Target::None`), no application stored.
    NoTarget,
    /// A PMS standing scope, no application stored.
    Pms(&'static str),
    /// A facility standing scope, no application stored.
    Facility(&'static str),
    App(A1),
}

const ALLOW: Result<(), &str> = Ok(());

/// One case: who, action, what about, which day, and the expected allow or denial code.
type Case = (&'static str, Action, On, Day, Result<(), &'static str>);

impl Day {
    fn date(self, (start, end): (NaiveDate, NaiveDate)) -> NaiveDate {
        match self {
            Today => today(),
            BeforeStart => start - Duration::days(1),
            AfterEnd => end + Duration::days(1),
            EndOfTerm => end,
            Day::Date(y, m, d) => NaiveDate::from_ymd_opt(y, m, d).unwrap(),
        }
    }
}

/// The enforcement point's answer to one case, over a fresh store.
async fn decide(who: &str, action: Action, on: On, day: Day) -> Result<(), &'static str> {
    let f = fixture().await;
    let user = u(&f, who).await;
    let a1 = match on {
        On::NoTarget | On::Pms(_) | On::Facility(_) => {
            let p = Policy::load(&f.store).await.unwrap();
            let t = match on {
                On::Pms(scope_id) => Target::Pms { scope_id },
                On::Facility(scope_id) => Target::Facility { scope_id },
                _ => Target::None,
            };
            return p
                .authorize(&user, action, &t, today())
                .await
                .map_err(|d| d.code);
        }
        On::App(a1) => a1,
    };
    let term = match a1 {
        A1::CrossingFiscalYear => (
            NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
            NaiveDate::from_ymd_opt(2026, 4, 30).unwrap(),
        ),
        _ => current_term(),
    };
    let named: &[&str] = match a1 {
        A1::Naming(named) => named,
        _ => &["res1"],
    };
    let mut stored = approved("A-1", named, term.0, term.1, Status::Approved);
    let origin = match a1 {
        A1::From(addr) => {
            if let Some(a) = stored.approval.as_mut() {
                a.networks = Some(vec!["192.0.2.0/24".into()]);
            }
            place::Origin(addr.parse().ok())
        }
        _ => place::Origin::UNKNOWN,
    };
    let stale = match a1 {
        A1::StaleEnforcer | A1::ReloadedEnforcer => Some(Policy::load(&f.store).await.unwrap()),
        _ => None,
    };
    let fresh = with_app(&f, &stored).await;
    if let (A1::ReloadedEnforcer, Some(p)) = (a1, &stale) {
        p.reload(&f.store).await.unwrap();
    }
    let mut presented = stored.clone();
    if let A1::PresentedAs(status) = a1 {
        presented.status = status;
    }
    let t = Target::Application {
        app: &presented,
        pledged: !matches!(a1, A1::Unpledged),
        origin,
    };
    stale
        .as_ref()
        .unwrap_or(&fresh)
        .authorize(&user, action, &t, day.date(term))
        .await
        .map_err(|d| d.code)
}

/// Run every case of a table and compare each answer with its expectation.
async fn check(cases: &[Case]) {
    for &(who, action, on, day, want) in cases {
        let got = decide(who, action, on, day).await;
        assert_eq!(got, want, "{who} {action:?} on {on:?} ({day:?})");
    }
}

/// One `#[tokio::test]` per rule, named as the rule, running that rule's rows.
macro_rules! rule_tests {
    ($($(#[doc = $doc:literal])* fn $name:ident [$($case:expr),+ $(,)?])+) => {$(
        $(#[doc = $doc])*
        #[tokio::test]
        async fn $name() {
            check(&[$($case),+]).await;
        }
    )+};
}

const STAFF_NAMED: A1 = A1::Naming(&["res1", "rev1", "aud1"]);

rule_tests! {
    fn named_pledged_user_in_term_may_query [
        ("res1", Query, App(A1::AsApproved), Today, ALLOW),
    ]
    fn not_named_user_is_refused [
        ("res2", Query, App(A1::AsApproved), Today, Err("not_named_user")),
    ]
    fn before_and_after_the_term_is_term_expired [
        ("res1", Query, App(A1::AsApproved), BeforeStart, Err("term_expired")),
        ("res1", Query, App(A1::AsApproved), AfterEnd, Err("term_expired")),
        // The last day is inside the term.
        ("res1", Query, App(A1::AsApproved), EndOfTerm, ALLOW),
    ]
    /// Approval validation stops such terms; the enforcement point refuses them anyway.
    fn a_term_crossing_a_fiscal_year_is_never_honoured [
        ("res1", Query, App(A1::CrossingFiscalYear), Day::Date(2026, 3, 15), Err("term_expired")),
    ]
    /// The g2 lines still say "approved"; the fresh store fact must win.
    fn revoked_application_is_refused_even_before_policy_reload [
        ("res1", Query, App(A1::PresentedAs(Status::Revoked)), Today, Err("revoked")),
    ]
    fn missing_pledge_is_pledge_required [
        ("res1", Query, App(A1::Unpledged), Today, Err("pledge_required")),
    ]
    fn unapproved_application_is_not_approved [
        ("res1", Query, App(A1::PresentedAs(Status::Submitted)), Today, Err("not_approved")),
    ]
    fn reviewer_and_auditor_may_not_query_data [
        ("rev1", Query, App(STAFF_NAMED), Today, Err("forbidden")),
        ("aud1", Query, App(STAFF_NAMED), Today, Err("forbidden")),
    ]
    fn row_level_export_is_never_permitted [
        ("res1", Export, App(A1::AsApproved), Today, Err("export_not_permitted")),
        ("rev1", Export, App(A1::AsApproved), Today, Err("export_not_permitted")),
        ("aud1", Export, App(A1::AsApproved), Today, Err("export_not_permitted")),
        ("pms1", Export, App(A1::AsApproved), Today, Err("export_not_permitted")),
    ]
    fn pms_user_reaches_only_its_own_manufacturer [
        ("pms1", Query, Pms("PMS-M01"), Today, ALLOW),
        ("pms1", Query, Pms("PMS-M02"), Today, Err("forbidden")),
        // A researcher has no PMS scope at all.
        ("res1", Query, Pms("PMS-M01"), Today, Err("forbidden")),
    ]
    /// 要綱 第3章6: the place of use (issue 16 §1). An unknown address is outside.
    fn requests_from_outside_the_approved_networks_are_refused [
        ("res1", Query, App(A1::From("192.0.2.7")), Today, ALLOW),
        ("res1", Catalog, App(A1::From("192.0.2.255")), Today, ALLOW),
        ("res1", Query, App(A1::From("198.51.100.1")), Today, Err("outside_place_of_use")),
        ("res1", Catalog, App(A1::From("198.51.100.1")), Today, Err("outside_place_of_use")),
        ("res1", Query, App(A1::From("")), Today, Err("outside_place_of_use")),
        // The other rules come first: a stranger is still not a named user.
        ("res2", Query, App(A1::From("192.0.2.7")), Today, Err("not_named_user")),
    ]
    /// Seed 001 item 8 (issue 16 §2): a medical institution reaches its own facility only.
    fn facility_account_reaches_only_its_own_facility [
        ("fac1", Query, Facility("FAC-F1"), Today, ALLOW),
        ("fac1", Action::FacilityReport, Facility("FAC-F1"), Today, ALLOW),
        ("fac1", Query, Facility("FAC-F2"), Today, Err("forbidden")),
        ("fac1", Query, Pms("PMS-M01"), Today, Err("forbidden")),
        ("fac1", Query, App(A1::AsApproved), Today, Err("forbidden")),
        ("fac0", Query, Facility("FAC-F1"), Today, Err("forbidden")),
        ("res1", Query, Facility("FAC-F1"), Today, Err("forbidden")),
        ("pms1", Query, Facility("FAC-F1"), Today, Err("forbidden")),
        ("fac1", Export, Facility("FAC-F1"), Today, Err("export_not_permitted")),
    ]
    fn role_actions_follow_the_static_policy [
        ("rev1", Review, NoTarget, Today, ALLOW),
        ("aud1", AuditRead, NoTarget, Today, ALLOW),
        ("res1", Review, NoTarget, Today, Err("forbidden")),
        ("res1", AuditRead, NoTarget, Today, Err("forbidden")),
        ("aud1", ManageUsers, NoTarget, Today, Err("forbidden")),
    ]
    /// The enforcer was built before the approval existed, so it has no g2 line for it:
    /// store facts alone (named, approved, in term, pledged) must not open access.
    fn casbin_is_authoritative_when_its_lines_lack_the_approval [
        ("res1", Query, App(A1::StaleEnforcer), Today, Err("forbidden")),
        ("res1", Query, App(A1::AsApproved), Today, ALLOW),
        ("res1", Query, App(A1::ReloadedEnforcer), Today, ALLOW),
    ]
}

#[tokio::test]
async fn fiscal_year_boundaries() {
    for ((y, m, d), fy) in [((2027, 3, 31), 2026), ((2027, 4, 1), 2027)] {
        let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(fiscal_year(date), fy, "{date}");
    }
}
