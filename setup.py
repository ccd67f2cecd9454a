"""Build the compiled kernels: every zerodl/_kernels/*.pyx becomes zerodl._kernels.<name>.

Environment switches (for local builds; a wheel uses none of them):
  ZERODL_CYTHON_DEBUG=1   bounds and wraparound checks on, no -O3 (the suite must pass)
  ZERODL_NATIVE=1         add -march=native (never for a wheel you hand to someone else)
  ZERODL_NO_OPENMP=1      build without OpenMP (kernels then run single-threaded)
  ZERODL_BUILD_ONLY=a,b   build only the named kernel modules (development shortcut)
"""
import os
import sys
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


DEBUG = _flag("ZERODL_CYTHON_DEBUG")
OPENMP = not _flag("ZERODL_NO_OPENMP") and sys.platform != "darwin"

compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
link_args = []
if _flag("ZERODL_NATIVE"):
    compile_args.append("-march=native")
if OPENMP:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")

_ONLY = {m for m in os.environ.get("ZERODL_BUILD_ONLY", "").split(",") if m}

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": DEBUG,
    "embedsignature": True,
}

extensions = [
    Extension(
        f"zerodl._kernels.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for pyx in sorted((HERE / "zerodl" / "_kernels").glob("*.pyx"))
    # ZERODL_BUILD_ONLY=conv,pool rebuilds just those modules (a development shortcut).
    if not _ONLY or pyx.stem in _ONLY
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=directives,
                          compile_time_env={"ZERODL_OPENMP": OPENMP}),
)
