//! Store, stored answers: every answer exactly as it was released to the researcher, with
//! the disclosure check's trace, so that the output airlock can snapshot it later
//! (`crate::airlock`).
//!
//! Guarantees: an answer is stored only inside the transaction of its query's history row
//! and audit event (`record_query`), whose detail carries the SHA-256 of the stored text,
//! so a stored answer exists exactly when the answer could be returned and an edit of it
//! is found against the signed log ([`Store::stored_answer`] checks it); the ledger sets
//! of the answer are named by their hashes, as the release ledger stores them; stored
//! answers are deleted with their application's extract (derived records, 要綱 第3章5).

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use super::{Result, Store, StoreError, exec, now, parse_ts, ts};
use crate::audit::canonical_json;
use crate::privacy::disclosure::AnswerTrace;
use crate::privacy::result::ReleasedResult;

/// The stored text of an answer: the released result and its trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAnswerBody {
    pub result: ReleasedResult,
    pub trace: AnswerTrace,
}

/// An answer to store with its query record.
#[derive(Debug, Clone)]
pub struct AnswerWrite {
    pub query_id: String,
    pub application_id: String,
    pub username: String,
    pub extract_id: String,
    pub mode: String,
    pub plan_fingerprint: String,
    /// Canonical JSON of a [`StoredAnswerBody`].
    pub answer: String,
    /// SHA-256 of `answer` (also in the query's audit event).
    pub sha256: String,
}

impl AnswerWrite {
    /// Seal `body` as canonical JSON and its SHA-256.
    pub fn seal(body: &StoredAnswerBody) -> Result<(String, String)> {
        let text = canonical_json(&serde_json::to_value(body)?);
        let sha = sha256_hex(text.as_bytes());
        Ok((text, sha))
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// A stored answer read back.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    pub query_id: String,
    pub application_id: String,
    pub username: String,
    pub extract_id: String,
    pub mode: String,
    pub plan_fingerprint: String,
    pub body: StoredAnswerBody,
    pub sha256: String,
    /// The release-ledger hashes of the answer's sets (what the trace's indices name).
    pub set_hashes: Vec<String>,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Store one answer (inside the caller's transaction), naming its ledger sets.
pub(super) async fn insert(
    conn: &mut AnyConnection,
    a: &AnswerWrite,
    set_hashes: &[String],
) -> Result<()> {
    let row = sqlx::query(
        "INSERT INTO query_results (query_id, application_id, username, extract_id, mode, plan_fingerprint, answer, result_sha256, set_hashes, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&a.query_id)
    .bind(&a.application_id)
    .bind(&a.username)
    .bind(&a.extract_id)
    .bind(&a.mode)
    .bind(&a.plan_fingerprint)
    .bind(&a.answer)
    .bind(&a.sha256)
    .bind(serde_json::to_string(set_hashes)?)
    .bind(ts(now()));
    exec(conn, row).await?;
    Ok(())
}

/// Delete the stored answers of `application` (inside the caller's transaction): its
/// extract was destroyed.
pub(super) async fn delete_for(conn: &mut AnyConnection, application: &str) -> Result<()> {
    let delete =
        sqlx::query("DELETE FROM query_results WHERE application_id = $1").bind(application);
    exec(conn, delete).await?;
    Ok(())
}

impl Store {
    /// The stored answer of `query_id`, checked against the signed log: its text must
    /// hash to the `result_sha256` of the query's MAC-verified `query.run` event. `None`
    /// when nothing was stored (a refused or failed query, or one answered before answers
    /// were stored); an edited answer is an error naming the query.
    pub async fn stored_answer(&self, query_id: &str) -> Result<Option<StoredAnswer>> {
        let Some(r) = sqlx::query("SELECT * FROM query_results WHERE query_id = $1")
            .bind(query_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
        else {
            return Ok(None);
        };
        let text: String = r.try_get("answer")?;
        let sha: String = r.try_get("result_sha256")?;
        let signed = self.signed_detail("query.run", query_id).await?;
        let sealed = signed
            .as_ref()
            .and_then(|d| d["result_sha256"].as_str())
            .map(str::to_string);
        if sha256_hex(text.as_bytes()) != sha || sealed.as_deref() != Some(sha.as_str()) {
            return Err(StoreError::Tampered(format!(
                "the stored answer of {query_id} does not match its signed audit event"
            )));
        }
        Ok(Some(StoredAnswer {
            query_id: r.try_get("query_id")?,
            application_id: r.try_get("application_id")?,
            username: r.try_get("username")?,
            extract_id: r.try_get("extract_id")?,
            mode: r.try_get("mode")?,
            plan_fingerprint: r.try_get("plan_fingerprint")?,
            body: serde_json::from_str(&text)?,
            sha256: sha,
            set_hashes: serde_json::from_str(&r.try_get::<String, _>("set_hashes")?)?,
            at: parse_ts(&r.try_get::<String, _>("at")?)?,
        }))
    }

    /// The plan fingerprint of a stored answer (a cached DP answer re-released under a
    /// new query id keeps its original's).
    pub async fn answer_fingerprint(&self, query_id: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT plan_fingerprint FROM query_results WHERE query_id = $1")
                .bind(query_id)
                .fetch_optional(&mut *self.conn().await?)
                .await?,
        )
    }

    /// The detail of the `ok` audit event of `action` whose reference is `reference`,
    /// read only if its MAC verifies (the event as signed, not the row's loose columns).
    pub async fn signed_detail(
        &self,
        action: &str,
        reference: &str,
    ) -> Result<Option<serde_json::Value>> {
        let mut conn = self.conn().await?;
        let found = crate::audit::find_verified(&mut conn, &self.key, action, reference)
            .await
            .map_err(|e| match e {
                crate::audit::AuditError::Tampered(seq) => StoreError::Tampered(format!(
                    "audit entry {seq} ({action} {reference}) does not verify"
                )),
                other => other.into(),
            })?;
        Ok(found.map(|r| r.event["detail"].clone()))
    }
}
