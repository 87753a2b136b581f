//! The real data plane, standard reports: the data custodian's **report extract** — every
//! dataset of the catalogue, every consented patient, `pid`s re-pseudonymised under the
//! report's own key (HMAC of the extract key and a fixed label, so no application's
//! outputs join with it) — and each table of a report through the suppression path
//! (`suppression::run_report_query`) against the report's earlier publications.
//!
//! Guarantees: the extract is built and refreshed by the same code as an application's
//! (`sql::extract::ensure_extract`), so a report sees exactly the consented, pseudonymised
//! registry; a copy of every report extract's patient index is kept beside it
//! (`_annual-report-index/<extract id>.txt`) so that sets published over an older data
//! version can be carried onto the new index (a patient who left still counts as a
//! difference); a missing copy fails the report (fail closed).

use std::collections::HashMap;
use std::path::Path;

use roaring::RoaringBitmap;

use super::EnginePlane;
use crate::engine::open_extract;
use crate::engine::patient_index::{PATIENT_INDEX_FILE, PatientIndex};
use crate::privacy::ledger::Sets;
use crate::query::QueryError;
use crate::query::plane::{ReportRequest, ReportRun};
use crate::query::suppression;
use crate::sql::extract::{ExtractManifest, ensure_extract};
use crate::sql::scope::Scope;

/// Directory (under the extracts directory) of the report extract.
pub const REPORT_EXTRACT: &str = "_annual-report";
/// Directory (under the extracts directory) of the kept patient indexes.
pub const REPORT_INDEXES: &str = "_annual-report-index";
/// What the report's key is derived for (instead of an application id).
const REPORT_KEY_LABEL: &str = "kura:annual-report";

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::internal("report extract", e.to_string())
}

impl EnginePlane {
    pub(super) async fn run_report(&self, req: ReportRequest) -> Result<ReportRun, QueryError> {
        let scope = Scope {
            datasets: self
                .catalog
                .datasets
                .iter()
                .map(|d| d.name.clone())
                .collect(),
            ..Scope::default()
        };
        let out = self.extracts.join(REPORT_EXTRACT);
        let key = self.app_key(REPORT_KEY_LABEL);
        let m = ensure_extract(&self.registry, &out, &scope, &key, &self.catalog)
            .await
            .map_err(|e| QueryError::internal("report extract", e))?;
        keep_index(&self.extracts, &out, &m)?;
        let ctx = open_extract(&out, &self.catalog, &self.limits)?;
        let index = crate::engine::session::patient_index(&ctx, &self.catalog).await?;
        let earlier = carry(&self.extracts, &req.earlier, &m.extract_id, &index)?;
        let ledger = Sets(earlier.clone());
        let rules = self.rules.clone().with_defences(req.defences);
        let mut tables = Vec::with_capacity(req.queries.len());
        for sql in &req.queries {
            let t = suppression::run_report_query(
                &ctx,
                sql,
                &self.catalog,
                &rules,
                &self.limits,
                &ledger,
            )
            .await?;
            tables.push(t);
        }
        Ok(ReportRun {
            extract_id: m.extract_id,
            data_version: m.source_manifest_sha256,
            tables,
            earlier,
        })
    }
}

/// Keep a copy of the report extract's patient index under its extract id (once).
fn keep_index(extracts: &Path, out: &Path, m: &ExtractManifest) -> Result<(), QueryError> {
    let dir = extracts.join(REPORT_INDEXES);
    let target = dir.join(format!("{}.txt", m.extract_id));
    if target.is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).map_err(internal)?;
    let tmp = dir.join(format!(".{}.tmp", m.extract_id));
    std::fs::copy(out.join(PATIENT_INDEX_FILE), &tmp).map_err(internal)?;
    std::fs::rename(&tmp, &target).map_err(internal)
}

/// The earlier publications' sets on the current index: sets of the current extract as
/// they are, others through the kept index of their extract.
fn carry(
    extracts: &Path,
    earlier: &[(String, RoaringBitmap)],
    current: &str,
    index: &PatientIndex,
) -> Result<Vec<RoaringBitmap>, QueryError> {
    let mut pids: HashMap<&str, Vec<String>> = HashMap::new();
    let mut gone = HashMap::new();
    let mut out = Vec::with_capacity(earlier.len());
    for (extract, set) in earlier {
        if extract == current {
            out.push(set.clone());
            continue;
        }
        if !pids.contains_key(extract.as_str()) {
            let path = extracts.join(REPORT_INDEXES).join(format!("{extract}.txt"));
            let text = std::fs::read_to_string(&path).map_err(|e| {
                internal(format!(
                    "the patient index of an earlier publication ({}) cannot be read: {e}; the report is not built without it",
                    path.display()
                ))
            })?;
            pids.insert(extract, text.lines().map(str::to_string).collect());
        }
        out.push(index.remap(set, &pids[extract.as_str()], &mut gone)?);
    }
    Ok(out)
}
