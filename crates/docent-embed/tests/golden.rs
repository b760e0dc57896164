//! The real all-MiniLM-L6-v2 against reference vectors from sentence-transformers.

use docent_core::Embedder;
use docent_embed::{BertEmbedder, BertEmbedderOptions};
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    dimension: usize,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    text: String,
    embedding: Vec<f32>,
}

#[test]
fn minilm_reproduces_sentence_transformers_within_1e_4() {
    let model_dir = docent_models::testing::require("all-MiniLM-L6-v2");
    let golden_path =
        docent_models::testing::shared_dir().join("data/golden/minilm-embeddings.json");
    let golden: Golden =
        serde_json::from_str(&std::fs::read_to_string(&golden_path).unwrap()).unwrap();
    assert_eq!(golden.items.len(), 10);

    // Batch size 4 forces several length-sorted, padded batches.
    let mut options = BertEmbedderOptions::new(model_dir, "all-MiniLM-L6-v2");
    options.batch_size = 4;
    let embedder = BertEmbedder::load(options).unwrap();
    assert_eq!(embedder.dimension(), golden.dimension);
    assert_eq!(embedder.max_input_tokens(), 254);

    let texts: Vec<String> = golden.items.iter().map(|i| i.text.clone()).collect();
    let vectors = embedder.embed(&texts).unwrap();
    for (item, got) in golden.items.iter().zip(&vectors) {
        let worst = item
            .embedding
            .iter()
            .zip(got)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-4,
            "text {:?}: max component error {worst}",
            item.text
        );
    }

    // One at a time (no padding) gives the same vectors as in a padded batch.
    for (text, batched) in texts.iter().zip(&vectors) {
        let single = embedder
            .embed(std::slice::from_ref(text))
            .unwrap()
            .remove(0);
        let worst = single
            .iter()
            .zip(batched)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-5, "padding changed {text:?} by {worst}");
    }
}

/// Concurrent single-text requests are batched together on the model thread;
/// each caller must still get exactly its own golden vector.
#[test]
fn concurrent_requests_batched_together_get_their_own_vectors() {
    let model_dir = docent_models::testing::require("all-MiniLM-L6-v2");
    let golden_path =
        docent_models::testing::shared_dir().join("data/golden/minilm-embeddings.json");
    let golden: Golden =
        serde_json::from_str(&std::fs::read_to_string(&golden_path).unwrap()).unwrap();
    let embedder = std::sync::Arc::new(
        BertEmbedder::load(BertEmbedderOptions::new(model_dir, "all-MiniLM-L6-v2")).unwrap(),
    );
    for _round in 0..3 {
        let handles: Vec<_> = golden
            .items
            .iter()
            .map(|item| {
                let embedder = embedder.clone();
                let text = item.text.clone();
                let expected = item.embedding.clone();
                std::thread::spawn(move || {
                    let got = embedder
                        .embed(std::slice::from_ref(&text))
                        .unwrap()
                        .remove(0);
                    let worst = expected
                        .iter()
                        .zip(&got)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0f32, f32::max);
                    assert!(worst < 1e-4, "{text:?}: off by {worst}");
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
