//! `docent serve` on the real models and store, spoken to over real HTTP.

use serde_json::Value;
use std::io::{BufRead, Read};
use std::time::Duration;

mod common;
use common::{command, docent_ok, http, ingest_examples, json, metric, open_stream, start};

const JSON: (&str, &str) = ("Content-Type", "application/json");

#[test]
fn search_ask_and_stream_over_http() {
    let data = tempfile::tempdir().unwrap();
    ingest_examples(data.path());
    let server = start(data.path(), &[]);
    let addr = &server.addr;

    let (status, headers, _) = http(addr, "GET", "/healthz", &[], "");
    assert_eq!(status, 200);
    assert!(
        headers.iter().any(|(k, _)| k == "x-request-id"),
        "request id is echoed"
    );
    let (status, _, body) = http(addr, "GET", "/readyz", &[], "");
    assert_eq!(status, 200, "{body}");
    assert!(json(&body)["chunks"].as_u64().unwrap() > 0);

    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/search",
        &[JSON],
        r#"{"query": "Frankfurt data center", "top_k": 3}"#,
    );
    assert_eq!(status, 200, "{body}");
    let results = json(&body)["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["source"], "faq.md");
    assert!(results[0]["score"].as_f64().unwrap() >= results[1]["score"].as_f64().unwrap());

    let ask = r#"{"question": "How much does the Enterprise plan cost?", "max_tokens": 32}"#;
    let (status, _, body) = http(addr, "POST", "/v1/ask", &[JSON], ask);
    assert_eq!(status, 200, "{body}");
    let answer = json(&body);
    assert_eq!(answer["citations"][0]["source"], "pricing.md", "{answer}");
    assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // Search ranks the stored chunks; the answer was generated from the best
    // one widened by its neighbours ([retrieval] neighbours = 1), so the
    // first citation is that chunk's stretch of the document.
    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/search",
        &[JSON],
        r#"{"query": "How much does the Enterprise plan cost?", "top_k": 1}"#,
    );
    assert_eq!(status, 200, "{body}");
    let best = json(&body)["results"][0].clone();
    let cited = &answer["citations"][0];
    assert_eq!(cited["chunk_id"], best["chunk_id"], "{answer}\n{best}");
    let span = |v: &Value| (v["start"].as_u64().unwrap(), v["end"].as_u64().unwrap());
    let ((cs, ce), (bs, be)) = (span(cited), span(&best));
    assert!(cs <= bs && be <= ce && ce - cs > be - bs, "{cited}\n{best}");
    assert!(
        cited["text"]
            .as_str()
            .unwrap()
            .contains(best["text"].as_str().unwrap())
    );

    // SSE: citations first, then tokens, then done.
    let (status, headers, body) = http(
        addr,
        "POST",
        "/v1/ask",
        &[JSON, ("Accept", "text/event-stream")],
        ask,
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream"))
    );
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"citations"), "{body}");
    assert_eq!(events.last(), Some(&"done"), "{body}");
    assert!(
        events.iter().filter(|e| **e == "token").count() >= 2,
        "{body}"
    );
    let done = body
        .lines()
        .skip_while(|l| *l != "event: done")
        .nth(1)
        .unwrap();
    let usage = &json(done.strip_prefix("data: ").unwrap())["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    // The same prompt as the question before: the model's cache holds all of
    // it, and only the last token is evaluated again.
    let prompt = usage["prompt_tokens"].as_u64().unwrap();
    let cached = usage["cached_prompt_tokens"].as_u64().unwrap();
    assert!(cached > 0 && cached < prompt, "{usage}");
}

#[test]
fn bad_requests_get_json_errors_and_keys_are_enforced() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &[("DOCENT__SERVER__API_KEYS", r#"["k-123"]"#)]);
    let addr = &server.addr;
    let auth = ("Authorization", "Bearer k-123");

    let (status, _, body) = http(addr, "POST", "/v1/search", &[JSON], r#"{"query": "x"}"#);
    assert_eq!(status, 401, "{body}");
    assert_eq!(json(&body)["error"]["type"], "unauthorized");
    let (status, _, _) = http(
        addr,
        "POST",
        "/v1/search",
        &[JSON, ("Authorization", "Bearer wrong")],
        r#"{"query": "x"}"#,
    );
    assert_eq!(status, 401);
    let (status, _, _) = http(addr, "GET", "/healthz", &[], "");
    assert_eq!(status, 200, "health stays open");

    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/search",
        &[JSON, auth],
        r#"{"query": "x""#,
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(json(&body)["error"]["type"], "invalid_request");
    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/search",
        &[JSON, auth],
        r#"{"query": "x", "topk": 3}"#,
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        json(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("topk"),
        "{body}"
    );
    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/ask",
        &[JSON, auth],
        r#"{"question": 42}"#,
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        json(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("question"),
        "{body}"
    );
    let big = format!(r#"{{"query": "{}"}}"#, "x".repeat(2 << 20));
    let (status, _, _) = http(addr, "POST", "/v1/search", &[JSON, auth], &big);
    assert_eq!(status, 413);
    // An empty collection answers "I don't know" without asking the model.
    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/ask",
        &[JSON, auth],
        r#"{"question": "What is the refund policy?"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["answerable"], false);

    // Keys made and revoked with `docent keys` while the server runs: it
    // re-reads the keys file without a restart.
    let keys = |args: &[&str]| docent_ok(data.path(), &[&["keys"], args].concat());
    let secret = keys(&["add", "reader", "--scope", "read", "--collection", "*"]);
    let bearer = format!("Bearer {secret}");
    let reader = ("Authorization", bearer.as_str());
    let search = |key: (&str, &str)| {
        http(
            addr,
            "POST",
            "/v1/search",
            &[JSON, key],
            r#"{"query": "x"}"#,
        )
        .0
    };
    let until = |want: u16, key: (&str, &str)| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while search(key) != want {
            assert!(
                std::time::Instant::now() < deadline,
                "the keys file was not picked up"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    until(200, reader);
    let upload = r#"{"source": "a.md", "text": "some words"}"#;
    let (status, _, body) = http(addr, "POST", "/v1/documents", &[JSON, reader], upload);
    assert_eq!(status, 403, "a read key cannot upload: {body}");
    assert_eq!(json(&body)["error"]["type"], "forbidden");
    assert!(!body.contains(&secret), "{body}");
    keys(&["remove", "reader"]);
    until(401, reader);
    assert_eq!(search(auth), 200, "the config's key stays");
    let listed = keys(&["list"]);
    assert!(!listed.contains("reader"), "{listed}");
}

/// A multipart/form-data body; returns (content type, body).
fn multipart(files: &[(&str, &[u8])], fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "docent-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    for (file_name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn sources_of(answer: &Value) -> Vec<String> {
    answer["citations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["source"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn documents_upload_list_ask_delete() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &[]);
    let addr = &server.addr;

    let refunds = b"# Zorblat refunds\n\nZorblat refunds are processed within 9 business days of the request, \
and the money goes back to the original card.\n";
    let binary: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 256) as u8).collect();
    let (content_type, body) = multipart(&[("refunds.md", refunds), ("blob.txt", &binary)], &[]);
    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/documents",
        &[("Content-Type", &content_type)],
        body,
    );
    assert_eq!(status, 200, "{body}");
    let results = json(&body)["results"].as_array().unwrap().clone();
    assert_eq!(results[0]["source"], "refunds.md");
    assert_eq!(results[0]["status"], "added", "{body}");
    assert!(results[0]["chunks"].as_u64().unwrap() >= 1);
    assert_eq!(results[1]["status"], "failed", "{body}");
    assert!(
        results[1]["error"].as_str().unwrap().contains("binary"),
        "{body}"
    );

    // JSON upload with metadata, found through store-side filters.
    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/documents",
        &[JSON],
        r#"{"source": "notes/parking.txt", "text": "Visitors park in garage level B2 and register at the front desk.", "metadata": {"tags": "facilities, visitors", "date": "2025-06-01"}}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["results"][0]["status"], "added", "{body}");
    let search = |filters: &str| {
        let (status, _, body) = http(
            addr,
            "POST",
            "/v1/search",
            &[JSON],
            format!(r#"{{"query": "where do visitors park", "filters": {filters}}}"#),
        );
        assert_eq!(status, 200, "{body}");
        json(&body)["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["source"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(search(r#"{"tags": ["visitors"]}"#), ["notes/parking.txt"]);
    assert_eq!(
        search(r#"{"source_prefix": "notes"}"#),
        ["notes/parking.txt"]
    );
    assert!(search(r#"{"tags": ["finance"]}"#).is_empty());
    assert!(search(r#"{"modified_before": 1700000000}"#).is_empty());
    assert_eq!(
        search(r#"{"modified_after": 1740000000, "tags": ["visitors"]}"#),
        ["notes/parking.txt"]
    );

    // Listing, paginated.
    let (status, _, body) = http(addr, "GET", "/v1/documents?limit=2", &[], "");
    assert_eq!(status, 200, "{body}");
    let page = json(&body);
    assert_eq!(page["total"], 3, "{body}");
    assert_eq!(page["documents"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap().to_string();
    let (_, _, body) = http(
        addr,
        "GET",
        &format!("/v1/documents?limit=2&after={next}"),
        &[],
        "",
    );
    let rest = json(&body);
    assert_eq!(rest["documents"].as_array().unwrap().len(), 1, "{body}");
    assert!(rest.get("next").is_none(), "{body}");
    let (status, _, body) = http(addr, "GET", "/v1/documents/refunds.md", &[], "");
    assert_eq!(status, 200, "{body}");
    let doc = json(&body);
    assert_eq!(doc["status"], "ready");
    assert!(doc["chunk_count"].as_u64().unwrap() >= 1);
    let (status, _, body) = http(addr, "GET", "/v1/documents/notes/parking.txt", &[], "");
    assert_eq!(status, 200, "{body}");

    let ask = r#"{"question": "How long do Zorblat refunds take?", "max_tokens": 24}"#;
    let (status, _, body) = http(addr, "POST", "/v1/ask", &[JSON], ask);
    assert_eq!(status, 200, "{body}");
    assert_eq!(sources_of(&json(&body))[0], "refunds.md", "{body}");

    let (status, _, body) = http(addr, "DELETE", "/v1/documents/refunds.md", &[], "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["deleted"], true);
    let (status, _, _) = http(addr, "GET", "/v1/documents/refunds.md", &[], "");
    assert_eq!(status, 404);
    let (status, _, body) = http(addr, "DELETE", "/v1/documents/refunds.md", &[], "");
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = http(addr, "POST", "/v1/ask", &[JSON], ask);
    assert_eq!(status, 200, "{body}");
    assert!(
        !sources_of(&json(&body)).contains(&"refunds.md".to_string()),
        "{body}"
    );
}

#[test]
fn oversized_upload_is_413() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &[("DOCENT__SERVER__MAX_UPLOAD_BYTES", "4096")]);
    let text = "All work and no play. ".repeat(1000);
    let (content_type, body) = multipart(&[("big.txt", text.as_bytes())], &[]);
    let (status, _, body) = http(
        &server.addr,
        "POST",
        "/v1/documents",
        &[("Content-Type", &content_type)],
        body,
    );
    assert_eq!(status, 413, "{body}");
    assert_eq!(json(&body)["error"]["type"], "payload_too_large", "{body}");
}

#[test]
fn full_queue_is_429_and_a_disconnect_cancels_generation() {
    let data = tempfile::tempdir().unwrap();
    ingest_examples(data.path());
    let server = start(data.path(), &[("DOCENT__GENERATE__QUEUE_DEPTH", "1")]);
    let addr = &server.addr;
    // Long answers (high temperature so the model doesn't stop early) keep
    // the one model busy while more requests arrive.
    // (A question the documents answer: one the abstention gates refuse
    // never reaches the model.)
    let long = r#"{"question": "How many days of paid vacation do new employees get, and how does vacation carry over? Explain in detail.", "max_tokens": 1000, "temperature": 1.5, "top_k": 8, "stream": true}"#;
    let (first, mut first_reader) = open_stream(addr, "/v1/ask", long);
    assert_eq!(first, 200);
    let (second, second_reader) = open_stream(addr, "/v1/ask", long);
    let (third, third_reader) = open_stream(addr, "/v1/ask", long);
    // One runs, at most one waits in the queue: a further request is refused at once.
    let (mut second_reader, mut third_reader) = (Some(second_reader), Some(third_reader));
    let mut refused = match (second, third) {
        (429, _) => second_reader.take(),
        (_, 429) => third_reader.take(),
        _ => panic!("no request was refused: statuses {first} {second} {third}"),
    }
    .unwrap();
    // Hang up on the one that may be queued, too.
    drop((second_reader, third_reader));
    let mut head = String::new();
    loop {
        let mut line = String::new();
        refused.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line.to_lowercase());
    }
    assert!(head.contains("retry-after:"), "{head}");
    // Read exactly the body: reading a line of a JSON body without a
    // newline on a kept-alive connection waited out the 300 s timeout.
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let Some(length) = length else {
        panic!("the 429 has no content-length: {head}");
    };
    let mut body = vec![0u8; length];
    refused.read_exact(&mut body).unwrap();
    let body = String::from_utf8(body).unwrap();
    assert_eq!(json(&body)["error"]["type"], "overloaded", "{head}{body}");
    assert!(metric(addr, "docent_generation_rejections_total") >= 1.0);
    drop(refused);

    // Read the first stream until a token arrives, then hang up.
    let mut saw_token = false;
    for _ in 0..10_000 {
        let mut line = String::new();
        if first_reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.starts_with("event: token") {
            saw_token = true;
            break;
        }
    }
    assert!(saw_token, "the first stream produced tokens");
    drop(first_reader);
    let mut cancelled = 0.0;
    for _ in 0..240 {
        cancelled = metric(addr, "docent_generations_cancelled_total");
        if cancelled >= 1.0 && metric(addr, "docent_generation_queue_depth") == 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(cancelled >= 1.0, "a dropped stream stops its generation");
    // The model is free again: a short answer goes through.
    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/ask",
        &[JSON],
        r#"{"question": "Where is the EU data center?", "max_tokens": 16}"#,
    );
    assert_eq!(status, 200, "{body}");
    let metrics = http(addr, "GET", "/metrics", &[], "").2;
    assert!(
        metrics
            .contains(r#"docent_http_requests_total{route="/v1/ask",method="POST",status="429"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("docent_http_request_duration_seconds_bucket{route=\"/v1/ask\""));
}

#[test]
fn openapi_describes_every_endpoint_and_openai_shapes_hold() {
    let data = tempfile::tempdir().unwrap();
    ingest_examples(data.path());
    let server = start(data.path(), &[]);
    let addr = &server.addr;
    let (status, _, body) = http(addr, "GET", "/openapi.json", &[], "");
    assert_eq!(status, 200);
    let spec = json(&body);
    for (path, method) in [
        ("/v1/ask", "post"),
        ("/v1/search", "post"),
        ("/v1/documents", "post"),
        ("/v1/documents", "get"),
        ("/v1/documents/{id}", "get"),
        ("/v1/documents/{id}", "delete"),
        ("/v1/chat/completions", "post"),
        ("/v1/embeddings", "post"),
        ("/v1/models", "get"),
        ("/v1/collections", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            spec["paths"][path][method].is_object(),
            "{method} {path} missing from /openapi.json"
        );
    }
    assert!(spec["components"]["schemas"]["AskBody"].is_object());

    let (status, _, body) = http(addr, "GET", "/v1/models", &[], "");
    assert_eq!(status, 200);
    let ids: Vec<String> = json(&body)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&"all-MiniLM-L6-v2".to_string()), "{ids:?}");

    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/embeddings",
        &[JSON],
        r#"{"input": ["hello world", "vacation days"], "model": "x"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let e = json(&body);
    assert_eq!(e["data"][1]["index"], 1);
    assert_eq!(e["data"][0]["embedding"].as_array().unwrap().len(), 384);
    assert!(e["usage"]["prompt_tokens"].as_u64().unwrap() >= 4);

    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        &[JSON],
        r#"{"model": "docent", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Where is the EU data center?"}], "max_tokens": 24, "temperature": 0}"#,
    );
    assert_eq!(status, 200, "{body}");
    let c = json(&body);
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["choices"][0]["message"]["role"], "assistant");
    assert_eq!(c["docent"]["citations"][0]["source"], "faq.md", "{body}");

    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        &[JSON],
        r#"{"messages": [{"role": "assistant", "content": "hi"}]}"#,
    );
    assert_eq!(status, 422, "{body}");
}

#[test]
fn a_conversation_survives_a_restart_and_its_follow_up_finds_the_right_document() {
    let data = tempfile::tempdir().unwrap();
    ingest_examples(data.path());
    let id = {
        let server = start(data.path(), &[]);
        let (status, _, body) = http(&server.addr, "POST", "/v1/conversations", &[], "");
        assert_eq!(status, 201, "{body}");
        let id = json(&body)["id"].as_str().unwrap().to_string();
        let ask = serde_json::json!({
            "question": "How much does the Enterprise plan cost per user per month?",
            "conversation_id": id, "max_tokens": 24, "top_k": 2,
        });
        let (status, _, body) = http(&server.addr, "POST", "/v1/ask", &[JSON], ask.to_string());
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            json(&body)["citations"][0]["source"],
            "pricing.md",
            "{body}"
        );
        // The turn is written after the answer; wait for it before the kill.
        let path = format!("/v1/conversations/{id}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while json(&http(&server.addr, "GET", &path, &[], "").2)["turns"]
            .as_array()
            .unwrap()
            .is_empty()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the turn was not recorded"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        id
    }; // the server is killed here
    // The model's rewrite ("join" is the default; both are measured in
    // docs/quality.md).
    let server = start(data.path(), &[("DOCENT__QUERY__FOLLOWUPS", "rewrite")]);
    let path = format!("/v1/conversations/{id}");
    let (status, _, body) = http(&server.addr, "GET", &path, &[], "");
    assert_eq!(status, 200, "{body}");
    let turns = json(&body)["turns"].as_array().unwrap().clone();
    assert_eq!(turns.len(), 1, "{body}");
    assert_eq!(turns[0]["cited_sources"][0], "pricing.md", "{body}");
    // "it" leans on the plan: the search carries the earlier question, and
    // the pricing document is found again.
    let ask = serde_json::json!({
        "question": "Does it include single sign-on?",
        "conversation_id": id, "max_tokens": 24, "top_k": 2,
    });
    let (status, _, body) = http(&server.addr, "POST", "/v1/ask", &[JSON], ask.to_string());
    assert_eq!(status, 200, "{body}");
    let answer = json(&body);
    let rewritten = answer["rewritten_query"].as_str().unwrap();
    assert!(rewritten.contains("Enterprise plan"), "{answer}");
    assert_eq!(answer["citations"][0]["source"], "pricing.md", "{answer}");
    assert!(
        answer["timings_ms"]["rewrite"].as_f64().unwrap() > 0.0,
        "{answer}"
    );
}

/// `docent bench load` for 10 s against a real server over the example
/// documents: 12 clients mixing asks (some hanging up mid-stream),
/// searches, uploads, deletes and listings. The full 60 s, 50-client run is
/// in docs/benchmarks.md.
#[test]
fn ten_seconds_of_mixed_load_keep_every_promise() {
    let data = tempfile::tempdir().unwrap();
    ingest_examples(data.path());
    let server = start(data.path(), &[("DOCENT__GENERATE__QUEUE_DEPTH", "2")]);
    let out = command(data.path())
        .args([
            "bench",
            "load",
            "--url",
            &server.url(),
            "--clients",
            "12",
            "--seconds",
            "10",
            "--warmup",
            "8",
            // A short warm-up does not reach steady memory: after four
            // seconds the end was 14% and 17% above it in two of four full
            // test runs (sessions 14 and 15), and 30.3% once in session 30,
            // when the binary's other tests ran beside it (alone: 21–22%);
            // the 60-second bench keeps 10%.
            "--rss-tolerance",
            "30",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{report}");
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&report);
    assert_eq!(report["all_checks_passed"], true, "{report:#}");
    let routes = report["routes"].as_object().unwrap();
    for route in [
        "POST /v1/search",
        "POST /v1/documents",
        "DELETE /v1/documents/{id}",
        "GET /v1/documents",
        "POST /v1/ask (stream, hang up)",
    ] {
        assert!(
            routes[route]["requests"].as_u64().unwrap_or(0) > 0,
            "{route} was exercised: {report:#}"
        );
    }
    assert!(report["agreement"]["documents_believed"].as_u64().unwrap() > 0);
}
