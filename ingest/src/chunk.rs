//! Token-aware chunking with text-splitter, sized by the embedder's own tokenizer.

use docent_core::{ChunkSpan, Chunker, ExtractedDocument, TextKind};
use text_splitter::{ChunkConfig, MarkdownSplitter, TextSplitter};
use tokenizers::Tokenizer;

/// Splits documents into chunks of at most `max_tokens` embedder tokens, with
/// `overlap_tokens` of overlap. Markdown goes through the Markdown splitter so
/// chunks follow headings, lists and code blocks; every chunk records its byte
/// range and, for Markdown, the heading path above it.
pub struct TokenChunker {
    text: TextSplitter<Tokenizer>,
    markdown: MarkdownSplitter<Tokenizer>,
    tokenizer: Tokenizer,
    max_tokens: usize,
    overlap_tokens: usize,
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
        let config = || {
            ChunkConfig::new(max_tokens)
                .with_sizer(tokenizer.clone())
                .with_overlap(overlap_tokens)
                .map_err(|e| ChunkerConfigError(e.to_string()))
        };
        Ok(TokenChunker {
            text: TextSplitter::new(config()?),
            markdown: MarkdownSplitter::new(config()?),
            tokenizer: tokenizer.clone(),
            max_tokens,
            overlap_tokens,
        })
    }
}

impl Chunker for TokenChunker {
    fn chunk(&self, document: &ExtractedDocument) -> Vec<ChunkSpan> {
        let text = document.text.as_str();
        let spans: Vec<(usize, &str)> = match document.kind {
            TextKind::Markdown => self.markdown.chunk_indices(text).collect(),
            TextKind::Plain => self.text.chunk_indices(text).collect(),
        };
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
        self.tokenizer
            .encode(text, false)
            .map_or(text.len() / 4 + 1, |e| e.get_ids().len())
    }
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
    let mut last_heading = start;
    loop {
        let rest = &text[at..end];
        let skipped = rest.len() - rest.trim_start().len();
        let here = at + skipped;
        let Some((pos, _, _)) = headings.iter().find(|(pos, _, _)| {
            // The heading line may start with indentation before `#`.
            *pos <= here && here < *pos + text[*pos..].find('\n').unwrap_or(text.len() - *pos)
        }) else {
            return here.min(end.saturating_sub(1)).max(start);
        };
        last_heading = *pos;
        let line_end = text[*pos..].find('\n').map_or(text.len(), |n| *pos + n + 1);
        if line_end >= end {
            return last_heading.max(start);
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
