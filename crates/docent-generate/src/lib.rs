//! Text generation backends behind `docent_core::Generator`.
//!
//! The local backend runs a quantized GGUF model (llama and qwen2
//! architectures) with candle on one dedicated OS thread, fed by a bounded
//! queue: a full queue is refused at once (`Error::Overloaded`) instead of
//! growing. Tokens stream back on a channel and dropping the receiver cancels
//! the generation. The tokenizer is rebuilt from the GGUF's own metadata.
//!
//! The remote backend ([`OpenAiGenerator`]) sends the same prompts to an
//! OpenAI-compatible server and streams its answer back the same way.

mod chat;
mod gguf;
mod openai;
mod tokenizer;
mod transformer;
mod weights_cache;

pub use chat::ChatTemplate;
pub use gguf::{
    GgufGenerator, GgufOptions, PromptCounter, int8_prompt_weights, read_gguf_metadata,
};
pub use openai::{OpenAiGenerator, OpenAiOptions};
pub use tokenizer::{GgufTokenizer, TokenizerError};
