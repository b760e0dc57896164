//! The one answer runner: retrieval, prompt, admission to the generator's
//! queue, and the stream of answer events every front end renders.
//!
//! Like text-embeddings-inference's `Infer`, this crate owns the queue and
//! the stream; the CLI drains an [`AnswerStream`] on its thread, and the HTTP
//! routes (`/v1/ask` as JSON or SSE, chat completions, the web page) only
//! render its events. Dropping the stream cancels the generation.

use crate::NO_ANSWER;
use crate::answer::{
    AnswerAssembler, AnswerStyle, AskRequest, AskResponse, Citation, Followups, Prepared,
    QuerySettings, Timings,
};
use crate::conversation;
use crate::prompt::{PromptBuilder, PromptTemplates};
use crate::retrieve::{Lookup, Purpose, RetrievalSettings, Retriever, ms};
use docent_core::{
    ChatMessage, Embedder, Error, GenerationEvent, GenerationRequest, Generator, Reranker, Result,
    SamplingParams, ScoredChunk, SearchFilter, SearchMode, VectorStore,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// What an answer yields, in order: `Citations` once (the passages shown to
/// the model, numbered as in the prompt), `Piece`s of checked answer text,
/// then `Done` with the whole response, or `Failed`. Nothing follows the end.
#[derive(Debug)]
pub enum AnswerEvent {
    Citations(Vec<Citation>),
    Piece(String),
    Done(Box<AskResponse>),
    Failed(Error),
}

impl AnswerEvent {
    /// How the answer ended, for the last event (`Done` or `Failed`).
    fn into_end(self) -> Option<Result<AskResponse>> {
        match self {
            AnswerEvent::Done(response) => Some(Ok(*response)),
            AnswerEvent::Failed(error) => Some(Err(error)),
            AnswerEvent::Citations(_) | AnswerEvent::Piece(_) => None,
        }
    }
}

/// A stream that ended before `Done` or `Failed` (a bug, not a user error).
fn unfinished() -> Error {
    Error::Internal {
        message: "the answer ended without finishing".into(),
        source: None,
    }
}

/// Most tokens a rewritten question may take.
const REWRITE_TOKENS: usize = 64;

/// A follow-up question made searchable on its own.
#[derive(Clone, Debug)]
pub struct Rewrite {
    /// What retrieval searches for: the earlier question followed by the
    /// model's rewrite of the follow-up (or by the follow-up as asked, when
    /// the rewrite was unusable or not asked for).
    /// (The answer prompt still asks the follow-up as asked, after the
    /// earlier turns: qwen2.5-0.5b's rewrites are sometimes another
    /// question altogether, docs/quality.md, session 12.)
    pub query: String,
    /// Whether the model's rewrite is in the query.
    pub by_model: bool,
    /// Time the model took.
    pub ms: f64,
}

/// Answers questions: retrieval, prompt, generation, citations.
pub struct Asker {
    retriever: Retriever,
    generator: Arc<dyn Generator>,
    /// The prompt of each answer style.
    concise: PromptBuilder,
    detailed: PromptBuilder,
    settings: QuerySettings,
}

impl Asker {
    pub fn new(
        embedder: Arc<dyn Embedder>,
        store: Arc<dyn VectorStore>,
        generator: Arc<dyn Generator>,
        settings: QuerySettings,
        retrieval: RetrievalSettings,
    ) -> Self {
        Asker {
            retriever: Retriever::new(embedder, store, retrieval),
            generator,
            concise: PromptBuilder::new(PromptTemplates::for_style(AnswerStyle::Concise)),
            detailed: PromptBuilder::new(PromptTemplates::for_style(AnswerStyle::Detailed)),
            settings,
        }
    }

    /// Reorders each question's best `candidates` fused hits by a
    /// cross-encoder before answers are widened and generated.
    pub fn with_reranker(mut self, model: Arc<dyn Reranker>, candidates: usize) -> Self {
        self.retriever = self.retriever.with_reranker(model, candidates);
        self
    }

    pub fn settings(&self) -> &QuerySettings {
        &self.settings
    }

    /// The reranker's model, when one is configured.
    pub fn reranker_model(&self) -> Option<&str> {
        self.retriever.reranker_model()
    }

    /// The generation model answers are reported under.
    pub fn model_id(&self) -> &str {
        self.generator.model_id()
    }

    /// Generations waiting in the model's queue (not yet started).
    pub fn queue_depth(&self) -> usize {
        self.generator.queue_depth()
    }

    /// Generations stopped early because their consumer went away.
    pub fn cancelled(&self) -> u64 {
        self.generator.cancelled()
    }

    /// Ranked chunks as stored, without generation. Blocking (embeds the query).
    pub fn search(
        &self,
        query: &str,
        top_k: usize,
        filter: &SearchFilter,
        mode: Option<SearchMode>,
        rerank: Option<bool>,
    ) -> Result<Vec<ScoredChunk>> {
        if query.trim().is_empty() {
            return Err(Error::InvalidInput("query: must not be empty".into()));
        }
        let lookup = Lookup {
            filter: filter.clone(),
            mode,
            rerank,
            ..Lookup::new(top_k, Purpose::Search)
        };
        Ok(self.retriever.retrieve(query, &lookup)?.passages)
    }

    /// Retrieves passages, builds the prompt and queues the generation.
    /// Blocking (embeds the question); errors, including a full queue
    /// (`Error::Overloaded`), come back before any event.
    pub fn start(&self, request: &AskRequest) -> Result<AnswerStream> {
        // Refuse before retrieval and reranking when the answer could not be
        // queued anyway: under load, a refusal should cost nothing.
        if !self.generator.has_room() {
            return Err(Error::Overloaded(
                "the generation queue is full; retry shortly".into(),
            ));
        }
        let prepared = self.prepare(request)?;
        let assembler = AnswerAssembler::new(self.generator.model_id(), &prepared, &self.settings);
        let mut pending = VecDeque::from([AnswerEvent::Citations(assembler.citations().to_vec())]);
        let rewritten_query = prepared.rewritten.clone();
        if prepared.passages.is_empty() {
            pending.push_back(AnswerEvent::Piece(NO_ANSWER.to_string()));
            pending.push_back(AnswerEvent::Done(Box::new(
                assembler.finish_without_generation(),
            )));
            return Ok(AnswerStream {
                pending,
                generation: None,
                rewritten_query,
            });
        }
        let events = self.generator.generate(GenerationRequest {
            probe: assembler.probe(&prepared.messages, &prepared.question),
            messages: prepared.messages,
            sampling: request.sampling.clone(),
        })?;
        Ok(AnswerStream {
            pending,
            generation: Some(Generation {
                events,
                assembler,
                started: Instant::now(),
            }),
            rewritten_query,
        })
    }

    /// Answers a question on this thread, handing each event to `on_event`
    /// as it comes. Blocking: call it from a thread that may wait on the models.
    pub fn ask(
        &self,
        request: &AskRequest,
        mut on_event: impl FnMut(&AnswerEvent),
    ) -> Result<AskResponse> {
        let mut stream = self.start(request)?;
        while let Some(event) = stream.blocking_next() {
            on_event(&event);
            if let Some(end) = event.into_end() {
                return end;
            }
        }
        Err(unfinished())
    }

    /// The standalone form of a follow-up `question`, written by the
    /// generation model from `history` (user and assistant turns, oldest
    /// first); when the model's rewrite is unusable
    /// ([`conversation::clean_rewrite`]), the search joins the earlier
    /// question to the follow-up instead. `None` when there is no need (no
    /// history, or the question stands alone:
    /// [`conversation::needs_rewrite`]) or rewriting is off. Blocking;
    /// takes a place in the generator's queue (`Error::Overloaded` when full).
    pub fn rewrite(&self, question: &str, history: &[ChatMessage]) -> Result<Option<Rewrite>> {
        self.rewrite_cleaned(question, &conversation::clean_history(history))
    }

    /// [`Asker::rewrite`] on a history already through
    /// [`conversation::clean_history`].
    fn rewrite_cleaned(&self, question: &str, history: &[ChatMessage]) -> Result<Option<Rewrite>> {
        if !conversation::needs_rewrite(question, history) {
            return Ok(None);
        }
        match self.settings.followups {
            Followups::Off => return Ok(None),
            Followups::Join => {
                return Ok(Some(Rewrite {
                    query: conversation::context_query(question, history),
                    by_model: false,
                    ms: 0.0,
                }));
            }
            Followups::Rewrite => {}
        }
        let started = Instant::now();
        let mut events = self.generator.generate(GenerationRequest {
            messages: conversation::rewrite_messages(question, history),
            sampling: SamplingParams {
                max_tokens: REWRITE_TOKENS,
                temperature: 0.0,
                top_p: None,
                seed: 0,
            },
            probe: None,
        })?;
        let mut text = String::new();
        while let Some(event) = events.blocking_recv() {
            match event {
                GenerationEvent::Text(piece) => text.push_str(&piece),
                GenerationEvent::Probe { .. } => {}
                GenerationEvent::Done { .. } => break,
                GenerationEvent::Failed(error) => return Err(error),
            }
        }
        let accepted = conversation::clean_rewrite(&text, question, history);
        Ok(Some(Rewrite {
            query: conversation::context_query(accepted.as_deref().unwrap_or(question), history),
            by_model: accepted.is_some(),
            ms: ms(started),
        }))
    }

    /// Retrieves passages and builds the prompt. Blocking (embeds the question).
    fn prepare(&self, request: &AskRequest) -> Result<Prepared> {
        let question = request.question.trim();
        if question.is_empty() {
            return Err(Error::InvalidInput("question: must not be empty".into()));
        }
        let history = conversation::clean_history(&request.history);
        let rewrite = self.rewrite_cleaned(question, &history)?;
        let query = rewrite.as_ref().map_or(question, |r| r.query.as_str());
        let top_k = request.top_k.unwrap_or(self.settings.top_k).max(1);
        let lookup = Lookup {
            filter: request.filter.clone(),
            mode: request.mode,
            rerank: request.rerank,
            ..Lookup::new(top_k, Purpose::Answer)
        };
        let mut retrieval = self.retriever.retrieve(query, &lookup)?;
        // The reranker's gate: nothing the cross-encoder judged relevant
        // enough means the documents do not cover the question.
        if crate::answer::reranker_refuses(
            self.settings.min_rerank_score,
            self.settings.rerank_gate_spares_similarity,
            retrieval.best_rerank_score,
            retrieval.best_similarity,
        ) {
            retrieval.passages.clear();
        }
        crate::answer::drop_unrelated(
            &mut retrieval.passages,
            self.settings.context_min_rerank_score,
        );
        let room = self
            .generator
            .context_length()
            .saturating_sub(request.sampling.max_tokens);
        let budget = self.settings.max_prompt_tokens.min(room);
        let prompts = match request.answer_style.unwrap_or(self.settings.answer_style) {
            AnswerStyle::Concise => &self.concise,
            AnswerStyle::Detailed => &self.detailed,
        };
        let history = conversation::trim_history(
            &history,
            self.generator.as_ref(),
            self.settings.history_tokens.min(budget / 2),
        )?;
        let (messages, passages) = prompts.build_with_history(
            question,
            &history,
            &retrieval.passages,
            self.generator.as_ref(),
            budget,
            room,
        )?;
        Ok(Prepared {
            question: question.to_string(),
            rewritten: rewrite.as_ref().map(|r| r.query.clone()),
            messages,
            passages,
            timings: Timings {
                embed: retrieval.embed_ms,
                search: retrieval.search_ms,
                rerank: retrieval.rerank_ms,
                rewrite: rewrite.as_ref().map_or(0.0, |r| r.ms),
                ..Default::default()
            },
            best_similarity: retrieval.best_similarity,
            best_rerank_score: retrieval.best_rerank_score,
        })
    }
}

/// A generation in progress and the assembler checking its text.
struct Generation {
    events: mpsc::Receiver<GenerationEvent>,
    assembler: AnswerAssembler,
    started: Instant,
}

/// An answer whose passages are chosen and whose generation is admitted.
/// Pull its events with [`AnswerStream::next`] (async) or
/// [`AnswerStream::blocking_next`]; dropping it cancels the generation (or
/// makes the model thread skip it, if it is still queued).
pub struct AnswerStream {
    pending: VecDeque<AnswerEvent>,
    generation: Option<Generation>,
    rewritten_query: Option<String>,
}

impl AnswerStream {
    /// The standalone question used, when a follow-up was rewritten (known
    /// before any event).
    pub fn rewritten_query(&self) -> Option<&str> {
        self.rewritten_query.as_deref()
    }

    /// The next event; `None` after `Done` or `Failed`.
    pub async fn next(&mut self) -> Option<AnswerEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let generation = self.generation.as_mut()?;
            let event = generation.events.recv().await;
            self.take(event);
        }
    }

    /// Like [`AnswerStream::next`], waiting on this thread (not on an async runtime).
    pub fn blocking_next(&mut self) -> Option<AnswerEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let generation = self.generation.as_mut()?;
            let event = generation.events.blocking_recv();
            self.take(event);
        }
    }

    /// Waits for the whole answer.
    pub async fn finish(mut self) -> Result<AskResponse> {
        while let Some(event) = self.next().await {
            if let Some(end) = event.into_end() {
                return end;
            }
        }
        Err(unfinished())
    }

    /// Turns one generator event (`None`: the model thread went away) into
    /// answer events; ends the generation on the last one.
    fn take(&mut self, event: Option<GenerationEvent>) {
        let Some(generation) = self.generation.as_mut() else {
            return;
        };
        let end = match event {
            Some(GenerationEvent::Probe {
                logprob,
                prompt_tokens,
                prompt_eval_ms,
            }) => {
                let abstain = generation
                    .assembler
                    .measured(logprob, prompt_tokens, prompt_eval_ms);
                if !abstain {
                    return;
                }
                End::Abstained
            }
            Some(GenerationEvent::Text(text)) => {
                let shown = generation.assembler.push(&text);
                if !shown.is_empty() {
                    self.pending.push_back(AnswerEvent::Piece(shown));
                }
                return;
            }
            Some(GenerationEvent::Done { stats, finish }) => {
                let tail = generation.assembler.flush();
                if !tail.is_empty() {
                    self.pending.push_back(AnswerEvent::Piece(tail));
                }
                End::Answered(stats, finish)
            }
            Some(GenerationEvent::Failed(error)) => End::Failed(error),
            None => End::Failed(Error::Unavailable {
                message: format!(
                    "the generation thread stopped after {:.0} ms without finishing",
                    ms(generation.started)
                ),
                source: None,
            }),
        };
        // Taking the generation drops its receiver, which stops the model
        // (an abstention ends it before any text).
        let Some(Generation { assembler, .. }) = self.generation.take() else {
            return;
        };
        let last = match end {
            End::Answered(stats, finish) => {
                AnswerEvent::Done(Box::new(assembler.finish(stats, finish)))
            }
            End::Abstained => {
                self.pending
                    .push_back(AnswerEvent::Piece(NO_ANSWER.to_string()));
                AnswerEvent::Done(Box::new(assembler.finish_abstained()))
            }
            End::Failed(error) => AnswerEvent::Failed(error),
        };
        self.pending.push_back(last);
    }
}

/// How a generation ended.
enum End {
    Answered(docent_core::GenerationStats, docent_core::FinishReason),
    Abstained,
    Failed(Error),
}
