"""Backend selection and kernel dispatch: get/set/use_backend, per-thread and per-task
context, ZERODL_BACKEND, the fallback warning, fallbacks() and info()."""
from __future__ import annotations

import asyncio
import io
import json
import textwrap
import threading
import warnings

import numpy as np
import pytest

import zerodl
import zerodl.layers as L
from zerodl import BackendFallbackWarning, _kernels
from zerodl._kernels import _reference

from conftest import AVAILABLE_BACKENDS, run_python, subprocess_env

needs_cython = pytest.mark.skipif("cython" not in AVAILABLE_BACKENDS,
                                  reason="compiled kernels not built")

# Python code that makes every compiled module unimportable before zerodl is imported:
# the baseline build zerodl/_kernels/<m> and any per-CPU build (zerodl/_kernels/_v3/<m>).
_BLOCKED = ([f"zerodl._kernels.{m}" for m in _kernels.CYTHON_MODULES]
            + ["zerodl._kernels._v3"]
            + [f"zerodl._kernels._v3.{m}" for m in _kernels.CYTHON_MODULES])
NO_COMPILED = ("import sys; [sys.modules.__setitem__(m, None) for m in "
               + repr(_BLOCKED) + "]; ")


# ---------------------------------------------------------------- get / set / use

def test_set_backend_returns_and_changes_the_default():
    assert zerodl.set_backend("numpy") == "numpy"
    assert zerodl.get_backend() == "numpy"
    assert zerodl.set_backend(" NumPy ") == "numpy"  # names are trimmed, case-insensitive
    expected_auto = "cython" if "cython" in AVAILABLE_BACKENDS else "numpy"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackendFallbackWarning)
        assert zerodl.set_backend("auto") == expected_auto
    assert zerodl.get_backend() == expected_auto


@pytest.mark.parametrize("name", AVAILABLE_BACKENDS)
def test_use_backend_is_scoped(name):
    zerodl.set_backend("numpy")
    with zerodl.use_backend(name) as chosen:
        assert chosen == name == zerodl.get_backend()
        with zerodl.use_backend("numpy"):
            assert zerodl.get_backend() == "numpy"
        assert zerodl.get_backend() == name
    assert zerodl.get_backend() == "numpy"


@pytest.mark.parametrize("name", AVAILABLE_BACKENDS)
def test_use_backend_restores_after_an_exception(name):
    zerodl.set_backend("numpy")
    outer = zerodl.get_backend()
    with pytest.raises(RuntimeError, match="boom"):
        with zerodl.use_backend(name):
            assert zerodl.get_backend() == name
            raise RuntimeError("boom")
    assert zerodl.get_backend() == outer
    # an invalid name inside a block leaves the block's backend in force
    with zerodl.use_backend(name):
        with pytest.raises(ValueError):
            with zerodl.use_backend("bogus"):
                pass  # pragma: no cover
        assert zerodl.get_backend() == name


@pytest.mark.parametrize("call", [zerodl.set_backend, zerodl.use_backend],
                         ids=["set_backend", "use_backend"])
def test_unknown_backend_name_lists_the_choices(call):
    with pytest.raises(ValueError) as info:
        _invoke(call, "tensorflow")
    message = str(info.value)
    assert "tensorflow" in message
    for choice in ("auto", "cython", "numpy"):
        assert choice in message


def _invoke(call, name):
    if call is zerodl.use_backend:
        with call(name):
            pass  # pragma: no cover
    else:
        call(name)


@pytest.mark.parametrize("bad", [None, 1, b"numpy", ["numpy"]])
@pytest.mark.parametrize("call", [zerodl.set_backend, zerodl.use_backend],
                         ids=["set_backend", "use_backend"])
def test_non_str_backend_is_a_type_error(call, bad):
    with pytest.raises(TypeError, match="backend must be a str"):
        _invoke(call, bad)


def test_table_rejects_unknown_backends():
    with pytest.raises(ValueError, match="unknown backend"):
        _kernels.table("torch")
    assert set(_kernels.table("numpy")) == set(_kernels.KERNEL_NAMES)


# ---------------------------------------------------------------- per thread, per task

@needs_cython
def test_use_backend_is_per_thread():
    """Two threads inside use_backend blocks at the same time each see their own."""
    barrier = threading.Barrier(2, timeout=10)
    seen, errors = {}, []

    def worker(name):
        try:
            with zerodl.use_backend(name):
                barrier.wait()          # both are inside their blocks now
                seen[name] = [zerodl.get_backend()]
                barrier.wait()          # both have looked
                x = np.random.default_rng(0).normal(size=(4, 5))
                L.Relu().forward(x)
                seen[name].append(zerodl.get_backend())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("numpy", "cython")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert seen == {"numpy": ["numpy", "numpy"], "cython": ["cython", "cython"]}


def test_new_thread_sees_the_process_default_not_the_callers_block():
    zerodl.set_backend("numpy")
    other = "cython" if "cython" in AVAILABLE_BACKENDS else "numpy"
    seen = []
    with zerodl.use_backend(other):
        t = threading.Thread(target=lambda: seen.append(zerodl.get_backend()))
        t.start()
        t.join(10)
        assert zerodl.get_backend() == other
    assert seen == ["numpy"]


@needs_cython
def test_use_backend_is_per_asyncio_task():
    async def task(name, started, results):
        with zerodl.use_backend(name):
            started.append(name)
            while len(started) < 2:
                await asyncio.sleep(0)
            results[name] = zerodl.get_backend()

    async def main():
        started, results = [], {}
        await asyncio.gather(task("numpy", started, results), task("cython", started, results))
        return results

    assert asyncio.run(main()) == {"numpy": "numpy", "cython": "cython"}


# ---------------------------------------------------------------- a mock backend

def test_layers_dispatch_through_the_active_table(monkeypatch):
    """Replace relu_forward in the numpy table: Relu must call the replacement."""
    calls = []
    original = _kernels.table("numpy")["relu_forward"]

    def recorder(x):
        calls.append(x)
        return original(x)

    mock = dict(_kernels.table("numpy"))
    mock["relu_forward"] = recorder
    monkeypatch.setitem(_kernels._tables, "numpy", mock)
    x = np.array([[-1.0, 2.0, -3.0]])
    with zerodl.use_backend("numpy"):
        out = L.Relu().forward(x)
    assert len(calls) == 1 and calls[0] is x
    np.testing.assert_array_equal(out, [[0.0, 2.0, 0.0]])
    # ... and only the active backend's table is consulted
    if "cython" in AVAILABLE_BACKENDS:
        with zerodl.use_backend("cython"):
            L.Relu().forward(x)
        assert len(calls) == 1


def test_ops_unknown_kernel_is_attribute_error():
    with pytest.raises(AttributeError, match="no_such_kernel"):
        _kernels.ops.no_such_kernel  # noqa: B018
    assert set(dir(_kernels.ops)) == set(_kernels.KERNEL_NAMES)


# ---------------------------------------------------------------- fallbacks / compiled

@needs_cython
def test_fallbacks_map_to_the_reference_in_the_cython_table():
    table = _kernels.table("cython")
    fallbacks = set(_kernels.fallbacks())
    compiled = _kernels.compiled_kernels()
    assert set(table) == set(_kernels.KERNEL_NAMES)
    assert fallbacks.isdisjoint(compiled)
    assert fallbacks | set(compiled) == set(_kernels.KERNEL_NAMES)
    for name in fallbacks:
        assert table[name] is getattr(_reference, name), name
    for name, module in compiled.items():
        assert module in _kernels.CYTHON_MODULES
        assert table[name] is not getattr(_reference, name), name


def test_info_prints_and_returns_a_dict():
    buf = io.StringIO()
    data = zerodl.info(file=buf)
    assert {"backend", "compiled_kernels", "reference_fallbacks", "blas"} <= set(data)
    assert data["backend"] in ("cython", "numpy")
    assert isinstance(data["compiled_kernels"], dict)
    assert isinstance(data["reference_fallbacks"], list)
    assert isinstance(data["blas"], list)
    text = buf.getvalue()
    assert "backend:" in text and zerodl.__version__ in text
    if "cython" in AVAILABLE_BACKENDS:
        assert data["reference_fallbacks"] == list(_kernels.fallbacks())
        assert data["compiled_kernels"] == _kernels.compiled_kernels()


# ---------------------------------------------------------------- ZERODL_BACKEND

PROBE = ("import json, warnings, numpy as np; warnings.simplefilter('always'); "
         "import zerodl; from zerodl.layers import Relu; "
         "out = Relu().forward(np.array([-1.0, 2.0])); "
         "print(json.dumps({'backend': zerodl.get_backend(), 'out': out.tolist()}))")


def _probe(code=PROBE, **env):
    return run_python(["-c", code], env=subprocess_env(**env))


def _last_json(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_env_numpy():
    result = _last_json(_probe(ZERODL_BACKEND="numpy"))
    assert result == {"backend": "numpy", "out": [0.0, 2.0]}


@needs_cython
def test_env_cython_when_built():
    assert _last_json(_probe(ZERODL_BACKEND="CYTHON"))["backend"] == "cython"


def test_env_bogus_is_an_error_naming_the_choices():
    proc = _probe(ZERODL_BACKEND="bogus")
    assert proc.returncode != 0
    assert "ValueError" in proc.stderr and "bogus" in proc.stderr
    assert "numpy" in proc.stderr and "cython" in proc.stderr


def test_env_cython_without_compiled_kernels_is_an_import_error():
    proc = _probe(NO_COMPILED + PROBE, ZERODL_BACKEND="cython")
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert "ZERODL_BACKEND=numpy" in proc.stderr  # the message says how to get going
    # importing zerodl itself stays possible: the backend is resolved on first use
    ok = _probe(NO_COMPILED + "import zerodl, zerodl.layers; print('imported')",
                ZERODL_BACKEND="cython")
    assert ok.returncode == 0 and "imported" in ok.stdout


def test_set_backend_cython_without_compiled_kernels_is_an_import_error():
    code = NO_COMPILED + textwrap.dedent("""
        import zerodl
        try:
            zerodl.set_backend("cython")
        except ImportError as exc:
            print("ImportError:", exc)
        print("backend", zerodl.get_backend())
    """)
    proc = _probe(code, ZERODL_BACKEND="numpy")
    assert proc.returncode == 0, proc.stderr
    assert "ImportError: the cython backend was asked for" in proc.stdout
    assert "backend numpy" in proc.stdout


AUTO_FALLBACK = NO_COMPILED + textwrap.dedent("""
    import json, warnings
    import numpy as np
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        FILTER
        import zerodl
        from zerodl import BackendFallbackWarning
        from zerodl.layers import Affine, Relu
        imported = len(caught)
        x = np.ones((2, 3))
        for _ in range(3):
            Relu().forward(x)
            Affine(np.ones((3, 2)), np.zeros(2)).forward(x)
        zerodl.get_backend()
        fallback = [w for w in caught if issubclass(w.category, BackendFallbackWarning)]
    print(json.dumps({"imported": imported, "fallback": len(fallback),
                      "backend": zerodl.get_backend(),
                      "message": str(fallback[0].message) if fallback else "",
                      "filename": fallback[0].filename if fallback else ""}))
""")


@pytest.mark.parametrize("env", [None, "auto", ""])
def test_auto_without_compiled_kernels_warns_exactly_once(env):
    code = AUTO_FALLBACK.replace("FILTER", "pass")
    result = _last_json(_probe(code, ZERODL_BACKEND=env))
    assert result["imported"] == 0, "importing must not warn: only the first kernel use"
    assert result["fallback"] == 1
    assert result["backend"] == "numpy"
    assert "ZERODL_BACKEND=numpy" in result["message"]


def test_fallback_warning_is_filterable():
    code = AUTO_FALLBACK.replace(
        "FILTER", "warnings.filterwarnings('ignore', category=UserWarning, "
                  "message='zerodl.s compiled kernels')")
    result = _last_json(_probe(code, ZERODL_BACKEND=None))
    assert result["fallback"] == 0 and result["backend"] == "numpy"
    # and by class, after import
    code = NO_COMPILED + textwrap.dedent("""
        import warnings, numpy as np, zerodl
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", zerodl.BackendFallbackWarning)
        from zerodl.layers import Relu
        Relu().forward(np.ones(3))
        print("ok", zerodl.get_backend())
    """)
    proc = _probe(code, ZERODL_BACKEND=None)
    assert proc.returncode == 0, proc.stderr
    assert "ok numpy" in proc.stdout
    # ZERODL_BACKEND=numpy silences it too
    result = _last_json(_probe(AUTO_FALLBACK.replace("FILTER", "pass"), ZERODL_BACKEND="numpy"))
    assert result["fallback"] == 0


def test_info_without_compiled_kernels():
    code = NO_COMPILED + ("import json, warnings, zerodl; "
                          "warnings.simplefilter('ignore'); "
                          "d = zerodl.info(); print(json.dumps({k: d[k] for k in "
                          "('backend', 'compiled_kernels', 'reference_fallbacks')}))")
    result = _last_json(_probe(code, ZERODL_BACKEND=None))
    assert result == {"backend": "numpy", "compiled_kernels": {}, "reference_fallbacks": []}


@pytest.mark.skipif(not _kernels.cython_available(), reason="cython kernels not built")
@pytest.mark.parametrize("user", [None, "PASSIVE"])
def test_openmp_spin_default_is_set_only_while_the_kernels_load(user):
    """libgomp starts with GOMP_SPINCOUNT=3000 unless the user chose a wait policy, and
    the variable does not stay in the environment for other libraries' runtimes."""
    code = ("import os; from zerodl import _kernels; _kernels.cython_available(); "
            "print('GOMP_SPINCOUNT' in os.environ); print(_kernels.build_info()['openmp_wait'])")
    env = subprocess_env(GOMP_SPINCOUNT=None, OMP_WAIT_POLICY=user)
    out = run_python(["-c", code], env=env)
    assert out.returncode == 0, out.stderr
    left, wait = out.stdout.splitlines()
    assert left == "False"
    if user is None:
        assert wait == "GOMP_SPINCOUNT=3000 (zerodl's default)"
    else:
        assert wait == "OMP_WAIT_POLICY=PASSIVE"


@pytest.mark.parametrize("value,flags,expect", [
    (None, {"avx512f"}, "not set"),
    ("Haswell", set(_kernels.AVX512_FLAGS) | {"avx2"}, "this CPU has AVX-512"),
    ("Haswell", {"avx", "avx2", "fma"}, "(set in the environment)"),
    ("SkylakeX", set(_kernels.AVX512_FLAGS), "(set in the environment)"),
])
def test_openblas_coretype_note(monkeypatch, value, flags, expect):
    """build_info() says when OPENBLAS_CORETYPE holds an AVX-512 CPU to AVX2 kernels."""
    if value is None:
        monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    else:
        monkeypatch.setenv("OPENBLAS_CORETYPE", value)
    monkeypatch.setattr(_kernels, "_cpu_flags", lambda: set(flags))
    note = _kernels.openblas_coretype_note()
    assert expect in note
    if value is not None:
        assert note.startswith(value)
        assert ("AVX-512" in note) == (expect == "this CPU has AVX-512")
