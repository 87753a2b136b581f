//! Synthetic source registries (`kura synth`): what hospitals and the registration centre hold
//! *before* pseudonymisation, in the source format of [`super::source`].
//!
//! Guarantees: the output is a pure function of `(patients, seed)` — byte-identical across runs
//! (one ChaCha stream consumed in patient order, no hash-map iteration, no timestamps) — and
//! every value falls inside the catalogue's domains and bounds once ingested. Memory does not
//! grow with the number of patients: each patient's rows are written as it is generated.
//!
//! The shape follows the seed documents: designated diseases with their own onset age and sex
//! ratio, prefectures weighted by population, yearly clinical surveys (new, then renewals) for
//! FY2015–2025 with severity and lab values, ALS patients followed with ALSFRS-R and %FVC and
//! their NIV / gastrostomy / tracheostomy / death events, regenerative-medicine treatments with
//! adverse events, and a consent flag with a few later withdrawals.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::reference::{self, ALS, DISEASES, MANUFACTURERS, PREFECTURES, PRODUCTS};
use super::source::{self, days_since_epoch};
use super::staging::{Staging, StagingError};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub patients: u64,
    pub seed: u64,
    /// Output directory; must not exist yet.
    pub out: PathBuf,
    /// Show a progress bar on the terminal.
    pub progress: bool,
}

/// What was generated.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SynthSummary {
    pub out: PathBuf,
    pub patients: u64,
    /// Patients with consent = 1.
    pub consented: u64,
    /// Consented patients who later withdrew.
    pub withdrawn: u64,
    /// Data rows per source file.
    pub rows: BTreeMap<String, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("--patients must be at least 1 / --patients は 1 以上を指定してください")]
    NoPatients,
    #[error(transparent)]
    Output(#[from] StagingError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
}

/// Registry data ends on the last day of FY2025; the registries start with FY2015.
const REG_START: i32 = 16_526; // 2015-04-01
const REG_END: i32 = 20_543; // 2026-03-31
const DAYS_PER_MONTH: f64 = 30.4375;
/// Birth and onset years are bounded to 2025 in the catalogue.
const LAST_YEAR_DAY: i32 = 20_453; // 2025-12-31
/// Mixed into the seed for the JaSMIn registrants' own stream.
const JASMIN_STREAM: u64 = 0x4a61_534d_496e_0000;

/// Generate a source registry into `opts.out` (atomically: all files or none).
pub fn generate(opts: &SynthOptions) -> Result<SynthSummary, SynthError> {
    debug_assert_eq!(days_since_epoch(2015, 4, 1), REG_START);
    debug_assert_eq!(days_since_epoch(2026, 3, 31), REG_END);
    debug_assert_eq!(days_since_epoch(2025, 12, 31), LAST_YEAR_DAY);
    if opts.patients == 0 {
        return Err(SynthError::NoPatients);
    }
    let staging = Staging::new(&opts.out, false)?;
    let dir = staging.path().to_path_buf();
    write_reference(&dir)?;

    let mut w = Writers::create(&dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let tables = Tables::new(opts.seed);
    let bar = progress_bar(opts.progress, opts.patients);
    let mut summary = SynthSummary {
        out: opts.out.clone(),
        patients: opts.patients,
        consented: 0,
        withdrawn: 0,
        rows: BTreeMap::new(),
    };
    // The last one in `jasmin::SHARE` patients are JaSMIn registrants (seed 000), drawn
    // from their own stream after the others, so the other registries keep their values.
    let main = opts.patients - opts.patients / super::jasmin::SHARE;
    for i in 1..=main {
        let (consented, withdrawn) = patient(&mut rng, &tables, i, &mut w)?;
        summary.consented += consented as u64;
        summary.withdrawn += withdrawn as u64;
        if i % 4096 == 0 {
            bar.set_position(i);
        }
    }
    let mut jrng = ChaCha8Rng::seed_from_u64(opts.seed ^ JASMIN_STREAM);
    for i in main + 1..=opts.patients {
        let withdrawn = jasmin_registrant(&mut jrng, &tables, i, &mut w)?;
        summary.consented += 1;
        summary.withdrawn += withdrawn as u64;
    }
    bar.finish_and_clear();
    summary.rows = w.finish()?;
    staging.commit()?;
    Ok(summary)
}

fn progress_bar(show: bool, n: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(n);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("synth");
    bar
}

type CsvOut = csv::Writer<BufWriter<File>>;

struct Out {
    path: PathBuf,
    w: CsvOut,
    rows: u64,
}

impl Out {
    fn create(dir: &Path, name: &str, header: &[&str]) -> Result<Self, SynthError> {
        let path = dir.join(name);
        let file = File::create(&path).map_err(|e| SynthError::Write {
            path: path.clone(),
            source: e.into(),
        })?;
        let mut w = csv::Writer::from_writer(BufWriter::with_capacity(1 << 18, file));
        w.write_record(header).map_err(|source| SynthError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(Self { path, w, rows: 0 })
    }

    fn row(&mut self, fields: &[&str]) -> Result<(), SynthError> {
        self.rows += 1;
        self.w
            .write_record(fields)
            .map_err(|source| SynthError::Write {
                path: self.path.clone(),
                source,
            })
    }

    fn finish(self) -> Result<(String, u64), SynthError> {
        let Out { path, w, rows } = self;
        let err = |e: std::io::Error| SynthError::Write {
            path: path.clone(),
            source: e.into(),
        };
        let file = w
            .into_inner()
            .map_err(|e| err(e.into_error()))?
            .into_inner()
            .map_err(|e| err(e.into_error()))?;
        file.sync_all().map_err(err)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok((name, rows))
    }
}

struct Writers {
    patients: Out,
    withdrawals: Out,
    survey: Out,
    visit: Out,
    event: Out,
    regen: Out,
    ae: Out,
    jasmin: Out,
}

impl Writers {
    fn create(dir: &Path) -> Result<Self, SynthError> {
        Ok(Self {
            patients: Out::create(dir, source::PATIENTS, source::PATIENT_COLUMNS)?,
            withdrawals: Out::create(dir, source::WITHDRAWALS, source::WITHDRAWAL_COLUMNS)?,
            survey: Out::create(dir, "nanbyo_survey.csv", source::SURVEY_COLUMNS)?,
            visit: Out::create(dir, "als_visit.csv", source::ALS_VISIT_COLUMNS)?,
            event: Out::create(dir, "als_event.csv", source::ALS_EVENT_COLUMNS)?,
            regen: Out::create(dir, "regen_treatment.csv", source::REGEN_COLUMNS)?,
            ae: Out::create(dir, "adverse_event.csv", source::AE_COLUMNS)?,
            jasmin: Out::create(dir, source::JASMIN_FILE, source::JASMIN_COLUMNS)?,
        })
    }

    fn finish(self) -> Result<BTreeMap<String, u64>, SynthError> {
        [
            self.patients,
            self.withdrawals,
            self.survey,
            self.visit,
            self.event,
            self.regen,
            self.ae,
            self.jasmin,
        ]
        .into_iter()
        .map(Out::finish)
        .collect()
    }
}

fn write_reference(dir: &Path) -> Result<(), SynthError> {
    let mut d = Out::create(dir, "disease.csv", source::DISEASE_COLUMNS)?;
    for x in DISEASES {
        d.row(&[&x.no.to_string(), x.name_ja, x.name_en, x.group])?;
    }
    // Designated metabolic diseases (JaSMIn's diseases that are designated).
    for (no, ja, en) in super::jasmin::DESIGNATED {
        d.row(&[&no.to_string(), ja, en, super::jasmin::DESIGNATED_GROUP])?;
    }
    d.finish()?;
    let mut j = Out::create(dir, "jasmin_disease.csv", source::JASMIN_DISEASE_COLUMNS)?;
    for x in super::jasmin::DISEASES {
        let group = super::jasmin::GROUPS
            .iter()
            .find(|g| g.code == x.group)
            .expect("every JaSMIn disease has a group");
        let no = x.disease_no.map(|n| n.to_string()).unwrap_or_default();
        j.row(&[
            x.code,
            x.group,
            group.name_ja,
            group.name_en,
            x.name_ja,
            x.name_en,
            &no,
        ])?;
    }
    j.finish()?;
    let mut p = Out::create(dir, "prefecture.csv", source::PREFECTURE_COLUMNS)?;
    for x in PREFECTURES {
        p.row(&[
            x.code,
            x.name_ja,
            x.name_en,
            x.region,
            &x.population.to_string(),
        ])?;
    }
    p.finish()?;
    let mut m = Out::create(dir, "manufacturer.csv", source::MANUFACTURER_COLUMNS)?;
    for x in MANUFACTURERS {
        m.row(&[x.code, x.name_ja, x.name_en])?;
    }
    m.finish()?;
    let mut pr = Out::create(dir, "product.csv", source::PRODUCT_COLUMNS)?;
    for x in PRODUCTS {
        pr.row(&[
            x.code,
            x.manufacturer,
            x.name_ja,
            x.name_en,
            x.product_type,
            &x.approval_year.to_string(),
        ])?;
    }
    pr.finish()?;
    Ok(())
}

/// Cumulative weights for O(log n) weighted choice.
struct Weighted(Vec<u64>);

impl Weighted {
    fn new(weights: impl IntoIterator<Item = u64>) -> Self {
        let mut acc = 0;
        Self(
            weights
                .into_iter()
                .map(|w| {
                    acc += w;
                    acc
                })
                .collect(),
        )
    }

    fn pick(&self, rng: &mut ChaCha8Rng) -> usize {
        let x = rng.random_range(0..*self.0.last().unwrap_or(&1));
        self.0.partition_point(|&c| c <= x)
    }
}

struct Tables {
    disease: Weighted,
    prefecture: Weighted,
    product: Weighted,
    /// JaSMIn disease names by registrants.
    jasmin: Weighted,
    /// Facility codes per prefecture index: `F` + prefecture code + serial.
    facilities: Vec<Vec<String>>,
    /// Seed of the side streams (`side_rng`) that draw values added after the main
    /// stream was fixed, so that adding them left every earlier value as it was.
    seed: u64,
}

impl Tables {
    fn new(seed: u64) -> Self {
        Self {
            seed,
            disease: Weighted::new(DISEASES.iter().map(|d| d.weight as u64)),
            prefecture: Weighted::new(PREFECTURES.iter().map(|p| p.population as u64)),
            product: Weighted::new(PRODUCTS.iter().map(|p| p.weight as u64)),
            jasmin: Weighted::new(super::jasmin::DISEASES.iter().map(|d| d.weight as u64)),
            // About 430 facilities in all, more in populous prefectures.
            facilities: PREFECTURES
                .iter()
                .map(|p| {
                    (1..=3 + p.population / 400)
                        .map(|k| format!("F{}{k:03}", p.code))
                        .collect()
                })
                .collect(),
        }
    }
}

const SURNAMES: &[(&str, &str)] = &[
    ("佐藤", "サトウ"),
    ("鈴木", "スズキ"),
    ("高橋", "タカハシ"),
    ("田中", "タナカ"),
    ("伊藤", "イトウ"),
    ("渡辺", "ワタナベ"),
    ("山本", "ヤマモト"),
    ("中村", "ナカムラ"),
    ("小林", "コバヤシ"),
    ("加藤", "カトウ"),
    ("吉田", "ヨシダ"),
    ("山田", "ヤマダ"),
    ("佐々木", "ササキ"),
    ("山口", "ヤマグチ"),
    ("松本", "マツモト"),
    ("井上", "イノウエ"),
    ("木村", "キムラ"),
    ("林", "ハヤシ"),
    ("斎藤", "サイトウ"),
    ("清水", "シミズ"),
    ("山崎", "ヤマザキ"),
    ("森", "モリ"),
    ("池田", "イケダ"),
    ("橋本", "ハシモト"),
    ("阿部", "アベ"),
    ("石川", "イシカワ"),
    ("前田", "マエダ"),
    ("藤田", "フジタ"),
    ("小川", "オガワ"),
    ("岡田", "オカダ"),
];
const MALE: &[(&str, &str)] = &[
    ("太郎", "タロウ"),
    ("一郎", "イチロウ"),
    ("健一", "ケンイチ"),
    ("大輔", "ダイスケ"),
    ("誠", "マコト"),
    ("浩", "ヒロシ"),
    ("翔太", "ショウタ"),
    ("拓也", "タクヤ"),
    ("和夫", "カズオ"),
    ("茂", "シゲル"),
    ("隆", "タカシ"),
    ("修", "オサム"),
    ("蓮", "レン"),
    ("悠真", "ユウマ"),
    ("直樹", "ナオキ"),
];
const FEMALE: &[(&str, &str)] = &[
    ("花子", "ハナコ"),
    ("洋子", "ヨウコ"),
    ("恵子", "ケイコ"),
    ("幸子", "サチコ"),
    ("陽子", "ヨウコ"),
    ("美咲", "ミサキ"),
    ("由美", "ユミ"),
    ("久美子", "クミコ"),
    ("真由美", "マユミ"),
    ("結衣", "ユイ"),
    ("愛", "アイ"),
    ("明美", "アケミ"),
    ("裕子", "ユウコ"),
    ("智子", "トモコ"),
    ("陽菜", "ヒナ"),
];
const CITIES: &[&str] = &[
    "中央区",
    "北区",
    "南区",
    "東市",
    "西市",
    "緑区",
    "青葉区",
    "本郷市",
    "港区",
    "旭市",
    "桜川市",
    "若葉区",
];
const TOWNS: &[&str] = &[
    "本町", "栄町", "緑町", "旭町", "若葉", "桜台", "港町", "宮前", "松原", "柳通",
];

fn normal(rng: &mut ChaCha8Rng, mean: f64, sd: f64) -> f64 {
    // Box–Muller; one draw per call keeps the stream simple to reason about.
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    mean + sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u32 {
    let l = (-lambda).exp();
    let (mut k, mut p) = (0, 1.0);
    loop {
        p *= rng.random::<f64>();
        if p <= l || k >= 20 {
            return k;
        }
        k += 1;
    }
}

fn ymd(days: i32) -> (i32, u32, u32) {
    use chrono::Datelike;
    let d = chrono::NaiveDate::from_num_days_from_ce_opt(days + 719_163).unwrap_or_default();
    (d.year(), d.month(), d.day())
}

fn date_str(days: i32) -> String {
    let (y, m, d) = ymd(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Whole years from `birth` to `at` (both days since epoch), as a birthday count.
fn age_at(birth: i32, at: i32) -> i64 {
    let ((by, bm, bd), (y, m, d)) = (ymd(birth), ymd(at));
    (y - by) as i64 - ((m, d) < (bm, bd)) as i64
}

fn fy_start(fy: i32) -> i32 {
    days_since_epoch(fy, 4, 1)
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, xs: &'a [T]) -> &'a T {
    &xs[rng.random_range(0..xs.len())]
}

fn person_name(rng: &mut ChaCha8Rng, male: bool) -> (String, String) {
    let (sk, sr) = pick(rng, SURNAMES);
    let (gk, gr) = pick(rng, if male { MALE } else { FEMALE });
    (format!("{sk} {gk}"), format!("{sr} {gr}"))
}

/// One patient with all their rows. Returns (consented, withdrawn).
fn patient(
    rng: &mut ChaCha8Rng,
    t: &Tables,
    i: u64,
    w: &mut Writers,
) -> Result<(bool, bool), SynthError> {
    let registry_no = format!("K{i:010}");
    let pref_ix = t.prefecture.pick(rng);
    let pref = &PREFECTURES[pref_ix];
    let home_facility = pick(rng, &t.facilities[pref_ix]).clone();
    // One in ten registry patients is a regenerative-medicine patient without a designated disease.
    let regen = rng.random_bool(0.10);
    let (male, birth, first_date);
    if regen {
        let prod = &PRODUCTS[t.product.pick(rng)];
        male = rng.random_bool(0.5);
        let start = REG_START.max(fy_start(prod.approval_year));
        let treat = rng.random_range(start..=REG_END);
        let age_years = normal(rng, prod.age_mean, prod.age_sd).clamp(0.0, 95.0);
        birth = (treat - (age_years * 365.25) as i32 - rng.random_range(0..365)).min(LAST_YEAR_DAY);
        first_date = treat;
        let facility = pick(rng, &t.facilities[pref_ix]);
        let doc_male = rng.random_bool(0.7);
        let (doc, _) = person_name(rng, doc_male);
        w.regen.row(&[
            &registry_no,
            prod.code,
            prod.manufacturer,
            facility,
            &date_str(treat),
            &age_at(birth, treat).max(0).to_string(),
            &doc,
        ])?;
        for _ in 0..poisson(rng, prod.ae_rate) {
            adverse_event(rng, &registry_no, prod, treat, facility, w)?;
        }
    } else {
        let dis = &DISEASES[t.disease.pick(rng)];
        male = rng.random_bool(dis.male);
        let first_fy = rng.random_range(2015..=2025);
        let app = (fy_start(first_fy) + rng.random_range(0..365)).min(REG_END);
        // Diagnosis and certification follow onset by months (ALS) to years (slow diseases).
        let delay_days = if dis.no == ALS {
            rng.random_range(180..=540)
        } else {
            ((-rng.random::<f64>().max(1e-9).ln()) * 4.0 * 365.25).min(25.0 * 365.25) as i32
        };
        let onset = (app - delay_days).min(LAST_YEAR_DAY);
        let onset_year = ymd(onset).0;
        let onset_age = normal(rng, dis.onset_mean, dis.onset_sd)
            .clamp(0.0, (onset_year - 1905).min(95) as f64);
        birth = onset - (onset_age * 365.25) as i32 - rng.random_range(0..365);
        first_date = app;
        nanbyo(
            rng,
            t,
            &registry_no,
            dis,
            pref,
            &home_facility,
            male,
            birth,
            onset,
            app,
            first_fy,
            w,
        )?;
    }

    let (name, kana) = person_name(rng, male);
    let address = format!(
        "{}{}{}{}丁目{}番{}号",
        pref.name_ja,
        pick(rng, CITIES),
        pick(rng, TOWNS),
        rng.random_range(1..=9),
        rng.random_range(1..=30),
        rng.random_range(1..=20)
    );
    let postal = format!(
        "{:03}-{:04}",
        rng.random_range(0..1000),
        rng.random_range(0..10000)
    );
    let phone = format!(
        "0{}-{:04}-{:04}",
        rng.random_range(10..100),
        rng.random_range(0..10000),
        rng.random_range(0..10000)
    );
    // Hospital numbers are unique per patient (a bijection of the index), like real MRNs.
    let hospital_no = format!("HP{:010}", (i.wrapping_mul(2_654_435_761)) % 10_000_000_000);
    let consented = rng.random_bool(0.95);
    let consent_date = first_date - rng.random_range(0..30);
    w.patients.row(&[
        &registry_no,
        &name,
        &kana,
        &date_str(birth),
        if male { "M" } else { "F" },
        &postal,
        &address,
        &phone,
        &hospital_no,
        &home_facility,
        if consented { "1" } else { "0" },
        &if consented {
            date_str(consent_date)
        } else {
            String::new()
        },
    ])?;
    let withdrawn = consented && rng.random_bool(0.02);
    if withdrawn {
        let when = (consent_date + rng.random_range(30..1500)).min(REG_END);
        w.withdrawals.row(&[&registry_no, &date_str(when)])?;
    }
    Ok((consented, withdrawn))
}

/// One JaSMIn registrant (seed 000): their `patients.csv` row (a self-registration, so
/// consent is given and no facility is named) and their registration. Returns whether
/// they later withdrew (about 1 %).
fn jasmin_registrant(
    rng: &mut ChaCha8Rng,
    t: &Tables,
    i: u64,
    w: &mut Writers,
) -> Result<bool, SynthError> {
    use super::jasmin;
    let registry_no = format!("K{i:010}");
    let first = days_since_epoch(
        jasmin::FIRST_REGISTRATION.0,
        jasmin::FIRST_REGISTRATION.1,
        jasmin::FIRST_REGISTRATION.2,
    );
    let r = jasmin::draw(rng, |rng| t.jasmin.pick(rng), first, REG_END, LAST_YEAR_DAY);
    let pref = &PREFECTURES[t.prefecture.pick(rng)];
    let (name, kana) = person_name(rng, r.sex.unwrap_or(true));
    let guardian_male = rng.random_bool(0.3);
    let (guardian, _) = person_name(rng, guardian_male);
    let address = format!(
        "{}{}{}{}丁目{}番{}号",
        pref.name_ja,
        pick(rng, CITIES),
        pick(rng, TOWNS),
        rng.random_range(1..=9),
        rng.random_range(1..=30),
        rng.random_range(1..=20)
    );
    let postal = format!(
        "{:03}-{:04}",
        rng.random_range(0..1000),
        rng.random_range(0..10000)
    );
    let phone = format!(
        "0{}-{:04}-{:04}",
        rng.random_range(10..100),
        rng.random_range(0..10000),
        rng.random_range(0..10000)
    );
    let sex = match r.sex {
        Some(true) => "M",
        Some(false) => "F",
        None => "",
    };
    let registered = date_str(r.registered);
    w.patients.row(&[
        &registry_no,
        &name,
        &kana,
        &date_str(r.born),
        sex,
        &postal,
        &address,
        &phone,
        "",
        "",
        "1",
        &registered,
    ])?;
    let withdrawn = rng.random_bool(0.01);
    if withdrawn {
        let when = (r.registered + rng.random_range(30..1500)).min(REG_END);
        w.withdrawals.row(&[&registry_no, &date_str(when)])?;
    }
    w.jasmin.row(&[
        &registry_no,
        if r.guardian { "guardian" } else { "patient" },
        r.disease.group,
        r.disease.code,
        &r.disease
            .disease_no
            .map(|n| n.to_string())
            .unwrap_or_default(),
        &r.age.to_string(),
        pref.code,
        if r.contactable { "1" } else { "0" },
        &registered,
        &format!("registrant{i}@example.invalid"),
        if r.guardian { &guardian } else { "" },
    ])?;
    Ok(withdrawn)
}

/// An adverse event, reported by the facility that treated the patient.
fn adverse_event(
    rng: &mut ChaCha8Rng,
    registry_no: &str,
    prod: &reference::Product,
    treat: i32,
    facility: &str,
    w: &mut Writers,
) -> Result<(), SynthError> {
    let onset = treat + rng.random_range(0..120);
    if onset > REG_END {
        return Ok(());
    }
    // Earlier terms in a product's list are the commoner ones.
    let terms = prod.ae_terms;
    let ix = Weighted::new((0..terms.len()).map(|k| (terms.len() - k) as u64 * 2)).pick(rng);
    let term = terms[ix];
    let serious_p = if matches!(term, "サイトカイン放出症候群" | "神経毒性" | "腫瘍形成")
    {
        0.35
    } else {
        0.15
    };
    let serious = rng.random_bool(serious_p);
    const SERIOUS: [(&str, u64); 6] = [
        ("recovered", 45),
        ("recovering", 20),
        ("not_recovered", 10),
        ("sequelae", 10),
        ("death", 10),
        ("unknown", 5),
    ];
    const MILD: [(&str, u64); 5] = [
        ("recovered", 70),
        ("recovering", 20),
        ("not_recovered", 4),
        ("sequelae", 2),
        ("unknown", 4),
    ];
    let outcome = if serious {
        SERIOUS[Weighted::new(SERIOUS.iter().map(|x| x.1)).pick(rng)].0
    } else {
        MILD[Weighted::new(MILD.iter().map(|x| x.1)).pick(rng)].0
    };
    w.ae.row(&[
        registry_no,
        prod.code,
        prod.manufacturer,
        term,
        if serious { "1" } else { "0" },
        outcome,
        &date_str(onset),
        facility,
    ])
}

/// ALS course relative to the first visit, in months: when each event happens.
struct AlsCourse {
    start_score: f64,
    slope: f64,
    start_fvc: f64,
    fvc_rate: f64,
    niv: f64,
    gastrostomy: Option<f64>,
    tracheostomy: Option<f64>,
    death: f64,
}

impl AlsCourse {
    fn draw(rng: &mut ChaCha8Rng) -> Self {
        let start_score = rng.random_range(40.0..46.0);
        // ALSFRS-R falls about one point a month, with wide spread between patients.
        let slope = normal(rng, 0.9f64.ln(), 0.5).exp().clamp(0.15, 4.0);
        let start_fvc = normal(rng, 85.0, 12.0).clamp(40.0, 130.0);
        let fvc_rate = slope * normal(rng, 2.2, 0.4).clamp(1.0, 4.0);
        let niv = ((start_fvc - 50.0) / fvc_rate).max(0.5);
        let gastrostomy = rng
            .random_bool(0.6)
            .then(|| ((start_score - 30.0) / slope).max(1.0));
        let tracheostomy = rng
            .random_bool(0.3)
            .then(|| ((start_score - 12.0) / slope).max(2.0));
        let natural_end = ((start_score - 6.0) / slope + normal(rng, 0.0, 3.0)).max(3.0);
        let death = match tracheostomy {
            Some(tr) => tr + rng.random_range(24.0..84.0),
            None => natural_end,
        };
        Self {
            start_score,
            slope,
            start_fvc,
            fvc_rate,
            niv,
            gastrostomy,
            tracheostomy,
            death,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn nanbyo(
    rng: &mut ChaCha8Rng,
    t: &Tables,
    registry_no: &str,
    dis: &reference::Disease,
    pref: &reference::Prefecture,
    facility: &str,
    male: bool,
    birth: i32,
    onset: i32,
    app: i32,
    first_fy: i32,
    w: &mut Writers,
) -> Result<(), SynthError> {
    let als = (dis.no == ALS).then(|| AlsCourse::draw(rng));
    let onset_s = date_str(onset);
    let onset_age = age_at(birth, onset).max(0).to_string();
    let death_day = als
        .as_ref()
        .map(|c| app + (c.death * DAYS_PER_MONTH) as i32);
    let doc_male = rng.random_bool(0.7);
    let (doc, _) = person_name(rng, doc_male);
    let mut severity: i32 = [1, 1, 2, 2, 2, 3, 3, 4, 5][rng.random_range(0..9)];
    let mut fy = first_fy;
    let mut app_day = app;
    // A few patients file in another prefecture (they moved); most apply where they live.
    let app_pref = if rng.random_bool(0.02) {
        PREFECTURES[t.prefecture.pick(rng)].code
    } else {
        pref.code
    };
    loop {
        if let Some(c) = &als {
            // ALS severity follows the functional score at the time of the application.
            let months = (app_day - app) as f64 / DAYS_PER_MONTH;
            let score = c.start_score - c.slope * months;
            severity = match score {
                s if s > 40.0 => 1,
                s if s > 32.0 => 2,
                s if s > 24.0 => 3,
                s if s > 12.0 => 4,
                _ => 5,
            };
        }
        let lab =
            |rng: &mut ChaCha8Rng, mean: f64, sd: f64, lo: f64, hi: f64, digits: usize| -> String {
                if rng.random_bool(0.18) {
                    String::new()
                } else {
                    format!("{:.*}", digits, normal(rng, mean, sd).clamp(lo, hi))
                }
            };
        let sev = (severity - 1) as f64;
        let renal = matches!(dis.no, 66 | 67);
        let resp = matches!(dis.no, 2 | 84 | 85 | 86);
        let creat = if renal {
            // Severe renal disease reaches the E表 range (creatinine ≥ 8 mg/dl).
            let m = (0.5 * sev).exp();
            lab(rng, m, 0.3 * m, 0.3, 15.0, 2)
        } else {
            lab(rng, 0.68 + 0.17 * male as u8 as f64, 0.15, 0.3, 3.0, 2)
        };
        let alb = lab(rng, 4.2 - 0.25 * sev, 0.35, 1.5, 5.5, 1);
        let pao2 = if resp {
            lab(rng, 90.0 - 7.0 * sev, 8.0, 35.0, 115.0, 1)
        } else {
            lab(rng, 92.0, 6.0, 60.0, 115.0, 1)
        };
        let paco2 = if dis.no == ALS {
            lab(rng, 40.0 + 3.0 * sev, 4.0, 25.0, 85.0, 1)
        } else {
            lab(rng, 40.0, 3.0, 28.0, 60.0, 1)
        };
        let more = MoreLabs::draw(
            &mut side_rng(t.seed, registry_no, fy),
            dis.no,
            severity,
            male,
        );
        w.survey.row(&[
            registry_no,
            &fy.to_string(),
            &dis.no.to_string(),
            if fy == first_fy { "new" } else { "renewal" },
            app_pref,
            &date_str(app_day),
            &age_at(birth, app_day).max(0).to_string(),
            &onset_s,
            &onset_age,
            &severity.to_string(),
            &creat,
            &alb,
            &pao2,
            &paco2,
            &more.ccr,
            &more.bun,
            &more.bilirubin,
            &more.hemoglobin,
            &more.platelets,
            facility,
            &doc,
        ])?;
        fy += 1;
        if fy > 2025 {
            break;
        }
        app_day = (fy_start(fy) + rng.random_range(0..300)).min(REG_END);
        let alive = death_day.is_none_or(|d| app_day < d);
        let renews = if als.is_some() {
            rng.random_bool(0.97)
        } else {
            rng.random_bool(0.9)
        };
        if !alive || !renews {
            break;
        }
        if als.is_none() && severity < 5 && rng.random_bool(0.12) {
            severity += 1;
        }
    }
    if let Some(c) = als {
        let care = AlsCare::draw(t, registry_no, pref, facility, app);
        als_follow_up(rng, registry_no, &c, onset, app, &care, w)?;
    }
    Ok(())
}

/// Where an ALS patient is followed: the certifying facility, and for about one patient
/// in seven a specialist centre of the same prefecture from a transfer day on (so the
/// registry holds patients whose rows were written at two facilities). Drawn from a side
/// stream: the main stream, and with it every other value, is unchanged.
struct AlsCare {
    first: String,
    transfer: Option<(i32, String)>,
}

impl AlsCare {
    fn draw(
        t: &Tables,
        registry_no: &str,
        pref: &reference::Prefecture,
        facility: &str,
        first_visit: i32,
    ) -> Self {
        let mut side = side_rng(t.seed, registry_no, 0);
        let pref_ix = PREFECTURES
            .iter()
            .position(|p| p.code == pref.code)
            .unwrap_or(0);
        let transfer = side
            .random_bool(0.15)
            .then(|| {
                let other = pick(&mut side, &t.facilities[pref_ix]).clone();
                (first_visit + side.random_range(120..720), other)
            })
            .filter(|(_, other)| other != facility);
        Self {
            first: facility.to_string(),
            transfer,
        }
    }

    /// The facility that writes a record on `day`.
    fn at(&self, day: i32) -> &str {
        match &self.transfer {
            Some((from, other)) if day >= *from => other,
            _ => &self.first,
        }
    }
}

/// A side stream for one (patient, fiscal year): values drawn from it do not move the
/// main stream, so every value that existed before them stays byte-identical.
fn side_rng(seed: u64, registry_no: &str, fy: i32) -> ChaCha8Rng {
    // FNV-1a over the registry number, mixed with the seed and year.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in registry_no.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    ChaCha8Rng::seed_from_u64(h ^ seed.rotate_left(17) ^ (fy as u64).wrapping_mul(0x9e37_79b9))
}

/// The laboratory values of the severity tables beyond the first four (seed 002 E, G, I,
/// K表), as source text; about 18 % missing like the others, shifted by severity in the
/// diseases they belong to (renal 66/67, hepatic 93/95, ITP 63, SLE 49).
struct MoreLabs {
    ccr: String,
    bun: String,
    bilirubin: String,
    hemoglobin: String,
    platelets: String,
}

impl MoreLabs {
    fn draw(rng: &mut ChaCha8Rng, disease: i32, severity: i32, male: bool) -> Self {
        let sev = (severity - 1) as f64;
        let mut lab = |mean: f64, sd: f64, lo: f64, hi: f64, digits: usize| -> String {
            if rng.random_bool(0.18) {
                String::new()
            } else {
                format!("{:.*}", digits, normal(rng, mean, sd).clamp(lo, hi))
            }
        };
        let renal = matches!(disease, 66 | 67);
        let (ccr, bun) = if renal {
            let c = 90.0 * (-0.55 * sev).exp();
            let b = 15.0 * (0.45 * sev).exp();
            (
                lab(c, 0.25 * c, 0.5, 200.0, 1),
                lab(b, 0.25 * b, 1.0, 250.0, 1),
            )
        } else {
            (
                lab(95.0 + 8.0 * male as u8 as f64, 18.0, 0.5, 200.0, 1),
                lab(14.0, 4.0, 1.0, 250.0, 1),
            )
        };
        let bilirubin = if matches!(disease, 93 | 95) {
            let m = 0.8 * (0.45 * sev).exp();
            lab(m, 0.3 * m, 0.1, 40.0, 2)
        } else {
            lab(0.7, 0.25, 0.1, 40.0, 2)
        };
        let hemoglobin = match disease {
            63 => lab(12.5 - 1.2 * sev, 1.2, 2.0, 20.0, 1),
            49 => lab(12.0 - 0.6 * sev, 1.2, 2.0, 20.0, 1),
            _ => lab(12.5 + male as u8 as f64, 1.2, 2.0, 20.0, 1),
        };
        let platelets = match disease {
            63 => {
                let m = 12.0 * (-0.7 * sev).exp();
                lab(m, 0.4 * m, 0.1, 100.0, 1)
            }
            49 => lab(22.0 - 2.0 * sev, 5.0, 0.1, 100.0, 1),
            _ => lab(25.0, 6.0, 0.1, 100.0, 1),
        };
        Self {
            ccr,
            bun,
            bilirubin,
            hemoglobin,
            platelets,
        }
    }
}

fn als_follow_up(
    rng: &mut ChaCha8Rng,
    registry_no: &str,
    c: &AlsCourse,
    onset: i32,
    first_visit: i32,
    care: &AlsCare,
    w: &mut Writers,
) -> Result<(), SynthError> {
    let onset_s = date_str(onset);
    let death_day = first_visit + (c.death * DAYS_PER_MONTH) as i32;
    // Months since onset are bounded to 240 in the catalogue; follow-up stops well inside it.
    let last_day = REG_END
        .min(death_day - 1)
        .min(onset + (230.0 * DAYS_PER_MONTH) as i32);
    let mut day = first_visit;
    while day <= last_day {
        let m = (day - first_visit) as f64 / DAYS_PER_MONTH;
        let score = (c.start_score - c.slope * m + normal(rng, 0.0, 1.0))
            .round()
            .clamp(0.0, 48.0);
        let fvc = (c.start_fvc - c.fvc_rate * m + normal(rng, 0.0, 4.0)).clamp(0.0, 150.0);
        w.visit.row(&[
            registry_no,
            &date_str(day),
            &onset_s,
            &(score as i64).to_string(),
            &format!("{fvc:.1}"),
            care.at(day),
        ])?;
        day += rng.random_range(70..=110);
    }
    let limit = onset + (235.0 * DAYS_PER_MONTH) as i32;
    let events = [
        ("niv", Some(c.niv)),
        ("gastrostomy", c.gastrostomy),
        ("tracheostomy", c.tracheostomy),
        ("death", Some(c.death)),
    ];
    for (kind, at) in events {
        let Some(months) = at else { continue };
        if kind != "death" && months >= c.death {
            continue;
        }
        let day = first_visit + (months * DAYS_PER_MONTH) as i32;
        if day <= REG_END && day <= limit {
            // Recorded by the facility that follows the patient.
            w.event
                .row(&[registry_no, kind, &date_str(day), &onset_s, care.at(day)])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_choice_follows_weights() {
        let w = Weighted::new([1, 0, 3]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0u32; 3];
        for _ in 0..8000 {
            counts[w.pick(&mut rng)] += 1;
        }
        assert_eq!(counts[1], 0, "zero weight is never picked");
        let share = counts[2] as f64 / 8000.0;
        assert!((0.72..0.78).contains(&share), "{counts:?}");
    }

    #[test]
    fn age_counts_birthdays() {
        let birth = days_since_epoch(1960, 6, 15);
        assert_eq!(age_at(birth, days_since_epoch(2020, 6, 14)), 59);
        assert_eq!(age_at(birth, days_since_epoch(2020, 6, 15)), 60);
        assert_eq!(date_str(days_since_epoch(2016, 2, 29)), "2016-02-29");
    }

    #[test]
    fn registry_window_constants_match_their_dates() {
        assert_eq!(days_since_epoch(2015, 4, 1), REG_START);
        assert_eq!(days_since_epoch(2026, 3, 31), REG_END);
        assert_eq!(days_since_epoch(2025, 12, 31), LAST_YEAR_DAY);
    }
}
