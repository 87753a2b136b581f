//! Functions that cannot fail on data (issue 11, item 6): every allow-listed scalar and
//! window function is fed hostile values (empty string, NULL, negative, zero, huge,
//! malformed dates, an invalid regular expression built from a column, unicode) through
//! the whole query core, and no `execution_error` may come back. The cases are keyed by
//! the allow-list constants, so a function added to the list without a case fails here.
//! Then the attack this stops: an error that says whether one hidden patient's value
//! passes a test, with its control (`safe_functions` off).

use kura::engine::Limits;
use kura::privacy::{Defences, DisclosureRules};
use kura::query::{QueryError, QueryOutcome, run_query};
use kura::sql::guard::{ALLOWED_SCALAR_FUNCTIONS, ALLOWED_WINDOW_FUNCTIONS};
use serde_json::json;

use crate::qc_fixture::registry;

/// Per patient: a hostile string `s`, integer `n`, float `f` and date string `d`, each
/// cycling through values that make some function fail (chosen by `birth_year`, so the
/// failing rows are data rows).
const HOSTILE: &str = "WITH h AS (SELECT pid, sex, \
  CASE birth_year % 9 WHEN 0 THEN '' WHEN 1 THEN NULL WHEN 2 THEN '日本語🙂' \
    WHEN 3 THEN '2023-02-30' WHEN 4 THEN '(' WHEN 5 THEN 'x%Q%' WHEN 6 THEN pid || '[' \
    WHEN 7 THEN 'garbage' ELSE sex END AS s, \
  CASE birth_year % 8 WHEN 0 THEN 0 WHEN 1 THEN -1 WHEN 2 THEN NULL \
    WHEN 3 THEN 9223372036854775807 WHEN 4 THEN -9223372036854775807 - 1 \
    WHEN 5 THEN 2147483647 WHEN 6 THEN -2147483648 ELSE birth_year END AS n, \
  CASE birth_year % 6 WHEN 0 THEN 0.0 WHEN 1 THEN -1.5 WHEN 2 THEN 1e308 WHEN 3 THEN NULL \
    WHEN 4 THEN -1e308 ELSE birth_year * 1.0 END AS f, \
  CASE birth_year % 5 WHEN 0 THEN '2023-13-01' WHEN 1 THEN '' WHEN 2 THEN NULL \
    WHEN 3 THEN '99999-01-01' ELSE '2020-02-29' END AS d \
  FROM patient)";

/// Hostile calls of each allow-listed scalar function, one `name: call` per line (names as
/// in the allow-list; aliases and operators are called by the name listed).
const SCALAR_CASES: &str = r#"
abs: abs(n)
abs: abs(CAST(n AS INT))
abs: abs(f)
ceil: ceil(f)
ceil: ceil(f / 0.0)
floor: floor(f)
round: round(f, n)
round: round(f, CAST(n AS INT))
round: round(n)
trunc: trunc(f, CAST(n AS INT))
trunc: trunc(f)
sqrt: sqrt(f)
sqrt: sqrt(n)
sqrt: sqrt(-1.0 * length(s))
cbrt: cbrt(f)
cbrt: cbrt(n)
power: power(n, n)
power: power(f, f)
power: power(2, n)
power: power(n, -1)
pow: pow(n, n)
pow: pow(f, -f)
exp: exp(f)
exp: exp(n)
ln: ln(f)
ln: ln(n)
ln: ln(0 * n)
log: log(f)
log: log(n, f)
log: log(0.0 * f, f)
log: log(-1.0, n)
log10: log10(f)
log10: log10(n)
log2: log2(f)
log2: log2(n)
signum: signum(f)
signum: signum(n)
greatest: greatest(n, f)
greatest: greatest(s, d)
least: least(n, f)
least: least(s, pid)
isnan: isnan(f)
isnan: isnan(f / 0.0)
iszero: iszero(f)
iszero: iszero(n)
pi: pi() * n
coalesce: coalesce(s, d)
coalesce: coalesce(n, f)
nullif: nullif(s, '')
nullif: nullif(n, 0)
nvl: nvl(s, d)
nvl2: nvl2(s, n, f)
ifnull: ifnull(n, 0)
lower: lower(s)
upper: upper(s)
substr: substr(s, n)
substr: substr(s, n, n)
substr: substr(s, 1, -1)
substr: substr(s, 0, n)
substring: substring(s FROM n FOR n)
substring: substring(s, 1, -5)
left: left(s, n)
left: left(s, CAST(n AS INT))
right: right(s, n)
length: length(s)
char_length: char_length(s)
character_length: character_length(s)
octet_length: octet_length(s)
concat: concat(s, n, f, d)
concat_ws: concat_ws(s, d, s)
concat_ws: concat_ws(NULL, s)
trim: trim(s)
trim: trim(BOTH s FROM d)
btrim: btrim(s, d)
btrim: btrim(s, '')
ltrim: ltrim(s, s)
rtrim: rtrim(s, d)
lpad: lpad(s, n)
lpad: lpad(s, n, s)
lpad: lpad(s, n, '')
lpad: lpad(s, 2000000000, 'x')
rpad: rpad(s, n, d)
rpad: rpad(s, 2000000000)
replace: replace(s, '', d)
replace: replace(repeat('a', 5000), 'a', repeat('b', 5000))
starts_with: starts_with(s, d)
starts_with: starts_with(s, '')
ends_with: ends_with(s, d)
strpos: strpos(s, d)
strpos: strpos(s, '')
split_part: split_part(s, d, n)
split_part: split_part(s, '-', 0)
split_part: split_part(s, '', n)
initcap: initcap(s)
reverse: reverse(s)
repeat: repeat(s, n)
repeat: repeat(s, length(pid) * 100000000)
repeat: repeat(repeat(s, 5000), 5000)
translate: translate(s, d, s)
translate: translate(s, '', '')
regexp_like: regexp_like(pid, s)
regexp_like: regexp_like(s, pid || '(')
regexp_like: regexp_like(s, d, s)
regexp_like: regexp_like(s, 'a', 'g')
regexp_match: regexp_match(pid, s)
regexp_match: regexp_match(s, '(')
regexp_match: regexp_match(s, d, 'z')
like: s LIKE pid || '\'
like: s LIKE d
like: s ILIKE s
like: s LIKE s ESCAPE '\'
date_part: date_part('year', to_date(d))
date_part: date_part('epoch', to_timestamp(n))
datepart: datepart('month', to_date(d))
date_trunc: date_trunc(s, now())
date_trunc: date_trunc('month', to_timestamp(n))
datetrunc: datetrunc(s, now())
to_char: to_char(to_date(d), s)
to_char: to_char(now(), s)
to_char: to_char(to_timestamp(n), '%Y')
to_date: to_date(s)
to_date: to_date(d)
to_date: to_date(d, s)
to_date: to_date('garbage')
to_date: to_date(n)
make_date: make_date(n, n, n)
make_date: make_date(2023, 2, 30)
make_date: make_date(CAST(n AS INT), 13, 1)
current_date: current_date() > to_date(d)
now: now()
date_bin: date_bin(INTERVAL '0 minutes', to_timestamp(n))
date_bin: date_bin(INTERVAL '1 day', to_timestamp(d))
to_timestamp: to_timestamp(s)
to_timestamp: to_timestamp(d)
to_timestamp: to_timestamp(n)
to_timestamp: to_timestamp(f)
to_timestamp: to_timestamp(n * 100000000000)
to_timestamp: to_timestamp(d, s)
extract: extract(year FROM to_date(d))
extract: extract(epoch FROM to_timestamp(n))
"#;

/// Hostile calls of each allow-listed window function within one patient's rows, one
/// `name: call` per line.
const WINDOW_CASES: &str = r#"
row_number: row_number()
rank: rank()
dense_rank: dense_rank()
percent_rank: percent_rank()
cume_dist: cume_dist()
ntile: ntile(1)
ntile: ntile(9223372036854775807)
lag: lag(s)
lag: lag(s, 9223372036854775807)
lag: lag(n, -1, 0)
lag: lag(s, 0)
lead: lead(n, 2147483647)
lead: lead(s, -5, 'x')
lead: lead(f)
"#;

fn rules(defences: Defences) -> DisclosureRules {
    DisclosureRules::embedded().unwrap().with_defences(defences)
}

async fn run_with(sql: &str, defences: Defences) -> Result<QueryOutcome, QueryError> {
    let (ctx, catalog) = registry();
    run_query(&ctx, sql, &catalog, &rules(defences), &Limits::default()).await
}

fn cases_for(table: &'static str, name: &str) -> Vec<&'static str> {
    let calls: Vec<&str> = table
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| *n == name)
        .map(|(_, call)| call)
        .collect();
    assert!(
        !calls.is_empty(),
        "allow-listed function `{name}` has no hostile case here"
    );
    calls
}

/// Run every case of `names` (from `table`) as `query(call)`; no execution error may come
/// back. Returns the refusals.
async fn hostile(names: &[&str], table: &'static str, query: fn(&str) -> String) -> Vec<String> {
    let mut refused = Vec::new();
    for name in names {
        for call in cases_for(table, name) {
            if let Err(e) = run_with(&query(call), Defences::ALL).await {
                assert_ne!(
                    e.code(),
                    "execution_error",
                    "{name}: {call} failed on a data value: {}",
                    e.internal_detail()
                );
                refused.push(format!("{call}: {e}"));
            }
        }
    }
    refused
}

#[tokio::test]
async fn every_allowed_scalar_function_survives_hostile_values() {
    let refused = hostile(ALLOWED_SCALAR_FUNCTIONS, SCALAR_CASES, |call| {
        format!(
            "{HOSTILE} SELECT sex, count(*) FILTER (WHERE ({call}) IS NULL) AS c FROM h GROUP BY sex"
        )
    })
    .await;
    assert!(refused.is_empty(), "answered, not refused: {refused:#?}");
}

#[tokio::test]
async fn every_allowed_window_function_survives_hostile_values() {
    let refused = hostile(ALLOWED_WINDOW_FUNCTIONS, WINDOW_CASES, |call| {
        format!(
            "{HOSTILE} SELECT sex, count(*) FILTER (WHERE w IS NULL) AS c FROM \
             (SELECT pid, sex, {call} OVER (PARTITION BY pid ORDER BY n) AS w FROM h) x GROUP BY sex"
        )
    })
    .await;
    assert!(refused.is_empty(), "answered, not refused: {refused:#?}");
}

#[tokio::test]
async fn expressions_failing_on_every_row_are_refused_before_execution() {
    let window = |call: &str| {
        format!(
            "SELECT count(t) AS n FROM (SELECT pid, {call} OVER (PARTITION BY pid) AS t FROM patient WHERE pid = 'p07') x"
        )
    };
    let filter =
        |cond: &str| format!("SELECT count(*) AS n FROM patient WHERE pid = 'p07' AND {cond}");
    for (sql, fix) in [
        (window("ntile(0)"), "ntile(4)"),
        (window("ntile(-3)"), "ntile(4)"),
        (filter("sex LIKE 'F!%' ESCAPE '!'"), "backslash"),
        (filter("sex SIMILAR TO pid || '('"), "regexp_like"),
        (filter("sex ~ pid"), "regexp_like"),
        (filter("sex !~* '('"), "regexp_like"),
    ] {
        let e = run_with(&sql, Defences::ALL).await.unwrap_err();
        assert_eq!(e.code(), "unsupported_query", "{sql}: {e}");
        assert!(e.public_message().contains(fix), "{e}");
    }
    // Control: without the defence, a CASE branch that only p07's row reaches fails
    // exactly when p07 was born after the threshold.
    let off = Defences {
        safe_functions: false,
        ..Defences::ALL
    };
    for failing in ["(sex SIMILAR TO pid || '(')", "(sex ~ (pid || '('))"] {
        let pair = oracle_pair(failing);
        assert_eq!(
            classes(&pair, Defences::ALL).await,
            ["unsupported_query", "unsupported_query"]
        );
        assert_eq!(
            classes(&pair, off).await,
            ["execution_error", "answer"],
            "{failing}"
        );
    }
    let e = run_with(&window("ntile(0)"), off).await.unwrap_err();
    assert_eq!(
        e.code(),
        "execution_error",
        "ntile(0) fails at execution without the check"
    );
}

/// The attacker's pair: identical but for the threshold, so one query's CASE reaches the
/// failing call exactly when p07 was born after 1985 (p07: 1989).
fn oracle_pair(failing: &str) -> [String; 2] {
    [1985, 1995].map(|year| {
        format!(
            "SELECT count(*) AS n FROM patient WHERE \
             (CASE WHEN pid = 'p07' AND birth_year > {year} THEN {failing} END) IS NULL"
        )
    })
}

/// Error class of each query: "answer" or the refusal code.
async fn classes(sqls: &[String], defences: Defences) -> Vec<String> {
    let mut out = Vec::new();
    for sql in sqls {
        out.push(match run_with(sql, defences).await {
            Ok(o) => {
                assert_eq!(o.result.rows, vec![vec![json!(60)]], "{sql}");
                "answer".to_string()
            }
            Err(e) => e.code().to_string(),
        });
    }
    out
}

const FAILING_CALLS: &[&str] = &[
    "make_date(birth_year, 13, 1)",
    "to_date('garbage')",
    "split_part(sex, '-', 0)",
    "sqrt(-1.0 * birth_year)",
    "regexp_like(sex, pid || '(')",
    "to_char(now(), sex || '%Q')",
    // Date arithmetic past the end of the date range (Arrow's checked kernel).
    "make_date(birth_year, 1, 1) + INTERVAL '2147464000 days'",
    "make_date(birth_year, 1, 1) - INTERVAL '2147464000 days'",
];

#[tokio::test]
async fn attack_error_oracle_on_one_patients_value_through_functions() {
    for failing in FAILING_CALLS {
        let pair = oracle_pair(failing);
        assert_eq!(
            classes(&pair, Defences::ALL).await,
            ["answer", "answer"],
            "{failing}: both answered alike"
        );
    }
}

#[tokio::test]
async fn control_error_oracle_works_without_safe_functions() {
    let off = Defences {
        safe_functions: false,
        ..Defences::ALL
    };
    for failing in FAILING_CALLS {
        let pair = oracle_pair(failing);
        assert_eq!(
            classes(&pair, off).await,
            ["execution_error", "answer"],
            "{failing}: the error class tells p07's birth year"
        );
    }
}

#[tokio::test]
async fn attack_memory_abort_through_repeat_is_capped() {
    // Without the cap this allocates ~118 GB in one batch and aborts the process.
    let o = run_with(
        "SELECT count(*) FILTER (WHERE repeat(sex, birth_year * 1000000) IS NULL) AS n FROM patient",
        Defences::ALL,
    )
    .await
    .expect("answered");
    assert_eq!(o.result.rows, vec![vec![json!(60)]]);
    let o = run_with(
        "SELECT count(*) FILTER (WHERE length(repeat(sex, 100)) = 100) AS n FROM patient",
        Defences::ALL,
    )
    .await
    .expect("answered");
    assert_eq!(
        o.result.rows,
        vec![vec![json!(60)]],
        "small counts keep their value"
    );
}

// ---------------------------------------------------------------------------------------
// Extreme percentiles count as MIN/MAX (issue 11, item 7)
// ---------------------------------------------------------------------------------------

/// Percentiles that are (or are within a hair of) MIN or MAX of birth_year.
const EXTREME_PERCENTILES: &[&str] = &[
    "percentile_cont(0.0) WITHIN GROUP (ORDER BY birth_year)",
    "percentile_cont(1.0) WITHIN GROUP (ORDER BY birth_year)",
    "percentile_cont(0.001) WITHIN GROUP (ORDER BY birth_year)",
    "approx_percentile_cont(0.0) WITHIN GROUP (ORDER BY birth_year)",
    "approx_percentile_cont(birth_year, 0.999)",
    "percentile_cont(CAST(0 AS DOUBLE)) WITHIN GROUP (ORDER BY birth_year)",
];

#[tokio::test]
async fn attack_extreme_percentile_is_min_or_max() {
    for p in EXTREME_PERCENTILES {
        let sql = format!("SELECT sex, {p} AS x FROM patient GROUP BY sex");
        let e = run_with(&sql, Defences::ALL).await.unwrap_err();
        assert_eq!(e.code(), "unsupported_aggregate", "{p}: {e}");
        assert!(e.public_message().contains("0.250, 0.750"), "{e}");
    }
}

#[tokio::test]
async fn control_extreme_percentile_releases_the_minimum_without_the_defence() {
    let off = Defences {
        percentiles: false,
        ..Defences::ALL
    };
    let (ctx, _) = registry();
    let raw = ctx
        .sql("SELECT min(birth_year) FROM patient WHERE sex = 'F'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let min = datafusion::arrow::util::display::array_value_to_string(raw[0].column(0), 0).unwrap();
    let o = run_with(
        "SELECT percentile_cont(0.0) WITHIN GROUP (ORDER BY birth_year) AS x FROM patient WHERE sex = 'F'",
        off,
    )
    .await
    .expect("answered without the defence");
    assert_eq!(
        o.result.rows[0][0].as_f64(),
        min.parse::<f64>().ok(),
        "the youngest-born patient's exact birth year is released"
    );
}

#[tokio::test]
async fn percentiles_inside_the_range_public_columns_and_per_patient_are_answered() {
    for sql in [
        "SELECT sex, percentile_cont(0.25) WITHIN GROUP (ORDER BY birth_year) AS q1, \
         percentile_cont(0.75) WITHIN GROUP (ORDER BY birth_year) AS q3, \
         approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY birth_year) AS m, \
         median(birth_year) AS md FROM patient GROUP BY sex",
        // A public-domain column may show its extremes, as MIN/MAX may.
        "SELECT percentile_cont(0.0) WITHIN GROUP (ORDER BY fiscal_year) AS x FROM nanbyo_survey",
        // Inside a per-patient GROUP BY pid nothing is released directly.
        "SELECT avg(last) AS a FROM (SELECT pid, percentile_cont(1.0) WITHIN GROUP (ORDER BY severity) AS last \
         FROM nanbyo_survey GROUP BY pid) t",
    ] {
        let o = run_with(sql, Defences::ALL).await;
        assert!(o.is_ok(), "{sql}: {:?}", o.err());
    }
}

#[tokio::test]
async fn percentiles_are_not_answered_under_dp() {
    let (ctx, catalog) = registry();
    for p in ["percentile_cont(0.5)", "percentile_cont(0.0)"] {
        let sql = format!("SELECT {p} WITHIN GROUP (ORDER BY birth_year) AS x FROM patient");
        let params = kura::privacy::result::DpParams {
            epsilon: 1.0,
            bounds: Default::default(),
        };
        let e = kura::query::dp::prepare(
            &ctx,
            &sql,
            &catalog,
            &rules(Defences::ALL),
            &Limits::default(),
            params,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e.code(), "unsupported_aggregate" | "unsupported_query"),
            "{sql}: {e}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The CASE-sum family in DP mode (suppression mode: tests/slt/functions.slt)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn case_sum_family_under_dp_is_answered_or_refused_never_an_execution_error() {
    let (ctx, catalog) = registry();
    let params = || kura::privacy::result::DpParams {
        epsilon: 1.0,
        bounds: Default::default(),
    };
    let dp = |sql: &'static str| {
        let (ctx, catalog) = (ctx.clone(), catalog.clone());
        async move {
            kura::query::dp::run_dp_query(
                &ctx,
                sql,
                &catalog,
                &rules(Defences::ALL),
                &Limits::default(),
                params(),
            )
            .await
        }
    };
    // DP clamps bare catalogue columns only: a CASE argument is refused with the fix.
    for sql in [
        "SELECT sum(CASE WHEN sex = 'F' AND birth_year > 1970 THEN birth_year ELSE 0 END) AS s FROM patient",
        "SELECT avg(CASE WHEN sex = 'F' AND birth_year > 1970 THEN birth_year ELSE 0.5 END) AS a FROM patient",
    ] {
        let e = dp(sql).await.unwrap_err();
        assert_eq!(e.code(), "unsupported_query", "{sql}: {e}");
    }
    // The same condition as a FILTER, beside a CASE bucket key, is answered.
    for sql in [
        "SELECT sum(birth_year) FILTER (WHERE sex = 'F' AND birth_year > 1970) AS s FROM patient",
        "SELECT CASE WHEN birth_year < 1970 THEN 'before' ELSE 'after' END AS born, \
         avg(birth_year) FILTER (WHERE sex = 'F' AND birth_year > 1950) AS a, count(*) AS n \
         FROM patient GROUP BY 1",
    ] {
        let o = dp(sql).await;
        assert!(
            o.is_ok(),
            "{sql}: {:?}",
            o.err().map(|e| e.internal_detail())
        );
    }
}

#[tokio::test]
async fn attack_error_oracle_through_implicit_comparison_casts() {
    // The planner casts `sex` to a date (an integer) to compare it; a value that is not one
    // fails the cast, so the error says whether p07 is born after 1985.
    let off = Defences {
        safe_functions: false,
        ..Defences::ALL
    };
    for failing in [
        "(to_date('2020-01-01') > sex)",
        "(birth_year = sex)",
        "(birth_year IN (sex, '1'))",
        "(birth_year BETWEEN sex AND '2000')",
        "(CASE sex WHEN to_date('2020-01-01') THEN true END)",
    ] {
        let pair = oracle_pair(failing);
        assert_eq!(
            classes(&pair, Defences::ALL).await,
            ["answer", "answer"],
            "{failing}"
        );
        assert_eq!(
            classes(&pair, off).await,
            ["execution_error", "answer"],
            "control {failing}"
        );
    }
}

#[test]
fn every_allowed_function_has_a_line_in_the_privacy_docs() {
    let docs = include_str!("../../docs/privacy.md");
    let section = docs
        .split("## Allowed functions / 許可された関数")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/privacy.md has the section");
    let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
    for name in ALLOWED_SCALAR_FUNCTIONS
        .iter()
        .chain(ALLOWED_WINDOW_FUNCTIONS)
    {
        let cell = format!("`{name}`");
        assert!(
            rows.iter()
                .any(|r| r.split('|').nth(1).is_some_and(|c| c.contains(&cell))),
            "{name} has no line in the allowed-functions table"
        );
    }
}

#[tokio::test]
async fn subqueries_outside_where_are_refused_with_the_way_out() {
    // DataFusion cannot execute these; they used to end in execution_error.
    for sql in [
        "SELECT sum(CASE WHEN pid IN (SELECT pid FROM nanbyo_survey WHERE severity = 5) THEN birth_year ELSE 0 END) AS s FROM patient",
        "SELECT count(*) FILTER (WHERE pid IN (SELECT pid FROM nanbyo_survey)) AS n FROM patient",
        "SELECT sum(CASE WHEN EXISTS (SELECT 1 FROM disease WHERE disease_no = 2) THEN birth_year ELSE 0 END) AS s FROM patient",
    ] {
        let e = run_with(sql, Defences::ALL).await.unwrap_err();
        assert_eq!(e.code(), "unsupported_query", "{sql}: {e}");
        assert!(e.public_message().contains("WHERE or HAVING"), "{e}");
    }
    let o = run_with(
        "SELECT count(*) AS n FROM patient WHERE pid IN (SELECT pid FROM nanbyo_survey WHERE severity = 5)",
        Defences::ALL,
    )
    .await;
    assert!(o.is_ok(), "in WHERE it runs: {:?}", o.err());
}

/// DECIMAL arithmetic overflows on large values (Arrow's checked kernels): refused before
/// any data is read, whatever the values. Control: without the defence the error class
/// tells p07's birth year.
#[tokio::test]
async fn attack_error_oracle_through_decimal_overflow_is_refused() {
    let failing = "CAST(birth_year AS DECIMAL(38,0)) * CAST(99999999999999999999999999999999999 AS DECIMAL(38,0))";
    let pair = oracle_pair(failing);
    assert_eq!(
        classes(&pair, Defences::ALL).await,
        ["unsupported_query", "unsupported_query"]
    );
    let e = run_with(&pair[0], Defences::ALL).await.unwrap_err();
    assert!(e.public_message().contains("DOUBLE"), "{e}");
    let off = Defences {
        safe_functions: false,
        ..Defences::ALL
    };
    assert_eq!(
        classes(&pair, off).await,
        ["execution_error", "answer"],
        "control: the overflow happens on p07's row only"
    );
}

/// Date arithmetic that stays in range keeps its value (the wrapper changes nothing else).
#[tokio::test]
async fn date_arithmetic_in_range_keeps_its_values() {
    let sql = "SELECT count(*) FILTER (WHERE make_date(birth_year, 1, 1) + INTERVAL '1 year' = make_date(birth_year + 1, 1, 1)) AS same, count(*) AS n FROM patient";
    let o = run_with(sql, Defences::ALL).await.unwrap();
    assert_eq!(o.result.rows, vec![vec![json!(60), json!(60)]]);
}
