//! Source fixture: a small, deterministic source dataset in the shape ingest
//! writes (`<table>.parquet` per catalogue table with exactly
//! `catalog.table(t).arrow_schema()`, plus `manifest.json`), so tests need not wait for
//! the synthetic generator. Rows are plain values so a test can add the exact patient it
//! needs (an out-of-scope "poison" row, a patient treated by two manufacturers, ...).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::parquet::arrow::ArrowWriter;
use kura::catalog::Catalog;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One cell of a source row; the column's catalogue type decides how it is written.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Days since 1970-01-01.
    Date(i32),
    Null,
}

impl V {
    pub fn s(s: impl Into<String>) -> Self {
        V::Str(s.into())
    }
    pub fn as_str(&self) -> &str {
        match self {
            V::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }
    pub fn as_int(&self) -> i64 {
        match self {
            V::Int(i) => *i,
            _ => panic!("not an integer: {self:?}"),
        }
    }
}

pub fn date(y: i32, m: u32, d: u32) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
    (NaiveDate::from_ymd_opt(y, m, d).unwrap() - epoch).num_days() as i32
}

/// The source pseudonym of patient number `i`: 32 lowercase hex characters, as ingest writes.
pub fn pid_of(i: usize) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("kura-test-source-pid-{i}").as_bytes(),
    );
    hex::encode(&d.as_ref()[..16])
}

/// Prefectures the generator places patients in.
pub const PREFECTURES: [&str; 5] = ["01", "13", "14", "27", "40"];
/// Designated disease numbers the generator uses (2 = ALS).
pub const DISEASES: [i64; 5] = [1, 2, 6, 49, 97];
/// Products and their manufacturers.
pub const PRODUCTS: [(&str, &str); 4] = [
    ("P01", "M01"),
    ("P02", "M01"),
    ("P03", "M02"),
    ("P04", "M03"),
];

fn band(age: i64) -> String {
    if age >= 90 {
        "90+".into()
    } else {
        let lo = (age.max(0) / 5) * 5;
        format!("{lo}-{}", lo + 4)
    }
}

/// A source dataset held as rows per table (catalogue column order).
#[derive(Debug, Clone, Default)]
pub struct SourceData {
    pub tables: BTreeMap<String, Vec<Vec<V>>>,
}

impl SourceData {
    pub fn rows(&self, table: &str) -> &[Vec<V>] {
        self.tables.get(table).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn push(&mut self, table: &str, row: Vec<V>) {
        self.tables.entry(table.to_string()).or_default().push(row);
    }

    /// Plant one `patient` row: pseudonym, sex, birth year, prefecture code.
    pub fn push_patient(&mut self, pid: &str, sex: &str, birth_year: i64, prefecture: &str) {
        let row = vec![V::s(pid), V::s(sex), V::Int(birth_year), V::s(prefecture)];
        self.push("patient", row);
    }

    /// Reference tables plus `patients` generated patients, deterministic in `seed`.
    /// Birth years avoid 1937 so tests can plant a poison value there.
    pub fn generate(patients: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut d = SourceData::default();
        for (no, ja, en, group) in [
            (
                1,
                "球脊髄性筋萎縮症",
                "Spinal and bulbar muscular atrophy",
                "神経・筋",
            ),
            (
                2,
                "筋萎縮性側索硬化症",
                "Amyotrophic lateral sclerosis",
                "神経・筋",
            ),
            (6, "パーキンソン病", "Parkinson's disease", "神経・筋"),
            (
                49,
                "全身性エリテマトーデス",
                "Systemic lupus erythematosus",
                "免疫",
            ),
            (97, "潰瘍性大腸炎", "Ulcerative colitis", "消化器"),
        ] {
            d.push("disease", vec![V::Int(no), V::s(ja), V::s(en), V::s(group)]);
        }
        for code in 1..=47 {
            let code = format!("{code:02}");
            let (ja, en) = match code.as_str() {
                "01" => ("北海道".to_string(), "Hokkaido".to_string()),
                "13" => ("東京都".into(), "Tokyo".into()),
                "14" => ("神奈川県".into(), "Kanagawa".into()),
                "27" => ("大阪府".into(), "Osaka".into()),
                "40" => ("福岡県".into(), "Fukuoka".into()),
                other => (format!("県{other}"), format!("Prefecture {other}")),
            };
            let pop = 500 + 100 * code.parse::<i64>().unwrap();
            d.push(
                "prefecture",
                vec![V::s(code), V::s(ja), V::s(en), V::s("region"), V::Int(pop)],
            );
        }
        for (code, ja, en) in [
            ("M01", "製薬一", "Pharma One"),
            ("M02", "製薬二", "Pharma Two"),
            ("M03", "製薬三", "Pharma Three"),
        ] {
            d.push("manufacturer", vec![V::s(code), V::s(ja), V::s(en)]);
        }
        for (i, (p, m)) in PRODUCTS.iter().enumerate() {
            d.push(
                "product",
                vec![
                    V::s(*p),
                    V::s(*m),
                    V::s(format!("製品{i}")),
                    V::s(format!("Product {i}")),
                    V::s("ヒト細胞加工製品"),
                    V::Int(2015 + i as i64),
                ],
            );
        }
        for i in 0..patients {
            let pid = pid_of(i);
            let sex = if rng.random_bool(0.5) { "M" } else { "F" };
            let mut birth = rng.random_range(1940..2000i64);
            if birth == 1937 {
                birth = 1938;
            }
            let pref = PREFECTURES[rng.random_range(0..PREFECTURES.len())];
            d.push_patient(&pid, sex, birth, pref);
            let disease = DISEASES[rng.random_range(0..DISEASES.len())];
            let onset = rng.random_range((birth + 15).min(2015)..2018);
            let first_fy = rng.random_range(2018..2022i64);
            let years = rng.random_range(1..=3i64);
            for fy in first_fy..(first_fy + years).min(2023) {
                let survey_pref = if rng.random_bool(0.9) {
                    pref
                } else {
                    PREFECTURES[rng.random_range(0..5)]
                };
                d.push(
                    "nanbyo_survey",
                    vec![
                        V::s(&pid),
                        V::Int(fy),
                        V::Int(disease),
                        V::s(if fy == first_fy { "new" } else { "renewal" }),
                        V::s(survey_pref),
                        V::s(band(fy - birth)),
                        V::Int(onset),
                        V::s(band(onset - birth)),
                        V::Int(rng.random_range(1..=5)),
                        V::Float(rng.random_range(0.5..1.5)),
                        V::Float(rng.random_range(3.0..5.0)),
                        V::Float(rng.random_range(70.0..100.0)),
                        V::Float(rng.random_range(35.0..45.0)),
                        V::s(format!("{}{:02}", survey_pref, rng.random_range(1..30))),
                    ],
                );
            }
            if disease == 2 {
                let onset_day = date(onset as i32, rng.random_range(1..=12), 1);
                let mut score = rng.random_range(38..47i64);
                let visits = rng.random_range(2..6);
                let mut day = onset_day + rng.random_range(90..400);
                let mut facility = String::new();
                for _ in 0..visits {
                    let months = (day - onset_day) as f64 / 30.44;
                    let fy = fy_of(day);
                    // Drawn in the order the row used to draw them, so the stream is unchanged.
                    let fvc = rng.random_range(40.0..100.0);
                    facility = format!("{pref}{:02}", rng.random_range(1..10));
                    d.push(
                        "als_visit",
                        vec![
                            V::s(&pid),
                            V::Date(day),
                            V::Int(fy),
                            V::Float(months),
                            V::Int(score),
                            V::Float(fvc),
                            V::s(&facility),
                        ],
                    );
                    score = (score - rng.random_range(0..6)).max(0);
                    day += rng.random_range(90..200);
                }
                for (event, p) in [
                    ("niv", 0.5),
                    ("gastrostomy", 0.4),
                    ("tracheostomy", 0.3),
                    ("death", 0.2),
                ] {
                    if rng.random_bool(p) {
                        let day = onset_day + rng.random_range(300..2000);
                        d.push(
                            "als_event",
                            vec![
                                V::s(&pid),
                                V::s(event),
                                V::Date(day),
                                V::Int(fy_of(day)),
                                V::Float((day - onset_day) as f64 / 30.44),
                                // Recorded where the patient was last seen.
                                V::s(&facility),
                            ],
                        );
                    }
                }
            }
            if rng.random_bool(0.3) {
                let (product, maker) = PRODUCTS[rng.random_range(0..PRODUCTS.len())];
                let day = date(
                    rng.random_range(2018..2023),
                    rng.random_range(1..=12),
                    rng.random_range(1..=28),
                );
                let fy = fy_of(day);
                let year = chrono::NaiveDate::from_num_days_from_ce_opt(day + 719_163)
                    .unwrap()
                    .year() as i64;
                let facility = format!("{pref}{:02}", rng.random_range(1..5));
                d.push(
                    "regen_treatment",
                    vec![
                        V::s(&pid),
                        V::s(product),
                        V::s(maker),
                        V::s(&facility),
                        V::Date(day),
                        V::Int(fy),
                        V::s(band(year - birth)),
                    ],
                );
                if rng.random_bool(0.4) {
                    let ae_day = day + rng.random_range(1..90);
                    let term = ["発熱", "感染症", "肝機能障害", "血球減少"][rng.random_range(0..4)];
                    let outcome = ["recovered", "recovering", "unknown"][rng.random_range(0..3)];
                    d.push(
                        "adverse_event",
                        vec![
                            V::s(&pid),
                            V::s(product),
                            V::s(maker),
                            V::s(term),
                            V::Bool(rng.random_bool(0.2)),
                            V::s(outcome),
                            V::Date(ae_day),
                            V::Int(fy_of(ae_day)),
                            // Reported by the treating facility.
                            V::s(&facility),
                        ],
                    );
                }
            }
        }
        d
    }

    /// Write every catalogue table (empty where no rows) and `manifest.json`, whose
    /// content changes whenever any table's bytes change (as ingest's does).
    pub fn write(&self, dir: &Path, catalog: &Catalog) {
        std::fs::create_dir_all(dir).unwrap();
        let mut manifest = serde_json::Map::new();
        for t in &catalog.tables {
            let schema = t.arrow_schema();
            let rows = self.rows(&t.name);
            let columns: Vec<ArrayRef> = t
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| column(rows, i, &c.data_type(), &t.name, &c.name))
                .collect();
            let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
            let path = dir.join(format!("{}.parquet", t.name));
            let mut w =
                ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
            manifest.insert(
                t.name.clone(),
                serde_json::json!({"rows": rows.len(), "sha256": sha}),
            );
        }
        let m = serde_json::json!({"version": 1, "key_id": "test", "tables": manifest});
        std::fs::write(
            dir.join("manifest.json"),
            serde_json::to_vec_pretty(&m).unwrap(),
        )
        .unwrap();
    }
}

/// Fiscal year (April–March) of a day number.
pub fn fy_of(day: i32) -> i64 {
    let d = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(day as i64);
    if d.month() >= 4 {
        d.year() as i64
    } else {
        d.year() as i64 - 1
    }
}

fn column(rows: &[Vec<V>], i: usize, dt: &DataType, table: &str, name: &str) -> ArrayRef {
    // Cells a row leaves out at its end are NULL: columns added to the end of a table
    // later (e.g. the severity indicators of issue 16) need no edit of every fixture.
    let cell = |r: &Vec<V>| r.get(i).cloned().unwrap_or(V::Null);
    let bad = |v: &V| -> ! { panic!("{table}.{name}: {v:?} does not fit {dt}") };
    match dt {
        DataType::Utf8 => Arc::new(StringArray::from_iter(rows.iter().map(|r| match cell(r) {
            V::Str(s) => Some(s),
            V::Null => None,
            v => bad(&v),
        }))),
        DataType::Int32 => Arc::new(Int32Array::from_iter(rows.iter().map(|r| match cell(r) {
            V::Int(x) => Some(x as i32),
            V::Null => None,
            v => bad(&v),
        }))),
        DataType::Int64 => Arc::new(Int64Array::from_iter(rows.iter().map(|r| match cell(r) {
            V::Int(x) => Some(x),
            V::Null => None,
            v => bad(&v),
        }))),
        DataType::Float64 => Arc::new(Float64Array::from_iter(rows.iter().map(|r| {
            match cell(r) {
                V::Float(x) => Some(x),
                V::Int(x) => Some(x as f64),
                V::Null => None,
                v => bad(&v),
            }
        }))),
        DataType::Boolean => Arc::new(BooleanArray::from_iter(rows.iter().map(|r| {
            match cell(r) {
                V::Bool(x) => Some(x),
                V::Null => None,
                v => bad(&v),
            }
        }))),
        DataType::Date32 => Arc::new(Date32Array::from_iter(rows.iter().map(|r| match cell(r) {
            V::Date(x) => Some(x),
            V::Null => None,
            v => bad(&v),
        }))),
        other => panic!("{table}.{name}: unsupported type {other}"),
    }
}

/// Generate `patients` patients with `seed` and write them as a source dataset into
/// `dir` (using the embedded catalogue). Returns the rows for computing expectations.
pub fn write_source_dataset(dir: &Path, patients: usize, seed: u64) -> SourceData {
    let data = SourceData::generate(patients, seed);
    data.write(dir, &Catalog::embedded().unwrap());
    data
}
