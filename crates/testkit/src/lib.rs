//! Test support shared by every whittle crate (a dev-dependency only).
//!
//! [`scratch`] gives a test an empty folder of its own that is removed when the test lets go
//! of it, so that test runs leave nothing behind in the system's temporary folder.

use std::ops::Deref;
use std::path::Path;

/// An empty scratch folder, removed with everything in it when dropped.
///
/// It dereferences to its [`Path`], so `dir.join("model.onnx")` and `&dir` work where a path
/// is expected. Hold it for as long as the test uses the folder.
#[derive(Debug)]
pub struct Scratch(tempfile::TempDir);

impl Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

/// A fresh scratch folder in the system's temporary folder, named `whittle-{name}-` and a
/// random suffix, so that parallel tests and processes never share one.
pub fn scratch(name: &str) -> Scratch {
    let dir = tempfile::Builder::new()
        .prefix(&format!("whittle-{name}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a scratch folder whittle-{name}-*: {e}"));
    Scratch(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_folder_is_empty_unique_and_removed_on_drop() {
        let a = scratch("testkit");
        let b = scratch("testkit");
        assert_ne!(a.to_path_buf(), b.to_path_buf());
        assert!(a.is_dir() && std::fs::read_dir(&a).unwrap().next().is_none());
        std::fs::write(a.join("file"), b"x").unwrap();
        let path = a.to_path_buf();
        drop(a);
        assert!(!path.exists(), "{} left behind", path.display());
    }
}
