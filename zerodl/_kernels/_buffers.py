"""A cache of the compiled kernels' large output and scratch arrays.

A fresh multi-megabyte allocation is not free here: glibc serves it from a new mapping,
or from a heap it has just given back to the system, and every page of it is faulted in
and zeroed on first touch.  Batch norm's forward at 1024x4096 spent 2.3 ms of 3.7 ms that
way (1064 page faults per call: freeing its two 16 MB outputs lets glibc trim the heap,
and the next call grows it again), and DeepConvNet's 45 MB im2col matrix paid 1.7 ms per
forward.  So the kernels take arrays of at least MIN_BYTES from here.

The cache owns a base array per slot and hands out a new view of it each time, so what a
caller does to its array object (flags, shape, dtype) stays with that object.  A base is
handed out again only when nothing but the cache refers to it - no view of it is alive,
as its reference count shows - so no caller ever sees the data of an array it still holds
change.  The cache keeps at most ``limit`` bytes (``ZERODL_BUFFER_CACHE_MB``, default
512; 0 turns it off, and so does a Python without exact reference counts: PyPy, or a
free-threaded build); past that the least recently used bases are let go, to be freed
when their last view is.  Shapes not asked for in the last STALE_AFTER requests (an
evaluation's larger batch, once training has resumed) are let go too, so the cache
holds little more than a training step's working set.
"""
from __future__ import annotations

import os
import sys
import sysconfig
import threading

import numpy as np

MIN_BYTES = 1 << 20
STALE_AFTER = 512

_tick = 0                                       # requests served through the cache
_last_use: dict[tuple, int] = {}                # key -> _tick of its latest request

_lock = threading.RLock()
# (shape, dtype) -> [[base, nbytes], ...]; the least recently used key first
_buckets: dict[tuple, list[list]] = {}


def _limit_from_env() -> int:
    raw = os.environ.get("ZERODL_BUFFER_CACHE_MB", "").strip()
    if not raw:
        return 512 << 20
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"ZERODL_BUFFER_CACHE_MB must be a number of megabytes, got {raw!r}")
    if not mb >= 0 or mb == float("inf"):
        raise ValueError(f"ZERODL_BUFFER_CACHE_MB must be a finite number >= 0, got {raw!r}")
    return int(mb * (1 << 20))


def _refcounts_exact() -> bool:
    return (sys.implementation.name == "cpython"
            and not sysconfig.get_config_var("Py_GIL_DISABLED"))


def _count_when_alone() -> int:
    """What _is_free's getrefcount reads for an object held by one list slot alone (the
    slot plus the subscript's temporary on current CPythons; measured, not assumed, since
    the interpreter's reference borrowing changes between versions)."""
    probe = [[object(), 0]]
    return _refcount(probe[0])


def _refcount(entry: list) -> int:
    return sys.getrefcount(entry[0])


_ALONE = _count_when_alone() if _refcounts_exact() else -1
_limit = _limit_from_env() if _ALONE > 0 else 0


def _reusable(entry: list, shape: tuple, dtype: np.dtype) -> bool:
    """entry's base is referred to by the cache alone and is still the array it made (a
    caller that reached it through .base may have changed it)."""
    if _refcount(entry) != _ALONE:
        return False
    base = entry[0]
    return (base.shape == shape and base.dtype == dtype and base.flags.writeable
            and base.flags.c_contiguous and base.nbytes == entry[1])


def empty(shape: tuple, dtype) -> np.ndarray:
    """An uninitialised C-ordered array, like np.empty(shape, dtype): a view of a cached
    base when one of that shape and dtype is no longer used elsewhere."""
    global _tick
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    nbytes = dtype.itemsize
    for d in shape:
        nbytes *= d
    if nbytes < MIN_BYTES or _limit == 0:
        return np.empty(shape, dtype)
    key = (shape, dtype)
    base = None
    with _lock:
        _tick += 1
        if _tick % 64 == 0:
            _drop_stale()
        bucket = _buckets.pop(key, None)
        if bucket is not None:
            _buckets[key] = bucket                # most recently used last
            _last_use[key] = _tick
            for entry in bucket:
                if _reusable(entry, shape, dtype):
                    base = entry[0]               # our reference keeps it taken
                    break
    if base is None:
        base = np.empty(shape, dtype)
        if nbytes <= _limit:
            with _lock:
                _buckets.setdefault(key, []).append([base, nbytes])
                _last_use[key] = _tick
                _evict()
    return base.view()


def _held() -> int:
    return sum(entry[1] for bucket in _buckets.values() for entry in bucket)


def _evict() -> None:
    """Let the least recently used bases go while over the limit."""
    while _buckets and _held() > _limit:
        key = next(iter(_buckets))
        bucket = _buckets[key]
        bucket.pop(0)
        if not bucket:
            del _buckets[key]
            _last_use.pop(key, None)


def _drop_stale() -> None:
    """Let go of the shapes not asked for in the last STALE_AFTER requests (the least
    recently used come first in _buckets)."""
    while _buckets:
        key = next(iter(_buckets))
        if _tick - _last_use.get(key, 0) <= STALE_AFTER:
            break
        del _buckets[key]
        _last_use.pop(key, None)


def set_limit(nbytes: int) -> int:
    """Keep at most nbytes of arrays (0: no caching); returns the previous limit."""
    global _limit
    if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
        raise ValueError(f"the buffer cache limit must be an int >= 0, got {nbytes!r}")
    with _lock:
        previous, _limit = _limit, (nbytes if _ALONE > 0 else 0)
        _evict()
    return previous


def clear() -> None:
    """Let go of every cached array."""
    with _lock:
        _buckets.clear()
        _last_use.clear()


def stats() -> dict:
    """The limit, bytes held, arrays held and how many of them are free for reuse."""
    with _lock:
        entries = [entry for bucket in _buckets.values() for entry in bucket]
        free = sum(1 for entry in entries if _refcount(entry) == _ALONE)
        return {"limit": _limit, "held_bytes": _held(), "arrays": len(entries),
                "free": free}
