//! Evaluation: datasets (SQuAD 2.0, BEIR) and the metrics `docent eval`
//! reports: recall@k, MRR@10 and nDCG@10 for retrieval; SQuAD exact match
//! and token F1 (the official normalisation) for answers.

use docent_core::{Error, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// A retrieval dataset: documents, queries and which documents answer each.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    /// (document id, text), in a stable order.
    pub documents: Vec<(String, String)>,
    pub queries: Vec<Query>,
}

#[derive(Clone, Debug)]
pub struct Query {
    pub id: String,
    pub text: String,
    /// Relevant document ids with their graded relevance (> 0).
    pub relevant: HashMap<String, f64>,
    /// Gold answers (SQuAD); empty for unanswerable or BEIR queries.
    pub answers: Vec<String>,
    /// SQuAD 2.0 `is_impossible`.
    pub unanswerable: bool,
}

#[derive(Deserialize)]
struct SquadFile {
    data: Vec<SquadArticle>,
}

#[derive(Deserialize)]
struct SquadArticle {
    title: String,
    paragraphs: Vec<SquadParagraph>,
}

#[derive(Deserialize)]
struct SquadParagraph {
    context: String,
    qas: Vec<SquadQuestion>,
}

#[derive(Deserialize)]
struct SquadQuestion {
    id: String,
    question: String,
    #[serde(default)]
    answers: Vec<SquadAnswer>,
    #[serde(default)]
    is_impossible: bool,
}

#[derive(Deserialize)]
struct SquadAnswer {
    text: String,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", path.display())))
}

/// A SQuAD 2.0 file: each paragraph is a document (`<title>/<n>.txt`), each
/// question's relevant document is its paragraph.
pub fn load_squad(path: &Path) -> Result<Dataset> {
    let file: SquadFile = serde_json::from_str(&read(path)?).map_err(|e| {
        Error::InvalidInput(format!(
            "{} is not a SQuAD 2.0 JSON file: {e}",
            path.display()
        ))
    })?;
    let mut dataset = Dataset::default();
    for article in file.data {
        let title: String = article
            .title
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        for (i, paragraph) in article.paragraphs.into_iter().enumerate() {
            let doc = format!("{title}/{i:03}.txt");
            for qa in paragraph.qas {
                dataset.queries.push(Query {
                    id: qa.id,
                    text: qa.question,
                    relevant: HashMap::from([(doc.clone(), 1.0)]),
                    answers: qa.answers.into_iter().map(|a| a.text).collect(),
                    unanswerable: qa.is_impossible,
                });
            }
            dataset.documents.push((doc, paragraph.context));
        }
    }
    Ok(dataset)
}

/// The article a SQuAD document id (`<title>/<n>.txt`) belongs to.
pub fn article(document: &str) -> &str {
    document.split_once('/').map_or(document, |(a, _)| a)
}

/// An out-of-corpus split of a SQuAD dataset: the articles are ordered by
/// `seed` and the first half of them (at least one) held out. Returns the
/// dataset of the other articles (documents and questions) and the held-out
/// articles' questions, which nothing in that dataset answers.
pub fn hold_out_articles(dataset: &Dataset, seed: u64) -> (Dataset, Vec<Query>) {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut articles: Vec<&str> = dataset
        .documents
        .iter()
        .map(|(id, _)| article(id))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    articles.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let held: HashSet<&str> = articles[..(articles.len() / 2).max(1)]
        .iter()
        .copied()
        .collect();
    let is_held = |doc: &str| held.contains(article(doc));
    let (out, queries) = dataset
        .queries
        .iter()
        .cloned()
        .partition(|q| q.relevant.keys().any(|d| is_held(d)));
    let kept = Dataset {
        documents: dataset
            .documents
            .iter()
            .filter(|(id, _)| !is_held(id))
            .cloned()
            .collect(),
        queries,
    };
    (kept, out)
}

#[derive(Deserialize)]
struct BeirDoc {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    title: String,
    text: String,
}

#[derive(Deserialize)]
struct BeirQuery {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

/// A BEIR folder: `corpus.jsonl`, `queries.jsonl` and `qrels/test.tsv`.
/// Only queries with at least one relevant document are kept.
pub fn load_beir(dir: &Path) -> Result<Dataset> {
    let mut dataset = Dataset::default();
    let jsonl = |name: &str| -> Result<Vec<String>> {
        Ok(read(&dir.join(name))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect())
    };
    for (n, line) in jsonl("corpus.jsonl")?.iter().enumerate() {
        let doc: BeirDoc = serde_json::from_str(line)
            .map_err(|e| Error::InvalidInput(format!("corpus.jsonl line {}: {e}", n + 1)))?;
        let text = if doc.title.is_empty() {
            doc.text
        } else {
            format!("{}\n\n{}", doc.title, doc.text)
        };
        dataset.documents.push((doc.id, text));
    }
    let mut qrels: HashMap<String, HashMap<String, f64>> = HashMap::new();
    for (n, line) in read(&dir.join("qrels/test.tsv"))?.lines().enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() < 3 || (n == 0 && fields[2].parse::<f64>().is_err()) {
            continue; // header
        }
        let score: f64 = fields[2].trim().parse().map_err(|_| {
            Error::InvalidInput(format!("qrels/test.tsv line {}: bad score", n + 1))
        })?;
        if score > 0.0 {
            qrels
                .entry(fields[0].to_string())
                .or_default()
                .insert(fields[1].to_string(), score);
        }
    }
    for (n, line) in jsonl("queries.jsonl")?.iter().enumerate() {
        let q: BeirQuery = serde_json::from_str(line)
            .map_err(|e| Error::InvalidInput(format!("queries.jsonl line {}: {e}", n + 1)))?;
        if let Some(relevant) = qrels.remove(&q.id) {
            dataset.queries.push(Query {
                id: q.id,
                text: q.text,
                relevant,
                answers: Vec::new(),
                unanswerable: false,
            });
        }
    }
    Ok(dataset)
}

/// Sums of per-query retrieval metrics; `summary` gives the means.
#[derive(Clone, Debug, Default)]
pub struct RetrievalMetrics {
    pub queries: usize,
    recall: BTreeMap<usize, f64>,
    mrr10: f64,
    ndcg10: f64,
}

impl RetrievalMetrics {
    /// Adds one query: `ranked` are document ids, best first (duplicates ignored).
    pub fn add(&mut self, ranked: &[String], relevant: &HashMap<String, f64>) {
        let mut seen = HashSet::new();
        let ranked: Vec<&String> = ranked.iter().filter(|d| seen.insert(*d)).collect();
        self.queries += 1;
        let total = relevant.len().max(1) as f64;
        for k in [1, 3, 5, 10, 20] {
            let hits = ranked
                .iter()
                .take(k)
                .filter(|d| relevant.contains_key(**d))
                .count() as f64;
            *self.recall.entry(k).or_default() += hits / total;
        }
        if let Some(rank) = ranked
            .iter()
            .take(10)
            .position(|d| relevant.contains_key(*d))
        {
            self.mrr10 += 1.0 / (rank as f64 + 1.0);
        }
        let dcg: f64 = ranked
            .iter()
            .take(10)
            .enumerate()
            .map(|(i, d)| relevant.get(*d).copied().unwrap_or(0.0) / (i as f64 + 2.0).log2())
            .sum();
        let mut ideal: Vec<f64> = relevant.values().copied().collect();
        ideal.sort_by(|a, b| b.total_cmp(a));
        let idcg: f64 = ideal
            .iter()
            .take(10)
            .enumerate()
            .map(|(i, g)| g / (i as f64 + 2.0).log2())
            .sum();
        if idcg > 0.0 {
            self.ndcg10 += dcg / idcg;
        }
    }

    /// Means over the queries: `recall@1/3/5/10/20`, `mrr@10`, `ndcg@10`.
    pub fn summary(&self) -> BTreeMap<String, f64> {
        let n = self.queries.max(1) as f64;
        let mut out: BTreeMap<String, f64> = self
            .recall
            .iter()
            .map(|(k, v)| (format!("recall@{k}"), v / n))
            .collect();
        out.insert("mrr@10".into(), self.mrr10 / n);
        out.insert("ndcg@10".into(), self.ndcg10 / n);
        out
    }
}

/// The official SQuAD normalisation: lower case, no punctuation, no
/// articles (a, an, the), single spaces.
pub fn normalize_answer(text: &str) -> String {
    let lower = text.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// SQuAD exact match against the best gold answer (0 or 1).
pub fn exact_match(prediction: &str, gold: &[String]) -> f64 {
    let p = normalize_answer(prediction);
    if gold.iter().any(|g| normalize_answer(g) == p) {
        1.0
    } else {
        0.0
    }
}

/// SQuAD token F1 against the best gold answer.
pub fn token_f1(prediction: &str, gold: &[String]) -> f64 {
    let p = normalize_answer(prediction);
    let p_tokens: Vec<&str> = p.split_whitespace().collect();
    gold.iter()
        .map(|g| {
            let g = normalize_answer(g);
            let g_tokens: Vec<&str> = g.split_whitespace().collect();
            if p_tokens.is_empty() || g_tokens.is_empty() {
                return if p_tokens == g_tokens { 1.0 } else { 0.0 };
            }
            let mut counts: HashMap<&str, i64> = HashMap::new();
            for t in &g_tokens {
                *counts.entry(t).or_default() += 1;
            }
            let mut common = 0i64;
            for t in &p_tokens {
                if let Some(c) = counts.get_mut(t)
                    && *c > 0
                {
                    *c -= 1;
                    common += 1;
                }
            }
            if common == 0 {
                return 0.0;
            }
            let precision = common as f64 / p_tokens.len() as f64;
            let recall = common as f64 / g_tokens.len() as f64;
            2.0 * precision * recall / (precision + recall)
        })
        .fold(0.0, f64::max)
}

/// Median of a list (0 when empty).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(docs: &[(&str, f64)]) -> HashMap<String, f64> {
        docs.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }

    fn ranked(docs: &[&str]) -> Vec<String> {
        docs.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn ranking_metrics_match_hand_computed_values() {
        let mut m = RetrievalMetrics::default();
        m.add(&ranked(&["a", "b", "c"]), &rel(&[("a", 1.0)]));
        m.add(&ranked(&["x", "b", "b", "y"]), &rel(&[("b", 1.0)]));
        m.add(&ranked(&["x", "y"]), &rel(&[("z", 1.0)]));
        let s = m.summary();
        assert!((s["recall@1"] - 1.0 / 3.0).abs() < 1e-9);
        assert!((s["recall@5"] - 2.0 / 3.0).abs() < 1e-9);
        assert!((s["mrr@10"] - (1.0 + 0.5) / 3.0).abs() < 1e-9);
        let ndcg = (1.0 + 1.0 / 3f64.log2()) / 3.0;
        assert!((s["ndcg@10"] - ndcg).abs() < 1e-9);
    }

    #[test]
    fn graded_ndcg_uses_the_ideal_order() {
        let mut m = RetrievalMetrics::default();
        m.add(&ranked(&["b", "a"]), &rel(&[("a", 2.0), ("b", 1.0)]));
        let dcg = 1.0 + 2.0 / 3f64.log2();
        let idcg = 2.0 + 1.0 / 3f64.log2();
        assert!((m.summary()["ndcg@10"] - dcg / idcg).abs() < 1e-9);
    }

    #[test]
    fn squad_normalisation_and_scores() {
        assert_eq!(normalize_answer("The  Eiffel Tower!"), "eiffel tower");
        let gold = vec!["the 10th century".to_string(), "10th".to_string()];
        assert_eq!(exact_match("10th century", &gold), 1.0);
        assert_eq!(exact_match("in the 10th century", &gold), 0.0);
        let f1 = token_f1("in the 10th century", &gold);
        assert!((f1 - 0.8).abs() < 1e-9, "{f1}");
        assert_eq!(token_f1("nothing here", &gold), 0.0);
    }

    #[test]
    fn held_out_articles_take_their_documents_and_questions_with_them() {
        let doc = |a: &str, n: usize| (format!("{a}/{n:03}.txt"), format!("{a} text {n}"));
        let query = |a: &str, n: usize| Query {
            id: format!("{a}{n}"),
            text: format!("about {a}?"),
            relevant: HashMap::from([(format!("{a}/{n:03}.txt"), 1.0)]),
            answers: vec![],
            unanswerable: false,
        };
        let articles = ["Alpha", "Beta", "Gamma", "Delta"];
        let dataset = Dataset {
            documents: articles
                .iter()
                .flat_map(|a| [doc(a, 0), doc(a, 1)])
                .collect(),
            queries: articles.iter().map(|a| query(a, 1)).collect(),
        };
        let (kept, out) = hold_out_articles(&dataset, 7);
        assert_eq!(kept.documents.len(), 4);
        assert_eq!(kept.queries.len(), 2);
        assert_eq!(out.len(), 2);
        let kept_articles: HashSet<&str> = kept.documents.iter().map(|(d, _)| article(d)).collect();
        for q in &out {
            let d = q.relevant.keys().next().unwrap();
            assert!(!kept_articles.contains(article(d)), "{d} was kept");
        }
        for q in &kept.queries {
            assert!(kept_articles.contains(article(q.relevant.keys().next().unwrap())));
        }
        // The same seed holds out the same articles.
        assert_eq!(hold_out_articles(&dataset, 7).0.documents, kept.documents);
    }

    #[test]
    fn median_of_even_and_odd_lists() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
