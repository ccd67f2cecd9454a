"""Numerical-gradient checks of every layer in zerodl.layers, on every available backend.

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
]


def test_every_layer_is_covered():
    covered = {type(c.make(np.random.default_rng(0))[0]).__name__ for c in CASES}
    assert covered == set(L.__all__)


def _cast_layer(layer, dtype):
    """Parameters (and the stored targets of SoftmaxWithLoss) in ``dtype``."""
    for name in ("W", "b", "gamma", "beta"):
        if getattr(layer, name, None) is not None:
            setattr(layer, name, getattr(layer, name).astype(dtype))
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
    grads = {name: getattr(layer, "d" + name).copy() for name in case.params}
    assert dx.shape == x.shape
    tol = TOL[np.dtype(np.float64)]["grad"]
    err = rel_error(dx, numeric_grad(loss, x))
    assert err < tol, f"dx: relative error {err:.2e}"
    for name, g in grads.items():
        p = getattr(layer, name)
        assert g.shape == p.shape
        err = rel_error(g, numeric_grad(loss, p))
        assert err < tol, f"d{name}: relative error {err:.2e}"


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
    params = {name: getattr(layer, name).copy() for name in case.params}
    x_before = x.copy()
    out = case.forward(layer, x)
    R = _projection(out, rng)
    R_before = np.copy(R)
    layer.backward(R)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(R, R_before)
    for name, value in params.items():
        np.testing.assert_array_equal(getattr(layer, name), value)


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
        assert getattr(layer32, "d" + name).dtype == np.float32, name
    for name in ("running_mean", "running_var"):
        if getattr(layer32, name, None) is not None:
            assert getattr(layer32, name).dtype == np.float32, name
    if case.random:
        return
    tol = TOL[np.dtype(np.float32)]
    close = dict(rtol=tol["match_rtol"], atol=tol["match_atol"])
    np.testing.assert_allclose(out32, out64, **close)
    np.testing.assert_allclose(dx32, dx64, **close)
    for name in case.params:
        np.testing.assert_allclose(getattr(layer32, "d" + name), getattr(layer64, "d" + name),
                                   **close)


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
        g = getattr(layer, "d" + name)
        assert g.shape == getattr(layer, name).shape
        assert not np.any(g), f"d{name} of an empty batch must be zero"
