"""Reading an index directory the original LEMUR saved (``mlp.pt``, and
``w.pt`` when it has one), with PyTorch, once: the result is a lemur-rs
index that ``Lemur.fit`` then saves beside them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .index import Index
from ._lemur_rs import Index as _NativeIndex


def _torch():
    try:
        import torch
    except ImportError as error:
        raise ValueError(
            "this index directory holds the original LEMUR's mlp.pt, which needs PyTorch to "
            "read once (pip install torch), or pass force_retrain=True"
        ) from error
    return torch


def _numpy(tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().float().numpy())


def load(
    path: Path,
    tokens: np.ndarray,
    counts: np.ndarray,
    learn: np.ndarray,
    sample_size: int,
    seed: int,
    num_threads: int,
) -> Index:
    """The original's model in ``path`` over the corpus ``tokens``/``counts``:
    its feature map, its ``W`` when ``w.pt`` has one row per document
    (else ``W`` is fitted as the original's ``fit`` does), and a solver
    for new documents from ``sample_size`` rows of ``learn``."""
    torch = _torch()
    payload = torch.load(path / "mlp.pt", map_location="cpu", weights_only=True)
    config = dict(payload["config"])
    state = payload["state_dict"]
    model_type = config.get("model_type", "mlp")
    layers, projection = [], None
    if model_type == "mlp":
        for i in range(int(config["num_layers"])):
            linear, norm = f"feature_extractor.{3 * i}", f"feature_extractor.{3 * i + 1}"
            layers.append(
                tuple(
                    _numpy(state[key])
                    for key in (f"{linear}.weight", f"{linear}.bias", f"{norm}.weight", f"{norm}.bias")
                )
            )
    elif model_type == "elm":
        if config.get("activation", "gelu") != "gelu":
            raise ValueError(
                f"{path / 'mlp.pt'}: random features with {config['activation']!r}; "
                "lemur-rs's random-feature map is GELU (pass force_retrain=True)"
            )
        projection = _numpy(state["feature_extractor.0.weight"])
    else:
        raise ValueError(f"{path / 'mlp.pt'}: unknown model_type {model_type!r}")
    weights = None
    if (path / "w.pt").exists():
        saved = torch.load(path / "w.pt", map_location="cpu", weights_only=True)
        saved = saved["W"] if isinstance(saved, dict) else saved
        if saved.shape[0] == len(counts):
            weights = _numpy(saved)
    rng = np.random.default_rng(seed)
    sample = learn[np.sort(rng.permutation(len(learn))[: min(sample_size, len(learn))])]
    native = _NativeIndex.from_model(
        tokens,
        counts,
        layers,
        projection,
        config.get("activation", "gelu"),
        float(payload["output_mean"]),
        float(payload["output_std"]),
        np.ascontiguousarray(sample),
        weights,
        num_threads,
    )
    return Index(native)
