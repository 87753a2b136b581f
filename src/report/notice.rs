//! Reports, notices (seed 002 要綱 第2章6): the approval notice (承認通知書) and the
//! notice of refusal with its reasons, as the applicant downloads them — Japanese in the
//! ministry's form style (number and date, addressee, issuer, title, 記, numbered
//! items), followed by the English version.
//!
//! Guarantees: a notice is rendered from the [`Notice`] issued with the decision (never
//! from the application as it is now); every value is HTML-escaped; [`render`] is the
//! one place a format is chosen, so a PDF renderer plugs in there (the HTML is the
//! source it prints).

use std::fmt::Write;

use super::render::{STYLE, esc, kv, rows};
use crate::privacy::result::DisclosureMode;
use crate::store::model::Approval;
use crate::store::seeds::{Notice, NoticeKind};

/// The formats a notice is offered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeFormat {
    Json,
    Html,
}

impl NoticeFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Self::Json),
            "html" => Some(Self::Html),
            _ => None,
        }
    }
}

/// A rendered notice: its media type, file name and bytes.
pub struct Rendered {
    pub content_type: &'static str,
    pub file_name: String,
    pub body: Vec<u8>,
}

/// Render `n` as `format`. The seam for PDF: route `Html`'s output through the shared
/// PDF renderer and add a variant here.
pub fn render(n: &Notice, format: NoticeFormat) -> Result<Rendered, serde_json::Error> {
    let (content_type, ext, body) = match format {
        NoticeFormat::Json => ("application/json", "json", serde_json::to_vec_pretty(n)?),
        NoticeFormat::Html => ("text/html; charset=utf-8", "html", html(n).into_bytes()),
    };
    Ok(Rendered {
        content_type,
        file_name: format!("notice-{}-{}.{ext}", n.id, n.kind.as_str()),
        body,
    })
}

struct Words {
    lang: &'static str,
    issuer: &'static str,
    to_suffix: &'static str,
    heading: &'static str,
    approve_lead: &'static str,
    refuse_lead: &'static str,
    ki: &'static str,
    conditions: [&'static str; 5],
}

const JA: Words = Words {
    lang: "ja",
    issuer: "厚生労働省健康局疾病対策課長",
    to_suffix: "殿",
    heading: "臨床調査個人票の使用について（通知）",
    approve_lead: "申請のあった標記について、下記のとおり承認します。",
    refuse_lead: "申請のあった標記について、下記の理由により承認しないこととしたので通知します。",
    ki: "記",
    conditions: [
        "個人票等を研究利用目的以外に利用し、又は第三者に提供しないこと（要綱第3章3）。",
        "個人票等を研究施設の外に持ち出さないこと。kura では承認された使用場所のネットワークからのみ利用できます（第3章6）。",
        "承認された期間の終了後、研究上用いた記録を復元不可能な方法で処理すること（第3章5）。",
        "研究の結果を公表するときは、個人を特定できないようにすること（第3章7）。",
        "期間終了後、使用状況報告書を提出すること（第4章4）。",
    ],
};

const EN: Words = Words {
    lang: "en",
    issuer: "Director, Division of Disease Control, Health Service Bureau, MHLW",
    to_suffix: "",
    heading: "Use of the clinical survey records (notice)",
    approve_lead: "The application named below is approved on the following terms.",
    refuse_lead: "The application named below is not approved, for the reasons below.",
    ki: "Terms",
    conditions: [
        "Use the records only for the approved purpose and provide them to no third party (Ch. 3 §3).",
        "Do not take the records outside the research facility; kura admits requests only from the approved networks (Ch. 3 §6).",
        "Destroy the records used in the research irreversibly after the approved period (Ch. 3 §5).",
        "Publish results only in a form that identifies no one (Ch. 3 §7).",
        "File the usage report after the period (Ch. 4 §4).",
    ],
};

fn mode_text(a: &Approval, ja: bool) -> String {
    match (a.mode, ja) {
        (DisclosureMode::Suppression, true) => format!("少数セル秘匿（k = {}）", a.k),
        (DisclosureMode::Suppression, false) => format!("small-cell suppression (k = {})", a.k),
        (DisclosureMode::Dp, true) => format!(
            "差分プライバシー（年度あたり ε = {}）",
            a.epsilon_budget.unwrap_or(0.0)
        ),
        (DisclosureMode::Dp, false) => format!(
            "differential privacy (ε = {} per fiscal year)",
            a.epsilon_budget.unwrap_or(0.0)
        ),
    }
}

fn list_or(v: Option<&Vec<String>>, ja: bool, all: (&str, &str)) -> String {
    match v {
        Some(v) if !v.is_empty() => v.join(", "),
        _ => (if ja { all.0 } else { all.1 }).to_string(),
    }
}

fn approval_rows(n: &Notice, a: &Approval, ja: bool) -> Vec<(String, String)> {
    let pick = |j: &'static str, e: &'static str| if ja { j } else { e };
    let years = a
        .scope
        .fiscal_years
        .as_ref()
        .map(|y| y.iter().map(|y| y.to_string()).collect::<Vec<_>>());
    let users: Vec<String> = n
        .named_users
        .iter()
        .map(|u| format!("{} {} {}", u.affiliation, u.title, u.username))
        .collect();
    vec![
        kv(pick("承認番号", "Approval"), &n.application),
        kv(pick("研究課題名", "Study title"), &n.title),
        kv(pick("研究班名", "Research group"), &n.research_group),
        kv(
            pick("対象疾患（告示番号）", "Diseases (designated numbers)"),
            list_or(
                a.scope
                    .diseases
                    .as_ref()
                    .map(|d| d.iter().map(|x| x.to_string()).collect())
                    .as_ref(),
                ja,
                ("指定なし", "not restricted"),
            ),
        ),
        kv(
            pick("データベース", "Datasets"),
            a.scope.datasets.join(", "),
        ),
        kv(
            pick("年次", "Fiscal years"),
            list_or(years.as_ref(), ja, ("全年度", "all")),
        ),
        kv(
            pick("地域", "Regions"),
            list_or(a.scope.prefectures.as_ref(), ja, ("全国", "nationwide")),
        ),
        kv(
            pick("使用期間", "Period of use"),
            format!("{} – {}", a.term.start, a.term.end),
        ),
        kv(pick("使用する者", "Named users"), users.join(" / ")),
        kv(pick("使用場所", "Place of use"), &n.place_of_use),
        kv(
            pick("使用場所のネットワーク", "Networks of the place of use"),
            list_or(
                a.networks.as_ref(),
                ja,
                ("ネットワークによる制限なし", "not restricted by network"),
            ),
        ),
        kv(pick("開示方式", "Disclosure control"), mode_text(a, ja)),
    ]
}

fn section(out: &mut String, n: &Notice, w: &Words) {
    let ja = w.lang == "ja";
    let date = if ja {
        n.issued_on.format("%Y年%m月%d日").to_string()
    } else {
        n.issued_on.format("%d %B %Y").to_string()
    };
    let _ = write!(
        out,
        "<section class=\"{lang}\" lang=\"{lang}\"><p class=\"date\">{id}<br>{date}</p>\
         <p class=\"to\">{aff} {title}<br>{name} {suffix}</p><p class=\"from\">{issuer}</p><h1>{heading}</h1>",
        lang = w.lang,
        id = esc(&n.id),
        aff = esc(&n.applicant.affiliation),
        title = esc(&n.applicant.title),
        name = esc(&n.applicant.name),
        suffix = w.to_suffix,
        issuer = w.issuer,
        heading = w.heading,
    );
    match (&n.kind, &n.approval) {
        (NoticeKind::Approval, Some(a)) => {
            let _ = write!(out, "<p>{}</p><h2>{}</h2>", w.approve_lead, w.ki);
            rows(out, &approval_rows(n, a, ja));
            out.push_str("<ol>");
            for c in w.conditions {
                let _ = write!(out, "<li>{c}</li>");
            }
            out.push_str("</ol>");
        }
        _ => {
            let _ = write!(out, "<p>{}</p><h2>{}</h2>", w.refuse_lead, w.ki);
            let reason = n.reason.as_deref().unwrap_or_default();
            rows(
                out,
                &[
                    kv(if ja { "申請番号" } else { "Application" }, &n.application),
                    kv(if ja { "研究課題名" } else { "Study title" }, &n.title),
                    kv(if ja { "理由" } else { "Reasons" }, reason),
                ],
            );
        }
    }
    out.push_str("</section>");
}

/// The notice as an HTML document: Japanese, then English.
pub fn html(n: &Notice) -> String {
    let title = match n.kind {
        NoticeKind::Approval => "承認通知書",
        NoticeKind::Refusal => "不承認通知書",
    };
    let mut out = format!(
        "<!doctype html><html lang=\"ja\"><head><meta charset=\"utf-8\"><title>{title} {}</title><style>{STYLE}</style></head><body>",
        esc(&n.id)
    );
    section(&mut out, n, &JA);
    section(&mut out, n, &EN);
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::scope::Scope;
    use crate::store::model::{NamedUser, Person, Term};
    use chrono::{NaiveDate, Utc};

    fn notice(kind: NoticeKind) -> Notice {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        Notice {
            id: "N-2026-0001".into(),
            application: "A-2026-0001".into(),
            kind,
            issued_at: Utc::now(),
            issued_on: d("2026-11-21"),
            issued_by: "reviewer1".into(),
            applicant: Person {
                name: "山田 <b>太郎</b>".into(),
                affiliation: "デモ大学".into(),
                title: "教授".into(),
            },
            research_group: "班".into(),
            title: "ALS の経過".into(),
            diseases: vec![2],
            named_users: vec![NamedUser {
                username: "researcher1".into(),
                affiliation: "デモ大学".into(),
                title: "研究員".into(),
            }],
            place_of_use: "研究棟 3F".into(),
            approval: (kind == NoticeKind::Approval).then(|| Approval {
                term: Term {
                    start: d("2026-11-21"),
                    end: d("2027-03-31"),
                },
                scope: Scope {
                    datasets: vec!["nanbyo".into()],
                    diseases: Some(vec![2]),
                    ..Default::default()
                },
                mode: DisclosureMode::Suppression,
                k: 5,
                epsilon_budget: None,
                dp_bounds: None,
                approved_by: "reviewer1".into(),
                approved_at: Utc::now(),
                networks: Some(vec!["192.0.2.0/24".into()]),
                published: None,
            }),
            reason: (kind == NoticeKind::Refusal).then(|| "目的が不明確 <script>".into()),
        }
    }

    #[test]
    fn the_approval_notice_states_the_terms_in_both_languages() {
        let h = html(&notice(NoticeKind::Approval));
        for want in [
            "臨床調査個人票の使用について（通知）",
            "下記のとおり承認します",
            "A-2026-0001",
            "2026年11月21日",
            "2026-11-21 – 2027-03-31",
            "192.0.2.0/24",
            "k = 5",
            "第3章6",
            "is approved on the following terms",
        ] {
            assert!(h.contains(want), "missing {want}");
        }
        assert!(h.contains("&lt;b&gt;太郎"), "values are escaped");
        assert!(!h.contains("<b>太郎"));
    }

    #[test]
    fn the_refusal_notice_gives_its_reasons_escaped() {
        let h = html(&notice(NoticeKind::Refusal));
        assert!(h.contains("承認しないこととした"));
        assert!(h.contains("目的が不明確 &lt;script&gt;"));
        assert!(!h.contains("<script>"));
        let r = render(&notice(NoticeKind::Refusal), NoticeFormat::Html).unwrap();
        assert_eq!(r.file_name, "notice-N-2026-0001-refusal.html");
    }
}
