//! Command line: `kura <command>`. Each command parses its arguments here and hands
//! them to the module that owns the work, so this file only shows what kura can do.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, process_env};

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
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides the configuration).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
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
        Ok(cfg)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage accounts (operator). / アカウント管理
    User {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        action: UserCommand,
    },
    /// Audit log tools. / 監査ログ
    Audit {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        action: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account; prints a generated password unless --password-stdin is given.
    Add {
        username: String,
        /// researcher | reviewer | auditor | pms | admin (repeatable)
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Manufacturer code of a PMS team account (e.g. M01).
        #[arg(long)]
        manufacturer: Option<String>,
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
    Verify,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Run the command line; returns the process exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::User { config, action } => {
            runtime().block_on(crate::admin::user_command(config, action))
        }
        Command::Audit { config, action } => {
            runtime().block_on(crate::admin::audit_command(config, action))
        }
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
