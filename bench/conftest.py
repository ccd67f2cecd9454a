"""Shared set-up of the benchmarks in bench/ (pytest-benchmark).

Run them with ``pytest bench/ --benchmark-only`` (the project's pytest options skip
benchmarks by default); ``--benchmark-json out.json`` then ``python bench/report.py
out.json`` gives the ratio tables and a bar chart.

What this file provides to every bench module:

* zerodl is importable from a source checkout even when it is not installed (the
  checkout is put on ``sys.path`` only if ``import zerodl`` fails, so an installed
  zerodl wins);
* every benchmark runs with the same thread count, ``$ZERODL_BENCH_THREADS`` (default 2,
  the count of ``../shared/ANCHORS.md``): zerodl's kernels, BLAS (threadpoolctl) and
  PyTorch once it is imported (session fixture ``bench_threads``, autouse; its value is
  the count);
* ``torch``: the torch module, with its threads set; skips the test when it is absent;
* ``cython_backend``: skips the test when zerodl's compiled kernels are not built;
* ``mnist``: ``mnist(model)`` gives ((x_train, t_train), (x_test, t_test)) as float32
  shaped for 'mlp' (rows of 784) or the CNNs (N, 1, 28, 28); loaded once per session
  from local files (never downloaded here); skips when they are missing;
* ``record_info(benchmark, **info)``: fills ``benchmark.extra_info`` with the thread
  count plus ``info`` (values made JSON-safe);
* the ``epoch`` marker (full-epoch benchmarks: ``-m epoch`` or ``-k epoch`` selects them,
  ``-m "not epoch"`` leaves them out).
"""
from __future__ import annotations

import os
import sys

import pytest

try:
    import zerodl  # noqa: F401
except ImportError:  # a source checkout that is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import zerodl  # noqa: F401

BENCH_THREADS = int(os.environ.get("ZERODL_BENCH_THREADS", "2") or 2)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "epoch: full MNIST epoch benchmarks (slow); select with -m epoch or -k epoch")


@pytest.fixture(scope="session", autouse=True)
def bench_threads():
    """Threads of zerodl, BLAS and PyTorch for the whole session."""
    from zerodl.benchmarks import configure_threads
    return configure_threads(BENCH_THREADS)


@pytest.fixture(scope="session")
def torch(bench_threads):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    torch.set_num_threads(bench_threads)
    return torch


@pytest.fixture(scope="session")
def cython_backend():
    from zerodl import _kernels
    if not _kernels.cython_available():
        pytest.skip(f"zerodl's cython kernels are not built: {_kernels.cython_import_error()}")
    return "cython"


@pytest.fixture(scope="session")
def mnist():
    from zerodl.benchmarks import load_mnist_for
    cache = {}

    def get(model):
        layout = "flat" if model == "mlp" else "images"
        if layout not in cache:
            try:
                cache[layout] = load_mnist_for(model, download=False)
            except FileNotFoundError as exc:
                pytest.skip(f"MNIST files not found: {str(exc).splitlines()[0]}")
        return cache[layout]

    return get


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    try:
        return value.item()  # NumPy scalars
    except AttributeError:
        return str(value)


@pytest.fixture
def record_info(bench_threads):
    def record(benchmark, **info):
        benchmark.extra_info.setdefault("threads", bench_threads)
        for key, value in info.items():
            benchmark.extra_info[key] = _jsonable(value)
    return record
