//! Operator command `kura extract`: builds (or refreshes, when stale) one
//! application's scoped extract from an ingested dataset. The gateway does the same
//! through `ensure_extract`; this command lets an operator prepare or inspect one.
//!
//! Guarantees: the key is read from a file (never from the command line, where it would
//! land in shell history and process listings) and never printed; output names only
//! counts, hashes and the key fingerprint.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::catalog::Catalog;
use crate::sql::extract::{ExtractManifest, MIN_KEY_BYTES, ensure_extract};
use crate::sql::scope::Scope;

/// Arguments of `kura extract`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExtractArgs {
    /// Ingested dataset directory (<table>.parquet + manifest.json).
    #[arg(long)]
    pub source: PathBuf,
    /// Extract directory to create or refresh.
    #[arg(long)]
    pub out: PathBuf,
    /// File holding the application key: hex (64 hex digits recommended) or raw bytes.
    #[arg(long)]
    pub key_file: PathBuf,
    /// Approved datasets, comma-separated (e.g. nanbyo,als).
    #[arg(long, value_delimiter = ',', required = true)]
    pub datasets: Vec<String>,
    /// Approved designated disease numbers (default: all).
    #[arg(long, value_delimiter = ',')]
    pub diseases: Option<Vec<i32>>,
    /// Approved fiscal years (default: all).
    #[arg(long, value_delimiter = ',')]
    pub fiscal_years: Option<Vec<i32>>,
    /// Approved prefecture codes "01".."47" (default: nationwide).
    #[arg(long, value_delimiter = ',')]
    pub prefectures: Option<Vec<String>>,
    /// Manufacturer codes (PMS teams: only patients treated with their products).
    #[arg(long, value_delimiter = ',')]
    pub manufacturers: Option<Vec<String>>,
    /// Catalogue file (default: the catalogue compiled into kura).
    #[arg(long, env = "KURA_CATALOG")]
    pub catalog: Option<PathBuf>,
}

impl ExtractArgs {
    pub fn scope(&self) -> Scope {
        Scope {
            datasets: self.datasets.clone(),
            diseases: self.diseases.clone(),
            fiscal_years: self.fiscal_years.clone(),
            prefectures: self.prefectures.clone(),
            manufacturers: self.manufacturers.clone(),
            facilities: None,
        }
    }
}

/// Decode a key file: hex when the trimmed content is all hex digits, raw bytes otherwise.
pub fn decode_key(bytes: &[u8]) -> Vec<u8> {
    let trimmed = String::from_utf8_lossy(bytes);
    let trimmed = trimmed.trim();
    if trimmed.len() >= 2 * MIN_KEY_BYTES
        && trimmed.len().is_multiple_of(2)
        && let Ok(k) = hex::decode(trimmed)
    {
        return k;
    }
    bytes.to_vec()
}

/// A short summary of a manifest in Japanese and English.
pub fn summary(m: &ExtractManifest) -> String {
    let mut out = format!(
        "extract {} / 抽出データ: {} patients / 患者, {} patient-table rows / 行, built in {} ms\nsource manifest sha256: {}\nkey fingerprint / 鍵の指紋: {}\n",
        m.extract_id,
        m.patients,
        m.patient_rows,
        m.build_ms,
        m.source_manifest_sha256,
        m.key_fingerprint
    );
    for (name, t) in &m.tables {
        out.push_str(&format!(
            "  {name:<16} {:>10} rows  sha256 {}\n",
            t.rows,
            &t.sha256[..16]
        ));
    }
    out
}

/// Run `kura extract`.
pub async fn run(args: ExtractArgs) -> ExitCode {
    let catalog = match &args.catalog {
        Some(p) => Catalog::load(p),
        None => Catalog::embedded(),
    };
    let catalog = match catalog {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kura extract: {e}");
            return ExitCode::FAILURE;
        }
    };
    let key = match std::fs::read(&args.key_file) {
        Ok(bytes) => decode_key(&bytes),
        Err(e) => {
            eprintln!(
                "kura extract: cannot read key file {}: {e}; create one with `openssl rand -hex 32 > FILE` / 鍵ファイルを読めません",
                args.key_file.display()
            );
            return ExitCode::FAILURE;
        }
    };
    match ensure_extract(&args.source, &args.out, &args.scope(), &key, &catalog).await {
        Ok(m) => {
            print!("{}", summary(&m));
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut msg = format!("kura extract: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_decode_hex_or_raw() {
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
        assert_eq!(decode_key(hex_key.as_bytes()).len(), 32);
        assert_eq!(
            decode_key(b"raw key bytes that are not hex!!"),
            b"raw key bytes that are not hex!!"
        );
    }
}
