//! The real all-MiniLM-L6-v2 against reference vectors from sentence-transformers.

use docent_core::Embedder;
use docent_embed::{BertEmbedder, BertEmbedderOptions, Precision};
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
    options.precision = Precision::F32;
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
    let mut options = BertEmbedderOptions::new(model_dir, "all-MiniLM-L6-v2");
    options.precision = Precision::F32;
    let embedder = std::sync::Arc::new(BertEmbedder::load(options).unwrap());
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

/// The pulled all-MiniLM-L6-v2 at `precision`.
fn minilm(precision: Precision) -> docent_core::Result<BertEmbedder> {
    let model_dir = docent_models::testing::require("all-MiniLM-L6-v2");
    let mut options = BertEmbedderOptions::new(&model_dir, "all-MiniLM-L6-v2");
    options.precision = precision;
    BertEmbedder::load(options)
}

/// SQuAD paragraphs with their first question, whole articles, until at
/// least 200 texts: inputs of every length up to the 254-token limit.
fn squad_texts() -> Vec<String> {
    let squad: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            docent_models::testing::shared_dir().join("data/squad/squad2-dev.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut texts = Vec::new();
    for article in squad["data"].as_array().unwrap() {
        for paragraph in article["paragraphs"].as_array().unwrap() {
            texts.push(paragraph["context"].as_str().unwrap().to_string());
            texts.push(
                paragraph["qas"][0]["question"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        if texts.len() >= 200 {
            break;
        }
    }
    texts
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The bf16 encoder (on CPUs with AVX-512 BF16) stays within cosine 0.9999
/// of sentence-transformers' vectors, and of docent's own f32 vectors on
/// 200 SQuAD paragraphs and questions of every length up to the 254-token
/// limit.
#[test]
fn bf16_embeddings_stay_within_cosine_0_9999_of_f32() {
    if !docent_ops::bf16::available() {
        let refused = minilm(Precision::Bf16)
            .err()
            .expect("bf16 without AVX-512 BF16 must be refused");
        assert!(refused.to_string().contains("auto"), "{refused}");
        assert_ne!(
            minilm(Precision::Auto).unwrap().precision(),
            Precision::Bf16
        );
        eprintln!("skipped the comparison: this CPU lacks AVX-512 BF16");
        return;
    }
    let bf16 = minilm(Precision::Bf16).unwrap();
    assert_eq!(bf16.precision(), Precision::Bf16);
    let f32 = minilm(Precision::F32).unwrap();

    let golden_path =
        docent_models::testing::shared_dir().join("data/golden/minilm-embeddings.json");
    let golden: Golden =
        serde_json::from_str(&std::fs::read_to_string(&golden_path).unwrap()).unwrap();
    let texts: Vec<String> = golden.items.iter().map(|i| i.text.clone()).collect();
    for (item, got) in golden.items.iter().zip(bf16.embed(&texts).unwrap()) {
        let c = cosine(&item.embedding, &got);
        assert!(
            c >= 0.9999,
            "{:?}: cosine {c} to sentence-transformers",
            item.text
        );
    }

    let texts = squad_texts();
    let (low, reference) = (bf16.embed(&texts).unwrap(), f32.embed(&texts).unwrap());
    let mut worst = 1.0f64;
    for (text, (a, b)) in texts.iter().zip(low.iter().zip(&reference)) {
        let c = cosine(a, b);
        assert!(
            c >= 0.9999,
            "{:?}: cosine {c} between bf16 and f32",
            &text[..text.len().min(80)]
        );
        worst = worst.min(c);
    }
    eprintln!(
        "{} texts, worst cosine bf16 vs f32: {worst:.6}",
        texts.len()
    );
}

/// The int8 encoder: about 1% of error per product on VNNI, so its vectors
/// are checked against f32 on the same texts as bf16's within cosine 0.99
/// (0.9935 worst and 0.99896 median were measured on VNNI), and `auto`
/// picks it on VNNI, where retrieval on the development set measured
/// unchanged (docs/benchmarks.md, session 15). On the AVX-512 BW and AVX2
/// variants the encoder quantizes weights and activations to 7 bits, so
/// that the kernels can add pairs in i16: measured on the AMD EPYC with
/// `DOCENT_INT8_VARIANT=avx512-bw`, worst 0.9757 and median 0.99591
/// (session 30; 8-bit weights with 7-bit activations, before, gave 0.9725
/// and 0.99698), so they are held to 0.96 and 0.995. Their retrieval on the
/// development set stayed near f32 (docs/benchmarks.md, sessions 22 and
/// 30), so `auto` picks them where there is neither VNNI nor AVX-512 BF16.
#[test]
fn int8_embeddings_stay_close_to_f32() {
    if !docent_ops::int8::available() {
        let refused = minilm(Precision::Int8)
            .err()
            .expect("int8 without AVX-512 or AVX2 must be refused");
        assert!(refused.to_string().contains("auto"), "{refused}");
        eprintln!("skipped the comparison: this CPU lacks AVX-512 and AVX2");
        return;
    }
    let int8 = minilm(Precision::Int8).unwrap();
    assert_eq!(int8.precision(), Precision::Int8);
    // `auto` embeds in int8 on VNNI, and on the 7-bit paths where there
    // is no AVX-512 BF16 either.
    let auto_int8 =
        docent_ops::int8::Variant::detect().has_vnni() || !docent_ops::bf16::available();
    assert_eq!(
        minilm(Precision::Auto).unwrap().precision() == Precision::Int8,
        auto_int8
    );
    let f32 = minilm(Precision::F32).unwrap();
    let golden_path =
        docent_models::testing::shared_dir().join("data/golden/minilm-embeddings.json");
    let golden: Golden =
        serde_json::from_str(&std::fs::read_to_string(&golden_path).unwrap()).unwrap();
    let mut texts: Vec<String> = golden.items.iter().map(|i| i.text.clone()).collect();
    texts.extend(squad_texts());
    let (low, reference) = (int8.embed(&texts).unwrap(), f32.embed(&texts).unwrap());
    let mut cosines: Vec<f64> = low
        .iter()
        .zip(&reference)
        .map(|(a, b)| cosine(a, b))
        .collect();
    cosines.sort_by(f64::total_cmp);
    let (worst, median) = (cosines[0], cosines[cosines.len() / 2]);
    eprintln!(
        "{} texts, int8 ({}) vs f32 cosine: worst {worst:.6}, median {median:.6}",
        texts.len(),
        docent_ops::int8::Variant::detect()
    );
    // The 7-bit variants (AVX-512 BW, AVX2) compute the same integers.
    let (worst_bound, median_bound) = match docent_ops::int8::Variant::detect().levels() {
        127 => (0.96, 0.995),
        _ => (0.99, 0.998),
    };
    assert!(worst >= worst_bound, "worst cosine {worst}");
    assert!(median >= median_bound, "median cosine {median}");
}
