//! Place of use (issue 16 §1, seed 002 要綱 第3章6): an approval names the networks of
//! the research facility, and every request of that application is checked against the
//! address it came from — over real sockets on loopback (127.0.0.2 inside, 127.0.0.4
//! outside, 127.0.0.3 a trusted reverse proxy).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::Client;
use serde_json::{Value, json};

use kura::config::HttpSettings;
use kura::policy::place::{Origin, parse_network};
use kura::query::QueryRequest;

use crate::support::fixtures::{self, PASSWORD};
use crate::support::http::{H, Reply, audit_rows, state_over};
use crate::support::plane::FakePlane;

const INSIDE: &str = "127.0.0.2";
const PROXY: &str = "127.0.0.3";
const OUTSIDE: &str = "127.0.0.4";
const SQL: &str = "SELECT sex, count(DISTINCT pid) AS n FROM patient GROUP BY sex";

/// A client whose connections leave from `local` (a loopback address of this machine).
fn client_from(local: &str) -> Client {
    Client::builder()
        .local_address(Some(local.parse::<IpAddr>().unwrap()))
        .build()
        .unwrap()
}

struct Served {
    base: String,
    state: kura::http::AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// kura over plain HTTP on 127.0.0.1 (the listener of `kura serve`), trusting PROXY.
async fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let store =
        fixtures::store_with_users(dir.path(), &["researcher1", "reviewer1", "researcher2"]).await;
    let plane = Arc::new(FakePlane::new(dir.path().join("extracts")));
    let settings = HttpSettings {
        trusted_proxies: vec![parse_network(PROXY).unwrap()],
        ..HttpSettings::default()
    };
    let state = state_over(store, plane, settings).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    tokio::spawn(async move {
        kura::http::serve::serve_plain(listener, st, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Served {
        base: format!("http://127.0.0.1:{}", addr.port()),
        state,
        stop: Some(tx),
        _dir: dir,
    }
}

async fn send(
    c: &Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
    forwarded: Option<&str>,
) -> (u16, Value) {
    let mut req = c.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn login(c: &Client, base: &str, user: &str) -> String {
    let r = c
        .post(format!("{base}/api/v1/session"))
        .json(&json!({"username": user, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "login {user}");
    r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// researcher1 applies with the facility's network suggested on the form, reviewer1
/// approves (the networks default to the form's), researcher1 pledges. The id.
async fn approved_with_networks(s: &Served, c: &Client) -> String {
    let r1 = login(c, &s.base, "researcher1").await;
    let mut form = serde_json::to_value(fixtures::full_form(&["researcher1"])).unwrap();
    form["networks"] = json!([format!("{INSIDE}/32")]);
    let post = reqwest::Method::POST;
    let (st, app) = send(
        c,
        post.clone(),
        format!("{}/api/v1/applications", s.base),
        &r1,
        Some(form),
        None,
    )
    .await;
    assert_eq!(st, 201, "{app}");
    let id = app["id"].as_str().unwrap().to_string();
    let (st, v) = send(
        c,
        post.clone(),
        format!("{}/api/v1/applications/{id}/submit", s.base),
        &r1,
        None,
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let rev = login(c, &s.base, "reviewer1").await;
    let decide = json!({"decision": "approve"});
    let (st, v) = send(
        c,
        post.clone(),
        format!("{}/api/v1/applications/{id}/decision", s.base),
        &rev,
        Some(decide),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["approval"]["networks"], json!(["127.0.0.2/32"]), "{v}");
    let (st, v) = send(
        c,
        post,
        format!("{}/api/v1/applications/{id}/pledge", s.base),
        &r1,
        None,
        None,
    )
    .await;
    assert_eq!(st, 204, "{v}");
    id
}

/// Attack: the named user queries from outside the approved networks, directly, with a
/// forged `X-Forwarded-For`, or with an `origin` field in the JSON. Control: the same
/// request from inside, and through the trusted proxy forwarding an inside address.
#[tokio::test(flavor = "multi_thread")]
async fn requests_from_outside_the_place_of_use_are_refused() {
    let s = serve().await;
    let inside = client_from(INSIDE);
    let outside = client_from(OUTSIDE);
    let proxy = client_from(PROXY);
    let id = approved_with_networks(&s, &inside).await;
    let query = format!("{}/api/v1/query", s.base);
    let body = json!({"application": id, "sql": SQL});
    let post = reqwest::Method::POST;
    let token_in = login(&inside, &s.base, "researcher1").await;
    let token_out = login(&outside, &s.base, "researcher1").await;

    let (st, v) = send(
        &inside,
        post.clone(),
        query.clone(),
        &token_in,
        Some(body.clone()),
        None,
    )
    .await;
    assert_eq!(st, 200, "inside: {v}");

    let (st, v) = send(
        &outside,
        post.clone(),
        query.clone(),
        &token_out,
        Some(body.clone()),
        None,
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (403, Some("outside_place_of_use")),
        "{v}"
    );
    assert!(v["error"]["message"].as_str().unwrap().contains(OUTSIDE));
    assert!(v["error"]["message"].as_str().unwrap().contains("使用場所"));

    // Attack: an untrusted peer claims an inside address.
    let (st, v) = send(
        &outside,
        post.clone(),
        query.clone(),
        &token_out,
        Some(body.clone()),
        Some(INSIDE),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (403, Some("outside_place_of_use")),
        "forged header: {v}"
    );
    let mut forged = body.clone();
    forged["origin"] = json!(INSIDE);
    let (st, _) = send(
        &outside,
        post.clone(),
        query.clone(),
        &token_out,
        Some(forged),
        None,
    )
    .await;
    assert_eq!(st, 403, "an origin in the JSON body is ignored");

    // Control: the trusted proxy forwarding an inside client is believed...
    let token_px = login(&proxy, &s.base, "researcher1").await;
    let (st, v) = send(
        &proxy,
        post.clone(),
        query.clone(),
        &token_px,
        Some(body.clone()),
        Some(INSIDE),
    )
    .await;
    assert_eq!(st, 200, "via the trusted proxy: {v}");
    // ...from the right: a client-written left part does not count, the hop the proxy saw does.
    let chain = format!("{INSIDE}, {OUTSIDE}");
    let (st, _) = send(
        &proxy,
        post.clone(),
        query.clone(),
        &token_px,
        Some(body.clone()),
        Some(&chain),
    )
    .await;
    assert_eq!(st, 403, "rightmost untrusted hop is outside");
    // The proxy forwarding nothing: unknown origin, refused.
    let (st, _) = send(
        &proxy,
        post.clone(),
        query.clone(),
        &token_px,
        Some(body.clone()),
        None,
    )
    .await;
    assert_eq!(st, 403, "a proxy's own address is not a client's");

    // Every action on the application passes the same check.
    let get = reqwest::Method::GET;
    let (st, v) = send(
        &outside,
        get.clone(),
        format!("{}/api/v1/catalog?application={id}", s.base),
        &token_out,
        None,
        None,
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (403, Some("outside_place_of_use")),
        "{v}"
    );
    let nb = json!({"application": id, "title": "t", "cells": []});
    let (st, v) = send(
        &outside,
        post.clone(),
        format!("{}/api/v1/notebooks", s.base),
        &token_out,
        Some(nb.clone()),
        None,
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (403, Some("outside_place_of_use")),
        "{v}"
    );
    let (st, _) = send(
        &inside,
        post,
        format!("{}/api/v1/notebooks", s.base),
        &token_in,
        Some(nb),
        None,
    )
    .await;
    assert_eq!(st, 201, "control: a notebook from inside");
    let listed = |v: &Value| {
        v["applications"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == id.as_str())
    };
    let (_, me_out) = send(
        &outside,
        get.clone(),
        format!("{}/api/v1/me", s.base),
        &token_out,
        None,
        None,
    )
    .await;
    let (_, me_in) = send(
        &inside,
        get,
        format!("{}/api/v1/me", s.base),
        &token_in,
        None,
        None,
    )
    .await;
    assert!(
        !listed(&me_out) && listed(&me_in),
        "usable only from inside"
    );

    // Each refusal is audited with the address it came from.
    let refused: Vec<Value> = audit_rows(&s.state.store, "query.run")
        .await
        .into_iter()
        .filter(|e| e["code"] == "outside_place_of_use")
        .collect();
    assert_eq!(refused.len(), 5, "{refused:#?}");
    let origins: Vec<&Value> = refused
        .iter()
        .map(|e| &e["detail"]["detail"]["origin"])
        .collect();
    assert!(origins.contains(&&json!(OUTSIDE)));
    assert!(
        origins.contains(&&Value::Null),
        "the unknown origin is recorded as such"
    );
}

/// A protocol that does not know its caller's address cannot use a restricted approval:
/// the gateway (the one entry every protocol calls) refuses an unknown origin. Control:
/// an approval without a network restriction answers the same call.
#[tokio::test]
async fn an_unknown_origin_is_refused_by_the_policy_step_itself() {
    let (h, r1) = H::with_login("researcher1").await;
    // A-1 has no network restriction: in-process calls (no peer address) answer.
    h.query(&r1, "A-1", SQL)
        .await
        .expect_status(axum::http::StatusCode::OK);
    // Restrict A-1 to the inside network, as a change approval would.
    let mut app = h.state.store.application("A-1").await.unwrap().unwrap();
    let before = app.updated_at;
    app.approval.as_mut().unwrap().networks = Some(vec![format!("{INSIDE}/32")]);
    let ev = kura::audit::AuditEvent::ok(
        "reviewer1",
        "application.change_approve",
        Some("A-1"),
        json!({}),
    );
    h.state
        .store
        .transition(&app, before, app.status, "change_approve", None, &ev)
        .await
        .unwrap();
    h.query(&r1, "A-1", SQL)
        .await
        .expect_error(axum::http::StatusCode::FORBIDDEN, "outside_place_of_use");
    let user = h.state.store.user("researcher1").await.unwrap().unwrap();
    let today = fixtures::today();
    let gw = h.state.gateway();
    let ask = |origin: Origin| {
        let mut req: QueryRequest =
            serde_json::from_value(json!({"application": "A-1", "sql": SQL})).unwrap();
        req.origin = origin;
        req
    };
    let refused = gw
        .run(&user, &ask(Origin::UNKNOWN), today)
        .await
        .unwrap_err();
    assert_eq!(refused.cause.code(), "outside_place_of_use");
    let outside = Origin(Some(OUTSIDE.parse().unwrap()));
    let refused = gw.run(&user, &ask(outside), today).await.unwrap_err();
    assert_eq!(refused.cause.code(), "outside_place_of_use");
    let inside = Origin(Some(INSIDE.parse().unwrap()));
    gw.run(&user, &ask(inside), today)
        .await
        .expect("inside answers");
}

/// The reviewer's networks are validated field by field; a bad block is refused with its
/// index, and an empty list admits nobody.
#[tokio::test]
async fn approval_networks_are_validated_and_an_empty_list_admits_nobody() {
    let (h, r1) = H::with_login("researcher1").await;
    let rev = h.login("reviewer1").await;
    let mut form = serde_json::to_value(fixtures::full_form(&["researcher1"])).unwrap();
    form["networks"] = json!([]);
    let app = h
        .post("/api/v1/applications", &r1, form)
        .await
        .expect_status(axum::http::StatusCode::CREATED);
    let id = app["id"].as_str().unwrap();
    h.post_empty(&format!("/api/v1/applications/{id}/submit"), &r1)
        .await
        .expect_status(axum::http::StatusCode::OK);
    let bad = json!({"decision": "approve", "networks": ["10.0.0.0/8", "10.0.0.0/33", "nowhere"]});
    let v = h
        .post(&format!("/api/v1/applications/{id}/decision"), &rev, bad)
        .await
        .expect_error(axum::http::StatusCode::BAD_REQUEST, "invalid_application");
    let fields = crate::support::http::error_fields(&v);
    assert_eq!(fields, ["networks[1]", "networks[2]"]);
    let none = json!({"decision": "approve", "networks": []});
    h.post(&format!("/api/v1/applications/{id}/decision"), &rev, none)
        .await
        .expect_status(axum::http::StatusCode::OK);
    h.post_empty(&format!("/api/v1/applications/{id}/pledge"), &r1)
        .await
        .expect_status(axum::http::StatusCode::NO_CONTENT);
    h.query(&r1, id, SQL)
        .await
        .expect_error(axum::http::StatusCode::FORBIDDEN, "outside_place_of_use");
}
