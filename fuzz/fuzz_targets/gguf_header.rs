//! A GGUF file's header, metadata and tensor directory (candle's reader,
//! guarded by `read_gguf_metadata` as the generator loads it), then what
//! docent builds from the metadata: the byte-level BPE tokenizer
//! (`tokenizer.ggml.*`), the chat template, and a rendered conversation.
//! The declared counts and lengths must be bounded by the file's size, so
//! a header claiming 2^40 entries costs an error, not 2^40 allocations.
//!
//! Each input runs on a thread of its own: tokenizers 0.23 keeps every BPE
//! instance's word cache in a thread-local map that dropping the instance
//! does not clear, so millions of tokenizers built on one thread grow
//! without bound (docent builds one per model load, so it does not).
#![no_main]

use docent_core::ChatMessage;
use docent_generate::{ChatTemplate, GgufTokenizer, read_gguf_metadata};
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8]) {
    let Ok(content) = read_gguf_metadata(&mut std::io::Cursor::new(data)) else {
        return;
    };
    let Ok(tokenizer) = GgufTokenizer::from_gguf(&content) else {
        return;
    };
    let _ = tokenizer.encode_plain("Visitors park in Lot C. <|im_end|> 12345 ünï");
    let template_text = content
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .cloned();
    if let Some(template) = ChatTemplate::detect(template_text.as_deref(), &tokenizer) {
        let messages = [
            ChatMessage::system("Answer from the passages."),
            ChatMessage::user("Where do visitors park?"),
        ];
        if let Ok(ids) = template.render(&tokenizer, &messages) {
            assert!(!ids.is_empty(), "a rendered conversation without tokens");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    docent_fuzz::abort_only_on_docent_panics();
    std::thread::scope(|scope| {
        scope.spawn(|| run(data));
    });
});
