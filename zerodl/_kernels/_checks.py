"""Argument checks shared by every backend.

Both backends call these before doing any work, so a bad argument fails the same way
(same exception type, same message) whichever backend runs, and the compiled loops only
ever see arrays whose shapes, dtypes and ranges have been checked.
"""
from __future__ import annotations

import math
import operator

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_array(name: str, a, ndim: int | None = None, min_ndim: int | None = None):
    """``a`` must be a float32/float64 ndarray (of ``ndim`` dimensions if given)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of float32 or float64, "
                        f"got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if min_ndim is not None and a.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {a.shape}")
    return a


def same_dtype(**arrays) -> np.dtype:
    """All the named arrays share one dtype; returns it."""
    items = list(arrays.items())
    first_name, first = items[0]
    for name, a in items[1:]:
        if a.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but {first_name} has {first.dtype}; "
                            "they must match")
    return first.dtype


def shape_is(name: str, a: np.ndarray, shape: tuple, what: str = "") -> None:
    if a.shape != tuple(shape):
        extra = f" ({what})" if what else ""
        raise ValueError(f"{name} must have shape {tuple(shape)}{extra}, got {a.shape}")


def writable(name: str, a: np.ndarray) -> None:
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only but is updated in place")


def positive_int(name: str, value) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return v


def nonneg_int(name: str, value) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def real(name: str, value, low: float | None = None, high: float | None = None,
         low_open: bool = False) -> float:
    """A finite real number, optionally within [low, high] (or (low, high])."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                      np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if low is not None and (v < low or (low_open and v == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}, got {v}")
    return v


def conv_geometry(in_h: int, in_w: int, filter_h, filter_w, stride, pad,
                  what: str = "filter", prefix: str = "") -> tuple[int, int, int, int, int, int]:
    """Check a sliding-window geometry; returns (filter_h, filter_w, stride, pad, out_h, out_w).
    ``prefix`` names stride and pad as the caller's arguments (``pool_`` for pool_stride)."""
    fh = positive_int(f"{what}_h", filter_h)
    fw = positive_int(f"{what}_w", filter_w)
    s = positive_int(f"{prefix}stride", stride)
    p = nonneg_int(f"{prefix}pad", pad)
    if fh > in_h + 2 * p or fw > in_w + 2 * p:
        raise ValueError(f"{what} {fh}x{fw} is larger than the padded input "
                         f"{in_h + 2 * p}x{in_w + 2 * p}")
    return fh, fw, s, p, (in_h + 2 * p - fh) // s + 1, (in_w + 2 * p - fw) // s + 1


def image_shape(name: str, shape) -> tuple[int, int, int, int]:
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of 4 integers (N, C, H, W), got {shape!r}") from None
    if len(dims) != 4 or min(dims) < 0:
        raise ValueError(f"{name} must be 4 non-negative integers (N, C, H, W), got {shape!r}")
    return dims


def labels(t, n: int, classes: int, dtype: np.dtype):
    """Integer labels (N,) in [0, classes) or one-hot/soft targets (N, classes).

    Returns ``(t, is_index)`` with index labels as intp and targets cast to ``dtype``.
    """
    if not isinstance(t, np.ndarray):
        raise TypeError(f"t must be a numpy.ndarray of labels, got {type(t).__name__}")
    if t.dtype.kind in "iu" and t.ndim == 1:
        if t.shape[0] != n:
            raise ValueError(f"t must have {n} labels (one per row of x), got {t.shape[0]}")
        if n and (t.min() < 0 or t.max() >= classes):
            raise ValueError(f"t labels must lie in [0, {classes}), got range "
                             f"[{t.min()}, {t.max()}]")
        return t.astype(np.intp, copy=False), True
    if t.dtype.kind in "fiub" and t.ndim == 2:
        if t.shape != (n, classes):
            raise ValueError(f"one-hot t must have shape {(n, classes)}, got {t.shape}")
        return t.astype(dtype, copy=False), False
    if t.dtype.kind in "cOSUV":
        raise TypeError(f"t must hold integer labels or real one-hot rows, got dtype {t.dtype}")
    raise ValueError(f"t must be 1-D integer labels of length {n} or one-hot of shape "
                     f"{(n, classes)}, got dtype {t.dtype} and shape {t.shape}")


def mask(name: str, m, shape: tuple) -> np.ndarray:
    if not isinstance(m, np.ndarray) or m.dtype != np.bool_:
        raise TypeError(f"{name} must be a numpy.ndarray of bool")
    shape_is(name, m, shape, "the shape of the masked array")
    return m


def update_lists(params, grads, **states) -> np.dtype | None:
    """Parallel lists of parameter, gradient and state arrays for an in-place update."""
    for name, seq in (("params", params), ("grads", grads), *states.items()):
        if not isinstance(seq, (list, tuple)):
            raise TypeError(f"{name} must be a list of arrays, got {type(seq).__name__}")
    n = len(params)
    for name, seq in (("grads", grads), *states.items()):
        if len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} arrays but params has {n}")
    for i, p in enumerate(params):
        float_array(f"params[{i}]", p)
        writable(f"params[{i}]", p)
        g = float_array(f"grads[{i}]", grads[i])
        shape_is(f"grads[{i}]", g, p.shape, f"the shape of params[{i}]")
        same_dtype(**{f"params[{i}]": p, f"grads[{i}]": g})
        for name, seq in states.items():
            s = float_array(f"{name}[{i}]", seq[i])
            shape_is(f"{name}[{i}]", s, p.shape, f"the shape of params[{i}]")
            same_dtype(**{f"params[{i}]": p, f"{name}[{i}]": s})
            writable(f"{name}[{i}]", s)
    return params[0].dtype if n else None


# ---------------------------------------------------------------- per-kernel sequences
# The argument checks of kernels whose two implementations share them word for word.

def _inner_dims(x, W) -> None:
    """x @ W is defined: x's columns match W's rows."""
    if x.shape[1] != W.shape[0]:
        raise ValueError(f"x has {x.shape[1]} columns but W has {W.shape[0]} rows")


def affine_forward_args(x, W, b) -> None:
    float_array("x", x, 2)
    float_array("W", W, 2)
    float_array("b", b, 1)
    same_dtype(x=x, W=W, b=b)
    _inner_dims(x, W)
    shape_is("b", b, (W.shape[1],), "one bias per column of W")


def affine_backward_args(dout, x, W) -> None:
    float_array("dout", dout, 2)
    float_array("x", x, 2)
    float_array("W", W, 2)
    same_dtype(dout=dout, x=x, W=W)
    _inner_dims(x, W)
    shape_is("dout", dout, (x.shape[0], W.shape[1]), "(rows of x, columns of W)")


def adam_args(params, grads, ms, vs, lr, beta1, beta2, step, eps):
    """Checked (lr, beta1, beta2, step, eps) of an Adam/AdamW update."""
    update_lists(params, grads, ms=ms, vs=vs)
    return adam_hyper(lr, beta1, beta2, step, eps)


def adam_hyper(lr, beta1, beta2, step, eps):
    """Checked (lr, beta1, beta2, step, eps): adam_args once the lists are known good."""
    lr, eps = real("lr", lr), real("eps", eps, 0.0)
    beta1 = real("beta1", beta1, 0.0, 1.0)
    beta2 = real("beta2", beta2, 0.0, 1.0)
    step = positive_int("step", step)
    if beta1 == 1.0 or beta2 == 1.0:
        raise ValueError("beta1 and beta2 must be < 1")
    return lr, beta1, beta2, step, eps


def norm_params(x, gamma, beta, features):
    float_array("gamma", gamma, 1)
    float_array("beta", beta, 1)
    same_dtype(x=x, gamma=gamma, beta=beta)
    shape_is("gamma", gamma, (features,), "one per feature of x")
    shape_is("beta", beta, (features,), "one per feature of x")


def running_stats(x, running_mean, running_var, features):
    for name, r in (("running_mean", running_mean), ("running_var", running_var)):
        float_array(name, r, 1)
        shape_is(name, r, (features,), "one per feature of x")
        same_dtype(x=x, **{name: r})


def bn_hyper(momentum, eps):
    return real("momentum", momentum, 0.0, 1.0), real("eps", eps, 0.0, low_open=True)


def _norm_grad_arrays(dout, xhat, gamma, inv_std, ndim=None, inv_std_ndim=1):
    """The arrays of a normalisation's backward: dout and xhat (ndim-D when given) of one
    shape, gamma 1-D and inv_std inv_std_ndim-D, all of one float dtype."""
    float_array("dout", dout, ndim)
    float_array("xhat", xhat, ndim)
    float_array("gamma", gamma, 1)
    float_array("inv_std", inv_std, inv_std_ndim)
    same_dtype(dout=dout, xhat=xhat, gamma=gamma, inv_std=inv_std)
    shape_is("xhat", xhat, dout.shape, "the shape of dout")


def bn_backward_args(dout, xhat, gamma, inv_std, features_axis_shape):
    _norm_grad_arrays(dout, xhat, gamma, inv_std)
    shape_is("gamma", gamma, features_axis_shape, "one per feature")
    shape_is("inv_std", inv_std, features_axis_shape, "one per feature")


def _bn_train_params(x, gamma, beta, running_mean, running_var, momentum, eps,
                     features):
    """Checks shared by the training-mode batch norms: parameters and running statistics
    of `features` features in x's dtype; returns the checked (momentum, eps)."""
    norm_params(x, gamma, beta, features)
    running_stats(x, running_mean, running_var, features)
    writable("running_mean", running_mean)
    writable("running_var", running_var)
    return bn_hyper(momentum, eps)


def _bn_rows(x):
    if x.shape[0] < 1:
        raise ValueError("x must have at least one row to compute batch statistics")


def bn_train_args(x, gamma, beta, running_mean, running_var, momentum, eps):
    """Checks of training-mode batch norm over the rows of x (N, D); returns the checked
    (momentum, eps)."""
    _bn_rows(x)
    return _bn_train_params(x, gamma, beta, running_mean, running_var, momentum, eps,
                            x.shape[1])


def spatial_bn_train_args(x, gamma, beta, running_mean, running_var, momentum, eps):
    """Checks of training-mode batch norm of x (N, C, H, W) per channel; returns the
    checked (momentum, eps)."""
    float_array("x", x, 4)
    n, c, h, w = x.shape
    if n * h * w < 1:
        raise ValueError("x must have at least one value per channel to compute batch statistics")
    return _bn_train_params(x, gamma, beta, running_mean, running_var, momentum, eps, c)


def affine_bn_relu_args(x, W, b, gamma, beta, running_mean, running_var, momentum, eps):
    """Checks of a fused affine + batch norm + ReLU; returns (momentum, eps).  The batch
    norm sees x @ W + b: x's rows, one feature per column of W."""
    affine_forward_args(x, W, b)
    for name, v in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var)):
        float_array(name, v, 1)
        shape_is(name, v, (W.shape[1],), "one per column of W")
    _bn_rows(x)
    return _bn_train_params(x, gamma, beta, running_mean, running_var, momentum, eps,
                            W.shape[1])


def affine_bn_relu_backward_args(dout, out, xhat, gamma, inv_std, x, W):
    float_array("dout", dout, 2)
    float_array("out", out, 2)
    bn_backward_args(dout, xhat, gamma, inv_std, (dout.shape[1],))
    same_dtype(dout=dout, out=out)
    shape_is("out", out, dout.shape, "the shape of dout")
    affine_backward_args(dout, x, W)


def rownorm_forward_args(x, gamma, beta, eps, ndim):
    """Checks of layer norm (ndim 2) and instance norm (ndim 4): gamma and beta have one
    entry per feature or channel, axis 1 of x.  Returns the checked eps."""
    float_array("x", x, ndim)
    norm_params(x, gamma, beta, x.shape[1])
    return real("eps", eps, 0.0, low_open=True)


def layernorm_backward_args(dout, xhat, gamma, inv_std):
    _norm_grad_arrays(dout, xhat, gamma, inv_std, ndim=2)
    shape_is("gamma", gamma, (dout.shape[1],), "one per feature")
    shape_is("inv_std", inv_std, (dout.shape[0],), "one per row")


def instancenorm_backward_args(dout, xhat, gamma, inv_std):
    _norm_grad_arrays(dout, xhat, gamma, inv_std, ndim=4, inv_std_ndim=2)
    n, c, h, w = dout.shape
    shape_is("gamma", gamma, (c,), "one per channel")
    shape_is("inv_std", inv_std, (n, c), "one per (sample, channel)")


def conv_forward_args(x, W, b, stride, pad):
    """Checks of a convolution's inputs; returns (n, c, h, w, fn, fh, fw, s, p, oh, ow)."""
    float_array("x", x, 4)
    float_array("W", W, 4)
    float_array("b", b, 1)
    same_dtype(x=x, W=W, b=b)
    fn, c, fh, fw = W.shape
    if x.shape[1] != c:
        raise ValueError(f"x has {x.shape[1]} channels but W expects {c}")
    shape_is("b", b, (fn,), "one bias per filter")
    n, _, h, w = x.shape
    _, _, s, p, oh, ow = conv_geometry(h, w, fh, fw, stride, pad)
    return n, c, h, w, fn, fh, fw, s, p, oh, ow


def _conv_input_geometry(x_shape, W, stride, pad):
    """The geometry a backward is given: x_shape (N, C, H, W) against W (FN, C, FH, FW);
    returns conv_forward_args' tuple."""
    n, c, h, w = image_shape("x_shape", x_shape)
    fn, wc, fh, fw = W.shape
    if wc != c:
        raise ValueError(f"x_shape has {c} channels but W expects {wc}")
    _, _, s, p, oh, ow = conv_geometry(h, w, fh, fw, stride, pad)
    return n, c, h, w, fn, fh, fw, s, p, oh, ow


def conv_backward_args(dout, col, x_shape, W, stride, pad):
    """Checks of a convolution backward's inputs; returns conv_forward_args' tuple."""
    float_array("dout", dout, 4)
    float_array("col", col, 2)
    float_array("W", W, 4)
    same_dtype(dout=dout, col=col, W=W)
    n, c, h, w, fn, fh, fw, s, p, oh, ow = _conv_input_geometry(x_shape, W, stride, pad)
    shape_is("dout", dout, (n, fn, oh, ow), "(N, FN, OH, OW)")
    shape_is("col", col, (n * oh * ow, c * fh * fw), "im2col of the input")
    return n, c, h, w, fn, fh, fw, s, p, oh, ow


def conv_relu_pool_args(x, W, b, stride, pad, pool_h, pool_w, pool_stride, pool_pad):
    """Checks of a fused convolution + ReLU + max pooling; returns conv_forward_args'
    tuple followed by the pool's (ph, pw, pool stride, pool pad, pooled h, pooled w)."""
    geometry = conv_forward_args(x, W, b, stride, pad)
    oh, ow = geometry[-2:]
    return geometry + conv_geometry(oh, ow, pool_h, pool_w, pool_stride, pool_pad,
                                    what="pool", prefix="pool_")


def conv_relu_pool_backward_args(dout, out, argmax, col, x_shape, W, stride, pad, pool_h,
                                 pool_w, pool_stride, pool_pad):
    """Checks of the fused backward's inputs; returns
    (n, c, h, w, fn, fh, fw, s, p, oh, ow, ph, pw, pool stride, pool pad)."""
    float_array("dout", dout, 4)
    float_array("out", out, 4)
    float_array("col", col, 2)
    float_array("W", W, 4)
    same_dtype(dout=dout, out=out, col=col, W=W)
    n, c, h, w, fn, fh, fw, s, p, oh, ow = _conv_input_geometry(x_shape, W, stride, pad)
    ph, pw, ps, pp, qh, qw = conv_geometry(oh, ow, pool_h, pool_w, pool_stride, pool_pad,
                                           what="pool", prefix="pool_")
    shape_is("dout", dout, (n, fn, qh, qw), "(N, FN, PH, PW) of the pooled output")
    shape_is("out", out, dout.shape, "the shape of dout")
    pool_argmax("argmax", argmax, dout.shape, ph * pw)
    shape_is("col", col, (n * oh * ow, c * fh * fw), "im2col of the input")
    return n, c, h, w, fn, fh, fw, s, p, oh, ow, ph, pw, ps, pp


def pool_argmax(name: str, argmax, shape: tuple, window: int) -> None:
    """Window positions from maxpool_forward: integers in [0, window), one per output."""
    if not isinstance(argmax, np.ndarray) or argmax.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer numpy.ndarray from maxpool_forward")
    shape_is(name, argmax, shape, "the shape of dout")
    if argmax.size and (argmax.min() < 0 or argmax.max() >= window):
        raise ValueError(f"{name} values must lie in [0, {window})")
