"""Numerical gradients (``common.gradient``): central differences, h = 1e-4."""
from __future__ import annotations

import numpy as np

__all__ = ["numerical_gradient"]


def numerical_gradient(f, x, h=1e-4):
    """Gradient of scalar ``f(x)`` w.r.t. the array ``x``, which is perturbed in place
    (one element at a time, restored afterwards) - ``f`` may read ``x`` through a closure,
    as the book's networks do."""
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise TypeError("x must be a float numpy.ndarray that f reads")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    for _ in it:
        idx = it.multi_index
        original = x[idx].copy()
        x[idx] = original + h
        f_plus = f(x)
        x[idx] = original - h
        f_minus = f(x)
        grad[idx] = (f_plus - f_minus) / (2 * h)
        x[idx] = original
    return grad
