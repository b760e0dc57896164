//! Retrieval: embed the question (with a cache), search the store in the
//! configured mode, gate off-topic questions, collapse near-duplicates, and
//! for answers widen each hit into a stretch of its document.

use docent_core::{
    Embedder, Fusion, Reranker, Result, ScoredChunk, SearchFilter, SearchMode, SearchRequest,
    VectorStore,
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

/// What retrieved passages are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Passages an answer is generated from: each hit is widened by
    /// `neighbours` into a stretch of its document.
    Answer,
    /// Ranked chunks as stored, for semantic search and evaluation.
    Search,
}

/// What to find for one question.
#[derive(Clone, Debug)]
pub struct Lookup {
    /// Passages (or chunks) to return.
    pub top_k: usize,
    pub filter: SearchFilter,
    /// Overrides the configured search mode.
    pub mode: Option<SearchMode>,
    pub purpose: Purpose,
    /// Whether the cross-encoder reorders the fused candidates (default:
    /// whenever a reranker is configured).
    pub rerank: Option<bool>,
}

impl Lookup {
    /// `top_k` results for `purpose`, everything else as configured.
    pub fn new(top_k: usize, purpose: Purpose) -> Self {
        Lookup {
            top_k,
            filter: SearchFilter::default(),
            mode: None,
            purpose,
            rerank: None,
        }
    }
}

/// Passages found for a question, with what finding them cost.
#[derive(Clone, Debug)]
pub struct Retrieval {
    pub passages: Vec<ScoredChunk>,
    pub embed_ms: f64,
    pub search_ms: f64,
    /// Time the cross-encoder took (0 when it did not run).
    pub rerank_ms: f64,
    /// The best cosine similarity of any fused candidate to the question,
    /// as the `score_floor` gate saw it (also when the gate emptied
    /// `passages`); `None` when the search found nothing.
    pub best_similarity: Option<f32>,
    /// The best cross-encoder score, when the reranker ran on any passage.
    pub best_rerank_score: Option<f32>,
}

/// Embeds a question, searches the store, reranks and shapes the results.
pub struct Retriever {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn VectorStore>,
    settings: RetrievalSettings,
    cache: Option<quick_cache::sync::Cache<String, Vec<f32>>>,
    reranker: Option<Reranking>,
}

/// The cross-encoder and how many fused candidates it reads.
struct Reranking {
    model: Arc<dyn Reranker>,
    candidates: usize,
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
            reranker: None,
        }
    }

    /// Reorders the best `candidates` fused hits of every search by a
    /// cross-encoder's scores, before neighbour widening.
    pub fn with_reranker(mut self, model: Arc<dyn Reranker>, candidates: usize) -> Self {
        self.reranker = Some(Reranking {
            model,
            candidates: candidates.max(1),
        });
        self
    }

    /// The reranker's model, when one is configured.
    pub fn reranker_model(&self) -> Option<&str> {
        self.reranker.as_ref().map(|r| r.model.model_id())
    }

    pub fn settings(&self) -> &RetrievalSettings {
        &self.settings
    }

    /// Blocking: call from a thread that may wait on the models.
    pub fn retrieve(&self, question: &str, lookup: &Lookup) -> Result<Retrieval> {
        let t0 = Instant::now();
        let vector = self.embed_query(question)?;
        let embed_ms = ms(t0);
        let mut retrieval = self.retrieve_embedded(question, vector, lookup)?;
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
        lookup: &Lookup,
    ) -> Result<Retrieval> {
        let s = &self.settings;
        let top_k = lookup.top_k;
        let widen = lookup.purpose == Purpose::Answer && s.neighbours > 0;
        let rerank = self
            .reranker
            .as_ref()
            .filter(|_| lookup.rerank.unwrap_or(true));
        let t1 = Instant::now();
        // Ask for extra hits so collapsed duplicates, and hits already shown
        // inside a neighbour's window, don't leave the list short.
        let mut fetch = if widen {
            2 * top_k
        } else if s.duplicate_threshold <= 1.0 {
            top_k + top_k.div_ceil(2)
        } else {
            top_k
        };
        if let Some(r) = rerank {
            fetch = fetch.max(r.candidates);
        }
        let hits = self.store.search(&SearchRequest {
            vector,
            text: question.to_string(),
            mode: lookup.mode.unwrap_or(s.mode),
            fusion: s.fusion,
            candidates: s.candidates.max(fetch),
            top_k: fetch,
            filter: lookup.filter.clone(),
        })?;
        let mut passages = collapse_duplicates(hits, s.duplicate_threshold);
        let best_similarity = passages.iter().map(|p| p.similarity).reduce(f32::max);
        // The floor is a gate on the question, not a cut per passage: keyword
        // matches can rank a passage high whose cosine similarity is modest,
        // so passages are kept in fused order as long as one of them shows
        // the question is on topic.
        if !passages.iter().any(|p| p.similarity >= s.score_floor) {
            passages.clear();
        }
        let search_ms = ms(t1);
        let t2 = Instant::now();
        if let Some(r) = rerank {
            passages = rerank_passages(r, question, passages)?;
        }
        let rerank_ms = if rerank.is_some() { ms(t2) } else { 0.0 };
        // Reranked passages are sorted by that score.
        let best_rerank_score = passages.first().and_then(|p| p.rerank_score);
        if widen {
            passages = self.expand(passages, top_k)?;
        } else {
            passages.truncate(top_k);
        }
        Ok(Retrieval {
            passages,
            embed_ms: 0.0,
            search_ms,
            rerank_ms,
            best_similarity,
            best_rerank_score,
        })
    }

    /// Widens passages, in rank order, with their neighbouring chunks into
    /// continuous stretches of their documents, until `top_k` stretches are
    /// kept. A hit already inside an earlier stretch adds nothing, and no
    /// chunk is shown twice: a stretch stops where an earlier one begins.
    /// (Stretches are not merged into longer ones: on a long document the
    /// hits of one section would snowball into a passage of thousands of
    /// tokens.)
    fn expand(&self, hits: Vec<ScoredChunk>, top_k: usize) -> Result<Vec<ScoredChunk>> {
        let n = self.settings.neighbours;
        let mut windows: Vec<Window> = Vec::with_capacity(top_k);
        for hit in hits {
            if windows.len() >= top_k {
                break;
            }
            let o = hit.chunk.ordinal;
            let shown = |x: usize| {
                windows
                    .iter()
                    .any(|w| same_version(&w.hit.chunk, &hit.chunk) && w.covers(x))
            };
            if shown(o) {
                continue;
            }
            let wanted: Vec<usize> = (o.saturating_sub(n)..=o + n)
                .filter(|&x| x != o && !shown(x))
                .collect();
            let parts = self
                .store
                .chunks_by_ordinal(&hit.chunk.document_id, &wanted)?;
            windows.push(window(hit, parts));
        }
        Ok(windows.into_iter().map(Window::into_passage).collect())
    }
}

/// The best `candidates` passages, scored by the cross-encoder and sorted
/// by its score (ties keep the fused order); the rest are dropped.
fn rerank_passages(
    reranking: &Reranking,
    question: &str,
    mut passages: Vec<ScoredChunk>,
) -> Result<Vec<ScoredChunk>> {
    passages.truncate(reranking.candidates);
    let texts: Vec<String> = passages.iter().map(|p| p.chunk.text.clone()).collect();
    let scores = reranking.model.rerank(question, &texts)?;
    for (passage, &score) in passages.iter_mut().zip(&scores) {
        passage.rerank_score = Some(score);
    }
    let order = blended_order(&scores, 0.0);
    let mut slots: Vec<Option<ScoredChunk>> = passages.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

/// The order of reranked candidates, given in fused order with their
/// cross-encoder scores: by `score − fused_weight · ln(fused rank)`, the
/// rank counted from 1 (ties keep the fused order). At weight 0, which
/// retrieval uses, the cross-encoder alone decides; a weight of 1 would let
/// the fused first place beat the second by ln 2 ≈ 0.69 logits. On the
/// SQuAD development set no weight ranked better than 0 (`docent eval
/// retrieval --rerank-blend`, docs/quality.md, session 16).
pub fn blended_order(scores: &[f32], fused_weight: f32) -> Vec<usize> {
    let key = |i: usize| scores[i] - fused_weight * ((i + 1) as f32).ln();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    order
}

/// A stretch of one document shown to the model: the best hit in it (its
/// rank and scores) and the chunks it spans, by ordinal.
#[derive(Debug)]
struct Window {
    hit: ScoredChunk,
    parts: Vec<docent_core::Chunk>,
}

/// Both chunks were cut from the same version of the same document.
fn same_version(a: &docent_core::Chunk, b: &docent_core::Chunk) -> bool {
    a.document_id == b.document_id && a.content_hash == b.content_hash
}

impl Window {
    fn first(&self) -> usize {
        self.parts[0].ordinal
    }

    fn last(&self) -> usize {
        self.parts[self.parts.len() - 1].ordinal
    }

    fn covers(&self, ordinal: usize) -> bool {
        (self.first()..=self.last()).contains(&ordinal)
    }

    fn into_passage(self) -> ScoredChunk {
        let mut passage = self.hit;
        let first = &self.parts[0];
        let last = &self.parts[self.parts.len() - 1];
        passage.chunk.start = first.start;
        passage.chunk.end = last.end;
        passage.chunk.line_start = first.line_start;
        passage.chunk.line_end = last.line_end;
        passage.chunk.page = first.page;
        passage.chunk.text = merge_spans(&self.parts);
        passage
    }
}

/// The window of a hit and the neighbours fetched for it: only the
/// run of consecutive ordinals around the hit counts (a neighbour from
/// another version of the document, or past a gap, is dropped).
fn window(hit: ScoredChunk, neighbours: Vec<docent_core::Chunk>) -> Window {
    let o = hit.chunk.ordinal;
    let mut parts: Vec<docent_core::Chunk> = neighbours
        .into_iter()
        .filter(|c| same_version(c, &hit.chunk) && c.ordinal != o)
        .collect();
    parts.push(hit.chunk.clone());
    parts.sort_by_key(|c| c.ordinal);
    let at = parts.iter().position(|c| c.ordinal == o).unwrap_or(0);
    let mut lo = at;
    while lo > 0 && parts[lo - 1].ordinal + 1 == parts[lo].ordinal {
        lo -= 1;
    }
    let mut hi = at;
    while hi + 1 < parts.len() && parts[hi].ordinal + 1 == parts[hi + 1].ordinal {
        hi += 1;
    }
    let run: Vec<docent_core::Chunk> = parts.drain(lo..=hi).collect();
    Window { hit, parts: run }
}

/// Joins chunks sorted by start into the text they cover, without repeating
/// the bytes where neighbours overlap, so that the result is as long as the
/// span `first.start..last.end`. The splitter trims whitespace, so a gap
/// between two chunks is whitespace: it is rebuilt from the line numbers,
/// newlines first and then spaces ("\n\n", "\n  "), which is exact for the
/// usual paragraph and list breaks.
fn merge_spans(parts: &[docent_core::Chunk]) -> String {
    let mut text = String::new();
    let mut end = 0usize;
    let mut end_line = 0usize;
    for (i, c) in parts.iter().enumerate() {
        if i == 0 || c.start >= end {
            if i > 0 && c.start > end {
                let gap = c.start - end;
                let newlines = c.line_start.saturating_sub(end_line).min(gap);
                text.extend(std::iter::repeat_n('\n', newlines));
                text.extend(std::iter::repeat_n(' ', gap - newlines));
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
        if i == 0 || c.end > end {
            end = c.end;
            end_line = c.line_end;
        }
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

    #[test]
    fn the_blend_lets_the_fused_rank_settle_near_ties_only() {
        // Fused order 0, 1, 2; the cross-encoder prefers 1 by 0.5 and 2 by 5.
        let scores = [1.0, 1.5, 6.0];
        assert_eq!(blended_order(&scores, 0.0), vec![2, 1, 0]);
        // ln 2 ≈ 0.69 > 0.5: the fused first place wins the near-tie.
        assert_eq!(blended_order(&scores, 1.0), vec![2, 0, 1]);
        // Only a large weight overturns a clear preference (6 − 5·ln 3 < 1).
        assert_eq!(blended_order(&scores, 5.0), vec![0, 2, 1]);
        assert_eq!(
            blended_order(&[2.0, 2.0], 0.0),
            vec![0, 1],
            "ties keep the fused order"
        );
        assert!(blended_order(&[], 1.0).is_empty());
    }
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
            rerank_score: None,
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

    /// Chunk `ordinal` of a document cut into 10-byte chunks with 2 bytes of
    /// overlap.
    fn piece(doc: &str, hash: &str, ordinal: usize) -> Chunk {
        let text: String = (0..10)
            .map(|i| char::from(b'a' + ((ordinal * 8 + i) % 26) as u8))
            .collect();
        Chunk {
            document_id: DocumentId::new(doc),
            source: doc.into(),
            content_hash: hash.into(),
            ordinal,
            start: ordinal * 8,
            end: ordinal * 8 + 10,
            line_start: ordinal + 1,
            line_end: ordinal + 1,
            text,
            ..Default::default()
        }
    }

    fn scored(c: Chunk, score: f32) -> ScoredChunk {
        ScoredChunk {
            chunk: c,
            score,
            similarity: score,
            rerank_score: None,
        }
    }

    #[test]
    fn a_window_keeps_only_the_consecutive_run_of_the_same_version() {
        // Neighbours 4 and 6 of hit 5; 6 is from an older version of the
        // document, so the window is 4..=5 and the run stops there.
        let p = window(
            scored(piece("d", "v2", 5), 0.9),
            vec![
                piece("d", "v2", 4),
                piece("d", "v1", 6),
                piece("d", "v2", 7),
            ],
        )
        .into_passage();
        assert_eq!((p.chunk.start, p.chunk.end), (32, 50));
        assert_eq!((p.chunk.line_start, p.chunk.line_end), (5, 6));
        // 18 bytes: chunk 4's ten, then chunk 5 without the two it shares.
        assert_eq!(p.chunk.text.len(), 18);
        assert_eq!(p.chunk.text[8..], piece("d", "v2", 5).text);
        assert_eq!(p.score, 0.9);
    }

    #[test]
    fn windows_stay_short_and_apart() {
        let mut windows = Vec::new();
        windows.push(window(
            scored(piece("d", "h", 3), 0.9),
            vec![piece("d", "h", 2), piece("d", "h", 4)],
        ));
        // Chunk 6 of d: `expand` asks only for neighbours no window covers
        // (5 and 7), so its stretch is 5..=7, after the first, not merged.
        windows.push(window(
            scored(piece("d", "h", 6), 0.7),
            vec![piece("d", "h", 5), piece("d", "h", 7)],
        ));
        assert_eq!(windows.len(), 2);
        assert_eq!((windows[0].first(), windows[0].last()), (2, 4));
        assert!(windows[0].covers(3) && !windows[0].covers(5));
        assert_eq!((windows[1].first(), windows[1].last()), (5, 7));
        let first = windows.remove(0).into_passage();
        assert_eq!(first.score, 0.9);
        assert_eq!(first.chunk.ordinal, 3);
        assert_eq!((first.chunk.start, first.chunk.end), (16, 42));
        assert_eq!(first.chunk.text.len(), 26);
        let second = windows.remove(0).into_passage();
        assert_eq!((second.chunk.start, second.chunk.end), (40, 66));
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
        // A gap is whitespace the splitter trimmed, rebuilt byte for byte.
        let doc = "alpha beta\n\n  gamma delta";
        let line = |s: usize, e: usize, line: usize| Chunk {
            start: s,
            end: e,
            line_start: line,
            line_end: line,
            text: doc[s..e].into(),
            ..Default::default()
        };
        let (a, b) = (line(0, 10, 1), line(14, 25, 3));
        assert_eq!(merge_spans(&[a, b]), doc);
    }
}
