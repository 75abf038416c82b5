//! A [`TextIndex`] in a collection (feature `text`): every searchable
//! document is a point whose id is derived from its string id
//! ([`text_point_id`]) and whose payload carries it ([`DOC_ID_KEY`]), so a
//! search returns the string ids, and a document re-indexed under the same
//! id overwrites its point.

use lemur::TextIndex;
use qdrant_client::Payload;
use qdrant_client::qdrant::{PointId, WithPayloadSelector};

use crate::points::{DOC_ID_KEY, Outgoing, text_point_id};
use crate::{
    CollectionSpec, ExportOptions, QdrantCollection, QdrantError, SearchSpec, each_point,
    string_value,
};

/// The widths of `index`'s rows of `W` and tokens.
fn widths(index: &TextIndex) -> Result<(usize, usize), QdrantError> {
    let lemur = index
        .lemur_index()
        .ok_or_else(|| QdrantError::from(lemur::TextIndexError::NoDocuments))?;
    Ok((lemur.feature_dim(), lemur.dim()))
}

impl QdrantCollection {
    /// [`QdrantCollection::create`] for a text index (which must hold a
    /// document: its feature map sets the width of `W`).
    pub fn create_text(
        &self,
        spec: &CollectionSpec,
        index: &TextIndex,
    ) -> Result<bool, QdrantError> {
        let (h, d) = widths(index)?;
        self.create_for(spec, h, d)
    }

    /// [`QdrantCollection::export`] for a text index: every searchable
    /// document, or those of `doc_ids`, with `payload(doc_id)` and the
    /// string id under [`DOC_ID_KEY`]. A document removed from the index
    /// is not deleted from the collection: see
    /// [`QdrantCollection::delete_text`].
    pub fn export_text(
        &self,
        index: &TextIndex,
        doc_ids: Option<&[&str]>,
        options: &ExportOptions,
        payload: &dyn Fn(&str) -> Payload,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<usize, QdrantError> {
        options.check()?;
        let (_, d) = widths(index)?;
        let documents: Vec<_> = match doc_ids {
            Some(doc_ids) => doc_ids
                .iter()
                .map(|&doc_id| {
                    index.document(doc_id).ok_or_else(|| {
                        QdrantError::InvalidArgument(format!(
                            "no searchable document {doc_id:?} in the text index"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
            None => index.documents().collect(),
        };
        let outgoing = documents.iter().map(|document| {
            Ok(Outgoing::named(
                document.doc_id,
                document.weights,
                document.tokens,
                payload(document.doc_id),
            ))
        });
        self.export_documents(documents.len(), d, outgoing, options, progress)
    }

    /// Deletes the text documents `doc_ids` from the collection (ones
    /// removed from the index, say); ids it does not hold are ignored.
    pub fn delete_text(&self, doc_ids: &[&str]) -> Result<(), QdrantError> {
        let point_ids: Vec<PointId> = doc_ids.iter().map(|id| text_point_id(id).into()).collect();
        self.delete_points(point_ids)
    }

    /// The `spec.k` best documents for each query text, best first, as
    /// [`TextIndex::search_batch`] returns them (`(doc_id, MaxSim
    /// score)`): the queries are encoded and their features computed here,
    /// and the collection runs both stages.
    pub fn search_text<S: AsRef<str> + Sync>(
        &self,
        index: &TextIndex,
        queries: &[S],
        spec: &SearchSpec,
    ) -> Result<Vec<Vec<(String, f32)>>, QdrantError> {
        spec.check()?;
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let (query_vectors, features) = index.query_vectors_and_features(queries)?;
        let (h, _) = widths(index)?;
        let selector: WithPayloadSelector = if spec.with_payload {
            true.into()
        } else {
            vec![DOC_ID_KEY].into()
        };
        let answers = self.query(&features, &query_vectors, h, spec, Some(selector))?;
        each_point(answers, |point| {
            let doc_id = point
                .payload
                .get(DOC_ID_KEY)
                .and_then(string_value)
                .ok_or_else(|| self.mismatch("a point has no text document id"))?;
            Ok((doc_id.to_string(), point.score))
        })
    }
}
