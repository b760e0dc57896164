//! PDF text with pdf-extract, run in a child process.
//!
//! pdf-extract (and lopdf under it) can panic, loop or allocate without
//! bound on hostile or broken files. In production the parser runs in a
//! worker process — the `docent` binary's hidden `extract-worker` command,
//! or `docent-extract-worker` from this crate — that caps its own address
//! space; the parent gives it a wall-clock bound per file and kills it past
//! that. A crash then costs one file, never the run. Workers serve one file
//! after another ([`worker`]). Without a worker command the
//! parser runs in-process on a helper thread with the same time bound (a
//! runaway parse is abandoned, not stopped), which suits tests and embedding.
//!
//! Isolation is the last line, not the only one: the checks in `structure`
//! turn the hangs and stack overflows that hostile structure causes into
//! reasons (and rebuild a broken cross-reference table), and pages are read
//! one at a time, so a panic in the parser costs one page.

use docent_core::{ExtractError, ExtractedDocument, Extractor, TextKind};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

mod structure;
mod worker;

/// Files one worker process serves before it is replaced.
pub const MAX_FILES_PER_WORKER: usize = worker::MAX_SERVED;

use structure::{
    MAX_NESTING, check_structure, content_readable, nesting_depth, page_ids, page_root, recover,
    why_no_pages,
};

/// How to start the worker process: a program and the arguments that make
/// it run [`run_worker`] (e.g. the docent binary and `extract-worker`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl WorkerCommand {
    /// The running executable with `extract-worker`: how the `docent` binary
    /// isolates its own parsers.
    pub fn current_exe() -> std::io::Result<Self> {
        Ok(WorkerCommand {
            program: std::env::current_exe()?,
            args: vec!["extract-worker".into()],
        })
    }
}

/// Bounds on one PDF extraction.
#[derive(Clone, Debug)]
pub struct PdfLimits {
    /// Wall-clock time one file may take.
    pub timeout: Duration,
    /// Address space the worker may map, in bytes (only with a worker).
    pub max_memory_bytes: u64,
}

impl Default for PdfLimits {
    fn default() -> Self {
        PdfLimits {
            timeout: Duration::from_secs(60),
            max_memory_bytes: 2 << 30,
        }
    }
}

/// `.pdf` files (or any file starting with `%PDF-`), one text page per page.
pub struct PdfExtractor {
    parser: Parser,
}

/// Where [`PdfExtractor`] runs the parser.
enum Parser {
    /// In worker processes, which hold the limits.
    Workers(worker::Pool),
    /// In-process on a helper thread, abandoned past this time bound.
    InProcess(Duration),
}

impl PdfExtractor {
    pub fn new(worker: Option<WorkerCommand>, limits: PdfLimits) -> Self {
        let parser = match worker {
            Some(command) => Parser::Workers(worker::Pool::new(command, limits)),
            None => Parser::InProcess(limits.timeout),
        };
        PdfExtractor { parser }
    }

    /// Worker processes started so far (0 without a worker command).
    pub fn workers_started(&self) -> usize {
        match &self.parser {
            Parser::Workers(pool) => pool.started(),
            Parser::InProcess(_) => 0,
        }
    }
}

/// The worker's reply to one PDF, as JSON after its length ([`worker`]).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WorkerReply {
    Pages {
        pages: Vec<String>,
        title: Option<String>,
    },
    Failed {
        kind: FailureKind,
        message: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FailureKind {
    Encrypted,
    NoText,
    Malformed,
}

/// The text of a PDF, page by page.
#[derive(Debug)]
struct PdfText {
    pages: Vec<String>,
    title: Option<String>,
}

impl Extractor for PdfExtractor {
    fn accepts(&self, path: &Path, head: &[u8]) -> bool {
        super::has_extension(path, &["pdf"]) || head.starts_with(b"%PDF-")
    }

    fn extract(&self, _path: &Path, bytes: &[u8]) -> Result<ExtractedDocument, ExtractError> {
        if memchr::memmem::find(&bytes[..bytes.len().min(1024)], b"%PDF-").is_none() {
            return Err(ExtractError::Malformed(
                "not a PDF (no %PDF- header)".into(),
            ));
        }
        let text = match &self.parser {
            Parser::Workers(pool) => pool.extract(bytes)?,
            Parser::InProcess(timeout) => run_on_thread(bytes, *timeout)?,
        };
        Ok(assemble(text))
    }

    fn release(&self) {
        if let Parser::Workers(pool) = &self.parser {
            pool.retire_idle();
        }
    }
}

/// A PDF's whole path through the worker boundary, in one process: the
/// header check, the guarded parse the worker runs, its reply serialized
/// and read back as the parent reads it, and the assembled document. For
/// fuzzing, where hangs and crashes must surface in-process; production
/// runs the two halves in two processes ([`PdfExtractor`]).
#[doc(hidden)]
pub fn extract_through_worker_reply(bytes: &[u8]) -> Result<ExtractedDocument, ExtractError> {
    if memchr::memmem::find(&bytes[..bytes.len().min(1024)], b"%PDF-").is_none() {
        return Err(ExtractError::Malformed(
            "not a PDF (no %PDF- header)".into(),
        ));
    }
    let reply = serde_json::to_vec(&to_reply(parse_guarded(bytes)))
        .map_err(|e| ExtractError::Crashed(format!("cannot write the reply: {e}")))?;
    let reply: WorkerReply = serde_json::from_slice(&reply)
        .map_err(|e| ExtractError::Crashed(format!("cannot read the reply: {e}")))?;
    from_reply(reply).map(assemble)
}

/// Joins pages into one text with a page break between pages, and records
/// where each page starts.
fn assemble(text: PdfText) -> ExtractedDocument {
    let mut out = String::new();
    let mut page_starts = Vec::with_capacity(text.pages.len());
    for page in &text.pages {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        page_starts.push(out.len());
        out.push_str(&tidy(page));
    }
    ExtractedDocument {
        text: out,
        title: text.title,
        kind: TextKind::Plain,
        page_starts,
        ..Default::default()
    }
}

/// Trims line ends and collapses runs of blank lines, which pdf-extract
/// produces in quantity.
fn tidy(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    let mut blank = 0;
    for line in page.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(line);
    }
    out
}

fn from_reply(reply: WorkerReply) -> Result<PdfText, ExtractError> {
    match reply {
        WorkerReply::Pages { pages, title } => Ok(PdfText { pages, title }),
        WorkerReply::Failed { kind, message } => Err(match kind {
            FailureKind::Encrypted => ExtractError::Encrypted("PDF".into()),
            FailureKind::NoText => ExtractError::NoTextLayer,
            FailureKind::Malformed => ExtractError::Malformed(message),
        }),
    }
}

fn to_reply(result: Result<PdfText, ExtractError>) -> WorkerReply {
    match result {
        Ok(text) => WorkerReply::Pages {
            pages: text.pages,
            title: text.title,
        },
        Err(ExtractError::Encrypted(_)) => WorkerReply::Failed {
            kind: FailureKind::Encrypted,
            message: String::new(),
        },
        Err(ExtractError::NoTextLayer) => WorkerReply::Failed {
            kind: FailureKind::NoText,
            message: String::new(),
        },
        Err(ExtractError::Malformed(message)) => WorkerReply::Failed {
            kind: FailureKind::Malformed,
            message,
        },
        Err(other) => WorkerReply::Failed {
            kind: FailureKind::Malformed,
            message: other.to_string(),
        },
    }
}

/// Parses a PDF, turning a panic in the parser into an error.
fn parse_guarded(bytes: &[u8]) -> Result<PdfText, ExtractError> {
    std::panic::catch_unwind(|| parse(bytes)).unwrap_or_else(|panic| {
        Err(ExtractError::Malformed(format!(
            "the PDF parser failed on it ({})",
            panic_message(panic.as_ref())
        )))
    })
}

fn parse(bytes: &[u8]) -> Result<PdfText, ExtractError> {
    use pdf_extract::Document;
    // lopdf's parser recurses once per nesting level, so a file nesting
    // 100k arrays overflows its stack (a crash that isolation contains but
    // that takes an in-process parse down with the whole process).
    let depth = nesting_depth(bytes, MAX_NESTING);
    if depth > MAX_NESTING {
        return Err(ExtractError::Malformed(format!(
            "it nests arrays or dictionaries more than {MAX_NESTING} deep"
        )));
    }
    let encrypted = |doc: &Document| {
        doc.trailer.get(b"Encrypt").is_ok() && doc.authenticate_password("").is_err()
    };
    let has_pages = |doc: &Document| !page_ids(doc).is_empty();
    let mut doc = match Document::load_mem(bytes) {
        Ok(doc) if encrypted(&doc) => return Err(ExtractError::Encrypted("PDF".into())),
        Ok(doc) if has_pages(&doc) => doc,
        // Offsets that point at the wrong bytes leave no catalog or pages.
        Ok(doc) => recover(bytes).filter(has_pages).unwrap_or(doc),
        // The dictionary may be unreadable for the same reason the rest is.
        Err(_) if memchr::memmem::find(bytes, b"/Encrypt").is_some() => {
            return Err(ExtractError::Encrypted("PDF".into()));
        }
        Err(e) => recover(bytes)
            .filter(has_pages)
            .ok_or_else(|| ExtractError::Malformed(format!("unreadable PDF: {e}")))?,
    };
    if encrypted(&doc) {
        return Err(ExtractError::Encrypted("PDF".into()));
    }
    let ids = page_ids(&doc);
    if ids.is_empty() {
        return Err(ExtractError::Malformed(why_no_pages(&doc)));
    }
    check_structure(&doc, &ids).map_err(ExtractError::Malformed)?;
    let mut pages = Vec::with_capacity(ids.len());
    let mut first_error = None;
    let mut unmapped = 0;
    let mut broken_content = None;
    for (i, &id) in ids.iter().enumerate() {
        let n = i + 1;
        let mut text = match page_text(&mut doc, id) {
            Ok(text) => text,
            Err(e) => {
                first_error.get_or_insert_with(|| format!("page {n}: {e}"));
                String::new()
            }
        };
        // Codes of a font without a character map come out as control
        // characters (mostly NUL): they are not text.
        let before = text.len();
        text.retain(|c| (!c.is_control() || matches!(c, '\n' | '\t')) && c != '\u{FFFD}');
        unmapped += before - text.len();
        if text.trim().is_empty() && broken_content.is_none() && !content_readable(&doc, id) {
            broken_content = Some(n);
        }
        pages.push(text);
    }
    if pages.iter().all(|p| p.trim().is_empty()) {
        return Err(match (first_error, broken_content) {
            (Some(e), _) => ExtractError::Malformed(format!("no page could be read ({e})")),
            (None, Some(n)) => ExtractError::Malformed(format!(
                "the content of page {n} is missing, empty or unreadable (a broken stream or cross-reference table?)"
            )),
            (None, None) if unmapped > 0 => ExtractError::Malformed(
                "its text is drawn in fonts without a character map (no /ToUnicode, no usable \
                 /Encoding), so it cannot be read as text; run OCR on it"
                    .into(),
            ),
            (None, None) => ExtractError::NoTextLayer,
        });
    }
    Ok(PdfText {
        title: pdf_title(&doc),
        pages,
    })
}

/// The text of one page. The page tree's root is pointed at this page
/// alone first: pdf-extract finds a page by walking the whole tree, so
/// asking for each page by number costs time quadratic in the page count
/// (5,000 pages ran past a 20-second bound). A panic in the parser costs
/// only this page.
fn page_text(
    doc: &mut pdf_extract::Document,
    page: pdf_extract::ObjectId,
) -> Result<String, String> {
    use pdf_extract::{Object, PlainTextOutput, output_doc};
    let root = page_root(doc).ok_or("no page tree")?;
    let node = doc.get_dictionary_mut(root).map_err(|e| e.to_string())?;
    node.set("Kids", Object::Array(vec![Object::Reference(page)]));
    node.set("Count", Object::Integer(1));
    let doc = &*doc;
    let mut text = String::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        output_doc(doc, &mut PlainTextOutput::new(&mut text))
    }));
    match result {
        Ok(Ok(())) => Ok(text),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(format!(
            "the PDF parser failed on it ({})",
            panic_message(panic.as_ref())
        )),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn pdf_title(doc: &pdf_extract::Document) -> Option<String> {
    let info = doc.trailer.get(b"Info").ok()?;
    let info = match info.as_reference() {
        Ok(id) => doc.get_dictionary(id).ok()?,
        Err(_) => info.as_dict().ok()?,
    };
    let title = pdf_extract::decode_text_string(info.get(b"Title").ok()?).ok()?;
    let title = title.trim();
    (!title.is_empty()).then(|| title.to_string())
}

/// In-process extraction on a helper thread, abandoned past the time bound.
fn run_on_thread(bytes: &[u8], timeout: Duration) -> Result<PdfText, ExtractError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let owned = bytes.to_vec();
    std::thread::Builder::new()
        .name("pdf-extract".into())
        .spawn(move || {
            let _ = tx.send(parse_guarded(&owned));
        })
        .map_err(|e| ExtractError::Crashed(format!("cannot start a thread: {e}")))?;
    rx.recv_timeout(timeout).unwrap_or_else(|e| match e {
        std::sync::mpsc::RecvTimeoutError::Timeout => {
            Err(ExtractError::Timeout(timeout.as_secs().max(1)))
        }
        std::sync::mpsc::RecvTimeoutError::Disconnected => {
            Err(ExtractError::Crashed("the parser thread died".into()))
        }
    })
}

/// Most stderr kept from a worker, for the failure message.
const STDERR_LIMIT: u64 = 16 * 1024;

/// Kills the worker's whole process group and reaps the worker.
fn kill_group(child: &mut std::process::Child) {
    if let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The worker's main: caps the address space at `memory_mb` MiB, then
/// serves PDFs until stdin ends: each request is a length (8 bytes,
/// little-endian) and that many bytes of PDF, each reply a length and a
/// JSON reply, on stdout ([`worker`]). The `docent` binary runs it as the
/// hidden `extract-worker` command.
pub fn run_worker(memory_mb: Option<u64>) -> ExitCode {
    if let Some(mb) = memory_mb {
        let bytes = mb.saturating_mul(1 << 20);
        if let Err(e) = rlimit::setrlimit(rlimit::Resource::AS, bytes, bytes) {
            eprintln!("cannot limit memory: {e}");
            return ExitCode::FAILURE;
        }
    }
    // The parser's own panic message is noise here; the reply says it.
    std::panic::set_hook(Box::new(|_| {}));
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    loop {
        let mut length = [0u8; 8];
        // The end of stdin between requests is the parent's goodbye.
        match stdin.read(&mut length[..1]) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(e) => {
                eprintln!("cannot read a request on stdin: {e}");
                return ExitCode::FAILURE;
            }
        }
        let mut input = Vec::new();
        let read = stdin.read_exact(&mut length[1..]).and_then(|_| {
            // Past the address-space cap this aborts with "memory
            // allocation ... failed", which the parent reports as too large.
            input = vec![0u8; u64::from_le_bytes(length) as usize];
            stdin.read_exact(&mut input)
        });
        if let Err(e) = read {
            eprintln!("cannot read the PDF on stdin: {e}");
            return ExitCode::FAILURE;
        }
        let reply = to_reply(parse_guarded(&input));
        drop(input);
        let written = serde_json::to_vec(&reply)
            .map_err(std::io::Error::from)
            .and_then(|json| {
                stdout.write_all(&(json.len() as u64).to_le_bytes())?;
                stdout.write_all(&json)?;
                stdout.flush()
            });
        if let Err(e) = written {
            eprintln!("cannot write the reply: {e}");
            return ExitCode::FAILURE;
        }
    }
}

/// Reads `--memory-mb N` from a worker's arguments (for binaries without clap).
pub fn worker_memory_arg(args: impl IntoIterator<Item = String>) -> Option<u64> {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--memory-mb" {
            return args.next().and_then(|v| v.parse().ok());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_joined_with_their_starts() {
        let doc = assemble(PdfText {
            pages: vec!["One\n\n\n\nmore  \n".into(), "  \n".into(), "Three".into()],
            title: Some("T".into()),
        });
        assert_eq!(doc.text, "One\n\nmore\n\n\n\nThree");
        assert_eq!(doc.page_starts, vec![0, 11, 13]);
        assert_eq!(doc.page_of(doc.text.find("Three").unwrap()), Some(3));
        assert_eq!(doc.page_of(0), Some(1));
    }

    #[test]
    fn garbage_after_a_header_is_malformed_not_a_panic() {
        let err = parse_guarded(b"%PDF-1.4\n\x00\x01garbage").unwrap_err();
        assert!(matches!(err, ExtractError::Malformed(_)), "{err}");
    }

    use crate::testing::{content_stream, pdf_from_objects};

    const CATALOG: &str = "<< /Type /Catalog /Pages 2 0 R >>";
    const HELVETICA: &str = "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>";

    fn stream(extra: &str, data: &str) -> String {
        format!(
            "<< /Length {} {extra} >>\nstream\n{data}\nendstream",
            data.len()
        )
    }

    fn malformed(bytes: &[u8]) -> String {
        match parse_guarded(bytes) {
            Err(ExtractError::Malformed(m)) => m,
            other => panic!("not malformed: {other:?}"),
        }
    }

    #[test]
    fn a_parent_cycle_is_refused_not_followed_forever() {
        // A page without a MediaBox sent pdf-extract up its /Parent chain,
        // which looped: the worker spun until its time bound.
        let pdf = pdf_from_objects(
            &[
                CATALOG.into(),
                "<< /Type /Pages /Kids [3 0 R] /Count 1 /Parent 6 0 R >>".into(),
                "<< /Type /Page /Parent 2 0 R /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>"
                    .into(),
                content_stream("Parent cycle."),
                HELVETICA.into(),
                "<< /Type /Pages /Kids [] /Count 0 /Parent 2 0 R >>".into(),
            ],
            "",
        );
        let started = std::time::Instant::now();
        assert!(malformed(&pdf).contains("page tree loops"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_form_that_draws_itself_is_refused_not_a_stack_overflow() {
        // pdf-extract recursed into the form forever: the worker died of a
        // stack overflow, and an in-process parse took the process with it.
        let pdf = pdf_from_objects(
            &[
                CATALOG.into(),
                "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".into(),
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
                 /Resources << /Font << /F1 5 0 R >> /XObject << /X1 6 0 R /X2 7 0 R >> >> >>"
                    .into(),
                stream("", "BT /F1 12 Tf 72 700 Td (Looping form) Tj ET /X2 Do"),
                HELVETICA.into(),
                // Inherits the page's resources, so its /X1 is itself.
                stream("/Type /XObject /Subtype /Form /BBox [0 0 9 9]", "/X1 Do"),
                // Draws X1 through resources of its own.
                stream(
                    "/Type /XObject /Subtype /Form /BBox [0 0 9 9] /Resources << /XObject << /X1 6 0 R >> >>",
                    "/X1 Do",
                ),
            ],
            "",
        );
        assert!(malformed(&pdf).contains("form XObject 6 0 draws itself"));
    }

    #[test]
    fn forms_that_inherit_resources_without_drawing_themselves_are_read() {
        let pdf = pdf_from_objects(
            &[
                CATALOG.into(),
                "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".into(),
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
                 /Resources << /Font << /F1 5 0 R >> /XObject << /A 6 0 R /B 7 0 R >> >> >>"
                    .into(),
                stream("", "/A Do /B Do"),
                HELVETICA.into(),
                stream(
                    "/Type /XObject /Subtype /Form /BBox [0 0 612 792]",
                    "BT /F1 12 Tf 72 700 Td (Form A draws B.) Tj ET /B Do",
                ),
                stream(
                    "/Type /XObject /Subtype /Form /BBox [0 0 612 792]",
                    "BT /F1 12 Tf 72 600 Td (Form B draws text.) Tj ET",
                ),
            ],
            "",
        );
        let text = parse_guarded(&pdf).unwrap().pages.join(" ");
        assert!(
            text.contains("Form A draws B.") && text.contains("Form B draws text."),
            "{text}"
        );
    }

    #[test]
    fn deeply_nested_arrays_are_refused_before_the_parser_overflows_its_stack() {
        let depth = 100_000;
        let pdf = pdf_from_objects(
            &[
                CATALOG.into(),
                "<< /Type /Pages /Kids [] /Count 0 >>".into(),
                format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
            ],
            "",
        );
        assert!(malformed(&pdf).contains("more than 256 deep"));
        // Brackets inside strings, streams and comments are not nesting.
        let quiet = format!(
            "({0}) % {0}\n<< /Length 3 >>\nstream\n{0}\nendstream",
            "[".repeat(1000)
        );
        assert!(nesting_depth(quiet.as_bytes(), MAX_NESTING) <= 1);
    }

    #[test]
    fn five_thousand_pages_are_read_in_linear_time() {
        // Each page was found by walking the whole page tree again: 5,000
        // pages ran past the 20 s bound.
        let n = 5000;
        let kids: Vec<String> = (0..n).map(|i| format!("{} 0 R", 5 + i)).collect();
        let mut objects = vec![
            CATALOG.to_string(),
            format!("<< /Type /Pages /Kids [{}] /Count {n} >>", kids.join(" ")),
            content_stream("A page of the census."),
            HELVETICA.to_string(),
        ];
        for _ in 0..n {
            objects.push(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R \
                 /Resources << /Font << /F1 4 0 R >> >> >>"
                    .into(),
            );
        }
        let started = std::time::Instant::now();
        let text = parse_guarded(&pdf_from_objects(&objects, "")).unwrap();
        assert_eq!(text.pages.len(), n);
        assert!(text.pages.iter().all(|p| p.contains("census")));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn text_in_a_font_without_a_character_map_is_not_indexed_as_nul_bytes() {
        // pdf-extract writes the codes of such a font as NUL characters,
        // which were stored as a chunk of NULs.
        let pdf = pdf_from_objects(
            &[
                CATALOG.into(),
                "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".into(),
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
                 /Resources << /Font << /F1 5 0 R >> >> >>"
                    .into(),
                stream("", "BT /F1 12 Tf 72 700 Td <0102030405060708> Tj ET"),
                "<< /Type /Font /Subtype /TrueType /BaseFont /Custom /FirstChar 1 /LastChar 8 \
                 /Widths [600 600 600 600 600 600 600 600] >>"
                    .into(),
            ],
            "",
        );
        assert!(malformed(&pdf).contains("fonts without a character map"));
    }

    #[test]
    fn a_broken_cross_reference_table_is_rebuilt() {
        let pdf = crate::testing::simple_pdf(&["The heron registry.".to_string()], None);
        let xref = memchr::memmem::rfind(&pdf, b"xref\n").unwrap();
        let mut broken = pdf[..xref].to_vec();
        broken.extend(b"trailer\n<< /Root 1 0 R >>\n%%EOF\n");
        let text = parse_guarded(&broken).unwrap();
        assert_eq!(text.pages.len(), 1);
        assert_eq!(text.pages[0].trim(), "The heron registry.");
    }

    #[test]
    fn a_missing_content_stream_is_named_not_taken_for_a_scan() {
        let pdf = pdf_from_objects(
            &[
                CATALOG.into(),
                "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".into(),
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>".into(),
                "<< /Length 99999999999 >>\nstream\nBT (x) Tj ET\nendstream".into(),
            ],
            "",
        );
        assert!(malformed(&pdf).contains("content of page 1 is missing, empty or unreadable"));
    }

    #[test]
    fn a_panic_on_one_page_costs_only_that_page() {
        // A Type3 font without /Encoding makes pdf-extract panic; a panic
        // used to cost the whole document.
        let pdf = pdf_from_objects(
            &[
                CATALOG.into(),
                "<< /Type /Pages /Kids [3 0 R 6 0 R] /Count 2 >>".into(),
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
                 /Resources << /Font << /F1 5 0 R >> >> >>"
                    .into(),
                stream("", "BT /F1 12 Tf 72 700 Td <01> Tj ET"),
                "<< /Type /Font /Subtype /Type3 /FontBBox [0 0 9 9] /FontMatrix [1 0 0 1 0 0] \
                 /CharProcs << >> /FirstChar 1 /LastChar 1 /Widths [9] >>"
                    .into(),
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 7 0 R \
                 /Resources << /Font << /F1 8 0 R >> >> >>"
                    .into(),
                content_stream("The second page survives."),
                HELVETICA.into(),
            ],
            "",
        );
        let text = parse_guarded(&pdf).unwrap();
        assert_eq!(text.pages[0], "");
        assert_eq!(text.pages[1].trim(), "The second page survives.");
    }

    #[test]
    fn memory_argument_is_read() {
        let args = ["x", "--memory-mb", "512"].map(String::from);
        assert_eq!(worker_memory_arg(args), Some(512));
        assert_eq!(worker_memory_arg(Vec::<String>::new()), None);
    }

    /// Found by the `extract_pdf` fuzz target (minimized input): a broken
    /// file whose only object is numbered 3000000241 made the rebuilt
    /// cross-reference table list every number up to it, 20 bytes each
    /// (60 GB), and the parse died out of memory.
    #[test]
    fn fuzz_pdf_huge_object_number_rebuilt_xref_out_of_memory() {
        let input: &[u8] = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 2 0\n3000000241 00 obj\n<< /Ti\x87le (Pai< /\xd3i< /\xd3ize 7 /91\n%%EOF\n";
        let err = parse_guarded(input).unwrap_err();
        assert!(matches!(err, ExtractError::Malformed(_)), "{err}");
    }

    #[test]
    fn a_rebuilt_table_reaches_objects_with_sparse_large_numbers() {
        let stream = content_stream("Sparse numbers are found");
        let pdf = format!(
            "%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n\
             2 0 obj\n<< /Type /Pages /Kids [3000000000 0 R] /Count 1 >>\nendobj\n\
             3000000000 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
             /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>\nendobj\n\
             4 0 obj\n{stream}\nendobj\n\
             5 0 obj\n<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>\nendobj\n\
             trailer\n<< /Root 1 0 R >>\n%%EOF\n"
        );
        let text = parse_guarded(pdf.as_bytes()).unwrap();
        assert!(
            text.pages[0].contains("Sparse numbers are found"),
            "{:?}",
            text.pages
        );
    }
}
