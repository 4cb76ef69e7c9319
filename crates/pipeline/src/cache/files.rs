//! Content hashes of the files a step reads (the files and folders its dataset SPECs name, a
//! teacher model), so that a changed file changes the step's key. Each file is hashed
//! streaming; its hash is remembered in `WORK_DIR/file_hashes.json` with its size and
//! modification time, and a later run hashes it again only when one of them changed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Context, Result};

/// The memo's file name in the work folder.
const MEMO: &str = "file_hashes.json";

/// A file's hash as last computed, valid while its size and modification time stay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Memo {
    size: u64,
    modified_ns: u128,
    sha256: String,
}

/// The remembered hashes of a work folder, by absolute path.
pub(super) struct FileHashes {
    memo_path: PathBuf,
    memo: BTreeMap<PathBuf, Memo>,
    changed: bool,
}

impl FileHashes {
    /// The memo of `work_dir` (empty when it has none or it cannot be read: it is only a
    /// shortcut, and every entry is checked against the file).
    pub(super) fn open(work_dir: &Path) -> Self {
        let memo_path = work_dir.join(MEMO);
        let memo = std::fs::read(&memo_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        FileHashes {
            memo_path,
            memo,
            changed: false,
        }
    }

    /// The hex SHA-256 of the contents of what the dataset `spec` names: its file, its
    /// files (`npy:X.npy,Y.npy`) or every file under its folder, with their relative
    /// paths. A spec that does not parse or names nothing that exists hashes as empty
    /// (the step itself then reports the spec).
    pub(super) fn spec(&mut self, spec: &str) -> Result<String> {
        let Ok(parsed) = whittle_data::spec::Spec::parse(spec) else {
            return Ok(String::new());
        };
        let mut hasher = Sha256::new();
        for location in parsed.location.split(',') {
            self.path(Path::new(location), &mut hasher)?;
        }
        Ok(super::hex(&hasher.finalize()))
    }

    /// The hex SHA-256 of the file at `path` (empty when there is none).
    pub(super) fn file(&mut self, path: &Path) -> Result<String> {
        if path.is_file() {
            self.file_hash(path)
        } else {
            Ok(String::new())
        }
    }

    /// Writes the memo back when a hash was computed.
    pub(super) fn save(&self) -> Result<()> {
        if !self.changed {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&self.memo).context(|| "encoding file hashes".into())?;
        whittle_ir::files::write_bytes_atomic(&self.memo_path, &bytes)
            .context(|| format!("writing {}", self.memo_path.display()))
    }

    /// Adds `path` to `hasher`: a file's hash, or a folder's files (sorted, each after
    /// its path relative to `path`); symbolic links to folders are not followed.
    fn path(&mut self, path: &Path, hasher: &mut Sha256) -> Result<()> {
        if path.is_file() {
            hasher.update(self.file_hash(path)?.as_bytes());
            return Ok(());
        }
        if !path.is_dir() {
            return Ok(());
        }
        let mut files = Vec::new();
        collect_files(path, &mut files)?;
        files.sort();
        for file in files {
            let relative = file.strip_prefix(path).unwrap_or(&file);
            let name = relative.to_string_lossy();
            hasher.update((name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            hasher.update(self.file_hash(&file)?.as_bytes());
        }
        Ok(())
    }

    /// The hash of one file, from the memo while its size and modification time match.
    fn file_hash(&mut self, path: &Path) -> Result<String> {
        let absolute = path
            .canonicalize()
            .context(|| format!("reading {}", path.display()))?;
        let meta =
            std::fs::metadata(&absolute).context(|| format!("reading {}", path.display()))?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let size = meta.len();
        if let Some(m) = self.memo.get(&absolute) {
            if m.size == size && m.modified_ns == modified_ns {
                return Ok(m.sha256.clone());
            }
        }
        let sha256 = stream_hash(&absolute)?;
        let memo = Memo {
            size,
            modified_ns,
            sha256: sha256.clone(),
        };
        self.memo.insert(absolute, memo);
        self.changed = true;
        Ok(sha256)
    }
}

/// Every file under `dir` (following no symbolic link to a folder).
fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .context(|| format!("reading {}", path.display()))?;
        if kind.is_dir() {
            collect_files(&path, files)?;
        } else if path.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

/// The hex SHA-256 of `path`'s bytes, read in blocks.
fn stream_hash(path: &Path) -> Result<String> {
    let mut file = File::open(path).context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut block)
            .context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
    }
    Ok(super::hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use whittle_testkit::Scratch;

    /// A scratch folder holding an empty `data/sub`.
    fn scratch(name: &str) -> Scratch {
        let dir = whittle_testkit::scratch(&format!("file-hashes-{name}"));
        std::fs::create_dir_all(dir.join("data/sub")).unwrap();
        dir
    }

    #[test]
    fn a_folder_hash_follows_its_files_contents_and_names() {
        let dir = scratch("folder");
        let data = dir.join("data");
        std::fs::write(data.join("a.bin"), b"one").unwrap();
        std::fs::write(data.join("sub/b.bin"), b"two").unwrap();
        let spec = format!("images:{}?size=8x8", data.display());
        let mut hashes = FileHashes::open(&dir);
        let first = hashes.spec(&spec).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(hashes.spec(&spec).unwrap(), first);
        std::fs::write(data.join("sub/b.bin"), b"TWO").unwrap();
        let changed = hashes.spec(&spec).unwrap();
        assert_ne!(changed, first);
        std::fs::rename(data.join("sub/b.bin"), data.join("sub/c.bin")).unwrap();
        assert_ne!(hashes.spec(&spec).unwrap(), changed);
        assert_eq!(hashes.spec("no scheme").unwrap(), "");
    }

    #[test]
    fn the_memo_is_kept_in_the_work_folder_and_checked_against_size_and_time() {
        let dir = scratch("memo");
        let file = dir.join("data/x.npy");
        std::fs::write(&file, b"abc").unwrap();
        let mut hashes = FileHashes::open(&dir);
        let sha = hashes.file(&file).unwrap();
        // SHA-256 of "abc".
        assert!(sha.starts_with("ba7816bf8f01cfea"), "{sha}");
        hashes.save().unwrap();
        // A memo entry is used while the file's size and time match it.
        let mut reopened = FileHashes::open(&dir);
        let absolute = file.canonicalize().unwrap();
        reopened.memo.get_mut(&absolute).unwrap().sha256 = "remembered".into();
        assert_eq!(reopened.file(&file).unwrap(), "remembered");
        // Another size: hashed again.
        std::fs::write(&file, b"abcd").unwrap();
        assert_ne!(reopened.file(&file).unwrap(), "remembered");
        let missing = FileHashes::open(&dir).file(&dir.join("missing")).unwrap();
        assert_eq!(missing, "");
    }
}
