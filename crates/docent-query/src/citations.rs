//! `[n]` markers: keeping the ones that point at a prompt passage, dropping the rest.

/// Cleans streamed answer text: markers `[n]` (also `[n, m]`) whose numbers
/// are all in `1..=passages` pass through; markers that point at no passage
/// are removed. Text that might still become a marker is held back until it
/// is decided, so streaming output never shows a marker that is later removed.
#[derive(Debug)]
pub struct CitationFilter {
    passages: usize,
    pending: String,
    cited: Vec<usize>,
}

/// Longest marker held back before it is treated as plain text.
const MAX_MARKER: usize = 16;

impl CitationFilter {
    pub fn new(passages: usize) -> Self {
        CitationFilter {
            passages,
            pending: String::new(),
            cited: Vec::new(),
        }
    }

    /// Feeds streamed text; returns what may be shown now.
    pub fn push(&mut self, text: &str) -> String {
        self.pending.push_str(text);
        let mut out = String::new();
        loop {
            let Some(open) = self.pending.find('[') else {
                out.push_str(&self.pending);
                self.pending.clear();
                break;
            };
            out.push_str(&self.pending[..open]);
            self.pending.drain(..open);
            match self.pending.find(']') {
                Some(close) => {
                    let inner = self.pending[1..close].to_string();
                    match parse_marker(&inner) {
                        Some(numbers) if numbers.iter().all(|&n| n >= 1 && n <= self.passages) => {
                            for n in numbers {
                                if !self.cited.contains(&n) {
                                    self.cited.push(n);
                                }
                            }
                            out.push_str(&self.pending[..=close]);
                        }
                        Some(_) => {} // points at no passage: dropped
                        None => out.push_str(&self.pending[..=close]),
                    }
                    self.pending.drain(..=close);
                }
                None if self.pending.len() > MAX_MARKER || !could_be_marker(&self.pending[1..]) => {
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
