"""Inputs as the native module takes them, outputs as the caller gave inputs.

The native module takes C-contiguous ``float32`` tokens and ``int64`` counts
and ids. Here every public function's inputs are checked and converted once:
NumPy arrays and PyTorch tensors (duck-typed, so PyTorch is never imported
by this package), any real float type for tokens and any integer type for
counts. Outputs are NumPy arrays, or CPU tensors when a tensor came in.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def is_tensor(value: Any) -> bool:
    """Whether ``value`` is a PyTorch tensor (without importing PyTorch)."""
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def to_numpy(value: Any, name: str) -> np.ndarray:
    """``value`` as a NumPy array: tensors are detached and moved to the CPU."""
    if is_tensor(value):
        tensor = value.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if str(tensor.dtype) in ("torch.bfloat16", "torch.float16"):
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"{name} must be a numpy ndarray or torch tensor, not {type(value).__name__}")


def float_matrix(value: Any, name: str, ndim: int = 2) -> np.ndarray:
    """A C-contiguous ``float32`` array of ``ndim`` dimensions, every value finite."""
    array = to_numpy(value, name)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}D tensor (got {array.ndim}D)")
    if array.dtype.kind != "f":
        raise ValueError(f"{name} must have a float dtype such as float32 (got {array.dtype})")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def counts(value: Any, name: str, rows: int | None = None) -> np.ndarray:
    """Counts as ``int64``: one dimension, an integer dtype, none negative,
    and, when ``rows`` is given, adding up to it."""
    array = to_numpy(value, name)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1D tensor (got {array.ndim}D)")
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must have an integer dtype such as int32 (got {array.dtype})")
    if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds a count too large for any corpus")
    array = np.ascontiguousarray(array, dtype=np.int64)
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be non-negative")
    if rows is not None and int(array.sum()) != rows:
        raise ValueError(f"sum({name}) must equal the number of rows ({int(array.sum())} != {rows})")
    return array


def ids(value: Any, name: str) -> np.ndarray:
    """Document ids as a C-contiguous ``int64`` array of any integer dtype
    (from an array, a tensor, or a sequence of ints)."""
    if isinstance(value, (list, tuple, range)):
        value = np.asarray(value, dtype=np.int64)
    array = to_numpy(value, name)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must have an integer dtype (got {array.dtype})")
    if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds an id out of range")
    return np.ascontiguousarray(array, dtype=np.int64)


def like(result: np.ndarray, template: Any) -> Any:
    """``result`` as a tensor when ``template`` is one, else as it is."""
    if is_tensor(template):
        return sys.modules["torch"].from_numpy(result)
    return result


def threads(num_threads: int) -> int:
    """A thread count as the original reads it: -1 for every core."""
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)):
        raise TypeError(f"num_threads must be an int, not {type(num_threads).__name__}")
    return int(num_threads)


def count(value: Any, name: str) -> int:
    """A non-negative int such as ``k``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (got {value})")
    return int(value)
