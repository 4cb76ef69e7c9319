//! Writing files so that neither a failure nor a signal leaves a partial output.
//!
//! Every output is written to a hidden temporary file beside its target and renamed into
//! place once complete ([`write_atomic`]). Temporary files are registered while they exist,
//! so a front end's signal handler can remove them ([`remove_pending_and_exit`]).

use std::fs::File;
use std::io::Write;
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
    /// A fresh hidden name beside `target`: `DIR/.NAME.PID.N.tmp`, registered.
    pub fn beside(target: &Path) -> TempPath {
        let path = temp_name(target);
        lock_pending().push(path.clone());
        TempPath { path }
    }

    /// [`beside`](TempPath::beside), with the file created (empty) under the registry's
    /// lock and returned open: a signal handler that removes it later leaves the writer
    /// writing into an unlinked file, never a new one on disk.
    pub fn create(target: &Path) -> Result<(TempPath, File)> {
        let path = temp_name(target);
        let mut pending = lock_pending();
        let file = File::create(&path).map_err(|source| IrError::Io {
            path: target.to_path_buf(),
            source,
        })?;
        pending.push(path.clone());
        Ok((TempPath { path }, file))
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

fn temp_name(target: &Path) -> PathBuf {
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".to_string());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

fn lock_pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unregister(path: &Path) {
    lock_pending().retain(|p| p != path);
}

/// For signal handlers (SIGINT, SIGTERM): removes every temporary file still being
/// written and exits with `code`, holding the registry's lock, so no other thread can
/// register (and create) a new temporary file between the removal and the exit.
pub fn remove_pending_and_exit(code: i32) -> ! {
    let mut pending = lock_pending();
    remove_all(&mut pending);
    std::process::exit(code)
}

fn remove_all(pending: &mut Vec<PathBuf>) {
    for path in pending.drain(..) {
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
    let (tmp, mut file) = TempPath::create(target)?;
    file.write_all(bytes).map_err(|source| IrError::Io {
        path: target.to_path_buf(),
        source,
    })?;
    drop(file);
    tmp.persist(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use whittle_testkit::scratch;

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
        let dir = scratch("files-ok");
        let target = dir.join("out.bin");
        std::fs::write(&target, b"old").unwrap();
        write_bytes_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(entries(&dir), ["out.bin"]);
        assert!(!pending().iter().any(|p| p.starts_with(&dir)));
    }

    #[test]
    fn failure_keeps_the_old_target_and_removes_the_partial_file() {
        let dir = scratch("files-fail");
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
    fn removing_pending_files_leaves_nothing_behind() {
        let dir = scratch("files-signal");
        let (tmp, mut file) = TempPath::create(&dir.join("out.bin")).unwrap();
        assert!(pending().contains(&tmp.path().to_path_buf()));
        // What the signal handler does before it exits: the writer's open file outlives
        // the removal, and nothing is left on disk.
        remove_all(&mut lock_pending());
        file.write_all(b"partial").unwrap();
        assert!(entries(&dir).is_empty());
        assert!(tmp.persist(&dir.join("out.bin")).is_err());
    }
}
