//! Atomic directory output shared by synth and ingest.
//!
//! Files are written into a hidden temporary directory beside the target, synced, and only
//! then renamed into place, so a reader never finds a half-written dataset under the target
//! name. If anything fails (or the process unwinds) the temporary directory is removed and
//! the target is left as it was.

use std::io;
use std::path::{Path, PathBuf};

/// A temporary directory that becomes `target` on [`Staging::commit`].
#[derive(Debug)]
pub struct Staging {
    tmp: PathBuf,
    target: PathBuf,
    replace: bool,
    committed: bool,
}

/// Why a staging directory could not be created or committed.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error(
        "{0} already exists; choose a new directory (kura ingest also accepts --replace) / 既に存在します。新しいディレクトリを指定してください（kura ingest は --replace も可）"
    )]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StagingError + '_ {
    move |source| StagingError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Staging {
    /// Prepare to write `target`. Refuses when `target` exists unless `replace` is set.
    pub fn new(target: &Path, replace: bool) -> Result<Self, StagingError> {
        if target.exists() && !replace {
            return Err(StagingError::Exists(target.to_path_buf()));
        }
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(io_at(&parent))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        // Temporary directories of earlier runs that crashed may hold working files (ingest's
        // consent index links registry numbers to pseudonyms); they were never visible as the
        // target, so remove them before starting.
        let prefix = format!(".{name}.tmp-");
        for entry in std::fs::read_dir(&parent)
            .map_err(io_at(&parent))?
            .flatten()
        {
            let stale = entry.file_name().to_string_lossy().starts_with(&prefix);
            if stale && entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(entry.path()).map_err(io_at(&entry.path()))?;
            }
        }
        let tmp = parent.join(format!("{prefix}{}", std::process::id()));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            // Only the operator may look inside while the dataset is being built.
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&tmp).map_err(io_at(&tmp))?;
        Ok(Self {
            tmp,
            target: target.to_path_buf(),
            replace,
            committed: false,
        })
    }

    /// Where to write the files.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Sync and move the directory into place. An existing target (allowed by `replace`)
    /// is moved aside first and removed after the new one is in place.
    pub fn commit(mut self) -> Result<PathBuf, StagingError> {
        sync_dir(&self.tmp)?;
        let old = self.tmp.with_extension("old");
        let had_old = self.replace && self.target.exists();
        if had_old {
            std::fs::rename(&self.target, &old).map_err(io_at(&self.target))?;
        }
        if let Err(e) = std::fs::rename(&self.tmp, &self.target) {
            if had_old {
                // Put the previous dataset back so the failure changes nothing.
                let _ = std::fs::rename(&old, &self.target);
            }
            return Err(StagingError::Io {
                path: self.target.clone(),
                source: e,
            });
        }
        self.committed = true;
        if had_old {
            std::fs::remove_dir_all(&old).map_err(io_at(&old))?;
        }
        if let Some(parent) = self.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(self.target.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Flush a directory's entries to disk so the rename that follows is durable.
fn sync_dir(dir: &Path) -> Result<(), StagingError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_staging_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let s = Staging::new(&target, false).unwrap();
        std::fs::write(s.path().join("a"), b"x").unwrap();
        drop(s);
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn stale_temporary_directories_of_crashed_runs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let stale = dir.path().join(".out.tmp-999999");
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join(".consent-index"), b"K0000000001").unwrap();
        let s = Staging::new(&target, false).unwrap();
        assert!(!stale.exists());
        s.commit().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn replace_swaps_contents_and_refuses_without_flag() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("old"), b"1").unwrap();
        assert!(matches!(
            Staging::new(&target, false),
            Err(StagingError::Exists(_))
        ));
        let s = Staging::new(&target, true).unwrap();
        std::fs::write(s.path().join("new"), b"2").unwrap();
        s.commit().unwrap();
        assert!(target.join("new").exists() && !target.join("old").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
