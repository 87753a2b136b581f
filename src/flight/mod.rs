//! Flight SQL stage: Arrow Flight SQL beside the HTTP API, on its own port
//! (`--flight-port`), for the tools researchers use — pandas and polars through ADBC, R
//! (`adbcdrivermanager`), DBeaver and other JDBC clients. Same accounts, same rules, same
//! audit log: it is another door into the same pipeline, not a second pipeline.
//!
//! ```text
//!  transport.rs  TCP (+ TLS from http::tls, ALPN h2, client certificate → PeerInfo)
//!  auth.rs       handshake (basic → auth::login, or a bearer token); bearer on every call
//!  options.rs    kura.application, kura.mode, kura.epsilon, … headers → QueryRequest
//!  service.rs    FlightSqlService: statements and prepared statements → query::Gateway::run;
//!                catalogue calls → catalog.rs; writes, ingest, Substrait, transactions refused
//!  batch.rs      released answer → Arrow batch (suppressed cells NULL, disclosure metadata)
//!  results.rs    answers waiting for their DoGet; prepared.rs  parameter binding
//!  status.rs     refusals → gRPC status with the HTTP API's code and message
//! ```
//!
//! Guarantees: everything `http` guarantees about a query holds here because the query
//! is the gateway's; a call without a live session gets nothing; limits on message size,
//! time per call and concurrent calls mirror the HTTP settings.

pub mod auth;
pub mod batch;
pub mod catalog;
pub mod options;
pub mod prepared;
pub mod results;
pub mod service;
pub mod status;
pub mod transport;

use std::future::Future;
use std::net::SocketAddr;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;

use crate::http::AppState;
use crate::http::tls::TlsSetup;

/// Bind the Flight SQL listener (separately from serving, so that a port in use stops the
/// start with a clear message before anything is served).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        format!(
            "cannot listen for Flight SQL on {addr}: {e}; choose another port with --flight-port (or flight_port in the configuration) / Flight SQL のポート {addr} で待ち受けできません。--flight-port で別のポートを指定してください"
        )
    })
}

/// Serve Flight SQL on `listener` (TLS as `tls` says) until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<&TlsSetup>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), String> {
    let settings = state.settings.clone();
    let limit = settings.body_limit.max(1 << 20);
    let service = FlightServiceServer::new(service::KuraFlightSql::new(state))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(64 << 20);
    let incoming = transport::incoming(listener, tls);
    tonic::transport::Server::builder()
        .timeout(settings.request_timeout)
        .concurrency_limit_per_connection(settings.concurrency)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            settings.concurrency,
        ))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| format!("Flight SQL server failed: {e}"))
}
