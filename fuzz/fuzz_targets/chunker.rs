//! The token-aware chunker with heading paths, sized by the embedding
//! model's own tokenizer (the defaults: 128 tokens, 32 of overlap). The
//! first byte picks Markdown or plain text; the rest is the text.
//!
//! Beyond "no panic": every span is non-empty, in bounds and on character
//! boundaries, spans come in order, together they cover every non-blank
//! byte, and a heading path is made of the document's heading titles.
#![no_main]

use docent_core::{Chunker, ExtractedDocument, TextKind};
use docent_ingest::TokenChunker;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static CHUNKER: LazyLock<TokenChunker> = LazyLock::new(|| {
    TokenChunker::new(docent_fuzz::embedder_tokenizer(), 128, 32).expect("default settings")
});

fuzz_target!(|data: &[u8]| {
    let Some((&kind, text)) = data.split_first() else {
        return;
    };
    let kind = if kind & 1 == 0 {
        TextKind::Markdown
    } else {
        TextKind::Plain
    };
    let text = String::from_utf8_lossy(text).into_owned();
    let doc = ExtractedDocument {
        text,
        kind,
        ..Default::default()
    };
    let spans = CHUNKER.chunk(&doc);
    let text = doc.text.as_str();
    let mut covered = 0;
    let mut last_start = 0;
    for span in &spans {
        assert!(span.start < span.end, "empty or reversed span {span:?}");
        assert!(
            span.end <= text.len(),
            "span {span:?} past the end ({})",
            text.len()
        );
        assert!(
            text.is_char_boundary(span.start) && text.is_char_boundary(span.end),
            "span {span:?} cuts a character"
        );
        assert!(span.start >= last_start, "spans out of order: {spans:?}");
        if span.start > covered {
            let gap = &text[covered..span.start];
            assert!(
                gap.trim().is_empty(),
                "uncovered text {gap:?} before {span:?}"
            );
        }
        covered = covered.max(span.end);
        last_start = span.start;
        if let Some(heading) = &span.heading {
            assert!(kind == TextKind::Markdown, "a heading path in plain text");
            for title in heading.split(" > ") {
                assert!(
                    !title.is_empty() && text.contains(title),
                    "heading path {heading:?} names {title:?}, not in the text"
                );
            }
        }
    }
    let rest = &text[covered.min(text.len())..];
    assert!(rest.trim().is_empty(), "uncovered text {rest:?} at the end");
});
