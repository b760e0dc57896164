//! The embedded backend on qdrant-edge.

use crate::bm25::Bm25;
use crate::payload::{INTEGER_FIELDS, KEYWORD_FIELDS, folder_key, from_payload, to_payload};
use crate::{DENSE, SPARSE};
use docent_core::{
    Chunk, ChunkId, CollectionSpec, DocumentId, EmbeddedChunk, Error, Fusion, Result, ScoredChunk,
    SearchFilter, SearchMode, SearchRequest, StoredPoint, VectorStore,
};
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    Condition, CountRequest, CreateIndex, Distance, EdgeConfig, EdgeShard, EdgeSparseVectorParams,
    EdgeVectorParams, FieldCondition, FieldIndexOperations, Filter, Fusion as EdgeFusion, JsonPath,
    Match, Modifier, NamedQuery, OperationError, PayloadFieldSchema, PayloadSchemaType, PointId,
    PointInsertOperations, PointOperations, PointStruct, Prefetch, QuantizationConfig, QueryEnum,
    QueryRequest, Range, ScalarQuantizationConfig, ScalarType, ScoringQuery, ScrollRequest,
    SearchParams, SparseVector as EdgeSparse, UpdateOperation, Vector, VectorInternal,
    VectorStructInternal, Vectors, WithPayloadInterface, WithVector,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// File beside the shard recording what the collection was built with.
const SPEC_FILE: &str = "docent_collection.json";

/// A collection stored in-process with qdrant-edge.
pub struct EdgeStore {
    shard: EdgeShard,
    spec: CollectionSpec,
    bm25: Bm25,
    /// Serialises writes and flushes: qdrant-edge's `flush` panics when it
    /// meets a concurrent writer, so every mutation goes through this lock.
    writes: Mutex<()>,
    path: PathBuf,
}

fn storage_error(what: &str, e: OperationError) -> Error {
    Error::internal(format!("vector store: {what}"), e)
}

fn key(field: &str) -> JsonPath {
    field
        .parse()
        .unwrap_or_else(|_| panic!("{field} is a valid payload key"))
}

fn read_spec(spec_path: &Path) -> Result<CollectionSpec> {
    let text = std::fs::read_to_string(spec_path)
        .map_err(|e| Error::unavailable(format!("cannot read {}", spec_path.display()), e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::unavailable(format!("corrupt {}", spec_path.display()), e))
}

impl EdgeStore {
    /// Opens an existing collection with the spec it records, whatever the
    /// running configuration says (for copying it elsewhere).
    pub fn open_existing(dir: &Path) -> Result<Self> {
        let spec_path = dir.join(SPEC_FILE);
        if !spec_path.exists() {
            return Err(Error::NotFound(format!(
                "no embedded collection at {} (it has no {SPEC_FILE}); check --data-dir and --collection",
                dir.display()
            )));
        }
        let spec = read_spec(&spec_path)?;
        Self::open(dir, spec)
    }

    /// Opens the collection at `dir`, creating it when empty. Refuses a
    /// collection built with a different spec, and one held by another process.
    pub fn open(dir: &Path, spec: CollectionSpec) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::unavailable(format!("cannot create {}", dir.display()), e))?;
        let spec_path = dir.join(SPEC_FILE);
        if spec_path.exists() {
            let found = read_spec(&spec_path)?;
            if let Some(diff) = spec.mismatch(&found) {
                return Err(Error::Incompatible(format!("it was built with {diff}")));
            }
        }
        let exists = dir.join("edge_config.json").exists();
        let shard = if exists {
            EdgeShard::load(dir, None)
        } else {
            // Indexed segments also keep the int8 copy ([`INT8_QUANTILE`]):
            // HNSW scores with it (a quarter of the bytes, integer SIMD).
            // `docent bench http` measured it (docs/benchmarks.md).
            let config = EdgeConfig::builder()
                .vector(
                    DENSE,
                    EdgeVectorParams::builder(spec.dimension, Distance::Cosine)
                        .quantization_config(QuantizationConfig::from(ScalarQuantizationConfig {
                            r#type: ScalarType::Int8,
                            quantile: Some(crate::INT8_QUANTILE),
                            always_ram: Some(true),
                        }))
                        .build(),
                )
                .sparse_vector(SPARSE, EdgeSparseVectorParams::builder().modifier(Modifier::Idf).build())
                .on_disk_payload(true)
                .build();
            EdgeShard::new(dir, config)
        }
        .map_err(|e| {
            let text = e.to_string();
            if text.contains("WAL") || text.contains("lock") {
                Error::Unavailable {
                    message: format!(
                        "the collection at {} is in use by another docent process ({text}); stop it and try again",
                        dir.display()
                    ),
                    source: None,
                }
            } else {
                storage_error("cannot open the shard", e)
            }
        })?;
        if !spec_path.exists() {
            let tmp = dir.join(format!("{SPEC_FILE}.tmp"));
            let text = serde_json::to_string_pretty(&spec).expect("spec serialises");
            std::fs::write(&tmp, text)
                .and_then(|_| std::fs::rename(&tmp, &spec_path))
                .map_err(|e| {
                    Error::unavailable(format!("cannot write {}", spec_path.display()), e)
                })?;
        }
        let bm25 = Bm25::new()?;
        let store = EdgeStore {
            shard,
            spec,
            bm25,
            writes: Mutex::new(()),
            path: dir.to_path_buf(),
        };
        let indexes = KEYWORD_FIELDS
            .iter()
            .map(|f| (f, PayloadSchemaType::Keyword))
            .chain(
                INTEGER_FIELDS
                    .iter()
                    .map(|f| (f, PayloadSchemaType::Integer)),
            );
        for (field, kind) in indexes {
            store.update(
                UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(
                    CreateIndex {
                        field_name: key(field),
                        field_schema: Some(PayloadFieldSchema::FieldType(kind)),
                    },
                )),
                "cannot create a payload index",
            )?;
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn update(&self, op: UpdateOperation, what: &str) -> Result<()> {
        let _guard = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        self.shard.update(op).map_err(|e| storage_error(what, e))
    }

    /// Upserts (id, dense, sparse, payload) tuples after checking dimensions.
    fn write_points(
        &self,
        points: Vec<(ChunkId, Vec<f32>, docent_core::SparseVector, Value)>,
    ) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(points.len());
        for (id, dense, sparse, payload) in points {
            if dense.len() != self.spec.dimension {
                return Err(Error::InvalidInput(format!(
                    "vector of chunk {id} has {} dimensions; the collection has {}",
                    dense.len(),
                    self.spec.dimension
                )));
            }
            let sparse = EdgeSparse {
                indices: sparse.indices,
                values: sparse.values,
            };
            let vectors = Vectors::new_named([
                (DENSE, Vector::new_dense(dense)),
                (SPARSE, Vector::from(sparse)),
            ]);
            out.push(PointStruct::new(point_id(id), vectors, payload).into());
        }
        self.update(
            UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                PointInsertOperations::PointsList(out),
            )),
            "upsert failed",
        )
    }

    /// Translates a docent filter into a store filter, evaluated inside the query.
    fn filter(filter: &SearchFilter) -> Option<Filter> {
        let keyword =
            |field: &str, m: Match| Condition::Field(FieldCondition::new_match(key(field), m));
        let mut must = Vec::new();
        if !filter.document_ids.is_empty() {
            let ids: Vec<String> = filter.document_ids.iter().map(|d| d.0.clone()).collect();
            must.push(keyword("document_id", Match::from(ids)));
        }
        if let Some(source) = &filter.source {
            must.push(keyword("source", Match::from(source.clone())));
        }
        if let Some(prefix) = &filter.source_prefix {
            must.push(keyword("source_prefixes", Match::from(folder_key(prefix))));
        }
        if !filter.tags.is_empty() {
            must.push(keyword("tags", Match::from(filter.tags.clone())));
        }
        for (k, v) in &filter.metadata {
            // Metadata keys are free-form; an unusable key matches nothing.
            match format!("meta.{k}").parse::<JsonPath>() {
                Ok(path) => must.push(Condition::Field(FieldCondition::new_match(
                    path,
                    Match::from(v.clone()),
                ))),
                Err(_) => must.push(keyword("document_id", Match::from(Vec::<String>::new()))),
            }
        }
        if filter.modified_after.is_some() || filter.modified_before.is_some() {
            let bound = |v: Option<u64>| v.map(|v| OrderedFloat(v as f64));
            must.push(Condition::Field(FieldCondition::new_range(
                key("modified"),
                Range {
                    gte: bound(filter.modified_after),
                    lte: bound(filter.modified_before),
                    gt: None,
                    lt: None,
                },
            )));
        }
        (!must.is_empty()).then(|| Filter {
            must: Some(must),
            ..Default::default()
        })
    }

    fn document_filter(document: &DocumentId) -> Filter {
        Filter::new_must(Condition::Field(FieldCondition::new_match(
            key("document_id"),
            Match::from(document.0.clone()),
        )))
    }
}

fn point_id(id: ChunkId) -> PointId {
    PointId::Uuid(id.0)
}

fn chunk_id(id: &PointId) -> Result<ChunkId> {
    match id {
        PointId::Uuid(u) => Ok(ChunkId(*u)),
        PointId::NumId(n) => Err(Error::Internal {
            message: format!("unexpected numeric point id {n}"),
            source: None,
        }),
    }
}

impl VectorStore for EdgeStore {
    fn spec(&self) -> &CollectionSpec {
        &self.spec
    }

    fn upsert(&self, chunks: &[EmbeddedChunk]) -> Result<()> {
        let points = chunks
            .iter()
            .map(|c| {
                (
                    c.chunk.id,
                    c.vector.clone(),
                    self.bm25.document(&c.chunk.text),
                    to_payload(&c.chunk),
                )
            })
            .collect();
        self.write_points(points)
    }

    fn upsert_points(&self, points: &[StoredPoint]) -> Result<()> {
        let points = points
            .iter()
            .map(|p| {
                (
                    p.chunk.id,
                    p.vector.clone(),
                    p.sparse.clone(),
                    to_payload(&p.chunk),
                )
            })
            .collect();
        self.write_points(points)
    }

    fn scroll_points(
        &self,
        from: Option<ChunkId>,
        limit: usize,
    ) -> Result<(Vec<StoredPoint>, Option<ChunkId>)> {
        let (page, next) = self
            .shard
            .scroll(ScrollRequest {
                offset: from.map(point_id),
                limit: Some(limit.max(1)),
                filter: None,
                with_payload: Some(WithPayloadInterface::Bool(true)),
                with_vector: WithVector::Bool(true),
                order_by: None,
            })
            .map_err(|e| storage_error("scroll failed", e))?;
        let mut points = Vec::with_capacity(page.len());
        for record in page {
            let id = chunk_id(&record.id)?;
            let payload = record.payload.as_ref().ok_or_else(|| Error::Internal {
                message: format!("stored chunk {id} without payload"),
                source: None,
            })?;
            let chunk = from_payload(id, &payload.0)?;
            let (mut vector, mut sparse) = (Vec::new(), docent_core::SparseVector::default());
            if let Some(VectorStructInternal::Named(named)) = record.vector {
                for (name, v) in named {
                    match (name.as_str(), v) {
                        (DENSE, VectorInternal::Dense(d)) => vector = d,
                        (SPARSE, VectorInternal::Sparse(s)) => {
                            sparse = docent_core::SparseVector {
                                indices: s.indices,
                                values: s.values,
                            }
                        }
                        _ => {}
                    }
                }
            }
            if vector.len() != self.spec.dimension {
                return Err(Error::Internal {
                    message: format!(
                        "stored chunk {id} has no dense vector of the collection's dimension"
                    ),
                    source: None,
                });
            }
            points.push(StoredPoint {
                chunk,
                vector,
                sparse,
            });
        }
        Ok((points, next.as_ref().map(chunk_id).transpose()?))
    }

    fn delete_chunks(&self, ids: &[ChunkId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.iter().copied().map(point_id).collect();
        self.update(
            UpdateOperation::PointOperation(PointOperations::DeletePoints { ids }),
            "delete failed",
        )
    }

    fn delete_document(&self, document: &DocumentId) -> Result<()> {
        self.update(
            UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(
                Self::document_filter(document),
            )),
            "delete failed",
        )?;
        self.flush()
    }

    fn chunk_ids(&self, document: &DocumentId) -> Result<Vec<ChunkId>> {
        let mut out = Vec::new();
        let mut offset = None;
        loop {
            let (page, next) = self
                .shard
                .scroll(ScrollRequest {
                    offset,
                    limit: Some(1024),
                    filter: Some(Self::document_filter(document)),
                    with_payload: Some(WithPayloadInterface::Bool(false)),
                    with_vector: WithVector::Bool(false),
                    order_by: None,
                })
                .map_err(|e| storage_error("scroll failed", e))?;
            for record in &page {
                out.push(chunk_id(&record.id)?);
            }
            match next {
                Some(n) => offset = Some(n),
                None => break,
            }
        }
        Ok(out)
    }

    fn chunks_by_ordinal(&self, document: &DocumentId, ordinals: &[usize]) -> Result<Vec<Chunk>> {
        if ordinals.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<i64> = ordinals.iter().map(|&o| o as i64).collect();
        let filter = Filter {
            must: Some(vec![
                Condition::Field(FieldCondition::new_match(
                    key("document_id"),
                    Match::from(document.0.clone()),
                )),
                Condition::Field(FieldCondition::new_match(
                    key("ordinal"),
                    Match::from(wanted),
                )),
            ]),
            ..Default::default()
        };
        let (page, _) = self
            .shard
            .scroll(ScrollRequest {
                offset: None,
                limit: Some(ordinals.len()),
                filter: Some(filter),
                with_payload: Some(WithPayloadInterface::Bool(true)),
                with_vector: WithVector::Bool(false),
                order_by: None,
            })
            .map_err(|e| storage_error("scroll failed", e))?;
        page.iter()
            .map(|record| {
                let payload = record.payload.as_ref().ok_or_else(|| Error::Internal {
                    message: "stored chunk without payload".into(),
                    source: None,
                })?;
                from_payload(chunk_id(&record.id)?, &payload.0)
            })
            .collect()
    }

    fn search(&self, request: &SearchRequest) -> Result<Vec<ScoredChunk>> {
        if request.vector.len() != self.spec.dimension {
            return Err(Error::InvalidInput(format!(
                "query vector has {} dimensions; the collection has {}",
                request.vector.len(),
                self.spec.dimension
            )));
        }
        let query_terms = self.bm25.query(&request.text);
        let dense = || {
            ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::new(
                VectorInternal::from(request.vector.clone()),
                DENSE,
            )))
        };
        let keyword = || {
            ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::new(
                VectorInternal::from(EdgeSparse {
                    indices: query_terms.indices.clone(),
                    values: query_terms.values.clone(),
                }),
                SPARSE,
            )))
        };
        // The HNSW beam is as wide as the dense list asked for. Without it
        // qdrant searches with its index-build width (100) whatever
        // `candidates` says, and the beam is what a search at scale pays for
        // (docs/benchmarks.md). Exact (unindexed) segments ignore it, and
        // `candidates: 0` leaves qdrant's default.
        let dense_params = request.dense_beam().map(|beam| SearchParams {
            hnsw_ef: Some(beam),
            ..Default::default()
        });
        let (prefetches, query, params) = match request.mode {
            SearchMode::Dense => (vec![], dense(), dense_params),
            SearchMode::Keyword => (vec![], keyword(), None),
            SearchMode::Hybrid => {
                let limit = request.list_len();
                let side = |query, params| Prefetch {
                    prefetches: vec![],
                    query: Some(query),
                    limit,
                    params,
                    filter: None,
                    score_threshold: None,
                };
                let fusion = match request.fusion {
                    Fusion::Rrf {
                        k,
                        dense_weight,
                        keyword_weight,
                    } => EdgeFusion::Rrf {
                        k: k.max(1) as usize,
                        weights: Some(vec![
                            OrderedFloat(dense_weight),
                            OrderedFloat(keyword_weight),
                        ]),
                    },
                    Fusion::Dbsf => EdgeFusion::Dbsf,
                };
                (
                    vec![side(dense(), dense_params), side(keyword(), None)],
                    ScoringQuery::Fusion(fusion),
                    None,
                )
            }
        };
        let hits = self
            .shard
            .query(QueryRequest {
                prefetches,
                query: Some(query),
                filter: Self::filter(&request.filter),
                score_threshold: None,
                limit: request.top_k,
                offset: 0,
                params,
                with_vector: WithVector::Selector(vec![DENSE.to_string()]),
                with_payload: WithPayloadInterface::Bool(true),
            })
            .map_err(|e| storage_error("search failed", e))?;
        let norm = request
            .vector
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt()
            .max(1e-12);
        hits.into_iter()
            .map(|hit| {
                let payload = hit.payload.as_ref().ok_or_else(|| Error::Internal {
                    message: "search hit without payload".into(),
                    source: None,
                })?;
                // Stored cosine vectors are unit length, so the dot product
                // with the normalised query is the cosine similarity.
                let similarity = match &hit.vector {
                    Some(VectorStructInternal::Named(named)) => match named.get(DENSE) {
                        Some(VectorInternal::Dense(v)) => {
                            v.iter()
                                .zip(&request.vector)
                                .map(|(a, b)| a * b)
                                .sum::<f32>()
                                / norm
                        }
                        _ => 0.0,
                    },
                    Some(VectorStructInternal::Single(v)) => {
                        v.iter()
                            .zip(&request.vector)
                            .map(|(a, b)| a * b)
                            .sum::<f32>()
                            / norm
                    }
                    _ => 0.0,
                };
                Ok(ScoredChunk {
                    chunk: from_payload(chunk_id(&hit.id)?, &payload.0)?,
                    score: hit.score,
                    similarity,
                })
            })
            .collect()
    }

    fn count(&self) -> Result<usize> {
        self.shard
            .count(CountRequest {
                filter: None,
                exact: true,
            })
            .map_err(|e| storage_error("count failed", e))
    }

    /// Runs qdrant-edge's optimizers to completion. Without this, every
    /// point stays in appendable segments and each search scans them all.
    fn optimize(&self) -> Result<()> {
        let _guard = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        self.shard
            .optimize()
            .map(|_| ())
            .map_err(|e| storage_error("optimize failed", e))
    }

    fn flush(&self) -> Result<()> {
        let _guard = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        // qdrant-edge 0.7 reports flush failures by panicking; keep a bad disk
        // from taking the process down with it.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.shard.flush())).map_err(
            |_| Error::Internal {
                message: "vector store flush failed (see the log)".into(),
                source: None,
            },
        )
    }
}
