//! Markdown extraction. The text stays Markdown (only front matter is cut,
//! into metadata) because the chunker splits on its headings and blocks.

use super::decode_text;
use docent_core::{ExtractError, ExtractedDocument, Extractor, TextKind};
use std::collections::BTreeMap;
use std::path::Path;

/// Markdown files. Front matter (`---` … `---` of `key: value` lines) becomes
/// metadata and is cut from the text; the rest is kept as Markdown so the
/// chunker can follow its structure.
pub struct MarkdownExtractor;

impl Extractor for MarkdownExtractor {
    fn accepts(&self, path: &Path, _head: &[u8]) -> bool {
        super::has_extension(path, &["md", "markdown", "mdown", "mkd"])
    }

    fn extract(&self, _path: &Path, bytes: &[u8]) -> Result<ExtractedDocument, ExtractError> {
        let source = decode_text(bytes)?;
        let (metadata, body_start) = front_matter(&source);
        let text = source[body_start..].to_string();
        if text.trim().is_empty() {
            return Err(ExtractError::Empty);
        }
        let title = metadata
            .get("title")
            .cloned()
            .or_else(|| super::first_heading(&text));
        let line_offset = source[..body_start].matches('\n').count();
        Ok(ExtractedDocument {
            text,
            title,
            kind: TextKind::Markdown,
            metadata,
            line_offset,
            ..Default::default()
        })
    }
}

/// Parses simple YAML-style front matter; returns the metadata and where the body starts.
fn front_matter(source: &str) -> (BTreeMap<String, String>, usize) {
    let mut metadata = BTreeMap::new();
    let Some(rest) = source.strip_prefix("---\n") else {
        return (metadata, 0);
    };
    let Some(end) = rest.find("\n---") else {
        return (metadata, 0);
    };
    for line in rest[..end].lines() {
        if let Some((key, value)) = line.split_once(':') {
            let value = value.trim().trim_matches('"').trim_matches('\'');
            if !key.trim().is_empty() && !value.is_empty() {
                metadata.insert(key.trim().to_string(), value.to_string());
            }
        }
    }
    // The closing `---` line starts after the newline `end` points at.
    let close = 4 + end + 1;
    let body = source[close..]
        .find('\n')
        .map_or(source.len(), |i| close + i + 1);
    (metadata, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_becomes_metadata() {
        let doc = MarkdownExtractor
            .extract(
                Path::new("a.md"),
                b"---\ntitle: Handbook\ntags: hr\n---\n# Leave\nText.\n",
            )
            .unwrap();
        assert_eq!(doc.metadata["title"], "Handbook");
        assert_eq!(doc.metadata["tags"], "hr");
        assert_eq!(doc.title.as_deref(), Some("Handbook"));
        assert_eq!(doc.text, "# Leave\nText.\n");
        assert_eq!(doc.line_offset, 4);
    }

    #[test]
    fn title_from_first_heading() {
        let doc = MarkdownExtractor
            .extract(Path::new("a.md"), b"intro\n# Pricing\n")
            .unwrap();
        assert_eq!(doc.title.as_deref(), Some("Pricing"));
        assert_eq!(doc.line_offset, 0);
    }
}
