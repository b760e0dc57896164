//! Kill `docent ingest` at several points (abort after N stored batches, and
//! SIGKILL at timed moments), rerun it, and compare the collection with a
//! clean run: the same chunk ids per document, the store agreeing with the
//! catalogue, no orphans and nothing left pending.

use docent_core::{CollectionSpec, DocumentId, VectorStore};
use docent_ingest::{Catalogue, DocumentStatus};
use docent_store::EdgeStore;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn models_dir() -> PathBuf {
    docent_models::testing::require("all-MiniLM-L6-v2");
    docent_models::testing::models_dir()
}

fn docent(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_docent"));
    c.env("DOCENT_DATA_DIR", data)
        .env("DOCENT_MODELS_DIR", models_dir())
        // Small batches, so a run has many points to die at.
        .env("DOCENT__INGEST__BATCH_TOKENS", "400")
        .env_remove("DOCENT_TEST_ABORT_AFTER_BATCHES");
    c
}

fn ingest(data: &Path, docs: &Path, abort_after: Option<usize>) -> std::process::ExitStatus {
    let mut c = docent(data);
    c.args(["ingest", docs.to_str().unwrap(), "--json"]);
    if let Some(n) = abort_after {
        c.env("DOCENT_TEST_ABORT_AFTER_BATCHES", n.to_string());
    }
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
}

fn kill_after(data: &Path, docs: &Path, after: Duration) {
    let mut child = docent(data)
        .args(["ingest", docs.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let _ = child.kill(); // SIGKILL; it may have finished already
    child.wait().unwrap();
}

const WORDS: &[&str] = &[
    "river", "engine", "harbour", "ledger", "violet", "summit", "copper", "meadow", "signal",
    "lantern", "orchard", "glacier", "quarry", "falcon", "compass", "timber", "beacon", "canyon",
];

fn text(seed: usize, words: usize) -> String {
    let mut s = seed as u64 * 2_654_435_761 + 1;
    let mut out = format!("# Document {seed}\n\n");
    for i in 0..words {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.push_str(WORDS[(s % WORDS.len() as u64) as usize]);
        out.push_str(if i % 12 == 11 { ".\n" } else { " " });
    }
    out
}

/// Per document: the chunk ids the store holds, checked against the catalogue.
fn collection(data: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let dir = data.join("collections/default");
    let spec: CollectionSpec = serde_json::from_str(
        &std::fs::read_to_string(dir.join("vectors/docent_collection.json")).unwrap(),
    )
    .unwrap();
    let store = EdgeStore::open(&dir.join("vectors"), spec).unwrap();
    let catalogue = Catalogue::open(&dir.join("catalogue.redb")).unwrap();
    let mut out = BTreeMap::new();
    let mut total = 0;
    for record in catalogue.list().unwrap() {
        assert_eq!(record.status, DocumentStatus::Ready, "{}", record.id);
        let stored: BTreeSet<String> = store
            .chunk_ids(&record.id)
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        let listed: BTreeSet<String> = record.chunk_ids.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            stored, listed,
            "store and catalogue disagree on {}",
            record.id
        );
        total += listed.len();
        out.insert(record.id.0.clone(), listed);
    }
    assert_eq!(store.count().unwrap(), total, "orphan or duplicate points");
    assert!(
        store
            .chunk_ids(&DocumentId::new("nonexistent"))
            .unwrap()
            .is_empty()
    );
    out
}

#[test]
fn ingest_killed_at_any_point_then_rerun_equals_a_clean_run() {
    let docs = tempfile::tempdir().unwrap();
    for i in 0..24 {
        std::fs::write(
            docs.path().join(format!("doc-{i:02}.md")),
            text(i, 60 + (i * 37) % 400),
        )
        .unwrap();
    }
    let crashed = tempfile::tempdir().unwrap();
    for n in [1, 3, 6] {
        let status = ingest(crashed.path(), docs.path(), Some(n));
        assert!(!status.success(), "abort after {n} batches: {status:?}");
        // Change a document between crashes, so its stored version is replaced.
        std::fs::write(docs.path().join("doc-00.md"), text(100 + n, 300)).unwrap();
    }
    for ms in [1500, 4000] {
        kill_after(crashed.path(), docs.path(), Duration::from_millis(ms));
    }
    std::fs::remove_file(docs.path().join("doc-05.md")).unwrap();
    let mut rerun = docent(crashed.path());
    let out = rerun
        .args(["ingest", docs.path().to_str().unwrap(), "--prune", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let clean = tempfile::tempdir().unwrap();
    assert!(ingest(clean.path(), docs.path(), None).success());
    let expected = collection(clean.path());
    let found = collection(crashed.path());
    assert_eq!(expected.len(), 23);
    assert_eq!(found, expected);

    // A rerun after all that changes nothing.
    let out = docent(crashed.path())
        .args(["ingest", docs.path().to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["unchanged"], 23, "{summary}");
    assert_eq!(summary["chunks_embedded"], 0, "{summary}");
}
