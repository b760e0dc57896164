//! `docent bench http`: `/v1/search` latency and throughput with concurrent
//! clients over a large synthetic collection, `/v1/ask` time-to-first-token
//! on the example documents, and the server's peak RSS. Both servers run in
//! this process on loopback ports, so the figures include HTTP, JSON, query
//! embedding, retrieval and (for ask) prompt evaluation.

use crate::Workspace;
use crate::bench::{peak_rss_mib, xorshift};
use anyhow::{Context, Result, bail};
use docent_core::{Chunk, ChunkId, DocumentId, EmbeddedChunk, VectorStore, collection_spec};
use docent_store::EdgeStore;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A keep-alive HTTP/1.1 connection that reads `Content-Length` bodies.
struct Client {
    reader: BufReader<TcpStream>,
    addr: String,
    /// `Authorization` header line, when a key is given.
    auth: String,
    /// Whether the last response carried `Retry-After`.
    retry_after: bool,
}

impl Client {
    fn connect(addr: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(600)))?;
        Ok(Client {
            reader: BufReader::new(stream),
            addr: addr.to_string(),
            auth: String::new(),
            retry_after: false,
        })
    }

    fn post(&mut self, path: &str, body: &str) -> Result<(u16, String)> {
        write!(
            self.reader.get_mut(),
            "POST {path} HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            self.auth,
            body.len()
        )?;
        let (status, length) = self.head()?;
        let mut buf = vec![0; length];
        self.reader.read_exact(&mut buf)?;
        Ok((status, String::from_utf8_lossy(&buf).into_owned()))
    }

    fn head(&mut self) -> Result<(u16, usize)> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("bad status line")?;
        let mut length = 0;
        self.retry_after = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse()?;
                } else if k.eq_ignore_ascii_case("retry-after") {
                    self.retry_after = true;
                }
            }
        }
        Ok((status, length))
    }
}

/// `requests` searches spread over `clients` threads; client `c` sends
/// `queries[(c · per_client + i) mod len]` as its `i`-th request, so a list
/// of `requests` queries is sent once each. The texts are made before the
/// clock starts. Returns latency percentiles and throughput.
fn search_phase(addr: &str, clients: usize, requests: usize, queries: &[String]) -> Result<Value> {
    let clients = clients.max(1);
    let per_client = requests.div_ceil(clients);
    let t = Instant::now();
    let mut latencies = std::thread::scope(|scope| -> Result<Vec<f64>> {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                scope.spawn(move || -> Result<Vec<f64>> {
                    let mut client = Client::connect(addr)?;
                    let mut latencies = Vec::with_capacity(per_client);
                    for i in 0..per_client {
                        let query = &queries[(c * per_client + i) % queries.len()];
                        // Search latency without the cross-encoder (asks use it).
                        let body =
                            json!({ "query": query, "top_k": 10, "rerank": false }).to_string();
                        let t = Instant::now();
                        let (status, text) = client.post("/v1/search", &body)?;
                        if status != 200 {
                            bail!("search answered {status}: {text}");
                        }
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok(latencies)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("client thread panicked"))??,
            );
        }
        Ok(all)
    })?;
    let secs = t.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(json!({
        "requests": latencies.len(),
        "p50_ms": percentile(&latencies, 0.5),
        "p90_ms": percentile(&latencies, 0.9),
        "p99_ms": percentile(&latencies, 0.99),
        "max_ms": latencies.last().copied().unwrap_or(0.0),
        "requests_per_sec": latencies.len() as f64 / secs,
    }))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// English-like text with a Zipfian vocabulary: the 32 most frequent words
/// are real stop words, the rest are 30,000 pseudo-words whose frequency
/// falls as 1/rank, as word frequencies do in real text. (An earlier version
/// drew uniformly from 58 words, so every keyword sat in most chunks and each
/// BM25 query scored about two thirds of the collection, which no real
/// corpus does.)
struct ZipfText {
    words: Vec<String>,
    cumulative: Vec<f64>,
    state: u64,
}

impl ZipfText {
    const STOP: [&'static str; 32] = [
        "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with", "be",
        "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have",
        "an", "had", "they", "you", "were",
    ];
    const SYLLABLES: [&'static str; 16] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "te", "vi", "do", "pu", "ge", "zo", "ba", "fi", "hu",
        "ly",
    ];

    fn new(seed: u64) -> Self {
        let mut words: Vec<String> = Self::STOP.iter().map(|w| w.to_string()).collect();
        for i in 0..30_000usize {
            // Two to four syllables, a distinct spelling per index.
            let mut n = i + 256;
            let mut w = String::new();
            while n > 0 {
                w.push_str(Self::SYLLABLES[n % 16]);
                n /= 16;
            }
            words.push(w);
        }
        let mut total = 0.0;
        let cumulative = (1..=words.len())
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        ZipfText {
            words,
            cumulative,
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// The vocabulary index of the next word.
    fn next_word(&mut self) -> usize {
        let u = (xorshift(&mut self.state) >> 11) as f64 / (1u64 << 53) as f64
            * self.cumulative[self.cumulative.len() - 1];
        self.cumulative
            .partition_point(|&c| c < u)
            .min(self.words.len() - 1)
    }

    fn sentence(&mut self, words: usize) -> String {
        let mut out = String::new();
        for i in 0..words {
            if i > 0 {
                out.push(' ');
            }
            let w = self.next_word();
            out.push_str(&self.words[w]);
        }
        out.push('.');
        out
    }
}

/// Unit vectors with a little shared structure, from a fixed seed.
fn synthetic_vector(seed: u64, dim: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..dim)
        .map(|_| (xorshift(&mut x) >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        .collect();
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= norm);
    v
}

pub(crate) fn run(
    ws: &dyn Workspace,
    chunks: usize,
    clients: usize,
    requests: usize,
    asks: usize,
) -> Result<Value> {
    let tmp = tempfile::tempdir()?;
    let parts = ws.embedding(None)?;
    let generator = ws.generator(None)?;
    let spec = collection_spec(parts.embedder.as_ref(), parts.chunker.as_ref());
    let dim = spec.dimension;

    // 1. A large synthetic collection, kept under the data dir so later runs
    //    skip the load and the index build (delete the folder to rebuild).
    let big_dir = ws
        .data_dir()
        .join(format!("bench/http-{chunks}-zipf-{}", spec.embedding_model));
    let existing = big_dir
        .join("vectors")
        .exists()
        .then(|| EdgeStore::open(&big_dir.join("vectors"), spec.clone()).ok())
        .flatten()
        .filter(|s| s.count().ok() == Some(chunks));
    let (big, load_secs, optimize_secs) = match existing {
        Some(store) => {
            eprintln!("reusing the synthetic collection in {}", big_dir.display());
            (Arc::new(store), 0.0, 0.0)
        }
        None => {
            let _ = std::fs::remove_dir_all(&big_dir);
            let big = Arc::new(EdgeStore::open(&big_dir.join("vectors"), spec.clone())?);
            let t0 = Instant::now();
            let mut text = ZipfText::new(7);
            let batch = 2000;
            let mut ordinal = 0usize;
            while ordinal < chunks {
                let points: Vec<EmbeddedChunk> = (ordinal..(ordinal + batch).min(chunks))
                    .map(|i| {
                        let document_id = DocumentId::new(format!("synthetic/{:05}.txt", i / 10));
                        let text = text.sentence(60);
                        EmbeddedChunk {
                            chunk: Chunk {
                                id: ChunkId::derive(&document_id, "bench", i % 10),
                                source: document_id.0.clone(),
                                document_id,
                                ordinal: i % 10,
                                end: text.len(),
                                line_start: 1,
                                line_end: 1,
                                content_hash: "bench".into(),
                                text,
                                ..Default::default()
                            },
                            vector: synthetic_vector(i as u64 + 1, dim),
                        }
                    })
                    .collect();
                big.upsert(&points)?;
                ordinal += points.len();
            }
            big.flush()?;
            let load_secs = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            big.optimize()?;
            big.flush()?;
            (big, load_secs, t1.elapsed().as_secs_f64())
        }
    };
    let count = big.count()?;
    if count != chunks {
        bail!("the synthetic collection holds {count} chunks, expected {chunks}");
    }

    // 2. The example documents, for time-to-first-token.
    let small = ws.collection(&tmp.path().join("small"), "examples", &parts)?;
    let pipeline = ws.pipeline(&parts, &small);
    pipeline.ingest_path(std::path::Path::new("examples/docs"), &|_| {})?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let big_catalogue = Arc::new(docent_ingest::Catalogue::open(
        &tmp.path().join("catalogue.redb"),
    )?);
    let big = docent_ingest::Collection {
        store: big,
        catalogue: big_catalogue,
    };
    let reranker = ws.reranker()?;
    let asker = |store| {
        let settings = ws.settings();
        let asker = docent_query::Asker::new(
            parts.embedder.clone(),
            store,
            generator.clone(),
            settings.query,
            settings.retrieval,
        );
        Arc::new(match &reranker {
            Some((model, candidates)) => asker.with_reranker(model.clone(), *candidates),
            None => asker,
        })
    };
    let search_state = ws.server_state(asker(big.store.clone()), &parts, &big);
    let ask_state = ws.server_state(asker(small.store.clone()), &parts, &small);
    let (search_addr, ask_addr) = runtime.block_on(async {
        let a = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let b = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addrs = (a.local_addr()?.to_string(), b.local_addr()?.to_string());
        tokio::spawn(docent_server::serve(
            a,
            search_state,
            std::future::pending(),
        ));
        tokio::spawn(docent_server::serve(b, ask_state, std::future::pending()));
        anyhow::Ok(addrs)
    })?;

    // 3. Search: `clients` threads on keep-alive connections. Cold: every
    //    query is new, so each one is embedded by the model. Warm: queries
    //    repeat from a pool of 256 already asked, so their embeddings come
    //    from the query cache (as a support desk's common questions would).
    let warm = Client::connect(&search_addr)?.post("/v1/search", r#"{"query": "warm up"}"#)?;
    if warm.0 != 200 {
        bail!("search answered {}: {}", warm.0, warm.1);
    }
    // One generator for both lists, so no cold query repeats a pool query
    // except by chance (6 words from a 30,000-word vocabulary).
    let mut text = ZipfText::new(99);
    let pool: Vec<String> = (0..256).map(|_| text.sentence(6)).collect();
    let cold_queries: Vec<String> = (0..requests.max(1)).map(|_| text.sentence(6)).collect();
    let cold = search_phase(&search_addr, clients, requests, &cold_queries)?;
    search_phase(&search_addr, clients, pool.len(), &pool)?;
    let warm = search_phase(&search_addr, clients, requests, &pool)?;

    // 4. Ask: time to the first token event, one request at a time.
    let questions = [
        "How many vacation days do new employees get?",
        "How much does the Enterprise plan cost?",
        "How fast must we respond to a Sev1 incident?",
        "Where is customer data stored for EU customers?",
        "How much storage does the free plan include?",
    ];
    let mut ttft = Vec::new();
    let mut prompt_tokens = Vec::new();
    for i in 0..asks {
        let q = questions[i % questions.len()];
        let mut client = Client::connect(&ask_addr)?;
        let body =
            json!({ "question": q, "top_k": 5, "max_tokens": 8, "stream": true }).to_string();
        let t = Instant::now();
        write!(
            client.reader.get_mut(),
            "POST /v1/ask HTTP/1.1\r\nHost: {ask_addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut first = None;
        let mut line = String::new();
        loop {
            line.clear();
            if client.reader.read_line(&mut line)? == 0 {
                break;
            }
            if first.is_none() && line.starts_with("event: token") {
                first = Some(t.elapsed().as_secs_f64() * 1000.0);
            }
            if let Some(data) = line.strip_prefix("data: ")
                && let Ok(v) = serde_json::from_str::<Value>(data)
                && let Some(n) = v["usage"]["prompt_tokens"].as_u64()
            {
                prompt_tokens.push(n as f64);
            }
        }
        ttft.push(first.context("the ask stream produced no token")?);
    }
    ttft.sort_by(|a, b| a.total_cmp(b));
    prompt_tokens.sort_by(|a, b| a.total_cmp(b));

    Ok(json!({
        "bench": "http",
        "search": {
            "chunks": chunks,
            "clients": clients,
            "load_secs": load_secs,
            "optimize_secs": optimize_secs,
            "mode": format!("{:?}", ws.settings().retrieval.mode).to_lowercase(),
            "cold_queries": cold,
            "repeated_queries": warm,
        },
        "ask": {
            "model": generator.model_id(),
            "requests": ttft.len(),
            "top_k": 5,
            "ttft_ms_p50": percentile(&ttft, 0.5),
            "ttft_ms_min": ttft.first().copied().unwrap_or(0.0),
            "prompt_tokens_p50": percentile(&prompt_tokens, 0.5),
        },
        "peak_rss_mib": peak_rss_mib(),
        "note": "synthetic chunks: Zipfian English-like text for BM25 (32 stop words + 30,000 pseudo-words), pseudo-random unit vectors for the dense side; cold queries are all new and embedded by the real model, repeated ones come from a pool of 256 (query cache)",
    }))
}

/// `docent bench http --url`: `clients` threads send `/v1/search` requests
/// to a running server for `seconds`, each waiting for its answer (30 s at
/// most) before the next. Every outcome is counted, so a node failure
/// behind the server shows as statuses, latencies and the longest stretch
/// any client went without a successful answer.
pub(crate) fn against(
    url: &str,
    clients: usize,
    seconds: u64,
    squad: Option<&std::path::Path>,
    api_key: Option<String>,
) -> Result<Value> {
    let addr = url
        .trim_end_matches('/')
        .strip_prefix("http://")
        .context("--url must be an http:// URL of a running docent serve")?
        .to_string();
    let queries: Vec<String> = match squad {
        Some(path) => crate::dataset::load_squad(path)?
            .queries
            .into_iter()
            .map(|q| q.text)
            .collect(),
        None => {
            let mut text = ZipfText::new(99);
            (0..4096).map(|_| text.sentence(6)).collect()
        }
    };
    if queries.is_empty() {
        bail!("no questions to search with");
    }
    let auth = api_key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let clients = clients.max(1);
    let duration = Duration::from_secs(seconds.max(1));
    /// One request: when it started (s from the start), its status (0 for
    /// a transport failure), whether it carried Retry-After, and how long
    /// it took (ms).
    struct Outcome {
        at: f64,
        status: u16,
        retry_after: bool,
        ms: f64,
    }
    let start = Instant::now();
    let per_client = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (addr, auth, queries) = (&addr, &auth, &queries);
                scope.spawn(move || {
                    let mut outcomes = Vec::new();
                    let mut client: Option<Client> = None;
                    let mut i = c;
                    while start.elapsed() < duration {
                        let query = &queries[i % queries.len()];
                        i += clients;
                        let body =
                            json!({ "query": query, "top_k": 10, "rerank": false }).to_string();
                        let at = start.elapsed().as_secs_f64();
                        let t = Instant::now();
                        let result = (|| -> Result<(u16, bool)> {
                            if client.is_none() {
                                let mut fresh = Client::connect(addr)?;
                                fresh
                                    .reader
                                    .get_mut()
                                    .set_read_timeout(Some(Duration::from_secs(30)))?;
                                fresh.auth = auth.clone();
                                client = Some(fresh);
                            }
                            let client = client.as_mut().expect("connected above");
                            let (status, _) = client.post("/v1/search", &body)?;
                            Ok((status, client.retry_after))
                        })();
                        let ms = t.elapsed().as_secs_f64() * 1000.0;
                        let (status, retry_after) = result.unwrap_or_else(|_| {
                            client = None;
                            (0, false)
                        });
                        if status == 0 || status == 503 {
                            // Do not hammer a failing server.
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        outcomes.push(Outcome {
                            at,
                            status,
                            retry_after,
                            ms,
                        });
                    }
                    outcomes
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect::<Vec<Vec<Outcome>>>()
    });
    let secs = start.elapsed().as_secs_f64();

    let mut by_status = std::collections::BTreeMap::<String, usize>::new();
    let mut without_retry_after = 0;
    let mut ok_ms = Vec::new();
    let mut all_ms = Vec::new();
    // The longest time any client waited from one success to the next.
    let mut longest_gap: f64 = 0.0;
    let mut timeline = std::collections::BTreeMap::<u64, (usize, usize, Vec<f64>)>::new();
    for outcomes in &per_client {
        let mut last_ok = 0.0;
        for o in outcomes {
            let key = if o.status == 0 {
                "transport_error".to_string()
            } else {
                o.status.to_string()
            };
            *by_status.entry(key).or_default() += 1;
            if matches!(o.status, 429 | 503) && !o.retry_after {
                without_retry_after += 1;
            }
            all_ms.push(o.ms);
            let bucket = timeline.entry(o.at as u64 / 5 * 5).or_default();
            bucket.0 += 1;
            if o.status == 200 {
                ok_ms.push(o.ms);
                let done = o.at + o.ms / 1000.0;
                longest_gap = longest_gap.max(done - last_ok);
                last_ok = done;
                bucket.2.push(o.ms);
            } else {
                bucket.1 += 1;
            }
        }
        longest_gap = longest_gap.max(secs - last_ok);
    }
    ok_ms.sort_by(|a, b| a.total_cmp(b));
    all_ms.sort_by(|a, b| a.total_cmp(b));
    let timeline: Vec<Value> = timeline
        .into_iter()
        .map(|(from, (requests, errors, mut ms))| {
            ms.sort_by(|a, b| a.total_cmp(b));
            json!({
                "from_sec": from,
                "requests": requests,
                "errors": errors,
                "ok_p50_ms": percentile(&ms, 0.5),
                "ok_max_ms": ms.last().copied().unwrap_or(0.0),
            })
        })
        .collect();
    Ok(json!({
        "bench": "http",
        "url": url,
        "clients": clients,
        "seconds": secs,
        "requests": all_ms.len(),
        "by_status": by_status,
        "errors_without_retry_after": without_retry_after,
        "ok_p50_ms": percentile(&ok_ms, 0.5),
        "ok_p99_ms": percentile(&ok_ms, 0.99),
        "any_max_ms": all_ms.last().copied().unwrap_or(0.0),
        "longest_client_gap_secs": longest_gap,
        "every_5_secs": timeline,
        "queries": if squad.is_some() { "SQuAD questions" } else { "synthetic 6-word texts" },
    }))
}
