//! Per-application extracts, the session over them, and query limits.
//!
//! Each test names what it stops: out-of-scope rows leaking through results or errors,
//! linking two applications on `pid`, stale or half-written extracts, and queries that
//! exhaust time, rows or memory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, Float64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use kura::catalog::{Catalog, TableKind};
use kura::cli::bench::query::{BenchQueryArgs, bench_query};
use kura::engine::session::{empty_session, register_table};
use kura::engine::{Limits, collect_limited, open_extract};
use kura::privacy::{Disclosure, DisclosureMode, ReleasedColumn, ReleasedResult};
use kura::query::{QueryError, QueryOutcome};
use kura::sql::extract::{
    EXTRACT_MANIFEST, ExtractError, ExtractManifest, build_extract, ensure_extract,
    extract_is_current, repseudonymise,
};
use kura::sql::scope::Scope;
use tempfile::TempDir;

use crate::support::{PREFECTURES, SourceData, V, date, pid_of, write_source_dataset};

const KEY_A: &[u8] = b"application-A-key-0123456789abcd";
const KEY_B: &[u8] = b"application-B-key-0123456789abcd";
/// Every table keyed by `pid`.
const PATIENT_TABLES: [&str; 6] = [
    "patient",
    "nanbyo_survey",
    "als_visit",
    "als_event",
    "regen_treatment",
    "adverse_event",
];

fn catalog() -> Catalog {
    Catalog::embedded().unwrap()
}

fn scope(datasets: &[&str]) -> Scope {
    Scope {
        datasets: datasets.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn limits() -> Limits {
    Limits {
        memory_bytes: 256 << 20,
        timeout: Duration::from_secs(60),
        max_rows: 100_000,
    }
}

/// A temporary directory with `patients` generated patients (seed `seed`) written as a
/// source dataset under `source/`, and those rows.
fn source_fixture(patients: usize, seed: u64) -> (TempDir, Catalog, PathBuf, SourceData) {
    let dir = TempDir::new().unwrap();
    let source = dir.path().join("source");
    let data = write_source_dataset(&source, patients, seed);
    (dir, catalog(), source, data)
}

/// A temporary directory with `data` (generated rows plus planted ones) written as a
/// source dataset under `source/`.
fn write_planted(data: &SourceData) -> (TempDir, Catalog, PathBuf) {
    let dir = TempDir::new().unwrap();
    let (cat, source) = (catalog(), dir.path().join("source"));
    data.write(&source, &cat);
    (dir, cat, source)
}

/// A session over the unscoped source files (what an extract must never be).
fn source_session(source: &Path, cat: &Catalog) -> SessionContext {
    let raw = empty_session(&limits()).unwrap();
    for t in &cat.tables {
        register_table(&raw, source, &t.name, cat).unwrap();
    }
    raw
}

/// Plan and run `sql` under `lim`; a planning error is `invalid_sql`.
async fn run_limited(
    ctx: &SessionContext,
    sql: &str,
    lim: &Limits,
) -> Result<Vec<RecordBatch>, QueryError> {
    let plan = ctx
        .state()
        .create_logical_plan(sql)
        .await
        .map_err(|e| QueryError::InvalidSql {
            message: e.to_string(),
        })?;
    collect_limited(ctx, plan, lim).await
}

async fn batches(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    run_limited(ctx, sql, &limits()).await
}

async fn count(ctx: &SessionContext, sql: &str) -> i64 {
    let b = batches(ctx, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    b[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// Asserts that `sql`, a single count, answers `want`.
async fn assert_count(ctx: &SessionContext, sql: &str, want: i64) {
    assert_eq!(count(ctx, sql).await, want, "{sql}");
}

async fn strings(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches(ctx, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    {
        let col = b.column(0).as_string::<i32>();
        out.extend(col.iter().map(|v| v.unwrap().to_string()));
    }
    out
}

/// The documented patient-set rule (docs/extracts.md), computed naively over the rows,
/// as the oracle for the DataFusion implementation.
fn expected_patients(data: &SourceData, cat: &Catalog, scope: &Scope) -> BTreeSet<String> {
    let col_index = |table: &str, name: &str| {
        cat.table(table)
            .unwrap()
            .columns
            .iter()
            .position(|c| c.name == name)
    };
    // Does a row pass the table's own scope columns?
    let passes = |table: &str, row: &[V]| -> bool {
        let ok_fy = match (&scope.fiscal_years, col_index(table, "fiscal_year")) {
            (Some(list), Some(i)) => list.contains(&(row[i].as_int() as i32)),
            _ => true,
        };
        let ok_dis = match (&scope.diseases, col_index(table, "disease_no")) {
            (Some(list), Some(i)) if table != "disease" => list.contains(&(row[i].as_int() as i32)),
            _ => true,
        };
        let ok_pref = match (&scope.prefectures, col_index(table, "prefecture_code")) {
            (Some(list), Some(i)) => list.iter().any(|p| p == row[i].as_str()),
            _ => true,
        };
        let ok_man = match (&scope.manufacturers, col_index(table, "manufacturer_code")) {
            (Some(list), Some(i)) => list.iter().any(|m| m == row[i].as_str()),
            _ => true,
        };
        ok_fy && ok_dis && ok_pref && ok_man
    };
    let approved: Vec<&str> = cat
        .tables_in(&scope.datasets)
        .filter(|t| t.kind == TableKind::Patient && t.name != "patient")
        .map(|t| t.name.as_str())
        .collect();
    let anchors: BTreeSet<&str> = approved
        .iter()
        .flat_map(|t| {
            data.rows(t)
                .iter()
                .filter(|r| passes(t, r))
                .map(|r| r[0].as_str())
        })
        .collect();
    // Evidence per restricted dimension from any source patient table carrying it.
    let evidence = |column: &str, ok: &dyn Fn(&V) -> bool| -> Option<BTreeSet<String>> {
        let tables: Vec<&str> = cat
            .patient_tables()
            .filter(|t| t.name != "patient" && t.column(column).is_some())
            .map(|t| t.name.as_str())
            .collect();
        if tables.is_empty() {
            return None;
        }
        Some(
            tables
                .iter()
                .flat_map(|t| {
                    let i = col_index(t, column).unwrap();
                    data.rows(t)
                        .iter()
                        .filter(move |r| ok(&r[i]))
                        .map(|r| r[0].as_str().to_string())
                })
                .collect(),
        )
    };
    let mut required: Vec<BTreeSet<String>> = Vec::new();
    if let Some(l) = &scope.fiscal_years {
        required.extend(evidence("fiscal_year", &|v| {
            l.contains(&(v.as_int() as i32))
        }));
    }
    if let Some(l) = &scope.diseases {
        required.extend(evidence("disease_no", &|v| {
            l.contains(&(v.as_int() as i32))
        }));
    }
    if let Some(l) = &scope.prefectures {
        required.extend(evidence("prefecture_code", &|v| {
            l.iter().any(|p| p == v.as_str())
        }));
    }
    if let Some(l) = &scope.manufacturers {
        required.extend(evidence("manufacturer_code", &|v| {
            l.iter().any(|m| m == v.as_str())
        }));
    }
    data.rows("patient")
        .iter()
        .filter(|r| passes("patient", r))
        .map(|r| r[0].as_str().to_string())
        .filter(|p| anchors.contains(p.as_str()))
        .filter(|p| required.iter().all(|s| s.contains(p)))
        .collect()
}

/// Expected rows of one patient table in the extract (source pids).
fn expected_rows<'a>(
    data: &'a SourceData,
    cat: &Catalog,
    scope: &Scope,
    table: &str,
    patients: &BTreeSet<String>,
) -> Vec<&'a [V]> {
    let t = cat.table(table).unwrap();
    data.rows(table)
        .iter()
        .filter(|r| patients.contains(r[0].as_str()))
        .filter(|r| {
            t.columns.iter().enumerate().all(|(i, c)| match c.scope {
                Some(kura::catalog::ScopeDim::FiscalYear) => scope
                    .fiscal_years
                    .as_ref()
                    .is_none_or(|l| l.contains(&(r[i].as_int() as i32))),
                Some(kura::catalog::ScopeDim::Disease) => scope
                    .diseases
                    .as_ref()
                    .is_none_or(|l| l.contains(&(r[i].as_int() as i32))),
                Some(kura::catalog::ScopeDim::Region) => scope
                    .prefectures
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|p| p == r[i].as_str())),
                Some(kura::catalog::ScopeDim::Manufacturer) => scope
                    .manufacturers
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|m| m == r[i].as_str())),
                _ => true,
            })
        })
        .map(Vec::as_slice)
        .collect()
}

fn survey(pid: &str, fy: i64, disease: i64, pref: &str, facility: &str) -> Vec<V> {
    vec![
        V::s(pid),
        V::Int(fy),
        V::Int(disease),
        V::s("new"),
        V::s(pref),
        V::s("80-84"),
        V::Int(2000),
        V::s("60-64"),
        V::Int(3),
        V::Float(1.0),
        V::Float(4.0),
        V::Float(90.0),
        V::Float(40.0),
        V::s(facility),
    ]
}

/// Attack: out-of-scope rows leaking through an error oracle (`1/(x-37)`, a failing
/// cast) or influencing a count. The same queries fail on the unscoped source, which
/// proves the poison is live; on the extract they succeed with the in-scope counts.
#[tokio::test]
async fn out_of_scope_rows_never_influence_results_or_errors() {
    let mut data = SourceData::generate(400, 7);
    // A: lives outside the approved region.
    let a = "a0000000000000000000000000000001";
    data.push_patient(a, "F", 1937, "47");
    data.push("nanbyo_survey", survey(a, 2020, 6, "47", "X-POISON"));
    // B: lives inside, but their only survey is outside the approved region.
    let b = "b0000000000000000000000000000002";
    data.push_patient(b, "M", 1937, "13");
    data.push("nanbyo_survey", survey(b, 2020, 6, "47", "X-POISON"));
    // C: in scope, with one more survey outside the approved region.
    let c = "c0000000000000000000000000000003";
    data.push_patient(c, "M", 1950, "13");
    data.push("nanbyo_survey", survey(c, 2020, 6, "13", "1301"));
    data.push("nanbyo_survey", survey(c, 2021, 6, "47", "X-POISON"));
    let (dir, cat, source) = write_planted(&data);

    let s = Scope {
        prefectures: Some(PREFECTURES.iter().map(|p| p.to_string()).collect()),
        ..scope(&["nanbyo"])
    };
    let out = dir.path().join("A");
    build_extract(&source, &out, &s, KEY_A, &cat).await.unwrap();

    let poison_sum = "SELECT sum(1 / (birth_year - 1937)) FROM patient";
    let poison_cast = "SELECT count(*) FROM nanbyo_survey WHERE CAST(facility_id AS INT) > 0";

    let raw = source_session(&source, &cat);
    for q in [poison_sum, poison_cast] {
        let err = batches(&raw, q)
            .await
            .expect_err("the poison must fire on the source");
        assert_eq!(err.code(), "execution_error", "{q}: {err:?}");
        assert!(!err.public_message().contains("X-POISON"));
    }

    let ctx = open_extract(&out, &cat, &limits()).unwrap();
    batches(&ctx, poison_sum)
        .await
        .expect("no out-of-scope row reaches the expression");
    let patients = expected_patients(&data, &cat, &s);
    assert!(patients.contains(c) && !patients.contains(a) && !patients.contains(b));
    let surveys = expected_rows(&data, &cat, &s, "nanbyo_survey", &patients);
    assert_eq!(count(&ctx, poison_cast).await, surveys.len() as i64);
    assert_count(&ctx, "SELECT count(*) FROM patient", patients.len() as i64).await;
    assert_count(
        &ctx,
        "SELECT count(*) FROM nanbyo_survey WHERE prefecture_code = '47'",
        0,
    )
    .await;
}

/// The patient set and every table's rows follow the documented rule on fiscal year,
/// disease and dataset: an ALS registry patient without a clinical survey of an
/// approved disease is not in an extract restricted to disease 2.
#[tokio::test]
async fn fiscal_year_and_disease_scope_follow_the_documented_rule() {
    let mut data = SourceData::generate(600, 11);
    let lone = "d0000000000000000000000000000004";
    data.push_patient(lone, "F", 1960, "13");
    data.push(
        "als_visit",
        vec![
            V::s(lone),
            V::Date(date(2020, 6, 1)),
            V::Int(2020),
            V::Float(12.0),
            V::Int(40),
            V::Float(80.0),
            V::s("1301"),
        ],
    );
    let (dir, cat, source) = write_planted(&data);
    let s = Scope {
        diseases: Some(vec![2]),
        fiscal_years: Some(vec![2020, 2021]),
        ..scope(&["nanbyo", "als"])
    };
    let out = dir.path().join("als");
    let m = build_extract(&source, &out, &s, KEY_A, &cat).await.unwrap();
    let ctx = open_extract(&out, &cat, &limits()).unwrap();

    let patients = expected_patients(&data, &cat, &s);
    assert!(!patients.contains(lone));
    assert!(patients.len() > 20, "fixture too small: {}", patients.len());
    assert_eq!(m.patients, patients.len() as u64);
    for table in ["patient", "nanbyo_survey", "als_visit", "als_event"] {
        let want = expected_rows(&data, &cat, &s, table, &patients).len() as i64;
        assert_eq!(
            count(&ctx, &format!("SELECT count(*) FROM {table}")).await,
            want,
            "{table}"
        );
        assert_eq!(m.tables[table].rows, want as u64, "{table}");
    }
    assert_count(&ctx, "SELECT count(*) FROM nanbyo_survey WHERE disease_no <> 2 OR fiscal_year NOT IN (2020, 2021)", 0).await;
    // Every pid in a record table has its patient row, under the same new pseudonym.
    assert_count(
        &ctx,
        "SELECT count(*) FROM als_visit v LEFT JOIN patient p ON p.pid = v.pid WHERE p.pid IS NULL",
        0,
    )
    .await;
    assert!(!m.tables.contains_key("regen_treatment"));
}

/// A PMS team sees only patients treated with its manufacturer's products, and only
/// those products' rows; tables of other datasets do not exist in its session.
#[tokio::test]
async fn manufacturer_scope_limits_a_pms_team_to_its_products() {
    let mut data = SourceData::generate(500, 13);
    let both = "e0000000000000000000000000000005";
    data.push_patient(both, "M", 1970, "27");
    for (p, m) in [("P01", "M01"), ("P03", "M02")] {
        data.push(
            "regen_treatment",
            vec![
                V::s(both),
                V::s(p),
                V::s(m),
                V::s("2701"),
                V::Date(date(2021, 5, 1)),
                V::Int(2021),
                V::s("50-54"),
            ],
        );
    }
    let (dir, cat, source) = write_planted(&data);
    let s = Scope {
        manufacturers: Some(vec!["M01".into()]),
        ..scope(&["regen"])
    };
    let out = dir.path().join("pms");
    build_extract(&source, &out, &s, KEY_A, &cat).await.unwrap();
    let ctx = open_extract(&out, &cat, &limits()).unwrap();
    let patients = expected_patients(&data, &cat, &s);
    assert!(patients.contains(both));
    assert_count(&ctx, "SELECT count(*) FROM patient", patients.len() as i64).await;
    assert_count(
        &ctx,
        "SELECT count(*) FROM regen_treatment WHERE manufacturer_code <> 'M01'",
        0,
    )
    .await;
    assert_count(
        &ctx,
        "SELECT count(*) FROM adverse_event WHERE manufacturer_code <> 'M01'",
        0,
    )
    .await;
    let want = expected_rows(&data, &cat, &s, "regen_treatment", &patients).len() as i64;
    assert_count(&ctx, "SELECT count(*) FROM regen_treatment", want).await;
    let err = batches(&ctx, "SELECT count(*) FROM nanbyo_survey")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        "invalid_sql",
        "a hidden table plans as unknown: {err:?}"
    );
}

/// Attack: linking two applications' outputs on `pid`, or recognising a source pid.
#[tokio::test]
async fn repseudonymised_pids_cannot_be_linked_across_applications() {
    let (dir, cat, source, data) = source_fixture(200, 3);
    let s = scope(&["nanbyo", "als", "regen"]);
    build_extract(&source, &dir.path().join("A"), &s, KEY_A, &cat)
        .await
        .unwrap();
    build_extract(&source, &dir.path().join("B"), &s, KEY_B, &cat)
        .await
        .unwrap();
    let a = open_extract(&dir.path().join("A"), &cat, &limits()).unwrap();
    let b = open_extract(&dir.path().join("B"), &cat, &limits()).unwrap();

    let source_pids: BTreeSet<String> = data
        .rows("patient")
        .iter()
        .map(|r| r[0].as_str().to_string())
        .collect();
    let mut all = BTreeMap::new();
    for (name, ctx) in [("A", &a), ("B", &b)] {
        let mut pids = BTreeSet::new();
        for table in PATIENT_TABLES {
            pids.extend(strings(ctx, &format!("SELECT pid FROM {table}")).await);
        }
        assert!(pids.iter().all(|p| {
            p.len() == 32
                && p.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        }));
        assert!(
            pids.is_disjoint(&source_pids),
            "a source pid appears in extract {name}"
        );
        all.insert(name, pids);
    }
    assert!(
        all["A"].is_disjoint(&all["B"]),
        "two applications share a pid"
    );
    assert_eq!(all["A"].len(), source_pids.len());
    // The mapping is the documented HMAC, so the custodian can reproduce it.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEY_A);
    assert!(all["A"].contains(&repseudonymise(&key, &pid_of(0))));
    // No file of the extract contains a source pid in clear.
    for entry in std::fs::read_dir(dir.path().join("A")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let needle = pid_of(0);
        assert!(!bytes.windows(32).any(|w| w == needle.as_bytes()));
    }
}

/// No temporary (dot) directory of a build is left beside the extracts.
fn assert_no_tmp_siblings(parent: &Path) {
    let tmp: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

/// The manifest describes the files exactly, and the extract is rebuilt when the
/// source data, the scope or the key changes — and only then.
#[tokio::test]
async fn manifest_is_exact_and_extract_rebuilds_when_stale() {
    let (dir, cat, source, _) = source_fixture(150, 5);
    let out = dir.path().join("X");
    let s = scope(&["nanbyo"]);
    assert!(!extract_is_current(&source, &out, &s).unwrap());
    let m1 = ensure_extract(&source, &out, &s, KEY_A, &cat)
        .await
        .unwrap();
    assert_eq!(ExtractManifest::read(&out).unwrap(), m1);
    assert_eq!(m1.scope, s);
    assert!(m1.extract_id.starts_with("x_"));
    let ctx = open_extract(&out, &cat, &limits()).unwrap();
    for (name, t) in &m1.tables {
        let bytes = std::fs::read(out.join(&t.file)).unwrap();
        assert_eq!(
            hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()),
            t.sha256
        );
        assert_eq!(
            count(&ctx, &format!("SELECT count(*) FROM {name}")).await as u64,
            t.rows,
            "{name}"
        );
    }
    assert!(extract_is_current(&source, &out, &s).unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "extract readable by others: {mode:o}");
    }
    // Same inputs: no rebuild (created_at unchanged).
    let again = ensure_extract(&source, &out, &s, KEY_A, &cat)
        .await
        .unwrap();
    assert_eq!(again.created_at, m1.created_at);
    // Order of scope lists does not matter.
    let s2 = scope(&["nanbyo"]);
    assert!(extract_is_current(&source, &out, &s2).unwrap());

    // Scope change.
    let narrower = Scope {
        fiscal_years: Some(vec![2020]),
        ..s.clone()
    };
    assert!(!extract_is_current(&source, &out, &narrower).unwrap());
    // Key change.
    let k = ensure_extract(&source, &out, &s, KEY_B, &cat)
        .await
        .unwrap();
    assert_ne!(k.key_fingerprint, m1.key_fingerprint);
    assert_ne!(k.extract_id, m1.extract_id);

    // Source change (new ingest: e.g. a patient withdrew consent).
    write_source_dataset(&source, 149, 5);
    assert!(!extract_is_current(&source, &out, &s).unwrap());
    let m2 = ensure_extract(&source, &out, &s, KEY_B, &cat)
        .await
        .unwrap();
    assert_ne!(m2.source_manifest_sha256, m1.source_manifest_sha256);
    assert!(m2.tables["patient"].rows < m1.tables["patient"].rows);
    assert!(extract_is_current(&source, &out, &s).unwrap());
    // A deleted file makes the extract stale.
    std::fs::remove_file(out.join("patient.parquet")).unwrap();
    assert!(!extract_is_current(&source, &out, &s).unwrap());
    assert_no_tmp_siblings(dir.path());
}

/// A failed build leaves the previous extract untouched and no temporary directory;
/// a directory that is not an extract is never replaced.
#[tokio::test]
async fn failed_build_leaves_no_half_extract() {
    let (dir, cat, source, _) = source_fixture(100, 9);
    let out = dir.path().join("X");
    let s = scope(&["nanbyo", "als"]);
    let before = build_extract(&source, &out, &s, KEY_A, &cat).await.unwrap();

    // Corrupt one source table written late in the build.
    std::fs::write(source.join("nanbyo_survey.parquet"), b"not parquet").unwrap();
    std::fs::write(source.join("manifest.json"), b"{\"changed\": true}").unwrap();
    let err = build_extract(&source, &out, &s, KEY_A, &cat)
        .await
        .unwrap_err();
    assert!(matches!(err, ExtractError::Engine { .. }), "{err:?}");
    assert_eq!(ExtractManifest::read(&out).unwrap(), before);
    assert_no_tmp_siblings(dir.path());
    let fresh = dir.path().join("Y");
    build_extract(&source, &fresh, &s, KEY_A, &cat)
        .await
        .unwrap_err();
    assert!(!fresh.exists());

    // A retyped column is refused, naming the table.
    write_source_dataset(&source, 100, 9);
    let mut cat2 = cat.clone();
    cat2.tables
        .iter_mut()
        .find(|t| t.name == "patient")
        .unwrap()
        .columns[2]
        .type_name = "Int64".into();
    let err = build_extract(&source, &fresh, &s, KEY_A, &cat2)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`patient`"), "{err}");

    // Not an extract: left alone.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"keep me").unwrap();
    let err = build_extract(&source, &foreign, &s, KEY_A, &cat)
        .await
        .unwrap_err();
    assert!(matches!(err, ExtractError::NotAnExtract { .. }), "{err:?}");
    assert_eq!(
        std::fs::read(foreign.join("notes.txt")).unwrap(),
        b"keep me"
    );
    // Short keys and missing manifests are refused with a fix.
    let err = build_extract(&source, &fresh, &s, b"short", &cat)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("openssl rand"), "{err}");
    std::fs::remove_file(source.join("manifest.json")).unwrap();
    let err = build_extract(&source, &fresh, &s, KEY_A, &cat)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("kura ingest"), "{err}");
}

/// The session exposes the extract's tables and nothing else: no other dataset, no
/// information_schema, no URL tables.
#[tokio::test]
async fn session_registers_only_the_extract_tables() {
    let (dir, cat, source, _) = source_fixture(50, 1);
    let out = dir.path().join("X");
    let m = build_extract(&source, &out, &scope(&["nanbyo"]), KEY_A, &cat)
        .await
        .unwrap();
    let ctx = open_extract(&out, &cat, &limits()).unwrap();
    assert_eq!(ctx.catalog_names(), vec!["datafusion".to_string()]);
    let cat_provider = ctx.catalog("datafusion").unwrap();
    assert_eq!(cat_provider.schema_names(), vec!["public".to_string()]);
    let mut names = cat_provider.schema("public").unwrap().table_names();
    names.sort();
    assert_eq!(names, m.tables.keys().cloned().collect::<Vec<_>>());
    for q in [
        "SELECT count(*) FROM als_visit",
        "SELECT * FROM information_schema.tables",
        &format!(
            "SELECT * FROM '{}'",
            source.join("als_visit.parquet").display()
        ),
    ] {
        let err = batches(&ctx, q).await.unwrap_err();
        assert_eq!(err.code(), "invalid_sql", "{q}: {err:?}");
    }
    // An edited manifest cannot point a table at another file.
    let mut edited = m.clone();
    edited.tables.get_mut("patient").unwrap().file = "../source/patient.parquet".into();
    std::fs::write(
        out.join(EXTRACT_MANIFEST),
        serde_json::to_vec(&edited).unwrap(),
    )
    .unwrap();
    let Err(err) = open_extract(&out, &cat, &limits()) else {
        panic!("an edited manifest must not open");
    };
    assert_eq!(err.code(), "internal");
}

/// The error is `resource_limit` and its public message names the limit.
fn assert_resource_limit(err: &QueryError, limit: &str) {
    assert_eq!(err.code(), "resource_limit", "{err:?}");
    let message = err.public_message();
    assert!(message.contains(limit), "{message}");
}

async fn limits_fixture() -> (TempDir, Catalog, std::path::PathBuf) {
    let (dir, cat, source, _) = source_fixture(1500, 21);
    let out = dir.path().join("X");
    build_extract(&source, &out, &scope(&["nanbyo", "als"]), KEY_A, &cat)
        .await
        .unwrap();
    (dir, cat, out)
}

/// A cross join of large-ish tables hits the time limit, is cancelled, and the same
/// session answers the next query.
#[tokio::test]
async fn cross_join_hits_time_limit_and_session_recovers() {
    let (_dir, cat, out) = limits_fixture().await;
    let lim = Limits {
        timeout: Duration::from_millis(500),
        ..limits()
    };
    let ctx = open_extract(&out, &cat, &lim).unwrap();
    let sql = "SELECT count(*) FROM nanbyo_survey a CROSS JOIN nanbyo_survey b CROSS JOIN nanbyo_survey c \
               WHERE a.creatinine + b.albumin > c.pao2";
    let started = Instant::now();
    let err = run_limited(&ctx, sql, &lim).await.unwrap_err();
    assert_resource_limit(&err, "time limit");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "cancellation took {:?}",
        started.elapsed()
    );
    let b = run_limited(&ctx, "SELECT count(*) FROM patient", &lim)
        .await
        .unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 1500);
}

/// The row cap stops a query as soon as it is exceeded; at the cap it passes.
#[tokio::test]
async fn row_cap_gives_resource_limit() {
    let (_dir, cat, out) = limits_fixture().await;
    let ctx = open_extract(&out, &cat, &limits()).unwrap();
    let run = |max_rows| {
        let ctx = ctx.clone();
        async move {
            let lim = Limits {
                max_rows,
                ..limits()
            };
            run_limited(&ctx, "SELECT pid FROM patient", &lim).await
        }
    };
    let err = run(10).await.unwrap_err();
    assert_resource_limit(&err, "10 rows");
    let ok = run(1500).await.unwrap();
    assert_eq!(ok.iter().map(|b| b.num_rows()).sum::<usize>(), 1500);
}

/// A memory pool too small for a join's build side gives `resource_limit`, not a crash
/// or an execution error; the session then answers a small query.
#[tokio::test]
async fn memory_pool_exhaustion_gives_resource_limit() {
    let (_dir, cat, out) = limits_fixture().await;
    let lim = Limits {
        memory_bytes: 16 << 10,
        ..limits()
    };
    let ctx = open_extract(&out, &cat, &lim).unwrap();
    // Columns of both sides are used, so the buffered side of the cross join really
    // holds data (with `count(*)` alone the optimizer would project everything away).
    let sql = "SELECT count(*) FROM nanbyo_survey a CROSS JOIN patient b \
               WHERE a.facility_id < b.pid AND a.age_band <> b.sex";
    let err = run_limited(&ctx, sql, &lim).await.unwrap_err();
    assert_resource_limit(&err, "memory");
    run_limited(&ctx, "SELECT count(*) FROM patient", &lim)
        .await
        .unwrap();
}

/// An in-scope error (divide by zero on a real value) is an execution error whose
/// public message carries no value.
#[tokio::test]
async fn in_scope_engine_errors_are_generic() {
    let (_dir, cat, out) = limits_fixture().await;
    let ctx = open_extract(&out, &cat, &limits()).unwrap();
    let year = count(&ctx, "SELECT CAST(min(birth_year) AS BIGINT) FROM patient").await;
    let err = batches(
        &ctx,
        &format!("SELECT sum(1 / (birth_year - {year})) FROM patient"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "execution_error", "{err:?}");
    assert!(
        err.internal_detail()
            .to_lowercase()
            .contains("divide by zero"),
        "{}",
        err.internal_detail()
    );
    assert!(!err.public_message().contains(&year.to_string()));
}

fn cell(b: &RecordBatch, col: usize, row: usize) -> String {
    let a = b.column(col);
    if a.is_null(row) {
        return "NULL".into();
    }
    if a.data_type() == &DataType::Float64 {
        let v = a
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .value(row);
        return format!("{v:.6}");
    }
    ArrayFormatter::try_new(a.as_ref(), &FormatOptions::default())
        .unwrap()
        .value(row)
        .to_string()
}

fn table_text(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| (0..b.num_columns()).map(|c| cell(b, c, r)).collect())
        })
        .collect()
}

fn example_queries() -> Vec<(String, String)> {
    kura::cli::bench::query::load_queries(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/examples"),
    )
    .unwrap()
}

/// Every example research query runs over an extract, and over an unrestricted
/// extract returns exactly what it returns over the source (pids are renamed, numbers
/// are not changed).
#[tokio::test]
async fn example_queries_run_over_extracts_unchanged() {
    let (dir, cat, source, _) = source_fixture(800, 17);
    let out = dir.path().join("all");
    build_extract(
        &source,
        &out,
        &scope(&["nanbyo", "als", "regen"]),
        KEY_A,
        &cat,
    )
    .await
    .unwrap();
    let ctx = open_extract(&out, &cat, &limits()).unwrap();
    let raw = source_session(&source, &cat);
    let queries = example_queries();
    assert_eq!(queries.len(), 5);
    for (name, sql) in &queries {
        let got = table_text(
            &batches(&ctx, sql)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e:?}")),
        );
        let want = table_text(&batches(&raw, sql).await.unwrap());
        assert!(!got.is_empty(), "{name} returned no rows");
        assert_eq!(got, want, "{name}");
    }
    // And over a restricted extract they still run.
    let narrow = dir.path().join("narrow");
    let s = Scope {
        fiscal_years: Some(vec![2020]),
        prefectures: Some(vec!["13".into()]),
        ..scope(&["nanbyo", "als", "regen"])
    };
    build_extract(&source, &narrow, &s, KEY_B, &cat)
        .await
        .unwrap();
    let ctx = open_extract(&narrow, &cat, &limits()).unwrap();
    for (name, sql) in &queries {
        batches(&ctx, sql)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    for (name, sql) in &queries {
        assert!(
            sql.lines()
                .next()
                .is_some_and(|l| l.starts_with("-- ") && !l.is_ascii()),
            "{name}: Japanese header"
        );
        assert!(
            sql.lines().nth(1).is_some_and(|l| l.starts_with("-- ")
                && !l.chars().any(|c| ('\u{3040}'..='\u{9fff}').contains(&c))),
            "{name}: English header"
        );
    }
}

/// Test-only stand-in for `engine::run::run_query`: plans and runs the SQL through
/// `collect_limited` and releases it unchanged. Used only to exercise the benchmark
/// harness until the query core is merged.
async fn plain_run(
    ctx: &SessionContext,
    sql: &str,
    _cat: &Catalog,
    lim: &Limits,
) -> Result<QueryOutcome, QueryError> {
    let started = Instant::now();
    let b = run_limited(ctx, sql, lim).await?;
    let rows = table_text(&b)
        .into_iter()
        .map(|r| r.into_iter().map(serde_json::Value::String).collect())
        .collect();
    Ok(QueryOutcome {
        result: ReleasedResult {
            columns: b
                .first()
                .map(|b| ReleasedColumn::of_schema(&b.schema()))
                .unwrap_or_default(),
            rows,
            disclosure: Disclosure {
                mode: DisclosureMode::Suppression,
                threshold: 5,
                suppressed: vec![],
                suppressed_cells: 0,
                differencing: Vec::new(),
                dropped_rows: 0,
                rounding: None,
                epsilon_spent: None,
                epsilon_remaining: None,
                notes: vec![],
                dp: None,
            },
        },
        plan_fingerprint: String::new(),
        tables: vec![],
        duration: started.elapsed(),
        released_sets: Vec::new(),
        trace: Default::default(),
    })
}

/// The benchmark harness measures both paths for every example query and the extract
/// build, and reports ratios and peak memory (at a debug-friendly size).
#[tokio::test]
async fn bench_query_reports_ratios_build_speed_and_memory() {
    let (dir, cat, source, data) = source_fixture(300, 23);
    let args = BenchQueryArgs {
        data: source,
        queries: Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/examples"),
        repeat: 1,
        work_dir: Some(dir.path().join("work")),
        catalog: None,
        memory_mb: 512,
        dp_epsilon: None,
        ledger_cells: 200,
        stages: true,
        json: false,
        scheduler: None,
    };
    let report = bench_query(&args, &cat, plain_run).await.unwrap();
    assert_eq!(report.queries.len(), 5);
    let patient_rows: usize = PATIENT_TABLES.iter().map(|t| data.rows(t).len()).sum();
    assert_eq!(report.patient_rows as usize, patient_rows);
    assert_eq!(report.patients, 300);
    for q in &report.queries {
        assert!(q.ratio().is_finite() && q.ratio() > 0.0, "{q:?}");
        assert_eq!(q.raw_rows, q.full_rows, "{}", q.name);
    }
    assert!(report.peak_rss_kib.is_some_and(|k| k > 0));
    let text = report.to_string();
    assert!(
        text.contains("median ratio") && text.contains("rows/s"),
        "{text}"
    );
    // The ledger path ran beside the empty one for every query.
    assert_eq!(report.ledger_ratios().len(), 5, "{text}");
    assert!(text.contains("ledger median"), "{text}");
    // Every query's stages were timed apart.
    for q in &report.queries {
        let t = q.stages.expect("stages timed");
        assert!(t.execute > std::time::Duration::ZERO, "{q:?}");
    }
    assert_eq!(text.matches("stages / 段階").count(), 5, "{text}");
    // The JSON form (the peer benchmark reads it) carries the same figures.
    let j = report.to_json();
    assert_eq!(j["queries"].as_array().unwrap().len(), 5);
    assert_eq!(j["mode"], "suppression");
    assert_eq!(j["patients"], 300);
    let first = &report.queries[0];
    assert_eq!(j["queries"][0]["name"], first.name.as_str());
    assert!((j["queries"][0]["ratio"].as_f64().unwrap() - first.ratio()).abs() < 1e-9);
    assert!(j["queries"][0]["stages_ms"]["execute"].as_f64().unwrap() > 0.0);
    println!("{text}");
}

/// `kura extract` builds the extract from a hex key file and refreshes it only when
/// stale; a missing key file builds nothing.
#[tokio::test]
async fn extract_command_builds_from_a_key_file() {
    use kura::cli::extract::{ExtractArgs, run};
    let (dir, _, source, _) = source_fixture(60, 31);
    let key_file = dir.path().join("app.key");
    std::fs::write(&key_file, format!("{}\n", hex::encode(KEY_A))).unwrap();
    let args = ExtractArgs {
        source: source.clone(),
        out: dir.path().join("X"),
        key_file: key_file.clone(),
        datasets: vec!["nanbyo".into()],
        diseases: None,
        fiscal_years: Some(vec![2020, 2021]),
        prefectures: None,
        manufacturers: None,
        catalog: None,
    };
    assert_eq!(run(args.clone()).await, std::process::ExitCode::SUCCESS);
    let m = ExtractManifest::read(&args.out).unwrap();
    assert_eq!(m.scope.fiscal_years, Some(vec![2020, 2021]));
    // The hex file decodes to the same key as the raw bytes.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEY_A);
    let ctx = open_extract(&args.out, &catalog(), &limits()).unwrap();
    let pids: BTreeSet<String> = strings(&ctx, "SELECT pid FROM patient")
        .await
        .into_iter()
        .collect();
    let mapped: BTreeSet<String> = (0..60).map(|i| repseudonymise(&key, &pid_of(i))).collect();
    assert!(!pids.is_empty() && pids.is_subset(&mapped));

    let missing = ExtractArgs {
        key_file: dir.path().join("nope.key"),
        out: dir.path().join("Y"),
        ..args
    };
    assert_eq!(run(missing.clone()).await, std::process::ExitCode::FAILURE);
    assert!(!missing.out.exists());
}

/// Over-suppression of the release ledger (issue 11): every example research query runs
/// once, in order, through the suppression path against one growing ledger. The number
/// of cells suppressed for differencing, out of all cells shown, is the figure
/// docs/privacy.md states; a change in either fails this test.
#[tokio::test]
async fn ledger_over_suppression_on_the_example_queries_is_what_the_docs_say() {
    let (dir, cat, source, _) = source_fixture(800, 17);
    let out = dir.path().join("all");
    let s = scope(&["nanbyo", "als", "regen"]);
    build_extract(&source, &out, &s, KEY_A, &cat).await.unwrap();
    let ctx = open_extract(&out, &cat, &limits()).unwrap();
    let rules = kura::privacy::DisclosureRules::embedded().unwrap();
    let ledger = crate::differencing::MemoryLedger::default();
    let (mut cells, mut differencing) = (0usize, 0usize);
    for (name, sql) in example_queries() {
        let o = kura::query::run_query_with(&ctx, &sql, &cat, &rules, &limits(), &ledger)
            .await
            .unwrap_or_else(|e| panic!("{name}: {}", e.internal_detail()));
        ledger.record(&o);
        let d = &o.result.disclosure;
        let shown: usize = o.result.rows.iter().map(Vec::len).sum();
        cells += shown;
        differencing += d.differencing.len();
    }
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/privacy.md"))
            .unwrap();
    let stated = format!(
        "example queries once: {differencing} of {cells} cells shown suppressed for differencing"
    );
    assert!(
        docs.contains(&stated),
        "docs/privacy.md must say \"{stated}\" (measured now)"
    );
}
