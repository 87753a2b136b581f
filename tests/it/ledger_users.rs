//! Differencing across the researchers of one application (issue 11, item 1): the release
//! ledger belongs to the application's extract, not to a user. researcher1 is released a
//! count that leaves out 1–4 patients; researcher2, named on the same application, then
//! asks for the total. Each number passes k = 5 on its own; their difference is the small
//! group, so the total is suppressed for `differencing`. Control: the same question by
//! researcher2 without researcher1's earlier answer (a fresh server over the same data) is
//! released, so it is the shared ledger that closes the channel.
//!
//! The same across two applications over the same patients (each with its own extract,
//! pseudonyms and patient numbering): researcher1's answer in one application and
//! researcher2's total in the other are compared through the extracts' ledger pids.
//!
//! Everything runs over the real router, store and engine plane.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde_json::{Value, json};

use kura::catalog::Catalog;
use kura::config::HttpSettings;
use kura::engine::Limits;
use kura::http::{AppState, app};
use kura::policy::Policy;
use kura::query::engine_plane::EnginePlane;

use crate::support::SourceData;
use crate::support::fixtures::{self, Approved, USERS};
use crate::support::http::{router_login, router_post};
use crate::support::server::live_extract;

const APP: &str = "A-TWO";
/// A second application over the same scope, naming researcher2 only.
const OTHER: &str = "A-OTHER";

struct Fx {
    dir: tempfile::TempDir,
    router: Router,
}

/// A server over a generated registry with one suppression application naming (and
/// pledged by) researcher1 and researcher2.
async fn fixture() -> Fx {
    fixture_with(false).await
}

/// [`fixture`], and with `other` a second application ([`OTHER`], researcher2 only) over
/// the same scope, its extract built too.
async fn fixture_with(other: bool) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::embedded().unwrap());
    SourceData::generate(1500, 20261207).write(&dir.path().join("data"), &catalog);
    let names: Vec<&str> = USERS.iter().map(|u| u.0).collect();
    let store = fixtures::store_with_users(dir.path(), &names).await;
    let mut two = fixtures::approved_applications()[0].clone_as(APP);
    two.named = &["researcher1", "researcher2"];
    two.pledged = &["researcher1", "researcher2"];
    fixtures::approve(&store, &two).await;
    let mut second = fixtures::approved_applications()[0].clone_as(OTHER);
    second.named = &["researcher2"];
    second.pledged = &["researcher2"];
    if other {
        fixtures::approve(&store, &second).await;
    }
    let plane = EnginePlane::open(
        dir.path().join("data"),
        dir.path().join("extracts"),
        &[7; 32],
        catalog.clone(),
        Limits::default(),
    )
    .await
    .unwrap();
    let state = AppState {
        policy: Arc::new(Policy::load(&store).await.unwrap()),
        store,
        data: Arc::new(plane),
        catalog,
        settings: Arc::new(HttpSettings::default()),
        admission: Arc::new(kura::query::admission::Admission::new(64)),
        login_rate: Arc::default(),
    };
    // The extracts are built as the approval builds them.
    for id in [APP, OTHER].into_iter().take(if other { 2 } else { 1 }) {
        let approved = state.store.application(id).await.unwrap().unwrap();
        let scope = approved.approval.unwrap().scope;
        kura::http::applications::build_extract(&state, id, &scope, "reviewer1")
            .await
            .unwrap();
    }
    Fx {
        dir,
        router: app(state),
    }
}

impl Fx {
    async fn login(&self, user: &str) -> String {
        router_login(&self.router, user).await
    }

    async fn query(&self, token: &str, sql: &str) -> Value {
        self.query_in(APP, token, sql).await
    }

    async fn query_in(&self, application: &str, token: &str, sql: &str) -> Value {
        let body = json!({"application": application, "sql": sql});
        let (s, v) = router_post(&self.router, "/api/v1/query", Some(token), body).await;
        assert_eq!(s, StatusCode::OK, "{sql}: {v}");
        v
    }

    /// researcher1, in [`APP`], is released the count of every patient but those born in
    /// a year held by 1–4 of them (after a warm-up that builds nothing of it); returns the
    /// SQL and the count.
    async fn count_leaving_out_a_rare_year(&self) -> (String, i64) {
        let r1 = self.login("researcher1").await;
        self.query(&r1, WARM_UP).await;
        let year = self.rare_birth_year().await;
        let sql = format!("SELECT count(*) AS n FROM patient WHERE birth_year <> {year}");
        let but = self.query(&r1, &sql).await;
        let n = but["rows"][0][0].as_i64().expect("released on its own");
        assert!(n > 100, "{but}");
        (sql, n)
    }

    /// A birth year held by 1–4 patients of the application's extract (read from its
    /// Parquet: the test knows the data; an attacker would try years in turn).
    async fn rare_birth_year(&self) -> i64 {
        let extract = live_extract(self.dir.path(), APP);
        let ctx = SessionContext::new();
        let file = extract.join("patient.parquet");
        ctx.register_parquet("p", file.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
        let batches = ctx
            .sql("SELECT CAST(birth_year AS BIGINT) AS y FROM p GROUP BY birth_year HAVING count(*) BETWEEN 1 AND 4 ORDER BY y LIMIT 1")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .expect("a rare birth year exists in the extract")
            .value(0)
    }
}

const TOTAL: &str = "SELECT count(*) AS n FROM patient";
/// Builds the extract without touching the total's set (two groups, both large).
const WARM_UP: &str = "SELECT sex, count(*) AS n FROM patient GROUP BY sex";

#[tokio::test(flavor = "multi_thread")]
async fn attack_two_researchers_of_one_application_difference_their_answers() {
    let fx = fixture().await;
    let r2 = fx.login("researcher2").await;
    let (but, n) = fx.count_leaving_out_a_rare_year().await;
    let total = fx.query(&r2, TOTAL).await;
    assert_eq!(total["rows"][0][0], Value::Null, "{total}");
    assert_eq!(
        total["disclosure"]["differencing"],
        json!([[0, 0]]),
        "{total}"
    );
    // researcher1's own answer is unchanged when asked again by researcher2: the same cell.
    let again = fx.query(&r2, &but).await;
    assert_eq!(again["rows"][0][0].as_i64(), Some(n));
}

#[tokio::test(flavor = "multi_thread")]
async fn control_without_the_first_answer_the_total_is_released() {
    let fx = fixture().await;
    let r1 = fx.login("researcher1").await;
    let r2 = fx.login("researcher2").await;
    fx.query(&r1, WARM_UP).await;
    let total = fx.query(&r2, TOTAL).await;
    let n = total["rows"][0][0].as_i64().expect("released");
    assert!(n > 100, "{total}");
    let differencing = total["disclosure"]["differencing"].as_array();
    assert!(differencing.is_none_or(|d| d.is_empty()), "{total}");
}

/// researcher1's answer in one application, researcher2's total in another over the same
/// patients: the total is suppressed, though the two applications' extracts share no
/// pseudonym and number their patients independently.
#[tokio::test(flavor = "multi_thread")]
async fn attack_two_applications_over_the_same_patients_difference_their_answers() {
    let fx = fixture_with(true).await;
    let r2 = fx.login("researcher2").await;
    let (but, n) = fx.count_leaving_out_a_rare_year().await;
    let total = fx.query_in(OTHER, &r2, TOTAL).await;
    assert_eq!(total["rows"][0][0], Value::Null, "{total}");
    assert_eq!(
        total["disclosure"]["differencing"],
        json!([[0, 0]]),
        "{total}"
    );
    // The same small-group-free question in the other application is still answered,
    // with the same number (the sets are the same patients: no difference, no harm).
    let same = fx.query_in(OTHER, &r2, &but).await;
    assert_eq!(same["rows"][0][0].as_i64(), Some(n), "{same}");
}

/// Control: with two applications but no earlier answer in the first, the second
/// application's total is released; so the cross-application ledger is what closes the
/// channel above.
#[tokio::test(flavor = "multi_thread")]
async fn control_two_applications_without_the_first_answer_release_the_total() {
    let fx = fixture_with(true).await;
    let r1 = fx.login("researcher1").await;
    let r2 = fx.login("researcher2").await;
    fx.query(&r1, WARM_UP).await;
    let total = fx.query_in(OTHER, &r2, TOTAL).await;
    let n = total["rows"][0][0].as_i64().expect("released");
    assert!(n > 100, "{total}");
    let differencing = total["disclosure"]["differencing"].as_array();
    assert!(differencing.is_none_or(|d| d.is_empty()), "{total}");
    // The two extracts really are apart: no pid of one appears in the other.
    let pids = |app: &str| {
        let text =
            std::fs::read_to_string(live_extract(fx.dir.path(), app).join("patient_index.txt"))
                .unwrap();
        text.lines()
            .map(str::to_string)
            .collect::<std::collections::HashSet<_>>()
    };
    let (a, b) = (pids(APP), pids(OTHER));
    assert_eq!(a.len(), b.len());
    assert!(a.is_disjoint(&b), "the two extracts share pseudonyms");
}

impl Approved {
    /// The same approval under another application id.
    fn clone_as(&self, id: &'static str) -> Approved {
        Approved {
            id,
            named: self.named,
            term: self.term,
            mode: self.mode,
            epsilon_budget: self.epsilon_budget,
            pledged: self.pledged,
        }
    }
}
