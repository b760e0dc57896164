//! `docent serve` on the real models and store, spoken to over real HTTP.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn models_dir() -> PathBuf {
    docent_models::testing::require("all-MiniLM-L6-v2");
    docent_models::testing::require("smollm2-135m-instruct");
    docent_models::testing::models_dir()
}

fn command(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_docent"));
    c.env("DOCENT_DATA_DIR", data)
        .env("DOCENT_MODELS_DIR", models_dir())
        .env("DOCENT__GENERATE__MODEL", "smollm2-135m-instruct")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// A running server, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, extra_env: &[(&str, &str)]) -> Server {
    let mut c = command(data);
    c.args(["serve", "--bind", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(rest) = line.strip_prefix("docent serving on http://") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr }
}

/// One HTTP/1.1 exchange; returns status, headers (lower-case names) and body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    // A server may answer (413) and close before reading a large body.
    let _ = stream.write_all(request.as_bytes());
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let mut head_lines = head.lines();
    let status: u16 = head_lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = head_lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, headers, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

#[test]
fn search_ask_and_stream_over_http() {
    let data = tempfile::tempdir().unwrap();
    assert!(
        command(data.path())
            .args(["ingest", "examples/docs"])
            .output()
            .unwrap()
            .status
            .success()
    );
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
    assert!(
        json(done.strip_prefix("data: ").unwrap())["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
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
}
