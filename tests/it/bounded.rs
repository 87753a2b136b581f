//! Bounded SQL against the real binary (issue 11, item 10): `kura demo` on loopback must
//! stay up and keep answering while one researcher sends queries built to overflow a
//! stack or to make the planner explode — long AND/OR/arithmetic chains, nested CASE,
//! nested function calls and subqueries, huge IN lists, UNION ALL chains, FROM lists of
//! hundreds of tables, and randomly generated deep expressions. Each is refused with its
//! documented code (`invalid_sql`: too deep or too large to parse; `resource_limit`: too
//! large to plan), and a normal query answers after each. In process: the deepest and
//! widest queries the bounds accept run through the whole query core on a quarter of the
//! stack kura plans on.

use kura::sql::size::{MAX_PLAN_DEPTH, MAX_PLAN_NODES};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::support::http::{login_over, token_of};
use crate::support::server::Demo;

const APP: &str = "A-DEMO-0001";
const NORMAL: &str = "SELECT sex, count(DISTINCT pid) AS n FROM patient GROUP BY sex";

/// One researcher's session on the demo.
struct Session {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Session {
    /// Status and body of one query.
    async fn query(&self, sql: &str) -> (u16, Value) {
        let r = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&json!({"application": APP, "sql": sql}))
            .send()
            .await
            .expect("the server answers (it did not die)");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `sql` is refused with `code` (and its bilingual message), then a normal query answers.
    async fn refused_then_alive(&self, what: &str, sql: &str, code: &str) -> Value {
        let (status, v) = self.query(sql).await;
        assert_eq!(v["error"]["code"], code, "{what}: {status} {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        let limit_word = if code == "input_too_long" {
            "超えています"
        } else {
            "上限"
        };
        assert!(
            msg.contains(" / ") && msg.contains(limit_word),
            "{what}: {msg}"
        );
        self.alive(what).await;
        v
    }

    async fn alive(&self, what: &str) {
        let (status, v) = self.query(NORMAL).await;
        assert_eq!(status, 200, "after {what}, a normal query: {v}");
        assert!(!v["rows"].as_array().unwrap().is_empty());
    }
}

async fn session(demo: &Demo) -> Session {
    let base = format!("http://127.0.0.1:{}", demo.port);
    let http = reqwest::Client::new();
    let r = login_over(&http, &base, "researcher1").await.unwrap();
    assert_eq!(r.status(), 200);
    Session {
        token: token_of(r).await,
        url: format!("{base}/api/v1/query"),
        http,
    }
}

fn chain(term: &str, op: &str, n: usize) -> String {
    vec![term; n].join(op)
}

/// A query summing `expr` per sex.
fn summed(expr: String) -> String {
    format!("SELECT sex, sum({expr}) AS n FROM patient GROUP BY sex")
}

fn nested(open: &str, inner: &str, close: &str, n: usize) -> String {
    format!("{}{inner}{}", open.repeat(n), close.repeat(n))
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_the_server_survives_huge_and_deep_queries() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(&dir.path().join("demo"), 500, &[] as &[&str]);
    let s = session(&demo).await;
    s.alive("start").await;
    let where_ =
        |cond: String| format!("SELECT sex, count(*) AS n FROM patient WHERE {cond} GROUP BY sex");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "20,000-term AND",
            where_(chain("1=1", " AND ", 20_000)),
            "invalid_sql",
        ),
        (
            "20,000-term OR",
            where_(chain("birth_year = 1", " OR ", 20_000)),
            "invalid_sql",
        ),
        (
            "20,000-term 1+1+…",
            summed(chain("1", "+", 20_000)),
            "invalid_sql",
        ),
        (
            "20,000-term x*1*1*…",
            summed(format!("birth_year{}", "*1".repeat(20_000))),
            "invalid_sql",
        ),
        // Under the token bound but deeper than the expression bound.
        (
            "1,000-term AND",
            where_(chain("1=1", " AND ", 1_000)),
            "invalid_sql",
        ),
        (
            "CASE nested 300 deep",
            summed(nested(
                "CASE WHEN birth_year > 1 THEN ",
                "1",
                " ELSE 0 END",
                300,
            )),
            "invalid_sql",
        ),
        (
            "CASE nested 60 deep",
            summed(nested("CASE WHEN sex = 'F' THEN ", "1", " END", 60)),
            "invalid_sql",
        ),
        (
            "abs(abs(…)) 60 deep",
            summed(nested("abs(", "birth_year", ")", 60)),
            "invalid_sql",
        ),
        (
            "abs(abs(…)) 20,000 deep",
            summed(nested("abs(", "birth_year", ")", 20_000)),
            "invalid_sql",
        ),
        (
            "(SELECT (SELECT …)) 60 deep",
            format!("SELECT {} AS x", nested("(SELECT ", "1", ")", 60)),
            "invalid_sql",
        ),
        (
            "IN list of 50,000 values",
            where_(format!(
                "birth_year IN ({})",
                (0..50_000)
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            "invalid_sql",
        ),
        (
            // (~700 kB: under the 1 MiB body limit, which refuses anything longer.)
            "UNION ALL of 20,000 branches",
            chain("SELECT count(*) AS n FROM patient", " UNION ALL ", 20_000),
            "invalid_sql",
        ),
        (
            "UNION ALL of 190 aggregates (shallow, too large to plan)",
            chain(
                "SELECT sex, count(*) AS n FROM patient GROUP BY sex",
                " UNION ALL ",
                190,
            ),
            "resource_limit",
        ),
        (
            "JOIN chain of 150 tables (shallow in tokens, deep in the plan)",
            format!(
                "SELECT count(*) AS n FROM disease d0 {}",
                (1..150)
                    .map(|i| format!("CROSS JOIN disease d{i}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            "resource_limit",
        ),
        (
            "FROM list of 150 tables",
            format!(
                "SELECT count(*) AS n FROM {}",
                (0..150)
                    .map(|i| format!("disease d{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "resource_limit",
        ),
        (
            "FROM list of 600 tables",
            format!(
                "SELECT count(*) AS n FROM {}",
                (0..600)
                    .map(|i| format!("disease d{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "resource_limit",
        ),
    ];
    for (what, sql, code) in &cases {
        // Anything longer than the SQL limit of every request is refused before it is
        // parsed; the cases under it (below) reach the parser's and planner's bounds.
        let code = if sql.chars().count() > kura::http::limits::SQL_CHARS {
            "input_too_long"
        } else {
            code
        };
        s.refused_then_alive(what, sql, code).await;
    }
    let under_the_length_limit: Vec<(&str, String)> = vec![
        ("12,000-term AND", where_(chain("1=1", " AND ", 12_000))),
        (
            "5,000-term OR",
            where_(chain("birth_year = 1", " OR ", 5_000)),
        ),
        ("20,000-term 1+1+…", summed(chain("1", "+", 20_000))),
        (
            "abs(abs(…)) 9,000 deep",
            summed(nested("abs(", "birth_year", ")", 9_000)),
        ),
    ];
    for (what, sql) in &under_the_length_limit {
        assert!(
            sql.chars().count() <= kura::http::limits::SQL_CHARS,
            "{what}"
        );
        s.refused_then_alive(what, sql, "invalid_sql").await;
    }
    // An IN list of 5,000 values is within the bounds and is answered.
    let in_list = where_(format!(
        "birth_year IN ({})",
        (1900..6900)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let (status, v) = s.query(&in_list).await;
    assert_eq!(status, 200, "an IN list of 5,000 values: {v}");
    assert_eq!(v["disclosure"]["mode"], "suppression");
    generated_expressions(&s).await;
    cli_query_is_bounded(&dir.path().join("demo/extracts/A-DEMO-0001"), &where_);
    drop(demo);
}

/// `kura query` plans on the same known stacks as the server: the 20,000-term AND is
/// refused (exit 2, `invalid_sql`), not a crash, and a chain at the depth bound answers.
fn cli_query_is_bounded(extract: &std::path::Path, where_: &dyn Fn(String) -> String) {
    let sql_file = extract.with_file_name("bounded.sql");
    let run = |sql: String| {
        std::fs::write(&sql_file, sql).unwrap();
        let out = crate::support::server::kura()
            .arg("query")
            .arg("--extract")
            .arg(extract)
            .arg("--file")
            .arg(&sql_file)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(where_(chain("1=1", " AND ", 20_000)));
    assert_eq!(code, Some(2), "refused, not killed by a signal: {err}");
    assert!(err.contains("invalid_sql"), "{err}");
    let (code, err) = run(where_(chain("1=1", " AND ", 100)));
    assert_eq!(code, Some(0), "{err}");
    // A folder without an extract is a clear refusal (exit 2), not an internal error.
    let out = crate::support::server::kura()
        .args(["query", "--extract"])
        .arg(extract.with_file_name("no-such-application"))
        .arg("SELECT 1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("抽出データのフォルダを読めません"), "{err}");
}

/// A random expression over `birth_year` nesting `depth` levels: operators,
/// parentheses, function calls and CASE, as an attacker's fuzzer would build them (built
/// inside out, iteratively).
fn expression(rng: &mut ChaCha8Rng, depth: usize) -> String {
    let mut a = if rng.random_bool(0.5) {
        "birth_year".to_string()
    } else {
        rng.random_range(1..9).to_string()
    };
    for _ in 0..depth {
        a = match rng.random_range(0..6) {
            0 => format!("{a} + {}", rng.random_range(1..9)),
            1 => format!("({a}) * 1"),
            2 => format!("abs({a})"),
            3 => format!("coalesce({a}, 0)"),
            4 => format!(
                "CASE WHEN birth_year > {} THEN {a} ELSE 0 END",
                rng.random_range(1900..2000)
            ),
            _ => format!("({a} - 1)"),
        };
    }
    a
}

/// Many generated queries of random depth (seeded, so a failure is reproducible): each
/// is answered or refused with a documented code, and the server stays up throughout.
async fn generated_expressions(s: &Session) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut answered, mut refused) = (0, 0);
    for i in 0..120 {
        let depth = match i % 3 {
            0 => rng.random_range(1..30),
            1 => rng.random_range(30..120),
            _ => rng.random_range(120..3_000),
        };
        let sql = summed(expression(&mut rng, depth));
        let (status, v) = s.query(&sql).await;
        match status {
            200 => answered += 1,
            400 | 422 => {
                let code = v["error"]["code"].as_str().unwrap_or_default();
                assert!(
                    ["invalid_sql", "resource_limit"].contains(&code),
                    "case {i} (depth {depth}): {v}"
                );
                refused += 1;
            }
            other => panic!("case {i} (depth {depth}): status {other}: {v}"),
        }
    }
    assert!(
        answered > 10 && refused > 10,
        "answered {answered}, refused {refused}"
    );
    s.alive("the generated expressions").await;
}

/// The query core on a thread of `stack` bytes: `run_query` over the fixture registry.
fn on_stack(stack: usize, sql: String) -> Result<(), String> {
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (ctx, catalog) = crate::qc_fixture::registry();
                let rules = kura::privacy::DisclosureRules::embedded().unwrap();
                let limits = kura::engine::Limits::default();
                kura::query::run_query(&ctx, &sql, &catalog, &rules, &limits)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.code().to_string())
            })
        })
        .unwrap()
        .join()
        .expect("the thread survives")
}

/// The deepest queries the bounds accept run through the whole query core (guard, privacy
/// rewrite, optimizer, execution, disclosure check) on a 2 MiB stack — a quarter of the
/// 8 MiB every kura entry point plans on. An overflow here aborts the test process.
#[test]
fn at_the_bounds_the_query_core_fits_a_quarter_of_its_stack() {
    const STACK: usize = 2 << 20;
    let max_and = chain("1=1", " AND ", 100);
    assert_eq!(on_stack(STACK, where_sex(&max_and)), Ok(()));
    let max_nested = summed(nested("abs(", "birth_year", ")", 15));
    assert_eq!(on_stack(STACK, max_nested), Ok(()));
    let max_case = summed(nested(
        "CASE WHEN birth_year > 1 THEN ",
        "1",
        " ELSE 0 END",
        15,
    ));
    assert_eq!(on_stack(STACK, max_case), Ok(()));
    // Just past each bound: refused before planning, on the same small stack.
    let over = chain("1=1", " AND ", 101);
    assert_eq!(on_stack(STACK, where_sex(&over)), Err("invalid_sql".into()));
    let over = summed(nested("abs(", "birth_year", ")", 16));
    assert_eq!(on_stack(STACK, over), Err("invalid_sql".into()));
    // The widest plan accepted, and one plan node more.
    let branch = "SELECT sex, count(*) AS n FROM patient GROUP BY sex";
    let widest = (1..200)
        .rev()
        .find(|&n| {
            let size = kura_plan_size(&chain(branch, " UNION ALL ", n));
            size.nodes <= MAX_PLAN_NODES && size.depth <= MAX_PLAN_DEPTH
        })
        .unwrap();
    assert_eq!(
        on_stack(STACK, chain(branch, " UNION ALL ", widest)),
        Ok(())
    );
    assert_eq!(
        on_stack(STACK, chain(branch, " UNION ALL ", widest + 1)),
        Err("resource_limit".into())
    );
}

fn where_sex(cond: &str) -> String {
    format!("SELECT sex, count(*) AS n FROM patient WHERE {cond} GROUP BY sex")
}

/// The size of `sql`'s plan as the size bound counts it.
fn kura_plan_size(sql: &str) -> kura::sql::size::PlanSize {
    let (ctx, _) = crate::qc_fixture::registry();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let plan = rt.block_on(ctx.state().create_logical_plan(sql)).unwrap();
    kura::sql::size::plan_size(&plan)
}
