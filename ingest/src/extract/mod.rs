//! Format extractors behind `docent_core::Extractor`, and the registry that
//! picks one per file.

mod markdown;
mod text;

pub use markdown::MarkdownExtractor;
pub use text::{TextExtractor, decode_text};

use docent_core::{ExtractError, ExtractedDocument, Extractor};
use std::path::Path;

/// The extractors docent knows, tried in order; the first that accepts a file wins.
pub struct Extractors {
    extractors: Vec<Box<dyn Extractor>>,
}

impl Default for Extractors {
    fn default() -> Self {
        Extractors {
            extractors: vec![Box::new(MarkdownExtractor), Box::new(TextExtractor)],
        }
    }
}

impl Extractors {
    /// Extracts a file with the first extractor that accepts it.
    pub fn extract(&self, path: &Path, bytes: &[u8]) -> Result<ExtractedDocument, ExtractError> {
        let head = &bytes[..bytes.len().min(8192)];
        for extractor in &self.extractors {
            if extractor.accepts(path, head) {
                return extractor.extract(path, bytes);
            }
        }
        Err(ExtractError::Unsupported(
            path.extension()
                .map(|e| format!(".{}", e.to_string_lossy()))
                .unwrap_or_else(|| "no extension".into()),
        ))
    }
}
