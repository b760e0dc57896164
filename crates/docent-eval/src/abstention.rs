//! Scoring answers under abstention policies, for `docent eval answers`.
//!
//! Every question is asked once with all of docent's abstention gates
//! measuring but none deciding, so that any policy (a cosine floor, a
//! reranker floor, a threshold on the model's own "I don't know"
//! probability, or a combination) can be scored afterwards without asking
//! again: an abstaining answer is the fixed sentence whichever gate decided.
//! Thresholds are calibrated on one half of the questions and reported on
//! the other.

use serde_json::{Value, json};

/// What kind of question an outcome is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Answered by a document in the collection.
    Answerable,
    /// SQuAD 2.0's unanswerable questions: written to look answerable from
    /// a paragraph that is in the collection.
    Adversarial,
    /// About an article that is not in the collection at all.
    OutOfCorpus,
}

/// One asked question, as needed to score it under any policy.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    pub kind: Kind,
    /// The model answered (its text is not an abstention).
    pub answered: bool,
    /// The signals the gates decide on.
    pub best_similarity: Option<f32>,
    pub best_rerank_score: Option<f32>,
    pub abstain_probability: Option<f32>,
    pub em: f64,
    pub f1: f64,
    /// EM and F1 of the answer's first sentence alone: whether it leads
    /// with the answer, apart from how much support follows.
    pub first_em: f64,
    pub first_f1: f64,
    /// EM and F1 of the abstention sentence against the gold answers.
    pub abstained_em: f64,
    pub abstained_f1: f64,
    pub cites_gold: bool,
    pub cites_nothing: bool,
    pub top_is_gold: bool,
}

/// When docent abstains without the model's answer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Policy {
    /// `[retrieval] score_floor`: abstain when no passage reaches this
    /// cosine similarity (`None`: no floor).
    pub similarity: Option<f32>,
    /// `[query] min_rerank_score`.
    pub rerank: Option<f32>,
    /// `[query] rerank_gate_spares_similarity`: the reranker gate does not
    /// apply from this cosine similarity up.
    pub spares: Option<f32>,
    /// `[query] abstain_threshold` (`None`: off).
    pub probe: Option<f32>,
}

impl Policy {
    /// No gate: only the model's own text abstains.
    pub const OFF: Policy = Policy {
        similarity: None,
        rerank: None,
        spares: None,
        probe: None,
    };

    /// Whether a gate (not the model's own text) abstains on `o`.
    pub fn gates(&self, o: &Outcome) -> bool {
        self.similarity
            .is_some_and(|f| o.best_similarity.is_none_or(|s| s < f))
            || docent_query::reranker_refuses(
                self.rerank,
                self.spares,
                o.best_rerank_score,
                o.best_similarity,
            )
            || self
                .probe
                .is_some_and(|t| o.abstain_probability.is_some_and(|p| p >= t))
    }

    pub fn to_json(self) -> Value {
        // As written in the config (0.35, not 0.3499999940395355).
        let exact = |v: Option<f32>| v.map(|v| (f64::from(v) * 1e4).round() / 1e4);
        json!({
            "score_floor": exact(self.similarity),
            "min_rerank_score": exact(self.rerank),
            "rerank_gate_spares_similarity": exact(self.spares),
            "abstain_threshold": exact(self.probe),
        })
    }

    pub fn describe(&self) -> String {
        let part = |name: &str, v: Option<f32>| match v {
            Some(v) => format!("{name} {v}"),
            None => format!("{name} off"),
        };
        format!(
            "{}, {} (spared from cosine {}), {}",
            part("cosine", self.similarity),
            part("rerank", self.rerank),
            self.spares.map_or("-".into(), |s| s.to_string()),
            part("p(idk)", self.probe)
        )
    }
}

/// The headline figures of `outcomes` under `policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Figures {
    pub answerable: usize,
    pub false_abstention: f64,
    pub f1: f64,
    pub adversarial: usize,
    pub adversarial_abstention: f64,
    pub out_of_corpus: usize,
    pub out_of_corpus_abstention: f64,
}

fn ratio(a: f64, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a / b as f64 }
}

/// Figures of `outcomes` under `policy`.
pub(crate) fn figures(outcomes: &[&Outcome], policy: &Policy) -> Figures {
    let mut f = Figures::default();
    let (mut false_abstained, mut f1) = (0usize, 0.0);
    let (mut adversarial_abstained, mut ooc_abstained) = (0usize, 0usize);
    for o in outcomes {
        let gated = policy.gates(o);
        let abstained = gated || !o.answered;
        match o.kind {
            Kind::Answerable => {
                f.answerable += 1;
                false_abstained += usize::from(abstained);
                f1 += if gated { o.abstained_f1 } else { o.f1 };
            }
            Kind::Adversarial => {
                f.adversarial += 1;
                adversarial_abstained += usize::from(abstained);
            }
            Kind::OutOfCorpus => {
                f.out_of_corpus += 1;
                ooc_abstained += usize::from(abstained);
            }
        }
    }
    f.false_abstention = ratio(false_abstained as f64, f.answerable);
    f.f1 = ratio(f1, f.answerable);
    f.adversarial_abstention = ratio(adversarial_abstained as f64, f.adversarial);
    f.out_of_corpus_abstention = ratio(ooc_abstained as f64, f.out_of_corpus);
    f
}

/// The full SQuAD report of `outcomes` under `policy`.
pub(crate) fn score(outcomes: &[&Outcome], policy: &Policy) -> Value {
    let (mut em, mut f1, mut first_em, mut first_f1) = (0.0, 0.0, 0.0, 0.0);
    let (mut answered_n, mut cite_hit, mut top_hit, mut no_valid_citation) = (0usize, 0, 0, 0);
    for o in outcomes.iter().filter(|o| o.kind == Kind::Answerable) {
        if policy.gates(o) {
            // An abstention is one sentence: its first sentence is all of it.
            em += o.abstained_em;
            f1 += o.abstained_f1;
            first_em += o.abstained_em;
            first_f1 += o.abstained_f1;
            continue;
        }
        em += o.em;
        f1 += o.f1;
        first_em += o.first_em;
        first_f1 += o.first_f1;
        if o.answered {
            answered_n += 1;
            cite_hit += usize::from(o.cites_gold);
            no_valid_citation += usize::from(o.cites_nothing);
            top_hit += usize::from(o.top_is_gold);
        }
    }
    let f = figures(outcomes, policy);
    let n = f.answerable;
    json!({
        "policy": policy.to_json(),
        "answerable": {
            "count": n,
            "exact_match": ratio(em, n),
            "f1": ratio(f1, n),
            "first_sentence_exact_match": ratio(first_em, n),
            "first_sentence_f1": ratio(first_f1, n),
            "false_abstention_rate": f.false_abstention,
            "citation_hits_gold": ratio(cite_hit as f64, answered_n),
            "top_passage_is_gold": ratio(top_hit as f64, answered_n),
            "answered_without_valid_citation": ratio(no_valid_citation as f64, answered_n),
        },
        "adversarial": {
            "count": f.adversarial,
            "abstention_accuracy": f.adversarial_abstention,
        },
        "out_of_corpus": {
            "count": f.out_of_corpus,
            "abstention_accuracy": f.out_of_corpus_abstention,
        },
    })
}

/// Thresholds tried for each signal.
const SIMILARITY_GRID: [f32; 9] = [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5];
const RERANK_GRID: [f32; 17] = [
    -10.0, -9.0, -8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0,
];
const PROBE_GRID: [f32; 10] = [0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8];

/// Every combination of the reranker and probe grids (each gate also off),
/// with the cosine floor (and the similarity the reranker gate spares) as
/// configured. The floor is not calibrated: cosine
/// similarities depend on the embedder and on how documents are written,
/// so a floor fitted to SQuAD would not carry over to a user's documents,
/// while the cross-encoder's score and the model's probability mean the
/// same on any text. It stays a cheap first gate for plainly unrelated
/// questions.
fn policies(fixed: Policy) -> Vec<Policy> {
    let with_off = |grid: &[f32]| -> Vec<Option<f32>> {
        std::iter::once(None)
            .chain(grid.iter().copied().map(Some))
            .collect()
    };
    let mut all = Vec::new();
    {
        for rerank in with_off(&RERANK_GRID) {
            for probe in with_off(&PROBE_GRID) {
                all.push(Policy {
                    rerank,
                    probe,
                    ..fixed
                });
            }
        }
    }
    all
}

/// One abstention target: the abstention of a kind of question to
/// maximise, with false abstention on answerable questions at most
/// `max_false`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    pub name: &'static str,
    pub max_false: f64,
    /// Weights of out-of-corpus and adversarial abstention in what is maximised.
    pub out_of_corpus: f64,
    pub adversarial: f64,
}

/// The targets: out-of-corpus abstention ≥ 0.95 with false
/// abstention ≤ 0.05; adversarial ≥ 0.50 with false ≤ 0.10; and one policy
/// for both kinds at the stricter false-abstention bound.
pub(crate) const TARGETS: [Target; 3] = [
    Target {
        name: "out-of-corpus, false ≤ 0.05",
        max_false: 0.05,
        out_of_corpus: 1.0,
        adversarial: 0.0,
    },
    Target {
        name: "adversarial, false ≤ 0.10",
        max_false: 0.10,
        out_of_corpus: 0.0,
        adversarial: 1.0,
    },
    Target {
        name: "both kinds, false ≤ 0.05",
        max_false: 0.05,
        out_of_corpus: 1.0,
        adversarial: 1.0,
    },
];

/// The policy that best meets `target` on `outcomes`: the most weighted
/// abstention within the false-abstention bound; ties go to the higher F1,
/// then to fewer gates (the grid's order puts gates off first). The cosine
/// floor and the reranker gate's spared similarity stay as in `fixed` (see
/// [`policies`]).
pub(crate) fn calibrate(outcomes: &[&Outcome], target: &Target, fixed: Policy) -> Option<Policy> {
    let mut best: Option<(Policy, f64, f64, usize)> = None;
    for policy in policies(fixed) {
        let f = figures(outcomes, &policy);
        if f.false_abstention > target.max_false + 1e-9 {
            continue;
        }
        let gain = target.out_of_corpus * f.out_of_corpus_abstention
            + target.adversarial * f.adversarial_abstention;
        let gates = [policy.rerank, policy.probe]
            .iter()
            .filter(|g| g.is_some())
            .count();
        let better = match &best {
            None => true,
            Some((_, g, f1, n)) => {
                gain > g + 1e-9
                    || ((gain - g).abs() <= 1e-9
                        && (f.f1 > f1 + 1e-9 || ((f.f1 - f1).abs() <= 1e-9 && gates < *n)))
            }
        };
        if better {
            best = Some((policy, gain, f.f1, gates));
        }
    }
    best.map(|(p, ..)| p)
}

/// The two halves of `outcomes` (alternate questions of a shuffled order):
/// thresholds are calibrated on the first and reported on the second.
pub(crate) fn halves(outcomes: &[Outcome]) -> (Vec<&Outcome>, Vec<&Outcome>) {
    let mut by_kind: [Vec<&Outcome>; 3] = Default::default();
    for o in outcomes {
        by_kind[o.kind as usize].push(o);
    }
    let (mut calibration, mut report) = (Vec::new(), Vec::new());
    for kind in by_kind {
        for (i, o) in kind.into_iter().enumerate() {
            if i % 2 == 0 {
                calibration.push(o);
            } else {
                report.push(o);
            }
        }
    }
    (calibration, report)
}

/// Which signal a ROC curve is of.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Signal {
    Similarity,
    Rerank,
    Probe,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Similarity, Signal::Rerank, Signal::Probe];

    pub fn name(self) -> &'static str {
        match self {
            Signal::Similarity => "best cosine similarity",
            Signal::Rerank => "best reranker score",
            Signal::Probe => "p(I don't know)",
        }
    }

    /// How answerable the signal says the question is (higher: more); a
    /// question without the signal counts as least answerable.
    fn confidence(self, o: &Outcome) -> f64 {
        let v = match self {
            Signal::Similarity => o.best_similarity,
            Signal::Rerank => o.best_rerank_score,
            Signal::Probe => o.abstain_probability.map(|p| -p),
        };
        v.map_or(f64::NEG_INFINITY, f64::from)
    }

    fn gate(self, threshold: f32) -> Policy {
        let mut p = Policy::OFF;
        match self {
            Signal::Similarity => p.similarity = Some(threshold),
            Signal::Rerank => p.rerank = Some(threshold),
            Signal::Probe => p.probe = Some(threshold),
        }
        p
    }

    fn grid(self) -> &'static [f32] {
        match self {
            Signal::Similarity => &SIMILARITY_GRID,
            Signal::Rerank => &RERANK_GRID,
            Signal::Probe => &PROBE_GRID,
        }
    }
}

/// The area under the ROC curve of `signal` separating answerable
/// questions from those of `kind` (the probability that a random answerable
/// one is more confident than a random one of `kind`; ties count half).
/// `None` when either side is empty.
pub(crate) fn auc(outcomes: &[&Outcome], signal: Signal, kind: Kind) -> Option<f64> {
    let pos: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.kind == Kind::Answerable)
        .map(|o| signal.confidence(o))
        .collect();
    let neg: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.kind == kind)
        .map(|o| signal.confidence(o))
        .collect();
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut wins = 0.0;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (pos.len() * neg.len()) as f64)
}

/// The ROC of `signal` alone: each threshold of its grid as a gate, with
/// the model's own abstentions counted as they happen.
pub(crate) fn roc(outcomes: &[&Outcome], signal: Signal) -> Vec<(f32, Figures)> {
    signal
        .grid()
        .iter()
        .map(|&t| (t, figures(outcomes, &signal.gate(t))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(kind: Kind, similarity: f32, rerank: f32, p: f32, answered: bool) -> Outcome {
        Outcome {
            kind,
            answered,
            best_similarity: Some(similarity),
            best_rerank_score: Some(rerank),
            abstain_probability: Some(p),
            em: 1.0,
            f1: 1.0,
            first_em: 1.0,
            first_f1: 1.0,
            abstained_em: 0.0,
            abstained_f1: 0.0,
            cites_gold: true,
            cites_nothing: false,
            top_is_gold: true,
        }
    }

    #[test]
    fn each_gate_abstains_below_its_threshold_and_the_model_text_counts_too() {
        let outcomes = [
            outcome(Kind::Answerable, 0.6, 5.0, 0.01, true),
            outcome(Kind::Answerable, 0.6, 5.0, 0.001, false),
            outcome(Kind::OutOfCorpus, 0.15, -9.0, 0.5, true),
            outcome(Kind::Adversarial, 0.5, 2.0, 0.3, true),
        ];
        let all: Vec<&Outcome> = outcomes.iter().collect();
        let none = Policy::OFF;
        let f = figures(&all, &none);
        assert_eq!(f.false_abstention, 0.5);
        assert_eq!(f.f1, 1.0);
        assert_eq!(f.out_of_corpus_abstention, 0.0);
        let floor = Policy {
            similarity: Some(0.2),
            ..none
        };
        assert_eq!(figures(&all, &floor).out_of_corpus_abstention, 1.0);
        assert_eq!(figures(&all, &floor).adversarial_abstention, 0.0);
        let rerank = Policy {
            rerank: Some(3.0),
            ..none
        };
        assert_eq!(figures(&all, &rerank).adversarial_abstention, 1.0);
        assert_eq!(figures(&all, &rerank).false_abstention, 0.5);
        // A close enough passage spares a question the reranker scores low.
        let spared = Policy {
            spares: Some(0.5),
            ..rerank
        };
        assert_eq!(figures(&all, &spared).adversarial_abstention, 0.0);
        let not_spared = Policy {
            spares: Some(0.55),
            ..rerank
        };
        assert_eq!(figures(&all, &not_spared).adversarial_abstention, 1.0);
        let probe = Policy {
            probe: Some(0.01),
            ..none
        };
        let f = figures(&all, &probe);
        // The gate replaced the first answer by the abstention sentence.
        assert_eq!(f.false_abstention, 1.0);
        assert_eq!(f.f1, 0.5);
        let report = score(&all, &probe);
        assert_eq!(report["answerable"]["exact_match"], 0.5);
        assert_eq!(report["out_of_corpus"]["count"], 1);
    }

    #[test]
    fn calibration_finds_the_gate_that_separates_within_the_bound() {
        let mut outcomes = Vec::new();
        for i in 0..20 {
            outcomes.push(outcome(Kind::Answerable, 0.5, i as f32 - 2.0, 0.01, true));
            outcomes.push(outcome(
                Kind::OutOfCorpus,
                0.3,
                -8.0 + i as f32 * 0.1,
                0.01,
                true,
            ));
        }
        let all: Vec<&Outcome> = outcomes.iter().collect();
        let fixed = Policy {
            similarity: Some(0.2),
            ..Policy::OFF
        };
        let p = calibrate(&all, &TARGETS[0], fixed).unwrap();
        let f = figures(&all, &p);
        assert!(f.false_abstention <= 0.05, "{f:?}");
        assert_eq!(f.out_of_corpus_abstention, 1.0, "{p:?}");
        // The reranker gate sits between the two groups' scores; the cosine
        // floor is kept as configured.
        assert_eq!(p.similarity, Some(0.2));
        assert_eq!(
            p.rerank,
            Some(-6.0),
            "the first gate of the grid that holds all"
        );
        // Cosine alone would also separate these (0.5 against 0.3).
        assert!(auc(&all, Signal::Similarity, Kind::OutOfCorpus) == Some(1.0));
        assert!(auc(&all, Signal::Probe, Kind::OutOfCorpus) == Some(0.5));
        let (calibration, report) = halves(&outcomes);
        assert_eq!(calibration.len(), 20);
        assert_eq!(report.len(), 20);
        assert_eq!(
            calibration
                .iter()
                .filter(|o| o.kind == Kind::OutOfCorpus)
                .count(),
            10
        );
    }
}
