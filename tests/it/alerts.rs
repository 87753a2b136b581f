//! Audit alerts (issue 13 §4): each rule of `audit/*.toml` fires on its scenario and stays
//! quiet on a normal day of a researcher; each scenario also runs with its rule removed
//! (the control: the same attack raises nothing when the defence is off). The alert is a
//! chained audit event in the transaction of its trigger; a failing evaluation never fails
//! the audited action; the webhook is tested with a local receiver on loopback.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use kura::audit::alert::webhook::{self, Webhook};
use kura::audit::alert::{AlertRules, parse_rule};

use crate::support::http::{H, Reply, code};

/// The shipped rules with working hours that cover every minute of every day, so a test
/// run at night is a normal day too.
fn all_day() -> &'static str {
    r#"id = "outside_working_hours"
kind = "outside_working_hours"
severity = "info"
[explanation]
ja = "勤務時間外のアクセス"
en = "Access outside working hours"
[parameters]
start = "00:00"
end = "24:00"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
actions = ["session.login", "query.run"]
"#
}

fn shipped() -> AlertRules {
    AlertRules::embedded()
        .unwrap()
        .with_rule("test.toml", all_day())
        .unwrap()
}

/// The shipped rules without `rule` (the control of its scenario).
fn without(rule: &str) -> AlertRules {
    shipped().without(rule)
}

/// The fixture API with `rules` watching every audit write.
async fn watched(rules: AlertRules) -> H {
    let mut h = H::new().await;
    h.state.store = h.state.store.clone().with_alerts(Arc::new(rules));
    h.router = kura::http::app(h.state.clone());
    h
}

/// The open alerts as the auditor sees them.
async fn inbox(h: &H) -> Vec<Value> {
    let aud = h.login("auditor1").await;
    let v = h
        .get("/api/v1/alerts?status=open", &aud)
        .await
        .expect_status(StatusCode::OK);
    v.as_array().unwrap().clone()
}

fn rules_of(alerts: &[Value]) -> Vec<&str> {
    alerts.iter().map(|a| a["rule"].as_str().unwrap()).collect()
}

/// The `seq` of the audit events with `action`, oldest first.
async fn seqs(h: &H, action: &str, outcome: &str) -> Vec<i64> {
    let mut rows = h
        .state
        .store
        .audit_events(&kura::store::AuditFilter {
            action: Some(action.into()),
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    rows.reverse();
    rows.iter()
        .filter(|r| r.event["outcome"] == outcome)
        .map(|r| r.seq)
        .collect()
}

/// A normal day: login, three answered queries, one refusal.
async fn normal_day(h: &H) -> String {
    let r1 = h.login("researcher1").await;
    for sql in [
        "SELECT sex, count(*) FROM patient GROUP BY sex",
        "SELECT prefecture_code, count(*) FROM patient GROUP BY prefecture_code",
        "SELECT birth_year, count(*) FROM patient GROUP BY birth_year",
    ] {
        h.query(&r1, "A-1", sql).await.expect_status(StatusCode::OK);
    }
    let (s, v) = h.query(&r1, "A-1", "SELECT OUT_OF_SCOPE").await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "out_of_scope"));
    r1
}

#[tokio::test]
async fn a_normal_day_raises_no_alert() {
    let h = watched(shipped()).await;
    normal_day(&h).await;
    let alerts = inbox(&h).await;
    assert!(alerts.is_empty(), "{alerts:#?}");
    // The control: the same day outside working hours is noticed.
    let h = watched(
        AlertRules::embedded()
            .unwrap()
            .with_rule(
                "t.toml",
                &all_day().replace(
                    r#"days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]"#,
                    "days = []",
                ),
            )
            .unwrap(),
    )
    .await;
    normal_day(&h).await;
    let mine = of_user(&inbox(&h).await, "researcher1");
    assert_eq!(rules_of(&mine), ["outside_working_hours"]);
}

/// The alerts about `user` (the auditor's own login is an access too).
fn of_user(alerts: &[Value], user: &str) -> Vec<Value> {
    alerts
        .iter()
        .filter(|a| a["user"] == user)
        .cloned()
        .collect()
}

#[tokio::test]
async fn outside_working_hours_fires_once_per_user_and_day() {
    let no_days = all_day().replace(
        r#"days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]"#,
        "days = []",
    );
    let h = watched(shipped().with_rule("t.toml", &no_days).unwrap()).await;
    normal_day(&h).await;
    let alerts = of_user(&inbox(&h).await, "researcher1");
    assert_eq!(rules_of(&alerts), ["outside_working_hours"]);
    let a = &alerts[0];
    assert_eq!(a["user"], "researcher1");
    assert_eq!(a["severity"], "info");
    let login = seqs(&h, "session.login", "ok").await;
    assert_eq!(
        a["events"],
        json!([login[0]]),
        "the first access of the day"
    );
    // The auditor's own logins: one alert for the day, not one per login.
    inbox(&h).await;
    assert_eq!(of_user(&inbox(&h).await, "auditor1").len(), 1);
    assert!(a["message"]["ja"].as_str().unwrap().contains("勤務時間外"));
    assert!(a["message"]["en"].as_str().unwrap().contains("outside"));
}

#[tokio::test]
async fn repeated_refusals_fire_and_the_control_stays_quiet() {
    for (rules, expect) in [(shipped(), true), (without("repeated_refusals"), false)] {
        let h = watched(rules).await;
        let r1 = h.login("researcher1").await;
        for i in 0..4 {
            h.query(&r1, "A-1", &format!("SELECT OUT_OF_SCOPE {i}"))
                .await;
        }
        assert!(
            inbox(&h).await.is_empty(),
            "four refusals are below the threshold"
        );
        h.query(&r1, "A-1", "SELECT OUT_OF_SCOPE 5").await;
        let alerts = inbox(&h).await;
        assert_eq!(!alerts.is_empty(), expect, "{alerts:#?}");
        if expect {
            assert_eq!(rules_of(&alerts), ["repeated_refusals"]);
            assert_eq!(alerts[0]["user"], "researcher1");
            assert_eq!(alerts[0]["application"], "A-1");
            assert_eq!(
                alerts[0]["events"],
                json!(seqs(&h, "query.run", "denied").await)
            );
            // A sixth refusal in the window adds no second alert.
            h.query(&r1, "A-1", "SELECT OUT_OF_SCOPE 6").await;
            assert_eq!(inbox(&h).await.len(), 1);
        }
    }
}

#[tokio::test]
async fn repeated_execution_errors_fire() {
    for (rules, expect) in [(shipped(), 1), (without("repeated_execution_errors"), 0)] {
        let h = watched(rules).await;
        let r1 = h.login("researcher1").await;
        for i in 0..3 {
            let (s, _) = h.query(&r1, "A-1", &format!("SELECT FAIL_EXEC {i}")).await;
            assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        }
        let alerts = inbox(&h).await;
        assert_eq!(alerts.len(), expect, "{alerts:#?}");
        if expect == 1 {
            assert_eq!(alerts[0]["rule"], "repeated_execution_errors");
            assert_eq!(
                alerts[0]["events"],
                json!(seqs(&h, "query.run", "error").await)
            );
        }
    }
}

#[tokio::test]
async fn differencing_suppression_fires() {
    for (rules, expect) in [(shipped(), 1), (without("differencing_suppression"), 0)] {
        let h = watched(rules).await;
        let r1 = h.login("researcher1").await;
        let v = h
            .query(
                &r1,
                "A-1",
                "SELECT sex, count(*) DIFFERENCING FROM patient GROUP BY sex",
            )
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(v["disclosure"]["differencing"], json!([[1, 1]]));
        let alerts = inbox(&h).await;
        assert_eq!(alerts.len(), expect, "{alerts:#?}");
        if expect == 1 {
            assert_eq!(alerts[0]["rule"], "differencing_suppression");
            assert_eq!(
                alerts[0]["events"],
                json!(seqs(&h, "query.run", "ok").await)
            );
        }
    }
}

#[tokio::test]
async fn near_identical_queries_fire() {
    for (rules, expect) in [(shipped(), 1), (without("near_identical_queries"), 0)] {
        let h = watched(rules).await;
        let r1 = h.login("researcher1").await;
        for year in 1950..1960 {
            let sql = format!("SELECT count(*) FROM patient WHERE birth_year = {year}");
            h.query(&r1, "A-1", &sql)
                .await
                .expect_status(StatusCode::OK);
        }
        let alerts = inbox(&h).await;
        assert_eq!(alerts.len(), expect, "{alerts:#?}");
        if expect == 1 {
            assert_eq!(alerts[0]["rule"], "near_identical_queries");
            assert_eq!(alerts[0]["events"].as_array().unwrap().len(), 10);
        }
    }
}

#[tokio::test]
async fn identical_reruns_are_not_near_identical() {
    let h = watched(shipped()).await;
    let r1 = h.login("researcher1").await;
    for _ in 0..12 {
        h.query(&r1, "A-1", "SELECT count(*) FROM patient").await;
    }
    assert!(inbox(&h).await.is_empty());
}

#[tokio::test]
async fn failed_logins_and_lockout_fire() {
    for (rules, expect) in [
        (shipped(), vec!["lockout", "failed_logins"]),
        (without("failed_logins").without("lockout"), vec![]),
    ] {
        let h = watched(rules).await;
        for _ in 0..2 {
            h.session("researcher2", "wrong password").await;
        }
        assert!(
            inbox(&h).await.is_empty(),
            "two failures are below the threshold"
        );
        for _ in 0..3 {
            h.session("researcher2", "wrong password").await;
        }
        let (s, v) = h.session("researcher2", "wrong password").await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::TOO_MANY_REQUESTS, "account_locked")
        );
        let alerts = inbox(&h).await;
        assert_eq!(rules_of(&alerts), expect, "{alerts:#?}");
        if !expect.is_empty() {
            assert!(alerts.iter().all(|a| a["user"] == "researcher2"));
            assert_eq!(alerts[0]["severity"], "critical");
            let failed = seqs(&h, "session.login", "denied").await;
            assert_eq!(alerts[1]["events"], json!(failed[..3]));
            assert_eq!(
                alerts[0]["events"],
                json!([failed[4]]),
                "the failure that locked"
            );
        }
    }
}

#[tokio::test]
async fn dp_budget_below_ten_percent_fires_once() {
    for (rules, expect) in [(shipped(), 1), (without("dp_budget_low"), 0)] {
        let h = watched(rules).await;
        let r1 = h.login("researcher1").await;
        let q = |sql: &str, eps: f64| json!({"application": "A-DP", "sql": sql, "epsilon": eps});
        let sql = "SELECT sex, count(DISTINCT pid) AS patients FROM patient GROUP BY sex";
        h.post("/api/v1/query", &r1, q(sql, 0.5))
            .await
            .expect_status(StatusCode::OK);
        assert!(inbox(&h).await.is_empty(), "half the budget left");
        let other =
            "SELECT prefecture_code, count(DISTINCT pid) FROM patient GROUP BY prefecture_code";
        h.post("/api/v1/query", &r1, q(other, 0.45))
            .await
            .expect_status(StatusCode::OK);
        let third = "SELECT birth_year, count(DISTINCT pid) FROM patient GROUP BY birth_year";
        h.post("/api/v1/query", &r1, q(third, 0.01))
            .await
            .expect_status(StatusCode::OK);
        let alerts = inbox(&h).await;
        assert_eq!(alerts.len(), expect, "{alerts:#?}");
        if expect == 1 {
            assert_eq!(alerts[0]["rule"], "dp_budget_low");
            assert_eq!(alerts[0]["application"], "A-DP");
            assert_eq!(
                alerts[0]["events"],
                json!([seqs(&h, "query.run", "ok").await[1]])
            );
        }
    }
}

/// Edit one audit entry behind kura's back (dropping the append-only trigger first).
async fn tamper(h: &H, seq: i64) {
    let mut raw = h.raw().await;
    kura::store::testing::allow_audit_tampering(&mut raw).await;
    sqlx::query(
        "UPDATE audit_log SET event = replace(event, 'reviewer1', 'reviewer9') WHERE seq = $1",
    )
    .bind(seq)
    .execute(&mut raw)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_broken_chain_at_start_raises_an_alert_naming_the_entry() {
    for (rules, expect) in [(shipped(), 1), (without("broken_chain"), 0)] {
        let h = watched(rules).await;
        let (v, none) = h.state.store.check_chain_at_start().await.unwrap();
        assert!(v.ok && none.is_none(), "an intact chain raises nothing");
        let approve = seqs(&h, "application.approve", "ok").await[0];
        tamper(&h, approve).await;
        let (v, id) = h.state.store.check_chain_at_start().await.unwrap();
        assert_eq!(v.broken_at, Some(approve));
        assert_eq!(id.is_some() as usize, expect);
        let alerts = inbox(&h).await;
        assert_eq!(alerts.len(), expect, "{alerts:#?}");
        if expect == 1 {
            assert_eq!(alerts[0]["rule"], "broken_chain");
            assert_eq!(alerts[0]["events"], json!([approve]));
            let en = alerts[0]["message"]["en"].as_str().unwrap();
            assert!(en.contains(&format!("entry {approve}")), "{en}");
        }
    }
}

#[tokio::test]
async fn an_alert_is_a_chained_audit_event_and_acknowledged_with_a_comment() {
    let h = watched(shipped()).await;
    for _ in 0..3 {
        h.session("nobody", "wrong password").await;
    }
    let alerts = inbox(&h).await;
    assert_eq!(rules_of(&alerts), ["failed_logins"]);
    let id = alerts[0]["id"].as_str().unwrap();
    let raised = h.audit_rows("alert.raise").await;
    assert_eq!(raised[0]["detail"]["alert_id"], id);
    assert_eq!(raised[0]["detail"]["events"], alerts[0]["events"]);
    assert!(h.state.store.verify_audit().await.unwrap().ok);

    let path = format!("/api/v1/alerts/{id}/ack");
    let rev = h.login("reviewer1").await;
    let (s, v) = h.post(&path, &rev, json!({"comment": "seen"})).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "auditors only"
    );
    let r1 = h.login("researcher1").await;
    let (s, _) = h.get("/api/v1/alerts", &r1).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let aud = h.login("auditor1").await;
    let (s, v) = h.post(&path, &aud, json!({"comment": "  "})).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_request"));
    let (s, _) = h
        .post(&path, &aud, json!({"comment": "x".repeat(1001)}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let v = h
        .post(
            &path,
            &aud,
            json!({"comment": "typo by a colleague; confirmed by phone"}),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(v["status"], "acknowledged");
    assert_eq!(v["acknowledged"]["by"], "auditor1");
    let (s, _) = h.post(&path, &aud, json!({"comment": "again"})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = h
        .post("/api/v1/alerts/al_nope/ack", &aud, json!({"comment": "x"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(inbox(&h).await.is_empty());
    let acked = h
        .get("/api/v1/alerts?status=acknowledged", &aud)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(acked[0]["id"], id);
    let ack_events = h.audit_rows("alert.acknowledge").await;
    assert_eq!(ack_events[0]["actor"], "auditor1");
    let (s, _) = h.get("/api/v1/alerts?status=closed", &aud).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_failing_evaluation_never_fails_the_audited_action() {
    let h = watched(shipped()).await;
    // Attack on availability: the alerts table refuses every insert.
    let mut raw = h.raw().await;
    kura::store::testing::refuse_inserts(&mut raw, "alerts").await;
    for _ in 0..3 {
        h.session("nobody", "wrong password").await;
    }
    let r1 = h.login("researcher1").await;
    h.query(&r1, "A-1", "SELECT count(*) FROM patient")
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        seqs(&h, "session.login", "denied").await.len(),
        3,
        "events kept"
    );
    assert!(
        h.audit_rows("alert.raise").await.is_empty(),
        "the rolled-back alert left no event"
    );
    assert!(h.state.store.verify_audit().await.unwrap().ok);
    // Control: healed, the same scenario raises its alert.
    kura::store::testing::allow_inserts(&mut raw, "alerts").await;
    h.session("nobody", "wrong password").await;
    assert_eq!(rules_of(&inbox(&h).await), ["failed_logins"]);
}

#[test]
fn a_bad_rule_file_names_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = all_day().replace("severity = \"info\"", "severity = \"loud\"");
    std::fs::write(dir.path().join("hours.toml"), &text).unwrap();
    let e = AlertRules::load_dir(dir.path()).unwrap_err();
    assert!(e.file.ends_with("hours.toml"), "{e}");
    assert_eq!(e.field, "severity");
    let bad_hours = all_day().replace("end = \"24:00\"", "end = \"25:00\"");
    let e = parse_rule("h.toml", &bad_hours).unwrap_err();
    assert_eq!(e.field, "parameters.start", "{e}");
    // The server refuses to start on it, naming the file.
    let out = crate::support::server::kura()
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("KURA_ALERT_RULES_DIR", dir.path())
        .env("KURA_AUDIT_KEY", "ab".repeat(32))
        .env("KURA_EXTRACT_KEY", "cd".repeat(32))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hours.toml") && err.contains("`severity`"),
        "{err}"
    );
}

/// A one-request-at-a-time HTTP receiver on loopback that answers `status` and hands
/// each body it got to the returned channel.
async fn receiver(status: u16) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                let done = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    body.len() >= len
                });
                if n == 0 || done {
                    let body = text
                        .split_once("\r\n\r\n")
                        .map(|x| x.1.to_string())
                        .unwrap_or_default();
                    let _ = tx.send(body);
                    break;
                }
            }
            let reply =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    (url, rx)
}

#[tokio::test]
async fn the_webhook_gets_each_alert_and_a_failing_one_blocks_nothing() {
    let h = watched(shipped()).await;
    for _ in 0..3 {
        h.session("nobody", "wrong password").await;
    }
    let id = inbox(&h).await[0]["id"].as_str().unwrap().to_string();
    // A receiver that fails: nothing is marked delivered, audit writes go on.
    let (bad, _rx) = receiver(500).await;
    let hook = Webhook::parse(&bad).unwrap();
    assert!(webhook::deliver(&h.state.store, &hook).await.is_err());
    let closed = Webhook::parse("http://127.0.0.1:9/hook").unwrap();
    assert!(webhook::deliver(&h.state.store, &closed).await.is_err());
    h.session("nobody", "wrong password").await;
    assert_eq!(h.state.store.undelivered_alerts(10).await.unwrap().len(), 1);
    // A working receiver gets it once.
    let (good, mut rx) = receiver(200).await;
    let hook = Webhook::parse(&good).unwrap();
    assert_eq!(webhook::deliver(&h.state.store, &hook).await.unwrap(), 1);
    let body: Value = serde_json::from_str(&rx.recv().await.unwrap()).unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["rule"], "failed_logins");
    assert_eq!(
        webhook::deliver(&h.state.store, &hook).await.unwrap(),
        0,
        "delivered once"
    );
    assert!(Webhook::parse("https://example.org/x").is_err());
}
