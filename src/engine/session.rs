//! Engine stage, session: opens a DataFusion session over exactly one extract.
//!
//! Guarantees: the session knows only the extract's tables, each registered under its
//! catalogue name with the catalogue's schema (never an inferred one); nothing else is
//! registered — no URL tables (`enable_url_table` stays off), no `information_schema`,
//! no other catalogue. A table outside the extract therefore does not exist for the
//! query. Memory-hungry operators draw from a pool of `limits.memory_bytes` inside the
//! process-wide pool (`engine::memory`)
//! and never spill to disk, so a heavy query fails with `resource_limit` instead of
//! taking the process down or copying patient rows into temporary files.

use std::path::Path;
use std::sync::Arc;

use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::catalog::Catalog;
use crate::engine::Limits;
use crate::engine::patient_index::PatientIndex;
use crate::query::QueryError;
use crate::sql::extract::{EXTRACT_MANIFEST, ExtractManifest};

/// Partitions per query: the enclave machine is shared by concurrent queries, so each
/// one gets a small, predictable share of the cores.
pub const TARGET_PARTITIONS: usize = 2;

/// A session context with kura's settings and limits and no tables.
pub fn empty_session(limits: &Limits) -> Result<SessionContext, QueryError> {
    let config = SessionConfig::new()
        .with_target_partitions(TARGET_PARTITIONS)
        .with_information_schema(false);
    // Spilling is disabled: it would write patient rows to unencrypted temporary files
    // outside the extract, and its error paths are less predictable (DataFusion 55's
    // nested-loop join spill fails with an internal error under a small pool). Without
    // it, an operator over the pool fails with ResourcesExhausted -> `resource_limit`.
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(crate::engine::memory::query_pool(limits.memory_bytes))
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .map_err(|e| QueryError::internal("query runtime", e))?;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// Register `<dir>/<table>.parquet` under `table` with the catalogue schema.
pub fn register_table(
    ctx: &SessionContext,
    dir: &Path,
    table: &str,
    catalog: &Catalog,
) -> Result<(), QueryError> {
    let internal = |detail: String| QueryError::internal("extract session", detail);
    let t = catalog
        .table(table)
        .ok_or_else(|| internal(format!("extract table `{table}` is not in the catalogue")))?;
    let path = dir.join(format!("{}.parquet", t.name));
    if !path.is_file() {
        return Err(internal(format!(
            "extract file {} is missing; rebuild the extract",
            path.display()
        )));
    }
    let url =
        ListingTableUrl::parse(path.to_string_lossy()).map_err(|e| internal(e.to_string()))?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(t.arrow_schema());
    let provider = ListingTable::try_new(config).map_err(|e| internal(e.to_string()))?;
    ctx.register_table(t.name.as_str(), Arc::new(provider))
        .map_err(|e| internal(e.to_string()))?;
    Ok(())
}

/// Open a session over the extract in `dir`: its tables only, with the given limits.
pub fn open_extract(
    dir: &Path,
    catalog: &Catalog,
    limits: &Limits,
) -> Result<SessionContext, QueryError> {
    let manifest = ExtractManifest::read(dir).map_err(|e| {
        QueryError::internal(
            "extract session",
            format!(
                "cannot open extract {} ({EXTRACT_MANIFEST}): {e}; build it with ensure_extract",
                dir.display()
            ),
        )
    })?;
    let ctx = empty_session(limits)?;
    for (name, entry) in &manifest.tables {
        // The manifest is ours, but a file name other than `<table>.parquet` would let
        // an edited manifest point a table at any file; refuse it.
        if entry.file != format!("{name}.parquet") {
            return Err(QueryError::internal(
                "extract session",
                format!(
                    "extract manifest maps `{name}` to unexpected file `{}`",
                    entry.file
                ),
            ));
        }
        register_table(&ctx, dir, name, catalog)?;
    }
    // The approved scope travels with the session so that disclosure padding enumerates
    // only the key values the approval covers (its fiscal years, diseases, prefectures,
    // manufacturers), not the whole catalogue domain; the patient index, so that the
    // privacy rewrite can collect each cell's contributors as a set.
    let index =
        PatientIndex::load_cached(dir, &manifest.extract_id, &manifest.patient_index_sha256)?;
    let state = ctx.state_ref();
    let mut state = state.write();
    state
        .config_mut()
        .set_extension(Arc::new(manifest.scope.clone()));
    state.config_mut().set_extension(index);
    drop(state);
    Ok(ctx)
}

/// The patient index of the session: the extract's (set by [`open_extract`]), or, for a
/// session built without an extract (test fixtures), scanned from its patient tables once
/// and kept on the session.
pub async fn patient_index(
    ctx: &SessionContext,
    catalog: &Catalog,
) -> Result<Arc<PatientIndex>, QueryError> {
    if let Some(index) = ctx
        .state_ref()
        .read()
        .config()
        .get_extension::<PatientIndex>()
    {
        return Ok(index);
    }
    let index = Arc::new(PatientIndex::scan(ctx, catalog).await?);
    ctx.state_ref()
        .write()
        .config_mut()
        .set_extension(index.clone());
    Ok(index)
}
