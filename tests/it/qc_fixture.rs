//! Deterministic in-memory registry for the query-core tests (guard, privacy rewrite,
//! disclosure). Tables follow the catalogue schema exactly; the numbers are chosen so
//! that each rule has a case that passes and a case that fails:
//!
//! - 60 patients `p01`..`p60`; sex alternates F/M; prefecture 13 (p01–p40), 01 (p41–p57),
//!   47 (p58–p60: a 3-patient cell).
//! - `nanbyo_survey`: one FY2023 record per patient, plus FY2024 for every third patient.
//!   Disease 2 (ALS) for p01–p30, 6 for p31–p58, 97 for p59–p60 (a 2-patient group).
//!   Facilities: p41–p57 at H0/H1 only (2 facilities), the others at G0–G4.
//!   `pao2` is 1.0 everywhere except p07 (5000.0): one patient dominating a sum.
//!   `creatinine` = 0.5 + (i mod 10)/10; `severity` = 1 + i mod 5.
//! - Reference tables `disease` and `prefecture`.
//!
//! Only these four tables are registered: the other catalogue tables are "out of scope".

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use kura::catalog::Catalog;

#[derive(Clone, Debug)]
pub enum V {
    S(String),
    I(i64),
    F(f64),
    /// NULL: also every cell a row leaves out at its end, so columns added to the end of
    /// a catalogue table later need no edit of the rows below.
    N,
}

fn s(x: impl Into<String>) -> V {
    V::S(x.into())
}

pub fn batch(catalog: &Catalog, table: &str, rows: &[Vec<V>]) -> RecordBatch {
    let t = catalog.table(table).expect("catalogue table");
    let schema = t.arrow_schema();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (ci, f) in schema.fields().iter().enumerate() {
        let vals = rows.iter().map(|r| r.get(ci).cloned().unwrap_or(V::N));
        let arr: ArrayRef = match f.data_type() {
            DataType::Utf8 => Arc::new(StringArray::from_iter(vals.map(|v| match v {
                V::S(x) => Some(x),
                _ => None,
            }))),
            DataType::Int32 => Arc::new(Int32Array::from_iter(vals.map(|v| match v {
                V::I(x) => Some(x as i32),
                _ => None,
            }))),
            DataType::Int64 => Arc::new(Int64Array::from_iter(vals.map(|v| match v {
                V::I(x) => Some(x),
                _ => None,
            }))),
            DataType::Float64 => Arc::new(Float64Array::from_iter(vals.map(|v| match v {
                V::F(x) => Some(x),
                V::I(x) => Some(x as f64),
                _ => None,
            }))),
            DataType::Boolean => Arc::new(BooleanArray::from_iter(vals.map(|v| match v {
                V::I(x) => Some(x != 0),
                _ => None,
            }))),
            DataType::Date32 => Arc::new(Date32Array::from_iter(vals.map(|v| match v {
                V::I(x) => Some(x as i32),
                _ => None,
            }))),
            other => panic!("fixture does not build {other}"),
        };
        cols.push(arr);
    }
    RecordBatch::try_new(schema, cols).expect("fixture batch")
}

pub fn prefecture_of(i: usize) -> &'static str {
    match i {
        1..=40 => "13",
        41..=57 => "01",
        _ => "47",
    }
}

pub fn disease_of(i: usize) -> i64 {
    match i {
        1..=30 => 2,
        31..=58 => 6,
        _ => 97,
    }
}

pub fn facility_of(i: usize) -> String {
    if (41..=57).contains(&i) {
        format!("H{}", i % 2)
    } else {
        format!("G{}", i % 5)
    }
}

pub fn pid(i: usize) -> String {
    format!("p{i:02}")
}

/// A session holding the fixture registry.
pub fn registry() -> (SessionContext, Catalog) {
    let catalog = Catalog::embedded().expect("catalogue");
    let ctx = SessionContext::new();
    let patients: Vec<Vec<V>> = (1..=60)
        .map(|i| {
            vec![
                s(pid(i)),
                s(if i % 2 == 0 { "M" } else { "F" }),
                V::I(1940 + ((i * 7) % 60) as i64),
                s(prefecture_of(i)),
            ]
        })
        .collect();
    let mut survey = Vec::new();
    for i in 1..=60usize {
        let years: &[i64] = if i % 3 == 0 { &[2023, 2024] } else { &[2023] };
        for &fy in years {
            survey.push(vec![
                s(pid(i)),
                V::I(fy),
                V::I(disease_of(i)),
                s(if fy == 2023 { "new" } else { "renewal" }),
                s(prefecture_of(i)),
                s(["40-44", "50-54", "60-64", "70-74"][i % 4]),
                V::I(2000 + (i % 20) as i64),
                s(["30-34", "40-44", "50-54", "60-64"][i % 4]),
                V::I(1 + (i % 5) as i64),
                V::F(0.5 + (i % 10) as f64 / 10.0),
                V::F(3.0 + (i % 7) as f64 / 10.0),
                V::F(if i == 7 { 5000.0 } else { 1.0 }),
                V::F(40.0),
                s(facility_of(i)),
            ]);
        }
    }
    let disease = vec![
        vec![
            V::I(2),
            s("筋萎縮性側索硬化症"),
            s("Amyotrophic lateral sclerosis"),
            s("神経・筋"),
        ],
        vec![
            V::I(6),
            s("パーキンソン病"),
            s("Parkinson's disease"),
            s("神経・筋"),
        ],
        vec![
            V::I(97),
            s("潰瘍性大腸炎"),
            s("Ulcerative colitis"),
            s("消化器"),
        ],
    ];
    let prefecture = vec![
        vec![s("01"), s("北海道"), s("Hokkaido"), s("北海道"), V::I(5140)],
        vec![s("13"), s("東京都"), s("Tokyo"), s("関東"), V::I(14047)],
        vec![s("47"), s("沖縄県"), s("Okinawa"), s("沖縄"), V::I(1467)],
    ];
    for (name, rows) in [
        ("patient", patients),
        ("nanbyo_survey", survey),
        ("disease", disease),
        ("prefecture", prefecture),
    ] {
        let b = batch(&catalog, name, &rows);
        let t = MemTable::try_new(b.schema(), vec![vec![b]]).expect("memtable");
        ctx.register_table(name, Arc::new(t)).expect("register");
    }
    (ctx, catalog)
}
