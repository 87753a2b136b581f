//! The output airlock (issue 13 §1) over the real HTTP router: release requests with sealed
//! snapshots, two distinct checkers, the re-check before every approval, downloads and
//! the register. Each attack is paired with its control (the same steps without the
//! attack succeed). The fake data plane checks nothing, so what it releases enters the
//! release ledger unchecked — an answer whose query-time differencing check was off —
//! which is exactly what the airlock's own re-check must catch.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use kura::policy::fiscal_year;
use kura::store::model::{NewUser, Role};

use crate::support::fixtures::{self, today};
use crate::support::http::{H, Reply, code};

/// The fixture plus `reviewer3`, a reviewer named on no application (reviewer2 is named
/// on A-1, so A-1's two checkers are reviewer1 and reviewer3).
async fn harness() -> H {
    let h = H::new().await;
    let u = NewUser {
        username: "reviewer3".into(),
        password_hash: fixtures::password_hash().into(),
        roles: vec![Role::Reviewer],
        manufacturer: None,
        display_name: "reviewer3".into(),
        affiliation: "Ministry".into(),
        title: String::new(),
    };
    h.state.store.create_user(&u, "test").await.unwrap();
    h.state.policy.reload(&h.state.store).await.unwrap();
    h
}

/// An answered query's id.
async fn answered(h: &H, token: &str, app: &str, sql: &str) -> String {
    let v = h.query(token, app, sql).await.expect_status(StatusCode::OK);
    v["query_id"].as_str().unwrap().to_string()
}

/// A pending release request of `ids`.
async fn requested(h: &H, token: &str, ids: &[&str]) -> String {
    let body = json!({"query_ids": ids, "justification": "ALS incidence by prefecture for the annual paper", "publication": "J Neurol Sci 2027"});
    let v = h
        .post("/api/v1/releases", token, body)
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(v["status"], "pending", "{v}");
    v["id"].as_str().unwrap().to_string()
}

async fn decide(h: &H, token: &str, id: &str, decision: &str) -> (StatusCode, Value) {
    let body = json!({"decision": decision, "comment": format!("{decision}: checked every cell")});
    h.post(&format!("/api/v1/releases/{id}/decision"), token, body)
        .await
}

/// A raw GET: status, headers and the body bytes.
async fn get_raw(h: &H, token: &str, path: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let resp = h.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    (status, headers, bytes.to_vec())
}

async fn download(h: &H, token: &str, id: &str, name: &str) -> (StatusCode, Vec<u8>) {
    let (s, _, b) = get_raw(h, token, &format!("/api/v1/releases/{id}/files/{name}")).await;
    (s, b)
}

fn refused_download(status: StatusCode, body: &[u8]) {
    assert_eq!(status, StatusCode::FORBIDDEN);
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(code(&v), "export_not_permitted", "{v}");
}

fn sha256(bytes: &[u8]) -> String {
    kura::store::results::sha256_hex(bytes)
}

/// The CSV of a snapshot's table, rendered here from its columns, rows and suppressed
/// cells without kura's code (RFC 4180 quoting, `<k` for a suppressed cell).
fn csv_of(snapshot: &Value) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let k = snapshot["disclosure"]["threshold"].as_u64().unwrap();
    let suppressed: Vec<(u64, u64)> = snapshot["disclosure"]["suppressed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c[0].as_u64().unwrap(), c[1].as_u64().unwrap()))
        .collect();
    let mut out = String::new();
    let names: Vec<String> = snapshot["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| quote(c["name"].as_str().unwrap()))
        .collect();
    out.push_str(&names.join(","));
    out.push('\n');
    for (r, row) in snapshot["rows"].as_array().unwrap().iter().enumerate() {
        let cells: Vec<String> = row
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(c, v)| {
                if suppressed.contains(&(r as u64, c as u64)) {
                    format!("<{k}")
                } else {
                    match v {
                        Value::Null => String::new(),
                        Value::String(s) => quote(s),
                        other => other.to_string(),
                    }
                }
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

// ------------------------------------------------------------------ two checkers

#[tokio::test]
async fn two_distinct_unconflicted_checkers_are_needed_where_the_approval_says_so() {
    let h = harness().await;
    let r1 = h.login("researcher1").await;
    let (rv1, rv2, rv3) = (
        h.login("reviewer1").await,
        h.login("reviewer2").await,
        h.login("reviewer3").await,
    );
    let q = answered(
        &h,
        &r1,
        "A-1",
        "SELECT prefecture_code, count(DISTINCT pid) FROM patient GROUP BY 1",
    )
    .await;
    let id = requested(&h, &r1, &[&q]).await;
    let (_, v) = h.get(&format!("/api/v1/releases/{id}"), &rv1).await;
    assert_eq!(
        v["checkers_required"], 2,
        "suppression mode: two checkers by default"
    );

    // The requester is no reviewer; reviewer2 is named on A-1: both refused and audited.
    decide(&h, &r1, &id, "approve")
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    decide(&h, &rv2, &id, "approve")
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let denied = h.denied_rows("release.decide").await;
    assert!(
        denied
            .iter()
            .any(|e| e["actor"] == "reviewer2" && e["detail"]["reason"] == "conflict_of_interest"),
        "{denied:?}"
    );

    // One approval of two: still pending, nothing downloadable.
    let v = decide(&h, &rv1, &id, "approve")
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["release"]["status"], "pending", "{v}");
    assert_eq!(
        (v["approvals"].as_u64(), v["checkers_required"].as_u64()),
        (Some(1), Some(2))
    );
    let (s, b) = download(&h, &r1, &id, "result-1.csv").await;
    refused_download(s, &b);
    // The same reviewer cannot be the second checker.
    decide(&h, &rv1, &id, "approve")
        .await
        .expect_error(StatusCode::FORBIDDEN, "already_checked");
    assert!(
        h.denied_rows("release.decide")
            .await
            .iter()
            .any(|e| e["actor"] == "reviewer1" && e["code"] == "already_checked")
    );
    assert_eq!(h.audit_rows("release.check").await.len(), 1);
    assert!(h.audit_rows("release.approve").await.is_empty());

    // A second, distinct reviewer completes it.
    let v = decide(&h, &rv3, &id, "approve")
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["release"]["status"], "approved", "{v}");
    assert_eq!(v["approvals"], 2);
    let approved = h.audit_rows("release.approve").await;
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0]["actor"], "reviewer3");
    let (s, _) = download(&h, &r1, &id, "result-1.csv").await;
    assert_eq!(s, StatusCode::OK);
    // An auditor never decides; the decided request stays as it is.
    let aud = h.login("auditor1").await;
    decide(&h, &aud, &id, "reject")
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let (_, v) = h.get(&format!("/api/v1/releases/{id}"), &r1).await;
    assert_eq!(v["status"], "approved");
    assert_eq!(v["decisions"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn control_one_checker_suffices_under_dp_and_a_rejection_by_either_ends_it() {
    let h = harness().await;
    let r1 = h.login("researcher1").await;
    let rv1 = h.login("reviewer1").await;
    let rv3 = h.login("reviewer3").await;
    let body = json!({"application": "A-DP", "sql": "SELECT sex, count(DISTINCT pid) FROM patient GROUP BY sex", "epsilon": 0.2});
    let v = h
        .post("/api/v1/query", &r1, body)
        .await
        .expect_status(StatusCode::OK);
    let id = requested(&h, &r1, &[v["query_id"].as_str().unwrap()]).await;
    let v = decide(&h, &rv1, &id, "approve")
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        v["release"]["status"], "approved",
        "DP: one checker by default: {v}"
    );
    assert_eq!(v["checkers_required"], 1);

    // A-1 needs two, but one rejection ends it.
    let q = answered(&h, &r1, "A-1", "SELECT 1").await;
    let id = requested(&h, &r1, &[&q]).await;
    decide(&h, &rv1, &id, "approve")
        .await
        .expect_status(StatusCode::OK);
    let v = decide(&h, &rv3, &id, "reject")
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["release"]["status"], "rejected");
    let (s, b) = download(&h, &r1, &id, "result-1.csv").await;
    refused_download(s, &b);
    assert_eq!(h.audit_rows("release.reject").await.len(), 1);
}

#[tokio::test]
async fn the_reviewer_sets_one_or_two_checkers_in_the_approval() {
    let h = harness().await;
    let r1 = h.login("researcher1").await;
    let rv1 = h.login("reviewer1").await;
    let mut form = fixtures::full_form(&["researcher1"]);
    form.title = "checkers".into();
    let app = h
        .post(
            "/api/v1/applications",
            &r1,
            serde_json::to_value(&form).unwrap(),
        )
        .await
        .expect_status(StatusCode::CREATED);
    let id = app["id"].as_str().unwrap().to_string();
    h.post_empty(&format!("/api/v1/applications/{id}/submit"), &r1)
        .await
        .expect_status(StatusCode::OK);
    let path = format!("/api/v1/applications/{id}/decision");
    for bad in [0, 3] {
        let v = h
            .post(
                &path,
                &rv1,
                json!({"decision": "approve", "release_checkers": bad}),
            )
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_application");
        assert!(
            v["error"]["fields"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["field"] == "release_checkers"),
            "{v}"
        );
    }
    let v = h
        .post(
            &path,
            &rv1,
            json!({"decision": "approve", "release_checkers": 1}),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["approval"]["release_checkers"], 1);
    h.post_empty(&format!("/api/v1/applications/{id}/pledge"), &r1)
        .await;
    let q = answered(&h, &r1, &id, "SELECT 2").await;
    let rel = requested(&h, &r1, &[&q]).await;
    let v = decide(&h, &rv1, &rel, "approve")
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        v["release"]["status"], "approved",
        "one checker, as the approval says: {v}"
    );
}

// ------------------------------------------------------------------ what leaves

/// researcher1's A-1 answer approved by reviewer1 and reviewer3: `(harness, token, id)`.
async fn approved_release(sql: &str) -> (H, String, String) {
    let h = harness().await;
    let r1 = h.login("researcher1").await;
    let q = answered(&h, &r1, "A-1", sql).await;
    let id = requested(&h, &r1, &[&q]).await;
    for rv in ["reviewer1", "reviewer3"] {
        let t = h.login(rv).await;
        decide(&h, &t, &id, "approve")
            .await
            .expect_status(StatusCode::OK);
    }
    (h, r1, id)
}

#[tokio::test]
async fn the_downloaded_csv_equals_the_snapshot_byte_for_byte() {
    let (h, r1, id) =
        approved_release("SELECT prefecture_code, count(DISTINCT pid) FROM patient GROUP BY 1")
            .await;
    let (_, v) = h.get(&format!("/api/v1/releases/{id}"), &r1).await;
    let snap = &v["outputs"][0];
    let (s, csv) = download(&h, &r1, &id, "result-1.csv").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        String::from_utf8(csv.clone()).unwrap(),
        snap["csv"].as_str().unwrap(),
        "the file is the snapshot's text"
    );
    assert_eq!(
        String::from_utf8(csv.clone()).unwrap(),
        csv_of(snap),
        "and the snapshot's table, rendered independently"
    );
    // The fake answer's suppressed cell leaves as `<5`, never as a number.
    assert_eq!(csv_of(snap), "prefecture_code,n\n13,412\n31,<5\n");
    let listed = snap["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "result-1.csv")
        .unwrap();
    assert_eq!(listed["sha256"], sha256(&csv));

    // XLSX and PNG are what the snapshot sealed; the record lists every file's hash.
    let (s, xlsx) = download(&h, &r1, &id, "result-1.xlsx").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(&xlsx[..2], b"PK", "an XLSX is a zip");
    let (s, record) = download(&h, &r1, &id, "release.json").await;
    assert_eq!(s, StatusCode::OK);
    let record: Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["format"], "kura-release-record");
    assert_eq!(record["release"]["id"], id.as_str());
    let checkers: Vec<&str> = record["checkers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reviewer"].as_str().unwrap())
        .collect();
    assert_eq!(checkers, ["reviewer1", "reviewer3"]);
    let out = &record["results"]["result-1"];
    assert_eq!(out["sdc"]["summary"]["threshold"], 5);
    assert_eq!(out["sdc"]["cells"]["suppressed"], json!([[1, 1]]));
    assert_eq!(out["cells"][1][1]["status"], "suppressed");
    assert_eq!(out["cells"][1][1]["reason"], "disclosure_rules");
    assert!(
        out["cells"][1][1].get("contributors").is_none(),
        "no band for a suppressed cell"
    );
    assert_eq!(
        out["cells"][0][1]["contributors"],
        json!({"low": 200, "high": 499})
    );
    for f in record["files"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        let (s, bytes) = download(&h, &r1, &id, name).await;
        assert_eq!(s, StatusCode::OK, "{name}");
        assert_eq!(f["sha256"], sha256(&bytes), "{name}");
    }
    let png = record["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "result-1.png");
    let png =
        png.expect("the chart is rendered (tests/run.sh installs a font with Japanese glyphs)");
    {
        let (_, bytes) = download(&h, &r1, &id, png["name"].as_str().unwrap()).await;
        assert_eq!(&bytes[1..4], b"PNG");
    }
}

#[tokio::test]
async fn every_download_is_audited_and_the_register_lists_what_left() {
    let (h, r1, id) = approved_release("SELECT 1").await;
    for _ in 0..2 {
        assert_eq!(
            download(&h, &r1, &id, "result-1.csv").await.0,
            StatusCode::OK
        );
    }
    assert_eq!(
        download(&h, &r1, &id, "release.json").await.0,
        StatusCode::OK
    );
    let ok: Vec<Value> = h
        .audit_rows("release.download")
        .await
        .into_iter()
        .filter(|e| e["outcome"] == "ok")
        .collect();
    assert_eq!(ok.len(), 3);
    assert!(
        ok.iter()
            .all(|e| e["actor"] == "researcher1" && e["detail"]["release"] == id.as_str())
    );

    for who in ["reviewer1", "auditor1"] {
        let t = h.login(who).await;
        let v = h
            .get("/api/v1/releases/register", &t)
            .await
            .expect_status(StatusCode::OK);
        let e = v
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["release"] == id.as_str())
            .expect("listed");
        assert_eq!(e["requester"], "researcher1");
        assert_eq!(e["application"], "A-1");
        assert!(
            e["justification"]
                .as_str()
                .unwrap()
                .contains("annual paper")
        );
        assert_eq!(e["downloads"].as_array().unwrap().len(), 3);
        let checkers: Vec<&str> = e["checkers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["reviewer"].as_str().unwrap())
            .collect();
        assert_eq!(checkers, ["reviewer1", "reviewer3"]);
        assert!(
            e["files"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["sha256"].as_str().unwrap().len() == 64)
        );
    }
    h.get("/api/v1/releases/register", &r1)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    // The usage report counts the release once, though two reviewers approved it.
    let rv1 = h.login("reviewer1").await;
    let path = format!(
        "/api/v1/applications/A-1/usage-report?fy={}",
        fiscal_year(today())
    );
    let v = h.get(&path, &rv1).await.expect_status(StatusCode::OK);
    assert_eq!(v["releases_approved"], 1, "{v}");
}

#[tokio::test]
async fn attack_downloads_outside_the_approval_are_export_not_permitted_and_audited() {
    let (h, r1, id) = approved_release("SELECT 1").await;
    let pending = {
        let q = answered(&h, &r1, "A-1", "SELECT 2").await;
        requested(&h, &r1, &[&q]).await
    };
    let others = [
        h.login("researcher2").await,
        h.login("reviewer1").await,
        h.login("auditor1").await,
    ];
    for t in &others {
        let (s, b) = download(&h, t, &id, "result-1.csv").await;
        refused_download(s, &b);
    }
    for name in [
        "result-2.csv",
        "result-1.txt",
        "..%2F..%2Fkura.db",
        "RELEASE.JSON",
        "result-01.csv",
    ] {
        let (s, b) = download(&h, &r1, &id, name).await;
        refused_download(s, &b);
    }
    let (s, b) = download(&h, &r1, &pending, "result-1.csv").await;
    refused_download(s, &b);
    let (s, b) = download(&h, &r1, "rel_000000000000000000000000", "result-1.csv").await;
    refused_download(s, &b);
    let denied = h.denied_rows("release.download").await;
    assert_eq!(
        denied.len(),
        3 + 5 + 2,
        "every refused attempt is audited: {denied:?}"
    );
    assert!(denied.iter().all(|e| e["code"] == "export_not_permitted"));
    // Control: the requester downloads the approved file.
    assert_eq!(
        download(&h, &r1, &id, "result-1.csv").await.0,
        StatusCode::OK
    );
}

// ------------------------------------------------------------------ the re-check

/// researcher1's release of an answer whose released cell has contributors `set`, with
/// reviewer1's first approval recorded.
async fn half_approved(h: &H, set: &str) -> (String, String) {
    let r1 = h.login("researcher1").await;
    let q = answered(
        h,
        &r1,
        "A-1",
        &format!("SELECT count(DISTINCT pid) SET={set}"),
    )
    .await;
    let id = requested(h, &r1, &[&q]).await;
    let rv1 = h.login("reviewer1").await;
    decide(h, &rv1, &id, "approve")
        .await
        .expect_status(StatusCode::OK);
    (r1, id)
}

#[tokio::test]
async fn a_snapshot_made_unsafe_by_a_later_release_is_refused_at_approval() {
    let h = harness().await;
    let (r1, id) = half_approved(&h, "0..40").await;
    // Another answer releases 42 patients, 40 of them the snapshot's: subtracting gives 2.
    answered(&h, &r1, "A-1", "SELECT count(DISTINCT pid) SET=0..42").await;
    let rv3 = h.login("reviewer3").await;
    let v = decide(&h, &rv3, &id, "approve")
        .await
        .expect_error(StatusCode::CONFLICT, "release_unsafe");
    let msg = &crate::support::http::without_ids(v["error"]["message"].as_str().unwrap());
    assert!(
        msg.contains("result-1") && msg.contains("row 1 column n"),
        "names the cell: {msg}"
    );
    assert!(
        !msg.contains("42") && !msg.contains(" 40"),
        "no count in the reason: {msg}"
    );
    let (_, v) = h.get(&format!("/api/v1/releases/{id}"), &r1).await;
    assert_eq!(v["status"], "invalidated");
    assert_eq!(v["invalidation"]["code"], "release_unsafe");
    let inv = h.denied_rows("release.invalidate").await;
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0]["code"], "release_unsafe");
    let (s, b) = download(&h, &r1, &id, "result-1.csv").await;
    refused_download(s, &b);
    decide(&h, &rv3, &id, "approve")
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn control_the_same_approval_succeeds_without_the_intervening_release() {
    let h = harness().await;
    let (r1, id) = half_approved(&h, "0..40").await;
    // A later answer far enough from the snapshot's cell (10 patients more) is harmless.
    answered(&h, &r1, "A-1", "SELECT count(DISTINCT pid) SET=0..50").await;
    let rv3 = h.login("reviewer3").await;
    let v = decide(&h, &rv3, &id, "approve")
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["release"]["status"], "approved");
}

#[tokio::test]
async fn a_rebuilt_extract_or_a_raised_k_is_refused_at_approval() {
    let h = harness().await;
    let (_, id) = half_approved(&h, "0..40").await;
    h.plane
        .generation
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    h.build("A-1").await;
    let rv3 = h.login("reviewer3").await;
    decide(&h, &rv3, &id, "approve")
        .await
        .expect_error(StatusCode::CONFLICT, "release_extract_changed");

    // k raised through a change application approved with k = 10.
    let h = harness().await;
    let (r1, id) = half_approved(&h, "0..40").await;
    let form = fixtures::full_form(&["researcher1", "reviewer2"]);
    h.post(
        "/api/v1/applications/A-1/change",
        &r1,
        serde_json::to_value(&form).unwrap(),
    )
    .await
    .expect_status(StatusCode::OK);
    let rv1 = h.login("reviewer1").await;
    h.post(
        "/api/v1/applications/A-1/decision",
        &rv1,
        json!({"decision": "approve", "k": 10}),
    )
    .await
    .expect_status(StatusCode::OK);
    let rv3 = h.login("reviewer3").await;
    decide(&h, &rv3, &id, "approve")
        .await
        .expect_error(StatusCode::CONFLICT, "release_rules_changed");
}

#[tokio::test]
async fn a_revoked_application_or_an_ended_term_fails_closed() {
    let h = harness().await;
    let (r1, id) = half_approved(&h, "0..40").await;
    let done = approved_release_on(&h, &r1).await;
    let rv1 = h.login("reviewer1").await;
    h.post(
        "/api/v1/applications/A-1/revoke",
        &rv1,
        json!({"reason": "misuse"}),
    )
    .await
    .expect_status(StatusCode::OK);
    let rv3 = h.login("reviewer3").await;
    let v = decide(&h, &rv3, &id, "approve")
        .await
        .expect_error(StatusCode::CONFLICT, "release_not_authorised");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("revoked"),
        "{v}"
    );
    // An approved release of a revoked application does not leave either.
    let (s, b) = download(&h, &r1, &done, "result-1.csv").await;
    refused_download(s, &b);

    // The term ended between the request and the second approval.
    let h = harness().await;
    let (_, id) = half_approved(&h, "0..40").await;
    let mut raw = h.raw().await;
    let approval: String = sqlx::query_scalar("SELECT approval FROM applications WHERE id = 'A-1'")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    let mut approval: Value = serde_json::from_str(&approval).unwrap();
    approval["term"]["start"] = json!("2024-04-01");
    approval["term"]["end"] = json!("2025-03-31");
    sqlx::query("UPDATE applications SET approval = $1 WHERE id = 'A-1'")
        .bind(approval.to_string())
        .execute(&mut raw)
        .await
        .unwrap();
    let rv3 = h.login("reviewer3").await;
    let v = decide(&h, &rv3, &id, "approve")
        .await
        .expect_error(StatusCode::CONFLICT, "release_not_authorised");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("term_expired"),
        "{v}"
    );
}

/// Another release of researcher1 on A-1, approved by reviewer1 and reviewer3.
async fn approved_release_on(h: &H, r1: &str) -> String {
    let q = answered(h, r1, "A-1", "SELECT 3").await;
    let id = requested(h, r1, &[&q]).await;
    for rv in ["reviewer1", "reviewer3"] {
        let t = h.login(rv).await;
        decide(h, &t, &id, "approve")
            .await
            .expect_status(StatusCode::OK);
    }
    id
}

// ------------------------------------------------------------------ requests

#[tokio::test]
async fn attack_release_of_another_users_refused_or_failed_query() {
    let h = harness().await;
    let r1 = h.login("researcher1").await;
    let r2 = h.login("researcher2").await;
    let mine = answered(&h, &r1, "A-1", "SELECT 1").await;
    // Another user's id looks exactly like an unknown one.
    let a = h
        .post(
            "/api/v1/releases",
            &r2,
            json!({"query_ids": [mine], "justification": "x"}),
        )
        .await
        .expect_error(StatusCode::NOT_FOUND, "query_not_found");
    let b = h
        .post(
            "/api/v1/releases",
            &r2,
            json!({"query_ids": ["q_000000000000000000000000"], "justification": "x"}),
        )
        .await
        .expect_error(StatusCode::NOT_FOUND, "query_not_found");
    assert_eq!(
        a["error"]["message"].as_str().unwrap().replace(&mine, "ID"),
        b["error"]["message"]
            .as_str()
            .unwrap()
            .replace("q_000000000000000000000000", "ID")
    );
    // Refused and failed queries have no result to release.
    for sql in ["SELECT OUT_OF_SCOPE 1", "SELECT FAIL_EXEC"] {
        let (_, v) = h.query(&r1, "A-1", sql).await;
        let id = v["error"]["ref"].as_str().unwrap();
        h.post(
            "/api/v1/releases",
            &r1,
            json!({"query_ids": [id], "justification": "x"}),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "query_not_answered");
    }
    // researcher2's own refusal (not named on A-1) is no answer either.
    let (_, v) = h.query(&r2, "A-1", "SELECT 1").await;
    let id = v["error"]["ref"].as_str().unwrap();
    h.post(
        "/api/v1/releases",
        &r2,
        json!({"query_ids": [id], "justification": "x"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "query_not_answered");
    // Answers of two applications never share a request.
    let body = json!({"application": "A-DP", "sql": "SELECT sex, count(DISTINCT pid) FROM patient GROUP BY sex", "epsilon": 0.1});
    let dp = h
        .post("/api/v1/query", &r1, body)
        .await
        .expect_status(StatusCode::OK);
    h.post(
        "/api/v1/releases",
        &r1,
        json!({"query_ids": [mine, dp["query_id"]], "justification": "x"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "queries_span_applications");
    h.post(
        "/api/v1/releases",
        &r1,
        json!({"application": "A-DP", "query_id": mine, "justification": "x"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "query_other_application");
    assert!(h.audit_rows("release.request").await.is_empty());
    // Control: the same request of researcher1's own answer succeeds (old body too).
    let v = h
        .post(
            "/api/v1/releases",
            &r1,
            json!({"application": "A-1", "query_id": mine, "reason": "paper"}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(v["query_ids"], json!([mine]));
    assert_eq!(
        v["publication"], "paper",
        "the application's publication plan by default"
    );
}

#[tokio::test]
async fn requests_are_checked_for_size_and_authorisation() {
    let h = harness().await;
    let r1 = h.login("researcher1").await;
    let q = answered(&h, &r1, "A-1", "SELECT 1").await;
    let long = "x".repeat(4001);
    h.post(
        "/api/v1/releases",
        &r1,
        json!({"query_ids": [q], "justification": long}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    h.post(
        "/api/v1/releases",
        &r1,
        json!({"query_ids": [q], "justification": " "}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    let many: Vec<String> = (0..11).map(|i| format!("q_{i}")).collect();
    h.post(
        "/api/v1/releases",
        &r1,
        json!({"query_ids": many, "justification": "x"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    // Revoked since the answer: refused by the enforcement point, audited.
    let rv1 = h.login("reviewer1").await;
    h.post(
        "/api/v1/applications/A-1/revoke",
        &rv1,
        json!({"reason": "misuse"}),
    )
    .await
    .expect_status(StatusCode::OK);
    h.post(
        "/api/v1/releases",
        &r1,
        json!({"query_ids": [q], "justification": "x"}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "revoked");
    assert_eq!(h.denied_rows("authorize.request_release").await.len(), 1);
}

#[tokio::test]
async fn a_failed_audit_write_makes_no_request() {
    let h = harness().await;
    let r1 = h.login("researcher1").await;
    let q = answered(&h, &r1, "A-1", "SELECT 1").await;
    let mut raw = h.break_audit_writes().await;
    let (s, _) = h
        .post(
            "/api/v1/releases",
            &r1,
            json!({"query_ids": [q], "justification": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    kura::store::testing::heal_audit_writes(&mut raw).await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM releases")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(n, 0, "no audit, no request");
}

#[tokio::test]
async fn who_sees_which_request() {
    let h = harness().await;
    let r1 = h.login("researcher1").await;
    let q = answered(&h, &r1, "A-1", "SELECT 1").await;
    let id = requested(&h, &r1, &[&q]).await;
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    for (who, sees) in [
        ("researcher1", true),
        ("reviewer1", true),
        ("reviewer3", true),
        ("auditor1", true),
        ("reviewer2", false),
        ("researcher2", false),
    ] {
        let t = h.login(who).await;
        let v = h
            .get("/api/v1/releases?status=pending", &t)
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(ids(&v).contains(&id), sees, "{who} list");
        let (s, _) = h.get(&format!("/api/v1/releases/{id}"), &t).await;
        assert_eq!(s == StatusCode::OK, sees, "{who} detail");
    }
    let v = h
        .get("/api/v1/releases?status=decided", &r1)
        .await
        .expect_status(StatusCode::OK);
    assert!(ids(&v).is_empty());
    h.get("/api/v1/releases?status=maybe", &r1)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    let rv1 = h.login("reviewer1").await;
    let (_, v) = h.get(&format!("/api/v1/releases/{id}"), &rv1).await;
    assert_eq!(v["can_decide"], true);
    let snap = &v["outputs"][0];
    assert_eq!(snap["sql"], "SELECT 1");
    assert_eq!(snap["plan_fingerprint"], "fp_test");
    assert_eq!(snap["extract_id"], "x_A-1");
    assert_eq!(
        snap["column_rules"][1]["rules"],
        json!(["k", "differencing"])
    );
    assert!(
        v["outputs"][0].get("internal").is_none() && !v.to_string().contains("set_hashes"),
        "ledger references never leave"
    );
}

// ------------------------------------------------------------------ tampering, races, DP

#[tokio::test]
async fn attack_tampering_with_the_snapshot_is_found_before_approval_and_download() {
    // Notebook edits after the request change nothing: the snapshot is a copy.
    let h = harness().await;
    let r1 = h.login("researcher1").await;
    let q = answered(
        &h,
        &r1,
        "A-1",
        "SELECT prefecture_code, count(DISTINCT pid) FROM patient GROUP BY 1",
    )
    .await;
    let nb = h.post("/api/v1/notebooks", &r1, json!({"application": "A-1", "title": "t", "cells": [{"type": "sql", "source": "SELECT prefecture_code, count(DISTINCT pid) FROM patient GROUP BY 1"}]})).await.expect_status(StatusCode::CREATED);
    let id = requested(&h, &r1, &[&q]).await;
    h.put(
        &format!("/api/v1/notebooks/{}", nb["id"].as_str().unwrap()),
        &r1,
        json!({"cells": [{"type": "sql", "source": "SELECT 42"}]}),
    )
    .await
    .expect_status(StatusCode::OK);
    let (_, before) = h.get(&format!("/api/v1/releases/{id}"), &r1).await;
    assert!(
        before["outputs"][0]["sql"]
            .as_str()
            .unwrap()
            .contains("prefecture_code")
    );

    // A store edit that un-suppresses the cell, with every unkeyed hash recomputed.
    let mut raw = h.raw().await;
    let stored: String =
        sqlx::query_scalar("SELECT snapshot FROM release_outputs WHERE release_id = $1")
            .bind(&id)
            .fetch_one(&mut raw)
            .await
            .unwrap();
    let internal: String =
        sqlx::query_scalar("SELECT internal FROM release_outputs WHERE release_id = $1")
            .bind(&id)
            .fetch_one(&mut raw)
            .await
            .unwrap();
    let edited = stored
        .replace("\"31\",null", "\"31\",3")
        .replace("31,<5", "31,3");
    assert_ne!(edited, stored);
    let seal = kura::airlock::snapshot::seal(&edited, &internal);
    let rel = h.get(&format!("/api/v1/releases/{id}"), &r1).await.1;
    let request_seal = kura::airlock::snapshot::request_seal(
        &id,
        "researcher1",
        rel["justification"].as_str().unwrap(),
        rel["publication"].as_str().unwrap(),
        2,
        std::slice::from_ref(&seal),
    );
    sqlx::query("UPDATE release_outputs SET snapshot = $1, seal = $2 WHERE release_id = $3")
        .bind(&edited)
        .bind(&seal)
        .bind(&id)
        .execute(&mut raw)
        .await
        .unwrap();
    sqlx::query("UPDATE releases SET seal = $1 WHERE id = $2")
        .bind(&request_seal)
        .bind(&id)
        .execute(&mut raw)
        .await
        .unwrap();
    let rv1 = h.login("reviewer1").await;
    h.get(&format!("/api/v1/releases/{id}"), &rv1)
        .await
        .expect_error(StatusCode::INTERNAL_SERVER_ERROR, "integrity_failed");
    decide(&h, &rv1, &id, "approve")
        .await
        .expect_error(StatusCode::INTERNAL_SERVER_ERROR, "integrity_failed");
    assert!(
        h.audit_rows("release.check").await.is_empty(),
        "nothing was approved"
    );

    // A stored answer edited before it was requested is refused too.
    let q2 = answered(&h, &r1, "A-1", "SELECT 7").await;
    sqlx::query(
        "UPDATE query_results SET answer = replace(answer, '412', '413') WHERE query_id = $1",
    )
    .bind(&q2)
    .execute(&mut raw)
    .await
    .unwrap();
    h.post(
        "/api/v1/releases",
        &r1,
        json!({"query_ids": [q2], "justification": "x"}),
    )
    .await
    .expect_error(StatusCode::INTERNAL_SERVER_ERROR, "integrity_failed");

    // A file edited after approval does not leave.
    let (h, r1, id) = approved_release("SELECT 1").await;
    assert_eq!(
        download(&h, &r1, &id, "result-1.csv").await.0,
        StatusCode::OK,
        "control"
    );
    let mut raw = h.raw().await;
    let forged = b"prefecture_code,n\n13,412\n31,3\n".to_vec();
    sqlx::query("UPDATE release_files SET content = $1, sha256 = $2 WHERE release_id = $3 AND name = 'result-1.csv'")
        .bind(forged.clone())
        .bind(sha256(&forged))
        .bind(&id)
        .execute(&mut raw)
        .await
        .unwrap();
    let (s, b) = download(&h, &r1, &id, "result-1.csv").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!String::from_utf8_lossy(&b).contains("31,3"));
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_racing_approvals_never_approve_with_fewer_than_the_required_checkers() {
    let h = harness().await;
    let r1 = h.login("researcher1").await;
    let (rv1, rv3) = (h.login("reviewer1").await, h.login("reviewer3").await);
    // Two distinct checkers at once: both recorded, one after the other, and approved.
    let q = answered(&h, &r1, "A-1", "SELECT 1").await;
    let id = requested(&h, &r1, &[&q]).await;
    let (a, b) = tokio::join!(
        decide(&h, &rv1, &id, "approve"),
        decide(&h, &rv3, &id, "approve")
    );
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK), "{a:?} {b:?}");
    let (_, v) = h.get(&format!("/api/v1/releases/{id}"), &r1).await;
    assert_eq!(v["status"], "approved");
    assert_eq!(v["decisions"].as_array().unwrap().len(), 2);
    // The same checker twice at once: one decision, never an approval.
    let q = answered(&h, &r1, "A-1", "SELECT 2").await;
    let id = requested(&h, &r1, &[&q]).await;
    let (a, b) = tokio::join!(
        decide(&h, &rv1, &id, "approve"),
        decide(&h, &rv1, &id, "approve")
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::FORBIDDEN],
        "{a:?} {b:?}"
    );
    let (_, v) = h.get(&format!("/api/v1/releases/{id}"), &r1).await;
    assert_eq!(
        (v["status"].as_str(), v["approvals"].as_u64()),
        (Some("pending"), Some(1))
    );
}

#[tokio::test]
async fn attack_a_cached_dp_answer_is_released_as_first_answered_never_re_noised() {
    let h = harness().await;
    let r1 = h.login("researcher1").await;
    let body = json!({"application": "A-DP", "sql": "SELECT sex, count(DISTINCT pid) FROM patient GROUP BY sex", "epsilon": 0.5});
    let first = h
        .post("/api/v1/query", &r1, body.clone())
        .await
        .expect_status(StatusCode::OK);
    let cached = h
        .post("/api/v1/query", &r1, body)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(cached["disclosure"]["dp"]["cached"], true);
    assert_eq!(cached["rows"], first["rows"]);
    let id = requested(&h, &r1, &[cached["query_id"].as_str().unwrap()]).await;
    let rv1 = h.login("reviewer1").await;
    let (_, v) = h.get(&format!("/api/v1/releases/{id}"), &rv1).await;
    let snap = &v["outputs"][0];
    assert_eq!(
        snap["rows"], first["rows"],
        "the stored answer, not a new draw"
    );
    assert_eq!(snap["mode"], "dp");
    assert_eq!(
        snap["disclosure"]["dp"]["epsilon"], 0.5,
        "the ε that protects it, not the 0 spent by the re-release"
    );
    let cell = &snap["cells"][0][1];
    assert_eq!(cell["status"], "released");
    assert_eq!(cell["dp"]["epsilon"], 0.5);
    let ci = cell["dp"]["ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() < ci[1].as_f64().unwrap());
    decide(&h, &rv1, &id, "approve")
        .await
        .expect_status(StatusCode::OK);
    let (s, csv) = download(&h, &r1, &id, "result-1.csv").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        snap["csv"].as_str().unwrap()
    );
    // Control: a fresh DP query with other ε draws other noise (the plane adds it anew).
    let other = json!({"application": "A-DP", "sql": "SELECT sex, count(DISTINCT pid) FROM patient GROUP BY sex", "epsilon": 0.25});
    let fresh = h
        .post("/api/v1/query", &r1, other)
        .await
        .expect_status(StatusCode::OK);
    assert_ne!(fresh["rows"], first["rows"]);
}

#[tokio::test]
async fn repeated_refused_downloads_raise_an_alert() {
    for (attempts, expect) in [(3, 1), (2, 0)] {
        let (mut h, r1, id) = approved_release("SELECT 1").await;
        let rules = kura::audit::alert::AlertRules::embedded()
            .unwrap()
            .without("outside_working_hours");
        h.state.store = h
            .state
            .store
            .clone()
            .with_alerts(std::sync::Arc::new(rules));
        h.router = kura::http::app(h.state.clone());
        let r2 = h.login("researcher2").await;
        for _ in 0..attempts {
            let (s, b) = download(&h, &r2, &id, "result-1.csv").await;
            refused_download(s, &b);
        }
        // The requester's own downloads never count.
        assert_eq!(
            download(&h, &r1, &id, "result-1.csv").await.0,
            StatusCode::OK
        );
        let aud = h.login("auditor1").await;
        let v = h
            .get("/api/v1/alerts?status=open", &aud)
            .await
            .expect_status(StatusCode::OK);
        let raised: Vec<&Value> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["rule"] == "refused_downloads")
            .collect();
        assert_eq!(raised.len(), expect, "{attempts} refused downloads: {v}");
        if expect == 1 {
            assert_eq!(raised[0]["user"], "researcher2");
        }
    }
}
