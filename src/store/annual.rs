//! Store, annual reports (issue 13 §3): the reports' own release ledger and the register
//! of generated reports (migration 9).
//!
//! Guarantees: a report's sets and its register row are written in the transaction of its
//! audit event (`report.annual`): a report is returned only if what it publishes is in the
//! ledger; identical sets are kept once per extract; the ledger is never deleted (a new
//! data version is checked against every earlier publication).

use chrono::{DateTime, Utc};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use super::{Result, Store, exec, now, parse_ts, ts};
use crate::audit::AuditEvent;
use crate::engine::contributors::{deserialise, serialise};

/// One generated annual report, as the register lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnnualRecord {
    pub id: String,
    pub fiscal_year: i32,
    /// SHA-256 of the registry's ingest manifest the report was built from.
    pub data_version: String,
    pub extract_id: String,
    pub generated_at: DateTime<Utc>,
    pub generated_by: String,
    /// `all` or `manufacturer:<code>` (a PMS team's view).
    pub audience: String,
    pub cells: i64,
    pub suppressed: i64,
    /// SHA-256 of the report's JSON.
    pub report_sha256: String,
}

impl Store {
    /// Every set earlier annual reports published, with the extract it is over.
    pub async fn annual_ledger(&self) -> Result<Vec<(String, RoaringBitmap)>> {
        let rows = sqlx::query(
            "SELECT extract_id, members FROM annual_ledger ORDER BY extract_id, set_sha256",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let bytes: Vec<u8> = r.try_get("members")?;
                let set = deserialise(&bytes)
                    .map_err(|e| super::StoreError::Db(sqlx::Error::Decode(e.into())))?;
                Ok((r.try_get("extract_id")?, set))
            })
            .collect()
    }

    /// Record a generated report: its published sets, its register row and its audit
    /// event, in one transaction.
    pub async fn record_annual(
        &self,
        rec: &AnnualRecord,
        sets: &[RoaringBitmap],
        sections: &str,
        event: &AuditEvent,
    ) -> Result<()> {
        self.audited(event, async |tx| {
            let at = ts(now());
            for set in sets.iter().filter(|s| !s.is_empty()) {
                let members = serialise(set);
                let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &members));
                let row = sqlx::query(
                    "INSERT INTO annual_ledger (extract_id, set_sha256, size, members, fiscal_year, data_version, published_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (extract_id, set_sha256) DO NOTHING",
                )
                .bind(&rec.extract_id)
                .bind(sha)
                .bind(set.len() as i64)
                .bind(members)
                .bind(rec.fiscal_year)
                .bind(&rec.data_version)
                .bind(&at);
                exec(tx, row).await?;
            }
            let row = sqlx::query(
                "INSERT INTO annual_reports (id, fiscal_year, data_version, extract_id, generated_at, generated_by, audience, cells, suppressed, report_sha256, sections)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&rec.id)
            .bind(rec.fiscal_year)
            .bind(&rec.data_version)
            .bind(&rec.extract_id)
            .bind(ts(rec.generated_at))
            .bind(&rec.generated_by)
            .bind(&rec.audience)
            .bind(rec.cells)
            .bind(rec.suppressed)
            .bind(&rec.report_sha256)
            .bind(sections);
            exec(tx, row).await?;
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// The whole report last published for fiscal year `fy` over report extract
    /// `extract_id` (its sections as JSON, cells, suppressed cells), if one was.
    pub async fn annual_published(
        &self,
        fy: i32,
        extract_id: &str,
    ) -> Result<Option<(String, i64, i64)>> {
        let row = sqlx::query(
            "SELECT sections, cells, suppressed FROM annual_reports
             WHERE fiscal_year = $1 AND extract_id = $2 AND sections <> ''
             ORDER BY generated_at DESC LIMIT 1",
        )
        .bind(fy)
        .bind(extract_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                r.try_get("sections")?,
                r.try_get("cells")?,
                r.try_get("suppressed")?,
            ))
        })
        .transpose()
    }

    /// The register of generated annual reports, newest first.
    pub async fn annual_reports(&self) -> Result<Vec<AnnualRecord>> {
        let rows = sqlx::query("SELECT * FROM annual_reports ORDER BY generated_at DESC, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AnnualRecord {
                    id: r.try_get("id")?,
                    fiscal_year: r.try_get("fiscal_year")?,
                    data_version: r.try_get("data_version")?,
                    extract_id: r.try_get("extract_id")?,
                    generated_at: parse_ts(&r.try_get::<String, _>("generated_at")?)?,
                    generated_by: r.try_get("generated_by")?,
                    audience: r.try_get("audience")?,
                    cells: r.try_get("cells")?,
                    suppressed: r.try_get("suppressed")?,
                    report_sha256: r.try_get("report_sha256")?,
                })
            })
            .collect()
    }
}
