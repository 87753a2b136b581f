//! Telemetry: the process's log output and, when an operator configures a collector
//! (`trace_otlp_endpoint`), its trace spans exported over OTLP/gRPC to an OpenTelemetry
//! collector (Jaeger, Tempo, the OpenTelemetry Collector …). Off by default: with the
//! option empty no exporter exists, whatever `OTEL_*` variables the environment holds.
//!
//! Guarantees (the same as [`crate::metrics`]): a span carries only ids kura made (the
//! request id, the query id that links a trace to its audit event), route templates,
//! status codes, disclosure modes, outcome codes, stage names and durations — never SQL
//! text, a data value, a user name, a token or an application id. The spans: one per
//! HTTP request (`http.request`), one per query (`kura.query`) and one per stage under
//! it (`kura.guard`, `kura.rewrite`, `kura.execute`, `kura.disclosure`; DP:
//! `kura.dp.prepare`, `kura.dp.release`; `kura.record` for the audit transaction).

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Where spans go and how the connection is secured.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceExport {
    /// `http://host:port` (plain, an internal network) or `https://host:port`.
    pub endpoint: String,
    /// PEM bundle of the CA that signs the collector's certificate (`https` only);
    /// without it the system's web roots are not trusted either: an `https` endpoint
    /// needs this file.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Why a trace exporter could not be set up (kura then does not start).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "trace_otlp_endpoint must start with http:// or https://, got {0:?} / trace_otlp_endpoint は http:// または https:// で始めてください"
    )]
    Scheme(String),
    #[error(
        "an https trace_otlp_endpoint needs trace_otlp_ca_file (the collector's CA, PEM) / https の trace_otlp_endpoint には trace_otlp_ca_file（コレクタの CA 証明書）が必要です"
    )]
    NoCa,
    #[error("cannot read trace_otlp_ca_file {path}: {source} / CA 証明書を読めません")]
    Ca {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot set up the OTLP trace exporter: {0} / トレース送信を設定できません")]
    Exporter(String),
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes the spans not yet sent.
#[must_use = "keep it until the server stops, then call shutdown"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Send what is buffered and stop the exporter (bounded: the SDK's export timeout).
    pub async fn shutdown(mut self) {
        if let Some(p) = self.provider.take() {
            // The SDK blocks while it flushes; off the async workers.
            let done = tokio::task::spawn_blocking(move || p.shutdown()).await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "trace exporter did not shut down cleanly");
            }
        }
    }
}

/// The log filter: `KURA_LOG`, else info for kura and quieter libraries.
fn log_filter() -> EnvFilter {
    EnvFilter::try_from_env("KURA_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info,sqlx=warn"))
}

/// Only kura's own spans are exported (a library's spans could carry what ours never
/// do, such as SQL text).
fn export_filter() -> EnvFilter {
    EnvFilter::new("off,kura=info")
}

/// Install the global subscriber: logs (`json` or `text`) to standard error and, if
/// `export` is given, spans to the collector. Must run inside the Tokio runtime (the
/// gRPC channel lives on it). A second call leaves the first subscriber in place.
pub fn init(log_format: &str, export: Option<&TraceExport>) -> Result<Telemetry, TelemetryError> {
    let provider = export.map(provider).transpose()?;
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("kura"))
            .with_filter(export_filter())
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if log_format == "text" {
        fmt.with_filter(log_filter()).boxed()
    } else {
        fmt.json()
            .flatten_event(true)
            .with_filter(log_filter())
            .boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(Telemetry { provider })
}

/// A tracer provider that batches spans to the OTLP/gRPC endpoint.
fn provider(export: &TraceExport) -> Result<SdkTracerProvider, TelemetryError> {
    let endpoint = export.endpoint.trim();
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10));
    if endpoint.starts_with("https://") {
        let path = export.ca_file.as_ref().ok_or(TelemetryError::NoCa)?;
        let pem = std::fs::read(path).map_err(|source| TelemetryError::Ca {
            path: path.display().to_string(),
            source,
        })?;
        let ca = tonic::transport::Certificate::from_pem(pem);
        builder =
            builder.with_tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(ca));
    } else if !endpoint.starts_with("http://") {
        return Err(TelemetryError::Scheme(endpoint.to_string()));
    }
    let exporter = builder
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("kura")
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_endpoint_or_a_missing_ca_stops_the_start() {
        let bad = TraceExport {
            endpoint: "collector:4317".into(),
            ca_file: None,
        };
        assert!(matches!(provider(&bad), Err(TelemetryError::Scheme(_))));
        let no_ca = TraceExport {
            endpoint: "https://collector:4317".into(),
            ca_file: None,
        };
        assert!(matches!(provider(&no_ca), Err(TelemetryError::NoCa)));
        let missing = TraceExport {
            endpoint: "https://collector:4317".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
        };
        assert!(matches!(provider(&missing), Err(TelemetryError::Ca { .. })));
        let plain = TraceExport {
            endpoint: "http://127.0.0.1:4317".into(),
            ca_file: None,
        };
        let p = provider(&plain).expect("a plain endpoint builds (connects lazily)");
        let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
    }
}
