//! Which backend holds a collection: the name configuration, the CLI and
//! migration use for the two `VectorStore` implementations of this crate.

use serde::{Deserialize, Serialize};

/// Which `VectorStore` backend holds the vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// qdrant-edge in the data directory.
    Embedded,
    /// A Qdrant server or cluster over gRPC.
    Qdrant,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Qdrant => "qdrant",
        }
    }
}
