//! Flight SQL (issue 15 §1) over real loopback gRPC with arrow-flight's own Flight SQL
//! client, against the real service (`kura::flight`) over the API fixtures and the
//! `FakePlane` (so the control-plane guarantees are pinned whatever the query core does;
//! `flight_demo.rs` repeats the refusals against the real query core of `kura demo`).
//! Every attack is paired with its control: the same call succeeding for the right user,
//! application or connection, so a refusal cannot pass because the server is down.

use std::sync::atomic::Ordering;

use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
use axum::http::StatusCode;
use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use prost::Message;
use serde_json::{Value, json};
use std::sync::Arc;

use crate::support::flight::{self, Client, code_of, fetch, login, query};
use crate::support::http::{H, Reply};

const SQL: &str = "SELECT prefecture_code, count(DISTINCT pid) AS n FROM nanbyo_survey GROUP BY 1";

/// The harness and a Flight SQL service over its state.
async fn served() -> (H, flight::FlightServer) {
    let h = H::new().await;
    let server = flight::start(h.state.clone(), None).await;
    (h, server)
}

/// The audit events of `action` whose `reference` (or query id) is `id`.
async fn audited(h: &H, action: &str, id: &str) -> Vec<Value> {
    h.audit_rows(action)
        .await
        .into_iter()
        .filter(|e| e["reference"] == id || e["detail"]["query_id"] == id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_is_answered_through_the_gateway_suppressed_cells_null_with_the_record() {
    let (h, server) = served().await;
    let mut c = login(server.addr, "researcher1", "A-1").await;
    let (meta, batches) = query(&mut c, SQL).await.unwrap();
    // The FlightInfo carries the query id and the disclosure record as JSON.
    let query_id = meta["query_id"].as_str().unwrap().to_string();
    assert!(query_id.starts_with("q_"), "{meta}");
    assert_eq!(meta["disclosure"]["suppressed"], json!([[1, 1]]), "{meta}");
    assert_eq!(meta["disclosure"]["mode"], "suppression");
    // The batch: the released values with their types; the suppressed cell is NULL.
    let b = &batches[0];
    assert_eq!(b.num_rows(), 2);
    assert_eq!(b.schema().field(1).data_type(), &DataType::Int64);
    let n = b.column(1).as_primitive::<Int64Type>();
    assert_eq!(n.value(0), 412);
    assert!(n.is_null(1), "suppressed cell travels as NULL");
    // The schema carries the same record (what ADBC users see in pandas/pyarrow).
    let md = b.schema().metadata().clone();
    assert_eq!(md["kura.query_id"], query_id);
    let d: Value = serde_json::from_str(&md["kura.disclosure"]).unwrap();
    assert_eq!(d["suppressed_cells"], 1);
    // It went through the gateway: the data plane saw the SQL under A-1, and the query
    // is in the history and the audit log under its id.
    let seen = h.plane.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!((seen.application.as_str(), seen.sql.as_str()), ("A-1", SQL));
    let events = audited(&h, "query.run", &query_id).await;
    assert_eq!(events.len(), 1, "one audit event for the answer");
    assert_eq!(events[0]["outcome"], "ok");
    let history = h
        .state
        .store
        .queries(Some("A-1"), Some("researcher1"), 10)
        .await
        .unwrap();
    assert!(
        history
            .iter()
            .any(|q| q.query_id == query_id && q.outcome == "ok")
    );
    // The login was audited as a Flight login.
    let logins = h.audit_rows("session.login").await;
    assert!(
        logins.iter().any(|e| e["detail"]["via"] == "flight"),
        "{logins:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_no_token_a_bad_password_or_another_users_ticket_gets_nothing() {
    let (h, server) = served().await;
    // No handshake at all.
    let mut anon = flight::client(server.addr).await;
    anon.set_header("kura.application", "A-1");
    let e = anon
        .execute(SQL.into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(code_of(&e), "unauthenticated", "{e}");
    let e = anon.get_catalogs().await.unwrap_err().to_string();
    assert_eq!(code_of(&e), "unauthenticated", "{e}");
    // A made-up token.
    anon.set_token("00".repeat(32));
    let e = anon
        .execute(SQL.into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(code_of(&e), "unauthenticated", "{e}");
    // A wrong password is refused and counts towards the lock, like over HTTP.
    let mut c = flight::client(server.addr).await;
    let e = c
        .handshake("researcher1", "wrong password")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(code_of(&e), "invalid_credentials", "{e}");
    let (failures, _) = h.state.store.login_state("researcher1").await.unwrap();
    assert_eq!(failures, 1);
    // researcher1's ticket, fetched with researcher2's session: not found.
    let mut r1 = login(server.addr, "researcher1", "A-1").await;
    let info = r1.execute(SQL.into(), None).await.unwrap();
    let mut r2 = login(server.addr, "researcher2", "A-1").await;
    let e = fetch(&mut r2, &info).await.unwrap_err();
    assert_eq!(code_of(&e), "not_found", "{e}");
    // Control: the owner fetches it.
    let mine = fetch(&mut r1, &info).await.unwrap();
    assert_eq!(mine[0].num_rows(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_from_the_http_api_works_and_a_logged_out_one_does_not() {
    let (h, server) = served().await;
    let token = h.login("researcher1").await;
    let mut c = flight::client(server.addr).await;
    c.set_token(token.clone());
    c.set_header("kura.application", "A-1");
    let (meta, _) = query(&mut c, SQL).await.unwrap();
    assert!(meta["query_id"].is_string());
    // Logging out over HTTP ends the session for Flight too.
    h.delete("/api/v1/session", &token)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    let e = c.execute(SQL.into(), None).await.unwrap_err().to_string();
    assert_eq!(code_of(&e), "unauthenticated", "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_an_application_the_user_is_not_named_on_is_refused_as_over_http() {
    let (h, server) = served().await;
    // researcher2 is not named on A-1.
    let mut c = login(server.addr, "researcher2", "A-1").await;
    let e = c.execute(SQL.into(), None).await.unwrap_err().to_string();
    assert_eq!(code_of(&e), "not_named_user", "{e}");
    let token = h.login("researcher2").await;
    h.query(&token, "A-1", SQL)
        .await
        .expect_error(StatusCode::FORBIDDEN, "not_named_user");
    // Both attempts are audited as refused queries.
    let denied = h.denied_rows("query.run").await;
    assert_eq!(
        denied
            .iter()
            .filter(|e| e["actor"] == "researcher2")
            .count(),
        2,
        "{denied:?}"
    );
    // The catalogue of A-1 is refused to researcher2 as well, and audited.
    let e = c
        .get_tables(tables_request())
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(code_of(&e), "not_named_user", "{e}");
    assert!(!h.denied_rows("catalog.read").await.is_empty());
    // An expired application, over Flight: term_expired, as over HTTP.
    let mut r3 = login(server.addr, "researcher3", "A-OLD").await;
    let e = r3.execute(SQL.into(), None).await.unwrap_err().to_string();
    assert_eq!(code_of(&e), "term_expired", "{e}");
    // Control: researcher1 is named on A-1 and answered.
    let mut r1 = login(server.addr, "researcher1", "A-1").await;
    assert!(query(&mut r1, SQL).await.is_ok());
    // Changing the application header switches application on the same connection.
    r1.set_header("kura.application", "A-NOPLEDGE");
    let e = r1.execute(SQL.into(), None).await.unwrap_err().to_string();
    assert_eq!(code_of(&e), "pledge_required", "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_application_header_is_refused_with_the_fix() {
    let (_h, server) = served().await;
    let mut c = flight::client(server.addr).await;
    c.handshake("researcher1", crate::support::fixtures::PASSWORD)
        .await
        .unwrap();
    let e = c.execute(SQL.into(), None).await.unwrap_err().to_string();
    assert_eq!(code_of(&e), "application_required", "{e}");
    assert!(e.contains("kura.application"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_writes_ingest_substrait_and_transactions_are_refused_and_audited() {
    let (h, server) = served().await;
    let mut c = login(server.addr, "researcher1", "A-1").await;
    let e = c
        .execute_update("DELETE FROM patient".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(code_of(&e), "statement_not_allowed", "{e}");
    // A SELECT sent as an update is refused too: the update channel is closed.
    let e = c
        .execute_update("SELECT 1 AS one".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(code_of(&e), "statement_not_allowed", "{e}");
    let e = c.begin_transaction().await.unwrap_err().to_string();
    assert_eq!(code_of(&e), "statement_not_allowed", "{e}");
    assert!(e.contains("autocommit"), "{e}");
    // A statement inside a (made-up) transaction.
    let e = c
        .execute(SQL.into(), Some(prost::bytes::Bytes::from_static(b"tx")))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(code_of(&e), "statement_not_allowed", "{e}");
    // Bulk ingest of a batch into a table.
    let schema = Arc::new(Schema::new(vec![Field::new("pid", DataType::Utf8, false)]));
    let rows = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["x"]))]).unwrap();
    let ingest = arrow_flight::sql::CommandStatementIngest {
        table: "patient".into(),
        ..Default::default()
    };
    let e = c
        .execute_ingest(ingest, futures::stream::iter([Ok(rows)]))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(code_of(&e), "statement_not_allowed", "{e}");
    // Each refusal is in the audit log with the command it was.
    let refused = h.denied_rows("flight.refused").await;
    let commands: Vec<&str> = refused
        .iter()
        .map(|e| e["detail"]["command"].as_str().unwrap())
        .collect();
    for want in ["update", "transaction", "bulk_ingest"] {
        assert!(commands.contains(&want), "{want} in {commands:?}");
    }
    // None of them reached the data plane; the control query does.
    let before = h.plane.seen.lock().unwrap().len();
    assert_eq!(before, 0, "no refused call reached the data plane");
    assert!(query(&mut c, SQL).await.is_ok());
    assert_eq!(h.plane.seen.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_audit_no_answer() {
    let (h, server) = served().await;
    let mut c = login(server.addr, "researcher1", "A-1").await;
    let raw = h.break_audit_writes().await;
    let e = c.execute(SQL.into(), None).await.unwrap_err().to_string();
    assert_eq!(code_of(&e), "internal", "{e}");
    let e = crate::support::http::without_ids(&e);
    assert!(!e.contains("412"), "no value leaks: {e}");
    // Control: with the audit log healed, the same statement is answered.
    let mut raw = raw;
    kura::store::testing::heal_audit_writes(&mut raw).await;
    let (_, batches) = query(&mut c, SQL).await.unwrap();
    assert_eq!(batches[0].num_rows(), 2);
}

fn tables_request() -> CommandGetTables {
    CommandGetTables {
        catalog: None,
        db_schema_filter_pattern: None,
        table_name_filter_pattern: None,
        table_types: vec![],
        include_schema: true,
    }
}

/// The table names (and their schemas) `GetTables` lists for the client's application.
async fn listed(c: &mut Client) -> Vec<(String, Schema)> {
    let info = c.get_tables(tables_request()).await.unwrap();
    let batches = fetch(c, &info).await.unwrap();
    let mut out = Vec::new();
    for b in batches {
        let names = b
            .column_by_name("table_name")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let schemas = b
            .column_by_name("table_schema")
            .unwrap()
            .as_binary::<i32>()
            .clone();
        for i in 0..b.num_rows() {
            let ipc =
                arrow_flight::IpcMessage(prost::bytes::Bytes::copy_from_slice(schemas.value(i)));
            out.push((names.value(i).to_string(), Schema::try_from(ipc).unwrap()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalogue_lists_the_applications_scope_only() {
    let (h, server) = served().await;
    let mut r1 = login(server.addr, "researcher1", "A-1").await;
    let mut pms = login(server.addr, "pms1", "PMS-M01").await;
    let a1 = listed(&mut r1).await;
    let m01 = listed(&mut pms).await;
    // What HTTP's catalogue shows for the same application, exactly.
    for (user, app, got) in [("researcher1", "A-1", &a1), ("pms1", "PMS-M01", &m01)] {
        let token = h.login(user).await;
        let v = h
            .get(&format!("/api/v1/catalog?application={app}"), &token)
            .await
            .expect_status(StatusCode::OK);
        let mut want: Vec<String> = v["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        want.sort();
        let names: Vec<String> = got.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names, want, "{app}");
    }
    // Control: the two scopes differ, so each list leaves out tables the other shows.
    let has = |list: &[(String, Schema)], n: &str| list.iter().any(|(m, _)| m == n);
    assert!(
        a1.iter().any(|(n, _)| !has(&m01, n)),
        "A-1 shows a table PMS-M01 does not"
    );
    assert!(
        m01.iter().any(|(n, _)| !has(&a1, n)),
        "PMS-M01 shows a table A-1 does not"
    );
    // Columns come with the catalogue's types and descriptions.
    let (_, patient) = a1.iter().find(|(n, _)| n == "patient").unwrap();
    let pid = patient.field_with_name("pid").unwrap();
    assert_eq!(pid.data_type(), &DataType::Utf8);
    assert!(pid.metadata()["ARROW:FLIGHT:SQL:REMARKS"].contains('/'));
    // Catalogues and schemas name what queries use.
    let info = r1.get_catalogs().await.unwrap();
    let cats = fetch(&mut r1, &info).await.unwrap();
    assert_eq!(cats[0].column(0).as_string::<i32>().value(0), "datafusion");
    let req = CommandGetDbSchemas {
        catalog: None,
        db_schema_filter_pattern: None,
    };
    let info = r1.get_db_schemas(req).await.unwrap();
    let schemas = fetch(&mut r1, &info).await.unwrap();
    assert_eq!(schemas[0].column(1).as_string::<i32>().value(0), "public");
    // The server says it is read-only.
    let info = r1
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerReadOnly,
            SqlInfo::FlightSqlServerName,
        ])
        .await
        .unwrap();
    assert_eq!(fetch(&mut r1, &info).await.unwrap()[0].num_rows(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn prepared_statements_bind_parameters_as_literals_and_each_execution_is_audited() {
    let (h, server) = served().await;
    let mut c = login(server.addr, "researcher1", "A-1").await;
    let sql = "SELECT sex, count(DISTINCT pid) AS n FROM patient WHERE sex = ? GROUP BY sex";
    let mut ps = c.prepare(sql.into(), None).await.unwrap();
    // An injection attempt as a parameter value.
    let value = "1' OR '1'='1";
    let schema = Arc::new(Schema::new(vec![Field::new("p1", DataType::Utf8, true)]));
    let params =
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![value]))]).unwrap();
    ps.set_parameters(params).unwrap();
    let first = ps.execute().await.unwrap();
    let second = ps.execute().await.unwrap();
    let ids: Vec<String> = [&first, &second]
        .iter()
        .map(|i| {
            let m: Value = serde_json::from_slice(&i.app_metadata).unwrap();
            m["query_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_ne!(ids[0], ids[1], "each execution is its own query");
    for id in &ids {
        assert_eq!(audited(&h, "query.run", id).await.len(), 1, "{id}");
    }
    // The gateway saw the value as one quoted literal, never as SQL.
    let seen = h.plane.seen.lock().unwrap().last().cloned().unwrap();
    assert!(
        seen.sql.contains("sex = '1'' OR ''1''=''1'"),
        "bound SQL: {}",
        seen.sql
    );
    // Another user cannot execute researcher1's statement by its handle (the FlightInfo
    // repeats the command, handle included).
    let any =
        arrow_flight::sql::Any::decode(&*first.flight_descriptor.clone().unwrap().cmd).unwrap();
    let cmd: arrow_flight::sql::CommandPreparedStatementQuery = any.unpack().unwrap().unwrap();
    let handle = cmd.prepared_statement_handle;
    let mut r2 = login(server.addr, "researcher2", "A-1").await;
    let cmd = arrow_flight::sql::CommandPreparedStatementQuery {
        prepared_statement_handle: handle,
    };
    let desc = arrow_flight::FlightDescriptor::new_cmd(
        arrow_flight::sql::ProstMessageExt::as_any(&cmd).encode_to_vec(),
    );
    let e = flight::flight_info(&mut r2, "A-1", desc)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(code_of(&e), "not_found", "{e}");
    // A wrong number of parameters is refused with the fix.
    let mut two = c
        .prepare(
            "SELECT sex FROM patient WHERE sex = ? AND sex = ?".into(),
            None,
        )
        .await
        .unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("p1", DataType::Utf8, true)]));
    let one = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["F"]))]).unwrap();
    two.set_parameters(one).unwrap();
    let e = two.execute().await.unwrap_err().to_string();
    assert_eq!(code_of(&e), "invalid_sql", "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dp_parameters_come_from_the_call_headers_and_are_checked_like_the_json_body() {
    let (h, server) = served().await;
    let mut c = login(server.addr, "researcher1", "A-DP").await;
    // No ε: the same refusal as the HTTP API gives.
    let e = c.execute(SQL.into(), None).await.unwrap_err().to_string();
    assert_eq!(code_of(&e), "invalid_request", "{e}");
    assert!(e.contains("epsilon"), "{e}");
    c.set_header("kura.epsilon", "not a number");
    let e = c.execute(SQL.into(), None).await.unwrap_err().to_string();
    assert_eq!(code_of(&e), "invalid_request", "{e}");
    assert!(e.contains("kura.epsilon"), "{e}");
    c.set_header("kura.epsilon", "0.25");
    let (meta, _) = query(&mut c, SQL).await.unwrap();
    assert_eq!(meta["disclosure"]["epsilon_spent"], json!(0.25), "{meta}");
    let spent = h
        .state
        .store
        .epsilon_spent("A-DP", kura::policy::fiscal_year(kura::policy::today()));
    assert!((spent.await.unwrap() - 0.25).abs() < 1e-9);
    // Suppression mode asked of a DP approval: refused as over HTTP.
    c.set_header("kura.mode", "suppression");
    let e = c.execute(SQL.into(), None).await.unwrap_err().to_string();
    assert_eq!(code_of(&e), "forbidden", "{e}");
}

/// Two doors, one extract: the two queries execute at the same time, but their ledger
/// read → check → record sections never overlap (the query's turn, `query/serial.rs`).
/// Queries of two different extracts take the same server-wide turn (each is checked
/// against the other application's releases too). The overlap the turn prevents is the
/// one the same counters see in execution, so the measure can see it.
#[tokio::test(flavor = "multi_thread")]
async fn http_and_flight_queries_of_one_extract_take_turns() {
    let (h, server) = served().await;
    h.plane.query_delay_ms.store(150, Ordering::SeqCst);
    // One query over Flight and one over HTTP at the same time; `(user, app)` of the HTTP one.
    let both = async |http_user: &str, http_app: &str| {
        let mut c = login(server.addr, "researcher1", "A-1").await;
        let token = h.login(http_user).await;
        h.plane.max_running.store(0, Ordering::SeqCst);
        h.plane.max_in_turn.store(0, Ordering::SeqCst);
        let (flight, (status, body)) =
            tokio::join!(query(&mut c, SQL), h.query(&token, http_app, SQL));
        flight.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        (
            h.plane.max_running.load(Ordering::SeqCst),
            h.plane.max_in_turn.load(Ordering::SeqCst),
        )
    };
    assert_eq!(
        both("researcher1", "A-1").await,
        (2, 1),
        "two doors, one extract: executed together, checked and recorded one at a time"
    );
    assert_eq!(
        both("pms1", "PMS-M01").await,
        (2, 1),
        "two extracts: the same, under the server-wide line"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_client_certificates_bind_flight_sessions_to_the_account() {
    use crate::support::fixtures::PASSWORD;
    let pki = crate::tls::Pki::new();
    let setup = kura::http::tls::load(&pki.tls_config(None, None))
        .unwrap()
        .unwrap();
    let h = H::new().await;
    let settings = kura::config::HttpSettings {
        bind_certificate_to_user: true,
        ..Default::default()
    };
    let state = kura::http::AppState {
        settings: Arc::new(settings),
        ..h.state.clone()
    };
    let server = flight::start(state, Some(setup)).await;
    let connect = async |id| flight::tls_client(server.addr, pki.client_config(id)).await;
    // researcher1 with researcher1's certificate: logged in and answered.
    let mut own = connect(Some(&pki.researcher1)).await.unwrap();
    own.handshake("researcher1", PASSWORD).await.unwrap();
    own.set_header("kura.application", "A-1");
    assert!(query(&mut own, SQL).await.is_ok());
    // researcher2's certificate, logging in as researcher1: refused before the password.
    let mut other = connect(Some(&pki.researcher2)).await.unwrap();
    let e = other
        .handshake("researcher1", PASSWORD)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(code_of(&e), "certificate_mismatch", "{e}");
    assert_eq!(
        h.state.store.login_state("researcher1").await.unwrap().0,
        0,
        "no lockout count"
    );
    // researcher1's token on researcher2's connection: refused on the call itself.
    other.set_token(own.token().unwrap().clone());
    other.set_header("kura.application", "A-1");
    let e = other
        .execute(SQL.into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(code_of(&e), "certificate_mismatch", "{e}");
    let denied = h.denied_rows("session.certificate").await;
    assert!(!denied.is_empty(), "the per-call refusal is audited");
    // A certificate of another CA, or none: the TLS handshake itself fails.
    for id in [Some(&pki.researcher1_other_ca), None] {
        let refused = match connect(id).await {
            Err(_) => true,
            Ok(mut c) => c.handshake("researcher1", PASSWORD).await.is_err(),
        };
        assert!(
            refused,
            "a connection without a certificate of the CA gets nowhere"
        );
    }
    // Plain gRPC on the TLS port gets nothing either.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        let mut c = arrow_flight::sql::client::FlightSqlServiceClient::new(ch);
        assert!(c.handshake("researcher1", PASSWORD).await.is_err());
    }
}

/// Restrict A-1's approval to `block`, as a change approval would (issue 16 §1).
async fn restrict_a1(h: &H, block: &str) {
    let mut app = h.state.store.application("A-1").await.unwrap().unwrap();
    let before = app.updated_at;
    app.approval.as_mut().unwrap().networks = Some(vec![block.to_string()]);
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
}

/// Attack: the named user runs statements and reads the catalogue over Flight from outside
/// the approval's place of use (issue 16 §1). Flight passes its connection's peer address to
/// the gateway, so the approval's networks hold over this door too. Control: the same
/// calls answer when the approved network is the client's (127.0.0.1) — which also shows
/// the address arrives (an unknown origin would be refused there as well).
#[tokio::test(flavor = "multi_thread")]
async fn attack_flight_from_outside_the_place_of_use_is_refused() {
    let (h, server) = served().await;
    let mut c = login(server.addr, "researcher1", "A-1").await;
    restrict_a1(&h, "127.0.0.2/32").await;
    let e = c.execute(SQL.into(), None).await.unwrap_err().to_string();
    assert_eq!(code_of(&e), "outside_place_of_use", "{e}");
    let e = c
        .get_tables(tables_request())
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(code_of(&e), "outside_place_of_use", "{e}");
    restrict_a1(&h, "127.0.0.1/32").await;
    let (_, batches) = query(&mut c, SQL).await.unwrap();
    assert_eq!(batches[0].num_rows(), 2);
    assert!(c.get_tables(tables_request()).await.is_ok());
}
