"""Build the compiled kernels: every zerodl/_kernels/*.pyx becomes zerodl._kernels.<name>.

Environment switches (for local builds; a wheel uses none of them):
  ZERODL_CYTHON_DEBUG=1   bounds and wraparound checks on, no -O3 (the suite must pass);
                          loops over raw pointers check their plane bounds too
  ZERODL_NATIVE=1         add -march=native (never for a wheel you hand to someone else)
  ZERODL_NO_OPENMP=1      build without OpenMP (kernels then run single-threaded)
  ZERODL_BUILD_ONLY=a,b   build only the named kernel modules (development shortcut)
  ZERODL_NO_V3=1          skip the second, x86-64-v3 (AVX2/FMA) build of the kernels

On x86-64 every kernel module is compiled twice from one generated C file: a baseline
build for x86-64-v2 (zerodl._kernels.<name>) and an AVX2/FMA build for x86-64-v3
(zerodl._kernels._v3.<name>).  zerodl imports the v3 build when the CPU supports it.
"""
import os
import platform
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

X86_64 = platform.machine().lower() in ("x86_64", "amd64")
# Portable instruction sets only (no -march=native unless asked for above).
BASE_ARCH = ["-march=x86-64-v2"] if X86_64 else []
V3_ARCH = ["-march=x86-64-v3"]
BUILD_V3 = X86_64 and not _flag("ZERODL_NO_V3") and not _flag("ZERODL_NATIVE")

sources = [pyx for pyx in sorted((HERE / "zerodl" / "_kernels").glob("*.pyx"))
           # ZERODL_BUILD_ONLY=conv,pool rebuilds just those modules (a development shortcut).
           if not _ONLY or pyx.stem in _ONLY]


def _extension(name, source, arch):
    return Extension(
        name, [source],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
        + ([("ZERODL_DEBUG_CHECKS", "1")] if DEBUG else []),
        extra_compile_args=compile_args + arch,
        extra_link_args=link_args,
    )


# Debug and release builds keep their generated C and object files apart, so switching
# ZERODL_CYTHON_DEBUG never reuses a file built with the other directives.
FLAVOUR = "debug" if DEBUG else "release"
C_DIR = Path("build") / f"cython-{FLAVOUR}"

baseline = cythonize(
    [_extension(f"zerodl._kernels.{pyx.stem}", str(pyx.relative_to(HERE)), BASE_ARCH)
     for pyx in sources],
    compiler_directives=directives, compile_time_env={"ZERODL_OPENMP": OPENMP},
    build_dir=str(C_DIR))
# The v3 build compiles the C file cythonize just generated, with other flags.
v3 = [_extension(f"zerodl._kernels._v3.{pyx.stem}",
                 str(C_DIR / pyx.relative_to(HERE).with_suffix(".c")), V3_ARCH)
      for pyx in sources] if BUILD_V3 else []

setup(ext_modules=baseline + v3,
      options={"build": {"build_base": str(Path("build") / FLAVOUR)}})
