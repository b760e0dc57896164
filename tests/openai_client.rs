//! The official `openai` Python package against `docent serve`: models,
//! embeddings, and chat completions with and without streaming. The package is
//! installed into a virtualenv under the target directory on first run.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

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
    let data = tempfile::tempdir().unwrap();
    let key = ("DOCENT__SERVER__API_KEYS", r#"["test-key"]"#);
    let docent = |args: &[&str]| {
        let mut c = common::command(data.path());
        c.args(args).env(key.0, key.1);
        c
    };
    assert!(
        docent(&["ingest", "examples/docs"])
            .output()
            .unwrap()
            .status
            .success()
    );
    let server = common::start(data.path(), &[key]);
    let addr = &server.addr;
    let output = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai/client_check.py"))
        .arg(format!("http://{addr}/v1"))
        .output()
        .unwrap();
    drop(server);
    assert!(
        output.status.success(),
        "openai client checks failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("openai client checks passed"));
}
