//! `kura demo`: a self-contained instance on 127.0.0.1 with synthetic data from a fixed
//! seed and the demo accounts and applications of `shared/API.md`.
//!
//! Guarantees: demo accounts exist only in a demo data directory (which this command
//! creates and marks); re-running on the same directory reuses data, accounts and
//! applications (resetting the demo passwords) or rebuilds the data cleanly when the
//! requested patient count changed; all keys are generated into the data directory —
//! fine for a demo, never for production (see docs/configuration.md).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, Utc};
use serde_json::json;

use crate::audit::AuditEvent;
use crate::auth;
use crate::policy::{fiscal_year, pms_scope_id, workflow::fiscal_year_end};
use crate::privacy::result::DisclosureMode;
use crate::query::plane::DataPlane;
use crate::sql::scope::Scope;
use crate::store::Store;
use crate::store::model::*;

/// The fixed seed of the demo's synthetic registry.
pub const DEMO_SEED: u64 = 20_261_121;
/// Marker file that makes a directory a demo data directory.
pub const MARKER: &str = "KURA_DEMO";

/// Errors of the demo set-up; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "{path} exists and is not a kura demo directory (no {MARKER} file); choose another --data-dir / デモ用ではないディレクトリです"
    )]
    NotDemoDir { path: PathBuf },
    #[error("file system error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control-plane store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("accounts: {0}")]
    Auth(#[from] crate::auth::AuthError),
    #[error("building the extract of {0} failed")]
    Extract(String, #[source] crate::query::plane::ExtractFailure),
    #[error(
        "the synthetic data has no designated disease 2 (ALS); regenerate it / ALS のデータがありません"
    )]
    NoAls,
    #[error("{0}")]
    Data(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Create (or check) the demo data directory.
pub fn prepare_dir(dir: &Path) -> Result<(), DemoError> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map_err(io(dir))?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            return Err(DemoError::NotDemoDir {
                path: dir.to_path_buf(),
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let marker = dir.join(MARKER);
    std::fs::write(
        &marker,
        "kura demo data directory; demo accounts and generated keys live here\n",
    )
    .map_err(io(&marker))?;
    Ok(())
}

/// Read a hex key file, generating 32 random bytes into it (mode 0600) when missing.
pub fn key_file(path: &Path) -> Result<Vec<u8>, DemoError> {
    if !path.exists() {
        let hexkey = auth::random_hex(32)?;
        write_private(path, &hexkey)?;
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    hex::decode(text.trim())
        .map_err(|e| DemoError::Data(format!("{} is not hex: {e}", path.display())))
}

fn write_private(path: &Path, text: &str) -> Result<(), DemoError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// One demo account.
pub struct DemoAccount {
    pub username: &'static str,
    pub role: Role,
    pub manufacturer: Option<&'static str>,
    pub what: &'static str,
}

pub const ACCOUNTS: &[DemoAccount] = &[
    DemoAccount {
        username: "researcher1",
        role: Role::Researcher,
        manufacturer: None,
        what: "named on A-DEMO-0001 (suppression) and A-DEMO-0002 (DP)",
    },
    DemoAccount {
        username: "researcher2",
        role: Role::Researcher,
        manufacturer: None,
        what: "same organisation, NOT named on A-DEMO-0001",
    },
    DemoAccount {
        username: "researcher3",
        role: Role::Researcher,
        manufacturer: None,
        what: "named on A-DEMO-0003, whose term has ended",
    },
    DemoAccount {
        username: "reviewer1",
        role: Role::Reviewer,
        manufacturer: None,
        what: "ministry reviewer",
    },
    // the output airlock (issue 13 §1): the second checker of releases
    DemoAccount {
        username: "reviewer2",
        role: Role::Reviewer,
        manufacturer: None,
        what: "ministry reviewer, the second checker of releases",
    },
    DemoAccount {
        username: "auditor1",
        role: Role::Auditor,
        manufacturer: None,
        what: "reads and verifies the audit log",
    },
    DemoAccount {
        username: "pms1",
        role: Role::Pms,
        manufacturer: Some("M01"),
        what: "PMS team of manufacturer M01 (scope PMS-M01)",
    },
    DemoAccount {
        username: "admin1",
        role: Role::Admin,
        manufacturer: None,
        what: "operator",
    },
    // seeds (issue 16 §2): a medical institution (bound to the demo facility by
    // demo_seeds::seed_facility)
    DemoAccount {
        username: "facility1",
        role: Role::Facility,
        manufacturer: None,
        what: "medical institution F13001 (scope FAC-F13001, feedback report)",
    },
];

/// Create the demo accounts, or reset their passwords on a re-run. Returns
/// `(username, password)` pairs to print.
pub async fn seed_accounts(
    store: &Store,
    password: Option<&str>,
) -> Result<Vec<(String, String)>, DemoError> {
    let mut out = Vec::new();
    // Hash once when one password is shared: argon2id is deliberately slow.
    let shared = match password {
        Some(p) => Some(auth::hash_password(p)?),
        None => None,
    };
    for a in ACCOUNTS {
        let pw = match password {
            Some(p) => p.to_string(),
            None => auth::random_hex(8)?,
        };
        let hash = match &shared {
            Some(h) => h.clone(),
            None => auth::hash_password(&pw)?,
        };
        if store.user(a.username).await?.is_some() {
            store.set_password(a.username, &hash, "demo").await?;
            store.set_disabled(a.username, false, "demo").await?;
        } else {
            store
                .create_user(
                    &NewUser {
                        username: a.username.into(),
                        password_hash: hash,
                        roles: vec![a.role],
                        manufacturer: a.manufacturer.map(Into::into),
                        display_name: a.username.into(),
                        affiliation: if a.role == Role::Researcher {
                            "Demo University / デモ大学".into()
                        } else {
                            "Demo".into()
                        },
                        title: String::new(),
                    },
                    "demo",
                )
                .await?;
        }
        out.push((a.username.to_string(), pw));
    }
    Ok(out)
}

fn demo_form(title: &str, users: &[&str], diseases: &[i32], term: Term) -> ApplicationForm {
    ApplicationForm {
        title: title.into(),
        research_group: "Demo intractable disease research group / デモ難病研究班".into(),
        applicant: Person {
            name: "Researcher One".into(),
            affiliation: "Demo University / デモ大学".into(),
            title: "Professor / 教授".into(),
        },
        lead_consent: None,
        diseases: diseases.to_vec(),
        purpose:
            "Describe disease course and severity by region and sex. / 地域・性別の病状経過の記述"
                .into(),
        necessity: "No other nationwide source. / 全国規模の他の情報源がないため".into(),
        expected_results: "Severity distributions for care planning. / 医療計画のための重症度分布"
            .into(),
        prior_work: "Registry reports. / 既存の登録報告".into(),
        plan_and_methods: "Aggregate counts and means only. / 集計のみ".into(),
        ethics_review: EthicsReview {
            committee: "Demo University IRB".into(),
            approval_number: "DEMO-2026-001".into(),
        },
        other_matters: String::new(),
        named_users: users
            .iter()
            .map(|u| NamedUser {
                username: (*u).into(),
                affiliation: "Demo University / デモ大学".into(),
                title: "Researcher / 研究員".into(),
            })
            .collect(),
        scope: RequestedScope {
            datasets: vec!["nanbyo".into(), "als".into()],
            fiscal_years: Vec::new(),
            prefectures: None,
        },
        term: Some(term),
        place_of_use: "Demo University research facility / デモ大学研究施設".into(),
        publication_plan: "Journal article, aggregated only. / 論文（集計値のみ）".into(),
        contact: "demo-office@example.invalid".into(),
        // seeds (issue 16 §1 §5)
        networks: super::demo_seeds::demo_networks(),
        lead_investigator: None,
    }
}

/// A demo application: `(id, title, named users, mode, ε budget, term)`.
type DemoApp = (
    &'static str,
    &'static str,
    Vec<&'static str>,
    DisclosureMode,
    Option<f64>,
    Term,
);

/// The demo applications.
fn demo_applications(today: NaiveDate) -> Vec<DemoApp> {
    let current = Term {
        start: today,
        end: fiscal_year_end(today),
    };
    let fy = fiscal_year(today);
    let ended = Term {
        start: NaiveDate::from_ymd_opt(fy - 1, 4, 1).expect("valid date"),
        end: NaiveDate::from_ymd_opt(fy, 3, 31).expect("valid date"),
    };
    vec![
        (
            "A-DEMO-0001",
            "ALS and neuromuscular disease course / ALS 等の病状経過",
            vec!["researcher1"],
            DisclosureMode::Suppression,
            None,
            current,
        ),
        (
            "A-DEMO-0002",
            "ALS severity under differential privacy / 差分プライバシーによる ALS 重症度",
            vec!["researcher1"],
            DisclosureMode::Dp,
            Some(3.0),
            current,
        ),
        (
            "A-DEMO-0003",
            "Earlier study, term ended / 使用期間終了済みの研究",
            vec!["researcher3"],
            DisclosureMode::Suppression,
            None,
            ended,
        ),
    ]
}

/// Create (or keep) the demo applications as approved by reviewer1, accept the pledges of
/// their named users, and build all extracts (including the PMS scope of M01).
pub async fn seed_applications(
    store: &Store,
    data: &dyn DataPlane,
    today: NaiveDate,
) -> Result<(), DemoError> {
    let known = data.diseases();
    if !known.contains(&2) {
        return Err(DemoError::NoAls);
    }
    // ALS (2) plus a few neuromuscular diseases present in the data.
    let wanted: BTreeSet<i32> = [2, 1, 11, 13]
        .into_iter()
        .filter(|d| known.contains(d))
        .collect();
    let diseases: Vec<i32> = wanted.into_iter().collect();
    for (id, title, users, mode, budget, term) in demo_applications(today) {
        let app = match store.application(id).await? {
            Some(a) => a,
            None => {
                let form = demo_form(title, &users, &diseases, term);
                let approval = Approval {
                    term,
                    scope: Scope {
                        datasets: form.scope.datasets.clone(),
                        diseases: Some(diseases.clone()),
                        fiscal_years: None,
                        prefectures: None,
                        manufacturers: None,
                        facilities: None,
                    },
                    mode,
                    k: 5,
                    epsilon_budget: budget,
                    dp_bounds: None,
                    // The output airlock: two distinct reviewers check every release of
                    // the suppression study (reviewer1 and reviewer2).
                    release_checkers: (id == "A-DEMO-0001").then_some(2),
                    approved_by: "reviewer1".into(),
                    approved_at: Utc::now(),
                    // seeds (issue 16 §1 §3): the demo's place of use, the published fields
                    networks: Some(super::demo_seeds::demo_networks()),
                    published: Some(super::demo_seeds::demo_published(&form)),
                };
                approve_demo_application(store, id, &form, approval).await?
            }
        };
        for u in &users {
            if !store.has_pledged(id, u).await? {
                store.accept_pledge(id, u).await?;
            }
        }
        // An approval whose term has ended gets no extract: there is nothing it may read.
        if let Some(a) = app.approval.as_ref().filter(|a| a.term.end >= today) {
            ensure_extract(store, data, id, &a.scope).await?;
        }
    }
    let pms_scope = crate::policy::pms_scope("M01");
    ensure_extract(store, data, &pms_scope_id("M01"), &pms_scope).await?;
    // seeds (issue 16 §2 §6): the medical institution, the JaSMIn study
    super::demo_seeds::seed_facility(store, data).await?;
    super::demo_seeds::seed_jasmin(store, data, today).await?;
    Ok(())
}

/// Create `id` as researcher1's application with `form`, submit it and approve it with
/// `approval` as reviewer1, each step audited like the console's.
pub(super) async fn approve_demo_application(
    store: &Store,
    id: &str,
    form: &ApplicationForm,
    approval: Approval,
) -> Result<Application, DemoError> {
    let created = store
        .create_application(Some(id), "researcher1", form)
        .await?;
    let mut submitted = created.clone();
    submitted.status = Status::Submitted;
    let ev = AuditEvent::ok(
        "researcher1",
        "application.submit",
        Some(id),
        json!({"demo": true}),
    );
    let submitted = store
        .transition(
            &submitted,
            created.updated_at,
            Status::Draft,
            "submit",
            None,
            &ev,
        )
        .await?;
    let mut approved = submitted.clone();
    approved.status = Status::Approved;
    approved.approval = Some(approval);
    let ev = AuditEvent::ok(
        "reviewer1",
        "application.approve",
        Some(id),
        json!({"demo": true, "approval": approved.approval}),
    );
    Ok(store
        .transition(
            &approved,
            submitted.updated_at,
            Status::Submitted,
            "approve",
            None,
            &ev,
        )
        .await?)
}

pub(super) async fn ensure_extract(
    store: &Store,
    data: &dyn DataPlane,
    id: &str,
    scope: &Scope,
) -> Result<(), DemoError> {
    let built = data
        .build_extract(id, scope)
        .await
        .map_err(|e| DemoError::Extract(id.to_string(), e))?;
    let current = store.extract(id).await?;
    let unchanged =
        current.is_some_and(|x| x.extract_id == built.extract_id && x.destroyed_at.is_none());
    if !unchanged {
        store
            .set_extract(id, &built.extract_id, &built.path.to_string_lossy(), "demo")
            .await?;
    }
    data.retire_extracts(id, &built.path);
    Ok(())
}

/// What the demo data were generated with; a different request rebuilds them.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct DataStamp {
    patients: u64,
    seed: u64,
    /// The generator's shape (a stamp from an older shape rebuilds the data).
    shape: u32,
}

/// The shape of the synthetic data: 2 adds JaSMIn, facility columns on every encounter
/// table, and the severity tables' laboratory values and judgements (issue 16).
const DATA_SHAPE: u32 = 2;

/// Generate and ingest the synthetic registry into `<dir>/data`, unless data generated
/// with the same size and seed are already there.
pub async fn prepare_data(dir: &Path, patients: u64) -> Result<(), DemoError> {
    let stamp_path = dir.join("demo-data.json");
    let want = DataStamp {
        patients,
        seed: DEMO_SEED,
        shape: DATA_SHAPE,
    };
    let data = dir.join("data");
    let have: Option<DataStamp> = std::fs::read_to_string(&stamp_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    if have.as_ref() == Some(&want) && data.join("manifest.json").is_file() {
        return Ok(());
    }
    let source = dir.join("source");
    for stale in [&source, &dir.join("extracts")] {
        if stale.exists() {
            std::fs::remove_dir_all(stale).map_err(io(stale))?;
        }
    }
    let key_path = dir.join("pseudonym.key");
    let dir_owned = dir.to_path_buf();
    println!(
        "generating {patients} synthetic patients (seed {DEMO_SEED}) and ingesting them… / 合成データを生成・取込中…"
    );
    tokio::task::spawn_blocking(move || -> Result<(), DemoError> {
        let key = if key_path.exists() {
            crate::ingest::PseudonymKey::load(&key_path)
        } else {
            crate::ingest::PseudonymKey::write_new(&key_path)
        }
        .map_err(|e| DemoError::Data(crate::errors::chain(&e)))?;
        let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
        crate::ingest::synth::generate(&crate::ingest::synth::SynthOptions {
            patients,
            seed: DEMO_SEED,
            out: source.clone(),
            progress,
        })
        .map_err(|e| DemoError::Data(crate::errors::chain(&e)))?;
        let catalog = crate::catalog::Catalog::embedded()
            .map_err(|e| DemoError::Data(crate::errors::chain(&e)))?;
        crate::ingest::run_with(
            &crate::ingest::IngestOptions {
                source: source.clone(),
                out: dir_owned.join("data"),
                catalog,
                progress,
            },
            &key,
            &crate::ingest::RunSettings {
                replace: true,
                ..Default::default()
            },
        )
        .map_err(|e| DemoError::Data(crate::errors::chain(&e)))?;
        // The identifying source is no longer needed; keep only pseudonymised data.
        std::fs::remove_dir_all(&source).map_err(io(&source))?;
        Ok(())
    })
    .await
    .map_err(|e| DemoError::Data(format!("data preparation task failed: {e}")))??;
    let text = serde_json::to_string(&want).map_err(|e| DemoError::Data(e.to_string()))?;
    std::fs::write(&stamp_path, text).map_err(io(&stamp_path))?;
    Ok(())
}
