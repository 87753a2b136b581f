//! Store, extracts: which extract version serves an application, and its destruction.
//!
//! Guarantees: one extract row per application (a rebuild replaces it and clears any
//! destruction mark); building and destroying are each written with their audit event
//! in one transaction, which also deletes the release ledger of the replaced or
//! destroyed extract.

use serde_json::json;
use sqlx::Row;

use super::model::ExtractInfo;
use super::{Result, Store, exec, now, opt_ts, parse_ts, ts};
use crate::audit::AuditEvent;

impl Store {
    /// Register a (re)built extract.
    pub async fn set_extract(
        &self,
        id: &str,
        extract_id: &str,
        path: &str,
        actor: &str,
    ) -> Result<()> {
        let event = AuditEvent::ok(
            actor,
            "extract.build",
            Some(id),
            json!({"extract_id": extract_id}),
        );
        self.audited(&event, async |tx| {
            // A replaced extract takes its release ledger with it (a new extract has a new
            // patient index; the same extract id keeps its ledger).
            super::ledger::delete_for(tx, id, Some(extract_id)).await?;
            let register = sqlx::query(
                "INSERT INTO extracts (application_id, extract_id, path, built_at) VALUES (?, ?, ?, ?)
             ON CONFLICT(application_id) DO UPDATE SET extract_id = excluded.extract_id, path = excluded.path,
               built_at = excluded.built_at, destroyed_at = NULL",
            )
            .bind(id)
            .bind(extract_id)
            .bind(path)
            .bind(ts(now()));
            exec(tx, register).await
        })
        .await?;
        Ok(())
    }

    /// Every registered extract, by application id.
    pub async fn extracts(&self) -> Result<Vec<ExtractInfo>> {
        let rows = sqlx::query("SELECT * FROM extracts ORDER BY application_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(extract_from_row).collect()
    }

    pub async fn extract(&self, id: &str) -> Result<Option<ExtractInfo>> {
        let row = sqlx::query("SELECT * FROM extracts WHERE application_id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(extract_from_row).transpose()
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
            let mark = sqlx::query("UPDATE extracts SET destroyed_at = ? WHERE application_id = ?")
                .bind(ts(now()))
                .bind(id);
            exec(tx, mark).await
        })
        .await?;
        Ok(())
    }
}

fn extract_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<ExtractInfo> {
    Ok(ExtractInfo {
        application_id: r.try_get("application_id")?,
        extract_id: r.try_get("extract_id")?,
        path: r.try_get("path")?,
        built_at: parse_ts(&r.try_get::<String, _>("built_at")?)?,
        destroyed_at: opt_ts(r.try_get("destroyed_at")?)?,
    })
}
