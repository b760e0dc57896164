//! `SearchFilter` JSON (the `filters` field of /v1/ask, /v1/search and
//! /v1/chat/completions) deserialized, planned into store conditions and run
//! by the embedded store over a handful of chunks. The result is checked
//! against an oracle written from the filter's documentation: a search
//! wide enough for every chunk returns exactly the chunks the filter admits.
#![no_main]

use docent_core::{
    Chunk, ChunkId, CollectionSpec, DocumentId, EmbeddedChunk, SearchFilter, SearchMode,
    SearchRequest, VectorStore,
};
use docent_store::EdgeStore;
use docent_store::payload::folder_key;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use std::sync::LazyLock;

/// (source, tags, metadata, modified) of each stored chunk.
const CHUNKS: &[(&str, &[&str], &[(&str, &str)], Option<u64>)] = &[
    (
        "docs/parking.md",
        &["policy", "site"],
        &[("lang", "en")],
        Some(1_700_000_000),
    ),
    (
        "docs/travel/rail.md",
        &["policy"],
        &[("lang", "fr"), ("owner", "ops"), ("review.by", "ana")],
        Some(1_600_000_000),
    ),
    ("notes.txt", &[], &[], None),
    (
        "./odd name/ü.html",
        &["é"],
        &[("author", "Zoë"), ("x y", "1 2")],
        Some(0),
    ),
    (
        "docs2/a.md",
        &["site"],
        &[("lang", "en")],
        Some(u64::MAX >> 12),
    ),
];

struct Stored {
    store: EdgeStore,
    chunks: Vec<Chunk>,
}

static STORE: LazyLock<Stored> = LazyLock::new(|| {
    let dir = Box::leak(Box::new(tempfile::tempdir().expect("a temporary folder")));
    let spec = CollectionSpec {
        embedding_model: "word-hash".into(),
        dimension: 16,
        chunk_max_tokens: 512,
        chunk_overlap_tokens: 0,
        schema_version: CollectionSpec::SCHEMA_VERSION,
    };
    let store = EdgeStore::open(&dir.path().join("vectors"), spec).expect("the store");
    let chunks: Vec<Chunk> = CHUNKS
        .iter()
        .map(|(source, tags, metadata, modified)| {
            let document_id = DocumentId::new(*source);
            Chunk {
                id: ChunkId::derive(&document_id, "hash", 0),
                document_id,
                source: source.to_string(),
                text: format!("text of {source}"),
                end: 10,
                line_start: 1,
                line_end: 1,
                content_hash: "hash".into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                metadata: metadata
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                modified: *modified,
                ..Default::default()
            }
        })
        .collect();
    let embedded: Vec<EmbeddedChunk> = chunks
        .iter()
        .map(|chunk| EmbeddedChunk {
            vector: docent_fuzz::word_hash(&chunk.text),
            chunk: chunk.clone(),
        })
        .collect();
    store.upsert(&embedded).expect("upsert");
    store.flush().expect("flush");
    Stored { store, chunks }
});

/// Whether the filter admits the chunk, as its fields are documented.
fn admits(filter: &SearchFilter, chunk: &Chunk) -> bool {
    (filter.document_ids.is_empty() || filter.document_ids.contains(&chunk.document_id))
        && filter.source.as_ref().is_none_or(|s| *s == chunk.source)
        && filter
            .source_prefix
            .as_ref()
            .is_none_or(|p| chunk.source.starts_with(&folder_key(p)))
        && (filter.tags.is_empty() || filter.tags.iter().any(|t| chunk.tags.contains(t)))
        && filter
            .metadata
            .iter()
            .all(|(k, v)| chunk.metadata.get(k) == Some(v))
        && filter
            .modified_after
            .is_none_or(|t| chunk.modified.is_some_and(|m| m >= t))
        && filter
            .modified_before
            .is_none_or(|t| chunk.modified.is_some_and(|m| m <= t))
}

fuzz_target!(|data: &[u8]| {
    let Ok(filter) = serde_json::from_slice::<SearchFilter>(data) else {
        return;
    };
    let stored = &*STORE;
    let request = SearchRequest {
        vector: docent_fuzz::word_hash("parking"),
        text: "parking".into(),
        mode: SearchMode::Dense,
        top_k: 16,
        filter: filter.clone(),
        ..Default::default()
    };
    let hits = match stored.store.search(&request) {
        Ok(hits) => hits,
        // A filter the store refuses must be refused as the caller's error.
        Err(docent_core::Error::InvalidInput(_)) => return,
        Err(e) => panic!("filter {filter:?} failed in the store: {e:#}"),
    };
    let found: BTreeSet<&str> = hits.iter().map(|h| h.chunk.source.as_str()).collect();
    let expected: BTreeSet<&str> = stored
        .chunks
        .iter()
        .filter(|c| admits(&filter, c))
        .map(|c| c.source.as_str())
        .collect();
    assert_eq!(found, expected, "filter {filter:?}");
});
