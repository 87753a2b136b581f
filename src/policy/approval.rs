//! Authorization stage, approvals: the terms a reviewer's decision grants (seed 002 別添2
//! 要綱 第2章), validated field by field.
//!
//! Guarantees: an approval's term lies within one fiscal year, its scope names only
//! catalogue datasets and registry diseases, its k is never below the disclosure rules'
//! k (`policies/disclosure.toml`, not a literal), a DP approval has an ε budget
//! (0 < ε ≤ 10 per fiscal year) and contribution bounds within `1..=DpBounds::MAX`; every
//! problem is reported with its field and fix.

use chrono::Utc;
use serde::Deserialize;
use utoipa::ToSchema;

use super::workflow::{self, DecisionKind, FieldError, Known};
use crate::privacy::result::{DisclosureMode, DpBounds};
use crate::sql::scope::Scope;
use crate::store::model::{ApplicationForm, Approval, Published, RequestedScope, Term};

/// A reviewer's decision, with the approval terms when approving.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DecisionRequest {
    pub decision: DecisionKind,
    pub reason: Option<String>,
    /// Approved period of use (default: the requested term).
    pub term: Option<Term>,
    /// Approved datasets (default: requested).
    pub datasets: Option<Vec<String>>,
    /// Approved diseases (default: requested).
    pub diseases: Option<Vec<i32>>,
    /// Approved fiscal years of records (default: requested).
    pub fiscal_years: Option<Vec<i32>>,
    /// Approved prefectures (default: requested; null = nationwide).
    pub prefectures: Option<Vec<String>>,
    #[schema(value_type = Option<String>)]
    pub mode: Option<DisclosureMode>,
    /// k (minimum 5).
    pub k: Option<u32>,
    /// ε budget per fiscal year (DP only).
    pub epsilon_budget: Option<f64>,
    /// Default L of DP queries: groups a patient may contribute to (DP only; 1..=1000).
    pub max_groups_per_patient: Option<u32>,
    /// Default m of DP queries: rows per patient and group (DP only; 1..=1000).
    pub max_rows_per_group: Option<u32>,
    /// Place of use: the networks (CIDR blocks) requests must come from (default: the
    /// networks the form suggests; neither given = not restricted by network).
    pub networks: Option<Vec<String>>,
    /// What the public register shows (default: form 1's title, the applicant's
    /// institution and the purpose).
    #[schema(value_type = Option<Object>)]
    pub published: Option<Published>,
}

/// Longest published title and institution, and summary, in characters.
pub const PUBLISHED_TITLE_MAX: usize = 300;
pub const PUBLISHED_SUMMARY_MAX: usize = 2000;

/// The approval a reviewer's decision grants on `form`: the requested terms unless the
/// decision narrows them, every field validated (term within one fiscal year, scope in
/// the catalogue and registry, k at least the rules' k, a DP budget and bounds in range).
pub fn approval_from(
    form: &ApplicationForm,
    req: &DecisionRequest,
    known: &Known<'_>,
    min_k: u32,
    approver: &str,
) -> Result<Approval, Vec<FieldError>> {
    let mut errors: Vec<FieldError> = Vec::new();
    let term = req.term.or(form.term);
    let mode = req.mode.unwrap_or(DisclosureMode::Suppression);
    let k = req.k.unwrap_or(min_k);
    let requested = RequestedScope {
        datasets: req
            .datasets
            .clone()
            .unwrap_or_else(|| form.scope.datasets.clone()),
        fiscal_years: req
            .fiscal_years
            .clone()
            .unwrap_or_else(|| form.scope.fiscal_years.clone()),
        prefectures: req
            .prefectures
            .clone()
            .or_else(|| form.scope.prefectures.clone()),
    };
    let diseases = req
        .diseases
        .clone()
        .unwrap_or_else(|| form.diseases.clone());
    match &term {
        Some(t) => workflow::validate_term("term", t, &mut errors),
        None => errors.push(FieldError {
            field: "term".into(),
            message: "give the approved term (term.start, term.end) / 承認期間を指定してください"
                .into(),
        }),
    }
    workflow::validate_scope("scope", &requested, &diseases, known, &mut errors);
    if k < min_k {
        errors.push(FieldError {
            field: "k".into(),
            message: format!(
                "k must be at least {min_k} (registry publication rule) / k は {min_k} 以上にしてください"
            ),
        });
    }
    let budget = match mode {
        DisclosureMode::Dp => match req.epsilon_budget {
            Some(b) if b.is_finite() && b > 0.0 && b <= 10.0 => Some(b),
            _ => {
                errors.push(FieldError {
                    field: "epsilon_budget".into(),
                    message: "DP approvals need an ε budget with 0 < ε ≤ 10 per fiscal year / DP には ε 予算（0 < ε ≤ 10）が必要です".into(),
                });
                None
            }
        },
        DisclosureMode::Suppression => None,
    };
    let dp_bounds = dp_bounds_from(
        mode,
        req.max_groups_per_patient,
        req.max_rows_per_group,
        &mut errors,
    );
    let networks = networks_from(form, req, &mut errors);
    let published = published_from(form, req, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Approval {
        term: term.expect("validated"),
        scope: Scope {
            datasets: requested.datasets,
            diseases: Some(diseases),
            fiscal_years: Some(requested.fiscal_years),
            prefectures: requested.prefectures,
            manufacturers: None,
            facilities: None,
        },
        mode,
        k,
        epsilon_budget: budget,
        dp_bounds,
        approved_by: approver.to_string(),
        approved_at: Utc::now(),
        networks,
        published: Some(published),
    })
}

/// The approved place of use: the decision's networks, else the form's suggestion, as
/// canonical CIDR text; `None` when neither names any (not restricted by network).
fn networks_from(
    form: &ApplicationForm,
    req: &DecisionRequest,
    errors: &mut Vec<FieldError>,
) -> Option<Vec<String>> {
    let (field, list) = match &req.networks {
        Some(n) => ("networks", n.clone()),
        None if !form.networks.is_empty() => ("form.networks", form.networks.clone()),
        None => return None,
    };
    let parsed = super::place::parse_networks(field, &list, errors);
    Some(parsed.iter().map(|n| n.trunc().to_string()).collect())
}

/// The published fields: the decision's, else form 1's title, institution and purpose,
/// each within its length limit (the reviewer shortens what is too long).
fn published_from(
    form: &ApplicationForm,
    req: &DecisionRequest,
    errors: &mut Vec<FieldError>,
) -> Published {
    let p = req.published.clone().unwrap_or_else(|| Published {
        title: form.title.clone(),
        institution: form.applicant.affiliation.clone(),
        summary: form.purpose.clone(),
    });
    let p = Published {
        title: p.title.trim().to_string(),
        institution: p.institution.trim().to_string(),
        summary: p.summary.trim().to_string(),
    };
    for (field, v, max) in [
        ("published.title", &p.title, PUBLISHED_TITLE_MAX),
        ("published.institution", &p.institution, PUBLISHED_TITLE_MAX),
        ("published.summary", &p.summary, PUBLISHED_SUMMARY_MAX),
    ] {
        if v.chars().count() > max {
            errors.push(FieldError {
                field: field.into(),
                message: format!(
                    "at most {max} characters are published; give a shorter `{field}` / 公開する {field} は {max} 文字以内にしてください"
                ),
            });
        }
    }
    p
}

/// Validate the reviewer's default DP bounds: each 1..=`DpBounds::MAX`, DP only. A bound
/// left out takes kura's default; neither given means no approval-specific bounds.
pub fn dp_bounds_from(
    mode: DisclosureMode,
    max_groups: Option<u32>,
    max_rows: Option<u32>,
    errors: &mut Vec<FieldError>,
) -> Option<DpBounds> {
    if max_groups.is_none() && max_rows.is_none() {
        return None;
    }
    if mode != DisclosureMode::Dp {
        for (field, v) in [
            ("max_groups_per_patient", max_groups),
            ("max_rows_per_group", max_rows),
        ] {
            if v.is_some() {
                errors.push(FieldError {
                    field: field.into(),
                    message: "contribution bounds apply to DP approvals only; remove the field or set mode to dp / 寄与の上限は DP 方式の承認でのみ指定できます".into(),
                });
            }
        }
        return None;
    }
    let d = DpBounds::default();
    let mut ok = true;
    for (field, v) in [
        ("max_groups_per_patient", max_groups),
        ("max_rows_per_group", max_rows),
    ] {
        if let Some(v) = v
            && !(1..=DpBounds::MAX).contains(&v)
        {
            ok = false;
            errors.push(FieldError {
                field: field.into(),
                message: format!(
                    "{field} must be between 1 and {} / {field} は 1 以上 {} 以下にしてください",
                    DpBounds::MAX,
                    DpBounds::MAX
                ),
            });
        }
    }
    ok.then(|| DpBounds {
        max_groups_per_patient: max_groups.unwrap_or(d.max_groups_per_patient),
        max_rows_per_group: max_rows.unwrap_or(d.max_rows_per_group),
    })
}
