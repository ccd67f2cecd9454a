"""A cache of the compiled kernels' large output and scratch arrays.

A fresh multi-megabyte allocation is not free here: glibc serves it from a new mapping,
or from a heap it has just given back to the system, and every page of it is faulted in
and zeroed on first touch.  Batch norm's forward at 1024x4096 spent 2.3 ms of 3.7 ms that
way (1064 page faults per call: freeing its two 16 MB outputs lets glibc trim the heap,
and the next call grows it again), and DeepConvNet's 45 MB im2col matrix paid 1.7 ms per
forward.  So the kernels take arrays of at least MIN_BYTES from here.

The cache keeps every array it hands out and hands one out again only when nothing but
the cache refers to it any more - its reference count says so - so no caller ever sees
the data of an array it still holds change.  It holds at most ``limit`` bytes
(``ZERODL_BUFFER_CACHE_MB``, default 512; 0 turns it off, and so does a Python without
the GIL, where reference counts are not exact); past that the least recently used
arrays are let go, to be freed when their last user drops them.
"""
from __future__ import annotations

import os
import sys
import threading

import numpy as np

MIN_BYTES = 1 << 20

_lock = threading.Lock()
_buckets: dict[tuple, list[np.ndarray]] = {}   # (shape, dtype) -> arrays, oldest key first
_held = 0                                       # bytes of the arrays in _buckets


def _limit_from_env() -> int:
    raw = os.environ.get("ZERODL_BUFFER_CACHE_MB", "").strip()
    if not raw:
        return 512 << 20
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"ZERODL_BUFFER_CACHE_MB must be a number of megabytes, got {raw!r}")
    if not mb >= 0:
        raise ValueError(f"ZERODL_BUFFER_CACHE_MB must be >= 0, got {raw!r}")
    return int(mb * (1 << 20))


def _refcounts_exact() -> bool:
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    return sys.implementation.name == "cpython" and (is_gil_enabled is None or is_gil_enabled())


_limit = _limit_from_env() if _refcounts_exact() else 0

# sys.getrefcount of a cached array that nobody else holds, as seen in _take: the bucket's
# slot, the loop variable and getrefcount's own argument.
_ONLY_CACHED = 3


def empty(shape: tuple, dtype) -> np.ndarray:
    """An uninitialised C-ordered array, like np.empty(shape, dtype): recycled from the
    cache when one of that shape and dtype is no longer used elsewhere."""
    dtype = np.dtype(dtype)
    nbytes = dtype.itemsize
    for d in shape:
        nbytes *= d
    if nbytes < MIN_BYTES or _limit == 0:
        return np.empty(shape, dtype)
    key = (tuple(shape), dtype)
    with _lock:
        bucket = _buckets.pop(key, None)
        if bucket is not None:
            _buckets[key] = bucket                # most recently used last
            for a in bucket:
                if sys.getrefcount(a) == _ONLY_CACHED:
                    return a
        a = np.empty(shape, dtype)
        if nbytes <= _limit:
            _buckets.setdefault(key, []).append(a)
            _add(nbytes)
        return a


def _add(nbytes: int) -> None:
    """Count nbytes more and let the oldest arrays go while over the limit."""
    global _held
    _held += nbytes
    while _held > _limit and _buckets:
        key = next(iter(_buckets))
        bucket = _buckets[key]
        _held -= bucket.pop(0).nbytes
        if not bucket:
            del _buckets[key]


def set_limit(nbytes: int) -> int:
    """Hold at most nbytes of arrays (0: no caching); returns the previous limit."""
    global _limit
    if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
        raise ValueError(f"the buffer cache limit must be an int >= 0, got {nbytes!r}")
    with _lock:
        previous, _limit = _limit, nbytes if _refcounts_exact() else 0
        _add(0)
    return previous


def clear() -> None:
    """Let go of every cached array."""
    global _held
    with _lock:
        _buckets.clear()
        _held = 0


def stats() -> dict:
    """limit and bytes held, arrays held and how many of them are free for reuse."""
    with _lock:
        arrays = free = 0
        for bucket in _buckets.values():
            for a in bucket:
                arrays += 1
                free += sys.getrefcount(a) == _ONLY_CACHED
        return {"limit": _limit, "held_bytes": _held, "arrays": arrays, "free": free}
