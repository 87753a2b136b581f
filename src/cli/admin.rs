//! Operator commands: `kura user add/disable/reset-password` and `kura audit verify`.
//! They act on the same store as the server, so every account change is audited in the
//! same transaction, with actor `operator:<OS user>`.

use std::io::BufRead;
use std::process::ExitCode;

use crate::audit::AuditKey;
use crate::auth;
use crate::cli::{AuditCommand, ConfigArgs, UserCommand};
use crate::config::{Config, process_env};
use crate::store::model::{NewUser, Role};
use crate::store::{Opening, Store};

fn operator() -> String {
    format!(
        "operator:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

/// Open the store of a configuration (creating the data dir), with the alert rules of
/// the configuration (a bad rule file stops the command here, naming file and field).
/// Commands open it as [`Opening::Tool`]: a running server's reservations stay as they are.
pub async fn open_store(cfg: &Config, key: AuditKey, opening: Opening) -> Result<Store, String> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", cfg.data_dir.display()))?;
    let rules = crate::cli::report::alert_rules(cfg)?;
    let url = cfg.store_url();
    let store = Store::connect_with(&url, key, opening, cfg.store.max_connections as u32)
        .await
        .map_err(|e| {
            format!(
                "cannot open the control-plane database {}: {e}",
                redact_url(&url)
            )
        })?;
    Ok(store.with_alerts(std::sync::Arc::new(rules)))
}

/// A store URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let auth = &url[s + 3..at];
            match auth.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn read_password(stdin: bool) -> Result<(String, bool), String> {
    if stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let pw = line.trim_end_matches(['\r', '\n']).to_string();
        auth::check_password_strength(&pw).map_err(|e| e.to_string())?;
        Ok((pw, false))
    } else {
        Ok((auth::random_hex(12).map_err(|e| e.to_string())?, true))
    }
}

pub async fn user_command(args: ConfigArgs, action: UserCommand) -> Result<ExitCode, String> {
    let cfg = args.load()?;
    let key = cfg.audit_key(&process_env).map_err(|e| e.to_string())?;
    let store = open_store(&cfg, key, Opening::Tool).await?;
    match action {
        UserCommand::Add {
            username,
            roles,
            manufacturer,
            facility,
            display_name,
            affiliation,
            title,
            password_stdin,
        } => {
            let roles: Vec<Role> = roles
                .iter()
                .map(|r| Role::parse(r).ok_or_else(|| format!("unknown role `{r}`; use researcher, reviewer, auditor, pms, admin or facility / 不明なロールです")))
                .collect::<Result<_, _>>()?;
            if roles.contains(&Role::Pms) != manufacturer.is_some() {
                return Err("a pms account needs --manufacturer, and only pms accounts take one / pms ロールには --manufacturer が必要です".into());
            }
            // seeds (issue 16 §2): a medical institution's account is bound to one facility
            let valid = facility
                .as_deref()
                .is_some_and(crate::policy::facility::valid_facility_code);
            if roles.contains(&Role::Facility) != valid {
                return Err("a facility account needs --facility CODE (1–32 letters, digits, - or _), and only facility accounts take one / facility ロールには --facility が必要です".into());
            }
            let (pw, generated) = read_password(password_stdin)?;
            let hash = auth::hash_password(&pw).map_err(|e| e.to_string())?;
            store
                .create_user(
                    &NewUser {
                        username: username.clone(),
                        password_hash: hash,
                        roles,
                        manufacturer,
                        display_name,
                        affiliation,
                        title,
                    },
                    &operator(),
                )
                .await
                .map_err(|e| e.to_string())?;
            if let Some(code) = &facility {
                store
                    .set_facility(&username, Some(code), &operator())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            println!("created {username} / アカウントを作成しました");
            if generated {
                println!("password: {pw}");
            }
        }
        UserCommand::Disable { username } => {
            store
                .set_disabled(&username, true, &operator())
                .await
                .map_err(|e| e.to_string())?;
            println!("disabled {username}; its sessions are revoked / アカウントを無効にしました");
        }
        UserCommand::ResetPassword {
            username,
            password_stdin,
        } => {
            let (pw, generated) = read_password(password_stdin)?;
            let hash = auth::hash_password(&pw).map_err(|e| e.to_string())?;
            store
                .set_password(&username, &hash, &operator())
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "password reset for {username}; lockout cleared, sessions revoked / パスワードを再設定しました"
            );
            if generated {
                println!("password: {pw}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit_command(args: ConfigArgs, action: AuditCommand) -> Result<ExitCode, String> {
    let cfg = args.load()?;
    let key = cfg.audit_key(&process_env).map_err(|e| e.to_string())?;
    let store = open_store(&cfg, key, Opening::Tool).await?;
    match action {
        AuditCommand::Verify { checkpoint } => {
            let checkpoints = match &checkpoint {
                Some(file) => crate::audit::checkpoint::read(file, store.audit_key())
                    .map_err(|e| crate::errors::chain(&e))?,
                None => Vec::new(),
            };
            let v = store
                .verify_audit_against(&checkpoints)
                .await
                .map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string(&v).map_err(|e| e.to_string())?);
            Ok(if v.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        AuditCommand::Checkpoint => {
            match store
                .write_checkpoint(&cfg.checkpoint_dir(), None)
                .await
                .map_err(|e| crate::errors::chain(&e))?
            {
                Some(c) => println!(
                    "checkpoint of entry {} written to {} / チェックポイントを書き出しました",
                    c.seq,
                    cfg.checkpoint_dir().display()
                ),
                None => println!("the audit log is empty; no checkpoint / 監査ログが空です"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Build the services of a server from its configuration.
pub async fn build_state(cfg: &Config) -> Result<crate::http::AppState, String> {
    use std::sync::Arc;
    let key = cfg.audit_key(&process_env).map_err(|e| e.to_string())?;
    let extract_key = cfg
        .secret("extract_key", &process_env)
        .map_err(|e| e.to_string())?;
    let catalog = Arc::new(load_catalog(cfg)?);
    let store = open_store(cfg, key, Opening::Server).await?;
    let plane = Arc::new(open_plane(cfg, &extract_key, &catalog).await?);
    app_state(cfg, store, plane, catalog).await
}

/// The configured catalogue (`catalog`, else the embedded one).
pub(crate) fn load_catalog(cfg: &Config) -> Result<crate::catalog::Catalog, String> {
    match &cfg.catalog {
        Some(p) => crate::catalog::Catalog::load(p),
        None => crate::catalog::Catalog::embedded(),
    }
    .map_err(|e| crate::errors::chain(&e))
}

/// The data plane over the configured registry and extracts directories.
pub(crate) async fn open_plane(
    cfg: &Config,
    extract_key: &[u8],
    catalog: &std::sync::Arc<crate::catalog::Catalog>,
) -> Result<crate::query::engine_plane::EnginePlane, String> {
    let mode = cfg.engine.engine_mode()?;
    let plane = crate::query::engine_plane::EnginePlane::open(
        cfg.registry_dir(),
        cfg.extracts_dir(),
        extract_key,
        catalog.clone(),
        cfg.limits(),
    )
    .await
    .map_err(|e| crate::errors::chain(&e))?;
    // scale-out (issue 15 §3): rewritten plans on a Ballista cluster
    match mode {
        crate::config::EngineMode::Local => Ok(plane),
        crate::config::EngineMode::Ballista { host, port } => with_cluster(cfg, plane, &host, port),
    }
}

/// `plane` executing on the Ballista scheduler at `host:port`.
#[cfg(feature = "ballista")]
fn with_cluster(
    cfg: &Config,
    plane: crate::query::engine_plane::EnginePlane,
    host: &str,
    port: u16,
) -> Result<crate::query::engine_plane::EnginePlane, String> {
    use crate::engine::ballista::Cluster;
    let extracts = cfg.extracts_dir();
    std::fs::create_dir_all(&extracts).map_err(|e| format!("{}: {e}", extracts.display()))?;
    let cluster = Cluster::new(host, port, &extracts)?;
    tracing::info!(%host, port, "rewritten plans execute on the Ballista cluster");
    Ok(plane.with_cluster(cluster))
}

/// Without the `ballista` feature, Ballista mode cannot start.
#[cfg(not(feature = "ballista"))]
fn with_cluster(
    _: &Config,
    _: crate::query::engine_plane::EnginePlane,
    _: &str,
    _: u16,
) -> Result<crate::query::engine_plane::EnginePlane, String> {
    Err("engine.mode = \"ballista\": this kura was built without the `ballista` feature; build it with default features / この kura は ballista 機能なしでビルドされています".into())
}

/// The services handed to the HTTP handlers (the policy loaded from the store).
async fn app_state(
    cfg: &Config,
    store: Store,
    data: std::sync::Arc<crate::query::engine_plane::EnginePlane>,
    catalog: std::sync::Arc<crate::catalog::Catalog>,
) -> Result<crate::http::AppState, String> {
    let policy = crate::policy::Policy::load(&store)
        .await
        .map_err(|e| crate::errors::chain(&e))?;
    // the output airlock (issue 13 §1): the font of release charts
    crate::airlock::files::chart::configure_font(cfg.chart_font.clone());
    let mut settings = cfg.http_settings();
    // seeds (issue 16 §1): the proxies whose forwarded address counts for the place of use
    settings.trusted_proxies = cfg.trusted_proxies().map_err(|e| e.to_string())?;
    settings.metrics_token = cfg.metrics_token(&process_env).map_err(|e| e.to_string())?;
    // production (issue 14): one memory pool for all queries, queries on their own runtime
    crate::engine::memory::set_global_limit(cfg.memory_pool_mib << 20);
    crate::engine::runtime::configure(cfg.query_threads);
    // annual reports (issue 13 §3): bad definition files stop the start, naming file and field
    match &cfg.annual_reports_dir {
        Some(dir) => crate::report::annual::Definitions::load_dir(dir, &catalog),
        None => crate::report::annual::Definitions::embedded(&catalog),
    }
    .map_err(|e| e.to_string())?;
    Ok(crate::http::AppState {
        store,
        policy: std::sync::Arc::new(policy),
        data,
        catalog,
        settings: std::sync::Arc::new(settings),
        admission: std::sync::Arc::new(crate::query::admission::Admission::new(cfg.query_per_user)),
        login_rate: std::sync::Arc::new(crate::auth::rate::AddressRate::per_minute(
            cfg.login_per_minute,
        )),
    })
}

/// `kura serve`.
pub async fn serve_command(
    args: ConfigArgs,
    listen: Option<std::net::SocketAddr>,
    flight_port: Option<u16>,
    tls_args: crate::cli::TlsArgs,
    allow_broken_chain: bool,
) -> Result<ExitCode, String> {
    let mut cfg = args.load()?;
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if flight_port.is_some() {
        cfg.flight_port = flight_port;
    }
    tls_args.apply(&mut cfg.tls);
    // TLS first: a broken [tls] stops the server before anything else is opened.
    let tls = crate::http::tls::load(&cfg.tls).map_err(|e| crate::errors::chain(&e))?;
    // So does Ballista mode without an explicit scheduler address (issue 15 §3).
    cfg.engine.engine_mode()?;
    // Logs, and trace export when a collector is configured (issue 14); a bad
    // collector setting stops the start like a bad [tls].
    let telemetry = crate::telemetry::init(&cfg.log_format, cfg.trace_export().as_ref())
        .map_err(|e| e.to_string())?;
    let state = build_state(&cfg).await?;
    // oversight (issue 13 §4): webhook notification of alerts, if configured
    let _webhook = crate::cli::report::webhook(&cfg, &state.store)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Flight SQL (issue 15): bound before anything is served, so a port in use stops the start.
    let flight = start_flight(cfg.flight_listen(), &state, tls.as_ref()).await?;
    let upkeep = crate::http::serve::Upkeep::of(&cfg, allow_broken_chain);
    let served = crate::http::serve::serve(state, cfg.listen, tls.as_ref(), &upkeep, |addr| {
        tracing::info!(%addr, scheme, "kura listening");
        println!("kura listening on {scheme}://{addr} / 待ち受け中");
        if let Some(f) = flight {
            println!(
                "Flight SQL on {} / Flight SQL 待ち受け中",
                flight_url(f, scheme)
            );
        }
    })
    .await;
    // The spans of the last requests reach the collector before kura exits.
    telemetry.shutdown().await;
    served.map_err(|e| format!("server failed: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// The demo's Flight SQL port unless `--flight-port` says otherwise (`shared/API.md`).
pub const DEMO_FLIGHT_PORT: u16 = 8815;

/// Start Flight SQL on `addr` (if set) beside the HTTP API; returns its bound address.
async fn start_flight(
    addr: Option<std::net::SocketAddr>,
    state: &crate::http::AppState,
    tls: Option<&crate::http::tls::TlsSetup>,
) -> Result<Option<std::net::SocketAddr>, String> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = crate::flight::bind(addr).await?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let (state, tls) = (state.clone(), tls.cloned());
    tokio::spawn(async move {
        let stop = crate::http::serve::shutdown_signal();
        if let Err(e) = crate::flight::serve(listener, state, tls.as_ref(), stop).await {
            tracing::error!(error = %e, "Flight SQL stopped");
        }
    });
    Ok(Some(bound))
}

/// The URL a Flight SQL client connects to.
fn flight_url(addr: std::net::SocketAddr, http_scheme: &str) -> String {
    let scheme = if http_scheme == "https" {
        "grpc+tls"
    } else {
        "grpc"
    };
    format!("{scheme}://{addr}")
}

/// `kura demo`: prepare everything, print URL and credentials, serve on loopback.
pub async fn demo_command(
    data_dir: std::path::PathBuf,
    (port, flight_port): (u16, Option<u16>),
    password: Option<String>,
    patients: u64,
    tls_args: crate::cli::TlsArgs,
) -> Result<ExitCode, String> {
    use crate::cli::demo;
    let err = |e: &dyn std::error::Error| crate::errors::chain(e);
    if let Some(p) = &password {
        auth::check_password_strength(p).map_err(|e| format!("--demo-password: {e}"))?;
    }
    demo::prepare_dir(&data_dir).map_err(|e| err(&e))?;
    let mut cfg = Config {
        data_dir: data_dir.clone(),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        flight_port: Some(flight_port.unwrap_or(DEMO_FLIGHT_PORT)),
        log_format: std::env::var("KURA_LOG_FORMAT").unwrap_or_else(|_| "text".into()),
        ..Config::default()
    };
    tls_args.apply(&mut cfg.tls);
    let tls = crate::http::tls::load(&cfg.tls).map_err(|e| err(&e))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    cfg.audit_key_file = Some(data_dir.join("audit.key"));
    cfg.extract_key_file = Some(data_dir.join("extract.key"));
    demo::key_file(&data_dir.join("audit.key")).map_err(|e| err(&e))?;
    demo::key_file(&data_dir.join("extract.key")).map_err(|e| err(&e))?;
    crate::http::serve::init_tracing(&cfg.log_format);
    demo::prepare_data(&data_dir, patients)
        .await
        .map_err(|e| err(&e))?;
    // The demo's own key files win over any KURA_* secrets in the environment.
    let no_env = |_: &str| None;
    let key = cfg.audit_key(&no_env).map_err(|e| e.to_string())?;
    let extract_key = cfg
        .secret("extract_key", &no_env)
        .map_err(|e| e.to_string())?;
    let catalog = std::sync::Arc::new(crate::catalog::Catalog::embedded().map_err(|e| err(&e))?);
    let store = open_store(&cfg, key, Opening::Server).await?;
    let plane = std::sync::Arc::new(open_plane(&cfg, &extract_key, &catalog).await?);
    let creds = demo::seed_accounts(&store, password.as_deref())
        .await
        .map_err(|e| err(&e))?;
    demo::seed_applications(&store, plane.as_ref(), crate::policy::today())
        .await
        .map_err(|e| err(&e))?;
    let state = app_state(&cfg, store, plane, catalog).await?;
    let flight = match start_flight(cfg.flight_listen(), &state, tls.as_ref()).await {
        // The default port may be held by another demo: run without Flight SQL and say so.
        Err(e) if flight_port.is_none() => {
            eprintln!("warning: {e}");
            None
        }
        other => other?,
    };
    let upkeep = crate::http::serve::Upkeep::of(&cfg, false);
    crate::http::serve::serve(state, cfg.listen, tls.as_ref(), &upkeep, |addr| {
        println!();
        println!("kura demo is running / デモを起動しました: {scheme}://{addr}");
        if let Some(f) = flight {
            println!("Flight SQL / Flight SQL: {} (header kura.application = A-DEMO-0001)", flight_url(f, scheme));
        }
        println!("data directory / データ: {}", data_dir.display());
        println!("accounts / アカウント (demo only / デモ専用):");
        for ((user, pw), a) in creds.iter().zip(demo::ACCOUNTS) {
            println!("  {user:<12} {pw:<24} {}", a.what);
        }
        println!("try / 例:");
        println!(
            "  curl -s -X POST {scheme}://{addr}/api/v1/session -H 'content-type: application/json' -d '{{\"username\":\"researcher1\",\"password\":\"…\"}}'"
        );
        println!("stop with Ctrl-C / 終了は Ctrl-C");
    })
    .await
    .map_err(|e| format!("server failed: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
