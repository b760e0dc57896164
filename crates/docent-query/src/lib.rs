//! Question answering over a store: retrieve, budget a prompt, generate, cite.
//!
//! This crate owns everything between a question and a cited answer, and
//! nothing about how it is served: [`Asker::start`] runs one answer and
//! yields its events ([`AnswerStream`]: citations, text pieces, done); the
//! CLI drains it with [`Asker::ask`] and the HTTP routes render it as JSON,
//! SSE or OpenAI chunks. Prompt text lives in template files under
//! `prompts/`, snapshot-tested.

mod answer;
mod citations;
pub mod conversation;
mod prompt;
mod retrieve;
mod runner;

pub use answer::{
    AbstainCheck, AnswerStyle, AskRequest, AskResponse, Citation, QuerySettings, Timings,
    UNCALIBRATED_ABSTAIN_THRESHOLD, Usage, is_abstention, reranker_refuses,
};
pub use citations::CitationFilter;
pub use prompt::{PromptBuilder, PromptTemplates};
pub use retrieve::{
    Lookup, Purpose, Retrieval, RetrievalSettings, Retriever, blended_order, collapse_duplicates,
};
pub use runner::{AnswerEvent, AnswerStream, Asker, Rewrite};

/// The fixed sentence docent answers when the documents do not hold the answer.
pub const NO_ANSWER: &str = "I don't know based on the provided documents.";

/// What the crate's unit tests share.
#[cfg(test)]
mod testing {
    use docent_core::{ChatMessage, GenerationEvent, GenerationRequest, Generator, Result};

    /// Counts whitespace-separated words as tokens: enough to test budgeting.
    pub struct WordCounter;

    impl Generator for WordCounter {
        fn model_id(&self) -> &str {
            "words"
        }
        fn context_length(&self) -> usize {
            4096
        }
        fn count_tokens(&self, text: &str) -> Result<usize> {
            Ok(text.split_whitespace().count())
        }
        fn template_overhead(&self, messages: &[ChatMessage]) -> Result<usize> {
            Ok(messages.len() * 4)
        }
        fn generate(
            &self,
            _: GenerationRequest,
        ) -> Result<tokio::sync::mpsc::Receiver<GenerationEvent>> {
            unreachable!("budget tests do not generate")
        }
    }
}
