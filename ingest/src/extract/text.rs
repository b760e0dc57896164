use docent_core::{ExtractError, ExtractedDocument, Extractor, TextKind};
use std::path::Path;

/// Plain text files (`.txt`, `.text`, `.log`, `.csv` and files without an extension).
pub struct TextExtractor;

const TEXT_EXTENSIONS: &[&str] = &["txt", "text", "log", "csv", "tsv", "rst", "adoc"];

impl Extractor for TextExtractor {
    fn accepts(&self, path: &Path, _head: &[u8]) -> bool {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) => TEXT_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()),
            None => true,
        }
    }

    fn extract(&self, _path: &Path, bytes: &[u8]) -> Result<ExtractedDocument, ExtractError> {
        let text = decode_text(bytes)?;
        if text.trim().is_empty() {
            return Err(ExtractError::Empty);
        }
        Ok(ExtractedDocument {
            text,
            kind: TextKind::Plain,
            ..Default::default()
        })
    }
}

/// Decodes text bytes: UTF-8 (a BOM is dropped) or UTF-16 with a BOM. Binary
/// data (NUL bytes or many control characters) and invalid UTF-8 are refused
/// with a message that says where decoding failed.
pub fn decode_text(bytes: &[u8]) -> Result<String, ExtractError> {
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return decode_utf16(rest, u16::from_le_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return decode_utf16(rest, u16::from_be_bytes);
    }
    let bytes = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    if looks_binary(bytes) {
        return Err(ExtractError::Binary("contains NUL or control bytes".into()));
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.replace("\r\n", "\n")),
        Err(e) => Err(ExtractError::Undecodable(format!(
            "invalid UTF-8 at byte {}; convert the file to UTF-8",
            e.valid_up_to()
        ))),
    }
}

fn decode_utf16(bytes: &[u8], read: fn([u8; 2]) -> u16) -> Result<String, ExtractError> {
    if bytes.len() % 2 != 0 {
        return Err(ExtractError::Undecodable(
            "UTF-16 text with an odd number of bytes".into(),
        ));
    }
    let units = bytes.chunks_exact(2).map(|c| read([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map(|s| s.replace("\r\n", "\n"))
        .map_err(|e| ExtractError::Undecodable(format!("invalid UTF-16: {e}")))
}

/// NUL bytes, or more than 10% control characters in the first 8 KiB.
fn looks_binary(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(8192)];
    if memchr::memchr(0, head).is_some() {
        return true;
    }
    let control = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0C))
        .count();
    control * 10 > head.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_with_bom_and_crlf() {
        assert_eq!(decode_text(b"\xEF\xBB\xBFa\r\nb").unwrap(), "a\nb");
    }

    #[test]
    fn utf16_le_with_bom() {
        let mut bytes = vec![0xFF, 0xFE];
        for u in "héllo".encode_utf16() {
            bytes.extend(u.to_le_bytes());
        }
        assert_eq!(decode_text(&bytes).unwrap(), "héllo");
    }

    #[test]
    fn binary_is_refused() {
        assert!(matches!(
            decode_text(b"\x7fELF\x02\x01\x01\0\0\0"),
            Err(ExtractError::Binary(_))
        ));
    }

    #[test]
    fn invalid_utf8_names_the_offset() {
        let err = decode_text(b"caf\xe9 au lait").unwrap_err().to_string();
        assert!(err.contains("byte 3"), "{err}");
    }
}
