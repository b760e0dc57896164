//! `router(state)` driven with `tower::ServiceExt::oneshot`, no socket: the
//! error mapping, authentication, the routes' descriptions, and the
//! renderings of one answer stream (JSON, SSE, OpenAI chunks). The models are
//! deterministic fakes, since this tests the code around them; the store and
//! catalogue are the real embedded ones. Real-model behaviour over HTTP is
//! tested end to end in the workspace's `tests/serve.rs`.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use docent_core::{
    ChatMessage, ChunkSpan, Chunker, Embedder, Error, ExtractedDocument, FinishReason,
    GenerationEvent, GenerationRequest, GenerationStats, Generator, Result, collection_spec,
};
use docent_ingest::{Catalogue, IngestOptions, Pipeline};
use docent_query::{Asker, QuerySettings, RetrievalSettings};
use docent_server::keys::{ApiKey, KeyEntry, KeysFile, digest_hex};
use docent_server::{AppState, Collections, KeyRing, Limits, Metrics, Scope, Served, router};
use docent_store::EdgeStore;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tower::ServiceExt;

/// Bag-of-words vectors hashed into 16 buckets: texts sharing words are close.
struct WordHashEmbedder;

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
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = [0.01f32; 16];
                for word in t
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
            })
            .collect())
    }
}

/// One chunk per document.
struct WholeDocument;

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

/// Answers "Lot C [1]." in two pieces, or refuses with a full queue.
#[derive(Default)]
struct ScriptedGenerator {
    full: AtomicBool,
}

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
        if self.full.load(Ordering::Relaxed) {
            return Err(Error::Overloaded("the generation queue is full".into()));
        }
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

struct Server {
    state: Arc<AppState>,
    generator: Arc<ScriptedGenerator>,
    _dir: tempfile::TempDir,
}

/// One collection in `dir/name`: the real embedded store and catalogue
/// under the fake models.
fn served(
    dir: &std::path::Path,
    name: &str,
    embedder: &Arc<dyn Embedder>,
    generator: &Arc<ScriptedGenerator>,
) -> Served {
    let dir = dir.join(name);
    let chunker: Arc<dyn Chunker> = Arc::new(WholeDocument);
    let spec = collection_spec(embedder.as_ref(), chunker.as_ref());
    let store = Arc::new(EdgeStore::open(&dir.join("vectors"), spec).unwrap());
    let catalogue = Arc::new(Catalogue::open(&dir.join("catalogue.redb")).unwrap());
    let asker = Asker::new(
        embedder.clone(),
        store.clone(),
        generator.clone(),
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
    Served {
        name: name.to_string(),
        asker: Arc::new(asker),
        pipeline: Arc::new(pipeline),
        conversations: Some(Arc::new(
            docent_server::ConversationStore::open(
                &dir.join("conversations.redb"),
                Default::default(),
            )
            .unwrap(),
        )),
    }
}

/// A server of collection "default" with `api_keys` as `[server] api_keys`.
fn server(api_keys: &[&str], limits: Limits) -> Server {
    let keys = api_keys
        .iter()
        .enumerate()
        .map(|(i, k)| ApiKey::from_config(i, k).unwrap())
        .collect();
    server_of(&["default"], KeyRing::new(keys, None).unwrap(), limits)
}

/// A server of `collections` (the first is the default) accepting `keys`.
fn server_of(collections: &[&str], keys: KeyRing, limits: Limits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let embedder: Arc<dyn Embedder> = Arc::new(WordHashEmbedder);
    let generator = Arc::new(ScriptedGenerator::default());
    let served = collections
        .iter()
        .map(|name| {
            (
                name.to_string(),
                Arc::new(served(dir.path(), name, &embedder, &generator)),
            )
        })
        .collect();
    let state = Arc::new(AppState {
        collections: Collections {
            dir: dir.path().to_path_buf(),
            default: collections[0].to_string(),
            served,
        },
        embedder,
        metrics: Metrics::default(),
        searches: docent_server::SearchSlots::new(&limits),
        limits,
        keys: Arc::new(keys),
        open_operations: Default::default(),
        defaults: Default::default(),
    });
    Server {
        state,
        generator,
        _dir: dir,
    }
}

/// Sends one request through the router; returns status, headers and body.
async fn send(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router(server.state.clone())
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

const JSON: (&str, &str) = ("content-type", "application/json");

fn error_type(body: &str) -> String {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    value["error"]["type"]
        .as_str()
        .unwrap_or_else(|| panic!("no error type in {body}"))
        .to_string()
}

async fn upload_parking(server: &Server, headers: &[(&str, &str)]) {
    let body = json!({"source": "site/parking.md", "text": "# Parking\n\nVisitors park in lot C behind the warehouse.\n"});
    let (status, _, body) = send(server, "POST", "/v1/documents", headers, &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["results"][0]["status"],
        "added"
    );
}

#[tokio::test]
async fn with_keys_configured_v1_needs_the_key_and_the_operational_routes_stay_open() {
    let s = server(&["s3cret"], Limits::default());
    let search = json!({"query": "parking"}).to_string();
    for headers in [vec![JSON], vec![JSON, ("authorization", "Bearer wrong")]] {
        let (status, _, body) = send(&s, "POST", "/v1/search", &headers, &search).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(error_type(&body), "unauthorized");
        assert!(!body.contains("s3cret"), "the key leaked: {body}");
    }
    let keyed = [JSON, ("authorization", "Bearer s3cret")];
    let (status, _, _) = send(&s, "POST", "/v1/search", &keyed, &search).await;
    assert_eq!(status, StatusCode::OK);
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/"] {
        let (status, _, body) = send(&s, "GET", open, &[], "").await;
        assert_eq!(status, StatusCode::OK, "{open}: {body}");
    }
}

#[tokio::test]
async fn malformed_bodies_map_to_400_422_and_413_with_json_errors() {
    let s = server(
        &[],
        Limits {
            max_json_bytes: 256,
            ..Limits::default()
        },
    );
    let cases = [
        (
            "{\"question\": ",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "{\"question\": \"q\", \"topk\": 3}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "{\"question\": \"   \"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
    ];
    for (body, expected, kind) in cases {
        let (status, _, response) = send(&s, "POST", "/v1/ask", &[JSON], body).await;
        assert_eq!(status, expected, "{body} -> {response}");
        assert_eq!(error_type(&response), kind);
    }
    // The unknown field is named.
    let (_, _, response) = send(&s, "POST", "/v1/ask", &[JSON], cases[1].0).await;
    assert!(response.contains("topk"), "{response}");
    let huge = json!({"question": "x".repeat(1000)}).to_string();
    let (status, _, response) = send(&s, "POST", "/v1/ask", &[JSON], &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{response}");
    assert_eq!(error_type(&response), "payload_too_large");
    let (status, _, response) = send(&s, "POST", "/v1/ask", &[], "{\"question\": \"q\"}").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "no content type: {response}"
    );
}

#[tokio::test]
async fn unknown_routes_and_documents_are_404_and_document_ids_may_hold_slashes() {
    let s = server(&[], Limits::default());
    let (status, _, body) = send(&s, "GET", "/v1/nothing", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_type(&body), "not_found");
    upload_parking(&s, &[JSON]).await;
    let (status, _, body) = send(&s, "GET", "/v1/documents/site/parking.md", &[], "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["id"],
        "site/parking.md"
    );
    let (status, _, body) = send(&s, "GET", "/v1/documents/site/gone.md", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("site/gone.md"), "{body}");
    let (status, _, _) = send(&s, "DELETE", "/v1/documents/site/parking.md", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(&s, "DELETE", "/v1/documents/site/parking.md", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_full_generation_queue_is_429_with_retry_after_and_counted() {
    let s = server(&[], Limits::default());
    upload_parking(&s, &[JSON]).await;
    s.generator.full.store(true, Ordering::Relaxed);
    let ask = json!({"question": "Where do visitors park?"}).to_string();
    let (status, headers, body) = send(&s, "POST", "/v1/ask", &[JSON], &ask).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(error_type(&body), "overloaded");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    let (_, _, metrics) = send(&s, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains("docent_generation_rejections_total 1"),
        "{metrics}"
    );
}

/// The `data:` payloads of an SSE body, with their event names.
fn sse_events(body: &str) -> Vec<(String, String)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .filter_map(|l| l.strip_prefix(name))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            (field("event: "), field("data: "))
        })
        .collect()
}

#[tokio::test]
async fn one_answer_stream_renders_as_json_sse_and_openai_chunks() {
    let s = server(&[], Limits::default());
    upload_parking(&s, &[JSON]).await;
    let question = "Where do visitors park?";

    let ask = json!({"question": question}).to_string();
    let (status, _, body) = send(&s, "POST", "/v1/ask", &[JSON], &ask).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["answer"], "Lot C [1].");
    assert_eq!(answer["answerable"], true);
    assert_eq!(answer["citations"][0]["source"], "site/parking.md");
    assert_eq!(answer["citations"][0]["cited"], true);

    let streamed = json!({"question": question, "stream": true}).to_string();
    let (status, headers, body) = send(&s, "POST", "/v1/ask", &[JSON], &streamed).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_events(&body);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["citations", "token", "token", "done"], "{body}");
    let text: String = events[1..3]
        .iter()
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(text, "Lot C [1].");
    let done: Value = serde_json::from_str(&events[3].1).unwrap();
    assert_eq!(done["cited"], json!([1]));

    let chat = json!({"messages": [{"role": "user", "content": question}], "stream": true});
    let (status, _, body) = send(
        &s,
        "POST",
        "/v1/chat/completions",
        &[JSON],
        &chat.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let chunks: Vec<String> = sse_events(&body).into_iter().map(|(_, d)| d).collect();
    assert_eq!(chunks.last().map(String::as_str), Some("[DONE]"), "{body}");
    let parsed: Vec<Value> = chunks[..chunks.len() - 1]
        .iter()
        .map(|c| serde_json::from_str(c).unwrap())
        .collect();
    assert_eq!(
        parsed[0]["docent"]["citations"][0]["source"],
        "site/parking.md"
    );
    let content: String = parsed
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Lot C [1].");
    assert_eq!(
        parsed.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(parsed.last().unwrap()["docent"]["answerable"], true);

    // Every finished answer's tokens are counted, whatever its rendering.
    let (_, _, metrics) = send(&s, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains("docent_generated_tokens_total 12"),
        "{metrics}"
    );
}

#[tokio::test]
async fn every_route_is_served_where_its_description_says() {
    let s = server(&[], Limits::default());
    let (_, _, body) = send(&s, "GET", "/openapi.json", &[], "").await;
    let spec: Value = serde_json::from_str(&body).unwrap();
    let paths = spec["paths"].as_object().unwrap();
    let operations: usize = paths
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    // 13 /v1 operations, 10 of them again under /v1/collections/{collection},
    // and 3 operational ones.
    assert_eq!(operations, 26, "{:?}", paths.keys());
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let path = &path.replace("{collection}", "default");
            let concrete = if path.contains("/conversations") {
                path.replace("{id}", "6f1c7a52-4a1e-4a0e-9a51-1d6f0e0b8c11")
            } else {
                path.replace("{id}", "some/doc.md")
            };
            let (status, _, body) = send(&s, &method.to_uppercase(), &concrete, &[], "").await;
            // Reaching the handler may still be an error (no body, no such
            // document), but never the router's own 404 or 405.
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !body.contains("no such route"),
                "{method} {path} is described but not served"
            );
        }
    }
    assert!(spec["components"]["schemas"]["AskBody"].is_object());
    assert_eq!(
        spec,
        serde_json::to_value(docent_server::openapi::document()).unwrap()
    );
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The conversation's turns, once `n` are recorded (they are written after
/// the answer, off the request).
async fn turns(server: &Server, id: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let (status, _, body) =
            send(server, "GET", &format!("/v1/conversations/{id}"), &[], "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let turns = parse(&body)["turns"].as_array().unwrap().clone();
        if turns.len() >= n {
            return turns;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("conversation {id} never reached {n} turns");
}

#[tokio::test]
async fn conversations_keep_turns_and_follow_ups_search_with_the_earlier_question() {
    let s = server(&[], Limits::default());
    upload_parking(&s, &[JSON]).await;
    let (status, _, body) = send(&s, "POST", "/v1/conversations", &[], "").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = parse(&body)["id"].as_str().unwrap().to_string();

    let ask = |question: &str| json!({"question": question, "conversation_id": id}).to_string();
    let (status, _, body) = send(
        &s,
        "POST",
        "/v1/ask",
        &[JSON],
        &ask("Where do visitors park?"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = parse(&body);
    assert_eq!(first["conversation_id"], id.as_str());
    assert!(first.get("rewritten_query").is_none(), "{first}");
    turns(&s, &id, 1).await;

    // A follow-up is searched with the question it leans on.
    let (status, _, body) = send(&s, "POST", "/v1/ask", &[JSON], &ask("And is it free?")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rewritten = parse(&body)["rewritten_query"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        rewritten.starts_with("Where do visitors park?"),
        "{rewritten}"
    );
    let kept = turns(&s, &id, 2).await;
    assert_eq!(kept[0]["question"], "Where do visitors park?");
    assert_eq!(kept[0]["cited_sources"], json!(["site/parking.md"]));
    assert_eq!(kept[1]["rewritten_query"], rewritten.as_str());

    // Streamed, the search comes first as its own event.
    let body = json!({"question": "And is it free?", "stream": true,
        "history": [{"role": "user", "content": "Where do visitors park?"},
                    {"role": "assistant", "content": "Lot C [1]."}]});
    let (status, _, body) = send(&s, "POST", "/v1/ask", &[JSON], &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = sse_events(&body);
    assert_eq!(events[0].0, "rewrite", "{body}");
    assert_eq!(events[1].0, "citations", "{body}");
    // The OpenAI route takes the earlier messages as the conversation.
    let body = json!({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where do visitors park?"},
        {"role": "assistant", "content": "Lot C."},
        {"role": "user", "content": "And is it free?"}]});
    let (status, _, body) = send(
        &s,
        "POST",
        "/v1/chat/completions",
        &[JSON],
        &body.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        parse(&body)["docent"]["rewritten_query"]
            .as_str()
            .unwrap()
            .starts_with("Where do visitors park?"),
        "{body}"
    );

    // Mistakes are named.
    let both = json!({"question": "q", "conversation_id": id, "history": []}).to_string();
    let (status, _, body) = send(&s, "POST", "/v1/ask", &[JSON], &both).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let role = json!({"question": "q", "history": [{"role": "robot", "content": "x"}]}).to_string();
    let (status, _, body) = send(&s, "POST", "/v1/ask", &[JSON], &role).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("history[0].role"), "{body}");
    let unknown =
        json!({"question": "q", "conversation_id": "6f1c7a52-4a1e-4a0e-9a51-1d6f0e0b8c11"});
    let (status, _, body) = send(&s, "POST", "/v1/ask", &[JSON], &unknown.to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _, body) = send(&s, "GET", "/v1/conversations/..%2Fetc", &[], "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let path = format!("/v1/conversations/{id}");
    let (status, _, _) = send(&s, "DELETE", &path, &[], "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, body) = send(&s, "GET", &path, &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_type(&body), "not_found");
}

// ------------------------------------------------------------ keys and scopes

const ALPHA_TEXT: &str = "Visitors park in lot C behind the warehouse, gate code alpha-4471.";
const BETA_TEXT: &str = "The board salaries for the year are kept in the vault, code beta-9312.";
/// Words that appear only in beta's document, its id, or its conversation.
const BETA_MARKERS: [&str; 4] = ["beta-9312", "salaries", "vault", "payroll/board.md"];

/// A keys file with one key per role; returns the ring and the secrets.
fn matrix_keys(dir: &std::path::Path) -> KeyRing {
    let entry = |name: &str, scopes: &[Scope], collections: &[&str]| KeyEntry {
        name: name.into(),
        sha256: digest_hex(&format!("secret-{name}")),
        scopes: scopes.to_vec(),
        collections: collections.iter().map(|c| c.to_string()).collect(),
    };
    let path = dir.join("keys.toml");
    KeysFile {
        keys: vec![
            entry("alpha-reader", &[Scope::Read], &["alpha"]),
            entry("alpha-ingester", &[Scope::Ingest], &["alpha"]),
            entry("beta-reader", &[Scope::Read], &["beta"]),
            entry("admin", &[Scope::Admin], &["*"]),
        ],
    }
    .save(&path)
    .unwrap();
    KeyRing::new(Vec::new(), Some(path)).unwrap()
}

fn bearer(name: &str) -> String {
    format!("Bearer secret-{name}")
}

/// Every /v1 route aimed at collection alpha, in each way a request can
/// name it: (method, path, body, needs ingest).
fn alpha_requests(conversation: &str) -> Vec<(&'static str, String, String, bool)> {
    let mut out = Vec::new();
    for (prefix, query, field) in [
        ("/v1/collections/alpha", "", None),
        ("/v1", "?collection=alpha", None),
        ("/v1", "", Some("alpha")),
    ] {
        let with = |mut body: Value| {
            if let Some(name) = field {
                body["collection"] = json!(name);
            }
            body.to_string()
        };
        out.push((
            "POST",
            format!("{prefix}/ask{query}"),
            with(json!({"question": "Where do visitors park?"})),
            false,
        ));
        out.push((
            "POST",
            format!("{prefix}/ask{query}"),
            with(json!({"question": "Where do visitors park?", "stream": true})),
            false,
        ));
        out.push((
            "POST",
            format!("{prefix}/search{query}"),
            with(json!({"query": "visitors park"})),
            false,
        ));
        out.push((
            "POST",
            format!("{prefix}/chat/completions{query}"),
            with(json!({"messages": [{"role": "user", "content": "Where do visitors park?"}]})),
            false,
        ));
        if field.is_none() {
            out.push((
                "GET",
                format!("{prefix}/documents{query}"),
                String::new(),
                false,
            ));
            out.push((
                "GET",
                format!("{prefix}/documents/site/parking.md{query}"),
                String::new(),
                false,
            ));
            out.push((
                "POST",
                format!("{prefix}/conversations{query}"),
                String::new(),
                false,
            ));
            out.push((
                "GET",
                format!("{prefix}/conversations/{conversation}{query}"),
                String::new(),
                false,
            ));
            out.push((
                "POST",
                format!("{prefix}/documents{query}"),
                json!({"source": "site/extra.md", "text": "Bicycles go in the shed."}).to_string(),
                true,
            ));
            out.push((
                "DELETE",
                format!("{prefix}/documents/site/extra.md{query}"),
                String::new(),
                true,
            ));
        }
    }
    out
}

#[tokio::test]
async fn no_key_reaches_another_collection_or_a_scope_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_of(
        &["alpha", "beta"],
        matrix_keys(dir.path()),
        Limits::default(),
    );
    let admin = bearer("admin");
    let put = |collection: &str, source: &str, text: &str| {
        (
            format!("/v1/collections/{collection}/documents"),
            json!({"source": source, "text": text}).to_string(),
        )
    };
    for (path, body) in [
        put("alpha", "site/parking.md", ALPHA_TEXT),
        put("beta", "payroll/board.md", BETA_TEXT),
    ] {
        let (status, _, body) =
            send(&s, "POST", &path, &[JSON, ("authorization", &admin)], &body).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // A conversation in beta, with a turn that cites beta's document.
    let (_, _, created) = send(
        &s,
        "POST",
        "/v1/collections/beta/conversations",
        &[("authorization", &admin)],
        "",
    )
    .await;
    let beta_conversation = parse(&created)["id"].as_str().unwrap().to_string();
    let ask =
        json!({"question": "What is kept in the vault?", "conversation_id": beta_conversation})
            .to_string();
    let (status, _, body) = send(
        &s,
        "POST",
        "/v1/collections/beta/ask",
        &[JSON, ("authorization", &admin)],
        &ask,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("beta-9312"), "the admin reads beta: {body}");
    let mut recorded = false;
    for _ in 0..100 {
        let path = format!("/v1/collections/beta/conversations/{beta_conversation}");
        let (_, _, body) = send(&s, "GET", &path, &[("authorization", &admin)], "").await;
        if parse(&body)["turns"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
        {
            recorded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(recorded, "the beta turn was recorded");

    let requests = alpha_requests(&beta_conversation);
    let mut checked = 0;
    let no_beta = |who: &str, method: &str, path: &str, body: &str| {
        for marker in BETA_MARKERS {
            assert!(
                !body.contains(marker),
                "{who} {method} {path} leaked {marker:?}: {body}"
            );
        }
    };
    for (method, path, body, writes) in &requests {
        // Anonymous, a wrong key, and beta's reader never get past the door;
        // alpha's reader may not write, alpha's ingester may not read.
        let cases: [(&str, Option<String>, StatusCode); 6] = [
            ("no key", None, StatusCode::UNAUTHORIZED),
            (
                "wrong key",
                Some("Bearer secret-nobody".into()),
                StatusCode::UNAUTHORIZED,
            ),
            (
                "beta reader",
                Some(bearer("beta-reader")),
                StatusCode::FORBIDDEN,
            ),
            (
                "alpha reader",
                Some(bearer("alpha-reader")),
                if *writes {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::OK
                },
            ),
            (
                "alpha ingester",
                Some(bearer("alpha-ingester")),
                if *writes {
                    StatusCode::OK
                } else {
                    StatusCode::FORBIDDEN
                },
            ),
            ("admin", Some(admin.clone()), StatusCode::OK),
        ];
        for (who, key, expected) in cases {
            let mut headers = vec![JSON];
            if let Some(key) = &key {
                headers.push(("authorization", key.as_str()));
            }
            if *method == "DELETE" {
                // Something to delete, whoever deleted it before.
                let (path, body) = put("alpha", "site/extra.md", "Bicycles go in the shed.");
                send(&s, "POST", &path, &[JSON, ("authorization", &admin)], &body).await;
            }
            let (status, _, response) = send(&s, method, path, &headers, body).await;
            // A conversation of beta is unknown to alpha's store.
            let expected = if path.contains(&beta_conversation) && expected == StatusCode::OK {
                StatusCode::NOT_FOUND
            } else if method == &"POST"
                && path.contains("/conversations")
                && expected == StatusCode::OK
            {
                StatusCode::CREATED
            } else {
                expected
            };
            assert_eq!(status, expected, "{who} {method} {path}: {response}");
            if !status.is_success() {
                let kind = error_type(&response);
                assert_eq!(
                    kind,
                    match status {
                        StatusCode::UNAUTHORIZED => "unauthorized",
                        StatusCode::FORBIDDEN => "forbidden",
                        _ => "not_found",
                    },
                    "{who} {method} {path}"
                );
            }
            no_beta(who, method, path, &response);
            assert!(
                !response.contains("secret-"),
                "{who} {method} {path} echoed a secret: {response}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 6 * 20, "{checked}");

    // Routes without a collection: beta's reader sees only beta, alpha's only alpha.
    let (_, _, list) = send(
        &s,
        "GET",
        "/v1/collections",
        &[("authorization", &bearer("alpha-reader"))],
        "",
    )
    .await;
    let names: Vec<String> = parse(&list)["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["alpha"], "{list}");
    let (_, _, list) = send(
        &s,
        "GET",
        "/v1/collections",
        &[("authorization", &bearer("beta-reader"))],
        "",
    )
    .await;
    assert!(parse(&list)["current"].is_null(), "{list}");
    // With no collection named, a key of one collection uses that one.
    let search = json!({"query": "visitors park vault"}).to_string();
    let (status, _, found) = send(
        &s,
        "POST",
        "/v1/search",
        &[JSON, ("authorization", &bearer("beta-reader"))],
        &search,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert!(
        found.contains("beta-9312") && !found.contains("alpha-4471"),
        "{found}"
    );
    let (status, _, found) = send(
        &s,
        "POST",
        "/v1/search",
        &[JSON, ("authorization", &bearer("alpha-reader"))],
        &search,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    no_beta("alpha reader", "POST", "/v1/search", &found);
    for (path, body) in [
        ("/v1/models".to_string(), String::new()),
        (
            "/v1/embeddings".to_string(),
            json!({"input": "hello"}).to_string(),
        ),
        (
            format!("/v1/conversations/{beta_conversation}"),
            String::new(),
        ),
    ] {
        let method = if body.is_empty() { "GET" } else { "POST" };
        let (status, _, response) = send(
            &s,
            method,
            &path,
            &[JSON, ("authorization", &bearer("alpha-reader"))],
            &body,
        )
        .await;
        assert!(
            status == StatusCode::OK || status == StatusCode::NOT_FOUND,
            "{path}: {status} {response}"
        );
        no_beta("alpha reader", method, &path, &response);
    }
    // Naming two different collections is refused, not guessed.
    let (status, _, response) = send(
        &s,
        "POST",
        "/v1/collections/alpha/search",
        &[JSON, ("authorization", &admin)],
        &json!({"query": "x", "collection": "beta"}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{response}");
    // A collection that does not exist: 403 for a key that could not use
    // it anyway (nothing learnt), 404 for one that could.
    for (key, expected) in [
        ("alpha-reader", StatusCode::FORBIDDEN),
        ("admin", StatusCode::NOT_FOUND),
    ] {
        let (status, _, response) = send(
            &s,
            "POST",
            "/v1/collections/gamma/search",
            &[JSON, ("authorization", &bearer(key))],
            &search,
        )
        .await;
        assert_eq!(status, expected, "{key}: {response}");
    }
    // The open routes say nothing of beta.
    for path in ["/metrics", "/openapi.json", "/healthz", "/readyz", "/"] {
        let (status, _, response) = send(&s, "GET", path, &[], "").await;
        assert_eq!(status, StatusCode::OK, "{path}");
        no_beta("anonymous", "GET", path, &response);
        assert!(
            !response.contains("\"beta\""),
            "{path} names beta: {response}"
        );
    }
}

#[tokio::test]
async fn closed_operational_routes_need_a_key_and_metrics_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = server_of(
        &["alpha", "beta"],
        matrix_keys(dir.path()),
        Limits::default(),
    );
    Arc::get_mut(&mut s.state).unwrap().open_operations = docent_server::OpenOperations {
        metrics: false,
        health: false,
    };
    for (path, anonymous, reader, admin) in [
        ("/healthz", 401, 200, 200),
        ("/readyz", 401, 200, 200),
        ("/metrics", 401, 403, 200),
        ("/openapi.json", 200, 200, 200),
    ] {
        for (key, expected) in [
            (None, anonymous),
            (Some(bearer("alpha-reader")), reader),
            (Some(bearer("admin")), admin),
        ] {
            let headers: Vec<(&str, &str)> =
                key.iter().map(|k| ("authorization", k.as_str())).collect();
            let (status, _, body) = send(&s, "GET", path, &headers, "").await;
            assert_eq!(status.as_u16(), expected, "{path} {key:?}: {body}");
        }
    }
}

#[tokio::test]
async fn keys_are_rotated_and_revoked_by_editing_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    let s = server_of(
        &["alpha"],
        KeyRing::new(Vec::new(), Some(path.clone())).unwrap(),
        Limits::default(),
    );
    let search = json!({"query": "parking"}).to_string();
    let status_with = |key: &'static str| {
        let s = &s;
        let search = search.clone();
        async move {
            let auth = format!("Bearer {key}");
            send(
                s,
                "POST",
                "/v1/search",
                &[JSON, ("authorization", &auth)],
                &search,
            )
            .await
            .0
        }
    };
    // No file: the server is open.
    assert_eq!(status_with("anything").await, StatusCode::OK);
    let entry = |secret: &str| KeyEntry {
        name: "app".into(),
        sha256: digest_hex(secret),
        scopes: vec![Scope::Read],
        collections: vec!["*".into()],
    };
    KeysFile {
        keys: vec![entry("first")],
    }
    .save(&path)
    .unwrap();
    s.state.keys.reload_if_changed().unwrap();
    assert_eq!(status_with("first").await, StatusCode::OK);
    assert_eq!(status_with("anything").await, StatusCode::UNAUTHORIZED);
    KeysFile {
        keys: vec![entry("second")],
    }
    .save(&path)
    .unwrap();
    s.state.keys.reload().unwrap();
    assert_eq!(status_with("first").await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with("second").await, StatusCode::OK);
    KeysFile { keys: vec![] }.save(&path).unwrap();
    s.state.keys.reload().unwrap();
    assert_eq!(status_with("second").await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn document_ids_and_upload_names_cannot_climb_out() {
    let s = server(&[], Limits::default());
    for source in ["../../etc/passwd", "a/../../b.md", "/..", "bad\u{0}name.md"] {
        let body = json!({"source": source, "text": "x y z"}).to_string();
        let (status, _, response) = send(&s, "POST", "/v1/documents", &[JSON], &body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{source}: {response}"
        );
    }
    let long = "a/".repeat(600) + "b.md";
    let body = json!({"source": long, "text": "x y z"}).to_string();
    let (status, _, response) = send(&s, "POST", "/v1/documents", &[JSON], &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{response}");
    assert!(
        response.len() < 600,
        "the message does not echo the whole name: {response}"
    );
    for id in ["a/../b.md", "%2e%2e/secret", "x%00y"] {
        let (status, _, response) = send(&s, "GET", &format!("/v1/documents/{id}"), &[], "").await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::NOT_FOUND,
            "{id}: {status} {response}"
        );
        assert!(!response.contains("root:"), "{response}");
    }
    let (status, _, response) = send(&s, "GET", "/v1/documents/a/../b.md", &[], "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{response}");
}
