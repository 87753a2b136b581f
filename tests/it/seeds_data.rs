//! The seeds' data (issue 16 §4 §6): the machine judgement of the severity criteria at
//! ingest, and JaSMIn as a fourth registry — synthesised, ingested, catalogued, scoped
//! and answered through the query core with its report SQL (`queries/jasmin/`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use kura::catalog::Catalog;
use kura::engine::{Limits, open_extract};
use kura::ingest::synth::{SynthOptions, generate};
use kura::ingest::{IngestOptions, PseudonymKey};
use kura::privacy::DisclosureRules;
use kura::query::run_query;
use kura::sql::extract::build_extract;
use kura::sql::scope::Scope;

const APP_KEY: &[u8] = b"application-J-key-0123456789abcd";

fn synth(dir: &Path, patients: u64, seed: u64) -> PathBuf {
    let out = dir.join("source");
    generate(&SynthOptions {
        patients,
        seed,
        out: out.clone(),
        progress: false,
    })
    .unwrap();
    out
}

fn ingest(source: &Path, out: &Path) {
    let opts = IngestOptions {
        source: source.to_path_buf(),
        out: out.to_path_buf(),
        catalog: Catalog::embedded().unwrap(),
        progress: false,
    };
    kura::ingest::run(&opts, &PseudonymKey::from_bytes(&[4u8; 32]).unwrap()).unwrap();
}

fn read_table(dir: &Path, table: &str) -> Vec<RecordBatch> {
    let f = std::fs::File::open(dir.join(format!("{table}.parquet"))).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// A Boolean column of a written table, in row order (`None` = NULL).
fn bools(dir: &Path, table: &str, column: &str) -> Vec<Option<bool>> {
    read_table(dir, table)
        .iter()
        .flat_map(|b| {
            let a = b.column_by_name(column).unwrap().as_boolean().clone();
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i)))
                .collect::<Vec<_>>()
        })
        .collect()
}

type Rows = Vec<BTreeMap<String, String>>;

fn read_csv(path: &Path) -> (Vec<String>, Rows) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let h: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| {
            h.iter()
                .cloned()
                .zip(rec.unwrap().iter().map(String::from))
                .collect()
        })
        .collect();
    (h, rows)
}

fn write_csv(path: &Path, header: &[String], rows: &Rows) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(header).unwrap();
    for r in rows {
        w.write_record(header.iter().map(|h| r[h].as_str()))
            .unwrap();
    }
    w.flush().unwrap();
}

/// Registry numbers whose rows ingest keeps (consent given, not withdrawn).
fn usable(source: &Path) -> BTreeSet<String> {
    let (_, withdrawn) = read_csv(&source.join("consent_withdrawals.csv"));
    let withdrawn: BTreeSet<&str> = withdrawn
        .iter()
        .map(|r| r["registry_no"].as_str())
        .collect();
    let (_, patients) = read_csv(&source.join("patients.csv"));
    patients
        .iter()
        .filter(|r| r["consent"] == "1" && !withdrawn.contains(r["registry_no"].as_str()))
        .map(|r| r["registry_no"].clone())
        .collect()
}

/// The oracle: the seed's tables written out once more, independently of
/// `src/ingest/severity.rs` (any one item abnormal → true; all present and none → false;
/// otherwise unknown).
/// One item: its value (if present) and its abnormal-value test.
type OracleItem<'a> = (Option<f64>, &'a dyn Fn(f64) -> bool);

fn oracle(row: &BTreeMap<String, String>, column: &str) -> Option<bool> {
    let v = |c: &str| row[c].parse::<f64>().ok();
    let any = |items: &[OracleItem]| -> Option<bool> {
        if items.iter().any(|(x, t)| x.is_some_and(t)) {
            Some(true)
        } else if items.iter().all(|(x, _)| x.is_some()) {
            Some(false)
        } else {
            None
        }
    };
    match column {
        "sev_resp_blood_gas" => any(&[(v("pao2"), &|x| x <= 55.0), (v("paco2"), &|x| x >= 60.0)]),
        "sev_renal_lab" => any(&[
            (v("ccr"), &|x| x < 10.0),
            (v("creatinine"), &|x| x >= 8.0),
            (v("bun"), &|x| x >= 80.0),
        ]),
        "sev_liver_albumin_abnormal" => any(&[(v("albumin"), &|x| (2.8..3.8).contains(&x))]),
        "sev_liver_albumin_high" => any(&[(v("albumin"), &|x| x < 2.8)]),
        "sev_liver_bilirubin_abnormal" => any(&[(v("bilirubin"), &|x| (1.0..5.0).contains(&x))]),
        "sev_liver_bilirubin_high" => any(&[(v("bilirubin"), &|x| x >= 5.0)]),
        "sev_blood_hemoglobin_low" => any(&[(v("hemoglobin"), &|x| x < 6.0)]),
        "sev_blood_platelets_low" => any(&[(v("platelets"), &|x| x < 1.0)]),
        "sev_bleeding_platelets_low" => any(&[(v("platelets"), &|x| x < 3.0)]),
        other => panic!("no oracle for {other}"),
    }
}

const INDICATORS: [&str; 9] = [
    "sev_resp_blood_gas",
    "sev_renal_lab",
    "sev_liver_albumin_abnormal",
    "sev_liver_albumin_high",
    "sev_liver_bilirubin_abnormal",
    "sev_liver_bilirubin_high",
    "sev_blood_hemoglobin_low",
    "sev_blood_platelets_low",
    "sev_bleeding_platelets_low",
];

/// Edge values planted into the first surveys: (column values…) per row.
fn edges() -> Vec<Vec<(&'static str, &'static str)>> {
    vec![
        vec![("pao2", "55.0"), ("paco2", "40.0")],
        vec![("pao2", "55.1"), ("paco2", "59.9")],
        vec![("pao2", ""), ("paco2", "60.0")],
        vec![("pao2", "56.0"), ("paco2", "")],
        vec![("ccr", "10.0"), ("creatinine", "7.99"), ("bun", "79.9")],
        vec![("ccr", "9.9"), ("creatinine", "1.00"), ("bun", "20.0")],
        vec![("ccr", "50.0"), ("creatinine", "8.00"), ("bun", "")],
        vec![("ccr", ""), ("creatinine", "1.00"), ("bun", "80.0")],
        vec![("ccr", ""), ("creatinine", "1.00"), ("bun", "20.0")],
        vec![
            ("albumin", "3.8"),
            ("bilirubin", "0.99"),
            ("hemoglobin", "6.0"),
            ("platelets", "3.0"),
        ],
        vec![
            ("albumin", "3.7"),
            ("bilirubin", "1.00"),
            ("hemoglobin", "5.9"),
            ("platelets", "2.9"),
        ],
        vec![
            ("albumin", "2.8"),
            ("bilirubin", "4.99"),
            ("hemoglobin", ""),
            ("platelets", "1.0"),
        ],
        vec![
            ("albumin", "2.7"),
            ("bilirubin", "5.00"),
            ("hemoglobin", "12.0"),
            ("platelets", "0.9"),
        ],
        vec![
            ("albumin", ""),
            ("bilirubin", ""),
            ("hemoglobin", ""),
            ("platelets", ""),
        ],
    ]
}

/// The judgements written at ingest equal the seed's tables on every survey, including
/// planted values at each threshold's edge, and a missing value gives NULL, not false.
#[test]
fn severity_indicators_follow_the_seed_tables_at_their_edges() {
    let t = tempfile::tempdir().unwrap();
    let source = synth(t.path(), 600, 21);
    let ok = usable(&source);
    let path = source.join("nanbyo_survey.csv");
    let (header, mut rows) = read_csv(&path);
    let planted: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| ok.contains(&r["registry_no"]))
        .map(|(i, _)| i)
        .take(edges().len())
        .collect();
    for (i, edge) in planted.iter().zip(edges()) {
        for (c, v) in edge {
            rows[*i].insert(c.to_string(), v.to_string());
        }
    }
    write_csv(&path, &header, &rows);
    let out = t.path().join("data");
    ingest(&source, &out);
    let kept: Vec<&BTreeMap<String, String>> = rows
        .iter()
        .filter(|r| ok.contains(&r["registry_no"]))
        .collect();
    for column in INDICATORS {
        let got = bools(&out, "nanbyo_survey", column);
        assert_eq!(got.len(), kept.len(), "{column}: one judgement per survey");
        for (i, (g, r)) in got.iter().zip(&kept).enumerate() {
            assert_eq!(*g, oracle(r, column), "{column}, survey {i}: {r:?}");
        }
    }
    // The planted edges, spelled out (rows in planting order).
    let resp = bools(&out, "nanbyo_survey", "sev_resp_blood_gas");
    assert_eq!(&resp[..4], &[Some(true), Some(false), Some(true), None]);
    let renal = bools(&out, "nanbyo_survey", "sev_renal_lab");
    assert_eq!(
        &renal[4..9],
        &[Some(false), Some(true), Some(true), Some(true), None]
    );
    let alb = bools(&out, "nanbyo_survey", "sev_liver_albumin_abnormal");
    let alb_high = bools(&out, "nanbyo_survey", "sev_liver_albumin_high");
    assert_eq!(
        &alb[9..14],
        &[Some(false), Some(true), Some(true), Some(false), None]
    );
    assert_eq!(
        &alb_high[9..14],
        &[Some(false), Some(false), Some(false), Some(true), None]
    );
}

/// The synthetic registry carries every criterion both ways and unknown, so each
/// indicator is a column a researcher can count by.
#[test]
fn every_indicator_is_true_false_and_unknown_somewhere() {
    let t = tempfile::tempdir().unwrap();
    let source = synth(t.path(), 6000, 3);
    let out = t.path().join("data");
    ingest(&source, &out);
    for column in INDICATORS {
        let v = bools(&out, "nanbyo_survey", column);
        let seen: BTreeSet<Option<bool>> = v.iter().copied().collect();
        assert_eq!(seen.len(), 3, "{column}: {seen:?}");
    }
}

fn median(mut v: Vec<u32>) -> u32 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// JaSMIn registrants have the seed's shape: 15 groups, disease names of the list,
/// a median age of about 18 with more than half under 20, 55 % male and a few unknown,
/// 99 % contactable, guardians registering children.
#[test]
fn jasmin_registrants_have_the_seeds_shape() {
    let t = tempfile::tempdir().unwrap();
    let source = synth(t.path(), 25_000, 7);
    let (_, regs) = read_csv(&source.join("jasmin_registrant.csv"));
    assert_eq!(
        regs.len(),
        1000,
        "one in 25 patients is a JaSMIn registrant"
    );
    let groups: BTreeSet<&str> = regs.iter().map(|r| r["disease_group"].as_str()).collect();
    assert_eq!(groups.len(), 15, "{groups:?}");
    let codes: BTreeSet<&str> = kura::ingest::jasmin::DISEASES
        .iter()
        .map(|d| d.code)
        .collect();
    assert!(
        regs.iter()
            .all(|r| codes.contains(r["jasmin_code"].as_str()))
    );
    let ages: Vec<u32> = regs.iter().map(|r| r["age"].parse().unwrap()).collect();
    let m = median(ages.clone());
    assert!((15..=21).contains(&m), "median age {m}");
    let under20 = ages.iter().filter(|a| **a < 20).count() as f64 / ages.len() as f64;
    assert!((0.5..0.65).contains(&under20), "under 20: {under20}");
    let (_, patients) = read_csv(&source.join("patients.csv"));
    let sex: BTreeMap<&str, &str> = patients
        .iter()
        .map(|p| (p["registry_no"].as_str(), p["sex"].as_str()))
        .collect();
    let male = regs
        .iter()
        .filter(|r| sex[r["registry_no"].as_str()] == "M")
        .count() as f64
        / regs.len() as f64;
    assert!((0.5..0.62).contains(&male), "male share {male}");
    let contactable =
        regs.iter().filter(|r| r["contactable"] == "1").count() as f64 / regs.len() as f64;
    assert!(contactable > 0.97, "contactable {contactable}");
    let children_by_guardian = regs
        .iter()
        .filter(|r| r["age"].parse::<u32>().unwrap() < 15)
        .filter(|r| r["registrant_type"] == "guardian")
        .count() as f64
        / ages.iter().filter(|a| **a < 15).count() as f64;
    assert!(children_by_guardian > 0.9, "{children_by_guardian}");
}

fn limits() -> Limits {
    Limits {
        memory_bytes: 256 << 20,
        timeout: Duration::from_secs(60),
        max_rows: 100_000,
    }
}

/// JaSMIn is ingested without its direct identifiers, scoped like the other registries
/// (an approval's designated diseases select registrants, a registrant of a disease that
/// is not designated stays out), and its report SQL answers with the registrants an
/// independent count finds, under the usual suppression.
#[tokio::test]
async fn jasmin_is_ingested_scoped_and_reported() {
    let t = tempfile::tempdir().unwrap();
    let source = synth(t.path(), 10_000, 11);
    let out = t.path().join("data");
    ingest(&source, &out);
    // Direct identifiers never reach the output.
    for entry in std::fs::read_dir(&out).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("@example.invalid"),
            "an e-mail address was written"
        );
    }
    let ok = usable(&source);
    let (_, regs) = read_csv(&source.join("jasmin_registrant.csv"));
    let kept: Vec<_> = regs
        .iter()
        .filter(|r| ok.contains(&r["registry_no"]))
        .collect();
    let manifest = kura::ingest::Manifest::load(&out).unwrap();
    assert_eq!(manifest.tables["jasmin_registrant"].rows, kept.len() as u64);

    let catalog = Catalog::embedded().unwrap();
    let diseases = vec![19, 240, 251];
    let scope = Scope {
        datasets: vec!["jasmin".into()],
        diseases: Some(diseases.clone()),
        ..Default::default()
    };
    let x = t.path().join("extract");
    build_extract(&out, &x, &scope, APP_KEY, &catalog)
        .await
        .unwrap();
    let ctx = open_extract(&x, &catalog, &limits()).unwrap();
    let rules = DisclosureRules::embedded().unwrap();
    let sql = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/jasmin/registrants_by_group.sql"),
    )
    .unwrap();
    let o = run_query(&ctx, &sql, &catalog, &rules, &limits())
        .await
        .unwrap();
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for r in &kept {
        if r["disease_no"]
            .parse::<i32>()
            .is_ok_and(|d| diseases.contains(&d))
        {
            *want.entry(r["disease_group"].clone()).or_default() += 1;
        }
    }
    assert!(
        want.values().any(|n| *n >= 5),
        "some group passes k: {want:?}"
    );
    for row in &o.result.rows {
        let group = row[0].as_str().unwrap();
        let n = want.get(group).copied().unwrap_or(0);
        match row[1].as_i64() {
            Some(released) => assert_eq!(released, n, "{group}"),
            None => assert!(n < 5, "{group}: {n} suppressed"),
        }
    }
    // Groups with no designated disease in the list are padded, never counted.
    for other in ["G03", "G14", "G15"] {
        let row = o.result.rows.iter().find(|r| r[0] == other);
        assert!(row.is_none_or(|r| r[1].is_null() || r[1] == 0), "{other}");
    }
    for file in [
        "registrants_by_disease.sql",
        "registrants_by_sex_age.sql",
        "registrants_by_type_contact.sql",
    ] {
        let sql = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("queries/jasmin")
                .join(file),
        )
        .unwrap();
        let o = run_query(&ctx, &sql, &catalog, &rules, &limits())
            .await
            .unwrap_or_else(|e| panic!("{file}: {e:?}"));
        assert!(!o.result.rows.is_empty(), "{file}");
    }
}
