//! PDF text with pdf-extract, run in a child process.
//!
//! pdf-extract (and lopdf under it) can panic, loop or allocate without
//! bound on hostile or broken files. In production the parser runs in a
//! worker process — the `docent` binary's hidden `extract-worker` command,
//! or `docent-extract-worker` from this crate — that caps its own address
//! space; the parent gives it a wall-clock bound and kills it past that. A
//! crash then costs one file, never the run. Without a worker command the
//! parser runs in-process on a helper thread with the same time bound (a
//! runaway parse is abandoned, not stopped), which suits tests and embedding.

use docent_core::{ExtractError, ExtractedDocument, Extractor, TextKind};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;
use wait_timeout::ChildExt;

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
    worker: Option<WorkerCommand>,
    limits: PdfLimits,
}

impl PdfExtractor {
    pub fn new(worker: Option<WorkerCommand>, limits: PdfLimits) -> Self {
        PdfExtractor { worker, limits }
    }
}

/// What the worker prints on stdout, as one JSON object.
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
        let text = match &self.worker {
            Some(worker) => run_in_child(worker, &self.limits, bytes)?,
            None => run_on_thread(bytes, self.limits.timeout)?,
        };
        Ok(assemble(text))
    }
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
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(ExtractError::Malformed(format!(
            "the PDF parser failed on it ({message})"
        )))
    })
}

fn parse(bytes: &[u8]) -> Result<PdfText, ExtractError> {
    use pdf_extract::{Document, PlainTextOutput, output_doc_page};
    let encrypted = |doc: &Document| {
        doc.trailer.get(b"Encrypt").is_ok() && doc.authenticate_password("").is_err()
    };
    let doc = match Document::load_mem(bytes) {
        Ok(doc) => doc,
        // The dictionary may be unreadable for the same reason the rest is.
        Err(_) if memchr::memmem::find(bytes, b"/Encrypt").is_some() => {
            return Err(ExtractError::Encrypted("PDF".into()));
        }
        Err(e) => return Err(ExtractError::Malformed(format!("unreadable PDF: {e}"))),
    };
    if encrypted(&doc) {
        return Err(ExtractError::Encrypted("PDF".into()));
    }
    let numbers: Vec<u32> = doc.get_pages().keys().copied().collect();
    if numbers.is_empty() {
        return Err(ExtractError::Malformed("a PDF without pages".into()));
    }
    let mut pages = Vec::with_capacity(numbers.len());
    let mut first_error = None;
    for n in numbers {
        let mut text = String::new();
        let result = output_doc_page(&doc, &mut PlainTextOutput::new(&mut text), n);
        if let Err(e) = result {
            first_error.get_or_insert_with(|| format!("page {n}: {e}"));
            text.clear();
        }
        pages.push(text);
    }
    if pages.iter().all(|p| p.trim().is_empty()) {
        return Err(match first_error {
            Some(e) => ExtractError::Malformed(format!("no page could be read ({e})")),
            None => ExtractError::NoTextLayer,
        });
    }
    Ok(PdfText {
        title: pdf_title(&doc),
        pages,
    })
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

/// Runs the worker on `bytes` (fed on stdin) and reads its reply, killing it
/// past the time bound.
fn run_in_child(
    worker: &WorkerCommand,
    limits: &PdfLimits,
    bytes: &[u8],
) -> Result<PdfText, ExtractError> {
    let mut child = Command::new(&worker.program)
        .args(&worker.args)
        .arg("--memory-mb")
        .arg((limits.max_memory_bytes >> 20).max(1).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a kill also reaches anything it started
        // (which would otherwise hold the pipes open past the bound).
        .process_group(0)
        .spawn()
        .map_err(|e| {
            ExtractError::Crashed(format!(
                "cannot start the PDF worker {}: {e}",
                worker.program.display()
            ))
        })?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (status, out, err) = std::thread::scope(|scope| {
        scope.spawn(move || {
            if let Some(mut stdin) = stdin {
                // A worker that dies early closes the pipe; its status says why.
                let _ = stdin.write_all(bytes);
            }
        });
        let out = scope.spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut s) = stdout {
                let _ = s.read_to_end(&mut buf);
            }
            buf
        });
        let err = scope.spawn(move || {
            let mut buf = Vec::new();
            if let Some(s) = stderr {
                let _ = s.take(STDERR_LIMIT).read_to_end(&mut buf);
            }
            buf
        });
        let status = match child.wait_timeout(limits.timeout) {
            Ok(Some(status)) => Ok(status),
            Ok(None) => {
                kill_group(&mut child);
                Err(ExtractError::Timeout(limits.timeout.as_secs().max(1)))
            }
            Err(e) => {
                kill_group(&mut child);
                Err(ExtractError::Crashed(format!(
                    "cannot wait for the worker: {e}"
                )))
            }
        };
        (
            status,
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        )
    });
    let status = status?;
    if status.success()
        && let Ok(reply) = serde_json::from_slice::<WorkerReply>(&out)
    {
        return from_reply(reply);
    }
    let stderr = String::from_utf8_lossy(&err);
    if stderr.contains("memory allocation") || stderr.contains("out of memory") {
        return Err(ExtractError::TooLarge(format!(
            "the PDF needs more than {} MiB to parse (ingest.extract_memory_mb)",
            limits.max_memory_bytes >> 20
        )));
    }
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message");
    Err(ExtractError::Crashed(format!(
        "the PDF worker exited with {status}: {last}"
    )))
}

/// The worker's main: caps the address space at `memory_mb` MiB, reads a
/// PDF on stdin, and writes a JSON reply on stdout. The `docent` binary runs
/// it as the hidden `extract-worker` command.
pub fn run_worker(memory_mb: Option<u64>) -> ExitCode {
    if let Some(mb) = memory_mb {
        let bytes = mb.saturating_mul(1 << 20);
        if let Err(e) = rlimit::setrlimit(rlimit::Resource::AS, bytes, bytes) {
            eprintln!("cannot limit memory: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("cannot read the PDF on stdin: {e}");
        return ExitCode::FAILURE;
    }
    // The parser's own panic message is noise here; the reply says it.
    std::panic::set_hook(Box::new(|_| {}));
    let reply = to_reply(parse_guarded(&input));
    let mut stdout = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut stdout, &reply)
        .map_err(std::io::Error::from)
        .and_then(|_| stdout.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write the reply: {e}");
            ExitCode::FAILURE
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

    #[test]
    fn memory_argument_is_read() {
        let args = ["x", "--memory-mb", "512"].map(String::from);
        assert_eq!(worker_memory_arg(args), Some(512));
        assert_eq!(worker_memory_arg(Vec::<String>::new()), None);
    }
}
