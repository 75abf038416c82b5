"""The text front end from Python: the same vectors as PyLate and
sentence-transformers (the encoder's committed reference outputs), and the
text index."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import MINILM
from lemur_rs import TextEncoder, TextIndex

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "crates" / "lemur-text" / "tests" / "data"
MODERNBERT = DATA / "pylate-modernbert"


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file's F32 and I64 tensors (the format is a JSON
    header and raw little-endian data)."""
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    data = raw[8 + header_len :]
    dtypes = {"F32": np.float32, "I64": np.int64}
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype=dtypes[info["dtype"]]).reshape(
            info["shape"]
        )
    return tensors


def test_colbert_vectors_are_pylates():
    encoder = TextEncoder(MODERNBERT / "model")
    assert encoder.is_colbert
    texts = json.loads((MODERNBERT / "texts.json").read_text())
    reference = read_safetensors(MODERNBERT / "reference.safetensors")
    for kind, is_query in (("queries", True), ("documents", False)):
        vectors = encoder.encode(texts[kind], is_query=is_query, num_threads=2)
        assert len(vectors) == len(texts[kind])
        for i, got in enumerate(vectors):
            want = reference[f"{kind[0]}{i}"]
            assert got.shape == want.shape, (kind, i)
            assert np.abs(got - want).max() < 2e-5, (kind, i)
    one = encoder.encode(texts["queries"][0], is_query=True)
    np.testing.assert_array_equal(one, encoder.encode(texts["queries"][:1], is_query=True)[0])


def test_sentence_embeddings_are_sentence_transformers(minilm):
    reference = json.loads((DATA / "minilm-reference.json").read_text())
    sentences = [s["text"] for s in reference["sentences"]]
    embeddings = minilm.encode(sentences, batch_size=2)
    assert embeddings.shape == (len(sentences), 384)
    for row, sentence in zip(embeddings, reference["sentences"]):
        assert np.abs(row - np.array(sentence["embedding"], dtype=np.float32)).max() < 1e-4
    single = minilm.encode(sentences[0], output_dim=128)
    assert single.shape == (128,) and abs(np.linalg.norm(single) - 1) < 1e-5


def test_text_index_finds_saves_and_removes(minilm, tmp_path):
    index = TextIndex(minilm, n_candidates=50)
    index.index(
        ["knight", "mars", "bread", "rivers"],
        [
            "The knight moves in an L shape on the chess board.",
            "Phobos and Deimos are the two moons of Mars.",
            "Bakers knead dough and bake bread in hot ovens.",
            "Long rivers carry water from mountains to the sea.",
        ],
    )
    assert len(index) == 4 and "mars" in index
    hits = index.search("which moons does Mars have", k=2)
    assert hits[0][0] == "mars" and hits[0][1] >= hits[1][1]
    index.save(tmp_path / "texts")
    opened = TextIndex.open(tmp_path / "texts", model=minilm)
    assert opened.search(["how does the knight move"], k=1)[0][0][0] == "knight"
    # The index records the directory its encoder came from.
    assert minilm.model_dir == MINILM
    reopened = TextIndex.open(tmp_path / "texts")
    assert reopened.search("which moons does Mars have", k=2) == hits
    assert opened.remove("knight") and not opened.remove("knight")
    assert all(hit[0] != "knight" for hit in opened.search("how does the knight move", k=3))
    with pytest.raises(ValueError, match="top_k"):
        opened.search("moons", k=0)
    with pytest.raises(ValueError, match="empty"):
        index.index([""], ["no id"])
    with pytest.raises(TypeError, match="strings"):
        index.search([1, 2])


def test_bad_model_directory(tmp_path):
    with pytest.raises(OSError, match="config.json"):
        TextEncoder(tmp_path)
