//! Identities of documents and chunks. Chunk ids are UUIDs derived from the
//! document, the content hash and the ordinal, never random, so re-ingesting
//! a file is an upsert and a migration keeps every id.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Identity of a document: its source path relative to the ingested root, or
/// an id chosen by an API caller. Stable across re-ingestion.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DocumentId(pub String);

impl DocumentId {
    pub fn new(s: impl Into<String>) -> Self {
        DocumentId(s.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Namespace for chunk UUIDs (v5), fixed forever so ids stay deterministic.
const CHUNK_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6d0c_e17a_1c4b_4f0e_9a57_3b1d_2c8e_5f01);

/// Identity of a chunk: a UUID derived from (document id, content hash, ordinal),
/// so re-ingesting identical content produces identical ids (an upsert, not a copy).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ChunkId(pub uuid::Uuid);

impl ChunkId {
    pub fn derive(document: &DocumentId, content_hash: &str, ordinal: usize) -> Self {
        let key = format!("{}\u{0}{}\u{0}{}", document.0, content_hash, ordinal);
        ChunkId(uuid::Uuid::new_v5(&CHUNK_NAMESPACE, key.as_bytes()))
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Hex sha256 of some bytes: the content hash used for change detection.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_ids_are_deterministic_and_distinct() {
        let d = DocumentId::new("a.md");
        let a = ChunkId::derive(&d, "h", 0);
        assert_eq!(a, ChunkId::derive(&d, "h", 0));
        assert_ne!(a, ChunkId::derive(&d, "h", 1));
        assert_ne!(a, ChunkId::derive(&d, "h2", 0));
        assert_ne!(a, ChunkId::derive(&DocumentId::new("b.md"), "h", 0));
    }
}
