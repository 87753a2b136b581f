//! Store, release requests (the output airlock, `crate::airlock`): the request with its
//! sealed output snapshots and rendered files, reviewers' decisions, the release record,
//! invalidation by the re-check, and downloads.
//!
//! Guarantees: each of these writes commits with its audit event or not at all; a
//! decision applies only to a pending request, and a reviewer decides a request at most
//! once (the primary key refuses a second row even under a race); the decision that
//! completes the approvals stores the release record and sets `approved` in the same
//! transaction, and only if the decisions it was built from are still all there are;
//! a rejection ends the request.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::model::{
    Invalidation, ReleaseDecisionRecord, ReleaseDownload, ReleaseFileInfo, ReleaseRequest,
};
use super::{Result, Store, StoreError, exec, opt_ts, parse_ts, ts};
use crate::audit::AuditEvent;

/// A file to store with a request (rendered tables and charts) or its approval (the
/// release record).
#[derive(Debug, Clone)]
pub struct NewFile {
    pub name: String,
    pub media_type: String,
    pub content: Vec<u8>,
    pub sha256: String,
}

/// One sealed output of a new request.
#[derive(Debug, Clone)]
pub struct NewOutput {
    pub position: u32,
    pub query_id: String,
    /// Canonical JSON of the snapshot reviewers see.
    pub snapshot: String,
    /// Canonical JSON of what only the airlock reads (ledger set references).
    pub internal: String,
    pub seal: String,
}

/// A new request: the row, its outputs and files, and the request's seal.
#[derive(Debug, Clone)]
pub struct NewRelease {
    pub request: ReleaseRequest,
    pub outputs: Vec<NewOutput>,
    pub files: Vec<NewFile>,
    pub seal: String,
}

/// An output as stored.
#[derive(Debug, Clone)]
pub struct StoredOutput {
    pub position: u32,
    pub query_id: String,
    pub snapshot: String,
    pub internal: String,
    pub seal: String,
}

/// A reviewer's decision to record.
#[derive(Debug, Clone)]
pub struct DecisionWrite {
    pub release_id: String,
    pub decision: ReleaseDecisionRecord,
    /// The decisions the caller saw before this one (reviewer names); the write is a
    /// conflict if others were recorded since.
    pub seen: Vec<String>,
    /// Set when this approval completes the request: the release record to store.
    pub record: Option<NewFile>,
}

async fn insert_file(conn: &mut AnyConnection, release: &str, f: &NewFile) -> Result<()> {
    let row = sqlx::query(
        "INSERT INTO release_files (release_id, name, media_type, content, sha256, bytes)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(release)
    .bind(&f.name)
    .bind(&f.media_type)
    .bind(&f.content)
    .bind(&f.sha256)
    .bind(f.content.len() as i64);
    exec(conn, row).await?;
    Ok(())
}

async fn insert_output(conn: &mut AnyConnection, release: &str, o: &NewOutput) -> Result<()> {
    let row = sqlx::query(
        "INSERT INTO release_outputs (release_id, position, query_id, snapshot, internal, seal)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(release)
    .bind(o.position as i64)
    .bind(&o.query_id)
    .bind(&o.snapshot)
    .bind(&o.internal)
    .bind(&o.seal);
    exec(conn, row).await?;
    Ok(())
}

/// The reviewers who decided `release`, in order.
async fn deciders(conn: &mut AnyConnection, release: &str) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT reviewer FROM release_decisions WHERE release_id = $1 ORDER BY at, reviewer",
    )
    .bind(release)
    .fetch_all(&mut *conn)
    .await?)
}

fn conflict(message: &str) -> StoreError {
    StoreError::Conflict(message.to_string())
}

const DECIDED: &str =
    "This release request has already been decided. / この持ち出し申請は既に判断済みです。";
const CHANGED: &str = "Another reviewer decided this release request meanwhile; reload it and decide again. / 他の審査担当者が先に判断しました。再読み込みしてから判断してください。";

/// A request row with its outputs' query ids and its approvals so far.
async fn request_of(conn: &mut AnyConnection, r: &AnyRow) -> Result<ReleaseRequest> {
    let id: String = r.try_get("id")?;
    let query_id: String = r.try_get("query_id")?;
    let mut query_ids: Vec<String> = sqlx::query_scalar(
        "SELECT query_id FROM release_outputs WHERE release_id = $1 ORDER BY position",
    )
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?;
    if query_ids.is_empty() {
        query_ids.push(query_id.clone());
    }
    let approvals: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM release_decisions WHERE release_id = $1 AND decision = 'approve'",
    )
    .bind(&id)
    .fetch_one(&mut *conn)
    .await?;
    let code: Option<String> = r.try_get("invalid_code")?;
    let reason: Option<String> = r.try_get("invalid_reason")?;
    Ok(ReleaseRequest {
        application_id: r.try_get("application_id")?,
        requester: r.try_get("requester")?,
        query_id,
        query_ids,
        justification: r.try_get("justification")?,
        publication: r.try_get("publication")?,
        status: r.try_get("status")?,
        checkers_required: r.try_get::<i64, _>("checkers_required")?.clamp(1, 2) as u8,
        approvals: approvals.clamp(0, 255) as u8,
        created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
        decided_at: opt_ts(r.try_get("decided_at")?)?,
        invalidation: code.map(|code| Invalidation {
            code,
            message: reason.unwrap_or_default(),
        }),
        id,
    })
}

impl Store {
    /// Store a new request with its outputs and rendered files, and its audit event.
    pub async fn create_release(&self, r: &NewRelease, event: &AuditEvent) -> Result<()> {
        let q = &r.request;
        self.audited(event, async |tx| {
            let insert = sqlx::query(
                "INSERT INTO releases (id, application_id, requester, query_id, justification, status, created_at, publication, checkers_required, seal)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&q.id)
            .bind(&q.application_id)
            .bind(&q.requester)
            .bind(&q.query_id)
            .bind(&q.justification)
            .bind(&q.status)
            .bind(ts(q.created_at))
            .bind(&q.publication)
            .bind(i64::from(q.checkers_required))
            .bind(&r.seal);
            exec(tx, insert).await?;
            for o in &r.outputs {
                insert_output(tx, &q.id, o).await?;
            }
            for f in &r.files {
                insert_file(tx, &q.id, f).await?;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// One request, or `None`.
    pub async fn release(&self, id: &str) -> Result<Option<ReleaseRequest>> {
        let mut conn = self.conn().await?;
        let row = sqlx::query("SELECT * FROM releases WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        match row {
            Some(r) => Ok(Some(request_of(&mut conn, &r).await?)),
            None => Ok(None),
        }
    }

    /// Every request, newest first (callers filter what the caller may see).
    pub async fn releases(&self) -> Result<Vec<ReleaseRequest>> {
        let mut conn = self.conn().await?;
        let rows = sqlx::query("SELECT * FROM releases ORDER BY created_at DESC, id")
            .fetch_all(&mut *conn)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(request_of(&mut conn, r).await?);
        }
        Ok(out)
    }

    /// The seal of a request as stored.
    pub async fn release_seal(&self, id: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT seal FROM releases WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *self.conn().await?)
                .await?
                .flatten(),
        )
    }

    /// The outputs of a request, in order.
    pub async fn release_outputs(&self, id: &str) -> Result<Vec<StoredOutput>> {
        let rows = sqlx::query(
            "SELECT position, query_id, snapshot, internal, seal FROM release_outputs
             WHERE release_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredOutput {
                    position: r.try_get::<i64, _>("position")? as u32,
                    query_id: r.try_get("query_id")?,
                    snapshot: r.try_get("snapshot")?,
                    internal: r.try_get("internal")?,
                    seal: r.try_get("seal")?,
                })
            })
            .collect()
    }

    /// The decisions on a request, in the order they were made.
    pub async fn release_decisions(&self, id: &str) -> Result<Vec<ReleaseDecisionRecord>> {
        let rows = sqlx::query(
            "SELECT reviewer, decision, comment, at FROM release_decisions
             WHERE release_id = $1 ORDER BY at, reviewer",
        )
        .bind(id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReleaseDecisionRecord {
                    reviewer: r.try_get("reviewer")?,
                    decision: r.try_get("decision")?,
                    comment: r.try_get("comment")?,
                    at: parse_ts(&r.try_get::<String, _>("at")?)?,
                })
            })
            .collect()
    }

    /// The files of a request (no content).
    pub async fn release_files(&self, id: &str) -> Result<Vec<ReleaseFileInfo>> {
        let rows = sqlx::query(
            "SELECT name, media_type, bytes, sha256 FROM release_files WHERE release_id = $1 ORDER BY name",
        )
        .bind(id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(file_info).collect()
    }

    /// One file of a request with its content.
    pub async fn release_file(
        &self,
        id: &str,
        name: &str,
    ) -> Result<Option<(ReleaseFileInfo, Vec<u8>)>> {
        let row = sqlx::query(
            "SELECT name, media_type, bytes, sha256, content FROM release_files
             WHERE release_id = $1 AND name = $2",
        )
        .bind(id)
        .bind(name)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        row.map(|r| Ok((file_info(&r)?, r.try_get::<Vec<u8>, _>("content")?)))
            .transpose()
    }

    /// The downloads of a request, oldest first.
    pub async fn release_downloads(&self, id: &str) -> Result<Vec<ReleaseDownload>> {
        let rows = sqlx::query(
            "SELECT name, username, at, sha256 FROM release_downloads WHERE release_id = $1 ORDER BY at",
        )
        .bind(id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReleaseDownload {
                    name: r.try_get("name")?,
                    username: r.try_get("username")?,
                    at: parse_ts(&r.try_get::<String, _>("at")?)?,
                    sha256: r.try_get("sha256")?,
                })
            })
            .collect()
    }

    /// Record one reviewer's decision and its audit event: the request must be pending,
    /// the reviewer must not have decided it, and the decisions must still be those the
    /// caller saw. A rejection ends the request; an approval that carries the release
    /// record completes it (approved). Returns the request as it is afterwards.
    pub async fn record_release_decision(
        &self,
        d: &DecisionWrite,
        event: &AuditEvent,
    ) -> Result<ReleaseRequest> {
        let id = d.release_id.as_str();
        let (request, _) = self
            .audited(event, async |tx| {
                let status: Option<String> =
                    sqlx::query_scalar("SELECT status FROM releases WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                match status.as_deref() {
                    None => return Err(StoreError::NotFound(id.to_string())),
                    Some("pending") => {}
                    Some(_) => return Err(conflict(DECIDED)),
                }
                if deciders(tx, id).await? != d.seen {
                    return Err(conflict(CHANGED));
                }
                let rec = &d.decision;
                let insert = sqlx::query(
                    "INSERT INTO release_decisions (release_id, reviewer, decision, comment, at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id)
                .bind(&rec.reviewer)
                .bind(&rec.decision)
                .bind(&rec.comment)
                .bind(ts(rec.at));
                exec(tx, insert).await?;
                let next = match (rec.decision.as_str(), &d.record) {
                    ("reject", _) => Some("rejected"),
                    (_, Some(file)) => {
                        insert_file(tx, id, file).await?;
                        Some("approved")
                    }
                    _ => None,
                };
                if let Some(status) = next {
                    let update = sqlx::query(
                        "UPDATE releases SET status = $1, decided_at = $2 WHERE id = $3 AND status = 'pending'",
                    )
                    .bind(status)
                    .bind(ts(rec.at))
                    .bind(id);
                    exec(tx, update).await?;
                }
                let row = sqlx::query("SELECT * FROM releases WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                request_of(tx, &row).await
            })
            .await?;
        Ok(request)
    }

    /// Mark a pending request as no longer releasable (the re-check before an approval
    /// failed), with its audit event.
    pub async fn invalidate_release(
        &self,
        id: &str,
        why: &Invalidation,
        event: &AuditEvent,
    ) -> Result<()> {
        self.audited(event, async |tx| {
            let update = sqlx::query(
                "UPDATE releases SET status = 'invalidated', invalid_code = $1, invalid_reason = $2, decided_at = $3
                 WHERE id = $4 AND status = 'pending'",
            )
            .bind(&why.code)
            .bind(&why.message)
            .bind(ts(super::now()))
            .bind(id);
            if exec(tx, update).await? == 0 {
                return Err(conflict(DECIDED));
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Record one download of an approved file with its audit event.
    pub async fn record_download(
        &self,
        id: &str,
        d: &ReleaseDownload,
        event: &AuditEvent,
    ) -> Result<()> {
        self.audited(event, async |tx| {
            let insert = sqlx::query(
                "INSERT INTO release_downloads (release_id, name, username, at, sha256) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(&d.name)
            .bind(&d.username)
            .bind(ts(d.at))
            .bind(&d.sha256);
            exec(tx, insert).await
        })
        .await?;
        Ok(())
    }
}

fn file_info(r: &AnyRow) -> Result<ReleaseFileInfo> {
    Ok(ReleaseFileInfo {
        name: r.try_get("name")?,
        media_type: r.try_get("media_type")?,
        bytes: r.try_get::<i64, _>("bytes")?.max(0) as u64,
        sha256: r.try_get("sha256")?,
    })
}
