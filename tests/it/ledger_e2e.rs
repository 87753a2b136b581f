//! The release ledger with the real binary: researcher1 is released a count, `kura demo`
//! is killed with SIGKILL (no shutdown path runs), started again on the same directory,
//! and the count that differs from the first by 1–4 patients is then suppressed for
//! `differencing`: the ledger was committed with the first answer and survived.

use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde_json::{Value, json};

use crate::support::http::{login_over, token_of};
use crate::support::server::{Demo, live_extract};

/// A birth year held by 1–4 patients of the application's extract (read straight from
/// the extract's Parquet: the test knows the data, the attacker would guess).
async fn rare_birth_year(extract: &std::path::Path) -> i64 {
    let ctx = SessionContext::new();
    let file = extract.join("patient.parquet");
    ctx.register_parquet("p", file.to_str().unwrap(), ParquetReadOptions::default())
        .await
        .unwrap();
    let df = ctx
        .sql("SELECT CAST(birth_year AS BIGINT) AS y FROM p GROUP BY birth_year HAVING count(*) BETWEEN 1 AND 4 ORDER BY y LIMIT 1")
        .await
        .unwrap();
    let batches = df.collect().await.unwrap();
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .expect("a rare birth year exists in the demo extract")
        .value(0)
}

async fn count(base: &str, token: &str, sql: &str) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/query"))
        .bearer_auth(token)
        .json(&json!({"application": "A-DEMO-0001", "sql": sql}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn login(base: &str) -> String {
    let r = login_over(&reqwest::Client::new(), base, "researcher1")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    token_of(r).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_survives_kill_9_between_two_queries() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("demo");
    let demo = Demo::start(&data_dir, 3000, &[] as &[&str]);
    let base = format!("http://127.0.0.1:{}", demo.port);
    let token = login(&base).await;
    let year = rare_birth_year(&live_extract(&data_dir, "A-DEMO-0001")).await;
    // Released on its own: a big cell that passes k.
    let but = format!("SELECT count(*) AS n FROM patient WHERE birth_year <> {year}");
    let first = count(&base, &token, &but).await;
    let n = first["rows"][0][0].as_i64().expect("released on its own");
    assert!(n > 100, "{first}");
    // SIGKILL: the process gets no chance to flush anything.
    drop(demo);

    let demo = Demo::start(&data_dir, 3000, &[] as &[&str]);
    let base = format!("http://127.0.0.1:{}", demo.port);
    let token = login(&base).await;
    // The total of all patients would pass k by far; it is suppressed only because the
    // ledger still holds the first cell, 1–4 patients away.
    let all = count(&base, &token, "SELECT count(*) AS n FROM patient").await;
    assert_eq!(all["rows"][0][0], Value::Null, "{all}");
    assert_eq!(all["disclosure"]["differencing"], json!([[0, 0]]), "{all}");
    // The first question again is the same cell: still released, unchanged.
    let again = count(&base, &token, &but).await;
    assert_eq!(again["rows"][0][0].as_i64(), Some(n));
}
