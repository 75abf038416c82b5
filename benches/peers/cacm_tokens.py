"""Token vectors of dev-cacm (documents and the queries that have text) from
a model directory, in the layout benches/peers/lemur_python.py reads:

    python benches/peers/cacm_tokens.py ../shared/data/dev-cacm models/all-MiniLM-L6-v2 DATA

Needs the lemur_rs package (`cargo xtask wheel`). Writes DATA/tokens.npy,
counts.npy, queries.npy and query_counts.npy.
"""
import json
import sys
from pathlib import Path

import numpy as np

from lemur_rs import TextEncoder


def texts(path):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row["text"] for row in rows if row.get("text", "").strip()]


def main():
    collection, model, out = (Path(arg) for arg in sys.argv[1:4])
    out.mkdir(parents=True, exist_ok=True)
    encoder = TextEncoder(model)
    for name, is_query, file in (("", False, "docs.jsonl"), ("query_", True, "queries.jsonl")):
        tokens, counts = encoder.encode_tokens(texts(collection / file), is_query=is_query)
        stem = "queries" if is_query else "tokens"
        np.save(out / f"{stem}.npy", tokens)
        np.save(out / f"{name}counts.npy", counts)
        print(f"{stem}: {len(counts)} texts, {len(tokens)} tokens of width {tokens.shape[1]}")


if __name__ == "__main__":
    main()
