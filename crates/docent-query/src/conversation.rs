//! Follow-up questions: deciding whether a question leans on the
//! conversation before it, the prompt that rewrites it into a standalone
//! question (`prompts/rewrite.*.prompt`), cleaning the model's rewrite, and
//! trimming the history that goes into the answer prompt.

use crate::prompt::render;
use docent_core::{ChatMessage, Generator, Result, Role};

/// Characters of the earlier question shown to the rewrite prompt.
const REWRITE_MESSAGE_CHARS: usize = 400;

/// Pronouns that point back into the conversation.
const REFERRING: &[&str] = &[
    "it",
    "its",
    "it's",
    "they",
    "them",
    "their",
    "theirs",
    "he",
    "him",
    "his",
    "she",
    "her",
    "hers",
    "there",
    "former",
    "latter",
    "aforementioned",
];

/// Demonstratives: they point back when they stand for a noun ("is that
/// free?", "when was this built?"), not when they lead one ("that first
/// church", "the plan that we chose"): so only as the last word or before
/// a verb form (an auxiliary or a past participle).
const DEMONSTRATIVES: &[&str] = &["this", "that", "these", "those"];

const AUXILIARIES: &[&str] = &[
    "is", "was", "are", "were", "be", "been", "do", "does", "did", "has", "have", "had", "can",
    "could", "will", "would", "should", "may", "might", "must", "cost", "costs", "mean", "means",
];

/// Openings that continue an earlier question ("and in 1990?", "what about X?").
const CONTINUING: &[&str] = &[
    "and ",
    "or ",
    "but ",
    "also ",
    "what about",
    "how about",
    "and what",
    "and how",
    "same ",
    "why not",
    "how so",
    "which one",
];

/// Whether `question` may lean on earlier turns: it uses a pronoun (it,
/// they, there, ...) or a demonstrative standing for a noun ("is that
/// free?"), opens like a continuation ("and ...", "what about ..."), or is
/// too short to stand alone (three words or fewer).
/// Without history nothing needs rewriting.
pub fn needs_rewrite(question: &str, history: &[ChatMessage]) -> bool {
    if !history.iter().any(|m| m.role == Role::User) {
        return false;
    }
    let lower = question.trim().to_lowercase();
    if CONTINUING.iter().any(|c| lower.starts_with(c)) {
        return true;
    }
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .collect();
    let points_back = |i: usize| {
        let w = words[i];
        if REFERRING.contains(&w) {
            return true;
        }
        if !DEMONSTRATIVES.contains(&w) {
            return false;
        }
        match words.get(i + 1) {
            None => true,
            Some(next) => AUXILIARIES.contains(next) || next.ends_with("ed"),
        }
    };
    words.len() <= 3 || (0..words.len()).any(points_back)
}

/// Removes `[n]` citation markers (they point at an earlier turn's passages).
pub fn strip_markers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && after.as_bytes().get(digits) == Some(&b']') {
            out.push_str(rest[..open].trim_end_matches(' '));
            rest = &after[digits + 1..];
        } else {
            out.push_str(&rest[..=open]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// User and assistant turns only, markers removed, empty ones dropped.
pub fn clean_history(history: &[ChatMessage]) -> Vec<ChatMessage> {
    history
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| ChatMessage {
            role: m.role,
            content: strip_markers(m.content.trim()).trim().to_string(),
        })
        .filter(|m| !m.content.is_empty())
        .collect()
}

/// The last question the user asked before this one.
pub fn earlier_question(history: &[ChatMessage]) -> Option<&str> {
    history
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
}

/// The prompt that asks the model for a standalone version of `question`,
/// given the question asked before it. (Shown whole conversations, or
/// worked examples, qwen2.5-0.5b mostly repeated the question or the
/// example: docs/quality.md, session 12.)
pub fn rewrite_messages(question: &str, history: &[ChatMessage]) -> Vec<ChatMessage> {
    let earlier: String = earlier_question(history)
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(REWRITE_MESSAGE_CHARS)
        .collect();
    let system = include_str!("../prompts/rewrite.system.prompt").trim_end();
    let user = include_str!("../prompts/rewrite.user.prompt").trim_end();
    vec![
        ChatMessage::system(system.to_string()),
        ChatMessage::user(render(
            user,
            &[("earlier", &earlier), ("question", question.trim())],
        )),
    ]
}

/// The search query when the model's rewrite is unusable: the earlier
/// question followed by the follow-up, so that what the follow-up leaves
/// out is still searched for.
pub fn context_query(question: &str, history: &[ChatMessage]) -> String {
    match earlier_question(history) {
        Some(earlier) => format!("{} {}", earlier.trim(), question.trim()),
        None => question.trim().to_string(),
    }
}

/// The model's rewrite as a question, or `None` when it is unusable: empty,
/// an answer, rambling, a repeat of an earlier question, two questions, or
/// no word of the conversation added (nothing resolved). The caller then
/// searches with [`context_query`].
pub fn clean_rewrite(raw: &str, question: &str, history: &[ChatMessage]) -> Option<String> {
    let line = raw.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut line = line;
    for prefix in [
        "Rewritten question:",
        "Standalone question:",
        "Question:",
        "Last question:",
    ] {
        if let Some(rest) = line.strip_prefix(prefix) {
            line = rest.trim();
        }
    }
    let line = line
        .trim_matches(|c| c == '"' || c == '\'' || c == '`')
        .trim();
    let words = line.split_whitespace().count();
    let original = question.split_whitespace().count();
    if words == 0 || words > original.max(4) * 3 + 12 || super::is_abstention(line) {
        return None;
    }
    // Small models sometimes repeat an earlier question instead.
    let same = |a: &str, b: &str| {
        let norm = |t: &str| {
            t.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        };
        norm(a) == norm(b)
    };
    let repeats_earlier = history
        .iter()
        .any(|m| m.role == Role::User && same(&m.content, line) && !same(&m.content, question));
    // A rewrite resolves something only if it brings in a word of the
    // conversation the follow-up did not have; one question, not two.
    let words_of = |t: &str| -> std::collections::HashSet<String> {
        t.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 2)
            .map(str::to_lowercase)
            .filter(|w| !REFERRING.contains(&w.as_str()))
            .collect()
    };
    let asked = words_of(question);
    let context: std::collections::HashSet<String> =
        history.iter().flat_map(|m| words_of(&m.content)).collect();
    let brings_context = words_of(line)
        .iter()
        .any(|w| !asked.contains(w) && context.contains(w));
    if repeats_earlier || !brings_context || line.matches('?').count() > 1 {
        return None;
    }
    Some(line.to_string())
}

/// The newest turns of `history` that fit in `budget` tokens, in order.
/// Turns are kept whole; the oldest go first.
pub fn trim_history(
    history: &[ChatMessage],
    generator: &dyn Generator,
    budget: usize,
) -> Result<Vec<ChatMessage>> {
    let mut kept = Vec::new();
    let mut used = 0;
    for message in history.iter().rev() {
        let cost = generator.count_tokens(&message.content)? + 4;
        if used + cost > budget {
            break;
        }
        used += cost;
        kept.push(message.clone());
    }
    kept.reverse();
    // A history that starts with the assistant's reply has lost its question.
    while kept.first().is_some_and(|m| m.role == Role::Assistant) {
        kept.remove(0);
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::WordCounter;

    fn turn(q: &str, a: &str) -> Vec<ChatMessage> {
        vec![
            ChatMessage::user(q.to_string()),
            ChatMessage::assistant(a.to_string()),
        ]
    }

    #[test]
    fn history_is_trimmed_oldest_first_and_never_starts_with_an_answer() {
        let mut history = turn("one two three", "four five six seven");
        history.extend(turn("eight nine", "ten"));
        // Each message costs its words + 4.
        let kept = trim_history(&history, &WordCounter, 100).unwrap();
        assert_eq!(kept, history);
        // Room for the last three messages only: the orphaned answer goes too.
        let kept = trim_history(&history, &WordCounter, 8 + 6 + 5).unwrap();
        assert_eq!(kept, history[2..]);
        assert!(trim_history(&history, &WordCounter, 3).unwrap().is_empty());
    }

    #[test]
    fn rewrite_prompt_snapshot() {
        let history = clean_history(&turn(
            "How much does the Business plan cost per user per month?",
            "$15 per user per month [1].",
        ));
        let rendered: Vec<String> = rewrite_messages("Does it include single sign-on?", &history)
            .iter()
            .map(|m| format!("[{:?}]\n{}", m.role, m.content))
            .collect();
        insta::assert_snapshot!(rendered.join("\n"));
    }

    #[test]
    fn follow_ups_are_told_from_standalone_questions() {
        let history = turn(
            "How much does the Business plan cost?",
            "$15 per user per month [1].",
        );
        for q in [
            "And on the Enterprise plan?",
            "What about annual billing?",
            "Does it include SSO?",
            "Who founded them?",
            "When?",
            "How many users can they add?",
        ] {
            assert!(needs_rewrite(q, &history), "{q}");
        }
        for q in [
            "Is that free?",
            "When was this introduced?",
            "How much does that cost?",
        ] {
            assert!(needs_rewrite(q, &history), "{q}");
        }
        for q in [
            "How many days of paid vacation do new employees get?",
            "Within how many minutes must a Severity 1 incident be escalated?",
            "What other English towns were sites of Huguenot settlement?",
            "What is one supplementary source of European Union law?",
            "What is the receptor that killer T cells use?",
            "What were the Yuan armies too weak to stop?",
        ] {
            assert!(!needs_rewrite(q, &history), "{q}");
        }
        assert!(!needs_rewrite("Does it include SSO?", &[]));
    }

    #[test]
    fn markers_go_and_brackets_that_are_not_markers_stay() {
        assert_eq!(
            strip_markers("20 days [1]. See [2][3] and [x] or [12a]."),
            "20 days. See and [x] or [12a]."
        );
    }

    #[test]
    fn the_rewrite_prompt_shows_the_earlier_question_and_the_fallback_joins_them() {
        let mut history = turn("Q1 old", "A1 old");
        history.extend(turn("How much is the Business plan?", "$15 [1]."));
        let messages = rewrite_messages("And Enterprise?", &clean_history(&history));
        let user = &messages[1].content;
        assert!(!user.contains("Q1 old") && !user.contains("$15"), "{user}");
        assert!(
            user.contains("Earlier question: How much is the Business plan?\nFollow-up question: And Enterprise?"),
            "{user}"
        );
        assert_eq!(
            context_query(" And Enterprise? ", &history),
            "How much is the Business plan? And Enterprise?"
        );
        assert_eq!(context_query("Alone?", &[]), "Alone?");
    }

    #[test]
    fn rewrites_are_cleaned_or_refused() {
        let q = "And Enterprise?";
        let history = turn("How much is the Business plan?", "$15.");
        assert_eq!(
            clean_rewrite(
                "Rewritten question: \"How much is the Enterprise plan?\"\nmore",
                q,
                &history
            )
            .as_deref(),
            Some("How much is the Enterprise plan?")
        );
        // Nothing from the conversation: nothing was resolved.
        assert_eq!(
            clean_rewrite("And what about Enterprise?", q, &history),
            None
        );
        assert_eq!(
            clean_rewrite("How much is the plan? And Enterprise?", q, &history),
            None
        );
        assert_eq!(clean_rewrite("  \n", q, &[]), None);
        assert_eq!(
            clean_rewrite("I don't know based on the provided documents.", q, &[]),
            None
        );
        assert_eq!(clean_rewrite(&"word ".repeat(40), q, &[]), None);
        assert_eq!(
            clean_rewrite("How much is the business plan", q, &history),
            None
        );
    }
}
