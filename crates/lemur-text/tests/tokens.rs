//! Token vectors: counts equal the tokenizer's, unit norms, and long texts
//! split into windows covering every token exactly once.

mod common;

use common::{encoder, norm, raw_tokenizer, words};
use lemur_text::{EncodeOptions, Marker, TokenOptions};

#[test]
fn counts_equal_the_tokenizers_and_vectors_are_unit() {
    let texts = [
        "This is an example sentence",
        "Tokenization splits unaffordable words into pieces, doesn't it?",
        "",
        "A man is eating a piece of bread.",
    ];
    let vectors = encoder()
        .encode_tokens(&texts, &TokenOptions::default())
        .unwrap();
    let tokenizer = raw_tokenizer();
    assert_eq!(vectors.len(), texts.len());
    for (i, text) in texts.iter().enumerate() {
        let expected = tokenizer.encode(*text, true).unwrap().get_ids().len();
        assert_eq!(vectors.token_count(i), expected, "{text:?}");
        for row in vectors.get(i).chunks_exact(384) {
            assert!((norm(row) - 1.0).abs() < 1e-5);
        }
    }
}

#[test]
fn a_long_text_covers_every_token_once_in_order() {
    // 2,000 single-piece words: eight windows of 254 content tokens.
    let words = words(2000, 7);
    let long_text = words.join(" ");
    let tokenizer = raw_tokenizer();
    let expected_count = tokenizer
        .encode(long_text.as_str(), true)
        .unwrap()
        .get_ids()
        .len();
    assert_eq!(expected_count, 2002);
    let long = encoder()
        .encode_tokens(&[&long_text], &TokenOptions::default())
        .unwrap();
    assert_eq!(long.token_count(0), expected_count);

    // The first window sees exactly the first 254 words, so a text of just
    // those words gives the same vectors for the rows that window keeps
    // ([CLS] and the tokens before the middle of its overlap with the next).
    let capacity = encoder().max_seq_len() - 2;
    let prefix = words[..capacity].join(" ");
    let short = encoder()
        .encode_tokens(&[&prefix], &TokenOptions::default())
        .unwrap();
    let h = encoder().hidden_size();
    let kept_rows = 1 + 160; // [CLS] + content up to the first cut (>= 127 + 63 / 2)
    for (a, b) in long.get(0)[..kept_rows * h]
        .iter()
        .zip(&short.get(0)[..kept_rows * h])
    {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    // Likewise the last window sees exactly the last 254 words, and the
    // multi-vector ends with its last rows, [SEP] included.
    let suffix = words[words.len() - capacity..].join(" ");
    let tail = encoder()
        .encode_tokens(&[&suffix], &TokenOptions::default())
        .unwrap();
    let tail_rows = 100 + 1;
    let long_tail = &long.get(0)[long.get(0).len() - tail_rows * h..];
    let short_tail = &tail.get(0)[tail.get(0).len() - tail_rows * h..];
    for (a, b) in long_tail.iter().zip(short_tail) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    for row in long.get(0).chunks_exact(h) {
        assert!((norm(row) - 1.0).abs() < 1e-5);
    }

    // The sentence embedding of a long text is a unit vector close to its
    // windows' (all made of the same words).
    let embeddings = encoder()
        .encode(
            &[long_text.as_str(), prefix.as_str()],
            &EncodeOptions::default(),
        )
        .unwrap();
    assert!((norm(embeddings.row(0)) - 1.0).abs() < 1e-5);
    assert!(common::dot(embeddings.row(0), embeddings.row(1)) > 0.9);
}

#[test]
fn thirty_two_thousand_tokens_encode() {
    let text = words(32_000, 11).join(" ");
    let vectors = encoder()
        .encode_tokens(&[&text], &TokenOptions::default())
        .unwrap();
    assert_eq!(vectors.token_count(0), 32_002);
    assert!(vectors.tokens().iter().all(|v| v.is_finite()));
}

#[test]
fn colbert_markers_and_query_padding() {
    let special = encoder().tokenizer().special_tokens();
    assert!(special.query_marker.is_some() && special.document_marker.is_some());
    let options = TokenOptions {
        marker: Some(Marker::Query),
        query_length: Some(32),
        ..TokenOptions::default()
    };
    let queries = ["What is Cindy's pass key?", &words(100, 3).join(" ")];
    let vectors = encoder().encode_tokens(&queries, &options).unwrap();
    assert_eq!(vectors.token_count(0), 32);
    assert_eq!(vectors.token_count(1), 32, "long queries are truncated");
    let documents = TokenOptions {
        marker: Some(Marker::Document),
        ..TokenOptions::default()
    };
    let docs = encoder().encode_tokens(&["a b c"], &documents).unwrap();
    assert_eq!(docs.token_count(0), 6, "[CLS] [D] a b c [SEP]");
    // Without the marker the same text has one token fewer and different
    // vectors (the marker changes what the model sees).
    let plain = encoder()
        .encode_tokens(&["a b c"], &TokenOptions::default())
        .unwrap();
    assert_eq!(plain.token_count(0), 5);
    assert!((plain.get(0)[0] - docs.get(0)[0]).abs() > 1e-6);
}
