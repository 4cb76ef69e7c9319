//! A candidate architecture: its genome, the zoo spec it builds and the content hash that
//! identifies it in the work folder's journals and on a cluster.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::nas::space::{Genome, Space};

/// Hex digits of the hash kept as a candidate's id.
const ID_LEN: usize = 16;

/// One architecture of a search space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Hash of the spec: equal ids, equal architectures (and initial weights).
    pub id: String,
    /// The zoo spec, `zoo:NAME:key=value,...`, or the pruning spec of a `--from` search
    /// (`pruned:percents=...`).
    pub spec: String,
    /// Its genome (unused genes at their first value).
    pub genome: Genome,
}

impl Candidate {
    /// The candidate `genome` of `space` describes.
    pub fn new(space: &Space, genome: &[u32]) -> Self {
        let genome = space.canonical(genome);
        let spec = space.spec(&genome);
        Candidate {
            id: config_hash(&spec),
            spec,
            genome,
        }
    }

    /// The first characters of the id, for log lines.
    pub fn short(&self) -> &str {
        &self.id[..8]
    }
}

/// The leading hex digits of the SHA-256 of `config`.
pub fn config_hash(config: &str) -> String {
    content_hash(config.as_bytes())
}

/// The leading hex digits of the SHA-256 of `bytes`.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..ID_LEN].to_string()
}
