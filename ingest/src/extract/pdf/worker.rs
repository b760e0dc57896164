//! PDF worker processes that serve one file after another.
//!
//! Starting the `docent` binary costs about 5 ms of CPU (its 88 MB image
//! takes 144,000 relocations and about 900 page faults), which was most of
//! a small PDF's extraction. So a worker serves files in turn: a request is
//! the PDF's length (8 bytes, little-endian) and its bytes on the worker's
//! stdin, a reply the length of a JSON [`WorkerReply`] and the JSON on its
//! stdout. Idle workers wait in a pool, one per extraction thread that
//! needed one, until the run ends ([`Pool::retire_idle`]). A worker past
//! the time bound is killed with its process
//! group; one that dies is reaped and its stderr read for the reason; one
//! that has served [`MAX_SERVED`] files is retired, so that what parses
//! leave behind (fragmented memory under the address-space cap) does not
//! build up. A file on which a worker that had served others dies is tried
//! once more in a fresh worker: the death may come from what the earlier
//! files left, and the file should not pay for it.

use super::{PdfLimits, PdfText, STDERR_LIMIT, WorkerCommand, WorkerReply, from_reply, kill_group};
use docent_core::ExtractError;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use wait_timeout::ChildExt;

/// Files a worker serves before it is retired.
pub(crate) const MAX_SERVED: usize = 64;
/// The largest reply the parent reads (a PDF's text is far smaller).
const MAX_REPLY: u64 = 1 << 30;

/// Workers of one command, started as extraction needs them.
pub(super) struct Pool {
    command: WorkerCommand,
    limits: PdfLimits,
    idle: Mutex<Vec<Worker>>,
    started: AtomicUsize,
}

/// What one request to a worker came to.
enum Outcome {
    /// The worker replied, and can serve again.
    Replied(Worker, Result<PdfText, ExtractError>),
    /// The worker timed out or died (it is gone).
    Failed(ExtractError),
}

impl Pool {
    pub(super) fn new(command: WorkerCommand, limits: PdfLimits) -> Pool {
        Pool {
            command,
            limits,
            idle: Mutex::new(Vec::new()),
            started: AtomicUsize::new(0),
        }
    }

    /// Worker processes started so far.
    pub(super) fn started(&self) -> usize {
        self.started.load(Ordering::Relaxed)
    }

    pub(super) fn extract(&self, bytes: &[u8]) -> Result<PdfText, ExtractError> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let fresh = pooled.is_none();
        let worker = match pooled {
            Some(worker) => worker,
            None => self.start()?,
        };
        let outcome = match worker.run(bytes, &self.limits) {
            Outcome::Failed(error) if !fresh && !matches!(error, ExtractError::Timeout(_)) => {
                tracing::debug!(%error, "a PDF worker that had served other files died; trying a fresh one");
                self.start()?.run(bytes, &self.limits)
            }
            outcome => outcome,
        };
        match outcome {
            Outcome::Replied(worker, result) => {
                self.put_back(worker);
                result
            }
            Outcome::Failed(error) => Err(error),
        }
    }

    /// Ends the idle workers (their processes are reaped, so their CPU
    /// time is counted).
    pub(super) fn retire_idle(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        drop(idle);
    }

    fn start(&self) -> Result<Worker, ExtractError> {
        self.started.fetch_add(1, Ordering::Relaxed);
        Worker::start(&self.command, &self.limits)
    }

    /// Keeps `worker` for the next file, or retires it.
    fn put_back(&self, worker: Worker) {
        if worker.served < MAX_SERVED {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(worker);
        }
    }
}

/// A running worker process.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    /// Replies, read from stdout by a thread; closed when stdout is.
    replies: mpsc::Receiver<Vec<u8>>,
    /// The last [`STDERR_LIMIT`] bytes of stderr, once it closes.
    stderr: Option<JoinHandle<Vec<u8>>>,
    served: usize,
    /// Reaped: its process ID may belong to another process now.
    reaped: bool,
}

impl Worker {
    fn start(command: &WorkerCommand, limits: &PdfLimits) -> Result<Worker, ExtractError> {
        let mut child = Command::new(&command.program)
            .args(&command.args)
            .arg("--memory-mb")
            .arg((limits.max_memory_bytes >> 20).max(1).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a kill also reaches anything it
            // started (which would otherwise hold the pipes open past the
            // bound).
            .process_group(0)
            .spawn()
            .map_err(|e| {
                ExtractError::Crashed(format!(
                    "cannot start the PDF worker {}: {e}",
                    command.program.display()
                ))
            })?;
        let (Some(stdin), Some(mut stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill_group(&mut child);
            return Err(ExtractError::Crashed("the PDF worker has no pipes".into()));
        };
        let (send, replies) = mpsc::channel();
        let threads = std::thread::Builder::new()
            .name("pdf-worker-out".into())
            .spawn(move || {
                loop {
                    let mut length = [0u8; 8];
                    if stdout.read_exact(&mut length).is_err() {
                        return;
                    }
                    let length = u64::from_le_bytes(length);
                    if length > MAX_REPLY {
                        return;
                    }
                    let mut reply = vec![0u8; length as usize];
                    if stdout.read_exact(&mut reply).is_err() || send.send(reply).is_err() {
                        return;
                    }
                }
            })
            .and_then(|_| {
                std::thread::Builder::new()
                    .name("pdf-worker-err".into())
                    .spawn(move || {
                        let mut kept = Vec::new();
                        let mut buffer = [0u8; 4096];
                        while let Ok(n) = stderr.read(&mut buffer) {
                            if n == 0 {
                                break;
                            }
                            kept.extend_from_slice(&buffer[..n]);
                            let excess = kept.len().saturating_sub(STDERR_LIMIT as usize);
                            kept.drain(..excess);
                        }
                        kept
                    })
            });
        match threads {
            Ok(stderr) => Ok(Worker {
                child,
                stdin,
                replies,
                stderr: Some(stderr),
                served: 0,
                reaped: false,
            }),
            Err(e) => {
                kill_group(&mut child);
                Err(ExtractError::Crashed(format!("cannot start a thread: {e}")))
            }
        }
    }

    /// Sends `bytes` and waits for the reply, up to the time bound.
    fn run(mut self, bytes: &[u8], limits: &PdfLimits) -> Outcome {
        let Worker {
            child,
            stdin,
            replies,
            ..
        } = &mut self;
        let reply = std::thread::scope(|scope| {
            // On a thread: a worker that stops reading would block the
            // write, and the time bound must still hold.
            scope.spawn(move || {
                // A worker that dies early closes the pipe; its status says
                // why.
                let _ = stdin
                    .write_all(&(bytes.len() as u64).to_le_bytes())
                    .and_then(|_| stdin.write_all(bytes))
                    .and_then(|_| stdin.flush());
            });
            let reply = replies.recv_timeout(limits.timeout);
            if let Err(RecvTimeoutError::Timeout) = reply {
                // Closes the pipes, which ends the write.
                kill_group(child);
            }
            reply
        });
        match reply {
            Ok(reply) => match serde_json::from_slice::<WorkerReply>(&reply) {
                Ok(reply) => {
                    self.served += 1;
                    Outcome::Replied(self, from_reply(reply))
                }
                Err(e) => Outcome::Failed(ExtractError::Crashed(format!(
                    "the PDF worker's reply is unreadable: {e}"
                ))),
            },
            Err(RecvTimeoutError::Timeout) => {
                self.reaped = true;
                Outcome::Failed(ExtractError::Timeout(limits.timeout.as_secs().max(1)))
            }
            Err(RecvTimeoutError::Disconnected) => Outcome::Failed(self.death(limits)),
        }
    }

    /// Why the worker, which closed its stdout without a reply, died.
    fn death(mut self, limits: &PdfLimits) -> ExtractError {
        let status = match self.child.wait_timeout(limits.timeout) {
            Ok(Some(status)) => status,
            _ => {
                kill_group(&mut self.child);
                self.reaped = true;
                return ExtractError::Crashed(
                    "the PDF worker closed its output and did not exit".into(),
                );
            }
        };
        self.reaped = true;
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        failure(status, &stderr, limits)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if !self.reaped {
            kill_group(&mut self.child);
        }
    }
}

/// The error for a worker that exited with `status` without a reply.
fn failure(status: ExitStatus, stderr: &[u8], limits: &PdfLimits) -> ExtractError {
    let stderr = String::from_utf8_lossy(stderr);
    if stderr.contains("stack overflow") {
        return ExtractError::Malformed(
            "it nests objects too deeply for the PDF parser (the parser overflowed its stack)"
                .into(),
        );
    }
    if stderr.contains("memory allocation") || stderr.contains("out of memory") {
        return ExtractError::TooLarge(format!(
            "the PDF needs more than {} MiB to parse (ingest.extract_memory_mb)",
            limits.max_memory_bytes >> 20
        ));
    }
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message");
    ExtractError::Crashed(format!("the PDF worker exited with {status}: {last}"))
}
