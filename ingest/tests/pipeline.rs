//! The pipeline end to end on the real MiniLM embedder and the real
//! qdrant-edge store: a corpus of malformed files, PDF worker isolation,
//! batching across files, prune and watched changes.

use docent_core::{
    Chunker, DocumentId, Embedder, ExtractError, Extractor, SearchMode, SearchRequest, VectorStore,
    collection_spec,
};
use docent_embed::{BertEmbedder, BertEmbedderOptions, load_tokenizer};
use docent_ingest::extract::{ExtractOptions, PdfExtractor, PdfLimits, WorkerCommand};
use docent_ingest::testing::{content_stream, pdf_from_objects, simple_pdf};
use docent_ingest::{Catalogue, DocumentStatus, IngestOptions, Pipeline, TokenChunker};
use docent_store::EdgeStore;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

mod hostile;

struct Models {
    embedder: Arc<dyn Embedder>,
    chunker: Arc<dyn Chunker>,
}

fn models() -> &'static Models {
    static M: OnceLock<Models> = OnceLock::new();
    M.get_or_init(|| {
        let dir = docent_models::testing::require("all-MiniLM-L6-v2");
        let embedder = BertEmbedder::load(BertEmbedderOptions::new(&dir, "all-MiniLM-L6-v2"))
            .expect("load MiniLM");
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json")).unwrap();
        Models {
            embedder: Arc::new(embedder),
            chunker: Arc::new(TokenChunker::new(tokenizer, 254, 32).unwrap()),
        }
    })
}

fn worker() -> WorkerCommand {
    WorkerCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_docent-extract-worker")),
        args: Vec::new(),
    }
}

struct Fixture {
    store: Arc<EdgeStore>,
    pipeline: Pipeline,
}

fn fixture(data: &Path, options: IngestOptions) -> Fixture {
    let m = models();
    let spec = collection_spec(m.embedder.as_ref(), m.chunker.as_ref());
    let store = Arc::new(EdgeStore::open(&data.join("vectors"), spec).unwrap());
    let catalogue = Arc::new(Catalogue::open(&data.join("catalogue.redb")).unwrap());
    let pipeline = Pipeline::new(
        m.embedder.clone(),
        store.clone(),
        m.chunker.clone(),
        catalogue,
        options,
    );
    Fixture { store, pipeline }
}

fn options() -> IngestOptions {
    IngestOptions {
        max_file_bytes: 1 << 20,
        extract: ExtractOptions {
            pdf_worker: Some(worker()),
            timeout: Duration::from_secs(20),
            max_memory_bytes: 1 << 30,
            max_unzipped_bytes: 1 << 20,
        },
        ..Default::default()
    }
}

fn top_hit(store: &EdgeStore, question: &str) -> docent_core::ScoredChunk {
    let vector = models().embedder.embed(&[question.to_string()]).unwrap();
    let hits = store
        .search(&SearchRequest {
            vector: vector.into_iter().next().unwrap(),
            text: question.into(),
            mode: SearchMode::Dense,
            candidates: 10,
            top_k: 3,
            ..Default::default()
        })
        .unwrap();
    hits.into_iter().next().expect("a hit")
}

/// Every document's chunks in the store are exactly those the catalogue
/// lists, and the store holds nothing else.
fn assert_store_matches_catalogue(f: &Fixture) -> BTreeMap<String, BTreeSet<String>> {
    let records = f.pipeline.catalogue().list().unwrap();
    let mut total = 0;
    let mut out = BTreeMap::new();
    for r in &records {
        assert_ne!(r.status, DocumentStatus::Pending, "{}", r.id);
        let stored: BTreeSet<String> = f
            .store
            .chunk_ids(&r.id)
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        let listed: BTreeSet<String> = r.chunk_ids.iter().map(|c| c.to_string()).collect();
        assert_eq!(stored, listed, "{}", r.id);
        total += listed.len();
        out.insert(r.id.0.clone(), listed);
    }
    assert_eq!(f.store.count().unwrap(), total, "no orphan points");
    out
}

fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut out);
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in files {
            w.start_file(*name, o).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap();
    }
    out.into_inner()
}

fn docx(body: &str) -> Vec<u8> {
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>"#
    );
    zip_of(&[("word/document.xml", xml.as_bytes())])
}

fn utf16le(text: &str, bom: bool) -> Vec<u8> {
    let mut out = if bom { vec![0xFF, 0xFE] } else { Vec::new() };
    for u in text.encode_utf16() {
        out.extend(u.to_le_bytes());
    }
    out
}

/// Deterministic noise.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

fn manual_pages() -> Vec<String> {
    vec![
        "Facilities manual. Chapter one covers the reception desk and visitor badges.".into(),
        "The backup generator is tested every Friday afternoon by the facilities team.".into(),
        "Chapter three lists the cleaning schedule for the kitchens.".into(),
    ]
}

/// The bad inputs, each with words its failure reason must contain.
fn bad_inputs() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let good_pdf = simple_pdf(&manual_pages(), None);
    let page = |contents: u32| {
        format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {contents} 0 R \
             /Resources << /Font << /F1 5 0 R >> >> >>"
        )
    };
    let font = "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string();
    let catalog = "<< /Type /Catalog /Pages 2 0 R >>".to_string();
    let one_page = "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string();
    let image_only = pdf_from_objects(
        &[
            catalog.clone(),
            one_page.clone(),
            page(4),
            "<< /Length 27 >>\nstream\n0 0 1 rg 10 10 200 200 re f\nendstream".into(),
            font.clone(),
        ],
        "",
    );
    let garbage_stream = {
        let junk = String::from_utf8_lossy(&noise(300, 7)).replace("endstream", "x");
        pdf_from_objects(
            &[
                catalog.clone(),
                one_page.clone(),
                page(4),
                format!("<< /Length {} >>\nstream\n{junk}\nendstream", junk.len()),
                font.clone(),
            ],
            "",
        )
    };
    let zero_pages = pdf_from_objects(
        &[
            catalog.clone(),
            "<< /Type /Pages /Kids [] /Count 0 >>".into(),
        ],
        "",
    );
    let encrypted = pdf_from_objects(
        &[
            catalog.clone(),
            one_page.clone(),
            page(4),
            content_stream("Secret salaries of the board."),
            font.clone(),
            format!(
                "<< /Filter /Standard /V 2 /R 3 /Length 128 /P -3904 /O <{}> /U <{}> >>",
                hex(&noise(32, 11)),
                hex(&noise(32, 13))
            ),
        ],
        "/Encrypt 6 0 R /ID [<0123456789abcdef0123456789abcdef> <0123456789abcdef0123456789abcdef>]",
    );
    let mut broken_utf8 = "Résumé of the café meeting: naïve plans for the year "
        .repeat(4)
        .into_bytes();
    broken_utf8.extend(b"\xff\xfe tail");
    let mut nul_md = b"# Notes\n\nSome text".to_vec();
    nul_md.extend([0, 0, 0, 1, 2]);
    let mut odd_utf16 = utf16le("Odd length text", true);
    odd_utf16.push(b'x');
    let mut unpaired = vec![0xFF, 0xFE];
    unpaired.extend([0x00, 0xD8, b'a', 0]);
    let mut controls = Vec::new();
    for i in 0..2000u32 {
        controls.push(if i % 3 == 0 { 0x01 } else { b'a' });
    }
    let good_docx = docx("<w:p><w:r><w:t>Some words</w:t></w:r></w:p>");
    vec![
        ("empty.txt", vec![], "no extractable text"),
        ("empty.pdf", vec![], "no extractable text"),
        ("empty.html", vec![], "no extractable text"),
        ("empty.docx", vec![], "no extractable text"),
        (
            "whitespace.md",
            b"   \n\n\t \n".to_vec(),
            "no extractable text",
        ),
        (
            "front-matter-only.md",
            b"---\ntitle: Nothing\n---\n".to_vec(),
            "no extractable text",
        ),
        ("random", noise(4096, 1), "binary"),
        ("random.txt", noise(4096, 2), "binary"),
        ("image.png", noise(512, 3), "unsupported format: .png"),
        ("archive.tar.gz", noise(512, 4), "unsupported format"),
        ("nul.md", nul_md, "binary"),
        ("controls.txt", controls, "binary"),
        ("broken-utf8.txt", broken_utf8, "invalid UTF-8 at byte"),
        ("odd-utf16.txt", odd_utf16, "odd number of bytes"),
        ("unpaired-utf16.txt", unpaired, "invalid UTF-16"),
        (
            "too-big.txt",
            b"big file ".repeat(1_200_000),
            "over the limit",
        ),
        (
            "scripts-only.html",
            b"<script>let a = 1;</script><style>p{}</style>".to_vec(),
            "no extractable text",
        ),
        ("header-only.pdf", b"%PDF-1.7\n".to_vec(), "unreadable PDF"),
        (
            "truncated.pdf",
            good_pdf[..good_pdf.len() / 3].to_vec(),
            "PDF",
        ),
        (
            "not-a-pdf.pdf",
            b"Just some text pretending.".to_vec(),
            "no %PDF- header",
        ),
        (
            "garbage-after-header.pdf",
            [b"%PDF-1.4\n".as_slice(), &noise(2048, 5)].concat(),
            "PDF",
        ),
        ("garbage-stream.pdf", garbage_stream, "no extractable text"),
        ("zero-pages.pdf", zero_pages, "without pages"),
        (
            "encrypted.pdf",
            encrypted,
            "encrypted PDF (password protected)",
        ),
        ("image-only.pdf", image_only, "scanned?"),
        (
            "renamed-zip.docx",
            zip_of(&[("notes.txt", b"hello")]),
            "without word/document.xml",
        ),
        (
            "not-a-zip.docx",
            b"plain text, not a zip".to_vec(),
            "not a valid ZIP",
        ),
        (
            "truncated.docx",
            good_docx[..good_docx.len() / 2].to_vec(),
            "ZIP",
        ),
        (
            "bomb.docx",
            zip_of(&[("word/document.xml", &vec![b' '; 8 << 20])]),
            "zip bomb",
        ),
        (
            "bad-xml.docx",
            zip_of(&[("word/document.xml", b"<w:document><w:body><w:p></w:body>")]),
            "not well-formed",
        ),
        (
            "no-text.docx",
            docx("<w:p></w:p><w:p><w:r></w:r></w:p>"),
            "no extractable text",
        ),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The text of every chunk stored for a document.
fn stored_texts(f: &Fixture, id: &str) -> Vec<String> {
    let id = DocumentId::new(id);
    let n = f.store.chunk_ids(&id).unwrap().len();
    let ordinals: Vec<usize> = (0..n).collect();
    f.store
        .chunks_by_ordinal(&id, &ordinals)
        .unwrap()
        .into_iter()
        .map(|c| c.text)
        .collect()
}

#[test]
fn a_corpus_of_malformed_files_fails_file_by_file_and_the_good_files_are_searchable() {
    let docs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let bad = bad_inputs();
    let hostile = hostile::hostile_inputs();
    assert!(
        bad.len() + hostile.len() >= 60,
        "{}",
        bad.len() + hostile.len()
    );
    for (name, bytes, _) in &bad {
        std::fs::write(docs.path().join(name), bytes).unwrap();
    }
    for h in &hostile {
        std::fs::write(docs.path().join(h.name), &h.bytes).unwrap();
    }
    let hostile_failing = hostile
        .iter()
        .filter(|h| matches!(h.expect, hostile::Expect::Fails(_)))
        .count();
    let hostile_read = hostile.len() - hostile_failing;
    let write = |name: &str, bytes: &[u8]| std::fs::write(docs.path().join(name), bytes).unwrap();
    write(
        "parking.md",
        b"# Parking\n\nVisitors park in lot C behind the warehouse.\n",
    );
    write(
        "latin1.txt",
        b"Caf\xe9 cr\xe8me is served at ten in the cafeteria on the second floor.",
    );
    write(
        "drill.txt",
        &utf16le(
            "The fire drill happens on the first Monday of each month.",
            true,
        ),
    );
    write(
        "travel.html",
        b"<html><head><title>Travel policy</title></head><body><nav>Home | About</nav>\
          <h1>Travel</h1><h2>Rail</h2><p>Train tickets are booked two weeks ahead through the travel desk.</p>\
          <footer>Copyright</footer></body></html>",
    );
    write(
        "expenses.docx",
        &docx(
            r#"<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Expenses</w:t></w:r></w:p>
               <w:p><w:pPr><w:pStyle w:val="Heading2"/></w:pPr><w:r><w:t>Meals</w:t></w:r></w:p>
               <w:p><w:r><w:t>Client dinners are reimbursed up to sixty euros per person.</w:t></w:r></w:p>"#,
        ),
    );
    write(
        "manual.pdf",
        &simple_pdf(&manual_pages(), Some("Facilities")),
    );
    let long_line = "the archive keeps every signed contract for ten years ".repeat(300);
    write("long-line.txt", long_line.as_bytes());
    let deep = "<div>".repeat(80_000)
        + "The deep page mentions the rooftop garden."
        + &"</div>".repeat(80_000);
    write("deep.html", deep.as_bytes());

    let f = fixture(
        data.path(),
        IngestOptions {
            max_file_bytes: hostile::MAX_FILE_BYTES,
            ..options()
        },
    );
    let started = Instant::now();
    let summary = f.pipeline.ingest_path(docs.path(), &|_| {}).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "{:?}",
        started.elapsed()
    );
    let failures: BTreeMap<&str, &str> = summary
        .failed
        .iter()
        .map(|f| (f.path.as_str(), f.reason.as_str()))
        .collect();
    let expected_failures =
        bad.iter()
            .map(|(name, _, reason)| (*name, *reason))
            .chain(hostile.iter().filter_map(|h| match h.expect {
                hostile::Expect::Fails(reason) => Some((h.name, reason)),
                hostile::Expect::Reads(_) => None,
            }));
    for (name, reason) in expected_failures {
        let failure = failures
            .get(name)
            .unwrap_or_else(|| panic!("{name} did not fail: {summary:#?}"));
        assert!(
            failure.contains(reason),
            "{name}: {failure:?} should mention {reason:?}"
        );
    }
    for h in &hostile {
        let hostile::Expect::Reads(phrase) = h.expect else {
            continue;
        };
        assert!(
            !failures.contains_key(h.name),
            "{} failed: {:?}",
            h.name,
            failures[h.name]
        );
        let record = f
            .pipeline
            .catalogue()
            .get(&DocumentId::new(h.name))
            .unwrap()
            .unwrap_or_else(|| panic!("{} is not in the catalogue", h.name));
        assert_eq!(record.status, DocumentStatus::Ready, "{}", h.name);
        let texts = stored_texts(&f, h.name);
        assert!(
            texts.iter().any(|t| t.contains(phrase)),
            "{}: no stored chunk holds {phrase:?}: {texts:?}",
            h.name
        );
    }
    assert_eq!(
        summary.files_seen,
        bad.len() + hostile.len() + 8,
        "{summary:?}"
    );
    assert_eq!(summary.added, 8 + hostile_read, "{summary:#?}");
    assert_eq!(
        summary.failed.len(),
        bad.len() + hostile_failing,
        "{summary:#?}"
    );
    // Injections hidden in page furniture never reach the store.
    for text in stored_texts(&f, "injection.html") {
        for dropped in hostile::DROPPED_INJECTIONS {
            assert!(!text.contains(dropped), "{dropped:?} kept in {text:?}");
        }
    }
    // Archive member names are never paths written to.
    for dir in [docs.path(), data.path(), Path::new("/tmp"), Path::new(".")] {
        for up in ["", "..", "../.."] {
            let written = dir.join(up).join("evil-docent-member.txt");
            assert!(!written.exists(), "{}", written.display());
        }
    }
    // The 10 MB line under the limit is cut into bounded chunks.
    let line = stored_texts(&f, "ten-mb-line.txt");
    assert!(line.len() < 100, "{} chunks", line.len());
    assert!(line.iter().all(|t| t.len() < 64 << 10));
    // The failures are recorded in the catalogue too.
    let record = f
        .pipeline
        .catalogue()
        .get(&DocumentId::new("encrypted.pdf"))
        .unwrap()
        .unwrap();
    assert_eq!(record.status, DocumentStatus::Failed);
    assert!(
        record
            .last_error
            .unwrap()
            .contains("decrypt it and re-ingest")
    );

    let hit = top_hit(&f.store, "Where do visitors park?");
    assert_eq!(hit.chunk.source, "parking.md");
    let hit = top_hit(&f.store, "When is the café crème served?");
    assert_eq!(hit.chunk.source, "latin1.txt");
    assert!(hit.chunk.text.contains("Café crème"), "{}", hit.chunk.text);
    let hit = top_hit(&f.store, "When is the fire drill?");
    assert_eq!(hit.chunk.source, "drill.txt");
    let hit = top_hit(&f.store, "How far ahead are train tickets booked?");
    assert_eq!(hit.chunk.source, "travel.html");
    assert_eq!(hit.chunk.heading.as_deref(), Some("Travel > Rail"));
    assert!(
        !hit.chunk.text.contains("Home | About"),
        "{}",
        hit.chunk.text
    );
    let hit = top_hit(&f.store, "How much is reimbursed for client dinners?");
    assert_eq!(hit.chunk.source, "expenses.docx");
    assert_eq!(hit.chunk.heading.as_deref(), Some("Expenses > Meals"));
    let hit = top_hit(&f.store, "How often is the backup generator tested?");
    assert_eq!(hit.chunk.source, "manual.pdf");
    assert_eq!(hit.chunk.page, Some(2), "{:?}", hit.chunk);
    let hit = top_hit(&f.store, "How long are signed contracts kept?");
    assert_eq!(hit.chunk.source, "long-line.txt");
    let hit = top_hit(&f.store, "What does the deep page mention?");
    assert_eq!(hit.chunk.source, "deep.html");
    assert_eq!(
        f.pipeline
            .catalogue()
            .get(&DocumentId::new("manual.pdf"))
            .unwrap()
            .unwrap()
            .title
            .as_deref(),
        Some("Facilities")
    );
    assert_store_matches_catalogue(&f);
}

#[test]
fn a_hung_pdf_worker_is_killed_at_the_time_bound() {
    let hang = WorkerCommand {
        program: "sh".into(),
        args: vec!["-c".into(), "sleep 30".into(), "sh".into()],
    };
    let extractor = PdfExtractor::new(
        Some(hang),
        PdfLimits {
            timeout: Duration::from_secs(1),
            max_memory_bytes: 1 << 30,
        },
    );
    let started = Instant::now();
    let err = extractor
        .extract(Path::new("a.pdf"), &simple_pdf(&manual_pages(), None))
        .unwrap_err();
    assert!(matches!(err, ExtractError::Timeout(1)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_crashing_pdf_worker_costs_only_the_file() {
    let crash = WorkerCommand {
        program: "sh".into(),
        args: vec!["-c".into(), "kill -SEGV $$".into(), "sh".into()],
    };
    let extractor = PdfExtractor::new(Some(crash), PdfLimits::default());
    let err = extractor
        .extract(Path::new("a.pdf"), &simple_pdf(&manual_pages(), None))
        .unwrap_err();
    assert!(matches!(err, ExtractError::Crashed(_)), "{err}");
    assert!(err.to_string().contains("signal"), "{err}");
}

#[test]
fn a_worker_stack_overflow_is_reported_as_too_deep_nesting() {
    // Reported as "the extractor failed: ... signal: 6 (SIGABRT): fatal
    // runtime error: stack overflow", which reads like docent's own crash.
    let overflow = WorkerCommand {
        program: "sh".into(),
        args: vec![
            "-c".into(),
            "echo 'fatal runtime error: stack overflow, aborting' >&2; kill -ABRT $$".into(),
            "sh".into(),
        ],
    };
    let extractor = PdfExtractor::new(Some(overflow), PdfLimits::default());
    let err = extractor
        .extract(Path::new("a.pdf"), &simple_pdf(&manual_pages(), None))
        .unwrap_err();
    assert!(matches!(err, ExtractError::Malformed(_)), "{err}");
    assert!(
        err.to_string().contains("nests objects too deeply"),
        "{err}"
    );
}

#[test]
fn the_pdf_worker_runs_out_of_memory_inside_its_bound() {
    let extractor = PdfExtractor::new(
        Some(worker()),
        PdfLimits {
            timeout: Duration::from_secs(20),
            max_memory_bytes: 4 << 20,
        },
    );
    let pages: Vec<String> = (0..200)
        .map(|i| format!("Page {i} of a long report. ").repeat(40))
        .collect();
    let err = extractor
        .extract(Path::new("big.pdf"), &simple_pdf(&pages, None))
        .unwrap_err();
    assert!(matches!(err, ExtractError::TooLarge(_)), "{err}");
    // With room to work the same file extracts.
    let extractor = PdfExtractor::new(Some(worker()), PdfLimits::default());
    let doc = extractor
        .extract(Path::new("big.pdf"), &simple_pdf(&pages, None))
        .unwrap();
    assert_eq!(doc.page_starts.len(), 200);
    assert_eq!(doc.page_of(doc.text.find("Page 150 ").unwrap()), Some(151));
}

#[test]
fn one_pdf_worker_serves_file_after_file_and_retires_after_its_share() {
    let extractor = PdfExtractor::new(Some(worker()), PdfLimits::default());
    let files = docent_ingest::extract::pdf::MAX_FILES_PER_WORKER + 1;
    for i in 0..files {
        let pages = vec![format!("Report {i} covers the {i}th office.")];
        let doc = extractor
            .extract(Path::new("r.pdf"), &simple_pdf(&pages, None))
            .unwrap();
        assert_eq!(doc.text, pages[0], "file {i}");
        // One worker serves every file of its share, then a second starts.
        let expected = if i < files - 1 { 1 } else { 2 };
        assert_eq!(extractor.workers_started(), expected, "after file {i}");
    }
    // Two threads at once take a worker each, and keep them.
    let extractor = PdfExtractor::new(Some(worker()), PdfLimits::default());
    std::thread::scope(|scope| {
        for t in 0..2 {
            let extractor = &extractor;
            scope.spawn(move || {
                for i in 0..6 {
                    let pages = vec![format!("Thread {t} file {i}.")];
                    let doc = extractor
                        .extract(Path::new("r.pdf"), &simple_pdf(&pages, None))
                        .unwrap();
                    assert_eq!(doc.text, pages[0]);
                }
            });
        }
    });
    let started = extractor.workers_started();
    assert!((1..=2).contains(&started), "{started}");
    // The end of a run ends the idle workers: the next file starts one.
    extractor.release();
    let pages = vec!["After the run.".to_string()];
    let doc = extractor
        .extract(Path::new("r.pdf"), &simple_pdf(&pages, None))
        .unwrap();
    assert_eq!(doc.text, pages[0]);
    assert_eq!(extractor.workers_started(), started + 1);
}

#[test]
fn a_pdf_worker_that_died_after_a_file_costs_the_next_file_nothing() {
    // A worker that replies "no text layer" to its first request, then
    // dies: the next file meets a dead worker, and is tried again in a
    // fresh one, which replies.
    let json = r#"{"failed":{"kind":"no_text","message":""}}"#;
    let length: String = (json.len() as u64)
        .to_le_bytes()
        .iter()
        .map(|b| format!("\\{b:03o}"))
        .collect();
    let script = format!("printf '{length}{json}'; kill -SEGV $$");
    let flaky = WorkerCommand {
        program: "sh".into(),
        args: vec!["-c".into(), script.into(), "sh".into()],
    };
    let extractor = PdfExtractor::new(Some(flaky), PdfLimits::default());
    for file in 0..3 {
        let err = extractor
            .extract(Path::new("a.pdf"), &simple_pdf(&manual_pages(), None))
            .unwrap_err();
        assert!(
            matches!(err, ExtractError::NoTextLayer),
            "file {file}: {err}"
        );
        // The first file starts one worker; each later one meets the dead
        // worker, and starts another.
        assert_eq!(extractor.workers_started(), 1 + file, "file {file}");
    }
}

#[test]
fn batches_across_files_store_the_same_chunks_as_one_file_at_a_time() {
    let docs = tempfile::tempdir().unwrap();
    for i in 0..12 {
        let text = format!(
            "# Team {i}\n\n{}\n",
            format!("Team {i} meets on floor {i} to review the quarterly roadmap. ")
                .repeat(1 + i * 3)
        );
        std::fs::write(docs.path().join(format!("team-{i:02}.md")), text).unwrap();
    }
    let mut results = Vec::new();
    for batch_tokens in [40, 100_000] {
        let data = tempfile::tempdir().unwrap();
        let f = fixture(
            data.path(),
            IngestOptions {
                batch_tokens,
                extract_threads: 3,
                ..options()
            },
        );
        let summary = f.pipeline.ingest_path(docs.path(), &|_| {}).unwrap();
        assert_eq!(summary.added, 12, "{summary:?}");
        results.push(assert_store_matches_catalogue(&f));
    }
    assert_eq!(results[0], results[1]);
    assert!(results[0].values().map(BTreeSet::len).sum::<usize>() > 12);
}

#[test]
fn prune_and_watched_changes_keep_store_and_catalogue_in_step() {
    let docs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = docs.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("keep.md", "# Keep\n\nThe canteen closes at three.\n");
    write("gone.md", "# Gone\n\nThe old office was in Leeds.\n");
    write(
        "change.md",
        "# Change\n\nThe wifi password rotates monthly.\n",
    );
    write("notes/draft.md", "# Draft\n\nUnfinished thoughts.\n");
    write("notes/skip.log", "a log line\n");
    let f = fixture(
        data.path(),
        IngestOptions {
            prune: true,
            exclude: vec!["**/*.log".into()],
            ..options()
        },
    );
    let first = f.pipeline.ingest_path(docs.path(), &|_| {}).unwrap();
    assert_eq!((first.files_seen, first.added), (4, 4), "{first:?}");
    std::fs::remove_file(docs.path().join("gone.md")).unwrap();
    write(
        "change.md",
        "# Change\n\nThe wifi password rotates every week now.\n",
    );
    let second = f.pipeline.ingest_path(docs.path(), &|_| {}).unwrap();
    assert_eq!(
        (second.removed, second.updated, second.unchanged),
        (1, 1, 2),
        "{second:?}"
    );
    let ids = assert_store_matches_catalogue(&f);
    assert!(!ids.contains_key("gone.md") && ids.contains_key("notes/draft.md"));
    assert!(
        top_hit(&f.store, "How often does the wifi password rotate?")
            .chunk
            .text
            .contains("every week")
    );

    // What a watcher reports: a new file, and a removed folder.
    write("new.md", "# New\n\nParcels go to the mail room.\n");
    std::fs::remove_dir_all(docs.path().join("notes")).unwrap();
    let changed = vec![docs.path().join("new.md"), docs.path().join("notes")];
    let third = f
        .pipeline
        .ingest_changes(docs.path(), &changed, &|_| {})
        .unwrap();
    assert_eq!((third.added, third.removed), (1, 1), "{third:?}");
    let ids = assert_store_matches_catalogue(&f);
    assert_eq!(
        ids.keys().cloned().collect::<Vec<_>>(),
        ["change.md", "keep.md", "new.md"]
    );
}

#[test]
fn api_tags_and_metadata_reach_the_chunks() {
    let data = tempfile::tempdir().unwrap();
    let f = fixture(data.path(), options());
    let meta = docent_ingest::DocumentMeta {
        modified: Some(1_700_000_000),
        tags: vec!["hr".into()],
        metadata: BTreeMap::from([("team".to_string(), "people".to_string())]),
    };
    let upload = |meta: &docent_ingest::DocumentMeta| {
        let reports = f
            .pipeline
            .ingest_documents(
                vec![docent_ingest::DocumentInput {
                    id: DocumentId::new("upload-1"),
                    source: "leave.md".into(),
                    path_hint: "leave.md".into(),
                    bytes: b"---\ntags: policy\n---\n# Leave\n\nParental leave is sixteen weeks.\n"
                        .to_vec(),
                    meta: meta.clone(),
                }],
                &|_| {},
            )
            .unwrap();
        assert_eq!(reports.len(), 1);
        reports[0].result.clone().unwrap()
    };
    assert_eq!(upload(&meta), (docent_ingest::Outcome::Added, 1));
    let hit = top_hit(&f.store, "How long is parental leave?");
    assert_eq!(hit.chunk.tags, vec!["policy", "hr"]);
    assert_eq!(hit.chunk.metadata["team"], "people");
    // Same bytes with other tags is a change, not a no-op.
    let other = docent_ingest::DocumentMeta {
        tags: vec!["legal".into()],
        ..meta
    };
    assert_eq!(upload(&other).0, docent_ingest::Outcome::Updated);
    assert_eq!(
        top_hit(&f.store, "How long is parental leave?").chunk.tags,
        vec!["policy", "legal"]
    );
    assert_store_matches_catalogue(&f);
}

#[test]
fn given_documents_are_finished_by_the_pipeline_failures_recorded_and_the_index_rebuilt_after_a_change()
 {
    let data = tempfile::tempdir().unwrap();
    let f = fixture(data.path(), options());
    let input = |id: &str, bytes: &[u8]| docent_ingest::DocumentInput {
        id: DocumentId::new(id),
        source: id.to_string(),
        path_hint: id.into(),
        bytes: bytes.to_vec(),
        meta: Default::default(),
    };
    let indexing = std::cell::Cell::new(0);
    let count = |event: docent_ingest::Progress| {
        if let docent_ingest::Progress::Indexing = event {
            indexing.set(indexing.get() + 1);
        }
    };
    let docs = vec![
        input("broken.txt", b"\x00\x01\x02\x03binary\x00\xff\xfe"),
        input("parking.md", b"# Parking\n\nVisitors park in lot C.\n"),
    ];
    let reports = f.pipeline.ingest_documents(docs.clone(), &count).unwrap();
    // The bad one is reported and recorded; the good one is stored anyway.
    let reason = reports[0].result.clone().unwrap_err();
    assert!(reason.contains("binary"), "{reason}");
    assert_eq!(reports[1].result, Ok((docent_ingest::Outcome::Added, 1)));
    let failed = f
        .pipeline
        .catalogue()
        .get(&DocumentId::new("broken.txt"))
        .unwrap()
        .expect("the failure is recorded");
    assert_eq!(failed.status, DocumentStatus::Failed);
    assert_eq!(failed.last_error.as_deref(), Some(reason.as_str()));
    assert_eq!(indexing.get(), 1, "a change rebuilds the index");
    // Nothing changed: no index build.
    let again = f.pipeline.ingest_documents(docs, &count).unwrap();
    assert_eq!(again[1].result, Ok((docent_ingest::Outcome::Unchanged, 0)));
    assert_eq!(indexing.get(), 1);
    assert!(
        top_hit(&f.store, "Where do visitors park?")
            .chunk
            .text
            .contains("lot C")
    );
}
