//! Plain-text extraction, and [`decode_text`], the byte-to-text decoding
//! (BOMs, UTF-16, legacy encodings, binary refusal) that the Markdown and
//! HTML extractors share, so every format decodes the same way.

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

/// Decodes text bytes: UTF-8 (a BOM is dropped), UTF-16 with a BOM or with
/// the NUL pattern of ASCII-range UTF-16, or a legacy encoding (Windows-1252,
/// Latin-1, Shift_JIS...) guessed with chardetng. Binary data (NUL bytes or
/// many control characters) is refused, and so is text that is mostly UTF-8
/// but broken, with a message that says where decoding failed.
pub fn decode_text(bytes: &[u8]) -> Result<String, ExtractError> {
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return decode_utf16(rest, u16::from_le_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return decode_utf16(rest, u16::from_be_bytes);
    }
    if let Some(read) = bomless_utf16(bytes) {
        return decode_utf16(bytes, read);
    }
    let (bytes, bom) = match bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        Some(rest) => (rest, 3),
        None => (bytes, 0),
    };
    if looks_binary(bytes) {
        return Err(ExtractError::Binary("contains NUL or control bytes".into()));
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.replace("\r\n", "\n")),
        // A file that starts with a UTF-8 byte order mark says it is UTF-8;
        // it is not guessed to be Windows-1252 mojibake.
        Err(e) if bom > 0 || mostly_utf8(bytes) => Err(ExtractError::Undecodable(format!(
            "invalid UTF-8 at byte {}{}; convert the file to UTF-8",
            e.valid_up_to() + bom,
            if bom > 0 {
                " (after a UTF-8 byte order mark)"
            } else {
                ""
            }
        ))),
        Err(_) => decode_legacy(bytes),
    }
}

/// Whether the valid multi-byte UTF-8 characters outnumber the broken
/// sequences: such a file is damaged UTF-8, not a legacy encoding (where
/// valid multi-byte sequences are rare accidents).
fn mostly_utf8(bytes: &[u8]) -> bool {
    let (mut good, mut bad) = (0usize, 0usize);
    for chunk in bytes.utf8_chunks() {
        good += chunk.valid().chars().filter(|c| !c.is_ascii()).count();
        bad += usize::from(!chunk.invalid().is_empty());
    }
    good > bad
}

/// A legacy (non-UTF) encoding guessed from the bytes.
fn decode_legacy(bytes: &[u8]) -> Result<String, ExtractError> {
    let mut detector = chardetng::EncodingDetector::new();
    detector.feed(bytes, true);
    let encoding = detector.guess(None, false);
    let (text, _, had_errors) = encoding.decode(bytes);
    if had_errors {
        return Err(ExtractError::Undecodable(format!(
            "neither UTF-8 nor valid {} (the closest guess); convert the file to UTF-8",
            encoding.name()
        )));
    }
    Ok(text.replace("\r\n", "\n"))
}

/// UTF-16 without a BOM, recognised by NULs in every other byte (text in
/// the ASCII range, as such files mostly are).
fn bomless_utf16(bytes: &[u8]) -> Option<fn([u8; 2]) -> u16> {
    let head = &bytes[..bytes.len().min(4096) & !1];
    if head.len() < 8 {
        return None;
    }
    let pairs = head.len() / 2;
    let zero_at = |i: usize| head.chunks_exact(2).filter(|p| p[i] == 0).count();
    let (even, odd) = (zero_at(0), zero_at(1));
    // Nine in ten pairs have their NUL on one side and none on the other.
    if odd * 10 >= pairs * 9 && even == 0 {
        Some(u16::from_le_bytes)
    } else if even * 10 >= pairs * 9 && odd == 0 {
        Some(u16::from_be_bytes)
    } else {
        None
    }
}

fn decode_utf16(bytes: &[u8], read: fn([u8; 2]) -> u16) -> Result<String, ExtractError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(ExtractError::Undecodable(
            "UTF-16 text with an odd number of bytes".into(),
        ));
    }
    let units = bytes.chunks_exact(2).map(|c| read([c[0], c[1]]));
    let text = char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map(|s| s.replace("\r\n", "\n"))
        .map_err(|e| ExtractError::Undecodable(format!("invalid UTF-16: {e}")))?;
    if looks_binary(text.as_bytes()) {
        return Err(ExtractError::Binary(
            "UTF-16 that decodes to control characters".into(),
        ));
    }
    Ok(text)
}

/// NUL bytes anywhere, or more than 10% control characters in the first
/// 8 KiB. (NULs were looked for in the first 8 KiB only, so a text with a
/// binary blob after that was decoded as Windows-1252 and its garbage indexed.)
fn looks_binary(bytes: &[u8]) -> bool {
    if memchr::memchr(0, bytes).is_some() {
        return true;
    }
    let head = &bytes[..bytes.len().min(8192)];
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
    fn broken_utf8_names_the_offset() {
        let mut bytes = "café crème brûlée au lait ".as_bytes().to_vec();
        bytes.push(0xFF);
        let err = decode_text(&bytes).unwrap_err().to_string();
        assert!(err.contains("invalid UTF-8 at byte 30"), "{err}");
    }

    #[test]
    fn a_binary_tail_after_the_first_8_kib_is_binary() {
        let mut bytes = "A readme before a blob. ".repeat(400).into_bytes();
        bytes.extend([0x1f, 0x8b, 0x08, 0x00, 0xe9, 0xff, 0x00, 0x03]);
        assert!(matches!(decode_text(&bytes), Err(ExtractError::Binary(_))));
    }

    #[test]
    fn garbage_after_a_utf8_bom_is_not_guessed_to_be_latin1() {
        let bytes = b"\xEF\xBB\xBFok \xe9\xe8\xfc\xa0\xb5\xc3";
        let err = decode_text(bytes).unwrap_err().to_string();
        assert!(
            err.contains("invalid UTF-8 at byte 6 (after a UTF-8 byte order mark)"),
            "{err}"
        );
    }

    #[test]
    fn latin1_and_windows_1252_are_decoded() {
        assert_eq!(
            decode_text(b"Caf\xe9 cr\xe8me is served at 10 \x96 daily.").unwrap(),
            "Café crème is served at 10 – daily."
        );
    }

    #[test]
    fn bomless_utf16_is_decoded() {
        let mut le = Vec::new();
        let mut be = Vec::new();
        for u in "Visitors park in lot C.".encode_utf16() {
            le.extend(u.to_le_bytes());
            be.extend(u.to_be_bytes());
        }
        assert_eq!(decode_text(&le).unwrap(), "Visitors park in lot C.");
        assert_eq!(decode_text(&be).unwrap(), "Visitors park in lot C.");
    }
}
