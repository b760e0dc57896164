//! Bytes of a `.md` file through the extractor registry, as ingestion
//! reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| docent_fuzz::extract_as("md", data));
