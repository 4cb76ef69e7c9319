//! Writing files so that neither a failure nor a signal leaves a partial output.
//!
//! Every output is written to a hidden temporary file beside its target and renamed into
//! place once complete ([`write_atomic`]). Temporary files are registered while they exist,
//! so a front end's signal handler can remove them ([`remove_pending`]) before it exits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{IrError, Result};

/// Temporary files that exist right now (created, not yet renamed or removed).
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Makes temporary names unique within the process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A registered temporary file beside a target. Dropping it removes the file unless it was
/// [`persist`](TempPath::persist)ed.
#[derive(Debug)]
pub struct TempPath {
    path: PathBuf,
}

impl TempPath {
    /// A fresh hidden name beside `target`: `DIR/.NAME.PID.N.tmp`.
    pub fn beside(target: &Path) -> TempPath {
        let dir = target
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".to_string());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        lock_pending().push(path.clone());
        TempPath { path }
    }

    /// The temporary path to write.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the temporary file onto `target` (replacing it).
    pub fn persist(self, target: &Path) -> Result<()> {
        std::fs::rename(&self.path, target).map_err(|source| IrError::Io {
            path: target.to_path_buf(),
            source,
        })?;
        unregister(&self.path);
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        unregister(&self.path);
    }
}

fn lock_pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unregister(path: &Path) {
    lock_pending().retain(|p| p != path);
}

/// Removes every temporary file still being written. For signal handlers (SIGINT, SIGTERM):
/// call it, then exit.
pub fn remove_pending() {
    for path in lock_pending().drain(..) {
        let _ = std::fs::remove_file(path);
    }
}

/// The temporary files that exist right now (for tests and diagnostics).
pub fn pending() -> Vec<PathBuf> {
    lock_pending().clone()
}

/// Writes `target` atomically: `write` fills a temporary path beside it, which is renamed
/// onto `target` only when `write` succeeds. On failure nothing is left behind and an
/// existing `target` is untouched.
pub fn write_atomic<E>(
    target: &Path,
    write: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E>
where
    E: From<IrError>,
{
    let tmp = TempPath::beside(target);
    write(tmp.path())?;
    tmp.persist(target)?;
    Ok(())
}

/// [`write_atomic`] for a byte buffer.
pub fn write_bytes_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(target, |tmp| {
        std::fs::write(tmp, bytes).map_err(|source| IrError::Io {
            path: target.to_path_buf(),
            source,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("whittle-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn success_replaces_the_target_and_leaves_no_temporary() {
        let dir = scratch("ok");
        let target = dir.join("out.bin");
        std::fs::write(&target, b"old").unwrap();
        write_bytes_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(entries(&dir), ["out.bin"]);
        assert!(!pending().iter().any(|p| p.starts_with(&dir)));
    }

    #[test]
    fn failure_keeps_the_old_target_and_removes_the_partial_file() {
        let dir = scratch("fail");
        let target = dir.join("out.bin");
        std::fs::write(&target, b"old").unwrap();
        let result: Result<()> = write_atomic(&target, |tmp| {
            std::fs::write(tmp, b"partial").unwrap();
            Err(IrError::invalid("disk full"))
        });
        assert!(result.is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(entries(&dir), ["out.bin"]);
    }

    #[test]
    fn remove_pending_deletes_files_being_written() {
        let dir = scratch("signal");
        let tmp = TempPath::beside(&dir.join("out.bin"));
        std::fs::write(tmp.path(), b"partial").unwrap();
        assert!(pending().contains(&tmp.path().to_path_buf()));
        remove_pending();
        assert!(entries(&dir).is_empty());
        drop(tmp);
    }
}
