//! Medical institutions (issue 16 §2, seed 001 item 8): a facility account sees its own
//! patients' records and nothing of another facility's, in any table and by any query,
//! and its feedback report puts its own figures beside national ones that cannot be
//! subtracted down to another facility's small cell.
//!
//! The registry is the source fixture plus planted patients at facilities FA, FB, FC and
//! FD; markers (diseases 49 and 97, product P04, the term 腫瘍形成, tracheostomy) are
//! written only at other facilities, including by a patient (S) who also has rows at FA.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::prelude::SessionContext;
use serde_json::{Value, json};

use kura::catalog::Catalog;
use kura::config::HttpSettings;
use kura::engine::session::{empty_session, register_table};
use kura::engine::{Limits, collect_limited, open_extract};
use kura::policy::facility::facility_scope;
use kura::privacy::{Defences, DisclosureRules};
use kura::query::engine_plane::EnginePlane;
use kura::report::feedback::{RawFigure, build, national_cell};
use kura::store::model::{NewUser, Role};

use crate::support::fixtures::{self, password_hash};
use crate::support::http::{Reply, call_router, router_login, router_post};
use crate::support::{SourceData, V, date};

fn limits() -> Limits {
    Limits {
        memory_bytes: 256 << 20,
        timeout: Duration::from_secs(60),
        max_rows: 100_000,
    }
}

fn pid(tag: &str, i: usize) -> String {
    format!("{tag:0<30}{i:02}")
}

fn survey(pid: &str, disease: i64, facility: &str) -> Vec<V> {
    vec![
        V::s(pid),
        V::Int(2022),
        V::Int(disease),
        V::s("new"),
        V::s("13"),
        V::s("60-64"),
        V::Int(2015),
        V::s("55-59"),
        V::Int(3),
        V::Float(1.0),
        V::Float(4.0),
        V::Float(90.0),
        V::Float(40.0),
        V::s(facility),
    ]
}

fn visit(pid: &str, day: i32, facility: &str) -> Vec<V> {
    vec![
        V::s(pid),
        V::Date(day),
        V::Int(2022),
        V::Float(12.0),
        V::Int(40),
        V::Float(80.0),
        V::s(facility),
    ]
}

fn event(pid: &str, kind: &str, facility: &str) -> Vec<V> {
    vec![
        V::s(pid),
        V::s(kind),
        V::Date(date(2023, 1, 10)),
        V::Int(2022),
        V::Float(20.0),
        V::s(facility),
    ]
}

fn treatment(pid: &str, product: &str, maker: &str, facility: &str) -> Vec<V> {
    vec![
        V::s(pid),
        V::s(product),
        V::s(maker),
        V::s(facility),
        V::Date(date(2022, 6, 1)),
        V::Int(2022),
        V::s("50-54"),
    ]
}

fn adverse(pid: &str, product: &str, maker: &str, term: &str, facility: &str) -> Vec<V> {
    vec![
        V::s(pid),
        V::s(product),
        V::s(maker),
        V::s(term),
        V::Bool(true),
        V::s("recovered"),
        V::Date(date(2022, 7, 1)),
        V::Int(2022),
        V::s(facility),
    ]
}

/// The fixture registry with the planted facilities.
fn planted() -> SourceData {
    let mut d = SourceData::generate(300, 5);
    for (no, ja, en) in [
        (3, "脊髄性筋萎縮症", "Spinal muscular atrophy"),
        (5, "進行性核上性麻痺", "Progressive supranuclear palsy"),
        (8, "ハンチントン病", "Huntington's disease"),
    ] {
        d.push(
            "disease",
            vec![V::Int(no), V::s(ja), V::s(en), V::s("神経・筋")],
        );
    }
    let patient = |d: &mut SourceData, p: &str| d.push_patient(p, "F", 1960, "13");
    // Disease 8: seven patients at FA, one each at FB, FC, FD (three others: a small
    // cell the national figure must not reveal by subtraction).
    for i in 0..7 {
        let p = pid("a8", i);
        patient(&mut d, &p);
        d.push("nanbyo_survey", survey(&p, 8, "FA"));
    }
    for (i, f) in ["FB", "FC", "FD"].iter().enumerate() {
        let p = pid("o8", i);
        patient(&mut d, &p);
        d.push("nanbyo_survey", survey(&p, 8, f));
    }
    // Disease 5: two at FA, six elsewhere at three facilities (releasable).
    for i in 0..2 {
        let p = pid("a5", i);
        patient(&mut d, &p);
        d.push("nanbyo_survey", survey(&p, 5, "FA"));
    }
    for i in 0..6 {
        let p = pid("o5", i);
        patient(&mut d, &p);
        d.push("nanbyo_survey", survey(&p, 5, ["FB", "FC", "FD"][i % 3]));
    }
    // Disease 3: two elsewhere only (under k nationally).
    for i in 0..2 {
        let p = pid("o3", i);
        patient(&mut d, &p);
        d.push("nanbyo_survey", survey(&p, 3, "FB"));
    }
    // S: certified at FA, followed at FB after a transfer.
    let s = pid("s", 0);
    patient(&mut d, &s);
    d.push("nanbyo_survey", survey(&s, 2, "FA"));
    d.push("nanbyo_survey", survey(&s, 49, "FB"));
    d.push("als_visit", visit(&s, date(2022, 5, 1), "FA"));
    d.push("als_visit", visit(&s, date(2022, 9, 1), "FB"));
    d.push("als_event", event(&s, "niv", "FA"));
    d.push("als_event", event(&s, "tracheostomy", "FB"));
    // R: treated at FA, also treated (with another maker's product) at FB.
    let r = pid("r", 0);
    patient(&mut d, &r);
    d.push("regen_treatment", treatment(&r, "P01", "M01", "FA"));
    d.push("adverse_event", adverse(&r, "P01", "M01", "発熱", "FA"));
    d.push("regen_treatment", treatment(&r, "P04", "M03", "FB"));
    d.push("adverse_event", adverse(&r, "P04", "M03", "腫瘍形成", "FB"));
    // Q: patients of FB only, with a disease and a product nobody at FA has.
    for i in 0..6 {
        let q = pid("q", i);
        patient(&mut d, &q);
        d.push("nanbyo_survey", survey(&q, 97, "FB"));
        d.push("regen_treatment", treatment(&q, "P04", "M03", "FB"));
        d.push("adverse_event", adverse(&q, "P04", "M03", "腫瘍形成", "FB"));
    }
    d
}

const KEY: &[u8] = b"application-F-key-0123456789abcd";

async fn count(ctx: &SessionContext, sql: &str) -> i64 {
    let plan = ctx.state().create_logical_plan(sql).await.unwrap();
    let b = collect_limited(ctx, plan, &limits())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    b[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// Every way a query could reach another facility's rows, as a count that is zero on
/// the facility's extract. Joins, subqueries, UNION, reference tables, every table.
const ATTACKS: &[&str] = &[
    "SELECT count(*) FROM nanbyo_survey WHERE facility_id IS DISTINCT FROM 'FA'",
    "SELECT count(*) FROM als_visit WHERE facility_id IS DISTINCT FROM 'FA'",
    "SELECT count(*) FROM als_event WHERE facility_id IS DISTINCT FROM 'FA'",
    "SELECT count(*) FROM regen_treatment WHERE facility_id IS DISTINCT FROM 'FA'",
    "SELECT count(*) FROM adverse_event WHERE facility_id IS DISTINCT FROM 'FA'",
    "SELECT count(*) FROM nanbyo_survey WHERE disease_no IN (49, 97)",
    "SELECT count(*) FROM patient p JOIN nanbyo_survey n ON p.pid = n.pid WHERE n.disease_no = 49",
    "SELECT count(*) FROM (SELECT pid, facility_id FROM als_visit UNION ALL SELECT pid, facility_id FROM als_event) u WHERE u.facility_id = 'FB'",
    "SELECT count(*) FROM als_event WHERE event_type = 'tracheostomy'",
    "SELECT count(*) FROM regen_treatment r JOIN product p ON p.product_code = r.product_code WHERE p.manufacturer_code = 'M03'",
    "SELECT count(*) FROM adverse_event WHERE event_term = '腫瘍形成'",
    "SELECT count(*) FROM patient WHERE pid IN (SELECT pid FROM regen_treatment WHERE product_code = 'P04')",
    "SELECT count(*) FROM nanbyo_survey n WHERE EXISTS (SELECT 1 FROM adverse_event a WHERE a.pid = n.pid AND a.facility_id <> 'FA')",
    "SELECT count(*) FROM disease d JOIN nanbyo_survey n ON n.disease_no = d.disease_no WHERE d.disease_no = 97",
];

/// Attack: a facility reads another facility's rows — of other patients, or of its own
/// patient written elsewhere — through any table and any query shape. Control: the same
/// queries over the unscoped registry find those rows.
#[tokio::test]
async fn a_facility_extract_holds_only_rows_written_at_the_facility() {
    let data = planted();
    let dir = tempfile::tempdir().unwrap();
    let cat = Catalog::embedded().unwrap();
    let source = dir.path().join("source");
    data.write(&source, &cat);
    let out = dir.path().join("FAC-FA");
    kura::sql::extract::build_extract(&source, &out, &facility_scope("FA"), KEY, &cat)
        .await
        .unwrap();
    let ctx = open_extract(&out, &cat, &limits()).unwrap();
    let raw = empty_session(&limits()).unwrap();
    for t in &cat.tables {
        register_table(&raw, &source, &t.name, &cat).unwrap();
    }
    for q in ATTACKS {
        assert_eq!(count(&ctx, q).await, 0, "extract: {q}");
        assert!(count(&raw, q).await > 0, "control on the registry: {q}");
    }
    // Own patients: seven + two + S + R, with every row they have at FA.
    let own = 7 + 2 + 2;
    assert_eq!(
        count(&ctx, "SELECT count(DISTINCT pid) FROM patient").await,
        own
    );
    assert_eq!(count(&ctx, "SELECT count(*) FROM nanbyo_survey").await, 10);
    assert_eq!(count(&ctx, "SELECT count(*) FROM als_visit").await, 1);
    assert_eq!(count(&ctx, "SELECT count(*) FROM als_event").await, 1);
    assert_eq!(count(&ctx, "SELECT count(*) FROM regen_treatment").await, 1);
    assert_eq!(count(&ctx, "SELECT count(*) FROM adverse_event").await, 1);
    // The self-registration registry is not a facility's: the table does not exist.
    let plan = ctx
        .state()
        .create_logical_plan("SELECT count(*) FROM jasmin_registrant")
        .await;
    assert!(
        plan.is_err(),
        "jasmin_registrant must not be in a facility extract"
    );
}

/// The disclosure rule of the feedback report: national − own must not show another
/// facility's small cell. Control: with the differencing defence off, the national
/// figure of disease 8 is released and 10 − 7 = 3 reveals FB, FC and FD's patients.
#[tokio::test]
async fn the_feedback_report_suppresses_national_cells_that_subtract_to_a_small_cell() {
    let data = planted();
    let dir = tempfile::tempdir().unwrap();
    let cat = Catalog::embedded().unwrap();
    let source = dir.path().join("source");
    data.write(&source, &cat);
    let raw = kura::query::feedback::facility_figures(&source, &cat, &limits(), "FA")
        .await
        .unwrap();
    let disease = |figs: &[RawFigure], k: &str| {
        figs.iter()
            .find(|f| f.measure == "cases_by_disease" && f.key == k)
            .cloned()
            .unwrap()
    };
    let d8 = disease(&raw, "8");
    assert_eq!((d8.national, d8.own, d8.others), (10, 7, 3));
    let rules = DisclosureRules::embedded().unwrap();
    let report = build("FA", &raw, &rules);
    let row = |r: &kura::report::feedback::FeedbackReport, k: &str| {
        r.sections
            .iter()
            .find(|s| s.measure == "cases_by_disease")
            .unwrap()
            .rows
            .iter()
            .find(|x| x.key == k)
            .cloned()
            .unwrap()
    };
    assert_eq!(row(&report, "8").own, 7);
    assert_eq!(row(&report, "8").national, None, "10 − 7 would show 3");
    assert_eq!(row(&report, "5").national, Some(8));
    assert_eq!(row(&report, "5").own, 2);
    assert_eq!(row(&report, "3").national, None, "under k nationally");
    // Every disease of the reference table has a row (the rows do not depend on data).
    let keys: BTreeSet<String> = report.sections[0]
        .rows
        .iter()
        .map(|r| r.key.clone())
        .collect();
    for k in ["1", "2", "3", "5", "6", "8", "49", "97"] {
        assert!(keys.contains(k), "{k}");
    }
    // Control: without the defence, the subtraction works.
    let off = rules.with_defences(Defences {
        differencing: false,
        ..Defences::ALL
    });
    let leaky = build("FA", &raw, &off);
    let national = row(&leaky, "8").national.unwrap();
    assert_eq!(
        national - row(&leaky, "8").own,
        3,
        "the attack needs the defence off"
    );
    assert_eq!(national_cell(&d8, &off.effective(["nanbyo"])), Some(10));
}

/// The application state over the real data plane and the planted registry.
async fn real_state(dir: &Path) -> kura::http::AppState {
    let cat = Arc::new(Catalog::embedded().unwrap());
    let registry = dir.join("registry");
    planted().write(&registry, &cat);
    let store = fixtures::store_with_users(dir, &["researcher1", "pms1"]).await;
    for (name, code) in [
        ("fac_a", Some("FA")),
        ("fac_b", Some("FB")),
        ("fac_none", None),
    ] {
        let user = NewUser {
            username: name.into(),
            password_hash: password_hash().into(),
            roles: vec![Role::Facility],
            manufacturer: None,
            display_name: name.into(),
            affiliation: "Hospital".into(),
            title: String::new(),
        };
        store.create_user(&user, "test").await.unwrap();
        if let Some(c) = code {
            store.set_facility(name, Some(c), "test").await.unwrap();
        }
    }
    let plane = EnginePlane::open(
        registry,
        dir.join("extracts"),
        &[7u8; 32],
        cat.clone(),
        limits(),
    )
    .await
    .unwrap();
    let policy = Arc::new(kura::policy::Policy::load(&store).await.unwrap());
    let st = kura::http::AppState {
        store,
        policy,
        data: Arc::new(plane),
        catalog: cat,
        settings: Arc::new(HttpSettings::default()),
        admission: Arc::new(kura::query::admission::Admission::new(64)),
        login_rate: Arc::default(),
    };
    for code in ["FA", "FB"] {
        let id = format!("FAC-{code}");
        kura::http::applications::build_extract(&st, &id, &facility_scope(code), "test")
            .await
            .unwrap();
    }
    st
}

async fn login(router: &axum::Router, user: &str) -> String {
    router_login(router, user).await
}

async fn get(router: &axum::Router, path: &str, token: &str) -> (StatusCode, Value) {
    let (s, _, v) = call_router(
        router,
        axum::http::Method::GET,
        path,
        Some(token),
        None,
        &[],
    )
    .await;
    (s, v)
}

async fn query(router: &axum::Router, token: &str, app: &str, sql: &str) -> (StatusCode, Value) {
    let body = json!({"application": app, "sql": sql});
    router_post(router, "/api/v1/query", Some(token), body).await
}

/// Over the API: a facility account reaches its own standing scope only — not another
/// facility's, not a PMS scope, not an application — sees the facility tables in its
/// catalogue, queries under the usual disclosure rules, and reads its feedback report;
/// other roles cannot read a facility report; an unbound facility account has no scope.
#[tokio::test]
async fn a_facility_account_reaches_its_own_scope_only() {
    let dir = tempfile::tempdir().unwrap();
    let st = real_state(dir.path()).await;
    let router = kura::http::app(st.clone());
    let a = login(&router, "fac_a").await;
    let me = get(&router, "/api/v1/me", &a)
        .await
        .expect_status(StatusCode::OK);
    let ids: Vec<&str> = me["applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["FAC-FA"]);
    let sql = "SELECT disease_no, count(DISTINCT pid) AS n FROM nanbyo_survey GROUP BY disease_no";
    let v = query(&router, &a, "FAC-FA", sql)
        .await
        .expect_status(StatusCode::OK);
    let n_of = |v: &Value, d: i64| {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] == d)
            .map(|r| r[1].clone())
    };
    assert_eq!(n_of(&v, 8), Some(json!(7)));
    assert_eq!(
        n_of(&v, 5).unwrap_or(Value::Null),
        Value::Null,
        "2 patients: suppressed"
    );
    for other in ["FAC-FB", "PMS-M01", "A-1", "FAC-FA'--"] {
        query(&router, &a, other, sql)
            .await
            .expect_error(StatusCode::FORBIDDEN, "forbidden");
    }
    let c = get(&router, "/api/v1/catalog?application=FAC-FA", &a)
        .await
        .expect_status(StatusCode::OK);
    let tables: BTreeSet<&str> = c["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(tables.contains("adverse_event") && tables.contains("patient"));
    assert!(!tables.contains("jasmin_registrant"));
    let r = get(&router, "/api/v1/facility/report", &a)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(r["facility"], "FA");
    let disease = r["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["measure"] == "cases_by_disease")
        .unwrap();
    let d8 = disease["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["key"] == "8")
        .unwrap();
    assert_eq!(
        (d8["own"].clone(), d8["national"].clone()),
        (json!(7), Value::Null)
    );
    let audit = crate::support::http::audit_rows(&st.store, "report.facility").await;
    assert_eq!(audit.len(), 1);
    // Other roles, and facility accounts without a binding, get no facility data.
    let r1 = login(&router, "researcher1").await;
    get(&router, "/api/v1/facility/report", &r1)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let none = login(&router, "fac_none").await;
    let me = get(&router, "/api/v1/me", &none)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(me["applications"], json!([]));
    get(&router, "/api/v1/facility/report", &none)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    query(&router, &none, "FAC-FA", sql)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    // A PMS team cannot use a facility scope either.
    let pms = login(&router, "pms1").await;
    query(&router, &pms, "FAC-FA", sql)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
}
