//! The collection layout both backends create and write, kept out of either
//! so a collection built by one has the shape the other expects and a
//! migration copies points verbatim: the int8 copy of the dense vectors, the
//! payload indexes, and points checked against the spec's dimension before a
//! backend converts them to its own types.

use crate::bm25::Bm25;
use crate::payload::{INTEGER_FIELDS, KEYWORD_FIELDS, to_payload};
use docent_core::{
    Chunk, ChunkId, CollectionSpec, EmbeddedChunk, Error, Result, SparseVector, StoredPoint,
};
use serde_json::Value;

/// Every backend searches dense vectors through an int8 copy kept in RAM
/// (scalar quantization clipped to this quantile of the values) and
/// rescores the candidates with the f32 vectors.
pub(crate) const INT8_QUANTILE: f32 = 0.99;
/// The int8 copy stays in RAM even when the f32 vectors are on disk.
pub(crate) const INT8_ALWAYS_RAM: bool = true;

/// The kind of index a payload field needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum IndexKind {
    Keyword,
    Integer,
}

/// Every indexed payload field, with its kind of index.
pub(crate) fn payload_indexes() -> impl Iterator<Item = (&'static str, IndexKind)> {
    let keywords = KEYWORD_FIELDS.iter().map(|f| (*f, IndexKind::Keyword));
    keywords.chain(INTEGER_FIELDS.iter().map(|f| (*f, IndexKind::Integer)))
}

/// A point as every backend writes it.
pub(crate) struct Point {
    pub id: ChunkId,
    pub dense: Vec<f32>,
    pub sparse: SparseVector,
    pub payload: Value,
}

/// Points for newly embedded chunks, with their BM25 vectors.
pub(crate) fn embedded_points(
    spec: &CollectionSpec,
    bm25: &Bm25,
    chunks: &[EmbeddedChunk],
) -> Result<Vec<Point>> {
    chunks
        .iter()
        .map(|c| {
            checked_point(
                spec,
                c.chunk.id,
                c.vector.clone(),
                bm25.document(&c.chunk.text),
                to_payload(&c.chunk),
            )
        })
        .collect()
}

/// Points copied from another store, vectors as they were stored.
pub(crate) fn copied_points(spec: &CollectionSpec, points: &[StoredPoint]) -> Result<Vec<Point>> {
    points
        .iter()
        .map(|p| {
            checked_point(
                spec,
                p.chunk.id,
                p.vector.clone(),
                p.sparse.clone(),
                to_payload(&p.chunk),
            )
        })
        .collect()
}

fn checked_point(
    spec: &CollectionSpec,
    id: ChunkId,
    dense: Vec<f32>,
    sparse: SparseVector,
    payload: Value,
) -> Result<Point> {
    if dense.len() != spec.dimension {
        return Err(Error::InvalidInput(format!(
            "vector of chunk {id} has {} dimensions; the collection has {}",
            dense.len(),
            spec.dimension
        )));
    }
    Ok(Point {
        id,
        dense,
        sparse,
        payload,
    })
}

/// A point read back for copying; one without a dense vector of the
/// collection's dimension is refused rather than copied half.
pub(crate) fn stored_point(
    spec: &CollectionSpec,
    chunk: Chunk,
    vector: Vec<f32>,
    sparse: SparseVector,
) -> Result<StoredPoint> {
    if vector.len() != spec.dimension {
        return Err(Error::Internal {
            message: format!(
                "stored chunk {} has no dense vector of the collection's dimension",
                chunk.id
            ),
            source: None,
        });
    }
    Ok(StoredPoint {
        chunk,
        vector,
        sparse,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use docent_core::DocumentId;

    fn spec() -> CollectionSpec {
        crate::test_spec(2)
    }

    fn chunk() -> Chunk {
        let document = DocumentId::new("a.md");
        Chunk {
            id: ChunkId::derive(&document, "h", 0),
            document_id: document,
            source: "a.md".into(),
            text: "pelicans".into(),
            ..Default::default()
        }
    }

    #[test]
    fn points_of_another_dimension_are_refused_before_any_write() {
        let bm25 = Bm25::new().unwrap();
        let wrong = EmbeddedChunk {
            chunk: chunk(),
            vector: vec![1.0; 3],
        };
        assert!(matches!(
            embedded_points(&spec(), &bm25, &[wrong]),
            Err(Error::InvalidInput(_))
        ));
        let right = EmbeddedChunk {
            chunk: chunk(),
            vector: vec![1.0, 0.0],
        };
        let points = embedded_points(&spec(), &bm25, &[right]).unwrap();
        assert_eq!(points[0].sparse, bm25.document("pelicans"));
        assert!(matches!(
            stored_point(&spec(), chunk(), vec![], SparseVector::default()),
            Err(Error::Internal { .. })
        ));
    }
}
