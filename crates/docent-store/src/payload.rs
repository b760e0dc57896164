//! The payload layout shared by every backend: one JSON object per chunk.
//!
//! Besides the chunk itself, a payload holds `source_prefixes`, every folder
//! of its source (`a/`, `a/b/`), so a keyword index answers folder filters.

use docent_core::{Chunk, ChunkId, DocumentId, Error, Result};
use serde_json::{Map, Value, json};

/// Payload fields with an index, and the kind of index each needs.
pub const KEYWORD_FIELDS: &[&str] = &["document_id", "source", "source_prefixes", "tags"];
pub const INTEGER_FIELDS: &[&str] = &["modified", "ordinal"];

/// Every folder prefix of a source, each ending in `/`.
pub fn source_prefixes(source: &str) -> Vec<String> {
    source
        .match_indices('/')
        .map(|(i, _)| source[..=i].to_string())
        .collect()
}

/// Normalises a folder filter to the form stored in `source_prefixes`.
pub fn folder_key(prefix: &str) -> String {
    let trimmed = prefix.trim_start_matches("./");
    if trimmed.ends_with('/') {
        trimmed.to_string()
    } else {
        format!("{trimmed}/")
    }
}

/// The JSON payload stored with a chunk.
pub fn to_payload(chunk: &Chunk) -> Value {
    json!({
        "document_id": chunk.document_id.0,
        "source": chunk.source,
        "source_prefixes": source_prefixes(&chunk.source),
        "ordinal": chunk.ordinal,
        "start": chunk.start,
        "end": chunk.end,
        "line_start": chunk.line_start,
        "line_end": chunk.line_end,
        "heading": chunk.heading,
        "page": chunk.page,
        "content_hash": chunk.content_hash,
        "text": chunk.text,
        "tags": chunk.tags,
        "meta": chunk.metadata,
        "modified": chunk.modified,
    })
}

/// Rebuilds a chunk from its id and payload.
pub fn from_payload(id: ChunkId, payload: &Map<String, Value>) -> Result<Chunk> {
    let missing = |k: &str| Error::Internal {
        message: format!("chunk {id}: payload field {k} missing"),
        source: None,
    };
    let text = |k: &str| -> Result<String> {
        payload
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| missing(k))
    };
    let number = |k: &str| -> Result<usize> {
        payload
            .get(k)
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .ok_or_else(|| missing(k))
    };
    Ok(Chunk {
        id,
        document_id: DocumentId(text("document_id")?),
        source: text("source")?,
        ordinal: number("ordinal")?,
        start: number("start")?,
        end: number("end")?,
        line_start: number("line_start")?,
        line_end: number("line_end")?,
        heading: payload
            .get("heading")
            .and_then(Value::as_str)
            .map(str::to_string),
        page: payload
            .get("page")
            .and_then(Value::as_u64)
            .map(|p| p as u32),
        content_hash: text("content_hash")?,
        text: text("text")?,
        tags: payload
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        metadata: payload
            .get("meta")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
        modified: payload.get("modified").and_then(Value::as_u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_whole_folders() {
        assert_eq!(source_prefixes("a/b/c.md"), vec!["a/", "a/b/"]);
        assert!(source_prefixes("c.md").is_empty());
        assert_eq!(folder_key("a/b"), "a/b/");
        assert_eq!(folder_key("./a/"), "a/");
    }

    #[test]
    fn payload_round_trips() {
        let chunk = Chunk {
            id: ChunkId::derive(&DocumentId::new("d/x.pdf"), "h", 3),
            document_id: DocumentId::new("d/x.pdf"),
            source: "d/x.pdf".into(),
            ordinal: 3,
            start: 10,
            end: 20,
            line_start: 2,
            line_end: 4,
            heading: Some("A > B".into()),
            page: Some(7),
            content_hash: "h".into(),
            text: "hello".into(),
            tags: vec!["billing".into()],
            metadata: [("team".to_string(), "ops".to_string())].into(),
            modified: Some(1_700_000_000),
        };
        let value = to_payload(&chunk);
        let back = from_payload(chunk.id, value.as_object().unwrap()).unwrap();
        assert_eq!(back, chunk);
    }
}
