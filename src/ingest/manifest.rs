//! `manifest.json`: what an ingest run produced — schema version, time, the key's
//! fingerprint (never the key), and per table its file, row count and SHA-256. Readers use it
//! to detect a modified file ([`verify_against_catalog`]) and to know when data changed
//! ([`manifest_hash`]), which is when per-application extracts must be rebuilt.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use ring::digest;
use serde::{Deserialize, Serialize};

use super::IngestError;
use crate::catalog::Catalog;

/// Version of the manifest format (not of the catalogue).
pub const MANIFEST_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";

/// One output table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTable {
    /// File name inside the dataset directory.
    pub file: String,
    /// Rows written.
    pub rows: u64,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    /// Rows read from the source file.
    pub source_rows: u64,
    /// Source rows left out: patients without consent, withdrawn, or unknown.
    pub dropped_rows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    /// The catalogue's schema version the tables follow.
    pub catalog_schema_version: u32,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// [`super::PseudonymKey::fingerprint`] of the key the pseudonyms were made with.
    pub key_fingerprint: String,
    /// Table name → entry, in name order.
    pub tables: BTreeMap<String, ManifestTable>,
}

impl Manifest {
    pub(crate) fn new(
        key_fingerprint: String,
        catalog: &Catalog,
        tables: BTreeMap<String, ManifestTable>,
    ) -> Self {
        Self {
            schema_version: MANIFEST_VERSION,
            catalog_schema_version: catalog.schema_version,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            key_fingerprint,
            tables,
        }
    }

    pub(crate) fn write(&self, dir: &Path) -> Result<(), IngestError> {
        let path = dir.join(MANIFEST_FILE);
        let io = |source| IngestError::Io {
            path: path.clone(),
            source,
        };
        let mut text = serde_json::to_string_pretty(self).map_err(|e| IngestError::Manifest {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        text.push('\n');
        let mut f = std::fs::File::create(&path).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Read `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Self, IngestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| IngestError::Io {
            path: path.clone(),
            source,
        })?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| IngestError::Manifest {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        if m.schema_version != MANIFEST_VERSION {
            return Err(IngestError::Manifest {
                path,
                detail: format!(
                    "schema_version {} is not {MANIFEST_VERSION}; ingest again with this kura",
                    m.schema_version
                ),
            });
        }
        Ok(m)
    }
}

/// Lowercase hex SHA-256 of a file, streamed.
pub(crate) fn sha256_file(path: &Path) -> Result<String, IngestError> {
    let io = |source| IngestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}

/// SHA-256 of `dir/manifest.json`, the version of a dataset: it changes whenever any table,
/// the key or the ingest time changes.
pub fn try_manifest_hash(dir: &Path) -> Result<String, IngestError> {
    sha256_file(&dir.join(MANIFEST_FILE))
}

/// Like [`try_manifest_hash`] for callers that only compare versions: an unreadable manifest
/// yields `"unreadable"`, which never equals a real hash, so a cached extract is rebuilt and the
/// rebuild then reports the real error.
pub fn manifest_hash(dir: &Path) -> String {
    try_manifest_hash(dir).unwrap_or_else(|_| "unreadable".to_string())
}

/// Check an ingest output directory against the catalogue: every catalogue table is listed in
/// the manifest and no other, and no other file is present; each file's SHA-256 matches the manifest (so a modified file is
/// detected); each Parquet file has exactly the catalogue's columns, types and nullability, and
/// the manifest's row count.
pub fn verify_against_catalog(dir: &Path, catalog: &Catalog) -> Result<(), IngestError> {
    let manifest = Manifest::load(dir)?;
    let mismatch = |detail: String| Err(IngestError::Mismatch { detail });
    for name in manifest.tables.keys() {
        if catalog.table(name).is_none() {
            return mismatch(format!(
                "manifest lists table `{name}`, which the catalogue does not declare"
            ));
        }
    }
    // Nothing may sit beside the tables: a stray file (say, a copied source extract) would be
    // data that no catalogue rule governs.
    let listed: std::collections::BTreeSet<&str> =
        manifest.tables.values().map(|e| e.file.as_str()).collect();
    let entries = std::fs::read_dir(dir).map_err(|source| IngestError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| IngestError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != MANIFEST_FILE && !listed.contains(name.as_str()) {
            return mismatch(format!(
                "unexpected file `{name}` in the dataset directory; remove it or ingest again"
            ));
        }
    }
    for table in &catalog.tables {
        let Some(entry) = manifest.tables.get(&table.name) else {
            return mismatch(format!(
                "table `{}` is missing from manifest.json",
                table.name
            ));
        };
        if entry.file != format!("{}.parquet", table.name) {
            return mismatch(format!(
                "table `{}` points at unexpected file `{}`",
                table.name, entry.file
            ));
        }
        let path = dir.join(&entry.file);
        if sha256_file(&path)? != entry.sha256 {
            return Err(IngestError::Tampered { file: path });
        }
        let file = std::fs::File::open(&path).map_err(|source| IngestError::Io {
            path: path.clone(),
            source,
        })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| {
            IngestError::Parquet {
                path: path.clone(),
                source,
            }
        })?;
        let found = builder.schema();
        let want = table.arrow_schema();
        if found.fields().len() != want.fields().len() {
            return mismatch(format!(
                "table `{}` has {} columns, the catalogue declares {}",
                table.name,
                found.fields().len(),
                want.fields().len()
            ));
        }
        for (f, w) in found.fields().iter().zip(want.fields()) {
            if f.name() != w.name()
                || f.data_type() != w.data_type()
                || f.is_nullable() != w.is_nullable()
            {
                return mismatch(format!(
                    "table `{}` column `{}` ({}, nullable {}) differs from the catalogue's `{}` ({}, nullable {})",
                    table.name,
                    f.name(),
                    f.data_type(),
                    f.is_nullable(),
                    w.name(),
                    w.data_type(),
                    w.is_nullable()
                ));
            }
        }
        let rows = builder.metadata().file_metadata().num_rows();
        if rows < 0 || rows as u64 != entry.rows {
            return mismatch(format!(
                "table `{}` has {rows} rows, manifest.json says {}",
                table.name, entry.rows
            ));
        }
    }
    Ok(())
}
