//! Flight SQL against the real `kura demo` binary (its real query core, synthetic data,
//! demo accounts): every statement the HTTP API refuses is refused over Flight SQL with
//! the same code, every statement it answers is answered with the same rows; then the
//! real ADBC Flight SQL driver (Python, `tests/clients/adbc_flight.py`) walks a
//! researcher's session and finds it in the audit log.

use serde_json::{Value, json};

use kura::privacy::disclosure::cell_to_json;

use crate::support::fixtures::PASSWORD;
use crate::support::flight::{self, code_of};
use crate::support::http::{login_over, token_of};
use crate::support::python;
use crate::support::server::Demo;

/// Statements and what the HTTP API does with them (`ok` = answered).
const CASES: &[&str] = &[
    "SELECT sex, count(DISTINCT pid) AS n FROM patient GROUP BY sex ORDER BY sex",
    "SELECT prefecture_code, count(DISTINCT pid) AS n FROM nanbyo_survey WHERE disease_no = 2 GROUP BY prefecture_code ORDER BY prefecture_code",
    "DELETE FROM patient",
    "INSERT INTO patient (pid) VALUES ('x')",
    "COPY patient TO '/tmp/kura-flight.csv'",
    "EXPLAIN ANALYZE SELECT count(*) FROM patient",
    "SELECT pid, sex FROM patient",
    "SELECT count(*) AS n FROM regen_treatment",
    "SELEC 1",
    "SELECT sex FROM patient; DROP TABLE patient",
    "SELECT count(*) AS n FROM '/etc/passwd'",
];

/// The HTTP answer of `sql` as `(code, rows)`: `ok` and the rows, or the error code.
async fn over_http(http: &reqwest::Client, base: &str, token: &str, sql: &str) -> (String, Value) {
    let body = json!({"application": "A-DEMO-0001", "sql": sql});
    let r = http
        .post(format!("{base}/api/v1/query"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    match v["error"]["code"].as_str() {
        Some(code) => (code.to_string(), Value::Null),
        None => ("ok".into(), v["rows"].clone()),
    }
}

/// The Flight answer of `sql` as `(code, rows)`, rows rendered as the HTTP API renders them.
async fn over_flight(c: &mut flight::Client, sql: &str) -> (String, Value) {
    match flight::query(c, sql).await {
        Err(e) => (code_of(&e), Value::Null),
        Ok((_, batches)) => {
            let mut rows = Vec::new();
            for b in &batches {
                for r in 0..b.num_rows() {
                    let row: Vec<Value> = b.columns().iter().map(|a| cell_to_json(a, r)).collect();
                    rows.push(Value::Array(row));
                }
            }
            ("ok".into(), Value::Array(rows))
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn flight_refuses_what_http_refuses_and_the_adbc_driver_works() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(&dir.path().join("demo"), 3000, &[] as &[&str]);
    let base = format!("http://127.0.0.1:{}", demo.port);
    let flight_addr = format!("127.0.0.1:{}", demo.flight_port).parse().unwrap();
    assert!(
        demo.printed
            .iter()
            .any(|l| l.contains(&format!("grpc://{flight_addr}"))),
        "the Flight SQL address is printed: {:#?}",
        demo.printed
    );
    let http = reqwest::Client::new();
    let token = token_of(login_over(&http, &base, "researcher1").await.unwrap()).await;
    let mut c = flight::login(flight_addr, "researcher1", "A-DEMO-0001").await;
    let mut answered = 0;
    for sql in CASES {
        let want = over_http(&http, &base, &token, sql).await;
        let got = over_flight(&mut c, sql).await;
        assert_eq!(
            got.0, want.0,
            "same code over Flight as over HTTP for `{sql}`"
        );
        assert_eq!(got.1, want.1, "same rows for `{sql}`");
        answered += usize::from(want.0 == "ok");
    }
    // Control: the list is not all refusals (nor all answers).
    assert_eq!(answered, 2, "two of the cases are answered");

    let flight_url = format!("grpc://{flight_addr}");
    let printed = python::run(
        "adbc_flight.py",
        &[
            "--flight",
            &flight_url,
            "--http",
            &base,
            "--password",
            PASSWORD,
        ],
    );
    println!("{printed}");
    assert!(printed.contains("audit chain verifies"), "{printed}");
}
