//! Reports stage, the annual report (seed 001 items 10 and 12; JaSMIn-style counts of seed
//! 000): per product and per disease group, the registered cases in total, by sex and by
//! 5-year age band, and for products the yearly operations report (adverse events, events
//! by term, patients with each term, deaths).
//!
//! ```text
//!  definitions (queries/annual/*.toml + *.sql, `definition`)
//!     └─► DataPlane::report: every table's SQL through the query path (guard → privacy
//!         rewrite → execute → disclosure check, against the report's earlier publications)
//!         over the data custodian's report extract
//!     └─► `assemble`: the tables' cells with their contributor sets, the relations their
//!         margins declare, the publication's own secondary suppression
//!         (privacy::disclosure::margins), the views (tables with their totals)
//!     └─► store: the published sets into the report's ledger, with the register row and
//!         the `report.annual` audit event, in one transaction (no ledger, no report)
//!     └─► `render`: JSON, CSV, bilingual HTML with a chart per table, PDF
//! ```
//!
//! Guarantees: every number of the report passed the same disclosure rules as a
//! researcher's answer (k per dataset) and the report's own check that no small group
//! follows by subtraction, within the report or against earlier published reports; a
//! suppressed cell is `null` (秘匿), never a number; the same data and the same earlier
//! publications give the same report; generation is serialised (one report at a time),
//! so two reports cannot miss each other's sets.

pub mod assemble;
pub mod definition;
pub mod render;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

pub use definition::{DefinitionError, Definitions, Unit};

use crate::audit::AuditEvent;
use crate::privacy::Defences;
use crate::query::QueryError;
use crate::query::plane::{DataPlane, ReportRequest};
use crate::store::annual::AnnualRecord;
use crate::store::model::Term;
use crate::store::{Store, StoreError};

/// Errors of annual report generation.
#[derive(Debug, thiserror::Error)]
pub enum AnnualError {
    #[error("fiscal year {0} is outside 2000–2100 / 年度の指定が不正です")]
    FiscalYear(i32),
    #[error(
        "no product of manufacturer {0} is in the registry / この製造販売業者の製品は登録されていません"
    )]
    NoProducts(String),
    #[error("annual report definitions: {0}")]
    Definition(#[from] DefinitionError),
    #[error("the report's tables could not be computed")]
    Query(#[source] QueryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One column or row heading of a view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Label {
    pub key: String,
    pub ja: String,
    pub en: String,
    /// The total column / row.
    pub total: bool,
}

/// One row of a view: its heading and its cells (`null` = suppressed, 秘匿).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ViewRow {
    pub key: String,
    pub ja: String,
    pub en: String,
    pub total: bool,
    /// The manufacturer of the group (products), for PMS teams' views.
    pub manufacturer: Option<String>,
    pub cells: Vec<Option<i64>>,
}

/// One published table with its totals, as a reader sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct View {
    pub id: String,
    /// Seed item it fulfils (`10`, `12` of seed 001; `004` for the ALS registry events).
    pub item: String,
    pub unit: Unit,
    pub title_ja: String,
    pub title_en: String,
    pub row_label_ja: String,
    pub row_label_en: String,
    pub columns: Vec<Label>,
    pub rows: Vec<ViewRow>,
}

/// One registry section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Section {
    pub id: String,
    pub dataset: String,
    pub title_ja: String,
    pub title_en: String,
    pub basis_ja: String,
    pub basis_en: String,
    /// The threshold its cells passed.
    pub k: u32,
    pub views: Vec<View>,
}

/// The annual report of one fiscal year.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnnualReport {
    /// Register id (`ar_…`).
    pub id: String,
    pub fiscal_year: i32,
    pub period: Term,
    pub generated_at: DateTime<Utc>,
    pub generated_by: String,
    /// SHA-256 of the registry's ingest manifest (the data version).
    pub data_version: String,
    /// `all`, or `manufacturer:<code>` for a PMS team's view of its own products.
    pub audience: String,
    /// Cells computed, and those suppressed (primary and secondary).
    pub cells: usize,
    pub suppressed: usize,
    pub sections: Vec<Section>,
}

/// Who the report is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// The data custodian, reviewers: every section.
    All,
    /// A manufacturer's products only (a PMS team, or a custodian's filter).
    Manufacturer(String),
    /// One product of a manufacturer.
    Product {
        manufacturer: String,
        product: String,
    },
}

impl Audience {
    pub fn name(&self) -> String {
        match self {
            Audience::All => "all".into(),
            Audience::Manufacturer(m) => format!("manufacturer:{m}"),
            Audience::Product {
                manufacturer,
                product,
            } => format!("manufacturer:{manufacturer}:product:{product}"),
        }
    }
}

/// One annual report at a time (ledger read → compute → record).
static GENERATION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A computed report not yet published: the whole report, what it would publish, and the
/// turn of generation it holds until [`publish`] records it (or it is dropped).
pub struct Computed {
    pub report: AnnualReport,
    published: Vec<roaring::RoaringBitmap>,
    extract_id: String,
    /// The whole report's sections as JSON (empty when a defence was off).
    full: String,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Computed {
    /// The manufacturer of a product of the report, if the product is in it.
    pub fn manufacturer_of(&self, product: &str) -> Option<String> {
        self.report
            .sections
            .iter()
            .flat_map(|s| &s.views)
            .flat_map(|v| &v.rows)
            .find(|r| !r.total && r.key == product)
            .and_then(|r| r.manufacturer.clone())
    }
}

/// Compute the whole annual report of `fy` (nothing is recorded yet).
pub async fn compute(
    store: &Store,
    plane: &Arc<dyn DataPlane>,
    defs: &Definitions,
    fy: i32,
    defences: Defences,
) -> Result<Computed, AnnualError> {
    let (period, _, _) =
        crate::report::fiscal_period(fy).map_err(|_| AnnualError::FiscalYear(fy))?;
    let turn = GENERATION.lock().await;
    let earlier = store.annual_ledger().await?;
    let run = plane
        .report(ReportRequest {
            queries: assemble::queries(defs, fy),
            earlier,
            defences,
        })
        .await
        .map_err(AnnualError::Query)?;
    // The same fiscal year on the same data version: the numbers published before (their
    // sets are in the ledger already), not a second suppression pattern.
    let again = if defences == Defences::ALL {
        store.annual_published(fy, &run.extract_id).await?
    } else {
        None
    };
    let built = match again.and_then(|(json, cells, suppressed)| {
        let sections: Vec<Section> = serde_json::from_str(&json).ok()?;
        Some(assemble::Built {
            sections,
            published: Vec::new(),
            cells: cells as usize,
            suppressed: suppressed as usize,
        })
    }) {
        Some(b) => b,
        None => assemble::build(defs, &run, defences.margins),
    };
    let full = if defences == Defences::ALL {
        serde_json::to_string(&built.sections).unwrap_or_default()
    } else {
        String::new()
    };
    let report = AnnualReport {
        id: format!(
            "ar_{}",
            crate::auth::random_hex(8).unwrap_or_else(|_| "unavailable".into())
        ),
        fiscal_year: fy,
        period,
        generated_at: Utc::now(),
        generated_by: String::new(),
        data_version: run.data_version.clone(),
        audience: Audience::All.name(),
        cells: built.cells,
        suppressed: built.suppressed,
        sections: built.sections,
    };
    Ok(Computed {
        report,
        published: built.published,
        extract_id: run.extract_id,
        full,
        _turn: turn,
    })
}

/// Publish a computed report to `audience`: its sets into the report's ledger, its
/// register row and the `report.annual` audit event (`actor`, `detail`: the format and
/// channel) in one transaction; then the report as the audience sees it.
pub async fn publish(
    store: &Store,
    defs: &Definitions,
    computed: Computed,
    audience: &Audience,
    actor: &str,
    detail: serde_json::Value,
) -> Result<AnnualReport, AnnualError> {
    let mut report = computed.report;
    report.generated_by = actor.to_string();
    report.audience = audience.name();
    let (m, product) = match audience {
        Audience::All => (None, None),
        Audience::Manufacturer(m) => (Some(m.as_str()), None),
        Audience::Product {
            manufacturer,
            product,
        } => (Some(manufacturer.as_str()), Some(product.as_str())),
    };
    if let Some(m) = m {
        report.sections = assemble::own_products(report.sections, defs, m, product);
        if report.sections.iter().all(|s| s.views.is_empty()) {
            return Err(AnnualError::NoProducts(m.to_string()));
        }
    }
    let json = serde_json::to_vec(&report).unwrap_or_default();
    let rec = AnnualRecord {
        id: report.id.clone(),
        fiscal_year: report.fiscal_year,
        data_version: report.data_version.clone(),
        extract_id: computed.extract_id.clone(),
        generated_at: report.generated_at,
        generated_by: report.generated_by.clone(),
        audience: report.audience.clone(),
        cells: report.cells as i64,
        suppressed: report.suppressed as i64,
        report_sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, &json)),
    };
    let mut d = json!({
        "report": rec.id,
        "fiscal_year": rec.fiscal_year,
        "audience": rec.audience,
        "data_version": rec.data_version,
        "cells": rec.cells,
        "suppressed": rec.suppressed,
        "report_sha256": rec.report_sha256,
    });
    if let (Some(obj), Some(extra)) = (d.as_object_mut(), detail.as_object()) {
        obj.extend(extra.clone());
    }
    let event = AuditEvent::ok(actor, "report.annual", None, d);
    // The whole report's sets go in: a view for one audience is a part of the one
    // report, whose numbers are the same whoever asks.
    store
        .record_annual(&rec, &computed.published, &computed.full, &event)
        .await?;
    Ok(report)
}

/// [`compute`] then [`publish`].
#[allow(clippy::too_many_arguments)]
pub async fn generate(
    store: &Store,
    plane: &Arc<dyn DataPlane>,
    defs: &Definitions,
    fy: i32,
    audience: &Audience,
    actor: &str,
    detail: serde_json::Value,
    defences: Defences,
) -> Result<AnnualReport, AnnualError> {
    let computed = compute(store, plane, defs, fy, defences).await?;
    publish(store, defs, computed, audience, actor, detail).await
}
