//! `docent bench load`: many clients against a running `docent serve`, each
//! mixing asks (JSON and streamed, some hanging up mid-stream), searches,
//! uploads, deletes, document listings and lookups, for a fixed time.
//!
//! It reports counts by route and status, p50/p99 per route, the server's
//! resident memory and open file descriptors (from `/metrics`) at start,
//! after the warm-up, at peak and at the end, and at the end whether the
//! catalogue and the store agree with what the clients did. The checks it
//! prints are the service's promises under load: no 5xx but 503 with
//! `Retry-After`; every 429 and 503 with `Retry-After`, and 429 only from
//! the admission bounds (asks: the generation queue; searches: the searches
//! in flight); memory back within
//! 10% of its post-warm-up level; no descriptor growth; no chunk lost or
//! duplicated.

use crate::bench::xorshift;
use anyhow::{Context, Result, bail};
use docent_ops::cpu_name;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What `docent bench load` is told.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// `http://host:port` of the server.
    pub url: String,
    pub clients: usize,
    /// Measured time, after the warm-up.
    pub seconds: u64,
    /// Load before the baseline is taken (memory, descriptors).
    pub warmup_seconds: u64,
    /// Most growth of resident memory after the warm-up, in percent.
    pub rss_tolerance_percent: f64,
    pub api_key: Option<String>,
    pub seed: u64,
}

/// One answered request.
struct Sample {
    route: &'static str,
    status: u16,
    ms: f64,
    retry_after: bool,
}

/// A response as read off the wire.
struct Reply {
    status: u16,
    /// Seconds, when the server sent `Retry-After`.
    retry_after: Option<u64>,
    body: String,
}

/// One keep-alive HTTP/1.1 connection, reconnected after errors.
struct Connection {
    addr: String,
    auth: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Connection {
    fn new(addr: &str, key: Option<&str>) -> Connection {
        Connection {
            addr: addr.to_string(),
            auth: key
                .map(|k| format!("Authorization: Bearer {k}\r\n"))
                .unwrap_or_default(),
            stream: None,
        }
    }

    fn stream(&mut self) -> Result<&mut BufReader<TcpStream>> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.addr)
                .with_context(|| format!("cannot connect to {}", self.addr))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(300)))?;
            self.stream = Some(BufReader::new(stream));
        }
        Ok(self.stream.as_mut().expect("connected"))
    }

    fn send(&mut self, method: &str, path: &str, body: &str) -> Result<()> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            self.auth,
            body.len()
        );
        let stream = self.stream()?;
        stream.get_mut().write_all(head.as_bytes())?;
        stream.get_mut().write_all(body.as_bytes())?;
        Ok(())
    }

    /// A whole request and response. Any I/O error drops the connection.
    fn exchange(&mut self, method: &str, path: &str, body: &str) -> Result<Reply> {
        let result = self.send(method, path, body).and_then(|()| {
            let stream = self.stream()?;
            let head = read_head(stream)?;
            let body = read_body(stream, &head, &mut |_| true)?;
            Ok(Reply {
                status: head.status,
                retry_after: head.retry_after,
                body,
            })
        });
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    /// A streamed ask: reads events until the end, or, with `hang_up`, drops
    /// the connection after the first token. Returns the reply and the time
    /// to the first token.
    fn stream_ask(&mut self, body: &str, hang_up: bool) -> Result<(Reply, Option<f64>)> {
        let started = Instant::now();
        let mut first_token = None;
        let result = self.send("POST", "/v1/ask", body).and_then(|()| {
            let stream = self.stream()?;
            let head = read_head(stream)?;
            let body = read_body(stream, &head, &mut |seen| {
                if first_token.is_none() && seen.contains("event: token") {
                    first_token = Some(started.elapsed().as_secs_f64() * 1000.0);
                    return !hang_up;
                }
                true
            })?;
            Ok(Reply {
                status: head.status,
                retry_after: head.retry_after,
                body,
            })
        });
        if result.is_err() || (hang_up && first_token.is_some()) {
            // Hanging up: the server must notice and cancel the generation.
            self.stream = None;
        }
        result.map(|r| (r, first_token))
    }
}

struct Head {
    status: u16,
    retry_after: Option<u64>,
    length: Option<usize>,
    chunked: bool,
    close: bool,
}

fn read_head(stream: &mut BufReader<TcpStream>) -> Result<Head> {
    let mut line = String::new();
    stream.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))?;
    let mut head = Head {
        status,
        retry_after: None,
        length: None,
        chunked: false,
        close: false,
    };
    loop {
        line.clear();
        if stream.read_line(&mut line)? == 0 {
            bail!("connection closed in the headers");
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => head.length = Some(v.parse()?),
                "transfer-encoding" => head.chunked = v.eq_ignore_ascii_case("chunked"),
                "retry-after" => head.retry_after = Some(v.parse().unwrap_or(1)),
                "connection" => head.close = v.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
    }
    Ok(head)
}

/// Reads a body; `more(text so far)` returning false stops a chunked one
/// early (the connection is then unusable).
fn read_body(
    stream: &mut BufReader<TcpStream>,
    head: &Head,
    more: &mut dyn FnMut(&str) -> bool,
) -> Result<String> {
    if let Some(length) = head.length {
        let mut buf = vec![0; length];
        stream.read_exact(&mut buf)?;
        return Ok(String::from_utf8_lossy(&buf).into_owned());
    }
    if !head.chunked {
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf)?;
        return Ok(String::from_utf8_lossy(&buf).into_owned());
    }
    let mut body = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        stream.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim(), 16)
            .with_context(|| format!("bad chunk size {line:?}"))?;
        let mut chunk = vec![0; size + 2];
        stream.read_exact(&mut chunk)?;
        if size == 0 {
            return Ok(body);
        }
        body.push_str(&String::from_utf8_lossy(&chunk[..size]));
        if !more(&body) {
            return Ok(body);
        }
    }
}

/// What the server's `/metrics` says of the process.
#[derive(Clone, Copy, Debug, Default)]
struct ProcessGauges {
    rss_mib: f64,
    fds: u64,
}

fn gauges(addr: &str, key: Option<&str>) -> Result<ProcessGauges> {
    let reply = Connection::new(addr, key).exchange("GET", "/metrics", "")?;
    if reply.status != 200 {
        bail!("/metrics answered {}: {}", reply.status, reply.body);
    }
    let value = |name: &str| {
        reply
            .body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Ok(ProcessGauges {
        rss_mib: value("process_resident_memory_bytes")
            .context("the server's /metrics has no process_resident_memory_bytes (Linux only)")?
            / (1024.0 * 1024.0),
        fds: value("process_open_fds").context("no process_open_fds in /metrics")? as u64,
    })
}

const WORDS: [&str; 24] = [
    "invoice",
    "warehouse",
    "ledger",
    "shipment",
    "badge",
    "rota",
    "canteen",
    "printer",
    "roster",
    "audit",
    "pension",
    "locker",
    "parcel",
    "forklift",
    "helpdesk",
    "laptop",
    "visitor",
    "permit",
    "contract",
    "freight",
    "storage",
    "mileage",
    "overtime",
    "payslip",
];

const QUESTIONS: [&str; 8] = [
    "How long is the refund window?",
    "Who approves refunds above 500 euros?",
    "Where do visitors park?",
    "What does the warehouse store?",
    "How are invoices handled?",
    "When is the canteen open?",
    "What is the mileage allowance?",
    "How do I get a visitor badge?",
];

fn text(state: &mut u64, tag: &str) -> String {
    let mut words = vec![format!("# Load test note {tag}\n\nThis note, {tag},")];
    for _ in 0..80 {
        words.push(WORDS[(xorshift(state) % WORDS.len() as u64) as usize].to_string());
    }
    words.join(" ") + ".\n"
}

/// One client's loop: a weighted mix of requests until `stop`, starting
/// with an upload so that its deletes have a document of its own to delete
/// (a short run under a busy machine gave each client about five requests,
/// and a run with no delete at all was then likely). Returns its samples
/// and the documents it believes exist (its own uploads).
fn client(
    addr: &str,
    key: Option<&str>,
    id: usize,
    seed: u64,
    stop: &AtomicBool,
    samples: &Mutex<Vec<Sample>>,
    first_tokens: &Mutex<Vec<f64>>,
) -> Result<BTreeSet<String>> {
    let mut conn = Connection::new(addr, key);
    let mut state = seed ^ ((id as u64 + 1) * 0x9E37_79B9);
    let mut mine = BTreeSet::new();
    let mut uploaded = 0usize;
    let mut local = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let roll = match uploaded {
            0 => 62,
            _ => xorshift(&mut state) % 100,
        };
        let question = QUESTIONS[(xorshift(&mut state) % QUESTIONS.len() as u64) as usize];
        let started = Instant::now();
        let (route, reply) = match roll {
            0..=29 => {
                let body = json!({"query": question, "top_k": 5}).to_string();
                (
                    "POST /v1/search",
                    conn.exchange("POST", "/v1/search", &body),
                )
            }
            30..=41 => (
                "GET /v1/documents",
                conn.exchange("GET", "/v1/documents?limit=50", ""),
            ),
            42..=49 => {
                let body = json!({"question": question, "max_tokens": 24}).to_string();
                ("POST /v1/ask", conn.exchange("POST", "/v1/ask", &body))
            }
            50..=61 => {
                let hang_up = roll >= 58;
                let body =
                    json!({"question": question, "max_tokens": 24, "stream": true}).to_string();
                let result = conn.stream_ask(&body, hang_up).map(|(reply, first)| {
                    if let Some(ms) = first {
                        first_tokens.lock().expect("not poisoned").push(ms);
                    }
                    reply
                });
                (
                    if hang_up {
                        "POST /v1/ask (stream, hang up)"
                    } else {
                        "POST /v1/ask (stream)"
                    },
                    result,
                )
            }
            62..=79 => {
                let source = format!("load/c{id}/note-{uploaded}.md");
                uploaded += 1;
                let body = json!({"source": source, "text": text(&mut state, &source)}).to_string();
                let reply = conn.exchange("POST", "/v1/documents", &body);
                if let Ok(r) = &reply
                    && r.status == 200
                {
                    mine.insert(source);
                }
                ("POST /v1/documents", reply)
            }
            80..=91 => {
                let Some(source) = mine
                    .iter()
                    .nth((xorshift(&mut state) % mine.len().max(1) as u64) as usize)
                    .cloned()
                else {
                    continue;
                };
                let reply = conn.exchange("DELETE", &format!("/v1/documents/{source}"), "");
                if let Ok(r) = &reply
                    && r.status == 200
                {
                    mine.remove(&source);
                }
                ("DELETE /v1/documents/{id}", reply)
            }
            _ => {
                let Some(source) = mine.iter().next().cloned() else {
                    continue;
                };
                (
                    "GET /v1/documents/{id}",
                    conn.exchange("GET", &format!("/v1/documents/{source}"), ""),
                )
            }
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let (status, retry_after) = match &reply {
            Ok(r) => (r.status, r.retry_after),
            // 0: the connection failed (refused, reset, timed out).
            Err(_) => (0, None),
        };
        local.push(Sample {
            route,
            status,
            ms,
            retry_after: retry_after.is_some(),
        });
        if let Some(seconds) = retry_after {
            // A well-behaved client waits as told (at most 2 s here).
            std::thread::sleep(Duration::from_secs(seconds.clamp(1, 2)));
        }
        if local.len() >= 64 {
            samples.lock().expect("not poisoned").append(&mut local);
        }
    }
    samples.lock().expect("not poisoned").append(&mut local);
    Ok(mine)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs the load; the report's `checks` say whether the promises held.
pub fn run(options: &LoadOptions) -> Result<Value> {
    let addr = options
        .url
        .trim_end_matches('/')
        .strip_prefix("http://")
        .context("--url must be http://host:port")?
        .to_string();
    let key = options.api_key.as_deref();
    let ready = Connection::new(&addr, key).exchange("GET", "/readyz", "")?;
    if ready.status != 200 {
        bail!(
            "{} is not ready: {} {}",
            options.url,
            ready.status,
            ready.body
        );
    }
    let at_start = gauges(&addr, key)?;
    let stop = AtomicBool::new(false);
    let warm = AtomicBool::new(false);
    let samples = Mutex::new(Vec::new());
    let first_tokens = Mutex::new(Vec::new());
    let watched = Mutex::new(Vec::<ProcessGauges>::new());
    let clients = options.clients.max(1);
    let started = Instant::now();
    let (believed, baseline, at_end, measured_secs) = std::thread::scope(|scope| -> Result<_> {
        // The watcher samples memory and descriptors twice a second.
        let watcher = scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if warm.load(Ordering::Relaxed)
                    && let Ok(g) = gauges(&addr, key)
                {
                    watched.lock().expect("not poisoned").push(g);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        let handles: Vec<_> = (0..clients)
            .map(|id| {
                let (addr, stop, samples, first_tokens) = (&addr, &stop, &samples, &first_tokens);
                scope
                    .spawn(move || client(addr, key, id, options.seed, stop, samples, first_tokens))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(options.warmup_seconds));
        let baseline = gauges(&addr, key)?;
        samples.lock().expect("not poisoned").clear();
        first_tokens.lock().expect("not poisoned").clear();
        warm.store(true, Ordering::Relaxed);
        let measuring = Instant::now();
        std::thread::sleep(Duration::from_secs(options.seconds));
        stop.store(true, Ordering::Relaxed);
        let measured_secs = measuring.elapsed().as_secs_f64();
        let mut believed = BTreeSet::new();
        for handle in handles {
            believed.extend(
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))??,
            );
        }
        watcher
            .join()
            .map_err(|_| anyhow::anyhow!("the watcher panicked"))?;
        // Let hung-up generations end and background indexing settle.
        std::thread::sleep(Duration::from_secs(3));
        Ok((believed, baseline, gauges(&addr, key)?, measured_secs))
    })?;
    let samples = samples.into_inner().expect("not poisoned");
    let peak_rss = watched
        .into_inner()
        .expect("not poisoned")
        .iter()
        .map(|g| g.rss_mib)
        .fold(baseline.rss_mib, f64::max);

    // By route: counts by status and latency percentiles.
    // Per route: statuses, every latency, and the latencies of 2xx answers.
    type RouteSamples = (BTreeMap<u16, usize>, Vec<f64>, Vec<f64>);
    let mut by_route: BTreeMap<&str, RouteSamples> = BTreeMap::new();
    let mut uncontrolled = 0;
    let mut without_retry_after = 0;
    let mut connection_errors = 0;
    // 429 is the answer of the two admission bounds (the generation queue
    // for asks, the searches in flight); any other route refusing is a bound
    // outside the design.
    let mut refused_elsewhere = 0;
    for s in &samples {
        if s.status == 429 && !s.route.starts_with("POST /v1/ask") && s.route != "POST /v1/search" {
            refused_elsewhere += 1;
        }
        let entry = by_route.entry(s.route).or_default();
        *entry.0.entry(s.status).or_default() += 1;
        entry.1.push(s.ms);
        if (200..300).contains(&s.status) {
            entry.2.push(s.ms);
        }
        match s.status {
            0 => connection_errors += 1,
            429 | 503 if !s.retry_after => without_retry_after += 1,
            429 | 503 => {}
            500.. => uncontrolled += 1,
            _ => {}
        }
    }
    let routes: BTreeMap<&str, Value> = by_route
        .into_iter()
        .map(|(route, (statuses, mut ms, mut ok))| {
            ms.sort_by(|a, b| a.total_cmp(b));
            ok.sort_by(|a, b| a.total_cmp(b));
            (
                route,
                json!({
                    "requests": ms.len(),
                    "statuses": statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
                    "p50_ms": percentile(&ms, 0.5),
                    "p99_ms": percentile(&ms, 0.99),
                    // The answered ones alone (refusals take about a millisecond).
                    "ok_p50_ms": percentile(&ok, 0.5),
                    "ok_p99_ms": percentile(&ok, 0.99),
                }),
            )
        })
        .collect();
    let mut first_tokens = first_tokens.into_inner().expect("not poisoned");
    first_tokens.sort_by(|a, b| a.total_cmp(b));

    let agreement = agreement(&addr, key, &believed)?;
    let rss_ok = at_end.rss_mib <= baseline.rss_mib * (1.0 + options.rss_tolerance_percent / 100.0);
    let fds_ok = at_end.fds <= baseline.fds + 2;
    let checks = json!({
        "no_uncontrolled_5xx": uncontrolled == 0,
        "retry_after_on_every_429_503": without_retry_after == 0,
        "no_connection_errors": connection_errors == 0,
        "429_only_from_the_admission_bounds": refused_elsewhere == 0,
        "rss_within_tolerance_of_warm": rss_ok,
        "no_fd_growth": fds_ok,
        "catalogue_matches_store": agreement["matches"].as_bool().unwrap_or(false),
    });
    Ok(json!({
        "cpu": cpu_name(),
        "url": options.url,
        "clients": clients,
        "warmup_seconds": options.warmup_seconds,
        "seconds": measured_secs,
        // Warm-up, load, the clients' last requests, and the settling.
        "elapsed_seconds": started.elapsed().as_secs_f64(),
        // Requests that ended after the warm-up (those in flight at the
        // stop included).
        "requests": samples.len(),
        "requests_per_sec": samples.len() as f64 / measured_secs.max(1e-9),
        "uncontrolled_5xx": uncontrolled,
        "429_503_without_retry_after": without_retry_after,
        "connection_errors": connection_errors,
        "routes": routes,
        "stream_first_token_ms": {
            "p50": percentile(&first_tokens, 0.5),
            "p99": percentile(&first_tokens, 0.99),
            "count": first_tokens.len(),
        },
        "rss_mib": {
            "start": at_start.rss_mib,
            "after_warmup": baseline.rss_mib,
            "peak": peak_rss,
            "end": at_end.rss_mib,
        },
        "open_fds": {
            "start": at_start.fds,
            "after_warmup": baseline.fds,
            "end": at_end.fds,
        },
        "agreement": agreement,
        "checks": checks,
        "all_checks_passed": checks.as_object().expect("object").values().all(|v| v == &json!(true)),
    }))
}

/// Compares what the clients believe exists (their successful uploads not
/// deleted since) with the catalogue, and the catalogue's chunk count with
/// the store's.
fn agreement(addr: &str, key: Option<&str>, believed: &BTreeSet<String>) -> Result<Value> {
    let mut conn = Connection::new(addr, key);
    let mut listed = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/documents?limit=1000&after={}", encode(a)),
            None => "/v1/documents?limit=1000".to_string(),
        };
        let reply = conn.exchange("GET", &path, "")?;
        if reply.status != 200 {
            bail!(
                "listing documents answered {}: {}",
                reply.status,
                reply.body
            );
        }
        let page: Value = serde_json::from_str(&reply.body)?;
        for d in page["documents"].as_array().context("no documents")? {
            listed.insert(
                d["id"].as_str().unwrap_or_default().to_string(),
                (
                    d["status"].as_str().unwrap_or_default().to_string(),
                    d["chunk_count"].as_u64().unwrap_or(0),
                ),
            );
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    let ready = conn.exchange("GET", "/readyz", "")?;
    let store_chunks = serde_json::from_str::<Value>(&ready.body)?["chunks"]
        .as_u64()
        .context("/readyz has no chunk count")?;
    let catalogue_chunks: u64 = listed
        .values()
        .filter(|(status, _)| status == "ready")
        .map(|(_, n)| n)
        .sum();
    let load_docs: BTreeSet<&String> = listed.keys().filter(|k| k.starts_with("load/")).collect();
    let lost: Vec<&String> = believed
        .iter()
        .filter(|d| !listed.contains_key(*d))
        .collect();
    let resurrected: Vec<&&String> = load_docs
        .iter()
        .filter(|d| !believed.contains(**d))
        .collect();
    let not_ready: Vec<&String> = listed
        .iter()
        .filter(|(_, (status, _))| status != "ready")
        .map(|(id, _)| id)
        .collect();
    Ok(json!({
        "documents_believed": believed.len(),
        "documents_listed": load_docs.len(),
        "lost": lost,
        "resurrected": resurrected,
        "not_ready": not_ready,
        "catalogue_chunks": catalogue_chunks,
        "store_chunks": store_chunks,
        "matches": lost.is_empty() && resurrected.is_empty() && not_ready.is_empty() && catalogue_chunks == store_chunks,
    }))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
