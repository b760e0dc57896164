//! PDF bytes through the worker boundary, in one process: the guarded
//! parse the worker runs, its JSON reply, and the parent's reading of it.
//! Panics inside pdf-extract/lopdf are contained by docent's guard (and in
//! production by the worker process), so only docent's own panics abort.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    docent_fuzz::abort_only_on_docent_panics();
    if let Ok(doc) = docent_ingest::extract::pdf::extract_through_worker_reply(data) {
        docent_fuzz::check_document(&doc);
    }
});
