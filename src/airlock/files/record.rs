//! The output airlock, `release.json`: the machine-readable release record, in the spirit
//! of SACRO/ACRO's `results.json`: the release (who asked, why, where it is published,
//! when it was requested and approved), every checker with their decision, comment and
//! time, and per output its status, type, the command (SQL) that made it, the
//! disclosure summary (`sdc`: threshold, suppressed and differencing cells, rounding,
//! ε), every cell's rule outcomes, and its files with their SHA-256.
//!
//! Guarantees: built only from the sealed snapshots and the recorded decisions; it
//! carries no more than the snapshots do (no data value beyond the released table, no
//! contributor count finer than a band); its own hash is recorded in the approval's audit
//! event beside the other files'.

use serde_json::{Value, json};

use super::super::snapshot::OutputSnapshot;
use crate::store::model::{ReleaseDecisionRecord, ReleaseRequest};

/// The record's format name and version.
pub const FORMAT: &str = "kura-release-record";
pub const VERSION: u32 = 1;

fn output(s: &OutputSnapshot, comments: &[Value]) -> Value {
    let d = &s.disclosure;
    let dp = d.dp.as_ref().map(|dp| {
        json!({
            "epsilon": dp.epsilon,
            "cached": dp.cached,
            "mechanism": dp.mechanism,
            "bounds": dp.bounds,
            "release_threshold": dp.release_threshold,
        })
    });
    let summary = if d.suppressed_cells == 0 {
        "pass; no cell suppressed".to_string()
    } else {
        format!(
            "pass; {} cell(s) suppressed ({} for differencing)",
            d.suppressed_cells,
            d.differencing.len()
        )
    };
    json!({
        "uid": s.name,
        "status": "pass",
        "type": "table",
        "query_id": s.query_id,
        "command": s.sql,
        "plan_fingerprint": s.plan_fingerprint,
        "extract_id": s.extract_id,
        "mode": s.mode,
        "timestamp": s.answered_at,
        "result_sha256": s.result_sha256,
        "summary": summary,
        "sdc": {
            "summary": {
                "threshold": d.threshold,
                "suppressed": d.suppressed_cells,
                "differencing": d.differencing.len(),
                "rounding": d.rounding,
                "dp": dp,
            },
            "cells": {
                "suppressed": d.suppressed,
                "differencing": d.differencing,
            },
            "notes": d.notes,
        },
        "columns": s.columns,
        "column_rules": s.column_rules,
        "cells": s.cells,
        "files": s.files,
        "comments": comments,
    })
}

/// The release record of an approved request.
pub fn build(
    release: &ReleaseRequest,
    outputs: &[OutputSnapshot],
    decisions: &[ReleaseDecisionRecord],
) -> Vec<u8> {
    let comments: Vec<Value> = decisions
        .iter()
        .map(|d| json!({"checker": d.reviewer, "decision": d.decision, "comment": d.comment, "at": d.at}))
        .collect();
    let results: serde_json::Map<String, Value> = outputs
        .iter()
        .map(|s| (s.name.clone(), output(s, &comments)))
        .collect();
    let files: Vec<&crate::store::model::ReleaseFileInfo> =
        outputs.iter().flat_map(|s| &s.files).collect();
    let record = json!({
        "format": FORMAT,
        "version": VERSION,
        "release": {
            "id": release.id,
            "application": release.application_id,
            "requester": release.requester,
            "justification": release.justification,
            "publication": release.publication,
            "requested_at": release.created_at,
            "approved_at": release.decided_at,
            "checkers_required": release.checkers_required,
        },
        "checkers": decisions,
        "results": results,
        "files": files,
    });
    let mut text = serde_json::to_vec_pretty(&record).unwrap_or_default();
    text.push(b'\n');
    text
}
