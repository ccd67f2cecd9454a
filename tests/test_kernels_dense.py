"""The compiled dense kernels against the NumPy reference.

Affine, activations, softmax-cross-entropy, batch/layer/instance norm, dropout and the
optimizer updates: the reference (``_reference``) is the oracle for the compiled kernels,
crossed over dtype x shape x memory layout x read-only inputs; bad input must fail with
the same exception and message on both backends; in-place updates must write exactly
their own elements (guard bytes around views) and give the reference's values.
"""
import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zerodl import _config
from zerodl import _kernels
from zerodl._kernels import compiled_kernels, cython_available, cython_import_error, table

if not cython_available():
    pytest.skip(f"cython backend unavailable: {cython_import_error()}", allow_module_level=True)

REF = table("numpy")
CY = table("cython")

DTYPES = (np.float32, np.float64)
# Relative to the largest magnitude that enters the result: sums, GEMM and fused
# coefficients are rounded in other orders than NumPy's.
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
HYPO = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

DENSE_MODULES = {"affine", "activation", "loss", "batchnorm", "dropout", "optim"}
DENSE_KERNELS = (
    "affine_forward", "affine_backward", "relu_forward", "relu_backward", "sigmoid_forward",
    "sigmoid_backward", "tanh_forward", "tanh_backward", "softmax_cross_entropy_forward",
    "softmax_cross_entropy_backward", "batchnorm_forward_train", "batchnorm_forward_infer",
    "batchnorm_backward", "spatial_batchnorm_forward_train", "spatial_batchnorm_forward_infer",
    "spatial_batchnorm_backward", "layernorm_forward", "layernorm_backward",
    "instancenorm_forward", "instancenorm_backward", "dropout_forward", "dropout_backward",
    "sgd_update", "momentum_update", "nesterov_update", "adagrad_update", "rmsprop_update",
    "adam_update", "adamw_update", "affine_bn_relu_forward", "affine_bn_relu_backward",
)


@pytest.fixture
def rng():
    return np.random.default_rng(20240607)


@pytest.fixture
def threads():
    """Set the kernels' thread count for one test; restored afterwards."""
    saved = _config._num_threads
    yield _config.set_num_threads
    _config._num_threads = saved


def clone(obj):
    """A deep copy that keeps arrays' layout and read-only flag (copy.deepcopy does not)."""
    if isinstance(obj, list):
        return [clone(o) for o in obj]
    if isinstance(obj, tuple):
        return tuple(clone(o) for o in obj)
    if isinstance(obj, np.ndarray):
        c = obj.copy(order="K")
        c.flags.writeable = obj.flags.writeable
        return c
    return copy.deepcopy(obj)


def rand(rng, shape, dtype, scale=1.0, shift=0.0):
    return np.asarray(rng.standard_normal(shape) * scale + shift, dtype=dtype)


def assert_close(actual, expected, scale=None):
    """Same type, shape and dtype; values within TOL of the expected's magnitude."""
    if expected is None:    # a skipped result (need_dx=False)
        assert actual is None
        return
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected)
        scales = scale if isinstance(scale, tuple) else (scale,) * len(expected)
        for a, e, s in zip(actual, expected, scales):
            assert_close(a, e, s)
        return
    if isinstance(expected, float):
        assert isinstance(actual, float)
        assert actual == pytest.approx(expected, rel=1e-5, abs=1e-6)
        return
    if isinstance(expected, np.generic):   # a 0-d result of a ufunc
        assert type(actual) is type(expected)
        actual, expected = np.asarray(actual), np.asarray(expected)
    assert isinstance(actual, np.ndarray)
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    if expected.size == 0:
        return
    tol = TOL[expected.dtype]
    finite = np.abs(expected[np.isfinite(expected)])
    mag = max(float(finite.max()) if finite.size else 0.0, scale or 0.0, 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * mag)


def layout(a, kind):
    """The same values as `a` in another memory layout."""
    if kind == "C":
        return a
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "strided":
        # every other element of a buffer twice as large in the last axis
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype) if a.ndim else None
        if big is None:
            return a
        big[..., ::2] = a
        return big[..., ::2]
    if kind == "transposed":
        return np.ascontiguousarray(a.T).T
    if kind == "readonly":
        r = a.copy()
        r.flags.writeable = False
        return r
    raise ValueError(kind)


LAYOUTS = ("C", "F", "strided", "transposed", "readonly")


# ---------------------------------------------------------------- cases
# Each case builds the arguments of one kernel call.  `inplace` lists the positions of
# arguments the kernel updates in place; every other array must come back unchanged.

def _affine_fwd(rng, dt, n=7, d=13, m=5):
    return [rand(rng, (n, d), dt), rand(rng, (d, m), dt), rand(rng, m, dt)]


def _affine_bwd(rng, dt, n=7, d=13, m=5):
    return [rand(rng, (n, m), dt), rand(rng, (n, d), dt), rand(rng, (d, m), dt)]


def _act_fwd(rng, dt, shape=(7, 13)):
    x = rand(rng, shape, dt, scale=4.0)
    if x.size > 3:
        x.flat[:3] = (0.0, 40.0, -120.0)    # zero, and tails where exp over/underflows
    return [x]


def _act_bwd(kind):
    def build(rng, dt, shape=(7, 13)):
        out = REF[f"{kind}_forward"](_act_fwd(rng, dt, shape)[0])
        return [rand(rng, shape, dt), out]
    return build


def _labels(rng, n, c, onehot, dt):
    t = rng.integers(0, c, n)
    return np.eye(c, dtype=dt)[t] if onehot else t


def _softmax_fwd(onehot):
    def build(rng, dt, n=7, c=13):
        return [rand(rng, (n, c), dt, scale=3.0), _labels(rng, n, c, onehot, dt)]
    return build


def _softmax_bwd(onehot):
    def build(rng, dt, n=7, c=13):
        x = rand(rng, (n, c), dt, scale=3.0)
        t = _labels(rng, n, c, onehot, dt)
        return [REF["softmax_cross_entropy_forward"](x, t)[1], t, 0.5]
    return build


def _bn_params(rng, dt, c):
    return [rand(rng, c, dt), rand(rng, c, dt)]


def _running(rng, dt, c):
    return [rand(rng, c, dt), np.abs(rand(rng, c, dt)) + 0.5]


def _bn_train(rng, dt, n=7, d=13):
    # a large mean over a unit spread: the one-pass statistics must stay exact
    x = rand(rng, (n, d), dt, scale=2.0, shift=50.0)
    return [x] + _bn_params(rng, dt, d) + _running(rng, dt, d) + [0.8, 1e-5]


def _bn_infer(rng, dt, n=7, d=13):
    return [rand(rng, (n, d), dt)] + _bn_params(rng, dt, d) + _running(rng, dt, d) + [1e-5]


def _bn_bwd(rng, dt, n=7, d=13):
    g, b = _bn_params(rng, dt, d)
    _, xhat, inv_std = REF["batchnorm_forward_train"](rand(rng, (n, d), dt), g, b,
                                                      *_running(rng, dt, d))
    return [rand(rng, (n, d), dt), xhat, g, inv_std]


def _sbn_train(rng, dt, shape=(3, 4, 5, 6)):
    x = rand(rng, shape, dt, scale=2.0, shift=-30.0)
    return [x] + _bn_params(rng, dt, shape[1]) + _running(rng, dt, shape[1]) + [0.9, 1e-6]


def _sbn_infer(rng, dt, shape=(3, 4, 5, 6)):
    c = shape[1]
    return [rand(rng, shape, dt)] + _bn_params(rng, dt, c) + _running(rng, dt, c) + [1e-6]


def _sbn_bwd(rng, dt, shape=(3, 4, 5, 6)):
    g, b = _bn_params(rng, dt, shape[1])
    _, xhat, inv_std = REF["spatial_batchnorm_forward_train"](
        rand(rng, shape, dt), g, b, *_running(rng, dt, shape[1]))
    return [rand(rng, shape, dt), xhat, g, inv_std]


def _ln_fwd(rng, dt, n=7, d=13):
    return [rand(rng, (n, d), dt, scale=3.0, shift=20.0)] + _bn_params(rng, dt, d) + [1e-5]


def _ln_bwd(rng, dt, n=7, d=13):
    g, b = _bn_params(rng, dt, d)
    _, xhat, inv_std = REF["layernorm_forward"](rand(rng, (n, d), dt), g, b)
    return [rand(rng, (n, d), dt), xhat, g, inv_std]


def _in_fwd(rng, dt, shape=(3, 4, 5, 6)):
    return [rand(rng, shape, dt, scale=3.0, shift=-7.0)] + _bn_params(rng, dt, shape[1]) + [1e-5]


def _in_bwd(rng, dt, shape=(3, 4, 5, 6)):
    g, b = _bn_params(rng, dt, shape[1])
    _, xhat, inv_std = REF["instancenorm_forward"](rand(rng, shape, dt), g, b)
    return [rand(rng, shape, dt), xhat, g, inv_std]


def _dropout(rng, dt, shape=(7, 13)):
    return [rand(rng, shape, dt), np.asarray(rng.random(shape) < 0.6), 1.0 / 0.6]


def _abr_affine(rng, dt, n, d, m):
    """x, W, b of a fused affine + batch norm + ReLU: the GEMM's columns have unit-order
    spread around a bias of a few units (the one-pass statistics see a shifted mean)."""
    return [rand(rng, (n, d), dt), rand(rng, (d, m), dt, scale=1.0 / np.sqrt(max(d, 1))),
            rand(rng, m, dt, scale=2.0, shift=3.0)]


def _abr_fwd(rng, dt, n=7, d=13, m=5):
    # beta ~ N(0, 1): some columns mostly rectified, some mostly passed
    return (_abr_affine(rng, dt, n, d, m) + _bn_params(rng, dt, m) + _running(rng, dt, m)
            + [0.8, 1e-5])


def _abr_bwd(need_dx):
    def build(rng, dt, n=7, d=13, m=5):
        x, W, b = _abr_affine(rng, dt, n, d, m)
        g, beta = _bn_params(rng, dt, m)
        if n:
            out, xhat, inv_std = REF["affine_bn_relu_forward"](x, W, b, g, beta,
                                                               *_running(rng, dt, m))
        else:   # the forward needs a row: any (0, M) out and xhat, a positive inv_std
            out, xhat = np.zeros((0, m), dt), np.zeros((0, m), dt)
            inv_std = np.abs(rand(rng, m, dt)) + 0.5
        args = [rand(rng, (n, m), dt), out, xhat, g, inv_std, x, W]
        return args if need_dx else args + [False]
    return build


CASES = {
    # name: (builder, kernel, positions updated in place, sizes: kwargs for the builder)
    "affine_forward": (_affine_fwd, (), [dict(n=1, d=1, m=1), dict(), dict(n=0),
                                        dict(d=0), dict(m=0), dict(n=1, d=784, m=100)]),
    "affine_backward": (_affine_bwd, (), [dict(n=1, d=1, m=1), dict(), dict(n=0), dict(d=0),
                                          dict(m=0), dict(n=33, d=70, m=21)]),
    "relu_forward": (_act_fwd, (), [dict(shape=()), dict(shape=(1, 1)), dict(),
                                    dict(shape=(0, 4)), dict(shape=(2, 3, 4, 5)),
                                    dict(shape=(300, 500))]),
    "relu_backward": (_act_bwd("relu"), (), [dict(shape=(1, 1)), dict(), dict(shape=(0, 3)),
                                             dict(shape=(2, 3, 4, 5)), dict(shape=(300, 500))]),
    "sigmoid_forward": (_act_fwd, (), [dict(shape=(1, 1)), dict(), dict(shape=(0, 2)),
                                       dict(shape=(2, 3, 4, 5)), dict(shape=(200, 150))]),
    "sigmoid_backward": (_act_bwd("sigmoid"), (), [dict(shape=(1,)), dict(),
                                                   dict(shape=(300, 500))]),
    "tanh_forward": (_act_fwd, (), [dict(shape=(1, 1)), dict(), dict(shape=(5, 0)),
                                    dict(shape=(2, 3, 4, 5)), dict(shape=(200, 150))]),
    "tanh_backward": (_act_bwd("tanh"), (), [dict(shape=(1,)), dict(), dict(shape=(300, 500))]),
    "softmax_cross_entropy_forward": (_softmax_fwd(False), (), [
        dict(n=1, c=1), dict(), dict(n=0), dict(n=1, c=10), dict(n=300, c=200)]),
    "softmax_cross_entropy_forward[onehot]": (_softmax_fwd(True), (), [
        dict(n=1, c=1), dict(), dict(n=0), dict(n=300, c=200)]),
    "softmax_cross_entropy_backward": (_softmax_bwd(False), (), [
        dict(n=1, c=1), dict(), dict(n=0), dict(n=300, c=200)]),
    "softmax_cross_entropy_backward[onehot]": (_softmax_bwd(True), (), [
        dict(n=1, c=1), dict(), dict(n=0), dict(n=300, c=200)]),
    "batchnorm_forward_train": (_bn_train, (3, 4), [dict(n=1, d=1), dict(), dict(n=1),
                                                    dict(d=0), dict(n=300, d=257)]),
    "batchnorm_forward_infer": (_bn_infer, (), [dict(n=1, d=1), dict(), dict(n=0),
                                                dict(n=300, d=257)]),
    "batchnorm_backward": (_bn_bwd, (), [dict(n=1, d=1), dict(), dict(n=2),
                                         dict(n=300, d=257)]),
    "spatial_batchnorm_forward_train": (_sbn_train, (3, 4), [
        dict(shape=(1, 1, 1, 1)), dict(), dict(shape=(1, 3, 2, 2)), dict(shape=(2, 0, 3, 3)),
        dict(shape=(16, 8, 24, 24))]),
    "spatial_batchnorm_forward_infer": (_sbn_infer, (), [
        dict(shape=(1, 1, 1, 1)), dict(), dict(shape=(0, 3, 2, 2)), dict(shape=(16, 8, 24, 24))]),
    "spatial_batchnorm_backward": (_sbn_bwd, (), [
        dict(shape=(1, 1, 1, 1)), dict(), dict(shape=(2, 3, 1, 1)), dict(shape=(16, 8, 24, 24))]),
    "layernorm_forward": (_ln_fwd, (), [dict(n=1, d=1), dict(), dict(n=0), dict(n=300, d=257)]),
    "layernorm_backward": (_ln_bwd, (), [dict(n=1, d=1), dict(), dict(n=0),
                                         dict(n=300, d=257)]),
    "instancenorm_forward": (_in_fwd, (), [dict(shape=(1, 1, 1, 1)), dict(),
                                           dict(shape=(0, 2, 3, 3)), dict(shape=(16, 8, 24, 24))]),
    "instancenorm_backward": (_in_bwd, (), [dict(shape=(1, 1, 1, 1)), dict(),
                                            dict(shape=(0, 2, 3, 3)),
                                            dict(shape=(16, 8, 24, 24))]),
    "dropout_forward": (_dropout, (), [dict(shape=()), dict(shape=(1, 1)), dict(),
                                       dict(shape=(0, 5)), dict(shape=(2, 3, 4, 5)),
                                       dict(shape=(300, 500))]),
    "dropout_backward": (_dropout, (), [dict(shape=(1,)), dict(), dict(shape=(300, 500))]),
    # the last size is large enough for the multi-threaded batch norm (3 threads) and
    # the split GEMMs
    "affine_bn_relu_forward": (_abr_fwd, (5, 6), [
        dict(n=1, d=1, m=1), dict(), dict(n=1), dict(n=2, d=1, m=3), dict(d=0), dict(m=0),
        dict(n=1, d=0, m=0), dict(n=400, d=100, m=257)]),
    "affine_bn_relu_backward": (_abr_bwd(True), (), [
        dict(n=1, d=1, m=1), dict(), dict(n=1), dict(n=0), dict(d=0), dict(m=0),
        dict(n=0, d=0, m=0), dict(n=400, d=100, m=257)]),
    "affine_bn_relu_backward[no_dx]": (_abr_bwd(False), (), [
        dict(n=1, d=1, m=1), dict(), dict(n=0), dict(d=0), dict(m=0),
        dict(n=400, d=100, m=257)]),
}


def kernel_of(case):
    return case.split("[")[0]


def _abr_forward_scales(x, W, b, gamma, beta, running_mean, running_var, momentum=0.9,
                        eps=1e-6):
    """Scales of (out, xhat, inv_std) and of the running (mean, var) of the fused
    affine + batch norm + ReLU.  a = x @ W + b is rounded differently by the two
    backends' GEMMs (and summed with b in another order): an error of a few ulps of
    max|a| per column, which the normalisation multiplies by inv_std (the mean's
    cancellation), and which the statistics carry as ~max|a| and ~max|a|^2."""
    a = x.astype(np.float64) @ W.astype(np.float64) + b
    amax = np.max(np.abs(a), axis=0, initial=0.0)
    inv = 1.0 / np.sqrt(a.var(axis=0) + eps) if a.shape[0] else np.zeros(a.shape[1])
    k = np.maximum(1.0, amax * inv)
    xhat = 4.0 * float(np.max(k, initial=1.0))
    out = xhat * float(np.max(np.abs(gamma), initial=0.0)) + \
        float(np.max(np.abs(beta), initial=0.0))
    top = float(np.max(amax, initial=0.0))
    return ((out, xhat, 4.0 * float(np.max(inv * k, initial=0.0))),
            (4.0 * top, 4.0 * top * top))


def _abr_backward_scales(dout, out, xhat, gamma, inv_std, x, W, need_dx=True):
    """Scales of (dx, dW, db, dgamma, dbeta) of the fused backward: the batch norm's
    cancelling terms (as batchnorm_backward) carried through the GEMMs' sums; db, the
    column sums of a batch norm's input gradient, is zero up to rounding."""
    if dout.size == 0:
        return None
    n, m = dout.shape
    da = float(np.max(np.abs(dout))) * float(np.max(np.abs(gamma))) * \
        float(np.max(np.abs(inv_std))) * (2.0 + float(np.max(np.abs(xhat))) ** 2)
    return (da * m * float(np.max(np.abs(W), initial=0.0)),
            da * n * float(np.max(np.abs(x), initial=0.0)), da * n, None, None)


def _scale(case, args):
    """Magnitude of the terms that cancel in the backward formulas (for the tolerance)."""
    name = kernel_of(case)
    if name == "affine_bn_relu_forward":
        return _abr_forward_scales(*args)[0]
    if name == "affine_bn_relu_backward":
        return _abr_backward_scales(*args)
    if name == "sigmoid_forward":
        # the reference's 0.5*(1 + tanh(x/2)) loses relative accuracy in the lower tail
        # (1 + tanh cancels); both are within ulps of 1, the scale of the output
        return 1.0
    if name in ("tanh_backward", "sigmoid_backward"):
        # 1 - out*out cancels near |out| = 1 (and may be fused into one rounding)
        return float(np.max(np.abs(args[0]), initial=0.0))
    if name in ("batchnorm_backward", "spatial_batchnorm_backward", "layernorm_backward",
                "instancenorm_backward"):
        dout, xhat, gamma, inv_std = args
        if dout.size == 0:
            return None
        terms = float(np.max(np.abs(dout))) * float(np.max(np.abs(gamma))) * \
            float(np.max(np.abs(inv_std))) * (2.0 + float(np.max(np.abs(xhat))) ** 2)
        return (terms, None, None)
    return None


def _inplace_scales(case, args):
    """Scales of the arrays updated in place (the running statistics), before the call."""
    if kernel_of(case) == "affine_bn_relu_forward":
        return _abr_forward_scales(*args)[1]
    return (None,) * len(CASES[case][1])


def _call(backend, case, args):
    return backend[kernel_of(case)](*args)


def _check_case(case, args, ref_args=None):
    """Run both backends on copies of args; compare outputs, in-place results and
    that the read-only inputs are untouched."""
    inplace = CASES[case][1]
    ref_args = clone(args if ref_args is None else ref_args)
    cy_args = list(args)
    before = clone(cy_args)
    scale = _scale(case, ref_args)
    inplace_scale = dict(zip(inplace, _inplace_scales(case, ref_args)))
    expected = _call(REF, case, ref_args)
    actual = _call(CY, case, cy_args)
    assert_close(actual, expected, scale)
    for i, (a, b) in enumerate(zip(cy_args, before)):
        if not isinstance(a, np.ndarray):
            continue
        if i in inplace:
            assert_close(a, ref_args[i], inplace_scale[i])
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"argument {i} was modified")


PARAMS = [(case, dt, size) for case in CASES for dt in DTYPES
          for size in range(len(CASES[case][2]))]


def test_dense_kernels_are_compiled():
    compiled = compiled_kernels()
    missing = [k for k in DENSE_KERNELS if compiled.get(k) not in DENSE_MODULES]
    assert not missing, f"dense kernels falling back to the reference: {missing}"


@pytest.mark.parametrize("case,dtype,size", PARAMS,
                         ids=[f"{c}-{np.dtype(d).name}-{s}" for c, d, s in PARAMS])
def test_agrees_with_reference(case, dtype, size, rng):
    builder, _, sizes = CASES[case]
    _check_case(case, builder(rng, dtype, **sizes[size]))


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("case", list(CASES))
def test_layouts(case, kind, rng):
    """Inputs in any layout (Fortran, strided, transposed views, read-only) give the
    reference's results on C-contiguous copies, and are left unchanged."""
    builder, inplace, sizes = CASES[case]
    for dt in DTYPES:
        base = builder(rng, dt, **sizes[1])
        args = [layout(a, kind) if isinstance(a, np.ndarray) and i not in inplace else a
                for i, a in enumerate(base)]
        _check_case(case, args, ref_args=base)


@pytest.mark.parametrize("case", ["batchnorm_forward_train", "spatial_batchnorm_forward_train",
                                  "affine_bn_relu_forward"])
def test_running_stats_views(case, rng):
    """Running statistics that are views into larger buffers (one strided) are updated
    like the reference and nothing around them is written."""
    builder, (im, iv), _ = CASES[case]
    for dt in DTYPES:
        args = builder(rng, dt)
        c = args[im].shape[0]
        rm_buf = np.full(c + 6, 7.0, dtype=dt)
        rv_buf = np.full(3 * c + 2, 9.0, dtype=dt)
        rm, rv = rm_buf[3:3 + c], rv_buf[1:1 + 3 * c:3]
        rm[...], rv[...] = args[im], args[iv]
        scale = _scale(case, args)
        sm, sv = _inplace_scales(case, args)
        expected = REF[kernel_of(case)](*clone(args))
        cy_args = args[:im] + [rm, rv] + args[iv + 1:]
        ref_args = clone(args)
        REF[kernel_of(case)](*ref_args)
        actual = CY[kernel_of(case)](*cy_args)
        assert_close(actual, expected, scale)
        assert_close(rm.copy(), ref_args[im], sm)
        assert_close(rv.copy(), ref_args[iv], sv)
        assert (rm_buf[:3] == 7).all() and (rm_buf[3 + c:] == 7).all()
        untouched = np.ones(rv_buf.shape, bool)
        untouched[1:1 + 3 * c:3] = False
        assert (rv_buf[untouched] == 9).all()


@pytest.mark.parametrize("case", ["relu_forward", "sigmoid_backward", "softmax_cross_entropy_forward",
                                  "batchnorm_forward_train", "batchnorm_backward",
                                  "spatial_batchnorm_forward_train", "spatial_batchnorm_backward",
                                  "layernorm_backward", "instancenorm_backward", "dropout_forward",
                                  "affine_bn_relu_forward", "affine_bn_relu_backward",
                                  "affine_bn_relu_backward[no_dx]"])
def test_thread_count_does_not_change_results(case, rng, threads):
    builder, _, sizes = CASES[case]
    for dt in DTYPES:
        args = builder(rng, dt, **sizes[-1])
        results = []
        for n in (1, 2, 3):
            threads(n)
            results.append(_call(CY, case, clone(args)))
        for r in results[1:]:
            assert_close(r, results[0], _scale(case, args))


def test_special_values(rng):
    """inf/NaN/signed zero go through the activations as through NumPy."""
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 709.0,
                  -745.0, 20.0, -20.0])
    for dt in DTYPES:
        xd = x.astype(dt)
        with np.errstate(all="ignore"):
            for name in ("relu_forward", "sigmoid_forward", "tanh_forward"):
                expected, actual = REF[name](xd), CY[name](xd)
                np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
                np.testing.assert_allclose(actual, expected, rtol=TOL[xd.dtype],
                                           atol=TOL[xd.dtype])
        mask = rng.random(x.shape) < 0.5
        a = CY["dropout_forward"](xd, mask, 2.0)
        assert (a[~mask] == 0).all()


# ---------------------------------------------------------------- bad input

def _valid(case, dt=np.float64):
    return CASES[case][0](np.random.default_rng(0), dt)


def _array_positions(args):
    return [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]


def _mutations(case):
    """(label, function args -> args) for invalid variants of a valid call."""
    name = kernel_of(case)
    muts = []
    for pos in _array_positions(_valid(case)):
        def retype(dtype, pos=pos):
            return lambda a: a[:pos] + [a[pos].astype(dtype)] + a[pos + 1:]
        muts += [(f"arg{pos}-int", retype(np.int64)), (f"arg{pos}-complex", retype(np.complex128)),
                 (f"arg{pos}-object", retype(object)), (f"arg{pos}-float16", retype(np.float16)),
                 (f"arg{pos}-list", lambda a, pos=pos: a[:pos] + [a[pos].tolist()] + a[pos + 1:]),
                 (f"arg{pos}-extra-axis", lambda a, pos=pos: a[:pos] + [a[pos][None]] + a[pos + 1:])]
        if pos > 0:
            muts.append((f"arg{pos}-other-float", retype(np.float32)))
            muts.append((f"arg{pos}-shape", lambda a, pos=pos:
                         a[:pos] + [np.concatenate([a[pos], a[pos][..., :1]], axis=-1)
                                    if a[pos].ndim else a[pos][None]] + a[pos + 1:]))
    if name.startswith("softmax"):
        muts += [("label-high", lambda a: [a[0], np.full(a[1].shape[0], 13)] + a[2:]),
                 ("label-negative", lambda a: [a[0], np.full(a[1].shape[0], -1)] + a[2:]),
                 ("label-length", lambda a: [a[0], np.zeros(a[0].shape[0] + 1, int)] + a[2:]),
                 ("label-str", lambda a: [a[0], np.array(["a"] * a[0].shape[0])] + a[2:]),
                 ("label-3d", lambda a: [a[0], np.zeros((a[0].shape[0], 1, 1))] + a[2:])]
    if name.endswith("backward") and name.startswith("softmax"):
        muts += [("dout-str", lambda a: a[:2] + ["1"]), ("dout-nan", lambda a: a[:2] + [np.nan])]
    if name in ("batchnorm_forward_train", "spatial_batchnorm_forward_train",
                "affine_bn_relu_forward"):
        im = CASES[case][1][0]      # running_mean, running_var, momentum, eps from here

        def readonly(pos):
            def f(a):
                r = a[pos].copy()
                r.flags.writeable = False
                return a[:pos] + [r] + a[pos + 1:]
            return f
        muts += [("rm-readonly", readonly(im)), ("rv-readonly", readonly(im + 1)),
                 ("momentum-high", lambda a: a[:im + 2] + [1.5, a[im + 3]]),
                 ("momentum-bool", lambda a: a[:im + 2] + [True, a[im + 3]]),
                 ("eps-zero", lambda a: a[:im + 3] + [0.0]),
                 ("eps-inf", lambda a: a[:im + 3] + [np.inf]),
                 ("no-rows", lambda a: [a[0][:0]] + a[1:])]
    if name == "affine_bn_relu_forward":
        # the batch norm's parameters and statistics follow W's columns, not x's
        per_input = [(f"arg{pos}-per-input-feature", lambda a, pos=pos:
                      a[:pos] + [np.ones(a[0].shape[1], a[0].dtype)] + a[pos + 1:])
                     for pos in range(3, 7)]
        muts += per_input + [
            ("momentum-str", lambda a: a[:7] + ["0.9", a[8]]),
            ("momentum-negative", lambda a: a[:7] + [-0.1, a[8]]),
            ("eps-nan", lambda a: a[:8] + [np.nan]),
            ("eps-none", lambda a: a[:8] + [None]),
            ("x-W-mismatch", lambda a: [a[0][:, :-1]] + a[1:])]
    if name == "affine_bn_relu_backward":
        muts += [("out-rows", lambda a: a[:1] + [a[1][:-1]] + a[2:]),
                 ("xhat-rows", lambda a: a[:2] + [a[2][:-1]] + a[3:]),
                 ("dout-rows", lambda a: [a[0][:-1]] + a[1:]),
                 ("x-rows", lambda a: a[:5] + [a[5][:-1]] + a[6:]),
                 ("x-W-mismatch", lambda a: a[:5] + [a[5][:, :-1]] + a[6:]),
                 ("gamma-short", lambda a: a[:3] + [a[3][:-1]] + a[4:]),
                 ("inv_std-short", lambda a: a[:4] + [a[4][:-1]] + a[5:])]
    if name in ("batchnorm_forward_infer", "spatial_batchnorm_forward_infer",
                "layernorm_forward", "instancenorm_forward"):
        muts.append(("eps-negative", lambda a: a[:-1] + [-1.0]))
    if name.startswith("dropout"):
        muts += [("mask-int", lambda a: [a[0], a[1].astype(np.int8), a[2]]),
                 ("mask-shape", lambda a: [a[0], a[1][..., :-1], a[2]]),
                 ("scale-none", lambda a: a[:2] + [None])]
    return muts


BAD = [(case, label, f) for case in CASES if "onehot" not in case
       for label, f in _mutations(case)]


def _same_error(fn_name, args):
    with pytest.raises(Exception) as expected:
        REF[fn_name](*clone(args))
    with pytest.raises(type(expected.value)) as actual:
        CY[fn_name](*clone(args))
    assert str(actual.value) == str(expected.value)


@pytest.mark.parametrize("case,label,mutate", BAD, ids=[f"{c}-{l}" for c, l, _ in BAD])
def test_bad_input_same_error(case, label, mutate):
    args = mutate(list(_valid(case)))
    try:
        REF[kernel_of(case)](*clone(args))
    except Exception:
        pass
    else:
        pytest.skip("this variant is valid input")    # e.g. an extra axis for activations
    _same_error(kernel_of(case), args)


# ---------------------------------------------------------------- optimizers

OPTIMIZERS = {
    # name: (number of state lists, hyperparameters)
    "sgd_update": (0, (0.05,)),
    "momentum_update": (1, (0.05, 0.9)),
    "nesterov_update": (1, (0.05, 0.9)),
    "adagrad_update": (1, (0.05, 1e-7)),
    "rmsprop_update": (1, (0.05, 0.9, 1e-7)),
    "adam_update": (2, (0.01, 0.9, 0.999, 3, 1e-7)),
    "adamw_update": (2, (0.01, 0.9, 0.999, 3, 1e-7, 0.1)),
}
SHAPES = [(3, 4), (100,), (), (0, 5), (7, 13), (1,), (300, 257)]


def _opt_lists(rng, dt, shapes, n_states):
    params = [rand(rng, s, dt) for s in shapes]
    grads = [rand(rng, s, dt) for s in shapes]
    states = [[np.abs(rand(rng, s, dt), out=rand(rng, s, dt)) for s in shapes]
              for _ in range(n_states)]
    return params, grads, states


def _run_both(name, params, grads, states, hyper, ref_params=None, ref_states=None):
    ref_params = clone(params) if ref_params is None else ref_params
    ref_states = clone(states) if ref_states is None else ref_states
    ref_grads = clone(grads)
    g_before = clone(grads)
    REF[name](ref_params, ref_grads, *ref_states, *hyper)
    assert CY[name](params, grads, *states, *hyper) is None
    for a, e in zip(params, ref_params):
        assert_close(a, e)
    for s, rs in zip(states, ref_states):
        for a, e in zip(s, rs):
            assert_close(a, e)
    for g, b in zip(grads, g_before):
        np.testing.assert_array_equal(g, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_lists(name, dtype, rng, threads):
    """Several arrays of assorted shapes (0-d, empty, large) in one call, repeated steps,
    on 1 and 2 threads."""
    n_states, hyper = OPTIMIZERS[name]
    for n in (1, 2):
        threads(n)
        params, grads, states = _opt_lists(rng, dtype, SHAPES, n_states)
        for _ in range(3):
            _run_both(name, params, grads, states, hyper)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_views_and_guards(name, rng):
    """Params and states that are views into bigger buffers (contiguous slices, strided
    and transposed views, Fortran arrays, read-only and non-contiguous gradients): the
    views get the reference's values, the buffers around them are untouched."""
    n_states, hyper = OPTIMIZERS[name]
    sentinel = 1234.5
    for dt in DTYPES:
        shapes = [(50,), (6, 7), (5, 4), (9, 3), (2000,)]
        params, grads, states = _opt_lists(rng, dt, shapes, n_states)
        ref_params, ref_states = clone(params), clone(states)

        bufs = []

        def embed(a, kind):
            if kind == "slice":           # contiguous view with guard elements around it
                buf = np.full(a.size + 16, sentinel, dtype=dt)

                def view(b, a=a):
                    return b[8:8 + a.size].reshape(a.shape)
            elif kind == "strided":       # every third element of every other row
                buf = np.full((2 * a.shape[0] + 1, 3 * a.shape[1] + 2), sentinel, dtype=dt)

                def view(b, a=a):
                    return b[1::2, 1:1 + 3 * a.shape[1]:3]
            elif kind == "transposed":    # a C buffer seen transposed
                buf = np.full((a.shape[1], a.shape[0]), sentinel, dtype=dt)

                def view(b):
                    return b.T
            else:                         # Fortran order: updated through its transpose
                buf = np.asfortranarray(np.full(a.shape, sentinel, dtype=dt))

                def view(b):
                    return b
            v = view(buf)
            v[...] = a
            bufs.append((buf, view))
            return v

        kinds = ["slice", "strided", "transposed", "fortran", "slice"]
        params = [embed(a, k) for a, k in zip(params, kinds)]
        states = [[embed(a, k) for a, k in zip(s, ["fortran", "slice", "strided", "transposed",
                                                   "slice"])]
                  for s in states]
        grads = [layout(grads[0], "readonly"), layout(grads[1], "strided"),
                 layout(grads[2], "F"), grads[3], layout(grads[4], "readonly")]
        _run_both(name, params, grads, states, hyper, ref_params, ref_states)
        for buf, view in bufs:
            outside = np.ones(buf.shape, bool)
            view(outside)[...] = False
            assert (buf[outside] == sentinel).all(), "an element outside the view was written"


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_mixed_dtypes(name, rng):
    """One call may mix float32 and float64 pairs (each pair has one dtype)."""
    n_states, hyper = OPTIMIZERS[name]
    p32, g32, s32 = _opt_lists(rng, np.float32, [(40, 3)], n_states)
    p64, g64, s64 = _opt_lists(rng, np.float64, [(17,)], n_states)
    _run_both(name, p32 + p64, g32 + g64, [a + b for a, b in zip(s32, s64)], hyper)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_position_independent(name, dtype, rng, threads):
    """An element's update does not depend on where it sits: one flat buffer updated in
    one call equals the same buffer updated as a list of slices, bit for bit (the fast
    training step updates a net's flat buffer; the book's path updates each array)."""
    n_states, hyper = OPTIMIZERS[name]
    (p,), (g,), states = _opt_lists(rng, dtype, [(100_003,)], n_states)
    cuts = [0, 1, 18, 35, 1000, 65_537, 100_003]
    parts = [slice(a, b) for a, b in zip(cuts, cuts[1:])]
    for n in (1, 2):
        threads(n)
        whole = [p.copy(), [s[0].copy() for s in states]]
        split = [p.copy(), [s[0].copy() for s in states]]
        CY[name]([whole[0]], [g], *[[s] for s in whole[1]], *hyper)
        CY[name]([split[0][c] for c in parts], [g[c] for c in parts],
                 *[[s[c] for c in parts] for s in split[1]], *hyper)
        np.testing.assert_array_equal(whole[0], split[0])
        for a, b in zip(whole[1], split[1]):
            np.testing.assert_array_equal(a, b)


def _opt_args(name, rng, dt=np.float64):
    n_states, hyper = OPTIMIZERS[name]
    params, grads, states = _opt_lists(rng, dt, [(3, 4), (5,)], n_states)
    return [params, grads, *states, *hyper], n_states


def _opt_mutations(name, n_states):
    def at(lst, i, value):
        def f(a):
            a = clone(a)
            a[lst][i] = value(a[lst][i])
            return a
        return f

    def ro(x):
        x = x.copy()
        x.flags.writeable = False
        return x

    muts = [
        ("params-not-list", lambda a: [np.zeros(3)] + a[1:]),
        ("grads-short", lambda a: [a[0], a[1][:1]] + a[2:]),
        ("param-int", at(0, 0, lambda x: x.astype(np.int32))),
        ("param-readonly", at(0, 1, ro)),
        ("grad-shape", at(1, 0, lambda x: x[:, :2])),
        ("grad-dtype", at(1, 1, lambda x: x.astype(np.float32))),
        ("grad-complex", at(1, 1, lambda x: x.astype(np.complex64))),
        ("grad-object", at(1, 0, lambda x: x.astype(object))),
        ("lr-str", lambda a: a[:2 + n_states] + ["0.1"] + a[3 + n_states:]),
        ("lr-nan", lambda a: a[:2 + n_states] + [np.nan] + a[3 + n_states:]),
    ]
    for s in range(n_states):
        muts += [(f"state{s}-readonly", at(2 + s, 0, ro)),
                 (f"state{s}-shape", at(2 + s, 1, lambda x: x[:-1])),
                 (f"state{s}-dtype", at(2 + s, 0, lambda x: x.astype(np.float32))),
                 (f"state{s}-missing", lambda a, s=s: a[:2 + s] + [a[2 + s][:1]] + a[3 + s:])]
    if name.startswith("adam"):
        muts += [("beta1-one", lambda a: a[:5] + [1.0] + a[6:]),
                 ("beta2-high", lambda a: a[:6] + [1.5] + a[7:]),
                 ("step-zero", lambda a: a[:7] + [0] + a[8:]),
                 ("step-float", lambda a: a[:7] + [2.0] + a[8:]),
                 ("eps-negative", lambda a: a[:8] + [-1.0] + a[9:])]
    if name == "rmsprop_update":
        muts.append(("decay-negative", lambda a: a[:4] + [-0.1] + a[5:]))
    return muts


OPT_BAD = [(name, label, f) for name in OPTIMIZERS
           for label, f in _opt_mutations(name, OPTIMIZERS[name][0])]


@pytest.mark.parametrize("name,label,mutate", OPT_BAD, ids=[f"{n}-{l}" for n, l, _ in OPT_BAD])
def test_optimizer_bad_input_same_error(name, label, mutate):
    args, _ = _opt_args(name, np.random.default_rng(1))
    bad = mutate(args)
    before = clone(bad)
    _same_error(name, bad)
    # a rejected update writes nothing
    for a, b in zip(bad[0] if isinstance(bad[0], list) else [], before[0]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layout", ["same array twice", "overlapping views"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_lists_sharing_memory_update_in_list_order(name, layout, threads):
    """Parameters that share memory are updated as the reference does, one after the
    other in list order, on any thread count: split across two threads, the two rows
    raced (elements updated once instead of twice)."""
    n_states, hyper = OPTIMIZERS[name]
    n = 1 << 17                             # large enough to split across threads
    rng = np.random.default_rng(5)

    def lists():
        base = rng.standard_normal(n + n // 2)
        if layout == "same array twice":
            params = [base[:n], base[:n]]
        else:
            params = [base[:n], base[n // 2:]]
        grads = [rng.standard_normal(n) for _ in params]
        states = [[np.abs(rng.standard_normal(n)) for _ in params] for _ in range(n_states)]
        return base, params, grads, states

    for nt in (1, 2):
        threads(nt)
        base_want, p_want, g, st_want = lists()
        rng = np.random.default_rng(5)
        base_got, p_got, _, st_got = lists()
        REF[name](p_want, g, *st_want, *hyper)
        CY[name](p_got, g, *st_got, *hyper)
        np.testing.assert_allclose(base_got, base_want, rtol=1e-12, atol=1e-12)
        for got, want in zip(st_got, st_want):
            for a, b in zip(got, want):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        rng = np.random.default_rng(5)


# The compiled updates take bare addresses; a hyperparameter's __float__ / __index__ (or
# another thread) runs Python between the checks and the update.  Each case runs in a
# child process, so a write into freed memory shows as a crash or as changed junk.
_MUTATING_HYPER = {
    "lr_float_clears_params": """
import gc, numpy as np
from zerodl._kernels import table
params = [np.ones(1 << 16)]; grads = [np.full(1 << 16, 2.0)]   # params[0]: no other name
class LR(float):
    def __float__(self):
        params.clear(); gc.collect()
        global junk
        junk = [np.full(1 << 16, 7.0) for _ in range(4)]
        return 0.5
table("cython")["sgd_update"](params, grads, LR(0.5))
assert all((j == 7.0).all() for j in junk), "freed memory written"
""",
    "step_index_clears_lists": """
import gc, numpy as np
from zerodl._kernels import table
n = 1 << 16
params, grads = [np.ones(n)], [np.ones(n)]
ms, vs = [np.zeros(n)], [np.zeros(n)]
p = params[0]
class Step:
    def __index__(self):
        params.clear(); ms.clear(); vs.clear(); gc.collect()
        global junk
        junk = [np.full(n, 7.0) for _ in range(8)]
        return 1
table("cython")["adam_update"](params, grads, ms, vs, 0.1, 0.9, 0.999, Step())
assert all((j == 7.0).all() for j in junk), "freed memory written"
assert (p < 1.0).all(), "the parameter passed in was not updated"
""",
    "lr_float_swaps_checked_gradient": """
import numpy as np
from zerodl._kernels import table
n = 1 << 20
base = np.ones((n, 2)); params = [base[:, 0]]      # strided: the plan's path
grads = [np.full(n, 2.0)]
class LR(float):
    def __float__(self):
        grads[0] = np.ones(1)                      # too small for the parameter
        return 0.5
table("cython")["sgd_update"](params, grads, LR(0.5))
assert (params[0] == 0.0).all(), "the update did not use the checked gradient"
""",
}


@pytest.mark.skipif(not cython_available(), reason="cython kernels not built")
@pytest.mark.parametrize("case", list(_MUTATING_HYPER))
def test_update_survives_lists_changed_by_the_checks(case, tmp_path):
    """The arrays the lists held when the update was called are the ones updated, and
    kept alive until it is done, whatever the checks' Python does to the lists."""
    import os
    import subprocess
    import sys

    import zerodl
    # the child imports the zerodl this process runs (installed or built in place), not
    # a source tree that happens to be its working directory
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(zerodl.__file__)))
    run = subprocess.run([sys.executable, "-c", _MUTATING_HYPER[case]], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-2000:]


# ---------------------------------------------------------------- properties

dims = st.integers(0, 24)
pos_dims = st.integers(1, 24)
dtypes = st.sampled_from(DTYPES)


@HYPO
@given(n=dims, d=dims, m=dims, dtype=dtypes, seed=st.integers(0, 2**32 - 1),
       fortran=st.booleans())
def test_affine_property(n, d, m, dtype, seed, fortran):
    rng = np.random.default_rng(seed)
    x, W, b = _affine_fwd(rng, dtype, n, d, m)
    dout = rand(rng, (n, m), dtype)
    if fortran:
        x, W, dout = np.asfortranarray(x), np.asfortranarray(W), np.asfortranarray(dout)
    assert_close(CY["affine_forward"](x, W, b), REF["affine_forward"](x, W, b))
    assert_close(CY["affine_backward"](dout, x, W), REF["affine_backward"](dout, x, W))


@HYPO
@given(shape=st.lists(st.integers(0, 9), min_size=0, max_size=4), dtype=dtypes,
       scale=st.floats(0.01, 100.0), seed=st.integers(0, 2**32 - 1))
def test_activation_property(shape, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, tuple(shape), dtype, scale=scale)
    dout = rand(rng, tuple(shape), dtype)
    for kind in ("relu", "sigmoid", "tanh"):
        out = REF[f"{kind}_forward"](x)
        assert_close(CY[f"{kind}_forward"](x), out, _scale(f"{kind}_forward", [x]))
        out = np.asarray(out)
        assert_close(CY[f"{kind}_backward"](dout, out), REF[f"{kind}_backward"](dout, out),
                     _scale(f"{kind}_backward", [dout, out]))


@HYPO
@given(n=dims, c=pos_dims, dtype=dtypes, scale=st.floats(0.1, 30.0), onehot=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_softmax_property(n, c, dtype, scale, onehot, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, (n, c), dtype, scale=scale)
    t = _labels(rng, n, c, onehot, dtype)
    expected = REF["softmax_cross_entropy_forward"](x, t)
    actual = CY["softmax_cross_entropy_forward"](x, t)
    assert_close(actual, expected)
    assert_close(CY["softmax_cross_entropy_backward"](actual[1], t, 2.0),
                 REF["softmax_cross_entropy_backward"](expected[1], t, 2.0))


@HYPO
@given(n=pos_dims, d=dims, dtype=dtypes, shift=st.floats(-1e3, 1e3), spread=st.floats(1e-2, 1e2),
       seed=st.integers(0, 2**32 - 1))
def test_batchnorm_property(n, d, dtype, shift, spread, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, (n, d), dtype, scale=spread, shift=shift)
    g, b = _bn_params(rng, dtype, d)
    r_ref, r_cy = _running(rng, dtype, d), None
    r_cy = clone(r_ref)
    # x - mean is only as exact as the rounding of mean (~ulp(shift)): both backends lose
    # ~|shift|/spread ulps relative to the spread, so the tolerance follows
    expected = REF["batchnorm_forward_train"](x, g, b, *r_ref)
    actual = CY["batchnorm_forward_train"](x, g, b, *r_cy)
    rel = max(1.0, abs(shift) / spread)
    out_scale = rel * float(np.max(np.abs(g), initial=0) + np.max(np.abs(b), initial=0)) * 4
    assert_close(actual, expected, (out_scale, rel * 4, None))
    assert_close(r_cy[0], r_ref[0])
    assert_close(r_cy[1], r_ref[1])
    dout = rand(rng, (n, d), dtype)
    args = [dout, expected[1], g, expected[2]]
    assert_close(CY["batchnorm_backward"](*args), REF["batchnorm_backward"](*args),
                 _scale("batchnorm_backward", args))


@HYPO
@given(n=pos_dims, d=dims, m=dims, dtype=dtypes, shift=st.floats(-1e3, 1e3),
       spread=st.floats(1e-2, 1e2), momentum=st.floats(0.0, 1.0),
       eps=st.sampled_from([1e-8, 1e-6, 1e-3]), fortran=st.booleans(),
       need_dx=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_affine_bn_relu_property(n, d, m, dtype, shift, spread, momentum, eps, fortran,
                                 need_dx, seed):
    """The fused affine + batch norm + ReLU over any shape (N >= 1, D and M from 0),
    bias shift, spread of the GEMM output and hyperparameters: outputs and running
    statistics like the reference's, and the backward's gradients too."""
    rng = np.random.default_rng(seed)
    x = rand(rng, (n, d), dtype)
    W = rand(rng, (d, m), dtype, scale=spread / np.sqrt(max(d, 1)))
    b = rand(rng, m, dtype, scale=spread, shift=shift)
    g, beta = _bn_params(rng, dtype, m)
    r_ref = _running(rng, dtype, m)
    r_cy = clone(r_ref)
    if fortran:
        x, W = np.asfortranarray(x), np.asfortranarray(W)
    args = [x, W, b, g, beta]
    scales, (sm, sv) = _abr_forward_scales(*args, *r_ref, momentum, eps)
    expected = REF["affine_bn_relu_forward"](*args, *r_ref, momentum, eps)
    actual = CY["affine_bn_relu_forward"](*args, *r_cy, momentum, eps)
    assert_close(actual, expected, scales)
    assert (actual[0] >= 0).all()
    assert_close(r_cy[0], r_ref[0], sm)
    assert_close(r_cy[1], r_ref[1], sv)
    dout = rand(rng, (n, m), dtype)
    if fortran:
        dout = np.asfortranarray(dout)
    bargs = [dout, expected[0], expected[1], g, expected[2], x, W, need_dx]
    assert_close(CY["affine_bn_relu_backward"](*bargs), REF["affine_bn_relu_backward"](*bargs),
                 _abr_backward_scales(*bargs))


@HYPO
@given(shape=st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 6),
                       st.integers(0, 6)),
       dtype=dtypes, seed=st.integers(0, 2**32 - 1))
def test_spatial_norms_property(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    x = rand(rng, shape, dtype, scale=2.0, shift=3.0)
    g, b = _bn_params(rng, dtype, c)
    dout = rand(rng, shape, dtype)
    if n * h * w > 0:
        r_ref = _running(rng, dtype, c)
        r_cy = clone(r_ref)
        expected = REF["spatial_batchnorm_forward_train"](x, g, b, *r_ref)
        assert_close(CY["spatial_batchnorm_forward_train"](x, g, b, *r_cy), expected)
        assert_close(r_cy[0], r_ref[0])
        args = [dout, expected[1], g, expected[2]]
        assert_close(CY["spatial_batchnorm_backward"](*args),
                     REF["spatial_batchnorm_backward"](*args),
                     _scale("spatial_batchnorm_backward", args))
    if h * w > 0:
        expected = REF["instancenorm_forward"](x, g, b)
        assert_close(CY["instancenorm_forward"](x, g, b), expected)
        args = [dout, expected[1], g, expected[2]]
        assert_close(CY["instancenorm_backward"](*args), REF["instancenorm_backward"](*args),
                     _scale("instancenorm_backward", args))


@HYPO
@given(shapes=st.lists(st.lists(st.integers(0, 40), min_size=0, max_size=3), min_size=0,
                       max_size=6),
       name=st.sampled_from(list(OPTIMIZERS)), dtype=dtypes, seed=st.integers(0, 2**32 - 1))
def test_optimizer_property(shapes, name, dtype, seed):
    rng = np.random.default_rng(seed)
    n_states, hyper = OPTIMIZERS[name]
    params, grads, states = _opt_lists(rng, dtype, [tuple(s) for s in shapes], n_states)
    _run_both(name, params, grads, states, hyper)


# ---------------------------------------------------------------- fused = composed

def _composed_abr_forward(T, x, W, b, gamma, beta, running_mean, running_var, momentum, eps):
    """affine_forward -> batchnorm_forward_train -> relu_forward of one backend."""
    y, xhat, inv_std = T["batchnorm_forward_train"](T["affine_forward"](x, W, b), gamma, beta,
                                                    running_mean, running_var, momentum, eps)
    return T["relu_forward"](y), xhat, inv_std


def _composed_abr_backward(T, dout, out, xhat, gamma, inv_std, x, W, need_dx=True):
    """relu_backward -> batchnorm_backward -> affine_backward of one backend."""
    da, dgamma, dbeta = T["batchnorm_backward"](T["relu_backward"](dout, out), xhat, gamma,
                                                inv_std)
    dx, dW, db = T["affine_backward"](da, x, W, need_dx)
    return dx, dW, db, dgamma, dbeta


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@pytest.mark.parametrize("size", [dict(n=1, d=1, m=1), dict(), dict(n=2, d=1, m=3),
                                  dict(d=0), dict(m=0), dict(n=64, d=300, m=100),
                                  dict(n=400, d=100, m=257)],
                         ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()) or "default")
def test_affine_bn_relu_equals_the_kernels_in_turn(backend, size, rng, threads):
    """In each backend the fused forward is affine_forward -> batchnorm_forward_train ->
    relu_forward (out, xhat, inv_std, and the running statistics left as the batch norm
    leaves them) and the fused backward is relu_backward -> batchnorm_backward ->
    affine_backward, with need_dx=False skipping dx only: float64 to TOL, float32 within
    TOL of the scale of the terms (the GEMM with the bias added in another order)."""
    T = table(backend)
    for nt in (1, 2):
        threads(nt)
        for dt in DTYPES:
            args = _abr_fwd(rng, dt, **size)
            scales, (sm, sv) = _abr_forward_scales(*args)
            fused_args, composed_args = clone(args), clone(args)
            fused = T["affine_bn_relu_forward"](*fused_args)
            composed = _composed_abr_forward(T, *composed_args)
            assert_close(fused, composed, scales)
            assert_close(fused_args[5], composed_args[5], sm)
            assert_close(fused_args[6], composed_args[6], sv)
            if backend == "numpy":  # the reference is that composition, bit for bit
                for a, e in zip(fused + tuple(fused_args[5:7]),
                                composed + tuple(composed_args[5:7])):
                    np.testing.assert_array_equal(a, e)
            # the running statistics moved (unless there is nothing to move)
            if size.get("m", 5):
                assert not np.array_equal(fused_args[5], args[5])
            for i in (0, 1, 2, 3, 4):
                np.testing.assert_array_equal(fused_args[i], args[i])

            out, xhat, inv_std = fused
            n, m = out.shape
            dout = rand(rng, (n, m), dt)
            bargs = [dout, out, xhat, args[3], inv_std, args[0], args[1]]
            bscales = _abr_backward_scales(*bargs)
            want = _composed_abr_backward(T, *bargs)
            got = T["affine_bn_relu_backward"](*bargs)
            assert_close(got, want, bscales)
            if backend == "numpy":
                for a, e in zip(got, want):
                    np.testing.assert_array_equal(a, e)
            skipped = T["affine_bn_relu_backward"](*bargs, need_dx=False)
            assert skipped[0] is None
            # dgamma, dbeta and db do not depend on need_dx; dW may differ in the last
            # bits in cython, where dx's GEMM runs beside dW's (each on half the threads)
            # while without it dW's GEMM is split across all of them
            for a, e in zip(skipped[2:], got[2:]):
                np.testing.assert_array_equal(a, e)
            if backend == "numpy":
                np.testing.assert_array_equal(skipped[1], got[1])
            else:
                assert_close(skipped[1:2], got[1:2], bscales and bscales[1:2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, d, m", [(100, 784, 100),   # split by rows of out / dW
                                     (3, 2000, 600),    # out has fewer rows than columns
                                     (257, 400, 31)])   # uneven parts
def test_split_gemm_matches_reference(n, d, m, dtype, rng, threads):
    """Large enough affine GEMMs are cut across OpenMP threads (rows, or columns when
    there are fewer rows), each part a single-threaded BLAS call: any thread count and
    operand layout gives the reference's result, and BLAS's own thread count is given
    back afterwards."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    x, W, b = _affine_fwd(rng, dtype, n, d, m)
    dout = rng.standard_normal((n, m)).astype(dtype)
    want_f = REF["affine_forward"](x, W, b)
    want_b = REF["affine_backward"](dout, x, W)
    # backward: dx's and dW's GEMMs side by side on halves of the threads (2 and 4),
    # or one after the other (1 and 3)
    for nt in (1, 2, 3, 4):
        threads(nt)
        for xx, WW in ((x, W), (np.asfortranarray(x), np.asfortranarray(W))):
            assert_close(CY["affine_forward"](xx, WW, b), want_f)
            assert_close(CY["affine_backward"](dout, xx, WW), want_b)
    after = [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    assert after == before


def test_kernels_can_hold_scipy_blas_to_one_thread():
    """With scipy's OpenBLAS (what pip installs) the kernels find its thread setter."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy.linalg.cython_blas  # noqa: F401 - the library the kernels call
    libs = [i for i in threadpoolctl.threadpool_info() if i["internal_api"] == "openblas"
            and "scipy.libs" in (i["filepath"] or "")]
    if not libs:
        pytest.skip("scipy is not linked to its bundled OpenBLAS here")
    assert _kernels.build_info()["blas_single_threaded_in_kernels"] is True


@pytest.mark.parametrize("form", ["intp", "int32", "uint8", "strided", "big-endian",
                                  "onehot-f64"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_label_forms_agree(form, dtype):
    """Contiguous intp labels take the compiled kernels' checked-in-C path; every other
    form goes through the shared checks: all give the same loss and gradient."""
    rng = np.random.default_rng(7)
    n, c = 37, 11
    x = rand(rng, (n, c), dtype, scale=3.0)
    t = rng.integers(0, c, n)
    forms = {"intp": t.astype(np.intp), "int32": t.astype(np.int32),
             "uint8": t.astype(np.uint8), "strided": np.repeat(t, 2)[::2],
             "big-endian": t.astype(">i8"), "onehot-f64": np.eye(c)[t]}
    tf = forms[form]
    assert form != "strided" or not tf.flags.c_contiguous
    for k in (CY, REF):
        loss, y = k["softmax_cross_entropy_forward"](x, tf)
        loss0, y0 = REF["softmax_cross_entropy_forward"](x, t.astype(np.intp))
        assert_close((loss, y), (loss0, y0))
        assert_close(k["softmax_cross_entropy_backward"](y, tf, 0.5),
                     REF["softmax_cross_entropy_backward"](y0, t, 0.5))


@pytest.mark.parametrize("bad", [-1, 11])
@pytest.mark.parametrize("where", [0, 36])
def test_softmax_out_of_range_intp_label_same_error(bad, where):
    """An out-of-range label at either end of a contiguous intp array is caught by the
    compiled check and reported with the reference's message."""
    x = np.zeros((37, 11), np.float32)
    t = np.zeros(37, np.intp)
    t[where] = bad
    for name, args in (("softmax_cross_entropy_forward", (x, t)),
                       ("softmax_cross_entropy_backward", (x, t))):
        with pytest.raises(ValueError) as ref_err:
            REF[name](*args)
        with pytest.raises(ValueError) as cy_err:
            CY[name](*args)
        assert str(cy_err.value) == str(ref_err.value)
        assert "[0, 11)" in str(cy_err.value)


@pytest.mark.parametrize("case", ["subclass", "strided", "fortran", "0-d", "empty"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_backward_pair_forms(case, dtype):
    """The backward's in-C recognition of a (dout, out) pair accepts exactly what the
    checks accept: subclasses, strided and Fortran-ordered arrays give the reference's
    result."""
    rng = np.random.default_rng(3)
    shape = {"0-d": (), "empty": (0, 5)}.get(case, (6, 9))
    dout = rand(rng, (12, 18) if case == "strided" else shape, dtype)
    out = rand(rng, (12, 18) if case == "strided" else shape, dtype)
    if case == "strided":
        dout, out = dout[::2, ::2], out[1::2, ::2]
    elif case == "fortran":
        dout, out = np.asfortranarray(dout), np.asfortranarray(out)
    elif case == "subclass":
        dout, out = dout.view(np.matrix), out
    for kind in ("relu", "sigmoid", "tanh"):
        got = CY[f"{kind}_backward"](dout, out)
        want = REF[f"{kind}_backward"](np.asarray(dout), np.asarray(out))
        assert_close(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("name", ["relu_backward", "sigmoid_backward", "tanh_backward",
                                  "dropout_forward", "dropout_backward"])
def test_byteswapped_floats_rejected_like_the_reference(name):
    """'>f4' has float32's type number: the compiled wrappers' in-C recognition must still
    send it to the checks, which reject it (reading it as native floats would be wrong)."""
    swapped = np.arange(12, dtype=">f4").reshape(3, 4)
    native = np.ones((3, 4), dtype=np.float32)
    if name.startswith("dropout"):
        cases = [(swapped, np.ones((3, 4), dtype=bool))]
    else:  # either argument of the pair byte-swapped
        cases = [(swapped, native), (native, swapped)]
    for args in cases:
        with pytest.raises(TypeError) as ref_err:
            REF[name](*args)
        with pytest.raises(TypeError) as cy_err:
            CY[name](*args)
        assert str(cy_err.value) == str(ref_err.value)


@pytest.mark.parametrize("case", ["strided", "fortran", "0-d", "empty", "subclass"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_forms_agree(case, dtype):
    rng = np.random.default_rng(11)
    shape = {"0-d": (), "empty": (0, 4)}.get(case, (12, 10))
    x = rand(rng, shape, dtype)
    mask = np.asarray(rng.random(shape) > 0.4)
    if case == "strided":
        x, mask = x[::2, ::3], mask[1::2, ::3]
    elif case == "fortran":
        x, mask = np.asfortranarray(x), np.asfortranarray(mask)
    elif case == "subclass":
        x = x.view(np.matrix)
    for name in ("dropout_forward", "dropout_backward"):
        got = CY[name](x, mask, 1.75)
        want = REF[name](np.asarray(x), mask, 1.75)
        assert np.asarray(got).shape == np.asarray(want).shape
        assert_close(np.asarray(got), np.asarray(want))


BN_RECOGNISED = ["batchnorm_forward_train", "batchnorm_forward_infer", "batchnorm_backward",
                 "affine_bn_relu_forward", "affine_bn_relu_backward"]


@pytest.mark.parametrize("case", BN_RECOGNISED)
def test_batchnorm_byteswapped_argument_rejected_like_the_reference(case, rng):
    """The batch norms recognise well-formed arguments in C; a byte-swapped array in any
    position must still reach the checks and fail with the reference's error."""
    args = CASES[case][0](rng, np.float32)
    positions = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
    assert len(positions) >= 4
    for i in positions:
        bad = clone(args)
        bad[i] = bad[i].astype(bad[i].dtype.newbyteorder(">"))
        with pytest.raises(TypeError) as ref_err:
            _call(REF, case, clone(bad))
        with pytest.raises(TypeError) as cy_err:
            _call(CY, case, bad)
        assert str(cy_err.value) == str(ref_err.value), f"argument {i}"


@pytest.mark.parametrize("form", ["int", "numpy-float32", "numpy-float64", "bool-like"])
@pytest.mark.parametrize("case", ["batchnorm_forward_train", "batchnorm_forward_infer",
                                  "affine_bn_relu_forward"])
def test_batchnorm_hyperparameter_forms_agree(case, form, rng):
    """momentum and eps given as ints or NumPy scalars (which the in-C recognition leaves
    to the checks) give the reference's results; numpy.bool_ is refused like it."""
    args = CASES[case][0](rng, np.float64)
    momentum_at = len(args) - 2 if case != "batchnorm_forward_infer" else None
    convert = {"int": lambda v: int(round(v)) or 1, "numpy-float32": np.float32,
               "numpy-float64": np.float64, "bool-like": lambda v: np.bool_(True)}[form]
    if momentum_at is not None:
        args[momentum_at] = convert(0.75) if form != "int" else 1
    args[-1] = convert(1e-3) if form != "int" else 1
    if form == "bool-like":
        with pytest.raises(TypeError) as ref_err:
            _call(REF, case, clone(args))
        with pytest.raises(TypeError) as cy_err:
            _call(CY, case, args)
        assert str(cy_err.value) == str(ref_err.value)
    else:
        _check_case(case, args)


@pytest.mark.parametrize("case", BN_RECOGNISED)
def test_batchnorm_subclass_and_readonly_inputs_agree(case, rng):
    """np.matrix inputs and read-only inputs (other than the running statistics) are
    accepted as the checks accept them and give the reference's results."""
    args = CASES[case][0](rng, np.float64)
    inplace = CASES[case][1]
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray) and i not in inplace:
            a.flags.writeable = False
    if args[0].ndim == 2:
        args[0] = args[0].view(np.matrix)
    ref_args = [np.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    _check_case(case, args, ref_args=ref_args)


@pytest.mark.parametrize("c", [1, 10, 63, 64, 200])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_short_and_long_rows_agree_on_any_thread_count(c, dtype, threads):
    """Rows shorter than 64 take their exponentials over the whole block of rows, longer
    ones row by row: both agree with the reference, on wide-ranging and -inf logits, and
    give the same loss and probabilities whatever the thread count."""
    rng = np.random.default_rng(c)
    n = max(40000 // c, 4)      # enough elements for the batch to split over threads
    x = rand(rng, (n, c), dtype, scale=30.0)
    x[::7, 0] = -1e4
    if c > 1:
        x[1::5, -1] = -np.inf
    t = rng.integers(0, c, n)
    t[1::5] = 0                 # never the -inf column
    expected = REF["softmax_cross_entropy_forward"](x, t)
    results = []
    for k in (1, 2, 3):
        threads(k)
        results.append(CY["softmax_cross_entropy_forward"](x, t))
        assert_close(results[-1], expected)
        assert np.isfinite(results[-1][0])
    for loss, y in results[1:]:
        assert loss == results[0][0]
        np.testing.assert_array_equal(y, results[0][1])


def _unaligned(obj, offset=1):
    """obj with every non-empty array replaced by a C-contiguous copy that starts `offset`
    bytes into its buffer, so that it is not aligned to its item size."""
    if isinstance(obj, list):
        return [_unaligned(o, offset) for o in obj]
    if not isinstance(obj, np.ndarray) or obj.size == 0 or obj.itemsize == 1:
        return obj
    buf = np.zeros(obj.nbytes + 16, np.uint8)
    u = np.ndarray(obj.shape, obj.dtype, buffer=buf, offset=offset)
    u[...] = obj
    u.flags.writeable = obj.flags.writeable
    assert not u.flags.aligned
    return u


@pytest.mark.parametrize("case", list(CASES))
def test_unaligned_arrays_agree(case, rng):
    """Arrays whose data does not start on an item boundary (np.frombuffer at an odd
    offset makes them) are read and, in place, written like aligned ones: the reference's
    results, nothing else touched, and no fault in the vector loops."""
    builder, _, sizes = CASES[case]
    for dt in DTYPES:
        base = builder(rng, dt, **sizes[-1])
        _check_case(case, _unaligned(base), ref_args=base)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_unaligned_arrays(name, rng):
    n_states, hyper = OPTIMIZERS[name]
    for dt in DTYPES:
        params, grads, states = _opt_lists(rng, dt, [(50,), (6, 7), (3000,)], n_states)
        _run_both(name, _unaligned(params), _unaligned(grads), _unaligned(states), hyper)
