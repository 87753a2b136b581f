//! `kura demo`, the seeds' part (issue 16): the medical institution's account `facility1`
//! bound to the demo facility with its standing extract, and the approved JaSMIn study
//! `A-DEMO-0004` of `researcher1`.
//!
//! Guarantees: like the rest of the demo, re-runs keep what exists (the binding is reset
//! to the demo facility, the study is created once); every change goes through the store's
//! audited methods.

use chrono::{NaiveDate, Utc};

use super::demo::DemoError;
use crate::policy::facility::{facility_scope, facility_scope_id};
use crate::policy::workflow::fiscal_year_end;
use crate::privacy::result::DisclosureMode;
use crate::query::plane::DataPlane;
use crate::sql::scope::Scope;
use crate::store::Store;
use crate::store::model::*;

/// The demo medical institution (a Tokyo facility of the synthetic registry).
pub const DEMO_FACILITY: &str = "F13001";
/// The demo account of that institution.
pub const FACILITY_ACCOUNT: &str = "facility1";
/// The approved JaSMIn study.
pub const JASMIN_APP: &str = "A-DEMO-0004";

/// The networks of the demo's place of use: the demo listens on loopback only.
pub fn demo_networks() -> Vec<String> {
    vec!["127.0.0.0/8".into(), "::1/128".into()]
}

/// What the demo studies publish on the register: form 1's title, institution, purpose.
pub fn demo_published(form: &ApplicationForm) -> Published {
    Published {
        title: form.title.clone(),
        institution: form.applicant.affiliation.clone(),
        summary: form.purpose.clone(),
    }
}

/// Bind `facility1` to the demo facility and build its standing extract.
pub async fn seed_facility(store: &Store, data: &dyn DataPlane) -> Result<(), DemoError> {
    let bound = store.user(FACILITY_ACCOUNT).await?.and_then(|u| u.facility);
    if bound.as_deref() != Some(DEMO_FACILITY) {
        store
            .set_facility(FACILITY_ACCOUNT, Some(DEMO_FACILITY), "demo")
            .await?;
    }
    let id = facility_scope_id(DEMO_FACILITY);
    super::demo::ensure_extract(store, data, &id, &facility_scope(DEMO_FACILITY)).await
}

fn jasmin_form(diseases: &[i32], term: Term) -> ApplicationForm {
    ApplicationForm {
        title: "Registrants of inherited metabolic diseases (JaSMIn) / 先天代謝異常症の登録状況".into(),
        research_group: "Demo inherited metabolic disease group / デモ先天代謝異常症研究班".into(),
        applicant: Person {
            name: "Researcher One".into(),
            affiliation: "Demo University / デモ大学".into(),
            title: "Professor / 教授".into(),
        },
        diseases: diseases.to_vec(),
        purpose: "Count registrants by disease group, sex and age to plan lifelong care. / 疾患群・性別・年齢別の登録者数を集計し、生涯にわたる診療体制の整備に役立てる".into(),
        necessity: "JaSMIn is the only nationwide registry of these diseases. / 全国規模の唯一の登録制度のため".into(),
        expected_results: "Registrant counts for guideline revision. / ガイドライン改訂のための登録者数".into(),
        prior_work: "JaSMIn annual reports. / JaSMIn 年次報告".into(),
        plan_and_methods: "Aggregate counts only. / 集計のみ".into(),
        ethics_review: EthicsReview {
            committee: "Demo University IRB".into(),
            approval_number: "DEMO-2026-004".into(),
        },
        named_users: vec![NamedUser {
            username: "researcher1".into(),
            affiliation: "Demo University / デモ大学".into(),
            title: "Researcher / 研究員".into(),
        }],
        scope: RequestedScope {
            datasets: vec!["jasmin".into()],
            fiscal_years: Vec::new(),
            prefectures: None,
        },
        term: Some(term),
        place_of_use: "Demo University research facility / デモ大学研究施設".into(),
        publication_plan: "Annual report, aggregated only. / 年次報告（集計値のみ）".into(),
        contact: "demo-office@example.invalid".into(),
        networks: demo_networks(),
        ..Default::default()
    }
}

/// Create (once) the approved JaSMIn study, accept its pledge and build its extract.
pub async fn seed_jasmin(
    store: &Store,
    data: &dyn DataPlane,
    today: NaiveDate,
) -> Result<(), DemoError> {
    let known = data.diseases();
    let diseases: Vec<i32> = crate::ingest::jasmin::DESIGNATED
        .iter()
        .map(|d| d.0)
        .filter(|d| known.contains(d))
        .collect();
    if diseases.is_empty() {
        return Ok(());
    }
    let term = Term {
        start: today,
        end: fiscal_year_end(today),
    };
    let app = match store.application(JASMIN_APP).await? {
        Some(a) => a,
        None => {
            let form = jasmin_form(&diseases, term);
            let approval = Approval {
                term,
                scope: Scope {
                    datasets: vec!["jasmin".into()],
                    diseases: Some(diseases.clone()),
                    ..Default::default()
                },
                mode: DisclosureMode::Suppression,
                k: 5,
                epsilon_budget: None,
                dp_bounds: None,
                approved_by: "reviewer1".into(),
                approved_at: Utc::now(),
                networks: Some(demo_networks()),
                published: Some(demo_published(&form)),
                release_checkers: None,
            };
            super::demo::approve_demo_application(store, JASMIN_APP, &form, approval).await?
        }
    };
    if !store.has_pledged(JASMIN_APP, "researcher1").await? {
        store.accept_pledge(JASMIN_APP, "researcher1").await?;
    }
    if let Some(a) = app.approval.as_ref().filter(|a| a.term.end >= today) {
        super::demo::ensure_extract(store, data, JASMIN_APP, &a.scope).await?;
    }
    Ok(())
}
