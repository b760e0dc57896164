//! Word documents (`.docx`): paragraphs of `word/document.xml`, with the
//! heading styles (`Title`, `Heading1`..`Heading6`) written as `#` lines so
//! the Markdown splitter keeps heading paths. Decompression is bounded, so a
//! zip bomb costs a bounded read, not the machine.

use docent_core::{ExtractError, ExtractedDocument, Extractor, TextKind};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use std::io::{Cursor, Read};
use std::path::Path;

/// `.docx` files.
pub struct DocxExtractor {
    /// Most bytes one archive member may decompress to.
    max_unzipped_bytes: u64,
}

impl DocxExtractor {
    pub fn new(max_unzipped_bytes: u64) -> Self {
        DocxExtractor { max_unzipped_bytes }
    }
}

impl Extractor for DocxExtractor {
    fn accepts(&self, path: &Path, _head: &[u8]) -> bool {
        super::has_extension(path, &["docx"])
    }

    fn extract(&self, _path: &Path, bytes: &[u8]) -> Result<ExtractedDocument, ExtractError> {
        if bytes.starts_with(&COMPOUND_FILE) {
            return Err(compound_file(bytes));
        }
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
            ExtractError::Malformed(format!(
                "not a Word document (not a valid ZIP archive: {e})"
            ))
        })?;
        let xml = self
            .member(&mut archive, "word/document.xml")?
            .ok_or_else(|| {
                ExtractError::Malformed(
                    "a ZIP archive without word/document.xml, so not a Word document (a renamed .zip?)"
                        .into(),
                )
            })?;
        let text = paragraphs(&xml)?;
        if text.trim().is_empty() {
            return Err(ExtractError::Empty);
        }
        // Document properties are optional; a broken one costs only the title.
        let title = self
            .member(&mut archive, "docProps/core.xml")
            .ok()
            .flatten()
            .and_then(|core| core_title(&core))
            .or_else(|| super::first_heading(&text));
        Ok(ExtractedDocument {
            text,
            title,
            kind: TextKind::Markdown,
            ..Default::default()
        })
    }
}

/// The signature of an OLE compound file: what Word writes for a
/// password-protected document (the real .docx encrypted inside it) and for
/// the old binary .doc format.
const COMPOUND_FILE: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

/// Why a compound file named `.docx` cannot be read: it is encrypted (it
/// holds an `EncryptedPackage` stream) or a legacy .doc.
fn compound_file(bytes: &[u8]) -> ExtractError {
    let marker: Vec<u8> = "EncryptedPackage"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    if memchr::memmem::find(bytes, &marker).is_some() {
        ExtractError::Encrypted("Word document".into())
    } else {
        ExtractError::Unsupported(
            "a legacy Word .doc file (an OLE compound file) named .docx; save it as .docx".into(),
        )
    }
}

impl DocxExtractor {
    /// Reads one archive member, refusing to decompress more than the bound.
    fn member(
        &self,
        archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
        name: &str,
    ) -> Result<Option<Vec<u8>>, ExtractError> {
        let file = match archive.by_name(name) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(zip::result::ZipError::UnsupportedArchive(why))
                if why == zip::result::ZipError::PASSWORD_REQUIRED =>
            {
                return Err(ExtractError::Encrypted("Word document".into()));
            }
            Err(e) => return Err(ExtractError::Malformed(format!("cannot read {name}: {e}"))),
        };
        let limit = self.max_unzipped_bytes;
        let mut out = Vec::new();
        // The declared size may lie; the bounded read is what counts.
        file.take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| ExtractError::Malformed(format!("cannot decompress {name}: {e}")))?;
        if out.len() as u64 > limit {
            return Err(ExtractError::TooLarge(format!(
                "{name} decompresses to more than {limit} bytes (ingest.max_unzipped_bytes; a zip bomb?)"
            )));
        }
        Ok(Some(out))
    }
}

/// The paragraphs of `word/document.xml`, one per line pair, headings as `#`.
fn paragraphs(xml: &[u8]) -> Result<String, ExtractError> {
    let mut reader = Reader::from_reader(xml);
    let mut out = String::new();
    let mut paragraph = String::new();
    let mut level: Option<usize> = None;
    let mut in_text = false;
    let mut buf = Vec::new();
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| {
            ExtractError::Malformed(format!(
                "word/document.xml is not well-formed at byte {}: {e}",
                reader.error_position()
            ))
        })?;
        match event {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == b"pStyle" => {
                level = style_value(&e).and_then(|s| heading_level(&s));
            }
            Event::Start(e) => match e.local_name().as_ref() {
                b"p" => {
                    paragraph.clear();
                    level = None;
                }
                b"t" => in_text = true,
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                b"tab" => paragraph.push('\t'),
                b"br" | b"cr" => paragraph.push('\n'),
                _ => {}
            },
            Event::Text(t) if in_text => {
                let text = t.decode().map_err(|e| {
                    ExtractError::Malformed(format!("bad text in word/document.xml: {e}"))
                })?;
                let text = quick_xml::escape::unescape(&text).map_err(|e| {
                    ExtractError::Malformed(format!("bad entity in word/document.xml: {e}"))
                })?;
                paragraph.push_str(&text);
            }
            Event::GeneralRef(r) if in_text => {
                // Entities such as &amp; arrive on their own in quick-xml 0.38.
                let name = r.decode().unwrap_or_default();
                let resolved = match name.as_ref() {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    _ => r.resolve_char_ref().ok().flatten(),
                };
                if let Some(c) = resolved {
                    paragraph.push(c);
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"t" => in_text = false,
                b"p" => {
                    let text = paragraph.trim();
                    if !text.is_empty() {
                        if let Some(level) = level {
                            out.push_str(&"#".repeat(level));
                            out.push(' ');
                            out.push_str(&text.replace('\n', " "));
                        } else {
                            out.push_str(text);
                        }
                        out.push_str("\n\n");
                    }
                    paragraph.clear();
                    level = None;
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

fn style_value(e: &BytesStart) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == b"val")
        .and_then(|a| a.unescape_value().ok().map(|v| v.to_string()))
}

/// `Title` is a level-1 heading; `Heading1`..`Heading6` (also `heading 1`).
fn heading_level(style: &str) -> Option<usize> {
    let style = style.to_ascii_lowercase().replace(' ', "");
    if style == "title" {
        return Some(1);
    }
    let n: usize = style.strip_prefix("heading")?.parse().ok()?;
    (1..=6).contains(&n).then_some(n)
}

/// `dc:title` of `docProps/core.xml`.
fn core_title(xml: &[u8]) -> Option<String> {
    let mut reader = Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut inside = false;
    let mut title = String::new();
    loop {
        match reader.read_event_into(&mut buf).ok()? {
            Event::Start(e) if e.local_name().as_ref() == b"title" => inside = true,
            Event::End(e) if e.local_name().as_ref() == b"title" => break,
            Event::Text(t) if inside => title.push_str(&t.decode().ok()?),
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    let title = title.trim();
    (!title.is_empty()).then(|| title.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut out);
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            for (name, bytes) in files {
                w.start_file(*name, options).unwrap();
                w.write_all(bytes).unwrap();
            }
            w.finish().unwrap();
        }
        out.into_inner()
    }

    const DOCUMENT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>
<w:p><w:pPr><w:pStyle w:val="Title"/></w:pPr><w:r><w:t>Expenses</w:t></w:r></w:p>
<w:p><w:pPr><w:pStyle w:val="Heading2"/></w:pPr><w:r><w:t>Meals</w:t></w:r></w:p>
<w:p><w:r><w:t xml:space="preserve">Dinners up to </w:t></w:r><w:r><w:t>60 EUR &amp; tips</w:t></w:r><w:r><w:tab/><w:t>ok</w:t></w:r></w:p>
<w:p/>
</w:body></w:document>"#;

    #[test]
    fn paragraphs_and_headings() {
        let bytes = zip_of(&[("word/document.xml", DOCUMENT.as_bytes())]);
        let doc = DocxExtractor::new(1 << 20)
            .extract(Path::new("a.docx"), &bytes)
            .unwrap();
        assert_eq!(
            doc.text,
            "# Expenses\n\n## Meals\n\nDinners up to 60 EUR & tips\tok\n\n"
        );
        assert_eq!(doc.title.as_deref(), Some("Expenses"));
        assert_eq!(doc.kind, TextKind::Markdown);
    }

    #[test]
    fn a_zip_without_a_document_is_named() {
        let bytes = zip_of(&[("notes.txt", b"hello")]);
        let err = DocxExtractor::new(1 << 20)
            .extract(Path::new("a.docx"), &bytes)
            .unwrap_err()
            .to_string();
        assert!(err.contains("without word/document.xml"), "{err}");
    }

    #[test]
    fn a_zip_bomb_is_refused_after_a_bounded_read() {
        let zeros = vec![b' '; 4 << 20];
        let bytes = zip_of(&[("word/document.xml", &zeros)]);
        assert!(bytes.len() < 64 * 1024, "compresses well");
        let err = DocxExtractor::new(1 << 20)
            .extract(Path::new("a.docx"), &bytes)
            .unwrap_err()
            .to_string();
        assert!(err.contains("zip bomb"), "{err}");
    }

    #[test]
    fn password_protected_and_legacy_word_files_are_named_not_called_bad_zips() {
        // Word encrypts a .docx into an OLE compound file, as the old .doc
        // format was; both were reported as "not a valid ZIP archive".
        let compound = |marker: &str| {
            let mut bytes = COMPOUND_FILE.to_vec();
            bytes.extend([0u8; 504]);
            bytes.extend(marker.encode_utf16().flat_map(u16::to_le_bytes));
            bytes
        };
        let extractor = DocxExtractor::new(1 << 20);
        let err = extractor
            .extract(Path::new("a.docx"), &compound("EncryptedPackage"))
            .unwrap_err();
        assert!(matches!(err, ExtractError::Encrypted(_)), "{err}");
        let err = extractor
            .extract(Path::new("a.docx"), &compound("WordDocument"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("legacy Word .doc"), "{err}");
        // A ZIP member marked encrypted.
        let mut zip = zip_of(&[("word/document.xml", DOCUMENT.as_bytes())]);
        zip[6] |= 1;
        let cd = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        zip[cd + 8] |= 1;
        let err = extractor.extract(Path::new("a.docx"), &zip).unwrap_err();
        assert!(matches!(err, ExtractError::Encrypted(_)), "{err}");
    }

    #[test]
    fn not_a_zip_is_malformed() {
        let err = DocxExtractor::new(1 << 20)
            .extract(Path::new("a.docx"), b"PK\x03\x04 truncated")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid ZIP"), "{err}");
    }
}
