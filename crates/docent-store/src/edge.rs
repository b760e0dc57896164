//! The embedded backend on qdrant-edge. The collection's layout, the search
//! plan and the BM25 vectors come from the shared modules; this file opens
//! the shard and converts between them and qdrant-edge's types.

use crate::bm25::Bm25;
use crate::layout::{self, INT8_ALWAYS_RAM, INT8_QUANTILE, IndexKind, Point};
use crate::payload::from_payload;
use crate::plan::{
    self, Condition as PlanCondition, FusionPlan, MatchValue, QueryVector, Scoring, SearchPlan,
};
use crate::{DENSE, SPARSE};
use docent_core::{
    Chunk, ChunkId, CollectionSpec, DocumentId, EmbeddedChunk, Error, Result, ScoredChunk,
    SearchRequest, StoredPoint, VectorStore,
};
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    Condition, CountRequest, CreateIndex, Distance, EdgeConfig, EdgeShard, EdgeSparseVectorParams,
    EdgeVectorParams, FieldCondition, FieldIndexOperations, Filter, Fusion as EdgeFusion, JsonPath,
    Match, Modifier, NamedQuery, OperationError, Payload, PayloadFieldSchema, PayloadSchemaType,
    PointId, PointInsertOperations, PointOperations, PointStruct, Prefetch, QuantizationConfig,
    QueryEnum, QueryRequest, Range, ScalarQuantizationConfig, ScalarType, ScoringQuery,
    ScrollRequest, SearchParams, SparseVector as EdgeSparse, UpdateOperation, Vector,
    VectorInternal, VectorStructInternal, Vectors, WithPayloadInterface, WithVector,
};
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
                            quantile: Some(INT8_QUANTILE),
                            always_ram: Some(INT8_ALWAYS_RAM),
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
        for (field, kind) in layout::payload_indexes() {
            let kind = match kind {
                IndexKind::Keyword => PayloadSchemaType::Keyword,
                IndexKind::Integer => PayloadSchemaType::Integer,
            };
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

    /// Upserts points the layout has checked.
    fn write_points(&self, points: Vec<Point>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let points = points
            .into_iter()
            .map(|p| {
                let sparse = EdgeSparse {
                    indices: p.sparse.indices,
                    values: p.sparse.values,
                };
                let vectors = Vectors::new_named([
                    (DENSE, Vector::new_dense(p.dense)),
                    (SPARSE, Vector::from(sparse)),
                ]);
                PointStruct::new(point_id(p.id), vectors, p.payload).into()
            })
            .collect();
        self.update(
            UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                PointInsertOperations::PointsList(points),
            )),
            "upsert failed",
        )
    }
}

/// Plan conditions as a store filter, evaluated inside the query.
fn filter(conditions: &[PlanCondition]) -> Filter {
    let must = conditions
        .iter()
        .map(|condition| match condition {
            PlanCondition::Match { field, value } => {
                let value = match value {
                    MatchValue::Keyword(k) => Match::from(k.clone()),
                    MatchValue::AnyKeyword(k) => Match::from(k.clone()),
                    MatchValue::AnyInteger(i) => Match::from(i.clone()),
                };
                // Metadata keys are free-form; an unusable key matches nothing.
                match field.parse::<JsonPath>() {
                    Ok(path) => Condition::Field(FieldCondition::new_match(path, value)),
                    Err(_) => Condition::Field(FieldCondition::new_match(
                        key("document_id"),
                        Match::from(Vec::<String>::new()),
                    )),
                }
            }
            PlanCondition::Range { field, gte, lte } => {
                let bound = |v: &Option<u64>| v.map(|v| OrderedFloat(v as f64));
                Condition::Field(FieldCondition::new_range(
                    key(field),
                    Range {
                        gte: bound(gte),
                        lte: bound(lte),
                        gt: None,
                        lt: None,
                    },
                ))
            }
        })
        .collect();
    Filter {
        must: Some(must),
        ..Default::default()
    }
}

/// The plan as a qdrant-edge query.
fn query_request(plan: &SearchPlan) -> QueryRequest {
    let (prefetches, query, params) = match &plan.scoring {
        Scoring::Single(list) => (vec![], nearest(&list.query), beam(list.beam)),
        Scoring::Fused {
            lists,
            list_len,
            fusion,
        } => {
            // The top-level filter reaches the prefetches in this engine.
            let prefetches = lists
                .iter()
                .map(|list| Prefetch {
                    prefetches: vec![],
                    query: Some(nearest(&list.query)),
                    limit: *list_len,
                    params: beam(list.beam),
                    filter: None,
                    score_threshold: None,
                })
                .collect();
            let fusion = match *fusion {
                FusionPlan::Rrf { k, weights } => EdgeFusion::Rrf {
                    k: k as usize,
                    weights: Some(weights.map(OrderedFloat).to_vec()),
                },
                FusionPlan::Dbsf => EdgeFusion::Dbsf,
            };
            (prefetches, ScoringQuery::Fusion(fusion), None)
        }
    };
    QueryRequest {
        prefetches,
        query: Some(query),
        filter: plan.filter().map(filter),
        score_threshold: None,
        limit: plan.limit,
        offset: 0,
        params,
        with_vector: WithVector::Selector(vec![DENSE.to_string()]),
        with_payload: WithPayloadInterface::Bool(true),
    }
}

fn nearest(query: &QueryVector) -> ScoringQuery {
    let vector = match query {
        QueryVector::Dense(v) => VectorInternal::from(v.to_vec()),
        QueryVector::Sparse(s) => VectorInternal::from(EdgeSparse {
            indices: s.indices.clone(),
            values: s.values.clone(),
        }),
    };
    ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::new(vector, query.name())))
}

fn beam(beam: Option<usize>) -> Option<SearchParams> {
    beam.map(|beam| SearchParams {
        hnsw_ef: Some(beam),
        ..Default::default()
    })
}

/// A hit's dense vector; empty when it came back without one.
fn dense_of(vector: &Option<VectorStructInternal>) -> &[f32] {
    match vector {
        Some(VectorStructInternal::Named(named)) => match named.get(DENSE) {
            Some(VectorInternal::Dense(v)) => v,
            _ => &[],
        },
        Some(VectorStructInternal::Single(v)) => v,
        _ => &[],
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

/// A record's payload; a record without one (`what` names it) is a bug.
fn payload_of(payload: &Option<Payload>, what: impl FnOnce() -> String) -> Result<&Payload> {
    payload.as_ref().ok_or_else(|| Error::Internal {
        message: format!("{} without payload", what()),
        source: None,
    })
}

impl VectorStore for EdgeStore {
    fn spec(&self) -> &CollectionSpec {
        &self.spec
    }

    fn upsert(&self, chunks: &[EmbeddedChunk]) -> Result<()> {
        self.write_points(layout::embedded_points(&self.spec, &self.bm25, chunks)?)
    }

    fn upsert_points(&self, points: &[StoredPoint]) -> Result<()> {
        self.write_points(layout::copied_points(&self.spec, points)?)
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
            let payload = payload_of(&record.payload, || format!("stored chunk {id}"))?;
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
            points.push(layout::stored_point(&self.spec, chunk, vector, sparse)?);
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
            UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(filter(
                &plan::document_conditions(document),
            ))),
            "delete failed",
        )?;
        self.flush()
    }

    fn chunk_ids(&self, document: &DocumentId) -> Result<Vec<ChunkId>> {
        plan::read_pages(|offset| {
            let (page, next) = self
                .shard
                .scroll(ScrollRequest {
                    offset,
                    limit: Some(plan::ID_PAGE),
                    filter: Some(filter(&plan::document_conditions(document))),
                    with_payload: Some(WithPayloadInterface::Bool(false)),
                    with_vector: WithVector::Bool(false),
                    order_by: None,
                })
                .map_err(|e| storage_error("scroll failed", e))?;
            let ids = page.iter().map(|record| chunk_id(&record.id));
            Ok((ids.collect::<Result<_>>()?, next))
        })
    }

    fn chunks_by_ordinal(&self, document: &DocumentId, ordinals: &[usize]) -> Result<Vec<Chunk>> {
        if ordinals.is_empty() {
            return Ok(Vec::new());
        }
        let (page, _) = self
            .shard
            .scroll(ScrollRequest {
                offset: None,
                limit: Some(ordinals.len()),
                filter: Some(filter(&plan::ordinal_conditions(document, ordinals))),
                with_payload: Some(WithPayloadInterface::Bool(true)),
                with_vector: WithVector::Bool(false),
                order_by: None,
            })
            .map_err(|e| storage_error("scroll failed", e))?;
        page.iter()
            .map(|record| {
                let payload = payload_of(&record.payload, || "stored chunk".into())?;
                from_payload(chunk_id(&record.id)?, &payload.0)
            })
            .collect()
    }

    fn search(&self, request: &SearchRequest) -> Result<Vec<ScoredChunk>> {
        let plan = SearchPlan::new(request, &self.spec, &self.bm25)?;
        let hits = self
            .shard
            .query(query_request(&plan))
            .map_err(|e| storage_error("search failed", e))?;
        hits.into_iter()
            .map(|hit| {
                let payload = payload_of(&hit.payload, || "search hit".into())?;
                let chunk = from_payload(chunk_id(&hit.id)?, &payload.0)?;
                Ok(plan.hit(chunk, hit.score, dense_of(&hit.vector)))
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
