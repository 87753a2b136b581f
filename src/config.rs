//! Configuration of `kura serve` and `kura demo`, layered as defaults → TOML file
//! (`--config`) → `KURA_<OPTION>` environment variables → command-line flags.
//!
//! Each option is declared once, below, with its documentation and default; the struct,
//! the defaults, the environment names and `docs/configuration.md` all follow from that
//! one list. Unknown keys in the file are warned about (a typo must not silently fall
//! back to a default). Secrets (audit, extract and pseudonymisation keys) are never
//! options with values: they come from files named here or from environment variables,
//! and a missing one is explained together with how to create it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::AuditKey;

/// Errors of the configuration layer; each names the option and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{var}: cannot parse `{value}` as {expected} / 環境変数の値が不正です")]
    Env {
        var: String,
        value: String,
        expected: &'static str,
    },
    #[error(
        "secret `{name}` is missing: {why}. Create one with `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {name}.key`, \
         then set `{name}_file` in the configuration (or KURA_{upper}_FILE), or set KURA_{upper} to 64 hex digits. \
         Never commit it to the repository. / 秘密鍵 {name} がありません。上記の方法で作成して設定してください"
    )]
    SecretMissing {
        name: &'static str,
        upper: String,
        why: String,
    },
    #[error("secret `{name}` is invalid: {why} / 秘密鍵 {name} が不正です")]
    SecretInvalid { name: &'static str, why: String },
    #[error(
        "trusted_proxies: `{value}` is not a network; list the reverse proxies as CIDR blocks or addresses such as 10.0.0.5/32 / trusted_proxies の値が不正です（例 10.0.0.5/32）"
    )]
    TrustedProxy { value: String },
}

/// How a value is read from an environment variable.
pub trait EnvValue: Sized {
    const EXPECTED: &'static str;
    fn parse_env(s: &str) -> Option<Self>;
}

macro_rules! env_from_str {
    ($($t:ty => $e:literal),*) => {$(
        impl EnvValue for $t {
            const EXPECTED: &'static str = $e;
            fn parse_env(s: &str) -> Option<Self> { s.trim().parse().ok() }
        }
    )*};
}
env_from_str!(u64 => "an unsigned integer", usize => "an unsigned integer", i64 => "an integer", SocketAddr => "an address such as 127.0.0.1:8080");

impl EnvValue for bool {
    const EXPECTED: &'static str = "true or false";
    fn parse_env(s: &str) -> Option<Self> {
        match s.trim() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        }
    }
}

impl EnvValue for String {
    const EXPECTED: &'static str = "text";
    fn parse_env(s: &str) -> Option<Self> {
        Some(s.to_string())
    }
}

impl EnvValue for PathBuf {
    const EXPECTED: &'static str = "a path";
    fn parse_env(s: &str) -> Option<Self> {
        Some(PathBuf::from(s))
    }
}

impl EnvValue for Option<u16> {
    const EXPECTED: &'static str = "a port number (1-65535), or empty for none";
    fn parse_env(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Some(None);
        }
        s.parse::<u16>().ok().filter(|p| *p > 0).map(Some)
    }
}

/// A list from one environment variable: comma-separated, blanks dropped.
impl EnvValue for Vec<String> {
    const EXPECTED: &'static str = "a comma-separated list";
    fn parse_env(s: &str) -> Option<Self> {
        Some(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect(),
        )
    }
}

impl EnvValue for Option<PathBuf> {
    const EXPECTED: &'static str = "a path";
    fn parse_env(s: &str) -> Option<Self> {
        Some((!s.is_empty()).then(|| PathBuf::from(s)))
    }
}

impl EnvValue for Option<SocketAddr> {
    const EXPECTED: &'static str = "an address such as 127.0.0.1:9090";
    fn parse_env(s: &str) -> Option<Self> {
        if s.trim().is_empty() {
            return Some(None);
        }
        s.trim().parse().ok().map(Some)
    }
}

impl EnvValue for Option<String> {
    const EXPECTED: &'static str = "text";
    fn parse_env(s: &str) -> Option<Self> {
        Some((!s.is_empty()).then(|| s.to_string()))
    }
}

macro_rules! options {
    (
        $(#[doc = $sdoc:literal])*
        struct $S:ident, list $O:ident, env $prefix:literal, sections [$($sec:ident : $secty:ty),*];
        $( #[doc = $doc:literal] $name:ident : $ty:ty = $default:expr , $shown:literal ; )*
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        pub struct $S {
            $( #[doc = $doc] pub $name: $ty, )*
            $( pub $sec: $secty, )*
        }

        impl Default for $S {
            fn default() -> Self {
                Self { $( $name: $default, )* $( $sec: <$secty>::default(), )* }
            }
        }

        /// `(option, default as shown, documentation)` for every option.
        pub const $O: &[(&str, &str, &str)] = &[ $( (stringify!($name), $shown, $doc.trim_ascii()), )* ];

        impl $S {
            /// Apply the environment variables (prefix + option in upper case) from `get`.
            pub fn apply_env(&mut self, get: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
                $(
                    let var = format!("{}{}", $prefix, stringify!($name).to_uppercase());
                    if let Some(v) = get(&var) {
                        self.$name = <$ty as EnvValue>::parse_env(&v).ok_or_else(|| ConfigError::Env {
                            var: var.clone(),
                            value: v.clone(),
                            expected: <$ty as EnvValue>::EXPECTED,
                        })?;
                    }
                )*
                $( self.$sec.apply_env(get)?; )*
                Ok(())
            }
        }
    };
}

options! {
    /// kura's configuration. See `docs/configuration.md`.
    struct Config, list OPTIONS, env "KURA_", sections [tls: TlsConfig, store: StoreConfig, engine: EngineConfig];
    /// Address and port to listen on. Keep it on loopback or an internal network, and serve TLS (section `[tls]`) or put a TLS proxy in front.
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)), "127.0.0.1:8080";
    /// Port of the Arrow Flight SQL endpoint, on the address of `listen` (same accounts, rules, TLS and client certificates as HTTP); empty means no Flight SQL.
    flight_port: Option<u16> = None, "(none: off)";
    /// Directory holding the control-plane database (`kura.db`), registry data (`data/`) and extracts (`extracts/`).
    data_dir: PathBuf = PathBuf::from("kura-data"), "kura-data";
    /// Catalogue file; empty means the catalogue compiled into kura (`policies/catalog.toml`).
    catalog: Option<PathBuf> = None, "(embedded)";
    /// File with the audit HMAC key (hex, ≥ 32 bytes). Alternative: KURA_AUDIT_KEY.
    audit_key_file: Option<PathBuf> = None, "(none)";
    /// File with the key that re-pseudonymises `pid` per application extract (hex, ≥ 32 bytes). Alternative: KURA_EXTRACT_KEY.
    extract_key_file: Option<PathBuf> = None, "(none)";
    /// File with the ingest pseudonymisation key (hex, ≥ 32 bytes). Alternative: KURA_PSEUDONYM_KEY.
    pseudonym_key_file: Option<PathBuf> = None, "(none)";
    /// Session lifetime in minutes.
    token_ttl_minutes: i64 = 480, "480";
    /// Mark session cookies `Secure`. Automatic when kura serves TLS itself; set it to true behind a TLS proxy.
    cookie_secure: bool = false, "false";
    /// Maximum request body in bytes.
    body_limit_bytes: usize = 1 << 20, "1048576";
    /// Wall-clock limit per HTTP request in seconds.
    request_timeout_secs: u64 = 120, "120";
    /// Maximum requests served at once.
    concurrency: usize = 64, "64";
    /// Memory pool per query in MiB (a share of `memory_pool_mib`).
    query_memory_mib: usize = 2048, "2048";
    /// Memory of all queries together in MiB: one pool that every query's pool draws from; a query that would exceed it is refused with `resource_limit`.
    memory_pool_mib: usize = 4096, "4096";
    /// Queries one user may run at once; one more is refused with `429 too_many_queries`.
    query_per_user: usize = 4, "4";
    /// Threads of the separate runtime that executes queries (0: one per core), so that HTTP, logins and the audit log stay responsive under heavy queries.
    query_threads: usize = 0, "0";
    /// Failed or successful login attempts per minute from one client address; more are refused with `429 rate_limited` (0: no limit).
    login_per_minute: u64 = 30, "30";
    /// Time limit per query in seconds.
    query_timeout_secs: u64 = 60, "60";
    /// Maximum released rows per query.
    query_max_rows: usize = 10_000, "10000";
    /// Days an extract is kept after its approval expired or was revoked, then destroyed (and the destruction logged).
    extract_retention_days: i64 = 30, "30";
    /// Log format: `json` (for log collectors) or `text`.
    log_format: String = "json".to_string(), "json";
    /// File with the operator's token for `GET /metrics` on the API address (≥ 32 characters, mode 0600). Alternative: KURA_METRICS_TOKEN. Empty: /metrics is not served on the API address.
    metrics_token_file: Option<PathBuf> = None, "(none)";
    /// Separate address serving only `GET /metrics`, without a token (keep it on an internal network). Empty: none.
    metrics_listen: Option<SocketAddr> = None, "(none)";
    /// OpenTelemetry collector that receives kura's trace spans over OTLP/gRPC (`http://host:4317` on an internal network, or `https://…` with `trace_otlp_ca_file`): one span per HTTP request and per query stage, carrying ids, route templates, codes and durations only — never SQL, data values, user names or application ids. Empty: no span leaves kura (`OTEL_*` variables are ignored).
    trace_otlp_endpoint: Option<String> = None, "(none: off)";
    /// PEM file with the CA certificate(s) that sign an https collector's certificate.
    trace_otlp_ca_file: Option<PathBuf> = None, "(none)";
    /// Directory of audit alert rules (`*.toml`, one rule per file, see audit/README.md); empty means the rules compiled into kura (`audit/`).
    alert_rules_dir: Option<PathBuf> = None, "(embedded)";
    /// Directory the signed audit checkpoints are written to (`checkpoints.jsonl`, `latest.json`); ship its files off the host (they detect a truncated log). Empty means `<data_dir>/audit-checkpoints`.
    audit_checkpoint_dir: Option<PathBuf> = None, "(<data_dir>/audit-checkpoints)";
    /// Seconds between audit checkpoints (written only when the log grew; also at start and shutdown).
    audit_checkpoint_secs: u64 = 300, "300";
    /// Webhook that receives each new audit alert as JSON (`http://host:port/path`, e.g. a local mail or chat relay); empty means none.
    alert_webhook_url: Option<String> = None, "(none)";
    /// Font (TTF/OTF/TTC) for the charts of released results (`result-N.png`); it should have Japanese glyphs. Empty: the first found of IPAexGothic, IPAGothic (Debian `fonts-ipafont-gothic`), Noto Sans CJK, DejaVu Sans; with none, releases carry no chart.
    chart_font: Option<PathBuf> = None, "(search)";
    /// Reverse proxies (CIDR blocks or addresses) whose `X-Forwarded-For` is believed when checking an approval's place of use; from any other peer the header is ignored. Environment: comma-separated.
    trusted_proxies: Vec<String> = Vec::new(), "[] (none)";
    /// Font file (TrueType/OpenType covering Japanese) for PDF reports; empty means the first found of Debian's IPA Gothic (fonts-ipafont-gothic) and other common Japanese fonts.
    report_font: Option<PathBuf> = None, "(IPA Gothic, found at run time)";
    /// Directory of annual report definitions (`*.toml` and their SQL, see docs/reports.md); empty means the definitions compiled into kura (`queries/annual/`).
    annual_reports_dir: Option<PathBuf> = None, "(embedded)";
}

options! {
    /// Section `[tls]`: HTTPS served by kura itself (rustls), optionally with client
    /// certificates bound to accounts (seed 003: client certificate plus ID/password).
    struct TlsConfig, list TLS_OPTIONS, env "KURA_TLS_", sections [];
    /// PEM file with the server certificate chain, leaf first. Setting `cert` and `key` turns TLS on; kura then never serves plain HTTP.
    cert: Option<PathBuf> = None, "(none: plain HTTP)";
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1). Keep it readable by kura only.
    key: Option<PathBuf> = None, "(none)";
    /// PEM bundle of the CA certificates that sign client certificates. Setting it asks clients for a certificate.
    client_ca: Option<PathBuf> = None, "(none)";
    /// PEM file with certificate revocation lists (CRLs) of the client CA; a revoked client certificate is refused in the handshake. Read at start: restart kura after updating it.
    client_crl: Option<PathBuf> = None, "(none)";
    /// Client certificates: `off`, `optional` (verified when sent) or `required` (the handshake fails without one).
    client_auth: Option<ClientAuth> = None, "(required if client_ca is set, else off)";
    /// Require the client certificate's subject CN to equal the username at login and on every authenticated request (`403 certificate_mismatch`).
    bind_certificate_to_user: Option<bool> = None, "(true if client_auth = required)";
}

options! {
    /// Section `[store]`: the control-plane database (users, applications, ε ledger,
    /// audit log). SQLite in the data directory unless a PostgreSQL URL is given.
    struct StoreConfig, list STORE_OPTIONS, env "KURA_STORE_", sections [];
    /// Database URL: `postgres://user@host:5432/kura` (PostgreSQL, production; the password from PGPASSWORD or ~/.pgpass, TLS with `?sslmode=verify-full`) or `sqlite:///path/kura.db`. Empty means SQLite at `<data_dir>/kura.db`.
    url: Option<String> = None, "(sqlite: <data_dir>/kura.db)";
    /// Connections in the store's pool.
    max_connections: u64 = 16, "16";
}

options! {
    /// Section `[engine]`: where the rewritten plans execute (issue 15 §3). The guard, the
    /// privacy rewrite and the disclosure check always run in the gateway.
    struct EngineConfig, list ENGINE_OPTIONS, env "KURA_ENGINE_", sections [];
    /// `local` (DataFusion inside the gateway) or `ballista` (the rewritten plan runs on a Ballista cluster: `kura scheduler` and `kura executor` on the enclave's private network, reading the extracts at the same path as the gateway).
    mode: String = "local".to_string(), "local";
    /// Address of the Ballista scheduler, `df://host:port` (a loopback or private address, explicit port). Required in `ballista` mode: kura does not start without it.
    scheduler: Option<String> = None, "(none)";
}

/// Where the rewritten plans execute, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineMode {
    /// DataFusion inside the gateway process.
    Local,
    /// A Ballista cluster whose scheduler listens at `host:port`.
    Ballista { host: String, port: u16 },
}

impl EngineConfig {
    /// The engine mode, or an error naming the setting and the fix: `ballista` needs an
    /// explicit `df://host:port` scheduler address.
    pub fn engine_mode(&self) -> Result<EngineMode, String> {
        match self.mode.trim() {
            "local" => Ok(EngineMode::Local),
            "ballista" => {
                let Some(addr) = self
                    .scheduler
                    .as_deref()
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                else {
                    return Err("engine.mode = \"ballista\" needs engine.scheduler = \"df://host:port\" (or KURA_ENGINE_SCHEDULER): kura does not guess where the scheduler is / Ballista モードでは engine.scheduler（df://host:port）の指定が必要です".into());
                };
                scheduler_address(addr)
            }
            other => Err(format!(
                "engine.mode = \"{other}\" is not known; use \"local\" or \"ballista\" / engine.mode には local か ballista を指定してください"
            )),
        }
    }
}

/// `df://host:port` → [`EngineMode::Ballista`]; the port must be given.
fn scheduler_address(addr: &str) -> Result<EngineMode, String> {
    let bad = || {
        format!(
            "engine.scheduler = \"{addr}\" is not an address like df://10.0.0.5:50050 (scheme df, host, explicit port) / engine.scheduler の形式が不正です（例: df://10.0.0.5:50050）"
        )
    };
    let rest = addr.strip_prefix("df://").ok_or_else(bad)?;
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(bad());
    }
    // A name cannot be checked here (it resolves where the gateway runs); an address can.
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        check_private("engine.scheduler", ip)?;
    }
    Ok(EngineMode::Ballista {
        host: host.to_string(),
        port,
    })
}

/// Whether `ip` is loopback or in a private range (10/8, 172.16/12, 192.168/16, fc00::/7).
pub fn is_private(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        std::net::IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Refuse a public or unspecified address for `what` (a Ballista node or the scheduler):
/// the scheduler runs any plan it is sent and executors serve intermediate rows.
pub fn check_private(what: &str, ip: std::net::IpAddr) -> Result<(), String> {
    if is_private(ip) {
        return Ok(());
    }
    Err(format!(
        "{what}: {ip} is not a loopback or private address. The Ballista scheduler runs any plan it is sent and executors serve intermediate rows: keep them on the enclave's private network (10.x, 172.16-31.x, 192.168.x, fc00::/7 or loopback), see docs/configuration.md / {what}: {ip} はループバックでもプライベートアドレスでもありません。スケジューラとエグゼキュータは施設内のプライベートネットワークにのみ置いてください"
    ))
}

/// Whether and how clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    Off,
    Optional,
    Required,
}

impl EnvValue for Option<ClientAuth> {
    const EXPECTED: &'static str = "off, optional or required";
    fn parse_env(s: &str) -> Option<Self> {
        match s.trim() {
            "" => Some(None),
            "off" => Some(Some(ClientAuth::Off)),
            "optional" => Some(Some(ClientAuth::Optional)),
            "required" => Some(Some(ClientAuth::Required)),
            _ => None,
        }
    }
}

impl EnvValue for Option<bool> {
    const EXPECTED: &'static str = "true or false";
    fn parse_env(s: &str) -> Option<Self> {
        if s.trim().is_empty() {
            return Some(None);
        }
        bool::parse_env(s).map(Some)
    }
}

impl TlsConfig {
    /// Whether any TLS setting is present (then TLS must come up or kura must not start).
    pub fn is_configured(&self) -> bool {
        self.cert.is_some()
            || self.key.is_some()
            || self.client_ca.is_some()
            || self.client_crl.is_some()
            || self.client_auth.is_some_and(|a| a != ClientAuth::Off)
            || self.bind_certificate_to_user == Some(true)
    }

    /// The client-certificate mode in force: as set, else `required` when `client_ca` is
    /// set, else `off`.
    pub fn effective_client_auth(&self) -> ClientAuth {
        self.client_auth.unwrap_or(if self.client_ca.is_some() {
            ClientAuth::Required
        } else {
            ClientAuth::Off
        })
    }

    /// Whether the certificate must name the account: as set, else true exactly when
    /// client certificates are required.
    pub fn effective_bind(&self) -> bool {
        self.bind_certificate_to_user
            .unwrap_or(self.effective_client_auth() == ClientAuth::Required)
    }
}

/// `(option, default as shown, documentation)`.
type OptionDoc = (&'static str, &'static str, &'static str);

/// The sections of the file and their options.
const SECTIONS: &[(&str, &[OptionDoc])] = &[
    ("tls", TLS_OPTIONS),
    ("store", STORE_OPTIONS),
    ("engine", ENGINE_OPTIONS),
];

/// Warnings produced while loading (unknown keys).
pub type Warnings = Vec<String>;

/// A secret value whose `Debug` never shows it.
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// HTTP-level settings (from the configuration).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub token_ttl: chrono::Duration,
    /// Mark cookies `Secure` (set when served over TLS or behind a TLS proxy).
    pub cookie_secure: bool,
    /// Login and every authenticated request must come over a TLS connection whose
    /// verified client certificate names the account (seed 003: both factors).
    pub bind_certificate_to_user: bool,
    pub body_limit: usize,
    pub request_timeout: std::time::Duration,
    pub concurrency: usize,
    /// Peers whose `X-Forwarded-For` is believed for the place of use (`policy::place`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The operator's token for `GET /metrics` on the API address (`None`: not served there).
    pub metrics_token: Option<Secret>,
    /// Login attempts per minute from one client address (0: no limit).
    pub login_per_minute: u64,
    /// Font for PDF reports (`report_font`; `None`: found at run time).
    pub report_font: Option<PathBuf>,
    /// Annual report definitions folder (`annual_reports_dir`; `None`: embedded).
    pub annual_reports_dir: Option<PathBuf>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            token_ttl: chrono::Duration::hours(8),
            cookie_secure: false,
            bind_certificate_to_user: false,
            body_limit: 1 << 20,
            request_timeout: std::time::Duration::from_secs(120),
            concurrency: 64,
            trusted_proxies: Vec::new(),
            metrics_token: None,
            login_per_minute: 0,
            report_font: None,
            annual_reports_dir: None,
        }
    }
}

impl Config {
    /// Load defaults → TOML file (if given) → environment.
    pub fn load(
        file: Option<&Path>,
        get_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Self, Warnings), ConfigError> {
        let mut warnings = Vec::new();
        let mut cfg = match file {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let parse_err = |source| ConfigError::Parse {
                    path: path.to_path_buf(),
                    source,
                };
                let mut table: toml::Table = toml::from_str(&text).map_err(parse_err)?;
                let unknown: Vec<String> = table
                    .keys()
                    .filter(|k| {
                        !OPTIONS.iter().any(|o| o.0 == k.as_str())
                            && !SECTIONS.iter().any(|s| s.0 == k.as_str())
                    })
                    .cloned()
                    .collect();
                let mut warn = |k: &str| {
                    warnings.push(format!(
                        "{}: unknown option `{k}` ignored; see docs/configuration.md for the options / 不明な設定項目 `{k}` を無視しました",
                        path.display()
                    ))
                };
                for k in unknown {
                    warn(&k);
                    table.remove(&k);
                }
                for (section, known) in SECTIONS {
                    if let Some(toml::Value::Table(t)) = table.get_mut(*section) {
                        let unknown: Vec<String> = t
                            .keys()
                            .filter(|k| !known.iter().any(|o| o.0 == k.as_str()))
                            .cloned()
                            .collect();
                        for k in unknown {
                            warn(&format!("{section}.{k}"));
                            t.remove(&k);
                        }
                    }
                }
                Config::deserialize(toml::Value::Table(table)).map_err(parse_err)?
            }
        };
        cfg.apply_env(get_env)?;
        Ok((cfg, warnings))
    }

    /// The Flight SQL address: the `listen` address with `flight_port`, if set.
    pub fn flight_listen(&self) -> Option<SocketAddr> {
        self.flight_port
            .map(|p| SocketAddr::new(self.listen.ip(), p))
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("kura.db")
    }

    /// The store URL in force: `store.url`, else SQLite at [`Self::db_path`].
    pub fn store_url(&self) -> String {
        match self.store.url.as_deref().filter(|u| !u.is_empty()) {
            Some(u) => u.to_string(),
            None => crate::store::sqlite_url(&self.db_path()),
        }
    }

    pub fn registry_dir(&self) -> PathBuf {
        self.data_dir.join("data")
    }

    pub fn extracts_dir(&self) -> PathBuf {
        self.data_dir.join("extracts")
    }

    /// Where trace spans go, if anywhere (`trace_otlp_endpoint`; empty means off).
    pub fn trace_export(&self) -> Option<crate::telemetry::TraceExport> {
        let endpoint = self.trace_otlp_endpoint.as_deref()?.trim();
        (!endpoint.is_empty()).then(|| crate::telemetry::TraceExport {
            endpoint: endpoint.to_string(),
            ca_file: self.trace_otlp_ca_file.clone(),
        })
    }

    /// Where audit checkpoints are written.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.audit_checkpoint_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit-checkpoints"))
    }

    pub fn limits(&self) -> crate::engine::Limits {
        crate::engine::Limits {
            memory_bytes: self.query_memory_mib << 20,
            timeout: std::time::Duration::from_secs(self.query_timeout_secs),
            max_rows: self.query_max_rows,
        }
    }

    pub fn http_settings(&self) -> HttpSettings {
        HttpSettings {
            token_ttl: chrono::Duration::minutes(self.token_ttl_minutes),
            // Served over TLS, cookies must never travel in clear text.
            cookie_secure: self.cookie_secure || self.tls.is_configured(),
            bind_certificate_to_user: self.tls.is_configured() && self.tls.effective_bind(),
            body_limit: self.body_limit_bytes,
            request_timeout: std::time::Duration::from_secs(self.request_timeout_secs),
            concurrency: self.concurrency,
            metrics_token: None,
            login_per_minute: self.login_per_minute,
            report_font: self.report_font.clone(),
            annual_reports_dir: self.annual_reports_dir.clone(),
            trusted_proxies: Vec::new(),
        }
    }

    /// The trusted reverse proxies, each checked: one bad entry stops the start rather
    /// than silently trusting less (or more) than the operator wrote.
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .map(|v| {
                crate::policy::place::parse_network(v)
                    .ok_or_else(|| ConfigError::TrustedProxy { value: v.clone() })
            })
            .collect()
    }

    /// The operator's metrics token, from `metrics_token_file` (a private file) or
    /// KURA_METRICS_TOKEN; `None` when neither is set.
    pub fn metrics_token(
        &self,
        get_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Secret>, ConfigError> {
        if let Some(t) = get_env("KURA_METRICS_TOKEN").filter(|t| !t.trim().is_empty()) {
            return Ok(Some(Secret::new(t.trim())));
        }
        let Some(path) = &self.metrics_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::SecretMissing {
            name: "metrics_token",
            upper: "METRICS_TOKEN".into(),
            why: format!("cannot read {}: {e}", path.display()),
        })?;
        crate::durable::check_private(path).map_err(|e| ConfigError::SecretInvalid {
            name: "metrics_token",
            why: e.to_string(),
        })?;
        let token = text.trim();
        if token.len() < 32 {
            return Err(ConfigError::SecretInvalid {
                name: "metrics_token",
                why: format!("{} characters; use at least 32 random ones", token.len()),
            });
        }
        Ok(Some(Secret::new(token)))
    }

    /// Raw secret bytes from `KURA_<NAME>` (hex) or the `<name>_file` option.
    pub fn secret(
        &self,
        name: &'static str,
        get_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<u8>, ConfigError> {
        let upper = name.to_uppercase();
        let file = match name {
            "audit_key" => &self.audit_key_file,
            "extract_key" => &self.extract_key_file,
            "pseudonym_key" => &self.pseudonym_key_file,
            _ => &None,
        };
        let text = if let Some(v) = get_env(&format!("KURA_{upper}")) {
            v
        } else if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::SecretMissing {
                name,
                upper: upper.clone(),
                why: format!("cannot read {}: {e}", path.display()),
            })?;
            // A key readable by other accounts is as good as published: refuse it.
            crate::durable::check_private(path).map_err(|e| ConfigError::SecretInvalid {
                name,
                why: e.to_string(),
            })?;
            text
        } else {
            return Err(ConfigError::SecretMissing {
                name,
                upper,
                why: "neither a key file nor the environment variable is set".into(),
            });
        };
        let bytes = hex::decode(text.trim()).map_err(|e| ConfigError::SecretInvalid {
            name,
            why: format!("not hex: {e}"),
        })?;
        if bytes.len() < 32 {
            return Err(ConfigError::SecretInvalid {
                name,
                why: format!("{} bytes; at least 32 are needed", bytes.len()),
            });
        }
        Ok(bytes)
    }

    pub fn audit_key(
        &self,
        get_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AuditKey, ConfigError> {
        let bytes = self.secret("audit_key", get_env)?;
        AuditKey::from_bytes(&bytes).map_err(|e| ConfigError::SecretInvalid {
            name: "audit_key",
            why: e.to_string(),
        })
    }
}

/// Read process environment variables.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Render `docs/configuration.md`'s option table from [`OPTIONS`].
pub fn options_markdown() -> String {
    let mut s = String::from("| option | env | default | meaning |\n|---|---|---|---|\n");
    for (name, default, doc) in OPTIONS {
        s.push_str(&format!(
            "| `{name}` | `KURA_{}` | `{default}` | {doc} |\n",
            name.to_uppercase()
        ));
    }
    for (section, options) in SECTIONS {
        for (name, default, doc) in *options {
            s.push_str(&format!(
                "| `{section}.{name}` | `KURA_{}_{}` | `{default}` | {doc} |\n",
                section.to_uppercase(),
                name.to_uppercase()
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn layers_apply_in_order_and_unknown_keys_warn() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("kura.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:9000\"\nconcurrency = 8\ntypo_option = 1\n",
        )
        .unwrap();
        let (cfg, warnings) = Config::load(Some(&f), &env(&[("KURA_CONCURRENCY", "4")])).unwrap();
        assert_eq!(cfg.listen.port(), 9000, "file overrides default");
        assert_eq!(cfg.concurrency, 4, "env overrides file");
        assert_eq!(cfg.query_max_rows, 10_000, "default kept");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("typo_option"));
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let err = Config::load(None, &env(&[("KURA_CONCURRENCY", "many")])).unwrap_err();
        assert!(err.to_string().contains("KURA_CONCURRENCY"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_readable_by_others_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("audit.key");
        std::fs::write(&f, "ab".repeat(32)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let cfg = Config {
            audit_key_file: Some(f.clone()),
            ..Config::default()
        };
        let err = cfg.audit_key(&env(&[])).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        // Control: the same key, private, is accepted.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(cfg.audit_key(&env(&[])).is_ok());
    }

    #[test]
    fn missing_secret_says_how_to_create_it() {
        let cfg = Config::default();
        let err = cfg.audit_key(&env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("/dev/urandom") && err.contains("KURA_AUDIT_KEY"),
            "{err}"
        );
        let short = cfg
            .audit_key(&env(&[("KURA_AUDIT_KEY", "abcd")]))
            .unwrap_err()
            .to_string();
        assert!(short.contains("at least 32"), "{short}");
        assert!(
            cfg.audit_key(&env(&[("KURA_AUDIT_KEY", &"ab".repeat(32))]))
                .is_ok()
        );
    }

    #[test]
    fn tls_section_layers_and_derives_its_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("kura.toml");
        std::fs::write(
            &f,
            "[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\ntypo = 1\n",
        )
        .unwrap();
        let (cfg, warnings) = Config::load(Some(&f), &env(&[])).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("tls.typo"), "{warnings:?}");
        assert_eq!(cfg.tls.cert.as_deref(), Some(Path::new("server.pem")));
        assert_eq!(cfg.tls.effective_client_auth(), ClientAuth::Required);
        assert!(cfg.tls.effective_bind());
        let http = cfg.http_settings();
        assert!(http.cookie_secure && http.bind_certificate_to_user);

        let (cfg, _) = Config::load(
            Some(&f),
            &env(&[
                ("KURA_TLS_CLIENT_AUTH", "optional"),
                ("KURA_TLS_KEY", "other.key"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.tls.effective_client_auth(), ClientAuth::Optional);
        assert!(
            !cfg.tls.effective_bind(),
            "binding defaults on only when required"
        );
        assert_eq!(cfg.tls.key.as_deref(), Some(Path::new("other.key")));

        let err = Config::load(Some(&f), &env(&[("KURA_TLS_CLIENT_AUTH", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("KURA_TLS_CLIENT_AUTH"), "{err}");

        let (plain, _) = Config::load(None, &env(&[])).unwrap();
        assert!(!plain.tls.is_configured());
        assert!(!plain.http_settings().cookie_secure);
    }

    #[test]
    fn engine_mode_ballista_needs_an_explicit_scheduler_address() {
        let mode = |m: &str, s: Option<&str>| {
            EngineConfig {
                mode: m.into(),
                scheduler: s.map(Into::into),
            }
            .engine_mode()
        };
        assert_eq!(mode("local", None), Ok(EngineMode::Local));
        let e = mode("ballista", None).unwrap_err();
        assert!(e.contains("engine.scheduler"), "{e}");
        assert!(mode("ballista", Some(" ")).is_err());
        for bad in [
            "df://10.0.0.5",
            "http://10.0.0.5:50050",
            "df://:50050",
            "df://h:0",
            "10.0.0.5:50050",
        ] {
            let e = mode("ballista", Some(bad)).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        assert_eq!(
            mode("ballista", Some("df://10.0.0.5:50050")),
            Ok(EngineMode::Ballista {
                host: "10.0.0.5".into(),
                port: 50050
            })
        );
        assert!(mode("spark", None).unwrap_err().contains("spark"));
        // A public scheduler address is refused; a name is left to the operator.
        let e = mode("ballista", Some("df://8.8.8.8:50050")).unwrap_err();
        assert!(e.contains("private"), "{e}");
        assert!(mode("ballista", Some("df://scheduler.enclave:50050")).is_ok());
        for ok in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.9",
            "192.168.1.1",
            "::1",
            "fd00::1",
        ] {
            assert!(check_private("x", ok.parse().unwrap()).is_ok(), "{ok}");
        }
        for bad in ["0.0.0.0", "8.8.8.8", "172.32.0.1", "::", "2001:db8::1"] {
            let e = check_private("--bind", bad.parse().unwrap()).unwrap_err();
            assert!(e.contains("--bind") && e.contains(bad), "{e}");
        }
        // The section layers like [tls]: file, then environment; typos are reported.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("kura.toml");
        let text =
            "[engine]\nmode = \"local\"\nscheduler = \"df://10.0.0.5:50050\"\nshedular = 1\n";
        std::fs::write(&f, text).unwrap();
        let vars = env(&[("KURA_ENGINE_MODE", "ballista")]);
        let (cfg, warnings) = Config::load(Some(&f), &vars).unwrap();
        assert!(
            warnings.iter().any(|w| w.contains("engine.shedular")),
            "{warnings:?}"
        );
        let m = cfg.engine.engine_mode();
        assert!(
            matches!(m, Ok(EngineMode::Ballista { port: 50050, .. })),
            "{m:?}"
        );
    }

    #[test]
    fn every_option_is_documented() {
        let md = options_markdown();
        for (name, _, doc) in OPTIONS {
            assert!(!doc.is_empty(), "{name} lacks a doc");
            assert!(md.contains(&format!("`KURA_{}`", name.to_uppercase())));
        }
    }

    #[test]
    fn docs_and_example_match_the_declared_options() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let path = root.join("docs/configuration.md");
        let mut docs = std::fs::read_to_string(&path).unwrap();
        // KURA_REGENERATE_DOCS=1 rewrites the table between its markers.
        if std::env::var_os("KURA_REGENERATE_DOCS").is_some() {
            let (begin, end) = ("<!-- options:begin -->\n", "<!-- options:end -->");
            let (a, b) = (
                docs.find(begin).unwrap() + begin.len(),
                docs.find(end).unwrap(),
            );
            docs.replace_range(a..b, &options_markdown());
            std::fs::write(&path, &docs).unwrap();
        }
        assert!(
            docs.contains(&options_markdown()),
            "docs/configuration.md is out of date; run this test with KURA_REGENERATE_DOCS=1"
        );
        let example = root.join("deploy/kura.example.toml");
        let (cfg, warnings) = Config::load(Some(&example), &env(&[])).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.listen, Config::default().listen);
        let text = std::fs::read_to_string(&example).unwrap();
        let all = OPTIONS.iter().chain(TLS_OPTIONS).chain(STORE_OPTIONS);
        for (name, _, _) in all.chain(ENGINE_OPTIONS) {
            assert!(
                text.contains(&format!("{name} =")),
                "{name} missing from the example"
            );
        }
    }
}
