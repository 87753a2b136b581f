//! Attack regression tests for the query core: each test names the attack it stops and
//! asserts what the attacker would have learnt is not released.

use kura::engine::Limits;
use kura::privacy::DisclosureRules;
use kura::query::{QueryError, QueryOutcome, run_query};
use serde_json::{Value, json};

use crate::qc_fixture::registry;
use crate::support::outcome::has_note;

pub async fn run(sql: &str) -> Result<QueryOutcome, QueryError> {
    let (ctx, catalog) = registry();
    let rules = DisclosureRules::embedded().unwrap();
    run_query(&ctx, sql, &catalog, &rules, &Limits::default()).await
}

async fn ok(sql: &str) -> QueryOutcome {
    match run(sql).await {
        Ok(o) => o,
        Err(e) => panic!("{sql}: refused with {}: {}", e.code(), e.internal_detail()),
    }
}

async fn refused(sql: &str, code: &str) -> QueryError {
    match run(sql).await {
        Ok(o) => panic!("{sql}: expected {code}, got rows {:?}", o.result.rows),
        Err(e) => {
            assert_eq!(e.code(), code, "{sql}: {e}");
            e
        }
    }
}

/// Every statement of `sqls` is refused with `code`.
async fn refused_all(code: &str, sqls: &[&str]) {
    for sql in sqls {
        refused(sql, code).await;
    }
}

fn rows(o: &QueryOutcome) -> &Vec<Vec<Value>> {
    &o.result.rows
}

/// The released row whose first column is `key` (suppressed rows move to the end, so
/// tests look rows up by key rather than by position).
fn row_for(o: &QueryOutcome, key: Value) -> &Vec<Value> {
    rows(o)
        .iter()
        .find(|r| r[0] == key)
        .unwrap_or_else(|| panic!("no row for {key}: {:?}", rows(o)))
}

#[tokio::test]
async fn count_distinct_pid_by_public_key_passes_and_small_cell_is_suppressed() {
    let o = ok("SELECT prefecture_code, count(DISTINCT pid) AS n FROM patient GROUP BY prefecture_code ORDER BY prefecture_code").await;
    assert_eq!(
        rows(&o),
        &vec![
            vec![json!("01"), json!(17)],
            vec![json!("13"), json!(40)],
            vec![json!("47"), Value::Null]
        ]
    );
    assert_eq!(o.result.disclosure.suppressed, vec![[2, 1]]);
    assert_eq!(o.result.disclosure.threshold, 5);
    assert_eq!(
        o.result.columns.len(),
        2,
        "hidden helper columns must not leave"
    );
    assert!(!o.result.disclosure.notes.is_empty());
}

#[tokio::test]
async fn attack_conditional_aggregate_filter_on_single_pid() {
    let o = ok("SELECT count(*) FILTER (WHERE pid = 'p07') AS target, count(*) AS total FROM nanbyo_survey").await;
    assert_eq!(rows(&o), &vec![vec![Value::Null, json!(80)]]);
    assert_eq!(o.result.disclosure.suppressed, vec![[0, 0]]);
}

#[tokio::test]
async fn attack_conditional_aggregate_case_on_single_pid() {
    let o = ok("SELECT sum(CASE WHEN pid = 'p07' THEN severity ELSE 0 END) AS s, \
                avg(CASE WHEN pid = 'p07' THEN creatinine END) AS a, count(*) AS n FROM nanbyo_survey")
    .await;
    assert_eq!(rows(&o)[0][0], Value::Null);
    assert_eq!(rows(&o)[0][1], Value::Null);
    assert_eq!(rows(&o)[0][2], json!(80));
}

#[tokio::test]
async fn attack_group_by_pid_is_row_level() {
    let e = refused(
        "SELECT pid, count(*) FROM nanbyo_survey GROUP BY pid",
        "row_level_output",
    )
    .await;
    assert!(e.public_message().contains("COUNT(DISTINCT pid)"));
    let rows = [
        "SELECT * FROM patient",
        "SELECT sex FROM patient WHERE pid = 'p07'",
    ];
    refused_all("row_level_output", &rows).await;
}

#[tokio::test]
async fn attack_high_cardinality_key_rows_dropped() {
    // Every birth year is unique in the fixture: no row may leave, and birth_year is not a
    // public domain, so the rows are dropped rather than shown with null counts.
    let o = ok("SELECT birth_year, count(*) AS n FROM patient GROUP BY birth_year").await;
    assert!(rows(&o).is_empty(), "{:?}", rows(&o));
    // Removed rows are not counted (the count would count small groups, issue 11).
    assert_eq!(o.result.disclosure.dropped_rows, 0);
    assert!(has_note(&o, "not counted"));
    // SELECT DISTINCT is a GROUP BY without aggregates: same rule.
    let o = ok("SELECT DISTINCT birth_year FROM patient").await;
    assert!(rows(&o).is_empty());
}

#[tokio::test]
async fn attack_union_target_with_padding_rows() {
    let o = ok("SELECT sex, count(*) AS n FROM (SELECT sex FROM patient WHERE pid = 'p07' \
                UNION ALL SELECT 'F' FROM prefecture UNION ALL SELECT 'F' FROM prefecture) t GROUP BY sex")
    .await;
    // The union has no catalogue lineage, so its keys cannot be padded: the failing row
    // (padding rows must not count as patients) is dropped rather than shown.
    assert!(rows(&o).is_empty(), "{:?}", rows(&o));
    assert_eq!(o.result.disclosure.dropped_rows, 0, "removed, not counted");
    assert!(has_note(&o, "not counted"));
}

#[tokio::test]
async fn attack_error_oracle_divide_by_zero_and_cast() {
    // Without hardening these fail exactly when the target's value is 3 / not numeric.
    let o =
        ok("SELECT count(*) AS n FROM nanbyo_survey WHERE pid = 'p07' AND 1 / (severity - 3) > 0")
            .await;
    assert_eq!(rows(&o)[0][0], Value::Null);
    let o = ok("SELECT count(*) AS n FROM patient WHERE CAST(pid AS INT) > 0").await;
    assert_eq!(rows(&o)[0][0], Value::Null, "count 0 < k");
    let o = ok(
        "SELECT sex, avg(100 % (birth_year - 1947)) AS x FROM patient GROUP BY sex ORDER BY sex",
    )
    .await;
    assert_eq!(rows(&o).len(), 2);
}

#[tokio::test]
async fn attack_error_oracle_message_never_carries_values() {
    // An execution error must surface as a generic execution_error whose public text
    // carries no value, and be counted. Functions no longer fail on data values
    // (tests/it/functions.rs), so the failure is provoked with `safe_functions` off.
    let before = kura::query::suppression::execution_errors();
    let (ctx, catalog) = registry();
    let rules = DisclosureRules::embedded()
        .unwrap()
        .with_defences(kura::privacy::Defences {
            safe_functions: false,
            ..kura::privacy::Defences::ALL
        });
    let sql = "SELECT count(*) AS n FROM patient WHERE to_date('x' || pid) > current_date()";
    let e = run_query(&ctx, sql, &catalog, &rules, &Limits::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "execution_error", "{e:?}");
    assert!(
        e.internal_detail().contains("error"),
        "audit detail keeps the cause: {}",
        e.internal_detail()
    );
    assert!(!e.public_message().contains("xp"), "{}", e.public_message());
    assert!(!e.to_string().contains("xp"), "{e}");
    assert!(kura::query::suppression::execution_errors() > before);
}

#[tokio::test]
async fn attack_file_and_statement_escapes_refused() {
    for sql in [
        "COPY (SELECT * FROM patient) TO '/tmp/x.csv'",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/data/'",
        "SELECT * FROM read_parquet('/data/patient.parquet')",
        "SELECT count(*) FROM '/data/patient.parquet'",
        "SELECT count(*) FROM 'https://example.org/x.parquet'",
        "SELECT * FROM generate_series(1, 10)",
        "EXPLAIN ANALYZE SELECT count(*) FROM patient WHERE pid = 'p07'",
        "EXPLAIN SELECT count(*) FROM patient",
        "DESCRIBE patient",
        "INSERT INTO patient VALUES ('x', 'M', 1990, '13')",
        "SET datafusion.execution.batch_size = 1",
        "CREATE TABLE t AS SELECT * FROM patient",
        "CREATE VIEW v AS SELECT * FROM patient",
        "PREPARE q AS SELECT count(*) FROM patient",
        "SELECT count(*) FROM patient; SELECT count(*) FROM patient",
    ] {
        refused(sql, "statement_not_allowed").await;
    }
}

#[tokio::test]
async fn attack_min_max_on_sensitive_column() {
    let e = refused(
        "SELECT max(birth_year) FROM patient",
        "unsupported_aggregate",
    )
    .await;
    assert!(e.to_string().contains("public-domain"));
    refused(
        "SELECT disease_no, min(creatinine) FROM nanbyo_survey GROUP BY disease_no",
        "unsupported_aggregate",
    )
    .await;
    // Public-domain column: fine.
    let o = ok("SELECT min(fiscal_year) AS a, max(fiscal_year) AS b FROM nanbyo_survey").await;
    assert_eq!(rows(&o)[0], vec![json!(2023), json!(2024)]);
}

#[tokio::test]
async fn attack_value_carrying_aggregates_refused() {
    for sql in [
        "SELECT array_agg(pid) FROM patient",
        "SELECT string_agg(pid, ',') FROM patient",
        "SELECT first_value(birth_year) FROM patient",
        "SELECT sex, last_value(pid) FROM patient GROUP BY sex",
    ] {
        refused(sql, "unsupported_aggregate").await;
    }
}

#[tokio::test]
async fn per_patient_only_aggregates_stay_inside_one_patient() {
    // A per-patient slope, then averaged over patients: allowed.
    let o = ok("SELECT count(*) AS n, avg(slope) AS mean_slope FROM \
                (SELECT pid, regr_slope(severity, fiscal_year) AS slope FROM nanbyo_survey GROUP BY pid) t WHERE slope IS NOT NULL")
    .await;
    assert_eq!(rows(&o)[0][0], json!(20));
    // The same aggregate over patients would leak (two points give one patient's value).
    refused_all(
        "unsupported_aggregate",
        &[
            "SELECT regr_slope(severity, fiscal_year) FROM nanbyo_survey",
            "SELECT disease_no, corr(severity, creatinine) FROM nanbyo_survey GROUP BY disease_no",
        ],
    )
    .await;
}

#[tokio::test]
async fn attack_dominance_one_huge_value() {
    // p07 has pao2 = 5000, every other record 1.0: disease 2's sum is dominated.
    // Suppressed rows follow the released ones, so rows are looked up by key.
    let o = ok("SELECT disease_no, sum(pao2) AS s, count(DISTINCT pid) AS n FROM nanbyo_survey GROUP BY disease_no").await;
    let d2 = row_for(&o, json!(2));
    assert_eq!(d2[1], Value::Null, "dominated sum must be suppressed");
    assert_eq!(
        d2[2],
        json!(30),
        "the count of the same row is not dominated"
    );
    let d6 = row_for(&o, json!(6));
    assert!(d6[1].is_number(), "disease 6 sum is not dominated: {d6:?}");
    assert_eq!(
        row_for(&o, json!(97))[1],
        Value::Null,
        "disease 97 has 2 patients"
    );
    // Among many zeros: contributors to a SUM are only the non-zero ones.
    let o =
        ok("SELECT sum(CASE WHEN pao2 > 100 THEN pao2 ELSE 0 END) AS s FROM nanbyo_survey").await;
    assert_eq!(rows(&o)[0][0], Value::Null);
}

#[tokio::test]
async fn attack_nested_aggregate_with_small_inner_groups() {
    // Prefecture 47 has 3 patients: a total of the sealed prefectures (57) beside the total
    // (60) gives it by subtraction, and counting the inner groups tells which exist. Every
    // aggregation over the cells of another aggregation is refused (`over_cells.rs`; the
    // controls are in differencing.rs).
    refused_all(
        "unsupported_query",
        &[
            "SELECT count(*) AS cells, sum(n) AS total FROM \
             (SELECT prefecture_code, count(DISTINCT pid) AS n FROM patient GROUP BY prefecture_code) t",
            "SELECT count(*) AS groups FROM (SELECT birth_year, count(*) AS c FROM patient GROUP BY birth_year) t",
            "SELECT sum(a) AS s FROM (SELECT disease_no, avg(creatinine) AS a FROM nanbyo_survey WHERE disease_no = 97 GROUP BY disease_no) t",
        ],
    )
    .await;
    // Aggregating per patient first stays allowed (patient rows, not cells).
    let o = ok("SELECT count(*) AS patients FROM (SELECT pid, count(*) AS visits FROM nanbyo_survey GROUP BY pid) t").await;
    assert_eq!(rows(&o)[0], vec![json!(60)]);
}

#[tokio::test]
async fn attack_having_and_order_by_oracle_on_suppressed_cell() {
    // HAVING sees the sealed (null) value, so it cannot test a suppressed count.
    // The answer is the all-null padding of the prefecture domain, whatever the counts.
    let none = ok("SELECT prefecture_code, count(*) AS n FROM patient GROUP BY prefecture_code HAVING count(*) = 999999").await;
    let all_null = vec![
        vec![json!("01"), Value::Null],
        vec![json!("13"), Value::Null],
        vec![json!("47"), Value::Null],
    ];
    assert_eq!(rows(&none), &all_null);
    let o = ok("SELECT prefecture_code, count(*) AS n FROM patient GROUP BY prefecture_code HAVING count(*) = 3").await;
    assert_eq!(rows(&o), rows(&none));
    assert_eq!(
        o.result.disclosure.suppressed,
        none.result.disclosure.suppressed
    );
    let o = ok("SELECT prefecture_code, count(*) AS n FROM patient GROUP BY prefecture_code HAVING count(*) < 5").await;
    assert_eq!(rows(&o), rows(&none));
}

#[tokio::test]
async fn attack_facility_threshold() {
    // Prefecture 01: 17 patients but only 2 facilities (H0, H1).
    let o = ok("SELECT prefecture_code, count(DISTINCT pid) AS n FROM nanbyo_survey GROUP BY prefecture_code ORDER BY prefecture_code").await;
    assert_eq!(row_for(&o, json!("01")), &vec![json!("01"), Value::Null]);
    assert_eq!(row_for(&o, json!("13")), &vec![json!("13"), json!(40)]);
    // The same count from the patient table (no facility column) is released.
    let o = ok("SELECT prefecture_code, count(DISTINCT pid) AS n FROM patient GROUP BY prefecture_code ORDER BY prefecture_code").await;
    assert_eq!(rows(&o)[0], vec![json!("01"), json!(17)]);
    // Dropping the facility column in a subquery does not escape the rule.
    let o = ok("SELECT prefecture_code, count(*) AS n FROM (SELECT pid, prefecture_code FROM nanbyo_survey) t GROUP BY prefecture_code ORDER BY prefecture_code").await;
    assert_eq!(row_for(&o, json!("01"))[1], Value::Null);
}

#[tokio::test]
async fn attack_window_function_tricks() {
    // A window total over released cells would be the total without 47 (57 beside 60):
    // refused. A ranking window over the cells stays.
    refused(
        "SELECT prefecture_code, n, sum(n) OVER () AS total FROM \
         (SELECT prefecture_code, count(DISTINCT pid) AS n FROM patient GROUP BY prefecture_code) t ORDER BY prefecture_code",
        "unsupported_query",
    )
    .await;
    let o = ok("SELECT prefecture_code, n, rank() OVER (ORDER BY n DESC) AS r FROM \
                (SELECT prefecture_code, count(DISTINCT pid) AS n FROM patient GROUP BY prefecture_code) t ORDER BY prefecture_code")
    .await;
    assert_eq!(rows(&o)[0], vec![json!("01"), json!(17), json!(2)]);
    // 47's row is removed before the window and padded back with every cell null.
    assert_eq!(rows(&o)[2], vec![json!("47"), Value::Null, Value::Null]);
    // Windows over patient rows across patients are refused.
    refused_all(
        "unsupported_query",
        &[
            "SELECT count(*) FROM (SELECT lag(birth_year) OVER (ORDER BY pid) AS prev FROM patient) t WHERE prev = 1947",
            "SELECT pid, row_number() OVER (ORDER BY birth_year) FROM patient",
        ],
    )
    .await;
}

#[tokio::test]
async fn attack_scalar_subquery_smuggling_single_patient() {
    refused_all(
        "unsupported_query",
        &[
            "SELECT count(*), (SELECT birth_year FROM patient WHERE pid = 'p07') FROM patient",
            "SELECT count(DISTINCT pid) FROM patient WHERE birth_year = (SELECT birth_year FROM patient WHERE pid = 'p07')",
            "SELECT count(*) FROM patient WHERE EXISTS (SELECT 1 FROM nanbyo_survey s WHERE s.pid = 'p07' AND s.severity = 5)",
        ],
    )
    .await;
    // An aggregated subquery, even sealed, may not set a threshold over patient rows: one
    // patient moved through its WHERE would flip the outer count (tests/it/ordering.rs).
    refused(
        "SELECT count(*) AS n FROM patient WHERE birth_year > (SELECT avg(birth_year) FROM patient WHERE pid = 'p07')",
        "unsupported_query",
    )
    .await;
}

#[tokio::test]
async fn attack_join_mixing_patients_or_filtering_reference_tables() {
    refused_all(
        "unsupported_query",
        &[
            "SELECT count(*) FROM patient a JOIN nanbyo_survey b ON a.sex = b.application_type",
            "SELECT count(*) FROM patient a CROSS JOIN patient b",
            "SELECT name_en FROM disease WHERE disease_no IN (SELECT disease_no FROM nanbyo_survey WHERE pid = 'p07')",
        ],
    )
    .await;
}

#[tokio::test]
async fn attack_spoofed_helper_column_name() {
    refused("SELECT count(*) AS __kura_n_1 FROM patient", "invalid_sql").await;
}

#[tokio::test]
async fn out_of_scope_table_refused() {
    let e = refused("SELECT count(*) FROM als_visit", "out_of_scope").await;
    assert!(e.public_message().contains("als_visit"));
}

#[tokio::test]
async fn reference_tables_release_without_checks() {
    let o = ok("SELECT disease_no, name_en FROM disease ORDER BY disease_no").await;
    assert_eq!(rows(&o).len(), 3);
    assert_eq!(o.result.disclosure.suppressed_cells, 0);
}

#[tokio::test]
async fn fingerprint_ignores_literals() {
    let a = ok("SELECT count(*) AS n FROM patient WHERE birth_year > 1950").await;
    let b = ok("SELECT count(*) AS n FROM patient WHERE birth_year > 1960").await;
    let c = ok("SELECT count(*) AS n FROM patient WHERE birth_year < 1950").await;
    assert_eq!(a.plan_fingerprint, b.plan_fingerprint);
    assert_ne!(a.plan_fingerprint, c.plan_fingerprint);
    assert_eq!(a.plan_fingerprint.len(), 64);
    assert_eq!(a.tables, vec!["patient".to_string()]);
}

#[tokio::test]
async fn row_cap_gives_resource_limit() {
    let (ctx, catalog) = registry();
    let rules = DisclosureRules::embedded().unwrap();
    let limits = Limits {
        max_rows: 1,
        ..Limits::default()
    };
    let e = run_query(
        &ctx,
        "SELECT sex, count(*) FROM patient GROUP BY sex",
        &catalog,
        &rules,
        &limits,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "resource_limit");
}

#[tokio::test]
async fn approval_threshold_raises_k() {
    let (ctx, catalog) = registry();
    let rules = DisclosureRules::embedded().unwrap().with_threshold(20);
    let o = run_query(&ctx, "SELECT prefecture_code, count(DISTINCT pid) AS n FROM patient GROUP BY prefecture_code ORDER BY 1", &catalog, &rules, &Limits::default())
        .await
        .unwrap();
    // Fully released rows first, then suppressed ones in domain order.
    assert_eq!(o.result.rows[0], vec![json!("13"), json!(40)]);
    assert_eq!(o.result.rows[1], vec![json!("01"), Value::Null]);
    assert_eq!(o.result.rows[2], vec![json!("47"), Value::Null]);
    assert_eq!(o.result.disclosure.threshold, 20);
}

#[tokio::test]
async fn rounding_applies_to_released_counts_only() {
    let (ctx, catalog) = registry();
    let rules =
        DisclosureRules::from_toml("schema_version = 1\n[defaults]\nrounding = 5\n").unwrap();
    let o = run_query(
        &ctx,
        "SELECT prefecture_code, count(DISTINCT pid) AS n, avg(birth_year) AS a FROM patient GROUP BY prefecture_code ORDER BY 1",
        &catalog,
        &rules,
        &Limits::default(),
    )
    .await
    .unwrap();
    // 17 patients in 01 → 15; 40 in 13 stays 40; averages are not counts.
    assert_eq!(o.result.rows[0][1], json!(15));
    assert_eq!(o.result.rows[1][1], json!(40));
    assert!(
        o.result.rows[0][2]
            .as_f64()
            .is_some_and(|a| a.fract() != 0.0 || a > 1900.0)
    );
    assert_eq!(o.result.disclosure.rounding, Some(5));
    assert!(has_note(&o, "rounded"));
}

#[tokio::test]
async fn attack_union_of_patient_tables_keeps_the_unit() {
    // Two patient tables stacked: contributors are still distinct patients.
    let o = ok("SELECT prefecture_code, count(*) AS rows_n FROM (SELECT pid, prefecture_code FROM patient \
                UNION ALL SELECT pid, prefecture_code FROM nanbyo_survey) t GROUP BY prefecture_code")
    .await;
    // A union has no catalogue lineage, so failing rows cannot be padded: 47 (3 patients)
    // and 01 (2 facilities through nanbyo_survey) are dropped.
    assert_eq!(rows(&o).len(), 1, "{:?}", rows(&o));
    assert_eq!(o.result.disclosure.dropped_rows, 0, "removed, not counted");
    assert!(row_for(&o, json!("13"))[1].as_i64().is_some_and(|n| n > 40));
}

/// What a researcher sees of a result: rows, suppressed cells, dropped-row count.
fn visible(o: &QueryOutcome) -> (Vec<Vec<Value>>, Vec<[usize; 2]>, usize) {
    (
        o.result.rows.clone(),
        o.result.disclosure.suppressed.clone(),
        o.result.disclosure.dropped_rows,
    )
}

#[tokio::test]
async fn attack_public_key_row_presence_reveals_attribute() {
    // p01: F, prefecture 13, disease 2. p42: M, prefecture 01, disease 6. Isolating one
    // pseudonym and grouping by a public key used to return the one row of its value.
    let templates = [
        (
            "SELECT sex, count(DISTINCT pid) AS n FROM patient WHERE pid = '{x}' GROUP BY sex",
            2,
        ),
        (
            "SELECT prefecture_code, count(DISTINCT pid) AS n FROM patient WHERE pid = '{x}' GROUP BY prefecture_code",
            3,
        ),
        (
            "SELECT disease_no, count(*) AS n, avg(creatinine) AS a FROM nanbyo_survey WHERE pid = '{x}' GROUP BY disease_no",
            3,
        ),
        (
            "SELECT sex, prefecture_code, count(*) AS n FROM patient WHERE pid = '{x}' GROUP BY sex, prefecture_code",
            6,
        ),
        (
            "SELECT fiscal_year, disease_no, count(DISTINCT pid) AS n FROM nanbyo_survey WHERE pid = '{x}' GROUP BY fiscal_year, disease_no ORDER BY 1",
            11 * 3,
        ),
        (
            "SELECT sex AS s, count(*) AS n FROM patient WHERE pid = '{x}' GROUP BY sex HAVING count(*) IS NULL",
            2,
        ),
    ];
    for (t, domain) in templates {
        let a = ok(&t.replace("{x}", "p01")).await;
        let b = ok(&t.replace("{x}", "p42")).await;
        assert_eq!(
            visible(&a),
            visible(&b),
            "{t}: the two targets are distinguishable"
        );
        // The answer is the full padded domain with every aggregate cell null.
        assert_eq!(rows(&a).len(), domain, "{t}: {:?}", rows(&a));
        let nkeys = if t.contains("sex, prefecture_code") || t.contains("fiscal_year, disease_no") {
            2
        } else {
            1
        };
        for (i, r) in rows(&a).iter().enumerate() {
            assert!(r[..nkeys].iter().all(|v| !v.is_null()), "{t}: {r:?}");
            for (k, v) in r.iter().enumerate().skip(nkeys) {
                assert!(v.is_null(), "{t}: {r:?}");
                assert!(
                    a.result.disclosure.suppressed.contains(&[i, k]),
                    "{t}: [{i},{k}] not listed"
                );
            }
        }
        assert_eq!(a.result.disclosure.dropped_rows, 0, "{t}");
        assert!(has_note(&a, "every combination"), "{t}");
    }
    // SELECT DISTINCT (keys only): the padded domain, and a note saying no row is released.
    let a = ok("SELECT DISTINCT sex FROM patient WHERE pid = 'p01'").await;
    let b = ok("SELECT DISTINCT sex FROM patient WHERE pid = 'p42'").await;
    assert_eq!(visible(&a), visible(&b));
    assert_eq!(rows(&a), &vec![vec![json!("M")], vec![json!("F")]]);
    assert!(
        a.result
            .disclosure
            .notes
            .iter()
            .any(|n| n.contains("only the first 0 row(s)")),
        "{:?}",
        a.result.disclosure.notes
    );
    // Padding values are typed like the key column (Int32 keys stay numbers).
    let o = ok(
        "SELECT disease_no, count(*) AS n FROM nanbyo_survey WHERE pid = 'p01' GROUP BY disease_no",
    )
    .await;
    assert_eq!(o.result.columns[0].type_name, "Int32");
    assert_eq!(rows(&o)[0][0], json!(2));
    // An ungrouped aggregate keeps its single row, whatever the target.
    let a =
        ok("SELECT count(DISTINCT pid) AS n FROM patient WHERE pid = 'p01' AND sex = 'F'").await;
    let b =
        ok("SELECT count(DISTINCT pid) AS n FROM patient WHERE pid = 'p42' AND sex = 'F'").await;
    assert_eq!(visible(&a), visible(&b));
    assert_eq!(rows(&a), &vec![vec![Value::Null]]);
    // A grouped aggregate that hides its key cannot be padded: its failing row is dropped
    // either way, so the row count (1 or 0) no longer answers "is x female?".
    let a =
        ok("SELECT count(*) AS n FROM patient WHERE pid = 'p01' AND sex = 'F' GROUP BY sex").await;
    let b =
        ok("SELECT count(*) AS n FROM patient WHERE pid = 'p42' AND sex = 'F' GROUP BY sex").await;
    assert!(rows(&a).is_empty() && rows(&b).is_empty());
    // A count of the groups of a sealed inner aggregation is refused for both (an
    // aggregation over cells), so it cannot tell them apart either.
    let q = "SELECT count(*) AS groups FROM (SELECT sex, count(*) AS c FROM patient WHERE pid = '{x}' AND sex = 'F' GROUP BY sex) t";
    refused(&q.replace("{x}", "p01"), "unsupported_query").await;
    refused(&q.replace("{x}", "p42"), "unsupported_query").await;
}

#[tokio::test]
async fn attack_having_is_null_isolates_small_groups() {
    // HAVING … IS NULL keeps exactly the suppressed groups; prefecture 47 has 3 patients.
    // The answer must be the same whether 47 is small-but-non-empty or empty.
    let q = "SELECT prefecture_code, count(DISTINCT pid) AS n FROM patient WHERE {w} \
             GROUP BY prefecture_code HAVING count(DISTINCT pid) IS NULL";
    let with47 = ok(&q.replace("{w}", "true")).await;
    let without47 = ok(&q.replace("{w}", "prefecture_code <> '47'")).await;
    assert_eq!(visible(&with47), visible(&without47));
    assert!(
        rows(&with47).iter().all(|r| r[1].is_null()),
        "{:?}",
        rows(&with47)
    );
    // Same through a filtering subquery.
    let q = "SELECT prefecture_code, n FROM (SELECT prefecture_code, count(*) AS n FROM patient WHERE {w} \
             GROUP BY prefecture_code) t WHERE n IS NULL OR n < 5";
    let with47 = ok(&q.replace("{w}", "true")).await;
    let without47 = ok(&q.replace("{w}", "prefecture_code <> '47'")).await;
    assert_eq!(visible(&with47), visible(&without47));
}

#[tokio::test]
async fn attack_row_order_reveals_nonempty_groups() {
    // Two datasets differing only in which small group is non-empty (47 holds p58, or 01
    // holds p41). Whatever order the query asks for, suppressed rows come after the fully
    // released ones in domain order, so the position of a null row says nothing.
    for order in [
        "ORDER BY prefecture_code DESC",
        "ORDER BY n DESC",
        "ORDER BY n ASC NULLS FIRST",
        "",
    ] {
        let q = format!(
            "SELECT prefecture_code, count(DISTINCT pid) AS n FROM patient \
             WHERE prefecture_code = '13' OR pid = '{{x}}' GROUP BY prefecture_code {order}"
        );
        let a = ok(&q.replace("{x}", "p58")).await;
        let b = ok(&q.replace("{x}", "p41")).await;
        assert_eq!(visible(&a), visible(&b), "{q}");
        assert_eq!(
            rows(&a),
            &vec![
                vec![json!("13"), json!(40)],
                vec![json!("01"), Value::Null],
                vec![json!("47"), Value::Null],
            ],
            "{q}"
        );
    }
    // A LIMIT after a sort by the count must not pick a suppressed row first (NULLS
    // FIRST would put 47 on top exactly when it is non-empty).
    let q = "SELECT prefecture_code, count(DISTINCT pid) AS n FROM patient WHERE {w} \
             GROUP BY prefecture_code ORDER BY n ASC NULLS FIRST LIMIT 1";
    let with47 = ok(&q.replace("{w}", "true")).await;
    let without47 = ok(&q.replace("{w}", "prefecture_code <> '47'")).await;
    assert_eq!(visible(&with47), visible(&without47));
    assert_eq!(rows(&with47)[0], vec![json!("01"), json!(17)]);
    // Fully released rows keep the query's order.
    let o = ok("SELECT prefecture_code, count(DISTINCT pid) AS n FROM patient GROUP BY prefecture_code ORDER BY prefecture_code DESC").await;
    assert_eq!(
        rows(&o),
        &vec![
            vec![json!("13"), json!(40)],
            vec![json!("01"), json!(17)],
            vec![json!("47"), Value::Null],
        ]
    );
}

#[tokio::test]
async fn non_paddable_keys_drop_failing_rows() {
    let dropped_note = |o: &QueryOutcome| {
        o.result
            .disclosure
            .notes
            .iter()
            .any(|n| n.contains("cannot be padded") && n.contains("集計キー"))
    };
    // A computed key: 47 ('4') fails and cannot be padded.
    let o = ok("SELECT substr(prefecture_code, 1, 1) AS p1, count(DISTINCT pid) AS n FROM patient GROUP BY 1").await;
    let mut got = rows(&o).clone();
    got.sort_by_key(|r| r[0].to_string());
    assert_eq!(
        got,
        vec![vec![json!("0"), json!(17)], vec![json!("1"), json!(40)]]
    );
    assert_eq!(
        o.result.disclosure.dropped_rows, 0,
        "not counted: {:?}",
        o.result
    );
    assert!(dropped_note(&o), "{:?}", o.result.disclosure.notes);
    // A public column of a reference table (disease names) is its own domain: every name
    // is released, disease 97 (2 patients) with a suppressed count, and nothing is dropped,
    // so `dropped_rows` says nothing about which small groups exist.
    let o = ok(
        "SELECT d.name_en, count(DISTINCT s.pid) AS n FROM nanbyo_survey s JOIN disease d \
                ON s.disease_no = d.disease_no GROUP BY d.name_en",
    )
    .await;
    assert_eq!(rows(&o).len(), 3, "{:?}", rows(&o));
    assert_eq!(rows(&o)[2], vec![json!("Ulcerative colitis"), Value::Null]);
    assert_eq!(o.result.disclosure.dropped_rows, 0);
    // Too many combinations for the row cap: 2 × 3 > 5, so 47's rows (F: 1, M: 2) go.
    let (ctx, catalog) = registry();
    let rules = DisclosureRules::embedded().unwrap();
    let limits = Limits {
        max_rows: 5,
        ..Limits::default()
    };
    let o = run_query(&ctx, "SELECT sex, prefecture_code, count(DISTINCT pid) AS n FROM patient GROUP BY sex, prefecture_code", &catalog, &rules, &limits)
        .await
        .unwrap();
    assert_eq!(rows(&o).len(), 4, "{:?}", rows(&o));
    assert!(
        rows(&o)
            .iter()
            .all(|r| r[1] != json!("47") && r[2].is_number())
    );
    assert_eq!(o.result.disclosure.dropped_rows, 0, "not counted");
    assert!(dropped_note(&o));
}

/// Padding enumerates the approval's scope, not the whole catalogue domain: a study approved
/// for two fiscal years (or a PMS team for its own products) must not get padding rows for
/// years or other manufacturers' products it cannot see.
#[tokio::test]
async fn padding_stays_within_the_approved_scope() {
    use std::sync::Arc;

    let (ctx, catalog) = registry();
    let scope = kura::sql::scope::Scope {
        datasets: vec!["nanbyo".into()],
        fiscal_years: Some(vec![2020, 2021]),
        ..Default::default()
    };
    ctx.state_ref()
        .write()
        .config_mut()
        .set_extension(Arc::new(scope));
    let rules = DisclosureRules::embedded().unwrap();
    let out = run_query(
        &ctx,
        "SELECT fiscal_year, count(DISTINCT pid) AS n FROM nanbyo_survey WHERE pid = 'p01' GROUP BY fiscal_year",
        &catalog,
        &rules,
        &Limits::default(),
    )
    .await
    .unwrap();
    let years: Vec<&Value> = out.result.rows.iter().map(|r| &r[0]).collect();
    assert_eq!(
        years,
        vec![&json!(2020), &json!(2021)],
        "{:?}",
        out.result.rows
    );
    assert!(out.result.rows.iter().all(|r| r[1].is_null()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_deep_and_chain_does_not_kill_the_process() {
    // 20,000 ANDed `1=1` (about 140 kB): without the depth bound, planning this on a
    // 2 MiB tokio worker overflows the stack and aborts the process (measured: from about
    // 175 terms in a debug build). It must be refused, and the worker must survive.
    let chain = |n: usize| vec!["1=1"; n].join(" AND ");
    let deep = format!(
        "SELECT sex, count(*) AS n FROM patient WHERE {} GROUP BY sex",
        chain(20_000)
    );
    let e = tokio::spawn(async move { run(&deep).await.map(|_| ()) })
        .await
        .expect("the worker survives")
        .unwrap_err();
    assert_eq!(e.code(), "invalid_sql", "{e:?}");
    // Control: a chain under the bound is planned and answered on the same kind of worker.
    let short = format!(
        "SELECT sex, count(*) AS n FROM patient WHERE {} GROUP BY sex",
        chain(60)
    );
    let out = tokio::spawn(async move { run(&short).await })
        .await
        .expect("the worker survives");
    assert!(out.is_ok(), "{:?}", out.err());
}
