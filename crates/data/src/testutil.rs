//! Helpers shared by the unit tests: the assets folder and scratch files.

use std::path::PathBuf;

/// The assets folder (`$WHITTLE_ASSETS`, else `~/.cache/whittle-assets`); panics with a clear
/// message when it is missing, so that dataset tests never pass vacuously.
pub fn assets_dir() -> PathBuf {
    let dir = crate::assets_dir();
    assert!(
        dir.join("mnist").is_dir() && dir.join("fashion-mnist").is_dir(),
        "assets folder {} lacks mnist/ and fashion-mnist/: set WHITTLE_ASSETS to the folder \
         holding the MNIST and Fashion-MNIST files",
        dir.display()
    );
    dir
}

/// A fresh, empty scratch folder unique to this process and `name`.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("whittle-data-{}-{name}", std::process::id()));
    // Leftovers of an earlier run with the same pid may or may not exist.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch folder");
    dir
}

/// The bytes of an IDX file of type `code` and shape `dims` holding `data` (already big-endian).
pub fn idx_bytes(code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, code, dims.len() as u8];
    dims.iter().for_each(|d| out.extend(d.to_be_bytes()));
    out.extend_from_slice(data);
    out
}
