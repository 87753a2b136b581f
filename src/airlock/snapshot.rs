//! The output airlock, the snapshot of one output: the answer exactly as it was released
//! (columns, rows, disclosure summary), the CSV text it leaves as, the SQL, plan
//! fingerprint, extract and mode, the per-cell disclosure record (`cells.rs`), and the
//! hashes of its rendered files; beside it, the internal part only the airlock reads (the
//! release-ledger sets of its released cells, for the re-check).
//!
//! Guarantees: a snapshot is built from a stored answer that the signed log vouches for
//! (`Store::stored_answer`), is never rebuilt afterwards (edits to notebooks or queries
//! change nothing), and is sealed: [`seal`] hashes the snapshot and its internal part as
//! canonical JSON, and the request's audit event carries the seal, so any later edit of
//! the stored snapshot is found before an approval or a download.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::cells::{CellRecord, ColumnRecord, records};
use super::{AirlockError, MAX_ROWS, Result};
use crate::audit::canonical_json;
use crate::privacy::result::{Disclosure, ReleasedColumn, ReleasedResult};
use crate::store::model::ReleaseFileInfo;
use crate::store::results::{StoredAnswer, sha256_hex};

/// One output of a release request, as reviewers see it and the release record keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutputSnapshot {
    /// 1-based position; the files are named `result-<position>.*`.
    pub position: u32,
    /// `result-<position>`.
    pub name: String,
    pub query_id: String,
    pub sql: String,
    pub plan_fingerprint: String,
    pub extract_id: String,
    /// `suppression` or `dp`.
    pub mode: String,
    pub answered_at: DateTime<Utc>,
    /// SHA-256 of the stored answer (as sealed in the query's `query.run` event).
    pub result_sha256: String,
    #[schema(value_type = Vec<Object>)]
    pub columns: Vec<ReleasedColumn>,
    /// The rows as released: `null` where a cell is suppressed (see `disclosure`).
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<Value>>,
    #[schema(value_type = Object)]
    pub disclosure: Disclosure,
    /// The table as it leaves (`result-<position>.csv`), byte for byte.
    pub csv: String,
    pub column_rules: Vec<ColumnRecord>,
    /// Row-major, one record per cell.
    pub cells: Vec<Vec<CellRecord>>,
    /// The rendered files of this output with their hashes.
    pub files: Vec<ReleaseFileInfo>,
}

impl OutputSnapshot {
    /// The released result the snapshot holds.
    pub fn result(&self) -> ReleasedResult {
        ReleasedResult {
            columns: self.columns.clone(),
            rows: self.rows.clone(),
            disclosure: self.disclosure.clone(),
        }
    }
}

/// What only the airlock reads about an output: the ledger sets of its released cells.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputInternal {
    pub extract_id: String,
    /// k the answer was checked at.
    pub k: u32,
    /// SHA-256 of each release-ledger set of the answer (`release_ledger.set_sha256`).
    pub set_hashes: Vec<String>,
    /// Every released protected cell: `(row, column, indices into set_hashes)`.
    pub cell_sets: Vec<(usize, usize, Vec<u32>)>,
}

/// The snapshot of a stored answer at `position`, without its files yet, and its
/// internal part.
pub fn build(
    answer: &StoredAnswer,
    sql: &str,
    position: u32,
) -> Result<(OutputSnapshot, OutputInternal)> {
    let result = &answer.body.result;
    if result.rows.len() > MAX_ROWS {
        return Err(AirlockError::refused(
            400,
            "release_too_large",
            format!(
                "An output may have at most {MAX_ROWS} rows, so that reviewers can check every cell; aggregate more coarsely and request the new answer. / 審査のため、1 出力は {MAX_ROWS} 行までです。集計単位を粗くして再申請してください。"
            ),
        ));
    }
    let rec = records(result, &answer.body.trace)?;
    let snapshot = OutputSnapshot {
        position,
        name: format!("result-{position}"),
        query_id: answer.query_id.clone(),
        sql: sql.to_string(),
        plan_fingerprint: answer.plan_fingerprint.clone(),
        extract_id: answer.extract_id.clone(),
        mode: answer.mode.clone(),
        answered_at: answer.at,
        result_sha256: answer.sha256.clone(),
        columns: result.columns.clone(),
        rows: result.rows.clone(),
        disclosure: result.disclosure.clone(),
        csv: super::files::csv::render(result),
        column_rules: rec.columns,
        cells: rec.cells,
        files: Vec::new(),
    };
    let internal = OutputInternal {
        extract_id: answer.extract_id.clone(),
        k: result.disclosure.threshold,
        set_hashes: answer.set_hashes.clone(),
        cell_sets: rec.cell_sets,
    };
    Ok((snapshot, internal))
}

/// Canonical JSON of a snapshot part.
pub fn canonical<T: Serialize>(value: &T) -> Result<String> {
    let v = serde_json::to_value(value).map_err(crate::store::StoreError::from)?;
    Ok(canonical_json(&v))
}

/// The seal of an output: SHA-256 over its snapshot and internal part (canonical JSON).
pub fn seal(snapshot: &str, internal: &str) -> String {
    sha256_hex(format!("kura-release-output-v1\n{snapshot}\n{internal}").as_bytes())
}

/// The seal of a request: SHA-256 over who asked, why, where it is published, how many
/// checkers it needs, and the seals of its outputs in order.
pub fn request_seal(
    id: &str,
    requester: &str,
    justification: &str,
    publication: &str,
    checkers: u8,
    outputs: &[String],
) -> String {
    let fields = serde_json::json!({
        "id": id,
        "requester": requester,
        "justification": justification,
        "publication": publication,
        "checkers_required": checkers,
        "outputs": outputs,
    });
    sha256_hex(format!("kura-release-request-v1\n{}", canonical_json(&fields)).as_bytes())
}
