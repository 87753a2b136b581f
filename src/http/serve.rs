//! Running the API on a socket: tracing set-up, listening (plain HTTP, or HTTPS with
//! optional client certificates through [`super::tls`]), graceful shutdown (Ctrl-C or
//! SIGTERM let in-flight requests finish), and the periodic extract-retention sweep.

use std::net::SocketAddr;
use std::time::Duration;

use super::{AppState, app};

/// Install the global tracing subscriber (`json` or `text`). Safe to call twice.
pub fn init_tracing(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KURA_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "text" {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
}

/// Ctrl-C or SIGTERM (each listener of the process sees it: HTTP and Flight SQL).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

/// Bind `listen`, call `on_ready` with the bound address, and serve until a shutdown
/// signal: over TLS when `tls` is given, else plain HTTP. The retention sweep runs at
/// start and then hourly.
pub async fn serve(
    state: AppState,
    listen: SocketAddr,
    tls: Option<&super::tls::TlsSetup>,
    retention_days: i64,
    on_ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let sweeper = {
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                match crate::store::retention::sweep(&st.store, retention_days, st.today()).await {
                    Ok(done) if !done.is_empty() => {
                        tracing::info!(destroyed = ?done, "extracts destroyed after retention")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "extract retention sweep failed"),
                }
            }
        })
    };
    // A broken chain raises the `broken_chain` alert (audit/broken_chain.toml).
    match state.store.check_chain_at_start().await {
        Ok((v, alert)) => {
            tracing::info!(ok = v.ok, events = v.events, head = %v.head, alert = ?alert, "audit chain at start")
        }
        Err(e) => tracing::error!(error = %e, "audit chain could not be verified at start"),
    }
    on_ready(addr);
    let result = match tls {
        Some(setup) => super::tls::serve(listener, setup, app(state), shutdown_signal()).await,
        None => {
            axum::serve(listener, app(state))
                .with_graceful_shutdown(shutdown_signal())
                .await
        }
    };
    sweeper.abort();
    result
}
