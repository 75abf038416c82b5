"""PyLate on PyTorch (CPU), the peer of `cargo xtask bench text_colbert`: tokens per second
for batches of 64 queries of 32 tokens and of 32 documents cut at 180 tokens, on the same
texts and the same model (`models/pylate-minilm`, which `cargo xtask fetch-models` builds),
at 1 and 2 threads. Run outside the repository's build, in a virtual environment with
pylate 1.6.0 (torch 2.11.0 CPU):

    python benches/peers/pylate_speed.py models/pylate-minilm

Prints one line per row: median over 10 runs after 2 warm-up runs.
"""
import os
import statistics
import sys
import time

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch
from pylate import models

WORDS = [
    "the", "river", "carried", "small", "boats", "past", "an", "old", "mill", "while", "farmers",
    "sold", "apples", "and", "bread", "at", "market", "near", "stone", "bridge", "children",
    "played", "quietly", "under", "tall", "trees", "during", "warm", "summer", "evening", "music",
    "from", "village", "square", "filled", "air", "with", "gentle", "songs", "again",
]


def text(n_words, seed):
    """The same words as `text()` in benches/benches/text.rs."""
    return " ".join(WORDS[(i * 7 + seed * 13 + i * i % 11) % len(WORDS)] for i in range(n_words))


model = models.ColBERT(model_name_or_path=sys.argv[1], device="cpu")
queries = [text(20, i) for i in range(64)]
documents = [text(200, i) for i in range(32)]
for threads in (1, 2):
    torch.set_num_threads(threads)
    for name, texts, is_query, batch, tokens in (
        ("queries32", queries, True, 64, 64 * model.query_length),
        ("documents180", documents, False, 32, 32 * model.document_length),
    ):
        times = []
        for run in range(12):
            started = time.perf_counter()
            model.encode(texts, is_query=is_query, batch_size=batch, show_progress_bar=False)
            if run >= 2:
                times.append(time.perf_counter() - started)
        median = statistics.median(times)
        print(f"pylate {name}/{threads}t: {median * 1e3:.1f} ms, {tokens / median:.0f} tokens/s")
