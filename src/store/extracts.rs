//! Store, extracts: which extract version serves an application, and its destruction.
//!
//! Guarantees: one extract row per application (a rebuild replaces it and clears any
//! destruction mark); building and destroying are each written with their audit event
//! in one transaction, which also deletes the release ledger of the replaced or
//! destroyed extract.

use serde_json::json;
use sqlx::{AnyConnection, Row};

use super::model::ExtractInfo;
use super::{Result, Store, exec, now, opt_ts, parse_ts, ts};
use crate::audit::AuditEvent;

/// A built extract version to register as an application's live extract.
#[derive(Debug, Clone)]
pub struct ExtractWrite {
    pub extract_id: String,
    pub path: String,
}

/// The audit event of registering `x` for `id`.
pub(super) fn build_event(actor: &str, id: &str, x: &ExtractWrite) -> AuditEvent {
    AuditEvent::ok(
        actor,
        "extract.build",
        Some(id),
        json!({"extract_id": x.extract_id}),
    )
}

/// Make `x` the live extract of `id` (inside the caller's transaction). A replaced
/// extract takes its release ledger with it (a new extract has a new patient index; the
/// same extract id keeps its ledger).
pub(super) async fn register(conn: &mut AnyConnection, id: &str, x: &ExtractWrite) -> Result<u64> {
    super::ledger::delete_for(conn, id, Some(&x.extract_id)).await?;
    let register = sqlx::query(
        "INSERT INTO extracts (application_id, extract_id, path, built_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT(application_id) DO UPDATE SET extract_id = excluded.extract_id, path = excluded.path,
           built_at = excluded.built_at, destroyed_at = NULL",
    )
    .bind(id)
    .bind(&x.extract_id)
    .bind(&x.path)
    .bind(ts(now()));
    exec(conn, register).await
}

fn extract_of(r: &sqlx::any::AnyRow) -> Result<ExtractInfo> {
    Ok(ExtractInfo {
        application_id: r.try_get("application_id")?,
        extract_id: r.try_get("extract_id")?,
        path: r.try_get("path")?,
        built_at: parse_ts(&r.try_get::<String, _>("built_at")?)?,
        destroyed_at: opt_ts(r.try_get("destroyed_at")?)?,
    })
}

impl Store {
    /// Register a (re)built extract.
    pub async fn set_extract(
        &self,
        id: &str,
        extract_id: &str,
        path: &str,
        actor: &str,
    ) -> Result<()> {
        let x = ExtractWrite {
            extract_id: extract_id.to_string(),
            path: path.to_string(),
        };
        let event = build_event(actor, id, &x);
        self.audited(&event, async |tx| register(tx, id, &x).await)
            .await?;
        Ok(())
    }

    pub async fn extract(&self, id: &str) -> Result<Option<ExtractInfo>> {
        let row = sqlx::query("SELECT * FROM extracts WHERE application_id = $1")
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        row.as_ref().map(extract_of).transpose()
    }

    /// Every registered extract (live or destroyed).
    pub async fn extracts(&self) -> Result<Vec<ExtractInfo>> {
        let rows = sqlx::query("SELECT * FROM extracts ORDER BY application_id")
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter().map(extract_of).collect()
    }

    /// Point an application's registered extract at `path` (a restore into another data
    /// directory moved the files), audited `extract.relocate`.
    pub async fn relocate_extract(&self, id: &str, path: &str, actor: &str) -> Result<()> {
        let event = AuditEvent::ok(actor, "extract.relocate", Some(id), json!({"path": path}));
        self.audited(&event, async |tx| {
            let moved = sqlx::query("UPDATE extracts SET path = $1 WHERE application_id = $2")
                .bind(path)
                .bind(id);
            exec(tx, moved).await
        })
        .await?;
        Ok(())
    }

    /// Log the destruction of an extract (the caller removed the files).
    pub async fn extract_destroyed(&self, id: &str, actor: &str, reason: &str) -> Result<()> {
        let event = AuditEvent::ok(
            actor,
            "extract.destroy",
            Some(id),
            json!({"reason": reason}),
        );
        self.audited(&event, async |tx| {
            super::ledger::delete_for(tx, id, None).await?;
            let mark =
                sqlx::query("UPDATE extracts SET destroyed_at = $1 WHERE application_id = $2")
                    .bind(ts(now()))
                    .bind(id);
            exec(tx, mark).await
        })
        .await?;
        Ok(())
    }
}
