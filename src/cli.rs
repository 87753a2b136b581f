//! Command line: `kura <command>`. Each command parses its arguments here and hands
//! them to the module that owns the work, so this file only shows what kura can do.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "kura", version, about = "kura (蔵): research data access enclave for patient registries")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build or refresh one application's scoped extract / 申請ごとの抽出データを作成・更新
    Extract(crate::sql::extract_cli::ExtractArgs),
}

/// Run the command line; returns the process exit code.
pub fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kura: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Extract(args) => runtime.block_on(crate::sql::extract_cli::run(args)),
    }
}
