//! The document catalogue: one record per document (source, hash, size,
//! chunk ids, status, last error), kept in redb beside the store.
//!
//! redb commits are atomic and durable, which is what makes ingestion
//! incremental (skip unchanged hashes) and crash-safe: a document is marked
//! `Pending` with both its old and new chunk ids before the store is touched,
//! so a run killed at any point knows on restart exactly what to clean up.

use docent_core::{ChunkId, DocumentId};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;

const DOCUMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("documents");

/// Where a document is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentStatus {
    /// Its chunks are in the store and match `content_hash`.
    Ready,
    /// A write was started and not confirmed; the next run redoes it.
    Pending,
    /// The last attempt failed; `last_error` says why. Chunks of an earlier
    /// good version, if any, are kept.
    Failed,
}

/// What the catalogue knows of one document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentRecord {
    pub id: DocumentId,
    pub source: String,
    pub content_hash: String,
    pub size: u64,
    /// Seconds since the Unix epoch of the file's modification time, if known.
    pub modified: Option<u64>,
    pub title: Option<String>,
    pub status: DocumentStatus,
    pub last_error: Option<String>,
    /// Chunks the store holds (or, when pending, will hold) for this document.
    pub chunk_ids: Vec<ChunkId>,
    /// Chunks of the previous version still to be removed when pending.
    #[serde(default)]
    pub stale_chunk_ids: Vec<ChunkId>,
    /// Seconds since the Unix epoch of the last change to this record.
    pub updated_at: u64,
    /// The folder the document was ingested from (absolute), which
    /// `--prune` compares against; `None` for documents given as bytes.
    #[serde(default)]
    pub root: Option<String>,
}

/// Catalogue failures.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error(
        "the catalogue {path} is in use by another docent process; stop it (or wait for it) and try again"
    )]
    Locked { path: String },
    #[error("catalogue storage error: {0}")]
    Storage(String),
    #[error("catalogue record for {id} is corrupt: {detail}")]
    Corrupt { id: String, detail: String },
}

fn storage(e: impl std::fmt::Display) -> CatalogueError {
    CatalogueError::Storage(e.to_string())
}

/// The catalogue of one collection.
pub struct Catalogue {
    db: Database,
}

impl Catalogue {
    /// Opens or creates the catalogue file. Only one process may hold it.
    pub fn open(path: &Path) -> Result<Self, CatalogueError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => CatalogueError::Locked {
                path: path.display().to_string(),
            },
            other => storage(other),
        })?;
        let tx = db.begin_write().map_err(storage)?;
        tx.open_table(DOCUMENTS).map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(Catalogue { db })
    }

    pub fn get(&self, id: &DocumentId) -> Result<Option<DocumentRecord>, CatalogueError> {
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(DOCUMENTS).map_err(storage)?;
        match table.get(id.as_str()).map_err(storage)? {
            Some(value) => decode(id.as_str(), value.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Inserts or replaces a record, durably.
    pub fn put(&self, record: &DocumentRecord) -> Result<(), CatalogueError> {
        let bytes = serde_json::to_vec(record).map_err(storage)?;
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut table = tx.open_table(DOCUMENTS).map_err(storage)?;
            table
                .insert(record.id.as_str(), bytes.as_slice())
                .map_err(storage)?;
        }
        tx.commit().map_err(storage)
    }

    /// Inserts or replaces several records in one durable commit.
    pub fn put_many(&self, records: &[DocumentRecord]) -> Result<(), CatalogueError> {
        if records.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut table = tx.open_table(DOCUMENTS).map_err(storage)?;
            for record in records {
                let bytes = serde_json::to_vec(record).map_err(storage)?;
                table
                    .insert(record.id.as_str(), bytes.as_slice())
                    .map_err(storage)?;
            }
        }
        tx.commit().map_err(storage)
    }

    pub fn remove(&self, id: &DocumentId) -> Result<(), CatalogueError> {
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut table = tx.open_table(DOCUMENTS).map_err(storage)?;
            table.remove(id.as_str()).map_err(storage)?;
        }
        tx.commit().map_err(storage)
    }

    /// Every record, ordered by document id.
    pub fn list(&self) -> Result<Vec<DocumentRecord>, CatalogueError> {
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(DOCUMENTS).map_err(storage)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(storage)? {
            let (key, value) = entry.map_err(storage)?;
            out.push(decode(key.value(), value.value())?);
        }
        Ok(out)
    }

    /// Up to `limit` records with ids after `after`, in id order, and the
    /// total number of records: one page of a listing.
    pub fn page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<DocumentRecord>, u64), CatalogueError> {
        use std::ops::Bound;
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(DOCUMENTS).map_err(storage)?;
        let total = table.len().map_err(storage)?;
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for entry in table
            .range::<&str>((lower, Bound::Unbounded))
            .map_err(storage)?
            .take(limit)
        {
            let (key, value) = entry.map_err(storage)?;
            out.push(decode(key.value(), value.value())?);
        }
        Ok((out, total))
    }

    /// Makes this catalogue hold exactly the records of `source` (copying a
    /// collection to another store): each is put, and any other removed.
    /// Returns how many records `source` holds.
    pub fn mirror_from(&self, source: &Catalogue) -> Result<usize, CatalogueError> {
        let records = source.list()?;
        let keep: BTreeSet<_> = records.iter().map(|r| r.id.clone()).collect();
        for record in &records {
            self.put(record)?;
        }
        for stale in self.list()? {
            if !keep.contains(&stale.id) {
                self.remove(&stale.id)?;
            }
        }
        Ok(records.len())
    }
}

fn decode(id: &str, bytes: &[u8]) -> Result<DocumentRecord, CatalogueError> {
    serde_json::from_slice(bytes).map_err(|e| CatalogueError::Corrupt {
        id: id.to_string(),
        detail: e.to_string(),
    })
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> DocumentRecord {
        DocumentRecord {
            id: DocumentId::new(id),
            source: id.into(),
            content_hash: "h".into(),
            size: 3,
            modified: None,
            title: None,
            status: DocumentStatus::Ready,
            last_error: None,
            chunk_ids: vec![ChunkId::derive(&DocumentId::new(id), "h", 0)],
            stale_chunk_ids: vec![],
            updated_at: now_secs(),
            root: None,
        }
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalogue.redb");
        {
            let c = Catalogue::open(&path).unwrap();
            c.put(&record("b.md")).unwrap();
            c.put(&record("a.md")).unwrap();
            c.remove(&DocumentId::new("b.md")).unwrap();
        }
        let c = Catalogue::open(&path).unwrap();
        let all = c.list().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0], record_with_time(&all[0], "a.md"));
    }

    fn record_with_time(found: &DocumentRecord, id: &str) -> DocumentRecord {
        DocumentRecord {
            updated_at: found.updated_at,
            ..record(id)
        }
    }

    #[test]
    fn mirroring_copies_the_source_records_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let source = Catalogue::open(&dir.path().join("a.redb")).unwrap();
        let target = Catalogue::open(&dir.path().join("b.redb")).unwrap();
        let record = |name: &str| DocumentRecord {
            updated_at: 0,
            root: Some("docs".into()),
            ..record(name)
        };
        source.put(&record("a.md")).unwrap();
        source.put(&record("b.md")).unwrap();
        target.put(&record("stale.md")).unwrap();
        assert_eq!(target.mirror_from(&source).unwrap(), 2);
        let mut names: Vec<String> = target
            .list()
            .unwrap()
            .into_iter()
            .map(|r| r.source)
            .collect();
        names.sort();
        assert_eq!(names, vec!["a.md", "b.md"]);
        assert_eq!(
            target.get(&DocumentId::new("a.md")).unwrap(),
            Some(record("a.md"))
        );
    }

    #[test]
    fn a_second_open_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalogue.redb");
        let _first = Catalogue::open(&path).unwrap();
        let err = Catalogue::open(&path).err().unwrap().to_string();
        assert!(err.contains("in use by another docent process"), "{err}");
    }
}
