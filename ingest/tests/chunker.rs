//! Chunker invariants with the real MiniLM tokenizer.

use docent_core::{Chunker, ExtractedDocument, TextKind};
use docent_ingest::TokenChunker;
use proptest::prelude::*;
use std::sync::OnceLock;
use std::time::Instant;
use tokenizers::Tokenizer;

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let dir = docent_models::testing::require("all-MiniLM-L6-v2");
        let mut t = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        t.with_padding(None);
        t.with_truncation(None).unwrap();
        t
    })
}

fn tokens(text: &str) -> usize {
    tokenizer().encode(text, false).unwrap().get_ids().len()
}

fn words() -> impl Strategy<Value = String> {
    let word = prop::sample::select(vec![
        "refund",
        "invoice",
        "the",
        "customer",
        "vacation",
        "Frankfurt",
        "über",
        "naïve",
        "2026",
        "—",
        "🙂",
        "x",
        "supercalifragilistic",
        "\n",
        "\n\n",
        "# Heading",
        "## Sub",
        "- item",
        "`code`",
        ".",
        ",",
    ]);
    prop::collection::vec(word, 0..600).prop_map(|w| w.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn spans_are_in_bounds_ordered_and_within_the_token_limit(text in words(), markdown in any::<bool>()) {
        let chunker = TokenChunker::new(tokenizer().clone(), 64, 8).unwrap();
        let doc = ExtractedDocument {
            text: text.clone(),
            kind: if markdown { TextKind::Markdown } else { TextKind::Plain },
            ..Default::default()
        };
        let spans = chunker.chunk(&doc);
        let mut last_start = 0;
        for span in &spans {
            prop_assert!(span.start < span.end && span.end <= text.len());
            prop_assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end));
            prop_assert!(span.start >= last_start, "spans go forward");
            last_start = span.start;
            let piece = &text[span.start..span.end];
            prop_assert!(!piece.trim().is_empty());
            prop_assert!(tokens(piece) <= 64, "{} tokens in {:?}", tokens(piece), piece);
        }
        // Every non-whitespace character is covered by some chunk.
        let mut covered = vec![false; text.len()];
        for span in &spans {
            covered[span.start..span.end].iter_mut().for_each(|c| *c = true);
        }
        for (i, ch) in text.char_indices() {
            prop_assert!(ch.is_whitespace() || covered[i], "byte {} ({:?}) not in any chunk", i, ch);
        }
    }
}

fn tricky_words() -> impl Strategy<Value = String> {
    let word = prop::sample::select(vec![
        "refund",
        "the",
        "über",
        "naïve",
        "e\u{301}",
        "東京",
        "don't",
        "e-mail",
        "(parens)",
        "3.5%",
        "🙂",
        "\u{a0}",
        "\t",
        "\n",
        "\n\n",
        "a\u{0}b",
        "x.y",
        "#",
        "- item",
        "supercalifragilisticexpialidocious",
        "— dash",
        "«quote»",
        "ﬁne",
    ]);
    prop::collection::vec((word, prop::sample::select(vec![" ", "", "\n"])), 0..400).prop_map(|w| {
        w.into_iter()
            .map(|(w, sep)| format!("{w}{sep}"))
            .collect::<String>()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Counting candidates from one tokenization per segment finds exactly
    /// the chunks that tokenizing every candidate finds.
    #[test]
    fn counted_sizes_give_the_chunks_of_tokenized_ones(
        text in tricky_words(),
        markdown in any::<bool>(),
        (size, overlap) in prop::sample::select(vec![(16usize, 0usize), (64, 8), (128, 16)]),
    ) {
        let counted = TokenChunker::new(tokenizer().clone(), size, overlap).unwrap();
        let tokenized = TokenChunker::new(tokenizer().clone(), size, overlap)
            .unwrap()
            .with_every_candidate_tokenized();
        let doc = ExtractedDocument {
            text,
            kind: if markdown { TextKind::Markdown } else { TextKind::Plain },
            ..Default::default()
        };
        prop_assert_eq!(counted.chunk(&doc), tokenized.chunk(&doc));
    }
}

/// The same on real text: SQuAD's paragraphs, ten to a document, at the
/// default chunk size and at the largest the embedder takes.
#[test]
fn counted_sizes_give_the_chunks_of_tokenized_ones_on_squad() {
    let path = docent_models::testing::shared_dir().join("data/squad/squad2-dev.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let contexts: Vec<&str> = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["paragraphs"].as_array().unwrap())
        .filter_map(|p| p["context"].as_str())
        .take(300)
        .collect();
    let mut chunks = 0;
    for (size, overlap) in [(128, 16), (254, 32)] {
        let counted = TokenChunker::new(tokenizer().clone(), size, overlap).unwrap();
        let tokenized = TokenChunker::new(tokenizer().clone(), size, overlap)
            .unwrap()
            .with_every_candidate_tokenized();
        for (i, group) in contexts.chunks(10).enumerate() {
            let doc = ExtractedDocument {
                text: group.join(if i % 2 == 0 { "\n\n" } else { " " }),
                kind: TextKind::Plain,
                ..Default::default()
            };
            let spans = counted.chunk(&doc);
            assert_eq!(
                spans,
                tokenized.chunk(&doc),
                "document {i} at {size} tokens"
            );
            chunks += spans.len();
        }
    }
    assert!(chunks > 300, "{chunks} chunks");
}

#[test]
fn markdown_chunks_carry_their_heading_path() {
    let chunker = TokenChunker::new(tokenizer().clone(), 40, 0).unwrap();
    let text = "# Billing\n\nIntro about billing.\n\n## Refunds\n\n".to_string()
        + &"Refunds are issued within fourteen days of a request. ".repeat(6)
        + "\n\n## Invoices\n\nInvoices are sent monthly.\n";
    let doc = ExtractedDocument {
        text: text.clone(),
        kind: TextKind::Markdown,
        ..Default::default()
    };
    let spans = chunker.chunk(&doc);
    assert!(spans.len() >= 3, "{spans:?}");
    let refund = spans
        .iter()
        .find(|s| text[s.start..s.end].contains("fourteen days"))
        .unwrap();
    assert_eq!(refund.heading.as_deref(), Some("Billing > Refunds"));
    let invoices = spans
        .iter()
        .find(|s| text[s.start..s.end].contains("sent monthly"))
        .unwrap();
    assert_eq!(invoices.heading.as_deref(), Some("Billing > Invoices"));
}

fn plain(text: &str) -> ExtractedDocument {
    ExtractedDocument {
        text: text.to_string(),
        kind: TextKind::Plain,
        ..Default::default()
    }
}

#[test]
fn one_long_line_is_chunked_in_linear_time() {
    // text-splitter sized the rest of a text without line breaks for every
    // chunk it cut: a 1 MB line took 5 s, 2 MB 22 s, 4 MB a minute, and a
    // 10 MB line (under the default file limit) far longer.
    let chunker = TokenChunker::new(tokenizer().clone(), 254, 32).unwrap();
    let line =
        |bytes: usize| "the archive keeps every signed contract for ten years ".repeat(bytes / 54);
    let timed = |text: &str| {
        let started = Instant::now();
        let spans = chunker.chunk(&plain(text));
        (started.elapsed(), spans)
    };
    let (small, _) = timed(&line(256 << 10));
    let text = line(2 << 20);
    let (large, spans) = timed(&text);
    // Eight times the text: about eight times the time when linear, 64
    // times when quadratic.
    assert!(large < small * 24, "256 KiB: {small:?}, 2 MiB: {large:?}");
    assert!(spans.len() > 1000, "{}", spans.len());
    for span in spans.iter().step_by(97) {
        assert!(tokens(&text[span.start..span.end]) <= 254);
    }
}

#[test]
fn a_word_longer_than_the_tokenizer_reads_is_not_one_giant_chunk() {
    // WordPiece reads a word of more than 100 characters as one [UNK], so a
    // 64 KiB "word" was one 64 KiB chunk of one token (and a 10 MB one, one
    // 10 MB chunk) for every later step to tokenize again.
    let chunker = TokenChunker::new(tokenizer().clone(), 254, 32).unwrap();
    let word = "abcdefghij".repeat(6554);
    let text = format!("Before the blob. {word} After the blob.");
    let spans = chunker.chunk(&plain(&text));
    assert!(spans.len() >= 16, "{} chunks", spans.len());
    assert!(
        spans.iter().all(|s| s.end - s.start < 255 * 16),
        "{:?}",
        spans.iter().map(|s| s.end - s.start).collect::<Vec<_>>()
    );
    let mut covered = vec![false; text.len()];
    for span in &spans {
        covered[span.start..span.end]
            .iter_mut()
            .for_each(|c| *c = true);
    }
    assert!(
        text.char_indices()
            .all(|(i, c)| c.is_whitespace() || covered[i])
    );
}

#[test]
fn texts_longer_than_a_segment_are_covered_in_order_within_the_limit() {
    let chunker = TokenChunker::new(tokenizer().clone(), 64, 8).unwrap();
    // About 200 KB: paragraphs, long lines and a stretch without breaks.
    let mut text = String::new();
    for i in 0..400 {
        text.push_str(&format!("# Part {i}\n\n"));
        text.push_str(
            &"Refunds are issued within fourteen days, über naïve 🙂. ".repeat(i % 7 + 1),
        );
        text.push_str(if i % 5 == 0 { " " } else { "\n\n" });
    }
    for markdown in [false, true] {
        let doc = ExtractedDocument {
            text: text.clone(),
            kind: if markdown {
                TextKind::Markdown
            } else {
                TextKind::Plain
            },
            ..Default::default()
        };
        let spans = chunker.chunk(&doc);
        let mut last_start = 0;
        let mut covered = vec![false; text.len()];
        for span in &spans {
            assert!(span.start < span.end && span.end <= text.len());
            assert!(span.start >= last_start, "spans go forward");
            last_start = span.start;
            assert!(tokens(&text[span.start..span.end]) <= 64);
            covered[span.start..span.end]
                .iter_mut()
                .for_each(|c| *c = true);
        }
        assert!(
            text.char_indices()
                .all(|(i, c)| c.is_whitespace() || covered[i])
        );
        // Heading paths come from the whole text, not from one segment.
        let headings: std::collections::BTreeSet<_> =
            spans.iter().filter_map(|s| s.heading.clone()).collect();
        if markdown {
            assert!(headings.len() > 250, "{} headings", headings.len());
        }
    }
}
