"""The installed package is the one under test, and CI's compiled build really loads."""
import os

import pytest

import zerodl
from zerodl import _kernels


@pytest.mark.skipif(os.environ.get("ZERODL_REQUIRE_CYTHON") != "1",
                    reason="only where a compiled build is required (CI sets ZERODL_REQUIRE_CYTHON=1)")
def test_compiled_kernels_load():
    assert _kernels.cython_available(), _kernels.cython_import_error()
    compiled = _kernels.compiled_kernels()
    # im2col/col2im were the first compiled kernels; the build must at least have them.
    assert compiled.get("im2col") and compiled.get("col2im")
    if os.environ.get("ZERODL_BACKEND", "auto") in ("auto", "cython"):
        assert zerodl.get_backend() == "cython"


def test_every_kernel_has_both_implementations():
    ref = _kernels.table("numpy")
    assert set(ref) == set(_kernels.KERNEL_NAMES)
    if _kernels.cython_available():
        cy = _kernels.table("cython")
        assert set(cy) == set(ref)
        for name in _kernels.fallbacks():
            assert cy[name] is ref[name]
        for name in _kernels.compiled_kernels():
            assert cy[name] is not ref[name]
