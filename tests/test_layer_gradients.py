"""Numerical-gradient checks of every layer in zerodl.layers, and of the fused
convolution + ReLU + max-pool kernel, on every available backend.

The fused layers (ConvReluPool, AffineBNReLU) keep their parameters and gradients on the
layers they wrap: their cases name them by path (``conv.W``, gradient ``conv.dW``).

Each layer's input gradient is checked through a random projection loss
``sum(forward(x) * R)`` (so ``backward(R)`` must equal d loss / dx) and its parameter
gradients (``dW``, ``dgamma``, ...) the same way, against central differences with
h = 1e-5 in float64.  Shapes are odd on purpose (N=3, D=7, C=2, H=5, W=6).  Also:
backward never writes into ``dout`` or the forward input, and float32 stays float32.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import zerodl.layers as L
from zerodl import _kernels

N, D, C, H, W = 3, 7, 2, 5, 6
IMG = (N, C, H, W)
H_STEP = 1e-5

# Tolerances, one table per dtype.
#   grad:  relative error of analytic vs central-difference gradients (float64 only)
#   match: float32 results against the same computation in float64
TOL = {
    np.dtype(np.float64): {"grad": 1e-6},
    np.dtype(np.float32): {"match_rtol": 2e-4, "match_atol": 2e-5},
}


# ---------------------------------------------------------------- helpers

def numeric_grad(f: Callable[[], float], a: np.ndarray, h: float = H_STEP) -> np.ndarray:
    """Central differences of the scalar ``f()`` w.r.t. ``a``, perturbed in place."""
    grad = np.zeros_like(a)
    for idx in np.ndindex(*a.shape):
        old = a[idx]
        a[idx] = old + h
        f_plus = f()
        a[idx] = old - h
        f_minus = f()
        a[idx] = old
        grad[idx] = (f_plus - f_minus) / (2 * h)
    return grad


def rel_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """max |a - n| / max(max |a|, max |n|): scale-free, robust to zero entries."""
    scale = max(np.max(np.abs(analytic)), np.max(np.abs(numeric)), 1e-300)
    return float(np.max(np.abs(analytic - numeric)) / scale)


def away_from_zero(rng, shape, low=0.2, high=1.5):
    """Values of random sign with |v| in [low, high]: no ReLU kink within h."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, high, size=shape)


def distinct(rng, shape, gap=0.01):
    """All-distinct values spaced by ``gap`` (no ties for max pooling, even after +-h)."""
    return (rng.permutation(int(np.prod(shape))) * gap - 0.5).reshape(shape)


def _attr(obj, path):
    """``obj.a.b`` for the path 'a.b'."""
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set_attr(obj, path, value):
    *owner, name = path.split(".")
    setattr(_attr(obj, ".".join(owner)) if owner else obj, name, value)


def _d(path):
    """The gradient's path of a parameter's: 'conv.W' -> 'conv.dW'."""
    *owner, name = path.split(".")
    return ".".join(owner + ["d" + name])


def fresh_rng_forward(seed=11, **kwargs):
    """forward with the layer's generator reset first: the random mask is fixed."""
    def fwd(layer, x):
        layer.rng = np.random.default_rng(seed)
        return layer.forward(x, **kwargs)
    return fwd


# ---------------------------------------------------------------- the cases

@dataclass
class Case:
    id: str
    make: Callable  # (rng) -> (layer, x) in float64
    forward: Callable = lambda layer, x: layer.forward(x)
    params: tuple = ()
    random: bool = False  # draws masks: float32 and float64 runs are not comparable
    # parameters whose gradient is identically zero (a bias ahead of a batch norm, which
    # subtracts it again): both gradients are rounding noise, measured against the
    # largest of the case's other gradients instead of their own size
    zero_grads: tuple = ()


def _affine(x_shape, fan_in, out=4):
    def make(rng):
        return L.Affine(rng.normal(size=(fan_in, out)), rng.normal(size=out)), \
            rng.normal(size=x_shape)
    return make


def _dropconnect(rng):
    layer = L.DropConnect(rng.normal(size=(D, 4)), rng.normal(size=4), drop_ratio=0.4)
    return layer, rng.normal(size=(N, D))


def _gamma_beta(rng, n):
    return rng.uniform(0.5, 1.5, n), rng.normal(size=n)


def _norm(cls, x_shape, features, scale=2.0, shift=0.5):
    def make(rng):
        gamma, beta = _gamma_beta(rng, features)
        return cls(gamma, beta), scale * rng.normal(size=x_shape) + shift
    return make


def _conv(fh, fw, stride, pad, fn=4):
    def make(rng):
        layer = L.Convolution(rng.normal(size=(fn, C, fh, fw)), rng.normal(size=fn),
                              stride=stride, pad=pad)
        return layer, rng.normal(size=IMG)
    return make


def _pool(cls, ph, pw, stride, pad):
    def make(rng):
        return cls(ph, pw, stride=stride, pad=pad), distinct(rng, IMG)
    return make


def _affine_bn_relu(x_shape, fan_in, out=4, margin=0.05):
    """AffineBNReLU over a fresh Affine, BatchNormalization (non-default momentum and eps)
    and Relu, at a point (redrawn until found) where every pre-ReLU value
    gamma * xhat + beta is `margin` or more from 0, with both signs present, and every
    column of the GEMM has unit-order spread: no kink within h, both gated and passing
    units."""
    def make(rng):
        for _ in range(100):
            x = rng.normal(size=x_shape)
            Wt = rng.normal(size=(fan_in, out)) / np.sqrt(fan_in)
            b = rng.normal(size=out)
            gamma, beta = _gamma_beta(rng, out)
            a = x.reshape(x_shape[0], -1) @ Wt + b
            std = a.std(axis=0)
            y = gamma * (a - a.mean(axis=0)) / np.sqrt(std ** 2 + 1e-4) + beta
            if (np.all(std > 0.3) and np.all(np.abs(y) > margin)
                    and 0 < np.count_nonzero(y > 0) < y.size):
                bn = L.BatchNormalization(gamma, beta, momentum=0.7, eps=1e-4)
                return L.AffineBNReLU(L.Affine(Wt, b), bn, L.Relu()), x
        raise AssertionError("no well-conditioned point in 100 draws")
    return make


def _conv_relu_pool(fh, fw, stride, pad, ph, pw, ps, pp, fn=3, gap=1e-3):
    """ConvReluPool over a fresh Convolution and max Pooling, at a point (redrawn until
    found) where every pooling window's maximum of the convolution is `gap` or more from 0
    and, if positive, from the window's runner-up (as test_conv_relu_pool_gradient):
    no kink or tie within h, both gated and passing windows."""
    def make(rng):
        for _ in range(50):
            x = rng.normal(size=IMG)
            Wt = rng.normal(size=(fn, C, fh, fw))
            b = rng.normal(size=fn) - 0.5
            conv = _kernels.table("numpy")["conv_forward"](x, Wt, b, stride, pad)[0]
            top2 = -np.sort(-_windows(conv, ph, pw, ps, pp), axis=1)
            top, runner_up = top2[:, 0], top2[:, 1]
            if (np.all(np.abs(top) > gap) and np.all((top < 0) | (top - runner_up > gap))
                    and 0 < np.count_nonzero(top > 0) < len(top)):
                layer = L.ConvReluPool(L.Convolution(Wt, b, stride=stride, pad=pad),
                                       L.Pooling(ph, pw, stride=ps, pad=pp))
                return layer, x
        raise AssertionError("no well-conditioned point in 50 draws")
    return make


AFFINE_BN_RELU_PARAMS = ("affine.W", "affine.b", "bn.gamma", "bn.beta")
CONV_RELU_POOL_PARAMS = ("conv.W", "conv.b")


def _softmax(kind):
    def make(rng):
        x = rng.normal(size=(N, D))
        labels = rng.integers(0, D, N)
        if kind == "labels":
            t = labels
        elif kind == "one-hot":
            t = np.eye(D)[labels]
        else:  # soft targets: rows of probabilities
            t = rng.dirichlet(np.ones(D), size=N)
        layer = L.SoftmaxWithLoss()
        layer.t_value = t
        return layer, x
    return make


CASES = [
    Case("relu-2d", lambda rng: (L.Relu(), away_from_zero(rng, (N, D)))),
    Case("relu-4d", lambda rng: (L.Relu(), away_from_zero(rng, IMG))),
    Case("sigmoid-2d", lambda rng: (L.Sigmoid(), 2 * rng.normal(size=(N, D)))),
    Case("sigmoid-4d", lambda rng: (L.Sigmoid(), 2 * rng.normal(size=IMG))),
    Case("tanh-2d", lambda rng: (L.Tanh(), rng.normal(size=(N, D)))),
    Case("tanh-4d", lambda rng: (L.Tanh(), rng.normal(size=IMG))),
    Case("affine-2d", _affine((N, D), D), params=("W", "b")),
    Case("affine-4d", _affine(IMG, C * H * W), params=("W", "b")),
    *[Case(f"softmax-{kind}", _softmax(kind),
           forward=lambda layer, x: layer.forward(x, layer.t_value))
      for kind in ("labels", "one-hot", "soft")],
    Case("dropout-2d", lambda rng: (L.Dropout(0.3), rng.normal(size=(N, D))),
         forward=fresh_rng_forward(), random=True),
    Case("dropout-4d", lambda rng: (L.Dropout(0.5), rng.normal(size=IMG)),
         forward=fresh_rng_forward(), random=True),
    Case("dropout-inverted", lambda rng: (L.Dropout(0.3, inverted=True),
                                          rng.normal(size=(N, D))),
         forward=fresh_rng_forward(), random=True),
    Case("dropconnect-train", _dropconnect, forward=fresh_rng_forward(), params=("W", "b"),
         random=True),
    Case("dropconnect-infer", _dropconnect,
         forward=lambda layer, x: layer.forward(x, train_flg=False), params=("W", "b")),
    Case("batchnorm-2d", _norm(L.BatchNormalization, (N, D), D), params=("gamma", "beta")),
    Case("batchnorm-4d-book", _norm(L.BatchNormalization, IMG, C * H * W),
         params=("gamma", "beta")),
    Case("spatial-batchnorm", _norm(L.SpatialBatchNormalization, IMG, C),
         params=("gamma", "beta")),
    Case("layernorm-2d", _norm(L.LayerNormalization, (N, D), D), params=("gamma", "beta")),
    Case("layernorm-4d", _norm(L.LayerNormalization, IMG, C * H * W),
         params=("gamma", "beta")),
    Case("instancenorm", _norm(L.InstanceNormalization, IMG, C), params=("gamma", "beta")),
    Case("conv-3x3-s1-p0", _conv(3, 3, 1, 0), params=("W", "b")),
    Case("conv-3x3-s2-p1", _conv(3, 3, 2, 1), params=("W", "b")),
    Case("conv-2x3-s1-p2", _conv(2, 3, 1, 2), params=("W", "b")),
    Case("conv-3x2-s3-p1", _conv(3, 2, 3, 1), params=("W", "b")),
    Case("conv-1x1-s2-p0", _conv(1, 1, 2, 0), params=("W", "b")),
    Case("conv-5x6-s1-p0", _conv(5, 6, 1, 0), params=("W", "b")),
    Case("maxpool-2x2-s2", _pool(L.Pooling, 2, 2, 2, 0)),
    Case("maxpool-3x3-s2-p1", _pool(L.Pooling, 3, 3, 2, 1)),
    Case("maxpool-2x3-s1", _pool(L.Pooling, 2, 3, 1, 0)),
    Case("maxpool-3x2-s3-p1", _pool(L.Pooling, 3, 2, 3, 1)),
    Case("avgpool-2x2-s2", _pool(L.AvgPooling, 2, 2, 2, 0)),
    Case("avgpool-3x3-s2-p1", _pool(L.AvgPooling, 3, 3, 2, 1)),
    Case("avgpool-3x3-s1-p1", _pool(L.AvgPooling, 3, 3, 1, 1)),
    Case("avgpool-2x3-s2-p1", _pool(L.AvgPooling, 2, 3, 2, 1)),
    # the fused blocks ("batchnorm" in the id: training needs a non-empty batch)
    Case("affine-batchnorm-relu-2d", _affine_bn_relu((N, D), D), params=AFFINE_BN_RELU_PARAMS,
         zero_grads=("affine.b",)),
    Case("affine-batchnorm-relu-4d", _affine_bn_relu(IMG, C * H * W),
         params=AFFINE_BN_RELU_PARAMS, zero_grads=("affine.b",)),
    Case("conv-relu-pool-3x3-s1-p1-pool2x2-s2", _conv_relu_pool(3, 3, 1, 1, 2, 2, 2, 0),
         params=CONV_RELU_POOL_PARAMS),
    Case("conv-relu-pool-2x3-s2-p1-pool3x3-s1-p1", _conv_relu_pool(2, 3, 2, 1, 3, 3, 1, 1),
         params=CONV_RELU_POOL_PARAMS),
    Case("conv-relu-pool-3x2-s1-p0-pool2x3-s1", _conv_relu_pool(3, 2, 1, 0, 2, 3, 1, 0),
         params=CONV_RELU_POOL_PARAMS),
]


def test_every_layer_is_covered():
    covered = {type(c.make(np.random.default_rng(0))[0]).__name__ for c in CASES}
    assert covered == set(L.__all__)


def _cast_layer(layer, dtype):
    """Parameters (and the stored targets of SoftmaxWithLoss) in ``dtype``; a fused
    layer's are on the layers it wraps."""
    for name in ("W", "b", "gamma", "beta"):
        if getattr(layer, name, None) is not None:
            setattr(layer, name, getattr(layer, name).astype(dtype))
    for inner in ("affine", "bn", "conv"):
        if getattr(layer, inner, None) is not None:
            _cast_layer(getattr(layer, inner), dtype)
    return layer


def _projection(out, rng):
    """R for the loss sum(out * R); a python float when out is the scalar loss."""
    if np.ndim(out) == 0:
        return 0.7
    return rng.normal(size=np.shape(out)).astype(out.dtype)


# ---------------------------------------------------------------- gradient checks

@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_numerical_gradient(case, backend):
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    layer, x = case.make(rng)
    out = case.forward(layer, x)
    R = _projection(out, rng)

    def loss():
        return float(np.sum(case.forward(layer, x) * R))

    case.forward(layer, x)
    dx = layer.backward(R)
    grads = {name: _attr(layer, _d(name)).copy() for name in case.params}
    assert dx.shape == x.shape
    tol = TOL[np.dtype(np.float64)]["grad"]
    err = rel_error(dx, numeric_grad(loss, x))
    assert err < tol, f"dx: relative error {err:.2e}"
    floor = max([float(np.max(np.abs(dx)))] + [float(np.max(np.abs(g)))
                                               for name, g in grads.items()
                                               if name not in case.zero_grads])
    for name, g in grads.items():
        p = _attr(layer, name)
        assert g.shape == p.shape
        numeric = numeric_grad(loss, p)
        if name in case.zero_grads:
            assert np.max(np.abs(g)) <= 1e-12 * floor, f"{_d(name)} is not zero: {g}"
            err = float(np.max(np.abs(g - numeric))) / floor
        else:
            err = rel_error(g, numeric)
        assert err < tol, f"{_d(name)}: relative error {err:.2e}"


# (filter_h, filter_w, stride, pad, pool_h, pool_w, pool_stride, pool_pad) on IMG; no pool
# window lies wholly in the padding (its -inf maximum would make the loss -inf).
FUSED_CASES = [
    (3, 3, 1, 1, 2, 2, 2, 0),
    (2, 3, 2, 1, 3, 3, 1, 1),    # overlapping windows, padded
    (3, 2, 1, 0, 2, 3, 1, 0),    # overlapping windows
    (1, 1, 1, 0, 3, 2, 2, 1),
]


def _windows(z, ph, pw, ps, pp):
    """Each pooling window of z (N, C, OH, OW) as a row, padding as -inf."""
    zp = np.pad(z, ((0, 0), (0, 0), (pp, pp), (pp, pp)), constant_values=-np.inf)
    view = np.lib.stride_tricks.sliding_window_view(zp, (ph, pw), axis=(2, 3))
    return view[:, :, ::ps, ::ps].reshape(-1, ph * pw)


@pytest.mark.parametrize("geometry", FUSED_CASES, ids=lambda g: "f{}x{}-s{}p{}-pool{}x{}-s{}p{}"
                         .format(*g))
def test_conv_relu_pool_gradient(geometry, backend):
    """conv_relu_pool_backward's dx, dW, db against central differences of
    sum(conv_relu_pool_forward(x, W, b)[0] * R), at a point (redrawn until found) where
    every window's maximum is 1e-3 or more from 0 and, if positive, from the window's
    runner-up: no kink within h, and both gated and passing windows."""
    fh, fw, s, p, *pool = geometry
    kern = _kernels.table(backend)
    rng = np.random.default_rng(zlib.crc32(repr(geometry).encode()))
    for _ in range(20):
        x = rng.normal(size=IMG)
        Wt = rng.normal(size=(3, C, fh, fw))
        b = rng.normal(size=3) - 0.5     # some windows wholly negative: the gate matters
        top2 = -np.sort(-_windows(kern["conv_forward"](x, Wt, b, s, p)[0], *pool), axis=1)
        top, runner_up = top2[:, 0], top2[:, 1]
        if (np.all(np.abs(top) > 1e-3) and np.all((top < 0) | (top - runner_up > 1e-3))
                and 0 < np.count_nonzero(top > 0) < len(top)):
            break
    else:
        pytest.fail("no well-conditioned point in 20 draws")

    out, col, argmax = kern["conv_relu_pool_forward"](x, Wt, b, s, p, *pool)
    R = rng.normal(size=out.shape)

    def loss():
        return float(np.sum(kern["conv_relu_pool_forward"](x, Wt, b, s, p, *pool)[0] * R))

    grads = kern["conv_relu_pool_backward"](R, out, argmax, col, x.shape, Wt, s, p, *pool)
    tol = TOL[np.dtype(np.float64)]["grad"]
    for name, g, a in zip(("dx", "dW", "db"), grads, (x, Wt, b), strict=True):
        assert g.shape == a.shape and g.dtype == a.dtype, name
        err = rel_error(g, numeric_grad(loss, a))
        assert err < tol, f"{name}: relative error {err:.2e}"


def test_dropout_inference_scales_by_keep_ratio(backend):
    x = np.random.default_rng(0).normal(size=(N, D))
    np.testing.assert_array_equal(L.Dropout(0.3).forward(x, train_flg=False), x * 0.7)
    np.testing.assert_array_equal(L.Dropout(0.3, inverted=True).forward(x, train_flg=False), x)


def test_dropout_mask_is_the_books(backend):
    """Training keeps x exactly where rand > ratio (no rescaling, book style)."""
    x = np.random.default_rng(1).normal(size=(50, 40))
    layer = L.Dropout(0.25, rng=5)
    out = layer.forward(x)
    expected_mask = np.random.default_rng(5).random(x.shape) > 0.25
    np.testing.assert_array_equal(layer.mask, expected_mask)
    np.testing.assert_array_equal(out, np.where(expected_mask, x, 0))
    assert 0.65 < layer.mask.mean() < 0.85


# ---------------------------------------------------------------- no writes to inputs

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_backward_does_not_modify_dout_or_input(case, dtype, backend):
    rng = np.random.default_rng(3)
    layer, x = case.make(rng)
    _cast_layer(layer, dtype)
    x = x.astype(dtype)
    params = {name: _attr(layer, name).copy() for name in case.params}
    x_before = x.copy()
    out = case.forward(layer, x)
    R = _projection(out, rng)
    R_before = np.copy(R)
    layer.backward(R)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(R, R_before)
    for name, value in params.items():
        np.testing.assert_array_equal(_attr(layer, name), value)


# ---------------------------------------------------------------- dtype

@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float32_in_float32_out(case, backend):
    rng = np.random.default_rng(4)
    layer, x64 = case.make(rng)
    layer64 = _cast_layer(case.make(np.random.default_rng(4))[0], np.float64)
    layer32 = _cast_layer(layer, np.float32)
    x32 = x64.astype(np.float32)
    out32 = case.forward(layer32, x32)
    out64 = case.forward(layer64, x64)
    R = _projection(out32, rng)
    dx32 = layer32.backward(R)
    dx64 = layer64.backward(R.astype(np.float64) if isinstance(R, np.ndarray) else R)
    if np.ndim(out32) == 0:
        assert layer32.y.dtype == np.float32
    else:
        assert out32.dtype == np.float32
    assert dx32.dtype == np.float32
    for name in case.params:
        assert _attr(layer32, _d(name)).dtype == np.float32, name
    for owner in (layer32, getattr(layer32, "bn", None)):
        for name in ("running_mean", "running_var"):
            if getattr(owner, name, None) is not None:
                assert getattr(owner, name).dtype == np.float32, name
    if case.random:
        return
    tol = TOL[np.dtype(np.float32)]
    close = dict(rtol=tol["match_rtol"], atol=tol["match_atol"])
    np.testing.assert_allclose(out32, out64, **close)
    np.testing.assert_allclose(dx32, dx64, **close)
    for name in case.params:
        np.testing.assert_allclose(_attr(layer32, _d(name)), _attr(layer64, _d(name)), **close)


# ---------------------------------------------------------------- empty batches

# Batch norm in training mode needs at least one sample: rejecting N=0 is right there.
EMPTY_CASES = [pytest.param(c, id=c.id)
               for c in CASES if "batchnorm" not in c.id]


@pytest.mark.parametrize("case", EMPTY_CASES)
def test_empty_batch_passes_through(case, backend):
    layer, x = case.make(np.random.default_rng(5))
    x0 = x[:0]
    if hasattr(layer, "t_value"):
        layer.t_value = layer.t_value[:0]
    out = case.forward(layer, x0)
    dx = layer.backward(_projection(out, np.random.default_rng(6)))
    assert dx.shape == x0.shape
    for name in case.params:
        g = _attr(layer, _d(name))
        assert g.shape == _attr(layer, name).shape
        assert not np.any(g), f"{_d(name)} of an empty batch must be zero"


# ---------------------------------------------------------------- skipped input gradient

OPTIONAL_DX = [pytest.param(c, id=c.id) for c in CASES
               if c.make(np.random.default_rng(0))[0].input_grad_optional]


@pytest.mark.parametrize("case", OPTIONAL_DX)
def test_backward_without_input_gradient(case, backend):
    """backward(dout, need_dx=False) returns None and computes the parameter gradients
    backward(dout) computes, bit for bit (the first layer of a network skips dx)."""
    rng = np.random.default_rng(7)
    layer, x = case.make(rng)
    out = case.forward(layer, x)
    R = _projection(out, rng)
    dx = layer.backward(R)
    assert dx is not None and dx.shape == x.shape
    full = {name: _attr(layer, _d(name)).copy() for name in case.params}
    for name in case.params:
        _set_attr(layer, _d(name), None)
    case.forward(layer, x)
    assert layer.backward(R, need_dx=False) is None
    for name, g in full.items():
        got = _attr(layer, _d(name))
        assert got is not None and got.dtype == g.dtype, name
        np.testing.assert_array_equal(got, g, err_msg=name)


# ---------------------------------------------------------------- fused = layers in turn

def _close(actual, expected, what):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    assert rel_error(actual, expected) < 1e-12, f"{what}: relative error " \
        f"{rel_error(actual, expected):.2e}"


@pytest.mark.parametrize("case", [c for c in CASES if c.id.startswith("affine-batchnorm-relu")],
                         ids=lambda c: c.id)
def test_affine_bn_relu_layer_equals_the_layers_in_turn(case, backend):
    """Training steps through AffineBNReLU give the output, input and parameter gradients
    and running statistics (the BatchNormalization's momentum and eps) that Affine,
    BatchNormalization and Relu give in turn; inference runs those layers on the running
    statistics the fused steps left."""
    layer, x = case.make(np.random.default_rng(8))
    affine = L.Affine(layer.affine.W.copy(), layer.affine.b.copy())
    bn = L.BatchNormalization(layer.bn.gamma.copy(), layer.bn.beta.copy(),
                              momentum=layer.bn.momentum, eps=layer.bn.eps)
    relu = L.Relu()
    R = np.random.default_rng(9).normal(size=(x.shape[0], affine.W.shape[1]))
    for step in range(2):   # the second step starts from the running statistics of the first
        xs = x + step
        out = layer.forward(xs)
        want = relu.forward(bn.forward(affine.forward(xs)))
        _close(out, want, "out")
        _close(layer.backward(R), affine.backward(bn.backward(relu.backward(R))), "dx")
        for owner, ref, names in ((layer.affine, affine, ("dW", "db")),
                                  (layer.bn, bn, ("dgamma", "dbeta", "running_mean",
                                                  "running_var"))):
            for name in names:
                _close(getattr(owner, name), getattr(ref, name), name)
    np.testing.assert_array_equal(layer.forward(x, train_flg=False),
                                  relu.forward(bn.forward(affine.forward(x), train_flg=False)))


@pytest.mark.parametrize("case", [c for c in CASES if c.id.startswith("conv-relu-pool")],
                         ids=lambda c: c.id)
def test_conv_relu_pool_layer_equals_the_layers_in_turn(case, backend):
    """ConvReluPool's output, input gradient and conv.dW, conv.db are those of
    Convolution, Relu and Pooling in turn."""
    layer, x = case.make(np.random.default_rng(10))
    conv = L.Convolution(layer.conv.W.copy(), layer.conv.b.copy(), stride=layer.conv.stride,
                         pad=layer.conv.pad)
    pool = L.Pooling(layer.pool.pool_h, layer.pool.pool_w, stride=layer.pool.stride,
                     pad=layer.pool.pad)
    relu = L.Relu()
    out = layer.forward(x)
    _close(out, pool.forward(relu.forward(conv.forward(x))), "out")
    R = np.random.default_rng(11).normal(size=out.shape)
    _close(layer.backward(R), conv.backward(relu.backward(pool.backward(R))), "dx")
    _close(layer.conv.dW, conv.dW, "dW")
    _close(layer.conv.db, conv.db, "db")
