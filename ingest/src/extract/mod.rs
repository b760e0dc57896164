//! Format extractors behind `docent_core::Extractor`, and the registry that
//! picks one per file.

mod docx;
mod html;
mod markdown;
pub mod pdf;
mod text;

pub use docx::DocxExtractor;
pub use html::HtmlExtractor;
pub use markdown::MarkdownExtractor;
pub use pdf::{PdfExtractor, PdfLimits, WorkerCommand};
pub use text::{TextExtractor, decode_text};

use docent_core::{ExtractError, ExtractedDocument, Extractor};
use std::path::Path;
use std::time::Duration;

/// Bounds and isolation for the extractors.
#[derive(Clone, Debug)]
pub struct ExtractOptions {
    /// The process PDFs are parsed in; `None` parses them in-process.
    pub pdf_worker: Option<WorkerCommand>,
    /// Wall-clock time one PDF may take to parse.
    pub timeout: Duration,
    /// Address space a PDF worker may map, in bytes.
    pub max_memory_bytes: u64,
    /// Most bytes one member of an archive format (DOCX) may decompress to.
    pub max_unzipped_bytes: u64,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        let pdf = PdfLimits::default();
        ExtractOptions {
            pdf_worker: None,
            timeout: pdf.timeout,
            max_memory_bytes: pdf.max_memory_bytes,
            max_unzipped_bytes: 256 << 20,
        }
    }
}

/// The extractors docent knows, tried in order; the first that accepts a file wins.
pub struct Extractors {
    extractors: Vec<Box<dyn Extractor>>,
}

impl Default for Extractors {
    fn default() -> Self {
        Extractors::new(&ExtractOptions::default())
    }
}

impl Extractors {
    pub fn new(options: &ExtractOptions) -> Self {
        let pdf = PdfExtractor::new(
            options.pdf_worker.clone(),
            PdfLimits {
                timeout: options.timeout,
                max_memory_bytes: options.max_memory_bytes,
            },
        );
        Extractors {
            extractors: vec![
                Box::new(MarkdownExtractor),
                Box::new(HtmlExtractor),
                Box::new(DocxExtractor::new(options.max_unzipped_bytes)),
                Box::new(pdf),
                Box::new(TextExtractor),
            ],
        }
    }

    /// Lets go of what the extractors keep between files, at the end of a
    /// run (the PDF worker processes).
    pub fn release(&self) {
        for extractor in &self.extractors {
            extractor.release();
        }
    }

    /// Extracts a file with the first extractor that accepts it.
    pub fn extract(&self, path: &Path, bytes: &[u8]) -> Result<ExtractedDocument, ExtractError> {
        if bytes.is_empty() {
            return Err(ExtractError::Empty);
        }
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

/// Whether `path` ends in one of `extensions` (lowercase, without the dot),
/// compared case-insensitively.
pub(crate) fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The first top-level Markdown heading (`# Title`) of `text`, as a title.
pub(crate) fn first_heading(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("# ").map(|t| t.trim().to_string()))
}
