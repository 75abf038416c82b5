"""lemur_rs (the Python package) against the original LEMUR (PyTorch + its C++
extension), on the same data: W10k exported by

    cargo run --release -p lemur-bench --bin python_peer -- export DATA

Run in a virtual environment outside the repository that has torch, numpy, the
original's package (`pip install` of github.com/ejaasaari/lemur at 434860b) and the
lemur_rs wheel (`cargo xtask wheel`):

    python benches/peers/lemur_python.py DATA [--epochs 10] [--threads 1 2] [--k-candidates 200]

or on dev-cacm's MiniLM token vectors (benches/peers/cacm_tokens.py).

For each implementation it runs the original README's flow with the same keywords:
`fit`, then `compute_features` + `feats @ W.T` + `torch.topk(k')` + `rerank_subset`
on tensors; for lemur_rs also its native `Index.search` over the index `fit` saved
(DATA/lemur_rs-index; `python_peer latency` times the same searches from Rust).
Prints fit time, batch time for the 1000 queries, median single-query latency over
the first 200 queries, and recall@10 against exact MaxSim (lemur_rs's MaxSim over
every document, cached in DATA/exact-top10.npy).
"""
import argparse
import importlib
import statistics
import time
from pathlib import Path

import numpy as np
import torch

K, SINGLE = 10, 200


def load(data):
    tokens = np.load(data / "tokens.npy")
    counts = np.load(data / "counts.npy").astype(np.int32)
    queries = np.load(data / "queries.npy")
    query_counts = np.load(data / "query_counts.npy").astype(np.int32)
    return tokens, counts, queries, query_counts


def exact_top10(data, tokens, counts, queries, query_counts):
    path = data / "exact-top10.npy"
    if path.exists():
        return np.load(path)
    from lemur_rs.maxsim import MaxSim

    every = np.tile(np.arange(len(counts), dtype=np.int64), (len(query_counts), 1))
    ids, _ = MaxSim(tokens, counts).rerank(queries, query_counts, K, every)
    np.save(path, ids)
    return ids


def recall(found, truth):
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))


def readme_flow(lemur, ms, queries, query_counts, threads, k_candidates):
    feats = lemur.compute_features((queries, query_counts))
    cand = torch.topk(feats @ lemur.W.T, k_candidates, dim=1).indices
    cand_np = np.ascontiguousarray(cand.cpu().numpy().astype(np.int32))
    return ms.rerank_subset(queries, query_counts, K, cand_np, num_threads=threads)


def single_latency(run, queries, query_counts):
    offsets = np.concatenate([[0], np.cumsum(query_counts)])
    times = []
    for q in range(min(SINGLE, len(query_counts))):
        one = queries[offsets[q] : offsets[q + 1]]
        one_count = query_counts[q : q + 1]
        start = time.perf_counter()
        run(one, one_count)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def measure(name, data, args, tensors, truth):
    lemur_module = importlib.import_module(f"{name}.lemur" if name == "lemur_rs" else "lemur")
    maxsim_module = importlib.import_module(f"{name}.maxsim")
    tokens, counts, queries, query_counts = tensors
    index_dir = data / f"{name}-index"
    start = time.perf_counter()
    lemur = lemur_module.Lemur(index=index_dir, device="cpu")
    lemur.fit(
        train=tokens, train_counts=counts, epochs=args.epochs,
        train_subset_size=args.train_docs, learn_subset_size=args.learn_rows,
        force_retrain=True, verbose=False,
    )
    fit_seconds = time.perf_counter() - start
    ms = maxsim_module.MaxSim(tokens, counts)
    print(f"{name}: fit {fit_seconds:.1f} s (epochs {args.epochs})", flush=True)
    for threads in args.threads:
        torch.set_num_threads(threads)
        warm = int(query_counts[:10].sum())
        readme_flow(lemur, ms, queries[:warm], query_counts[:10], threads, args.k_candidates)
        start = time.perf_counter()
        found = readme_flow(lemur, ms, queries, query_counts, threads, args.k_candidates)
        batch = time.perf_counter() - start
        single = single_latency(
            lambda q, c: readme_flow(lemur, ms, q, c, threads, args.k_candidates),
            queries,
            query_counts,
        )
        print(
            f"{name} README flow, {threads}t: batch of {len(query_counts)} {batch:.3f} s "
            f"({len(query_counts) / batch:.0f} q/s), one query median {single:.0f} us, "
            f"recall@10 {recall(found, truth):.4f}",
            flush=True,
        )
        if name == "lemur_rs":
            from lemur_rs import Index

            index = Index.open(index_dir)
            np_queries, np_counts = queries.numpy(), query_counts.numpy()
            index.search(np_queries[:warm], np_counts[:10], num_threads=threads)
            start = time.perf_counter()
            ids, _ = index.search(np_queries, np_counts, K, args.k_candidates, num_threads=threads)
            batch = time.perf_counter() - start
            single = single_latency(
                lambda q, c: index.search(q, c, K, args.k_candidates, num_threads=threads),
                np_queries,
                np_counts,
            )
            print(
                f"lemur_rs Index.search, {threads}t: batch {batch:.3f} s "
                f"({len(np_counts) / batch:.0f} q/s), one query median {single:.0f} us, "
                f"recall@10 {recall(ids, truth):.4f}",
                flush=True,
            )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-docs", type=int, default=8192)
    parser.add_argument("--learn-rows", type=int, default=100000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--k-candidates", type=int, default=200)
    parser.add_argument("--only", choices=["lemur", "lemur_rs"])
    args = parser.parse_args()
    arrays = load(args.data)
    truth = exact_top10(args.data, *arrays)
    tensors = tuple(torch.from_numpy(a) for a in arrays)
    for name in ["lemur_rs", "lemur"]:
        if args.only in (None, name):
            measure(name, args.data, args, tensors, truth)


if __name__ == "__main__":
    main()
