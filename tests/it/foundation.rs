//! Foundation: synthetic registries, pseudonymising ingest, catalogue check.
//! Each test names the guarantee (or the attack) it stands for.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, RecordBatch, StringArray};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use kura::catalog::Catalog;
use kura::ingest::synth::{SynthOptions, generate};
use kura::ingest::{
    IngestError, IngestOptions, Manifest, PseudonymKey, RunSettings, manifest_hash,
    verify_against_catalog,
};

const PATIENTS: u64 = 2000;

fn synth(dir: &Path, name: &str, patients: u64, seed: u64) -> PathBuf {
    let out = dir.join(name);
    generate(&SynthOptions {
        patients,
        seed,
        out: out.clone(),
        progress: false,
    })
    .unwrap();
    out
}

/// A temporary directory with a synthetic source `name/` ingested with `key(k)` into
/// `out/`: the directory, the source, the output and the run's manifest.
fn ingested(
    name: &str,
    patients: u64,
    seed: u64,
    k: u8,
) -> (tempfile::TempDir, PathBuf, PathBuf, Manifest) {
    let t = tempfile::tempdir().unwrap();
    let src = synth(t.path(), name, patients, seed);
    let out = t.path().join("out");
    let m = kura::ingest::run(&opts(&src, &out), &key(k)).unwrap();
    (t, src, out, m)
}

fn opts(source: &Path, out: &Path) -> IngestOptions {
    IngestOptions {
        source: source.to_path_buf(),
        out: out.to_path_buf(),
        catalog: Catalog::embedded().unwrap(),
        progress: false,
    }
}

fn key(b: u8) -> PseudonymKey {
    PseudonymKey::from_bytes(&[b; 32]).unwrap()
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

fn strings(dir: &Path, table: &str, column: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in read_table(dir, table) {
        let a = b
            .column_by_name(column)
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        out.extend(
            (0..a.len())
                .filter(|&i| a.is_valid(i))
                .map(|i| a.value(i).to_string()),
        );
    }
    out
}

/// Rows of a source CSV as header-keyed maps.
fn source_rows(dir: &Path, file: &str) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(dir.join(file)).unwrap();
    let h = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            h.iter()
                .zip(rec.unwrap().iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// Registry numbers whose rows may be used: consent = 1 and not withdrawn.
fn usable(source: &Path) -> BTreeSet<String> {
    let withdrawn: BTreeSet<String> = source_rows(source, "consent_withdrawals.csv")
        .into_iter()
        .map(|r| r["registry_no"].clone())
        .collect();
    source_rows(source, "patients.csv")
        .into_iter()
        .filter(|r| r["consent"] == "1" && !withdrawn.contains(&r["registry_no"]))
        .map(|r| r["registry_no"].clone())
        .collect()
}

#[test]
fn synth_same_seed_is_byte_identical_and_other_seed_differs() {
    let t = tempfile::tempdir().unwrap();
    let a = files(&synth(t.path(), "a", PATIENTS, 7));
    let b = files(&synth(t.path(), "b", PATIENTS, 7));
    let c = files(&synth(t.path(), "c", PATIENTS, 8));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(
        a.len() >= 11,
        "expected every source file, got {:?}",
        a.keys()
    );
    for (name, bytes) in &a {
        assert!(
            bytes == &b[name],
            "{name} differs between two runs with one seed"
        );
    }
    assert_ne!(a["patients.csv"], c["patients.csv"]);
    assert_ne!(a["nanbyo_survey.csv"], c["nanbyo_survey.csv"]);
    // The reference tables do not depend on the seed.
    assert_eq!(a["disease.csv"], c["disease.csv"]);
}

#[test]
fn synth_has_realistic_shape() {
    let t = tempfile::tempdir().unwrap();
    let src = synth(t.path(), "src", 4000, 3);
    let patients = source_rows(&src, "patients.csv");
    let consented = patients.iter().filter(|r| r["consent"] == "1").count();
    assert!(
        consented > 3600 && consented < 3950,
        "most consent: {consented}"
    );
    let withdrawn = source_rows(&src, "consent_withdrawals.csv").len();
    assert!(
        withdrawn > 20 && withdrawn < 150,
        "a few withdraw: {withdrawn}"
    );
    // ALS: onset in the 60s on average, more men.
    let sex: BTreeMap<String, String> = patients
        .iter()
        .map(|r| (r["registry_no"].clone(), r["sex"].clone()))
        .collect();
    let survey = source_rows(&src, "nanbyo_survey.csv");
    let als_new: Vec<_> = survey
        .iter()
        .filter(|r| r["disease_no"] == "2" && r["application_type"] == "new")
        .collect();
    assert!(als_new.len() > 40, "ALS patients: {}", als_new.len());
    let mean_onset = als_new
        .iter()
        .map(|r| r["onset_age"].parse::<f64>().unwrap())
        .sum::<f64>()
        / als_new.len() as f64;
    assert!(
        (58.0..72.0).contains(&mean_onset),
        "ALS mean onset age {mean_onset}"
    );
    let men = als_new
        .iter()
        .filter(|r| sex[&r["registry_no"]] == "M")
        .count();
    assert!(
        men * 2 > als_new.len(),
        "ALS: more men ({men}/{})",
        als_new.len()
    );
    // Renewals follow new applications; fiscal years stay inside FY2015–2025.
    assert!(survey.iter().any(|r| r["application_type"] == "renewal"));
    assert!(
        survey
            .iter()
            .all(|r| (2015..=2025).contains(&r["fiscal_year"].parse::<i32>().unwrap()))
    );
    // ALSFRS-R declines over follow-up: first visits score higher than last visits.
    let visits = source_rows(&src, "als_visit.csv");
    let mut by_patient: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for v in &visits {
        by_patient
            .entry(&v["registry_no"])
            .or_default()
            .push(v["alsfrs_r"].parse().unwrap());
    }
    let followed: Vec<_> = by_patient.values().filter(|s| s.len() >= 4).collect();
    assert!(!followed.is_empty());
    let declining = followed.iter().filter(|s| s.last() < s.first()).count();
    assert!(
        declining * 10 >= followed.len() * 8,
        "{declining}/{} decline",
        followed.len()
    );
    let events = source_rows(&src, "als_event.csv");
    for kind in ["niv", "gastrostomy", "death"] {
        assert!(
            events.iter().any(|e| e["event_type"] == kind),
            "no {kind} event"
        );
    }
    // Regenerative medicine: several products and manufacturers, many facilities, deaths among AEs.
    let regen = source_rows(&src, "regen_treatment.csv");
    let products: BTreeSet<_> = regen.iter().map(|r| r["product_code"].clone()).collect();
    let makers: BTreeSet<_> = regen
        .iter()
        .map(|r| r["manufacturer_code"].clone())
        .collect();
    assert!(
        products.len() >= 6 && makers.len() >= 4,
        "{products:?} {makers:?}"
    );
    let facilities: BTreeSet<_> = patients
        .iter()
        .map(|r| r["facility_code"].clone())
        .collect();
    assert!(facilities.len() > 200, "facilities: {}", facilities.len());
    assert!(!source_rows(&src, "adverse_event.csv").is_empty());
    // Tokyo is the most populous prefecture and should lead.
    let mut by_pref: BTreeMap<String, usize> = BTreeMap::new();
    for r in &patients {
        *by_pref
            .entry(r["address"].chars().take(3).collect())
            .or_default() += 1;
    }
    let top = by_pref.iter().max_by_key(|(_, n)| **n).unwrap().0;
    assert_eq!(top, "東京都");
}

#[test]
fn ingest_is_deterministic_and_pseudonyms_depend_on_the_key() {
    let t = tempfile::tempdir().unwrap();
    let src = synth(t.path(), "src", PATIENTS, 11);
    let m1 = kura::ingest::run(&opts(&src, &t.path().join("o1")), &key(1)).unwrap();
    let m2 = kura::ingest::run(&opts(&src, &t.path().join("o2")), &key(1)).unwrap();
    kura::ingest::run(&opts(&src, &t.path().join("o3")), &key(2)).unwrap();
    // Same key: byte-identical Parquet, same fingerprint.
    for (name, e) in &m1.tables {
        assert_eq!(e.sha256, m2.tables[name].sha256, "{name}");
    }
    assert_eq!(m1.key_fingerprint, m2.key_fingerprint);
    let p1: BTreeSet<_> = strings(&t.path().join("o1"), "patient", "pid")
        .into_iter()
        .collect();
    let p3: BTreeSet<_> = strings(&t.path().join("o3"), "patient", "pid")
        .into_iter()
        .collect();
    assert_eq!(p1.len(), p3.len());
    assert!(
        p1.is_disjoint(&p3),
        "pseudonyms under two keys must not coincide"
    );
    // The pseudonym is the documented HMAC of the registry number.
    let expected: BTreeSet<_> = usable(&src).iter().map(|r| key(1).pseudonym(r)).collect();
    assert_eq!(p1, expected);
    assert!(p1.iter().all(|p| {
        p.len() == 32
            && p.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    }));
}

#[test]
fn only_consented_patients_remain_and_withdrawals_apply_to_every_table() {
    let (_t, src, out, m) = ingested("src", PATIENTS, 5, 9);
    let ok = usable(&src);
    let ok_pids: HashSet<String> = ok.iter().map(|r| key(9).pseudonym(r)).collect();
    let all: Vec<_> = source_rows(&src, "patients.csv");
    let excluded_pids: HashSet<String> = all
        .iter()
        .filter(|r| !ok.contains(&r["registry_no"]))
        .map(|r| key(9).pseudonym(&r["registry_no"]))
        .collect();
    assert!(!excluded_pids.is_empty());
    let withdrawn: Vec<_> = source_rows(&src, "consent_withdrawals.csv");
    let mut withdrawn_rows_in_source = 0;
    for (table, file) in [
        ("patient", "patients.csv"),
        ("nanbyo_survey", "nanbyo_survey.csv"),
        ("als_visit", "als_visit.csv"),
        ("als_event", "als_event.csv"),
        ("regen_treatment", "regen_treatment.csv"),
        ("adverse_event", "adverse_event.csv"),
    ] {
        let rows = source_rows(&src, file);
        let expected = rows
            .iter()
            .filter(|r| ok.contains(&r["registry_no"]))
            .count() as u64;
        withdrawn_rows_in_source += rows
            .iter()
            .filter(|r| {
                withdrawn
                    .iter()
                    .any(|w| w["registry_no"] == r["registry_no"])
            })
            .count();
        let pids = strings(&out, table, "pid");
        assert_eq!(
            pids.len() as u64,
            expected,
            "{table}: rows of consented patients only"
        );
        assert_eq!(m.tables[table].rows, expected);
        assert_eq!(m.tables[table].source_rows, rows.len() as u64);
        assert!(
            pids.iter()
                .all(|p| ok_pids.contains(p) && !excluded_pids.contains(p)),
            "{table}"
        );
    }
    assert!(
        withdrawn_rows_in_source > 0,
        "fixture must contain rows of withdrawn patients"
    );
}

/// Six-byte windows of every output byte, for a linear-time "does this string occur" check.
struct Haystack {
    bytes: Vec<u8>,
    windows: HashSet<[u8; 6]>,
}

impl Haystack {
    fn contains(&self, needle: &str) -> bool {
        let n = needle.as_bytes();
        assert!(
            n.len() >= 6,
            "needle too short for the window index: {needle}"
        );
        // Every 6-byte window of the needle must occur before the (slow) full search runs.
        n.windows(6)
            .all(|w| self.windows.contains(&<[u8; 6]>::try_from(w).unwrap()))
            && self.bytes.windows(n.len()).any(|w| w == n)
    }
}

#[test]
fn no_direct_identifier_survives_ingest() {
    let (_t, src, out, _) = ingested("src", PATIENTS, 21, 4);
    // Raw bytes of every output file, plus every decoded string value (Parquet compresses, so
    // raw bytes alone could hide a value).
    let mut bytes = Vec::new();
    let catalog = Catalog::embedded().unwrap();
    for (name, content) in files(&out) {
        assert!(
            name == "manifest.json" || name.ends_with(".parquet"),
            "unexpected output file {name}"
        );
        bytes.extend(content);
        bytes.push(0);
    }
    for table in &catalog.tables {
        for batch in read_table(&out, &table.name) {
            for col in batch.columns() {
                if let Some(a) = col.as_any().downcast_ref::<StringArray>() {
                    for v in a.iter().flatten() {
                        bytes.extend(v.as_bytes());
                        bytes.push(0);
                    }
                }
            }
        }
    }
    let windows = bytes
        .windows(6)
        .map(|w| <[u8; 6]>::try_from(w).unwrap())
        .collect();
    let hay = Haystack { bytes, windows };
    // Positive control: the scan does find what is in the output.
    assert!(hay.contains("パーキンソン病"));
    let mut checked = 0;
    for r in source_rows(&src, "patients.csv") {
        for col in [
            "registry_no",
            "name_kanji",
            "name_kana",
            "birth_date",
            "address",
            "phone",
            "hospital_patient_no",
            "postal_code",
        ] {
            // JaSMIn's self-registered patients have no hospital number (issue 16).
            if r[col].is_empty() {
                continue;
            }
            assert!(
                !hay.contains(&r[col]),
                "{col} of a source patient appears in the output"
            );
            checked += 1;
        }
    }
    // JaSMIn registrants' e-mail addresses and guardians' names (issue 16 §6).
    for r in source_rows(&src, "jasmin_registrant.csv") {
        for col in ["email", "guardian_name"] {
            if !r[col].is_empty() {
                assert!(!hay.contains(&r[col]), "{col} appears in the output");
            }
        }
    }
    for r in source_rows(&src, "nanbyo_survey.csv") {
        assert!(
            !hay.contains(&r["designated_doctor"]),
            "doctor name appears in the output"
        );
        assert!(
            !hay.contains(&r["application_date"]),
            "application date appears in the output"
        );
    }
    let registrants = PATIENTS as usize / kura::ingest::jasmin::SHARE as usize;
    assert!(checked >= PATIENTS as usize * 8 - registrants);
}

/// Copy a source directory so a test can damage one file.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for (name, bytes) in files(from) {
        std::fs::write(to.join(name), bytes).unwrap();
    }
}

fn edit_line(file: &Path, line: usize, f: impl FnOnce(&[u8]) -> Vec<u8>) {
    let text = std::fs::read(file).unwrap();
    let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(|l| l.to_vec()).collect();
    lines[line - 1] = f(&lines[line - 1]);
    std::fs::write(file, lines.join(&b'\n')).unwrap();
}

fn fails(src: &Path, out: &Path) -> String {
    let err = kura::ingest::run(&opts(src, out), &key(3)).unwrap_err();
    assert!(
        !out.exists(),
        "a failed ingest must not create {}",
        out.display()
    );
    let parent = out.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary directories left behind: {leftovers:?}"
    );
    err.to_string()
}

/// A CSV line with field `i` (0-based) replaced by `value`.
fn set_field(line: &[u8], i: usize, value: &str) -> Vec<u8> {
    let text = String::from_utf8(line.to_vec()).unwrap();
    let mut f: Vec<&str> = text.split(',').collect();
    f[i] = value;
    f.join(",").into_bytes()
}

#[test]
fn malformed_sources_fail_with_location_and_write_nothing() {
    let t = tempfile::tempdir().unwrap();
    let good = synth(t.path(), "good", 300, 2);
    // Ingest a copy of the good source damaged by `damage` into `out`; the error text.
    let broken = |name: &str, out: &str, damage: &dyn Fn(&Path)| {
        let s = t.path().join(name);
        copy_dir(&good, &s);
        damage(&s);
        fails(&s, &t.path().join(out))
    };

    // Missing column.
    let msg = broken("missing_col", "o1", &|s| {
        let text = std::fs::read_to_string(s.join("nanbyo_survey.csv")).unwrap();
        let cut: String = text
            .lines()
            .map(|l| {
                let mut f: Vec<&str> = l.split(',').collect();
                f.remove(9); // severity
                f.join(",") + "\n"
            })
            .collect();
        std::fs::write(s.join("nanbyo_survey.csv"), cut).unwrap();
    });
    assert!(
        msg.contains("nanbyo_survey.csv") && msg.contains("`severity`"),
        "{msg}"
    );

    // Malformed row: a field too many on line 5.
    let msg = broken("bad_row", "o2", &|s| {
        edit_line(&s.join("als_visit.csv"), 5, |l| [l, b",extra"].concat());
    });
    assert!(msg.contains("als_visit.csv:5"), "{msg}");

    // Invalid UTF-8 in a name (a column ingest would drop anyway: it must still be refused).
    let msg = broken("bad_utf8", "o3", &|s| {
        edit_line(&s.join("patients.csv"), 3, |l| {
            let comma = l.iter().position(|&b| b == b',').unwrap();
            [&l[..=comma], &[0xff, 0xfe], &l[comma + 1..]].concat()
        });
    });
    assert!(
        msg.contains("patients.csv:3") && msg.contains("column 2"),
        "{msg}"
    );

    // A character split across two fields: the record's bytes are valid UTF-8 back to
    // back (E3 81 | 82 is "あ"), each field is not. The field is refused, not read as empty.
    let msg = broken("split_utf8", "o3b", &|s| {
        edit_line(&s.join("nanbyo_survey.csv"), 4, |l| {
            let mut fields: Vec<Vec<u8>> = l.split(|&b| b == b',').map(<[u8]>::to_vec).collect();
            fields[9].extend_from_slice(&[0xe3, 0x81]);
            fields[10].insert(0, 0x82);
            fields.join(&b","[..])
        });
    });
    assert!(
        msg.contains("nanbyo_survey.csv:4") && msg.contains("UTF-8"),
        "{msg}"
    );

    // A value outside the catalogue domain; the message must not echo the value.
    let msg = broken("bad_value", "o4", &|s| {
        edit_line(&s.join("nanbyo_survey.csv"), 4, |l| set_field(l, 9, "777"));
    });
    assert!(
        msg.contains("nanbyo_survey.csv:4") && msg.contains("severity") && !msg.contains("777"),
        "{msg}"
    );

    // A disease number absent from the public disease table (a reference-domain violation).
    let msg = broken("bad_ref", "o7", &|s| {
        edit_line(&s.join("nanbyo_survey.csv"), 3, |l| set_field(l, 2, "999"));
    });
    assert!(
        msg.contains("nanbyo_survey.csv:3") && msg.contains("disease.disease_no"),
        "{msg}"
    );

    // Rows out of registry order (the consent merge relies on it).
    let msg = broken("unsorted", "o5", &|s| {
        let text = std::fs::read_to_string(s.join("regen_treatment.csv")).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() > 4, "fixture needs regen rows");
        lines.swap(2, 3);
        std::fs::write(s.join("regen_treatment.csv"), lines.join("\n") + "\n").unwrap();
    });
    assert!(
        msg.contains("regen_treatment.csv:4") && msg.contains("sorted"),
        "{msg}"
    );

    // A second row for one patient in the one-row-per-patient table (DP mode relies on
    // the catalogue's promise; the undamaged source ingests in the tests above).
    let msg = broken("second_row", "o8", &|s| {
        let text = std::fs::read_to_string(s.join("patients.csv")).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(3, lines[2]);
        std::fs::write(s.join("patients.csv"), lines.join("\n") + "\n").unwrap();
    });
    assert!(
        msg.contains("patients.csv:4") && msg.contains("one_row_per_patient"),
        "{msg}"
    );

    // Missing file.
    let msg = broken("no_file", "o6", &|s| {
        std::fs::remove_file(s.join("consent_withdrawals.csv")).unwrap();
    });
    assert!(msg.contains("consent_withdrawals.csv"), "{msg}");
}

#[test]
fn failed_replace_leaves_existing_output_untouched() {
    let (t, good, out, _) = ingested("good", 300, 2, 3);
    let before = files(&out);
    // Without --replace an existing output is refused.
    let err = kura::ingest::run(&opts(&good, &out), &key(3)).unwrap_err();
    assert!(err.to_string().contains("--replace"), "{err}");
    let bad = t.path().join("bad");
    copy_dir(&good, &bad);
    edit_line(&bad.join("als_event.csv"), 2, |_| b"oops".to_vec());
    let r = kura::ingest::run_with(
        &opts(&bad, &out),
        &key(3),
        &RunSettings {
            replace: true,
            threads: 1,
        },
    );
    assert!(r.is_err());
    assert_eq!(
        files(&out),
        before,
        "the previous dataset must survive a failed replace"
    );
    // A successful replace swaps the dataset.
    kura::ingest::run_with(
        &opts(&good, &out),
        &key(5),
        &RunSettings {
            replace: true,
            threads: 1,
        },
    )
    .unwrap();
    assert_ne!(files(&out)["patient.parquet"], before["patient.parquet"]);
}

#[test]
fn output_matches_catalogue_and_tampering_is_detected() {
    let (t, src, out, m) = ingested("src", 500, 4, 1);
    let catalog = Catalog::embedded().unwrap();
    verify_against_catalog(&out, &catalog).unwrap();
    assert_eq!(Manifest::load(&out).unwrap(), m);
    for table in &catalog.tables {
        let batches = read_table(&out, &table.name);
        let schema = batches.first().map(|b| b.schema()).unwrap();
        assert_eq!(
            schema.fields(),
            table.arrow_schema().fields(),
            "{}",
            table.name
        );
    }
    let m_json = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(m_json.contains(&key(1).fingerprint()));
    assert!(
        !m_json.contains(&hex::encode([1u8; 32])),
        "manifest must not hold the key"
    );

    // A stray file beside the tables (e.g. a copied source extract) is refused.
    std::fs::copy(src.join("patients.csv"), out.join("patients.csv")).unwrap();
    let err = verify_against_catalog(&out, &catalog)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unexpected file `patients.csv`"), "{err}");
    std::fs::remove_file(out.join("patients.csv")).unwrap();
    verify_against_catalog(&out, &catalog).unwrap();

    // One flipped byte in a table is caught by the manifest's SHA-256.
    let victim = out.join("nanbyo_survey.parquet");
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();
    match verify_against_catalog(&out, &catalog) {
        Err(IngestError::Tampered { file }) => assert_eq!(file, victim),
        other => panic!("tampering not detected: {other:?}"),
    }

    // Editing the manifest changes the dataset version readers compare.
    let h1 = manifest_hash(&out);
    assert_eq!(h1.len(), 64);
    std::fs::write(
        out.join("manifest.json"),
        m_json.replace("\"rows\"", "\"rows\" "),
    )
    .unwrap();
    assert_ne!(manifest_hash(&out), h1);
    assert_eq!(manifest_hash(&t.path().join("nowhere")), "unreadable");
}

#[test]
fn a_catalogue_column_outside_the_output_is_reported() {
    let (_t, _src, out, _) = ingested("src", 300, 4, 1);
    // A catalogue that declares one more column than ingest wrote must not verify.
    let text = kura::catalog::EMBEDDED_CATALOG.replace(
        r#"{ name = "birth_year", type = "Int32","#,
        r#"{ name = "height", type = "Float64", description_ja = "身長", description_en = "Height" },
  { name = "birth_year", type = "Int32","#,
    );
    let other = Catalog::from_toml(&text).unwrap();
    let err = verify_against_catalog(&out, &other)
        .unwrap_err()
        .to_string();
    assert!(err.contains("patient"), "{err}");
}

#[test]
fn attack_catalogue_asking_for_a_direct_identifier_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let src = synth(t.path(), "src", 100, 4);
    let text = kura::catalog::EMBEDDED_CATALOG.replace(
        r#"{ name = "birth_year", type = "Int32","#,
        r#"{ name = "address", type = "Utf8", description_ja = "住所", description_en = "Address" },
  { name = "birth_year", type = "Int32","#,
    );
    let mut o = opts(&src, &t.path().join("out"));
    o.catalog = Catalog::from_toml(&text).unwrap();
    let err = kura::ingest::run(&o, &key(1)).unwrap_err().to_string();
    assert!(
        err.contains("patient") && err.contains("address") && err.contains("direct identifier"),
        "{err}"
    );
    assert!(!t.path().join("out").exists());
}

#[test]
fn keygen_writes_0600_and_refuses_to_overwrite() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("k.key");
    let k = PseudonymKey::write_new(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let before = std::fs::read(&path).unwrap();
    assert!(matches!(
        PseudonymKey::write_new(&path),
        Err(IngestError::KeyExists { .. })
    ));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "existing key must be untouched"
    );
    let loaded = PseudonymKey::load(&path).unwrap();
    assert_eq!(loaded.fingerprint(), k.fingerprint());
    assert_eq!(loaded.pseudonym("K0000000001"), k.pseudonym("K0000000001"));
}

#[test]
fn ingest_without_key_explains_how_to_create_one() {
    let t = tempfile::tempdir().unwrap();
    let err = PseudonymKey::load(&t.path().join("absent.key"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("kura keygen --out"), "{err}");
    let src = synth(t.path(), "src", 50, 1);
    let bin = env!("CARGO_BIN_EXE_kura");
    let out = std::process::Command::new(bin)
        .args(["ingest", "--source"])
        .arg(&src)
        .arg("--out")
        .arg(t.path().join("out"))
        .env_remove("KURA_KEY_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kura keygen --out"), "{stderr}");
    assert!(!t.path().join("out").exists());
}

#[test]
fn cli_synth_keygen_ingest_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_kura");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(bin)
            .args(args)
            .current_dir(t.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    run(&["synth", "--patients", "200", "--seed", "3", "--out", "src"]);
    run(&["keygen", "--out", "k.key"]);
    let out = run(&[
        "ingest",
        "--source",
        "src",
        "--out",
        "data",
        "--key-file",
        "k.key",
    ]);
    assert!(out.contains("patient"), "{out}");
    verify_against_catalog(&t.path().join("data"), &Catalog::embedded().unwrap()).unwrap();
    let bench = run(&[
        "bench",
        "ingest",
        "--patients",
        "300",
        "--dir",
        "bench",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&bench).unwrap();
    assert!(
        v["ratio"].as_f64().unwrap() > 0.0 && v["output_rows"].as_u64().unwrap() > 300,
        "{bench}"
    );
}

#[test]
fn output_values_lie_inside_catalogue_domains_and_bounds() {
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::DataType;
    use kura::catalog::Domain;
    let (_t, _src, out, _) = ingested("src", 3000, 13, 2);
    let catalog = Catalog::embedded().unwrap();
    let mut checked = 0usize;
    for table in catalog.patient_tables() {
        for batch in read_table(&out, &table.name) {
            for col in &table.columns {
                let array = batch.column_by_name(&col.name).unwrap();
                let text = cast(array, &DataType::Utf8).unwrap();
                let text = text.as_any().downcast_ref::<StringArray>().unwrap();
                let allowed: Option<BTreeSet<String>> = match &col.domain {
                    Some(Domain::Values { values }) => Some(values.iter().cloned().collect()),
                    Some(Domain::Range { range: [lo, hi] }) => {
                        Some((*lo..=*hi).map(|v| v.to_string()).collect())
                    }
                    Some(Domain::Ref {
                        table: rt,
                        column: rc,
                    }) => {
                        let rb = read_table(&out, rt);
                        let mut set = BTreeSet::new();
                        for b in rb {
                            let a = cast(b.column_by_name(rc).unwrap(), &DataType::Utf8).unwrap();
                            let a = a.as_any().downcast_ref::<StringArray>().unwrap().clone();
                            set.extend(a.iter().flatten().map(String::from));
                        }
                        Some(set)
                    }
                    None => None,
                };
                for v in text.iter().flatten() {
                    if let Some(allowed) = &allowed {
                        assert!(
                            allowed.contains(v),
                            "{}.{} = {v} outside domain",
                            table.name,
                            col.name
                        );
                        checked += 1;
                    }
                    if let Some([lo, hi]) = col.bounds {
                        let x: f64 = v.parse().unwrap();
                        assert!(
                            (lo..=hi).contains(&x),
                            "{}.{} = {x} outside bounds",
                            table.name,
                            col.name
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 50_000, "only {checked} values checked");
}
