use docent_core::{
    Embedder, Fusion, Result, ScoredChunk, SearchFilter, SearchMode, SearchRequest, VectorStore,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

/// How passages are found and shaped (part of the `[query]` config section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrievalSettings {
    /// Dense, keyword or hybrid.
    pub mode: SearchMode,
    /// How hybrid search fuses the dense and keyword lists.
    pub fusion: Fusion,
    /// Candidates each side of a hybrid search contributes before fusion,
    /// and the width of the HNSW beam on indexed collections.
    pub candidates: usize,
    /// When no retrieved passage reaches this cosine similarity to the
    /// question, nothing is retrieved: the question is off-topic.
    pub score_floor: f32,
    /// Passages whose word overlap (Jaccard of word sets) with a better one is
    /// at least this are collapsed into it; 1.0 collapses exact copies only.
    pub duplicate_threshold: f32,
    /// Neighbouring chunks added on each side of a passage, so the model sees
    /// a continuous stretch of the document (0: none).
    pub neighbours: usize,
    /// Query embeddings remembered (by exact text) so a repeated question
    /// skips the model; 0 turns the cache off.
    pub query_cache: usize,
}

impl Default for RetrievalSettings {
    fn default() -> Self {
        RetrievalSettings {
            mode: SearchMode::Hybrid,
            fusion: Fusion::Dbsf,
            candidates: 100,
            score_floor: 0.2,
            duplicate_threshold: 0.9,
            neighbours: 0,
            query_cache: 4096,
        }
    }
}

/// Passages found for a question, with what finding them cost.
#[derive(Clone, Debug)]
pub struct Retrieval {
    pub passages: Vec<ScoredChunk>,
    pub embed_ms: f64,
    pub search_ms: f64,
}

/// Embeds a question, searches the store, and shapes the results.
pub struct Retriever {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn VectorStore>,
    settings: RetrievalSettings,
    cache: Option<quick_cache::sync::Cache<String, Vec<f32>>>,
}

impl Retriever {
    pub fn new(
        embedder: Arc<dyn Embedder>,
        store: Arc<dyn VectorStore>,
        settings: RetrievalSettings,
    ) -> Self {
        let cache =
            (settings.query_cache > 0).then(|| quick_cache::sync::Cache::new(settings.query_cache));
        Retriever {
            embedder,
            store,
            settings,
            cache,
        }
    }

    pub fn settings(&self) -> &RetrievalSettings {
        &self.settings
    }

    /// Blocking: call from a thread that may wait on the model. `mode`
    /// overrides the configured one.
    pub fn retrieve(
        &self,
        question: &str,
        top_k: usize,
        filter: &SearchFilter,
        mode: Option<SearchMode>,
    ) -> Result<Retrieval> {
        let t0 = Instant::now();
        let vector = self.embed_query(question)?;
        let embed_ms = ms(t0);
        let mut retrieval = self.retrieve_embedded(question, vector, top_k, filter, mode)?;
        retrieval.embed_ms = embed_ms;
        Ok(retrieval)
    }

    /// The question's vector, from the cache when it was asked before.
    pub fn embed_query(&self, question: &str) -> Result<Vec<f32>> {
        if let Some(vector) = self.cache.as_ref().and_then(|c| c.get(question)) {
            return Ok(vector);
        }
        let vector = self.embedder.embed(&[question.to_string()])?.remove(0);
        if let Some(cache) = &self.cache {
            cache.insert(question.to_string(), vector.clone());
        }
        Ok(vector)
    }

    /// Like [`Retriever::retrieve`], for a question already embedded (batch
    /// evaluation embeds all questions at once).
    pub fn retrieve_embedded(
        &self,
        question: &str,
        vector: Vec<f32>,
        top_k: usize,
        filter: &SearchFilter,
        mode: Option<SearchMode>,
    ) -> Result<Retrieval> {
        let s = &self.settings;
        let t1 = Instant::now();
        // Ask for extra hits so collapsed duplicates don't leave the list short.
        let fetch = if s.duplicate_threshold <= 1.0 {
            top_k + top_k.div_ceil(2)
        } else {
            top_k
        };
        let hits = self.store.search(&SearchRequest {
            vector,
            text: question.to_string(),
            mode: mode.unwrap_or(s.mode),
            fusion: s.fusion,
            candidates: s.candidates.max(fetch),
            top_k: fetch,
            filter: filter.clone(),
        })?;
        let mut passages = collapse_duplicates(hits, s.duplicate_threshold);
        // The floor is a gate on the question, not a cut per passage: keyword
        // matches can rank a passage high whose cosine similarity is modest,
        // so passages are kept in fused order as long as one of them shows
        // the question is on topic.
        if !passages.iter().any(|p| p.similarity >= s.score_floor) {
            passages.clear();
        }
        passages.truncate(top_k);
        if s.neighbours > 0 {
            passages = self.expand(passages)?;
        }
        Ok(Retrieval {
            passages,
            embed_ms: 0.0,
            search_ms: ms(t1),
        })
    }

    /// Widens each passage with its neighbouring chunks, merged into one span
    /// of the document (overlap between chunks removed).
    fn expand(&self, passages: Vec<ScoredChunk>) -> Result<Vec<ScoredChunk>> {
        let n = self.settings.neighbours;
        let mut out = Vec::with_capacity(passages.len());
        for mut passage in passages {
            let ordinal = passage.chunk.ordinal;
            let wanted: Vec<usize> = (ordinal.saturating_sub(n)..=ordinal + n)
                .filter(|&o| o != ordinal)
                .collect();
            let mut parts = self
                .store
                .chunks_by_ordinal(&passage.chunk.document_id, &wanted)?;
            parts.retain(|c| c.content_hash == passage.chunk.content_hash);
            parts.push(passage.chunk.clone());
            parts.sort_by_key(|c| c.start);
            let merged = merge_spans(&parts);
            let first = &parts[0];
            let last = &parts[parts.len() - 1];
            passage.chunk.start = first.start;
            passage.chunk.end = last.end.max(passage.chunk.end);
            passage.chunk.line_start = first.line_start;
            passage.chunk.line_end = last.line_end.max(passage.chunk.line_end);
            passage.chunk.text = merged;
            out.push(passage);
        }
        Ok(out)
    }
}

/// Joins chunks sorted by start into the text they cover, without repeating
/// the bytes where neighbours overlap. Chunks that don't touch are joined by
/// a blank line.
fn merge_spans(parts: &[docent_core::Chunk]) -> String {
    let mut text = String::new();
    let mut end = 0usize;
    for (i, c) in parts.iter().enumerate() {
        if i == 0 || c.start >= end {
            if i > 0 && c.start > end {
                text.push_str("\n\n");
            }
            text.push_str(&c.text);
        } else if c.end > end {
            let skip = end - c.start;
            // `skip` is a byte offset into `c.text`; chunk ends fall on char
            // boundaries of the same document, so this is one too.
            if let Some(rest) = c.text.get(skip..) {
                text.push_str(rest);
            }
        }
        end = end.max(c.end);
    }
    text
}

/// The distinct words of `text`, lowercased, as sorted 64-bit hashes (FNV-1a):
/// no allocation per word, and set intersection is a merge. (Hash sets of
/// strings cost about a millisecond per search here.)
fn words(text: &str) -> Vec<u64> {
    let mut out: Vec<u64> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.chars()
                .flat_map(char::to_lowercase)
                .fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
                    (h ^ c as u64).wrapping_mul(0x0000_0100_0000_01b3)
                })
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Size of the intersection of two sorted, deduplicated lists.
fn common(a: &[u64], b: &[u64]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

/// Drops passages that repeat a better-ranked one (word-set Jaccard at or
/// above `threshold`), keeping the order.
pub fn collapse_duplicates(hits: Vec<ScoredChunk>, threshold: f32) -> Vec<ScoredChunk> {
    if threshold > 1.0 {
        return hits;
    }
    let mut kept: Vec<(ScoredChunk, Vec<u64>)> = Vec::with_capacity(hits.len());
    for hit in hits {
        let set = words(&hit.chunk.text);
        let duplicate = kept.iter().any(|(k, kset)| {
            if k.chunk.text == hit.chunk.text {
                return true;
            }
            let inter = common(&set, kset) as f32;
            let union = (set.len() + kset.len()) as f32 - inter;
            union > 0.0 && inter / union >= threshold
        });
        if !duplicate {
            kept.push((hit, set));
        }
    }
    kept.into_iter().map(|(h, _)| h).collect()
}

pub(crate) fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use docent_core::{Chunk, DocumentId};

    fn hit(doc: &str, text: &str, score: f32) -> ScoredChunk {
        ScoredChunk {
            chunk: Chunk {
                document_id: DocumentId::new(doc),
                source: doc.into(),
                text: text.into(),
                ..Default::default()
            },
            score,
            similarity: score,
        }
    }

    #[test]
    fn near_duplicates_collapse_into_the_better_one() {
        let hits = vec![
            hit(
                "a",
                "Refunds are issued within 14 days of the request.",
                0.9,
            ),
            hit(
                "b",
                "Refunds are issued within 14 days of the request!",
                0.8,
            ),
            hit("c", "Enterprise costs 45 dollars per seat.", 0.7),
        ];
        let kept = collapse_duplicates(hits, 0.9);
        let docs: Vec<&str> = kept.iter().map(|h| h.chunk.source.as_str()).collect();
        assert_eq!(docs, ["a", "c"]);
    }

    #[test]
    fn word_sets_ignore_case_and_repeats() {
        let a = words("Rail travel, rail PASSES and travel");
        let b = words("rail passes; bus passes");
        assert_eq!(a.len(), 4);
        assert_eq!(b.len(), 3);
        assert_eq!(common(&a, &b), 2);
        // Jaccard 2 / 5 = 0.4: kept at 0.9, collapsed at 0.4.
        let hits = || {
            vec![
                hit("a", "Rail travel, rail PASSES and travel", 0.9),
                hit("b", "rail passes; bus passes", 0.8),
            ]
        };
        assert_eq!(collapse_duplicates(hits(), 0.9).len(), 2);
        assert_eq!(collapse_duplicates(hits(), 0.4).len(), 1);
    }

    #[test]
    fn spans_merge_without_repeating_overlap() {
        let doc = "one two three four five six";
        let part = |s: usize, e: usize| Chunk {
            start: s,
            end: e,
            text: doc[s..e].into(),
            ..Default::default()
        };
        assert_eq!(
            merge_spans(&[part(0, 13), part(8, 23)]),
            "one two three four five"
        );
        assert_eq!(merge_spans(&[part(0, 3), part(8, 13)]), "one\n\nthree");
    }
}
