//! Production grade (issue 14): the hardening of the store, the login, the input limits,
//! the query admission and `/metrics`, each attack paired with its control. Tests named
//! `store_*` run on both stores (`tests/run.sh` runs them again with
//! `KURA_TEST_STORE=postgres`); the fault and load tests with the real binary are in
//! `production_faults.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use kura::audit::checkpoint::Checkpoint;
use kura::audit::{AuditEvent, AuditKey};
use kura::store::model::Status;
use kura::store::{AuditFilter, ExtractWrite, Store};

use crate::support::fixtures::{self, audit_key};
use crate::support::http::{H, Reply, call_router, code};

async fn fresh_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = kura::store::testing::open(dir.path(), audit_key()).await;
    (dir, store)
}

fn event(actor: &str, n: usize) -> AuditEvent {
    AuditEvent::ok(actor, "test.write", None, json!({"n": n}))
}

/// The audit chain stays linear under many concurrent writers: every append reads the
/// head inside its serialised write transaction (SQLite's write lock, PostgreSQL's
/// advisory lock), so no two entries share a `seq` or a `prev`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_concurrent_writers_keep_the_chain_linear() {
    let (_d, store) = fresh_store().await;
    let writers = (0..64).map(|i| {
        let s = store.clone();
        tokio::spawn(async move { s.record(&event("writer", i)).await.unwrap().seq })
    });
    let mut seqs: Vec<i64> = futures::future::join_all(writers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    seqs.sort();
    assert_eq!(seqs, (1..=64).collect::<Vec<i64>>());
    let v = store.verify_audit().await.unwrap();
    assert!(v.ok && v.events == 64, "{v:?}");
}

/// An insider relabels a row's plain `actor` column (the signed event untouched): the
/// auditor's filter by user no longer finds it — the attack works on the filter — but
/// verification names the row.
#[tokio::test]
async fn store_a_relabelled_column_breaks_verification() {
    let (dir, store) = fresh_store().await;
    for i in 0..3 {
        store.record(&event("mallory", i)).await.unwrap();
    }
    let mut raw = kura::store::testing::raw(dir.path()).await;
    kura::store::testing::allow_audit_tampering(&mut raw).await;
    sqlx::query("UPDATE audit_log SET actor = 'someone_else' WHERE seq = 2")
        .execute(&mut raw)
        .await
        .unwrap();
    let by_mallory = store
        .audit_events(&AuditFilter {
            user: Some("mallory".into()),
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        by_mallory.len(),
        2,
        "the relabelled row left the auditor's filter"
    );
    let v = store.verify_audit().await.unwrap();
    assert_eq!((v.ok, v.broken_at), (false, Some(2)), "{v:?}");
    assert!(v.reason.unwrap().contains("plain column"));
}

/// Deleting the newest entries leaves a shorter chain that verifies on its own (the
/// control); a signed checkpoint of the earlier head catches it.
#[tokio::test]
async fn store_truncation_is_caught_by_a_checkpoint() {
    let (dir, store) = fresh_store().await;
    for i in 0..5 {
        store.record(&event("u", i)).await.unwrap();
    }
    let cp_dir = dir.path().join("checkpoints");
    let cp = store
        .write_checkpoint(&cp_dir, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cp.seq, 5);
    assert!(
        store
            .write_checkpoint(&cp_dir, Some(5))
            .await
            .unwrap()
            .is_none(),
        "nothing new to anchor"
    );
    let mut raw = kura::store::testing::raw(dir.path()).await;
    kura::store::testing::allow_audit_tampering(&mut raw).await;
    sqlx::query("DELETE FROM audit_log WHERE seq > 3")
        .execute(&mut raw)
        .await
        .unwrap();
    // Control: the chain alone cannot tell.
    assert!(store.verify_audit().await.unwrap().ok);
    let checkpoints = kura::audit::checkpoint::read_dir(&cp_dir, store.audit_key()).unwrap();
    let v = store.verify_audit_against(&checkpoints).await.unwrap();
    assert_eq!((v.ok, v.broken_at), (false, Some(5)), "{v:?}");
    assert!(v.reason.unwrap().contains("truncated"));
    // A checkpoint forged for the shorter log does not verify under the audit key.
    let forged = Checkpoint {
        seq: 3,
        ..cp.clone()
    };
    assert!(!forged.verifies(store.audit_key()));
    let other = AuditKey::from_bytes(&[1u8; 32]).unwrap();
    assert!(!cp.verifies(&other));
}

/// The change-approval race: the approval that loses (another decision saved first)
/// must leave the extract of the approval in force live, not its own.
#[tokio::test]
async fn store_an_approval_that_loses_its_race_leaves_no_extract_live() {
    let dir = tempfile::tempdir().unwrap();
    let store = fixtures::store_with_users(dir.path(), &["researcher1"]).await;
    let a = &fixtures::approved_applications()[0];
    fixtures::approve(&store, a).await;
    let live = ExtractWrite {
        extract_id: "x_live".into(),
        path: "/x/live".into(),
    };
    store
        .set_extract(a.id, &live.extract_id, &live.path, "test")
        .await
        .unwrap();
    let app = store.application(a.id).await.unwrap().unwrap();
    let stale = app.updated_at;
    // Another reviewer's decision lands first.
    let ev = AuditEvent::ok(
        "reviewer2",
        "application.change_reject",
        Some(a.id),
        json!({}),
    );
    store
        .transition(&app, stale, Status::Approved, "change_reject", None, &ev)
        .await
        .unwrap();
    let unapproved = ExtractWrite {
        extract_id: "x_wider".into(),
        path: "/x/wider".into(),
    };
    let ev = AuditEvent::ok(
        "reviewer1",
        "application.change_approve",
        Some(a.id),
        json!({}),
    );
    let lost = store
        .transition_with_extract(
            &app,
            stale,
            Status::Approved,
            "change_approve",
            None,
            Some(&unapproved),
            &ev,
        )
        .await;
    assert!(
        matches!(lost, Err(kura::store::StoreError::Conflict(_))),
        "{lost:?}"
    );
    let x = store.extract(a.id).await.unwrap().unwrap();
    assert_eq!(x.extract_id, "x_live", "the wider scope never became live");
    // Control: the same call over the current state registers its extract with it.
    let current = store.application(a.id).await.unwrap().unwrap();
    store
        .transition_with_extract(
            &current,
            current.updated_at,
            Status::Approved,
            "change_approve",
            None,
            Some(&unapproved),
            &ev,
        )
        .await
        .unwrap();
    assert_eq!(
        store.extract(a.id).await.unwrap().unwrap().extract_id,
        "x_wider"
    );
    assert!(store.verify_audit().await.unwrap().ok);
}

/// A backup's tables imported into an empty store give the same rows and a chain that
/// verifies; an import into a store that already has a log is refused.
#[tokio::test]
async fn store_exported_tables_import_into_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<&str> = fixtures::USERS.iter().map(|u| u.0).collect();
    let store = fixtures::store_with_users(dir.path(), &names).await;
    for a in fixtures::approved_applications() {
        fixtures::approve(&store, &a).await;
    }
    let tables = store.export_tables().await.unwrap();
    assert!(tables["audit_log"].len() > 5);
    let (_d2, target) = fresh_store().await;
    target.import_tables(&tables).await.unwrap();
    assert_eq!(target.export_tables().await.unwrap(), tables);
    let v = target.verify_audit().await.unwrap();
    assert!(
        v.ok && v.events == tables["audit_log"].len() as i64,
        "{v:?}"
    );
    // New rows after the import get fresh ids (identity sequences moved on).
    target
        .add_recommendation("A-1", "reviewer1", "after restore")
        .await
        .unwrap();
    assert!(matches!(
        target.import_tables(&tables).await,
        Err(kura::store::StoreError::Conflict(_))
    ));
}

/// 50 wrong passwords at once against one account: all counted, locked after the fifth,
/// and the correct password is refused afterwards (the lockout race of issue 14).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_guessing_locks_the_account_and_it_stays_locked() {
    let h = Arc::new(H::new().await);
    let tries = (0..50).map(|_| {
        let h = h.clone();
        tokio::spawn(async move { h.session("researcher2", "wrong password!").await })
    });
    let replies: Vec<(StatusCode, Value)> = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(replies.iter().all(|(s, v)| {
        (*s == StatusCode::UNAUTHORIZED && code(v) == "invalid_credentials")
            || (*s == StatusCode::TOO_MANY_REQUESTS && code(v) == "account_locked")
    }));
    let denied = h.denied_rows("session.login").await;
    let locks = denied
        .iter()
        .filter(|e| e["detail"]["locked"] == json!(true))
        .count();
    assert!(locks >= 1, "some failure locked the account");
    // The oldest lock came with the fifth counted failure.
    let mut failures: Vec<&Value> = denied
        .iter()
        .filter(|e| e["code"] == "invalid_credentials")
        .collect();
    failures.reverse();
    assert_eq!(failures[4]["detail"]["locked"], json!(true));
    assert!(
        failures[..4]
            .iter()
            .all(|e| e["detail"]["locked"] == json!(false))
    );
    h.session("researcher2", fixtures::PASSWORD)
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS, "account_locked");
    // Control: another account, untouched by the guessing, logs in.
    h.login("researcher1").await;
}

/// Huge usernames and SQL are refused before they are stored or audited (a client could
/// otherwise fill the disk, after which every answer is withheld).
#[tokio::test]
async fn overlong_fields_are_refused_before_anything_is_stored() {
    let (h, t) = H::with_login("researcher1").await;
    let before = h.state.store.verify_audit().await.unwrap().events;
    let huge = "x".repeat(65);
    h.session(&huge, "whatever password")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "input_too_long");
    let sql = format!("SELECT count(*) FROM patient -- {}", "y".repeat(100_000));
    let v = h
        .query(&t, "A-1", &sql)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "input_too_long");
    assert!(v["error"]["message"].as_str().unwrap().contains("`sql`"));
    assert_eq!(
        h.state.store.verify_audit().await.unwrap().events,
        before,
        "nothing of either request was written"
    );
    // Control: at the limit the login attempt is an ordinary, audited failure.
    h.session(&"x".repeat(64), "whatever password")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(
        h.state.store.verify_audit().await.unwrap().events,
        before + 1
    );
}

/// One user cannot hold more than `query_per_user` queries in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_over_the_concurrent_query_limit_is_refused() {
    let (h, t) = H::with_login("researcher1").await;
    let limit = 2;
    let state = kura::http::AppState {
        admission: Arc::new(kura::query::admission::Admission::new(limit)),
        ..h.state.clone()
    };
    let router = kura::http::app(state);
    h.plane.dp_delay_ms.store(1_500, Ordering::SeqCst);
    let run = |i: usize| {
        let (router, t) = (router.clone(), t.clone());
        tokio::spawn(async move {
            let body = json!({"application": "A-DP", "epsilon": 0.01,
                "sql": format!("SELECT count(DISTINCT pid) AS n FROM patient WHERE {i} = {i}")});
            let (s, _, v) = call_router(
                &router,
                Method::POST,
                "/api/v1/query",
                Some(&t),
                Some(body),
                &[],
            )
            .await;
            (s, v)
        })
    };
    let replies: Vec<(StatusCode, Value)> = futures::future::join_all((0..limit + 2).map(run))
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let busy = replies
        .iter()
        .filter(|(s, v)| *s == StatusCode::TOO_MANY_REQUESTS && code(v) == "too_many_queries")
        .count();
    let ok = replies.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!((ok, busy), (limit, 2), "{replies:?}");
    assert_eq!(
        h.denied_rows("query.run").await.len(),
        2,
        "refusals are audited"
    );
    // Control: once those finished, their slots are free again.
    h.plane.dp_delay_ms.store(0, Ordering::SeqCst);
    let body = json!({"application": "A-1", "sql": "SELECT count(*) FROM patient"});
    let (s, _, v) = call_router(
        &router,
        Method::POST,
        "/api/v1/query",
        Some(&t),
        Some(body),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// `/metrics`: absent without a configured token, refused without the token, and the
/// exposition carries counts, never a user name or SQL.
#[tokio::test]
async fn metrics_need_the_operator_token_and_carry_no_names() {
    let (h, t) = H::with_login("researcher1").await;
    h.query(&t, "A-1", "SELECT sex, count(*) FROM patient GROUP BY sex")
        .await
        .expect_status(StatusCode::OK);
    let (s, _, _) = call_router(&h.router, Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "no token configured: not served");
    let token = "m".repeat(40);
    let settings = kura::config::HttpSettings {
        metrics_token: Some(kura::config::Secret::new(token.clone())),
        ..(*h.state.settings).clone()
    };
    let state = kura::http::AppState {
        settings: Arc::new(settings),
        ..h.state.clone()
    };
    let router = kura::http::app(state);
    let (s, _, _) = call_router(&router, Method::GET, "/metrics", Some(&t), None, &[]).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a session token is not the operator's"
    );
    let (s, _, body) = call_router(&router, Method::GET, "/metrics", Some(&token), None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let text = body.as_str().unwrap();
    let line = |name: &str, label: &str| {
        text.lines()
            .any(|l| l.starts_with(name) && l.contains(label))
    };
    assert!(line("kura_queries_total", "outcome=\"ok\""), "{text}");
    assert!(line("kura_logins_total", "outcome=\"ok\""), "{text}");
    for series in [
        "kura_http_requests_total",
        "route=\"/api/v1/query\"",
        "kura_audit_chain_length",
        "kura_active_sessions",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    for secret in ["researcher1", "SELECT", "A-1", &t] {
        assert!(!text.contains(secret), "`{secret}` leaked into the metrics");
    }
}

/// The deploy files as an operator would check them: the systemd unit passes
/// `systemd-analyze verify` (with this build's binary in ExecStart), and the compose file
/// runs kura on PostgreSQL from the Dockerfile, with every secret it names declared.
#[test]
fn deploy_files_pass_their_checks() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("deploy/kura.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("kura.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/kura", env!("CARGO_BIN_EXE_kura")),
    )
    .unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian's systemd) must be installed for this check");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // Control: a unit with a typo is caught.
    std::fs::write(
        &copy,
        unit.replace("[Service]", "[Service]\nRestartt=always"),
    )
    .unwrap();
    let typo = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(!typo.stderr.is_empty(), "the control typo went unnoticed");
    let check = r#"
import sys, yaml, os
c = yaml.safe_load(open(sys.argv[1]))
s = c["services"]
assert set(s) >= {"kura", "postgres"}, s.keys()
k = s["kura"]
assert k["environment"]["KURA_STORE_URL"].startswith("postgres://"), k["environment"]
assert "postgres" in k["depends_on"]
assert os.path.exists(os.path.join(os.path.dirname(sys.argv[1]), k["build"]["context"], k["build"]["dockerfile"]))
for svc in s.values():
    for secret in svc.get("secrets", []):
        assert secret in c["secrets"], secret
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", check])
        .arg(root.join("deploy/compose.yaml"))
        .output()
        .expect("python3 with PyYAML");
    assert!(
        out.status.success(),
        "compose.yaml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docker = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    assert!(docker.contains("--bin kura") && docker.contains("USER kura"));
}
