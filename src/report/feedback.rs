//! Reports, the facility feedback report (seed 001 item 8 and 10–12): a medical
//! institution's own figures beside the national ones — patients by designated disease
//! and by regenerative-medicine product, adverse events by term and by outcome, ALS
//! events by kind.
//!
//! # Privacy
//!
//! The facility column holds the facility's own records (rows written at that facility),
//! which it holds anyway; they are shown as they are and are marked not for publication
//! below k. The national column is released under the full disclosure rules of the
//! dataset (`policies/disclosure.toml`), and against the facility's own figure, because
//! the facility can subtract:
//! - a national cell needs at least k patients and at least `facility_k` facilities;
//! - the patients the facility does not have (national − own) must be none or at least
//!   k, written at none or at least `facility_k` other facilities — otherwise national −
//!   own would show another facility's small cell (secondary suppression);
//! - rows cover the whole public key domain (every disease of the reference table, every
//!   product, every term, outcome and event kind), so which rows appear says nothing;
//! - a suppressed cell says only that it is suppressed, never which rule fired;
//! - one view only (all registry years), so two reports cannot be subtracted either.
//!
//! Guarantees: [`build`] is a pure function of the raw figures and the rules, so the
//! rules are tested on their own; the figures come from `query::feedback`.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::render::{STYLE, esc};
use crate::privacy::rules::{DisclosureRules, RuleSet};

/// One section of the report: a patient table counted by one public key column.
#[derive(Debug, Clone, Copy)]
pub struct Measure {
    pub id: &'static str,
    pub table: &'static str,
    pub key: &'static str,
    pub dataset: &'static str,
    pub title_ja: &'static str,
    pub title_en: &'static str,
}

pub const MEASURES: &[Measure] = &[
    Measure {
        id: "cases_by_disease",
        table: "nanbyo_survey",
        key: "disease_no",
        dataset: "nanbyo",
        title_ja: "指定難病 疾病別の患者数",
        title_en: "Patients by designated disease",
    },
    Measure {
        id: "cases_by_product",
        table: "regen_treatment",
        key: "product_code",
        dataset: "regen",
        title_ja: "再生医療等製品 製品別の患者数",
        title_en: "Patients by regenerative-medicine product",
    },
    Measure {
        id: "adverse_events_by_term",
        table: "adverse_event",
        key: "event_term",
        dataset: "regen",
        title_ja: "有害事象 事象別の発現患者数",
        title_en: "Patients with adverse events, by term",
    },
    Measure {
        id: "adverse_events_by_outcome",
        table: "adverse_event",
        key: "outcome",
        dataset: "regen",
        title_ja: "有害事象 転帰別の患者数",
        title_en: "Patients with adverse events, by outcome",
    },
    Measure {
        id: "als_events",
        table: "als_event",
        key: "event_type",
        dataset: "als",
        title_ja: "ALS イベント（NIV・胃瘻・気管切開・死亡）の患者数",
        title_en: "ALS patients by event (NIV, gastrostomy, tracheostomy, death)",
    },
];

/// The counts behind one row, before any disclosure rule (computed in the enclave,
/// never shown as such).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawFigure {
    pub measure: String,
    pub key: String,
    pub label_ja: String,
    pub label_en: String,
    /// Distinct patients nationally, and the facilities their rows were written at.
    pub national: i64,
    pub national_facilities: i64,
    /// Distinct patients with a row at this facility.
    pub own: i64,
    /// Patients without a row at this facility, and the facilities of their rows.
    pub others: i64,
    pub other_facilities: i64,
}

/// One released row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Row {
    pub key: String,
    pub label_ja: String,
    pub label_en: String,
    /// The facility's own patients (its own records, unsuppressed).
    pub own: i64,
    /// The national figure, or `null` when suppressed.
    pub national: Option<i64>,
    pub national_suppressed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Section {
    pub measure: String,
    pub title_ja: String,
    pub title_en: String,
    pub k: u32,
    pub facility_k: u32,
    pub rows: Vec<Row>,
}

/// The feedback report of one facility.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FeedbackReport {
    pub facility: String,
    pub generated_at: DateTime<Utc>,
    pub sections: Vec<Section>,
    pub notes: Vec<String>,
}

/// The national cell of `f` under `rules`, or `None` when it must be suppressed.
pub fn national_cell(f: &RawFigure, rules: &RuleSet) -> Option<i64> {
    let (k, fk) = (rules.k as i64, rules.facility_k as i64);
    let small = |n: i64| n < k;
    if small(f.national) || f.national_facilities < fk {
        return None;
    }
    // What the facility learns by subtraction: the other facilities' patients (the
    // differencing defence; only an attack test's control switches it off).
    if rules.defences.differencing && f.others > 0 && (small(f.others) || f.other_facilities < fk) {
        return None;
    }
    Some(match rules.rounding {
        Some(base) if base > 1 => {
            let b = base as i64;
            (f.national + b / 2) / b * b
        }
        _ => f.national,
    })
}

/// The report from the raw figures (in measure and key order).
pub fn build(facility: &str, raw: &[RawFigure], rules: &DisclosureRules) -> FeedbackReport {
    let sections = MEASURES
        .iter()
        .map(|m| {
            let set = rules.effective([m.dataset]);
            let rows = raw
                .iter()
                .filter(|f| f.measure == m.id)
                .map(|f| {
                    let national = national_cell(f, &set);
                    Row {
                        key: f.key.clone(),
                        label_ja: f.label_ja.clone(),
                        label_en: f.label_en.clone(),
                        own: f.own,
                        national,
                        national_suppressed: national.is_none(),
                    }
                })
                .collect();
            Section {
                measure: m.id.into(),
                title_ja: m.title_ja.into(),
                title_en: m.title_en.into(),
                k: set.k,
                facility_k: set.facility_k,
                rows,
            }
        })
        .collect();
    FeedbackReport {
        facility: facility.to_string(),
        generated_at: Utc::now(),
        sections,
        notes: vec![
            "自施設の列は自施設で記録した患者の数です。k 未満の値は公表しないでください。全国の列は開示ルール（k・施設数・自施設との差）により秘匿されることがあります（—）。".into(),
            "The facility column counts the patients recorded at this facility; do not publish values below k. National cells are suppressed (—) under the disclosure rules (k, number of facilities, and the difference from this facility's own figure).".into(),
        ],
    }
}

/// The report as an HTML document (Japanese and English side by side per row).
pub fn html(r: &FeedbackReport) -> String {
    let mut out = format!(
        "<!doctype html><html lang=\"ja\"><head><meta charset=\"utf-8\"><title>施設別フィードバック {f} / Facility feedback {f}</title><style>{STYLE}</style></head><body>\
         <h1>施設別フィードバック報告 / Facility feedback report</h1><p>{f} — {d}</p>",
        f = esc(&r.facility),
        d = r.generated_at.format("%Y-%m-%d"),
    );
    for s in &r.sections {
        let _ = write!(
            out,
            "<h2>{} / {}</h2><table><tr><th>区分 / Key</th><th>自施設 / This facility</th><th>全国 / National</th></tr>",
            esc(&s.title_ja),
            esc(&s.title_en)
        );
        for row in &s.rows {
            let national = row
                .national
                .map(|n| n.to_string())
                .unwrap_or_else(|| "—".into());
            let _ = write!(
                out,
                "<tr><th>{} {} / {}</th><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&row.key),
                esc(&row.label_ja),
                esc(&row.label_en),
                row.own,
                national
            );
        }
        let _ = write!(
            out,
            "</table><p><small>k = {}, facility k = {}</small></p>",
            s.k, s.facility_k
        );
    }
    for n in &r.notes {
        let _ = write!(out, "<p><small>{}</small></p>", esc(n));
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RuleSet {
        DisclosureRules::embedded().unwrap().effective(["regen"])
    }

    fn fig(national: i64, nf: i64, own: i64, of: i64) -> RawFigure {
        RawFigure {
            national,
            national_facilities: nf,
            own,
            others: national - own,
            other_facilities: of,
            ..Default::default()
        }
    }

    #[test]
    fn a_small_other_part_is_suppressed_against_the_own_figure() {
        let r = rules();
        // 12 nationally, 10 here: the 2 elsewhere would show by subtraction.
        assert_eq!(national_cell(&fig(12, 4, 10, 3), &r), None);
        // 15 nationally, 10 here: 5 elsewhere at 3 facilities is a releasable cell.
        assert_eq!(national_cell(&fig(15, 4, 10, 3), &r), Some(15));
        // Enough others, but at 2 facilities only: facility threshold.
        assert_eq!(national_cell(&fig(15, 3, 10, 2), &r), None);
        // None elsewhere: national = own, which the facility knows; still needs k and
        // the facility threshold over the cell itself.
        assert_eq!(national_cell(&fig(8, 1, 8, 0), &r), None);
        assert_eq!(national_cell(&fig(4, 3, 0, 3), &r), None, "under k");
        assert_eq!(national_cell(&fig(40, 9, 0, 9), &r), Some(40));
    }

    #[test]
    fn rounding_applies_to_released_national_cells() {
        let mut r = rules();
        r.rounding = Some(5);
        assert_eq!(national_cell(&fig(42, 9, 0, 9), &r), Some(40));
        assert_eq!(national_cell(&fig(43, 9, 0, 9), &r), Some(45));
    }

    #[test]
    fn the_report_marks_suppression_without_a_reason() {
        let raw = vec![RawFigure {
            measure: "als_events".into(),
            key: "death".into(),
            ..fig(12, 4, 10, 3)
        }];
        let r = build("F1", &raw, &DisclosureRules::embedded().unwrap());
        let s = r
            .sections
            .iter()
            .find(|s| s.measure == "als_events")
            .unwrap();
        assert_eq!(s.rows[0].national, None);
        assert!(s.rows[0].national_suppressed);
        assert_eq!(s.rows[0].own, 10);
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("others") && !json.contains("other_facilities"));
    }
}
