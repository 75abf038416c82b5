"""lemur_rs.qdrant on Qdrant's engine in process (qdrant-edge-py): export rate,
query latency and recall@10 of both LEMUR stages inside a collection, on W10k
exported by

    cargo run --release -p lemur-bench --bin python_peer -- export DATA

Run with the test environment `cargo xtask test-python` makes (it has the
lemur_rs wheel, qdrant-client and qdrant-edge-py):

    target/python/test/bin/python benches/peers/lemur_on_qdrant.py DATA [--epochs 10] [--shards 1]

It builds (or reopens) an index over DATA with lemur_rs (saved in
DATA/qdrant-index), computes the exact MaxSim top 10 of every query (a
search whose k' is every document; cached in DATA/qdrant-index), and for each collection layout exports
the index into edge shards, lets Qdrant's optimizer index them (the HNSW
graph on `lemur_w` and its int8 copy), and runs the queries: in one batch,
and one at a time (median of the first 200). Recall@10 is against exact MaxSim; agreement
is the share of the top 10 that the index's own search (k' = 200) also
returns. Edge shards have no server around them, so these numbers are
Qdrant's engine plus the Python client layer, without the network.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "crates/lemur-py/tests"))
from edge_client import EdgeClient  # noqa: E402

from lemur_rs import Index, qdrant  # noqa: E402

K, N_CANDIDATES, SINGLE = 10, 200, 200

LAYOUTS = {
    "exact prefetch, f32 W and tokens": dict(
        vectors=dict(tokens_datatype="float32", quantize_w=False), search=dict(exact=True)
    ),
    "HNSW (ef 256) on int8 W, f16 tokens (defaults)": dict(vectors={}, search=dict(hnsw_ef=256)),
    "HNSW (ef 512) on int8 W, f16 tokens": dict(vectors={}, search=dict(hnsw_ef=512)),
}


def recall(found, truth):
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--shards", type=int, default=1)
    args = parser.parse_args()
    tokens = np.load(args.data / "tokens.npy")
    counts = np.load(args.data / "counts.npy").astype(np.int64)
    queries = np.load(args.data / "queries.npy")
    query_counts = np.load(args.data / "query_counts.npy").astype(np.int64)
    path = args.data / "qdrant-index"
    if not path.exists():
        started = time.perf_counter()
        Index.build(tokens, counts, epochs=args.epochs).save(path)
        print(f"index built in {time.perf_counter() - started:.0f} s ({args.epochs} epochs)")
    index = Index.open(path)
    truth_file = path / "exact-top10.npy"
    if not truth_file.exists():
        np.save(truth_file, index.search(queries, query_counts, K, len(index))[0])
    truth = np.load(truth_file)
    local = index.search(queries, query_counts, K, N_CANDIDATES)[0]
    print(f"{len(index)} documents, {len(query_counts)} queries; lemur_rs recall@10 {recall(local, truth):.3f}")
    offsets = np.concatenate([[0], np.cumsum(query_counts)])
    print("| collection | export docs/s | optimize s | batch ms/query | single p50 ms | recall@10 | agreement |")
    print("|---|---|---|---|---|---|---|")
    for name, layout in LAYOUTS.items():
        with tempfile.TemporaryDirectory(dir=args.data) as root:
            client = EdgeClient(Path(root))
            started = time.perf_counter()
            qdrant.export(index, client, "docs", shards=args.shards, **layout["vectors"])
            export_s = time.perf_counter() - started
            # Qdrant builds a segment's HNSW graph and quantized copy in its
            # optimizer, after the points are in.
            started = time.perf_counter()
            for shard in client.collections["docs"].shards:
                shard.optimize()
            optimize_s = time.perf_counter() - started
            search = dict(k=K, n_candidates=N_CANDIDATES, **layout["search"])
            started = time.perf_counter()
            found = qdrant.search(index, client, "docs", queries, query_counts, **search)[0]
            batch_ms = (time.perf_counter() - started) * 1e3 / len(query_counts)
            single = []
            for q in range(SINGLE):
                one = queries[offsets[q] : offsets[q + 1]]
                started = time.perf_counter()
                qdrant.search(index, client, "docs", one, query_counts[q : q + 1], **search)
                single.append((time.perf_counter() - started) * 1e3)
            client.close()
        print(
            f"| {name} | {len(index) / export_s:.0f} | {optimize_s:.1f} | {batch_ms:.2f} | {statistics.median(single):.2f} "
            f"| {recall(found, truth):.3f} | {recall(found, local):.3f} |"
        )


if __name__ == "__main__":
    main()
