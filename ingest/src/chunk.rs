//! Token-aware chunking with text-splitter, sized by the embedder's own tokenizer.

use docent_core::{ChunkSpan, Chunker, ExtractedDocument, TextKind};
use std::ops::Range;
use text_splitter::{ChunkConfig, ChunkSizer, MarkdownSplitter, TextSplitter};
use tokenizers::Tokenizer;

/// Longest stretch of text handed to the splitter at once. text-splitter
/// sizes candidate chunks that reach far past the one it is looking for
/// when a text has few break points, so a long text without paragraph or
/// line breaks took time quadratic in its length (a 4 MB line: a minute).
/// Longer texts are cut at paragraph, line, sentence or word boundaries
/// first; only the chunks at a cut differ (they lose their overlap there).
const SEGMENT_BYTES: usize = 16 * 1024;

/// Bytes (other than whitespace) a chunk may hold per token of its size.
/// A word longer than the tokenizer reads (WordPiece: 100 characters) is
/// one `[UNK]` token however long it is, so without a byte bound a 10 MB
/// "word" was one 10 MB chunk that every later step (reranking, prompt
/// budgeting) tokenizes again. Ordinary text has 4–6 bytes a token.
const MAX_BYTES_PER_TOKEN: usize = 16;

/// Sizes the candidate chunks of one segment: the embedder's token count,
/// but at least one token per [`MAX_BYTES_PER_TOKEN`] bytes that are not
/// whitespace.
///
/// text-splitter sizes many overlapping candidates per chunk, and
/// tokenizing each of them was the largest cost of ingestion after
/// embedding (docs/benchmarks.md, session 22). For a WordPiece tokenizer
/// behind BERT's normalizer and pre-tokenizer, which tokenize each
/// whitespace-separated word on its own, a candidate that begins and ends
/// next to whitespace (or at the segment's edges) holds exactly the tokens
/// of the whole segment's tokenization that lie inside it: those are
/// counted from one tokenization of the segment. Other candidates, and
/// other tokenizers, are tokenized on their own.
struct SegmentSizer<'a> {
    tokenizer: &'a Tokenizer,
    segment: &'a str,
    /// The byte offsets where the segment's tokens start and end, in
    /// order; `None` where candidates are tokenized on their own.
    tokens: Option<(Vec<usize>, Vec<usize>)>,
}

impl<'a> SegmentSizer<'a> {
    fn new(tokenizer: &'a Tokenizer, segment: &'a str, by_words: bool) -> Self {
        let tokens = by_words
            .then(|| tokenizer.encode(segment, false).ok())
            .flatten()
            .map(|e| e.get_offsets().iter().copied().unzip())
            .filter(|(starts, ends): &(Vec<usize>, Vec<usize>)| {
                starts.is_sorted() && ends.is_sorted()
            });
        SegmentSizer {
            tokenizer,
            segment,
            tokens,
        }
    }

    /// The tokens of `chunk` counted from the segment's tokenization, if
    /// `chunk` lies in the segment and begins and ends next to whitespace.
    fn counted(&self, chunk: &str) -> Option<usize> {
        let (starts, ends) = self.tokens.as_ref()?;
        let start = (chunk.as_ptr() as usize).checked_sub(self.segment.as_ptr() as usize)?;
        let end = start + chunk.len();
        let bytes = self.segment.as_bytes();
        if end > bytes.len() {
            return None;
        }
        let cut = |i: usize| {
            i == 0
                || i == bytes.len()
                || bytes[i - 1].is_ascii_whitespace()
                || bytes[i].is_ascii_whitespace()
        };
        if !(cut(start) && cut(end)) {
            return None;
        }
        let first = starts.partition_point(|&t| t < start);
        let last = ends.partition_point(|&t| t <= end);
        Some(last.saturating_sub(first))
    }
}

/// `text`'s tokens, tokenized on its own (a quarter of its bytes if the
/// tokenizer fails).
fn token_count(tokenizer: &Tokenizer, text: &str) -> usize {
    tokenizer
        .encode_fast(text, false)
        .map_or(text.len() / 4 + 1, |e| e.get_ids().len())
}

impl ChunkSizer for SegmentSizer<'_> {
    fn size(&self, chunk: &str) -> usize {
        let tokens = self
            .counted(chunk)
            .unwrap_or_else(|| token_count(self.tokenizer, chunk));
        let bytes = chunk.bytes().filter(|b| !b.is_ascii_whitespace()).count();
        tokens.max(bytes / MAX_BYTES_PER_TOKEN)
    }
}

/// Whether `tokenizer` tokenizes whitespace-separated words independently:
/// WordPiece behind BERT's pre-tokenizer, with BERT's normalizer or none.
fn tokenizes_by_words(tokenizer: &Tokenizer) -> bool {
    use tokenizers::models::ModelWrapper;
    use tokenizers::normalizers::NormalizerWrapper;
    use tokenizers::pre_tokenizers::PreTokenizerWrapper;
    matches!(tokenizer.get_model(), ModelWrapper::WordPiece(_))
        && matches!(
            tokenizer.get_pre_tokenizer(),
            Some(PreTokenizerWrapper::BertPreTokenizer(_))
        )
        && matches!(
            tokenizer.get_normalizer(),
            None | Some(NormalizerWrapper::BertNormalizer(_))
        )
}

/// Splits documents into chunks of at most `max_tokens` embedder tokens, with
/// `overlap_tokens` of overlap. Markdown goes through the Markdown splitter so
/// chunks follow headings, lists and code blocks; every chunk records its byte
/// range and, for Markdown, the heading path above it.
pub struct TokenChunker {
    tokenizer: Tokenizer,
    max_tokens: usize,
    overlap_tokens: usize,
    /// Whether candidates are counted from one tokenization per segment
    /// where that is exact ([`SegmentSizer`]).
    by_words: bool,
}

/// A chunker setting that text-splitter refuses (e.g. overlap ≥ size).
#[derive(Debug, thiserror::Error)]
#[error("invalid chunker settings: {0}")]
pub struct ChunkerConfigError(String);

impl TokenChunker {
    pub fn new(
        tokenizer: Tokenizer,
        max_tokens: usize,
        overlap_tokens: usize,
    ) -> Result<Self, ChunkerConfigError> {
        ChunkConfig::new(max_tokens)
            .with_overlap(overlap_tokens)
            .map_err(|e| ChunkerConfigError(e.to_string()))?;
        Ok(TokenChunker {
            by_words: tokenizes_by_words(&tokenizer),
            tokenizer,
            max_tokens,
            overlap_tokens,
        })
    }

    /// Sizes every candidate chunk by tokenizing it on its own: the
    /// reference the counted sizes are checked against (the chunks are the
    /// same, only slower to find).
    pub fn with_every_candidate_tokenized(mut self) -> Self {
        self.by_words = false;
        self
    }

    /// The chunks of one segment, as (offset in `part`, chunk).
    fn chunk_segment<'t>(&self, part: &'t str, kind: TextKind) -> Vec<(usize, &'t str)> {
        let sizer = SegmentSizer::new(&self.tokenizer, part, self.by_words);
        let config = ChunkConfig::new(self.max_tokens)
            .with_sizer(sizer)
            .with_overlap(self.overlap_tokens)
            .expect("the overlap was checked when the chunker was made");
        match kind {
            TextKind::Markdown => MarkdownSplitter::new(config).chunk_indices(part).collect(),
            TextKind::Plain => TextSplitter::new(config).chunk_indices(part).collect(),
        }
    }
}

impl Chunker for TokenChunker {
    fn chunk(&self, document: &ExtractedDocument) -> Vec<ChunkSpan> {
        let text = document.text.as_str();
        let mut spans: Vec<(usize, &str)> = Vec::new();
        for segment in segments(text, SEGMENT_BYTES) {
            let found = self.chunk_segment(&text[segment.clone()], document.kind);
            spans.extend(found.into_iter().map(|(i, c)| (segment.start + i, c)));
        }
        let headings = match document.kind {
            TextKind::Markdown => heading_positions(text),
            TextKind::Plain => Vec::new(),
        };
        spans
            .into_iter()
            .map(|(start, chunk)| ChunkSpan {
                start,
                end: start + chunk.len(),
                heading: heading_path_at(
                    &headings,
                    body_start(text, &headings, start, start + chunk.len()),
                ),
            })
            .collect()
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    fn overlap_tokens(&self) -> usize {
        self.overlap_tokens
    }

    fn count_tokens(&self, text: &str) -> usize {
        token_count(&self.tokenizer, text)
    }
}

/// `text` cut into consecutive ranges of at most `max` bytes, each ending
/// after a paragraph break, else a line break, else a sentence end, else a
/// space, found in the second half of its window (else at a character
/// boundary).
fn segments(text: &str, max: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while text.len() - start > max {
        let mut limit = start + max;
        while !text.is_char_boundary(limit) {
            limit -= 1;
        }
        let window = &text[start..limit];
        let half = window.len() / 2;
        let cut = ["\n\n", "\n", ". ", " "]
            .iter()
            .find_map(|sep| {
                window
                    .rfind(sep)
                    .filter(|&i| i >= half)
                    .map(|i| i + sep.len())
            })
            .unwrap_or(window.len());
        out.push(start..start + cut);
        start += cut;
    }
    if start < text.len() || out.is_empty() {
        out.push(start..text.len());
    }
    out
}

/// ATX headings with their byte offset and level, skipping fenced code.
fn heading_positions(text: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut in_fence = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
        } else if !in_fence {
            let level = trimmed.bytes().take_while(|&b| b == b'#').count();
            if (1..=6).contains(&level) && trimmed[level..].starts_with([' ', '\t']) {
                let title = trimmed[level..]
                    .trim()
                    .trim_end_matches('#')
                    .trim()
                    .to_string();
                if !title.is_empty() {
                    out.push((offset, level, title));
                }
            }
        }
        offset += line.len();
    }
    out
}

/// Where a chunk's body begins: past the heading lines (and blank lines) it
/// opens with, so a chunk starting `# Travel` / `## Rail` / text sits under
/// `Travel > Rail`. A chunk of headings only keeps its last one.
fn body_start(text: &str, headings: &[(usize, usize, String)], start: usize, end: usize) -> usize {
    let mut at = start;
    loop {
        let rest = &text[at..end];
        let skipped = rest.len() - rest.trim_start().len();
        let here = at + skipped;
        // The last heading starting at or before `here` (the line may be
        // indented before its `#`), if `here` is on that heading's line.
        let i = headings.partition_point(|(pos, _, _)| *pos <= here);
        let Some((pos, _, _)) = i
            .checked_sub(1)
            .map(|i| &headings[i])
            .filter(|(pos, _, _)| {
                here < *pos + text[*pos..].find('\n').unwrap_or(text.len() - *pos)
            })
        else {
            return here.min(end.saturating_sub(1)).max(start);
        };
        let line_end = text[*pos..].find('\n').map_or(text.len(), |n| *pos + n + 1);
        if line_end >= end {
            return (*pos).max(start);
        }
        at = line_end;
    }
}

/// The heading path (`Billing > Refunds`) in force at `offset`. A chunk that
/// starts with a heading is under that heading.
fn heading_path_at(headings: &[(usize, usize, String)], offset: usize) -> Option<String> {
    let mut stack: Vec<(usize, &str)> = Vec::new();
    for (pos, level, title) in headings {
        if *pos > offset {
            break;
        }
        while stack.last().is_some_and(|(l, _)| *l >= *level) {
            stack.pop();
        }
        stack.push((*level, title));
    }
    (!stack.is_empty()).then(|| {
        stack
            .iter()
            .map(|(_, t)| *t)
            .collect::<Vec<_>>()
            .join(" > ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heading_path_follows_levels_and_ignores_code() {
        let text = "# Billing\nintro\n## Refunds\nbody\n```\n# not a heading\n```\n## Invoices\nmore\n# Other\nx\n";
        let h = heading_positions(text);
        assert_eq!(h.len(), 4);
        let refunds_body = text.find("body").unwrap();
        assert_eq!(
            heading_path_at(&h, refunds_body).as_deref(),
            Some("Billing > Refunds")
        );
        let invoices = text.find("more").unwrap();
        assert_eq!(
            heading_path_at(&h, invoices).as_deref(),
            Some("Billing > Invoices")
        );
        assert_eq!(
            heading_path_at(&h, text.find("x\n").unwrap()).as_deref(),
            Some("Other")
        );
        assert_eq!(heading_path_at(&h, 0).as_deref(), Some("Billing"));
        // A chunk that opens with headings sits under the deepest of them.
        let stacked = "# Travel\n\n## Rail\n\nTickets are booked ahead.\n";
        let hs = heading_positions(stacked);
        let at = body_start(stacked, &hs, 0, stacked.len());
        assert_eq!(heading_path_at(&hs, at).as_deref(), Some("Travel > Rail"));
        // Only headings: the last one.
        let bare = "# A\n## B\n";
        let hb = heading_positions(bare);
        let at = body_start(bare, &hb, 0, bare.len());
        assert_eq!(heading_path_at(&hb, at).as_deref(), Some("A > B"));
    }
}
