"""Affine, batch norm, optimizer updates and the other dense kernels: NumPy reference vs
Cython vs PyTorch (when installed).

Run: pytest bench/test_bench_dense.py --benchmark-only --benchmark-columns=min,median,rounds
     [--benchmark-json out.json && python bench/report.py out.json --peak-gbs 26]
Each group ("<kernel> <shape>") holds the variants side by side; compare medians within
one run (absolute times drift with the load of a shared machine).  Shapes are the
ANCHORS ones, float32, on $ZERODL_BENCH_THREADS threads (default 2) for every library.

PyTorch is timed in each of its variants that applies, so that its best one is known:
affine as ``F.linear`` (weight in PyTorch's (out, in) layout) and ``addmm``, its backward
as the three products written out and through autograd; batch norm as
``F.batch_norm`` and its backward through autograd and as the bare
``native_batch_norm_backward``; optimizers as ``fused``, ``foreach`` and single-tensor
``torch.optim`` steps.  ``numpy-matmul`` is the bare GEMM time of affine, the floor
the compiled affine is held to.  Every benchmark records its work in ``extra_info`` for
report.py's roofline columns: ``flops`` (affine's GEMMs) or ``bytes`` (the least memory
a call must move: batch norm, optimizers, activations, softmax-CE, layer norm,
dropout); optimizer benchmarks also record ``gbs`` at the median after the run.
"""
import numpy as np
import pytest

from zerodl._kernels import cython_available, table

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

DTYPE = np.float32
NEEDS_CYTHON = pytest.mark.skipif(not cython_available(), reason="cython kernels not built")
NEEDS_TORCH = pytest.mark.skipif(torch is None, reason="torch not installed")


def _variants(*torch_names):
    return (["numpy", pytest.param("cython", marks=NEEDS_CYTHON)]
            + [pytest.param(t, marks=NEEDS_TORCH) for t in torch_names])


def _setup(benchmark, record_info, kernel, shape, variant, **info):
    benchmark.group = f"{kernel} {shape}"
    record_info(benchmark, variant=variant, dtype=np.dtype(DTYPE).name, **info)


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(DTYPE)


def _record_gbs(benchmark, nbytes):
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None and stats.stats.median:
        benchmark.extra_info["gbs"] = nbytes / stats.stats.median / 1e9


# ---------------------------------------------------------------- affine

AFFINE_SHAPES = {"100x784->100": (100, 784, 100), "256x1024->1024": (256, 1024, 1024)}


def _affine_data(shape):
    n, d, m = AFFINE_SHAPES[shape]
    rng = np.random.default_rng(0)
    return _rand(rng, n, d), _rand(rng, d, m), _rand(rng, m), _rand(rng, n, m)


@pytest.mark.parametrize("variant", _variants("torch", "torch-addmm") + ["numpy-matmul"])
@pytest.mark.parametrize("shape", list(AFFINE_SHAPES))
def test_affine_forward(benchmark, record_info, shape, variant):
    n, d, m = AFFINE_SHAPES[shape]
    _setup(benchmark, record_info, "affine fwd", shape, variant, flops=2 * n * d * m)
    x, W, b, _ = _affine_data(shape)
    if variant == "numpy-matmul":
        benchmark(np.matmul, x, W)
    elif variant == "torch":
        tx, tWt, tb = torch.from_numpy(x), torch.from_numpy(W.T.copy()), torch.from_numpy(b)
        with torch.no_grad():
            benchmark(F.linear, tx, tWt, tb)
    elif variant == "torch-addmm":
        tx, tW, tb = map(torch.from_numpy, (x, W, b))
        with torch.no_grad():
            benchmark(torch.addmm, tb, tx, tW)
    else:
        benchmark(table(variant)["affine_forward"], x, W, b)


@pytest.mark.parametrize("variant", _variants("torch", "torch-autograd") + ["numpy-matmul"])
@pytest.mark.parametrize("shape", list(AFFINE_SHAPES))
def test_affine_backward(benchmark, record_info, shape, variant):
    n, d, m = AFFINE_SHAPES[shape]
    _setup(benchmark, record_info, "affine bwd", shape, variant, flops=4 * n * d * m)
    x, W, b, dout = _affine_data(shape)
    if variant == "numpy-matmul":
        benchmark(lambda: (dout @ W.T, x.T @ dout))
    elif variant == "torch":
        # the three products in PyTorch's weight layout (out, in), no autograd
        tx, tWt, tdout = torch.from_numpy(x), torch.from_numpy(W.T.copy()), torch.from_numpy(dout)
        with torch.no_grad():
            benchmark(lambda: (tdout @ tWt, tdout.t() @ tx, tdout.sum(0)))
    elif variant == "torch-autograd":
        tx = torch.from_numpy(x).requires_grad_(True)
        tWt = torch.from_numpy(W.T.copy()).requires_grad_(True)
        tb = torch.from_numpy(b).requires_grad_(True)
        y = F.linear(tx, tWt, tb)
        tdout = torch.from_numpy(dout)
        benchmark(torch.autograd.grad, y, (tx, tWt, tb), tdout, retain_graph=True)
    else:
        benchmark(table(variant)["affine_backward"], dout, x, W)


# ---------------------------------------------------------------- batch norm

BN_SHAPES = {"100x100": (100, 100), "256x1024": (256, 1024), "1024x4096": (1024, 4096)}


def _bn_data(shape):
    n, d = BN_SHAPES[shape]
    rng = np.random.default_rng(0)
    return (_rand(rng, n, d), np.ones(d, DTYPE), np.zeros(d, DTYPE), np.zeros(d, DTYPE),
            np.ones(d, DTYPE), _rand(rng, n, d))


@pytest.mark.parametrize("variant", _variants("torch"))
@pytest.mark.parametrize("shape", list(BN_SHAPES))
def test_batchnorm_forward(benchmark, record_info, shape, variant):
    n, d = BN_SHAPES[shape]
    # reads x twice (statistics, normalisation), writes out and xhat
    _setup(benchmark, record_info, "batchnorm fwd", shape, variant, bytes=4 * n * d * 4)
    x, g, b, rm, rv, _ = _bn_data(shape)
    if variant == "torch":
        tx, tg, tb, trm, trv = map(torch.from_numpy, (x, g, b, rm, rv))
        with torch.no_grad():
            benchmark(F.batch_norm, tx, trm, trv, tg, tb, training=True, momentum=0.1,
                      eps=1e-6)
    else:
        benchmark(table(variant)["batchnorm_forward_train"], x, g, b, rm, rv, 0.9, 1e-6)


@pytest.mark.parametrize("variant", _variants("torch", "torch-native"))
@pytest.mark.parametrize("shape", list(BN_SHAPES))
def test_batchnorm_backward(benchmark, record_info, shape, variant):
    n, d = BN_SHAPES[shape]
    # reads dout and xhat twice (sums, dx), writes dx
    _setup(benchmark, record_info, "batchnorm bwd", shape, variant, bytes=5 * n * d * 4)
    x, g, b, rm, rv, dout = _bn_data(shape)
    if variant.startswith("torch"):
        tx = torch.from_numpy(x).requires_grad_(True)
        tg = torch.from_numpy(g).requires_grad_(True)
        tb = torch.from_numpy(b).requires_grad_(True)
        trm, trv, tdout = map(torch.from_numpy, (rm, rv, dout))
        if variant == "torch":
            y = F.batch_norm(tx, trm, trv, tg, tb, training=True, eps=1e-6)
            benchmark(torch.autograd.grad, y, (tx, tg, tb), tdout, retain_graph=True)
        else:
            with torch.no_grad():
                _, save_mean, save_invstd = torch.ops.aten.native_batch_norm(
                    tx, tg, tb, trm, trv, True, 0.1, 1e-6)
                benchmark(torch.ops.aten.native_batch_norm_backward, tdout, tx, tg, trm, trv,
                          save_mean, save_invstd, True, 1e-6, [True, True, True])
    else:
        _, xhat, inv_std = table("numpy")["batchnorm_forward_train"](x, g, b, rm, rv)
        benchmark(table(variant)["batchnorm_backward"], dout, xhat, g, inv_std)


# ---------------------------------------------------------------- affine + batch norm + ReLU
# One hidden block of the book's MLP with BatchNorm, forward and backward (with the input
# gradient): the fused kernels, the three kernels in turn, and PyTorch's three ops.

BLOCK_SHAPES = {"100x784->100": (100, 784, 100), "100x100->100": (100, 100, 100)}


@pytest.mark.parametrize("variant", ["numpy", pytest.param("cython-unfused", marks=NEEDS_CYTHON),
                                     pytest.param("cython", marks=NEEDS_CYTHON),
                                     pytest.param("torch", marks=NEEDS_TORCH)])
@pytest.mark.parametrize("shape", list(BLOCK_SHAPES))
def test_affine_bn_relu_step(benchmark, record_info, shape, variant):
    n, d, m = BLOCK_SHAPES[shape]
    _setup(benchmark, record_info, "affine+bn+relu fwd+bwd", shape, variant)
    rng = np.random.default_rng(0)
    x, W, b, dout = _rand(rng, n, d), _rand(rng, d, m) * 0.05, _rand(rng, m), _rand(rng, n, m)
    g, beta, rm, rv = np.ones(m, DTYPE), np.zeros(m, DTYPE), np.zeros(m, DTYPE), np.ones(m, DTYPE)
    if variant == "torch":
        tx = torch.from_numpy(x).requires_grad_(True)
        tW = torch.from_numpy(np.ascontiguousarray(W.T)).requires_grad_(True)
        tb, tg, tbeta = (torch.from_numpy(a).requires_grad_(True) for a in (b, g, beta))
        trm, trv, tdout = map(torch.from_numpy, (rm, rv, dout))

        def run():
            y = F.batch_norm(F.linear(tx, tW, tb), trm, trv, tg, tbeta, training=True,
                             eps=1e-6)
            return torch.autograd.grad(torch.relu(y), (tx, tW, tb, tg, tbeta), tdout)
    elif variant == "cython-unfused":
        ops = table("cython")

        def run():
            a = ops["affine_forward"](x, W, b)
            y, xhat, inv_std = ops["batchnorm_forward_train"](a, g, beta, rm, rv, 0.9, 1e-6)
            r = ops["relu_forward"](y)
            da, dg, dbeta = ops["batchnorm_backward"](ops["relu_backward"](dout, r), xhat, g,
                                                      inv_std)
            return ops["affine_backward"](da, x, W) + (dg, dbeta)
    else:
        ops = table(variant)

        def run():
            r, xhat, inv_std = ops["affine_bn_relu_forward"](x, W, b, g, beta, rm, rv, 0.9,
                                                             1e-6)
            return ops["affine_bn_relu_backward"](dout, r, xhat, g, inv_std, x, W)
    benchmark(run)


# ---------------------------------------------------------------- optimizers

OPT_SIZES = {"100k": 100_000, "1M": 1_000_000, "10M": 10_000_000}
# name -> (zerodl kernel, state arrays, hyperparameters, torch class and kwargs, arrays
# read + written per element by one step)
OPTIMIZERS = {
    "SGD": ("sgd_update", 0, (0.01,), ("SGD", dict(lr=0.01)), 3),
    "Momentum": ("momentum_update", 1, (0.01, 0.9), ("SGD", dict(lr=0.01, momentum=0.9)), 5),
    "AdaGrad": ("adagrad_update", 1, (0.01,), ("Adagrad", dict(lr=0.01)), 5),
    "RMSprop": ("rmsprop_update", 1, (0.01, 0.99), ("RMSprop", dict(lr=0.01, alpha=0.99)), 5),
    "Adam": ("adam_update", 2, (1e-3, 0.9, 0.999, 10), ("Adam", dict(lr=1e-3)), 7),
}
TORCH_OPT_VARIANTS = {"torch-fused": dict(fused=True), "torch-foreach": dict(foreach=True),
                      "torch-single": dict(foreach=False)}


@pytest.mark.parametrize("variant", _variants(*TORCH_OPT_VARIANTS))
@pytest.mark.parametrize("size", list(OPT_SIZES))
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_optimizer(benchmark, record_info, opt, size, variant):
    kernel, n_states, hyper, (torch_cls, torch_kw), arrays = OPTIMIZERS[opt]
    n = OPT_SIZES[size]
    nbytes = arrays * n * np.dtype(DTYPE).itemsize
    _setup(benchmark, record_info, opt, size, variant, bytes=nbytes)
    rng = np.random.default_rng(0)
    p, g = _rand(rng, n), _rand(rng, n)
    if variant.startswith("torch"):
        tp = torch.nn.Parameter(torch.from_numpy(p))
        tp.grad = torch.from_numpy(g)
        try:
            step = getattr(torch.optim, torch_cls)([tp], **torch_kw,
                                                   **TORCH_OPT_VARIANTS[variant]).step
            step()
        except (RuntimeError, TypeError, ValueError) as exc:
            pytest.skip(f"{variant} unavailable for {torch_cls}: {exc}")
        with torch.no_grad():
            benchmark(step)
    else:
        states = [[np.zeros(n, DTYPE)] for _ in range(n_states)]
        benchmark(table(variant)[kernel], [p], [g], *states, *hyper)
    _record_gbs(benchmark, nbytes)


# ---------------------------------------------------------------- the other dense kernels

OTHER_SHAPES = {"100x100": (100, 100), "256x1024": (256, 1024), "1024x4096": (1024, 4096)}


def _other_args(kernel, n, d, rng):
    x, dout = _rand(rng, n, d), _rand(rng, n, d)
    g, b = np.ones(d, DTYPE), np.zeros(d, DTYPE)
    ref = table("numpy")
    if kernel in ("relu_forward", "sigmoid_forward", "tanh_forward"):
        return (x,)
    if kernel.endswith("_backward") and kernel.split("_")[0] in ("relu", "sigmoid", "tanh"):
        return dout, ref[kernel.replace("backward", "forward")](x)
    if kernel == "softmax_cross_entropy_forward":
        return x, rng.integers(0, d, n)
    if kernel == "softmax_cross_entropy_backward":
        t = rng.integers(0, d, n)
        return ref["softmax_cross_entropy_forward"](x, t)[1], t
    if kernel == "layernorm_forward":
        return x, g, b
    if kernel == "layernorm_backward":
        _, xhat, inv_std = ref["layernorm_forward"](x, g, b)
        return dout, xhat, g, inv_std
    if kernel == "batchnorm_forward_infer":
        return x, g, b, np.zeros(d, DTYPE), np.ones(d, DTYPE)
    if kernel.startswith("dropout"):
        return x, rng.random((n, d)) < 0.5, 2.0
    raise KeyError(kernel)


OTHER_KERNELS = ("relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward",
                 "tanh_forward", "tanh_backward", "softmax_cross_entropy_forward",
                 "softmax_cross_entropy_backward", "layernorm_forward", "layernorm_backward",
                 "batchnorm_forward_infer", "dropout_forward", "dropout_backward")


# (n, d) arrays of float32 each kernel must read and write at the least: the roofline
# column's bytes (labels and per-feature vectors are left out; a dropout mask is one byte
# per element).
_ARRAYS_MOVED = {"relu_forward": 2, "sigmoid_forward": 2, "tanh_forward": 2,
                 "relu_backward": 3, "sigmoid_backward": 3, "tanh_backward": 3,
                 "softmax_cross_entropy_forward": 2, "softmax_cross_entropy_backward": 2,
                 "layernorm_forward": 3, "layernorm_backward": 3,
                 "batchnorm_forward_infer": 2, "dropout_forward": 2.25,
                 "dropout_backward": 2.25}


@pytest.mark.parametrize("variant", _variants())
@pytest.mark.parametrize("shape", list(OTHER_SHAPES))
@pytest.mark.parametrize("kernel", OTHER_KERNELS)
def test_dense_kernel(benchmark, record_info, kernel, shape, variant):
    n, d = OTHER_SHAPES[shape]
    _setup(benchmark, record_info, kernel.replace("_", " "), shape, variant,
           bytes=int(_ARRAYS_MOVED[kernel] * n * d * np.dtype(DTYPE).itemsize))
    args = _other_args(kernel, n, d, np.random.default_rng(0))
    benchmark(table(variant)[kernel], *args)
