//! End-to-end tests of the `docent` binary on the real models and the real
//! embedded store, with the example documents.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Makes sure the models the tests use are pulled (once per machine).
fn models_dir() -> PathBuf {
    docent_models::testing::require("all-MiniLM-L6-v2");
    docent_models::testing::require("smollm2-135m-instruct");
    docent_models::testing::require("qwen2.5-0.5b-instruct");
    docent_models::testing::require("qwen2.5-1.5b-instruct");
    docent_models::testing::models_dir()
}

/// The default generation model and prompt budget, for tests that check
/// what an answer says (the others run SmolLM2-135M, which is faster).
const DEFAULT_MODEL: &[(&str, &str)] = &[
    ("DOCENT__GENERATE__MODEL", "qwen2.5-1.5b-instruct"),
    ("DOCENT__QUERY__MAX_PROMPT_TOKENS", "500"),
];

/// The smaller Qwen at the default prompt budget: right about the example
/// vacation question, and loaded in a tenth of the 1.5B model's time, for
/// tests of mechanisms that need a model that answers well.
const SMALL_QWEN: &[(&str, &str)] = &[
    ("DOCENT__GENERATE__MODEL", "qwen2.5-0.5b-instruct"),
    ("DOCENT__QUERY__MAX_PROMPT_TOKENS", "500"),
];

fn docent(data_dir: &Path, args: &[&str]) -> Output {
    docent_with(data_dir, args, &[])
}

fn docent_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_docent"))
        .args(args)
        .env("DOCENT_DATA_DIR", data_dir)
        .env("DOCENT_MODELS_DIR", models_dir())
        .env("DOCENT__GENERATE__MODEL", "smollm2-135m-instruct")
        // The 500-token default prompt budget is tuned for the Qwen
        // models; the tests' SmolLM2-135M stand-in answers the
        // example questions from the two passages it always had.
        .env("DOCENT__QUERY__MAX_PROMPT_TOKENS", "2048")
        .envs(env.iter().copied())
        .current_dir(repo())
        .output()
        .expect("run docent")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout={} stderr={}",
            stdout(o),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// `docent ask QUESTION --json --max-tokens N [--top-k K]` with `env`, as JSON.
fn ask_json(
    data_dir: &Path,
    question: &str,
    max_tokens: &str,
    top_k: Option<&str>,
    env: &[(&str, &str)],
) -> Value {
    let mut args = vec!["ask", question, "--json", "--max-tokens", max_tokens];
    if let Some(k) = top_k {
        args.extend(["--top-k", k]);
    }
    let out = docent_with(data_dir, &args, env);
    assert_ok(&out);
    json(&out)
}

fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn ingest_examples_then_ask_cites_the_right_document() {
    let data = tempfile::tempdir().unwrap();
    let first = docent(data.path(), &["ingest", "examples/docs", "--json"]);
    assert_ok(&first);
    let summary = json(&first);
    assert_eq!(summary["added"], 6, "{summary}");
    assert_eq!(summary["failed"].as_array().unwrap().len(), 0, "{summary}");
    let chunks = summary["chunks_embedded"].as_u64().unwrap();
    assert!(chunks >= 6, "{summary}");

    // Re-ingest is a no-op, and says so.
    let again = docent(data.path(), &["ingest", "examples/docs"]);
    assert_ok(&again);
    let text = stdout(&again);
    assert!(
        text.contains("6 unchanged")
            && text.contains("0 chunks embedded")
            && text.contains("nothing changed"),
        "{text}"
    );

    // Each answer sits in one known document. Every `ask` is a new process,
    // so these also show the store survives a restart. The default model
    // answers, at the default prompt budget: SmolLM2-135M, the plumbing
    // model of the other tests, reads a number from the wrong line of the
    // right passage ("2 days" of special leave for 20, "5 minutes of
    // paging" for 15), and which one it picks moved with a last-digit
    // change in the products (session 17). Answer quality at scale is
    // measured by `docent eval answers` (docs/quality.md). The runbook's
    // "within 15 minutes" is the fact qwen2.5-0.5b, the default before
    // session 20, got wrong ("20 minutes") at every prompt budget.
    for (question, source, fact) in common::HANDBOOK {
        let out = docent_with(
            data.path(),
            &["ask", question, "--json", "--max-tokens", "48"],
            DEFAULT_MODEL,
        );
        assert_ok(&out);
        let answer = json(&out);
        let citations = answer["citations"].as_array().unwrap();
        assert!(!citations.is_empty(), "{answer}");
        assert_eq!(citations[0]["source"], source, "{question}: {answer}");
        let c = &citations[0];
        let (start, end) = (c["start"].as_u64().unwrap(), c["end"].as_u64().unwrap());
        assert!(
            end > start && c["text"].as_str().unwrap().len() as u64 == end - start,
            "{c}"
        );
        assert!(
            answer["answer"].as_str().unwrap().contains(fact),
            "{question}: {answer}"
        );
        assert_eq!(answer["model"], "qwen2.5-1.5b-instruct");
        for key in ["embed", "search", "prompt_eval", "generate"] {
            assert!(
                answer["timings_ms"][key].as_f64().unwrap() >= 0.0,
                "{answer}"
            );
        }
        assert!(
            answer["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
            "{answer}"
        );
    }
}

#[test]
fn the_abstention_threshold_applies_to_the_models_own_probability() {
    let data = tempfile::tempdir().unwrap();
    assert_ok(&docent(data.path(), &["ingest", "examples/docs"]));
    let question = "How many days of paid vacation do new employees get?";
    let ask = |threshold: &str, check: &str| {
        // A model that answers this right, and loads fast.
        let env = [
            SMALL_QWEN,
            &[
                ("DOCENT__QUERY__ABSTAIN_THRESHOLD", threshold),
                ("DOCENT__QUERY__ABSTAIN_CHECK", check),
            ],
        ]
        .concat();
        ask_json(data.path(), question, "32", None, &env)
    };
    for check in ["reply", "support"] {
        // Above 1: measured and reported, never deciding.
        let measured = ask("2", check);
        let p = measured["abstain_probability"].as_f64().unwrap();
        assert!(p > 0.0 && p < 1.0, "{check}: {measured}");
        assert_eq!(measured["answerable"], true, "{check}: {measured}");
        assert!(
            measured["answer"].as_str().unwrap().contains("20"),
            "{measured}"
        );
        // At a threshold below that probability the model is not asked to
        // write anything: the fixed sentence, nothing cited.
        let threshold = format!("{}", p / 2.0);
        let abstained = ask(&threshold, check);
        assert_eq!(abstained["answerable"], false, "{check}: {abstained}");
        assert_eq!(
            abstained["answer"], "I don't know based on the provided documents.",
            "{abstained}"
        );
        assert_eq!(abstained["usage"]["completion_tokens"], 0, "{abstained}");
        assert!(
            abstained["citations"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["cited"] == false),
            "{abstained}"
        );
        // The same prompt, so the same probability.
        let again = abstained["abstain_probability"].as_f64().unwrap();
        assert!(
            (again - p).abs() < 1e-4 * p.max(1e-6) + 1e-6,
            "{p} vs {again}"
        );
    }
    // Off: no probability at all.
    let off = ask("0", "reply");
    assert!(off.get("abstain_probability").is_none(), "{off}");
}

#[test]
fn the_reranker_gate_abstains_without_asking_the_model() {
    let data = tempfile::tempdir().unwrap();
    assert_ok(&docent(data.path(), &["ingest", "examples/docs"]));
    let vacation = "How many days of paid vacation do new employees get?";
    let off_topic = "What is the melting point of tungsten?";
    let ask = |question: &str, min_rerank_score: &str| {
        ask_json(
            data.path(),
            question,
            "32",
            Some("2"),
            &[
                // Only the reranker gate: no cosine floor, no model probe.
                ("DOCENT__RETRIEVAL__SCORE_FLOOR", "-1"),
                ("DOCENT__QUERY__ABSTAIN_THRESHOLD", "0"),
                ("DOCENT__QUERY__MIN_RERANK_SCORE", min_rerank_score),
            ],
        )
    };
    // Far below any score: the gate never decides, both are answered.
    let on = ask(vacation, "-1000");
    let off = ask(off_topic, "-1000");
    let best = |a: &Value| a["best_rerank_score"].as_f64().unwrap();
    assert!(on["best_similarity"].as_f64().unwrap() > 0.2, "{on}");
    assert!(
        best(&on) > best(&off) + 3.0,
        "the reranker should tell them apart: {} vs {}",
        best(&on),
        best(&off)
    );
    assert_eq!(on["answerable"], true, "{on}");
    assert!(off["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{off}");
    // Between the two: the off-topic question gets the fixed sentence and
    // the model is never asked; the on-topic one is answered as before.
    let floor = format!("{}", (best(&on) + best(&off)) / 2.0);
    let gated = ask(off_topic, &floor);
    assert_eq!(gated["answerable"], false, "{gated}");
    assert_eq!(
        gated["answer"], "I don't know based on the provided documents.",
        "{gated}"
    );
    assert_eq!(gated["usage"]["prompt_tokens"], 0, "{gated}");
    assert!((best(&gated) - best(&off)).abs() < 1e-3, "{gated}");
    let kept = ask(vacation, &floor);
    assert_eq!(kept["answerable"], true, "{kept}");
    assert_eq!(kept["answer"], on["answer"], "{kept}");
    // The configured gate (-3) spares a request the cross-encoder scores
    // low when a passage is close by cosine similarity (the configured 0.45).
    let policy = "Explain the vacation policy.";
    let request = ask_json(
        data.path(),
        policy,
        "16",
        None,
        &[("DOCENT__QUERY__ABSTAIN_THRESHOLD", "0")],
    );
    assert!(best(&request) < -3.0, "{request}");
    assert!(
        request["best_similarity"].as_f64().unwrap() >= 0.45,
        "{request}"
    );
    assert!(
        request["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
        "the model was asked: {request}"
    );
    let unspared = ask_json(
        data.path(),
        policy,
        "16",
        None,
        &[
            ("DOCENT__QUERY__ABSTAIN_THRESHOLD", "0"),
            ("DOCENT__QUERY__RERANK_GATE_SPARES_SIMILARITY", "0.99"),
        ],
    );
    assert_eq!(unspared["usage"]["prompt_tokens"], 0, "{unspared}");
}

#[test]
fn streaming_ask_ends_with_sources() {
    let data = tempfile::tempdir().unwrap();
    assert_ok(&docent(data.path(), &["ingest", "examples/docs/faq.md"]));
    let out = docent(
        data.path(),
        &[
            "ask",
            "Where is customer data stored?",
            "--max-tokens",
            "40",
        ],
    );
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.contains("[1] faq.md"), "{text}");
    assert!(text.contains("lines "), "{text}");
}

#[test]
fn a_collection_built_with_other_settings_is_refused() {
    let data = tempfile::tempdir().unwrap();
    assert_ok(&docent(data.path(), &["ingest", "examples/docs/faq.md"]));
    let out = Command::new(env!("CARGO_BIN_EXE_docent"))
        .args(["ingest", "examples/docs/faq.md"])
        .env("DOCENT_DATA_DIR", data.path())
        .env("DOCENT_MODELS_DIR", models_dir())
        .env("DOCENT__CHUNK__MAX_TOKENS", "254")
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("chunks of 128 tokens") && err.contains("Rebuild it"),
        "{err}"
    );
}

#[test]
fn binary_and_invalid_utf8_files_fail_alone() {
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("good.md"),
        "# Parking\n\nVisitors park in lot C behind the warehouse.\n",
    )
    .unwrap();
    std::fs::write(
        docs.path().join("image.txt"),
        [0x89u8, b'P', b'N', b'G', 0, 0, 0, 13, 0xff, 0x00, 0x10],
    )
    .unwrap();
    std::fs::write(
        docs.path().join("latin1.txt"),
        b"Caf\xe9 cr\xe8me is served at 10.",
    )
    .unwrap();
    // Mostly UTF-8 (multi-byte characters decode) with a broken byte: not a
    // legacy encoding, so refused with the offset.
    let mut broken = "Le café crème coûte deux euros. ".repeat(4).into_bytes();
    let broken_at = broken.len();
    broken.extend_from_slice(b"\xff and more text");
    std::fs::write(docs.path().join("broken.txt"), &broken).unwrap();
    std::fs::write(docs.path().join("empty.md"), b"").unwrap();
    let out = docent(
        data.path(),
        &["ingest", docs.path().to_str().unwrap(), "--json"],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "partial failure has its own exit code"
    );
    let summary = json(&out);
    // good.md, and latin1.txt decoded as a legacy single-byte encoding.
    assert_eq!(summary["added"], 2, "{summary}");
    let failed = summary["failed"].as_array().unwrap();
    let reason = |p: &str| {
        failed
            .iter()
            .find(|f| f["path"] == p)
            .map(|f| f["reason"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert!(reason("image.txt").contains("binary"), "{summary}");
    assert_eq!(reason("latin1.txt"), "", "{summary}");
    assert!(
        reason("broken.txt").contains(&format!("invalid UTF-8 at byte {broken_at}")),
        "{summary}"
    );
    assert!(
        reason("empty.md").contains("no extractable text"),
        "{summary}"
    );

    let out = docent(
        data.path(),
        &[
            "ask",
            "Where do visitors park?",
            "--json",
            "--max-tokens",
            "24",
        ],
    );
    assert_ok(&out);
    assert_eq!(json(&out)["citations"][0]["source"], "good.md");
}

#[test]
fn config_show_and_version() {
    let data = tempfile::tempdir().unwrap();
    let out = docent(data.path(), &["config", "show"]);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("model = \"smollm2-135m-instruct\""),
        "env override must show"
    );
    let out = docent(data.path(), &["--version"]);
    assert_ok(&out);
    assert!(stdout(&out).starts_with("docent "));
}
