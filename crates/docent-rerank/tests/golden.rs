//! The reranker against reference scores computed once with the onnxruntime
//! Python package on the same shipped model (`bench/rerank_reference.py`):
//! ten fixed pairs, including a passage truncated at 512 tokens and an empty
//! query. Uses the real model and runtime, pulled like any other model.

use docent_core::Reranker;
use docent_rerank::{OnnxReranker, OnnxRerankerOptions};

#[test]
fn scores_match_onnxruntime_on_the_shipped_model_within_1e_3() {
    let model = docent_models::testing::require("ms-marco-MiniLM-L-12-v2");
    let runtime = docent_models::testing::require("onnxruntime").join("libonnxruntime.so");
    let options = OnnxRerankerOptions::new(&model, &runtime, "ms-marco-MiniLM-L-12-v2");
    let reranker = OnnxReranker::load(options).expect("load the reranker");
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("data/reference_scores.json")).unwrap();
    let pairs = reference["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 10);
    // Grouped by query, as retrieval calls it: one query, several passages.
    let mut checked = 0;
    for pair in pairs {
        let query = pair["query"].as_str().unwrap();
        let passages: Vec<String> = pairs
            .iter()
            .filter(|p| p["query"] == query)
            .map(|p| p["passage"].as_str().unwrap().to_string())
            .collect();
        let scores = reranker.rerank(query, &passages).unwrap();
        let at = passages
            .iter()
            .position(|p| p == pair["passage"].as_str().unwrap())
            .unwrap();
        let expected = pair["score"].as_f64().unwrap() as f32;
        assert!(
            (scores[at] - expected).abs() < 1e-3,
            "{query:?}: {} against onnxruntime's {expected}",
            scores[at]
        );
        checked += 1;
    }
    assert_eq!(checked, 10);
    // The answering passage outranks the unrelated one by a wide margin.
    let berlin = reranker
        .rerank(
            "How many people live in Berlin?",
            &[
                pairs[1]["passage"].as_str().unwrap().to_string(),
                pairs[0]["passage"].as_str().unwrap().to_string(),
            ],
        )
        .unwrap();
    assert!(berlin[1] > berlin[0] + 10.0, "{berlin:?}");
    assert!(reranker.rerank("q", &[]).unwrap().is_empty());
}
