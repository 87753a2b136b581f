//! The application workflow of seed 002 (別添2 要綱 第2章): states, transitions and the
//! validation of form 1 + annex and of a reviewer's approval terms.
//!
//! Guarantees: only the transitions draft → submitted → correction_requested ⇄ submitted
//! → approved | rejected, approved → revoked | withdrawn (and change applications on an
//! approved application) are possible; no approved term crosses a fiscal year; every validation
//! error names the field and how to fix it.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::fiscal_year;
use crate::catalog::Catalog;
use crate::store::model::{ApplicationForm, RequestedScope, Status, Term};

/// One invalid field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn fe(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// What validation checks against.
pub struct Known<'a> {
    pub catalog: &'a Catalog,
    pub diseases: &'a BTreeSet<i32>,
    pub users: &'a BTreeSet<String>,
}

/// The last day a term starting on `start` may end on: 31 March of its fiscal year.
pub fn fiscal_year_end(start: NaiveDate) -> NaiveDate {
    NaiveDate::from_ymd_opt(fiscal_year(start) + 1, 3, 31).expect("31 March exists")
}

/// Validate a period of use.
pub fn validate_term(field: &str, term: &Term, errors: &mut Vec<FieldError>) {
    if term.end < term.start {
        errors.push(fe(
            field,
            "term.end is before term.start; swap or correct the dates / 終了日が開始日より前です",
        ));
        return;
    }
    let last = fiscal_year_end(term.start);
    if term.end > last {
        errors.push(fe(
            field,
            format!(
                "the period of use may not cross a fiscal year: a term starting {} must end on or before {last} / 使用期間は年度をまたげません（{last} までにしてください）",
                term.start
            ),
        ));
    }
}

/// Validate a requested or approved record scope.
pub fn validate_scope(
    field: &str,
    scope: &RequestedScope,
    diseases: &[i32],
    known: &Known<'_>,
    errors: &mut Vec<FieldError>,
) {
    if scope.datasets.is_empty() {
        errors.push(fe(&format!("{field}.datasets"), "name at least one dataset (nanbyo, als, regen) / データセットを 1 つ以上指定してください"));
    }
    for d in &scope.datasets {
        if known.catalog.dataset(d).is_none() {
            let names: Vec<&str> = known
                .catalog
                .datasets
                .iter()
                .map(|d| d.name.as_str())
                .collect();
            errors.push(fe(
                &format!("{field}.datasets"),
                format!(
                    "unknown dataset `{d}`; choose from {} / 不明なデータセットです",
                    names.join(", ")
                ),
            ));
        }
    }
    if scope.fiscal_years.is_empty() {
        errors.push(fe(
            &format!("{field}.fiscal_years"),
            "name the fiscal years of records you need / 対象年度を指定してください",
        ));
    }
    if let Some(fy) = scope
        .fiscal_years
        .iter()
        .find(|y| !(2000..=2100).contains(*y))
    {
        errors.push(fe(
            &format!("{field}.fiscal_years"),
            format!("fiscal year {fy} is out of range (2000–2100) / 年度が範囲外です"),
        ));
    }
    if let Some(prefs) = &scope.prefectures {
        if prefs.is_empty() {
            errors.push(fe(
                &format!("{field}.prefectures"),
                "an empty list selects nothing; use null for nationwide or list codes \"01\"–\"47\" / 全国の場合は null を指定してください",
            ));
        }
        for p in prefs {
            let ok = p.len() == 2 && p.parse::<u32>().is_ok_and(|n| (1..=47).contains(&n));
            if !ok {
                errors.push(fe(&format!("{field}.prefectures"), "prefecture codes are two digits \"01\"–\"47\" (JIS X 0401) / 都道府県コードは 01〜47 です"));
            }
        }
    }
    if diseases.is_empty() {
        errors.push(fe("diseases", "name at least one target disease by designated number / 対象疾病を告示番号で指定してください"));
    }
    let unknown: Vec<String> = diseases
        .iter()
        .filter(|d| !known.diseases.contains(d))
        .map(|d| d.to_string())
        .collect();
    if !unknown.is_empty() {
        errors.push(fe(
            "diseases",
            format!(
                "designated disease number(s) {} are not in the catalogue; see GET /api/v1/catalog (table disease) / 告示番号が登録されていません",
                unknown.join(", ")
            ),
        ));
    }
}

/// Validate a form for submission (drafts may be incomplete; submission may not).
pub fn validate_for_submit(form: &ApplicationForm, known: &Known<'_>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let required: [(&str, &str); 11] = [
        ("title", &form.title),
        ("research_group", &form.research_group),
        ("applicant.name", &form.applicant.name),
        ("applicant.affiliation", &form.applicant.affiliation),
        ("purpose", &form.purpose),
        ("necessity", &form.necessity),
        ("expected_results", &form.expected_results),
        ("plan_and_methods", &form.plan_and_methods),
        ("place_of_use", &form.place_of_use),
        ("publication_plan", &form.publication_plan),
        ("contact", &form.contact),
    ];
    for (field, v) in required {
        if v.trim().is_empty() {
            errors.push(fe(
                field,
                format!("`{field}` is required; fill it in as on form 1 / 必須項目です"),
            ));
        }
    }
    if form.ethics_review.committee.trim().is_empty()
        || form.ethics_review.approval_number.trim().is_empty()
    {
        errors.push(fe("ethics_review", "give the ethics committee and its approval number / 倫理審査委員会名と承認番号を記入してください"));
    }
    if form.named_users.is_empty() {
        errors.push(fe("named_users", "name at least one user (account, affiliation, title) / 使用者を 1 名以上記入してください"));
    }
    let mut seen = BTreeSet::new();
    for (i, n) in form.named_users.iter().enumerate() {
        if !known.users.contains(&n.username) {
            errors.push(fe(
                &format!("named_users[{i}].username"),
                "no such account; ask the operator to create it first (kura user add) / アカウントが存在しません",
            ));
        }
        if !seen.insert(&n.username) {
            errors.push(fe(
                &format!("named_users[{i}].username"),
                "named twice; list each user once / 重複しています",
            ));
        }
    }
    if let Some(c) = &form.lead_consent
        && c.lead.name.trim().is_empty()
    {
        errors.push(fe(
            "lead_consent.lead.name",
            "name the research lead who consents (form 3) / 主任研究者名を記入してください",
        ));
    }
    match &form.term {
        Some(t) => validate_term("term", t, &mut errors),
        None => errors.push(fe(
            "term",
            "give the period of use (term.start, term.end) / 使用期間を記入してください",
        )),
    }
    validate_scope("scope", &form.scope, &form.diseases, known, &mut errors);
    errors
}

/// A reviewer's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Approve,
    Reject,
    RequestCorrection,
}

/// Whether `from` may move to the state a user action asks for. Returns the new status
/// or a message naming what is possible instead.
pub fn next_status(from: Status, action: &str) -> Result<Status, String> {
    use Status::*;
    let to = match (from, action) {
        (Draft, "submit") | (CorrectionRequested, "submit") => Submitted,
        (Submitted, "approve") => Approved,
        (Submitted, "reject") => Rejected,
        (Submitted, "request_correction") => CorrectionRequested,
        (Approved, "revoke") => Revoked,
        (Approved, "withdraw") => Withdrawn,
        (Draft, "edit") => Draft,
        (CorrectionRequested, "edit") => CorrectionRequested,
        _ => {
            let allowed = match from {
                Draft => "edit, submit",
                Submitted => "approve, reject, request_correction (reviewer)",
                CorrectionRequested => "edit, submit",
                Approved => "revoke (reviewer), withdraw (applicant), change application",
                Rejected | Revoked | Expired | Withdrawn => "nothing; file a new application",
            };
            return Err(format!(
                "`{action}` is not possible while the application is {}; possible now: {allowed} / 現在の状態ではこの操作はできません",
                from.as_str()
            ));
        }
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn term_may_not_cross_a_fiscal_year() {
        let mut e = Vec::new();
        validate_term(
            "term",
            &Term {
                start: d("2026-04-01"),
                end: d("2027-03-31"),
            },
            &mut e,
        );
        assert!(e.is_empty());
        validate_term(
            "term",
            &Term {
                start: d("2026-11-21"),
                end: d("2027-04-01"),
            },
            &mut e,
        );
        assert_eq!(e.len(), 1);
        assert!(e[0].message.contains("2027-03-31"));
        // January belongs to the fiscal year that started the previous April.
        let mut e = Vec::new();
        validate_term(
            "term",
            &Term {
                start: d("2027-01-10"),
                end: d("2027-04-02"),
            },
            &mut e,
        );
        assert!(e[0].message.contains("2027-03-31"), "{e:?}");
        let mut e = Vec::new();
        validate_term(
            "term",
            &Term {
                start: d("2026-05-01"),
                end: d("2026-04-30"),
            },
            &mut e,
        );
        assert_eq!(e[0].field, "term");
    }

    #[test]
    fn only_the_regulated_transitions_exist() {
        use Status::*;
        assert_eq!(next_status(Draft, "submit"), Ok(Submitted));
        assert_eq!(
            next_status(Submitted, "request_correction"),
            Ok(CorrectionRequested)
        );
        assert_eq!(next_status(CorrectionRequested, "submit"), Ok(Submitted));
        assert_eq!(next_status(Submitted, "approve"), Ok(Approved));
        assert_eq!(next_status(Approved, "revoke"), Ok(Revoked));
        assert!(next_status(Draft, "approve").is_err());
        assert!(next_status(Rejected, "submit").is_err());
        assert!(next_status(Revoked, "approve").is_err());
        assert!(
            next_status(Approved, "edit")
                .unwrap_err()
                .contains("change application")
        );
    }

    #[test]
    fn submission_names_every_missing_field_and_unknown_objects() {
        let catalog = Catalog::embedded().unwrap();
        let diseases: BTreeSet<i32> = [2, 11].into_iter().collect();
        let users: BTreeSet<String> = ["alice".to_string()].into_iter().collect();
        let known = Known {
            catalog: &catalog,
            diseases: &diseases,
            users: &users,
        };
        let form = ApplicationForm {
            diseases: vec![2, 999],
            named_users: vec![crate::store::model::NamedUser {
                username: "ghost".into(),
                affiliation: String::new(),
                title: String::new(),
            }],
            scope: RequestedScope {
                datasets: vec!["nanbyo".into(), "nope".into()],
                fiscal_years: vec![2024],
                prefectures: Some(vec!["48".into()]),
            },
            ..Default::default()
        };
        let e = validate_for_submit(&form, &known);
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "title",
            "purpose",
            "ethics_review",
            "named_users[0].username",
            "term",
            "scope.datasets",
            "scope.prefectures",
            "diseases",
        ] {
            assert!(fields.contains(&f), "missing {f} in {fields:?}");
        }
        assert!(e.iter().any(|e| e.message.contains("999")));
    }
}
