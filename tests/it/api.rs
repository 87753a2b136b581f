//! In-process API tests (router `oneshot`): every endpoint and error code of the control
//! plane, the audit chain's tamper detection, and "no audit, no answer".
//!
//! The data plane is the test double of `support::plane`, so these tests pin what the
//! control plane guarantees whatever the query core computes; the e2e test runs the
//! real one.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use kura::policy::workflow::fiscal_year_end;
use kura::privacy::result::DisclosureMode;
use kura::store::model::Term;

use crate::support::fixtures::{PASSWORD, full_form, password_hash, today};
use crate::support::http::{H, Reply, call_router, code, error_fields, set_cookies};

/// The ids of a list of objects (applications, notebooks ...), in order.
fn ids(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|a| a[key].as_str().unwrap().to_string())
        .collect()
}

// ------------------------------------------------------------------ sessions

#[tokio::test]
async fn login_returns_token_and_roles_and_me_lists_usable_applications() {
    let h = H::new().await;
    let v = h
        .session("researcher1", PASSWORD)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        v["user"],
        json!({"username": "researcher1", "roles": ["researcher"]})
    );
    let token = v["token"].as_str().unwrap();
    assert_eq!(token.len(), 64);
    let me = h
        .get("/api/v1/me", token)
        .await
        .expect_status(StatusCode::OK);
    // A-NOPLEDGE is not usable until the pledge; A-OLD is not named.
    assert_eq!(ids(&me["applications"], "id"), vec!["A-1", "A-DP"]);
    let dp = &me["applications"][1];
    assert_eq!(dp["mode"], "dp");
    assert_eq!(dp["epsilon_remaining"], json!(1.0));

    let pms = h.login("pms1").await;
    let (_, me) = h.get("/api/v1/me", &pms).await;
    assert_eq!(me["applications"][0]["id"], "PMS-M01");
}

#[tokio::test]
async fn failed_login_does_not_reveal_whether_the_account_exists() {
    let h = H::new().await;
    let (s1, v1) = h.session("researcher1", "wrong").await;
    let (s2, v2) = h.session("nobody", "wrong").await;
    assert_eq!(
        (s1, s2),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(code(&v1), "invalid_credentials");
    assert_eq!(v1["error"]["message"], v2["error"]["message"]);
    // Unknown names lock exactly like real ones.
    for name in ["researcher2", "ghost"] {
        for _ in 0..5 {
            let (s, _) = h.session(name, "nope").await;
            assert_eq!(s, StatusCode::UNAUTHORIZED);
        }
        let (s, v) = h.session(name, PASSWORD).await;
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
        h.session("researcher2", "x").await;
    }
    let (s, _) = h.session("researcher2", PASSWORD).await;
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
    let (s, v) = h.get("/api/v1/me", &token).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthenticated"),
        "disabling revokes sessions"
    );
    h.session("researcher3", PASSWORD)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
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
    h.get("/api/v1/me", "0000")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let token = h.login("researcher1").await;
    let (s, _) = h.delete("/api/v1/session", &token).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.get("/api/v1/me", &token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "logout revokes the token");
}

#[tokio::test]
async fn cookie_sessions_are_httponly_strict_and_need_csrf_for_changes() {
    let h = H::new().await;
    let login = json!({"username": "researcher1", "password": PASSWORD});
    let (s, headers, v) = call_router(
        &h.router,
        Method::POST,
        "/api/v1/session",
        None,
        Some(login),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let cookies = set_cookies(&headers);
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
    let with_cookie = [("cookie", cookie.as_str())];
    let (s, _, _) = call_router(
        &h.router,
        Method::GET,
        "/api/v1/me",
        None,
        None,
        &with_cookie,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // A state change without the CSRF header is refused; with it, it passes.
    let body = json!({"application": "A-1", "title": "nb", "cells": []});
    for (csrf_header, want) in [
        (None, StatusCode::FORBIDDEN),
        (Some("f00"), StatusCode::FORBIDDEN),
        (Some(csrf), StatusCode::CREATED),
    ] {
        let mut headers = vec![("cookie", cookie.as_str())];
        headers.extend(csrf_header.map(|c| ("x-csrf-token", c)));
        let notebook = Some(body.clone());
        let (s, _, v) = call_router(
            &h.router,
            Method::POST,
            "/api/v1/notebooks",
            None,
            notebook,
            &headers,
        )
        .await;
        if want == StatusCode::CREATED {
            assert_eq!(s, want);
        } else {
            assert_eq!((s, code(&v)), (want, "csrf_failed"));
        }
    }
}

// ------------------------------------------------------------------- queries

#[tokio::test]
async fn named_researcher_gets_a_result_and_the_query_is_audited() {
    let (h, t) = H::with_login("researcher1").await;
    let sql = "SELECT prefecture_code, count(*) AS n FROM patient GROUP BY 1";
    let v = h.query(&t, "A-1", sql).await.expect_status(StatusCode::OK);
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
    let (_, hist) = h.get("/api/v1/queries?application=A-1", &t).await;
    assert_eq!(hist[0]["query_id"], v["query_id"]);
}

#[tokio::test]
async fn each_regulation_rule_has_its_code_over_http() {
    let (h, r1) = H::with_login("researcher1").await;
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
    h.query(&r1, "A-1", "SELECT OUT_OF_SCOPE")
        .await
        .expect_error(StatusCode::FORBIDDEN, "out_of_scope");
    // Every refusal was audited with its code.
    let denied: Vec<String> = h
        .denied_rows("query.run")
        .await
        .iter()
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
    let (h, r1) = H::with_login("researcher1").await;
    let rev = h.login("reviewer1").await;
    let revoke = "/api/v1/applications/A-1/revoke";
    assert_eq!(h.query(&r1, "A-1", "SELECT 1").await.0, StatusCode::OK);
    let reason = json!({"reason": "breach of 要綱 第3章 6"});
    let v = h
        .post(revoke, &rev, reason)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["status"], "revoked");
    h.query(&r1, "A-1", "SELECT 1")
        .await
        .expect_error(StatusCode::FORBIDDEN, "revoked");
    h.post(revoke, &rev, json!({"reason": "again"}))
        .await
        .expect_error(StatusCode::CONFLICT, "invalid_transition");
}

#[tokio::test]
async fn execution_errors_are_generic_and_the_detail_is_audited_and_counted() {
    let (h, t) = H::with_login("researcher1").await;
    for i in 1..=2 {
        let v = h
            .query(&t, "A-1", "SELECT FAIL_EXEC")
            .await
            .expect_error(StatusCode::INTERNAL_SERVER_ERROR, "execution_error");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(!msg.contains("1987"), "a data value leaked: {msg}");
        let ev = &h.audit_rows("query.run").await[0];
        assert_eq!(ev["reference"], v["error"]["ref"]);
        // Attack (issue 11, item 7): the engine's text carries a data value (the control:
        // the raw error the plane returned contains it); the audit detail, read by
        // reviewers and auditors, keeps only the error's kind.
        let detail = ev["detail"]["internal_detail"].as_str().unwrap();
        assert!(
            !detail.contains("1987"),
            "a data value reached the audit log: {detail}"
        );
        assert_eq!(detail, "execution error: execution");
        let raw = crate::support::plane::exec_failure()
            .raw_engine_text()
            .unwrap();
        assert!(raw.contains("1987-03-02"), "control: {raw}");
        assert_eq!(ev["detail"]["user_execution_errors"], i);
    }
    let user = h.state.store.user("researcher1").await.unwrap().unwrap();
    assert_eq!(user.execution_errors, 2);
}

#[tokio::test]
async fn no_audit_no_answer() {
    let (h, t) = H::with_login("researcher1").await;
    // Make the store fail every audit write, as a full disk or a broken database would.
    let mut raw = h.break_audit_writes().await;
    let sql = "SELECT prefecture_code, count(*) FROM patient GROUP BY 1";
    let v = h
        .query(&t, "A-1", sql)
        .await
        .expect_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
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
    kura::store::testing::heal_audit_writes(&mut raw).await;
    let history = h.state.store.queries(Some("A-1"), None, 10).await.unwrap();
    assert!(history.is_empty());
}

#[tokio::test]
async fn dp_budget_is_charged_and_exhaustion_is_409() {
    let (h, t) = H::with_login("researcher1").await;
    let q = |sql: &str, eps: f64| json!({"application": "A-DP", "sql": sql, "epsilon": eps});
    let run = |body: Value| h.post("/api/v1/query", &t, body);
    run(q("SELECT count(*) FROM patient", 0.6))
        .await
        .expect_status(StatusCode::OK);
    // A different question (an identical one would be re-released from the cache).
    let v = run(q("SELECT count(*) FROM patient WHERE sex = '2'", 0.6))
        .await
        .expect_error(StatusCode::CONFLICT, "budget_exhausted");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("0.400"),
        "{v}"
    );
    let (_, me) = h.get("/api/v1/me", &t).await;
    let rem = me["applications"][1]["epsilon_remaining"].as_f64().unwrap();
    assert!((rem - 0.4).abs() < 1e-9, "{rem}");
    // Mode must match the approval; DP needs ε.
    run(json!({"application": "A-1", "sql": "SELECT 1", "mode": "dp", "epsilon": 0.1}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    run(json!({"application": "A-DP", "sql": "SELECT 1"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn catalog_export_and_bad_bodies() {
    let (h, r1) = H::with_login("researcher1").await;
    let r2 = h.login("researcher2").await;
    let catalog = "/api/v1/catalog?application=A-1";
    let v = h.get(catalog, &r1).await.expect_status(StatusCode::OK);
    let tables = ids(&v["tables"], "name");
    assert!(tables.iter().any(|t| t == "als_visit") && tables.iter().any(|t| t == "nanbyo_survey"));
    assert!(
        !tables.iter().any(|t| t == "adverse_event"),
        "regen tables are outside A-1's datasets"
    );
    h.get(catalog, &r2)
        .await
        .expect_error(StatusCode::FORBIDDEN, "not_named_user");
    let export = json!({"application": "A-1", "what": "extract"});
    h.post("/api/v1/export", &r1, export)
        .await
        .expect_error(StatusCode::FORBIDDEN, "export_not_permitted");
    assert_eq!(
        h.audit_rows("export.attempt").await[0]["code"],
        "export_not_permitted"
    );
    h.post("/api/v1/query", &r1, json!({"sql": 1}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    h.get("/api/v1/nope", &r1)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
}

// ---------------------------------------------------------------- workflow

/// The paths of one application's workflow endpoints.
struct AppPaths(String);

impl AppPaths {
    fn of(id: &str) -> AppPaths {
        AppPaths(format!("/api/v1/applications/{id}"))
    }
    fn at(&self, tail: &str) -> String {
        format!("{}{tail}", self.0)
    }
}

#[tokio::test]
async fn full_application_workflow() {
    let (h, r1) = H::with_login("researcher1").await;
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
    let draft = serde_json::to_value(&form).unwrap();
    let app = h
        .post("/api/v1/applications", &r1, draft)
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(app["status"], "draft");
    let id = app["id"].as_str().unwrap().to_string();
    let p = AppPaths::of(&id);
    let (submit, decision) = (p.at("/submit"), p.at("/decision"));
    let v = h
        .post_empty(&submit, &r1)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_application");
    let fields = error_fields(&v);
    assert!(
        ["purpose", "diseases", "term"]
            .iter()
            .all(|f| fields.contains(f)),
        "{fields:?}"
    );

    // Only the applicant edits.
    let good = serde_json::to_value(full_form(&["researcher1", "researcher2"])).unwrap();
    h.put(&p.0, &r2, good.clone())
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    h.put(&p.0, &r1, good.clone())
        .await
        .expect_status(StatusCode::OK);
    h.post_empty(&submit, &r1)
        .await
        .expect_status(StatusCode::OK);

    // Reviewer inbox.
    let (_, inbox) = h.get("/api/v1/applications?status=submitted", &rev1).await;
    assert!(ids(&inbox, "id").contains(&id));
    // Researchers may not decide; correction needs a reason.
    h.post(&decision, &r2, json!({"decision": "approve"}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    h.post(&decision, &rev1, json!({"decision": "request_correction"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_application");
    let correction = json!({"decision": "request_correction", "reason": "clarify methods"});
    let v = h
        .post(&decision, &rev1, correction)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["status"], "correction_requested");
    h.put(&p.0, &r1, good.clone()).await;
    h.post_empty(&submit, &r1)
        .await
        .expect_status(StatusCode::OK);

    // Approval validates the term and k; then builds the extract.
    let bad_term =
        json!({"decision": "approve", "term": {"start": "2026-11-01", "end": "2027-04-30"}});
    let v = h
        .post(&decision, &rev1, bad_term)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_application");
    let message = v["error"]["fields"][0]["message"].as_str().unwrap();
    assert!(message.contains("2027-03-31"));
    h.post(&decision, &rev1, json!({"decision": "approve", "k": 3}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_application");
    let v = h
        .post(&decision, &rev1, json!({"decision": "approve", "k": 10}))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["status"], "approved");
    assert_eq!(v["approval"]["k"], 10);
    assert_eq!(v["approval"]["scope"]["diseases"], json!([2]));

    // Pledge before the first query.
    h.query(&r2, &id, "SELECT 1")
        .await
        .expect_error(StatusCode::FORBIDDEN, "pledge_required");
    let (s, _) = h.post_empty(&p.at("/pledge"), &r2).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    h.query(&r2, &id, "SELECT 1")
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(h.plane.seen.lock().unwrap().last().unwrap().threshold, 10);

    // Corrective recommendation; change application keeps the approval in force until decided.
    let recommendation = json!({"text": "tighten access logs"});
    let (s, _) = h
        .post(&p.at("/recommendations"), &rev1, recommendation)
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let changed = serde_json::to_value(full_form(&["researcher1"])).unwrap();
    let v = h
        .post(&p.at("/change"), &r1, changed)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["status"], "approved");
    assert_eq!(
        h.query(&r2, &id, "SELECT 1").await.0,
        StatusCode::OK,
        "approval stays in force during the change"
    );
    let v = h
        .post(&decision, &rev1, json!({"decision": "approve"}))
        .await
        .expect_status(StatusCode::OK);
    assert!(v["pending_change"].is_null());
    let (s, v) = h.query(&r2, &id, "SELECT 1").await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "not_named_user"),
        "removed by the approved change"
    );

    // Detail with history; usage report for applicant and auditor, not for others.
    let d = h.get(&p.0, &aud).await.expect_status(StatusCode::OK);
    assert_eq!(
        ids(&d["history"], "action"),
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
    let report = p.at("/usage-report");
    let rep = h.get(&report, &aud).await.expect_status(StatusCode::OK);
    assert_eq!(rep["queries_ok"], 2);
    assert_eq!(rep["queries_denied"], 2);
    assert_eq!(rep["by_user"]["researcher2"]["ok"], 2);
    h.get(&report, &r1).await.expect_status(StatusCode::OK);
    let (s, v) = h.get(&report, &r2).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "no longer named, so not visible: {v}"
    );

    // A reviewer never decides an application on which they are named (A-1 names reviewer2).
    let v = h
        .post(
            "/api/v1/applications/A-1/revoke",
            &rev2,
            json!({"reason": "x"}),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("named user"));
}

#[tokio::test]
async fn rejection_is_final_and_list_is_scoped_to_the_caller() {
    let (h, r1) = H::with_login("researcher1").await;
    let r3 = h.login("researcher3").await;
    let rev = h.login("reviewer1").await;
    let form = serde_json::to_value(full_form(&["researcher1"])).unwrap();
    let (_, app) = h.post("/api/v1/applications", &r1, form).await;
    let p = AppPaths::of(app["id"].as_str().unwrap());
    h.post_empty(&p.at("/submit"), &r1).await;
    let reject = json!({"decision": "reject", "reason": "not necessary"});
    let v = h
        .post(&p.at("/decision"), &rev, reject)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["status"], "rejected");
    h.post_empty(&p.at("/submit"), &r1)
        .await
        .expect_error(StatusCode::CONFLICT, "invalid_transition");
    // researcher3 sees only A-OLD, which reads as expired.
    let (_, list) = h.get("/api/v1/applications", &r3).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], "A-OLD");
    assert_eq!(list[0]["status"], "expired");
    let (s, _) = h.get(&p.0, &r3).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    h.get("/api/v1/applications?status=bogus", &r3)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
}

// ------------------------------------------------------------------- audit

#[tokio::test]
async fn audit_events_filter_paginate_and_verify() {
    let (h, r1) = H::with_login("researcher1").await;
    let aud = h.login("auditor1").await;
    h.query(&r1, "A-1", "SELECT 1").await;
    let v = h
        .get("/api/v1/audit/events?user=researcher1&action=query", &aud)
        .await
        .expect_status(StatusCode::OK);
    let evs = v.as_array().unwrap();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["event"]["action"], "query.run");
    let (_, p0) = h.get("/api/v1/audit/events?page_size=2&page=0", &aud).await;
    assert_eq!(p0.as_array().unwrap().len(), 2);
    let last = p0[1]["seq"].as_i64().unwrap();
    let next = format!("/api/v1/audit/events?page_size=2&before={last}");
    let (_, p1) = h.get(&next, &aud).await;
    assert_eq!(
        p1[0]["seq"].as_i64().unwrap(),
        last - 1,
        "the cursor continues exactly where the page ended"
    );
    let v = h
        .get("/api/v1/audit/verify", &aud)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["ok"], true);
    assert!(v["events"].as_i64().unwrap() > 10);
    assert_eq!(v["head"].as_str().unwrap().len(), 64);
    h.get("/api/v1/audit/verify", &r1)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
}

async fn tampered(sql: &[&str]) -> Value {
    let (h, aud) = H::with_login("auditor1").await;
    let mut raw = h.raw().await;
    // An attacker with raw database access first removes the append-only triggers.
    kura::store::testing::allow_audit_tampering(&mut raw).await;
    for s in sql {
        sqlx::query(s).execute(&mut raw).await.unwrap();
    }
    h.get("/api/v1/audit/verify", &aud)
        .await
        .expect_status(StatusCode::OK)
}

/// Tamper with the audit log and expect verification to name the first broken row.
async fn assert_tamper_detected(sql: &[&str], broken_at: i64) {
    let v = tampered(sql).await;
    assert_eq!(
        (v["ok"].clone(), v["broken_at"].clone()),
        (json!(false), json!(broken_at)),
        "{v}"
    );
}

#[tokio::test]
async fn tamper_edit_is_detected() {
    let edit =
        "UPDATE audit_log SET event = replace(event, 'researcher3', 'researcher9') WHERE seq = 3";
    assert_tamper_detected(&[edit], 3).await;
}

#[tokio::test]
async fn tamper_edit_keeping_canonical_form_is_detected() {
    let edit = "UPDATE audit_log SET at = '2020-01-01T00:00:00.000000Z' WHERE seq = 5";
    assert_tamper_detected(&[edit], 5).await;
}

#[tokio::test]
async fn tamper_delete_is_detected() {
    assert_tamper_detected(&["DELETE FROM audit_log WHERE seq = 4"], 5).await;
}

#[tokio::test]
async fn tamper_reorder_is_detected() {
    // Swap the contents of rows 2 and 3 (keeping their seq numbers).
    let swap = [
        "UPDATE audit_log SET seq = -2 WHERE seq = 2",
        "UPDATE audit_log SET seq = 2 WHERE seq = 3",
        "UPDATE audit_log SET seq = 3 WHERE seq = -2",
    ];
    assert_tamper_detected(&swap, 2).await;
}

#[tokio::test]
async fn tamper_rebuilt_chain_without_key_is_detected() {
    // Delete a row and renumber the rest so seq has no gap: prev links break instead.
    let renumber = [
        "DELETE FROM audit_log WHERE seq = 2",
        // Through negative numbers: unique keys are checked row by row.
        "UPDATE audit_log SET seq = -seq WHERE seq > 2",
        "UPDATE audit_log SET seq = -seq - 1 WHERE seq < 0",
    ];
    assert_tamper_detected(&renumber, 2).await;
}

// ------------------------------------------------------ notebooks, releases

#[tokio::test]
async fn notebooks_crud_is_per_owner_and_releases_need_own_successful_query() {
    let (h, r1) = H::with_login("researcher1").await;
    let r2 = h.login("researcher2").await;
    let notebook = json!({"application": "A-1", "title": "ALS", "cells": [{"kind": "sql", "source": "SELECT 1"}]});
    let nb = h
        .post("/api/v1/notebooks", &r1, notebook)
        .await
        .expect_status(StatusCode::CREATED);
    let path = format!("/api/v1/notebooks/{}", nb["id"].as_str().unwrap());
    let v = h
        .put(&path, &r1, json!({"title": "ALS v2"}))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["title"], "ALS v2");
    assert_eq!(v["cells"][0]["source"], "SELECT 1");
    let (_, list) = h.get("/api/v1/notebooks?application=A-1", &r1).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (s, _) = h.get(&path, &r2).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "another user's notebook is invisible"
    );
    let other = json!({"application": "A-1", "title": "x"});
    h.post("/api/v1/notebooks", &r2, other)
        .await
        .expect_error(StatusCode::FORBIDDEN, "not_named_user");
    h.put(&path, &r1, json!({"cells": "nope"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    let (s, _) = h.delete(&path, &r1).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.get(&path, &r1).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (_, q) = h.query(&r1, "A-1", "SELECT 1").await;
    let forged = json!({"application": "A-1", "query_id": "q_forged", "justification": "paper"});
    h.post("/api/v1/releases", &r1, forged)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    let qid = q["query_id"].as_str().unwrap();
    let own = json!({"application": "A-1", "query_id": qid, "justification": "paper in J Neurol"});
    let v = h
        .post("/api/v1/releases", &r1, own)
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(v["status"], "pending");
    assert_eq!(h.audit_rows("release.request").await.len(), 1);
}

#[tokio::test]
async fn reviewers_decide_release_requests_once_with_a_reason_and_never_their_own() {
    let (h, r1) = H::with_login("researcher1").await;
    let (_, q) = h.query(&r1, "A-1", "SELECT 1").await;
    let qid = q["query_id"].as_str().unwrap();
    let own = json!({"application": "A-1", "query_id": qid, "justification": "paper in J Neurol"});
    let rel = h
        .post("/api/v1/releases", &r1, own)
        .await
        .expect_status(StatusCode::CREATED);
    let path = format!("/api/v1/releases/{}/decision", rel["id"].as_str().unwrap());
    let approve = json!({"decision": "approve", "reason": "aggregate counts only, all cells >= k"});

    // Not a reviewer: refused by the enforcement point.
    h.post(&path, &r1, approve.clone())
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    // reviewer2 is a named user on A-1: conflict of interest, audited.
    let rv2 = h.login("reviewer2").await;
    h.post(&path, &rv2, approve.clone())
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let denied = h.audit_rows("release.decide").await;
    assert!(
        denied
            .iter()
            .any(|e| e["actor"] == "reviewer2" && e["outcome"] == "denied"),
        "{denied:?}"
    );

    let rv1 = h.login("reviewer1").await;
    for bad in [
        json!({"decision": "approve", "reason": "   "}),
        json!({"decision": "maybe", "reason": "x"}),
    ] {
        h.post(&path, &rv1, bad)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    assert!(h.audit_rows("release.approve").await.is_empty());

    let v = h
        .post(&path, &rv1, approve.clone())
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["release"]["status"], "approved");
    assert_eq!(v["decided_by"], "reviewer1");
    let done = h.audit_rows("release.approve").await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["actor"], "reviewer1");
    assert_eq!(done[0]["detail"]["reason"], approve["reason"]);
    assert_eq!(done[0]["detail"]["requester"], "researcher1");

    // Decided once: a second decision is a conflict and changes nothing.
    let again = json!({"decision": "reject", "reason": "changed my mind"});
    h.post(&path, &rv1, again)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");
    assert!(h.audit_rows("release.reject").await.is_empty());

    h.post("/api/v1/releases/rel_unknown/decision", &rv1, approve)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let aud = h.login("auditor1").await;
    let (_, v) = h.get("/api/v1/audit/verify", &aud).await;
    assert_eq!(v["ok"], true, "{v}");
}

// ------------------------------------------------------------ service shape

#[tokio::test]
async fn security_headers_request_id_and_console_fallback() {
    let h = H::new().await;
    let (s, headers, v) = call_router(&h.router, Method::GET, "/", None, None, &[]).await;
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
    let (h, t) = H::with_login("researcher1").await;
    let big = "x".repeat(2 << 20);
    let (s, v) = h.query(&t, "A-1", &big).await;
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
