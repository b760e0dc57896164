//! Bytes of a `.md` file through the extractor registry, as ingestion
//! reads them.
#![no_main]

use docent_ingest::{ExtractOptions, Extractors};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::LazyLock;

static EXTRACTORS: LazyLock<Extractors> = LazyLock::new(|| {
    Extractors::new(&ExtractOptions {
        // A smaller bound than the default keeps executions fast; what is
        // tested is that the bound holds.
        max_unzipped_bytes: 4 << 20,
        ..Default::default()
    })
});

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = EXTRACTORS.extract(Path::new("fuzz.md"), data) {
        docent_fuzz::check_document(&doc);
    }
});
