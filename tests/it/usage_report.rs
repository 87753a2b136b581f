//! The usage report (使用状況報告書, issue 13 §2): its figures equal counts taken from the
//! audit log by an independent SQL query over `audit_log` (SQLite's JSON functions, not
//! kura's code); a tampered log fails generation naming the broken entry (API and CLI;
//! the control: the same request succeeds before the edit); CSV/HTML views, filing,
//! the reviewer's filed and missing lists, publication reports.

use axum::http::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;

use kura::policy::fiscal_year;
use kura::report::fiscal_period;

use crate::support::fixtures::today;
use crate::support::http::{H, Reply, code};

fn fy() -> i32 {
    fiscal_year(today())
}

fn report_path(app: &str, format: &str) -> String {
    format!(
        "/api/v1/applications/{app}/usage-report?fy={}&format={format}",
        fy()
    )
}

/// A year of work on A-1: answered (one with a differencing cell), refused and failed
/// queries by researcher1, a query by reviewer2 (named, no pledge: refused), a
/// recommendation by reviewer1.
async fn worked(h: &H) {
    let r1 = h.login("researcher1").await;
    for sql in [
        "SELECT sex, count(*) FROM patient GROUP BY sex",
        "SELECT sex, count(*) DIFFERENCING FROM patient GROUP BY sex",
        "SELECT prefecture_code, count(*) FROM patient GROUP BY prefecture_code",
    ] {
        h.query(&r1, "A-1", sql).await.expect_status(StatusCode::OK);
    }
    h.query(&r1, "A-1", "SELECT OUT_OF_SCOPE 1").await;
    h.query(&r1, "A-1", "SELECT OUT_OF_SCOPE 2").await;
    h.query(&r1, "A-1", "SELECT FAIL_EXEC").await;
    h.query(&r1, "A-DP", "SELECT OUT_OF_SCOPE other application")
        .await;
    let r2 = h.login("reviewer2").await;
    h.query(&r2, "A-1", "SELECT count(*) FROM patient").await;
    let rev = h.login("reviewer1").await;
    h.post(
        "/api/v1/applications/A-1/recommendations",
        &rev,
        json!({"text": "keep the output log"}),
    )
    .await
    .expect_status(StatusCode::CREATED);
}

/// Counts straight from `audit_log` for A-1 in this fiscal year.
async fn counted(h: &H) -> Value {
    let (_, from, to) = fiscal_period(fy()).unwrap();
    let ts =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut raw = h.raw().await;
    let one = async |raw: &mut sqlx::AnyConnection, sql: &str| -> i64 {
        sqlx::query(sql)
            .bind(ts(from))
            .bind(ts(to))
            .fetch_one(raw)
            .await
            .unwrap()
            .get::<i64, _>(0)
    };
    let base = "FROM audit_log WHERE application = 'A-1' AND at >= $1 AND at < $2 AND action = 'query.run'";
    let ok = one(
        &mut raw,
        &format!("SELECT count(*) {base} AND outcome = 'ok'"),
    )
    .await;
    let denied = one(
        &mut raw,
        &format!("SELECT count(*) {base} AND outcome = 'denied'"),
    )
    .await;
    let error = one(
        &mut raw,
        &format!("SELECT count(*) {base} AND outcome = 'error'"),
    )
    .await;
    let out_of_scope = one(
        &mut raw,
        &format!("SELECT count(*) {base} AND code = 'out_of_scope'"),
    )
    .await;
    let users = one(&mut raw, &format!("SELECT count(DISTINCT actor) {base}")).await;
    // JSON inside the event is summed here, not in SQL (the same on SQLite and PostgreSQL).
    let answered: Vec<String> =
        sqlx::query_scalar(&format!("SELECT event {base} AND outcome = 'ok'"))
            .bind(ts(from))
            .bind(ts(to))
            .fetch_all(&mut raw)
            .await
            .unwrap();
    let details: Vec<Value> = answered
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap()["detail"].clone())
        .collect();
    let suppressed: i64 = details
        .iter()
        .map(|d| d["suppressed_cells"].as_i64().unwrap_or(0))
        .sum();
    let differencing: i64 = details
        .iter()
        .map(|d| d["differencing"].as_array().map_or(0, |a| a.len() as i64))
        .sum();
    let sessions = one(
        &mut raw,
        &format!(
            "SELECT count(*) FROM audit_log WHERE action = 'session.login' AND outcome = 'ok' AND at >= $1 AND at < $2
             AND actor IN (SELECT DISTINCT actor {base})"
        ),
    )
    .await;
    let recommendations = one(
        &mut raw,
        "SELECT count(*) FROM audit_log WHERE application = 'A-1' AND action = 'application.recommendation' AND at >= $1 AND at < $2",
    )
    .await;
    let built = one(
        &mut raw,
        "SELECT count(*) FROM audit_log WHERE application = 'A-1' AND action = 'extract.build' AND at >= $1 AND at < $2",
    )
    .await;
    json!({
        "queries_ok": ok, "queries_denied": denied, "queries_error": error,
        "out_of_scope": out_of_scope, "users": users, "suppressed_cells": suppressed,
        "differencing": differencing, "sessions": sessions,
        "recommendations": recommendations, "extract_built": built,
    })
}

#[tokio::test]
async fn the_report_figures_equal_an_independent_count_of_the_audit_log() {
    let h = H::new().await;
    worked(&h).await;
    let r1 = h.login("researcher1").await;
    let want = counted(&h).await;
    let r = h
        .get(&report_path("A-1", "json"), &r1)
        .await
        .expect_status(StatusCode::OK);
    // Non-trivial: every figure was produced by the scenario above.
    assert_eq!(want["queries_ok"], 3, "{want}");
    assert_eq!(
        want["queries_denied"], 3,
        "two out of scope, reviewer2 without a pledge"
    );
    assert_eq!(want["differencing"], 1);
    assert_eq!(r["queries_ok"], want["queries_ok"]);
    assert_eq!(r["queries_denied"], want["queries_denied"]);
    assert_eq!(r["queries_error"], want["queries_error"]);
    assert_eq!(r["refused_by_code"]["out_of_scope"], want["out_of_scope"]);
    assert_eq!(
        r["users"].as_array().unwrap().len() as i64,
        want["users"].as_i64().unwrap()
    );
    assert_eq!(r["suppressed_cells"], want["suppressed_cells"]);
    assert_eq!(
        r["suppressed_by_reason"]["differencing"],
        want["differencing"]
    );
    assert_eq!(
        r["suppressed_by_reason"]["primary_or_secondary"]
            .as_i64()
            .unwrap(),
        want["suppressed_cells"].as_i64().unwrap() - want["differencing"].as_i64().unwrap()
    );
    assert_eq!(r["sessions"], want["sessions"]);
    assert_eq!(
        r["recommendations"].as_array().unwrap().len() as i64,
        want["recommendations"].as_i64().unwrap()
    );
    assert_eq!(r["recommendations"][0]["text"], "keep the output log");
    assert_eq!(r["extract_built"], want["extract_built"]);
    assert_eq!(r["by_user"]["reviewer2"]["queries"], 1);
    assert_eq!(r["by_user"]["researcher1"]["pledged"], true);
    assert!(r["audit"]["head"].as_str().unwrap().len() == 64);
    // The first report's shape stays: no parameters → this fiscal year as JSON.
    let plain = h
        .get("/api/v1/applications/A-1/usage-report", &r1)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(plain["queries_ok"], r["queries_ok"]);
    assert_eq!(plain["fiscal_year"], fy());
}

#[tokio::test]
async fn csv_html_and_pdf_carry_the_same_figures() {
    let h = H::new().await;
    worked(&h).await;
    let aud = h.login("auditor1").await;
    let (s, csv) = h.get(&report_path("A-1", "csv"), &aud).await;
    assert_eq!(s, StatusCode::OK);
    let csv = csv.as_str().unwrap().to_string();
    assert!(csv.starts_with("section,item,value\n"), "{csv}");
    assert!(csv.contains("\nqueries,answered,3\n"), "{csv}");
    assert!(
        csv.contains("\nsuppressed_by_reason,differencing,1\n"),
        "{csv}"
    );
    let (s, html) = h.get(&report_path("A-1", "html"), &aud).await;
    assert_eq!(s, StatusCode::OK);
    let html = html.as_str().unwrap().to_string();
    assert!(html.contains("臨床調査個人票等の使用状況について（報告）"));
    assert!(html.contains("厚生労働省健康局疾病対策課長 殿"));
    assert!(html.contains("lang=\"en\"") && html.contains("usage report"));
    assert!(!html.contains("<script"));
    let (s, pdf) = h.get(&report_path("A-1", "pdf"), &aud).await;
    assert_eq!(s, StatusCode::OK);
    assert!(pdf.as_str().unwrap().starts_with("%PDF-"));
    // The PDF's text (the same renderer, read back by poppler's pdftotext) carries the
    // form's title and the figures of the JSON report.
    let (_, json) = h.get(&report_path("A-1", "json"), &aud).await;
    let r: kura::report::UsageReport = serde_json::from_value(json).unwrap();
    let bytes = kura::report::rendered(&r, kura::report::Format::Pdf, None).unwrap();
    let file = h.dir.path().join("usage.pdf");
    std::fs::write(&file, bytes).unwrap();
    let out = std::process::Command::new("pdftotext")
        .args(["-layout", "-enc", "UTF-8"])
        .arg(&file)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils; tests/run.sh installs it)");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("臨床調査個人票等の使用状況について（報告）"),
        "{text}"
    );
    assert!(
        text.contains("Report on the use of the clinical survey records"),
        "{text}"
    );
    let answered = text.lines().find(|l| l.contains("回答")).unwrap();
    assert!(
        answered.trim_end().ends_with(&r.queries_ok.to_string()),
        "{answered}"
    );
    let (s, v) = h.get(&report_path("A-1", "docx"), &aud).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_request"));
    let (s, _) = h
        .get(
            &report_path("A-1", "json").replace(&fy().to_string(), "1900"),
            &aud,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_tampered_log_fails_the_report_naming_the_broken_entry() {
    let h = H::new().await;
    worked(&h).await;
    let r1 = h.login("researcher1").await;
    // Control: before the edit the report builds.
    h.get(&report_path("A-1", "json"), &r1)
        .await
        .expect_status(StatusCode::OK);
    let mut raw = h.raw().await;
    let seq: i64 = sqlx::query_scalar(
        "SELECT min(seq) FROM audit_log WHERE action = 'query.run' AND outcome = 'ok'",
    )
    .fetch_one(&mut raw)
    .await
    .unwrap();
    kura::store::testing::allow_audit_tampering(&mut raw).await;
    sqlx::query(
        "UPDATE audit_log SET event = replace(event, '\"ok\"', '\"denied\"') WHERE seq = $1",
    )
    .bind(seq)
    .execute(&mut raw)
    .await
    .unwrap();
    let (s, v) = h.get(&report_path("A-1", "json"), &r1).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "audit_chain_broken"),
        "{v}"
    );
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("entry {seq}")), "{msg}");
    // The CLI over the same data dir refuses too, and writes nothing.
    let out_dir = h.dir.path().join("out");
    let out = cli_report(&h, &out_dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("entry {seq}")), "{err}");
    assert!(!out_dir.exists());
}

fn cli_report(h: &H, out_dir: &std::path::Path) -> std::process::Output {
    let mut cmd = crate::support::server::kura();
    cmd.args([
        "report",
        "usage",
        "--application",
        "A-1",
        "--fy",
        &fy().to_string(),
        "--data-dir",
    ])
    .arg(h.dir.path());
    // On a PostgreSQL run the CLI opens the test's database, not a SQLite file.
    if let Some(url) = kura::store::testing::remembered_url(h.dir.path()) {
        cmd.arg("--store-url").arg(url);
    }
    cmd.arg("--out")
        .arg(out_dir)
        .env("KURA_AUDIT_KEY", hex::encode([9u8; 32]))
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_cli_writes_the_same_report_files() {
    let h = H::new().await;
    worked(&h).await;
    let out_dir = h.dir.path().join("out");
    let out = cli_report(&h, &out_dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = format!("usage-A-1-FY{}", fy());
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join(format!("{name}.json"))).unwrap(),
    )
    .unwrap();
    let want = counted(&h).await;
    assert_eq!(json["queries_ok"], want["queries_ok"]);
    assert_eq!(json["queries_error"], want["queries_error"]);
    let csv = std::fs::read_to_string(out_dir.join(format!("{name}.csv"))).unwrap();
    assert!(csv.contains("\nqueries,answered,3\n"));
    assert!(out_dir.join(format!("{name}.html")).exists());
    let pdf = std::fs::read(out_dir.join(format!("{name}.pdf"))).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    let by_cli = h.audit_rows("report.usage").await;
    assert_eq!(by_cli[0]["detail"]["via"], "cli");
}

#[tokio::test]
async fn the_applicant_files_and_reviewers_see_filed_and_missing_reports() {
    let h = H::new().await;
    worked(&h).await;
    let r1 = h.login("researcher1").await;
    let rev = h.login("reviewer1").await;
    let aud = h.login("auditor1").await;
    let path = "/api/v1/applications/A-1/usage-report/file";
    let (s, _) = h.post(path, &aud, json!({"fy": fy()})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "only the applicant files");
    let f = h
        .post(path, &r1, json!({"fy": fy()}))
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(f["report"]["queries_ok"], 3);
    let (s, v) = h.post(path, &r1, json!({"fy": fy()})).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "already_filed"));
    assert_eq!(h.audit_rows("report.usage_file").await.len(), 1);
    let list = h
        .get("/api/v1/reports/usage", &rev)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(list["filed"][0]["application"], "A-1");
    let missing: Vec<(String, i64)> = list["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["application"].as_str().unwrap().into(),
                m["fiscal_year"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(missing.contains(&("A-OLD".into(), 2024)), "{missing:?}");
    assert!(
        !missing.iter().any(|m| m.0 == "A-1"),
        "A-1 is filed and its term runs"
    );
    let (s, _) = h.get("/api/v1/reports/usage", &r1).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn publications_are_recorded_by_the_applicant_and_seen_by_reviewers() {
    let h = H::new().await;
    let r1 = h.login("researcher1").await;
    let rev = h.login("reviewer1").await;
    let path = "/api/v1/applications/A-1/publications";
    let body = json!({"citation": "Sato K. ALS in Japan. J Epi 2026;1:1-9", "date": "2026-10-01", "releases": ["rel_1"]});
    let p = h
        .post(path, &r1, body.clone())
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(p["releases"], json!(["rel_1"]));
    let (s, _) = h.post(path, &rev, body.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = h
        .post(path, &r1, json!({"citation": " ", "date": "2026-10-01"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let long = json!({"citation": "x".repeat(1001), "date": "2026-10-01"});
    assert_eq!(h.post(path, &r1, long).await.0, StatusCode::BAD_REQUEST);
    let list = h.get(path, &rev).await.expect_status(StatusCode::OK);
    assert_eq!(list[0]["citation"], body["citation"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let r2 = h.login("researcher2").await;
    assert_eq!(h.get(path, &r2).await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.audit_rows("publication.record").await.len(), 1);
}
