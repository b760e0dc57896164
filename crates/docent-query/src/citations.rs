//! `[n]` markers: keeping the ones that point at a prompt passage, dropping
//! the rest, and re-pointing one whose passage does not hold the words it
//! cites when another passage does.

use crate::answer::{Evidence, MIN_SHARE, best_holder, share};

/// Cleans streamed answer text: markers `[n]` (also `[n, m]`) whose numbers
/// are all in `1..=passages` pass through; markers that point at no passage
/// are removed. Text that might still become a marker is held back until it
/// is decided, so streaming output never shows a marker that is later removed.
///
/// With [`CitationFilter::with_evidence`], a single-number marker is also
/// checked against the text it follows (since the previous marker): when
/// passage `n` holds under 60% of that claim's own words (those the question
/// does not contain) and another passage holds at least 60% of them, the
/// marker shown and recorded is that passage's. Small models cite the wrong
/// number ("1712 [2]" for a year that only passage 1 states).
#[derive(Debug)]
pub struct CitationFilter {
    passages: usize,
    pending: String,
    cited: Vec<usize>,
    evidence: Option<Evidence>,
    /// Plain text shown since the last marker: what the next marker cites.
    claim: String,
}

/// Longest marker held back before it is treated as plain text.
const MAX_MARKER: usize = 16;

impl CitationFilter {
    pub fn new(passages: usize) -> Self {
        CitationFilter {
            passages,
            pending: String::new(),
            cited: Vec::new(),
            evidence: None,
            claim: String::new(),
        }
    }

    /// Checks markers against the passages' texts (in prompt order, one per
    /// passage number) and the question (see the type's documentation).
    pub fn with_evidence<'a>(
        mut self,
        question: &str,
        passages: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let evidence = Evidence::new(question, passages);
        assert_eq!(
            evidence.passages.len(),
            self.passages,
            "one text per passage"
        );
        self.evidence = Some(evidence);
        self
    }

    /// The passage (0-based) an answer without markers most likely comes
    /// from ([`Evidence::attribute`]), from the evidence already computed;
    /// `None` without evidence.
    pub(crate) fn attribute(&self, answer: &str) -> Option<usize> {
        self.evidence.as_ref()?.attribute(answer)
    }

    /// The passage a single-number marker `[n]` should point at, given the
    /// claim before it: `n` unless another passage clearly holds the
    /// claim's own words (at least 60% of them) and `n` does not (under
    /// 60%, and under half the other's share).
    fn supported(&self, n: usize) -> usize {
        let Some(e) = &self.evidence else { return n };
        let (_, own) = e.words(&self.claim);
        let marked = share(&own, &e.passages[n - 1]);
        match best_holder(&own, &e.passages) {
            Some(i) if marked < MIN_SHARE && marked < share(&own, &e.passages[i]) / 2.0 => i + 1,
            _ => n,
        }
    }

    /// Feeds streamed text; returns what may be shown now.
    pub fn push(&mut self, text: &str) -> String {
        self.pending.push_str(text);
        let mut out = String::new();
        loop {
            let Some(open) = self.pending.find('[') else {
                self.claim.push_str(&self.pending);
                out.push_str(&self.pending);
                self.pending.clear();
                break;
            };
            self.claim.push_str(&self.pending[..open]);
            out.push_str(&self.pending[..open]);
            self.pending.drain(..open);
            match self.pending.find(']') {
                Some(close) => {
                    let inner = self.pending[1..close].to_string();
                    match parse_marker(&inner) {
                        Some(mut numbers)
                            if numbers.iter().all(|&n| n >= 1 && n <= self.passages) =>
                        {
                            let moved = match numbers[..] {
                                [n] => Some(self.supported(n)).filter(|&m| m != n),
                                _ => None,
                            };
                            match moved {
                                Some(m) => {
                                    numbers = vec![m];
                                    out.push_str(&format!("[{m}]"));
                                }
                                None => out.push_str(&self.pending[..=close]),
                            }
                            for n in numbers {
                                if !self.cited.contains(&n) {
                                    self.cited.push(n);
                                }
                            }
                            self.claim.clear();
                        }
                        Some(_) => {} // points at no passage: dropped
                        None => {
                            self.claim.push_str(&self.pending[..=close]);
                            out.push_str(&self.pending[..=close]);
                        }
                    }
                    self.pending.drain(..=close);
                }
                None if self.pending.len() > MAX_MARKER || !could_be_marker(&self.pending[1..]) => {
                    self.claim.push('[');
                    out.push('[');
                    self.pending.drain(..1);
                }
                None => break,
            }
        }
        out
    }

    /// Flushes held-back text at the end of the stream.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Passage numbers cited so far, in order of first citation.
    pub fn cited(&self) -> &[usize] {
        &self.cited
    }
}

fn could_be_marker(partial: &str) -> bool {
    partial
        .chars()
        .all(|c| c.is_ascii_digit() || c == ',' || c == ' ')
}

fn parse_marker(inner: &str) -> Option<Vec<usize>> {
    if inner.trim().is_empty() {
        return None;
    }
    inner
        .split(',')
        .map(|p| p.trim().parse::<usize>().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(passages: usize, pieces: &[&str]) -> (String, Vec<usize>) {
        let mut f = CitationFilter::new(passages);
        let mut out: String = pieces.iter().map(|p| f.push(p)).collect();
        out.push_str(&f.finish());
        (out, f.cited().to_vec())
    }

    #[test]
    fn valid_markers_pass_and_are_recorded() {
        assert_eq!(
            run(3, &["New staff get 20 days [2]", " and more [1, 3]."]),
            (
                "New staff get 20 days [2] and more [1, 3].".into(),
                vec![2, 1, 3]
            )
        );
    }

    #[test]
    fn markers_pointing_nowhere_are_removed_even_split_across_tokens() {
        assert_eq!(
            run(2, &["Yes [", "7", "] ok [", "2]"]),
            ("Yes  ok [2]".into(), vec![2])
        );
        assert_eq!(run(2, &["[0]x"]), ("x".into(), vec![]));
    }

    #[test]
    fn a_marker_is_moved_to_the_passage_that_holds_what_it_cites() {
        let passages = [
            "Newcomen's engine pumped water from a mine in 1712.",
            "Watt improved the engine with a separate condenser.",
            "Savery patented a pump in 1698.",
        ];
        let run = |pieces: &[&str]| {
            let mut f = CitationFilter::new(3)
                .with_evidence("When did Newcomen's engine pump in a mine?", passages);
            let mut out: String = pieces.iter().map(|p| f.push(p)).collect();
            out.push_str(&f.finish());
            (out, f.cited().to_vec())
        };
        // The year is only in passage 1: the marker moves there.
        assert_eq!(run(&["1712 [", "2]"]), ("1712 [1]".into(), vec![1]));
        // Right markers stay, each checked against its own claim.
        assert_eq!(
            run(&["1712 [1]; Watt added a separate condenser [2]."]),
            (
                "1712 [1]; Watt added a separate condenser [2].".into(),
                vec![1, 2]
            )
        );
        // A claim the marked passage half supports keeps its marker; one it
        // barely supports moves.
        assert_eq!(run(&["Watt improved water pumped in 1712 [2]"]).1, vec![2]);
        assert_eq!(run(&["Watt pumped water in 1712 [2]"]).1, vec![1]);
        // Words no passage holds, or only the question's words: the model's
        // marker stands. Markers with several numbers are not checked.
        assert_eq!(run(&["In 1850 [3]"]), ("In 1850 [3]".into(), vec![3]));
        assert_eq!(
            run(&["Newcomen's engine [2]"]),
            ("Newcomen's engine [2]".into(), vec![2])
        );
        assert_eq!(run(&["1712 [2, 3]"]), ("1712 [2, 3]".into(), vec![2, 3]));
        // Without evidence nothing is checked.
        assert_eq!(super::tests::run(3, &["1712 [2]"]).1, vec![2]);
    }

    #[test]
    fn brackets_that_are_not_markers_are_kept() {
        assert_eq!(
            run(2, &["see [the docs] and a[i"]),
            ("see [the docs] and a[i".into(), vec![])
        );
        assert_eq!(
            run(2, &["array[", "k] = 1"]),
            ("array[k] = 1".into(), vec![])
        );
    }
}
