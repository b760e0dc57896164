//! The server backend: the same collections on a Qdrant server or cluster,
//! over gRPC with `qdrant-client`.
//!
//! Layout and scoring match [`crate::EdgeStore`] exactly: a cosine vector
//! `dense`, a sparse vector `bm25` with the IDF modifier, the payload of
//! [`crate::payload`] with the indexes of `crate::layout`, BM25 vectors
//! computed here by [`crate::bm25::Bm25`] (Qdrant's own tokenizer and term
//! ids), and every search planned by `crate::plan`; this file only converts
//! those to gRPC types and back. So both backends rank keyword and hybrid
//! searches the same way and a migration copies sparse vectors verbatim.
//!
//! The [`CollectionSpec`] is kept in the collection's own metadata (Qdrant
//! 1.16+ stores arbitrary JSON with a collection), under the key `docent`:
//! it lives and dies with the collection, replicates with it, and never
//! shows up as a point in counts, scrolls or searches.
//!
//! `VectorStore` is synchronous; the store owns a small tokio runtime and
//! blocks on it. Callers must not call it from inside an async task (the
//! server uses `spawn_blocking`). Writes retry transient failures with
//! exponential backoff; reads fail fast with `Error::Unavailable` (a 503).

use crate::bm25::Bm25;
use crate::layout::{self, INT8_ALWAYS_RAM, INT8_QUANTILE, IndexKind, Point};
use crate::payload::from_payload;
use crate::plan::{
    self, Condition as PlanCondition, FusionPlan, MatchValue, QueryVector, Scoring, SearchPlan,
};
use crate::{DENSE, SPARSE};
use docent_core::{
    Chunk, ChunkId, CollectionSpec, DocumentId, EmbeddedChunk, Error, NodeHealth, Result,
    ScoredChunk, SearchRequest, SparseVector, StoreHealth, StoredPoint, VectorStore,
};
use qdrant_client::qdrant::{
    self as pb, Condition, CountPoints, CreateCollection, CreateFieldIndexCollection, DeletePoints,
    Distance, FieldType, Filter, GetCollectionInfoRequest, Modifier, PointId, PointStruct,
    PointsIdsList, PrefetchQuery, QuantizationConfig, QuantizationType, Query, QueryPoints, Range,
    ScalarQuantization, ScrollPoints, SparseVectorConfig, SparseVectorParams, UpsertPoints,
    VectorInput, VectorParams, VectorParamsMap, VectorsConfig, point_id::PointIdOptions,
    quantization_config, vector_output, vectors_config,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Oldest server with everything used here: collection metadata (1.16) and
/// weighted RRF (1.17).
const MIN_VERSION: (u64, u64) = (1, 17);
const MIN_VERSION_TEXT: &str = "Qdrant 1.17";

/// Whether a server version string (`1.17.0`, `v1.17.1-dev`) is new enough.
/// An unparsable version is let through: development builds report odd ones.
fn version_supported(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= MIN_VERSION,
        _ => true,
    }
}

/// Key of the collection metadata entry holding the spec.
const METADATA_KEY: &str = "docent";

/// How to reach the server and how to lay out a new collection.
#[derive(Clone)]
pub struct QdrantOptions {
    /// gRPC endpoint, e.g. `http://localhost:6334`; several nodes of one
    /// cluster may be listed, comma-separated, to fail over between them.
    pub url: String,
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    /// Upper bound on each request.
    pub request_timeout: Duration,
    /// Name of the collection on the server.
    pub collection: String,
    /// Shards of a new collection (spread over the cluster's nodes).
    pub shard_number: u32,
    /// Copies of each shard in a new collection.
    pub replication_factor: u32,
    /// Replicas that must confirm a write before it succeeds.
    pub write_consistency_factor: u32,
    /// Keep payloads on disk (memory-mapped) rather than in RAM.
    pub on_disk_payload: bool,
    /// Keep dense vectors on disk (memory-mapped) rather than in RAM.
    pub on_disk_vectors: bool,
    /// Attempts after the first for a write that failed transiently.
    pub write_retries: u32,
    /// Wait before the first retry; doubled each time.
    pub retry_backoff: Duration,
}

impl std::fmt::Debug for QdrantOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantOptions")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("collection", &self.collection)
            .field("shard_number", &self.shard_number)
            .field("replication_factor", &self.replication_factor)
            .field("write_consistency_factor", &self.write_consistency_factor)
            .finish_non_exhaustive()
    }
}

impl QdrantOptions {
    /// Options for a local single node with docent's defaults.
    pub fn new(url: impl Into<String>, collection: impl Into<String>) -> Self {
        QdrantOptions {
            url: url.into(),
            api_key: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            collection: collection.into(),
            shard_number: 1,
            replication_factor: 1,
            write_consistency_factor: 1,
            on_disk_payload: true,
            on_disk_vectors: false,
            write_retries: 3,
            retry_backoff: Duration::from_millis(200),
        }
    }
}

impl QdrantOptions {
    /// The node URLs `url` lists, in order.
    pub fn urls(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }
}

/// A collection on a Qdrant server or cluster.
pub struct QdrantStore {
    nodes: Nodes,
    spec: CollectionSpec,
    bm25: Bm25,
}

/// One configured node and its client.
struct Node {
    url: String,
    client: Qdrant,
}

/// The configured nodes of one cluster. Every request goes to the current
/// node; when that node itself fails (refused connection, unavailable), the
/// request goes to the next node and that one becomes current. Any node of
/// a Qdrant cluster serves every collection, forwarding to the shards'
/// replicas, so which node answers changes nothing but availability.
struct Nodes {
    nodes: Vec<Node>,
    current: AtomicUsize,
    /// `Some` until drop; shut down without blocking, since the last owner
    /// may be dropped inside an async context.
    runtime: Option<tokio::runtime::Runtime>,
    options: QdrantOptions,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A failed call: the node that gave the final answer, and the nodes that
/// failed before it.
struct Failure {
    url: String,
    others: Vec<String>,
    error: QdrantError,
}

/// Whether a failure is the node's own (down, unreachable, shutting down),
/// so another node of the cluster may answer instead.
fn node_failed(e: &QdrantError) -> bool {
    use tonic::Code;
    match e {
        QdrantError::Io(_) => true,
        QdrantError::ResponseError { status } => match status.code() {
            Code::Unavailable => true,
            // qdrant-client reports a refused connection as `Internal`
            // ("Failed to connect to ..."), and a connection that broke
            // mid-call as a transport error.
            Code::Internal | Code::Unknown => {
                let message = status.message();
                message.starts_with("Failed to connect to") || message.contains("transport error")
            }
            _ => false,
        },
        _ => false,
    }
}

/// Whether a failed call may succeed if simply tried again.
fn is_transient(e: &QdrantError) -> bool {
    use tonic::Code;
    match e {
        QdrantError::ResourceExhaustedError { .. } => true,
        QdrantError::ResponseError { status } => matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Unknown
        ),
        QdrantError::Io(_) => true,
        _ => false,
    }
}

/// The server's suggested wait, when it sent one.
fn retry_after(e: &QdrantError) -> Option<Duration> {
    match e {
        QdrantError::ResourceExhaustedError {
            retry_after_seconds,
            ..
        } => Some(Duration::from_secs(*retry_after_seconds)),
        _ => None,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("docent-qdrant")
        .enable_all()
        .build()
        .map_err(|e| Error::internal("cannot start the Qdrant client runtime", e))
}

fn client(options: &QdrantOptions, url: &str) -> Result<Qdrant> {
    let mut config = Qdrant::from_url(url)
        .timeout(options.request_timeout)
        .connect_timeout(options.connect_timeout)
        // docent runs its own health check with a clearer message.
        .skip_compatibility_check();
    if let Some(key) = &options.api_key {
        config = config.api_key(key.clone());
    }
    config.build().map_err(|e| {
        Error::InvalidInput(format!(
            "store.qdrant.url {url:?} is not a usable gRPC URL ({e}); use e.g. http://localhost:6334 (several nodes comma-separated)"
        ))
    })
}

impl Nodes {
    /// Clients for every configured node; connects lazily.
    fn new(options: QdrantOptions) -> Result<Self> {
        let urls = options.urls();
        if urls.is_empty() {
            return Err(Error::InvalidInput(
                "store.qdrant.url is empty; set the gRPC URL of a node, e.g. http://localhost:6334"
                    .into(),
            ));
        }
        let nodes = urls
            .iter()
            .map(|url| {
                Ok(Node {
                    url: url.to_string(),
                    client: client(&options, url)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Nodes {
            nodes,
            current: AtomicUsize::new(0),
            runtime: Some(runtime()?),
            options,
        })
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime
            .as_ref()
            .expect("runtime lives until drop")
            .block_on(f)
    }

    /// Runs `call` on the current node and, when that node fails, on each
    /// other node in turn; the first to answer becomes current.
    fn call<T, F, Fut>(&self, what: &str, call: &F) -> std::result::Result<T, Failure>
    where
        F: Fn(Qdrant) -> Fut,
        Fut: Future<Output = std::result::Result<T, QdrantError>>,
    {
        let n = self.nodes.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut others = Vec::new();
        for step in 0..n {
            let i = (start + step) % n;
            let node = &self.nodes[i];
            match self.block_on(call(node.client.clone())) {
                Ok(v) => {
                    if step > 0 {
                        self.current.store(i, Ordering::Relaxed);
                        tracing::warn!(
                            "Qdrant: {what} failed on {}; {} answered and takes the requests from now on",
                            others.join("; "),
                            node.url
                        );
                    }
                    return Ok(v);
                }
                Err(e) if node_failed(&e) && step + 1 < n => {
                    others.push(format!("{} ({})", node.url, describe(&e)));
                }
                Err(error) => {
                    return Err(Failure {
                        url: node.url.clone(),
                        others,
                        error,
                    });
                }
            }
        }
        unreachable!("the last node's answer returns")
    }

    /// Runs a read once per node: a failing cluster answers 503 at once
    /// rather than holding the request while it recovers.
    fn read<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: Fn(Qdrant) -> Fut,
        Fut: Future<Output = std::result::Result<T, QdrantError>>,
    {
        self.call(what, &call)
            .map_err(|f| classify(&self.options, what, f, false))
    }

    /// Runs a write, retrying transient failures with exponential backoff.
    fn write<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: Fn(Qdrant) -> Fut,
        Fut: Future<Output = std::result::Result<T, QdrantError>>,
    {
        let mut wait = self.options.retry_backoff;
        let mut attempt = 0;
        loop {
            match self.call(what, &call) {
                Ok(v) => return Ok(v),
                Err(f) if is_transient(&f.error) && attempt < self.options.write_retries => {
                    attempt += 1;
                    let pause = retry_after(&f.error)
                        .unwrap_or(wait)
                        .min(Duration::from_secs(30));
                    tracing::warn!(
                        "Qdrant at {}: {what} failed ({}), retry {attempt}/{} in {pause:?}",
                        f.url,
                        describe(&f.error),
                        self.options.write_retries
                    );
                    std::thread::sleep(pause);
                    wait = wait.saturating_mul(2);
                }
                Err(f) => {
                    let retried = is_transient(&f.error) && self.options.write_retries > 0;
                    return Err(classify(&self.options, what, f, retried));
                }
            }
        }
    }

    /// Checks every node's health; returns the first that answers (and
    /// makes it current) with its version, or an error naming every node.
    fn first_healthy(&self) -> Result<String> {
        let mut failed = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            match self.block_on(node.client.health_check()) {
                Ok(health) => {
                    if !failed.is_empty() {
                        tracing::warn!(
                            "Qdrant: {} did not answer; using {}",
                            failed.join("; "),
                            node.url
                        );
                    }
                    self.current.store(i, Ordering::Relaxed);
                    if !version_supported(&health.version) {
                        return Err(Error::Incompatible(format!(
                            "Qdrant at {} is version {}; docent needs {MIN_VERSION_TEXT} or newer (collection metadata, weighted hybrid fusion). Upgrade the server",
                            node.url, health.version
                        )));
                    }
                    return Ok(node.url.clone());
                }
                Err(e) => failed.push(format!("{} ({})", node.url, describe(&e))),
            }
        }
        Err(Error::Unavailable {
            message: format!(
                "cannot reach Qdrant at {}; check store.qdrant.url (the gRPC port, usually 6334), the API key, and that the server is running",
                failed.join("; ")
            ),
            source: None,
        })
    }

    /// Each node's health check (at most 2 s each) and the collection's
    /// replica states as a live node sees them.
    fn health(&self) -> StoreHealth {
        let mut health = StoreHealth::default();
        for node in &self.nodes {
            let check = tokio::time::timeout(Duration::from_secs(2), node.client.health_check());
            let error = match self.block_on(check) {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(describe(&e)),
                Err(_) => Some("no answer within 2 s".to_string()),
            };
            if let Some(e) = &error {
                health
                    .problems
                    .push(format!("Qdrant node {} does not answer: {e}", node.url));
            }
            health.nodes.push(NodeHealth {
                url: node.url.clone(),
                up: error.is_none(),
                error,
            });
        }
        let name = self.options.collection.clone();
        let info = self.call("reading the cluster state", &|c: Qdrant| {
            let name = name.clone();
            async move { c.collection_cluster_info(name).await }
        });
        match info {
            Ok(info) => {
                let replicas = info
                    .local_shards
                    .iter()
                    .map(|s| (s.shard_id, info.peer_id, s.state))
                    .chain(
                        info.remote_shards
                            .iter()
                            .map(|s| (s.shard_id, s.peer_id, s.state)),
                    );
                for (shard, peer, state) in replicas {
                    let state = pb::ReplicaState::try_from(state)
                        .map(|s| s.as_str_name().to_string())
                        .unwrap_or_else(|_| format!("state {state}"));
                    if state != "Active" {
                        health
                            .problems
                            .push(format!("shard {shard} of {name} on peer {peer} is {state}"));
                    }
                    *health.replicas.entry(state).or_default() += 1;
                }
            }
            Err(f) => health.problems.push(format!(
                "cannot read the cluster state of {name}: {}",
                classify(&self.options, "reading the cluster state", f, false)
            )),
        }
        health
    }
}

impl QdrantStore {
    /// Connects, creates the collection with its indexes when missing, and
    /// refuses an existing one built with a different spec or layout.
    pub fn open(options: QdrantOptions, spec: CollectionSpec) -> Result<Self> {
        Self::connect(options, Some(spec))
    }

    /// Opens an existing collection with the spec it records (for copying it).
    pub fn open_existing(options: QdrantOptions) -> Result<Self> {
        Self::connect(options, None)
    }

    /// Deletes a collection (used by tests and benchmarks); a missing one is fine.
    pub fn delete_collection(options: &QdrantOptions) -> Result<()> {
        let nodes = Nodes::new(options.clone())?;
        let name = options.collection.clone();
        nodes.write("deleting the collection", |c: Qdrant| {
            let name = name.clone();
            async move {
                if c.collection_exists(&name).await? {
                    c.delete_collection(&name).await?;
                }
                Ok(())
            }
        })
    }

    fn connect(options: QdrantOptions, wanted: Option<CollectionSpec>) -> Result<Self> {
        let nodes = Nodes::new(options)?;
        let url = nodes.first_healthy()?;
        let name = nodes.options.collection.clone();
        let exists = nodes.read("checking the collection", |c: Qdrant| {
            let name = name.clone();
            async move { c.collection_exists(name).await }
        })?;
        let spec = match (exists, wanted) {
            (false, None) => {
                return Err(Error::NotFound(format!(
                    "no collection {name} on Qdrant at {url}; check --collection and store.qdrant.collection_prefix",
                )));
            }
            (false, Some(spec)) => {
                let request = create_request(&nodes.options, &spec);
                let created = nodes.write("creating the collection", |c: Qdrant| {
                    let request = request.clone();
                    async move {
                        match c.create_collection(request).await {
                            // Another docent created it meanwhile: check it like any other.
                            Err(QdrantError::ResponseError { status })
                                if status.code() == tonic::Code::AlreadyExists =>
                            {
                                Ok(())
                            }
                            other => other.map(|_| ()),
                        }
                    }
                });
                created?;
                check_existing(&nodes, Some(&spec))?
            }
            (true, wanted) => check_existing(&nodes, wanted.as_ref())?,
        };
        let store = QdrantStore {
            nodes,
            spec,
            bm25: Bm25::new()?,
        };
        store.ensure_indexes()?;
        Ok(store)
    }

    /// The collection's name on the server.
    pub fn collection(&self) -> &str {
        &self.nodes.options.collection
    }

    fn name(&self) -> String {
        self.nodes.options.collection.clone()
    }

    fn ensure_indexes(&self) -> Result<()> {
        for (field, kind) in layout::payload_indexes() {
            let kind = match kind {
                IndexKind::Keyword => FieldType::Keyword,
                IndexKind::Integer => FieldType::Integer,
            };
            let request = CreateFieldIndexCollection {
                collection_name: self.name(),
                wait: Some(true),
                field_name: field.to_string(),
                field_type: Some(kind as i32),
                ..Default::default()
            };
            self.nodes.write("creating a payload index", |c: Qdrant| {
                let request = request.clone();
                async move { c.create_field_index(request).await }
            })?;
        }
        Ok(())
    }

    fn upsert_request(&self, points: Vec<PointStruct>) -> UpsertPoints {
        UpsertPoints {
            collection_name: self.name(),
            wait: Some(true),
            points,
            ..Default::default()
        }
    }

    /// Upserts points the layout has checked.
    fn write_points(&self, points: Vec<Point>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(points.len());
        for p in points {
            let payload = Payload::try_from(p.payload)
                .map_err(|e| Error::internal("chunk payload is not a JSON object", e))?;
            let vectors: HashMap<String, pb::Vector> = HashMap::from([
                (DENSE.to_string(), pb::Vector::new_dense(p.dense)),
                (
                    SPARSE.to_string(),
                    pb::Vector::new_sparse(p.sparse.indices, p.sparse.values),
                ),
            ]);
            out.push(PointStruct::new(point_id(p.id), vectors, payload));
        }
        let request = self.upsert_request(out);
        self.nodes.write("upsert", |c: Qdrant| {
            let request = request.clone();
            async move { c.upsert_points(request).await }
        })?;
        Ok(())
    }

    fn delete(&self, selector: pb::PointsSelector) -> Result<()> {
        let request = DeletePoints {
            collection_name: self.name(),
            wait: Some(true),
            points: Some(selector),
            ..Default::default()
        };
        self.nodes.write("delete", |c: Qdrant| {
            let request = request.clone();
            async move { c.delete_points(request).await }
        })?;
        Ok(())
    }

    fn scroll_page(
        &self,
        filter: Option<Filter>,
        from: Option<PointId>,
        limit: usize,
        with_vectors: bool,
    ) -> Result<(Vec<pb::RetrievedPoint>, Option<PointId>)> {
        let request = ScrollPoints {
            collection_name: self.name(),
            filter,
            offset: from,
            limit: Some(limit.clamp(1, u32::MAX as usize) as u32),
            with_payload: Some(true.into()),
            with_vectors: Some(with_vectors.into()),
            ..Default::default()
        };
        let response = self.nodes.read("scroll", |c: Qdrant| {
            let request = request.clone();
            async move { c.scroll(request).await }
        })?;
        Ok((response.result, response.next_page_offset))
    }
}

/// The create request for a new collection laid out like the embedded one.
// `on_disk` and `on_disk_payload` are deprecated in favour of a newer
// `memory` field that 1.17 servers do not know; every supported server
// honours the old fields, so those are used.
#[allow(deprecated)]
fn create_request(options: &QdrantOptions, spec: &CollectionSpec) -> CreateCollection {
    let dense = VectorParams {
        size: spec.dimension as u64,
        distance: Distance::Cosine as i32,
        on_disk: Some(options.on_disk_vectors),
        // The int8 copy every backend searches with ([`INT8_QUANTILE`]).
        quantization_config: Some(QuantizationConfig {
            quantization: Some(quantization_config::Quantization::Scalar(
                ScalarQuantization {
                    r#type: QuantizationType::Int8 as i32,
                    quantile: Some(INT8_QUANTILE),
                    always_ram: Some(INT8_ALWAYS_RAM),
                    memory: None,
                },
            )),
        }),
        ..Default::default()
    };
    let sparse = SparseVectorParams {
        modifier: Some(Modifier::Idf as i32),
        ..Default::default()
    };
    CreateCollection {
        collection_name: options.collection.clone(),
        shard_number: Some(options.shard_number.max(1)),
        replication_factor: Some(options.replication_factor.max(1)),
        write_consistency_factor: Some(options.write_consistency_factor.max(1)),
        on_disk_payload: Some(options.on_disk_payload),
        vectors_config: Some(VectorsConfig {
            config: Some(vectors_config::Config::ParamsMap(VectorParamsMap {
                map: HashMap::from([(DENSE.to_string(), dense)]),
            })),
        }),
        sparse_vectors_config: Some(SparseVectorConfig {
            map: HashMap::from([(SPARSE.to_string(), sparse)]),
        }),
        metadata: spec_metadata(spec),
        ..Default::default()
    }
}

fn spec_metadata(spec: &CollectionSpec) -> HashMap<String, pb::Value> {
    let json = serde_json::to_value(spec).expect("spec serialises");
    HashMap::from([(METADATA_KEY.to_string(), pb::Value::from(json))])
}

/// Reads an existing collection's spec and layout, and checks them against
/// `wanted` when given. Returns the spec it was built with.
fn check_existing(nodes: &Nodes, wanted: Option<&CollectionSpec>) -> Result<CollectionSpec> {
    let name = &nodes.options.collection;
    let info = nodes.read("reading the collection", |c: Qdrant| {
        let request = GetCollectionInfoRequest {
            collection_name: name.clone(),
        };
        async move { c.collection_info(request).await }
    })?;
    let config = info.result.and_then(|r| r.config).unwrap_or_default();
    let where_ = format!("collection {name} on Qdrant at {}", nodes.options.url);
    let found: CollectionSpec = match config.metadata.get(METADATA_KEY) {
        Some(value) => serde_json::from_value(serde_json::Value::from(value.clone())).map_err(
            |e| {
                Error::Incompatible(format!(
                    "the {where_} has unreadable docent metadata ({e}); delete it or pick another collection"
                ))
            },
        )?,
        None => {
            return Err(Error::Incompatible(format!(
                "the {where_} has no docent metadata: it was not created by docent, or the server lost it. Use another collection name, or delete it"
            )));
        }
    };
    if let Some(wanted) = wanted
        && let Some(diff) = wanted.mismatch(&found)
    {
        return Err(Error::Incompatible(format!("it was built with {diff}")));
    }
    // The layout must be the one docent creates, or searches would fail later.
    let params = config.params.unwrap_or_default();
    let dense_ok = match params.vectors_config.and_then(|v| v.config) {
        Some(vectors_config::Config::ParamsMap(map)) => map.map.get(DENSE).is_some_and(|p| {
            p.size == found.dimension as u64 && p.distance == Distance::Cosine as i32
        }),
        _ => false,
    };
    let sparse_ok = params
        .sparse_vectors_config
        .and_then(|s| s.map.get(SPARSE).copied())
        .is_some_and(|p| p.modifier == Some(Modifier::Idf as i32));
    if !dense_ok || !sparse_ok {
        return Err(Error::Incompatible(format!(
            "the {where_} lacks docent's vectors (a cosine \"{DENSE}\" of {} dimensions and a \"{SPARSE}\" sparse vector with IDF); delete it or pick another collection",
            found.dimension
        )));
    }
    Ok(found)
}

fn describe(e: &QdrantError) -> String {
    match e {
        QdrantError::ResponseError { status }
        | QdrantError::ResourceExhaustedError { status, .. } => {
            let mut text = format!("{:?}: {}", status.code(), status.message());
            // Transport failures carry the cause (connection refused, DNS...)
            // in the source chain rather than the message.
            let mut source = std::error::Error::source(status);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
        other => other.to_string(),
    }
}

/// Maps a failed call; `what` names the operation. The message names the
/// node that answered last, and any that failed before it.
fn classify(options: &QdrantOptions, what: &str, failure: Failure, retried: bool) -> Error {
    use tonic::Code;
    let Failure {
        url,
        others,
        error: e,
    } = failure;
    let mut detail = describe(&e);
    if !others.is_empty() {
        detail.push_str(&format!("; before it, {} failed", others.join("; ")));
    }
    let again = if retried { " (after retries)" } else { "" };
    match &e {
        QdrantError::ResourceExhaustedError { .. } => Error::Overloaded(format!(
            "Qdrant at {url} is overloaded{again}: {what}: {detail}"
        )),
        QdrantError::ResponseError { status } => match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => Error::unavailable(
                format!("Qdrant at {url} refused {what}: {detail}; check store.qdrant.api_key"),
                e,
            ),
            Code::NotFound => Error::unavailable(
                format!(
                    "collection {} is missing on Qdrant at {url} ({what}: {detail}); restart docent to create it",
                    options.collection
                ),
                e,
            ),
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                Error::internal(format!("Qdrant at {url} rejected {what}: {detail}"), e)
            }
            _ => Error::unavailable(
                format!(
                    "Qdrant at {url} failed {what}{again}: {detail}; check the cluster's health (GET /readyz lists each node)"
                ),
                e,
            ),
        },
        _ => Error::unavailable(format!("Qdrant at {url} failed {what}{again}: {detail}"), e),
    }
}

fn point_id(id: ChunkId) -> PointId {
    PointId {
        point_id_options: Some(PointIdOptions::Uuid(id.0.to_string())),
    }
}

fn chunk_id(id: Option<&PointId>) -> Result<ChunkId> {
    match id.and_then(|p| p.point_id_options.as_ref()) {
        Some(PointIdOptions::Uuid(text)) => text
            .parse()
            .map(ChunkId)
            .map_err(|e| Error::internal(format!("point id {text} is not a UUID"), e)),
        other => Err(Error::Internal {
            message: format!("unexpected point id {other:?}: not a docent chunk"),
            source: None,
        }),
    }
}

fn payload_chunk(id: Option<&PointId>, payload: HashMap<String, pb::Value>) -> Result<Chunk> {
    let id = chunk_id(id)?;
    let map: serde_json::Map<String, Value> = Payload::from(payload).into();
    from_payload(id, &map)
}

/// Plan conditions as a Qdrant filter, the same conditions the embedded
/// backend builds.
fn filter(conditions: &[PlanCondition]) -> Filter {
    Filter::must(conditions.iter().map(|condition| match condition {
        PlanCondition::Match { field, value } => {
            // Built by hand: qdrant-client's `From<String>` turns a value
            // holding whitespace into a full-text match, so "My Docs/a.md"
            // would match by words, not as the path it is.
            let value = match value {
                MatchValue::Keyword(k) => pb::r#match::MatchValue::Keyword(k.clone()),
                MatchValue::AnyKeyword(k) => {
                    pb::r#match::MatchValue::Keywords(pb::RepeatedStrings { strings: k.clone() })
                }
                MatchValue::AnyInteger(i) => {
                    pb::r#match::MatchValue::Integers(pb::RepeatedIntegers {
                        integers: i.clone(),
                    })
                }
            };
            Condition::matches(field, value)
        }
        PlanCondition::Range { field, gte, lte } => Condition::range(
            *field,
            Range {
                gte: gte.map(|v| v as f64),
                lte: lte.map(|v| v as f64),
                ..Default::default()
            },
        ),
    }))
}

/// The plan as a Qdrant query on the collection.
fn query_points(collection: &str, plan: &SearchPlan) -> QueryPoints {
    let filter = plan.filter().map(filter);
    let (prefetch, query, using, params) = match &plan.scoring {
        Scoring::Single(list) => (
            vec![],
            nearest(&list.query),
            Some(list.query.name().to_string()),
            beam(list.beam),
        ),
        Scoring::Fused {
            lists,
            list_len,
            fusion,
        } => {
            // The filter goes into each list as well, so both candidate lists
            // come from the filtered set (as in the embedded engine, where
            // the top-level filter reaches the prefetches).
            let prefetch = lists
                .iter()
                .map(|list| PrefetchQuery {
                    query: Some(nearest(&list.query)),
                    using: Some(list.query.name().to_string()),
                    filter: filter.clone(),
                    limit: Some(*list_len as u64),
                    params: beam(list.beam),
                    ..Default::default()
                })
                .collect();
            let fusion = match *fusion {
                FusionPlan::Rrf { k, weights } => Query::new_rrf(pb::Rrf {
                    k: Some(k),
                    weights: weights.to_vec(),
                }),
                FusionPlan::Dbsf => Query::new_fusion(pb::Fusion::Dbsf),
            };
            (prefetch, fusion, None, None)
        }
    };
    QueryPoints {
        collection_name: collection.to_string(),
        prefetch,
        query: Some(query),
        using,
        filter,
        params,
        limit: Some(plan.limit as u64),
        with_vectors: Some(vec![DENSE].into()),
        with_payload: Some(true.into()),
        ..Default::default()
    }
}

fn nearest(query: &QueryVector) -> Query {
    Query::new_nearest(match query {
        QueryVector::Dense(v) => VectorInput::new_dense(v.to_vec()),
        QueryVector::Sparse(s) => VectorInput::new_sparse(s.indices.clone(), s.values.clone()),
    })
}

fn beam(beam: Option<usize>) -> Option<pb::SearchParams> {
    beam.map(|beam| pb::SearchParams {
        hnsw_ef: Some(beam as u64),
        ..Default::default()
    })
}

fn named_vectors(vectors: Option<pb::VectorsOutput>) -> (Vec<f32>, SparseVector) {
    let mut dense = Vec::new();
    let mut sparse = SparseVector::default();
    if let Some(pb::vectors_output::VectorsOptions::Vectors(named)) =
        vectors.and_then(|v| v.vectors_options)
    {
        for (name, v) in named.vectors {
            match (name.as_str(), v.into_vector()) {
                (DENSE, vector_output::Vector::Dense(d)) => dense = d.data,
                (SPARSE, vector_output::Vector::Sparse(s)) => {
                    sparse = SparseVector {
                        indices: s.indices,
                        values: s.values,
                    }
                }
                _ => {}
            }
        }
    }
    (dense, sparse)
}

impl VectorStore for QdrantStore {
    fn spec(&self) -> &CollectionSpec {
        &self.spec
    }

    fn upsert(&self, chunks: &[EmbeddedChunk]) -> Result<()> {
        self.write_points(layout::embedded_points(&self.spec, &self.bm25, chunks)?)
    }

    fn delete_chunks(&self, ids: &[ChunkId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = PointsIdsList {
            ids: ids.iter().copied().map(point_id).collect(),
        };
        self.delete(pb::PointsSelector::from(
            pb::points_selector::PointsSelectorOneOf::Points(ids),
        ))
    }

    fn delete_document(&self, document: &DocumentId) -> Result<()> {
        self.delete(pb::PointsSelector::from(filter(
            &plan::document_conditions(document),
        )))
    }

    fn chunk_ids(&self, document: &DocumentId) -> Result<Vec<ChunkId>> {
        plan::read_pages(|from| {
            let request = ScrollPoints {
                collection_name: self.name(),
                filter: Some(filter(&plan::document_conditions(document))),
                offset: from,
                limit: Some(plan::ID_PAGE as u32),
                with_payload: Some(false.into()),
                with_vectors: Some(false.into()),
                ..Default::default()
            };
            let page = self.nodes.read("scroll", |c: Qdrant| {
                let request = request.clone();
                async move { c.scroll(request).await }
            })?;
            let ids = page.result.iter().map(|point| chunk_id(point.id.as_ref()));
            Ok((ids.collect::<Result<_>>()?, page.next_page_offset))
        })
    }

    fn chunks_by_ordinal(&self, document: &DocumentId, ordinals: &[usize]) -> Result<Vec<Chunk>> {
        if ordinals.is_empty() {
            return Ok(Vec::new());
        }
        let filter = filter(&plan::ordinal_conditions(document, ordinals));
        let (page, _) = self.scroll_page(Some(filter), None, ordinals.len(), false)?;
        page.into_iter()
            .map(|p| payload_chunk(p.id.as_ref(), p.payload))
            .collect()
    }

    fn search(&self, request: &SearchRequest) -> Result<Vec<ScoredChunk>> {
        let plan = SearchPlan::new(request, &self.spec, &self.bm25)?;
        let query = query_points(self.collection(), &plan);
        let hits = self
            .nodes
            .read("search", |c: Qdrant| {
                let query = query.clone();
                async move { c.query(query).await }
            })?
            .result;
        hits.into_iter()
            .map(|hit| {
                let (stored, _) = named_vectors(hit.vectors);
                let chunk = payload_chunk(hit.id.as_ref(), hit.payload)?;
                Ok(plan.hit(chunk, hit.score, &stored))
            })
            .collect()
    }

    fn count(&self) -> Result<usize> {
        let request = CountPoints {
            collection_name: self.name(),
            exact: Some(true),
            ..Default::default()
        };
        let response = self.nodes.read("count", |c: Qdrant| {
            let request = request.clone();
            async move { c.count(request).await }
        })?;
        Ok(response.result.map(|r| r.count as usize).unwrap_or(0))
    }

    /// The server indexes by itself after writes; this waits until its
    /// optimizers are done (the collection is green), so what follows is
    /// measured or served on the finished index. Gives up after an hour.
    fn optimize(&self) -> Result<()> {
        let name = self.name();
        let started = std::time::Instant::now();
        loop {
            let info = self.nodes.read("reading the collection", |c: Qdrant| {
                let request = GetCollectionInfoRequest {
                    collection_name: name.clone(),
                };
                async move { c.collection_info(request).await }
            })?;
            let status = info.result.map(|r| r.status).unwrap_or_default();
            // Grey: optimizations pending that nothing has triggered yet.
            if status == pb::CollectionStatus::Green as i32
                || status == pb::CollectionStatus::Grey as i32
            {
                return Ok(());
            }
            if status == pb::CollectionStatus::Red as i32 {
                return Err(Error::unavailable(
                    format!(
                        "collection {name} is red on Qdrant (an optimization failed); check the server's logs"
                    ),
                    std::io::Error::other("collection status red"),
                ));
            }
            if started.elapsed() > Duration::from_secs(3600) {
                return Err(Error::unavailable(
                    format!(
                        "collection {name} is still being optimized after an hour; check the server's logs"
                    ),
                    std::io::Error::other("optimization timeout"),
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Every write already waited for the server's acknowledgement (its WAL,
    /// on `write_consistency_factor` replicas), so there is nothing to do.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn scroll_points(
        &self,
        from: Option<ChunkId>,
        limit: usize,
    ) -> Result<(Vec<StoredPoint>, Option<ChunkId>)> {
        let (page, next) = self.scroll_page(None, from.map(point_id), limit, true)?;
        let mut points = Vec::with_capacity(page.len());
        for p in page {
            let (vector, sparse) = named_vectors(p.vectors);
            let chunk = payload_chunk(p.id.as_ref(), p.payload)?;
            points.push(layout::stored_point(&self.spec, chunk, vector, sparse)?);
        }
        Ok((
            points,
            next.as_ref().map(|n| chunk_id(Some(n))).transpose()?,
        ))
    }

    fn upsert_points(&self, points: &[StoredPoint]) -> Result<()> {
        self.write_points(layout::copied_points(&self.spec, points)?)
    }

    fn health(&self) -> StoreHealth {
        self.nodes.health()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CollectionSpec {
        crate::test_spec(4)
    }

    #[test]
    fn the_spec_round_trips_through_collection_metadata() {
        let metadata = spec_metadata(&spec());
        let back: CollectionSpec =
            serde_json::from_value(Value::from(metadata[METADATA_KEY].clone())).unwrap();
        assert_eq!(back, spec());
    }

    #[test]
    fn a_new_collection_has_the_embedded_layout_and_the_configured_cluster_settings() {
        let mut options = QdrantOptions::new("http://localhost:6334", "docent_x");
        options.shard_number = 6;
        options.replication_factor = 2;
        options.write_consistency_factor = 2;
        let request = create_request(&options, &spec());
        assert_eq!(request.shard_number, Some(6));
        assert_eq!(request.replication_factor, Some(2));
        assert_eq!(request.write_consistency_factor, Some(2));
        let Some(vectors_config::Config::ParamsMap(map)) =
            request.vectors_config.and_then(|v| v.config)
        else {
            panic!("named vectors expected");
        };
        assert_eq!(map.map[DENSE].size, 4);
        assert_eq!(map.map[DENSE].distance, Distance::Cosine as i32);
        let Some(quantization_config::Quantization::Scalar(scalar)) = map.map[DENSE]
            .quantization_config
            .and_then(|q| q.quantization)
        else {
            panic!("scalar quantization expected");
        };
        assert_eq!(scalar.r#type, QuantizationType::Int8 as i32);
        let sparse = request.sparse_vectors_config.unwrap();
        assert_eq!(sparse.map[SPARSE].modifier, Some(Modifier::Idf as i32));
        assert!(request.metadata.contains_key(METADATA_KEY));
    }

    #[test]
    fn servers_older_than_1_17_are_refused() {
        assert!(version_supported("1.17.0"));
        assert!(version_supported("v1.18.2-dev"));
        assert!(version_supported("2.0.0"));
        assert!(!version_supported("1.16.3"));
        assert!(!version_supported("1.9.0"));
        assert!(version_supported("unknown"));
    }

    #[test]
    fn point_ids_round_trip() {
        let id = ChunkId::derive(&DocumentId::new("a.md"), "h", 3);
        assert_eq!(chunk_id(Some(&point_id(id))).unwrap(), id);
        let numeric = PointId {
            point_id_options: Some(PointIdOptions::Num(7)),
        };
        assert!(matches!(
            chunk_id(Some(&numeric)),
            Err(Error::Internal { .. })
        ));
    }

    #[test]
    fn an_unreachable_server_names_the_url_and_fails_as_unavailable() {
        // Port 9 (discard) on localhost: nothing listens, so the connection is refused.
        let message = unavailable_message("http://127.0.0.1:9");
        assert!(message.contains("http://127.0.0.1:9"), "{message}");
        assert!(message.contains("store.qdrant.url"), "{message}");
    }

    #[test]
    fn every_listed_node_is_tried_and_named() {
        let urls = " http://127.0.0.1:9 , http://127.0.0.1:7,";
        let options = QdrantOptions::new(urls, "docent_none");
        assert_eq!(options.urls(), ["http://127.0.0.1:9", "http://127.0.0.1:7"]);
        let message = unavailable_message(urls);
        assert!(message.contains("http://127.0.0.1:9 ("), "{message}");
        assert!(message.contains("http://127.0.0.1:7 ("), "{message}");
        assert!(matches!(
            QdrantStore::open(QdrantOptions::new(" , ", "docent_none"), spec()),
            Err(Error::InvalidInput(_))
        ));
    }

    /// The message of opening a store on `url`, where nothing listens,
    /// which must fail as unavailable.
    fn unavailable_message(url: &str) -> String {
        let mut options = QdrantOptions::new(url, "docent_none");
        options.connect_timeout = Duration::from_millis(500);
        options.request_timeout = Duration::from_secs(2);
        match QdrantStore::open(options, spec()) {
            Err(Error::Unavailable { message, .. }) => message,
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("opened a store with no server"),
        }
    }

    #[test]
    fn a_malformed_url_is_invalid_input() {
        let options = QdrantOptions::new("not a url", "docent_none");
        assert!(matches!(
            QdrantStore::open(options, spec()),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn transient_errors_are_retried_and_others_are_not() {
        let unavailable = QdrantError::ResponseError {
            status: tonic::Status::unavailable("node down"),
        };
        let invalid = QdrantError::ResponseError {
            status: tonic::Status::invalid_argument("bad"),
        };
        assert!(is_transient(&unavailable));
        assert!(!is_transient(&invalid));
        assert!(node_failed(&unavailable));
        assert!(!node_failed(&invalid));
        // What qdrant-client makes of a refused connection.
        assert!(node_failed(&QdrantError::ResponseError {
            status: tonic::Status::internal("Failed to connect to http://q:6334/: refused"),
        }));
        assert!(!node_failed(&QdrantError::ResponseError {
            status: tonic::Status::internal("Missing request message."),
        }));
        let options = QdrantOptions::new("http://q:6334", "c");
        let failure = |error| Failure {
            url: "http://q:6334".into(),
            others: vec!["http://p:6334 (Unavailable: refused)".into()],
            error,
        };
        match classify(&options, "upsert", failure(unavailable), true) {
            Error::Unavailable { message, .. } => {
                assert!(message.contains("http://q:6334") && message.contains("after retries"));
                assert!(message.contains("http://p:6334"), "{message}");
            }
            e => panic!("wrong error: {e}"),
        }
        assert!(matches!(
            classify(&options, "search", failure(invalid), false),
            Error::Internal { .. }
        ));
    }
}
