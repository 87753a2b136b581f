//! One test per regulation rule (issue 4 §4), each through the real enforcement point
//! with casbin and a real store.

use chrono::{Duration, NaiveDate, Utc};

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
    let store = Store::open(
        &dir.path().join("kura.db"),
        AuditKey::from_bytes(&[3u8; 32]).unwrap(),
    )
    .await
    .unwrap();
    for (n, r, m) in [
        ("res1", Role::Researcher, None),
        ("res2", Role::Researcher, None),
        ("rev1", Role::Reviewer, None),
        ("aud1", Role::Auditor, None),
        ("pms1", Role::Pms, Some("M01")),
    ] {
        store.create_user(&user(n, r, m), "test").await.unwrap();
    }
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

#[tokio::test]
async fn named_pledged_user_in_term_may_query() {
    let f = fixture().await;
    let (s, e) = current_term();
    let app = approved("A-1", &["res1"], s, e, Status::Approved);
    let p = with_app(&f, &app).await;
    let t = Target::Application {
        app: &app,
        pledged: true,
    };
    assert_eq!(
        p.authorize(&u(&f, "res1").await, Action::Query, &t, today())
            .await,
        Ok(())
    );
}

#[tokio::test]
async fn not_named_user_is_refused() {
    let f = fixture().await;
    let (s, e) = current_term();
    let app = approved("A-1", &["res1"], s, e, Status::Approved);
    let p = with_app(&f, &app).await;
    let t = Target::Application {
        app: &app,
        pledged: true,
    };
    let d = p
        .authorize(&u(&f, "res2").await, Action::Query, &t, today())
        .await
        .unwrap_err();
    assert_eq!(d.code, "not_named_user");
}

#[tokio::test]
async fn before_and_after_the_term_is_term_expired() {
    let f = fixture().await;
    let (s, e) = current_term();
    let app = approved("A-1", &["res1"], s, e, Status::Approved);
    let p = with_app(&f, &app).await;
    let t = Target::Application {
        app: &app,
        pledged: true,
    };
    let res1 = u(&f, "res1").await;
    let before = s - Duration::days(1);
    let after = e + Duration::days(1);
    assert_eq!(
        p.authorize(&res1, Action::Query, &t, before)
            .await
            .unwrap_err()
            .code,
        "term_expired"
    );
    assert_eq!(
        p.authorize(&res1, Action::Query, &t, after)
            .await
            .unwrap_err()
            .code,
        "term_expired"
    );
    assert_eq!(
        p.authorize(&res1, Action::Query, &t, e).await,
        Ok(()),
        "the last day is inside the term"
    );
}

#[tokio::test]
async fn a_term_crossing_a_fiscal_year_is_never_honoured() {
    // Approval validation stops such terms; the enforcement point refuses them anyway.
    let f = fixture().await;
    let start = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
    let end = NaiveDate::from_ymd_opt(2026, 4, 30).unwrap();
    let app = approved("A-1", &["res1"], start, end, Status::Approved);
    let p = with_app(&f, &app).await;
    let t = Target::Application {
        app: &app,
        pledged: true,
    };
    let d = p
        .authorize(
            &u(&f, "res1").await,
            Action::Query,
            &t,
            NaiveDate::from_ymd_opt(2026, 3, 15).unwrap(),
        )
        .await;
    assert_eq!(d.unwrap_err().code, "term_expired");
}

#[tokio::test]
async fn revoked_application_is_refused_even_before_policy_reload() {
    let f = fixture().await;
    let (s, e) = current_term();
    let mut app = approved("A-1", &["res1"], s, e, Status::Approved);
    let p = with_app(&f, &app).await;
    // The g2 lines still say "approved"; the fresh store fact must win.
    app.status = Status::Revoked;
    let t = Target::Application {
        app: &app,
        pledged: true,
    };
    assert_eq!(
        p.authorize(&u(&f, "res1").await, Action::Query, &t, today())
            .await
            .unwrap_err()
            .code,
        "revoked"
    );
}

#[tokio::test]
async fn missing_pledge_is_pledge_required() {
    let f = fixture().await;
    let (s, e) = current_term();
    let app = approved("A-1", &["res1"], s, e, Status::Approved);
    let p = with_app(&f, &app).await;
    let t = Target::Application {
        app: &app,
        pledged: false,
    };
    assert_eq!(
        p.authorize(&u(&f, "res1").await, Action::Query, &t, today())
            .await
            .unwrap_err()
            .code,
        "pledge_required"
    );
}

#[tokio::test]
async fn unapproved_application_is_not_approved() {
    let f = fixture().await;
    let (s, e) = current_term();
    let app = approved("A-1", &["res1"], s, e, Status::Approved);
    let p = with_app(&f, &app).await;
    let mut draft = app.clone();
    draft.status = Status::Submitted;
    let t = Target::Application {
        app: &draft,
        pledged: true,
    };
    assert_eq!(
        p.authorize(&u(&f, "res1").await, Action::Query, &t, today())
            .await
            .unwrap_err()
            .code,
        "not_approved"
    );
}

#[tokio::test]
async fn reviewer_and_auditor_may_not_query_data() {
    let f = fixture().await;
    let (s, e) = current_term();
    let app = approved("A-1", &["res1", "rev1", "aud1"], s, e, Status::Approved);
    let p = with_app(&f, &app).await;
    let t = Target::Application {
        app: &app,
        pledged: true,
    };
    for who in ["rev1", "aud1"] {
        let d = p
            .authorize(&u(&f, who).await, Action::Query, &t, today())
            .await
            .unwrap_err();
        assert_eq!(d.code, "forbidden", "{who}");
    }
}

#[tokio::test]
async fn row_level_export_is_never_permitted() {
    let f = fixture().await;
    let (s, e) = current_term();
    let app = approved("A-1", &["res1"], s, e, Status::Approved);
    let p = with_app(&f, &app).await;
    let t = Target::Application {
        app: &app,
        pledged: true,
    };
    for who in ["res1", "rev1", "aud1", "pms1"] {
        let d = p
            .authorize(&u(&f, who).await, Action::Export, &t, today())
            .await
            .unwrap_err();
        assert_eq!(d.code, "export_not_permitted", "{who}");
    }
}

#[tokio::test]
async fn pms_user_reaches_only_its_own_manufacturer() {
    let f = fixture().await;
    let p = Policy::load(&f.store).await.unwrap();
    let pms1 = u(&f, "pms1").await;
    assert_eq!(
        p.authorize(
            &pms1,
            Action::Query,
            &Target::Pms {
                scope_id: "PMS-M01"
            },
            today()
        )
        .await,
        Ok(())
    );
    let d = p
        .authorize(
            &pms1,
            Action::Query,
            &Target::Pms {
                scope_id: "PMS-M02",
            },
            today(),
        )
        .await
        .unwrap_err();
    assert_eq!(d.code, "forbidden");
    // A researcher has no PMS scope at all.
    let d = p
        .authorize(
            &u(&f, "res1").await,
            Action::Query,
            &Target::Pms {
                scope_id: "PMS-M01",
            },
            today(),
        )
        .await
        .unwrap_err();
    assert_eq!(d.code, "forbidden");
}

#[tokio::test]
async fn role_actions_follow_the_static_policy() {
    let f = fixture().await;
    let p = Policy::load(&f.store).await.unwrap();
    let t = Target::None;
    assert_eq!(
        p.authorize(&u(&f, "rev1").await, Action::Review, &t, today())
            .await,
        Ok(())
    );
    assert_eq!(
        p.authorize(&u(&f, "aud1").await, Action::AuditRead, &t, today())
            .await,
        Ok(())
    );
    assert_eq!(
        p.authorize(&u(&f, "res1").await, Action::Review, &t, today())
            .await
            .unwrap_err()
            .code,
        "forbidden"
    );
    assert_eq!(
        p.authorize(&u(&f, "res1").await, Action::AuditRead, &t, today())
            .await
            .unwrap_err()
            .code,
        "forbidden"
    );
    assert_eq!(
        p.authorize(&u(&f, "aud1").await, Action::ManageUsers, &t, today())
            .await
            .unwrap_err()
            .code,
        "forbidden"
    );
}

#[tokio::test]
async fn fiscal_year_boundaries() {
    assert_eq!(
        fiscal_year(NaiveDate::from_ymd_opt(2027, 3, 31).unwrap()),
        2026
    );
    assert_eq!(
        fiscal_year(NaiveDate::from_ymd_opt(2027, 4, 1).unwrap()),
        2027
    );
}

#[tokio::test]
async fn casbin_is_authoritative_when_its_lines_lack_the_approval() {
    // The enforcer was built before the approval existed, so it has no g2 line for it:
    // store facts alone (named, approved, in term, pledged) must not open access.
    let f = fixture().await;
    let stale = Policy::load(&f.store).await.unwrap();
    let (s, e) = current_term();
    let app = approved("A-1", &["res1"], s, e, Status::Approved);
    let fresh = with_app(&f, &app).await;
    let t = Target::Application {
        app: &app,
        pledged: true,
    };
    let res1 = u(&f, "res1").await;
    assert_eq!(
        stale
            .authorize(&res1, Action::Query, &t, today())
            .await
            .unwrap_err()
            .code,
        "forbidden"
    );
    assert_eq!(
        fresh.authorize(&res1, Action::Query, &t, today()).await,
        Ok(())
    );
    stale.reload(&f.store).await.unwrap();
    assert_eq!(
        stale.authorize(&res1, Action::Query, &t, today()).await,
        Ok(())
    );
}
