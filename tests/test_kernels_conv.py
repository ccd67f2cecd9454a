"""The compiled im2col/convolution/pooling kernels against the NumPy reference.

The reference is the oracle for the compiled kernels (same shapes, dtypes, values, and
the same exception on bad input); the math (a direct convolution loop and the adjoint
identities of im2col/col2im and of the convolution) is the oracle for both.
"""
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zerodl._config
from zerodl._kernels import compiled_kernels, cython_available, cython_import_error, table

if not cython_available():
    pytest.skip(f"cython backend unavailable: {cython_import_error()}", allow_module_level=True)

REF = table("numpy")
CY = table("cython")

# In a debug build (ZERODL_CYTHON_DEBUG=1) an out-of-bounds index inside a noexcept nogil
# loop surfaces as an "unraisable" IndexError: make it fail the test.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")

CONV_KERNELS = ("im2col", "col2im", "conv_forward", "conv_backward")
POOL_KERNELS = ("maxpool_forward", "maxpool_backward", "avgpool_forward", "avgpool_backward")
FUSED_KERNELS = ("conv_relu_pool_forward", "conv_relu_pool_backward")
KERNELS = CONV_KERNELS + POOL_KERNELS + FUSED_KERNELS
BACKENDS = ("numpy", "cython")
DTYPES = (np.float32, np.float64)
# Relative to the largest magnitude of the expected array: GEMM and sum orders differ.
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}

# (N, C, H, W, FH, FW, stride, pad, FN): odd sizes, non-square filters, size-1 and empty
# batches, a filter as large as the padded input, windows lying wholly in the padding,
# and shapes large enough for the multi-threaded paths.
GEOMETRIES = [
    (3, 2, 7, 5, 3, 2, 1, 0, 4),
    (3, 2, 7, 5, 3, 2, 2, 1, 4),
    (3, 2, 7, 5, 3, 2, 3, 2, 4),
    (3, 2, 7, 5, 3, 2, 1, 2, 2),
    (3, 2, 7, 5, 3, 2, 2, 0, 3),
    (3, 2, 7, 5, 3, 2, 3, 1, 1),
    (1, 3, 6, 6, 3, 3, 1, 1, 2),
    (0, 2, 5, 5, 3, 3, 1, 1, 3),
    (2, 1, 1, 1, 1, 1, 1, 0, 1),
    (2, 2, 4, 3, 6, 5, 1, 1, 2),
    (2, 2, 1, 1, 2, 2, 2, 2, 2),
    (2, 3, 6, 7, 2, 2, 2, 0, 2),
    (1, 2, 5, 5, 5, 5, 1, 2, 2),
    (2, 2, 9, 8, 1, 4, 3, 1, 2),
    (16, 8, 16, 16, 3, 3, 1, 1, 8),
    (10, 16, 24, 24, 2, 2, 2, 0, 4),
]


def _id(g):
    conv = "N{}C{}H{}W{}-f{}x{}-s{}p{}-F{}".format(*g[:9])
    return conv + ("-pool{}x{}-s{}p{}".format(*g[9:]) if len(g) > 9 else "")


def out_hw(g):
    n, c, h, w, fh, fw, s, p, fn = g[:9]
    return (h + 2 * p - fh) // s + 1, (w + 2 * p - fw) // s + 1


# (pool_h, pool_w, pool_stride, pool_pad) of the fused kernels, appended to each of
# GEOMETRIES whose convolution output they fit (as is the whole output, a global pool):
# the usual 2x2/2, overlapping windows (stride < size) with and without padding, 1x1,
# and windows lying wholly in the padding (their maximum is -inf).
POOLS = [(2, 2, 2, 0), (3, 3, 2, 1), (2, 3, 1, 0), (3, 2, 3, 1), (2, 2, 1, 1), (1, 1, 1, 0),
         (2, 2, 3, 2)]


def _with_pools(geometries):
    cases = []
    for g in geometries:
        oh, ow = out_hw(g)
        for ph, pw, ps, pp in POOLS + [(oh, ow, 1, 0)]:
            if ph <= oh + 2 * pp and pw <= ow + 2 * pp:
                cases.append(g + (ph, pw, ps, pp))
    return cases


FUSED_GEOMETRIES = _with_pools(GEOMETRIES)
# Large enough for every kernel's multi-threaded path.
THREADED = (16, 8, 16, 16, 3, 3, 1, 1, 8, 3, 3, 2, 1)


def geometries_of(name):
    return FUSED_GEOMETRIES if name in FUSED_KERNELS else GEOMETRIES


def arguments(name, g, dtype, rng):
    """Positional arguments of kernel `name` at geometry g (outputs of forwards that a
    backward needs come from the reference).  The fused kernels take g + a pool."""
    n, c, h, w, fh, fw, s, p, fn = g[:9]
    oh, ow = out_hw(g)

    def rand(*shape):
        return rng.standard_normal(shape).astype(dtype)

    def grid(*shape):
        """Multiples of 1/8: every convolution sum is exact whatever its order, so the
        fused forward's maxima and argmax (ties included) do not depend on rounding."""
        return (np.round(rng.standard_normal(shape) * 8) / 8).astype(dtype)

    x = rand(n, c, h, w)
    if name in FUSED_KERNELS:
        x, W, b = grid(n, c, h, w), grid(fn, c, fh, fw), grid(fn)
        if name == "conv_relu_pool_forward":
            return [x, W, b, s, p, *g[9:]]
        out, col, argmax = REF["conv_relu_pool_forward"](x, W, b, s, p, *g[9:])
        return [rand(*out.shape), out, argmax, col, (n, c, h, w), W, s, p, *g[9:]]
    if name == "im2col":
        return [x, fh, fw, s, p]
    if name == "col2im":
        return [rand(n * oh * ow, c * fh * fw), (n, c, h, w), fh, fw, s, p]
    if name == "conv_forward":
        return [x, rand(fn, c, fh, fw), rand(fn), s, p]
    if name == "conv_backward":
        return [rand(n, fn, oh, ow), REF["im2col"](x, fh, fw, s, p), (n, c, h, w),
                rand(fn, c, fh, fw), s, p]
    if name in ("maxpool_forward", "avgpool_forward"):
        if x.size > 2:
            x.flat[::5] = x.flat[1]      # ties: the first maximum must win
        return [x, fh, fw, s, p]
    if name == "maxpool_backward":
        _, argmax = REF["maxpool_forward"](x, fh, fw, s, p)
        return [rand(n, c, oh, ow), argmax, (n, c, h, w), fh, fw, s, p]
    if name == "avgpool_backward":
        return [rand(n, c, oh, ow), (n, c, h, w), fh, fw, s, p]
    raise AssertionError(name)


def relayout(a, layout, rng):
    """The same values as a, laid out as asked (only float arrays are relaid)."""
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
        return a
    if layout == "strided":
        big = np.full(tuple(2 * d + 1 for d in a.shape), np.nan, dtype=a.dtype)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if layout == "transposed":
        perm = tuple(reversed(range(a.ndim)))
        return np.ascontiguousarray(a.transpose(perm)).transpose(perm)
    if layout == "unaligned" and a.size:
        # C-contiguous, but starting one byte into its buffer: not aligned to its items
        buf = np.zeros(a.nbytes + 8, np.uint8)
        u = np.ndarray(a.shape, a.dtype, buffer=buf, offset=1)
        u[...] = a
        assert not u.flags.aligned
        return u
    if layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    return a


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def assert_same(got, want, what=""):
    for g, e in zip(as_tuple(got), as_tuple(want), strict=True):
        assert g.shape == e.shape, what
        assert g.dtype == e.dtype, what
        if e.dtype.kind != "f":
            np.testing.assert_array_equal(g, e, err_msg=what)
            continue
        tol = TOL[e.dtype]
        finite = np.abs(e[np.isfinite(e)])        # max pooling passes -inf through
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol * scale, err_msg=what)


def copies(args):
    return [a.copy() if isinstance(a, np.ndarray) else a for a in args]


def assert_unchanged(args, before):
    for a, b in zip(args, before):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- agreement

def test_every_conv_and_pool_kernel_is_compiled():
    compiled = compiled_kernels()
    assert {name: compiled.get(name) for name in KERNELS} == {
        **{name: "conv" for name in CONV_KERNELS + FUSED_KERNELS},
        **{name: "pool" for name in POOL_KERNELS}}


@pytest.mark.parametrize("layout", ["contiguous", "strided", "transposed", "readonly",
                                    "unaligned"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", KERNELS)
def test_agrees_with_reference(name, dtype, layout):
    rng = np.random.default_rng(0)
    for g in geometries_of(name):
        args = [relayout(a, layout, rng) for a in arguments(name, g, dtype, rng)]
        before = copies(args)
        want = REF[name](*args)
        got = CY[name](*args)
        assert_same(got, want, f"{name} {_id(g)}")
        assert_unchanged(args, before)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_copies_are_exact(dtype):
    """Pure data movement has no rounding: im2col, the col of the convolutions, max
    pooling; nor has the fused forward where every sum is exact (arguments' grid data)."""
    rng = np.random.default_rng(1)
    for g in GEOMETRIES:
        n, c, h, w, fh, fw, s, p, fn = g
        x, W, b = arguments("conv_forward", g, dtype, rng)[:3]
        col = REF["im2col"](x, fh, fw, s, p)
        np.testing.assert_array_equal(CY["im2col"](x, fh, fw, s, p), col)
        np.testing.assert_array_equal(CY["conv_forward"](x, W, b, s, p)[1], col)
        for got, want in zip(CY["maxpool_forward"](x, fh, fw, s, p),
                             REF["maxpool_forward"](x, fh, fw, s, p)):
            np.testing.assert_array_equal(got, want)
    for g in FUSED_GEOMETRIES:
        args = arguments("conv_relu_pool_forward", g, dtype, rng)
        for got, want in zip(CY["conv_relu_pool_forward"](*args),
                             REF["conv_relu_pool_forward"](*args), strict=True):
            assert got.dtype == want.dtype, _id(g)
            np.testing.assert_array_equal(got, want, err_msg=_id(g))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_zero_filters_agree(dtype):
    """A convolution with no filters gives empty outputs and zero input gradients in
    both backends (the reference once failed reshaping an empty W with -1)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 5, 5)).astype(dtype)
    W, b = np.ones((0, 3, 3, 3), dtype), np.ones(0, dtype)
    for name, args in (("conv_forward", (x, W, b, 1, 1)),
                       ("conv_relu_pool_forward", (x, W, b, 1, 1, 2, 2, 2, 0))):
        want = REF[name](*args)
        assert_same(CY[name](*args), want, name)
        assert want[0].shape[1] == 0
    out, col = REF["conv_forward"](x, W, b, 1, 1)
    pooled, col, argmax = REF["conv_relu_pool_forward"](x, W, b, 1, 1, 2, 2, 2, 0)
    for name, args in (("conv_backward", (np.zeros_like(out), col, x.shape, W, 1, 1)),
                       ("conv_relu_pool_backward", (np.zeros_like(pooled), pooled, argmax,
                                                    col, x.shape, W, 1, 1, 2, 2, 2, 0))):
        want = REF[name](*args)
        assert_same(CY[name](*args), want, name)
        assert not want[0].any() and want[1].shape == W.shape


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_maxpool_special_values(dtype):
    """-inf, NaN and all-padding windows pick the same value and index as numpy.argmax."""
    x = np.array([[[[-np.inf, -np.inf, 1.0, np.nan],
                    [np.nan, 2.0, -np.inf, 3.0],
                    [0.0, -0.0, np.inf, np.inf],
                    [-np.inf, -np.inf, -np.inf, -np.inf]]]], dtype=dtype)
    for ph, pw, s, p in ((2, 2, 2, 0), (2, 2, 1, 1), (3, 3, 2, 2), (2, 2, 3, 2), (4, 4, 1, 3)):
        want = REF["maxpool_forward"](x, ph, pw, s, p)
        got = CY["maxpool_forward"](x, ph, pw, s, p)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("name,at", [("maxpool_backward", 1), ("conv_relu_pool_backward", 2)])
@pytest.mark.parametrize("argmax_dtype", [np.int8, np.uint16, np.int32, np.uint64])
def test_maxpool_backward_takes_any_integer_argmax(name, at, argmax_dtype):
    rng = np.random.default_rng(2)
    args = arguments(name, (3, 2, 7, 5, 3, 2, 2, 1, 1, 3, 2, 1, 1), np.float64, rng)
    args[at] = args[at].astype(argmax_dtype)
    assert_same(CY[name](*args), REF[name](*args))


@pytest.mark.parametrize("name", KERNELS)
def test_thread_counts_agree(name, monkeypatch):
    """One thread and several give the same answer (up to summation order)."""
    rng = np.random.default_rng(3)
    args = arguments(name, THREADED, np.float32, rng)
    monkeypatch.setattr(zerodl._config, "_num_threads", 1)
    one = CY[name](*args)
    for threads in (2, 3):
        monkeypatch.setattr(zerodl._config, "_num_threads", threads)
        assert_same(CY[name](*args), one, f"{threads} threads")


def test_blas_thread_limit_is_restored():
    """The convolutions hold BLAS to one thread while OpenMP threads call it, and give
    the original limits back, also when two Python threads overlap."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    rng = np.random.default_rng(4)
    names = ("conv_forward", "conv_backward") + FUSED_KERNELS
    args = {name: arguments(name, THREADED, np.float32, rng) for name in names}
    want = {name: REF[name](*args[name]) for name in names}
    errors = []

    def work():
        try:
            for _ in range(5):
                for name in names:
                    assert_same(CY[name](*args[name]), want[name], name)
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    after = [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    assert after == before


def test_guard_bytes_around_inputs_stay_untouched():
    """Inputs that are C-contiguous views inside a larger buffer are used in place: the
    kernels must neither write to them nor to the bytes around them."""
    rng = np.random.default_rng(5)
    guard = 64
    for name in KERNELS:
        for g in geometries_of(name):
            args = arguments(name, g, np.float32, rng)
            fenced, buffers = [], []
            for a in args:
                if isinstance(a, np.ndarray) and a.dtype.kind == "f":
                    buf = np.full(a.size + 2 * guard, -7.25, dtype=a.dtype)
                    view = buf[guard:guard + a.size].reshape(a.shape)
                    view[...] = a
                    fenced.append(view)
                    buffers.append((buf, buf.copy()))
                else:
                    fenced.append(a)
            assert_same(CY[name](*fenced), REF[name](*args), f"{name} {_id(g)}")
            for buf, original in buffers:
                np.testing.assert_array_equal(buf, original, err_msg=f"{name} {_id(g)}")


# ---------------------------------------------------------------- the math

def naive_conv(x, W, b, s, p):
    """Direct convolution, float64 loops: out[n, f, oy, ox] = b[f] + sum x_pad * W."""
    n, c, h, w = x.shape
    fn, _, fh, fw = W.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    oh, ow = (h + 2 * p - fh) // s + 1, (w + 2 * p - fw) // s + 1
    out = np.empty((n, fn, oh, ow))
    for i in range(n):
        for f in range(fn):
            for oy in range(oh):
                for ox in range(ow):
                    patch = xp[i, :, oy * s:oy * s + fh, ox * s:ox * s + fw]
                    out[i, f, oy, ox] = b[f] + np.sum(patch * W[f])
    return out


@pytest.mark.parametrize("g", GEOMETRIES[:14], ids=_id)
def test_conv_forward_is_a_direct_convolution(g):
    rng = np.random.default_rng(6)
    x, W, b, s, p = arguments("conv_forward", g, np.float64, rng)
    out, col = CY["conv_forward"](x, W, b, s, p)
    np.testing.assert_allclose(out, naive_conv(x, W, b, s, p), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("g", GEOMETRIES, ids=_id)
def test_col2im_is_the_adjoint_of_im2col(g):
    """<im2col(x), col> == <x, col2im(col)>, and conv_backward's dx, dW, db are the
    adjoints of the convolution in x, W and b."""
    n, c, h, w, fh, fw, s, p, fn = g
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, c, h, w))
    col = CY["im2col"](x, fh, fw, s, p)
    dcol = rng.standard_normal(col.shape)
    lhs = np.vdot(col, dcol)
    rhs = np.vdot(x, CY["col2im"](dcol, x.shape, fh, fw, s, p))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)

    W = rng.standard_normal((fn, c, fh, fw))
    b = rng.standard_normal(fn)
    zero_b = np.zeros(fn)
    out, col = CY["conv_forward"](x, W, zero_b, s, p)
    dout = rng.standard_normal(out.shape)
    dx, dW, db = CY["conv_backward"](dout, col, x.shape, W, s, p)
    # conv is linear in x (and in W): <conv(x), dout> = <x, dx> = <W, dW>.
    assert np.vdot(out, dout) == pytest.approx(np.vdot(x, dx), rel=1e-12, abs=1e-12)
    assert np.vdot(out, dout) == pytest.approx(np.vdot(W, dW), rel=1e-12, abs=1e-12)
    out_b = CY["conv_forward"](x, W, b, s, p)[0]
    assert np.vdot(out_b - out, dout) == pytest.approx(np.vdot(b, db), rel=1e-12, abs=1e-12)


# ---------------------------------------------------------------- the fused kernels

def composed_forward(T, x, W, b, s, p, *pool):
    """conv_forward -> relu_forward -> maxpool_forward: ((out, col, argmax), ReLU output)."""
    conv, col = T["conv_forward"](x, W, b, s, p)
    relu = T["relu_forward"](conv)
    out, argmax = T["maxpool_forward"](relu, *pool)
    return (out, col, argmax), relu


def composed_backward(T, dout, argmax, relu, col, x_shape, W, s, p, *pool):
    """maxpool_backward -> relu_backward -> conv_backward."""
    dpool = T["maxpool_backward"](dout, argmax, relu.shape, *pool)
    return T["conv_backward"](T["relu_backward"](dpool, relu), col, x_shape, W, s, p)


@pytest.mark.parametrize("shift", [0, 1], ids=["bias", "mostly-negative"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_is_conv_relu_maxpool(backend, dtype, shift):
    """In each backend the fused forward is maxpool(relu(conv)) bit for bit (the grid data
    make every sum exact) and the fused backward is maxpool_backward -> relu_backward ->
    conv_backward.  With the bias shifted down by about one standard deviation of the
    convolution, most windows are wholly negative: the ReLU gate decides their gradient."""
    T = table(backend)
    rng = np.random.default_rng(9)
    gated = windows = 0
    for g in FUSED_GEOMETRIES:
        x, W, b, s, p, *pool = arguments("conv_relu_pool_forward", g, dtype, rng)
        b = b - shift * np.ceil(np.sqrt(W[0].size)).astype(dtype)      # still on the grid
        fused = T["conv_relu_pool_forward"](x, W, b, s, p, *pool)
        want, relu = composed_forward(T, x, W, b, s, p, *pool)
        for got, e in zip(fused, want, strict=True):
            assert got.dtype == e.dtype, _id(g)
            np.testing.assert_array_equal(got, e, err_msg=_id(g))
        out, col, argmax = fused
        dout = rng.standard_normal(out.shape).astype(dtype)
        assert_same(
            T["conv_relu_pool_backward"](dout, out, argmax, col, x.shape, W, s, p, *pool),
            composed_backward(T, dout, argmax, relu, col, x.shape, W, s, p, *pool), _id(g))
        gated += np.count_nonzero(out <= 0)
        windows += out.size
    assert 0 < gated < windows
    assert gated > (0.5 if shift else 0.1) * windows


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_special_values(backend, dtype):
    """NaN and +-inf in x, as composed and as the reference: the ReLU keeps NaN and the
    pool picks it (like numpy.argmax); a NaN window (out > 0 is false) passes no gradient,
    so dx and db stay finite.  dW sums over the positions that receive a gradient only:
    it equals the composition wherever that is finite, and is non-finite in filter f
    exactly where a non-finite col value sits at one of f's positions (the dense product
    of the composition would spread it through 0 * inf into every filter)."""
    T = table(backend)
    rng = np.random.default_rng(11)
    x = (np.round(rng.standard_normal((2, 2, 6, 7)) * 8) / 8).astype(dtype)
    x[0, 0, 2, 3] = np.nan
    x[1, 1, 0, 0] = np.inf
    x[1, 0, 5, 6] = -np.inf
    W = (np.round(rng.standard_normal((3, 2, 3, 3)) * 8) / 8).astype(dtype)
    b = np.array([0.5, -1, 0], dtype=dtype)
    for pool in ((2, 2, 2, 0), (3, 3, 2, 1), (2, 3, 1, 1)):
        fused = T["conv_relu_pool_forward"](x, W, b, 1, 1, *pool)
        want, relu = composed_forward(T, x, W, b, 1, 1, *pool)
        for got, e, ref in zip(fused, want, REF["conv_relu_pool_forward"](x, W, b, 1, 1, *pool),
                               strict=True):
            np.testing.assert_array_equal(got, e, err_msg=str(pool))
            np.testing.assert_array_equal(got, ref, err_msg=str(pool))
        out, col, argmax = fused
        assert np.isnan(out).any() and np.isposinf(out).any()
        dout = rng.standard_normal(out.shape).astype(dtype)
        args = (dout, out, argmax, col, x.shape, W, 1, 1, *pool)
        dx, dW, db = T["conv_relu_pool_backward"](*args)
        rdx, rdW, rdb = REF["conv_relu_pool_backward"](*args)
        assert_same((dx, db), (rdx, rdb), str(pool))
        # which entries are non-finite is the rule; inf or NaN is not (overlapping
        # windows add their products with inf separately here, summed first there)
        np.testing.assert_array_equal(np.isfinite(dW), np.isfinite(rdW))
        np.testing.assert_allclose(dW[np.isfinite(dW)], rdW[np.isfinite(rdW)], rtol=1e-5,
                                   atol=1e-5)
        cdx, cdW, cdb = composed_backward(T, dout, argmax, relu, col, x.shape, W, 1, 1, *pool)
        assert_same((dx, db), (cdx, cdb), str(pool))
        assert np.isfinite(dx).all() and np.isfinite(db).all()
        finite = np.isfinite(cdW)
        assert not finite.all()  # the dense composition does spread the inf/NaN
        np.testing.assert_allclose(dW[finite], cdW[finite], rtol=1e-5, atol=1e-5)
        gated = np.where(out > 0, dout, 0).astype(dtype)
        dconv = REF["maxpool_backward"](gated, argmax, relu.shape, *pool)
        d2 = dconv.transpose(0, 2, 3, 1).reshape(-1, len(W))
        want = np.stack([np.isfinite(col[d2[:, f] != 0]).all(axis=0) for f in range(len(W))])
        np.testing.assert_array_equal(np.isfinite(dW.reshape(len(W), -1)), want)
        assert not want.all()  # some filter does receive a non-finite input


def _need_dx_cases(name, dtype, rng):
    """Argument lists of a backward that takes need_dx: dense shapes or geometries
    (empty and size-1 batches, and one large enough for several threads)."""
    if name != "affine_backward":
        return [arguments(name, g, dtype, rng) for g in geometries_of(name)]
    rand = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    return [[rand(n, m), rand(n, d), rand(d, m)]
            for n, d, m in [(3, 7, 4), (0, 5, 3), (1, 1, 1), (1, 9, 2), (256, 300, 100)]]


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["affine_backward", "conv_backward", "conv_relu_pool_backward"])
def test_need_dx_false_skips_only_dx(name, backend, dtype, threads, monkeypatch):
    """need_dx=False returns (None, dW, db) with need_dx=True's dW and db: bit for bit on
    one thread (several threads sum dW in an order that may change from call to call)."""
    monkeypatch.setattr(zerodl._config, "_num_threads", threads)
    T = table(backend)
    for args in _need_dx_cases(name, dtype, np.random.default_rng(10)):
        before = copies(args)
        dx, dW, db = T[name](*args, need_dx=True)
        none, dW2, db2 = T[name](*args, need_dx=False)
        assert dx is not None and none is None
        assert (dW2.dtype, db2.dtype) == (dW.dtype, db.dtype) == (np.dtype(dtype),) * 2
        if threads == 1:
            np.testing.assert_array_equal(dW2, dW)
            np.testing.assert_array_equal(db2, db)
        else:
            assert_same((dW2, db2), (dW, db))
        assert_unchanged(args, before)


# ---------------------------------------------------------------- bad input

def _bad_cases():
    """(kernel, arguments) that both backends must reject alike."""
    rng = np.random.default_rng(8)
    g = (2, 3, 6, 5, 3, 2, 1, 1, 4, 3, 2, 2, 1)    # conv output 6x6, pooled 3x4
    ok = {name: arguments(name, g, np.float32, rng) for name in KERNELS}

    def with_(name, index, value):
        args = list(ok[name])
        args[index] = value
        return (name, args)

    x = ok["im2col"][0]
    cases = []
    for name in ("im2col", "maxpool_forward", "avgpool_forward"):
        cases += [
            with_(name, 0, x[0]),                          # 3-D
            with_(name, 0, x.astype(np.int64)),
            with_(name, 0, x.astype(np.complex64)),
            with_(name, 0, x.astype(object)),
            with_(name, 0, x.astype(np.float16)),
            with_(name, 0, x.tolist()),
            with_(name, 1, 9),                             # larger than the padded input
            with_(name, 1, 0),
            with_(name, 1, 2.0),
            with_(name, 3, 0),                             # stride 0
            with_(name, 3, -1),
            with_(name, 4, -1),                            # negative pad
            with_(name, 4, None),
        ]
    # Positions of (input_shape, filter/pool height, stride, pad) in each backward.
    positions = {"col2im": (1, 2, 4, 5), "conv_backward": (2, None, 4, 5),
                 "maxpool_backward": (2, 3, 5, 6), "avgpool_backward": (1, 2, 4, 5),
                 "conv_relu_pool_backward": (4, 8, 10, 11)}
    for name, (shape_at, filter_at, stride_at, pad_at) in positions.items():
        cases += [
            with_(name, shape_at, (2, 3, 6)),
            with_(name, shape_at, (2, 3, 6, -5)),
            with_(name, shape_at, (2, 3, 6, 5.0)),
            with_(name, shape_at, "2365"),
            with_(name, 0, ok[name][0].astype(np.int32)),
            with_(name, 0, ok[name][0][..., :-1]),         # wrong shape
            with_(name, 0, ok[name][0][None]),             # wrong ndim
            with_(name, stride_at, 0),
            with_(name, pad_at, -2),
        ]
        if filter_at is not None:
            cases.append(with_(name, filter_at, 9))        # larger than the padded input
    W, b = ok["conv_forward"][1:3]
    cases += [
        with_("conv_forward", 1, W.astype(np.float64)),    # mismatched dtypes
        with_("conv_forward", 2, b.astype(np.float64)),
        with_("conv_forward", 1, W[:, :2]),                # channel mismatch
        with_("conv_forward", 1, W[0]),
        with_("conv_forward", 2, b[:-1]),
        with_("conv_forward", 2, b[None]),
        with_("conv_forward", 3, 0),
        with_("conv_forward", 4, -1),
        with_("conv_forward", 1, np.zeros((4, 3, 9, 9), np.float32)),
        with_("conv_backward", 1, ok["conv_backward"][1][:-1]),   # wrong col shape
        with_("conv_backward", 1, ok["conv_backward"][1].astype(np.float64)),
        with_("conv_backward", 3, W.astype(np.float64)),
        with_("conv_backward", 3, W[:, :2]),
        with_("conv_backward", 0, ok["conv_backward"][0][:, :-1]),
    ]
    argmax = ok["maxpool_backward"][1]
    cases += [
        with_("maxpool_backward", 1, argmax + argmax.max() + 6),  # out of range
        with_("maxpool_backward", 1, argmax - 1),
        with_("maxpool_backward", 1, argmax.astype(np.float64)),
        with_("maxpool_backward", 1, argmax.tolist()),
        with_("maxpool_backward", 1, argmax[..., :-1]),
        with_("maxpool_backward", 1, np.full_like(argmax, 6)),    # 3x2 pool: [0, 6)
    ]
    fwd, bwd = FUSED_KERNELS
    x = ok[fwd][0]
    cases += [
        with_(fwd, 0, x[0]),
        with_(fwd, 0, x.astype(np.int64)),
        with_(fwd, 0, x.astype(np.float16)),
        with_(fwd, 0, x.tolist()),
        with_(fwd, 1, W.astype(np.float64)),
        with_(fwd, 1, W[:, :2]),
        with_(fwd, 2, b[:-1]),
        with_(fwd, 1, np.zeros((4, 3, 9, 9), np.float32)),        # filter too large
        with_(fwd, 3, 0),
        with_(fwd, 4, -1),
        with_(fwd, 5, 9),                                         # pool larger than the
        with_(fwd, 6, 9),                                         # padded conv output
        with_(fwd, 5, 0),
        with_(fwd, 6, 2.0),
        with_(fwd, 7, 0),
        with_(fwd, 8, -1),
        with_(fwd, 8, None),
    ]
    dout, out, argmax, col = ok[bwd][:4]
    cases += [
        with_(bwd, 1, out.astype(np.float64)),
        with_(bwd, 1, out[..., :-1]),
        with_(bwd, 1, out.tolist()),
        with_(bwd, 3, col[:-1]),
        with_(bwd, 3, col.astype(np.float64)),
        with_(bwd, 5, W.astype(np.float64)),
        with_(bwd, 5, W[:, :2]),
        with_(bwd, 2, argmax + 6),                                # out of range
        with_(bwd, 2, argmax - argmax.max() - 1),
        with_(bwd, 2, np.full_like(argmax, 6)),                   # 3x2 pool: [0, 6)
        with_(bwd, 2, argmax.astype(np.float64)),
        with_(bwd, 2, argmax.tolist()),
        with_(bwd, 2, argmax[..., :-1]),
        with_(bwd, 9, 0),
        with_(bwd, 9, 9),
    ]
    return cases


BAD_CASES = _bad_cases()


@pytest.mark.parametrize("name,args", BAD_CASES,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_CASES)])
def test_bad_input_fails_like_the_reference(name, args):
    _fails_alike(name, args)


def _fails_alike(name, args):
    """Both backends raise on args, the same exception with the same message."""
    with pytest.raises(Exception) as want:
        REF[name](*args)
    with pytest.raises(Exception) as got:
        CY[name](*args)
    assert type(got.value) is type(want.value)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("name", KERNELS)
def test_byte_swapped_floats_fail_like_the_reference(name):
    """Pooling reads its planes through raw pointers, which see bytes, not values: a
    float array in the other byte order must be refused first, as the reference
    refuses it (float32 and float64 only, in native order)."""
    rng = np.random.default_rng(3)
    args = arguments(name, geometries_of(name)[0], np.float32, rng)
    swapped = 0
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            bad = list(args)
            bad[i] = a.astype(a.dtype.newbyteorder())
            _fails_alike(name, bad)
            swapped += 1
    assert swapped >= 1


# ---------------------------------------------------------------- random geometries

@st.composite
def geometries(draw):
    n = draw(st.integers(0, 3))
    c = draw(st.integers(1, 3))
    h = draw(st.integers(1, 9))
    w = draw(st.integers(1, 9))
    p = draw(st.integers(0, 3))
    fh = draw(st.integers(1, h + 2 * p))
    fw = draw(st.integers(1, w + 2 * p))
    s = draw(st.integers(1, 4))
    fn = draw(st.integers(1, 3))
    oh, ow = out_hw((n, c, h, w, fh, fw, s, p, fn))
    pp = draw(st.integers(0, 2))                   # the fused kernels' pool
    ph = draw(st.integers(1, oh + 2 * pp))
    pw = draw(st.integers(1, ow + 2 * pp))
    ps = draw(st.integers(1, 3))
    return (n, c, h, w, fh, fw, s, p, fn, ph, pw, ps, pp)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=geometries(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1),
       layout=st.sampled_from(["contiguous", "strided", "transposed", "readonly"]))
def test_random_geometries_agree(g, dtype, seed, layout):
    rng = np.random.default_rng(seed)
    for name in KERNELS:
        args = [relayout(a, layout, rng) for a in arguments(name, g, dtype, rng)]
        before = copies(args)
        assert_same(CY[name](*args), REF[name](*args), f"{name} {_id(g)}")
        assert_unchanged(args, before)
