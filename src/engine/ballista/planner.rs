//! Engine stage, Ballista: which plans go to the cluster. A plan that reads an extract
//! (a scan of one of its Parquet tables) is sent to the scheduler, already guarded and
//! rewritten; a plan over values that are already released — DP post-processing over
//! noisy numbers, literal rows — runs here in the gateway, where it always ran.
//!
//! Guarantees: the plan sent is exactly the plan the gateway built (the rewrite's
//! contributor sets, clamping and bounding included, through `codec.rs`); nothing that
//! reads patient data runs outside the cluster's own memory limits by accident of
//! routing, and nothing is sent that has no extract to read.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::source_as_provider;
use datafusion::error::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion_proto::protobuf::LogicalPlanNode;

use ballista_core::planner::BallistaQueryPlanner;

/// Extract scans to the cluster, everything else here.
pub struct Planner {
    remote: BallistaQueryPlanner<LogicalPlanNode>,
    local: DefaultPhysicalPlanner,
}

impl std::fmt::Debug for Planner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planner")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl Planner {
    pub fn new(remote: BallistaQueryPlanner<LogicalPlanNode>) -> Self {
        Self {
            remote,
            local: DefaultPhysicalPlanner::default(),
        }
    }
}

/// Whether `plan` (subqueries included) scans an extract table.
pub fn reads_extract(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && source_as_provider(&scan.source).is_ok_and(|p| p.is::<ListingTable>())
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

#[async_trait]
impl QueryPlanner for Planner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if reads_extract(plan) {
            self.remote.create_physical_plan(plan, state).await
        } else {
            self.local.create_physical_plan(plan, state).await
        }
    }
}
