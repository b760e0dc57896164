//! The reads every backend runs, decided once. [`SearchPlan::new`] turns a
//! [`SearchRequest`] and the collection's spec into what is scored (the
//! mode's ranked lists, their length and HNSW beam, how they are fused), the
//! filter, and how a hit's similarity is computed. Each backend only converts
//! the plan into its own query types and its hits back, the way qdrant keeps
//! its API conversions in a layer of their own, so the embedded and the
//! server backend cannot drift apart in what a request means. The filters
//! of the other reads (a document's chunks, some of its ordinals) and how
//! their pages are read are here for the same reason.

use crate::bm25::Bm25;
use crate::payload::folder_key;
use crate::{DENSE, SPARSE};
use docent_core::{
    Chunk, CollectionSpec, DocumentId, Error, Fusion, Result, ScoredChunk, SearchFilter,
    SearchMode, SearchRequest, SparseVector,
};

/// A search, backend-neutral.
pub(crate) struct SearchPlan<'a> {
    pub scoring: Scoring<'a>,
    /// Conditions every hit meets (all of them); empty when unfiltered.
    pub conditions: Vec<Condition>,
    /// Hits to return at most.
    pub limit: usize,
    /// The dense query, checked against the collection's dimension.
    query: &'a [f32],
    /// Its length, floored so a zero vector divides safely.
    norm: f32,
}

/// What ranks the hits.
pub(crate) enum Scoring<'a> {
    /// One list, returned as it ranks (dense or keyword mode).
    Single(Nearest<'a>),
    /// Hybrid mode: the dense and the keyword list, in that order, each
    /// `list_len` long, fused into one ranking.
    Fused {
        lists: [Nearest<'a>; 2],
        list_len: usize,
        fusion: FusionPlan,
    },
}

/// One ranked list: the nearest neighbours of a query vector.
pub(crate) struct Nearest<'a> {
    pub query: QueryVector<'a>,
    /// HNSW beam; `None` leaves the store's default (always for keywords).
    pub beam: Option<usize>,
}

pub(crate) enum QueryVector<'a> {
    Dense(&'a [f32]),
    /// BM25 terms of the query's text.
    Sparse(SparseVector),
}

impl QueryVector<'_> {
    /// Name of the stored vector the query is scored against.
    pub fn name(&self) -> &'static str {
        match self {
            QueryVector::Dense(_) => DENSE,
            QueryVector::Sparse(_) => SPARSE,
        }
    }
}

/// How the two lists of a hybrid search become one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum FusionPlan {
    /// Reciprocal rank fusion; `k` is at least 1, and the weights follow the
    /// order of the lists (dense, keyword).
    Rrf { k: u32, weights: [f32; 2] },
    /// Distribution-based score fusion.
    Dbsf,
}

/// One filter condition on a payload field.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Condition {
    /// The field holds the value (for an array field, one element does).
    Match { field: String, value: MatchValue },
    /// An integer field within inclusive bounds.
    Range {
        field: &'static str,
        gte: Option<u64>,
        lte: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum MatchValue {
    Keyword(String),
    /// Any one of these keywords.
    AnyKeyword(Vec<String>),
    /// Any one of these integers.
    AnyInteger(Vec<i64>),
}

impl<'a> SearchPlan<'a> {
    /// Plans `request` against a collection built with `spec`; a query vector
    /// of another dimension is invalid input.
    pub fn new(request: &'a SearchRequest, spec: &CollectionSpec, bm25: &Bm25) -> Result<Self> {
        if request.vector.len() != spec.dimension {
            return Err(Error::InvalidInput(format!(
                "query vector has {} dimensions; the collection has {}",
                request.vector.len(),
                spec.dimension
            )));
        }
        // The HNSW beam is as wide as the dense list asked for. Without it
        // qdrant searches with its index-build width (100) whatever
        // `candidates` says, and the beam is what a search at scale pays for
        // (docs/benchmarks.md). Exact (unindexed) segments ignore it, and
        // `candidates: 0` leaves qdrant's default.
        let dense = || Nearest {
            query: QueryVector::Dense(&request.vector),
            beam: request.dense_beam(),
        };
        let keyword = || Nearest {
            query: QueryVector::Sparse(bm25.query(&request.text)),
            beam: None,
        };
        let scoring = match request.mode {
            SearchMode::Dense => Scoring::Single(dense()),
            SearchMode::Keyword => Scoring::Single(keyword()),
            SearchMode::Hybrid => Scoring::Fused {
                lists: [dense(), keyword()],
                list_len: request.list_len(),
                fusion: match request.fusion {
                    Fusion::Rrf {
                        k,
                        dense_weight,
                        keyword_weight,
                    } => FusionPlan::Rrf {
                        k: k.max(1),
                        weights: [dense_weight, keyword_weight],
                    },
                    Fusion::Dbsf => FusionPlan::Dbsf,
                },
            },
        };
        let norm = request
            .vector
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt()
            .max(1e-12);
        Ok(SearchPlan {
            scoring,
            conditions: filter_conditions(&request.filter),
            limit: request.top_k,
            query: &request.vector,
            norm,
        })
    }

    /// The conditions, or `None` when the search is unfiltered.
    pub fn filter(&self) -> Option<&[Condition]> {
        (!self.conditions.is_empty()).then_some(self.conditions.as_slice())
    }

    /// A hit as docent reports it, with `stored`, the hit's dense vector
    /// (empty when the backend returned none), setting its similarity.
    pub fn hit(&self, chunk: Chunk, score: f32, stored: &[f32]) -> ScoredChunk {
        ScoredChunk {
            chunk,
            score,
            similarity: self.similarity(stored),
            rerank_score: None,
        }
    }

    /// Cosine similarity of a stored vector to the query, whatever the mode:
    /// stored cosine vectors are unit length (both engines normalise them),
    /// so their dot product with the normalised query is the cosine.
    fn similarity(&self, stored: &[f32]) -> f32 {
        stored
            .iter()
            .zip(self.query)
            .map(|(a, b)| a * b)
            .sum::<f32>()
            / self.norm
    }
}

fn field_match(field: impl Into<String>, value: MatchValue) -> Condition {
    Condition::Match {
        field: field.into(),
        value,
    }
}

/// A docent filter as conditions, in a fixed order.
pub(crate) fn filter_conditions(filter: &SearchFilter) -> Vec<Condition> {
    let mut all = Vec::new();
    if !filter.document_ids.is_empty() {
        let ids = filter.document_ids.iter().map(|d| d.0.clone()).collect();
        all.push(field_match("document_id", MatchValue::AnyKeyword(ids)));
    }
    if let Some(source) = &filter.source {
        all.push(field_match("source", MatchValue::Keyword(source.clone())));
    }
    if let Some(prefix) = &filter.source_prefix {
        all.push(field_match(
            "source_prefixes",
            MatchValue::Keyword(folder_key(prefix)),
        ));
    }
    if !filter.tags.is_empty() {
        all.push(field_match(
            "tags",
            MatchValue::AnyKeyword(filter.tags.clone()),
        ));
    }
    for (k, v) in &filter.metadata {
        all.push(field_match(meta_path(k), MatchValue::Keyword(v.clone())));
    }
    if filter.modified_after.is_some() || filter.modified_before.is_some() {
        all.push(Condition::Range {
            field: "modified",
            gte: filter.modified_after,
            lte: filter.modified_before,
        });
    }
    all
}

/// The payload path of metadata key `key`: `meta.key`, with the key quoted
/// when it holds anything but letters, digits, `_` and `-` (unquoted, a
/// space made the path unparsable and a dot made it a nested path, so such
/// keys never matched). Qdrant's path syntax cannot quote `"` or `\`, so a key
/// holding one cannot be addressed.
fn meta_path(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        format!("meta.{key}")
    } else {
        format!("meta.\"{key}\"")
    }
}

/// Every chunk of one document.
pub(crate) fn document_conditions(document: &DocumentId) -> Vec<Condition> {
    vec![field_match(
        "document_id",
        MatchValue::Keyword(document.0.clone()),
    )]
}

/// The chunks of one document at these ordinals.
pub(crate) fn ordinal_conditions(document: &DocumentId, ordinals: &[usize]) -> Vec<Condition> {
    let wanted = ordinals.iter().map(|&o| o as i64).collect();
    let mut all = document_conditions(document);
    all.push(field_match("ordinal", MatchValue::AnyInteger(wanted)));
    all
}

/// Chunk ids read per page when listing a document's chunks.
pub(crate) const ID_PAGE: usize = 1024;

/// Every item of a paged read, in order: `page` reads the page starting at
/// its argument (`None` for the first) and says where the next one starts.
pub(crate) fn read_pages<T, O>(
    mut page: impl FnMut(Option<O>) -> Result<(Vec<T>, Option<O>)>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let mut from = None;
    loop {
        let (items, next) = page(from)?;
        out.extend(items);
        match next {
            Some(next) => from = Some(next),
            None => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CollectionSpec {
        crate::test_spec(2)
    }

    fn request(mode: SearchMode) -> SearchRequest {
        SearchRequest {
            vector: vec![3.0, 4.0],
            text: "pelicans fly".into(),
            mode,
            candidates: 20,
            top_k: 5,
            ..Default::default()
        }
    }

    #[test]
    fn a_query_vector_of_another_dimension_is_invalid_input() {
        let bm25 = Bm25::new().unwrap();
        let wrong = SearchRequest {
            vector: vec![1.0; 3],
            ..request(SearchMode::Dense)
        };
        assert!(matches!(
            SearchPlan::new(&wrong, &spec(), &bm25),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn hybrid_fuses_the_dense_list_then_the_keyword_list_with_their_weights() {
        let bm25 = Bm25::new().unwrap();
        let request = SearchRequest {
            fusion: Fusion::Rrf {
                k: 0,
                dense_weight: 2.0,
                keyword_weight: 0.5,
            },
            ..request(SearchMode::Hybrid)
        };
        let plan = SearchPlan::new(&request, &spec(), &bm25).unwrap();
        let Scoring::Fused {
            lists: [dense, keyword],
            list_len,
            fusion,
        } = &plan.scoring
        else {
            panic!("hybrid fuses two lists");
        };
        assert_eq!(*list_len, 20);
        assert_eq!(
            *fusion,
            FusionPlan::Rrf {
                k: 1,
                weights: [2.0, 0.5]
            }
        );
        assert_eq!((dense.query.name(), dense.beam), (DENSE, Some(20)));
        assert_eq!((keyword.query.name(), keyword.beam), (SPARSE, None));
        assert_eq!(plan.limit, 5);
    }

    #[test]
    fn no_candidates_leaves_the_default_beam() {
        let bm25 = Bm25::new().unwrap();
        let request = SearchRequest {
            candidates: 0,
            ..request(SearchMode::Dense)
        };
        let plan = SearchPlan::new(&request, &spec(), &bm25).unwrap();
        assert!(matches!(
            plan.scoring,
            Scoring::Single(Nearest { beam: None, .. })
        ));
    }

    #[test]
    fn similarity_is_the_cosine_and_zero_without_a_stored_vector() {
        let bm25 = Bm25::new().unwrap();
        let request = request(SearchMode::Keyword);
        let plan = SearchPlan::new(&request, &spec(), &bm25).unwrap();
        let hit = plan.hit(Chunk::default(), 7.0, &[0.6, 0.8]);
        assert!((hit.similarity - 1.0).abs() < 1e-6, "{}", hit.similarity);
        assert_eq!(hit.score, 7.0);
        assert_eq!(plan.hit(Chunk::default(), 7.0, &[]).similarity, 0.0);
    }

    #[test]
    fn paged_reads_follow_the_offsets_to_the_last_page() {
        let mut asked = Vec::new();
        let all = read_pages(|from: Option<&str>| {
            asked.push(from);
            Ok(match from {
                None => (vec![1, 2], Some("b")),
                Some("b") => (vec![3], Some("c")),
                _ => (vec![], None),
            })
        })
        .unwrap();
        assert_eq!(all, [1, 2, 3]);
        assert_eq!(asked, [None, Some("b"), Some("c")]);
    }

    #[test]
    fn an_empty_filter_has_no_conditions_and_a_full_one_keeps_its_order() {
        assert!(filter_conditions(&SearchFilter::default()).is_empty());
        let filter = SearchFilter {
            document_ids: vec![DocumentId::new("a.md")],
            source: Some("a.md".into()),
            source_prefix: Some("docs".into()),
            tags: vec!["t".into()],
            metadata: [("team".to_string(), "ops".to_string())].into(),
            modified_after: Some(1),
            modified_before: None,
        };
        let fields: Vec<String> = filter_conditions(&filter)
            .into_iter()
            .map(|c| match c {
                Condition::Match { field, .. } => field,
                Condition::Range { field, .. } => field.to_string(),
            })
            .collect();
        assert_eq!(
            fields,
            [
                "document_id",
                "source",
                "source_prefixes",
                "tags",
                "meta.team",
                "modified"
            ]
        );
        assert_eq!(
            filter_conditions(&filter)[2],
            field_match("source_prefixes", MatchValue::Keyword("docs/".into()))
        );
    }
}
