//! What the fuzz targets share: the panic policy for parsers that docent
//! guards itself, deterministic fakes for the router, and the embedder's
//! tokenizer for the chunker.

use docent_core::{
    ChatMessage, ChunkSpan, Chunker, Embedder, ExtractedDocument, FinishReason, GenerationEvent,
    GenerationRequest, GenerationStats, Generator, Result,
};
use std::path::{Path, PathBuf};
use std::sync::Once;

/// The repository root: files under it (and relative paths, which the
/// compiler gives local crates) are docent's own code.
fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/ sits in the repository")
}

/// Lets panics raised inside dependencies unwind, so the `catch_unwind`
/// guard docent puts around a dependency (the PDF parser, candle's GGUF
/// reader) is what is tested; a panic raised in docent's own code still
/// aborts, and so does any panic that escapes the target (libFuzzer's
/// harness aborts on it). libFuzzer's own hook aborts on every panic,
/// caught or not, so this replaces it on the first input.
pub fn abort_only_on_docent_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = info.location().is_none_or(|l| {
                let file = Path::new(l.file());
                file.is_relative() || file.starts_with(repo_root())
            });
            if ours {
                default(info);
                std::process::abort();
            }
        }));
    });
}

/// The embedding model's tokenizer (`[embed] model` in config/default.toml),
/// from `DOCENT_FUZZ_TOKENIZER` or the default models folder.
pub fn embedder_tokenizer() -> tokenizers::Tokenizer {
    let path = std::env::var_os("DOCENT_FUZZ_TOKENIZER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            dirs::cache_dir()
                .unwrap_or_default()
                .join("docent/models/all-MiniLM-L6-v2/tokenizer.json")
        });
    tokenizers::Tokenizer::from_file(&path).unwrap_or_else(|e| {
        panic!(
            "cannot load {} ({e}); run `docent models pull all-MiniLM-L6-v2` or set DOCENT_FUZZ_TOKENIZER",
            path.display()
        )
    })
}

/// Bag-of-words vectors hashed into 16 buckets.
pub struct WordHashEmbedder;

impl Embedder for WordHashEmbedder {
    fn model_id(&self) -> &str {
        "word-hash"
    }
    fn dimension(&self) -> usize {
        16
    }
    fn max_input_tokens(&self) -> usize {
        512
    }
    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(text.split_whitespace().count())
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| word_hash(t)).collect())
    }
}

/// The 16-bucket word-hash vector of `text`, unit length.
pub fn word_hash(text: &str) -> Vec<f32> {
    let mut v = [0.01f32; 16];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let h = word
            .to_lowercase()
            .bytes()
            .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        v[h as usize % 16] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

/// One chunk per document.
pub struct WholeDocument;

impl Chunker for WholeDocument {
    fn chunk(&self, document: &ExtractedDocument) -> Vec<ChunkSpan> {
        vec![ChunkSpan {
            start: 0,
            end: document.text.len(),
            heading: None,
        }]
    }
    fn max_tokens(&self) -> usize {
        512
    }
    fn overlap_tokens(&self) -> usize {
        0
    }
}

/// Answers "Lot C [1]." in two pieces.
pub struct ScriptedGenerator;

impl Generator for ScriptedGenerator {
    fn model_id(&self) -> &str {
        "scripted"
    }
    fn context_length(&self) -> usize {
        4096
    }
    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(text.split_whitespace().count())
    }
    fn template_overhead(&self, _: &[ChatMessage]) -> Result<usize> {
        Ok(8)
    }
    fn generate(
        &self,
        _: GenerationRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<GenerationEvent>> {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        for event in [
            GenerationEvent::Text("Lot C".into()),
            GenerationEvent::Text(" [1].".into()),
            GenerationEvent::Done {
                stats: GenerationStats {
                    prompt_tokens: 40,
                    completion_tokens: 4,
                    ..Default::default()
                },
                finish: FinishReason::Stop,
            },
        ] {
            tx.try_send(event).expect("room for the script");
        }
        Ok(rx)
    }
}

/// Extracts `data` as a file named `fuzz.{extension}` through the
/// extractor registry, as ingestion reads it, and checks what comes out.
/// The ZIP bound is smaller than the default to keep executions fast; what
/// is tested is that the bound holds.
pub fn extract_as(extension: &str, data: &[u8]) {
    static EXTRACTORS: std::sync::LazyLock<docent_ingest::Extractors> =
        std::sync::LazyLock::new(|| {
            docent_ingest::Extractors::new(&docent_ingest::ExtractOptions {
                max_unzipped_bytes: 4 << 20,
                ..Default::default()
            })
        });
    let name = format!("fuzz.{extension}");
    if let Ok(doc) = EXTRACTORS.extract(Path::new(&name), data) {
        check_document(&doc);
    }
}

/// Checks what every extracted document promises: page starts in order and
/// on character boundaries of the text, and a line offset within reason.
pub fn check_document(doc: &ExtractedDocument) {
    let mut last = 0;
    for &start in &doc.page_starts {
        assert!(
            start >= last,
            "page starts out of order: {:?}",
            doc.page_starts
        );
        assert!(
            doc.text.is_char_boundary(start),
            "page start {start} is not on a character boundary"
        );
        last = start;
    }
    assert!(
        !doc.text.trim().is_empty(),
        "an accepted document without text"
    );
}

/// A router state over the real embedded store, catalogue and conversation
/// store (in a temporary folder that lives as long as the process), with the
/// fakes above for the models and two documents ingested.
pub fn fuzz_state() -> std::sync::Arc<docent_server::AppState> {
    use docent_core::{DocumentId, collection_spec};
    use docent_ingest::{Catalogue, DocumentInput, DocumentMeta, IngestOptions, Pipeline};
    use docent_query::{Asker, QuerySettings, RetrievalSettings};
    use docent_server::{
        AppState, Collections, ConversationStore, KeyRing, Limits, Metrics, Served,
    };
    use std::sync::Arc;

    let dir = Box::leak(Box::new(tempfile::tempdir().expect("a temporary folder")));
    let embedder: Arc<dyn Embedder> = Arc::new(WordHashEmbedder);
    let chunker: Arc<dyn Chunker> = Arc::new(WholeDocument);
    let spec = collection_spec(embedder.as_ref(), chunker.as_ref());
    let store = Arc::new(
        docent_store::EdgeStore::open(&dir.path().join("vectors"), spec).expect("the store"),
    );
    let catalogue =
        Arc::new(Catalogue::open(&dir.path().join("catalogue.redb")).expect("the catalogue"));
    let asker = Asker::new(
        embedder.clone(),
        store.clone(),
        Arc::new(ScriptedGenerator),
        QuerySettings::default(),
        RetrievalSettings {
            score_floor: 0.0,
            ..Default::default()
        },
    );
    let pipeline = Pipeline::new(
        embedder.clone(),
        store,
        chunker,
        catalogue,
        IngestOptions::default(),
    );
    let docs = [
        ("docs/parking.md", "# Parking\n\nVisitors park in Lot C.\n"),
        ("notes/travel.txt", "Rail tickets are booked ahead.\n"),
    ];
    pipeline
        .ingest_documents(
            docs.iter()
                .map(|(source, text)| DocumentInput {
                    id: DocumentId::new(*source),
                    source: source.to_string(),
                    path_hint: PathBuf::from(source),
                    bytes: text.as_bytes().to_vec(),
                    meta: DocumentMeta {
                        tags: vec!["seed".into()],
                        ..Default::default()
                    },
                })
                .collect(),
            &|_| {},
        )
        .expect("seed documents ingest");
    let served = Served {
        name: "default".into(),
        asker: Arc::new(asker),
        pipeline: Arc::new(pipeline),
        conversations: Some(Arc::new(
            ConversationStore::open(&dir.path().join("conversations.redb"), Default::default())
                .expect("the conversation store"),
        )),
    };
    Arc::new(AppState {
        collections: Collections::one(dir.path().to_path_buf(), served),
        embedder,
        metrics: Metrics::default(),
        searches: docent_server::SearchSlots::new(&Limits::default()),
        limits: Limits::default(),
        keys: Arc::new(KeyRing::new(Vec::new(), None).expect("an empty key ring")),
        open_operations: Default::default(),
        defaults: Default::default(),
    })
}
