//! The real GGUF models: tokenizers against known ids, deterministic greedy decoding.

use candle_core::quantized::gguf_file::Content;
use docent_core::{ChatMessage, GenerationEvent, GenerationRequest, Generator, SamplingParams};
use docent_generate::{GgufGenerator, GgufOptions, GgufTokenizer};

fn tokenizer(model: &str) -> GgufTokenizer {
    let path = docent_models::testing::require(model).join("model.gguf");
    let mut file = std::fs::File::open(path).unwrap();
    let content = Content::read(&mut file).unwrap();
    GgufTokenizer::from_gguf(&content).unwrap()
}

fn ids(t: &GgufTokenizer, text: &str) -> Vec<u32> {
    t.encode_plain(text).unwrap()
}

#[test]
fn smollm2_tokenizer_has_no_prefix_space() {
    let t = tokenizer("smollm2-135m-instruct");
    // Published SmolLM2 ids: <|endoftext|>=0, <|im_start|>=1, <|im_end|>=2.
    assert_eq!(t.special("<|endoftext|>"), Some(0));
    assert_eq!(t.special("<|im_start|>"), Some(1));
    assert_eq!(t.special("<|im_end|>"), Some(2));
    assert!(t.eos_ids.contains(&2), "{:?}", t.eos_ids);
    let hello = ids(&t, "Hello world");
    // "Hello" without a leading space, then "Ġworld" (candle's TokenizerFromGguf yields "ĠHello").
    assert_eq!(hello, vec![19556, 905]);
    assert_eq!(t.plain.id_to_token(19556).as_deref(), Some("Hello"));
    // Digits are split one by one.
    let year = ids(&t, "2024");
    assert_eq!(year.len(), 4);
    assert_eq!(t.plain.decode(&year, false).unwrap(), "2024");
    // Special-token text inside content stays plain text.
    let injected = ids(&t, "<|im_end|>");
    assert!(!injected.contains(&2) && injected.len() > 1, "{injected:?}");
}

#[test]
fn qwen2_tokenizer_matches_published_ids() {
    let t = tokenizer("qwen2.5-0.5b-instruct");
    assert_eq!(t.pre, "qwen2");
    assert_eq!(t.special("<|endoftext|>"), Some(151643));
    assert_eq!(t.special("<|im_start|>"), Some(151644));
    assert_eq!(t.special("<|im_end|>"), Some(151645));
    assert_eq!(ids(&t, "Hello world"), vec![9707, 1879]);
    assert_eq!(ids(&t, "Hello, world!"), vec![9707, 11, 1879, 0]);
    let text = "Vacation: 20 days (25 after 3 years) — café ünïcode";
    assert_eq!(t.plain.decode(&ids(&t, text), false).unwrap(), text);
}

fn run(
    generator: &GgufGenerator,
    question: &str,
    max_tokens: usize,
) -> (String, docent_core::GenerationStats) {
    let mut rx = generator
        .generate(GenerationRequest {
            messages: vec![
                ChatMessage::system("You are a helpful assistant."),
                ChatMessage::user(question),
            ],
            sampling: SamplingParams {
                max_tokens,
                temperature: 0.0,
                top_p: None,
                seed: 7,
            },
            probe: None,
        })
        .unwrap();
    let mut text = String::new();
    while let Some(event) = rx.blocking_recv() {
        match event {
            GenerationEvent::Text(t) => text.push_str(&t),
            GenerationEvent::Probe { .. } => {}
            GenerationEvent::Done { stats, .. } => return (text, stats),
            GenerationEvent::Failed(e) => panic!("generation failed: {e}"),
        }
    }
    panic!("stream ended without Done");
}

#[test]
fn greedy_generation_is_deterministic_and_cancellable() {
    let path = docent_models::testing::require("smollm2-135m-instruct").join("model.gguf");
    let generator = GgufGenerator::load(GgufOptions::new(path, "smollm2-135m-instruct")).unwrap();
    let (a, stats) = run(&generator, "What is the capital of France?", 24);
    let (b, again) = run(&generator, "What is the capital of France?", 24);
    assert!(!a.trim().is_empty());
    assert_eq!(a, b, "greedy decoding must repeat exactly");
    // The repeat found the prompt in the KV cache and evaluated only its last token.
    assert_eq!(stats.cached_prompt_tokens, 0);
    assert_eq!(again.cached_prompt_tokens, again.prompt_tokens - 1);
    assert!(a.contains("Paris"), "{a}");
    assert!(stats.completion_tokens > 0 && stats.completion_tokens <= 24);
    assert!(stats.prompt_tokens > 10);

    // Dropping the receiver stops the work: the next request is served promptly
    // and a long generation does not run to its limit.
    let rx = generator
        .generate(GenerationRequest {
            messages: vec![ChatMessage::user(
                "Count from one to one thousand in words.",
            )],
            sampling: SamplingParams {
                max_tokens: 4000,
                temperature: 0.0,
                top_p: None,
                seed: 7,
            },
            probe: None,
        })
        .unwrap();
    drop(rx);
    let t = std::time::Instant::now();
    let (c, _) = run(&generator, "What is the capital of France?", 24);
    assert_eq!(c, a);
    assert!(
        t.elapsed().as_secs() < 60,
        "cancelled generation kept the model busy"
    );
}

/// A second load reads what the first computed (the re-quantized model, the
/// dense prompt weights, the decoding weights in the kernels' layout) from
/// the weights cache beside the model and answers exactly as before; a
/// damaged cache file is rebuilt.
#[test]
fn the_weights_cache_is_written_once_then_read_and_gives_the_same_answers() {
    let source = docent_models::testing::require("smollm2-135m-instruct").join("model.gguf");
    let dir = std::env::temp_dir().join(format!("docent-weights-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.gguf");
    if std::fs::hard_link(&source, &path).is_err() {
        std::fs::copy(&source, &path).unwrap();
    }
    let load = |cache: bool| {
        let mut options = GgufOptions::new(&path, "smollm2-135m-instruct");
        options.weights_cache = cache;
        GgufGenerator::load(options).unwrap()
    };
    let question = "What is the capital of France?";

    // Where the CPU runs docent's Q8_0 decoding kernel, its weights are
    // cached too.
    let kernels = docent_ops::q8::available();
    let first = load(true);
    let report = first.weights_cache();
    assert!(
        report.starts_with("wrote") && report.contains("dense prompt weights"),
        "{report}"
    );
    assert_eq!(report.contains("decoding weights"), kernels, "{report}");
    let (answer, _) = run(&first, question, 24);
    drop(first);

    let second = load(true);
    let report = second.weights_cache();
    assert!(
        report.starts_with("read") && !report.contains("wrote"),
        "{report}"
    );
    assert_eq!(report.contains("decoding weights"), kernels, "{report}");
    assert_eq!(run(&second, question, 24).0, answer);
    drop(second);

    // Cut the dense file short: it is refused, rebuilt, and the answer holds.
    let cached: Vec<std::path::PathBuf> = walk(&dir.join(".docent-cache"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("prefill-")
        })
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let bytes = std::fs::read(&cached[0]).unwrap();
    std::fs::write(&cached[0], &bytes[..bytes.len() / 2]).unwrap();
    // And the decoding weights' file (mapped by the second load, which
    // is gone): cut short, it is refused and written again.
    let decode = cached[0].with_file_name("decode.bin");
    assert_eq!(decode.exists(), kernels);
    let decode_len = if kernels {
        let bytes = std::fs::read(&decode).unwrap();
        std::fs::write(&decode, &bytes[..bytes.len() - 100]).unwrap();
        bytes.len()
    } else {
        0
    };
    let third = load(true);
    assert!(
        third.weights_cache().contains("wrote dense prompt weights"),
        "{}",
        third.weights_cache()
    );
    if kernels {
        let report = third.weights_cache();
        let wrote = report.split_once("wrote ").map(|(_, w)| w);
        assert!(
            wrote.is_some_and(|w| w.contains("decoding weights")),
            "{report}"
        );
        assert_eq!(std::fs::read(&decode).unwrap().len(), decode_len);
    }
    assert_eq!(run(&third, question, 24).0, answer);
    assert_eq!(std::fs::read(&cached[0]).unwrap().len(), bytes.len());
    drop(third);

    let off = load(false);
    assert_eq!(off.weights_cache(), "off");
    assert_eq!(run(&off, question, 24).0, answer);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
