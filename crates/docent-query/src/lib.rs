//! Question answering over a store: retrieve, budget a prompt, generate, cite.
//!
//! This crate owns everything between a question and a cited answer, and
//! nothing about how it is served: the CLI calls [`Asker::ask`], the HTTP
//! service streams through [`Asker::prepare`] and [`AnswerAssembler`]. Prompt
//! text lives in template files under `prompts/`, snapshot-tested.

mod answer;
mod citations;
pub mod eval;
mod prompt;
mod retrieve;

pub use answer::{
    AbstainCheck, AnswerAssembler, AskEvent, AskRequest, AskResponse, Asker, Citation, Prepared,
    QuerySettings, Timings, Usage,
};
pub use citations::CitationFilter;
pub use prompt::{PromptBuilder, PromptTemplates};
pub use retrieve::{Purpose, Retrieval, RetrievalSettings, Retriever, collapse_duplicates};

/// The fixed sentence docent answers when the documents do not hold the answer.
pub const NO_ANSWER: &str = "I don't know based on the provided documents.";
