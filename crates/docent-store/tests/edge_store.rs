//! The real qdrant-edge store on small data. Vectors are hand-made: the
//! store, not the embedder, is under test.

use docent_core::{
    Chunk, ChunkId, CollectionSpec, DocumentId, EmbeddedChunk, Error, SearchFilter, SearchMode,
    SearchRequest, VectorStore,
};
use docent_store::EdgeStore;

fn spec() -> CollectionSpec {
    CollectionSpec {
        embedding_model: "test-4d".into(),
        dimension: 4,
        chunk_max_tokens: 254,
        chunk_overlap_tokens: 32,
        schema_version: CollectionSpec::SCHEMA_VERSION,
    }
}

fn chunk(doc: &str, ordinal: usize, text: &str, vector: [f32; 4]) -> EmbeddedChunk {
    let document_id = DocumentId::new(doc);
    EmbeddedChunk {
        chunk: Chunk {
            id: ChunkId::derive(&document_id, "hash", ordinal),
            document_id,
            source: doc.into(),
            ordinal,
            start: ordinal * 10,
            end: ordinal * 10 + text.len(),
            line_start: ordinal + 1,
            line_end: ordinal + 1,
            heading: (ordinal == 0).then(|| "Intro".to_string()),
            content_hash: "hash".into(),
            text: text.into(),
            ..Default::default()
        },
        vector: vector.to_vec(),
    }
}

fn search(store: &EdgeStore, v: [f32; 4], filter: SearchFilter) -> Vec<(String, usize)> {
    store
        .search(&SearchRequest {
            vector: v.to_vec(),
            mode: SearchMode::Dense,
            top_k: 10,
            filter,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|h| (h.chunk.document_id.0, h.chunk.ordinal))
        .collect()
}

#[test]
fn upsert_search_delete_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vectors");
    {
        let store = EdgeStore::open(&path, spec()).unwrap();
        store
            .upsert(&[
                chunk("a.md", 0, "alpha zero", [1.0, 0.0, 0.0, 0.0]),
                chunk("a.md", 1, "alpha one", [0.9, 0.1, 0.0, 0.0]),
                chunk("b.md", 0, "beta zero", [0.0, 1.0, 0.0, 0.0]),
            ])
            .unwrap();
        // Upserting the same ids again replaces, not duplicates.
        store
            .upsert(&[chunk("b.md", 0, "beta zero", [0.0, 1.0, 0.0, 0.0])])
            .unwrap();
        assert_eq!(store.count().unwrap(), 3);
        let hits = store
            .search(&SearchRequest {
                vector: vec![1.0, 0.0, 0.0, 0.0],
                mode: SearchMode::Dense,
                top_k: 2,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            hits[0].chunk,
            chunk("a.md", 0, "alpha zero", [0.0; 4]).chunk,
            "payload round-trips"
        );
        assert!((hits[0].score - 1.0).abs() < 1e-5);
        assert!(hits[0].score >= hits[1].score);
        store.flush().unwrap();
    }
    // Reopen: data survives.
    let store = EdgeStore::open(&path, spec()).unwrap();
    assert_eq!(store.count().unwrap(), 3);
    assert_eq!(
        search(&store, [0.0, 1.0, 0.0, 0.0], SearchFilter::default())[0],
        ("b.md".into(), 0)
    );

    // Filters are applied inside the query.
    let only_b = SearchFilter {
        source: Some("b.md".into()),
        ..Default::default()
    };
    assert_eq!(
        search(&store, [1.0, 0.0, 0.0, 0.0], only_b),
        vec![("b.md".to_string(), 0)]
    );
    let only_a = SearchFilter {
        document_ids: vec![DocumentId::new("a.md")],
        ..Default::default()
    };
    assert!(
        search(&store, [0.0, 1.0, 0.0, 0.0], only_a)
            .iter()
            .all(|(d, _)| d == "a.md")
    );

    let mut ids = store.chunk_ids(&DocumentId::new("a.md")).unwrap();
    ids.sort();
    let mut expected = vec![
        chunk("a.md", 0, "", [0.0; 4]).chunk.id,
        chunk("a.md", 1, "", [0.0; 4]).chunk.id,
    ];
    expected.sort();
    assert_eq!(ids, expected);

    store
        .delete_chunks(&[chunk("a.md", 1, "", [0.0; 4]).chunk.id])
        .unwrap();
    assert_eq!(store.count().unwrap(), 2);
    store.delete_document(&DocumentId::new("a.md")).unwrap();
    assert_eq!(store.count().unwrap(), 1);
    assert!(
        store
            .chunk_ids(&DocumentId::new("a.md"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_different_spec_is_refused_with_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vectors");
    drop(EdgeStore::open(&path, spec()).unwrap());
    let other = CollectionSpec {
        embedding_model: "other-model".into(),
        ..spec()
    };
    match EdgeStore::open(&path, other) {
        Err(Error::Incompatible(msg)) => assert!(
            msg.contains("test-4d") && msg.contains("other-model"),
            "{msg}"
        ),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a mismatching collection was opened"),
    }
}

#[test]
fn a_second_opener_is_refused_while_the_first_holds_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vectors");
    let _first = EdgeStore::open(&path, spec()).unwrap();
    match EdgeStore::open(&path, spec()) {
        Err(Error::Unavailable { message, .. }) => assert!(message.contains("in use"), "{message}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("two openers of one store"),
    }
}

#[test]
fn wrong_dimension_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let store = EdgeStore::open(&dir.path().join("v"), spec()).unwrap();
    let mut bad = chunk("a.md", 0, "x", [1.0, 0.0, 0.0, 0.0]);
    bad.vector.push(0.0);
    assert!(matches!(store.upsert(&[bad]), Err(Error::InvalidInput(_))));
}
