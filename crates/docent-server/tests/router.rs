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
use docent_server::{AppState, Collections, Limits, Metrics, router};
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

fn server(api_keys: &[&str], limits: Limits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let embedder: Arc<dyn Embedder> = Arc::new(WordHashEmbedder);
    let chunker: Arc<dyn Chunker> = Arc::new(WholeDocument);
    let generator = Arc::new(ScriptedGenerator::default());
    let spec = collection_spec(embedder.as_ref(), chunker.as_ref());
    let store = Arc::new(EdgeStore::open(&dir.path().join("vectors"), spec).unwrap());
    let catalogue = Arc::new(Catalogue::open(&dir.path().join("catalogue.redb")).unwrap());
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
    let state = Arc::new(AppState {
        asker: Arc::new(asker),
        pipeline: Arc::new(pipeline),
        embedder,
        metrics: Metrics::default(),
        limits,
        api_keys: api_keys.iter().map(|k| k.to_string()).collect(),
        defaults: Default::default(),
        collections: Collections {
            dir: dir.path().to_path_buf(),
            current: "default".into(),
        },
        conversations: Some(Arc::new(
            docent_server::ConversationStore::open(
                &dir.path().join("conversations.redb"),
                Default::default(),
            )
            .unwrap(),
        )),
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
    assert_eq!(operations, 16, "{:?}", paths.keys());
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = if path.starts_with("/v1/conversations") {
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
