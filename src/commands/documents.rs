//! `docent documents list`: the catalogue as a table or JSON.

use crate::app::Setup;
use anyhow::Result;
use std::process::ExitCode;

pub fn list(setup: &Setup, json: bool) -> Result<ExitCode> {
    let dir = setup.collection_dir();
    let path = dir.join("catalogue.redb");
    anyhow::ensure!(
        path.exists(),
        "collection '{}' has no documents yet (nothing at {}); run `docent ingest` first",
        setup.collection,
        dir.display()
    );
    let catalogue = docent_ingest::Catalogue::open(&path)?;
    let records = catalogue.list()?;
    if json {
        let rows: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "source": r.source,
                    "status": r.status,
                    "chunks": r.chunk_ids.len(),
                    "size": r.size,
                    "modified": r.modified,
                    "title": r.title,
                    "last_error": r.last_error,
                    "updated_at": r.updated_at,
                    "root": r.root,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<8} {:>6}  document", "status", "chunks");
    for r in &records {
        let status = serde_json::to_value(r.status)?;
        let note = match (&r.last_error, &r.title) {
            (Some(e), _) => format!("  ({e})"),
            (None, Some(t)) => format!("  \"{t}\""),
            _ => String::new(),
        };
        println!(
            "{:<8} {:>6}  {}{note}",
            status.as_str().unwrap_or("?"),
            r.chunk_ids.len(),
            r.id
        );
    }
    println!("{} documents", records.len());
    Ok(ExitCode::SUCCESS)
}
