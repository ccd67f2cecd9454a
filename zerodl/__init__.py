"""zerodl: the deep-learning techniques of "Deep Learning from Scratch" ch. 6-7, fast.

The book's API lives in :mod:`zerodl.layers`, :mod:`zerodl.optimizers`, :mod:`zerodl.nets`,
:mod:`zerodl.trainer`, :mod:`zerodl.functions`, :mod:`zerodl.gradient`, :mod:`zerodl.util`
and :mod:`zerodl.datasets`.  Every heavy operation runs through one kernel table with two
backends: compiled Cython (default when built) and the NumPy reference.
"""
from ._config import (BackendFallbackWarning, get_backend, get_num_threads, set_backend,
                      set_num_threads, use_backend)
from ._version import __version__


def info(file=None) -> dict:
    """Print (and return) version, backend, compiled kernels, BLAS and threads."""
    from ._info import collect, render
    data = collect()
    print(render(data), file=file)
    return data


__all__ = ["__version__", "get_backend", "set_backend", "use_backend", "info",
           "get_num_threads", "set_num_threads", "BackendFallbackWarning"]
