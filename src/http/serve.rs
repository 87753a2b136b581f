//! Running the API on a socket: tracing set-up, listening (plain HTTP, or HTTPS with
//! optional client certificates through [`super::tls`]), graceful shutdown (Ctrl-C or
//! SIGTERM let in-flight requests finish), and the upkeep around it: the start-up checks
//! (the audit chain against its signed checkpoints — a broken chain stops kura unless
//! started with `--allow-broken-chain`; leftovers of builds a crash interrupted), the
//! periodic extract-retention sweep and audit checkpoints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{AppState, app};

/// What runs around the server, from the configuration.
#[derive(Debug, Clone)]
pub struct Upkeep {
    pub retention_days: i64,
    /// Where signed audit checkpoints go (`None`: not written).
    pub checkpoint_dir: Option<PathBuf>,
    pub checkpoint_every: Duration,
    /// Serve even though the chain does not verify at start.
    pub allow_broken_chain: bool,
    /// Extracts directory swept for leftovers of interrupted builds at start.
    pub extracts_dir: Option<PathBuf>,
    /// The separate address serving only `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
}

impl Upkeep {
    pub fn of(cfg: &crate::config::Config, allow_broken_chain: bool) -> Self {
        Self {
            retention_days: cfg.extract_retention_days,
            checkpoint_dir: Some(cfg.checkpoint_dir()),
            checkpoint_every: Duration::from_secs(cfg.audit_checkpoint_secs.max(1)),
            allow_broken_chain,
            extracts_dir: Some(cfg.extracts_dir()),
            metrics_listen: cfg.metrics_listen,
        }
    }
}

/// The start-up checks: the audit chain (against the checkpoints) and the sweep of
/// interrupted extract builds. `Err` means kura must not serve.
async fn start_checks(state: &AppState, upkeep: &Upkeep) -> std::io::Result<()> {
    if let Some(dir) = &upkeep.extracts_dir {
        match crate::sql::extract::sweep_leftovers(dir) {
            Ok(removed) if !removed.is_empty() => {
                tracing::warn!(removed = ?removed, "removed leftovers of interrupted extract builds")
            }
            Ok(_) => {}
            Err(e) => return Err(std::io::Error::other(format!("extract sweep failed: {e}"))),
        }
        // Versions that never became live (an approval that lost its race) or were
        // replaced: only the registered one of each application stays.
        let live = state
            .store
            .extracts()
            .await
            .map_err(|e| std::io::Error::other(format!("cannot list extracts: {e}")))?;
        for x in live.iter().filter(|x| x.destroyed_at.is_none()) {
            state
                .data
                .retire_extracts(&x.application_id, std::path::Path::new(&x.path));
        }
    }
    let checkpoints = match &upkeep.checkpoint_dir {
        Some(dir) => crate::audit::checkpoint::read_dir(dir, state.store.audit_key())
            .map_err(|e| std::io::Error::other(crate::errors::chain(&e)))?,
        None => Vec::new(),
    };
    // A broken chain raises the `broken_chain` alert (audit/broken_chain.toml).
    let (v, alert) = state
        .store
        .check_chain_at_start_against(&checkpoints)
        .await
        .map_err(|e| std::io::Error::other(format!("audit chain could not be verified: {e}")))?;
    tracing::info!(ok = v.ok, events = v.events, head = %v.head, checkpoints = checkpoints.len(), alert = ?alert, "audit chain at start");
    if !v.ok && !upkeep.allow_broken_chain {
        return Err(std::io::Error::other(format!(
            "refusing to serve: the audit chain is broken at entry {} ({}). Have an auditor examine it              (`kura audit verify`), then start with --allow-broken-chain to serve anyway /              監査ログの連結が壊れているため起動を中止しました",
            v.broken_at.unwrap_or_default(),
            v.reason.unwrap_or_default()
        )));
    }
    Ok(())
}

/// Write a checkpoint if the log grew since `last`; returns the newest anchored seq.
async fn checkpoint(state: &AppState, dir: &std::path::Path, last: Option<i64>) -> Option<i64> {
    match state.store.write_checkpoint(dir, last).await {
        Ok(Some(c)) => Some(c.seq),
        Ok(None) => last,
        Err(e) => {
            tracing::error!(error = %crate::errors::chain(&e), "audit checkpoint failed");
            last
        }
    }
}

/// Install the global tracing subscriber (`json` or `text` logs) without trace export
/// (the one-shot commands). Safe to call twice.
pub fn init_tracing(format: &str) {
    let _ = crate::telemetry::init(format, None);
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

/// Serve plain HTTP on `listener` until `shutdown` resolves. The peer address reaches
/// handlers as `ConnectInfo` (the place of use, `http::origin`).
pub async fn serve_plain(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Bind `listen`, call `on_ready` with the bound address, and serve until a shutdown
/// signal: over TLS when `tls` is given, else plain HTTP. The retention sweep runs at
/// start and then hourly.
pub async fn serve(
    state: AppState,
    listen: SocketAddr,
    tls: Option<&super::tls::TlsSetup>,
    upkeep: &Upkeep,
    on_ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    start_checks(&state, upkeep).await?;
    let retention_days = upkeep.retention_days;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let metrics_server = match upkeep.metrics_listen {
        Some(at) => {
            let l = tokio::net::TcpListener::bind(at).await?;
            tracing::info!(addr = %l.local_addr()?, "metrics listening");
            let router = super::metrics::metrics_only(state.clone());
            Some(tokio::spawn(async move {
                let _ = axum::serve(l, router).await;
            }))
        }
        None => None,
    };
    let checkpoints = upkeep.checkpoint_dir.clone().map(|dir| {
        let st = state.clone();
        let every = upkeep.checkpoint_every;
        tokio::spawn(async move {
            let mut last = None;
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                last = checkpoint(&st, &dir, last).await;
            }
        })
    });
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
    on_ready(addr);
    let result = match tls {
        Some(setup) => {
            super::tls::serve(listener, setup, app(state.clone()), shutdown_signal()).await
        }
        None => serve_plain(listener, state.clone(), shutdown_signal()).await,
    };
    sweeper.abort();
    for task in [checkpoints, metrics_server].into_iter().flatten() {
        task.abort();
    }
    // The last word of this run: a checkpoint of the head it leaves.
    if let Some(dir) = &upkeep.checkpoint_dir {
        checkpoint(&state, dir, None).await;
    }
    result
}
