//! Text generation backends behind `docent_core::Generator`.
//!
//! The local backend runs a quantized GGUF model (llama and qwen2
//! architectures) with candle on one dedicated OS thread, fed by a bounded
//! queue: a full queue is refused at once (`Error::Overloaded`) instead of
//! growing. Tokens stream back on a channel and dropping the receiver cancels
//! the generation. The tokenizer is rebuilt from the GGUF's own metadata.

mod chat;
mod gguf;
mod tokenizer;
mod transformer;

pub use chat::ChatTemplate;
pub use gguf::{GgufGenerator, GgufOptions};
pub use tokenizer::{GgufTokenizer, TokenizerError};
