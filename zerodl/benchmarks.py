"""Time one training iteration of the book's networks: zerodl against PyTorch.

Every factory here returns a :class:`Step`: a zero-argument callable that runs ONE
training iteration (forward, backward, Adam update) at batch 100 on a fixed random
MNIST-shaped batch, and returns the loss of that batch.  The networks are

* ``mlp``: 784-100x5-10 with BatchNorm + ReLU, He init (``MultiLayerNetExtend``);
* ``convnet``: the book's SimpleConvNet, conv 30 5x5 - ReLU - max pool 2 - affine 100 -
  ReLU - affine 10, init std 0.01;
* ``deepconvnet``: the book's ch. 8 DeepConvNet (six 3x3 convolutions, dropout 0.5).

and the variants (:data:`VARIANTS`)

* ``zerodl-cython`` / ``zerodl-numpy``: zerodl in float32 on that backend.  The callable
  enters :func:`zerodl.use_backend` on every call, so it runs on the requested backend
  whatever the process default is; at construction one step is run with the kernel
  tables instrumented, and the kernel calls that reached each backend are recorded in
  ``step.info["kernel_calls"]`` (a step that reaches the wrong table is an error).  The
  cython backend still takes some kernels from the NumPy reference while they are being
  written: they are listed in ``step.info["fallbacks"]``.
* ``book-float64``: the stand-in for the book's own code.  It is zerodl's NumPy reference
  backend in float64, which runs the book's algorithms: im2col/col2im with Python loops
  over the filter window, convolution as one matrix product of the im2col matrix, max
  pooling through im2col + argmax, batch norm per column with the backward the book's
  computational graph reduces to, and the book's Adam (bias correction folded into the
  step size).  It is not the book's source verbatim (it checks its arguments and
  accumulates sums in float64), so it is, if anything, a little slower than the book.
* ``torch-eager``: an equivalent ``nn.Sequential`` in float32 (``BatchNorm1d`` with the
  same eps and momentum, ``F.cross_entropy``), ``torch.optim.Adam``.  The default, the
  ``foreach`` and the ``fused`` Adam are timed against each other (interleaved) and the
  fastest is kept; ``step.info["adam"]`` says which, with the median of each (the
  epoch and memory runs use the fused Adam, which the anchors found as fast as any).
* ``torch-compile``: the same with ``torch.compile`` (inductor) on the model and the
  fused Adam, MLP only by default (the anchors found it 3x slower than eager for the
  CNN).  Compile time is excluded from the timing and reported in
  ``step.info["compile_s"]``.  Where compiling fails the variant is
  :class:`Unavailable`.

PyTorch is optional and imported only by the torch variants.  All variants use the same
thread count (:func:`configure_threads`, default 2): zerodl's kernels, the BLAS libraries
(through threadpoolctl, after loading the compiled kernels so that scipy's OpenBLAS, which
their GEMM calls, is limited too) and ``torch.set_num_threads``.  On an oversubscribed host
(load average above the core count) multi-threaded timings mostly measure the scheduler:
compare with ``threads=1``.

:func:`compare` times variants in one process, round-robin (each repeat runs a block of
every variant in turn, the starting variant rotating), so that the host's drift is
shared; it returns the medians and the speedups against ``torch-eager`` and
``book-float64``.  :func:`time_epoch` times 600 iterations on the real MNIST training set
and :func:`peak_rss` runs a 1-epoch training in a fresh subprocess and reads its peak RSS.

Every step has ``verify(steps=50)``: a fresh copy trains for that many iterations on its
fixed batch and the loss must fall (a check that the timed code really trains).

``zerodl bench`` (:mod:`zerodl._cli_bench`) prints the comparison as a table;
``bench/test_train_step.py`` has the same as pytest-benchmark tests.
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

__all__ = ["MODELS", "VARIANTS", "REFERENCE", "BOOK", "Step", "Unavailable",
           "configure_threads", "torch_available", "make_step", "zerodl_step", "book_step",
           "torch_step", "variants_for", "compare", "time_epoch", "peak_rss", "step_flops",
           "random_batch", "markdown_table", "bar_chart"]

MODELS = ("mlp", "convnet", "deepconvnet")
VARIANTS = ("zerodl-cython", "zerodl-numpy", "book-float64", "torch-eager", "torch-compile")
REFERENCE = "torch-eager"   # "vs PyTorch eager" column
BOOK = "book-float64"       # "vs book" column
BATCH_SIZE = 100
DEFAULT_THREADS = 2
LR = 1e-3
_INPUT_SHAPES = {"mlp": (784,), "convnet": (1, 28, 28), "deepconvnet": (1, 28, 28)}
_TORCH_ADAM = ("default", "foreach", "fused")


class Unavailable(RuntimeError):
    """This variant cannot run here (torch missing, kernels not compiled, compile failed)."""


# ------------------------------------------------------------------ threads

_threads: int | None = None
_limiter = None


def configure_threads(n: int | None = DEFAULT_THREADS) -> int:
    """Use ``n`` threads in zerodl's kernels, the BLAS libraries and PyTorch (if it is
    imported, now or later by a torch variant).  Returns the number set."""
    global _threads, _limiter
    import zerodl

    n = int(n or DEFAULT_THREADS)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    _threads = n
    zerodl.set_num_threads(n)
    # threadpoolctl only reaches the libraries loaded when it is called: load the compiled
    # kernels first, which pulls in scipy's own OpenBLAS (their GEMM), else that BLAS
    # keeps its default thread count whatever is asked here.
    from . import _kernels
    _kernels.cython_available()
    try:
        import scipy.linalg.cython_blas  # noqa: F401
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits
        _limiter = threadpool_limits(limits=n)  # stays in force: process-wide setting
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass
    if "torch" in sys.modules:
        _torch_threads(sys.modules["torch"])
    return n


def thread_pools() -> list[dict]:
    """The native thread pools loaded in this process and their sizes (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return []
    return [{"api": i.get("internal_api"), "threads": i.get("num_threads"),
             "library": os.path.basename(i.get("filepath") or "")} for i in threadpool_info()]


def current_threads() -> int:
    return _threads if _threads is not None else DEFAULT_THREADS


def _torch_threads(torch):
    n = current_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise Unavailable(f"PyTorch is not installed ({exc})") from None
    _torch_threads(torch)
    return torch


# ------------------------------------------------------------------ data and models

def random_batch(model: str, batch_size: int = BATCH_SIZE, seed: int = 0):
    """A fixed MNIST-shaped batch: pixels uniform in [0, 1) (float64) and labels 0..9."""
    _check_model(model)
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size,) + _INPUT_SHAPES[model])
    t = rng.integers(0, 10, size=batch_size)
    return x, t


def _check_model(model):
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")


def step_flops(model: str, batch_size: int = BATCH_SIZE) -> int:
    """Floating-point operations of one iteration's matrix products (forward x 3: the
    backward does dx and dW), ignoring the element-wise work: the compute floor."""
    _check_model(model)
    n = batch_size
    if model == "mlp":
        sizes = [784] + [100] * 5 + [10]
        fwd = sum(2 * n * a * b for a, b in zip(sizes[:-1], sizes[1:]))
    elif model == "convnet":
        fwd = 2 * n * 24 * 24 * 30 * 25 + 2 * n * 4320 * 100 + 2 * n * 100 * 10
    else:
        convs = [(28, 1, 16), (28, 16, 16), (14, 16, 32), (16, 32, 32), (8, 32, 64),
                 (8, 64, 64)]  # (output side, in channels, out channels), 3x3 filters
        fwd = sum(2 * n * s * s * co * ci * 9 for s, ci, co in convs)
        fwd += 2 * n * 1024 * 50 + 2 * n * 50 * 10
    return 3 * fwd


def _zerodl_net(model, dtype, seed):
    from .nets import DeepConvNet, MultiLayerNetExtend, SimpleConvNet

    if model == "mlp":
        return MultiLayerNetExtend(784, [100] * 5, 10, use_batchnorm=True,
                                   weight_init_std="he", dtype=dtype, seed=seed)
    if model == "convnet":
        return SimpleConvNet(dtype=dtype, seed=seed)
    return DeepConvNet(dtype=dtype, seed=seed)


def _torch_net(torch, model, seed):
    nn = torch.nn
    torch.manual_seed(seed)
    if model == "mlp":
        layers = []
        sizes = [784] + [100] * 5
        for a, b in zip(sizes[:-1], sizes[1:]):
            # eps and momentum as zerodl's BatchNormalization (book: 10e-7, 0.9)
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b, eps=1e-6, momentum=0.1), nn.ReLU()]
        layers.append(nn.Linear(100, 10))
        net = nn.Sequential(*layers)
        he = True
    elif model == "convnet":
        net = nn.Sequential(
            nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
            nn.Linear(30 * 12 * 12, 100), nn.ReLU(), nn.Linear(100, 10))
        he = False
    else:
        def conv(ci, co, pad=1):
            return [nn.Conv2d(ci, co, 3, padding=pad), nn.ReLU()]
        net = nn.Sequential(
            *conv(1, 16), *conv(16, 16), nn.MaxPool2d(2, 2),
            *conv(16, 32), *conv(32, 32, pad=2), nn.MaxPool2d(2, 2),
            *conv(32, 64), *conv(64, 64), nn.MaxPool2d(2, 2), nn.Flatten(),
            nn.Linear(64 * 4 * 4, 50), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(50, 10), nn.Dropout(0.5))
        he = True
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_in) if he else 0.01)
                m.bias.zero_()
    return net


# ------------------------------------------------------------------ runners
# A runner holds one model and its optimizer and knows how to feed it: the step factory
# (fixed batch) and the epoch timer (real MNIST) share it.

class _ZerodlRunner:
    def __init__(self, model, backend, dtype, seed):
        import zerodl
        from .optimizers import Adam

        self.backend = backend
        self.dtype = np.dtype(dtype)
        try:
            with zerodl.use_backend(backend) as active:
                pass
        except ImportError as exc:
            raise Unavailable(str(exc)) from None
        if active != backend:  # pragma: no cover - use_backend refuses silent fallback
            raise Unavailable(f"backend {backend!r} resolved to {active!r}")
        self._use_backend = zerodl.use_backend
        self.net = _zerodl_net(model, self.dtype, seed)
        self.optimizer = Adam(lr=LR)

    def context(self):
        return self._use_backend(self.backend)

    def prepare(self, x, t):
        return np.ascontiguousarray(x, dtype=self.dtype), np.asarray(t, dtype=np.intp)

    @staticmethod
    def gather(x, t, idx):
        return x[idx], t[idx]

    def train(self, x, t):
        return self.net.train_step(x, t, self.optimizer)

    def accuracy(self, x, t):
        with self.context():
            return float(self.net.accuracy(x, t, batch_size=1000))


class _TorchRunner:
    def __init__(self, model, seed, adam="fused", compile=False):
        torch = _import_torch()
        self.torch = torch
        self.net = _torch_net(torch, model, seed)
        kwargs = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
        if adam not in kwargs:
            raise ValueError(f"adam must be one of {', '.join(kwargs)}, got {adam!r}")
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=LR, **kwargs[adam])
        self.net.train()
        self.forward = self.net
        if compile:
            try:
                self.forward = torch.compile(self.net)
            except Exception as exc:  # noqa: BLE001 - any failure means "not here"
                raise Unavailable(f"torch.compile failed: {type(exc).__name__}: {exc}") from None
        self._loss = torch.nn.functional.cross_entropy

    @staticmethod
    def context():
        return contextlib.nullcontext()

    def prepare(self, x, t):
        torch = self.torch
        return (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                torch.from_numpy(np.asarray(t, dtype=np.int64)))

    def gather(self, x, t, idx):
        idx = self.torch.from_numpy(idx)
        return x.index_select(0, idx), t.index_select(0, idx)

    def train(self, x, t):  # the net is in training mode (set once, as zerodl's flag)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(self.forward(x), t)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def accuracy(self, x, t):
        torch = self.torch
        self.net.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, x.shape[0], 1000):
                correct += int((self.net(x[i:i + 1000]).argmax(1) == t[i:i + 1000]).sum())
        self.net.train()
        return correct / x.shape[0]


# ------------------------------------------------------------------ the step callable

class Step:
    """One training iteration on a fixed batch: ``step()`` runs it and returns the loss.

    ``info`` describes what runs (variant, backend, dtype, Adam implementation, threads,
    compile time, ...); ``verify(steps)`` trains a fresh copy and checks the loss falls.
    """

    def __init__(self, model, variant, runner, batch, info, rebuild):
        self.model = model
        self.variant = variant
        self.runner = runner
        self.info = info
        self._rebuild = rebuild
        x, t = batch
        ctx, train = runner.context, runner.train
        if isinstance(runner, _ZerodlRunner):
            def fn():
                with ctx():
                    return train(x, t)
        else:
            def fn():
                return train(x, t)
        self._fn = fn

    def __call__(self):
        return self._fn()

    def __repr__(self):
        return f"<Step {self.model} {self.variant}>"

    def verify(self, steps: int = 50, window: int = 5) -> list[float]:
        """Train a fresh copy ``steps`` iterations on the fixed batch; the mean loss of the
        last ``window`` must be below 95% of the first ``window``'s.  Returns the losses.

        The labels of the batch are random, so this measures memorisation: the MLP gets
        near 0 within 50 steps, SimpleConvNet (init std 0.01) from 2.30 to ~1.7, and
        DeepConvNet, with dropout on its output, only from ~2.5 to ~2.2."""
        fresh = self._rebuild()
        losses = [float(fresh()) for _ in range(steps)]
        if not all(math.isfinite(v) for v in losses):
            raise AssertionError(f"{self!r}: non-finite loss {losses}")
        first = statistics.fmean(losses[:window])
        last = statistics.fmean(losses[-window:])
        if not last < 0.95 * first:
            raise AssertionError(f"{self!r} does not train: mean loss {first:.4f} over the "
                                 f"first {window} steps, {last:.4f} over the last {window}")
        self.info["verify"] = {"steps": steps, "first_loss": first, "last_loss": last}
        return losses


def _count_kernel_calls(runner, batch):
    """Run one step with both kernel tables instrumented; calls per backend."""
    from . import _kernels

    counts = {}
    saved = {}
    for name in ("numpy", "cython"):
        try:
            tab = _kernels.table(name)
        except ImportError:
            continue
        saved[name] = dict(tab)
        counts[name] = 0

        def wrap(fn, name=name):
            def counted(*a, **k):
                counts[name] += 1
                return fn(*a, **k)
            return counted
        for key, fn in saved[name].items():
            tab[key] = wrap(fn)
    try:
        with runner.context():
            runner.train(*batch)
    finally:
        for name, original in saved.items():
            _kernels.table(name).update(original)
    return counts


def _describe_zerodl(runner, batch, backend):
    from . import _kernels

    info = {"backend": backend, "dtype": runner.dtype.name, "optimizer": "zerodl Adam",
            "threads": current_threads()}
    if backend == "cython":
        info["fallbacks"] = list(_kernels.fallbacks())
        info["build"] = _kernels.build_info().get("variant")
    counts = _count_kernel_calls(runner, batch)
    info["kernel_calls"] = counts
    wrong = {k: v for k, v in counts.items() if k != backend and v}
    if wrong:
        raise RuntimeError(f"a step on backend {backend!r} called kernels of {wrong}")
    return info


def zerodl_step(model: str, backend: str = "cython", dtype=np.float32,
                batch_size: int = BATCH_SIZE, seed: int = 0, variant: str | None = None,
                check_backend: bool = True) -> Step:
    """zerodl's ``net.train_step`` with Adam on ``backend`` ('cython' or 'numpy')."""
    _check_model(model)
    variant = variant or f"zerodl-{backend}"
    x, t = random_batch(model, batch_size, seed)

    def build(check=False):
        runner = _ZerodlRunner(model, backend, dtype, seed)
        batch = runner.prepare(x, t)
        info = (_describe_zerodl(runner, batch, backend) if check else
                {"backend": backend, "dtype": runner.dtype.name})
        if check:  # the instrumented step trained once: start from fresh weights
            runner = _ZerodlRunner(model, backend, dtype, seed)
        info.update(model=model, variant=variant, batch_size=batch_size,
                    flops=step_flops(model, batch_size))
        return Step(model, variant, runner, batch, info, build)

    return build(check_backend)


def book_step(model: str, batch_size: int = BATCH_SIZE, seed: int = 0) -> Step:
    """The book stand-in: zerodl's NumPy reference backend in float64 (see module doc)."""
    step = zerodl_step(model, "numpy", np.float64, batch_size, seed, variant=BOOK)
    step.info["note"] = "NumPy reference kernels, float64: the book's algorithms"
    return step


def _time_interleaved(fns: dict, rounds: int, warmup: int) -> dict:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    keys = list(fns)
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def torch_step(model: str, adam: str = "best", compile: bool = False,
               batch_size: int = BATCH_SIZE, seed: int = 0, calibration_rounds: int = 15
               ) -> Step:
    """PyTorch float32 eager (or ``compile=True``: torch.compile) with torch.optim.Adam.

    ``adam``: 'default', 'foreach', 'fused', or 'best' (the three timed interleaved for
    ``calibration_rounds`` rounds and the fastest kept; compile uses 'fused' then).
    """
    _check_model(model)
    torch = _import_torch()
    variant = "torch-compile" if compile else "torch-eager"
    x, t = random_batch(model, batch_size, seed)
    info = {"model": model, "variant": variant, "backend": "torch " + torch.__version__,
            "dtype": "float32", "threads": torch.get_num_threads(),
            "batch_size": batch_size, "flops": step_flops(model, batch_size)}
    if adam == "best" and compile:
        adam = "fused"
    if adam == "best":
        runners = {a: _TorchRunner(model, seed, a) for a in _TORCH_ADAM}
        batches = {a: r.prepare(x, t) for a, r in runners.items()}
        medians = _time_interleaved(
            {a: (lambda r=r, b=batches[a]: r.train(*b)) for a, r in runners.items()},
            calibration_rounds, warmup=3)
        adam = min(medians, key=medians.get)
        info["adam_candidates_ms"] = {a: round(m * 1e3, 3) for a, m in medians.items()}
    info["adam"] = adam
    info["optimizer"] = f"torch.optim.Adam ({adam})"

    def build(first=False):
        runner = _TorchRunner(model, seed, adam, compile)
        batch = runner.prepare(x, t)
        if compile:  # compiling happens on the first calls: do them here, untimed
            t0 = time.perf_counter()
            try:
                runner.train(*batch)
                t1 = time.perf_counter()
                runner.train(*batch)  # a recompile would show here
            except Exception as exc:  # noqa: BLE001
                raise Unavailable(f"torch.compile failed: {type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
            if first:
                info["compile_s"] = round(t1 - t0, 2)
                info["second_call_s"] = round(time.perf_counter() - t1, 4)
                info["compile_cache"] = _compile_cache_counts()
            # those calls trained: restart from the initial weights, keep the compiled code
            fresh = _torch_net(torch, model, seed)
            runner.net.load_state_dict(fresh.state_dict())
            runner.optimizer.state.clear()
        return Step(model, variant, runner, batch, info if first else dict(info),
                    build)

    return build(first=True)


def _compile_cache_counts() -> dict:
    """Inductor/AOT cache hits and misses so far: a warm on-disk cache (an earlier run
    compiled the same graphs) makes compile_s much shorter than a cold compile."""
    try:
        from torch._dynamo.utils import counters
    except Exception:  # noqa: BLE001 - private API, informational only
        return {}
    out = {}
    for section in ("inductor", "aot_autograd"):
        for key, n in counters.get(section, {}).items():
            if "cache" in key:
                out[key] = n
    return out


def variants_for(model: str, variants=None, compile_models=("mlp",)) -> list[str]:
    """The variants run for ``model``: all of :data:`VARIANTS` (or those asked for),
    with torch-compile only for ``compile_models``."""
    chosen = list(variants or VARIANTS)
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    return [v for v in chosen if v != "torch-compile" or model in compile_models]


def make_step(model: str, variant: str, batch_size: int = BATCH_SIZE, seed: int = 0) -> Step:
    """The :class:`Step` of one variant (see :data:`VARIANTS`); raises
    :class:`Unavailable` when it cannot run here."""
    _check_model(model)
    if variant == "zerodl-cython":
        return zerodl_step(model, "cython", np.float32, batch_size, seed)
    if variant == "zerodl-numpy":
        return zerodl_step(model, "numpy", np.float32, batch_size, seed)
    if variant == BOOK:
        return book_step(model, batch_size, seed)
    if variant == "torch-eager":
        return torch_step(model, "best", False, batch_size, seed)
    if variant == "torch-compile":
        return torch_step(model, "fused", True, batch_size, seed)
    raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


# ------------------------------------------------------------------ comparison

def _log(log, msg):
    if log:
        log(msg)


def machine_info() -> dict:
    import zerodl
    info = {"python": platform.python_version(), "numpy": np.__version__,
            "zerodl": zerodl.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count(), "threads": current_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if "torch" in sys.modules:
        info["torch"] = sys.modules["torch"].__version__
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    info["thread_pools"] = thread_pools()
    info["env"] = {k: v for k, v in os.environ.items()
                   if k.startswith(("OMP_", "GOMP_", "OPENBLAS_", "MKL_", "ZERODL_"))}
    try:
        from . import _kernels
        info["zerodl_build"] = _kernels.build_info()
    except Exception:  # noqa: BLE001 - informational
        pass
    return info


def compare(models=("mlp", "convnet"), repeats: int = 20, warmup: int = 3, variants=None,
            threads: int | None = DEFAULT_THREADS, batch_size: int = BATCH_SIZE,
            seed: int = 0, block_seconds: float = 0.05, pause: float = 0.12,
            verify: bool = False, compile_models=("mlp",), log=None) -> dict:
    """Time the variants of each model in this process, interleaved.

    For each model every variant is built (unavailable ones are recorded with the reason),
    warmed up ``warmup`` times, then ``repeats`` rounds run each variant in turn (the first
    one rotating from round to round), each a block of ``k`` iterations lasting about
    ``block_seconds`` (k >= 1, from a calibration step); a block's time / k is one sample.
    ``pause`` seconds between blocks let the spinning threads of the previous library park
    (OpenBLAS's workers spin ~0.1 s after a GEMM; a 2 ms pause left PyTorch's MLP blocks
    sharing the cores with them: median 17 ms, minimum 2.8 ms).

    Returns ``{"machine": ..., "settings": ..., "models": {model: {variant: {...}}}}``
    where each variant has ``median_ms``, ``q1_ms``, ``q3_ms``, ``min_ms``, ``samples_ms``
    (wall clock), ``cpu_median_ms`` (CPU time of the whole process, all its threads, per
    iteration: less sensitive to waiting for a core on a loaded host, but it counts the
    spinning of idle OpenMP/BLAS threads),
    ``iterations_per_block``, ``info``, ``speedup_vs_torch`` (torch-eager median / this
    median: > 1 means faster than PyTorch eager) and ``speedup_vs_book`` (likewise against
    book-float64); or ``{"skipped": reason}``.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    configure_threads(threads)
    try:
        load_start = os.getloadavg()
    except OSError:
        load_start = None
    out = {"machine": None, "settings": {
        "repeats": repeats, "warmup": warmup, "threads": current_threads(),
        "batch_size": batch_size, "seed": seed, "block_seconds": block_seconds,
        "pause": pause, "method": "interleaved round-robin in one process; median of "
                                  "per-iteration block means"},
        "models": {}}
    for model in models:
        _check_model(model)
        steps, res = {}, {}
        for v in variants_for(model, variants, compile_models):
            _log(log, f"[{model}] building {v}")
            try:
                steps[v] = make_step(model, v, batch_size, seed)
            except Unavailable as exc:
                res[v] = {"skipped": str(exc)}
                _log(log, f"[{model}] {v} skipped: {exc}")
        if verify:
            for v, s in steps.items():
                _log(log, f"[{model}] verifying {v}")
                s.verify()
        inner = {}
        for v, s in steps.items():
            for _ in range(warmup):
                s()
            t0 = time.perf_counter()
            s()
            dt = time.perf_counter() - t0
            inner[v] = max(1, min(100, round(block_seconds / max(dt, 1e-9))))
        samples = {v: [] for v in steps}
        cpu = {v: [] for v in steps}
        order = list(steps)
        last_loss = {}
        gc.collect()
        for r in range(repeats):
            k = r % max(len(order), 1)
            for v in order[k:] + order[:k]:
                s, n = steps[v], inner[v]
                c0, t0 = time.process_time(), time.perf_counter()
                for _ in range(n):
                    loss = s()
                samples[v].append((time.perf_counter() - t0) / n)
                cpu[v].append((time.process_time() - c0) / n)
                last_loss[v] = float(loss)
                if pause:
                    time.sleep(pause)
            _log(log, f"[{model}] round {r + 1}/{repeats}")
        for v in order:
            ms = sorted(x * 1e3 for x in samples[v])
            q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
            res[v] = {"median_ms": statistics.median(ms), "q1_ms": q[0], "q3_ms": q[2],
                      "min_ms": ms[0], "samples_ms": [x * 1e3 for x in samples[v]],
                      "cpu_median_ms": statistics.median(cpu[v]) * 1e3,
                      "iterations_per_block": inner[v], "last_loss": last_loss[v],
                      "info": _jsonable(steps[v].info)}
            if not math.isfinite(last_loss[v]):
                res[v]["warning"] = "non-finite loss"
        _add_speedups(res)
        out["models"][model] = {v: res[v] for v in variants_for(model, variants,
                                                                compile_models) if v in res}
        del steps
        gc.collect()
    out["machine"] = machine_info()
    out["machine"]["load_average_start"] = load_start
    return out


def _add_speedups(res: dict, key: str = "median_ms"):
    ref = res.get(REFERENCE, {}).get(key)
    book = res.get(BOOK, {}).get(key)
    for r in res.values():
        if key not in r:
            continue
        r["speedup_vs_torch"] = ref / r[key] if ref else None
        r["speedup_vs_book"] = book / r[key] if book else None


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


# ------------------------------------------------------------------ one epoch of MNIST

def _runner(model, variant, seed):
    if variant == "zerodl-cython":
        return _ZerodlRunner(model, "cython", np.float32, seed)
    if variant == "zerodl-numpy":
        return _ZerodlRunner(model, "numpy", np.float32, seed)
    if variant == BOOK:
        return _ZerodlRunner(model, "numpy", np.float64, seed)
    if variant == "torch-eager":
        return _TorchRunner(model, seed, "fused")
    if variant == "torch-compile":
        return _TorchRunner(model, seed, "fused", compile=True)
    raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


def load_mnist_for(model: str, download: bool = True):
    """((x_train, t_train), (x_test, t_test)) as float32 images shaped for ``model``."""
    from .datasets import load_mnist
    _check_model(model)
    return load_mnist(normalize=True, flatten=(model == "mlp"), dtype=np.float32,
                      download=download)


class EpochRun:
    """A prepared epoch: ``run()`` trains ``iterations`` mini-batches of shuffled MNIST
    and returns the losses; built outside the timing (data conversion, model, order)."""

    def __init__(self, model, variant, iterations=600, batch_size=BATCH_SIZE, seed=0,
                 data=None, download=True, torch_adam="fused"):
        _check_model(model)
        self.model, self.variant = model, variant
        self.iterations, self.batch_size = iterations, batch_size
        (x, t), (self._x_test, self._t_test) = data or load_mnist_for(model, download)
        self.runner = _runner(model, variant, seed)
        if isinstance(self.runner, _TorchRunner) and torch_adam != "fused":
            self.runner = _TorchRunner(model, seed, torch_adam,
                                       compile=(variant == "torch-compile"))
        self.x, self.t = self.runner.prepare(x, t)
        rng = np.random.default_rng(seed)
        need = iterations * batch_size
        order = np.concatenate([rng.permutation(len(t))
                                for _ in range(-(-need // len(t)))])[:need]
        self.batches = order.reshape(iterations, batch_size).astype(np.int64)
        self.seconds = None
        self.losses = None

    def run(self) -> list[float]:
        runner, x, t = self.runner, self.x, self.t
        gather, train = runner.gather, runner.train
        losses = []
        t0 = time.perf_counter()
        with runner.context():
            for idx in self.batches:
                xb, tb = gather(x, t, idx)
                losses.append(train(xb, tb))
        self.seconds = time.perf_counter() - t0
        self.losses = [float(v) for v in losses]
        return self.losses

    def test_accuracy(self) -> float:
        x, t = self.runner.prepare(self._x_test, self._t_test)
        return self.runner.accuracy(x, t)

    def summary(self, evaluate=True) -> dict:
        n = max(1, min(50, len(self.losses or []) // 4))
        out = {"model": self.model, "variant": self.variant, "iterations": self.iterations,
               "batch_size": self.batch_size, "seconds": self.seconds,
               "ms_per_iteration": self.seconds / self.iterations * 1e3,
               "first_loss": statistics.fmean(self.losses[:n]),
               "last_loss": statistics.fmean(self.losses[-n:]),
               "threads": current_threads()}
        if evaluate:
            out["test_accuracy"] = self.test_accuracy()
        return out


def time_epoch(model: str, variant: str, iterations: int = 600, batch_size: int = BATCH_SIZE,
               seed: int = 0, evaluate: bool = True, data=None, download=True) -> dict:
    """Time ``iterations`` (default 600 = one MNIST epoch) training steps on shuffled
    MNIST, batch gathering included, model building and data conversion excluded.
    Returns seconds, ms per iteration, the mean loss of the first and last 50 steps and
    (``evaluate``) the test accuracy after the epoch (computed untimed)."""
    run = EpochRun(model, variant, iterations, batch_size, seed, data, download)
    run.run()
    return run.summary(evaluate)


def compare_epochs(models=("mlp", "convnet"), variants=None, iterations=600,
                   threads=DEFAULT_THREADS, seed=0, log=None) -> dict:
    """:func:`time_epoch` for each model and variant (sequential, one process; torch-compile
    left out).  Returns ``{model: {variant: summary}}`` with speedups as in compare."""
    configure_threads(threads)
    out = {}
    for model in models:
        data = load_mnist_for(model)
        res = {}
        for v in variants_for(model, variants, compile_models=()):
            _log(log, f"[epoch {model}] {v}")
            try:
                res[v] = time_epoch(model, v, iterations, seed=seed, data=data)
            except Unavailable as exc:
                res[v] = {"skipped": str(exc)}
        _add_speedups(res, key="seconds")
        out[model] = res
    return out


# ------------------------------------------------------------------ peak memory

def _memory_snapshot() -> dict:
    """ru_maxrss (getrusage, KiB on Linux) and VmHWM / VmRSS (/proc, Linux) in MB."""
    import resource

    out = {"ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key, value = line.split(":", 1)
                    out[key.lower() + "_mb"] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def _memory_child(variant, model, iterations, seed):
    """Entry point of the subprocess of :func:`peak_rss`: prints one JSON line."""
    configure_threads(current_threads())
    if variant.startswith("torch"):
        _import_torch()  # so that "after imports" includes the library, as for zerodl
    start = _memory_snapshot()
    run = EpochRun(model, variant, iterations, seed=seed)
    setup = _memory_snapshot()
    run.run()
    end = _memory_snapshot()
    print(json.dumps({"variant": variant, "model": model, "iterations": iterations,
                      "seconds": run.seconds,
                      "peak_rss_mb": end["ru_maxrss_mb"], "vmhwm_mb": end.get("vmhwm_mb"),
                      "maxrss_after_imports_mb": start["ru_maxrss_mb"],
                      "maxrss_after_setup_mb": setup["ru_maxrss_mb"],
                      "snapshots": {"imports": start, "setup": setup, "end": end},
                      "last_loss": statistics.fmean(run.losses[-50:]),
                      "threads": current_threads(),
                      "torch_imported": "torch" in sys.modules}))


def peak_rss(variant: str, model: str = "convnet", iterations: int = 600, seed: int = 0,
             threads: int | None = None, timeout: float = 3600) -> dict:
    """Peak resident set size of a 1-epoch training run in a fresh Python process.

    The child loads MNIST (float32), builds the model, trains ``iterations`` steps and
    reads ``getrusage(RUSAGE_SELF).ru_maxrss`` (``peak_rss_mb``) and, on Linux, VmHWM
    from /proc (``vmhwm_mb``; the two agree); the peaks after the imports and after the
    setup (data + model) are reported too, so library size and training working set can
    be told apart.

    The child is started through ``/bin/sh``, not forked from this process directly: on
    Linux a process forked from a big parent and exec'd inherits the parent's RSS
    high-water mark into its ru_maxrss (the forked copy of the parent's address space
    counts at exec), which would report this process's size, not the child's.
    """
    n = threads or current_threads()
    env = dict(os.environ, ZERODL_NUM_THREADS=str(n), OMP_NUM_THREADS=str(n),
               OPENBLAS_NUM_THREADS=str(n))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "zerodl.benchmarks", "--memory-child", variant, model,
           str(iterations), str(seed), str(n)]
    if os.path.exists("/bin/sh"):  # sh forks the child (no exec: a command follows)
        cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh"] + cmd
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        if "Unavailable" in proc.stderr:
            raise Unavailable(tail[0])
        raise RuntimeError(f"memory run of {variant} failed: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ output

def _fmt(v, spec=".2f", none="-", suffix=""):
    return none if v is None else format(v, spec) + suffix


def markdown_table(result: dict) -> str:
    """The comparison of :func:`compare` as a markdown table."""
    lines = ["| model | variant | median ms | min ms | IQR ms | CPU ms | vs PyTorch eager "
             "| vs book | notes |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for model, res in result["models"].items():
        for v, r in res.items():
            if "skipped" in r:
                lines.append(f"| {model} | {v} | - | - | - | - | - | - | "
                             f"skipped: {r['skipped']} |")
                continue
            info = r.get("info", {})
            notes = []
            if info.get("adam"):
                notes.append(f"Adam {info['adam']}")
            if info.get("compile_s") is not None:
                cache = info.get("compile_cache") or {}
                warm = cache.get("fxgraph_cache_hit") or cache.get("autograd_cache_hit")
                notes.append(f"compile {info['compile_s']:.1f} s" +
                             (" (warm inductor cache)" if warm else ""))
            if info.get("fallbacks"):
                notes.append(f"{len(info['fallbacks'])} kernels from NumPy")
            if r.get("warning"):
                notes.append(r["warning"])
            lines.append(
                f"| {model} | {v} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | "
                f"{r['q1_ms']:.2f}-{r['q3_ms']:.2f} | {_fmt(r.get('cpu_median_ms'))} | "
                f"{_fmt(r.get('speedup_vs_torch'), suffix='x')} | "
                f"{_fmt(r.get('speedup_vs_book'), suffix='x')} | {'; '.join(notes)} |")
    lines.append("")
    lines.append("vs X = median of X / median of this variant (> 1: faster than X); "
                 "CPU ms: median process CPU time per iteration (all threads).")
    return "\n".join(lines)


def epoch_table(epochs: dict) -> str:
    lines = ["| model | variant | epoch s | ms/iter | vs PyTorch eager | vs book | "
             "mean loss start->end | test acc |", "|---|---|---:|---:|---:|---:|---|---:|"]
    for model, res in epochs.items():
        for v, r in res.items():
            if "skipped" in r:
                lines.append(f"| {model} | {v} | - | - | - | - | skipped: {r['skipped']} | - |")
                continue
            lines.append(
                f"| {model} | {v} | {r['seconds']:.2f} | {r['ms_per_iteration']:.2f} | "
                f"{_fmt(r.get('speedup_vs_torch'), suffix='x')} | "
                f"{_fmt(r.get('speedup_vs_book'), suffix='x')} | "
                f"{r['first_loss']:.3f} -> {r['last_loss']:.3f} | "
                f"{_fmt(r.get('test_accuracy'), '.4f')} |")
    return "\n".join(lines)


def memory_table(mem: dict) -> str:
    lines = ["| variant | peak RSS MB (ru_maxrss) | VmHWM MB | after imports MB | "
             "after data+model MB | training adds MB | epoch s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for v, r in mem.items():
        if "skipped" in r or "error" in r:
            lines.append(f"| {v} | - | - | - | - | - | {r.get('skipped') or r.get('error')} |")
            continue
        lines.append(f"| {v} | {r['peak_rss_mb']:.0f} | {_fmt(r.get('vmhwm_mb'), '.0f')} | "
                     f"{r['maxrss_after_imports_mb']:.0f} | "
                     f"{r['maxrss_after_setup_mb']:.0f} | "
                     f"{r['peak_rss_mb'] - r['maxrss_after_setup_mb']:.0f} | "
                     f"{r['seconds']:.1f} |")
    return "\n".join(lines)


_COLORS = {"zerodl-cython": "C0", "zerodl-numpy": "C9", "book-float64": "C7",
           "torch-eager": "C3", "torch-compile": "C1"}


def format_ms(ms: float) -> str:
    """A duration given in ms, in the unit that reads best."""
    if ms >= 1000:
        return f"{ms / 1000:.3g} s"
    if ms >= 1:
        return f"{ms:.3g} ms"
    return f"{ms * 1000:.3g} us"


def bar_chart(groups: dict, title: str = "", ylabel: str = "median time (ms)",
              annotate: dict | None = None, log_scale: bool | None = None):
    """A grouped bar chart (a ``matplotlib.figure.Figure``): ``groups`` maps a group name
    to ``{variant: value}``; ``annotate`` (same shape) gives a text shown above each bar.
    Each group shows only its own variants, in the order of :data:`VARIANTS` then of
    appearance, one colour per variant.  The y axis is logarithmic when values span more
    than 20x (or ``log_scale``)."""
    from .plotting import new_figure

    seen = [v for vals in groups.values() for v in vals]
    variants = [v for v in VARIANTS if v in seen]
    variants += [v for v in dict.fromkeys(seen) if v not in variants]
    n_groups = max(len(groups), 1)
    widest = max([sum(1 for v in vals if vals[v]) for vals in groups.values()] or [1])
    fig = new_figure(figsize=(max(6.0, 1.5 + n_groups * (0.4 + 0.42 * widest)), 5.2))
    ax = fig.subplots()
    width = 0.8 / max(widest, 1)
    values = [x for vals in groups.values() for x in vals.values() if x]
    if log_scale is None:
        log_scale = bool(values) and max(values) / min(values) > 20
    colors = {v: _COLORS.get(v, f"C{(i + 4) % 10}") for i, v in enumerate(variants)}
    labelled = set()
    for g, (name, vals) in enumerate(groups.items()):
        present = [v for v in variants if vals.get(v)]
        for i, v in enumerate(present):
            x = g - width * len(present) / 2 + width * (i + 0.5)
            bar = ax.bar([x], [vals[v]], width=width * 0.92, color=colors[v],
                         label=None if v in labelled else v)[0]
            labelled.add(v)
            text = (annotate or {}).get(name, {}).get(v, "")
            if text:
                ax.annotate(text, (x, bar.get_height()), ha="center", va="bottom",
                            fontsize=7, rotation=90, xytext=(0, 2),
                            textcoords="offset points")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(list(groups), rotation=20 if n_groups > 4 else 0,
                       ha="right" if n_groups > 4 else "center")
    ax.set_xlim(-0.6, n_groups - 0.4)
    if log_scale:
        ax.set_yscale("log")
    if values:  # head room for the rotated labels above the bars
        top, bottom = max(values), min(values)
        if log_scale:
            span = max(top / bottom, 10.0)
            ax.set_ylim(bottom / 2, top * span ** (0.45 if annotate else 0.1))
        else:
            ax.set_ylim(0, top * (1.6 if annotate else 1.1))
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: variants.index(labels[i]))
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8,
              loc="upper left")
    if title:
        ax.set_title(title)
    return fig


def comparison_chart(result: dict, title: str | None = None):
    """Bar chart of :func:`compare`'s medians, annotated with the speedup vs torch-eager."""
    groups, notes = {}, {}
    for model, res in result["models"].items():
        groups[model] = {v: r["median_ms"] for v, r in res.items() if "median_ms" in r}
        notes[model] = {v: (format_ms(r["median_ms"]) +
                            (f" ({r['speedup_vs_torch']:.2f}x)"
                             if r.get("speedup_vs_torch") else ""))
                        for v, r in res.items() if "median_ms" in r}
    threads = result.get("settings", {}).get("threads")
    title = title or (f"One training iteration, batch {result['settings']['batch_size']}, "
                      f"{threads} thread{'s' if threads != 1 else ''} (x: speedup vs torch-eager)")
    return bar_chart(groups, title=title, annotate=notes)


# ------------------------------------------------------------------ subprocess entry

def _main(argv):
    if len(argv) >= 1 and argv[0] == "--memory-child":
        variant, model, iterations, seed, threads = argv[1:6]
        configure_threads(int(threads))
        _memory_child(variant, model, int(iterations), int(seed))
        return 0
    from .cli import main
    return main(["bench"] + list(argv))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
