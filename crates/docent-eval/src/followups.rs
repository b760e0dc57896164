//! `docent eval followups`: how well follow-up questions are answered.
//!
//! The follow-up set is built from a SQuAD 2.0 file, deterministically:
//! - consecutive answerable questions on the same paragraph make a pair
//!   (first, second);
//! - the second is made to lean on the first: the longest run of words it
//!   shares with the first that names something (a noun phrase: it holds a
//!   capitalised word that is not part of a longer name, or follows an
//!   article, and has a word that is not a stop word) is replaced by a
//!   pronoun ("it", or "they"/"them" for a plural, "its"/"their" before
//!   "'s"), or, for every other pair where that run ends the question
//!   after a preposition ("... of the Normans?"), dropped with its
//!   preposition (ellipsis);
//! - pairs where no such run exists are left out.
//!
//! Each follow-up is then searched three ways: as asked (raw), as docent
//! rewrites it with the first question and its gold answer as history, and
//! in its original standalone form (the ceiling). With `--answers` each
//! way is also answered and scored by F1. A topic-switch control asks each
//! standalone question after an unrelated earlier question (the first of a
//! pair on another paragraph): what docent searches for then must find what
//! the question alone finds.

use crate::Workspace;
use crate::dataset::{Query, median, token_f1};
use crate::eval::{
    DatasetArgs, EvalCollection, bar, eval_asker, greedy_request, ingest, load, strip_markers,
};
use anyhow::{Result, bail};
use clap::Args;
use docent_core::{ChatMessage, SearchFilter};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct FollowupArgs {
    #[command(flatten)]
    dataset: DatasetArgs,
    /// Pairs to evaluate, drawn at random with --seed
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Also answer each way and report F1 (three answers per pair)
    #[arg(long)]
    answers: bool,
    /// Maximum answer length in tokens
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Write one JSON line per pair here
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// How a follow-up was made from its standalone form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pronoun,
    Ellipsis,
}

/// One follow-up question with what it leans on.
#[derive(Clone, Debug)]
pub struct Followup<'a> {
    pub first: &'a Query,
    pub second: &'a Query,
    /// The second question rewritten to lean on the first.
    pub text: String,
    pub kind: Kind,
    /// The words it no longer says.
    pub referent: String,
}

const STOP: &[&str] = &[
    "a", "an", "the", "of", "in", "on", "at", "to", "for", "by", "with", "from", "and", "or", "is",
    "was", "were", "are", "be", "been", "did", "do", "does", "what", "which", "who", "whom",
    "whose", "when", "where", "why", "how", "many", "much", "that", "this", "it", "its", "as",
    "has", "had", "have", "not", "into", "about", "after", "before", "during", "than", "there",
    "year", "years", "name", "called", "first", "one",
];

const AUXILIARIES: &[&str] = &[
    "did", "do", "does", "was", "were", "is", "are", "has", "have", "had", "can", "could", "will",
    "would", "should", "might", "may", "must",
];

const PREPOSITIONS: &[&str] = &[
    "of", "in", "to", "for", "with", "by", "from", "on", "at", "about", "against", "under", "over",
    "into", "after", "before", "during", "between", "among", "toward", "towards",
];

fn bare(word: &str) -> String {
    word.trim_matches(|c: char| !c.is_alphanumeric())
        .trim_end_matches("'s")
        .trim_end_matches("’s")
        .to_lowercase()
}

/// The follow-up form of `second` given `first`, or `None` when they share
/// nothing that names something. `ellipsis` asks for the dropped form where
/// it applies.
pub fn lean_on(first: &str, second: &str, ellipsis: bool) -> Option<(String, Kind, String)> {
    let words: Vec<&str> = second.split_whitespace().collect();
    let first_words: Vec<String> = first.split_whitespace().map(bare).collect();
    let shares = |run: &[&str]| {
        let run: Vec<String> = run.iter().map(|w| bare(w)).collect();
        first_words.windows(run.len()).any(|w| w == run.as_slice())
    };
    let names_something = |start: usize, end: usize| {
        let run = &words[start..end];
        let content = run
            .iter()
            .filter(|w| !STOP.contains(&bare(w).as_str()))
            .count();
        // The question's own first word is capitalised anyway.
        let capitalised = (start..end).any(|i| {
            i > 0
                && words[i].chars().next().is_some_and(char::is_uppercase)
                && !STOP.contains(&bare(words[i]).as_str())
        });
        content >= 2 || (content >= 1 && capitalised)
    };
    // The longest shared run that names something (leftmost on ties).
    let mut best: Option<(usize, usize)> = None;
    for start in 0..words.len() {
        for end in (start + 1..=words.len()).rev() {
            let run = &words[start..end];
            if best.is_some_and(|(s, e)| e - s >= run.len()) {
                break;
            }
            if run.iter().any(|w| bare(w).is_empty())
                || !shares(run)
                || !names_something(start, end)
            {
                continue;
            }
            best = Some((start, end));
            break;
        }
    }
    let (mut start, mut end) = best?;
    // The run names something, so it starts and ends on a word that is
    // not a stop word ("under the Yuan" is "the Yuan" after "under").
    while start < end && STOP.contains(&bare(words[start]).as_str()) {
        start += 1;
    }
    while end > start && STOP.contains(&bare(words[end - 1]).as_str()) {
        end -= 1;
    }
    let capitalised = |i: usize| {
        i > 0
            && words[i].chars().next().is_some_and(char::is_uppercase)
            && !STOP.contains(&bare(words[i]).as_str())
    };
    // Part of a longer name ("Harvard - Yale Regatta") is not replaced.
    let joined = |i: usize| capitalised(i) || matches!(words[i], "-" | "–" | "&");
    if (start > 1 && joined(start - 1)) || (end < words.len() && joined(end)) {
        return None;
    }
    let has_name = (start..end).any(capitalised);
    let article = start > 0
        && matches!(
            bare(words[start - 1]).as_str(),
            "the" | "a" | "an" | "its" | "their" | "his" | "her"
        );
    // A noun phrase: a name, or words after an article ("the immune
    // system"), not a verb phrase ("subscribe to the agreement").
    if !has_name && !article {
        return None;
    }
    // "the Normans" becomes "they", not "the they".
    if article {
        start -= 1;
    }
    let referent = words[start..end].join(" ");
    let last = words[end - 1];
    let trailing: String = last
        .chars()
        .rev()
        .take_while(|c| !c.is_alphanumeric())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let possessive = last
        .trim_end_matches(|c: char| !c.is_alphanumeric())
        .ends_with("'s")
        || last.contains("’s");
    let head = bare(last);
    let plural = head.ends_with('s') && !head.ends_with("ss") && !possessive;
    let before = if start > 0 {
        bare(words[start - 1])
    } else {
        String::new()
    };
    let after_preposition = PREPOSITIONS.contains(&before.as_str());
    // A subject opens the question or follows its auxiliary ("did they").
    let subject = start == 0 || AUXILIARIES.contains(&before.as_str());
    let at_end = end == words.len();
    if ellipsis && at_end && after_preposition && start >= 3 {
        let mut kept: Vec<&str> = words[..start - 1].to_vec();
        let tail = kept.pop().unwrap_or_default();
        let text = format!(
            "{} {}{}",
            kept.join(" "),
            tail,
            trailing.trim_start_matches('\'')
        );
        let text = if text.trim_end().ends_with('?') {
            text
        } else {
            format!("{}?", text.trim_end())
        };
        return Some((text.trim().to_string(), Kind::Ellipsis, referent));
    }
    let pronoun = match (possessive, plural, subject) {
        (true, _, _) => "its",
        (false, true, true) => "they",
        (false, true, false) => "them",
        (false, false, _) => "it",
    };
    let trailing = if possessive { String::new() } else { trailing };
    let mut out: Vec<String> = words[..start].iter().map(|w| w.to_string()).collect();
    out.push(format!("{pronoun}{trailing}"));
    out.extend(words[end..].iter().map(|w| w.to_string()));
    let mut text = out.join(" ");
    if start == 0 {
        let mut chars = text.chars();
        text = chars
            .next()
            .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
            .unwrap_or_default();
    }
    Some((text, Kind::Pronoun, referent))
}

/// The follow-up set of a dataset: consecutive answerable questions on the
/// same paragraph, the second leaning on the first.
pub fn build(queries: &[Query]) -> Vec<Followup<'_>> {
    let mut by_paragraph: BTreeMap<&str, Vec<&Query>> = BTreeMap::new();
    for q in queries
        .iter()
        .filter(|q| !q.unanswerable && !q.answers.is_empty())
    {
        if let Some(doc) = q.relevant.keys().next() {
            by_paragraph.entry(doc.as_str()).or_default().push(q);
        }
    }
    let mut out = Vec::new();
    let mut eligible_ellipsis = 0usize;
    for questions in by_paragraph.values() {
        for pair in questions.chunks_exact(2) {
            let (first, second) = (pair[0], pair[1]);
            // Every other pair whose form allows it is made elliptical.
            let try_ellipsis = eligible_ellipsis % 2 == 1;
            let Some((text, kind, referent)) = lean_on(&first.text, &second.text, try_ellipsis)
            else {
                continue;
            };
            if lean_on(&first.text, &second.text, true).is_some_and(|(_, k, _)| k == Kind::Ellipsis)
            {
                eligible_ellipsis += 1;
            }
            out.push(Followup {
                first,
                second,
                text,
                kind,
                referent,
            });
        }
    }
    out
}

/// The history of a follow-up: `first` asked and answered with its gold answer.
fn exchange(first: &Query) -> Vec<ChatMessage> {
    vec![
        ChatMessage::user(first.text.clone()),
        ChatMessage::assistant(first.answers[0].clone()),
    ]
}

/// The first `k` distinct documents of a ranked list of chunks.
fn top_documents(hits: &[docent_core::ScoredChunk], k: usize) -> Vec<String> {
    let mut docs: Vec<String> = Vec::new();
    for hit in hits {
        let id = &hit.chunk.document_id.0;
        if !docs.contains(id) {
            docs.push(id.clone());
        }
        if docs.len() == k {
            break;
        }
    }
    docs
}

pub(crate) fn run(ws: &dyn Workspace, args: FollowupArgs) -> Result<()> {
    let started = Instant::now();
    let (name, dataset, path) = load(&args.dataset)?;
    if args.dataset.squad.is_none() {
        bail!("the follow-up set is built from SQuAD: use --squad");
    }
    let all = build(&dataset.queries);
    let (pronouns, ellipses) = (
        all.iter().filter(|f| f.kind == Kind::Pronoun).count(),
        all.iter().filter(|f| f.kind == Kind::Ellipsis).count(),
    );
    let mut picked: Vec<&Followup> = all.iter().collect();
    picked.shuffle(&mut rand::rngs::StdRng::seed_from_u64(args.seed));
    picked.truncate(args.limit);
    let parts = ws.embedding(None)?;
    let eval = EvalCollection::new(ws, &name, &dataset, parts.embedder.precision());
    let collection = ingest(ws, &eval, &parts, &dataset)?;
    let generator = ws.generator(None)?;
    let settings = ws.settings();
    let asker = eval_asker(
        ws,
        &parts,
        &collection,
        generator.clone(),
        settings.query.clone(),
        settings.retrieval.clone(),
    )?;
    let mut out = match &args.out {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    let ways = ["raw", "rewritten", "standalone"];
    let mut hits: BTreeMap<&str, usize> = BTreeMap::new();
    let mut f1: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let (mut rewritten_n, mut skipped_followups, mut rewrote_standalone) = (0, 0, 0);
    let mut by_model = 0;
    let mut switch_rewritten = 0;
    let mut rewrite_ms = Vec::new();
    let bar = bar(picked.len(), "follow-ups");
    for f in &picked {
        let history = exchange(f.first);
        let gold = f.second.relevant.keys().next().cloned().unwrap_or_default();
        let rewrite = asker.rewrite(&f.text, &history)?;
        match &rewrite {
            Some(r) => {
                rewritten_n += 1;
                by_model += usize::from(r.by_model);
                rewrite_ms.push(r.ms);
            }
            None => skipped_followups += 1,
        }
        // A standalone question with the same history should not be rewritten.
        if docent_query::conversation::needs_rewrite(&f.second.text, &history) {
            rewrote_standalone += 1;
        }
        let queries = [
            f.text.clone(),
            rewrite.as_ref().map_or(f.text.clone(), |r| r.query.clone()),
            f.second.text.clone(),
        ];
        let mut line = json!({
            "first": f.first.text, "standalone": f.second.text, "followup": f.text,
            "kind": format!("{:?}", f.kind).to_lowercase(), "referent": f.referent,
            "rewritten": rewrite.as_ref().map(|r| &r.query),
            "by_model": rewrite.as_ref().map(|r| r.by_model), "gold_document": gold,
        });
        for (way, query) in ways.iter().zip(&queries) {
            let found = asker.search(query, 20, &SearchFilter::default(), None, None)?;
            let hit = top_documents(&found, 5).contains(&gold);
            *hits.entry(way).or_default() += usize::from(hit);
            line[format!("{way}_hit@5")] = json!(hit);
        }
        // Topic switch: the standalone question after an unrelated earlier
        // question (the first question of a pair from another paragraph).
        // What docent searches for must not lose what the question alone finds.
        let other = picked
            .iter()
            .map(|o| o.first)
            .find(|o| o.relevant.keys().next() != Some(&gold))
            .unwrap_or(f.first);
        let unrelated = exchange(other);
        let switched = asker
            .rewrite(&f.second.text, &unrelated)?
            .map_or(f.second.text.clone(), |r| r.query);
        let found = asker.search(&switched, 20, &SearchFilter::default(), None, None)?;
        let switch_hit = top_documents(&found, 5).contains(&gold);
        *hits.entry("switch_docent").or_default() += usize::from(switch_hit);
        switch_rewritten += usize::from(switched != f.second.text);
        line["switch_query"] = json!(switched);
        line["switch_hit@5"] = json!(switch_hit);
        if args.answers {
            let requests = [
                (f.text.clone(), Vec::new()),
                (f.text.clone(), history.clone()),
                (f.second.text.clone(), Vec::new()),
            ];
            for (way, (question, history)) in ways.iter().zip(requests) {
                let request = greedy_request(&settings, question, history, args.max_tokens);
                let response = asker.ask(&request, |_| {})?;
                let score = token_f1(&strip_markers(&response.answer), &f.second.answers);
                f1.entry(way).or_default().push(score);
                line[format!("{way}_answer")] = json!(response.answer);
                line[format!("{way}_f1")] = json!(score);
            }
        }
        if let Some(out) = out.as_mut() {
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let n = picked.len().max(1) as f64;
    let recall: BTreeMap<&str, f64> = ways
        .iter()
        .map(|w| (*w, hits.get(w).copied().unwrap_or(0) as f64 / n))
        .collect();
    let gap = recall["standalone"] - recall["raw"];
    let recovered = if gap > 0.0 {
        Some((recall["rewritten"] - recall["raw"]) / gap)
    } else {
        None
    };
    let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let report = json!({
        "dataset": path.display().to_string(),
        "collection": eval.location(),
        "model": generator.model_id(),
        "pairs_built": all.len(),
        "pairs_by_kind": { "pronoun": pronouns, "ellipsis": ellipses },
        "pairs": picked.len(),
        "seed": args.seed,
        "recall@5": recall,
        "gap_recovered": recovered,
        "topic_switch": {
            "recall@5_as_asked": recall["standalone"],
            "recall@5_docent": hits.get("switch_docent").copied().unwrap_or(0) as f64 / n,
            "rewritten": switch_rewritten,
        },
        "f1": f1.iter().map(|(k, v)| (k.to_string(), mean(v))).collect::<BTreeMap<_, _>>(),
        "rewritten": rewritten_n,
        "rewritten_by_model": by_model,
        "followups_not_rewritten": skipped_followups,
        "standalone_that_would_be_rewritten": rewrote_standalone,
        "rewrite_ms_p50": median(&mut rewrite_ms),
        "total_secs": started.elapsed().as_secs_f64(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} follow-up pairs ({} built: {pronouns} pronoun, {ellipses} ellipsis) on {}",
            picked.len(),
            all.len(),
            generator.model_id()
        );
        println!("{:<12} {:>8} {:>8}", "way", "R@5", "F1");
        for way in ways {
            let f = f1.get(way).map(mean);
            println!(
                "{:<12} {:>8.4} {:>8}",
                way,
                recall[way],
                f.map_or("-".to_string(), |f| format!("{f:.4}"))
            );
        }
        println!(
            "topic switch (a standalone question after an unrelated one): R@5 {:.4} as asked, {:.4} as docent searched ({switch_rewritten} rewritten)",
            recall["standalone"],
            hits.get("switch_docent").copied().unwrap_or(0) as f64 / n
        );
        println!(
            "gap recovered by rewriting: {}",
            recovered.map_or("n/a (no gap)".to_string(), |r| format!("{:.1}%", r * 100.0))
        );
        println!(
            "rewritten {rewritten_n} ({by_model} by the model, the rest by joining the earlier question), not rewritten {skipped_followups}; standalone questions that would be rewritten: {rewrote_standalone}; rewrite p50 {:.0} ms",
            report["rewrite_ms_p50"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_name_becomes_a_pronoun() {
        let (text, kind, referent) = lean_on(
            "In what country is Normandy located?",
            "When were the Normans in Normandy?",
            false,
        )
        .unwrap();
        assert_eq!(kind, Kind::Pronoun);
        assert_eq!(referent, "Normandy?");
        assert_eq!(text, "When were the Normans in it?");
        // Nothing shared that names something: no pair.
        assert!(
            lean_on(
                "Who was the Norse leader?",
                "What century did the Normans first gain their separate identity?",
                false,
            )
            .is_none()
        );
        let (text, _, _) = lean_on(
            "What is the Super Bowl 50 halftime show?",
            "Who headlined the Super Bowl 50 halftime show?",
            false,
        )
        .unwrap();
        assert_eq!(text, "Who headlined it?");
    }

    #[test]
    fn plurals_and_objects_take_their_pronoun_and_ellipsis_drops_the_phrase() {
        let (text, _, _) = lean_on(
            "Where did the Vikings settle?",
            "What did the French call the Vikings?",
            false,
        )
        .unwrap();
        assert_eq!(text, "What did the French call them?");
        let (text, kind, _) = lean_on(
            "When did the Normans conquer England?",
            "Who was the king of England?",
            true,
        )
        .unwrap();
        assert_eq!(kind, Kind::Ellipsis);
        assert_eq!(text, "Who was the king?");
    }
}
