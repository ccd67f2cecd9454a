"""Shared fixtures and helpers of zerodl's tests."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import zerodl
from zerodl import _config, _kernels
from zerodl import BackendFallbackWarning

REPO = Path(__file__).resolve().parent.parent
# Where the zerodl under test was imported from (site-packages in CI, the checkout in a
# development build); child processes must import that same copy.
ZERODL_HOME = Path(zerodl.__file__).resolve().parent.parent

AVAILABLE_BACKENDS = ["numpy"] + (["cython"] if _kernels.cython_available() else [])

# Modules whose tests look at BackendFallbackWarning themselves.
_WARNING_MODULES = ("test_dispatch",)


@pytest.fixture(params=AVAILABLE_BACKENDS)
def backend(request):
    """Run the test on each available backend (the name is active via use_backend)."""
    with zerodl.use_backend(request.param):
        yield request.param


@pytest.fixture(autouse=True)
def _silence_fallback_warning(request):
    """BackendFallbackWarning is noise except in the tests about dispatch itself."""
    if request.module.__name__.rsplit(".", 1)[-1] in _WARNING_MODULES:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackendFallbackWarning)
        yield


@pytest.fixture(autouse=True)
def _restore_backend():
    """A test that calls set_backend must not leak its choice into the next test."""
    saved = _config._default_backend
    yield
    _config._default_backend = saved


@pytest.fixture
def rng():
    return np.random.default_rng(20240607)


def subprocess_env(**overrides) -> dict:
    """The current environment with the zerodl under test importable; ``NAME=None``
    removes NAME."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ZERODL_HOME)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("OMP_NUM_THREADS", "1")
    # `python -c` / `-m` would put the working directory (perhaps the checkout, whose
    # zerodl has no compiled kernels) ahead of PYTHONPATH; Python >= 3.11 skips it.
    env["PYTHONSAFEPATH"] = "1"
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_python(args, *, env=None, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    """``python ARGS`` in a child process, output captured as text."""
    return subprocess.run([sys.executable, *args], env=env or subprocess_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
