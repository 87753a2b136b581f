//! `kura scheduler` and `kura executor`: the Ballista cluster of `engine.mode = "ballista"`,
//! as kura binaries so that every node has kura's codec (the functions of the privacy
//! rewrite) and limits. Run them on the enclave's private network only (they refuse
//! public addresses); see docs/configuration.md for the layout.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::engine::ballista::cluster::{self, ExecutorSettings};

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Private address to listen on, e.g. 10.0.0.5:50050.
    #[arg(long)]
    pub bind: SocketAddr,
    /// The extracts directory, at the same path as on the gateway (`<data_dir>/extracts`).
    #[arg(long, value_name = "DIR")]
    pub extracts_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler's private address, e.g. 10.0.0.5:50050.
    #[arg(long)]
    pub scheduler: SocketAddr,
    /// Private address of this executor's data (Flight) service, e.g. 10.0.0.6:50051;
    /// the gateway and the other executors fetch results and shuffle data from it.
    #[arg(long)]
    pub bind: SocketAddr,
    /// Port of this executor's gRPC (task) service on the same address.
    #[arg(long)]
    pub grpc_port: u16,
    /// The extracts directory, at the same path as on the gateway.
    #[arg(long, value_name = "DIR")]
    pub extracts_dir: PathBuf,
    /// Shuffle files (intermediate rows): on the enclave's encrypted storage.
    #[arg(long, value_name = "DIR")]
    pub work_dir: PathBuf,
    /// Memory pool of this executor in MiB (operators fail instead of spilling). Never 0:
    /// Ballista reads 0 as "no limit".
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_mib: u64,
    /// Tasks run at once.
    #[arg(long, default_value_t = 2)]
    pub concurrent_tasks: usize,
}

/// `kura scheduler`.
pub async fn scheduler(args: SchedulerArgs) -> Result<(), String> {
    crate::config::check_private("--bind", args.bind.ip())?;
    crate::http::serve::init_tracing("text");
    println!(
        "kura scheduler (Ballista) on {} for extracts in {} / スケジューラを起動します",
        args.bind,
        args.extracts_dir.display()
    );
    cluster::run_scheduler(args.bind, &args.extracts_dir).await
}

/// `kura executor`.
pub async fn executor(args: ExecutorArgs) -> Result<(), String> {
    crate::config::check_private("--bind", args.bind.ip())?;
    crate::config::check_private("--scheduler", args.scheduler.ip())?;
    crate::http::serve::init_tracing("text");
    println!(
        "kura executor (Ballista) on {} for scheduler {} / エグゼキュータを起動します",
        args.bind, args.scheduler
    );
    cluster::run_executor(ExecutorSettings {
        scheduler: args.scheduler,
        bind: args.bind,
        grpc_port: args.grpc_port,
        extracts: args.extracts_dir,
        work_dir: args.work_dir,
        memory_mib: args.memory_mib,
        concurrent_tasks: args.concurrent_tasks,
    })
    .await
}
