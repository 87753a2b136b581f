//! Trace export (issue 14): `kura serve` with `trace_otlp_endpoint` sends its spans over
//! OTLP/gRPC to a collector — here a fake one on loopback that keeps every span it is
//! sent. The spans must tell an operator where a request spent its time (request →
//! query → stages → audit record, one trace) and nothing about who asked what: no SQL
//! text or literal, no user name, no token, no application id. Off by default, even when
//! the standard `OTEL_EXPORTER_OTLP_ENDPOINT` variable points at a collector.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Value, json};

use crate::support::fixtures::PASSWORD;
use crate::support::server::{Serve, login, post, prepared};

/// A collector that keeps what it receives.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                kept.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Start the collector on a free loopback port.
async fn collector() -> (Collector, SocketAddr) {
    let c = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = TraceServiceServer::new(c.clone());
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await;
    });
    (c, addr)
}

/// An attribute's value as text (strings, numbers, booleans).
fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(&kv.value))
}

/// Everything a span says, in one string (name, attributes, events and their fields).
fn everything(span: &Span) -> String {
    let mut out = span.name.clone();
    for kv in &span.attributes {
        out.push_str(&format!(" {}={}", kv.key, text(&kv.value)));
    }
    for e in &span.events {
        out.push_str(&format!(" event:{}", e.name));
        for kv in &e.attributes {
            out.push_str(&format!(" {}={}", kv.key, text(&kv.value)));
        }
    }
    out
}

/// A query of the demo's suppression application over HTTP: its JSON answer.
async fn query(client: &reqwest::Client, base: &str, token: &str, sql: &str) -> Value {
    let body = json!({"application": "A-DEMO-0001", "sql": sql});
    post(client, base, token, body).await.1
}

/// Wait until the collector holds a span named `name` (or time runs out).
async fn wait_for(c: &Collector, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c.spans.lock().unwrap().iter().any(|s| s.name == name) {
        if Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The literals of the researcher's SQL: none may reach the collector.
const MARK_NUMBER: &str = "1913";
const MARK_TEXT: &str = "ZQXSECRETWORD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_with_stages_and_no_names_or_sql() {
    let (_dir, data) = prepared(1500);
    let (c, addr) = collector().await;
    let extra = format!("trace_otlp_endpoint = \"http://{addr}\"");
    let s = Serve::start(&data, &extra, &[]);
    let client = reqwest::Client::new();
    let token = login(&client, &s.base, "researcher1").await;
    let sql = format!(
        "SELECT sex, count(*) AS n FROM patient WHERE birth_year <> {MARK_NUMBER} \
         AND coalesce(prefecture_code, '') <> '{MARK_TEXT}' GROUP BY sex"
    );
    let answered = query(&client, &s.base, &token, &sql).await;
    let query_id = answered["query_id"]
        .as_str()
        .unwrap_or_else(|| panic!("answered: {answered}"))
        .to_string();
    let refused = query(&client, &s.base, &token, "SELECT pid FROM patient").await;
    assert!(
        refused["error"].is_object(),
        "row-level SQL refused: {refused}"
    );
    // SIGTERM: kura flushes what it has not sent yet before it exits.
    assert!(s.stop().is_some(), "kura stopped on SIGTERM");
    wait_for(&c, "kura.query").await;
    let spans = c.spans.lock().unwrap().clone();

    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "http.request",
        "kura.query",
        "kura.guard",
        "kura.rewrite",
        "kura.execute",
        "kura.disclosure",
        "kura.record",
    ] {
        assert!(names.contains(&want), "no {want} span in {names:?}");
    }
    // The answered query's span, its outcome, and its stages in the same trace under it.
    let q = spans
        .iter()
        .find(|s| s.name == "kura.query" && attr(s, "query_id").as_deref() == Some(&query_id))
        .expect("the answered query's span carries its query id");
    assert_eq!(attr(q, "outcome").as_deref(), Some("answered"));
    assert_eq!(attr(q, "mode").as_deref(), Some("suppression"));
    for stage in ["kura.guard", "kura.execute", "kura.record"] {
        let st = spans
            .iter()
            .find(|s| s.name == stage && s.trace_id == q.trace_id)
            .unwrap_or_else(|| panic!("{stage} in the query's trace"));
        assert!(st.end_time_unix_nano >= st.start_time_unix_nano);
    }
    let guard = spans
        .iter()
        .find(|s| s.name == "kura.guard" && s.trace_id == q.trace_id)
        .unwrap();
    assert_eq!(
        guard.parent_span_id, q.span_id,
        "a stage is a child of its query"
    );
    // The request span above it names the route template and the status.
    let http = spans
        .iter()
        .find(|s| s.name == "http.request" && s.trace_id == q.trace_id)
        .expect("the query's HTTP request in the same trace");
    assert_eq!(http.span_id, q.parent_span_id);
    assert_eq!(attr(http, "http.route").as_deref(), Some("/api/v1/query"));
    assert_eq!(attr(http, "http.status").as_deref(), Some("200"));
    // The refused one carries its code.
    assert!(
        spans
            .iter()
            .any(|s| s.name == "kura.query" && attr(s, "outcome").is_some_and(|o| o != "answered")),
        "the refused query's span carries its code"
    );

    // Nothing of who asked what: scan every span and event.
    let said: Vec<String> = spans.iter().map(everything).collect();
    for secret in [
        MARK_NUMBER,
        MARK_TEXT,
        "researcher1",
        "A-DEMO-0001",
        PASSWORD,
        token.as_str(),
        "SELECT",
        "birth_year",
    ] {
        let leaks: Vec<&String> = said.iter().filter(|t| t.contains(secret)).collect();
        assert!(
            leaks.is_empty(),
            "{secret:?} reached the collector: {leaks:?}"
        );
    }
}

/// The scan above is able to fail: the same scan over a span that does carry the SQL
/// (as a library's own span would, for example) finds it.
#[test]
fn control_the_scan_finds_sql_in_a_span() {
    let mut span = Span {
        name: "sql".into(),
        ..Default::default()
    };
    span.attributes
        .push(opentelemetry_proto::tonic::common::v1::KeyValue {
            key: "db.statement".into(),
            value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(Any::StringValue(format!(
                    "SELECT count(*) FROM patient WHERE birth_year <> {MARK_NUMBER}"
                ))),
            }),
            ..Default::default()
        });
    assert!(everything(&span).contains(MARK_NUMBER));
}

/// Without `trace_otlp_endpoint` nothing is sent, even with the standard OpenTelemetry
/// variables pointing at a collector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_option_no_span_leaves_even_with_otel_variables_set() {
    let (_dir, data) = prepared(1500);
    let (c, addr) = collector().await;
    let endpoint = format!("http://{addr}");
    let s = Serve::start(
        &data,
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint.as_str()),
            ("OTEL_TRACES_EXPORTER", "otlp"),
        ],
    );
    let client = reqwest::Client::new();
    let token = login(&client, &s.base, "researcher1").await;
    let answered = query(
        &client,
        &s.base,
        &token,
        "SELECT sex, count(*) AS n FROM patient GROUP BY sex",
    )
    .await;
    assert!(answered["query_id"].is_string(), "{answered}");
    assert!(s.stop().is_some());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(c.spans.lock().unwrap().is_empty(), "spans left kura");
}

/// A collector setting kura cannot use stops the start with a message naming the option.
#[test]
fn an_unusable_collector_setting_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kura.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\ntrace_otlp_endpoint = \"https://127.0.0.1:4317\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = crate::support::server::kura()
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trace_otlp_ca_file"), "{err}");
}
