"""Backend and thread settings.

The process-wide default comes from ``ZERODL_BACKEND`` (read once at import) and can be
changed with :func:`set_backend`.  :func:`use_backend` overrides it for the current
context only (a :class:`contextvars.ContextVar`), so two threads - or two asyncio tasks -
can use different backends at the same time without stepping on each other.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import warnings

BACKENDS = ("cython", "numpy")
_CHOICES = ("auto",) + BACKENDS


class BackendFallbackWarning(UserWarning):
    """The compiled backend is missing, so zerodl runs on the NumPy reference."""


_default_backend: str | None = None  # resolved lazily: importing _cython is not free
_context_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "zerodl_backend", default=None)


def _validate_name(name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str, one of {_CHOICES}, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in _CHOICES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(_CHOICES)}")
    return key


def _resolve(name: str) -> str:
    """Turn 'auto' into a concrete backend; make sure an explicit 'cython' loads."""
    from . import _kernels

    key = _validate_name(name)
    if key == "numpy":
        return key
    if _kernels.cython_available():
        return "cython"
    if key == "cython":
        raise ImportError(
            "the cython backend was asked for but zerodl's compiled kernels cannot be "
            f"imported ({_kernels.cython_import_error()}). Build them with "
            "`pip install .` (needs a C compiler), or use ZERODL_BACKEND=numpy.")
    warnings.warn(
        "zerodl's compiled kernels are not built; running on the NumPy reference backend, "
        "which is much slower. Build them with `pip install .` from a source checkout "
        "(needs a C compiler), or set ZERODL_BACKEND=numpy to silence this warning.",
        BackendFallbackWarning, stacklevel=3)
    return "numpy"


def get_backend() -> str:
    """Name of the backend the kernels of the current context run on."""
    global _default_backend
    name = _context_backend.get()
    if name is not None:
        return name
    if _default_backend is None:
        _default_backend = _resolve(os.environ.get("ZERODL_BACKEND", "auto") or "auto")
    return _default_backend


def set_backend(name: str) -> str:
    """Set the process-wide backend ('auto', 'cython' or 'numpy'); returns the one chosen."""
    global _default_backend
    _default_backend = _resolve(name)
    return _default_backend


@contextlib.contextmanager
def use_backend(name: str):
    """Run a block on another backend, for this thread or task only."""
    token = _context_backend.set(_resolve(name))
    try:
        yield _context_backend.get()
    finally:
        _context_backend.reset(token)


def _env_threads() -> int | None:
    raw = os.environ.get("ZERODL_NUM_THREADS", "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"ZERODL_NUM_THREADS must be a positive integer, got {raw!r}") from None
    if n < 1:
        raise ValueError(f"ZERODL_NUM_THREADS must be a positive integer, got {raw!r}")
    return n


_num_threads: int | None = _env_threads()


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


# Every CPU this process may run on.  The kernels own these threads: BLAS is called
# single-threaded and GEMMs are split across zerodl's OpenMP threads (see
# _kernels/_blas.pxd), because two thread pools on the same cores, libgomp's and
# OpenBLAS's, each spinning while it waits, made an MLP step 8-10x slower on 2 cores.
DEFAULT_NUM_THREADS = _usable_cpus()


def get_num_threads() -> int:
    """Threads the compiled kernels may use (ZERODL_NUM_THREADS; default: the usable CPUs)."""
    return _num_threads if _num_threads is not None else DEFAULT_NUM_THREADS


def set_num_threads(n: int) -> None:
    """Limit the compiled kernels' OpenMP threads to ``n``."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    _num_threads = n
