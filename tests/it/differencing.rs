//! Secondary suppression against differencing (issue 11, items 1–4 and 7): every attack
//! pairs two released numbers whose patients differ by 1–4 (prefecture 47 holds 3
//! patients, p58–p60, in the fixture), each number passing k = 5 on its own. Each attack
//! has a control that runs it with `Defences::differencing` off and shows the small group
//! by subtraction. Cross-query attacks use an in-memory release ledger here; the real
//! binary's ledger (SQLite, kill -9 between two queries) is tested in `ledger_e2e.rs`.

use std::sync::Mutex;

use futures::future::BoxFuture;
use kura::engine::Limits;
use kura::privacy::ledger::{LedgerView, ranges};
use kura::privacy::{Defences, DisclosureRules};
use kura::query::{QueryError, QueryOutcome, run_query_with};
use roaring::RoaringBitmap;
use serde_json::{Value, json};

use crate::qc_fixture::registry;

/// A release ledger in memory: what an application was released so far.
#[derive(Debug, Default)]
pub struct MemoryLedger(Mutex<Vec<RoaringBitmap>>);

impl MemoryLedger {
    pub fn record(&self, o: &QueryOutcome) {
        self.0
            .lock()
            .unwrap()
            .extend(o.released_sets.iter().cloned());
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

impl LedgerView for MemoryLedger {
    fn near<'a>(
        &'a self,
        sizes: &'a [u64],
        k: u32,
    ) -> BoxFuture<'a, Result<Vec<RoaringBitmap>, QueryError>> {
        let windows = ranges(sizes, k);
        let sets = self.0.lock().unwrap().clone();
        Box::pin(async move {
            Ok(sets
                .into_iter()
                .filter(|s| {
                    windows
                        .iter()
                        .any(|(lo, hi)| (*lo..=*hi).contains(&s.len()))
                })
                .collect())
        })
    }
}

fn rules(differencing: bool) -> DisclosureRules {
    DisclosureRules::embedded()
        .unwrap()
        .with_defences(Defences {
            differencing,
            ..Defences::ALL
        })
}

/// One query over the fixture against `ledger`, recording what it releases.
async fn ask(sql: &str, ledger: &MemoryLedger, differencing: bool) -> QueryOutcome {
    let (ctx, catalog) = registry();
    let o = run_query_with(
        &ctx,
        sql,
        &catalog,
        &rules(differencing),
        &Limits::default(),
        ledger,
    )
    .await
    .unwrap_or_else(|e| panic!("{sql}: {}: {}", e.code(), e.internal_detail()));
    ledger.record(&o);
    o
}

/// The public message of a refused query.
async fn refuse(sql: &str, ledger: &MemoryLedger) -> String {
    let (ctx, catalog) = registry();
    match run_query_with(
        &ctx,
        sql,
        &catalog,
        &rules(true),
        &Limits::default(),
        ledger,
    )
    .await
    {
        Ok(o) => panic!("{sql}: answered {:?}", o.result.rows),
        Err(e) => {
            assert_eq!(e.code(), "unsupported_query", "{sql}");
            e.public_message()
        }
    }
}

async fn once(sql: &str, differencing: bool) -> QueryOutcome {
    ask(sql, &MemoryLedger::default(), differencing).await
}

fn cells(o: &QueryOutcome) -> Vec<Value> {
    o.result.rows.iter().flatten().cloned().collect()
}

const ALL: &str = "SELECT count(*) AS n FROM patient";
const BUT_47: &str = "SELECT count(*) AS n FROM patient WHERE prefecture_code <> '47'";

#[tokio::test]
async fn attack_complement_in_one_answer() {
    let sql =
        "SELECT count(*) AS a, count(*) FILTER (WHERE prefecture_code <> '47') AS b FROM patient";
    let o = once(sql, true).await;
    // The margin (the larger set) goes; the cell it totals stays.
    assert_eq!(cells(&o), vec![Value::Null, json!(57)]);
    assert_eq!(o.result.disclosure.differencing, vec![[0, 0]]);
    assert_eq!(o.result.disclosure.suppressed, vec![[0, 0]]);
    assert_eq!(o.released_sets.len(), 1, "only the released cell's set");
    // Control: without the defence both are released and 60 − 57 = 3 patients.
    let c = once(sql, false).await;
    assert_eq!(cells(&c), vec![json!(60), json!(57)]);
}

#[tokio::test]
async fn attack_difference_computed_in_the_query() {
    let sql = "SELECT count(*) - count(*) FILTER (WHERE prefecture_code <> '47') AS d FROM patient";
    let o = once(sql, true).await;
    assert_eq!(cells(&o), vec![Value::Null]);
    let c = once(sql, false).await;
    assert_eq!(cells(&c), vec![json!(3)], "control: the small group itself");
}

/// The two numbers of the pair leave as a UNION of two sealed aggregates (a public result
/// with no contributor set of its own): the inner cells are checked, and the answer is
/// refused since they differ by 3 patients.
#[tokio::test]
async fn attack_union_all_pair() {
    let sql = format!("{ALL} UNION ALL {BUT_47}");
    let e = refuse(&sql, &MemoryLedger::default()).await;
    assert!(e.contains("differencing"), "{e}");
    let mut c = cells(&once(&sql, false).await);
    c.sort_by_key(|v| v.as_i64());
    assert_eq!(c, vec![json!(57), json!(60)], "control: both, 3 apart");
}

/// Computations across the cells of an aggregation (an outer aggregate, an aggregate
/// window) give a released total minus the sealed small groups: each is refused, and its
/// control (defence off) shows the small group against a total released before.
const OVER_CELLS: &[(&str, &str)] = &[
    // The outer total of sealed prefectures: 57 beside 60.
    (
        ALL,
        "SELECT sum(n) AS total FROM (SELECT prefecture_code, count(*) AS n FROM patient GROUP BY prefecture_code) t",
    ),
    // A window total over the sealed prefectures: 57 on every row, beside 60.
    (
        ALL,
        "SELECT prefecture_code, count(*) AS n, sum(count(*)) OVER () AS t FROM patient GROUP BY prefecture_code",
    ),
    // Sex totals regrouped from sealed (sex, prefecture) cells: 29 and 28 beside 30 and 30.
    (
        "SELECT sex, count(*) AS n FROM patient GROUP BY sex",
        "SELECT sex, sum(n) AS s FROM (SELECT sex, prefecture_code, count(*) AS n FROM patient GROUP BY sex, prefecture_code) t GROUP BY sex",
    ),
    // The same through a partitioned window.
    (
        "SELECT sex, count(*) AS n FROM patient GROUP BY sex",
        "SELECT sex, n, sum(n) OVER (PARTITION BY sex) AS s FROM (SELECT sex, prefecture_code, count(*) AS n FROM patient GROUP BY sex, prefecture_code) t",
    ),
    // A total over the cells a CASE keeps: 17 beside 20.
    (
        "SELECT count(*) AS n FROM patient WHERE prefecture_code <> '13'",
        "SELECT sum(CASE WHEN prefecture_code <> '13' THEN n END) AS s FROM (SELECT prefecture_code, count(*) AS n FROM patient GROUP BY prefecture_code) t",
    ),
];

#[tokio::test]
async fn attack_computations_over_sealed_cells_are_refused() {
    for (first, second) in OVER_CELLS {
        let ledger = MemoryLedger::default();
        ask(first, &ledger, true).await;
        let e = refuse(second, &ledger).await;
        assert!(e.contains("GROUP BY region"), "{second}: {e}");
        // Refused on its shape, with or without an earlier total.
        refuse(second, &MemoryLedger::default()).await;
    }
}

#[tokio::test]
async fn control_computations_over_sealed_cells_show_the_small_group() {
    let off = |first: &str, second: &str| {
        let (first, second) = (first.to_string(), second.to_string());
        async move {
            let ledger = MemoryLedger::default();
            let a = ask(&first, &ledger, false).await;
            (cells(&a), cells(&ask(&second, &ledger, false).await))
        }
    };
    let (a, b) = off(OVER_CELLS[0].0, OVER_CELLS[0].1).await;
    assert_eq!((a, b), (vec![json!(60)], vec![json!(57)]));
    let (_, b) = off(OVER_CELLS[1].0, OVER_CELLS[1].1).await;
    assert!(b.contains(&json!(57)), "{b:?}");
    let (a, b) = off(OVER_CELLS[2].0, OVER_CELLS[2].1).await;
    assert_eq!(a, vec![json!("F"), json!(30), json!("M"), json!(30)]);
    assert_eq!(b, vec![json!("F"), json!(29), json!("M"), json!(28)]);
    let (_, b) = off(OVER_CELLS[3].0, OVER_CELLS[3].1).await;
    assert!(b.contains(&json!(29)) && b.contains(&json!(28)), "{b:?}");
    let (a, b) = off(OVER_CELLS[4].0, OVER_CELLS[4].1).await;
    assert_eq!((a, b), (vec![json!(20)], vec![json!(17)]));
}

/// Ranking windows over the cells only order released cells: still answered.
#[tokio::test]
async fn ranking_windows_over_cells_stay_answered() {
    let o = once(
        "SELECT prefecture_code, count(*) AS n, rank() OVER (ORDER BY count(*) DESC) AS r FROM patient GROUP BY prefecture_code ORDER BY prefecture_code",
        true,
    )
    .await;
    assert_eq!(o.result.rows[1], vec![json!("13"), json!(40), json!(1)]);
}

#[tokio::test]
async fn attack_two_queries_against_the_ledger() {
    let ledger = MemoryLedger::default();
    assert_eq!(cells(&ask(ALL, &ledger, true).await), vec![json!(60)]);
    let o = ask(BUT_47, &ledger, true).await;
    assert_eq!(cells(&o), vec![Value::Null]);
    assert_eq!(o.result.disclosure.differencing, vec![[0, 0]]);
    assert!(
        o.result
            .disclosure
            .notes
            .iter()
            .any(|n| n.contains("differencing")),
        "{:?}",
        o.result.disclosure.notes
    );
    assert_eq!(ledger.len(), 1, "a suppressed cell never enters the ledger");
    // Control: the same two queries without the defence give 60 and 57.
    let off = MemoryLedger::default();
    ask(ALL, &off, false).await;
    assert_eq!(cells(&ask(BUT_47, &off, false).await), vec![json!(57)]);
}

#[tokio::test]
async fn the_order_of_the_two_queries_does_not_matter() {
    let ledger = MemoryLedger::default();
    assert_eq!(cells(&ask(BUT_47, &ledger, true).await), vec![json!(57)]);
    assert_eq!(cells(&ask(ALL, &ledger, true).await), vec![Value::Null]);
}

#[tokio::test]
async fn equivalent_predicates_are_the_same_cell_and_stay_released() {
    let ledger = MemoryLedger::default();
    ask(BUT_47, &ledger, true).await;
    for sql in [
        "SELECT count(*) AS n FROM patient WHERE NOT (prefecture_code = '47')",
        "SELECT count(*) AS n FROM patient WHERE prefecture_code IN ('13', '01')",
        "SELECT count(DISTINCT pid) AS n FROM patient WHERE prefecture_code < '47'",
    ] {
        let o = ask(sql, &ledger, true).await;
        assert_eq!(
            cells(&o),
            vec![json!(57)],
            "{sql}: the same patients, nothing new"
        );
    }
    // A predicate that differs by the three patients, written another way, is caught.
    let o = ask(
        "SELECT count(*) AS n FROM patient WHERE prefecture_code <= '47'",
        &ledger,
        true,
    )
    .await;
    assert_eq!(cells(&o), vec![Value::Null]);
}

#[tokio::test]
async fn groups_far_apart_are_not_over_suppressed() {
    let ledger = MemoryLedger::default();
    let sql = "SELECT prefecture_code, count(*) AS n FROM patient GROUP BY prefecture_code ORDER BY prefecture_code";
    let o = ask(sql, &ledger, true).await;
    assert!(o.result.disclosure.differencing.is_empty());
    // Asking again is the same release.
    let again = ask(sql, &ledger, true).await;
    assert_eq!(again.result.rows, o.result.rows);
    assert!(again.result.disclosure.differencing.is_empty());
}

/// Item 7: nothing besides released cells depends on a group of fewer than k patients.
/// Two queries differ only in whether a 1-patient group exists (p58 born after the
/// year or not); the removed row is neither counted nor noted differently.
#[tokio::test]
async fn attack_removed_rows_are_not_counted() {
    let q = |year: i32| {
        format!(
            "SELECT CASE WHEN pid = 'p58' AND birth_year > {year} THEN 'x' ELSE 'y' END AS g, count(*) AS n FROM patient GROUP BY 1"
        )
    };
    let (a, b) = (once(&q(1000), true).await, once(&q(3000), true).await);
    assert_eq!(a.result.disclosure.dropped_rows, 0);
    assert_eq!(
        a.result.disclosure.dropped_rows,
        b.result.disclosure.dropped_rows
    );
    assert_eq!(a.result.disclosure.notes, b.result.disclosure.notes);
    // Control: the raw plan does have one group more in one case (the metadata would
    // have counted it).
    let (ctx, _) = registry();
    let groups = |sql: String| {
        let ctx = ctx.clone();
        async move { ctx.sql(&sql).await.unwrap().count().await.unwrap() }
    };
    assert_eq!(groups(q(1000)).await, 2);
    assert_eq!(groups(q(3000)).await, 1);
}

/// Item 7: without ORDER BY the released rows are in value order, not in the engine's.
#[tokio::test]
async fn rows_without_order_by_are_sorted_by_value() {
    // A computed key: nothing is padded, every row shown is a released group.
    let o = once(
        "SELECT severity + 0 AS s, count(*) AS n FROM nanbyo_survey GROUP BY severity + 0",
        true,
    )
    .await;
    let keys: Vec<String> = o.result.rows.iter().map(|r| r[0].to_string()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert!(keys.len() >= 3, "{:?}", o.result.rows);
    assert_eq!(keys, sorted);
}
