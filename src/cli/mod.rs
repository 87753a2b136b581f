//! Command line: `kura <command>`. Each command parses its arguments here and hands
//! them to the module that owns the work, so this file only shows what kura can do.

use std::path::PathBuf;
use std::process::ExitCode;

pub mod admin;
// production (issue 14): `kura backup`, `kura restore`
pub mod backup;
pub mod bench;
// scale-out (issue 15 §3): the Ballista cluster's processes
#[cfg(feature = "ballista")]
pub mod cluster;
pub mod demo;
// seeds (issue 16): facility1, the JaSMIn study
pub mod demo_seeds;
pub mod extract;
pub mod query;
// oversight (issue 13 §2): `kura report`
pub mod report;

use clap::{Args, Parser, Subcommand};

use crate::privacy::rules::DisclosureRules;

use crate::catalog::Catalog;
use crate::config::{Config, process_env};
use crate::errors::chain;
use crate::ingest;

#[derive(Debug, Parser)]
#[command(
    name = "kura",
    version,
    about = "kura (蔵): research data access enclave for patient registries"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the configuration comes from (shared by control-plane commands).
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (overrides the configuration).
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Store URL, e.g. postgres://kura@db/kura (overrides store.url / KURA_STORE_URL).
    #[arg(long, value_name = "URL", global = true)]
    pub store_url: Option<String>,
}

impl ConfigArgs {
    /// Defaults → file → env → flags; warnings printed to stderr.
    pub fn load(&self) -> Result<Config, String> {
        let (mut cfg, warnings) =
            Config::load(self.config.as_deref(), &process_env).map_err(|e| e.to_string())?;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        if let Some(u) = &self.store_url {
            cfg.store.url = Some(u.clone());
        }
        Ok(cfg)
    }
}

/// TLS flags of `kura serve` and `kura demo`; each overrides its `[tls]` setting.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM server certificate chain (tls.cert); with --tls-key, serve HTTPS.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM server private key (tls.key).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM bundle of the CA that signs client certificates (tls.client_ca).
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// PEM certificate revocation lists of the client CA (tls.client_crl).
    #[arg(long, value_name = "FILE")]
    pub tls_client_crl: Option<PathBuf>,
    /// Client certificates: off, optional or required (tls.client_auth).
    #[arg(long, value_name = "MODE", value_parser = ["off", "optional", "required"])]
    pub tls_client_auth: Option<String>,
    /// Require the client certificate's CN to equal the username (tls.bind_certificate_to_user).
    #[arg(long, value_name = "BOOL")]
    pub tls_bind_certificate_to_user: Option<bool>,
}

impl TlsArgs {
    /// Apply the flags over the configuration (the last layer).
    pub fn apply(&self, tls: &mut crate::config::TlsConfig) {
        use crate::config::ClientAuth;
        if let Some(p) = &self.tls_cert {
            tls.cert = Some(p.clone());
        }
        if let Some(p) = &self.tls_key {
            tls.key = Some(p.clone());
        }
        if let Some(p) = &self.tls_client_ca {
            tls.client_ca = Some(p.clone());
        }
        if let Some(p) = &self.tls_client_crl {
            tls.client_crl = Some(p.clone());
        }
        if let Some(m) = &self.tls_client_auth {
            tls.client_auth = match m.as_str() {
                "off" => Some(ClientAuth::Off),
                "optional" => Some(ClientAuth::Optional),
                // clap allows only the three values above.
                _ => Some(ClientAuth::Required),
            };
        }
        if let Some(b) = self.tls_bind_certificate_to_user {
            tls.bind_certificate_to_user = Some(b);
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API server / API サーバーを起動する
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Listen address (overrides the configuration), e.g. 127.0.0.1:8080.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Serve Arrow Flight SQL on this port of the listen address (overrides flight_port).
        #[arg(long)]
        flight_port: Option<u16>,
        #[command(flatten)]
        tls: TlsArgs,
        /// Serve even though the audit chain does not verify at start (or no longer holds
        /// a signed checkpoint). Only after an auditor has looked: the break is alerted
        /// and logged, and stays in the log.
        #[arg(long)]
        allow_broken_chain: bool,
    },
    /// Self-contained demo on 127.0.0.1 with synthetic data and demo accounts /
    /// 合成データとデモ用アカウントでデモを起動する
    Demo {
        /// Demo data directory (created; re-runs reuse it).
        #[arg(long, default_value = "kura-demo")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Password of every demo account (random ones are generated and printed otherwise).
        #[arg(long, env = "KURA_DEMO_PASSWORD", hide_env_values = true)]
        demo_password: Option<String>,
        /// Synthetic registry size.
        #[arg(long, default_value_t = 50_000)]
        patients: u64,
        /// Arrow Flight SQL port on 127.0.0.1 [default: 8815; if 8815 is taken the demo
        /// runs without Flight SQL and says so, a port given here must be free].
        #[arg(long)]
        flight_port: Option<u16>,
        /// Plain HTTP unless TLS flags are given.
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Manage accounts (operator) / アカウント管理
    User {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        action: UserCommand,
    },
    /// Back up the store, audit checkpoints, live extracts and registry into a new
    /// directory / バックアップを作成する
    Backup {
        #[command(flatten)]
        config: ConfigArgs,
        /// Output directory (must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into an empty data directory and store, then verify the audit
    /// chain / バックアップから復元する
    Restore {
        #[command(flatten)]
        config: ConfigArgs,
        /// Backup directory written by `kura backup`.
        #[arg(long)]
        from: PathBuf,
    },
    /// Audit log tools / 監査ログ
    Audit {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        action: AuditCommand,
    },
    /// Generate a synthetic source registry (with direct identifiers, as hospitals hold it) /
    /// 合成の元データ（仮名化前）を生成する
    Synth {
        /// Number of registry patients.
        #[arg(long)]
        patients: u64,
        /// Random seed; the same seed gives byte-identical output.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Create a new pseudonymisation key file (mode 0600; never overwrites) /
    /// 仮名化鍵ファイルを作成する
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Pseudonymise a source registry into Parquet plus manifest.json /
    /// 元データを仮名化して Parquet に取り込む
    Ingest {
        /// Source directory (CSV files, see docs/data.md).
        #[arg(long)]
        source: PathBuf,
        /// Output directory, written atomically.
        #[arg(long)]
        out: PathBuf,
        /// Pseudonymisation key file (create with `kura keygen --out FILE`).
        #[arg(long, env = "KURA_KEY_FILE")]
        key_file: Option<PathBuf>,
        /// Catalogue file; defaults to the catalogue built into kura.
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// Replace an existing output directory (atomically).
        #[arg(long)]
        replace: bool,
    },
    /// Build or refresh one application's scoped extract / 申請ごとの抽出データを作成・更新
    Extract(crate::cli::extract::ExtractArgs),
    /// Run one query over an extract through the full gateway path (operator use) /
    /// 抽出データに対してゲートウェイと同じ経路でクエリを実行する
    Query(crate::cli::query::QueryArgs),
    /// Reports from the signed audit log (usage report) / 報告書（使用状況報告書）
    Report {
        #[command(subcommand)]
        report: crate::cli::report::ReportCommand,
    },
    /// Ballista scheduler with kura's codec, for engine.mode = "ballista" (private network
    /// only) / Ballista スケジューラ（施設内ネットワーク専用）
    #[cfg(feature = "ballista")]
    Scheduler(crate::cli::cluster::SchedulerArgs),
    /// Ballista executor with kura's codec and limits (private network only) /
    /// Ballista エグゼキュータ（施設内ネットワーク専用）
    #[cfg(feature = "ballista")]
    Executor(crate::cli::cluster::ExecutorArgs),
    /// Benchmarks; each prints ratios against a baseline measured in the same run /
    /// ベンチマーク
    Bench {
        #[command(subcommand)]
        bench: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account; prints a generated password unless --password-stdin is given.
    Add {
        username: String,
        /// researcher | reviewer | auditor | pms | admin | facility (repeatable)
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Manufacturer code of a PMS team account (e.g. M01).
        #[arg(long)]
        manufacturer: Option<String>,
        /// Facility code of a medical institution's account (role facility, e.g. F13001).
        #[arg(long)]
        facility: Option<String>,
        #[arg(long, default_value = "")]
        display_name: String,
        #[arg(long, default_value = "")]
        affiliation: String,
        #[arg(long, default_value = "")]
        title: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account and revoke its sessions.
    Disable { username: String },
    /// Set a new password (generated unless --password-stdin), clear the lockout, revoke sessions.
    ResetPassword {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain; exit code 0 only when it is intact.
    Verify {
        /// Also check the chain against a signed checkpoint file (`latest.json` or
        /// `checkpoints.jsonl`, e.g. a copy shipped off the host): detects truncation.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
    },
    /// Write a signed checkpoint of the chain head now (to audit_checkpoint_dir).
    Checkpoint,
}

/// Stack size of every runtime thread (workers and blocking threads).
const STACK_BYTES: usize = 8 << 20;

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    // Query planning recurses over expression trees; 8 MiB worker stacks leave four times
    // the default's headroom above the bounds of `sql::depth` and `sql::size`
    // (measured in docs/threat-model.md).
    tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(STACK_BYTES)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Run the future that `make` builds on a runtime of known stacks, driven from a thread
/// of [`STACK_BYTES`] rather than the main thread (whose stack is whatever `ulimit -s`
/// gave it): the SQL bounds of `sql::depth` and `sql::size` are measured against it.
fn on_known_stack<T, Fut>(make: impl FnOnce() -> Fut + Send + 'static) -> Result<T, String>
where
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name("kura-main".into())
        .stack_size(STACK_BYTES)
        .spawn(move || runtime().map(|rt| rt.block_on(make())))
        .map_err(|e| format!("cannot start the main thread: {e}"))?
        .join()
        .map_err(|_| "the command panicked".to_string())?
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Example queries: raw DataFusion against the full gateway path / クエリ経路の性能測定
    Query(crate::cli::bench::query::BenchQueryArgs),
    /// synth + ingest against a plain Parquet write of the same rows / 取込の性能測定
    Ingest {
        #[arg(long, default_value_t = 1_000_000)]
        patients: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Working directory (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Ingest threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Run the command line; returns the process exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let ok = |r: Result<(), String>| r.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            flight_port,
            tls,
            allow_broken_chain,
        } => on_known_stack(move || {
            crate::cli::admin::serve_command(config, listen, flight_port, tls, allow_broken_chain)
        })
        .and_then(|r| r),
        Command::Demo {
            data_dir,
            port,
            demo_password,
            patients,
            flight_port,
            tls,
        } => on_known_stack(move || {
            let ports = (port, flight_port);
            crate::cli::admin::demo_command(data_dir, ports, demo_password, patients, tls)
        })
        .and_then(|r| r),
        Command::User { config, action } => {
            runtime().and_then(|rt| rt.block_on(crate::cli::admin::user_command(config, action)))
        }
        Command::Audit { config, action } => {
            runtime().and_then(|rt| rt.block_on(crate::cli::admin::audit_command(config, action)))
        }
        Command::Backup { config, out } => {
            runtime().and_then(|rt| rt.block_on(crate::cli::backup::backup(config, out)))
        }
        Command::Restore { config, from } => {
            runtime().and_then(|rt| rt.block_on(crate::cli::backup::restore(config, from)))
        }
        Command::Report { report } => {
            runtime().and_then(|rt| rt.block_on(crate::cli::report::run(report)))
        }
        Command::Extract(args) => return block_on(move || crate::cli::extract::run(args)),
        Command::Query(args) => return block_on(move || query(args)),
        #[cfg(feature = "ballista")]
        Command::Scheduler(args) => {
            on_known_stack(move || crate::cli::cluster::scheduler(args)).and_then(ok)
        }
        #[cfg(feature = "ballista")]
        Command::Executor(args) => {
            on_known_stack(move || crate::cli::cluster::executor(args)).and_then(ok)
        }
        Command::Bench {
            bench: BenchCommand::Query(args),
        } => return block_on(move || bench_query(args)),
        Command::Synth {
            patients,
            seed,
            out,
        } => ok(synth(patients, seed, out)),
        Command::Keygen { out } => ok(keygen(out)),
        Command::Ingest {
            source,
            out,
            key_file,
            catalog,
            replace,
        } => ok(ingest(source, out, key_file, catalog, replace)),
        Command::Bench {
            bench:
                BenchCommand::Ingest {
                    patients,
                    seed,
                    dir,
                    threads,
                    json,
                },
        } => ok(bench_ingest(patients, seed, dir, threads, json)),
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error / エラー: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Run an async command on a thread and runtime with known stacks: `kura query`,
/// `kura extract` and `kura bench query` plan SQL like the server does.
fn block_on<Fut: std::future::Future<Output = ExitCode>>(
    make: impl FnOnce() -> Fut + Send + 'static,
) -> ExitCode {
    match on_known_stack(make) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error / エラー: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `kura query`: the same path as the API (guard, rewrite, limits, disclosure check).
async fn query(args: crate::cli::query::QueryArgs) -> ExitCode {
    let rules = match DisclosureRules::embedded() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error / エラー: {}", chain(&e));
            return ExitCode::FAILURE;
        }
    };
    crate::cli::query::query(args, async |ctx, sql, catalog, limits| {
        crate::query::run_query(ctx, sql, catalog, &rules, limits).await
    })
    .await
}

/// `kura bench query`: raw DataFusion against the full path, in the same run.
async fn bench_query(args: crate::cli::bench::query::BenchQueryArgs) -> ExitCode {
    let loaded = DisclosureRules::embedded()
        .map_err(|e| chain(&e))
        .and_then(|r| {
            let catalog = match &args.catalog {
                Some(p) => Catalog::load(p),
                None => Catalog::embedded(),
            }
            .map_err(|e| chain(&e))?;
            Ok((r, catalog))
        });
    let (rules, catalog) = match loaded {
        Ok(v) => v,
        Err(msg) => {
            eprintln!("error / エラー: {msg}");
            return ExitCode::FAILURE;
        }
    };
    let dp = args
        .dp_epsilon
        .map(|epsilon| crate::privacy::result::DpParams {
            epsilon,
            bounds: Default::default(),
        });
    let report =
        crate::cli::bench::query::bench_query(&args, &catalog, async |ctx, sql, cat, limits| {
            match dp {
                Some(p) => crate::query::dp::run_dp_query(ctx, sql, cat, &rules, limits, p).await,
                None => crate::query::run_query(ctx, sql, cat, &rules, limits).await,
            }
        })
        .await;
    match report {
        Ok(r) if args.json => {
            println!("{}", r.to_json());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            print!("{r}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error / エラー: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn synth(patients: u64, seed: u64, out: PathBuf) -> Result<(), String> {
    let opts = ingest::synth::SynthOptions {
        patients,
        seed,
        out,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let s = ingest::synth::generate(&opts).map_err(|e| chain(&e))?;
    println!(
        "synthetic registry written to {} / 合成データを出力しました: {} patients ({} consented, {} withdrawn)",
        s.out.display(),
        s.patients,
        s.consented,
        s.withdrawn
    );
    for (file, rows) in &s.rows {
        println!("  {file}: {rows} rows");
    }
    Ok(())
}

fn keygen(out: PathBuf) -> Result<(), String> {
    let key = ingest::PseudonymKey::write_new(&out).map_err(|e| chain(&e))?;
    println!(
        "key written to {} (mode 0600), fingerprint {} / 鍵を作成しました。安全に保管し、リポジトリに入れないでください",
        out.display(),
        key.fingerprint()
    );
    Ok(())
}

fn ingest(
    source: PathBuf,
    out: PathBuf,
    key_file: Option<PathBuf>,
    catalog: Option<PathBuf>,
    replace: bool,
) -> Result<(), String> {
    let Some(key_file) = key_file else {
        return Err("ingest needs a pseudonymisation key: pass --key-file FILE (or KURA_KEY_FILE). Create one with \
             `kura keygen --out FILE` and keep it outside the repository / 仮名化鍵が必要です。\
             `kura keygen --out FILE` で作成し --key-file で指定してください"
            .into());
    };
    let key = ingest::PseudonymKey::load(&key_file).map_err(|e| chain(&e))?;
    let catalog = match catalog {
        Some(p) => Catalog::load(&p),
        None => Catalog::embedded(),
    }
    .map_err(|e| chain(&e))?;
    let opts = ingest::IngestOptions {
        source,
        out: out.clone(),
        catalog,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let m = ingest::run_with(
        &opts,
        &key,
        &ingest::RunSettings {
            replace,
            ..Default::default()
        },
    )
    .map_err(|e| chain(&e))?;
    println!(
        "ingested into {} with key {} / 取込が完了しました",
        out.display(),
        m.key_fingerprint
    );
    for (name, t) in &m.tables {
        println!(
            "  {name}: {} rows ({} dropped: no consent / withdrawn)",
            t.rows, t.dropped_rows
        );
    }
    Ok(())
}

fn bench_ingest(
    patients: u64,
    seed: u64,
    dir: Option<PathBuf>,
    threads: usize,
    json: bool,
) -> Result<(), String> {
    let report = crate::cli::bench::ingest::run(&crate::cli::bench::ingest::BenchOptions {
        patients,
        seed,
        dir,
        threads,
    })
    .map_err(|e| chain(&e))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{report}");
    }
    Ok(())
}
