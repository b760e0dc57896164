//! What an answer is made of: the request and response types, and the
//! assembler that turns streamed generator text into a checked, cited answer
//! (marker filtering, attribution, abstention). The runner that drives it is
//! in `runner.rs`; this module has no I/O.

use crate::NO_ANSWER;
use crate::citations::CitationFilter;
use docent_core::{
    ChatMessage, FinishReason, GenerationStats, Probe, SamplingParams, ScoredChunk, SearchFilter,
    SearchMode,
};
use serde::{Deserialize, Serialize};

/// Retrieval and prompt settings (the `[query]` section of the config).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySettings {
    /// Passages retrieved per question.
    pub top_k: usize,
    /// Most tokens the prompt may take (passages, question and template).
    pub max_prompt_tokens: usize,
    /// The answer is "I don't know" when the model's own probability of
    /// abstaining (as `abstain_check` measures it) reaches this. 0 turns the
    /// check off; above 1 it is measured (and reported) but never decides.
    /// `None`: the value calibrated for the generation model and this
    /// check (its `[model.abstention]` in config/models.toml, which the
    /// application fills in), else [`UNCALIBRATED_ABSTAIN_THRESHOLD`].
    #[serde(default)]
    pub abstain_threshold: Option<f32>,
    /// Which probability `abstain_threshold` applies to. `None`: the check
    /// calibrated for the generation model, else `reply`.
    #[serde(default)]
    pub abstain_check: Option<AbstainCheck>,
    /// When the reranker ran and no passage's cross-encoder score reaches
    /// this, the answer is "I don't know" without asking the model (a gate
    /// for questions the documents do not cover). `None`: no such gate.
    #[serde(default)]
    pub min_rerank_score: Option<f32>,
    /// The reranker gate spares questions whose best passage reaches this
    /// cosine similarity: the cross-encoder, trained on web search
    /// queries, scores requests such as "Describe the vacation policy in
    /// detail." low even against the passage that answers them. `None`:
    /// the gate spares none.
    #[serde(default)]
    pub rerank_gate_spares_similarity: Option<f32>,
    /// Passages the reranker scored below this are left out of the prompt
    /// (the best passage always stays): text the cross-encoder judged
    /// unrelated to the question only distracts a small model. `None`:
    /// every passage that fits goes in.
    #[serde(default)]
    pub context_min_rerank_score: Option<f32>,
    /// How answers are written (changeable per request).
    #[serde(default)]
    pub answer_style: AnswerStyle,
    /// How a follow-up question (one that leans on the earlier turns) is
    /// made searchable.
    #[serde(default)]
    pub followups: Followups,
    /// Most tokens of earlier turns in the answer prompt (oldest dropped first).
    #[serde(default = "history_tokens")]
    pub history_tokens: usize,
}

fn history_tokens() -> usize {
    256
}

/// The abstention threshold of a model nobody calibrated (one without an
/// `abstain_threshold` in the manifest, or a remote one): qwen2.5-0.5b's
/// value, a starting point for `docent eval answers --model`.
pub const UNCALIBRATED_ABSTAIN_THRESHOLD: f32 = 0.05;

impl QuerySettings {
    /// The abstention threshold in force: the configured one, else
    /// [`UNCALIBRATED_ABSTAIN_THRESHOLD`].
    pub fn abstain_threshold(&self) -> f32 {
        self.abstain_threshold
            .unwrap_or(UNCALIBRATED_ABSTAIN_THRESHOLD)
    }

    /// The abstention check in force: the configured one, else `reply`.
    pub fn abstain_check(&self) -> AbstainCheck {
        self.abstain_check.unwrap_or_default()
    }
}

/// Drops the passages after the first whose cross-encoder score is below
/// `floor` (`[query] context_min_rerank_score`); passages without a score
/// (the reranker did not run) stay.
pub fn drop_unrelated(passages: &mut Vec<ScoredChunk>, floor: Option<f32>) {
    let Some(floor) = floor else { return };
    let mut first = true;
    passages.retain(|p| {
        let keep = first || p.rerank_score.is_none_or(|s| s >= floor);
        first = false;
        keep
    });
}

/// The reranker gate (`min_rerank_score`, spared from
/// `rerank_gate_spares_similarity`): true when the reranker ran, its best
/// score is below the floor, and no passage is close enough by cosine
/// similarity to spare the question. The runner and `docent eval answers`
/// decide by it.
pub fn reranker_refuses(
    min_rerank_score: Option<f32>,
    spares_similarity: Option<f32>,
    best_rerank_score: Option<f32>,
    best_similarity: Option<f32>,
) -> bool {
    let below = min_rerank_score.is_some_and(|f| best_rerank_score.is_some_and(|b| b < f));
    let spared = spares_similarity.is_some_and(|s| best_similarity.is_some_and(|b| b >= s));
    below && !spared
}

/// How an answer is written.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerStyle {
    /// The answer itself in a few words with its citation, then at most one
    /// short sentence of support.
    #[default]
    Concise,
    /// A few sentences, each fact cited.
    Detailed,
}

/// How a follow-up question is made searchable (`query.followups`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Followups {
    /// The generation model rewrites it to stand alone; the search is the
    /// earlier question followed by the rewrite (or by the follow-up, when
    /// the rewrite resolves nothing).
    Rewrite,
    /// The search is the earlier question followed by the follow-up; no
    /// model call. The default: with qwen2.5-0.5b it finds as much as the
    /// rewrite, costs nothing, and loses nothing when the user changed the
    /// subject (docs/quality.md, session 12).
    #[default]
    Join,
    /// The follow-up is searched as asked.
    Off,
}

/// How the model is asked whether the passages hold the answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AbstainCheck {
    /// P(the answer starts with "I don't know"), measured on the answer
    /// prompt itself.
    #[default]
    Reply,
    /// P("No") after the same prompt with its question followed by "Do the
    /// passages above contain the answer to this question?" (the cache
    /// shares everything up to that line).
    Support,
}

impl AbstainCheck {
    /// `reply` or `support`, as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            AbstainCheck::Reply => "reply",
            AbstainCheck::Support => "support",
        }
    }

    /// The check named `reply` or `support` (as [`AbstainCheck::as_str`]
    /// writes it).
    pub fn parse(name: &str) -> Option<Self> {
        [AbstainCheck::Reply, AbstainCheck::Support]
            .into_iter()
            .find(|c| c.as_str() == name)
    }
}

/// The reply start whose probability decides abstention: [`NO_ANSWER`]'s.
pub const ABSTAIN_PROBE: &str = "I don't know";
/// The reply to the support question that means "no answer here".
pub const SUPPORT_PROBE: &str = "No";

impl Default for QuerySettings {
    fn default() -> Self {
        QuerySettings {
            top_k: 3,
            max_prompt_tokens: 2048,
            abstain_threshold: Some(0.0),
            abstain_check: Some(AbstainCheck::Reply),
            min_rerank_score: None,
            rerank_gate_spares_similarity: None,
            context_min_rerank_score: None,
            answer_style: AnswerStyle::Concise,
            followups: Followups::default(),
            history_tokens: history_tokens(),
        }
    }
}

/// One question.
#[derive(Clone, Debug)]
pub struct AskRequest {
    pub question: String,
    pub top_k: Option<usize>,
    pub filter: SearchFilter,
    /// Overrides the configured search mode.
    pub mode: Option<SearchMode>,
    /// Whether the reranker reorders the candidates (default: when configured).
    pub rerank: Option<bool>,
    /// Overrides the configured answer style.
    pub answer_style: Option<AnswerStyle>,
    /// Earlier turns of the conversation, oldest first (user and assistant
    /// messages; the question itself is not among them).
    pub history: Vec<ChatMessage>,
    pub sampling: SamplingParams,
}

/// A passage the answer rests on.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    /// The number of the passage in the prompt, as used in `[n]` markers.
    pub n: usize,
    pub document_id: String,
    pub source: String,
    pub chunk_id: String,
    /// Byte offsets into the extracted text of the source.
    pub start: usize,
    pub end: usize,
    pub line_start: usize,
    pub line_end: usize,
    pub heading: Option<String>,
    /// 1-based page, for paged formats (PDF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// The ranking score (fused in hybrid mode).
    pub score: f32,
    /// Cosine similarity between the question and the passage.
    #[serde(default)]
    pub similarity: f32,
    /// The reranker's relevance logit, when the passage was reranked (it
    /// then decided the order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank_score: Option<f32>,
    /// Whether the answer rests on this passage: it cites it with an `[n]`
    /// marker, or, when the answer has no valid marker at all, the passage
    /// holds most (at least 60%) of the answer's content words.
    pub cited: bool,
    pub text: String,
}

/// Where time went, in milliseconds.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub embed: f64,
    pub search: f64,
    /// The cross-encoder (0 when it did not run).
    #[serde(default)]
    pub rerank: f64,
    pub prompt_eval: f64,
    pub generate: f64,
    /// Rewriting a follow-up question (0 when it was not rewritten).
    #[serde(default)]
    pub rewrite: f64,
}

/// Token counts of the generation.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose keys and values came from the model's cache (the
    /// part shared with the previous prompt, such as the system rules)
    /// rather than being evaluated again.
    #[serde(default)]
    pub cached_prompt_tokens: usize,
}

/// A finished answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AskResponse {
    pub answer: String,
    /// False when docent could not answer from the documents.
    pub answerable: bool,
    pub citations: Vec<Citation>,
    pub model: String,
    pub timings_ms: Timings,
    pub usage: Usage,
    pub finish_reason: Option<FinishReason>,
    /// The model's probability of abstaining, as `[query] abstain_check`
    /// measures it, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abstain_probability: Option<f32>,
    /// The standalone question retrieval and the answer used, when a
    /// follow-up was rewritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewritten_query: Option<String>,
    /// The best cosine similarity of any retrieved passage to the question
    /// (what `[retrieval] score_floor` gates on), also when it abstained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_similarity: Option<f32>,
    /// The best cross-encoder score of the reranked passages (what
    /// `[query] min_rerank_score` gates on), when the reranker ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_rerank_score: Option<f32>,
}

/// Retrieval done and prompt built, ready to generate.
pub(crate) struct Prepared {
    /// The question answered (trimmed; the standalone rewrite of a follow-up).
    pub question: String,
    /// Set when `question` is a rewrite of what was asked.
    pub rewritten: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub passages: Vec<ScoredChunk>,
    pub timings: Timings,
    /// What the abstention gates measured (see [`AskResponse`]).
    pub best_similarity: Option<f32>,
    pub best_rerank_score: Option<f32>,
}

/// Turns streamed generator text into a checked, cited answer.
pub(crate) struct AnswerAssembler {
    model: String,
    citations: Vec<Citation>,
    filter: CitationFilter,
    answer: String,
    timings: Timings,
    abstain_threshold: f32,
    abstain_check: AbstainCheck,
    abstain_probability: Option<f32>,
    prompt_tokens: usize,
    rewritten: Option<String>,
    best_similarity: Option<f32>,
    best_rerank_score: Option<f32>,
}

impl AnswerAssembler {
    pub fn new(model: &str, prepared: &Prepared, settings: &QuerySettings) -> Self {
        let citations = prepared
            .passages
            .iter()
            .enumerate()
            .map(|(i, p)| Citation {
                n: i + 1,
                document_id: p.chunk.document_id.0.clone(),
                source: p.chunk.source.clone(),
                chunk_id: p.chunk.id.to_string(),
                start: p.chunk.start,
                end: p.chunk.end,
                line_start: p.chunk.line_start,
                line_end: p.chunk.line_end,
                heading: p.chunk.heading.clone(),
                page: p.chunk.page,
                score: p.score,
                similarity: p.similarity,
                rerank_score: p.rerank_score,
                cited: false,
                text: p.chunk.text.clone(),
            })
            .collect::<Vec<_>>();
        AnswerAssembler {
            model: model.to_string(),
            filter: CitationFilter::new(citations.len()).with_evidence(
                &prepared.question,
                citations.iter().map(|c| c.text.as_str()),
            ),
            citations,
            answer: String::new(),
            timings: prepared.timings.clone(),
            abstain_threshold: settings.abstain_threshold(),
            abstain_check: settings.abstain_check(),
            abstain_probability: None,
            prompt_tokens: 0,
            rewritten: prepared.rewritten.clone(),
            best_similarity: prepared.best_similarity,
            best_rerank_score: prepared.best_rerank_score,
        }
    }

    /// What to ask the generator to measure (`GenerationRequest::probe`)
    /// along with the answer to `messages`.
    pub fn probe(&self, messages: &[ChatMessage], question: &str) -> Option<Probe> {
        if self.abstain_threshold <= 0.0 {
            return None;
        }
        Some(match self.abstain_check {
            AbstainCheck::Reply => Probe {
                text: ABSTAIN_PROBE.to_string(),
                messages: None,
            },
            AbstainCheck::Support => Probe {
                text: SUPPORT_PROBE.to_string(),
                messages: Some(crate::prompt::support_messages(messages, question)),
            },
        })
    }

    /// Takes the generator's `Probe` event. True when the model's probability
    /// of abstaining reaches the threshold: the caller then stops generating
    /// and calls [`AnswerAssembler::finish_abstained`].
    pub fn measured(&mut self, logprob: f32, prompt_tokens: usize, prompt_eval_ms: f64) -> bool {
        let p = logprob.exp();
        self.abstain_probability = Some(p);
        self.prompt_tokens = prompt_tokens;
        self.timings.prompt_eval = prompt_eval_ms;
        p >= self.abstain_threshold
    }

    /// The answer when the model would rather abstain: [`NO_ANSWER`], no
    /// passage cited.
    pub fn finish_abstained(self) -> AskResponse {
        let usage = Usage {
            prompt_tokens: self.prompt_tokens,
            ..Usage::default()
        };
        self.no_answer(usage, Some(FinishReason::Stop))
    }

    /// The passages shown to the model, numbered as in the prompt.
    pub fn citations(&self) -> &[Citation] {
        &self.citations
    }

    /// Feeds generated text; returns the part that may be shown now.
    pub fn push(&mut self, text: &str) -> String {
        let shown = self.filter.push(text);
        self.answer.push_str(&shown);
        shown
    }

    /// Releases text held back at the end of the stream.
    pub fn flush(&mut self) -> String {
        let tail = self.filter.finish();
        self.answer.push_str(&tail);
        tail
    }

    pub fn finish(mut self, stats: GenerationStats, finish: FinishReason) -> AskResponse {
        for n in self.filter.cited() {
            self.citations[n - 1].cited = true;
        }
        let answer = self.answer.trim().to_string();
        let answerable = !is_abstention(&answer);
        if answerable && self.filter.cited().is_empty() {
            // Small models often answer without any [n] marker; cite the
            // passage the answer's words come from, if one clearly holds them.
            if let Some(i) = self.filter.attribute(&answer) {
                self.citations[i].cited = true;
            }
        }
        self.timings.prompt_eval = stats.prompt_eval_ms;
        self.timings.generate = stats.generate_ms;
        AskResponse {
            answer: if answer.is_empty() {
                NO_ANSWER.to_string()
            } else {
                answer
            },
            answerable: answerable && !self.answer.trim().is_empty(),
            citations: self.citations,
            model: self.model,
            timings_ms: self.timings,
            usage: Usage {
                prompt_tokens: stats.prompt_tokens,
                completion_tokens: stats.completion_tokens,
                cached_prompt_tokens: stats.cached_prompt_tokens,
            },
            finish_reason: Some(finish),
            abstain_probability: self.abstain_probability,
            rewritten_query: self.rewritten,
            best_similarity: self.best_similarity,
            best_rerank_score: self.best_rerank_score,
        }
    }

    /// The answer when no passage was relevant: the model is not asked.
    pub fn finish_without_generation(self) -> AskResponse {
        self.no_answer(Usage::default(), None)
    }

    fn no_answer(self, usage: Usage, finish_reason: Option<FinishReason>) -> AskResponse {
        AskResponse {
            answer: NO_ANSWER.to_string(),
            answerable: false,
            citations: self.citations,
            model: self.model,
            timings_ms: self.timings,
            usage,
            finish_reason,
            abstain_probability: self.abstain_probability,
            rewritten_query: self.rewritten,
            best_similarity: self.best_similarity,
            best_rerank_score: self.best_rerank_score,
        }
    }
}

/// Whether an answer says the documents do not hold the answer.
pub fn is_abstention(answer: &str) -> bool {
    let head: String = answer
        .chars()
        .take(120)
        .collect::<String>()
        .to_lowercase()
        .replace('’', "'");
    [
        "i don't know",
        "i do not know",
        "don't contain",
        "do not contain",
        "does not contain",
        "doesn't contain",
        "not mentioned",
        "no information",
    ]
    .iter()
    .any(|p| head.contains(p))
}

/// A set of content words.
pub(crate) type Words = std::collections::HashSet<String>;

/// Content words (lowercase, alphanumeric, stop words and one-letter
/// tokens dropped).
pub(crate) fn content_words(text: &str) -> Words {
    const STOP: &[&str] = &[
        "the", "a", "an", "and", "or", "of", "to", "in", "on", "at", "for", "by", "with", "from",
        "is", "are", "was", "were", "be", "been", "it", "its", "as", "that", "this", "which",
        "who", "what", "when", "where", "how", "why", "their", "they", "he", "she", "his", "her",
        "has", "have", "had", "not", "no", "but", "also", "than", "then", "there", "these",
        "those", "into", "about", "such", "can", "could", "would", "will", "do", "does", "did",
    ];
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() > 1)
        .map(str::to_lowercase)
        .filter(|w| !STOP.contains(&w.as_str()))
        .collect()
}

/// The content words of a question and of the passages shown with it,
/// computed once: what an answer's words are checked against.
#[derive(Debug)]
pub(crate) struct Evidence {
    question: Words,
    pub(crate) passages: Vec<Words>,
}

impl Evidence {
    pub(crate) fn new<'a>(question: &str, passages: impl IntoIterator<Item = &'a str>) -> Self {
        Evidence {
            question: content_words(question),
            passages: passages.into_iter().map(content_words).collect(),
        }
    }

    /// `text`'s content words, and its own: those the question does not
    /// contain.
    pub(crate) fn words(&self, text: &str) -> (Words, Words) {
        let words = content_words(text);
        let own = words.difference(&self.question).cloned().collect();
        (words, own)
    }

    /// The passage (0-based) an answer without markers most likely comes
    /// from.
    ///
    /// Answers often restate the question ("The steam engine's thermodynamic
    /// basis is the Rankine cycle."), and the restated words are in every
    /// passage on the topic, so the answer's own words are tried first: its
    /// content words that the question does not contain. The passage holding
    /// the largest share of them wins if that share is at least 60%; ties go to
    /// the better-ranked passage. When no passage holds enough of them (the
    /// answer's new words may be paraphrase), all its content words are tried
    /// the same way. `None` when no passage clearly supports the answer.
    pub(crate) fn attribute(&self, answer: &str) -> Option<usize> {
        let (words, own) = self.words(answer);
        best_holder(&own, &self.passages).or_else(|| best_holder(&words, &self.passages))
    }
}

/// The share of `words` a passage must hold to support them.
pub(crate) const MIN_SHARE: f64 = 0.6;

/// The share of `words` that `passage` holds (0 for no words).
pub(crate) fn share(words: &Words, passage: &Words) -> f64 {
    if words.is_empty() {
        return 0.0;
    }
    words.iter().filter(|w| passage.contains(*w)).count() as f64 / words.len() as f64
}

/// The passage holding the largest share (at least [`MIN_SHARE`]) of
/// `words`; ties go to the first.
pub(crate) fn best_holder(words: &Words, passages: &[Words]) -> Option<usize> {
    if words.is_empty() {
        return None;
    }
    let mut best: Option<(usize, f64)> = None;
    for (i, passage) in passages.iter().enumerate() {
        let share = share(words, passage);
        if share >= MIN_SHARE && best.is_none_or(|(_, b)| share > b) {
            best = Some((i, share));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(answer: &str, question: &str, citations: &[Citation]) -> Option<usize> {
        Evidence::new(question, citations.iter().map(|c| c.text.as_str())).attribute(answer)
    }

    #[test]
    fn unrelated_passages_leave_the_prompt_but_the_best_stays() {
        let chunk = |rerank: Option<f32>| ScoredChunk {
            chunk: docent_core::Chunk::default(),
            score: 1.0,
            similarity: 0.5,
            rerank_score: rerank,
        };
        let scores = |p: &[ScoredChunk]| p.iter().map(|c| c.rerank_score).collect::<Vec<_>>();
        let mut passages = vec![chunk(Some(7.0)), chunk(Some(-5.0)), chunk(Some(-11.0))];
        drop_unrelated(&mut passages, Some(-6.0));
        assert_eq!(scores(&passages), vec![Some(7.0), Some(-5.0)]);
        // The best passage stays even below the floor (the gate decides
        // whether to answer at all).
        let mut weak = vec![chunk(Some(-9.0)), chunk(Some(-10.0))];
        drop_unrelated(&mut weak, Some(-6.0));
        assert_eq!(scores(&weak), vec![Some(-9.0)]);
        // Without reranking, or without a floor, nothing is dropped.
        let mut plain = vec![chunk(None), chunk(None)];
        drop_unrelated(&mut plain, Some(-6.0));
        assert_eq!(plain.len(), 2);
        let mut all = vec![chunk(Some(1.0)), chunk(Some(-11.0))];
        drop_unrelated(&mut all, None);
        assert_eq!(all.len(), 2);
    }

    fn passage(n: usize, text: &str) -> Citation {
        Citation {
            n,
            document_id: format!("d{n}"),
            source: format!("d{n}.md"),
            chunk_id: String::new(),
            start: 0,
            end: text.len(),
            line_start: 1,
            line_end: 1,
            heading: None,
            page: None,
            score: 0.5,
            similarity: 0.5,
            rerank_score: None,
            cited: false,
            text: text.to_string(),
        }
    }

    #[test]
    fn the_abstention_probe_decides_at_its_threshold() {
        let prepared = Prepared {
            question: "Who?".into(),
            rewritten: None,
            messages: vec![],
            passages: vec![],
            timings: Timings::default(),
            best_similarity: None,
            best_rerank_score: None,
        };
        let settings = |abstain_threshold, abstain_check| QuerySettings {
            abstain_threshold: Some(abstain_threshold),
            abstain_check: Some(abstain_check),
            ..QuerySettings::default()
        };
        let messages = [ChatMessage::system("rules"), ChatMessage::user("Who?")];
        let off = AnswerAssembler::new("m", &prepared, &settings(0.0, AbstainCheck::Reply));
        assert!(off.probe(&messages, "Who?").is_none());
        let mut on = AnswerAssembler::new("m", &prepared, &settings(0.05, AbstainCheck::Reply));
        let probe = on.probe(&messages, "Who?").unwrap();
        assert_eq!(probe.text, ABSTAIN_PROBE);
        assert!(probe.messages.is_none());
        assert!(!on.measured(0.04f32.ln(), 900, 12.0));
        assert!(on.measured(0.06f32.ln(), 900, 12.0));
        let response = on.finish_abstained();
        assert!(!response.answerable);
        assert_eq!(response.answer, NO_ANSWER);
        assert_eq!(response.usage.prompt_tokens, 900);
        assert!((response.abstain_probability.unwrap() - 0.06).abs() < 1e-6);
        // Above 1 the probability is measured but never decides.
        let mut measuring =
            AnswerAssembler::new("m", &prepared, &settings(2.0, AbstainCheck::Reply));
        assert!(measuring.probe(&messages, "Who?").is_some());
        assert!(!measuring.measured(0.0, 1, 1.0));
        // The support check asks its question after the same passages.
        let support = AnswerAssembler::new("m", &prepared, &settings(0.5, AbstainCheck::Support));
        let probe = support.probe(&messages, "Who?").unwrap();
        assert_eq!(probe.text, SUPPORT_PROBE);
        let asked = probe.messages.unwrap();
        assert_eq!(asked[0].content, "rules");
        assert!(
            asked[1]
                .content
                .starts_with("Who?\n\nDo the passages above contain the answer")
        );
    }

    #[test]
    fn an_answer_without_markers_is_attributed_to_the_passage_holding_its_words() {
        let passages = [
            passage(1, "Visitors park in lot C behind the warehouse."),
            passage(
                2,
                "The Rankine cycle is the thermodynamic basis of the steam engine.",
            ),
        ];
        let q = "What is the steam engine's thermodynamic basis?";
        assert_eq!(
            attribute(
                "The steam engine's thermodynamic basis is the Rankine cycle.",
                q,
                &passages
            ),
            Some(1)
        );
        assert_eq!(
            attribute("Lot C.", "Where do visitors park?", &passages),
            Some(0)
        );
        // Words found in no passage: no citation is invented.
        assert_eq!(
            attribute("Employees get twenty vacation days.", q, &passages),
            None
        );
        assert_eq!(attribute("", q, &passages), None);
    }

    #[test]
    fn words_the_answer_repeats_from_the_question_do_not_decide_its_passage() {
        let passages = [
            passage(
                1,
                "The maximum time over all inputs of size n matters for every algorithm analysis.",
            ),
            passage(2, "Complexity theory calls it the worst-case complexity."),
        ];
        let q = "What is the maximum time over all inputs of size n called?";
        let answer = "The maximum time over all inputs of size n is the worst-case complexity.";
        // Counting every word, the first passage holds 6 of 9 and would win;
        // the answer's own words (worst, case, complexity) are in the second.
        assert_eq!(attribute(answer, q, &passages), Some(1));
        // An answer made only of the question's words falls back to all of them.
        assert_eq!(
            attribute("The maximum time over all inputs of size n.", q, &passages),
            Some(0)
        );
        // So does one whose own words are paraphrase ("span", "entire" are
        // in no passage): the first passage holds 6 of its 8 words.
        assert_eq!(
            attribute(
                "The maximum time over all inputs of size n, the entire span.",
                q,
                &passages
            ),
            Some(0)
        );
    }

    #[test]
    fn abstentions_are_recognised() {
        assert!(is_abstention(NO_ANSWER));
        assert!(is_abstention(
            "I don’t know based on the provided documents."
        ));
        assert!(is_abstention(
            "The passages do not contain this information."
        ));
        assert!(!is_abstention("New employees get 20 vacation days [1]."));
    }
}
