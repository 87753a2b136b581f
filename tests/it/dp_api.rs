//! DP budgets through the API (control-plane half of issue 6): the ε ledger, cached
//! re-release, the dry run and `budget_exhausted`, against the test double of the data
//! plane in `support::plane` (fresh Laplace noise on every DP answer, a configurable delay).
//!
//! Each test attacks one guarantee: restarts and crashes must not lose a spend,
//! concurrent queries must not overspend, repeating a query must neither narrow the
//! answer nor charge twice, and a changed extract, ε or bound must not hit the cache.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use kura::policy::fiscal_year;
use kura::privacy::result::{DisclosureMode, DpBounds};
use kura::store::Store;
use kura::store::budget::LedgerState;

use crate::support::fixtures::{audit_key, full_form, today};
use crate::support::http::{H, Reply, call_router, code, error_fields};

const APP: &str = "A-DP";
const SQL: &str = "SELECT sex, count(DISTINCT pid) AS patients FROM patient GROUP BY sex";
/// A shape the DP preview refuses.
const UNSUPPORTED: &str = "SELECT min(age) DP_UNSUPPORTED FROM patient";

fn fy() -> i32 {
    fiscal_year(today())
}

fn renews() -> String {
    format!("{}-04-01", fy() + 1)
}

fn dpq(sql: &str, eps: f64) -> Value {
    json!({"application": APP, "sql": sql, "epsilon": eps})
}

async fn run(h: &H, t: &str, body: Value) -> (StatusCode, Value) {
    h.post("/api/v1/query", t, body).await
}

/// A DP query that must be answered.
async fn run_ok(h: &H, t: &str, body: Value) -> Value {
    run(h, t, body).await.expect_status(StatusCode::OK)
}

/// A dry run that must be answered.
async fn cost_ok(h: &H, t: &str, body: Value) -> Value {
    cost(h, t, body).await.expect_status(StatusCode::OK)
}

async fn cost(h: &H, t: &str, body: Value) -> (StatusCode, Value) {
    h.post("/api/v1/query/cost", t, body).await
}

async fn used(store: &Store) -> f64 {
    store.epsilon_spent(APP, fy()).await.unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// A query through `router` (the server after a restart).
async fn query_on(router: &axum::Router, t: &str, body: Value) -> (StatusCode, Value) {
    let (s, _, v) = call_router(
        router,
        Method::POST,
        "/api/v1/query",
        Some(t),
        Some(body),
        &[],
    )
    .await;
    (s, v)
}

#[tokio::test]
async fn a_dp_answer_carries_its_disclosure_and_the_budget_falls() {
    let (h, t) = H::with_login("researcher1").await;
    let v = run_ok(&h, &t, dpq(SQL, 0.25)).await;
    let d = &v["disclosure"];
    assert_eq!(d["mode"], "dp");
    assert_eq!(d["epsilon_spent"], json!(0.25));
    assert!(close(d["epsilon_remaining"].as_f64().unwrap(), 0.75), "{d}");
    assert_eq!(d["dp"]["cached"], json!(false));
    assert_eq!(d["dp"]["bounds"], json!(DpBounds::default()));
    assert!(d["dp"]["columns"][0]["noise_scale"].as_f64().unwrap() > 0.0);
    // The history row and the audit event carry ε, mechanism, bounds and scales.
    let hist = h.state.store.queries(Some(APP), None, 10).await.unwrap();
    assert_eq!(hist[0].epsilon_spent, Some(0.25));
    let ev = &h.audit_rows("query.run").await[0];
    assert_eq!(ev["reference"], v["query_id"]);
    let det = &ev["detail"];
    assert_eq!(det["cached"], json!(false));
    assert_eq!(det["extract_id"], "x_A-DP");
    assert!(det["release_key"].as_str().unwrap().starts_with("rk:"));
    assert_eq!(det["dp"]["mechanism"], "laplace");
    assert_eq!(det["dp"]["bounds"]["max_groups_per_patient"], 5);
    assert!(det["dp"]["release_threshold"].as_f64().unwrap() > 5.0);
    assert!(det["dp"]["columns"][0]["noise_scale"].as_f64().unwrap() > 0.0);
    // /me shows the budget with its fiscal year and renewal date.
    let (_, me) = h.get("/api/v1/me", &t).await;
    let a = me["applications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == APP)
        .unwrap()
        .clone();
    assert_eq!(a["epsilon_budget"], json!(1.0));
    assert!(close(a["epsilon_spent"].as_f64().unwrap(), 0.25));
    assert!(close(a["epsilon_remaining"].as_f64().unwrap(), 0.75));
    assert_eq!(a["fiscal_year"], json!(fy()));
    assert_eq!(a["renews_on"], json!(renews()));
    assert_eq!(a["dp_bounds"]["max_rows_per_group"], 3);
    let ledger = h.state.store.ledger(APP).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].state, LedgerState::Spent);
    assert_eq!(ledger[0].query_id, v["query_id"].as_str().unwrap());
    assert!(h.state.store.verify_audit().await.unwrap().ok);
}

#[tokio::test]
async fn budget_and_cache_survive_a_restart() {
    let (h, t) = H::with_login("researcher1").await;
    let first = run_ok(&h, &t, dpq(SQL, 0.4)).await;
    let (store, router) = h.restart().await;
    assert!(close(used(&store).await, 0.4));
    // The identical query after the restart is the stored answer, for free.
    let again = query_on(&router, &t, dpq(SQL, 0.4))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(again["rows"], first["rows"]);
    assert_eq!(again["disclosure"]["dp"]["cached"], json!(true));
    assert_eq!(again["disclosure"]["epsilon_spent"], json!(0.0));
    assert!(close(
        again["disclosure"]["epsilon_remaining"].as_f64().unwrap(),
        0.6
    ));
    assert_eq!(h.plane.dp_runs.load(Ordering::SeqCst), 1);
    // A new question after the restart still sees the old spend: 0.7 does not fit.
    query_on(&router, &t, dpq("SELECT count(*) FROM patient", 0.7))
        .await
        .expect_error(StatusCode::CONFLICT, "budget_exhausted");
    assert!(close(used(&store).await, 0.4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_queries_never_overspend() {
    let h = Arc::new(H::new().await);
    let t = h.login("researcher1").await;
    h.plane.dp_delay_ms.store(60, Ordering::SeqCst);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let h = h.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            // Distinct questions, so that none is served from the cache.
            let sql = format!("SELECT count(*) FROM patient WHERE birth_year > {i}");
            run(&h, &t, dpq(&sql, 0.3)).await
        }));
    }
    let mut ok = 0;
    let mut exhausted = 0;
    for task in tasks {
        let (s, v) = task.await.unwrap();
        match s {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => {
                assert_eq!(code(&v), "budget_exhausted", "{v}");
                exhausted += 1;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    // 3 × 0.3 = 0.9 fits a budget of 1.0; a fourth would not.
    assert_eq!((ok, exhausted), (3, 17));
    let ledger = h.state.store.ledger(APP).await.unwrap();
    assert_eq!(ledger.len(), 3, "refused queries leave no ledger row");
    assert!(ledger.iter().all(|e| e.state == LedgerState::Spent));
    let total: f64 = ledger.iter().map(|e| e.epsilon).sum();
    assert!(total <= 1.0 + 1e-9, "{total}");
    assert_eq!(h.plane.dp_runs.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn averaging_attack_gets_the_same_answer_and_pays_once() {
    let (h, t) = H::with_login("researcher1").await;
    let first = run_ok(&h, &t, dpq(SQL, 0.5)).await;
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..999 {
        // Whitespace differences are the same question once normalised.
        let sql = if i % 2 == 0 {
            SQL.to_string()
        } else {
            SQL.replace(' ', "  ")
        };
        let v = run_ok(&h, &t, dpq(&sql, 0.5)).await;
        assert_eq!(v["disclosure"]["dp"]["cached"], json!(true));
        assert_eq!(v["disclosure"]["epsilon_spent"], json!(0.0));
        seen.insert(v["rows"].to_string());
    }
    // Averaging 1,000 answers gives the first answer back, not the true count.
    assert_eq!(seen.len(), 1);
    assert!(seen.contains(&first["rows"].to_string()));
    assert_eq!(h.plane.dp_runs.load(Ordering::SeqCst), 1);
    assert!(close(used(&h.state.store).await, 0.5));
    assert_eq!(h.state.store.ledger(APP).await.unwrap().len(), 1);
    // Every re-release is audited with the query id that paid for it.
    let runs = kura::store::testing::raw_events(&mut h.raw().await, "query.run").await;
    let cached: Vec<_> = runs
        .iter()
        .filter(|e| e["detail"]["cached"] == json!(true))
        .collect();
    let paid_by_first = cached
        .iter()
        .filter(|e| e["detail"]["original_query_id"] == first["query_id"])
        .count();
    assert_eq!((cached.len(), paid_by_first), (999, 999));
}

#[tokio::test]
async fn exhausted_budget_names_what_is_left_and_when_it_renews() {
    let (h, t) = H::with_login("researcher1").await;
    for i in 0..3 {
        run_ok(
            &h,
            &t,
            dpq(
                &format!("SELECT count(*) FROM patient WHERE sex = '{i}'"),
                0.3,
            ),
        )
        .await;
    }
    let runs = h.plane.dp_runs.load(Ordering::SeqCst);
    let v = run(&h, &t, dpq(SQL, 0.2))
        .await
        .expect_error(StatusCode::CONFLICT, "budget_exhausted");
    let e = &v["error"];
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("ε=0.2"), "{msg}");
    assert!(msg.contains("0.100"), "{msg}");
    assert!(msg.contains(&renews()), "{msg}");
    assert!(msg.contains("予算"), "{msg}");
    assert!(close(
        e["budget"]["epsilon_remaining"].as_f64().unwrap(),
        0.1
    ));
    assert_eq!(e["budget"]["epsilon_requested"], json!(0.2));
    assert_eq!(e["budget"]["renews_on"], json!(renews()));
    assert_eq!(e["budget"]["fiscal_year"], json!(fy()));
    // Nothing reserved, nothing run; the refusal is in the history and the audit log.
    assert_eq!(h.state.store.ledger(APP).await.unwrap().len(), 3);
    assert_eq!(h.plane.dp_runs.load(Ordering::SeqCst), runs);
    assert!(close(used(&h.state.store).await, 0.9));
    let hist = h.state.store.queries(Some(APP), None, 1).await.unwrap();
    assert_eq!(hist[0].code.as_deref(), Some("budget_exhausted"));
    let ev = &h.audit_rows("query.run").await[0];
    assert_eq!(ev["code"], "budget_exhausted");
    // The dry run refuses the same way.
    cost(&h, &t, dpq(SQL, 0.2))
        .await
        .expect_error(StatusCode::CONFLICT, "budget_exhausted");
    // ε above the whole budget is a bad request naming the field.
    let v = run(&h, &t, dpq(SQL, 1.5))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(v["error"]["fields"][0]["field"], "epsilon");
}

#[tokio::test]
async fn a_reservation_left_by_a_crash_counts_as_spent() {
    let (h, t) = H::with_login("researcher1").await;
    {
        // The process died between reserve and commit: only the reservation exists.
        let mut raw = h.raw().await;
        sqlx::query(
            "INSERT INTO budget_ledger (query_id, application_id, fiscal_year, epsilon, state, reserved_at)
             VALUES ('q_crashed', $1, $2, 0.7, 'reserved', '2026-01-01T00:00:00.000000Z')",
        )
        .bind(APP)
        .bind(fy())
        .execute(&mut raw)
        .await
        .unwrap();
    }
    let (store, router) = h.restart().await;
    let ledger = store.ledger(APP).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].state, LedgerState::Spent);
    assert!(close(used(&store).await, 0.7));
    let evs = store
        .audit_events(&kura::store::AuditFilter {
            action: Some("budget.reservation_spent".into()),
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].event["detail"]["query_id"], "q_crashed");
    assert!(store.verify_audit().await.unwrap().ok);
    // The converted spend binds new queries; reopening again converts nothing twice.
    query_on(&router, &t, dpq(SQL, 0.4))
        .await
        .expect_error(StatusCode::CONFLICT, "budget_exhausted");
    store.close().await;
    let store = kura::store::testing::open(h.dir.path(), audit_key()).await;
    assert!(close(used(&store).await, 0.7));
    assert_eq!(store.ledger(APP).await.unwrap().len(), 1);
}

#[tokio::test]
async fn dry_run_prices_without_reserving_and_sees_the_cache() {
    let (h, t) = H::with_login("researcher1").await;
    let c = cost_ok(&h, &t, dpq(SQL, 0.5)).await;
    assert_eq!(c["application"], APP);
    assert_eq!(c["epsilon"], json!(0.5));
    assert_eq!(c["cost"], json!(0.5));
    assert_eq!(c["cached"], json!(false));
    assert!(close(c["epsilon_remaining"].as_f64().unwrap(), 1.0));
    assert!(close(c["epsilon_remaining_after"].as_f64().unwrap(), 0.5));
    assert_eq!(c["fiscal_year"], json!(fy()));
    assert_eq!(c["renews_on"], json!(renews()));
    assert_eq!(c["bounds"], json!(DpBounds::default()));
    assert_eq!(c["columns"][0]["aggregate"], "count_distinct_pid");
    assert!(c["release_threshold"].as_f64().unwrap() > 5.0);
    assert!(h.state.store.ledger(APP).await.unwrap().is_empty());
    assert_eq!(h.plane.dp_runs.load(Ordering::SeqCst), 0);
    assert_eq!(h.audit_rows("query.cost").await.len(), 1);
    assert!(
        h.state
            .store
            .queries(Some(APP), None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    run_ok(&h, &t, dpq(SQL, 0.5)).await;
    let c = cost_ok(&h, &t, dpq(SQL, 0.5)).await;
    assert_eq!(c["cached"], json!(true));
    assert_eq!(c["cost"], json!(0.0));
    assert!(close(c["epsilon_remaining"].as_f64().unwrap(), 0.5));
    assert!(close(c["epsilon_remaining_after"].as_f64().unwrap(), 0.5));

    // The same refusals as a query: unsupported shape, suppression approval, no ε.
    for (body, want) in [
        (dpq(UNSUPPORTED, 0.1), "unsupported_query"),
        (
            json!({"application": "A-1", "sql": SQL, "epsilon": 0.1}),
            "invalid_request",
        ),
        (json!({"application": APP, "sql": SQL}), "invalid_request"),
    ] {
        cost(&h, &t, body)
            .await
            .expect_error(StatusCode::BAD_REQUEST, want);
    }
    let r2 = h.login("researcher2").await;
    cost(&h, &r2, dpq(SQL, 0.1))
        .await
        .expect_error(StatusCode::FORBIDDEN, "not_named_user");
    let denied = h.denied_rows("query.cost").await;
    assert_eq!(denied.len(), 4);
    assert!(close(used(&h.state.store).await, 0.5));
}

#[tokio::test]
async fn rebuilt_extract_or_changed_parameters_miss_the_cache() {
    let (h, t) = H::with_login("researcher1").await;
    run_ok(&h, &t, dpq(SQL, 0.1)).await;
    // A different ε is a different release.
    let v = run_ok(&h, &t, dpq(SQL, 0.2)).await;
    assert_eq!(v["disclosure"]["dp"]["cached"], json!(false));
    // Different bounds are a different release.
    let mut b = dpq(SQL, 0.1);
    b["max_groups_per_patient"] = json!(2);
    let v = run_ok(&h, &t, b).await;
    assert_eq!(v["disclosure"]["dp"]["cached"], json!(false));
    assert_eq!(v["disclosure"]["dp"]["bounds"]["max_groups_per_patient"], 2);
    // A rebuilt extract is a new data version.
    h.plane.generation.store(1, Ordering::SeqCst);
    h.build(APP).await;
    let v = run_ok(&h, &t, dpq(SQL, 0.1)).await;
    assert_eq!(v["disclosure"]["dp"]["cached"], json!(false));
    assert_eq!(h.plane.dp_runs.load(Ordering::SeqCst), 4);
    assert!(close(used(&h.state.store).await, 0.5));
    // And the identical query on the rebuilt extract is cached again.
    let v = run_ok(&h, &t, dpq(SQL, 0.1)).await;
    assert_eq!(v["disclosure"]["dp"]["cached"], json!(true));
    assert_eq!(h.plane.dp_runs.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn refusals_before_reading_spend_nothing() {
    let (h, t) = H::with_login("researcher1").await;
    // The preview refuses: audited denial, nothing reserved, the plane never runs it.
    run(&h, &t, dpq(UNSUPPORTED, 0.3))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "unsupported_query");
    assert!(h.state.store.ledger(APP).await.unwrap().is_empty());
    assert_eq!(h.plane.dp_runs.load(Ordering::SeqCst), 0);
    // Bounds out of range are named.
    let mut b = dpq(SQL, 0.1);
    b["max_rows_per_group"] = json!(0);
    b["max_groups_per_patient"] = json!(DpBounds::MAX + 1);
    let v = run(&h, &t, b)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(
        error_fields(&v),
        vec!["max_groups_per_patient", "max_rows_per_group"]
    );
    assert!(h.state.store.ledger(APP).await.unwrap().is_empty());
    assert_eq!(used(&h.state.store).await, 0.0);
}

/// A DP query whose run fails on a hidden value (`FAIL_EXEC`: the plane fails after the
/// reservation, as an engine error on one patient's row would).
const PROBE: &str = "SELECT count(*) FROM patient FAIL_EXEC";

/// Attack (issue 11, item 8): asking a DP query whose answer-or-error class depends on a
/// hidden value, again and again. Each failed run spends its ε like an answer, says so,
/// and the probe stops at the budget like any other query.
#[tokio::test]
async fn attack_failing_dp_queries_spend_their_epsilon() {
    let (h, t) = H::with_login("researcher1").await;
    for i in 1..=3 {
        let v = run(&h, &t, dpq(PROBE, 0.3))
            .await
            .expect_error(StatusCode::INTERNAL_SERVER_ERROR, "execution_error");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("ε=0.3 is spent") && msg.contains("消費"),
            "{msg}"
        );
        assert!(!msg.contains("1987"), "a data value leaked: {msg}");
        assert!(close(used(&h.state.store).await, 0.3 * i as f64));
        let ev = &h.audit_rows("query.run").await[0];
        assert_eq!(ev["detail"]["epsilon_reservation"], "spent");
        assert_eq!(ev["reference"], v["error"]["ref"]);
    }
    let ledger = h.state.store.ledger(APP).await.unwrap();
    assert_eq!(ledger.len(), 3);
    assert!(ledger.iter().all(|e| e.state == LedgerState::Spent));
    // 0.9 of 1.0 is spent: the fourth probe is refused before it reads anything.
    run(&h, &t, dpq(PROBE, 0.3))
        .await
        .expect_error(StatusCode::CONFLICT, "budget_exhausted");
    assert_eq!(h.state.store.ledger(APP).await.unwrap().len(), 3);
    assert!(h.state.store.verify_audit().await.unwrap().ok);
}

/// Control of the attack above: with the old refund (a test-only ledger setting), the
/// same probe can be asked ten times, for 3.0 on a budget of 1.0, and costs nothing.
#[tokio::test]
async fn control_refunding_failed_runs_makes_the_probe_free() {
    let (h, _t) = H::with_login("researcher1").await;
    let mut gateway = h.state.gateway();
    gateway.ledger = gateway.ledger.refunding_after_read();
    let user = h.state.store.user("researcher1").await.unwrap().unwrap();
    let req: kura::query::QueryRequest = serde_json::from_value(dpq(PROBE, 0.3)).unwrap();
    for _ in 0..10 {
        let r = gateway.run(&user, &req, today()).await.unwrap_err();
        assert_eq!(r.cause.code(), "execution_error");
    }
    assert_eq!(used(&h.state.store).await, 0.0);
    let ledger = h.state.store.ledger(APP).await.unwrap();
    assert_eq!(ledger.len(), 10);
    assert!(ledger.iter().all(|e| e.state == LedgerState::Released));
}

/// A request dropped while its query runs (client gone, request timeout) never settles;
/// its reservation binds the budget at once and is spent, not refunded, after a restart.
#[tokio::test]
async fn a_dropped_request_keeps_its_reservation_spent() {
    let (h, _t) = H::with_login("researcher1").await;
    h.plane.dp_delay_ms.store(5_000, Ordering::SeqCst);
    let gateway = h.state.gateway();
    let user = h.state.store.user("researcher1").await.unwrap().unwrap();
    let req: kura::query::QueryRequest = serde_json::from_value(dpq(SQL, 0.4)).unwrap();
    let cut = std::time::Duration::from_millis(300);
    let dropped = tokio::time::timeout(cut, gateway.run(&user, &req, today())).await;
    assert!(dropped.is_err(), "the run was cut off");
    let ledger = h.state.store.ledger(APP).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].state, LedgerState::Reserved);
    assert!(close(used(&h.state.store).await, 0.4));
    let (store, _router) = h.restart().await;
    let ledger = store.ledger(APP).await.unwrap();
    assert_eq!(ledger[0].state, LedgerState::Spent);
    assert!(close(used(&store).await, 0.4));
}

/// The answer ran but its audit write failed: no answer, and its ε stays spent — bound at
/// once as a reservation, converted to spent when the store reopens, never given back.
#[tokio::test]
async fn a_failed_audit_write_releases_nothing_and_spends_the_epsilon() {
    let (h, t) = H::with_login("researcher1").await;
    let mut raw = h.break_audit_writes().await;
    let v = run(&h, &t, dpq(SQL, 0.3))
        .await
        .expect_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert!(
        v.get("rows").is_none(),
        "an answer escaped without audit: {v}"
    );
    assert_eq!(h.plane.dp_runs.load(Ordering::SeqCst), 1);
    let ledger = h.state.store.ledger(APP).await.unwrap();
    assert_eq!(ledger[0].state, LedgerState::Reserved);
    assert!(close(used(&h.state.store).await, 0.3));
    kura::store::testing::heal_audit_writes(&mut raw).await;
    drop(raw);
    let (store, _router) = h.restart().await;
    let ledger = store.ledger(APP).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].state, LedgerState::Spent);
    assert!(close(used(&store).await, 0.3));
}

#[tokio::test]
async fn bounds_come_from_the_request_else_the_approval_else_the_defaults() {
    let (h, t) = H::with_login("researcher1").await;
    run_ok(&h, &t, dpq(SQL, 0.1)).await;
    let last = |h: &H| h.plane.seen.lock().unwrap().last().unwrap().dp.unwrap();
    assert_eq!(last(&h).bounds, DpBounds::default());
    // The reviewer's default bounds on the approval.
    let mut a = h.state.store.application(APP).await.unwrap().unwrap();
    let mut approval = a.approval.clone().unwrap();
    approval.dp_bounds = Some(DpBounds {
        max_groups_per_patient: 2,
        max_rows_per_group: 1,
    });
    a.approval = Some(approval);
    {
        let mut raw = h.raw().await;
        sqlx::query("UPDATE applications SET approval = $1 WHERE id = $2")
            .bind(serde_json::to_string(a.approval.as_ref().unwrap()).unwrap())
            .bind(APP)
            .execute(&mut raw)
            .await
            .unwrap();
    }
    run_ok(&h, &t, dpq(SQL, 0.1)).await;
    assert_eq!(
        last(&h).bounds,
        DpBounds {
            max_groups_per_patient: 2,
            max_rows_per_group: 1
        }
    );
    let mut b = dpq(SQL, 0.1);
    b["max_rows_per_group"] = json!(4);
    run_ok(&h, &t, b).await;
    assert_eq!(
        last(&h).bounds,
        DpBounds {
            max_groups_per_patient: 2,
            max_rows_per_group: 4
        }
    );
    // Reviewer-side validation names the field.
    let mut errors = Vec::new();
    let b =
        kura::policy::approval::dp_bounds_from(DisclosureMode::Dp, Some(0), Some(2), &mut errors);
    assert!(b.is_none());
    assert_eq!(errors[0].field, "max_groups_per_patient");
    let mut errors = Vec::new();
    let b = kura::policy::approval::dp_bounds_from(DisclosureMode::Dp, None, Some(2), &mut errors);
    assert_eq!(
        b,
        Some(DpBounds {
            max_groups_per_patient: 5,
            max_rows_per_group: 2
        })
    );
    let mut errors = Vec::new();
    kura::policy::approval::dp_bounds_from(DisclosureMode::Suppression, Some(3), None, &mut errors);
    assert_eq!(errors[0].field, "max_groups_per_patient");
    // Approvals stored before DP bounds existed still load.
    let old = r#"{"term":{"start":"2026-04-01","end":"2027-03-31"},"scope":{"datasets":["als"]},"mode":"dp","k":5,"epsilon_budget":1.0,"approved_by":"r","approved_at":"2026-04-01T00:00:00Z"}"#;
    let a: kura::store::model::Approval = serde_json::from_str(old).unwrap();
    assert_eq!(a.dp_bounds, None);
}

#[tokio::test]
async fn reviewers_set_default_bounds_on_a_dp_approval() {
    let (h, r1) = H::with_login("researcher1").await;
    let rev = h.login("reviewer1").await;
    let form = serde_json::to_value(full_form(&["researcher1"])).unwrap();
    let app = h
        .post("/api/v1/applications", &r1, form)
        .await
        .expect_status(StatusCode::CREATED);
    let id = app["id"].as_str().unwrap().to_string();
    h.post_empty(&format!("/api/v1/applications/{id}/submit"), &r1)
        .await
        .expect_status(StatusCode::OK);
    let decide = |extra: Value| {
        let mut b = json!({"decision": "approve", "mode": "dp", "epsilon_budget": 2.0});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let path = format!("/api/v1/applications/{id}/decision");
    let out_of_range = json!({"max_groups_per_patient": 0, "max_rows_per_group": 1001});
    let v = h
        .post(&path, &rev, decide(out_of_range))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_application");
    assert_eq!(
        error_fields(&v),
        vec!["max_groups_per_patient", "max_rows_per_group"]
    );
    let v = h
        .post(&path, &rev, decide(json!({"max_groups_per_patient": 2})))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        v["approval"]["dp_bounds"],
        json!({"max_groups_per_patient": 2, "max_rows_per_group": 3})
    );
    // The named user's queries use them unless the request overrides them.
    h.post_empty(&format!("/api/v1/applications/{id}/pledge"), &r1)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    let c = cost_ok(
        &h,
        &r1,
        json!({"application": id, "sql": SQL, "epsilon": 0.5}),
    )
    .await;
    assert_eq!(
        c["bounds"],
        json!({"max_groups_per_patient": 2, "max_rows_per_group": 3})
    );
    assert!(close(c["epsilon_remaining"].as_f64().unwrap(), 2.0));
}
