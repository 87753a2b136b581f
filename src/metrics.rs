//! Metrics: what an operator's Prometheus scrapes from `GET /metrics` (text format).
//!
//! Guarantees: no label ever carries SQL, a data value, a user name or an application id
//! — labels take only values from fixed sets (route templates, status codes, outcomes,
//! stable error codes, stage and reason names), so a scrape reveals load and health,
//! never who asked what. The series: requests by route and status with latency;
//! queries by outcome and code; latency per query stage (guard, rewrite, execute,
//! disclosure, audit); suppressed cells by reason; ε spent; logins by outcome; extract
//! builds by outcome; and, read at scrape time, active sessions, audit chain length and
//! the memory all queries hold.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every series kura exports.
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
    pub queries: IntCounterVec,
    pub stage_seconds: HistogramVec,
    pub suppressed_cells: IntCounterVec,
    pub epsilon_spent: Gauge,
    pub logins: IntCounterVec,
    pub extract_builds: IntCounterVec,
    pub active_sessions: IntGauge,
    pub audit_chain_length: IntGauge,
    pub query_memory_bytes: IntGauge,
}

/// Latency buckets (seconds) from 1 ms to 2 minutes.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
    let h = HistogramVec::new(opts, labels).expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let epsilon_spent = Gauge::new(
            "kura_epsilon_spent_total",
            "ε charged to DP budgets by answered or failed DP queries, all applications",
        )
        .expect("valid metric");
        r.register(Box::new(epsilon_spent.clone()))
            .expect("unique metric");
        Self {
            http_requests: counter(
                &r,
                "kura_http_requests_total",
                "HTTP requests by route template, method and status",
                &["route", "method", "status"],
            ),
            http_seconds: histogram(
                &r,
                "kura_http_request_duration_seconds",
                "HTTP request latency by route template",
                &["route"],
            ),
            queries: counter(
                &r,
                "kura_queries_total",
                "queries by outcome (ok, denied, error) and stable code",
                &["outcome", "code"],
            ),
            stage_seconds: histogram(
                &r,
                "kura_query_stage_duration_seconds",
                "query latency per stage: guard, rewrite, execute, disclosure, audit",
                &["stage"],
            ),
            suppressed_cells: counter(
                &r,
                "kura_suppressed_cells_total",
                "cells suppressed in released answers, by reason",
                &["reason"],
            ),
            logins: counter(
                &r,
                "kura_logins_total",
                "login attempts by outcome (ok, invalid_credentials, account_locked, rate_limited)",
                &["outcome"],
            ),
            extract_builds: counter(
                &r,
                "kura_extract_builds_total",
                "extract builds by outcome (ok, error)",
                &["outcome"],
            ),
            active_sessions: gauge(
                &r,
                "kura_active_sessions",
                "unexpired, unrevoked sessions (read at scrape time)",
            ),
            audit_chain_length: gauge(
                &r,
                "kura_audit_chain_length",
                "entries in the audit chain (read at scrape time)",
            ),
            query_memory_bytes: gauge(
                &r,
                "kura_query_memory_reserved_bytes",
                "memory held by running queries in the global pool",
            ),
            epsilon_spent,
            registry: r,
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into memory fails only on a malformed family, which `new` cannot build.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Count one query attempt.
pub fn query(outcome: &str, code: Option<&str>) {
    get()
        .queries
        .with_label_values(&[outcome, code.unwrap_or("")])
        .inc();
}

/// Record how long one stage of a query took.
pub fn stage(name: &str, took: Duration) {
    get()
        .stage_seconds
        .with_label_values(&[name])
        .observe(took.as_secs_f64());
}

/// Count suppressed cells by reason.
pub fn suppressed(reason: &str, cells: u64) {
    if cells > 0 {
        get()
            .suppressed_cells
            .with_label_values(&[reason])
            .inc_by(cells);
    }
}

/// Count one login attempt.
pub fn login(outcome: &str) {
    get().logins.with_label_values(&[outcome]).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_carries_every_series() {
        query("ok", None);
        stage("execute", Duration::from_millis(3));
        suppressed("below_k", 2);
        login("invalid_credentials");
        let text = get().render();
        for name in [
            "kura_queries_total",
            "kura_query_stage_duration_seconds_bucket",
            "kura_suppressed_cells_total{reason=\"below_k\"}",
            "kura_logins_total{outcome=\"invalid_credentials\"}",
            "kura_audit_chain_length",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
