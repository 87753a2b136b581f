//! Attacks on row selection that lets one patient decide about others (issue 11): ordering
//! over patient rows (`ORDER BY … LIMIT`, windows across patients, `Defences::ordering`)
//! and subqueries or joins that filter (`Defences::subqueries`), in suppression and DP mode.
//!
//! Every attack is a pair of queries that differ only in the probed bit (does the target
//! p07, born 1989, have `birth_year >= 1989` or `>= 1990`; does p07 have a FY2024 record):
//! an attacker who knows every other patient learns the bit from either answer alone. The
//! attack test asserts that kura refuses both queries; its control runs the same pair with
//! that one defence switched off and asserts that both are answered and the answers differ,
//! so the channel is real. Each query runs on a fresh session.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int32Array, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use kura::catalog::Catalog;
use kura::engine::Limits;
use kura::privacy::result::{DpBounds, DpParams};
use kura::privacy::{Defences, DisclosureRules};
use kura::query::dp::run_dp_query;
use kura::query::{QueryError, run_query};
use serde_json::Value;

use crate::qc_fixture::registry;

const ALL: Defences = Defences::ALL;
const NO_ORDERING: Defences = Defences {
    ordering: false,
    ..Defences::ALL
};
const NO_SUBQUERIES: Defences = Defences {
    subqueries: false,
    ..Defences::ALL
};
/// A correlated subquery over patients is refused twice: as a filter (`subqueries`) and,
/// since its cells cannot run alone, by the differencing check (`differencing`).
const NO_SUBQUERIES_NOR_DIFFERENCING: Defences = Defences {
    subqueries: false,
    differencing: false,
    ..Defences::ALL
};

/// Probes of p07's birth year (1989): true, then false.
const BIRTH: [&str; 2] = ["1989", "1990"];

#[derive(Clone, Copy)]
enum Mode {
    Suppression,
    /// DP with this ε (huge for one-patient differences, ordinary for all-or-nothing ones).
    Dp(f64),
}

async fn answer(sql: &str, mode: Mode, d: Defences) -> Result<Vec<Vec<Value>>, QueryError> {
    let (ctx, catalog) = registry();
    answer_on(&ctx, &catalog, sql, mode, d).await
}

async fn answer_on(
    ctx: &SessionContext,
    catalog: &Catalog,
    sql: &str,
    mode: Mode,
    d: Defences,
) -> Result<Vec<Vec<Value>>, QueryError> {
    let rules = DisclosureRules::embedded().unwrap().with_defences(d);
    let limits = Limits::default();
    let out = match mode {
        Mode::Suppression => run_query(ctx, sql, catalog, &rules, &limits).await,
        Mode::Dp(epsilon) => {
            let params = DpParams {
                epsilon,
                bounds: DpBounds::default(),
            };
            run_dp_query(ctx, sql, catalog, &rules, &limits, params).await
        }
    };
    out.map(|o| o.result.rows)
}

fn pair(template: &str, probes: [&str; 2]) -> [String; 2] {
    probes.map(|p| template.replace("{X}", p))
}

/// With every defence on, both queries of the pair are refused as `unsupported_query`
/// with a bilingual message that names `fix` (what works instead).
async fn refused(template: &str, probes: [&str; 2], mode: Mode, fix: &str) {
    for sql in pair(template, probes) {
        match answer(&sql, mode, ALL).await {
            Ok(rows) => panic!("{sql}: answered {rows:?}"),
            Err(e) => {
                assert_eq!(e.code(), "unsupported_query", "{sql}: {e}");
                let m = e.public_message();
                assert!(m.contains(fix) && m.contains(" / "), "{sql}: {m}");
            }
        }
    }
}

/// With `off`, both queries are answered and the answers differ: the channel is open.
async fn leaks(template: &str, probes: [&str; 2], mode: Mode, off: Defences) {
    let [a, b] = pair(template, probes);
    let ra = answer(&a, mode, off).await;
    let rb = answer(&b, mode, off).await;
    let (ra, rb) = match (ra, rb) {
        (Ok(x), Ok(y)) => (x, y),
        (x, y) => panic!("control not answered: {:?} / {:?}", x.err(), y.err()),
    };
    assert_ne!(ra, rb, "the bit did not change the answer: {a}");
}

/// Every case is answered (every defence on) with `n` in the last cell of its first row,
/// and the DP case with about its `n` (ε = 10⁵).
async fn allowed(cases: &[(&str, f64)], dp: (&str, f64)) {
    for &(sql, n) in cases {
        let rows = answer(sql, Mode::Suppression, ALL).await.unwrap();
        let got = rows[0].last().and_then(Value::as_f64);
        assert_eq!(got, Some(n), "{sql}: {rows:?}");
    }
    let rows = answer(dp.0, Mode::Dp(1.0e5), ALL).await.unwrap();
    assert_eq!(
        count(&rows).map(f64::round),
        Some(dp.1),
        "{}: {rows:?}",
        dp.0
    );
}

/// The released count (first cell of the one row), null when suppressed.
fn count(rows: &[Vec<Value>]) -> Option<f64> {
    rows[0][0].as_f64()
}

// ---------------------------------------------------------------------------------------
// Ordering over patient rows (item 5).
// ---------------------------------------------------------------------------------------

/// `ORDER BY … LIMIT` in a FROM subquery: p07 moved to the front pushes p41 (prefecture
/// 01) out of the 20 rows counted (19 instead of 20).
const LIMIT_FROM: &str = "SELECT count(*) AS n FROM (SELECT pid, prefecture_code FROM patient \
    ORDER BY CASE WHEN pid = 'p07' AND birth_year >= {X} THEN 0 ELSE 1 END, pid DESC LIMIT 20) t \
    WHERE prefecture_code <> '13'";

/// `pid IN (SELECT pid … ORDER BY … LIMIT)`: the same selection through a semi-join.
const LIMIT_IN: &str = "SELECT count(DISTINCT pid) AS n FROM patient WHERE prefecture_code <> '13' \
    AND pid IN (SELECT pid FROM patient \
    ORDER BY CASE WHEN pid = 'p07' AND birth_year >= {X} THEN 0 ELSE 1 END, pid DESC LIMIT 20)";

/// `row_number() OVER (ORDER BY …)` across patients, filtered above: a LIMIT in disguise.
const ROW_NUMBER: &str = "SELECT count(DISTINCT pid) AS n FROM (SELECT pid, prefecture_code, \
    row_number() OVER (ORDER BY CASE WHEN pid = 'p07' AND birth_year >= {X} THEN 0 ELSE 1 END, pid DESC) AS rn \
    FROM patient) t WHERE rn <= 20 AND prefecture_code <> '13'";

/// `count(*) OVER ()` across patients inside `pid IN (…)`: the window's total decides.
const WINDOW_TOTAL_IN: &str = "SELECT count(DISTINCT pid) AS n FROM patient WHERE pid IN \
    (SELECT pid FROM (SELECT pid, count(*) OVER () AS c FROM patient \
    WHERE sex = 'M' OR (pid = 'p07' AND birth_year >= {X})) t WHERE c > 30)";

/// A rank "per patient" on the outer side of a LEFT JOIN: the 40 patients without a FY2024
/// record share the NULL partition, and p07 moved to its front pushes p41 out.
const NULL_PARTITION: &str = "SELECT count(DISTINCT pid) AS n FROM (SELECT p.pid, p.prefecture_code, \
    row_number() OVER (PARTITION BY s.pid ORDER BY CASE WHEN p.pid = 'p07' AND p.birth_year >= {X} THEN 0 ELSE 1 END, p.pid DESC) AS rn \
    FROM patient p LEFT JOIN nanbyo_survey s ON p.pid = s.pid AND s.fiscal_year = 2024) t \
    WHERE rn <= 13 AND prefecture_code <> '13'";

/// LIMIT without ORDER BY: the engine's row order picks the patients.
const LIMIT_BARE: &str = "SELECT count(*) AS n FROM (SELECT pid, sex FROM patient \
    WHERE pid <> 'p08' OR birth_year >= {X} LIMIT 20) t WHERE sex = 'M'";

const ORDER_FIX: &str = "apply ORDER BY / LIMIT to the aggregated result";
const WINDOW_FIX: &str = "PARTITION BY pid";

#[tokio::test]
async fn control_order_by_limit_moves_one_patient_out() {
    let [a, b] = pair(LIMIT_FROM, BIRTH);
    let a = answer(&a, Mode::Suppression, NO_ORDERING).await.unwrap();
    let b = answer(&b, Mode::Suppression, NO_ORDERING).await.unwrap();
    assert_eq!((count(&a), count(&b)), (Some(19.0), Some(20.0)));
}

#[tokio::test]
async fn ordering_that_selects_nothing_stays_allowed() {
    // A plain ORDER BY below an aggregate, a window within each patient (first record per
    // patient), and ORDER BY … LIMIT over released rows, in both modes.
    let per_patient = "SELECT count(*) AS n FROM (SELECT pid, fiscal_year, \
        row_number() OVER (PARTITION BY pid ORDER BY fiscal_year DESC) AS rn FROM nanbyo_survey) t WHERE rn = 1";
    let cases = [
        (
            "SELECT count(*) AS n FROM (SELECT pid, sex FROM patient ORDER BY birth_year) t WHERE sex = 'F'",
            30.0,
        ),
        (per_patient, 60.0),
        (
            "SELECT prefecture_code, count(DISTINCT pid) AS n FROM patient GROUP BY prefecture_code ORDER BY n DESC LIMIT 1",
            40.0,
        ),
    ];
    let dp = "SELECT count(DISTINCT pid) AS n FROM (SELECT pid, sex FROM patient ORDER BY birth_year) t WHERE sex = 'F'";
    allowed(&cases, (dp, 30.0)).await;
}

// ---------------------------------------------------------------------------------------
// Subqueries and joins that filter (item 9).
// ---------------------------------------------------------------------------------------

/// Uncorrelated EXISTS over patient rows: one patient's row switches every row on or off.
const EXISTS_ROWS: &str = "SELECT count(DISTINCT pid) AS n FROM patient \
    WHERE EXISTS (SELECT 1 FROM patient WHERE pid = 'p07' AND birth_year >= {X})";

/// A scalar subquery that reads one patient's value.
const SCALAR_ROWS: &str = "SELECT count(DISTINCT pid) AS n FROM patient \
    WHERE (SELECT birth_year FROM patient WHERE pid = 'p07') >= {X}";

/// A sealed, k-passing aggregate as a threshold: 30 or 31 patients inside, every F patient
/// kept or not outside.
const SCALAR_SEALED: &str = "SELECT count(*) AS n FROM patient \
    WHERE (SELECT count(*) FROM patient WHERE sex = 'M' OR (pid = 'p07' AND birth_year >= {X})) > 30";

/// A threshold from a sealed average: keeping p07 (born 1989) among the 30 F patients or
/// not moves their average from 1969.3 to 1970.0, and one more patient is counted above it.
const SCALAR_AVG: &str = "SELECT count(*) AS n FROM patient \
    WHERE birth_year > (SELECT avg(birth_year) FROM patient WHERE sex = 'F' AND (pid <> 'p07' OR birth_year >= {X}))";

/// A correlated aggregate that counts other patients' rows: F rows kept only if the bit
/// keeps p07 among the 30 F patients counted for each of them.
const CORRELATED: &str = "SELECT count(*) AS n FROM patient p WHERE \
    (SELECT count(*) FROM patient q WHERE q.sex = p.sex AND (q.pid <> 'p07' OR q.birth_year >= {X})) >= 30";

/// `pid NOT IN (…)` whose subquery holds a NULL exactly when p07 has no FY2024 record.
const NOT_IN: &str = "SELECT count(DISTINCT pid) AS n FROM patient WHERE pid NOT IN \
    (SELECT s.pid FROM patient a LEFT JOIN nanbyo_survey s ON a.pid = s.pid AND s.fiscal_year = {X} \
    WHERE a.pid = 'p07')";

/// Probes of p07's survey years: FY2023 (present), FY2024 (absent).
const YEARS: [&str; 2] = ["2023", "2024"];

/// IN over a non-pid column of patient rows: p07's sex selects every patient of that sex.
const IN_OTHER_COLUMN: &str = "SELECT count(DISTINCT pid) AS n FROM patient \
    WHERE sex IN (SELECT sex FROM patient WHERE pid = 'p07' AND birth_year >= {X})";

/// A join to a sealed aggregate used as a filter.
const JOIN_SEALED: &str = "SELECT count(*) AS n FROM patient p JOIN \
    (SELECT sex, count(*) AS c FROM patient WHERE pid <> 'p07' OR birth_year >= {X} GROUP BY sex) g \
    ON p.sex = g.sex WHERE g.c >= 30";

/// A UNION of patient rows with the rows of a sealed aggregate.
const UNION_SEALED: &str = "SELECT count(*) AS n FROM (SELECT sex FROM patient UNION ALL \
    SELECT sex FROM (SELECT sex, count(*) AS c FROM patient WHERE pid <> 'p07' OR birth_year >= {X} GROUP BY sex) g \
    WHERE c >= 30) u";

/// A subquery in a join condition (on `main` it ran without being rewritten).
const JOIN_ON_SUBQUERY: &str = "SELECT count(DISTINCT p.pid) AS n FROM patient p JOIN nanbyo_survey s \
    ON p.pid = s.pid AND EXISTS (SELECT 1 FROM patient WHERE pid = 'p07' AND birth_year >= {X})";

const PER_PATIENT_FIX: &str = "pid IN (SELECT pid FROM … WHERE …)";
const DERIVED_FIX: &str = "run the subquery as its own query";
const JOIN_FIX: &str = "aggregate per patient first (GROUP BY pid) and join on pid";
const UNION_FIX: &str = "aggregate each branch as its own query";

#[tokio::test]
async fn control_exists_moves_every_patient_under_dp() {
    // One patient's row switches all 60 patients: far beyond the noise at ε = 10.
    let [a, b] = pair(EXISTS_ROWS, BIRTH);
    let a = answer(&a, Mode::Dp(10.0), NO_SUBQUERIES).await.unwrap();
    let b = answer(&b, Mode::Dp(10.0), NO_SUBQUERIES).await.unwrap();
    assert!(count(&a).is_some_and(|n| n > 55.0), "{a:?}");
    assert!(count(&b).is_none_or(|n| n < 5.0), "{b:?}");
}

#[tokio::test]
async fn control_sealed_threshold_releases_a_k_passing_count_or_nothing() {
    // Every cell passes k: the bit is in which k-passing count is released.
    let [a, b] = pair(SCALAR_SEALED, BIRTH);
    let a = answer(&a, Mode::Suppression, NO_SUBQUERIES).await.unwrap();
    let b = answer(&b, Mode::Suppression, NO_SUBQUERIES).await.unwrap();
    assert_eq!((count(&a), count(&b)), (Some(60.0), None));
}

#[tokio::test]
async fn attack_negated_in_is_not_in() {
    let negated = NOT_IN.replace("pid NOT IN", "NOT (pid IN") + ")";
    refused(&negated, YEARS, Mode::Suppression, PER_PATIENT_FIX).await;
    refused(&negated, YEARS, Mode::Dp(10.0), PER_PATIENT_FIX).await;
    leaks(&negated, YEARS, Mode::Suppression, NO_SUBQUERIES).await;
}

/// One channel: its query pair, what the refusal names instead, the defence that closes
/// it, and the ε of its DP runs.
struct Channel {
    template: &'static str,
    probes: [&'static str; 2],
    fix: &'static str,
    defence: Defences,
    epsilon: f64,
    /// The DP control runs too (DP refuses a second aggregation anyway).
    dp_control: bool,
    /// The answers can be compared (which rows a bare LIMIT keeps is the engine's choice).
    deterministic: bool,
}

const fn channel(
    template: &'static str,
    probes: [&'static str; 2],
    fix: &'static str,
    defence: Defences,
    epsilon: f64,
) -> Channel {
    Channel {
        template,
        probes,
        fix,
        defence,
        epsilon,
        dp_control: true,
        deterministic: true,
    }
}

const fn no_dp_control(c: Channel) -> Channel {
    Channel {
        dp_control: false,
        ..c
    }
}

const CHANNELS: &[Channel] = &[
    channel(LIMIT_FROM, BIRTH, ORDER_FIX, NO_ORDERING, 1.0e5),
    channel(LIMIT_IN, BIRTH, ORDER_FIX, NO_ORDERING, 1.0e5),
    channel(ROW_NUMBER, BIRTH, WINDOW_FIX, NO_ORDERING, 1.0e5),
    channel(WINDOW_TOTAL_IN, BIRTH, WINDOW_FIX, NO_ORDERING, 10.0),
    channel(NULL_PARTITION, BIRTH, WINDOW_FIX, NO_ORDERING, 1.0e5),
    Channel {
        deterministic: false,
        ..channel(LIMIT_BARE, ["1996", "1997"], ORDER_FIX, NO_ORDERING, 1.0e5)
    },
    channel(EXISTS_ROWS, BIRTH, PER_PATIENT_FIX, NO_SUBQUERIES, 10.0),
    channel(SCALAR_ROWS, BIRTH, PER_PATIENT_FIX, NO_SUBQUERIES, 10.0),
    no_dp_control(channel(
        SCALAR_SEALED,
        BIRTH,
        DERIVED_FIX,
        NO_SUBQUERIES,
        10.0,
    )),
    no_dp_control(channel(SCALAR_AVG, BIRTH, DERIVED_FIX, NO_SUBQUERIES, 10.0)),
    no_dp_control(channel(
        CORRELATED,
        BIRTH,
        DERIVED_FIX,
        NO_SUBQUERIES_NOR_DIFFERENCING,
        10.0,
    )),
    channel(NOT_IN, YEARS, PER_PATIENT_FIX, NO_SUBQUERIES, 10.0),
    channel(IN_OTHER_COLUMN, BIRTH, PER_PATIENT_FIX, NO_SUBQUERIES, 10.0),
    no_dp_control(channel(JOIN_SEALED, BIRTH, JOIN_FIX, NO_SUBQUERIES, 10.0)),
    // Both the rewrite ("put the condition in WHERE") and, since the functions work, the
    // guard ("… work only in WHERE or HAVING", unconditional) refuse it.
    channel(JOIN_ON_SUBQUERY, BIRTH, "WHERE", NO_SUBQUERIES, 10.0),
    no_dp_control(channel(UNION_SEALED, BIRTH, UNION_FIX, NO_SUBQUERIES, 10.0)),
];

#[tokio::test]
async fn attacks_are_refused_in_both_modes() {
    for c in CHANNELS {
        refused(c.template, c.probes, Mode::Suppression, c.fix).await;
        refused(c.template, c.probes, Mode::Dp(c.epsilon), c.fix).await;
    }
}

#[tokio::test]
async fn controls_show_every_channel_open_without_its_defence() {
    // A subquery in a join condition is also refused by the guard, whatever the switches
    // (no defence switch reopens it), so it has no control here.
    for c in CHANNELS.iter().filter(|c| c.template != JOIN_ON_SUBQUERY) {
        let mut modes = vec![Mode::Suppression];
        if c.dp_control {
            modes.push(Mode::Dp(c.epsilon));
        }
        for mode in modes {
            if c.deterministic {
                leaks(c.template, c.probes, mode, c.defence).await;
            } else {
                // Only that the defence is what refuses it; the answers are not compared.
                for sql in pair(c.template, c.probes) {
                    answer(&sql, mode, c.defence).await.unwrap();
                }
            }
        }
    }
}

#[tokio::test]
async fn per_patient_semi_joins_stay_allowed() {
    // Each patient kept by that patient's own rows: a row condition, a per-patient
    // HAVING, a correlated condition on the outer row, an OR, INTERSECT, and the
    // per-patient form of NOT IN.
    let cases = [
        (
            "SELECT count(*) AS n FROM patient WHERE pid IN (SELECT pid FROM nanbyo_survey WHERE fiscal_year = 2024)",
            20.0,
        ),
        (
            "SELECT count(*) AS n FROM patient WHERE pid IN (SELECT pid FROM nanbyo_survey GROUP BY pid HAVING count(*) > 1)",
            20.0,
        ),
        (
            "SELECT count(*) AS n FROM patient p WHERE p.pid IN (SELECT s.pid FROM nanbyo_survey s WHERE s.prefecture_code = p.prefecture_code AND s.fiscal_year = 2024)",
            20.0,
        ),
        (
            "SELECT count(*) AS n FROM patient WHERE sex = 'M' OR pid IN (SELECT pid FROM nanbyo_survey WHERE fiscal_year = 2024)",
            40.0,
        ),
        // INTERSECT on a pid that cannot be NULL.
        (
            "SELECT count(*) AS n FROM (SELECT pid FROM patient INTERSECT \
             SELECT pid FROM nanbyo_survey WHERE fiscal_year = 2024) t",
            20.0,
        ),
        // What the NOT IN refusal suggests instead: a per-patient condition.
        (
            "SELECT count(*) AS n FROM patient WHERE pid IN (SELECT pid FROM nanbyo_survey \
             GROUP BY pid HAVING count(*) FILTER (WHERE fiscal_year = 2024) = 0)",
            40.0,
        ),
    ];
    let dp = "SELECT count(DISTINCT pid) AS n FROM patient WHERE pid IN (SELECT pid FROM nanbyo_survey WHERE fiscal_year = 2024)";
    allowed(&cases, (dp, 20.0)).await;
    // A sealed aggregate shown per reference row is a released value, not a filter: as a
    // join of the grouped aggregate (the correlated form is refused, its cells cannot run
    // alone for the differencing check).
    let rows = answer(
        "SELECT d.name_en, s.n FROM disease d LEFT JOIN (SELECT disease_no, count(DISTINCT pid) AS n FROM nanbyo_survey GROUP BY disease_no) s ON s.disease_no = d.disease_no ORDER BY d.name_en",
        Mode::Suppression,
        ALL,
    )
    .await
    .unwrap();
    assert_eq!(rows[0][1].as_f64(), Some(30.0));
    let e = answer(
        "SELECT d.name_en, (SELECT count(DISTINCT s.pid) FROM nanbyo_survey s WHERE s.disease_no = d.disease_no) AS n FROM disease d ORDER BY d.name_en",
        Mode::Suppression,
        ALL,
    )
    .await
    .unwrap_err();
    assert!(e.public_message().contains("LEFT JOIN"), "{e}");
}

/// The fixture with one more disease that no patient has, so that the outer side of a join
/// to the disease table has a row with a NULL pid.
async fn registry_with_unmatched_disease() -> (SessionContext, Catalog) {
    let (ctx, catalog) = registry();
    let mut batches = ctx.table("disease").await.unwrap().collect().await.unwrap();
    let schema = batches[0].schema();
    let text = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let extra = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int32Array::from(vec![99])),
            text("テスト"),
            text("Test disease"),
            text("テスト"),
        ],
    )
    .unwrap();
    batches.push(extra);
    ctx.deregister_table("disease").unwrap();
    let t = MemTable::try_new(schema, vec![batches]).unwrap();
    ctx.register_table("disease", Arc::new(t)).unwrap();
    (ctx, catalog)
}

/// EXCEPT matches NULL with NULL: the NULL row that the unmatched disease puts on the left
/// is dropped exactly when p07 has no FY2024 record (a NULL on the right).
const EXCEPT_NULL: &str = "SELECT count(*) AS n FROM (SELECT s.pid FROM disease d LEFT JOIN nanbyo_survey s \
    ON d.disease_no = s.disease_no EXCEPT SELECT s.pid FROM patient a LEFT JOIN nanbyo_survey s \
    ON a.pid = s.pid AND s.fiscal_year = {X} WHERE a.pid = 'p07' AND s.pid IS NULL) t";

#[tokio::test]
async fn attack_except_matching_a_null_pid() {
    let (ctx, catalog) = registry_with_unmatched_disease().await;
    for sql in pair(EXCEPT_NULL, YEARS) {
        let e = answer_on(&ctx, &catalog, &sql, Mode::Suppression, ALL)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "unsupported_query", "{sql}: {e}");
        assert!(e.public_message().contains("pid IN (SELECT pid"), "{e}");
    }
}

#[tokio::test]
async fn control_except_matching_a_null_pid() {
    let (ctx, catalog) = registry_with_unmatched_disease().await;
    let [a, b] = pair(EXCEPT_NULL, YEARS);
    let a = answer_on(&ctx, &catalog, &a, Mode::Suppression, NO_SUBQUERIES)
        .await
        .unwrap();
    let b = answer_on(&ctx, &catalog, &b, Mode::Suppression, NO_SUBQUERIES)
        .await
        .unwrap();
    // 60 patients, plus the unmatched disease's NULL row unless p07 lacks a FY2024 record.
    assert_eq!((count(&a), count(&b)), (Some(61.0), Some(60.0)));
}
