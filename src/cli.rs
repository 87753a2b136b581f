//! Command line: `kura <command>`. Each command parses its arguments here and hands
//! them to the module that owns the work, so this file only shows what kura can do.

use clap::{Parser, Subcommand};

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

#[derive(Debug, Subcommand)]
pub enum Command {}

/// Run the command line; returns the process exit code.
pub fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {}
}
