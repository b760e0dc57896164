//! Chunker invariants with the real MiniLM tokenizer.

use docent_core::{Chunker, ExtractedDocument, TextKind};
use docent_ingest::TokenChunker;
use proptest::prelude::*;
use std::sync::OnceLock;
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
