"""im2col, col2im, convolution and pooling: NumPy reference vs Cython vs PyTorch (if installed).

Run: pytest bench/test_bench_conv.py --benchmark-only --benchmark-columns=min,median,rounds
Each group ("<kernel> <shape>") holds the backends side by side; compare them within one
run (absolute times drift with the load of a shared machine).  Shapes are the ANCHORS
ones (float32).  zerodl runs on get_num_threads() threads, PyTorch on as many, at most 2.

On a loaded machine, multi-threaded wall-clock times of every backend swing by 10x (a
descheduled thread stalls the whole parallel region); compare the work done on one
thread instead, in CPU time of the calling thread:
  ZERODL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 pytest bench/test_bench_conv.py \
      --benchmark-only --benchmark-timer=time.thread_time
"""
import numpy as np
import pytest

import zerodl
from zerodl._kernels import cython_available, table

try:
    import torch
except ImportError:
    torch = None
else:
    torch.set_num_threads(min(2, zerodl.get_num_threads()))

BACKENDS = [
    "numpy",
    pytest.param("cython", marks=pytest.mark.skipif(not cython_available(),
                                                    reason="cython kernels not built")),
    pytest.param("torch", marks=pytest.mark.skipif(torch is None, reason="torch not installed")),
]

# name -> (N, C, H, W, filters, kernel size, pad); stride 1.
CONV_SHAPES = {
    "100x1x28x28 k5": (100, 1, 28, 28, 30, 5, 0),
    "32x64x14x14 k3 p1": (32, 64, 14, 14, 64, 3, 1),
}
# name -> (N, C, H, W, pool, stride): SimpleConvNet's pooling layer and a deeper one.
POOL_SHAPES = {
    "100x30x24x24 p2": (100, 30, 24, 24, 2, 2),
    "32x64x14x14 p3 s2": (32, 64, 14, 14, 3, 2),
}
DTYPE = np.float32


def _setup(benchmark, kernel, shape, backend, **work):
    """Group, threads and dtype, and the work of one call for report.py's roofline
    columns: ``flops`` (the GEMMs' 2*multiply-adds) or ``bytes`` (the least memory the
    kernel must read and write)."""
    benchmark.group = f"{kernel} {shape}"
    benchmark.extra_info["threads"] = (torch.get_num_threads() if backend == "torch"
                                       else zerodl.get_num_threads())
    benchmark.extra_info["dtype"] = np.dtype(DTYPE).name
    benchmark.extra_info.update(work)


_ITEM = np.dtype(DTYPE).itemsize
_INDEX = np.dtype(np.intp).itemsize     # an argmax entry


def _conv_work(shape):
    """(multiply-adds of one convolution's GEMM, input elements, col elements)."""
    n, c, h, w, f, k, p = CONV_SHAPES[shape]
    oh, ow = h + 2 * p - k + 1, w + 2 * p - k + 1
    return n * f * c * k * k * oh * ow, n * c * h * w, n * oh * ow * c * k * k


def _pool_bytes(shape, argmax=False):
    """Bytes one pooling reads and writes: input and output planes, and with max
    pooling's argmax an index per output."""
    n, c, h, w, k, s = POOL_SHAPES[shape]
    outs = n * c * ((h - k) // s + 1) * ((w - k) // s + 1)
    return (n * c * h * w + outs) * _ITEM + (outs * _INDEX if argmax else 0)


def _conv_data(shape):
    n, c, h, w, f, k, p = CONV_SHAPES[shape]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(DTYPE)
    W = rng.standard_normal((f, c, k, k)).astype(DTYPE) * 0.1
    b = rng.standard_normal(f).astype(DTYPE)
    oh, ow = h + 2 * p - k + 1, w + 2 * p - k + 1
    dout = rng.standard_normal((n, f, oh, ow)).astype(DTYPE)
    return x, W, b, dout, k, p


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", list(CONV_SHAPES))
def test_im2col(benchmark, shape, backend):
    _, xs, cols = _conv_work(shape)
    _setup(benchmark, "im2col", shape, backend, bytes=(xs + cols) * _ITEM)
    x, W, b, dout, k, p = _conv_data(shape)
    if backend == "torch":
        tx = torch.from_numpy(x)
        benchmark(torch.nn.functional.unfold, tx, k, padding=p)
    else:
        benchmark(table(backend)["im2col"], x, k, k, 1, p)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", list(CONV_SHAPES))
def test_col2im(benchmark, shape, backend):
    _, xs, cols = _conv_work(shape)
    _setup(benchmark, "col2im", shape, backend, bytes=(xs + cols) * _ITEM)
    x, W, b, dout, k, p = _conv_data(shape)
    col = table("numpy")["im2col"](x, k, k, 1, p)
    if backend == "torch":
        n, c, h, w = x.shape
        # fold takes (N, C*k*k, L): the transpose of zerodl's rows, prepared untimed.
        tcol = torch.from_numpy(np.ascontiguousarray(col.reshape(n, -1, col.shape[1])
                                                     .transpose(0, 2, 1)))
        benchmark(torch.nn.functional.fold, tcol, (h, w), k, padding=p)
    else:
        benchmark(table(backend)["col2im"], col, x.shape, k, k, 1, p)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", list(CONV_SHAPES))
def test_conv_forward(benchmark, shape, backend):
    _setup(benchmark, "conv fwd", shape, backend, flops=2 * _conv_work(shape)[0])
    x, W, b, dout, k, p = _conv_data(shape)
    if backend == "torch":
        tx, tW, tb = map(torch.from_numpy, (x, W, b))

        def run():
            with torch.no_grad():
                return torch.nn.functional.conv2d(tx, tW, tb, padding=p)
        benchmark(run)
    else:
        benchmark(table(backend)["conv_forward"], x, W, b, 1, p)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", list(CONV_SHAPES))
def test_conv_backward(benchmark, shape, backend):
    _setup(benchmark, "conv bwd", shape, backend, flops=4 * _conv_work(shape)[0])
    x, W, b, dout, k, p = _conv_data(shape)
    if backend == "torch":
        tx = torch.from_numpy(x).requires_grad_(True)
        tW = torch.from_numpy(W).requires_grad_(True)
        tb = torch.from_numpy(b).requires_grad_(True)
        y = torch.nn.functional.conv2d(tx, tW, tb, padding=p)
        tdout = torch.from_numpy(dout)
        benchmark(torch.autograd.grad, y, (tx, tW, tb), tdout, retain_graph=True)
    else:
        col = table("numpy")["im2col"](x, k, k, 1, p)
        benchmark(table(backend)["conv_backward"], dout, col, x.shape, W, 1, p)


def _pool_data(shape):
    n, c, h, w, k, s = POOL_SHAPES[shape]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c, h, w)).astype(DTYPE)
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    dout = rng.standard_normal((n, c, oh, ow)).astype(DTYPE)
    return x, dout, k, s


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", list(POOL_SHAPES))
def test_maxpool_forward(benchmark, shape, backend):
    _setup(benchmark, "maxpool fwd", shape, backend, bytes=_pool_bytes(shape, argmax=True))
    x, dout, k, s = _pool_data(shape)
    if backend == "torch":
        tx = torch.from_numpy(x)

        def run():
            with torch.no_grad():
                return torch.nn.functional.max_pool2d(tx, k, s, return_indices=True)
        benchmark(run)
    else:
        benchmark(table(backend)["maxpool_forward"], x, k, k, s, 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", list(POOL_SHAPES))
def test_maxpool_backward(benchmark, shape, backend):
    _setup(benchmark, "maxpool bwd", shape, backend, bytes=_pool_bytes(shape, argmax=True))
    x, dout, k, s = _pool_data(shape)
    if backend == "torch":
        tx = torch.from_numpy(x).requires_grad_(True)
        y = torch.nn.functional.max_pool2d(tx, k, s)
        tdout = torch.from_numpy(dout)
        benchmark(torch.autograd.grad, y, (tx,), tdout, retain_graph=True)
    else:
        _, argmax = table("numpy")["maxpool_forward"](x, k, k, s, 0)
        benchmark(table(backend)["maxpool_backward"], dout, argmax, x.shape, k, k, s, 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", list(POOL_SHAPES))
def test_avgpool_forward(benchmark, shape, backend):
    _setup(benchmark, "avgpool fwd", shape, backend, bytes=_pool_bytes(shape))
    x, dout, k, s = _pool_data(shape)
    if backend == "torch":
        tx = torch.from_numpy(x)

        def run():
            with torch.no_grad():
                return torch.nn.functional.avg_pool2d(tx, k, s)
        benchmark(run)
    else:
        benchmark(table(backend)["avgpool_forward"], x, k, k, s, 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", list(POOL_SHAPES))
def test_avgpool_backward(benchmark, shape, backend):
    _setup(benchmark, "avgpool bwd", shape, backend, bytes=_pool_bytes(shape))
    x, dout, k, s = _pool_data(shape)
    if backend == "torch":
        tx = torch.from_numpy(x).requires_grad_(True)
        y = torch.nn.functional.avg_pool2d(tx, k, s)
        tdout = torch.from_numpy(dout)
        benchmark(torch.autograd.grad, y, (tx,), tdout, retain_graph=True)
    else:
        benchmark(table(backend)["avgpool_backward"], dout, x.shape, k, k, s, 0)


# The fused convolution + ReLU + 2x2 max pool of SimpleConvNet (and of DeepConvNet's
# second convolution of each pair), forward and backward, the first layer's way (no input
# gradient), against the three kernels in turn and PyTorch's three autograd ops.
FUSED_VARIANTS = [
    "numpy",
    pytest.param("cython-unfused", marks=pytest.mark.skipif(not cython_available(),
                                                            reason="cython kernels not built")),
    pytest.param("cython", marks=pytest.mark.skipif(not cython_available(),
                                                    reason="cython kernels not built")),
    pytest.param("torch", marks=pytest.mark.skipif(torch is None, reason="torch not installed")),
]


@pytest.mark.parametrize("variant", FUSED_VARIANTS)
@pytest.mark.parametrize("shape", list(CONV_SHAPES))
def test_conv_relu_pool_step(benchmark, shape, variant):
    # the forward's GEMM and dW's (no input gradient)
    _setup(benchmark, "conv+relu+pool fwd+bwd", shape, variant, flops=4 * _conv_work(shape)[0])
    x, W, b, _, k, p = _conv_data(shape)
    rng = np.random.default_rng(1)
    n, f, oh, ow = x.shape[0], W.shape[0], x.shape[2] + 2 * p - k + 1, x.shape[3] + 2 * p - k + 1
    dpool = rng.standard_normal((n, f, oh // 2, ow // 2)).astype(DTYPE)
    if variant == "torch":
        tx = torch.from_numpy(x)
        tW = torch.from_numpy(W).requires_grad_(True)
        tb = torch.from_numpy(b).requires_grad_(True)
        tdout = torch.from_numpy(dpool)

        def run():
            y = torch.nn.functional.conv2d(tx, tW, tb, padding=p)
            z = torch.nn.functional.max_pool2d(torch.relu(y), 2, 2)
            return torch.autograd.grad(z, (tW, tb), tdout)
    elif variant == "cython-unfused":
        ops = table("cython")

        def run():
            y, col = ops["conv_forward"](x, W, b, 1, p)
            r = ops["relu_forward"](y)
            z, arg = ops["maxpool_forward"](r, 2, 2, 2, 0)
            dr = ops["maxpool_backward"](dpool, arg, r.shape, 2, 2, 2, 0)
            dy = ops["relu_backward"](dr, r)
            return ops["conv_backward"](dy, col, x.shape, W, 1, p, False)
    else:
        ops = table(variant)

        def run():
            z, col, arg = ops["conv_relu_pool_forward"](x, W, b, 1, p, 2, 2, 2, 0)
            return ops["conv_relu_pool_backward"](dpool, z, arg, col, x.shape, W, 1, p, 2, 2,
                                                  2, 0, False)
    benchmark(run)
