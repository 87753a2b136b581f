//! Equivalence: with the rules off (k = 1, no dominance, no rounding) the rewritten plan
//! returns exactly the numbers of the raw DataFusion query, for many query shapes. This
//! shows the privacy rewrite (hidden counts, dominance join, sealing) never changes a
//! value; only the disclosure rules do.

use kura::engine::Limits;
use kura::privacy::DisclosureRules;
use kura::privacy::disclosure::cell_to_json;
use kura::query::run_query;
use serde_json::Value;

use crate::qc_fixture::registry;

const SHAPES: &[&str] = &[
    "SELECT sex, count(*) AS n, count(DISTINCT pid) AS p FROM patient GROUP BY sex ORDER BY sex",
    "SELECT disease_no, fiscal_year, avg(creatinine) AS a, sum(severity) AS s, median(albumin) AS m, stddev(creatinine) AS sd \
     FROM nanbyo_survey GROUP BY disease_no, fiscal_year ORDER BY disease_no, fiscal_year",
    "SELECT d.name_en, count(DISTINCT s.pid) AS n FROM nanbyo_survey s JOIN disease d ON s.disease_no = d.disease_no \
     GROUP BY d.name_en ORDER BY d.name_en",
    "SELECT p.sex, s.severity, count(*) AS n FROM patient p JOIN nanbyo_survey s ON p.pid = s.pid \
     GROUP BY p.sex, s.severity ORDER BY p.sex, s.severity",
    "SELECT visits, count(*) AS patients FROM (SELECT pid, count(*) AS visits FROM nanbyo_survey GROUP BY pid) t \
     GROUP BY visits ORDER BY visits",
    "SELECT prefecture_code, sum(CASE WHEN severity >= 3 THEN 1 ELSE 0 END) AS severe, \
     count(*) FILTER (WHERE fiscal_year = 2024) AS renewals FROM nanbyo_survey GROUP BY prefecture_code ORDER BY prefecture_code",
    "SELECT sex, n, rank() OVER (ORDER BY n DESC) AS r FROM (SELECT sex, count(*) AS n FROM patient GROUP BY sex) t ORDER BY sex",
    "SELECT disease_no, count(*) AS n FROM nanbyo_survey GROUP BY disease_no HAVING count(*) > 2 ORDER BY disease_no",
    "SELECT sex, count(*) AS n FROM patient WHERE pid IN (SELECT pid FROM nanbyo_survey WHERE severity >= 4) GROUP BY sex ORDER BY sex",
    "SELECT fy, count(*) AS n FROM (SELECT fiscal_year AS fy FROM nanbyo_survey UNION ALL \
     SELECT fiscal_year FROM nanbyo_survey WHERE severity = 1) t GROUP BY fy ORDER BY fy",
    "SELECT DISTINCT sex FROM patient ORDER BY sex",
    "SELECT count(*) AS n, sum(pao2) AS s, avg(creatinine) AS a FROM nanbyo_survey",
    "SELECT disease_no, sum(pao2) AS s, sum(severity) FILTER (WHERE fiscal_year = 2023) AS s23 \
     FROM nanbyo_survey GROUP BY disease_no ORDER BY disease_no",
    "SELECT substr(prefecture_code, 1, 1) AS p1, count(*) AS n, sum(creatinine) AS c FROM nanbyo_survey GROUP BY substr(prefecture_code, 1, 1) ORDER BY 1",
    "SELECT upper(sex) AS s, count(*) AS n FROM patient GROUP BY upper(sex) ORDER BY 1 LIMIT 1",
    "SELECT application_type, approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY creatinine) AS p50 \
     FROM nanbyo_survey GROUP BY application_type ORDER BY application_type",
    "SELECT count(*) AS n, avg(d) AS mean_change FROM (SELECT pid, severity - lag(severity) OVER (PARTITION BY pid ORDER BY fiscal_year) AS d \
     FROM nanbyo_survey) t WHERE d IS NOT NULL",
    "SELECT fiscal_year, count(*) AS n FROM nanbyo_survey s WHERE EXISTS (SELECT 1 FROM disease d WHERE d.disease_no = s.disease_no \
     AND d.disease_group = '神経・筋') GROUP BY fiscal_year ORDER BY fiscal_year",
    "SELECT p.region, count(DISTINCT s.pid) AS n FROM nanbyo_survey s LEFT JOIN prefecture p ON s.prefecture_code = p.prefecture_code \
     WHERE s.disease_no = 2 GROUP BY p.region ORDER BY p.region",
    "WITH per_patient AS (SELECT pid, count(*) AS k FROM nanbyo_survey GROUP BY pid) \
     SELECT p.sex, sum(pp.k) AS records FROM per_patient pp JOIN patient p USING (pid) GROUP BY p.sex ORDER BY p.sex",
    "WITH pp AS (SELECT pid, max(severity) - min(severity) AS d, min(fiscal_year) AS fy FROM nanbyo_survey GROUP BY pid) \
     SELECT p.sex, avg(pp.d) AS mean_d, count(*) AS n, sum(pp.fy) AS total_fy FROM pp JOIN patient p ON pp.pid = p.pid GROUP BY p.sex ORDER BY p.sex",
    "SELECT p.sex, count(s.pid) AS records, count(DISTINCT s.pid) AS patients FROM patient p LEFT JOIN nanbyo_survey s \
     ON p.pid = s.pid AND s.fiscal_year = 2024 GROUP BY p.sex ORDER BY p.sex",
    "SELECT CASE WHEN severity >= 3 THEN 'severe' ELSE 'mild' END AS grade, fiscal_year, count(*) AS n, \
     round(avg(creatinine), 2) AS cr FROM nanbyo_survey GROUP BY 1, 2 ORDER BY 1, 2",
];

async fn raw(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<Vec<Value>> {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut out = Vec::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            out.push(
                (0..b.num_columns())
                    .map(|c| cell_to_json(b.column(c), r))
                    .collect(),
            );
        }
    }
    out
}

/// A released row matches a raw row on every cell it shows.
fn matches(g: &[Value], e: &[Value]) -> bool {
    g.len() == e.len() && g.iter().zip(e).all(|(gv, ev)| gv.is_null() || gv == ev)
}

#[tokio::test]
async fn rewritten_plan_returns_raw_numbers_with_rules_off() {
    // With k = 1 nothing in the data fails except empty cells (0 contributors), but
    // padding adds a null row for every key combination absent from the data. So: the
    // fully released rows are exactly the raw rows in the raw order; every other released
    // row is either a raw row whose suppressed cells are empty in the raw result (0 or
    // NULL) or a padding row with all non-key cells null and suppressed.
    let (ctx, catalog) = registry();
    let rules = DisclosureRules::off();
    for sql in SHAPES {
        let expected = raw(&ctx, sql).await;
        let got = run_query(&ctx, sql, &catalog, &rules, &Limits::default())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        let d = &got.result.disclosure;
        assert_eq!(d.dropped_rows, 0, "{sql}");
        assert!(!expected.is_empty(), "{sql}: fixture gives no rows");
        let suppressed_in = |i: usize| d.suppressed.iter().filter(|s| s[0] == i).count();
        let full: Vec<&Vec<Value>> = got
            .result
            .rows
            .iter()
            .enumerate()
            .filter(|(i, _)| suppressed_in(*i) == 0)
            .map(|(_, r)| r)
            .collect();
        let raw_full: Vec<&Vec<Value>> = expected.iter().filter(|e| full.contains(e)).collect();
        assert_eq!(full, raw_full, "{sql}: fully released rows differ from raw");
        for e in &expected {
            assert!(
                got.result.rows.iter().any(|g| matches(g, e)),
                "{sql}: raw row {e:?} is missing"
            );
        }
        for (i, g) in got.result.rows.iter().enumerate() {
            if suppressed_in(i) == 0 {
                continue;
            }
            for s in d.suppressed.iter().filter(|s| s[0] == i) {
                assert!(g[s[1]].is_null(), "{sql}: suppressed cell shows a value");
            }
            match expected.iter().find(|e| matches(g, e)) {
                // A raw row: its suppressed cells were empty.
                Some(e) if full.iter().all(|f| f != &e) => {
                    for s in d.suppressed.iter().filter(|s| s[0] == i) {
                        let v = &e[s[1]];
                        assert!(
                            v.is_null() || v.as_f64() == Some(0.0),
                            "{sql}: a non-empty cell {v} was suppressed with rules off"
                        );
                    }
                }
                // A padding row: its shown cells are keys; everything else is suppressed.
                _ => {
                    let shown = g.iter().filter(|v| !v.is_null()).count();
                    assert_eq!(
                        shown + suppressed_in(i),
                        g.len(),
                        "{sql}: padding row {g:?}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn default_rules_only_null_cells_never_change_values() {
    // Under the real rules, every released non-null cell still equals the raw value.
    let (ctx, catalog) = registry();
    let rules = DisclosureRules::embedded().unwrap();
    for sql in SHAPES {
        let expected = raw(&ctx, sql).await;
        let got = run_query(&ctx, sql, &catalog, &rules, &Limits::default())
            .await
            .unwrap();
        // Sealing may remove rows (e.g. HAVING over a suppressed count); every released
        // row must still match a raw row on all of its non-null cells.
        // Padding rows (all non-key cells null) need not be raw rows.
        let d = &got.result.disclosure;
        for (i, g) in got.result.rows.iter().enumerate() {
            let nsup = d.suppressed.iter().filter(|s| s[0] == i).count();
            let padding = g.iter().filter(|v| !v.is_null()).count() + nsup == g.len() && nsup > 0;
            let found = expected.iter().any(|e| matches(g, e));
            assert!(
                found || padding,
                "{sql}: released row {g:?} is not a raw row"
            );
        }
        // Every raw row whose cells all pass still leaves (fully released rows are never
        // lost to padding or reordering).
        for (i, g) in got.result.rows.iter().enumerate() {
            if d.suppressed.iter().all(|s| s[0] != i) {
                assert!(expected.contains(g), "{sql}: {g:?}");
            }
        }
    }
}
