"""The book's helper functions (``common.functions``), dtype-preserving and stable."""
from __future__ import annotations

import numpy as np

from ._arrays import as_float
from ._kernels import ops

__all__ = ["identity_function", "step_function", "sigmoid", "sigmoid_grad", "relu",
           "relu_grad", "softmax", "sum_squared_error", "cross_entropy_error", "softmax_loss"]


def identity_function(x):
    return x


def step_function(x):
    return np.array(np.asarray(x) > 0, dtype=int)


def sigmoid(x):
    return ops.sigmoid_forward(as_float(x))


def sigmoid_grad(x):
    """d sigmoid / dx at x."""
    s = sigmoid(x)
    return (1.0 - s) * s


def relu(x):
    return ops.relu_forward(as_float(x))


def relu_grad(x):
    x = as_float(x)
    return (x > 0).astype(x.dtype)


def softmax(x):
    """Softmax over the last axis, shifted by the maximum so exp never overflows."""
    x = as_float(x)
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def sum_squared_error(y, t):
    return 0.5 * np.sum((np.asarray(y) - np.asarray(t)) ** 2)


def _labels_of(t, y):
    t = np.asarray(t)
    if t.size == y.size:  # one-hot: turn into class indices
        t = t.argmax(axis=1)
    return t


def cross_entropy_error(y, t):
    """Mean cross-entropy of probabilities y against labels or one-hot t.

    As in the book, y holds probabilities and 1e-7 guards log(0); prefer
    :func:`softmax_loss` on scores, which is exact.
    """
    y = as_float(y)
    if y.ndim == 1:
        y = y.reshape(1, -1)
        t = np.asarray(t).reshape(1, -1) if np.asarray(t).size == y.size else np.asarray(t).reshape(1)
    t = _labels_of(t, y)
    n = y.shape[0]
    return -np.sum(np.log(y[np.arange(n), t] + 1e-7)) / n


def softmax_loss(X, t):
    """Mean softmax cross-entropy of scores X, computed with log-sum-exp."""
    X = as_float(X)
    if X.ndim == 1:
        X = X.reshape(1, -1)
        t = np.asarray(t).reshape(1, -1) if np.asarray(t).size == X.size else np.asarray(t).reshape(1)
    loss, _ = ops.softmax_cross_entropy_forward(np.ascontiguousarray(X), np.asarray(t))
    return loss
