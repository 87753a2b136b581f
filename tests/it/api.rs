//! In-process API tests (router `oneshot`): every endpoint and error code of the control
//! plane, the audit chain's tamper detection, and "no audit, no answer".
//!
//! The data plane is a test double here, so these tests pin what the control plane
//! guarantees whatever the query core computes; the e2e test runs the real one.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::{NaiveDate, Utc};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tower::ServiceExt;

use kura::audit::{AuditEvent, AuditKey};
use kura::catalog::Catalog;
use kura::config::HttpSettings;
use kura::http::{AppState, app};
use kura::policy::Policy;
use kura::policy::workflow::fiscal_year_end;
use kura::privacy::result::{
    Disclosure, DisclosureMode, DpColumn, DpDisclosure, ReleasedColumn, ReleasedResult,
};
use kura::query::plane::{AuthorisedQuery, BuiltExtract, DataPlane, DpPreview, ExtractFailure};
use kura::query::{QueryError, QueryOutcome};
use kura::sql::scope::Scope;
use kura::store::Store;
use kura::store::model::*;

pub(crate) const PASSWORD: &str = "correct horse battery staple";

fn password_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| kura::auth::hash_password(PASSWORD).unwrap())
}

/// Test double of the data plane: builds empty extract directories and answers from
/// markers in the SQL.
pub(crate) struct FakePlane {
    root: PathBuf,
    pub(crate) seen: Mutex<Vec<AuthorisedQuery>>,
    /// Extract generation: bumping it makes the next build a new extract version.
    pub(crate) generation: AtomicUsize,
    /// Delay of every DP answer (concurrency tests).
    pub(crate) dp_delay_ms: AtomicU64,
    /// DP answers computed (each with fresh noise).
    pub(crate) dp_runs: AtomicUsize,
}

impl FakePlane {
    /// The release key a data plane derives: the normalised question and its DP
    /// parameters (here: the SQL with whitespace collapsed, ε and the bounds).
    fn release_key(q: &AuthorisedQuery) -> String {
        let dp = q.dp.expect("DP parameters");
        let sql = q.sql.split_whitespace().collect::<Vec<_>>().join(" ");
        format!(
            "rk:{sql}|{}|{}|{}",
            dp.epsilon, dp.bounds.max_groups_per_patient, dp.bounds.max_rows_per_group
        )
    }

    fn dp_disclosure(q: &AuthorisedQuery) -> DpDisclosure {
        let dp = q.dp.expect("DP parameters");
        let sensitivity = f64::from(dp.bounds.max_groups_per_patient);
        let scale = sensitivity / dp.epsilon;
        DpDisclosure {
            epsilon: dp.epsilon,
            cached: false,
            mechanism: "laplace".into(),
            bounds: dp.bounds,
            release_threshold: 5.0 + 3.0 * scale,
            columns: vec![DpColumn {
                index: 1,
                name: "n".into(),
                aggregate: "count_distinct_pid".into(),
                epsilon: dp.epsilon,
                sensitivity,
                noise_scale: scale,
                ci95_half_width: Some(scale * (1.0f64 / 0.05).ln()),
                clamp: None,
            }],
            intervals: vec![],
        }
    }

    /// A noisy count with fresh Laplace noise on every call (an averaging attack on a
    /// plane without the cache would narrow it).
    fn dp_outcome(&self, q: &AuthorisedQuery) -> QueryOutcome {
        use rand::Rng;
        self.dp_runs.fetch_add(1, Ordering::SeqCst);
        let d = Self::dp_disclosure(q);
        let scale = d.columns[0].noise_scale;
        let u: f64 = rand::rng().random_range(-0.5..0.5);
        let noise = -scale * u.signum() * (1.0 - 2.0 * u.abs()).ln();
        QueryOutcome {
            result: ReleasedResult {
                columns: vec![
                    ReleasedColumn {
                        name: "sex".into(),
                        type_name: "Utf8".into(),
                    },
                    ReleasedColumn {
                        name: "n".into(),
                        type_name: "Float64".into(),
                    },
                ],
                rows: vec![vec![json!("1"), json!(412.0 + noise)]],
                disclosure: Disclosure {
                    mode: DisclosureMode::Dp,
                    threshold: q.threshold,
                    suppressed: vec![],
                    suppressed_cells: 0,
                    dropped_rows: 0,
                    rounding: None,
                    epsilon_spent: Some(d.epsilon),
                    epsilon_remaining: None,
                    notes: vec![],
                    dp: Some(d),
                },
            },
            plan_fingerprint: "fp_dp".into(),
            tables: vec!["patient".into()],
            duration: Duration::from_millis(3),
        }
    }
}

impl DataPlane for FakePlane {
    fn build_extract<'a>(
        &'a self,
        application: &'a str,
        _scope: &'a Scope,
    ) -> BoxFuture<'a, Result<BuiltExtract, ExtractFailure>> {
        Box::pin(async move {
            let path = self.root.join(application);
            std::fs::create_dir_all(&path).map_err(|e| ExtractFailure {
                application: application.into(),
                source: Box::new(e),
            })?;
            let generation = self.generation.load(Ordering::SeqCst);
            Ok(BuiltExtract {
                extract_id: if generation == 0 {
                    format!("x_{application}")
                } else {
                    format!("x_{application}_g{generation}")
                },
                path,
            })
        })
    }

    fn query(&self, q: AuthorisedQuery) -> BoxFuture<'_, Result<QueryOutcome, QueryError>> {
        Box::pin(async move {
            self.seen.lock().unwrap().push(q.clone());
            if q.sql.contains("FAIL_EXEC") {
                return Err(QueryError::execution(
                    datafusion::error::DataFusionError::Execution(
                        "Cast error: cannot cast string '1987-03-02' to Int32".into(),
                    ),
                ));
            }
            if q.sql.contains("OUT_OF_SCOPE") {
                return Err(QueryError::OutOfScope {
                    message: "table `adverse_event` is not in this approval's datasets".into(),
                });
            }
            if q.dp.is_some() {
                let ms = self.dp_delay_ms.load(Ordering::SeqCst);
                if ms > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                return Ok(self.dp_outcome(&q));
            }
            Ok(QueryOutcome {
                result: ReleasedResult {
                    columns: vec![
                        ReleasedColumn {
                            name: "prefecture_code".into(),
                            type_name: "Utf8".into(),
                        },
                        ReleasedColumn {
                            name: "n".into(),
                            type_name: "Int64".into(),
                        },
                    ],
                    rows: vec![
                        vec![json!("13"), json!(412)],
                        vec![json!("31"), Value::Null],
                    ],
                    disclosure: Disclosure {
                        mode: q.mode,
                        threshold: q.threshold,
                        suppressed: vec![[1, 1]],
                        suppressed_cells: 1,
                        dropped_rows: 0,
                        rounding: None,
                        epsilon_spent: q.dp.map(|d| d.epsilon),
                        epsilon_remaining: None,
                        notes: vec![],
                        dp: None,
                    },
                },
                plan_fingerprint: "fp_test".into(),
                tables: vec!["patient".into()],
                duration: Duration::from_millis(3),
            })
        })
    }

    fn dp_preview(&self, q: AuthorisedQuery) -> BoxFuture<'_, Result<DpPreview, QueryError>> {
        Box::pin(async move {
            if q.sql.contains("DP_UNSUPPORTED") || q.dp.is_none() {
                return Err(QueryError::UnsupportedQuery {
                    message: "MIN is not supported under DP; use COUNT, SUM or AVG".into(),
                });
            }
            Ok(DpPreview {
                release_key: Self::release_key(&q),
                disclosure: Self::dp_disclosure(&q),
            })
        })
    }

    fn diseases(&self) -> BTreeSet<i32> {
        [2, 11, 13, 51].into_iter().collect()
    }
}

pub(crate) struct H {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) state: AppState,
    pub(crate) router: Router,
    pub(crate) plane: Arc<FakePlane>,
}

fn today() -> NaiveDate {
    (Utc::now() + chrono::Duration::hours(9)).date_naive()
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

pub(crate) fn full_form(users: &[&str]) -> ApplicationForm {
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
    }
}

impl H {
    pub(crate) async fn new() -> H {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::from_bytes(&[9u8; 32]).unwrap();
        let store = Store::open(&dir.path().join("kura.db"), key).await.unwrap();
        for (name, role, m) in [
            ("researcher1", Role::Researcher, None),
            ("researcher2", Role::Researcher, None),
            ("researcher3", Role::Researcher, None),
            ("reviewer1", Role::Reviewer, None),
            ("reviewer2", Role::Reviewer, None),
            ("auditor1", Role::Auditor, None),
            ("pms1", Role::Pms, Some("M01")),
            ("admin1", Role::Admin, None),
        ] {
            store
                .create_user(
                    &NewUser {
                        username: name.into(),
                        password_hash: password_hash().into(),
                        roles: vec![role],
                        manufacturer: m.map(Into::into),
                        display_name: name.into(),
                        affiliation: "Org".into(),
                        title: String::new(),
                    },
                    "test",
                )
                .await
                .unwrap();
        }
        let plane = Arc::new(FakePlane {
            root: dir.path().join("extracts"),
            seen: Mutex::new(Vec::new()),
            generation: AtomicUsize::new(0),
            dp_delay_ms: AtomicU64::new(0),
            dp_runs: AtomicUsize::new(0),
        });
        let policy = Arc::new(Policy::load(&store).await.unwrap());
        let state = AppState {
            store,
            policy,
            data: plane.clone(),
            catalog: Arc::new(Catalog::embedded().unwrap()),
            settings: Arc::new(HttpSettings::default()),
        };
        let router = app(state.clone());
        let h = H {
            dir,
            state,
            router,
            plane,
        };
        let fy_end = fiscal_year_end(today());
        h.seed_approved(
            "A-1",
            &["researcher1", "reviewer2"],
            today(),
            fy_end,
            DisclosureMode::Suppression,
            None,
            &["researcher1"],
        )
        .await;
        h.seed_approved(
            "A-DP",
            &["researcher1"],
            today(),
            fy_end,
            DisclosureMode::Dp,
            Some(1.0),
            &["researcher1"],
        )
        .await;
        let past_start = NaiveDate::from_ymd_opt(2024, 4, 1).unwrap();
        let past_end = NaiveDate::from_ymd_opt(2025, 3, 31).unwrap();
        h.seed_approved(
            "A-OLD",
            &["researcher3"],
            past_start,
            past_end,
            DisclosureMode::Suppression,
            None,
            &["researcher3"],
        )
        .await;
        h.seed_approved(
            "A-NOPLEDGE",
            &["researcher1"],
            today(),
            fy_end,
            DisclosureMode::Suppression,
            None,
            &[],
        )
        .await;
        h.build("PMS-M01").await;
        h.state.policy.reload(&h.state.store).await.unwrap();
        h
    }

    pub(crate) async fn build(&self, id: &str) {
        kura::http::applications::build_extract(&self.state, id, &Scope::default(), "test")
            .await
            .unwrap();
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn seed_approved(
        &self,
        id: &str,
        users: &[&str],
        start: NaiveDate,
        end: NaiveDate,
        mode: DisclosureMode,
        eps: Option<f64>,
        pledged: &[&str],
    ) {
        let s = &self.state.store;
        let mut form = full_form(users);
        form.title = format!("study {id}");
        let created = s
            .create_application(Some(id), "researcher1", &form)
            .await
            .unwrap();
        let mut next = created.clone();
        next.status = Status::Approved;
        next.approval = Some(Approval {
            term: Term { start, end },
            scope: Scope {
                datasets: vec!["als".into(), "nanbyo".into()],
                diseases: Some(vec![2]),
                ..Default::default()
            },
            mode,
            k: 5,
            epsilon_budget: eps,
            dp_bounds: None,
            approved_by: "reviewer1".into(),
            approved_at: Utc::now(),
        });
        let ev = AuditEvent::ok("reviewer1", "application.approve", Some(id), json!({}));
        s.transition(
            &next,
            created.updated_at,
            Status::Submitted,
            "approve",
            None,
            &ev,
        )
        .await
        .unwrap();
        for u in pledged {
            s.accept_pledge(id, u).await.unwrap();
        }
        self.build(id).await;
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, _, v) = self.call_full(method, path, token, body, &[]).await;
        (s, v)
    }

    pub(crate) async fn call_full(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .unwrap();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, headers, v)
    }

    pub(crate) async fn login(&self, user: &str) -> String {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/v1/session",
                None,
                Some(json!({"username": user, "password": PASSWORD})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    pub(crate) async fn query(&self, token: &str, app: &str, sql: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/api/v1/query",
            Some(token),
            Some(json!({"application": app, "sql": sql})),
        )
        .await
    }

    pub(crate) async fn audit_rows(&self, action: &str) -> Vec<Value> {
        self.state
            .store
            .audit_events(&kura::store::AuditFilter {
                action: Some(action.into()),
                page_size: 500,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect()
    }

    pub(crate) async fn raw(&self) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        sqlx::SqliteConnection::connect(&format!(
            "sqlite://{}",
            self.dir.path().join("kura.db").display()
        ))
        .await
        .unwrap()
    }
}

pub(crate) fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

// ------------------------------------------------------------------ sessions

#[tokio::test]
async fn login_returns_token_and_roles_and_me_lists_usable_applications() {
    let h = H::new().await;
    let (s, v) = h
        .call(
            Method::POST,
            "/api/v1/session",
            None,
            Some(json!({"username": "researcher1", "password": PASSWORD})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["user"],
        json!({"username": "researcher1", "roles": ["researcher"]})
    );
    let token = v["token"].as_str().unwrap();
    assert_eq!(token.len(), 64);
    let (s, me) = h.call(Method::GET, "/api/v1/me", Some(token), None).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = me["applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    // A-NOPLEDGE is not usable until the pledge; A-OLD is not named.
    assert_eq!(ids, vec!["A-1", "A-DP"]);
    let dp = &me["applications"][1];
    assert_eq!(dp["mode"], "dp");
    assert_eq!(dp["epsilon_remaining"], json!(1.0));

    let pms = h.login("pms1").await;
    let (_, me) = h.call(Method::GET, "/api/v1/me", Some(&pms), None).await;
    assert_eq!(me["applications"][0]["id"], "PMS-M01");
}

#[tokio::test]
async fn failed_login_does_not_reveal_whether_the_account_exists() {
    let h = H::new().await;
    let (s1, v1) = h
        .call(
            Method::POST,
            "/api/v1/session",
            None,
            Some(json!({"username": "researcher1", "password": "wrong"})),
        )
        .await;
    let (s2, v2) = h
        .call(
            Method::POST,
            "/api/v1/session",
            None,
            Some(json!({"username": "nobody", "password": "wrong"})),
        )
        .await;
    assert_eq!(
        (s1, s2),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(code(&v1), "invalid_credentials");
    assert_eq!(v1["error"]["message"], v2["error"]["message"]);
    // Unknown names lock exactly like real ones.
    for name in ["researcher2", "ghost"] {
        for _ in 0..5 {
            let (s, _) = h
                .call(
                    Method::POST,
                    "/api/v1/session",
                    None,
                    Some(json!({"username": name, "password": "nope"})),
                )
                .await;
            assert_eq!(s, StatusCode::UNAUTHORIZED);
        }
        let (s, v) = h
            .call(
                Method::POST,
                "/api/v1/session",
                None,
                Some(json!({"username": name, "password": PASSWORD})),
            )
            .await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{name}");
        assert_eq!(code(&v), "account_locked");
    }
    // Failed logins are audited.
    let rows = h.audit_rows("session.login").await;
    assert!(
        rows.iter()
            .any(|e| e["actor"] == "ghost" && e["code"] == "invalid_credentials")
    );
    assert!(
        rows.iter()
            .any(|e| e["actor"] == "researcher2" && e["code"] == "account_locked")
    );
}

#[tokio::test]
async fn lockout_ends_after_reset_and_disabled_accounts_cannot_log_in() {
    let h = H::new().await;
    for _ in 0..5 {
        h.call(
            Method::POST,
            "/api/v1/session",
            None,
            Some(json!({"username": "researcher2", "password": "x"})),
        )
        .await;
    }
    let (s, _) = h
        .call(
            Method::POST,
            "/api/v1/session",
            None,
            Some(json!({"username": "researcher2", "password": PASSWORD})),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    h.state
        .store
        .set_password("researcher2", password_hash(), "admin1")
        .await
        .unwrap();
    h.login("researcher2").await;

    let token = h.login("researcher3").await;
    h.state
        .store
        .set_disabled("researcher3", true, "admin1")
        .await
        .unwrap();
    let (s, v) = h.call(Method::GET, "/api/v1/me", Some(&token), None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthenticated"),
        "disabling revokes sessions"
    );
    let (s, v) = h
        .call(
            Method::POST,
            "/api/v1/session",
            None,
            Some(json!({"username": "researcher3", "password": PASSWORD})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_credentials")
    );
}

#[tokio::test]
async fn unauthenticated_and_logout() {
    let h = H::new().await;
    for (m, p) in [
        (Method::GET, "/api/v1/me"),
        (Method::POST, "/api/v1/query"),
        (Method::GET, "/api/v1/audit/verify"),
        (Method::GET, "/api/v1/applications"),
    ] {
        let (s, v) = h.call(m, p, None, Some(json!({}))).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNAUTHORIZED, "unauthenticated"),
            "{p}"
        );
        assert!(v["error"]["ref"].as_str().unwrap().starts_with("r_"));
    }
    let (s, v) = h.call(Method::GET, "/api/v1/me", Some("0000"), None).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthenticated"));
    let token = h.login("researcher1").await;
    let (s, _) = h
        .call(Method::DELETE, "/api/v1/session", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.call(Method::GET, "/api/v1/me", Some(&token), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "logout revokes the token");
}

#[tokio::test]
async fn cookie_sessions_are_httponly_strict_and_need_csrf_for_changes() {
    let h = H::new().await;
    let (s, headers, v) = h
        .call_full(
            Method::POST,
            "/api/v1/session",
            None,
            Some(json!({"username": "researcher1", "password": PASSWORD})),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let cookies: Vec<String> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap().to_string())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("kura_session="))
        .unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    let token = v["token"].as_str().unwrap();
    let csrf = v["csrf_token"].as_str().unwrap();
    let cookie = format!("kura_session={token}; kura_csrf={csrf}");
    // Reads work with the cookie alone.
    let (s, _, _) = h
        .call_full(
            Method::GET,
            "/api/v1/me",
            None,
            None,
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // A state change without the CSRF header is refused; with it, it passes.
    let body = json!({"application": "A-1", "title": "nb", "cells": []});
    let (s, _, v) = h
        .call_full(
            Method::POST,
            "/api/v1/notebooks",
            None,
            Some(body.clone()),
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "csrf_failed"));
    let (s, _, v) = h
        .call_full(
            Method::POST,
            "/api/v1/notebooks",
            None,
            Some(body.clone()),
            &[("cookie", &cookie), ("x-csrf-token", "f00")],
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "csrf_failed"));
    let (s, _, _) = h
        .call_full(
            Method::POST,
            "/api/v1/notebooks",
            None,
            Some(body),
            &[("cookie", &cookie), ("x-csrf-token", csrf)],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
}

// ------------------------------------------------------------------- queries

#[tokio::test]
async fn named_researcher_gets_a_result_and_the_query_is_audited() {
    let h = H::new().await;
    let t = h.login("researcher1").await;
    let (s, v) = h
        .query(
            &t,
            "A-1",
            "SELECT prefecture_code, count(*) AS n FROM patient GROUP BY 1",
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["query_id"].as_str().unwrap().starts_with("q_"));
    assert_eq!(
        v["columns"][0],
        json!({"name": "prefecture_code", "type": "Utf8"})
    );
    assert_eq!(v["rows"][1], json!(["31", null]));
    assert_eq!(v["disclosure"]["suppressed"], json!([[1, 1]]));
    assert_eq!(v["disclosure"]["threshold"], 5);
    // The data plane ran over this application's own extract, in its approved mode.
    let seen = h.plane.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.application, "A-1");
    assert!(seen.extract_dir.ends_with("A-1"));
    assert_eq!(seen.mode, DisclosureMode::Suppression);
    let ev = &h.audit_rows("query.run").await[0];
    assert_eq!(ev["actor"], "researcher1");
    assert_eq!(ev["outcome"], "ok");
    assert_eq!(ev["reference"], v["query_id"]);
    assert_eq!(ev["detail"]["plan_fingerprint"], "fp_test");
    assert_eq!(ev["detail"]["extract_id"], "x_A-1");
    assert_eq!(ev["detail"]["suppressed_cells"], 1);
    assert!(ev["detail"]["sql"].as_str().unwrap().contains("GROUP BY"));
    // And it is in the history.
    let (_, hist) = h
        .call(
            Method::GET,
            "/api/v1/queries?application=A-1",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(hist[0]["query_id"], v["query_id"]);
}

#[tokio::test]
async fn each_regulation_rule_has_its_code_over_http() {
    let h = H::new().await;
    let r1 = h.login("researcher1").await;
    let r2 = h.login("researcher2").await;
    let r3 = h.login("researcher3").await;
    let rev = h.login("reviewer1").await;
    let aud = h.login("auditor1").await;
    let pms = h.login("pms1").await;
    let sql = "SELECT count(*) FROM patient";
    let cases: Vec<(&str, &str, &str)> = vec![
        (&r2, "A-1", "not_named_user"),
        (&r2, "A-DOES-NOT-EXIST", "not_named_user"),
        (&r3, "A-OLD", "term_expired"),
        (&r1, "A-NOPLEDGE", "pledge_required"),
        (&rev, "A-1", "forbidden"),
        (&aud, "A-1", "forbidden"),
        (&pms, "PMS-M02", "forbidden"),
        (&r1, "PMS-M01", "forbidden"),
    ];
    for (tok, app, want) in cases {
        let (s, v) = h.query(tok, app, sql).await;
        assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, want), "{app}: {v}");
        assert!(v["error"]["ref"].as_str().unwrap().starts_with("q_"));
    }
    // PMS team on its own scope succeeds, over the regen dataset of its manufacturer only.
    let (s, _) = h.query(&pms, "PMS-M01", sql).await;
    assert_eq!(s, StatusCode::OK);
    let seen = h.plane.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.scope.manufacturers, Some(vec!["M01".to_string()]));
    // Out of scope comes from the query path.
    let (s, v) = h.query(&r1, "A-1", "SELECT OUT_OF_SCOPE").await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "out_of_scope"));
    // Every refusal was audited with its code.
    let denied: Vec<String> = h
        .audit_rows("query.run")
        .await
        .iter()
        .filter(|e| e["outcome"] == "denied")
        .map(|e| e["code"].as_str().unwrap().to_string())
        .collect();
    for c in [
        "not_named_user",
        "term_expired",
        "pledge_required",
        "forbidden",
        "out_of_scope",
    ] {
        assert!(denied.iter().any(|d| d == c), "{c} not audited: {denied:?}");
    }
}

#[tokio::test]
async fn revocation_takes_effect_on_the_next_request() {
    let h = H::new().await;
    let r1 = h.login("researcher1").await;
    let rev = h.login("reviewer1").await;
    assert_eq!(h.query(&r1, "A-1", "SELECT 1").await.0, StatusCode::OK);
    let (s, v) = h
        .call(
            Method::POST,
            "/api/v1/applications/A-1/revoke",
            Some(&rev),
            Some(json!({"reason": "breach of 要綱 第3章 6"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "revoked");
    let (s, v) = h.query(&r1, "A-1", "SELECT 1").await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "revoked"));
    let (s, v) = h
        .call(
            Method::POST,
            "/api/v1/applications/A-1/revoke",
            Some(&rev),
            Some(json!({"reason": "again"})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "invalid_transition"));
}

#[tokio::test]
async fn execution_errors_are_generic_and_the_detail_is_audited_and_counted() {
    let h = H::new().await;
    let t = h.login("researcher1").await;
    for i in 1..=2 {
        let (s, v) = h.query(&t, "A-1", "SELECT FAIL_EXEC").await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::INTERNAL_SERVER_ERROR, "execution_error")
        );
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(!msg.contains("1987"), "a data value leaked: {msg}");
        let ev = &h.audit_rows("query.run").await[0];
        assert_eq!(ev["reference"], v["error"]["ref"]);
        assert!(
            ev["detail"]["internal_detail"]
                .as_str()
                .unwrap()
                .contains("1987-03-02")
        );
        assert_eq!(ev["detail"]["user_execution_errors"], i);
    }
    assert_eq!(
        h.state
            .store
            .user("researcher1")
            .await
            .unwrap()
            .unwrap()
            .execution_errors,
        2
    );
}

#[tokio::test]
async fn no_audit_no_answer() {
    let h = H::new().await;
    let t = h.login("researcher1").await;
    // Make the store fail every audit write, as a full disk or a broken database would.
    let mut raw = h.raw().await;
    sqlx::query("CREATE TRIGGER fail_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END;")
        .execute(&mut raw)
        .await
        .unwrap();
    let (s, v) = h
        .query(
            &t,
            "A-1",
            "SELECT prefecture_code, count(*) FROM patient GROUP BY 1",
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::INTERNAL_SERVER_ERROR, "internal")
    );
    assert!(
        v.get("rows").is_none() && v.get("columns").is_none(),
        "a result escaped without audit: {v}"
    );
    assert_eq!(
        h.plane.seen.lock().unwrap().len(),
        1,
        "the query ran; only its release was stopped"
    );
    // Nothing half-written either: no history row for it.
    sqlx::query("DROP TRIGGER fail_audit")
        .execute(&mut raw)
        .await
        .unwrap();
    assert!(
        h.state
            .store
            .queries(Some("A-1"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn dp_budget_is_charged_and_exhaustion_is_409() {
    let h = H::new().await;
    let t = h.login("researcher1").await;
    let q = |sql: &str, eps: f64| json!({"application": "A-DP", "sql": sql, "epsilon": eps});
    let (s, v) = h
        .call(
            Method::POST,
            "/api/v1/query",
            Some(&t),
            Some(q("SELECT count(*) FROM patient", 0.6)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A different question (an identical one would be re-released from the cache).
    let (s, v) = h
        .call(
            Method::POST,
            "/api/v1/query",
            Some(&t),
            Some(q("SELECT count(*) FROM patient WHERE sex = '2'", 0.6)),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "budget_exhausted"));
    assert!(
        v["error"]["message"].as_str().unwrap().contains("0.400"),
        "{v}"
    );
    let (_, me) = h.call(Method::GET, "/api/v1/me", Some(&t), None).await;
    let rem = me["applications"][1]["epsilon_remaining"].as_f64().unwrap();
    assert!((rem - 0.4).abs() < 1e-9, "{rem}");
    // Mode must match the approval; DP needs ε.
    let (s, v) = h
        .call(
            Method::POST,
            "/api/v1/query",
            Some(&t),
            Some(json!({"application": "A-1", "sql": "SELECT 1", "mode": "dp", "epsilon": 0.1})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, v) = h
        .call(
            Method::POST,
            "/api/v1/query",
            Some(&t),
            Some(json!({"application": "A-DP", "sql": "SELECT 1"})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_request"));
}

#[tokio::test]
async fn catalog_export_and_bad_bodies() {
    let h = H::new().await;
    let r1 = h.login("researcher1").await;
    let r2 = h.login("researcher2").await;
    let (s, v) = h
        .call(
            Method::GET,
            "/api/v1/catalog?application=A-1",
            Some(&r1),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let tables: Vec<&str> = v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(tables.contains(&"als_visit") && tables.contains(&"nanbyo_survey"));
    assert!(
        !tables.contains(&"adverse_event"),
        "regen tables are outside A-1's datasets"
    );
    let (s, v) = h
        .call(
            Method::GET,
            "/api/v1/catalog?application=A-1",
            Some(&r2),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "not_named_user"));
    let (s, v) = h
        .call(
            Method::POST,
            "/api/v1/export",
            Some(&r1),
            Some(json!({"application": "A-1", "what": "extract"})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "export_not_permitted")
    );
    assert_eq!(
        h.audit_rows("export.attempt").await[0]["code"],
        "export_not_permitted"
    );
    let (s, v) = h
        .call(
            Method::POST,
            "/api/v1/query",
            Some(&r1),
            Some(json!({"sql": 1})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_request"));
    let (s, v) = h.call(Method::GET, "/api/v1/nope", Some(&r1), None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
}

// ---------------------------------------------------------------- workflow

#[tokio::test]
async fn full_application_workflow() {
    let h = H::new().await;
    let r1 = h.login("researcher1").await;
    let r2 = h.login("researcher2").await;
    let rev1 = h.login("reviewer1").await;
    let rev2 = h.login("reviewer2").await;
    let aud = h.login("auditor1").await;

    // Draft, then an incomplete submission names the fields.
    let mut form = full_form(&["researcher1", "researcher2"]);
    form.purpose = String::new();
    form.diseases = vec![2, 999];
    form.term = Some(Term {
        start: today(),
        end: fiscal_year_end(today()) + chrono::Duration::days(1),
    });
    let (s, app) = h
        .call(
            Method::POST,
            "/api/v1/applications",
            Some(&r1),
            Some(serde_json::to_value(&form).unwrap()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{app}");
    assert_eq!(app["status"], "draft");
    let id = app["id"].as_str().unwrap().to_string();
    let (s, v) = h
        .call(
            Method::POST,
            &format!("/api/v1/applications/{id}/submit"),
            Some(&r1),
            None,
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_application")
    );
    let fields: Vec<&str> = v["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"purpose") && fields.contains(&"diseases") && fields.contains(&"term"),
        "{fields:?}"
    );

    // Only the applicant edits.
    let good = serde_json::to_value(full_form(&["researcher1", "researcher2"])).unwrap();
    let (s, v) = h
        .call(
            Method::PUT,
            &format!("/api/v1/applications/{id}"),
            Some(&r2),
            Some(good.clone()),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, _) = h
        .call(
            Method::PUT,
            &format!("/api/v1/applications/{id}"),
            Some(&r1),
            Some(good.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h
        .call(
            Method::POST,
            &format!("/api/v1/applications/{id}/submit"),
            Some(&r1),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Reviewer inbox.
    let (_, inbox) = h
        .call(
            Method::GET,
            "/api/v1/applications?status=submitted",
            Some(&rev1),
            None,
        )
        .await;
    assert!(
        inbox
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == id.as_str())
    );
    // Researchers may not decide; correction needs a reason.
    let (s, v) = h
        .call(
            Method::POST,
            &format!("/api/v1/applications/{id}/decision"),
            Some(&r2),
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, v) = h
        .call(
            Method::POST,
            &format!("/api/v1/applications/{id}/decision"),
            Some(&rev1),
            Some(json!({"decision": "request_correction"})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_application")
    );
    let (s, v) = h
        .call(
            Method::POST,
            &format!("/api/v1/applications/{id}/decision"),
            Some(&rev1),
            Some(json!({"decision": "request_correction", "reason": "clarify methods"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "correction_requested");
    h.call(
        Method::PUT,
        &format!("/api/v1/applications/{id}"),
        Some(&r1),
        Some(good.clone()),
    )
    .await;
    let (s, _) = h
        .call(
            Method::POST,
            &format!("/api/v1/applications/{id}/submit"),
            Some(&r1),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // Approval validates the term and k; then builds the extract.
    let bad_term =
        json!({"decision": "approve", "term": {"start": "2026-11-01", "end": "2027-04-30"}});
    let (s, v) = h
        .call(
            Method::POST,
            &format!("/api/v1/applications/{id}/decision"),
            Some(&rev1),
            Some(bad_term),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_application")
    );
    assert!(
        v["error"]["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("2027-03-31")
    );
    let (s, v) = h
        .call(
            Method::POST,
            &format!("/api/v1/applications/{id}/decision"),
            Some(&rev1),
            Some(json!({"decision": "approve", "k": 3})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_application")
    );
    let (s, v) = h
        .call(
            Method::POST,
            &format!("/api/v1/applications/{id}/decision"),
            Some(&rev1),
            Some(json!({"decision": "approve", "k": 10})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "approved");
    assert_eq!(v["approval"]["k"], 10);
    assert_eq!(v["approval"]["scope"]["diseases"], json!([2]));

    // Pledge before the first query.
    let (s, v) = h.query(&r2, &id, "SELECT 1").await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "pledge_required"));
    let (s, _) = h
        .call(
            Method::POST,
            &format!("/api/v1/applications/{id}/pledge"),
            Some(&r2),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = h.query(&r2, &id, "SELECT 1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h.plane.seen.lock().unwrap().last().unwrap().threshold, 10);

    // Corrective recommendation; change application keeps the approval in force until decided.
    let (s, _) = h
        .call(
            Method::POST,
            &format!("/api/v1/applications/{id}/recommendations"),
            Some(&rev1),
            Some(json!({"text": "tighten access logs"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let changed = serde_json::to_value(full_form(&["researcher1"])).unwrap();
    let (s, v) = h
        .call(
            Method::POST,
            &format!("/api/v1/applications/{id}/change"),
            Some(&r1),
            Some(changed),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "approved");
    assert_eq!(
        h.query(&r2, &id, "SELECT 1").await.0,
        StatusCode::OK,
        "approval stays in force during the change"
    );
    let (s, v) = h
        .call(
            Method::POST,
            &format!("/api/v1/applications/{id}/decision"),
            Some(&rev1),
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["pending_change"].is_null());
    let (s, v) = h.query(&r2, &id, "SELECT 1").await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "not_named_user"),
        "removed by the approved change"
    );

    // Detail with history; usage report for applicant and auditor, not for others.
    let (s, d) = h
        .call(
            Method::GET,
            &format!("/api/v1/applications/{id}"),
            Some(&aud),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let actions: Vec<&str> = d["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "create",
            "edit",
            "submit",
            "request_correction",
            "edit",
            "submit",
            "approve",
            "change_submit",
            "change_approve"
        ]
    );
    assert_eq!(d["recommendations"][0]["text"], "tighten access logs");
    assert!(d["extract"]["extract_id"].is_string());
    let (s, rep) = h
        .call(
            Method::GET,
            &format!("/api/v1/applications/{id}/usage-report"),
            Some(&aud),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(rep["queries_ok"], 2);
    assert_eq!(rep["queries_denied"], 2);
    assert_eq!(rep["by_user"]["researcher2"]["ok"], 2);
    let (s, _) = h
        .call(
            Method::GET,
            &format!("/api/v1/applications/{id}/usage-report"),
            Some(&r1),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h
        .call(
            Method::GET,
            &format!("/api/v1/applications/{id}/usage-report"),
            Some(&r2),
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "no longer named, so not visible: {v}"
    );

    // A reviewer never decides an application on which they are named (A-1 names reviewer2).
    let (s, v) = h
        .call(
            Method::POST,
            "/api/v1/applications/A-1/revoke",
            Some(&rev2),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("named user")
    );
}

#[tokio::test]
async fn rejection_is_final_and_list_is_scoped_to_the_caller() {
    let h = H::new().await;
    let r1 = h.login("researcher1").await;
    let r3 = h.login("researcher3").await;
    let rev = h.login("reviewer1").await;
    let (_, app) = h
        .call(
            Method::POST,
            "/api/v1/applications",
            Some(&r1),
            Some(serde_json::to_value(full_form(&["researcher1"])).unwrap()),
        )
        .await;
    let id = app["id"].as_str().unwrap();
    h.call(
        Method::POST,
        &format!("/api/v1/applications/{id}/submit"),
        Some(&r1),
        None,
    )
    .await;
    let (s, v) = h
        .call(
            Method::POST,
            &format!("/api/v1/applications/{id}/decision"),
            Some(&rev),
            Some(json!({"decision": "reject", "reason": "not necessary"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "rejected");
    let (s, v) = h
        .call(
            Method::POST,
            &format!("/api/v1/applications/{id}/submit"),
            Some(&r1),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "invalid_transition"));
    // researcher3 sees only A-OLD, which reads as expired.
    let (_, list) = h
        .call(Method::GET, "/api/v1/applications", Some(&r3), None)
        .await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], "A-OLD");
    assert_eq!(list[0]["status"], "expired");
    let (s, _) = h
        .call(
            Method::GET,
            &format!("/api/v1/applications/{id}"),
            Some(&r3),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = h
        .call(
            Method::GET,
            "/api/v1/applications?status=bogus",
            Some(&r3),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_request"));
}

// ------------------------------------------------------------------- audit

#[tokio::test]
async fn audit_events_filter_paginate_and_verify() {
    let h = H::new().await;
    let r1 = h.login("researcher1").await;
    let aud = h.login("auditor1").await;
    h.query(&r1, "A-1", "SELECT 1").await;
    let (s, v) = h
        .call(
            Method::GET,
            "/api/v1/audit/events?user=researcher1&action=query",
            Some(&aud),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let evs = v.as_array().unwrap();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["event"]["action"], "query.run");
    let (_, p0) = h
        .call(
            Method::GET,
            "/api/v1/audit/events?page_size=2&page=0",
            Some(&aud),
            None,
        )
        .await;
    assert_eq!(p0.as_array().unwrap().len(), 2);
    let last = p0[1]["seq"].as_i64().unwrap();
    let (_, p1) = h
        .call(
            Method::GET,
            &format!("/api/v1/audit/events?page_size=2&before={last}"),
            Some(&aud),
            None,
        )
        .await;
    assert_eq!(
        p1[0]["seq"].as_i64().unwrap(),
        last - 1,
        "the cursor continues exactly where the page ended"
    );
    let (s, v) = h
        .call(Method::GET, "/api/v1/audit/verify", Some(&aud), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["ok"], true);
    assert!(v["events"].as_i64().unwrap() > 10);
    assert_eq!(v["head"].as_str().unwrap().len(), 64);
    let (s, v) = h
        .call(Method::GET, "/api/v1/audit/verify", Some(&r1), None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
}

async fn tampered(sql: &[&str]) -> Value {
    let h = H::new().await;
    let aud = h.login("auditor1").await;
    let mut raw = h.raw().await;
    // An attacker with raw database access first removes the append-only triggers.
    for s in [
        "DROP TRIGGER audit_log_no_update",
        "DROP TRIGGER audit_log_no_delete",
    ]
    .iter()
    .chain(sql)
    {
        sqlx::query(s).execute(&mut raw).await.unwrap();
    }
    let (s, v) = h
        .call(Method::GET, "/api/v1/audit/verify", Some(&aud), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    v
}

#[tokio::test]
async fn tamper_edit_is_detected() {
    let v = tampered(&[
        "UPDATE audit_log SET event = replace(event, 'researcher3', 'researcher9') WHERE seq = 3",
    ])
    .await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["broken_at"], 3);
}

#[tokio::test]
async fn tamper_edit_keeping_canonical_form_is_detected() {
    let v =
        tampered(&["UPDATE audit_log SET at = '2020-01-01T00:00:00.000000Z' WHERE seq = 5"]).await;
    assert_eq!(
        (v["ok"].clone(), v["broken_at"].clone()),
        (json!(false), json!(5))
    );
}

#[tokio::test]
async fn tamper_delete_is_detected() {
    let v = tampered(&["DELETE FROM audit_log WHERE seq = 4"]).await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["broken_at"], 5);
}

#[tokio::test]
async fn tamper_reorder_is_detected() {
    // Swap the contents of rows 2 and 3 (keeping their seq numbers).
    let v = tampered(&[
        "UPDATE audit_log SET seq = -2 WHERE seq = 2",
        "UPDATE audit_log SET seq = 2 WHERE seq = 3",
        "UPDATE audit_log SET seq = 3 WHERE seq = -2",
    ])
    .await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["broken_at"], 2);
}

#[tokio::test]
async fn tamper_rebuilt_chain_without_key_is_detected() {
    // Delete a row and renumber the rest so seq has no gap: prev links break instead.
    let v = tampered(&[
        "DELETE FROM audit_log WHERE seq = 2",
        "UPDATE audit_log SET seq = seq - 1 WHERE seq > 2",
    ])
    .await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["broken_at"], 2);
}

// ------------------------------------------------------ notebooks, releases

#[tokio::test]
async fn notebooks_crud_is_per_owner_and_releases_need_own_successful_query() {
    let h = H::new().await;
    let r1 = h.login("researcher1").await;
    let r2 = h.login("researcher2").await;
    let (s, nb) = h.call(Method::POST, "/api/v1/notebooks", Some(&r1), Some(json!({"application": "A-1", "title": "ALS", "cells": [{"kind": "sql", "source": "SELECT 1"}]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{nb}");
    let id = nb["id"].as_str().unwrap();
    let (s, v) = h
        .call(
            Method::PUT,
            &format!("/api/v1/notebooks/{id}"),
            Some(&r1),
            Some(json!({"title": "ALS v2"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["title"], "ALS v2");
    assert_eq!(v["cells"][0]["source"], "SELECT 1");
    let (_, list) = h
        .call(
            Method::GET,
            "/api/v1/notebooks?application=A-1",
            Some(&r1),
            None,
        )
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (s, _) = h
        .call(
            Method::GET,
            &format!("/api/v1/notebooks/{id}"),
            Some(&r2),
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "another user's notebook is invisible"
    );
    let (s, v) = h
        .call(
            Method::POST,
            "/api/v1/notebooks",
            Some(&r2),
            Some(json!({"application": "A-1", "title": "x"})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "not_named_user"));
    let (s, v) = h
        .call(
            Method::PUT,
            &format!("/api/v1/notebooks/{id}"),
            Some(&r1),
            Some(json!({"cells": "nope"})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_request"));
    let (s, _) = h
        .call(
            Method::DELETE,
            &format!("/api/v1/notebooks/{id}"),
            Some(&r1),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h
        .call(
            Method::GET,
            &format!("/api/v1/notebooks/{id}"),
            Some(&r1),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (_, q) = h.query(&r1, "A-1", "SELECT 1").await;
    let qid = q["query_id"].as_str().unwrap();
    let (s, v) = h
        .call(
            Method::POST,
            "/api/v1/releases",
            Some(&r1),
            Some(json!({"application": "A-1", "query_id": "q_forged", "justification": "paper"})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_request"));
    let (s, v) = h.call(Method::POST, "/api/v1/releases", Some(&r1), Some(json!({"application": "A-1", "query_id": qid, "justification": "paper in J Neurol"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "pending");
    assert_eq!(h.audit_rows("release.request").await.len(), 1);
}

#[tokio::test]
async fn reviewers_decide_release_requests_once_with_a_reason_and_never_their_own() {
    let h = H::new().await;
    let r1 = h.login("researcher1").await;
    let (_, q) = h.query(&r1, "A-1", "SELECT 1").await;
    let qid = q["query_id"].as_str().unwrap();
    let (s, rel) = h.call(Method::POST, "/api/v1/releases", Some(&r1), Some(json!({"application": "A-1", "query_id": qid, "justification": "paper in J Neurol"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{rel}");
    let path = format!("/api/v1/releases/{}/decision", rel["id"].as_str().unwrap());
    let approve = json!({"decision": "approve", "reason": "aggregate counts only, all cells >= k"});

    // Not a reviewer: refused by the enforcement point.
    let (s, v) = h
        .call(Method::POST, &path, Some(&r1), Some(approve.clone()))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"), "{v}");
    // reviewer2 is a named user on A-1: conflict of interest, audited.
    let rv2 = h.login("reviewer2").await;
    let (s, v) = h
        .call(Method::POST, &path, Some(&rv2), Some(approve.clone()))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"), "{v}");
    let denied = h.audit_rows("release.decide").await;
    assert!(
        denied
            .iter()
            .any(|e| e["actor"] == "reviewer2" && e["outcome"] == "denied"),
        "{denied:?}"
    );

    let rv1 = h.login("reviewer1").await;
    let (s, v) = h
        .call(
            Method::POST,
            &path,
            Some(&rv1),
            Some(json!({"decision": "approve", "reason": "   "})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_request"));
    let (s, v) = h
        .call(
            Method::POST,
            &path,
            Some(&rv1),
            Some(json!({"decision": "maybe", "reason": "x"})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_request"));
    assert!(h.audit_rows("release.approve").await.is_empty());

    let (s, v) = h
        .call(Method::POST, &path, Some(&rv1), Some(approve.clone()))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["release"]["status"], "approved");
    assert_eq!(v["decided_by"], "reviewer1");
    let done = h.audit_rows("release.approve").await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["actor"], "reviewer1");
    assert_eq!(done[0]["detail"]["reason"], approve["reason"]);
    assert_eq!(done[0]["detail"]["requester"], "researcher1");

    // Decided once: a second decision is a conflict and changes nothing.
    let (s, v) = h
        .call(
            Method::POST,
            &path,
            Some(&rv1),
            Some(json!({"decision": "reject", "reason": "changed my mind"})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "conflict"), "{v}");
    assert!(h.audit_rows("release.reject").await.is_empty());

    let (s, v) = h
        .call(
            Method::POST,
            "/api/v1/releases/rel_unknown/decision",
            Some(&rv1),
            Some(approve.clone()),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (_, v) = h
        .call(
            Method::GET,
            "/api/v1/audit/verify",
            Some(&h.login("auditor1").await),
            None,
        )
        .await;
    assert_eq!(v["ok"], true, "{v}");
}

// ------------------------------------------------------------ service shape

#[tokio::test]
async fn security_headers_request_id_and_console_fallback() {
    let h = H::new().await;
    let (s, headers, v) = h.call_full(Method::GET, "/", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.as_str().unwrap().contains("kura"));
    let csp = headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff");
    assert!(
        headers
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
}

#[tokio::test]
async fn body_limit_is_enforced() {
    let h = H::new().await;
    let t = h.login("researcher1").await;
    let big = "x".repeat(2 << 20);
    let (s, v) = h
        .call(
            Method::POST,
            "/api/v1/query",
            Some(&t),
            Some(json!({"application": "A-1", "sql": big})),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(&v), "payload_too_large");
}

#[tokio::test]
async fn openapi_document_snapshot() {
    let h = H::new().await;
    let (s, v) = h
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    for p in [
        "/api/v1/session",
        "/api/v1/query",
        "/api/v1/applications/{id}/decision",
        "/api/v1/audit/verify",
        "/api/v1/notebooks/{id}",
        "/api/v1/releases/{id}/decision",
    ] {
        assert!(v["paths"].get(p).is_some(), "{p} undocumented");
    }
    insta::assert_json_snapshot!("openapi", v, {".info.version" => "[version]"});
}
