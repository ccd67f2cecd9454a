"""Small array helpers shared by the book-facing modules."""
from __future__ import annotations

import numpy as np

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def as_float(x, dtype=None, name: str = "x") -> np.ndarray:
    """``x`` as a float32/float64 array.

    With ``dtype`` the result has that dtype (a network's input is converted once to the
    network's dtype); without it, float32/float64 pass through unchanged and other real
    types become float64, as NumPy arithmetic would make them in the book's code.
    Complex, object and string data raise TypeError.
    """
    a = np.asarray(x)
    if a.dtype.kind in "cOSUVM":
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {a.dtype}")
    if dtype is not None:
        return a.astype(dtype, copy=False)
    if a.dtype in FLOATS:
        return a
    return a.astype(np.float64)


def batch_rows(x: np.ndarray, name: str = "x") -> np.ndarray:
    """``x`` as (N, features): the book's ``x.reshape(x.shape[0], -1)``, which also
    works for an empty batch and names ``x`` when it has no batch axis."""
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch axis (at least 1-D), got a scalar")
    if x.ndim == 2:
        return x
    return x.reshape(x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64)))


def resolve_dtype(dtype) -> np.dtype:
    d = np.dtype(dtype)
    if d not in FLOATS:
        raise ValueError(f"dtype must be float32 or float64, got {d}")
    return d


def make_rng(rng=None) -> np.random.Generator:
    """A Generator from a Generator, a seed, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)
