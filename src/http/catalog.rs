//! `GET /api/v1/catalog`: the tables and columns of an application's scope, with their
//! ja/en descriptions and privacy roles (privacy unit, public domain, facility).
//!
//! Guarantees: the caller sees only the datasets of a scope they are authorised for
//! (the same resolution as a query); a refusal is audited as `catalog.read`.
//!
//! `GET /api/v1/reference/labels` (any signed-in user): the public names of the codes of
//! the reference tables (disease, prefecture, product, manufacturer), so that screens show
//! `13 東京都` rather than `13`. Reference tables are public (catalogue `kind = "reference"`);
//! nothing of a patient table is read.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::policy::Action;

#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct CatalogParams {
    pub application: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub privacy_unit: bool,
    pub public_domain: bool,
    pub facility: bool,
    pub description_ja: String,
    pub description_en: String,
    /// The public domain of a public-domain column (`{"values": […]}`, `{"range": [lo, hi]}`
    /// or `{"table", "column"}` of a reference table): its values in domain order.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<crate::catalog::Domain>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogTable {
    pub name: String,
    pub kind: String,
    pub description_ja: String,
    pub description_en: String,
    pub columns: Vec<CatalogColumn>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogResponse {
    pub application: String,
    pub datasets: Vec<String>,
    pub tables: Vec<CatalogTable>,
}

/// Tables and columns visible in an application's scope.
#[utoipa::path(get, path = "/api/v1/catalog", tag = "query", params(CatalogParams),
    responses((status = 200, body = CatalogResponse), (status = 403, body = ErrorBody)))]
pub async fn catalog(
    State(st): State<AppState>,
    who: AuthUser,
    params: Result<Query<CatalogParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CatalogResponse>, ApiError> {
    let Query(p) = params?;
    let r = match st
        .policy
        .resolve(
            &st.store,
            &who.user,
            &p.application,
            Action::Catalog,
            st.today(),
            who.origin,
        )
        .await?
    {
        Ok(r) => r,
        Err(d) => {
            let app = Some(p.application.as_str());
            let detail = json!({"origin": who.origin});
            let e = super::denied::denied(&st, &who.user, "catalog.read", app, &d, detail);
            return Err(e.await);
        }
    };
    // Only tables the scope's extract holds (a facility scope leaves out tables that do
    // not say where a row was written, `sql::extract::extract_tables`).
    let held = crate::sql::extract::extract_tables(&st.catalog, &r.scope);
    let tables = st
        .catalog
        .tables_in(&r.scope.datasets)
        .filter(|t| held.iter().any(|h| h.name == t.name))
        .map(|t| CatalogTable {
            name: t.name.clone(),
            kind: format!("{:?}", t.kind).to_lowercase(),
            description_ja: t.description_ja.clone(),
            description_en: t.description_en.clone(),
            columns: t
                .columns
                .iter()
                .map(|c| CatalogColumn {
                    name: c.name.clone(),
                    type_name: c.type_name.clone(),
                    privacy_unit: c.privacy_unit,
                    public_domain: c.public_domain,
                    facility: c.facility,
                    description_ja: c.description_ja.clone(),
                    description_en: c.description_en.clone(),
                    domain: c.domain.clone().filter(|_| c.public_domain),
                })
                .collect(),
        })
        .collect();
    Ok(Json(CatalogResponse {
        application: r.id,
        datasets: r.scope.datasets,
        tables,
    }))
}

/// The public names of reference codes, per key column, in domain order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReferenceLabels {
    pub columns: std::collections::BTreeMap<String, Vec<crate::query::plane::RefLabel>>,
}

/// Public names of the codes of the reference tables (disease, prefecture, product, manufacturer).
#[utoipa::path(get, path = "/api/v1/reference/labels", tag = "query",
    responses((status = 200, body = ReferenceLabels), (status = 401, body = ErrorBody)))]
pub async fn reference_labels(State(st): State<AppState>, _who: AuthUser) -> Json<ReferenceLabels> {
    Json(ReferenceLabels {
        columns: st.data.reference_labels(),
    })
}
