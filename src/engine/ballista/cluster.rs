//! Engine stage, Ballista processes: `kura scheduler` and `kura executor` run Ballista's own
//! scheduler and executor with kura's codec (`codec.rs`), so the functions of the privacy
//! rewrite exist on every node, and with kura's limits on every executor: a memory pool per
//! executor, operators that fail instead of spilling patient rows to temporary files (as
//! in the gateway), and shuffle files only in the work directory the operator names.
//!
//! Guarantees: a node binds only to a loopback or private address (10/8, 172.16/12,
//! 192.168/16, fc00::/7) — the scheduler runs any plan it is sent and executors serve
//! shuffle data to anyone who asks, so neither may ever be reachable from researchers'
//! networks; it refuses to start otherwise, and without an extracts directory it can read.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::SessionConfig;

use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;

use super::codec::{Functions, LogicalCodec, PhysicalCodec};

pub use crate::config::{check_private, is_private};

fn codecs(extracts: &Path) -> Result<(Arc<LogicalCodec>, Arc<PhysicalCodec>), String> {
    let functions = Functions::new(extracts).map_err(|e| {
        format!("--extracts-dir: {e}; point it at the extracts directory the gateway uses (the same path on every node) / 抽出データのディレクトリを指定してください")
    })?;
    Ok((
        Arc::new(LogicalCodec::new(functions.clone())),
        Arc::new(PhysicalCodec::new(functions)),
    ))
}

/// `kura scheduler`: Ballista's scheduler on `bind`, with kura's codec.
pub async fn run_scheduler(bind: SocketAddr, extracts: &Path) -> Result<(), String> {
    check_private("--bind", bind.ip())?;
    let (logical, physical) = codecs(extracts)?;
    let config = SchedulerConfig {
        bind_host: bind.ip().to_string(),
        bind_port: bind.port(),
        external_host: bind.ip().to_string(),
        override_logical_codec: Some(logical),
        override_physical_codec: Some(physical),
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| format!("scheduler: {e}"))?;
    start_server(cluster, bind, Arc::new(config))
        .await
        .map_err(|e| format!("scheduler: {e}"))
}

/// What `kura executor` runs with.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    /// The scheduler's address (`host:port`, private).
    pub scheduler: SocketAddr,
    /// Address for the executor's Flight (shuffle data) service; gRPC uses `grpc_port`.
    pub bind: SocketAddr,
    pub grpc_port: u16,
    pub extracts: PathBuf,
    /// Shuffle files (intermediate rows): keep it on the enclave's encrypted storage.
    pub work_dir: PathBuf,
    pub memory_mib: u64,
    pub concurrent_tasks: usize,
}

/// An executor task's runtime: operators over the memory pool fail instead of spilling
/// patient rows to temporary files (as in the gateway, `engine::session`); Ballista puts
/// its per-task memory pool on top.
fn no_spill_runtime(_: &SessionConfig) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    RuntimeEnvBuilder::new()
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
}

/// `kura executor`: Ballista's executor with kura's codec and limits.
pub async fn run_executor(s: ExecutorSettings) -> Result<(), String> {
    check_private("--bind", s.bind.ip())?;
    check_private("--scheduler", s.scheduler.ip())?;
    let (logical, physical) = codecs(&s.extracts)?;
    std::fs::create_dir_all(&s.work_dir)
        .map_err(|e| format!("--work-dir {}: {e}", s.work_dir.display()))?;
    let config = ExecutorProcessConfig {
        bind_host: s.bind.ip().to_string(),
        external_host: Some(s.bind.ip().to_string()),
        port: s.bind.port(),
        grpc_port: s.grpc_port,
        scheduler_host: s.scheduler.ip().to_string(),
        scheduler_port: s.scheduler.port(),
        scheduler_connect_timeout_seconds: 30,
        vcores: s.concurrent_tasks,
        work_dir: Some(s.work_dir.to_string_lossy().into_owned()),
        // Shuffle files of finished jobs hold intermediate rows: keep them briefly.
        job_data_ttl_seconds: 300,
        job_data_clean_up_interval_seconds: 60,
        memory_pool_size: Some(s.memory_mib << 20),
        override_runtime_producer: Some(Arc::new(no_spill_runtime)),
        override_logical_codec: Some(logical),
        override_physical_codec: Some(physical),
        ..Default::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| format!("executor: {e}"))
}
