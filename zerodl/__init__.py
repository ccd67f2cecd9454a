"""zerodl: the deep-learning techniques of "Deep Learning from Scratch" ch. 6-7, fast.

The book's API lives in :mod:`zerodl.layers`, :mod:`zerodl.optimizers`, :mod:`zerodl.nets`,
:mod:`zerodl.trainer`, :mod:`zerodl.functions`, :mod:`zerodl.gradient`, :mod:`zerodl.util`
and :mod:`zerodl.datasets`.  Every heavy operation runs through one kernel table with two
backends: compiled Cython (default when built) and the NumPy reference.
"""
from ._config import (BackendFallbackWarning, get_backend, get_num_threads, set_backend,
                      set_num_threads, use_backend)
from ._version import __version__


def set_buffer_cache_limit(megabytes: float) -> float:
    """Cap the memory the compiled kernels keep for reuse in large output arrays (0: no
    cache; default 512, or ``ZERODL_BUFFER_CACHE_MB``); returns the previous cap in MB.
    A cached array is reused only once nothing else refers to it."""
    from ._kernels import _buffers
    if isinstance(megabytes, bool) or not isinstance(megabytes, (int, float)) \
            or not megabytes >= 0:
        raise ValueError(f"megabytes must be a number >= 0, got {megabytes!r}")
    return _buffers.set_limit(int(megabytes * (1 << 20))) / (1 << 20)


def info(file=None) -> dict:
    """Print (and return) version, backend, compiled kernels, BLAS and threads."""
    from ._info import collect, render
    data = collect()
    print(render(data), file=file)
    return data


__all__ = ["__version__", "get_backend", "set_backend", "use_backend", "info",
           "get_num_threads", "set_num_threads", "set_buffer_cache_limit",
           "BackendFallbackWarning"]
