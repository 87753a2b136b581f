//! Query stage, input: the protocol-neutral query request (HTTP's JSON body, later a
//! Flight SQL statement with its connection properties) and the validation of its DP
//! parameters.
//!
//! Guarantees: ε is positive, finite and at most the yearly budget; contribution bounds
//! come from the request, else the approval, else kura's defaults, each within
//! `1..=DpBounds::MAX`; every problem is named per field with its fix.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::refusal::Refusal;
use crate::policy::Grant;
use crate::policy::workflow::FieldError;
use crate::privacy::result::{DisclosureMode, DpBounds, DpColumn, DpParams};

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct QueryRequest {
    /// Application id, or a PMS standing scope id such as `PMS-M01`.
    pub application: String,
    pub sql: String,
    /// `suppression` or `dp`; default: what the approval sets.
    #[schema(value_type = Option<String>)]
    pub mode: Option<DisclosureMode>,
    /// ε for this query (DP only; positive, at most the yearly budget).
    pub epsilon: Option<f64>,
    /// L for this query (DP only; default: the approval's, else 5).
    pub max_groups_per_patient: Option<u32>,
    /// m for this query (DP only; default: the approval's, else 3).
    pub max_rows_per_group: Option<u32>,
    /// Where the request came from, set by the protocol (HTTP: the peer address, see
    /// `http::origin`), never by the client's JSON; unknown unless a protocol sets it,
    /// which approvals restricted to a place of use refuse.
    #[serde(skip)]
    pub origin: crate::policy::place::Origin,
}

/// The price of a DP query, worked out without reading data or reserving budget.
#[derive(Debug, Serialize, ToSchema)]
pub struct CostResponse {
    pub application: String,
    /// ε a fresh run of this query spends.
    pub epsilon: f64,
    /// ε the query would actually be charged: 0 when an identical answer is stored.
    pub cost: f64,
    /// ε left in this fiscal year now.
    pub epsilon_remaining: f64,
    /// ε that would be left after running the query.
    pub epsilon_remaining_after: f64,
    pub epsilon_budget: f64,
    pub fiscal_year: i32,
    pub renews_on: chrono::NaiveDate,
    /// An identical answer is stored for this extract version: re-running costs nothing.
    pub cached: bool,
    #[schema(value_type = Object)]
    pub bounds: DpBounds,
    #[schema(value_type = Vec<Object>)]
    pub columns: Vec<DpColumn>,
    pub release_threshold: f64,
    pub mechanism: String,
}

impl QueryRequest {
    /// ε and bounds of a DP request under `grant`.
    pub fn dp_params(&self, grant: &Grant) -> Result<DpParams, Refusal> {
        let epsilon = self.epsilon(grant.epsilon_budget.unwrap_or(0.0))?;
        let base = grant.dp_bounds.unwrap_or_default();
        let mut fields = Vec::new();
        let bounds = DpBounds {
            max_groups_per_patient: bound(
                "max_groups_per_patient",
                self.max_groups_per_patient,
                base.max_groups_per_patient,
                &mut fields,
            ),
            max_rows_per_group: bound(
                "max_rows_per_group",
                self.max_rows_per_group,
                base.max_rows_per_group,
                &mut fields,
            ),
        };
        if !fields.is_empty() {
            return Err(Refusal::InvalidRequest {
                message: "Contribution bounds are out of range; see `fields`. / 寄与の上限が範囲外です（fields を参照）。".into(),
                fields,
            });
        }
        Ok(DpParams { epsilon, bounds })
    }

    fn epsilon(&self, budget: f64) -> Result<f64, Refusal> {
        let Some(eps) = self.epsilon.filter(|e| e.is_finite() && *e > 0.0) else {
            return Err(Refusal::InvalidRequest {
                message: "DP queries need a positive `epsilon` (e.g. 0.5). / DP クエリには正の epsilon が必要です。".into(),
                fields: vec![FieldError {
                    field: "epsilon".into(),
                    message: "give a positive ε such as 0.5 / 正の ε（例: 0.5）を指定してください"
                        .into(),
                }],
            });
        };
        if eps > budget + 1e-9 {
            return Err(Refusal::InvalidRequest {
                message: format!(
                    "ε={eps} is more than the whole yearly budget of this application (ε={budget}); use a smaller ε. / ε が年度の予算全体（{budget}）を超えています。"
                ),
                fields: vec![FieldError {
                    field: "epsilon".into(),
                    message: format!("at most {budget} / {budget} 以下にしてください"),
                }],
            });
        }
        Ok(eps)
    }

    /// The DP parameters as the audit log records a refused request's.
    pub fn dp_detail(&self) -> serde_json::Value {
        serde_json::json!({
            "epsilon": self.epsilon,
            "max_groups_per_patient": self.max_groups_per_patient,
            "max_rows_per_group": self.max_rows_per_group,
        })
    }
}

/// One contribution bound: the request's if in range (else a field error), or `default`.
fn bound(field: &str, v: Option<u32>, default: u32, fields: &mut Vec<FieldError>) -> u32 {
    match v {
        None => default,
        Some(v) if (1..=DpBounds::MAX).contains(&v) => v,
        Some(_) => {
            fields.push(FieldError {
                field: field.into(),
                message: format!(
                    "{field} must be between 1 and {} / {field} は 1 以上 {} 以下にしてください",
                    DpBounds::MAX,
                    DpBounds::MAX
                ),
            });
            default
        }
    }
}
