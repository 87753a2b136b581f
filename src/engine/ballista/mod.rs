//! Engine stage, Ballista execution (issue 15 §3, `engine.mode = "ballista"`): the
//! gateway still parses, guards and rewrites every query and checks every answer for
//! disclosure (nothing of that moves); only the execution of the **rewritten** plan moves
//! to a Ballista cluster — a scheduler and executors on the enclave's private network,
//! reading the application's extract from a path they share with the gateway.
//!
//! ```text
//!  gateway: guard → rewrite → (plan reads an extract?) ──yes──► scheduler ─► executors
//!                                   │ no (released values only)        │ (kura codec:
//!                                   ▼                                  │  contributor sets,
//!                               local DataFusion                       │  safe functions, …)
//!  gateway: disclosure check / DP noise ◄──── batches ─────────────────┘
//! ```
//!
//! `planner.rs` decides what goes to the cluster, `codec.rs` carries kura's functions,
//! `cluster.rs` runs `kura scheduler` and `kura executor`.
//!
//! Guarantees: a session is upgraded for Ballista only with kura's codec and planner; the
//! scheduler address comes from the configuration and nowhere else (a query cannot name
//! one); the gateway's time limit and row cap still apply to every answer it reads back.

pub mod cluster;
pub mod codec;
pub mod planner;

use std::path::Path;
use std::sync::Arc;

use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use datafusion_proto::protobuf::LogicalPlanNode;

use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use ballista_core::planner::BallistaQueryPlanner;

use crate::query::QueryError;
use codec::{Functions, LogicalCodec, PhysicalCodec};

/// A Ballista cluster the gateway sends rewritten plans to.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// `http://host:port` of the scheduler's gRPC service.
    scheduler: String,
    functions: Functions,
}

impl Cluster {
    /// The cluster whose scheduler is `host:port`; extracts are read from under `extracts`.
    pub fn new(host: &str, port: u16, extracts: &Path) -> Result<Self, String> {
        let functions = Functions::new(extracts).map_err(|e| e.to_string())?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        Ok(Self {
            scheduler: format!("http://{host}:{port}"),
            functions,
        })
    }

    /// `ctx` (an extract session) with plans that read the extract executed by the cluster.
    pub fn distribute(&self, ctx: SessionContext) -> Result<SessionContext, QueryError> {
        let internal =
            |e: datafusion::error::DataFusionError| QueryError::internal("ballista session", e);
        let state = ctx.state();
        let logical = Arc::new(LogicalCodec::new(self.functions.clone()));
        let physical = Arc::new(PhysicalCodec::new(self.functions.clone()));
        let config = state
            .config()
            .clone()
            .upgrade_for_ballista()
            .with_ballista_logical_extension_codec(logical.clone())
            .with_ballista_physical_extension_codec(physical);
        let remote = BallistaQueryPlanner::<LogicalPlanNode>::with_extension(
            self.scheduler.clone(),
            config.ballista_config(),
            logical,
        );
        // The extract's tables live in the existing default catalog: a new config must not
        // ask the builder to create (and so replace) it.
        let config = config
            .with_ballista_query_planner(Arc::new(planner::Planner::new(remote)))
            .with_create_default_catalog_and_schema(false);
        let state = SessionStateBuilder::new_from_existing(state)
            .with_config(config)
            .build()
            .upgrade_for_ballista(self.scheduler.clone())
            .map_err(internal)?;
        Ok(SessionContext::new_with_state(state))
    }
}
