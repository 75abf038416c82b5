//! How a document becomes a point and is recognized again: its point id
//! (its stable document id, or a UUID derived from a text index's string
//! id) and a fingerprint of its vectors, which an export compares to skip
//! the points that are already up to date. `lemur_rs.qdrant` (Python)
//! derives both the same way, so either side can resume the other's
//! export.

use qdrant_client::Payload;
use qdrant_client::qdrant::{PointId, PointStruct, point_id::PointIdOptions};
use sha2::{Digest, Sha256};

use crate::requests::document_vectors;

/// The payload key of a text document's string id.
pub const DOC_ID_KEY: &str = "doc_id";
/// The payload key of a point's fingerprint ([`fingerprint`]).
pub const FINGERPRINT_KEY: &str = "lemur_row";

/// The point id of a text index's document `doc_id`: the first 16 bytes
/// of the SHA-256 of its UTF-8 bytes, written as a UUID. Qdrant takes
/// unsigned integers or UUIDs as point ids, and a string id of any length
/// maps to one fixed-size id this way, the same on every export.
pub fn text_point_id(doc_id: &str) -> String {
    let digest = Sha256::digest(doc_id.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The fingerprint of a document's vectors: the first 8 bytes, in hex, of
/// the SHA-256 of its row of `W` and then its tokens as little-endian f32.
/// A rebuilt index (a new feature map, a new fit) or a re-indexed text
/// changes it, so an export rewrites exactly the points that changed.
pub fn fingerprint(weights: &[f32], tokens: &[f32]) -> String {
    let mut hasher = Sha256::new();
    for value in weights.iter().chain(tokens) {
        hasher.update(value.to_le_bytes());
    }
    hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A point id in the form an export compares: the number, or the UUID in
/// lower case.
pub(crate) fn id_key(id: &PointId) -> Option<String> {
    match id.point_id_options.as_ref()? {
        PointIdOptions::Num(number) => Some(number.to_string()),
        PointIdOptions::Uuid(uuid) => Some(uuid.to_ascii_lowercase()),
    }
}

/// A document on its way into a collection.
pub(crate) struct Outgoing<'a> {
    /// Its point id.
    pub(crate) id: PointId,
    /// How messages name it (its document id).
    pub(crate) label: String,
    pub(crate) weights: &'a [f32],
    pub(crate) tokens: &'a [f32],
    pub(crate) fingerprint: String,
    pub(crate) payload: Payload,
}

impl<'a> Outgoing<'a> {
    /// The document with stable id `id` of a [`lemur::SegmentedIndex`].
    pub(crate) fn numbered(
        id: u32,
        weights: &'a [f32],
        tokens: &'a [f32],
        payload: Payload,
    ) -> Self {
        Outgoing {
            id: u64::from(id).into(),
            label: id.to_string(),
            weights,
            tokens,
            fingerprint: fingerprint(weights, tokens),
            payload,
        }
    }

    /// The text index's document `doc_id`, whose payload carries it.
    #[cfg(feature = "text")]
    pub(crate) fn named(
        doc_id: &str,
        weights: &'a [f32],
        tokens: &'a [f32],
        mut payload: Payload,
    ) -> Self {
        payload.insert(DOC_ID_KEY, doc_id.to_string());
        Outgoing {
            id: text_point_id(doc_id).into(),
            label: format!("{doc_id:?}"),
            weights,
            tokens,
            fingerprint: fingerprint(weights, tokens),
            payload,
        }
    }

    /// The point, its payload holding the fingerprint.
    pub(crate) fn point(&self, d: usize) -> PointStruct {
        let mut payload = self.payload.clone();
        payload.insert(FINGERPRINT_KEY, self.fingerprint.clone());
        PointStruct::new(
            self.id.clone(),
            document_vectors(self.weights, self.tokens, d),
            payload,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_id_maps_to_the_uuid_python_derives() {
        // str(uuid.UUID(bytes=hashlib.sha256(b"doc-1").digest()[:16])).
        assert_eq!(
            text_point_id("doc-1"),
            "bb0e4f49-4437-94d9-01e8-969ff11bd112"
        );
        assert_ne!(text_point_id("doc-2"), text_point_id("doc-1"));
    }

    #[test]
    fn the_fingerprint_is_the_one_python_derives() {
        // hashlib.sha256(struct.pack("<3f", 1.0, 2.0, 0.5)).hexdigest()[:16].
        assert_eq!(fingerprint(&[1.0, 2.0], &[0.5]), "fdd6aa4a2057d96e");
    }

    #[test]
    fn the_fingerprint_follows_every_value() {
        let (weights, tokens) = (vec![0.5f32; 8], vec![0.25f32; 12]);
        let base = fingerprint(&weights, &tokens);
        assert_eq!(base.len(), 16);
        assert_eq!(fingerprint(&weights, &tokens), base);
        let mut changed = tokens.clone();
        changed[11] = 0.2500001;
        assert_ne!(fingerprint(&weights, &changed), base);
        let mut changed = weights.clone();
        changed[0] = -0.5;
        assert_ne!(fingerprint(&changed, &tokens), base);
    }
}
