//! Property test of the guard and the privacy rewrite (issue 14): SQL generated from a
//! grammar of the allowed shapes (aggregates over the fixture registry, with filters,
//! groupings and nesting) runs through the whole query core. Whatever the query: no
//! panic, no server-side error (every refusal is a 4xx with its code), and every count
//! released is suppressed or at least k. The number of cases is bounded for CI
//! (`PROPTEST_CASES` raises it).

use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::Value;

use kura::catalog::Catalog;
use kura::engine::Limits;
use kura::privacy::DisclosureRules;
use kura::query::run_query;

use crate::qc_fixture::registry;

/// The threshold of the fixture's datasets (the default k).
const K: i64 = 5;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_stack_size(8 << 20)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A predicate over `nanbyo_survey` (columns and values of the fixture's domains).
fn predicate() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        (
            1i64..=5,
            prop::sample::select(vec!["<", "<=", "=", ">", ">=", "<>"])
        )
            .prop_map(|(v, op)| format!("severity {op} {v}")),
        prop::sample::select(vec![2i64, 6, 97]).prop_map(|d| format!("disease_no = {d}")),
        (2023i64..=2024).prop_map(|y| format!("fiscal_year = {y}")),
        (0.0f64..3.0).prop_map(|c| format!("creatinine > {c:.2}")),
        Just("pao2 IS NOT NULL".to_string()),
        prop::sample::select(vec!["13", "01", "47"])
            .prop_map(|p| format!("prefecture_code = '{p}'")),
    ];
    leaf.prop_recursive(3, 8, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} AND {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
            inner.prop_map(|a| format!("NOT ({a})")),
        ]
    })
}

/// One aggregate: `(SQL, is a count)`.
fn aggregate() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        Just(("count(*)".to_string(), true)),
        Just(("count(DISTINCT pid)".to_string(), true)),
        prop::sample::select(vec!["sum", "avg", "min", "max"]).prop_flat_map(|f| {
            prop::sample::select(vec!["severity", "creatinine", "pao2"])
                .prop_map(move |c| (format!("{f}({c})"), false))
        }),
    ]
}

/// A whole query: groups, aggregates, an optional filter, optionally nested in an
/// outer aggregation or ordered.
fn query() -> impl Strategy<Value = (String, Vec<bool>)> {
    let dims = prop::sample::subsequence(
        vec!["fiscal_year", "disease_no", "severity", "prefecture_code"],
        0..=2,
    );
    (
        dims,
        prop::collection::vec(aggregate(), 1..=3),
        prop::option::of(predicate()),
        0u8..3,
    )
        .prop_map(|(dims, aggs, filter, shape)| {
            let mut select: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
            let mut counts = vec![false; dims.len()];
            for (i, (a, is_count)) in aggs.iter().enumerate() {
                select.push(format!("{a} AS v{i}"));
                counts.push(*is_count);
            }
            let mut sql = format!("SELECT {} FROM nanbyo_survey", select.join(", "));
            if let Some(p) = filter {
                sql.push_str(&format!(" WHERE {p}"));
            }
            if !dims.is_empty() {
                sql.push_str(&format!(" GROUP BY {}", dims.join(", ")));
            }
            match shape {
                1 if !dims.is_empty() => sql.push_str(&format!(" ORDER BY {}", dims[0])),
                2 => {
                    sql = format!("SELECT * FROM ({sql}) AS t");
                }
                _ => {}
            }
            (sql, counts)
        })
}

fn core() -> &'static (
    datafusion::prelude::SessionContext,
    Catalog,
    DisclosureRules,
) {
    static CORE: OnceLock<(
        datafusion::prelude::SessionContext,
        Catalog,
        DisclosureRules,
    )> = OnceLock::new();
    CORE.get_or_init(|| {
        let (ctx, catalog) = registry();
        (ctx, catalog, DisclosureRules::embedded().unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(96),
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_queries_never_fail_server_side_and_release_no_small_count((sql, counts) in query()) {
        let (ctx, catalog, rules) = core();
        let out = runtime().block_on(run_query(ctx, &sql, catalog, rules, &Limits::default()));
        match out {
            Err(e) => prop_assert!(e.http_status() < 500, "{sql}: {} ({})", e.code(), e.internal_detail()),
            Ok(o) => {
                for row in &o.result.rows {
                    for (cell, is_count) in row.iter().zip(&counts) {
                        if let (true, Value::Number(n)) = (*is_count, cell) {
                            let n = n.as_f64().unwrap_or(0.0);
                            prop_assert!(n >= K as f64, "{sql}: released count {n} below k");
                        }
                    }
                }
            }
        }
    }
}
