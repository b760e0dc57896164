//! One contract for every `VectorStore` backend. Each `check_*` function
//! takes a [`Backend`] and asserts a behaviour; `contract_tests!` runs every
//! check against the embedded engine (always) and against a Qdrant server
//! when `DOCENT_TEST_QDRANT_URL` is set (e.g. `http://localhost:6334`), each
//! Qdrant test in its own collection, deleted afterwards. Without the
//! variable the Qdrant half prints why it skipped and passes.
//!
//! Vectors are small and hand-made: the store, not the embedder, is under
//! test. The engines are real (qdrant-edge in-process, or the server).

use docent_core::{
    Chunk, ChunkId, CollectionSpec, DocumentId, EmbeddedChunk, Error, Fusion, SearchFilter,
    SearchMode, SearchRequest, VectorStore,
};
use docent_store::{EdgeStore, QdrantOptions, QdrantStore};
use std::collections::BTreeMap;
use std::path::PathBuf;

const QDRANT_URL_VAR: &str = "DOCENT_TEST_QDRANT_URL";

/// Opens one collection, again and again (to test reopening), and cleans up.
trait Backend {
    fn open(&self, spec: CollectionSpec) -> Result<Box<dyn VectorStore>, Error>;
    /// A second, independent collection of the same backend (for copies).
    fn sibling(&self) -> Box<dyn Backend>;
}

struct Embedded {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Embedded {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vectors");
        Embedded { _dir: dir, path }
    }
}

impl Backend for Embedded {
    fn open(&self, spec: CollectionSpec) -> Result<Box<dyn VectorStore>, Error> {
        Ok(Box::new(EdgeStore::open(&self.path, spec)?))
    }
    fn sibling(&self) -> Box<dyn Backend> {
        Box::new(Embedded::new())
    }
}

struct Server {
    options: QdrantOptions,
}

impl Server {
    /// A fresh collection named after the test, or `None` (with the reason
    /// printed) when no server is configured.
    fn new(test: &str) -> Option<Self> {
        let Ok(url) = std::env::var(QDRANT_URL_VAR) else {
            eprintln!(
                "skipped: {test} on a Qdrant server needs {QDRANT_URL_VAR} (e.g. http://localhost:6334); none is set"
            );
            return None;
        };
        Some(Self::named(&url, test))
    }

    fn named(url: &str, test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("docent_test_{test}_{}_{nanos}", std::process::id());
        let mut options = QdrantOptions::new(url, name);
        options.api_key = std::env::var("DOCENT_TEST_QDRANT_API_KEY").ok();
        // Start clean even if an earlier run died before dropping.
        QdrantStore::delete_collection(&options).unwrap();
        Server { options }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = QdrantStore::delete_collection(&self.options) {
            eprintln!("could not delete {}: {e}", self.options.collection);
        }
    }
}

impl Backend for Server {
    fn open(&self, spec: CollectionSpec) -> Result<Box<dyn VectorStore>, Error> {
        Ok(Box::new(QdrantStore::open(self.options.clone(), spec)?))
    }
    fn sibling(&self) -> Box<dyn Backend> {
        Box::new(Server::named(
            &self.options.url,
            &format!("{}_copy", self.options.collection),
        ))
    }
}

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

fn id_of(doc: &str, ordinal: usize) -> ChunkId {
    ChunkId::derive(&DocumentId::new(doc), "hash", ordinal)
}

fn dense(v: [f32; 4], top_k: usize, filter: SearchFilter) -> SearchRequest {
    SearchRequest {
        vector: v.to_vec(),
        mode: SearchMode::Dense,
        top_k,
        filter,
        ..Default::default()
    }
}

fn hits(store: &dyn VectorStore, request: &SearchRequest) -> Vec<(String, usize)> {
    store
        .search(request)
        .unwrap()
        .into_iter()
        .map(|h| (h.chunk.document_id.0, h.chunk.ordinal))
        .collect()
}

fn sorted(mut ids: Vec<ChunkId>) -> Vec<ChunkId> {
    ids.sort();
    ids
}

fn three_chunks() -> Vec<EmbeddedChunk> {
    vec![
        chunk("a.md", 0, "alpha zero", [1.0, 0.0, 0.0, 0.0]),
        chunk("a.md", 1, "alpha one", [0.9, 0.1, 0.0, 0.0]),
        chunk("b.md", 0, "beta zero", [0.0, 1.0, 0.0, 0.0]),
    ]
}

// ---------------------------------------------------------------- checks

fn check_upsert(backend: &dyn Backend) {
    let store = backend.open(spec()).unwrap();
    assert_eq!(store.count().unwrap(), 0);
    store.upsert(&three_chunks()).unwrap();
    // Upserting the same id again replaces, not duplicates.
    store
        .upsert(&[chunk("b.md", 0, "beta zero", [0.0, 1.0, 0.0, 0.0])])
        .unwrap();
    assert_eq!(store.count().unwrap(), 3);

    let found = store.search(&dense([1.0, 0.0, 0.0, 0.0], 2, SearchFilter::default()));
    let found = found.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(
        found[0].chunk,
        chunk("a.md", 0, "alpha zero", [0.0; 4]).chunk,
        "payload round-trips"
    );
    assert!((found[0].score - 1.0).abs() < 1e-5, "{}", found[0].score);
    assert!((found[0].similarity - 1.0).abs() < 1e-5);
    assert!(found[0].score >= found[1].score);

    assert_eq!(
        sorted(store.chunk_ids(&DocumentId::new("a.md")).unwrap()),
        sorted(vec![id_of("a.md", 0), id_of("a.md", 1)])
    );
    let by_ordinal = store
        .chunks_by_ordinal(&DocumentId::new("a.md"), &[1, 7])
        .unwrap();
    assert_eq!(by_ordinal.len(), 1, "missing ordinals are skipped");
    assert_eq!(by_ordinal[0].text, "alpha one");

    let mut bad = chunk("a.md", 0, "x", [1.0, 0.0, 0.0, 0.0]);
    bad.vector.push(0.0);
    assert!(matches!(store.upsert(&[bad]), Err(Error::InvalidInput(_))));
    assert!(matches!(
        store.search(&SearchRequest {
            vector: vec![1.0; 3],
            top_k: 1,
            ..Default::default()
        }),
        Err(Error::InvalidInput(_))
    ));
}

/// What ingestion does when a file changes: new chunks in, stale ones out.
fn check_replace_document(backend: &dyn Backend) {
    let store = backend.open(spec()).unwrap();
    store.upsert(&three_chunks()).unwrap();
    let old = store.chunk_ids(&DocumentId::new("a.md")).unwrap();
    let mut new_version = chunk("a.md", 0, "alpha rewritten", [0.0, 0.0, 1.0, 0.0]);
    new_version.chunk.content_hash = "hash2".into();
    new_version.chunk.id = ChunkId::derive(&DocumentId::new("a.md"), "hash2", 0);
    store.upsert(std::slice::from_ref(&new_version)).unwrap();
    store.delete_chunks(&old).unwrap();
    // Unknown ids are ignored.
    store.delete_chunks(&[id_of("nowhere.md", 0)]).unwrap();
    store.flush().unwrap();

    assert_eq!(store.count().unwrap(), 2);
    assert_eq!(
        store.chunk_ids(&DocumentId::new("a.md")).unwrap(),
        vec![new_version.chunk.id]
    );
    let top = store
        .search(&dense([0.0, 0.0, 1.0, 0.0], 1, SearchFilter::default()))
        .unwrap();
    assert_eq!(top[0].chunk.text, "alpha rewritten");
    let texts: Vec<String> = store
        .search(&dense([1.0, 0.0, 0.0, 0.0], 10, SearchFilter::default()))
        .unwrap()
        .into_iter()
        .map(|h| h.chunk.text)
        .collect();
    assert!(
        !texts.iter().any(|t| t == "alpha zero" || t == "alpha one"),
        "stale chunks are gone: {texts:?}"
    );
}

fn check_delete_by_document(backend: &dyn Backend) {
    let store = backend.open(spec()).unwrap();
    store.upsert(&three_chunks()).unwrap();
    store.delete_chunks(&[id_of("a.md", 1)]).unwrap();
    assert_eq!(store.count().unwrap(), 2);
    store.delete_document(&DocumentId::new("a.md")).unwrap();
    assert_eq!(store.count().unwrap(), 1);
    assert!(
        store
            .chunk_ids(&DocumentId::new("a.md"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        hits(
            store.as_ref(),
            &dense([1.0, 0.0, 0.0, 0.0], 10, SearchFilter::default())
        ),
        vec![("b.md".to_string(), 0)]
    );
    // Deleting a document that is not there is not an error.
    store.delete_document(&DocumentId::new("a.md")).unwrap();
}

fn check_filters(backend: &dyn Backend) {
    let store = backend.open(spec()).unwrap();
    let mut chunks = vec![
        chunk("docs/guide/setup.md", 0, "setup", [1.0, 0.0, 0.0, 0.0]),
        chunk("docs/api.md", 0, "api", [0.9, 0.1, 0.0, 0.0]),
        chunk("notes/todo.md", 0, "todo", [0.8, 0.2, 0.0, 0.0]),
        chunk("docsy/x.md", 0, "lookalike folder", [0.7, 0.3, 0.0, 0.0]),
    ];
    chunks[0].chunk.tags = vec!["ops".into(), "howto".into()];
    chunks[1].chunk.tags = vec!["api".into()];
    chunks[0].chunk.metadata = BTreeMap::from([("team".to_string(), "infra".to_string())]);
    chunks[2].chunk.metadata = BTreeMap::from([("team".to_string(), "web".to_string())]);
    chunks[0].chunk.modified = Some(1_000);
    chunks[1].chunk.modified = Some(2_000);
    chunks[2].chunk.modified = Some(3_000);
    store.upsert(&chunks).unwrap();
    let q = [1.0, 0.0, 0.0, 0.0];
    let docs = |filter: SearchFilter| -> Vec<String> {
        let mut d: Vec<String> = hits(store.as_ref(), &dense(q, 10, filter))
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        d.sort();
        d
    };
    let none = SearchFilter::default();
    assert_eq!(docs(none.clone()).len(), 4);
    assert_eq!(
        docs(SearchFilter {
            source: Some("docs/api.md".into()),
            ..none.clone()
        }),
        vec!["docs/api.md"]
    );
    assert_eq!(
        docs(SearchFilter {
            document_ids: vec![
                DocumentId::new("notes/todo.md"),
                DocumentId::new("docs/api.md")
            ],
            ..none.clone()
        }),
        vec!["docs/api.md", "notes/todo.md"]
    );
    // Folders match whole path segments: docs/ is not docsy/.
    assert_eq!(
        docs(SearchFilter {
            source_prefix: Some("docs".into()),
            ..none.clone()
        }),
        vec!["docs/api.md", "docs/guide/setup.md"]
    );
    assert_eq!(
        docs(SearchFilter {
            source_prefix: Some("./docs/guide/".into()),
            ..none.clone()
        }),
        vec!["docs/guide/setup.md"]
    );
    assert_eq!(
        docs(SearchFilter {
            tags: vec!["api".into(), "howto".into()],
            ..none.clone()
        }),
        vec!["docs/api.md", "docs/guide/setup.md"]
    );
    assert_eq!(
        docs(SearchFilter {
            metadata: BTreeMap::from([("team".to_string(), "web".to_string())]),
            ..none.clone()
        }),
        vec!["notes/todo.md"]
    );
    assert_eq!(
        docs(SearchFilter {
            modified_after: Some(1_500),
            modified_before: Some(3_000),
            ..none.clone()
        }),
        vec!["docs/api.md", "notes/todo.md"]
    );
    // Conditions combine with AND, and a filter applies to keyword search too.
    assert_eq!(
        docs(SearchFilter {
            source_prefix: Some("docs/".into()),
            modified_after: Some(1_500),
            ..none.clone()
        }),
        vec!["docs/api.md"]
    );
    let keyword = store
        .search(&SearchRequest {
            vector: q.to_vec(),
            text: "setup".into(),
            mode: SearchMode::Keyword,
            top_k: 10,
            filter: SearchFilter {
                source: Some("docs/api.md".into()),
                ..none.clone()
            },
            ..Default::default()
        })
        .unwrap();
    assert!(keyword.is_empty(), "{keyword:?}");
}

/// The keyword side must matter: a chunk holding the query's rare term beats
/// a dense near-tie in hybrid mode, and wins outright in keyword mode.
fn check_hybrid_search(backend: &dyn Backend) {
    let store = backend.open(spec()).unwrap();
    store
        .upsert(&[
            // Densest match to the query vector, but without the term.
            chunk(
                "close.md",
                0,
                "refunds are handled by the billing team",
                [1.0, 0.0, 0.0, 0.0],
            ),
            // A near-tie on the dense side that holds the rare term.
            chunk(
                "rare.md",
                0,
                "the XQ-7734 error means the refund token expired",
                [0.98, 0.2, 0.0, 0.0],
            ),
            chunk(
                "far.md",
                0,
                "office plants need water weekly",
                [0.0, 0.0, 1.0, 0.0],
            ),
            chunk(
                "far.md",
                1,
                "the parking garage closes at nine",
                [0.0, 0.0, 0.0, 1.0],
            ),
        ])
        .unwrap();
    let request = |mode, fusion| SearchRequest {
        vector: vec![1.0, 0.0, 0.0, 0.0],
        text: "what does XQ-7734 mean".into(),
        mode,
        fusion,
        candidates: 10,
        top_k: 3,
        filter: SearchFilter::default(),
    };
    let rrf = Fusion::default();
    let first = |mode, fusion| hits(store.as_ref(), &request(mode, fusion))[0].0.clone();
    assert_eq!(first(SearchMode::Dense, rrf), "close.md");
    assert_eq!(first(SearchMode::Keyword, rrf), "rare.md");
    assert_eq!(first(SearchMode::Hybrid, rrf), "rare.md");
    assert_eq!(first(SearchMode::Hybrid, Fusion::Dbsf), "rare.md");
    // Weights steer RRF: all weight on the dense side gives the dense order.
    let dense_only = Fusion::Rrf {
        k: 60,
        dense_weight: 1.0,
        keyword_weight: 0.0,
    };
    assert_eq!(first(SearchMode::Hybrid, dense_only), "close.md");

    let keyword = store.search(&request(SearchMode::Keyword, rrf)).unwrap();
    assert_eq!(keyword.len(), 1, "only one chunk holds a query term");
    assert!(keyword[0].score > 0.0);
    // Similarity is the cosine whatever the mode.
    let expected = 0.98 / (0.98f32 * 0.98 + 0.2 * 0.2).sqrt();
    assert!(
        (keyword[0].similarity - expected).abs() < 1e-4,
        "{}",
        keyword[0].similarity
    );
    // Common words alone do not make a keyword match.
    let stop = store
        .search(&SearchRequest {
            text: "the".into(),
            ..request(SearchMode::Keyword, rrf)
        })
        .unwrap();
    assert!(stop.is_empty(), "{stop:?}");
}

fn check_metadata_mismatch(backend: &dyn Backend) {
    drop(backend.open(spec()).unwrap());
    let other = CollectionSpec {
        embedding_model: "other-model".into(),
        ..spec()
    };
    match backend.open(other) {
        Err(Error::Incompatible(msg)) => assert!(
            msg.contains("test-4d") && msg.contains("other-model"),
            "{msg}"
        ),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a mismatching collection was opened"),
    }
    let wider = CollectionSpec {
        dimension: 8,
        ..spec()
    };
    match backend.open(wider) {
        Err(Error::Incompatible(msg)) => assert!(msg.contains("dimension 4"), "{msg}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a collection of another dimension was opened"),
    }
    // The original spec still opens.
    assert_eq!(backend.open(spec()).unwrap().spec(), &spec());
}

fn check_reopen(backend: &dyn Backend) {
    {
        let store = backend.open(spec()).unwrap();
        store.upsert(&three_chunks()).unwrap();
        store.flush().unwrap();
    }
    let store = backend.open(spec()).unwrap();
    assert_eq!(store.count().unwrap(), 3);
    assert_eq!(
        hits(
            store.as_ref(),
            &dense([0.0, 1.0, 0.0, 0.0], 1, SearchFilter::default())
        ),
        vec![("b.md".to_string(), 0)]
    );
    // Payload indexes survive too: a filtered search still works.
    assert_eq!(
        hits(
            store.as_ref(),
            &dense(
                [1.0, 0.0, 0.0, 0.0],
                10,
                SearchFilter {
                    source: Some("b.md".into()),
                    ..Default::default()
                }
            )
        ),
        vec![("b.md".to_string(), 0)]
    );
}

/// What migration relies on: paging through every point and writing the
/// points elsewhere gives an identical collection, keyword side included.
fn check_scroll_and_copy(backend: &dyn Backend) {
    let store = backend.open(spec()).unwrap();
    let mut chunks = three_chunks();
    for i in 0..7 {
        chunks.push(chunk(
            "c.md",
            i,
            // A distinct term count per chunk: no keyword ties, so the
            // rankings of the original and the copy compare exactly.
            &format!("gamma {i} {}", "pelican ".repeat(1 + i)),
            [0.1, 0.1, 1.0, i as f32 / 10.0],
        ));
    }
    store.upsert(&chunks).unwrap();

    let sibling = backend.sibling();
    let copy = sibling.open(spec()).unwrap();
    let mut cursor = None;
    let mut pages = 0;
    let mut seen = Vec::new();
    loop {
        let (page, next) = store.scroll_points(cursor, 3).unwrap();
        assert!(page.len() <= 3);
        pages += 1;
        seen.extend(page.iter().map(|p| p.chunk.id));
        copy.upsert_points(&page).unwrap();
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(pages, 4, "10 points in pages of 3");
    assert_eq!(
        sorted(seen.clone()),
        sorted(chunks.iter().map(|c| c.chunk.id).collect())
    );
    assert_eq!(copy.count().unwrap(), 10);

    let (all, next) = store.scroll_points(None, 100).unwrap();
    assert!(next.is_none());
    let point = all.iter().find(|p| p.chunk.id == id_of("b.md", 0)).unwrap();
    assert_eq!(point.chunk, chunk("b.md", 0, "beta zero", [0.0; 4]).chunk);
    assert!((point.vector[1] - 1.0).abs() < 1e-6);
    assert!(!point.sparse.indices.is_empty(), "BM25 terms are copied");
    assert_eq!(point.sparse.indices.len(), point.sparse.values.len());

    for mode in [SearchMode::Dense, SearchMode::Keyword, SearchMode::Hybrid] {
        let request = SearchRequest {
            vector: vec![0.1, 0.1, 1.0, 0.3],
            text: "pelican gamma 3".into(),
            mode,
            candidates: 10,
            top_k: 5,
            // Score-based fusion: rank fusion can tie two chunks exactly.
            fusion: Fusion::Dbsf,
            ..Default::default()
        };
        let a = store.search(&request).unwrap();
        let b = copy.search(&request).unwrap();
        assert_eq!(
            a.iter().map(|h| h.chunk.id).collect::<Vec<_>>(),
            b.iter().map(|h| h.chunk.id).collect::<Vec<_>>(),
            "{mode:?}"
        );
        for (x, y) in a.iter().zip(&b) {
            assert!((x.score - y.score).abs() < 1e-4, "{mode:?}: {x:?} vs {y:?}");
        }
    }
}

/// Values with spaces are exact keywords on every backend: a path, a tag or
/// a metadata value holding a space matches itself and nothing else (not as
/// full text, which would match any value sharing a word).
fn check_values_with_spaces(backend: &dyn Backend) {
    let store = backend.open(spec()).unwrap();
    let mut chunks = vec![
        chunk(
            "My Docs/Team Handbook.md",
            0,
            "refunds",
            [1.0, 0.0, 0.0, 0.0],
        ),
        chunk(
            "My Docs/Team Handbook.md",
            1,
            "holidays",
            [0.9, 0.1, 0.0, 0.0],
        ),
        chunk("My Docs/Team Plan.md", 0, "roadmap", [0.8, 0.2, 0.0, 0.0]),
        chunk("Handbook.md", 0, "other", [0.7, 0.3, 0.0, 0.0]),
        // Holds every value below as a substring, and must match none of them.
        chunk(
            "Archive/My Docs/Team Handbook.md",
            0,
            "old",
            [0.6, 0.4, 0.0, 0.0],
        ),
    ];
    chunks[4].chunk.tags = vec!["on call duty".into()];
    chunks[4].chunk.metadata =
        BTreeMap::from([("team".to_string(), "site reliability east".to_string())]);
    chunks[0].chunk.tags = vec!["on call".into()];
    chunks[2].chunk.tags = vec!["on leave".into()];
    chunks[0].chunk.metadata =
        BTreeMap::from([("team".to_string(), "site reliability".to_string())]);
    chunks[2].chunk.metadata = BTreeMap::from([("team".to_string(), "site design".to_string())]);
    store.upsert(&chunks).unwrap();
    let q = [1.0, 0.0, 0.0, 0.0];
    let docs = |filter: SearchFilter| -> Vec<(String, usize)> {
        let mut d = hits(store.as_ref(), &dense(q, 10, filter));
        d.sort();
        d
    };
    let none = SearchFilter::default();
    let handbook = "My Docs/Team Handbook.md".to_string();
    assert_eq!(
        docs(SearchFilter {
            source: Some(handbook.clone()),
            ..none.clone()
        }),
        vec![(handbook.clone(), 0), (handbook.clone(), 1)]
    );
    assert_eq!(
        docs(SearchFilter {
            document_ids: vec![DocumentId::new("My Docs/Team Plan.md")],
            ..none.clone()
        }),
        vec![("My Docs/Team Plan.md".to_string(), 0)]
    );
    assert_eq!(
        docs(SearchFilter {
            source_prefix: Some("My Docs".into()),
            ..none.clone()
        })
        .len(),
        3
    );
    assert_eq!(
        docs(SearchFilter {
            tags: vec!["on call".into()],
            ..none.clone()
        }),
        vec![(handbook.clone(), 0)]
    );
    assert_eq!(
        docs(SearchFilter {
            metadata: BTreeMap::from([("team".to_string(), "site reliability".to_string())]),
            ..none.clone()
        }),
        vec![(handbook.clone(), 0)]
    );
    assert_eq!(
        sorted(store.chunk_ids(&DocumentId::new(&handbook)).unwrap()),
        sorted(vec![id_of(&handbook, 0), id_of(&handbook, 1)])
    );
    store.delete_document(&DocumentId::new(&handbook)).unwrap();
    assert_eq!(store.count().unwrap(), 3);
    assert_eq!(
        store
            .chunks_by_ordinal(&DocumentId::new("My Docs/Team Plan.md"), &[0])
            .unwrap()
            .len(),
        1
    );
}

/// Found by the `filter` fuzz target: a metadata filter on a key with a
/// space (`x y`, unparsable as a payload path) or a dot (`review.by`, read
/// as a nested path) matched nothing, though the documents carried it.
fn fuzz_filter_metadata_keys_with_spaces_or_dots_never_matched(backend: &dyn Backend) {
    let store = backend.open(spec()).unwrap();
    let mut chunks = vec![
        chunk("a.md", 0, "a", [1.0, 0.0, 0.0, 0.0]),
        chunk("b.md", 0, "b", [0.9, 0.1, 0.0, 0.0]),
    ];
    chunks[0].chunk.metadata = BTreeMap::from([
        ("x y".to_string(), "1 2".to_string()),
        ("review.by".to_string(), "ana".to_string()),
        ("Zoë-é_1".to_string(), "v".to_string()),
    ]);
    chunks[1].chunk.metadata = BTreeMap::from([("review".to_string(), "by".to_string())]);
    store.upsert(&chunks).unwrap();
    let docs = |key: &str, value: &str| -> Vec<String> {
        let filter = SearchFilter {
            metadata: BTreeMap::from([(key.to_string(), value.to_string())]),
            ..Default::default()
        };
        hits(store.as_ref(), &dense([1.0, 0.0, 0.0, 0.0], 10, filter))
            .into_iter()
            .map(|(d, _)| d)
            .collect()
    };
    assert_eq!(docs("x y", "1 2"), vec!["a.md"]);
    assert_eq!(docs("review.by", "ana"), vec!["a.md"]);
    assert_eq!(docs("Zoë-é_1", "v"), vec!["a.md"]);
    assert!(docs("review", "by").contains(&"b.md".to_string()));
    assert!(docs("x", "1 2").is_empty());
}

// ---------------------------------------------------------------- runs

macro_rules! contract_tests {
    ($($check:ident),* $(,)?) => {
        mod embedded {
            $(
                #[test]
                fn $check() {
                    super::$check(&super::Embedded::new());
                }
            )*
        }
        mod qdrant_server {
            $(
                #[test]
                fn $check() {
                    if let Some(server) = super::Server::new(stringify!($check)) {
                        super::$check(&server);
                    }
                }
            )*
        }
    };
}

contract_tests!(
    check_upsert,
    check_replace_document,
    check_delete_by_document,
    check_filters,
    check_hybrid_search,
    check_metadata_mismatch,
    check_reopen,
    check_scroll_and_copy,
    check_values_with_spaces,
    fuzz_filter_metadata_keys_with_spaces_or_dots_never_matched,
);

// ------------------------------------------------- backend-specific checks

#[test]
fn embedded_a_second_opener_is_refused_while_the_first_holds_the_store() {
    let backend = Embedded::new();
    let _first = backend.open(spec()).unwrap();
    match backend.open(spec()) {
        Err(Error::Unavailable { message, .. }) => assert!(message.contains("in use"), "{message}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("two openers of one store"),
    }
}

#[test]
fn embedded_open_existing_reads_the_recorded_spec() {
    let backend = Embedded::new();
    drop(backend.open(spec()).unwrap());
    let store = EdgeStore::open_existing(&backend.path).unwrap();
    assert_eq!(store.spec(), &spec());
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        EdgeStore::open_existing(empty.path()),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn qdrant_server_open_existing_reads_the_recorded_spec() {
    let Some(server) = Server::new("open_existing") else {
        return;
    };
    assert!(matches!(
        QdrantStore::open_existing(server.options.clone()),
        Err(Error::NotFound(_))
    ));
    drop(server.open(spec()).unwrap());
    let store = QdrantStore::open_existing(server.options.clone()).unwrap();
    assert_eq!(store.spec(), &spec());
}

/// `optimize` turns a collection past qdrant-edge's indexing threshold
/// (10 MB of vectors) into an HNSW-indexed segment with an int8 copy of the
/// vectors, and search still finds each point's exact nearest neighbour.
#[test]
fn embedded_optimize_builds_the_quantized_hnsw_index() {
    const DIM: usize = 384;
    const POINTS: usize = 8_000; // 12 MB of f32 vectors
    let backend = Embedded::new();
    let spec = CollectionSpec {
        dimension: DIM,
        ..spec()
    };
    let store = EdgeStore::open(&backend.path, spec).unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let vectors: Vec<Vec<f32>> = (0..POINTS)
        .map(|_| {
            let v: Vec<f32> = (0..DIM).map(|_| next()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect();
    for (batch, start) in vectors.chunks(1000).zip((0..).step_by(1000)) {
        let chunks: Vec<EmbeddedChunk> = batch
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut c = chunk("big.md", start + i, "text", [0.0; 4]);
                c.vector = v.clone();
                c
            })
            .collect();
        store.upsert(&chunks).unwrap();
    }
    let indexed = |path: &std::path::Path| -> bool {
        std::fs::read_dir(path.join("segments"))
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path().join("segment.json")).ok())
            .any(|s| s.contains("\"hnsw\"") && s.contains("\"int8\""))
    };
    assert!(!indexed(&backend.path), "indexed before optimize");
    store.optimize().unwrap();
    assert!(indexed(&backend.path), "no HNSW segment after optimize");
    for (i, ordinal) in (0..POINTS).step_by(397).enumerate() {
        // A query close to one stored vector finds that point first, with
        // the store's default HNSW beam and with one set by `candidates`.
        let query: Vec<f32> = vectors[ordinal].iter().map(|x| x + 0.01 * next()).collect();
        let found = store
            .search(&SearchRequest {
                vector: query,
                mode: SearchMode::Dense,
                top_k: 3,
                candidates: if i % 2 == 0 { 0 } else { 200 },
                ..Default::default()
            })
            .unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].chunk.ordinal, ordinal);
        assert!(found[0].similarity > 0.95, "{}", found[0].similarity);
    }
    assert_eq!(store.count().unwrap(), POINTS);
}
