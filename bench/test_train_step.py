"""One training iteration (forward, backward, Adam) at batch 100, and one MNIST epoch.

Run:  pytest bench/test_train_step.py --benchmark-only
      pytest bench/test_train_step.py --benchmark-only -k "not epoch"   # steps only
      pytest bench/test_train_step.py --benchmark-only -k epoch         # epochs only
      pytest bench/ --benchmark-only --benchmark-json out.json && python bench/report.py out.json

Groups: "train step <model>" for mlp (784-100x5-10, BatchNorm, ReLU, He), convnet (the
book's SimpleConvNet) and deepconvnet, each holding the variants of
:mod:`zerodl.benchmarks` side by side: zerodl-cython, zerodl-numpy (float32),
book-float64 (the NumPy reference in float64: the book's algorithms), torch-eager (best
of its Adam implementations, recorded in extra_info["adam"]) and torch-compile (MLP
only; compile time in extra_info["compile_s"], not timed).  "epoch <model>": 600
iterations on shuffled MNIST (pedantic, one round; with --benchmark-disable only 3
iterations run, as a smoke test).  Steps run 15-300 rounds (about 3 s of samples, at
least --benchmark-min-rounds) after a warm-up.  extra_info holds the threads, the FLOPs of the
step's matrix products (report.py turns them into GFLOP/s) and the kernels the cython
backend still takes from NumPy.  Compare ratios within one run: absolute times drift
with the load of the shared machine.
"""
import math
import time

import pytest

from zerodl import benchmarks as B

STEP_CASES = [pytest.param(m, v, id=f"{m}-{v}") for m in B.MODELS for v in B.variants_for(m)]
EPOCH_VARIANTS = ("zerodl-cython", "zerodl-numpy", "book-float64", "torch-eager")
EPOCH_CASES = [pytest.param(m, v, id=f"{m}-{v}") for m in ("mlp", "convnet")
               for v in EPOCH_VARIANTS]
MIN_ROUNDS, MAX_ROUNDS, SECONDS_PER_CASE = 15, 300, 3.0
_INFO_KEYS = ("variant", "model", "backend", "dtype", "batch_size", "flops", "adam",
              "adam_candidates_ms", "compile_s", "compile_cache", "build", "kernel_calls",
              "note")


def _requirements(request, variant):
    if variant.startswith("torch"):
        request.getfixturevalue("torch")
    if variant == "zerodl-cython":
        request.getfixturevalue("cython_backend")


def _info(step):
    info = {k: step.info[k] for k in _INFO_KEYS if k in step.info}
    if "fallbacks" in step.info:
        info["fallback_kernels"] = len(step.info["fallbacks"])
    return info


@pytest.mark.parametrize("model,variant", STEP_CASES)
def test_train_step(benchmark, request, record_info, model, variant):
    _requirements(request, variant)
    try:
        step = B.make_step(model, variant)
    except B.Unavailable as exc:
        pytest.skip(str(exc))
    benchmark.group = f"train step {model}"
    record_info(benchmark, **_info(step))
    step()  # warm up: first-call allocations, caches
    t0 = time.perf_counter()
    step()
    once = time.perf_counter() - t0
    # Explicit rounds: pytest-benchmark's default (>= 5 rounds or 1 s) leaves a slow step
    # with 5 samples, too few for a median on a loaded shared machine.
    rounds = max(request.config.getoption("benchmark_min_rounds") or 0,
                 min(MAX_ROUNDS, max(MIN_ROUNDS, round(SECONDS_PER_CASE / max(once, 1e-6)))))
    benchmark.extra_info["rounds_planned"] = rounds
    loss = benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=1)
    assert math.isfinite(loss)


@pytest.mark.epoch
@pytest.mark.parametrize("model,variant", EPOCH_CASES)
def test_epoch(benchmark, request, record_info, mnist, model, variant):
    _requirements(request, variant)
    iterations = 600 if benchmark.enabled else 3
    try:
        run = B.EpochRun(model, variant, iterations, data=mnist(model))
    except B.Unavailable as exc:
        pytest.skip(str(exc))
    benchmark.group = f"epoch {model}"
    benchmark.pedantic(run.run, rounds=1, iterations=1, warmup_rounds=0)
    summary = run.summary(evaluate=benchmark.enabled)
    adam = getattr(run.runner, "optimizer", None)
    record_info(benchmark, variant=variant, model=model, iterations=iterations,
                batch_size=run.batch_size, flops=B.step_flops(model) * iterations,
                first_loss=summary["first_loss"], last_loss=summary["last_loss"],
                test_accuracy=summary.get("test_accuracy"),
                adam="fused" if variant.startswith("torch") else None,
                optimizer=type(adam).__module__ + "." + type(adam).__name__)
    assert math.isfinite(summary["last_loss"])
    if benchmark.enabled:
        assert summary["last_loss"] < summary["first_loss"], "the epoch did not train"
