//! Where whittle's fetched assets live (datasets, pretrained models, ONNX node tests).

use std::path::PathBuf;

/// The assets folder: `$WHITTLE_ASSETS`, else `~/.cache/whittle-assets`
/// (where `scripts/fetch-assets.sh` puts them).
pub fn assets_dir() -> PathBuf {
    std::env::var_os("WHITTLE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(PathBuf::from);
            home.unwrap_or_default().join(".cache/whittle-assets")
        })
}
