//! HTML pages as Markdown-like text: headings become `#` lines so the
//! Markdown splitter keeps heading paths; navigation and page furniture
//! (scripts, styles, nav, header, footer, aside, forms) are dropped.

use super::decode_text;
use docent_core::{ExtractError, ExtractedDocument, Extractor, TextKind};
use ego_tree::iter::Edge;
use scraper::{Html, Node};
use std::path::Path;

/// `.html`, `.htm` and `.xhtml` files.
pub struct HtmlExtractor;

/// Elements whose whole subtree is not content.
const DROPPED: &[&str] = &[
    "script", "style", "nav", "header", "footer", "aside", "noscript", "template", "form", "svg",
    "iframe", "button", "select", "head",
];

/// Elements that end a line of text.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "br",
    "tr",
    "table",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "blockquote",
    "pre",
    "figure",
    "figcaption",
    "hr",
    "body",
    "details",
    "summary",
    "address",
];

impl Extractor for HtmlExtractor {
    fn accepts(&self, path: &Path, _head: &[u8]) -> bool {
        super::has_extension(path, &["html", "htm", "xhtml"])
    }

    fn extract(&self, _path: &Path, bytes: &[u8]) -> Result<ExtractedDocument, ExtractError> {
        let source = decode_text(bytes)?;
        if nesting_depth(&source) > MAX_DEPTH {
            // html5ever's tree building is quadratic in nesting depth (a
            // 100k-deep page takes minutes); such a page keeps its text only.
            let text = strip_tags(&source);
            if text.trim().is_empty() {
                return Err(ExtractError::Empty);
            }
            return Ok(ExtractedDocument {
                text,
                kind: TextKind::Plain,
                ..Default::default()
            });
        }
        let html = Html::parse_document(&source);
        let (text, title) = render(&html);
        if text.trim().is_empty() {
            return Err(ExtractError::Empty);
        }
        let title = title.or_else(|| super::first_heading(&text));
        Ok(ExtractedDocument {
            text,
            title,
            kind: TextKind::Markdown,
            ..Default::default()
        })
    }
}

/// Walks the tree without recursion (pages nest arbitrarily deep) and writes
/// the text; returns it with the `<title>`.
fn render(html: &Html) -> (String, Option<String>) {
    let mut out = Writer::default();
    let mut title: Option<String> = None;
    // Depth inside dropped subtrees, inside <pre>, and the open heading level.
    let (mut dropped, mut pre) = (0usize, 0usize);
    let mut in_title = false;
    for edge in html.tree.root().traverse() {
        match edge {
            Edge::Open(node) => match node.value() {
                Node::Element(el) => {
                    let name = el.name();
                    if name == "title" && title.is_none() {
                        in_title = true;
                        title = Some(String::new());
                    }
                    if dropped > 0 || DROPPED.contains(&name) {
                        dropped += 1;
                        continue;
                    }
                    if let Some(level) = heading_level(name) {
                        out.block();
                        out.raw(&"#".repeat(level));
                        out.raw(" ");
                    } else if name == "li" {
                        out.line();
                        out.raw("- ");
                    } else if name == "pre" {
                        pre += 1;
                        out.block();
                    } else if matches!(name, "td" | "th") {
                        out.raw(" ");
                    } else if BLOCKS.contains(&name) {
                        out.line();
                    }
                }
                Node::Text(text) => {
                    if in_title {
                        if let Some(t) = title.as_mut() {
                            t.push_str(text);
                        }
                    } else if dropped == 0 {
                        if pre > 0 {
                            out.raw(text);
                        } else {
                            out.words(text);
                        }
                    }
                }
                _ => {}
            },
            Edge::Close(node) => {
                if let Node::Element(el) = node.value() {
                    let name = el.name();
                    if name == "title" {
                        in_title = false;
                    }
                    if dropped > 0 {
                        dropped -= 1;
                        continue;
                    }
                    if heading_level(name).is_some() || name == "pre" {
                        pre = pre.saturating_sub(usize::from(name == "pre"));
                        out.block();
                    } else if name == "p" || name == "blockquote" || name == "table" {
                        out.block();
                    } else if BLOCKS.contains(&name) || name == "li" {
                        out.line();
                    }
                }
            }
        }
    }
    let title = title
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty());
    (out.finish(), title)
}

/// Nesting beyond which a page is read as tag-stripped text.
const MAX_DEPTH: usize = 2048;

/// Elements that never have an end tag.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr", "param",
];

/// The deepest element nesting the tags suggest (an upper bound: elements
/// closed implicitly, such as `<p>`, count as open).
fn nesting_depth(source: &str) -> usize {
    let bytes = source.as_bytes();
    let (mut depth, mut max) = (0usize, 0usize);
    let mut i = 0;
    while let Some(at) = memchr::memchr(b'<', &bytes[i..]) {
        let start = i + at + 1;
        let end = memchr::memchr(b'>', &bytes[start..]).map_or(bytes.len(), |e| start + e);
        let tag = &source[start..end];
        if let Some(rest) = tag.strip_prefix('/') {
            if rest.starts_with(|c: char| c.is_ascii_alphabetic()) {
                depth = depth.saturating_sub(1);
            }
        } else if tag.starts_with(|c: char| c.is_ascii_alphabetic()) && !tag.ends_with('/') {
            let name: String = tag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            if !VOID.contains(&name.as_str()) {
                depth += 1;
                max = max.max(depth);
            }
        }
        i = end.min(bytes.len());
        if i >= bytes.len() {
            break;
        }
    }
    max
}

/// Text outside tags, without script and style contents, whitespace collapsed.
fn strip_tags(source: &str) -> String {
    let lower = source.to_ascii_lowercase();
    let mut out = String::new();
    let mut i = 0;
    while i < source.len() {
        let Some(at) = source[i..].find('<') else {
            out.push_str(&source[i..]);
            break;
        };
        out.push_str(&source[i..i + at]);
        out.push(' ');
        let start = i + at;
        let mut end = source[start..]
            .find('>')
            .map_or(source.len(), |e| start + e + 1);
        for skipped in ["script", "style"] {
            if lower[start + 1..].starts_with(skipped) {
                let close = format!("</{skipped}");
                end = lower[start..]
                    .find(&close)
                    .and_then(|c| lower[start + c..].find('>').map(|e| start + c + e + 1))
                    .unwrap_or(source.len());
            }
        }
        i = end;
    }
    let text = out.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("{text}\n")
}

fn heading_level(name: &str) -> Option<usize> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

/// Accumulates text, collapsing whitespace and blank lines.
#[derive(Default)]
struct Writer {
    out: String,
    /// Newlines wanted before the next text: 1 for a line, 2 for a block.
    pending: usize,
    /// Whether a space is wanted before the next word.
    space: bool,
}

impl Writer {
    fn line(&mut self) {
        self.pending = self.pending.max(1);
    }

    fn block(&mut self) {
        self.pending = 2;
    }

    fn flush(&mut self) {
        if self.pending > 0 && !self.out.is_empty() {
            let have = self.out.chars().rev().take_while(|&c| c == '\n').count();
            for _ in have..self.pending {
                self.out.push('\n');
            }
        } else if self.space && !self.out.is_empty() && !self.out.ends_with([' ', '\n']) {
            self.out.push(' ');
        }
        self.pending = 0;
        self.space = false;
    }

    fn raw(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.flush();
        self.out.push_str(text);
    }

    fn words(&mut self, text: &str) {
        if text.starts_with(char::is_whitespace) {
            self.space = true;
        }
        let mut words = text.split_whitespace().peekable();
        while let Some(word) = words.next() {
            self.flush();
            self.out.push_str(word);
            self.space = words.peek().is_some();
        }
        if text.ends_with(char::is_whitespace) {
            self.space = true;
        }
    }

    fn finish(self) -> String {
        let mut out = self.out;
        let end = out.trim_end().len();
        out.truncate(end);
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extract(html: &str) -> ExtractedDocument {
        HtmlExtractor
            .extract(Path::new("a.html"), html.as_bytes())
            .unwrap()
    }

    #[test]
    fn headings_become_markdown_and_furniture_is_dropped() {
        let doc = extract(
            "<html><head><title> Travel  policy </title><style>p{}</style></head><body>\
             <nav><a href=/>Home</a></nav><header>Site banner</header>\
             <h1>Travel</h1><p>Book  trains\n when you <b>can</b>.</p>\
             <h2>Hotels</h2><ul><li>Up to 150 EUR</li><li>Breakfast included</li></ul>\
             <script>alert('x')</script><form>Search</form><footer>© 2026</footer></body></html>",
        );
        assert_eq!(doc.title.as_deref(), Some("Travel policy"));
        assert_eq!(doc.kind, TextKind::Markdown);
        assert_eq!(
            doc.text,
            "# Travel\n\nBook trains when you can.\n\n## Hotels\n\n- Up to 150 EUR\n- Breakfast included\n"
        );
    }

    #[test]
    fn pre_keeps_its_whitespace() {
        let doc = extract("<p>Run:</p><pre>cargo  build\n  --release</pre><p>done</p>");
        assert!(
            doc.text.contains("cargo  build\n  --release"),
            "{:?}",
            doc.text
        );
    }

    #[test]
    fn a_page_of_only_scripts_has_no_text() {
        let err = HtmlExtractor
            .extract(Path::new("a.html"), b"<script>var a = 1;</script>")
            .unwrap_err();
        assert!(matches!(err, ExtractError::Empty));
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let depth = 100_000;
        let html = "<div>".repeat(depth) + "deep text" + &"</div>".repeat(depth);
        let started = std::time::Instant::now();
        let doc = extract(&html);
        assert_eq!(doc.text.trim(), "deep text");
        assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
    }

    #[test]
    fn depth_counts_open_tags_but_not_void_ones() {
        assert_eq!(nesting_depth("<div><p>a<br><img src=x/></p><hr></div>"), 2);
        assert_eq!(strip_tags("<b>a</b><script>x<y</script> <i>b</i>"), "a b\n");
    }
}
