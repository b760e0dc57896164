//! Embedding backends behind `docent_core::Embedder`.
//!
//! The default is a candle BERT-family sentence encoder (all-MiniLM-L6-v2):
//! masked mean pooling and L2 normalisation, as sentence-transformers does it.
//! The model lives on its own OS thread fed by a bounded channel, so callers on
//! an async runtime never run inference on it; each request answers on its
//! own reply channel.

mod bert;
mod encoder;

pub use bert::{BertEmbedder, BertEmbedderOptions, load_tokenizer};
