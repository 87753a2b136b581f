//! Audit stage, checkpoints: signed statements "entry `seq` of the chain had MAC `head`
//! at time `at`", written on a schedule to files outside the database, so that an
//! operator can ship them elsewhere (another host, WORM storage, a printout).
//!
//! Guarantees: a checkpoint is signed (HMAC-SHA256 with the audit key over a framing of
//! its own, so no audit entry can pass for a checkpoint or back); verifying the chain
//! against a checkpoint fails when the log no longer reaches its `seq` (the newest
//! entries were deleted: truncation, which the chain alone cannot show) or holds another
//! MAC there (the log was rebuilt); a checkpoint whose signature does not verify is
//! refused, not ignored. Files: `checkpoints.jsonl` (every checkpoint, one JSON object a
//! line, appended and fsynced) and `latest.json` (the newest, replaced atomically).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AuditKey;

/// File of every checkpoint, one a line.
pub const LOG_FILE: &str = "checkpoints.jsonl";
/// File of the newest checkpoint.
pub const LATEST_FILE: &str = "latest.json";

/// A signed statement of the chain head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    /// MAC of entry `seq`.
    pub head: String,
    pub at: DateTime<Utc>,
    /// HMAC-SHA256 of the checkpoint (hex).
    pub mac: String,
}

/// Errors reading checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line} is not a checkpoint: {source} / チェックポイントの形式が不正です")]
    Parse {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path} line {line}: the checkpoint's signature does not verify with this audit key: it was forged or edited, or the key differs / チェックポイントの署名が一致しません"
    )]
    Forged { path: PathBuf, line: usize },
    #[error("cannot write checkpoint in {dir}: {source}")]
    Write {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn signed_bytes(seq: i64, head: &str, at: &DateTime<Utc>) -> Vec<u8> {
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    format!("kura-audit-checkpoint-v1\n{seq}\n{at}\n{head}").into_bytes()
}

impl Checkpoint {
    /// Sign the head `(seq, head)` as of `at`.
    pub fn sign(key: &AuditKey, seq: i64, head: &str, at: DateTime<Utc>) -> Self {
        let at = at.trunc_micros();
        Self {
            seq,
            head: head.to_string(),
            mac: key.mac(&signed_bytes(seq, head, &at)),
            at,
        }
    }

    /// Whether the signature verifies under `key`.
    pub fn verifies(&self, key: &AuditKey) -> bool {
        key.check(&signed_bytes(self.seq, &self.head, &self.at), &self.mac)
    }
}

trait TruncMicros {
    fn trunc_micros(self) -> Self;
}

impl TruncMicros for DateTime<Utc> {
    fn trunc_micros(self) -> Self {
        chrono::SubsecRound::trunc_subsecs(self, 6)
    }
}

/// Read a checkpoint file: one JSON object (`latest.json`) or JSON lines
/// (`checkpoints.jsonl`); every checkpoint must verify under `key`.
pub fn read(path: &Path, key: &AuditKey) -> Result<Vec<Checkpoint>, CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(|source| CheckpointError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let c: Checkpoint =
            serde_json::from_str(line).map_err(|source| CheckpointError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                source,
            })?;
        if !c.verifies(key) {
            return Err(CheckpointError::Forged {
                path: path.to_path_buf(),
                line: i + 1,
            });
        }
        out.push(c);
    }
    Ok(out)
}

/// The checkpoints kept in `dir` (none when it has no log yet).
pub fn read_dir(dir: &Path, key: &AuditKey) -> Result<Vec<Checkpoint>, CheckpointError> {
    let log = dir.join(LOG_FILE);
    if !log.exists() {
        return Ok(Vec::new());
    }
    read(&log, key)
}

/// Append `c` to `dir`'s log and make it the latest (durably: fsync of files and dir).
pub fn write(dir: &Path, c: &Checkpoint) -> Result<(), CheckpointError> {
    let werr = |source| CheckpointError::Write {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(werr)?;
    let line = serde_json::to_string(c).map_err(|e| werr(std::io::Error::other(e)))?;
    crate::durable::append_line(&dir.join(LOG_FILE), &line).map_err(werr)?;
    crate::durable::write_atomic(&dir.join(LATEST_FILE), line.as_bytes()).map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::from_bytes(&[5u8; 32]).unwrap()
    }

    #[test]
    fn checkpoints_round_trip_and_forgeries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c1 = Checkpoint::sign(&key(), 3, "aa", Utc::now());
        let c2 = Checkpoint::sign(&key(), 7, "bb", Utc::now());
        write(dir.path(), &c1).unwrap();
        write(dir.path(), &c2).unwrap();
        assert_eq!(read_dir(dir.path(), &key()).unwrap(), vec![c1, c2.clone()]);
        assert_eq!(
            read(&dir.path().join(LATEST_FILE), &key()).unwrap(),
            vec![c2.clone()]
        );
        // An attacker who truncated the log lowers the checkpoint's seq: the MAC breaks.
        let mut forged = c2.clone();
        forged.seq = 5;
        std::fs::write(
            dir.path().join("forged.json"),
            serde_json::to_string(&forged).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            read(&dir.path().join("forged.json"), &key()),
            Err(CheckpointError::Forged { .. })
        ));
        // Another key (another installation) does not verify either.
        let other = AuditKey::from_bytes(&[6u8; 32]).unwrap();
        assert!(!c2.verifies(&other));
    }
}
