"""lemur-rs: late-interaction (ColBERT-style) retrieval with LEMUR, in Rust.

A drop-in for the original LEMUR (``from lemur_rs import Lemur``,
``from lemur_rs.maxsim import MaxSim``) without PyTorch, the native index
API (``lemur_rs.Index``), and the pure-Rust text front end
(``lemur_rs.TextEncoder``, ``lemur_rs.TextIndex``). Inputs may be NumPy arrays or PyTorch
tensors; every call releases the GIL while it computes.
"""

from ._lemur_rs import VERSION as __version__
from ._lemur_rs import simd_level
from .index import Index
from .lemur import Lemur
from .maxsim import MaxSim
from .text import TextEncoder, TextIndex

__all__ = ["Index", "Lemur", "MaxSim", "TextEncoder", "TextIndex", "simd_level", "__version__"]
