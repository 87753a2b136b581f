//! Durable file operations: what kura writes outside the database (extracts, audit
//! checkpoints, backups) survives a crash in a state it can recognise.
//!
//! Guarantees: [`write_atomic`] leaves either the old file or the complete new one (write
//! to a temporary sibling, fsync it, rename, fsync the directory); [`sync_dir`] makes a
//! rename or creation in a directory durable (on Linux a rename is only in the directory's
//! metadata until that directory is fsynced); [`check_private`] refuses a secret file that
//! other accounts can read.

use std::fs;
use std::io::Write;
use std::path::Path;

/// Fsync a directory, so the renames and creations in it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Fsync the parent directory of `path` (the directory itself for a bare name).
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => sync_dir(Path::new(".")),
    }
}

/// Replace `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Append one line to `path` (created if missing) and fsync it.
pub fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let created = !path.exists();
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    if created {
        sync_parent(path)?;
    }
    Ok(())
}

/// Fault-test hook (debug builds only): when `KURA_TEST_PAUSE_AT` names this point, the
/// process announces it on stderr and stops here, so a test can kill it at exactly this
/// step (kill -9 between the two renames of an extract build, say). Release builds
/// compile it to nothing.
pub fn pause_point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("KURA_TEST_PAUSE_AT").as_deref() == Ok(name) {
        eprintln!("kura: paused at {name}");
        // The test waits for this file rather than for a line on stderr.
        if let Ok(marker) = std::env::var("KURA_TEST_PAUSE_FILE") {
            let _ = std::fs::write(marker, name);
        }
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Errors of [`check_private`].
#[derive(Debug, thiserror::Error)]
pub enum PermissionError {
    #[error(
        "{path} is readable or writable by other accounts (mode {mode:o}); a key file must be private: `chmod 600 {path}` / 鍵ファイルは所有者のみ読み書きできるようにしてください（chmod 600）"
    )]
    TooOpen { path: String, mode: u32 },
    #[error("cannot read the permissions of {path}: {source}")]
    Stat {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Refuse a secret file whose mode lets group or others read or write it (0600 or
/// stricter is accepted).
pub fn check_private(path: &Path) -> Result<(), PermissionError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(path).map_err(|source| PermissionError::Stat {
            path: path.display().to_string(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(PermissionError::TooOpen {
                path: path.display().to_string(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_appends_accumulate() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("latest.json");
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"two");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        let l = dir.path().join("log.jsonl");
        append_line(&l, "a").unwrap();
        append_line(&l, "b").unwrap();
        assert_eq!(fs::read_to_string(&l).unwrap(), "a\nb\n");
    }

    #[cfg(unix)]
    #[test]
    fn key_files_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("audit.key");
        fs::write(&f, "00").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_private(&f).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("644"), "{e}");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_private(&f).is_ok());
        fs::set_permissions(&f, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(check_private(&f).is_ok());
    }
}
