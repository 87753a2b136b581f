//! Reports, rendering: the usage report as CSV (one figure per row) and as an HTML
//! document in the ministry's form style (date, addressee, applicant block, title,
//! numbered items — seed 002 様式1), in Japanese followed by its English version.
//!
//! Guarantees: every value is HTML-escaped; the CSV and HTML carry exactly the figures of
//! the JSON report they are rendered from (one source, three views).

use std::fmt::Write;

use super::document::{Block, Document, Table};
use super::usage::UsageReport;

/// One figure: (section, item, value), in report order.
pub fn figures(r: &UsageReport) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut put = |s: &str, k: &str, v: String| out.push((s.to_string(), k.to_string(), v));
    put("application", "id", r.application.clone());
    put("application", "fiscal_year", r.fiscal_year.to_string());
    put("application", "period_start", r.period.start.to_string());
    put("application", "period_end", r.period.end.to_string());
    put("users", "worked", r.users.len().to_string());
    for u in &r.users {
        put("users", "user", u.clone());
    }
    put("sessions", "logins", r.sessions.to_string());
    put("queries", "total", r.queries_total.to_string());
    put("queries", "answered", r.queries_ok.to_string());
    put("queries", "refused", r.queries_denied.to_string());
    put("queries", "failed", r.queries_error.to_string());
    for (code, n) in &r.refused_by_code {
        put("refused_by_code", code, n.to_string());
    }
    for (code, n) in &r.failed_by_code {
        put("failed_by_code", code, n.to_string());
    }
    put("suppression", "cells", r.suppressed_cells.to_string());
    for (reason, n) in &r.suppressed_by_reason {
        put("suppressed_by_reason", reason, n.to_string());
    }
    put(
        "privacy_budget",
        "epsilon_spent",
        format!("{}", r.epsilon_spent),
    );
    put("releases", "requested", r.releases_requested.to_string());
    put("releases", "approved", r.releases_approved.to_string());
    put("releases", "rejected", r.releases_rejected.to_string());
    put(
        "recommendations",
        "count",
        r.recommendations.len().to_string(),
    );
    put("extract", "built", r.extract_built.to_string());
    put("extract", "destroyed", r.extract_destroyed.to_string());
    put("audit", "head", r.audit.head.clone());
    put("audit", "chain_events", r.audit.chain_events.to_string());
    out
}

/// The report as CSV: `section,item,value`.
pub fn csv(r: &UsageReport) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["section", "item", "value"])?;
    for (s, k, v) in figures(r) {
        w.write_record([s, k, v])?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Escape text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

pub(crate) const STYLE: &str = "body{font-family:'IPAexGothic','IPAGothic','Noto Sans CJK JP',sans-serif;max-width:44em;margin:2em auto;line-height:1.6}\
.date{text-align:right}.to{margin:1em 0}.from{margin-left:55%}h1{text-align:center;font-size:1.3em;margin:1.5em 0}\
table{border-collapse:collapse;width:100%;margin:.3em 0 1em}th,td{border:1px solid #000;padding:.2em .5em;text-align:left}\
td.n{text-align:right}h2{font-size:1em;margin-top:1.2em}section.en{margin-top:3em;border-top:2px solid #000;padding-top:1em}";

struct Labels {
    lang: &'static str,
    to: &'static str,
    title: &'static str,
    lead: &'static str,
    items: [&'static str; 8],
    group: &'static str,
    affiliation: &'static str,
    name: &'static str,
}

const JA: Labels = Labels {
    lang: "ja",
    to: "厚生労働省健康局疾病対策課長 殿",
    title: "臨床調査個人票等の使用状況について（報告）",
    lead: "承認を受けた研究の使用状況を、署名付き監査ログに基づき下記のとおり報告します。",
    items: [
        "1 承認番号・研究課題名",
        "2 対象期間（年度）",
        "3 使用した者",
        "4 利用の状況（セッション・クエリ）",
        "5 秘匿したセル（理由別）",
        "6 プライバシー予算（ε）・成果物の持ち出し",
        "7 是正の勧告",
        "8 抽出データの作成・消去",
    ],
    group: "研究班名",
    affiliation: "申請者所属・職名",
    name: "氏名",
};

const EN: Labels = Labels {
    lang: "en",
    to: "To the Director, Division of Disease Control, Health Service Bureau, MHLW",
    title: "Report on the use of the clinical survey records (usage report)",
    lead: "We report the use of the approved study as follows, counted from the signed audit log.",
    items: [
        "1 Approval id and study title",
        "2 Period (fiscal year)",
        "3 Users who worked",
        "4 Use (sessions, queries)",
        "5 Suppressed cells by reason",
        "6 Privacy budget (ε) and releases",
        "7 Corrective recommendations",
        "8 Extract built and destroyed",
    ],
    group: "Research group",
    affiliation: "Applicant's affiliation and title",
    name: "Name",
};

pub(crate) fn rows(out: &mut String, pairs: &[(String, String)]) {
    out.push_str("<table>");
    for (k, v) in pairs {
        let _ = write!(
            out,
            "<tr><th>{}</th><td class=\"n\">{}</td></tr>",
            esc(k),
            esc(v)
        );
    }
    out.push_str("</table>");
}

pub(crate) fn kv(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// One numbered item of the form: its heading and its rows (`None`: "none").
type Item = (&'static str, Option<Vec<(String, String)>>);

/// The numbered items of the form in `l`'s language, as data: the HTML and the PDF
/// document are both drawn from it.
fn items(r: &UsageReport, l: &Labels) -> Vec<Item> {
    let ja = l.lang == "ja";
    let pick = |j: &'static str, e: &'static str| if ja { j } else { e };
    let period = format!(
        "{} – {} (FY{})",
        r.period.start, r.period.end, r.fiscal_year
    );
    let users: Vec<_> = r
        .by_user
        .iter()
        .map(|(u, x)| {
            kv(
                u,
                format!(
                    "{} {} / {} {}",
                    pick("クエリ", "queries"),
                    x.queries,
                    pick("ログイン", "logins"),
                    x.sessions
                ),
            )
        })
        .collect();
    let mut use_rows = vec![
        kv(pick("ログイン数", "Logins"), r.sessions),
        kv(pick("クエリ総数", "Queries"), r.queries_total),
        kv(pick("回答", "Answered"), r.queries_ok),
        kv(pick("拒否", "Refused"), r.queries_denied),
        kv(pick("実行失敗", "Failed"), r.queries_error),
    ];
    for (c, n) in r.refused_by_code.iter().chain(&r.failed_by_code) {
        use_rows.push(kv(&format!("  {c}"), n));
    }
    let mut cells = vec![kv(
        pick("秘匿セル数", "Suppressed cells"),
        r.suppressed_cells,
    )];
    cells.extend(r.suppressed_by_reason.iter().map(|(k, v)| kv(k, v)));
    let recs: Vec<_> = r
        .recommendations
        .iter()
        .map(|x| kv(&x.at.format("%Y-%m-%d").to_string(), &x.text))
        .collect();
    vec![
        (
            l.items[0],
            Some(vec![
                kv(pick("承認番号", "Approval"), &r.application),
                kv(pick("研究課題名", "Title"), &r.title),
            ]),
        ),
        (l.items[1], Some(vec![kv(pick("期間", "Period"), period)])),
        (l.items[2], Some(users)),
        (l.items[3], Some(use_rows)),
        (l.items[4], Some(cells)),
        (
            l.items[5],
            Some(vec![
                kv(pick("使用した ε", "ε spent"), r.epsilon_spent),
                kv(
                    pick("持ち出し申請", "Releases requested"),
                    r.releases_requested,
                ),
                kv(pick("承認", "Approved"), r.releases_approved),
                kv(pick("却下", "Rejected"), r.releases_rejected),
            ]),
        ),
        (l.items[6], (!recs.is_empty()).then_some(recs)),
        (
            l.items[7],
            Some(vec![
                kv(pick("作成", "Built"), r.extract_built),
                kv(pick("消去", "Destroyed"), r.extract_destroyed),
            ]),
        ),
    ]
}

fn none_text(l: &Labels) -> &'static str {
    if l.lang == "ja" { "なし" } else { "None" }
}

fn audit_line(r: &UsageReport, l: &Labels) -> String {
    let ja = l.lang == "ja";
    format!(
        "{} {} / {}: {}",
        if ja {
            "監査ログ（検証済み）"
        } else {
            "Audit log (verified)"
        },
        r.audit.chain_events,
        if ja { "先頭ハッシュ" } else { "head" },
        r.audit.head
    )
}

fn section(out: &mut String, r: &UsageReport, l: &Labels) {
    let _ = write!(
        out,
        "<section class=\"{lang}\" lang=\"{lang}\"><p class=\"date\">{date}</p><p class=\"to\">{to}</p>\
         <p class=\"from\">{g}：{group}<br>{a}：{aff} {title}<br>{n}：{name}</p><h1>{h}</h1><p>{lead}</p>",
        lang = l.lang,
        date = r.generated_at.format("%Y-%m-%d"),
        to = l.to,
        g = l.group,
        group = esc(&r.research_group),
        a = l.affiliation,
        aff = esc(&r.applicant.affiliation),
        title = esc(&r.applicant.title),
        n = l.name,
        name = esc(&r.applicant.name),
        h = l.title,
        lead = l.lead,
    );
    for (heading, pairs) in items(r, l) {
        let _ = write!(out, "<h2>{heading}</h2>");
        match pairs {
            Some(p) => rows(out, &p),
            None => {
                let _ = write!(out, "<p>{}</p>", none_text(l));
            }
        }
    }
    let _ = write!(
        out,
        "<p><small>{}</small></p></section>",
        esc(&audit_line(r, l))
    );
}

/// The report as a document for the PDF: the same items, Japanese then English.
pub fn document(r: &UsageReport) -> Document {
    let mut blocks = Vec::new();
    for (i, l) in [&JA, &EN].into_iter().enumerate() {
        if i > 0 {
            blocks.push(Block::NewPart { lang: l.lang });
        }
        blocks.push(Block::Right(r.generated_at.format("%Y-%m-%d").to_string()));
        blocks.push(Block::Line(l.to.to_string()));
        blocks.push(Block::From(format!("{}：{}", l.group, r.research_group)));
        blocks.push(Block::From(format!(
            "{}：{} {}",
            l.affiliation, r.applicant.affiliation, r.applicant.title
        )));
        blocks.push(Block::From(format!("{}：{}", l.name, r.applicant.name)));
        blocks.push(Block::Title(l.title.to_string()));
        blocks.push(Block::Para(l.lead.to_string()));
        for (heading, pairs) in items(r, l) {
            blocks.push(Block::Subheading(heading.to_string()));
            match pairs {
                Some(p) => blocks.push(Block::Table(Table {
                    head: Vec::new(),
                    rows: p.into_iter().map(|(k, v)| vec![k, v]).collect(),
                    numeric: vec![false, true],
                    total_rows: Vec::new(),
                })),
                None => blocks.push(Block::Para(none_text(l).to_string())),
            }
        }
        blocks.push(Block::Small(audit_line(r, l)));
    }
    Document {
        title: format!("使用状況報告書 {} FY{}", r.application, r.fiscal_year),
        blocks,
    }
}

/// The report as an HTML document: Japanese, then English.
pub fn html(r: &UsageReport) -> String {
    let mut out = format!(
        "<!doctype html><html lang=\"ja\"><head><meta charset=\"utf-8\"><title>使用状況報告書 {} FY{}</title><style>{STYLE}</style></head><body>",
        esc(&r.application),
        r.fiscal_year
    );
    section(&mut out, r, &JA);
    section(&mut out, r, &EN);
    out.push_str("</body></html>\n");
    out
}
