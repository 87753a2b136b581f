//! `kura backup` and `kura restore`: the control-plane store, the audit checkpoints, the
//! live extracts and the ingested registry, in one directory an operator can copy off
//! the host, and back into an empty data directory (on SQLite or PostgreSQL).
//!
//! Guarantees: a backup is consistent (the store is exported in one snapshot, and a
//! signed checkpoint of the audit head it holds is taken with it); every file is listed
//! with its SHA-256 in `backup.json`, and a restore refuses a backup whose files do not
//! match; a restore writes only into an empty data directory and an empty store, moves
//! the extracts' registered paths to the new directory (audited), and ends by verifying
//! the audit chain against the backup's checkpoint — exit code 2 if it does not verify.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use crate::audit::checkpoint::{self, Checkpoint};
use crate::cli::ConfigArgs;
use crate::cli::admin::open_store;
use crate::config::process_env;
use crate::store::Opening;
use crate::store::backup::TableRows;

/// Layout version of a backup directory.
const FORMAT: u32 = 1;
const MANIFEST: &str = "backup.json";

/// `backup.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    created_at: chrono::DateTime<chrono::Utc>,
    /// The store the backup was taken from (`sqlite` or `postgres`).
    store: String,
    /// Signed checkpoint of the audit head the exported store holds.
    checkpoint: Option<Checkpoint>,
    /// Application id → its live extract, relative to the backup (`extracts/<id>/<x>`).
    extracts: BTreeMap<String, String>,
    /// Every other file of the backup, relative path → SHA-256.
    files: BTreeMap<String, String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

fn sha256(path: &Path) -> Result<String, String> {
    let bytes = fs::read(path).map_err(io(path))?;
    Ok(hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        &bytes,
    )))
}

/// Copy the tree `from` into `to` (created), recording each file's hash under `prefix`.
fn copy_tree(
    from: &Path,
    to: &Path,
    prefix: &str,
    files: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    fs::create_dir_all(to).map_err(io(to))?;
    for entry in fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Leftovers of interrupted builds and temporary files are not part of a backup.
        if name.starts_with('.') {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let rel = format!("{prefix}/{name}");
        if src.is_dir() {
            copy_tree(&src, &dst, &rel, files)?;
        } else {
            fs::copy(&src, &dst).map_err(io(&src))?;
            fs::File::open(&dst)
                .and_then(|f| f.sync_all())
                .map_err(io(&dst))?;
            files.insert(rel, sha256(&dst)?);
        }
    }
    crate::durable::sync_dir(to).map_err(io(to))
}

/// The directory is absent or empty.
fn is_empty_dir(dir: &Path) -> bool {
    !dir.exists() || fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// `kura backup --out DIR`.
pub async fn backup(args: ConfigArgs, out: PathBuf) -> Result<ExitCode, String> {
    let cfg = args.load()?;
    if !is_empty_dir(&out) {
        return Err(format!(
            "{} is not empty; back up into a new directory / 出力先が空ではありません",
            out.display()
        ));
    }
    let key = cfg.audit_key(&process_env).map_err(|e| e.to_string())?;
    let store = open_store(&cfg, key, Opening::Tool).await?;
    fs::create_dir_all(out.join("store")).map_err(io(&out))?;
    let tables = store.export_tables().await.map_err(|e| e.to_string())?;
    let mut files = BTreeMap::new();
    for (table, rows) in &tables {
        let path = out.join("store").join(format!("{table}.jsonl"));
        let mut text = String::new();
        for row in rows {
            text.push_str(&serde_json::to_string(row).map_err(|e| e.to_string())?);
            text.push('\n');
        }
        crate::durable::write_atomic(&path, text.as_bytes()).map_err(io(&path))?;
        files.insert(format!("store/{table}.jsonl"), sha256(&path)?);
    }
    // The checkpoint of the head the export holds (the audit_log rows just written).
    let head = tables
        .get("audit_log")
        .and_then(|rows| rows.iter().max_by_key(|r| r["seq"].as_i64()))
        .and_then(|r| Some((r["seq"].as_i64()?, r["mac"].as_str()?.to_string())));
    let checkpoint =
        head.map(|(seq, mac)| Checkpoint::sign(store.audit_key(), seq, &mac, chrono::Utc::now()));
    let mut extracts = BTreeMap::new();
    for x in store.extracts().await.map_err(|e| e.to_string())? {
        let src = PathBuf::from(&x.path);
        if x.destroyed_at.is_some() || !src.is_dir() {
            continue;
        }
        let version = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| x.extract_id.clone());
        let rel = format!("extracts/{}/{version}", x.application_id);
        copy_tree(&src, &out.join(&rel), &rel, &mut files)?;
        extracts.insert(x.application_id, rel);
    }
    for (dir, name) in [
        (cfg.registry_dir(), "registry"),
        (cfg.checkpoint_dir(), "audit-checkpoints"),
    ] {
        if dir.is_dir() {
            copy_tree(&dir, &out.join(name), name, &mut files)?;
        }
    }
    let manifest = Manifest {
        format: FORMAT,
        created_at: chrono::Utc::now(),
        store: store.dialect().as_str().into(),
        checkpoint,
        extracts,
        files,
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?;
    crate::durable::write_atomic(&out.join(MANIFEST), text.as_bytes()).map_err(io(&out))?;
    println!(
        "backup written to {} ({} tables, {} files) / バックアップを作成しました",
        out.display(),
        tables.len(),
        manifest.files.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Read and check a backup: every listed file present with its hash.
fn read_backup(from: &Path) -> Result<Manifest, String> {
    let path = from.join(MANIFEST);
    let text = fs::read_to_string(&path).map_err(io(&path))?;
    let m: Manifest =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if m.format != FORMAT {
        return Err(format!(
            "backup format {} is not {FORMAT}; use the kura that wrote it",
            m.format
        ));
    }
    for (rel, want) in &m.files {
        if sha256(&from.join(rel))? != *want {
            return Err(format!(
                "{rel} differs from the backup manifest: the backup is damaged or was edited / バックアップが破損しています"
            ));
        }
    }
    Ok(m)
}

/// The exported tables of a backup.
fn read_tables(from: &Path, m: &Manifest) -> Result<BTreeMap<String, TableRows>, String> {
    let mut tables = BTreeMap::new();
    for rel in m.files.keys().filter(|r| r.starts_with("store/")) {
        let table = rel
            .trim_start_matches("store/")
            .trim_end_matches(".jsonl")
            .to_string();
        let text = fs::read_to_string(from.join(rel)).map_err(io(&from.join(rel)))?;
        let rows = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<TableRows, _>>()
            .map_err(|e| format!("{rel}: {e}"))?;
        tables.insert(table, rows);
    }
    Ok(tables)
}

/// `kura restore --from DIR` into the configured (empty) data directory and store.
pub async fn restore(args: ConfigArgs, from: PathBuf) -> Result<ExitCode, String> {
    let cfg = args.load()?;
    let m = read_backup(&from)?;
    if !is_empty_dir(&cfg.data_dir) {
        return Err(format!(
            "{} is not empty; restore into a new data directory / 復元先のデータディレクトリが空ではありません",
            cfg.data_dir.display()
        ));
    }
    let key = cfg.audit_key(&process_env).map_err(|e| e.to_string())?;
    let store = open_store(&cfg, key, Opening::Tool).await?;
    let tables = read_tables(&from, &m)?;
    store
        .import_tables(&tables)
        .await
        .map_err(|e| e.to_string())?;
    let mut ignore = BTreeMap::new();
    for (dir, name) in [
        (cfg.registry_dir(), "registry"),
        (cfg.checkpoint_dir(), "audit-checkpoints"),
    ] {
        if from.join(name).is_dir() {
            copy_tree(&from.join(name), &dir, name, &mut ignore)?;
        }
    }
    for (application, rel) in &m.extracts {
        let to = cfg.extracts_dir().join(rel.trim_start_matches("extracts/"));
        copy_tree(&from.join(rel), &to, rel, &mut ignore)?;
        store
            .relocate_extract(application, &to.to_string_lossy(), "operator:restore")
            .await
            .map_err(|e| e.to_string())?;
    }
    let checkpoints: Vec<Checkpoint> = m.checkpoint.into_iter().collect();
    let mut all = checkpoint::read_dir(&cfg.checkpoint_dir(), store.audit_key())
        .map_err(|e| crate::errors::chain(&e))?;
    all.extend(checkpoints);
    let v = store
        .verify_audit_against(&all)
        .await
        .map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string(&v).map_err(|e| e.to_string())?);
    if !v.ok {
        eprintln!("the restored audit chain does not verify / 復元した監査ログを検証できません");
        return Ok(ExitCode::from(2));
    }
    println!(
        "restored into {} ({} events verified) / 復元しました",
        cfg.data_dir.display(),
        v.events
    );
    Ok(ExitCode::SUCCESS)
}
