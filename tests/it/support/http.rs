//! Request helpers. `H` is the in-process API harness: the real router (`oneshot`) over
//! a fresh store holding the named fixtures and the `FakePlane`; its helpers log in,
//! query, call JSON endpoints and read audit rows. The free functions do the same over
//! a real connection (reqwest), for tests that start a server.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use kura::catalog::Catalog;
use kura::config::HttpSettings;
use kura::http::{AppState, app};
use kura::policy::Policy;
use kura::sql::scope::Scope;
use kura::store::{AuditFilter, Store};

use super::fixtures::{self, PASSWORD, USERS};
use super::plane::FakePlane;

/// The API error code of a response body (`<none>` when it is not an error).
pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

/// The field names of an `invalid_*` error, in order.
pub fn error_fields(v: &Value) -> Vec<&str> {
    v["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect()
}

/// Every `Set-Cookie` header of a response.
pub fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap().to_string())
        .collect()
}

/// Assertions on a `(status, body)` reply that keep the body in the failure message.
pub trait Reply {
    /// Asserts the status and returns the body.
    fn expect_status(self, want: StatusCode) -> Value;
    /// Asserts the API error `(status, code)` and returns the body.
    fn expect_error(self, status: StatusCode, code: &str) -> Value;
}

impl Reply for (StatusCode, Value) {
    #[track_caller]
    fn expect_status(self, want: StatusCode) -> Value {
        assert_eq!(self.0, want, "{}", self.1);
        self.1
    }

    #[track_caller]
    fn expect_error(self, status: StatusCode, want: &str) -> Value {
        assert_eq!((self.0, code(&self.1)), (status, want), "{}", self.1);
        self.1
    }
}

/// Every audit event with `action`, newest first.
pub async fn audit_rows(store: &Store, action: &str) -> Vec<Value> {
    store
        .audit_events(&AuditFilter {
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

/// One request through `router`; the body is JSON, or the text when it is not JSON.
pub async fn call_router(
    router: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
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
    let resp = router.clone().oneshot(req).await.unwrap();
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

/// The in-process API over the fixtures: every account of `USERS`, the approved
/// applications of `fixtures::approved_applications` and the PMS-M01 standing scope,
/// each with its extract built.
pub struct H {
    pub dir: tempfile::TempDir,
    pub state: AppState,
    pub router: Router,
    pub plane: Arc<FakePlane>,
}

impl H {
    pub async fn new() -> H {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<&str> = USERS.iter().map(|u| u.0).collect();
        let store = fixtures::store_with_users(dir.path(), &names).await;
        let plane = Arc::new(FakePlane::new(dir.path().join("extracts")));
        let state = state_over(store, plane.clone(), HttpSettings::default()).await;
        let router = app(state.clone());
        let h = H {
            dir,
            state,
            router,
            plane,
        };
        for a in fixtures::approved_applications() {
            fixtures::approve(&h.state.store, &a).await;
            h.build(a.id).await;
        }
        h.build("PMS-M01").await;
        h.state.policy.reload(&h.state.store).await.unwrap();
        h
    }

    /// The harness and a session of `user` (most tests start as one account).
    pub async fn with_login(user: &str) -> (H, String) {
        let h = H::new().await;
        let token = h.login(user).await;
        (h, token)
    }

    pub async fn build(&self, id: &str) {
        kura::http::applications::build_extract(&self.state, id, &Scope::default(), "test")
            .await
            .unwrap();
    }

    /// The router over the store reopened on the same file (a restart of the server).
    pub async fn restart(&self) -> (Store, Router) {
        self.state.store.close().await;
        let store = kura::store::testing::open(self.dir.path(), fixtures::audit_key()).await;
        let state = AppState {
            store: store.clone(),
            ..self.state.clone()
        };
        (store, app(state))
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, _, v) = call_router(&self.router, method, path, token, body, &[]).await;
        (s, v)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// A POST without a body (submit, pledge).
    pub async fn post_empty(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), None).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// `POST /api/v1/session` without a token.
    pub async fn session(&self, user: &str, password: &str) -> (StatusCode, Value) {
        let body = json!({"username": user, "password": password});
        self.call(Method::POST, "/api/v1/session", None, Some(body))
            .await
    }

    pub async fn login(&self, user: &str) -> String {
        let v = self
            .session(user, PASSWORD)
            .await
            .expect_status(StatusCode::OK);
        v["token"].as_str().unwrap().to_string()
    }

    pub async fn query(&self, token: &str, app: &str, sql: &str) -> (StatusCode, Value) {
        let body = json!({"application": app, "sql": sql});
        self.post("/api/v1/query", token, body).await
    }

    pub async fn audit_rows(&self, action: &str) -> Vec<Value> {
        audit_rows(&self.state.store, action).await
    }

    /// The audit events with `action` whose outcome is `denied`, newest first.
    pub async fn denied_rows(&self, action: &str) -> Vec<Value> {
        let rows = self.audit_rows(action).await;
        rows.into_iter()
            .filter(|e| e["outcome"] == "denied")
            .collect()
    }

    /// Make every audit write fail, as a full disk or a broken database would; drop the
    /// trigger `fail_audit` on the returned connection to heal the store.
    pub async fn break_audit_writes(&self) -> sqlx::AnyConnection {
        let mut raw = self.raw().await;
        kura::store::testing::break_audit_writes(&mut raw).await;
        raw
    }

    /// A raw connection to the store (SQLite or PostgreSQL, as the test run selects).
    pub async fn raw(&self) -> sqlx::AnyConnection {
        kura::store::testing::raw(self.dir.path()).await
    }
}

/// The application state the server builds, over `store` and `plane`.
pub async fn state_over(store: Store, plane: Arc<FakePlane>, settings: HttpSettings) -> AppState {
    let policy = Arc::new(Policy::load(&store).await.unwrap());
    AppState {
        store,
        policy,
        data: plane,
        catalog: Arc::new(Catalog::embedded().unwrap()),
        settings: Arc::new(settings),
        // Many concurrent queries of one user are what some tests are about; the per-user
        // limit has its own test (`production::a_user_over_the_concurrent_query_limit_is_refused`).
        admission: Arc::new(kura::query::admission::Admission::new(64)),
        login_rate: Arc::default(),
    }
}

/// `POST path` with a JSON body to a router (the token as bearer, if any).
pub async fn router_post(
    router: &Router,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let (s, _, v) = call_router(router, Method::POST, path, token, Some(body), &[]).await;
    (s, v)
}

/// Log `user` in to a router with the fixture password: the session token.
pub async fn router_login(router: &Router, user: &str) -> String {
    let body = json!({"username": user, "password": PASSWORD});
    let v = router_post(router, "/api/v1/session", None, body)
        .await
        .expect_status(StatusCode::OK);
    v["token"].as_str().unwrap().to_string()
}

/// `POST /session` over a real connection with the fixture password.
pub async fn login_over(
    client: &reqwest::Client,
    base: &str,
    user: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    client
        .post(format!("{base}/api/v1/session"))
        .json(&json!({"username": user, "password": PASSWORD}))
        .send()
        .await
}

/// The session token of a successful login response.
pub async fn token_of(r: reqwest::Response) -> String {
    r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `s` without the random ids kura puts in messages (`r_…`, `q_…`, `req_…` followed by
/// hex digits), so a test looking for a leaked number is not fooled by an id that
/// happens to contain its digits.
pub fn without_ids(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        let at_id = ["req_", "r_", "q_"].iter().find_map(|p| {
            let after = rest.strip_prefix(p)?;
            let n = after.bytes().take_while(u8::is_ascii_hexdigit).count();
            let boundary = out
                .chars()
                .last()
                .is_none_or(|c| !c.is_ascii_alphanumeric());
            (n >= 8 && boundary).then_some(p.len() + n)
        });
        match at_id {
            Some(len) => {
                out.push_str("<id>");
                rest = &rest[len..];
            }
            None => {
                let c = rest.chars().next().unwrap();
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

#[test]
fn ids_are_taken_out_and_numbers_stay() {
    assert_eq!(
        without_ids("412 patients (ref r_88cd442f41242907), q_0123456789abcdef"),
        "412 patients (ref <id>), <id>"
    );
    assert_eq!(without_ids("bar_1234567890"), "bar_1234567890");
}
