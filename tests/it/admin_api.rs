//! Operator endpoints and the console's server pieces (issue 17): users (add, disable,
//! reset, roles), extracts (status, rebuild, destroy), key fingerprints, the audit log's
//! search by reference and its audited CSV export, saved notebook outputs and their limits.
//! Each defence is attacked, with a control that shows the same request working where it
//! should.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::fixtures::PASSWORD;
use crate::support::http::{H, Reply, code, error_fields};

/// Every operator endpoint with a body that succeeds for admin1 on the fixtures.
fn operator_calls() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/api/v1/admin/users", None),
        (
            Method::POST,
            "/api/v1/admin/users",
            Some(json!({"username": "newcomer", "roles": ["researcher"]})),
        ),
        (
            Method::POST,
            "/api/v1/admin/users/researcher2/disable",
            None,
        ),
        (Method::POST, "/api/v1/admin/users/researcher2/enable", None),
        (
            Method::POST,
            "/api/v1/admin/users/researcher2/password",
            None,
        ),
        (
            Method::PUT,
            "/api/v1/admin/users/researcher2/roles",
            Some(json!({"roles": ["researcher"]})),
        ),
        (Method::GET, "/api/v1/admin/extracts", None),
        (Method::POST, "/api/v1/admin/extracts/A-1/rebuild", None),
        (
            Method::POST,
            "/api/v1/admin/extracts/A-NOPLEDGE/destroy",
            Some(json!({"reason": "test"})),
        ),
        (Method::GET, "/api/v1/admin/keys", None),
    ]
}

/// Attack: every other role calls every operator endpoint and is refused (403, audited);
/// without a session it is 401. Control: admin1 makes the same calls and they succeed.
#[tokio::test]
async fn only_the_operator_reaches_the_operator_endpoints() {
    let h = H::new().await;
    for user in ["researcher1", "reviewer1", "auditor1", "pms1"] {
        let token = h.login(user).await;
        for (m, path, body) in operator_calls() {
            let (s, v) = h.call(m.clone(), path, Some(&token), body.clone()).await;
            assert_eq!(
                (s, code(&v)),
                (StatusCode::FORBIDDEN, "forbidden"),
                "{user} {m} {path}: {v}"
            );
        }
        let denied: Vec<Value> = h
            .audit_rows("admin")
            .await
            .into_iter()
            .filter(|e| e["actor"] == user && e["outcome"] == "denied")
            .collect();
        assert!(
            denied.len() >= operator_calls().len(),
            "{user}'s attempts are audited"
        );
    }
    for (m, path, body) in operator_calls() {
        let (s, _) = h.call(m, path, None, body).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path} without a session");
    }
    // Control: the operator.
    let admin = h.login("admin1").await;
    for (m, path, body) in operator_calls() {
        let (s, v) = h.call(m.clone(), path, Some(&admin), body).await;
        assert!(s.is_success(), "admin1 {m} {path}: {s} {v}");
    }
}

#[tokio::test]
async fn a_new_account_gets_a_temporary_password_once_and_bad_input_names_the_field() {
    let (h, admin) = H::with_login("admin1").await;
    let v = h
        .post(
            "/api/v1/admin/users",
            &admin,
            json!({"username": "tanaka.h", "display_name": "田中 花子", "affiliation": "○○大学", "title": "助教", "roles": ["researcher"]}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    let temp = v["temporary_password"].as_str().unwrap().to_string();
    assert_eq!(temp.len(), 24);
    assert_eq!(v["user"]["roles"], json!(["researcher"]));
    h.session("tanaka.h", &temp)
        .await
        .expect_status(StatusCode::OK);
    let ev = &h.audit_rows("user.create").await[0];
    assert_eq!(ev["actor"], "admin1");
    assert_eq!(ev["detail"]["username"], "tanaka.h");
    assert!(
        !ev.to_string().contains(&temp),
        "the password is never logged"
    );
    // The same name again is a conflict, not a second account.
    h.post(
        "/api/v1/admin/users",
        &admin,
        json!({"username": "tanaka.h", "roles": ["researcher"]}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "user_exists");
    let long = "x".repeat(201);
    // Longer than any username: refused by the length limit of every request, naming it.
    let v = h
        .post(
            "/api/v1/admin/users",
            &admin,
            json!({"username": "a".repeat(65), "roles": ["researcher"]}),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "input_too_long");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`username`"),
        "{v}"
    );
    for (body, field) in [
        (
            json!({"username": "Tanaka", "roles": ["researcher"]}),
            "username",
        ),
        (
            json!({"username": "ok.name", "display_name": long, "roles": ["researcher"]}),
            "display_name",
        ),
        (
            json!({"username": "ok.name", "title": "a\u{7}b", "roles": ["researcher"]}),
            "title",
        ),
        (
            json!({"username": "ok.name", "roles": ["superuser"]}),
            "roles",
        ),
        (json!({"username": "ok.name", "roles": []}), "roles"),
        (
            json!({"username": "ok.name", "roles": ["pms"]}),
            "manufacturer",
        ),
        (
            json!({"username": "ok.name", "roles": ["researcher"], "manufacturer": "M01"}),
            "manufacturer",
        ),
    ] {
        let v = h
            .post("/api/v1/admin/users", &admin, body.clone())
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert!(error_fields(&v).contains(&field), "{body}: {v}");
        let msg = v["error"]["fields"][0]["message"].as_str().unwrap();
        assert!(
            msg.contains(" / ") && msg.chars().any(|c| c > '\u{3000}'),
            "bilingual: {msg}"
        );
    }
    assert!(
        h.state.store.user("ok.name").await.unwrap().is_none(),
        "nothing half-created"
    );
}

/// Attack: a disabled account keeps using its session. Defence: disabling revokes it.
/// Control: the same token worked before.
#[tokio::test]
async fn disabling_ends_sessions_and_logins_enabling_restores_them() {
    let h = H::new().await;
    let admin = h.login("admin1").await;
    let r2 = h.login("researcher2").await;
    h.get("/api/v1/me", &r2).await.expect_status(StatusCode::OK);
    let v = h
        .post_empty("/api/v1/admin/users/researcher2/disable", &admin)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["disabled"], true);
    h.get("/api/v1/me", &r2)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let (s, _) = h.session("researcher2", PASSWORD).await;
    assert_ne!(s, StatusCode::OK, "a disabled account cannot log in");
    h.post_empty("/api/v1/admin/users/researcher2/enable", &admin)
        .await
        .expect_status(StatusCode::OK);
    h.session("researcher2", PASSWORD)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        h.audit_rows("user.disable").await[0]["detail"]["username"],
        "researcher2"
    );
    h.post_empty("/api/v1/admin/users/nobody/disable", &admin)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_reset_password_replaces_the_old_one_and_ends_sessions() {
    let h = H::new().await;
    let admin = h.login("admin1").await;
    let r2 = h.login("researcher2").await;
    let v = h
        .post_empty("/api/v1/admin/users/researcher2/password", &admin)
        .await
        .expect_status(StatusCode::OK);
    let temp = v["temporary_password"].as_str().unwrap();
    h.get("/api/v1/me", &r2)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    h.session("researcher2", PASSWORD)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    h.session("researcher2", temp)
        .await
        .expect_status(StatusCode::OK);
    let ev = &h.audit_rows("user.reset_password").await[0];
    assert_eq!(ev["actor"], "admin1");
    assert!(!ev.to_string().contains(temp));
}

/// A role change takes effect at the next login (the old session ends). Attack: demote or
/// disable the last operator, leaving nobody to manage the enclave. Control: with a second
/// operator, the same changes go through.
#[tokio::test]
async fn roles_change_with_the_sessions_and_the_last_operator_is_kept() {
    let h = H::new().await;
    let admin = h.login("admin1").await;
    let r2 = h.login("researcher2").await;
    h.get("/api/v1/audit/events", &r2)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let v = h
        .put(
            "/api/v1/admin/users/researcher2/roles",
            &admin,
            json!({"roles": ["researcher", "auditor"]}),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["roles"], json!(["researcher", "auditor"]));
    h.get("/api/v1/me", &r2)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let r2 = h.login("researcher2").await;
    h.get("/api/v1/audit/events", &r2)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        h.audit_rows("user.roles").await[0]["detail"]["roles"],
        json!(["researcher", "auditor"])
    );

    // The last operator.
    h.put(
        "/api/v1/admin/users/admin1/roles",
        &admin,
        json!({"roles": ["auditor"]}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "last_admin");
    h.post_empty("/api/v1/admin/users/admin1/disable", &admin)
        .await
        .expect_error(StatusCode::CONFLICT, "last_admin");
    assert!(
        h.state
            .store
            .user("admin1")
            .await
            .unwrap()
            .unwrap()
            .has(kura::store::model::Role::Admin)
    );
    // Control: a second operator exists, so admin1 may be disabled.
    h.post(
        "/api/v1/admin/users",
        &admin,
        json!({"username": "admin2", "roles": ["admin"]}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    // A PMS team keeps its manufacturer when its roles change.
    let v = h
        .put(
            "/api/v1/admin/users/pms1/roles",
            &admin,
            json!({"roles": ["pms"]}),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["manufacturer"], "M01");
    h.post_empty("/api/v1/admin/users/admin1/disable", &admin)
        .await
        .expect_status(StatusCode::OK);
    // admin1's own session ended with it.
    h.get("/api/v1/admin/users", &admin)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

/// Attack: rebuilding the extract of an ended approval re-creates derived records the rules
/// say must be destroyed. Defence: only approvals in force (and PMS scopes) are rebuilt.
/// Control: the approval in force is rebuilt. Destroying stops queries until the rebuild.
#[tokio::test]
async fn extracts_are_destroyed_and_rebuilt_only_while_approved() {
    let h = H::new().await;
    let admin = h.login("admin1").await;
    let r1 = h.login("researcher1").await;
    let sql = "SELECT sex, count(DISTINCT pid) AS n FROM patient GROUP BY sex";
    h.query(&r1, "A-1", sql).await.expect_status(StatusCode::OK);
    let list = h
        .get("/api/v1/admin/extracts", &admin)
        .await
        .expect_status(StatusCode::OK);
    let a1 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["application"] == "A-1")
        .unwrap()
        .clone();
    assert!(a1["destroyed_at"].is_null());
    let path = h.state.store.extract("A-1").await.unwrap().unwrap().path;
    assert!(std::path::Path::new(&path).exists());

    for bad in [json!({"reason": ""}), json!({"reason": "x".repeat(501)})] {
        let v = h
            .post("/api/v1/admin/extracts/A-1/destroy", &admin, bad)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error_fields(&v), vec!["reason"]);
    }
    let v = h
        .post(
            "/api/v1/admin/extracts/A-1/destroy",
            &admin,
            json!({"reason": "consent withdrawn; rebuild after re-ingest"}),
        )
        .await
        .expect_status(StatusCode::OK);
    assert!(!v["destroyed_at"].is_null());
    assert!(!std::path::Path::new(&path).exists(), "the files are gone");
    assert_eq!(
        h.audit_rows("extract.destroy").await[0]["detail"]["reason"],
        "consent withdrawn; rebuild after re-ingest"
    );
    let (s, _) = h.query(&r1, "A-1", sql).await;
    assert!(!s.is_success(), "no query on a destroyed extract");

    h.post_empty("/api/v1/admin/extracts/A-1/rebuild", &admin)
        .await
        .expect_status(StatusCode::OK);
    h.query(&r1, "A-1", sql).await.expect_status(StatusCode::OK);

    // The ended approval: destroy works, rebuild is refused.
    h.post(
        "/api/v1/admin/extracts/A-OLD/destroy",
        &admin,
        json!({"reason": "term ended"}),
    )
    .await
    .expect_status(StatusCode::OK);
    let v = h
        .post_empty("/api/v1/admin/extracts/A-OLD/rebuild", &admin)
        .await
        .expect_error(StatusCode::CONFLICT, "invalid_transition");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("承認期間中")
    );
    assert!(
        h.state
            .store
            .extract("A-OLD")
            .await
            .unwrap()
            .unwrap()
            .destroyed_at
            .is_some()
    );
    h.post_empty("/api/v1/admin/extracts/PMS-M01/rebuild", &admin)
        .await
        .expect_status(StatusCode::OK);
    for id in ["A-NONE", "PMS-M99", "..%2Fetc"] {
        let (s, _) = h
            .post_empty(&format!("/api/v1/admin/extracts/{id}/rebuild"), &admin)
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{id}");
    }
}

#[tokio::test]
async fn key_fingerprints_never_show_a_key() {
    let (h, admin) = H::with_login("admin1").await;
    let v = h
        .get("/api/v1/admin/keys", &admin)
        .await
        .expect_status(StatusCode::OK);
    let audit = v
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "audit")
        .unwrap();
    assert_eq!(audit["fingerprint"], h.state.store.audit_key_fingerprint());
    let key_hex = hex::encode([9u8; 32]);
    let text = v.to_string();
    assert!(!text.contains(&key_hex[..16]), "no key material: {text}");
    assert_eq!(
        h.audit_rows("admin.read").await[0]["detail"]["view"],
        "keys"
    );
}

/// An auditor finds the event of a reference a researcher quotes.
#[tokio::test]
async fn the_audit_log_is_searched_by_reference_and_outcome() {
    let h = H::new().await;
    let r1 = h.login("researcher1").await;
    let refused = h.query(&r1, "A-OLD", "SELECT 1").await;
    let reference = refused.1["error"]["ref"].as_str().unwrap().to_string();
    let aud = h.login("auditor1").await;
    let v = h
        .get(&format!("/api/v1/audit/events?reference={reference}"), &aud)
        .await
        .expect_status(StatusCode::OK);
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["event"]["reference"], reference.as_str());
    let denied = h
        .get("/api/v1/audit/events?outcome=denied", &aud)
        .await
        .expect_status(StatusCode::OK);
    assert!(
        denied
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["event"]["outcome"] == "denied")
    );
    assert!(!denied.as_array().unwrap().is_empty());
    h.get("/api/v1/audit/events?outcome=maybe", &aud)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    let long = "x".repeat(201);
    h.get(&format!("/api/v1/audit/events?reference={long}"), &aud)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
}

/// The CSV export of a filtered log is audited before it is returned; a formula a researcher
/// typed cannot run in the auditor's spreadsheet. Attack: SQL starting with `=HYPERLINK(`.
/// Control: the JSON log keeps it as typed. Attack: an export whose audit write fails is
/// not returned (control: the same export once the store heals).
#[tokio::test]
async fn the_csv_export_is_audited_and_formulas_are_defused() {
    let h = H::new().await;
    let r1 = h.login("researcher1").await;
    let formula = "=HYPERLINK(\"http://evil.example\",\"x\") -- SELECT 1";
    h.query(&r1, "A-1", formula)
        .await
        .expect_status(StatusCode::OK);
    let aud = h.login("auditor1").await;
    let filter = "action=query.run&user=researcher1";
    // Control: the log keeps the SQL exactly as typed.
    let json = h
        .get(&format!("/api/v1/audit/events?{filter}"), &aud)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(json[0]["event"]["detail"]["sql"], formula);
    let (s, csv) = h
        .get(&format!("/api/v1/audit/events.csv?{filter}"), &aud)
        .await;
    assert_eq!(s, StatusCode::OK, "{csv}");
    let csv = csv.as_str().unwrap().to_string();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "seq,at,actor,action,application,outcome,code,reference,sql,detail,prev,mac"
    );
    let row = lines.next().unwrap();
    assert!(lines.next().is_none(), "only the filtered event: {csv}");
    assert!(
        row.contains("\"'=HYPERLINK("),
        "the formula is defused: {row}"
    );
    assert!(
        !row.contains(",=HYPERLINK") && !row.contains(",\"=HYPERLINK"),
        "{row}"
    );
    assert_eq!(kura::http::audit::formula_safe("=1+1"), "'=1+1");
    assert_eq!(kura::http::audit::formula_safe("@SUM(A1)"), "'@SUM(A1)");
    assert_eq!(kura::http::audit::formula_safe("SELECT 1"), "SELECT 1");
    let ev = &h.audit_rows("audit.export").await[0];
    assert_eq!(ev["actor"], "auditor1");
    assert_eq!(ev["detail"]["rows"], 1);
    assert_eq!(ev["detail"]["filters"]["user"], "researcher1");

    // A researcher cannot export the log.
    h.get("/api/v1/audit/events.csv", &r1)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    // No audit, no export.
    let mut raw = h.break_audit_writes().await;
    let (s, body) = h.get("/api/v1/audit/events.csv", &aud).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        !body.to_string().contains("seq,at"),
        "nothing of the log is returned"
    );
    kura::store::testing::heal_audit_writes(&mut raw).await;
    h.get("/api/v1/audit/events.csv", &aud)
        .await
        .expect_status(StatusCode::OK);
}

/// Saved outputs come back with the notebook, with the extract they were made on; sizes
/// and titles are bounded.
#[tokio::test]
async fn notebooks_keep_outputs_within_limits() {
    let (h, r1) = H::with_login("researcher1").await;
    let output = json!({"kind": "result", "sql": "SELECT 1", "at": "2026-12-01T00:00:00Z", "result": {"columns": [], "rows": []}});
    let nb = h
        .post(
            "/api/v1/notebooks",
            &r1,
            json!({"application": "A-1", "title": "ALS", "cells": [{"type": "sql", "source": "SELECT 1", "output": output}]}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    let path = format!("/api/v1/notebooks/{}", nb["id"].as_str().unwrap());
    let got = h.get(&path, &r1).await.expect_status(StatusCode::OK);
    assert_eq!(got["cells"][0]["output"], output);
    let live = h
        .state
        .store
        .extract("A-1")
        .await
        .unwrap()
        .unwrap()
        .extract_id;
    assert_eq!(got["extract_id"], live.as_str());

    let big = json!({"kind": "result", "blob": "x".repeat(300 * 1024)});
    for (body, code) in [
        (
            json!({"cells": [{"type": "sql", "source": "SELECT 1", "output": big}]}),
            "input_too_long",
        ),
        (
            json!({"cells": [{"type": "sql", "source": "x".repeat(100_001)}]}),
            "input_too_long",
        ),
        (
            json!({"cells": [{"type": "sql", "source": "SELECT 1", "output": "text"}]}),
            "invalid_request",
        ),
        (json!({"cells": ["SELECT 1"]}), "invalid_request"),
        (json!({"title": "t".repeat(201)}), "invalid_request"),
    ] {
        h.put(&path, &r1, body.clone())
            .await
            .expect_error(StatusCode::BAD_REQUEST, code);
    }
    let still = h.get(&path, &r1).await.expect_status(StatusCode::OK);
    assert_eq!(
        still["cells"][0]["output"], output,
        "a refused save changes nothing"
    );
    // A cell as long as a query is kept (its source has the SQL limit, not the text one).
    let long_cell = format!("SELECT 1 -- {}", "x".repeat(60_000));
    let long_len = long_cell.len();
    h.put(
        &path,
        &r1,
        json!({"cells": [{"type": "sql", "source": long_cell, "output": output}]}),
    )
    .await
    .expect_status(StatusCode::OK);
    let got = h.get(&path, &r1).await.expect_status(StatusCode::OK);
    assert_eq!(got["cells"][0]["source"].as_str().unwrap().len(), long_len);
}

/// The catalogue tells the console each public key's domain, in order.
#[tokio::test]
async fn the_catalogue_carries_public_domains() {
    let (h, r1) = H::with_login("researcher1").await;
    let v = h
        .get("/api/v1/catalog?application=A-1", &r1)
        .await
        .expect_status(StatusCode::OK);
    let col = |t: &str, c: &str| {
        v["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == t)
            .unwrap()["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == c)
            .unwrap()
            .clone()
    };
    assert_eq!(
        col("nanbyo_survey", "age_band")["domain"]["values"][0],
        "0-4"
    );
    assert_eq!(
        col("nanbyo_survey", "fiscal_year")["domain"]["range"],
        json!([2015, 2025])
    );
    assert_eq!(
        col("patient", "prefecture_code")["domain"]["table"],
        "prefecture"
    );
    assert!(
        col("patient", "pid").get("domain").is_none(),
        "no domain for the privacy unit"
    );
    h.get("/api/v1/reference/labels", &r1)
        .await
        .expect_status(StatusCode::OK);
    h.call(Method::GET, "/api/v1/reference/labels", None, None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}
