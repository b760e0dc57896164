//! The official `openai` Python package against `docent serve`: models,
//! embeddings, and chat completions with and without streaming. The package is
//! installed into a virtualenv under the target directory on first run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn venv_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openai-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(".openai-installed");
    if !ready.exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is needed for the openai client test");
        assert!(
            status.success(),
            "cannot create a virtualenv at {}",
            venv.display()
        );
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "openai>=1.40,<3"])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "pip install openai failed (is PyPI reachable?)"
        );
        std::fs::write(&ready, "").unwrap();
    }
    python
}

#[test]
fn the_official_openai_client_works_against_docent() {
    let python = venv_python();
    let models = {
        docent_models::testing::require("all-MiniLM-L6-v2");
        docent_models::testing::require("smollm2-135m-instruct");
        docent_models::testing::models_dir()
    };
    let data = tempfile::tempdir().unwrap();
    let docent = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_docent"));
        c.args(args)
            .env("DOCENT_DATA_DIR", data.path())
            .env("DOCENT_MODELS_DIR", &models)
            .env("DOCENT__GENERATE__MODEL", "smollm2-135m-instruct")
            .env("DOCENT__SERVER__API_KEYS", r#"["test-key"]"#)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        c
    };
    assert!(
        docent(&["ingest", "examples/docs"])
            .output()
            .unwrap()
            .status
            .success()
    );
    let mut child = docent(&["serve", "--bind", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
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
    std::thread::spawn(move || for _ in lines {});
    let output = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai/client_check.py"))
        .arg(format!("http://{addr}/v1"))
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        output.status.success(),
        "openai client checks failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("openai client checks passed"));
}
