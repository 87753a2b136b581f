//! Annual reports (issue 13 §3) over the real engine: a source registry written by the
//! test (with planted patients whose counts a subtraction would reveal), the real report
//! extract and query path, and checks that recompute every population from the source rows
//! — independently of kura — and compute every difference of released cells (pairs, and
//! each table's row and column totals minus its released cells). Each defence has its
//! control: the same report with the defence off (or without the earlier publication)
//! shows the small group.
//!
//! Planted: product P05 (maker M03, not in the generated data) treated in FY2020 by 10 men
//! and 2 women (the 2 women follow from total − men); disease 50 (not generated) with 20
//! patients surveyed in FY2020 and FY2021 and 2 more in FY2021 only (FY2021 − FY2020 gives
//! 2 patients); and the withdrawal of 2 of P05's men (a new data version: the FY2020 report
//! again would differ from the published one by those 2).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use kura::catalog::Catalog;
use kura::config::HttpSettings;
use kura::engine::Limits;
use kura::http::{AppState, app};
use kura::policy::Policy;
use kura::privacy::Defences;
use kura::privacy::disclosure::differencing::unsafe_pair;
use kura::query::engine_plane::EnginePlane;
use kura::query::plane::DataPlane;
use kura::report::annual::{self, AnnualReport, Audience, Definitions};
use roaring::RoaringBitmap;

use crate::support::fixtures::{self, PASSWORD, USERS};
use crate::support::http::{audit_rows, call_router, code};
use crate::support::{SourceData, V, date, pid_of};

const FY: i32 = 2020;
const K: u64 = 5;
const EXTRACT_KEY: [u8; 32] = [7; 32];

/// The planted patients' source numbers (far above the generated ones).
fn planted(i: usize) -> String {
    pid_of(900_000 + i)
}

fn band(age: i64) -> String {
    if age >= 90 {
        "90+".into()
    } else {
        let lo = (age.max(0) / 5) * 5;
        format!("{lo}-{}", lo + 4)
    }
}

/// A facility of the planted patients: spread over four, so that the facility threshold
/// (3 distinct facilities per cell) is not what hides them.
fn facility(i: usize) -> String {
    format!("130{}", 1 + (i / 2) % 4)
}

fn survey(pid: &str, fy: i64, disease: i64, birth: i64, facility: &str) -> Vec<V> {
    vec![
        V::s(pid),
        V::Int(fy),
        V::Int(disease),
        V::s("renewal"),
        V::s("13"),
        V::s(band(fy - birth)),
        V::Int(2010),
        V::s(band(2010 - birth)),
        V::Int(2),
        V::Float(0.9),
        V::Float(4.0),
        V::Float(90.0),
        V::Float(40.0),
        V::s(facility),
    ]
}

/// The generated registry plus the planted patients.
fn source() -> SourceData {
    let mut d = SourceData::generate(1200, 20261207);
    d.push(
        "product",
        vec![
            V::s("P05"),
            V::s("M03"),
            V::s("製品5"),
            V::s("Product 5"),
            V::s("ヒト細胞加工製品"),
            V::Int(2019),
        ],
    );
    d.push(
        "disease",
        vec![V::Int(50), V::s("疾病50"), V::s("Disease 50"), V::s("免疫")],
    );
    for i in 0..12 {
        let pid = planted(i);
        d.push_patient(&pid, if i < 10 { "M" } else { "F" }, 1960, "13");
        d.push(
            "regen_treatment",
            vec![
                V::s(&pid),
                V::s("P05"),
                V::s("M03"),
                V::s(facility(2 * i)),
                V::Date(date(2020, 7, 1)),
                V::Int(2020),
                V::s("60-64"),
            ],
        );
    }
    for i in 100..122 {
        let pid = planted(i);
        d.push_patient(&pid, if i % 2 == 0 { "M" } else { "F" }, 1970, "13");
        if i < 120 {
            d.push("nanbyo_survey", survey(&pid, 2020, 50, 1970, &facility(i)));
        }
        d.push("nanbyo_survey", survey(&pid, 2021, 50, 1970, &facility(i)));
    }
    d
}

/// `d` without two of P05's men (their consent withdrawn: a new data version).
fn withdrawn(mut d: SourceData) -> SourceData {
    let gone: BTreeSet<String> = [planted(0), planted(1)].into();
    for rows in d.tables.values_mut() {
        rows.retain(|r| !matches!(&r[0], V::Str(p) if gone.contains(p)));
    }
    d
}

struct Fx {
    dir: tempfile::TempDir,
    state: AppState,
    router: Router,
    plane: Arc<dyn DataPlane>,
    defs: Definitions,
}

async fn fixture_with(data: &SourceData, settings: HttpSettings) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::embedded().unwrap());
    data.write(&dir.path().join("data"), &catalog);
    let names: Vec<&str> = USERS.iter().map(|u| u.0).collect();
    let store = fixtures::store_with_users(dir.path(), &names).await;
    let plane: Arc<dyn DataPlane> = Arc::new(
        EnginePlane::open(
            dir.path().join("data"),
            dir.path().join("extracts"),
            &EXTRACT_KEY,
            catalog.clone(),
            Limits::default(),
        )
        .await
        .unwrap(),
    );
    let state = AppState {
        policy: Arc::new(Policy::load(&store).await.unwrap()),
        store,
        data: plane.clone(),
        catalog: catalog.clone(),
        settings: Arc::new(settings),
        admission: Arc::new(kura::query::admission::Admission::new(64)),
        login_rate: Arc::default(),
    };
    Fx {
        dir,
        router: app(state.clone()),
        state,
        plane,
        defs: Definitions::embedded(&catalog).unwrap(),
    }
}

async fn fixture(data: &SourceData) -> Fx {
    fixture_with(data, HttpSettings::default()).await
}

impl Fx {
    async fn report(&self, fy: i32, defences: Defences) -> AnnualReport {
        annual::generate(
            &self.state.store,
            &self.plane,
            &self.defs,
            fy,
            &Audience::All,
            "admin1",
            json!({"via": "test"}),
            defences,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", std::error::Error::source(&e)))
    }

    async fn login(&self, user: &str) -> String {
        let (s, _, v) = call_router(
            &self.router,
            Method::POST,
            "/api/v1/session",
            None,
            Some(json!({"username": user, "password": PASSWORD})),
            &[],
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
        call_router(&self.router, Method::GET, path, Some(token), None, &[]).await
    }
}

// ---------------------------------------------------------------- populations from the source

/// Source pids of the patients a view's cell counts, and the cell's value, recomputed from
/// the source rows. `group`/`by` `None` = the total over that dimension.
fn population(
    d: &SourceData,
    fy: i64,
    section: &str,
    view: &str,
    group: Option<&str>,
    by: Option<&str>,
) -> (BTreeSet<String>, i64) {
    let s = |v: &V| match v {
        V::Str(x) => x.clone(),
        V::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    };
    let sex = |pid: &str| {
        d.rows("patient")
            .iter()
            .find(|p| s(&p[0]) == pid)
            .map(|p| s(&p[1]))
            .unwrap_or_default()
    };
    let birth = |pid: &str| {
        d.rows("patient")
            .iter()
            .find(|p| s(&p[0]) == pid)
            .map(|p| p[2].as_int())
            .unwrap_or_default()
    };
    let ok = |want: Option<&str>, have: String| want.is_none_or(|w| w == have);
    let mut pids = BTreeSet::new();
    let mut events = 0i64;
    match (section, view) {
        ("regen", "cases_by_sex" | "cases_by_age") => {
            for r in d.rows("regen_treatment") {
                let pid = s(&r[0]);
                let b = if view == "cases_by_sex" {
                    sex(&pid)
                } else {
                    s(&r[6])
                };
                if r[5].as_int() == fy && ok(group, s(&r[1])) && ok(by, b) {
                    pids.insert(pid);
                }
            }
        }
        ("regen", "ae_events_by_term" | "ae_patients_by_term" | "deaths") => {
            for r in d.rows("adverse_event") {
                let term = if view == "deaths" {
                    None
                } else {
                    Some(s(&r[3]))
                };
                let death = view != "deaths" || s(&r[5]) == "death";
                if r[7].as_int() == fy
                    && death
                    && ok(group, s(&r[1]))
                    && term.is_none_or(|t| ok(by, t))
                {
                    pids.insert(s(&r[0]));
                    events += 1;
                }
            }
        }
        ("nanbyo", "cases_by_sex" | "cases_by_age") => {
            for r in d.rows("nanbyo_survey") {
                let pid = s(&r[0]);
                let b = if view == "cases_by_sex" {
                    sex(&pid)
                } else {
                    s(&r[5])
                };
                if r[1].as_int() == fy && ok(group, s(&r[2])) && ok(by, b) {
                    pids.insert(pid);
                }
            }
        }
        ("als", "cases_by_sex" | "cases_by_age") => {
            for r in d.rows("als_visit") {
                let pid = s(&r[0]);
                let b = if view == "cases_by_sex" {
                    sex(&pid)
                } else {
                    band(fy - birth(&pid))
                };
                if r[2].as_int() == fy && ok(by, b) {
                    pids.insert(pid);
                }
            }
        }
        ("als", "events") => {
            for r in d.rows("als_event") {
                if r[3].as_int() == fy && ok(by, s(&r[1])) {
                    pids.insert(s(&r[0]));
                }
            }
        }
        // Cumulative: registered up to the end of the fiscal year (age band at the data date).
        ("jasmin", "registrants_by_sex" | "registrants_by_age") => {
            for r in d.rows("jasmin_registrant") {
                let pid = s(&r[0]);
                let b = if view == "registrants_by_sex" {
                    sex(&pid)
                } else {
                    s(&r[5])
                };
                if r[8].as_int() <= fy && ok(group, s(&r[2])) && ok(by, b) {
                    pids.insert(pid);
                }
            }
        }
        other => panic!("no recomputation for {other:?}"),
    }
    let value = if view == "ae_events_by_term" {
        events
    } else {
        pids.len() as i64
    };
    (pids, value)
}

/// One cell of the report as the reader sees it, with its recomputed population.
#[derive(Debug, Clone)]
struct Seen {
    name: String,
    value: Option<i64>,
    pids: BTreeSet<String>,
    expected: i64,
}

/// Every cell of every view, with its population.
fn seen(r: &AnnualReport, d: &SourceData) -> Vec<Vec<Vec<Seen>>> {
    let fy = i64::from(r.fiscal_year);
    r.sections
        .iter()
        .flat_map(|s| {
            s.views.iter().map(move |v| {
                v.rows
                    .iter()
                    .map(|row| {
                        v.columns
                            .iter()
                            .zip(&row.cells)
                            .map(|(c, value)| {
                                let group =
                                    (!row.total && !row.key.is_empty()).then_some(row.key.as_str());
                                let by = (!c.total && !c.key.is_empty()).then_some(c.key.as_str());
                                let (pids, expected) = population(d, fy, &s.id, &v.id, group, by);
                                Seen {
                                    name: format!("{}/{}[{}|{}]", s.id, v.id, row.en, c.en),
                                    value: *value,
                                    pids,
                                    expected,
                                }
                            })
                            .collect()
                    })
                    .collect()
            })
        })
        .collect()
}

fn small(n: u64) -> bool {
    (1..K).contains(&n)
}

fn bits(all: &[String], pids: &BTreeSet<String>) -> RoaringBitmap {
    pids.iter()
        .map(|p| all.binary_search(p).unwrap() as u32)
        .collect()
}

/// Every way a small group shows in `r` (and against `earlier`, cells of reports published
/// before it): a released cell below k, two released cells whose patients differ by 1–4, a
/// total minus its released cells (row or column) of 1–4 patients or events.
fn leaks(r: &AnnualReport, d: &SourceData, earlier: &[Seen]) -> Vec<String> {
    let views = seen(r, d);
    // Every patient named anywhere (earlier cells may hold patients who have left).
    let mut all: Vec<String> = d
        .rows("patient")
        .iter()
        .map(|p| p[0].as_str().to_string())
        .chain(earlier.iter().flat_map(|c| c.pids.iter().cloned()))
        .collect();
    all.sort();
    all.dedup();
    let mut out = Vec::new();
    let released: Vec<&Seen> = views
        .iter()
        .flatten()
        .flatten()
        .filter(|c| c.value.is_some())
        .collect();
    for c in &released {
        assert_eq!(c.value, Some(c.expected), "{} shows a wrong number", c.name);
        if small(c.pids.len() as u64) || c.pids.is_empty() {
            out.push(format!("{} has {} patients", c.name, c.pids.len()));
        }
    }
    let sets: Vec<(String, RoaringBitmap)> = released
        .iter()
        .copied()
        .chain(earlier.iter())
        .map(|c| (c.name.clone(), bits(&all, &c.pids)))
        .collect();
    for (i, (a, sa)) in sets.iter().enumerate().take(released.len()) {
        for (b, sb) in &sets[i + 1..] {
            if unsafe_pair(sa, sb, K as u32) {
                out.push(format!(
                    "{a} and {b} differ by fewer than {K} patients ({} and {} patients, {} shared)",
                    sa.len(),
                    sb.len(),
                    sa.intersection_len(sb)
                ));
            }
        }
    }
    for view in &views {
        let ncols = view.first().map_or(0, Vec::len);
        let lines: Vec<Vec<&Seen>> = view
            .iter()
            .map(|row| row.iter().collect())
            .chain((0..ncols).map(|j| view.iter().map(|row| &row[j]).collect()))
            .collect();
        // A line whose last cell is a total (the total column of a row, the total row of a
        // column): the total minus the released cells before it.
        for line in lines {
            let (total, parts) = line.split_last().unwrap();
            let is_total = total.name.contains("|Total]") || total.name.contains("[Total|");
            if !is_total || total.value.is_none() || parts.is_empty() {
                continue;
            }
            let known: i64 = parts.iter().filter_map(|c| c.value).sum();
            let rest = total.value.unwrap() - known;
            let mut hidden = total.pids.clone();
            for c in parts.iter().filter(|c| c.value.is_some()) {
                hidden.retain(|p| !c.pids.contains(p));
            }
            if small(rest.unsigned_abs()) || small(hidden.len() as u64) {
                out.push(format!(
                    "{} minus its released cells leaves {rest} ({} patients)",
                    total.name,
                    hidden.len()
                ));
            }
        }
    }
    out
}

// ---------------------------------------------------------------- disclosure

#[tokio::test]
async fn the_annual_report_never_shows_a_cell_below_k_including_margins() {
    let d = source();
    let fx = fixture(&d).await;
    let r = fx.report(FY, Defences::ALL).await;
    let found = leaks(&r, &d, &[]);
    assert!(found.is_empty(), "{found:#?}");
    // The report is not empty: most populated cells are released, the planted P05 total too.
    let cells: Vec<Seen> = seen(&r, &d).into_iter().flatten().flatten().collect();
    let released = cells.iter().filter(|c| c.value.is_some()).count();
    assert!(released > 40, "only {released} cells released");
    let p05 = cells
        .iter()
        .find(|c| c.name == "regen/cases_by_sex[Product 5|Total]")
        .unwrap();
    assert_eq!(p05.value, Some(12), "the product total stays; its cells go");
    let men = cells
        .iter()
        .find(|c| c.name == "regen/cases_by_sex[Product 5|Male]")
        .unwrap();
    assert_eq!(men.value, None, "men are hidden with the 2 women");
}

#[tokio::test]
async fn control_with_the_margins_defence_off_two_patients_follow_by_subtraction() {
    let d = source();
    let fx = fixture(&d).await;
    let off = Defences {
        margins: false,
        ..Defences::ALL
    };
    let r = fx.report(FY, off).await;
    let found = leaks(&r, &d, &[]);
    assert!(
        found
            .iter()
            .any(|l| l.contains("regen/cases_by_sex[Product 5|Total]") && l.contains("leaves 2")),
        "{found:#?}"
    );
}

/// The released cells of `r` with their populations (what a reader has seen).
fn released(r: &AnnualReport, d: &SourceData) -> Vec<Seen> {
    seen(r, d)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|c| c.value.is_some())
        .map(|mut c| {
            c.name = format!("FY{} {}", r.fiscal_year, c.name);
            c
        })
        .collect()
}

#[tokio::test]
async fn a_later_report_is_checked_against_the_earlier_published_ones() {
    let d = source();
    let fx = fixture(&d).await;
    let first = fx.report(2020, Defences::ALL).await;
    let second = fx.report(2021, Defences::ALL).await;
    let found = leaks(&second, &d, &released(&first, &d));
    assert!(found.is_empty(), "{found:#?}");
    // Control: the FY2021 report alone (no earlier publication in its ledger) shows a cell
    // two patients away from the FY2020 report's.
    let fresh = fixture(&d).await;
    let alone = fresh.report(2021, Defences::ALL).await;
    let found = leaks(&alone, &d, &released(&first, &d));
    assert!(
        found
            .iter()
            .any(|l| l.contains("Disease 50") && l.contains("FY2020")),
        "{found:#?}"
    );
}

#[tokio::test]
async fn a_new_data_version_is_checked_against_the_report_published_on_the_old_one() {
    let d = source();
    let fx = fixture(&d).await;
    let before = fx.report(FY, Defences::ALL).await;
    let old_seen = released(&before, &d);
    // Two of P05's men withdraw: ingest writes a new version of the registry.
    let d2 = withdrawn(d.clone());
    let catalog = Catalog::embedded().unwrap();
    d2.write(&fx.dir.path().join("data"), &catalog);
    let after = fx.report(FY, Defences::ALL).await;
    assert_ne!(before.data_version, after.data_version);
    // The withdrawn patients count as a difference: recompute the old cells with them.
    let found = leaks(&after, &d2, &old_seen);
    assert!(found.is_empty(), "{found:#?}");
    let p05: Vec<Seen> = released(&after, &d2)
        .into_iter()
        .filter(|c| c.name.contains("Product 5"))
        .collect();
    assert!(
        p05.is_empty(),
        "P05's total of 10 would show the 2 who left: {p05:#?}"
    );
    // Control: on a fresh store the new version's report releases P05's 10.
    let fresh = fixture(&d2).await;
    let alone = fresh.report(FY, Defences::ALL).await;
    let found = leaks(&alone, &d2, &old_seen);
    assert!(found.iter().any(|l| l.contains("Product 5")), "{found:#?}");
}

#[tokio::test]
async fn the_same_data_gives_the_same_report_and_generation_is_audited_with_its_ledger() {
    let d = source();
    let fx = fixture(&d).await;
    let a = fx.report(FY, Defences::ALL).await;
    let b = fx.report(FY, Defences::ALL).await;
    assert_eq!(a.sections, b.sections);
    let events = audit_rows(&fx.state.store, "report.annual").await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["detail"]["fiscal_year"], FY);
    assert_eq!(events[0]["detail"]["suppressed"], json!(b.suppressed));
    let register = fx.state.store.annual_reports().await.unwrap();
    assert_eq!(register.len(), 2);
    assert!(!fx.state.store.annual_ledger().await.unwrap().is_empty());
}

// ---------------------------------------------------------------- API, PMS teams

fn rows_of(v: &Value) -> Vec<String> {
    v["sections"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["views"].as_array().unwrap().clone())
        .flat_map(|v| v["rows"].as_array().unwrap().clone())
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_pms_team_gets_its_own_products_and_is_refused_another_makers() {
    let fx = fixture(&source()).await;
    let pms = fx.login("pms1").await;
    let path = |q: &str| format!("/api/v1/reports/annual?fy={FY}&{q}");
    let (s, _, own) = fx.get(&path("manufacturer=M01"), &pms).await;
    assert_eq!(s, StatusCode::OK, "{own}");
    let keys = rows_of(&own);
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k == "P01" || k == "P02"), "{keys:?}");
    assert_eq!(
        own["sections"].as_array().unwrap().len(),
        1,
        "the regen section only"
    );
    let (s, _, one) = fx.get(&path("product=P02"), &pms).await;
    assert_eq!(s, StatusCode::OK, "{one}");
    assert!(rows_of(&one).iter().all(|k| k == "P02"));
    // Attack: another manufacturer, another maker's product, a made-up product.
    for q in ["manufacturer=M02", "product=P03", "product=P99"] {
        let (s, _, v) = fx.get(&path(q), &pms).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{q}: {v}"
        );
    }
    let denied: Vec<Value> = audit_rows(&fx.state.store, "report.annual")
        .await
        .into_iter()
        .filter(|e| e["outcome"] == "denied")
        .collect();
    assert_eq!(denied.len(), 3, "every refusal is audited");
    // Control: the same request by the data custodian is answered (the refusal is the
    // defence, not a broken query).
    let admin = fx.login("admin1").await;
    let (s, _, other) = fx.get(&path("manufacturer=M02"), &admin).await;
    assert_eq!(s, StatusCode::OK, "{other}");
    assert!(rows_of(&other).iter().all(|k| k == "P03"));
    // Researchers and auditors do not read annual reports; reviewers do.
    for (user, want) in [
        ("researcher1", StatusCode::FORBIDDEN),
        ("auditor1", StatusCode::FORBIDDEN),
        ("reviewer1", StatusCode::OK),
    ] {
        let t = fx.login(user).await;
        let (s, _, v) = fx.get(&path("format=json"), &t).await;
        assert_eq!(s, want, "{user}: {v}");
    }
}

#[tokio::test]
async fn bad_parameters_get_clear_errors() {
    let fx = fixture(&source()).await;
    let admin = fx.login("admin1").await;
    for q in [
        "fy=1900",
        "fy=2020&format=docx",
        "fy=2020&product=%27%20OR%201%3D1",
        "fy=2020&manufacturer=MMMMMMMMMMMMMMMMMMMMMM",
    ] {
        let (s, _, v) = fx.get(&format!("/api/v1/reports/annual?{q}"), &admin).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{q}: {v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(" / "),
            "bilingual: {v}"
        );
    }
}

// ---------------------------------------------------------------- formats

fn pdf_text(bytes: &[u8], dir: &Path) -> String {
    let file = dir.join("report.pdf");
    std::fs::write(&file, bytes).unwrap();
    let out = std::process::Command::new("pdftotext")
        .args(["-layout", "-enc", "UTF-8"])
        .arg(&file)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils; tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn view<'a>(r: &'a Value, section: &str, id: &str) -> &'a Value {
    r["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == section)
        .and_then(|s| {
            s["views"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["id"] == id)
        })
        .unwrap()
}

#[tokio::test]
async fn csv_html_and_pdf_carry_the_figures_and_never_a_suppressed_number() {
    let fx = fixture(&source()).await;
    let admin = fx.login("admin1").await;
    let path = |f: &str| format!("/api/v1/reports/annual?fy={FY}&format={f}");
    let (s, _, json) = fx.get(&path("json"), &admin).await;
    assert_eq!(s, StatusCode::OK, "{json}");
    let by_sex = view(&json, "regen", "cases_by_sex");
    let p05 = by_sex["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "P05")
        .unwrap();
    assert_eq!(
        p05["cells"],
        json!([null, null, 12]),
        "M, F hidden, total 12"
    );

    let (s, headers, csv) = fx.get(&path("csv"), &admin).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = csv.as_str().unwrap();
    assert!(
        csv.contains(
            ",regen,cases_by_sex,10,patients,P05,製品5,Product 5,M,男性,Male,,suppressed\n"
        ),
        "{csv}"
    );
    assert!(csv.contains(
        ",regen,cases_by_sex,10,patients,P05,製品5,Product 5,total,計,Total,12,released\n"
    ));

    let (s, headers, html) = fx.get(&path("html"), &admin).await;
    assert_eq!(s, StatusCode::OK);
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "{csp}"
    );
    let html = html.as_str().unwrap();
    assert!(html.contains("年次報告") && html.contains("lang=\"en\""));
    assert!(html.matches("<svg").count() >= 10, "a chart per table");
    assert!(!html.contains("<script") && !html.contains("src="));

    let resp = call_router(
        &fx.router,
        Method::GET,
        &path("pdf"),
        Some(&admin),
        None,
        &[],
    )
    .await;
    assert_eq!(resp.0, StatusCode::OK);
    assert_eq!(resp.1["content-type"], "application/pdf");
    // call_router reads a non-JSON body as text; fetch the bytes again through the renderer.
    let report: AnnualReport = serde_json::from_value(json.clone()).unwrap();
    let bytes = kura::report::annual_rendered(&report, kura::report::Format::Pdf, None).unwrap();
    assert!(bytes.starts_with(b"%PDF-"));
    let text = pdf_text(&bytes, fx.dir.path());
    assert!(
        text.contains("登録症例数") && text.contains("Registered cases"),
        "{text}"
    );
    // The P05 row of the sex table: its label, two suppressed cells, the total 12.
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("製品5") && l.contains("12"))
        .unwrap_or_else(|| panic!("no P05 line in\n{text}"));
    let tokens: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(tokens, ["製品5", "秘匿", "秘匿", "12"], "{line}");
    let en = text
        .lines()
        .find(|l| l.trim_start().starts_with("Product 5") && l.contains("12"))
        .unwrap();
    assert_eq!(
        en.split_whitespace().collect::<Vec<_>>(),
        ["Product", "5", "x", "x", "12"]
    );
}

#[tokio::test]
async fn without_a_japanese_font_the_pdf_is_refused_clearly_and_nothing_is_published() {
    let settings = HttpSettings {
        report_font: Some("/nonexistent/ipag.ttf".into()),
        ..HttpSettings::default()
    };
    let fx = fixture_with(&source(), settings).await;
    let admin = fx.login("admin1").await;
    let (s, _, v) = fx
        .get(
            &format!("/api/v1/reports/annual?fy={FY}&format=pdf"),
            &admin,
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "pdf_unavailable"),
        "{v}"
    );
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("report_font") && m.contains("フォント"), "{m}");
    assert!(fx.state.store.annual_reports().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_cli_writes_the_annual_report_in_four_formats() {
    let d = source();
    let fx = fixture(&d).await;
    let out_dir = fx.dir.path().join("out");
    let out = crate::support::server::kura()
        .args(["report", "annual", "--fy", &FY.to_string(), "--data-dir"])
        .arg(fx.dir.path())
        .arg("--out")
        .arg(&out_dir)
        .env("KURA_AUDIT_KEY", hex::encode([9u8; 32]))
        .env("KURA_EXTRACT_KEY", hex::encode(EXTRACT_KEY))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for ext in ["json", "csv", "html", "pdf"] {
        assert!(
            out_dir.join(format!("annual-FY{FY}.{ext}")).is_file(),
            "{ext}"
        );
    }
    let r: AnnualReport = serde_json::from_slice(
        &std::fs::read(out_dir.join(format!("annual-FY{FY}.json"))).unwrap(),
    )
    .unwrap();
    assert!(leaks(&r, &d, &[]).is_empty());
    let events = audit_rows(&fx.state.store, "report.annual").await;
    assert_eq!(events[0]["detail"]["via"], "cli");
    assert!(
        events[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("operator:")
    );
}
