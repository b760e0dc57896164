//! Embedding backends behind `docent_core::Embedder`. This crate owns turning
//! text into vectors (loading a model, running it, serving requests), so the
//! rest of docent calls the trait and never touches the model.
//!
//! The default is a candle BERT-family sentence encoder (all-MiniLM-L6-v2):
//! masked mean pooling and L2 normalisation, as sentence-transformers does it.
//! It is split in two: `encoder` is the model (the forward pass laid out for
//! CPU inference; `docent-rerank` runs a cross-encoder on it too), and
//! `service` runs it on its own OS thread fed by a bounded channel, so callers on an async runtime never run inference on
//! it; each request answers on its own reply channel.

pub mod encoder;
mod service;

pub use service::{
    BertEmbedder, BertEmbedderOptions, Precision, load_encoder, load_tokenizer, read_config,
};
