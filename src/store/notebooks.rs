//! Store, notebooks: a researcher's saved cells per application.
//!
//! Guarantees: saving keeps a notebook's owner, application and creation time (only the
//! title, cells and update time change); every save and deletion is audited in its
//! transaction.

use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::model::Notebook;
use super::{Result, Store, StoreError, exec, now, parse_ts, ts};
use crate::audit::AuditEvent;

impl Store {
    fn notebook_from_row(r: &AnyRow) -> Result<Notebook> {
        Ok(Notebook {
            id: r.try_get("id")?,
            owner: r.try_get("owner")?,
            application_id: r.try_get("application_id")?,
            title: r.try_get("title")?,
            cells: serde_json::from_str(&r.try_get::<String, _>("cells")?)?,
            created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
            updated_at: parse_ts(&r.try_get::<String, _>("updated_at")?)?,
        })
    }

    /// The audit event of a change to `nb`.
    fn notebook_event(nb: &Notebook, action: &str) -> AuditEvent {
        AuditEvent::ok(
            &nb.owner,
            action,
            Some(&nb.application_id),
            json!({"notebook": nb.id}),
        )
    }

    pub async fn notebooks(&self, owner: &str, application: Option<&str>) -> Result<Vec<Notebook>> {
        let rows = sqlx::query("SELECT * FROM notebooks WHERE owner = $1 AND ($2 IS NULL OR application_id = $2) ORDER BY updated_at DESC")
            .bind(owner)
            .bind(application)
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter().map(Self::notebook_from_row).collect()
    }

    pub async fn notebook(&self, id: &str) -> Result<Option<Notebook>> {
        let row = sqlx::query("SELECT * FROM notebooks WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        row.as_ref().map(Self::notebook_from_row).transpose()
    }

    /// Create (when `id` is new) or replace a notebook.
    pub async fn save_notebook(&self, nb: &Notebook) -> Result<Notebook> {
        let event = Self::notebook_event(nb, "notebook.save");
        self.audited(&event, async |tx| {
            let t = ts(now());
            let save = sqlx::query(
                "INSERT INTO notebooks (id, owner, application_id, title, cells, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT(id) DO UPDATE SET title = excluded.title, cells = excluded.cells, updated_at = excluded.updated_at",
            )
            .bind(&nb.id)
            .bind(&nb.owner)
            .bind(&nb.application_id)
            .bind(&nb.title)
            .bind(serde_json::to_string(&nb.cells)?)
            .bind(&t)
            .bind(&t);
            exec(tx, save).await
        })
        .await?;
        self.notebook(&nb.id)
            .await?
            .ok_or_else(|| StoreError::NotFound(nb.id.clone()))
    }

    pub async fn delete_notebook(&self, nb: &Notebook) -> Result<()> {
        let event = Self::notebook_event(nb, "notebook.delete");
        self.audited(&event, async |tx| {
            let delete = sqlx::query("DELETE FROM notebooks WHERE id = $1").bind(&nb.id);
            exec(tx, delete).await
        })
        .await?;
        Ok(())
    }
}
