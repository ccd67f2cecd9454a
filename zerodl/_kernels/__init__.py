"""The kernel table: one function per name, per backend.

Every backend is a module exposing functions with the names in :data:`KERNEL_NAMES` and
identical signatures.  ``_reference`` (NumPy) has all of them; the compiled Cython modules
listed in :data:`CYTHON_MODULES` have as many as are written so far, and the cython table
takes the reference for the rest - recorded in :func:`fallbacks`, never silently.

Layers, optimizers and networks reach kernels only through :data:`ops`, whose attributes
are looked up in the table of the backend active in the calling context.
"""
from __future__ import annotations

import importlib
import os

from .._config import get_backend

# How long an OpenMP thread waiting for work spins before it sleeps.  libgomp reads
# GOMP_SPINCOUNT once, when it is loaded, so the variable is set only while the compiled
# modules load (see _load_cython) and removed again: libgomp copies loaded later (such as
# PyTorch's) keep their own defaults.  A setting of the user's (OMP_WAIT_POLICY or
# GOMP_SPINCOUNT) wins.  libgomp's default spins ~100x longer.  Measured on this
# project's 2-core VM (MLP / SimpleConvNet step, 2 threads): idle machine - sleeping at
# once (PASSIVE) 0.89 / 6.6 ms, 3000 spins 0.73 / 6.3 ms, spinning always 0.70 / 4.7 ms
# (waking a sleeping vCPU costs ~50 us, which a 100k-parameter SGD step feels most: 68
# vs 9 us); beside another 2-thread process - PASSIVE 0.95 / 9.6 ms, 3000 spins
# 1.7 / 11 ms, 30000 spins 8.2 / 24 ms (a spinning waiter holds the core its
# descheduled partner needs).
DEFAULT_GOMP_SPINCOUNT = "3000"
_openmp_wait = "not loaded"  # what the kernels' libgomp was started with, for info()

# OpenBLAS picks its kernels when it is loaded; OPENBLAS_CORETYPE in the environment
# overrides its choice.  zerodl never sets it, but build_info() says when a setting holds
# an AVX-512 CPU to older kernels (on this project's Zen 5 VM, OPENBLAS_CORETYPE=Haswell
# took scipy's sgemm from 120-180 to 65-110 GFLOP/s per core at the networks' shapes).
AVX512_FLAGS = ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")
_OLDER_CORETYPES = ("haswell", "zen", "sandybridge", "nehalem", "prescott")

KERNEL_NAMES = (
    # affine and activations
    "affine_forward", "affine_backward",
    "relu_forward", "relu_backward",
    "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward",
    # loss
    "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
    # normalisation
    "batchnorm_forward_train", "batchnorm_forward_infer", "batchnorm_backward",
    "spatial_batchnorm_forward_train", "spatial_batchnorm_forward_infer",
    "spatial_batchnorm_backward",
    "layernorm_forward", "layernorm_backward",
    "instancenorm_forward", "instancenorm_backward",
    # masks
    "dropout_forward", "dropout_backward",
    # convolution and pooling
    "im2col", "col2im", "conv_forward", "conv_backward",
    "maxpool_forward", "maxpool_backward", "avgpool_forward", "avgpool_backward",
    # fused: convolution + ReLU + max pooling; affine + batch norm + ReLU
    "conv_relu_pool_forward", "conv_relu_pool_backward",
    "affine_bn_relu_forward", "affine_bn_relu_backward",
    # optimizer updates, in place over lists of arrays
    "sgd_update", "momentum_update", "nesterov_update", "adagrad_update",
    "rmsprop_update", "adam_update", "adamw_update",
)

# Compiled modules of the cython backend, in zerodl/_kernels/<name>.pyx.
CYTHON_MODULES = ("conv", "activation", "affine", "loss", "batchnorm", "optim", "pool",
                  "dropout")

_V3_CPU_FLAGS = ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe")

_tables: dict[str, dict] = {}
_variant = "not built"
_blas_controlled: bool | None = None  # can the kernels hold BLAS to one thread?
_cython_fallbacks: tuple[str, ...] = ()
_cython_compiled: dict[str, str] = {}
_cython_error: str | None = None
_cython_loaded = False


def _cpu_flags() -> set:
    """The first processor's flags in /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_supports_v3() -> bool:
    """Whether this CPU runs x86-64-v3 code (AVX2, FMA, BMI1/2, F16C, MOVBE)."""
    return set(_V3_CPU_FLAGS) <= _cpu_flags()


def openblas_coretype_note() -> str:
    """OPENBLAS_CORETYPE as the environment sets it, and whether it leaves AVX-512 unused."""
    value = os.environ.get("OPENBLAS_CORETYPE")
    if value is None:
        return "not set (OpenBLAS picks kernels for this CPU)"
    if value.strip().lower() in _OLDER_CORETYPES and set(AVX512_FLAGS) <= _cpu_flags():
        return (f"{value} (set in the environment; this CPU has AVX-512, whose kernels "
                f"OpenBLAS uses when the variable is unset)")
    return f"{value} (set in the environment)"


def _wanted_variant() -> str:
    choice = os.environ.get("ZERODL_KERNEL_VARIANT", "auto").strip().lower() or "auto"
    if choice not in ("auto", "v3", "baseline"):
        raise ValueError(f"ZERODL_KERNEL_VARIANT must be auto, v3 or baseline, got {choice!r}")
    if choice == "auto":
        return "v3" if cpu_supports_v3() else "baseline"
    if choice == "v3" and not cpu_supports_v3():
        raise ImportError("ZERODL_KERNEL_VARIANT=v3 but this CPU lacks AVX2/FMA/BMI2")
    return choice


def _import_kernel_module(mod_name: str, variant: str):
    """The v3 build of a module when wanted and present, else the baseline build."""
    if variant == "v3":
        try:
            return importlib.import_module(f"{__name__}._v3.{mod_name}"), "v3"
        except ImportError:
            pass
    return importlib.import_module(f"{__name__}.{mod_name}"), "baseline"


def _load_cython() -> None:
    """Import every compiled module once; remember which kernels they provide."""
    global _cython_loaded, _cython_error, _cython_fallbacks, _variant
    if _cython_loaded:
        return
    _cython_loaded = True
    from . import _reference

    found: dict[str, object] = {}
    errors = []
    variants = set()
    wanted = _wanted_variant()
    global _blas_controlled, _openmp_wait
    ours = "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ
    if ours:
        os.environ["GOMP_SPINCOUNT"] = DEFAULT_GOMP_SPINCOUNT
    _openmp_wait = ", ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY",
                                                                 "GOMP_SPINCOUNT")
                             if k in os.environ) + (" (zerodl's default)" if ours else "")
    try:
        modules = []
        for mod_name in CYTHON_MODULES:
            try:
                modules.append((mod_name, *_import_kernel_module(mod_name, wanted)))
            except ImportError as exc:
                errors.append(f"{mod_name}: {exc}")
    finally:
        if ours:
            del os.environ["GOMP_SPINCOUNT"]
    for mod_name, mod, got in modules:
        variants.add(got)
        probe = getattr(mod, "blas_threads_controlled", None)
        if probe is not None:
            _blas_controlled = bool(probe())
        for name in KERNEL_NAMES:
            fn = getattr(mod, name, None)
            if fn is not None:
                found[name] = fn
                _cython_compiled[name] = mod_name
    if variants:
        _variant = "x86-64-v3 (AVX2/FMA)" if variants == {"v3"} else (
            "baseline (x86-64-v2)" if variants == {"baseline"} else "mixed v3/baseline")
    if not found:
        _cython_error = "; ".join(errors) or "no compiled kernel modules found"
        return
    table = {}
    fallbacks = []
    for name in KERNEL_NAMES:
        if name in found:
            table[name] = found[name]
        else:
            table[name] = getattr(_reference, name)
            fallbacks.append(name)
    _cython_fallbacks = tuple(fallbacks)
    _tables["cython"] = table


def cython_available() -> bool:
    _load_cython()
    return "cython" in _tables


def cython_import_error() -> str | None:
    _load_cython()
    return _cython_error


def fallbacks() -> tuple[str, ...]:
    """Kernels the cython backend does not have yet and takes from the reference."""
    _load_cython()
    return _cython_fallbacks


def compiled_kernels() -> dict[str, str]:
    """Kernel name -> compiled module that provides it."""
    _load_cython()
    return dict(_cython_compiled)


def build_info() -> dict:
    """Which build of the compiled kernels was imported, and whether the CPU has v3."""
    _load_cython()
    return {"variant": _variant, "cpu_supports_x86_64_v3": cpu_supports_v3(),
            "blas_single_threaded_in_kernels": _blas_controlled,
            "openmp_wait": _openmp_wait, "openblas_coretype": openblas_coretype_note()}


def table(backend: str) -> dict:
    """The kernel table of a backend ('numpy' or 'cython')."""
    if backend not in _tables:
        if backend == "numpy":
            from . import _reference
            _tables["numpy"] = {name: getattr(_reference, name) for name in KERNEL_NAMES}
        elif backend == "cython":
            _load_cython()
            if "cython" not in _tables:
                raise ImportError(f"cython backend unavailable: {_cython_error}")
        else:
            raise ValueError(f"unknown backend {backend!r}; choose cython or numpy")
    return _tables[backend]


class _Ops:
    """``ops.<kernel>`` is the kernel of the backend active in the calling context."""

    __slots__ = ()

    def __getattr__(self, name):
        try:
            return table(get_backend())[name]
        except KeyError:
            raise AttributeError(f"no kernel named {name!r}") from None

    def __dir__(self):
        return list(KERNEL_NAMES)


ops = _Ops()
