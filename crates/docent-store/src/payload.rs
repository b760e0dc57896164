//! The payload layout shared by every backend: one JSON object per chunk.

use docent_core::{Chunk, ChunkId, DocumentId, Error, Result};
use serde_json::{Map, Value, json};

/// The JSON payload stored with a chunk.
pub fn to_payload(chunk: &Chunk) -> Value {
    json!({
        "document_id": chunk.document_id.0,
        "source": chunk.source,
        "ordinal": chunk.ordinal,
        "start": chunk.start,
        "end": chunk.end,
        "line_start": chunk.line_start,
        "line_end": chunk.line_end,
        "heading": chunk.heading,
        "content_hash": chunk.content_hash,
        "text": chunk.text,
    })
}

/// Rebuilds a chunk from its id and payload.
pub fn from_payload(id: ChunkId, payload: &Map<String, Value>) -> Result<Chunk> {
    let text = |k: &str| -> Result<String> {
        payload
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::Internal {
                message: format!("chunk {id}: payload field {k} missing"),
                source: None,
            })
    };
    let number = |k: &str| -> Result<usize> {
        payload
            .get(k)
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .ok_or_else(|| Error::Internal {
                message: format!("chunk {id}: payload field {k} missing"),
                source: None,
            })
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
        content_hash: text("content_hash")?,
        text: text("text")?,
    })
}
