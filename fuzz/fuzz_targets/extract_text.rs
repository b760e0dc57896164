//! Text decoding (BOMs, UTF-16 with and without a BOM, legacy encodings,
//! binary refusal) through the `.txt` extractor, and `decode_text` itself.
#![no_main]

use docent_core::ExtractError;
use docent_ingest::Extractors;
use docent_ingest::extract::decode_text;
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::LazyLock;

static EXTRACTORS: LazyLock<Extractors> = LazyLock::new(Extractors::default);

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = EXTRACTORS.extract(Path::new("fuzz.txt"), data) {
        docent_fuzz::check_document(&doc);
    }
    let decoded = decode_text(data);
    // Plain UTF-8 without a BOM, carriage returns or NULs (which make it
    // look like UTF-16) decodes to itself, unless it is refused as binary.
    if let Ok(s) = std::str::from_utf8(data)
        && !s.starts_with('\u{feff}')
        && !s.contains(['\r', '\0'])
    {
        match decoded {
            Ok(text) => assert_eq!(text, s, "valid UTF-8 changed in decoding"),
            Err(ExtractError::Binary(_)) => {}
            Err(e) => panic!("valid UTF-8 refused: {e}"),
        }
    }
});
