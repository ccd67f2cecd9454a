"""NumPy reference of every kernel: the oracle for the compiled backend and its fallback.

Each function checks its arguments with :mod:`._checks` (the compiled kernels call the
same checks), keeps the dtype of its inputs (float32 stays float32) and never writes to
an input it does not document as updated in place.  Reductions over float32 data are
accumulated in float64.
"""
from __future__ import annotations

import numpy as np

from . import _checks as chk


def _sum0(a: np.ndarray) -> np.ndarray:
    """Column sums accumulated in float64, returned in a's dtype."""
    return a.sum(axis=0, dtype=np.float64).astype(a.dtype, copy=False)


# ---------------------------------------------------------------- affine

def affine_forward(x, W, b):
    """out = x @ W + b for x (N, D), W (D, M), b (M,)."""
    chk.affine_forward_args(x, W, b)
    out = x @ W
    out += b
    return out


def affine_backward(dout, x, W, need_dx=True):
    """Gradients of affine_forward: (dx, dW, db); dx is None when need_dx is false (the
    first layer of a network, whose input gradient nobody uses)."""
    chk.affine_backward_args(dout, x, W)
    return (dout @ W.T if need_dx else None), x.T @ dout, _sum0(dout)


# ---------------------------------------------------------------- activations

def _pair(dout, out):
    chk.float_array("dout", dout)
    chk.float_array("out", out)
    chk.same_dtype(dout=dout, out=out)
    chk.shape_is("dout", dout, out.shape, "the shape of out")


def relu_forward(x):
    chk.float_array("x", x)
    return np.maximum(x, 0)


def relu_backward(dout, out):
    """dx = dout where the forward output was positive (x > 0), else 0."""
    _pair(dout, out)
    return np.where(out > 0, dout, 0).astype(dout.dtype, copy=False)


def sigmoid_forward(x):
    # 0.5 * (1 + tanh(x / 2)) is the logistic function without overflow for large |x|.
    chk.float_array("x", x)
    out = np.tanh(x * 0.5)
    out += 1
    out *= 0.5
    return out


def sigmoid_backward(dout, out):
    _pair(dout, out)
    return dout * (1 - out) * out


def tanh_forward(x):
    chk.float_array("x", x)
    return np.tanh(x)


def tanh_backward(dout, out):
    _pair(dout, out)
    return dout * (1 - out * out)


# ---------------------------------------------------------------- loss

def softmax_cross_entropy_forward(x, t):
    """Mean cross-entropy of softmax(x) against labels t; returns (loss, softmax(x)).

    t is integer labels (N,) or one-hot/soft targets (N, C).  log-softmax is computed
    as x - max - log(sum(exp(x - max))), exact and free of log(0).  An empty batch has
    loss 0.
    """
    chk.float_array("x", x, 2)
    n, c = x.shape
    if c < 1:
        raise ValueError("x must have at least one class column")
    t, is_index = chk.labels(t, n, c, x.dtype)
    shifted = x - x.max(axis=1, keepdims=True) if n else x.copy()
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True, dtype=np.float64)
    y = (exp / total).astype(x.dtype, copy=False)
    log_total = np.log(total)
    if is_index:
        picked = shifted[np.arange(n), t].astype(np.float64)
        loss_sum = float(np.sum(log_total[:, 0] - picked))
    else:
        loss_sum = float(np.sum(t * (log_total - shifted), dtype=np.float64))
    return loss_sum / max(n, 1), y


def softmax_cross_entropy_backward(y, t, dout=1.0):
    """dx = dout * (y - onehot(t)) / N."""
    chk.float_array("y", y, 2)
    n, c = y.shape
    t, is_index = chk.labels(t, n, c, y.dtype)
    scale = chk.real("dout", dout) / max(n, 1)
    dx = y.copy()
    if is_index:
        dx[np.arange(n), t] -= 1
    else:
        dx -= t
    dx *= scale
    return dx


# ---------------------------------------------------------------- batch normalisation


def _bn_train(x2, gamma, beta, running_mean, running_var, momentum, eps):
    """Batch norm over the rows of a 2-D array; updates the running statistics."""
    mean = x2.mean(axis=0, dtype=np.float64)
    centred = x2 - mean
    var = np.mean(centred * centred, axis=0)
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = (centred * inv_std).astype(x2.dtype, copy=False)
    out = xhat * gamma + beta
    running_mean *= momentum
    running_mean += ((1 - momentum) * mean).astype(running_mean.dtype)
    running_var *= momentum
    running_var += ((1 - momentum) * var).astype(running_var.dtype)
    return out, xhat, inv_std.astype(x2.dtype)


def _bn_backward(dout2, xhat2, gamma, inv_std):
    """dx = gamma*inv_std/N * (N*dout - sum(dout) - xhat*sum(dout*xhat)), per column."""
    n = dout2.shape[0]
    dbeta = dout2.sum(axis=0, dtype=np.float64)
    dgamma = np.sum(dout2 * xhat2, axis=0, dtype=np.float64)
    if n == 0:  # no rows: no gradient (and no division by n)
        dx = np.zeros(dout2.shape)
    else:
        dx = (gamma * inv_std / n) * (n * dout2 - dbeta - xhat2 * dgamma)
    dtype = dout2.dtype
    return dx.astype(dtype, copy=False), dgamma.astype(dtype), dbeta.astype(dtype)


def batchnorm_forward_train(x, gamma, beta, running_mean, running_var, momentum=0.9, eps=1e-6):
    """Training-mode batch norm of x (N, D) per column; returns (out, xhat, inv_std).

    running_mean/var (D,) are updated in place: r = momentum*r + (1-momentum)*batch,
    with the biased batch variance (the book's convention).
    """
    chk.float_array("x", x, 2)
    momentum, eps = chk.bn_train_args(x, gamma, beta, running_mean, running_var, momentum, eps)
    return _bn_train(x, gamma, beta, running_mean, running_var, momentum, eps)


def batchnorm_forward_infer(x, gamma, beta, running_mean, running_var, eps=1e-6):
    """Inference-mode batch norm with the running statistics."""
    chk.float_array("x", x, 2)
    chk.norm_params(x, gamma, beta, x.shape[1])
    chk.running_stats(x, running_mean, running_var, x.shape[1])
    eps = chk.real("eps", eps, 0.0, low_open=True)
    scale = gamma / np.sqrt(running_var + eps)
    return ((x - running_mean) * scale + beta).astype(x.dtype, copy=False)


def batchnorm_backward(dout, xhat, gamma, inv_std):
    """Gradients of batch norm over the rows of (N, D): (dx, dgamma, dbeta)."""
    chk.float_array("dout", dout, 2)
    chk.bn_backward_args(dout, xhat, gamma, inv_std, (dout.shape[1],))
    return _bn_backward(dout, xhat, gamma, inv_std)


def affine_bn_relu_forward(x, W, b, gamma, beta, running_mean, running_var, momentum=0.9,
                           eps=1e-6):
    """Affine, training-mode batch norm and ReLU in one call, for x (N, D), W (D, M):
    (out, xhat, inv_std) with out = relu(gamma * xhat + beta) and xhat, inv_std the batch
    norm's of a = x @ W + b; running_mean/var (M,) are updated as batchnorm_forward_train
    does."""
    momentum, eps = chk.affine_bn_relu_args(x, W, b, gamma, beta, running_mean, running_var,
                                            momentum, eps)
    y, xhat, inv_std = _bn_train(affine_forward(x, W, b), gamma, beta, running_mean,
                                 running_var, momentum, eps)
    return relu_forward(y), xhat, inv_std


def affine_bn_relu_backward(dout, out, xhat, gamma, inv_std, x, W, need_dx=True):
    """Gradients of affine_bn_relu_forward: (dx, dW, db, dgamma, dbeta); dx is None when
    need_dx is false."""
    chk.affine_bn_relu_backward_args(dout, out, xhat, gamma, inv_std, x, W)
    da, dgamma, dbeta = _bn_backward(relu_backward(dout, out), xhat, gamma, inv_std)
    dx, dW, db = affine_backward(da, x, W, need_dx)
    return dx, dW, db, dgamma, dbeta


def _to_rows(x4):
    """(N, C, H, W) -> (N*H*W, C): each channel becomes a column."""
    n, c, h, w = x4.shape
    return x4.transpose(0, 2, 3, 1).reshape(n * h * w, c)


def _from_rows(x2, shape):
    n, c, h, w = shape
    return np.ascontiguousarray(x2.reshape(n, h, w, c).transpose(0, 3, 1, 2))


def spatial_batchnorm_forward_train(x, gamma, beta, running_mean, running_var,
                                    momentum=0.9, eps=1e-6):
    """Batch norm of x (N, C, H, W) per channel over (N, H, W), like BatchNorm2d."""
    momentum, eps = chk.spatial_bn_train_args(x, gamma, beta, running_mean, running_var,
                                              momentum, eps)
    out, xhat, inv_std = _bn_train(_to_rows(x), gamma, beta, running_mean, running_var,
                                   momentum, eps)
    return _from_rows(out, x.shape), _from_rows(xhat, x.shape), inv_std


def spatial_batchnorm_forward_infer(x, gamma, beta, running_mean, running_var, eps=1e-6):
    chk.float_array("x", x, 4)
    c = x.shape[1]
    chk.norm_params(x, gamma, beta, c)
    chk.running_stats(x, running_mean, running_var, c)
    eps = chk.real("eps", eps, 0.0, low_open=True)
    scale = (gamma / np.sqrt(running_var + eps)).reshape(1, c, 1, 1)
    shift = (beta - running_mean * scale.ravel()).reshape(1, c, 1, 1)
    return (x * scale + shift).astype(x.dtype, copy=False)


def spatial_batchnorm_backward(dout, xhat, gamma, inv_std):
    chk.float_array("dout", dout, 4)
    chk.bn_backward_args(dout, xhat, gamma, inv_std, (dout.shape[1],))
    dx, dgamma, dbeta = _bn_backward(_to_rows(dout), _to_rows(xhat), gamma, inv_std)
    return _from_rows(dx, dout.shape), dgamma, dbeta


# ---------------------------------------------------------------- layer / instance norm

def _rownorm(x2, eps):
    """Normalise each row of a 2-D array; returns (xhat, inv_std)."""
    mean = x2.mean(axis=1, keepdims=True, dtype=np.float64)
    centred = x2 - mean
    var = np.mean(centred * centred, axis=1, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + eps)
    return (centred * inv_std).astype(x2.dtype, copy=False), inv_std[:, 0].astype(x2.dtype)


def _rownorm_backward(dxhat2, xhat2, inv_std):
    """d/dx of row normalisation: inv_std/D * (D*dxhat - sum(dxhat) - xhat*sum(dxhat*xhat))."""
    d = dxhat2.shape[1]
    s1 = dxhat2.sum(axis=1, keepdims=True, dtype=np.float64)
    s2 = np.sum(dxhat2 * xhat2, axis=1, keepdims=True, dtype=np.float64)
    dx = (inv_std[:, None] / max(d, 1)) * (d * dxhat2 - s1 - xhat2 * s2)
    return dx.astype(dxhat2.dtype, copy=False)


def layernorm_forward(x, gamma, beta, eps=1e-5):
    """Normalise each row of x (N, D) over its D features; gamma, beta (D,)."""
    eps = chk.rownorm_forward_args(x, gamma, beta, eps, 2)
    xhat, inv_std = _rownorm(x, eps)
    return xhat * gamma + beta, xhat, inv_std


def layernorm_backward(dout, xhat, gamma, inv_std):
    chk.layernorm_backward_args(dout, xhat, gamma, inv_std)
    dx = _rownorm_backward(dout * gamma, xhat, inv_std)
    return dx, _sum0(dout * xhat), _sum0(dout)


def instancenorm_forward(x, gamma, beta, eps=1e-5):
    """Normalise each (sample, channel) plane of x (N, C, H, W); gamma, beta (C,)."""
    eps = chk.rownorm_forward_args(x, gamma, beta, eps, 4)
    n, c, h, w = x.shape
    xhat2, inv_std = _rownorm(x.reshape(n * c, h * w), eps)
    xhat = xhat2.reshape(x.shape)
    out = xhat * gamma.reshape(1, c, 1, 1) + beta.reshape(1, c, 1, 1)
    return out, xhat, inv_std.reshape(n, c)


def instancenorm_backward(dout, xhat, gamma, inv_std):
    chk.instancenorm_backward_args(dout, xhat, gamma, inv_std)
    n, c, h, w = dout.shape
    dxhat = dout * gamma.reshape(1, c, 1, 1)
    dx = _rownorm_backward(dxhat.reshape(n * c, h * w), xhat.reshape(n * c, h * w),
                           inv_std.reshape(n * c)).reshape(dout.shape)
    dgamma = np.sum(dout * xhat, axis=(0, 2, 3), dtype=np.float64).astype(dout.dtype)
    dbeta = np.sum(dout, axis=(0, 2, 3), dtype=np.float64).astype(dout.dtype)
    return dx, dgamma, dbeta


# ---------------------------------------------------------------- dropout

def _masked_scale(name, a, mask, scale):
    """a * mask * scale after the checks; `name` is a's name in their messages."""
    chk.float_array(name, a)
    chk.mask("mask", mask, a.shape)
    scale = chk.real("scale", scale)
    out = np.where(mask, a, 0).astype(a.dtype, copy=False)
    if scale != 1.0:
        out *= scale
    return out


def dropout_forward(x, mask, scale=1.0):
    """out = x * mask * scale (mask: bool, same shape)."""
    return _masked_scale("x", x, mask, scale)


def dropout_backward(dout, mask, scale=1.0):
    """dx = dout * mask * scale."""
    return _masked_scale("dout", dout, mask, scale)


# ---------------------------------------------------------------- im2col / convolution

def im2col(x, filter_h, filter_w, stride=1, pad=0):
    """Patches of x (N, C, H, W) as rows: (N*OH*OW, C*FH*FW), rows by (n, oy, ox),
    columns by (c, fy, fx)."""
    chk.float_array("x", x, 4)
    n, c, h, w = x.shape
    fh, fw, s, p, oh, ow = chk.conv_geometry(h, w, filter_h, filter_w, stride, pad)
    img = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
    col = np.empty((n, c, fh, fw, oh, ow), dtype=x.dtype)
    for fy in range(fh):
        y_end = fy + s * oh
        for fx in range(fw):
            x_end = fx + s * ow
            col[:, :, fy, fx] = img[:, :, fy:y_end:s, fx:x_end:s]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, c * fh * fw)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """Inverse layout of im2col, summing where patches overlap."""
    chk.float_array("col", col, 2)
    n, c, h, w = chk.image_shape("input_shape", input_shape)
    fh, fw, s, p, oh, ow = chk.conv_geometry(h, w, filter_h, filter_w, stride, pad)
    chk.shape_is("col", col, (n * oh * ow, c * fh * fw), "(N*OH*OW, C*FH*FW)")
    cols = col.reshape(n, oh, ow, c, fh, fw).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((n, c, h + 2 * p + s - 1, w + 2 * p + s - 1), dtype=col.dtype)
    for fy in range(fh):
        y_end = fy + s * oh
        for fx in range(fw):
            x_end = fx + s * ow
            img[:, :, fy:y_end:s, fx:x_end:s] += cols[:, :, fy, fx]
    return np.ascontiguousarray(img[:, :, p:h + p, p:w + p])


def conv_forward(x, W, b, stride=1, pad=0):
    """Convolution of x (N, C, H, W) with W (FN, C, FH, FW) plus b (FN,).

    Returns (out (N, FN, OH, OW), col) where col = im2col(x) is kept for the backward.
    """
    n, c, h, w, fn, fh, fw, s, p, oh, ow = chk.conv_forward_args(x, W, b, stride, pad)
    col = im2col(x, fh, fw, s, p)
    out = col @ W.reshape(fn, c * fh * fw).T     # explicit: fn may be 0
    out += b
    return np.ascontiguousarray(out.reshape(n, oh, ow, fn).transpose(0, 3, 1, 2)), col


def conv_backward(dout, col, x_shape, W, stride=1, pad=0, need_dx=True):
    """Gradients of conv_forward: (dx, dW, db); dx is None when need_dx is false."""
    n, c, h, w, fn, fh, fw, s, p, oh, ow = chk.conv_backward_args(dout, col, x_shape, W,
                                                                   stride, pad)
    d2 = dout.transpose(0, 2, 3, 1).reshape(n * oh * ow, fn)
    db = _sum0(d2)
    dW = (d2.T @ col).reshape(W.shape)
    if not need_dx:
        return None, dW, db
    dcol = d2 @ W.reshape(fn, c * fh * fw)
    return col2im(dcol, (n, c, h, w), fh, fw, s, p), dW, db


def conv_relu_pool_forward(x, W, b, stride=1, pad=0, pool_h=2, pool_w=2, pool_stride=2,
                           pool_pad=0):
    """Convolution, ReLU and max pooling in one call: (out, col, argmax) with
    out = maxpool(relu(conv(x))), col as conv_forward's and argmax as maxpool_forward's."""
    chk.conv_relu_pool_args(x, W, b, stride, pad, pool_h, pool_w, pool_stride, pool_pad)
    conv, col = conv_forward(x, W, b, stride, pad)
    out, argmax = maxpool_forward(relu_forward(conv), pool_h, pool_w, pool_stride, pool_pad)
    return out, col, argmax


def conv_relu_pool_backward(dout, out, argmax, col, x_shape, W, stride=1, pad=0, pool_h=2,
                            pool_w=2, pool_stride=2, pool_pad=0, need_dx=True):
    """Gradients of conv_relu_pool_forward: (dx, dW, db), dx None unless need_dx.

    The ReLU's gradient is zero wherever its output was not positive; behind the max pool
    only each window's maximum receives a gradient, and that maximum is the pooled value
    ``out``.  So the windows with out > 0 pass dout back and the others pass nothing."""
    n, c, h, w, fn, fh, fw, s, p, oh, ow, ph, pw, ps, pp = chk.conv_relu_pool_backward_args(
        dout, out, argmax, col, x_shape, W, stride, pad, pool_h, pool_w, pool_stride, pool_pad)
    gated = np.where(out > 0, dout, 0).astype(dout.dtype, copy=False)
    dconv = maxpool_backward(gated, argmax, (n, fn, oh, ow), ph, pw, ps, pp)
    # conv_backward's sums, restricted to the nonzero entries of dconv (at most one per
    # window): an inf or NaN in col or W reaches dW and dx only through a position that
    # has a gradient, where the dense product would spread it through 0 * inf.  Where the
    # dense product comes out finite, no such term was in it and the two are the same
    # sums; checking its (small) results spares a pass over col.
    dx, dW, db = conv_backward(dconv, col, (n, c, h, w), W, s, p, need_dx)
    if np.isfinite(dW).all() and (dx is None or np.isfinite(dx).all()):
        return dx, dW, db
    d2 = dconv.transpose(0, 2, 3, 1).reshape(n * oh * ow, fn)
    wmat = W.reshape(fn, c * fh * fw)
    dW = np.zeros(wmat.shape, dtype=dout.dtype)
    dcol = np.zeros(col.shape, dtype=dout.dtype) if need_dx else None
    for f in range(fn):
        rows = np.flatnonzero(d2[:, f])
        g = d2[rows, f]
        dW[f] = g @ col[rows]
        if need_dx:
            dcol[rows] += g[:, None] * wmat[f]
    dx = col2im(dcol, (n, c, h, w), fh, fw, s, p) if need_dx else None
    return dx, dW.reshape(W.shape), _sum0(d2)


# ---------------------------------------------------------------- pooling

def _pool_setup(x, pool_h, pool_w, stride, pad):
    chk.float_array("x", x, 4)
    n, c, h, w = x.shape
    ph, pw, s, p, oh, ow = chk.conv_geometry(h, w, pool_h, pool_w, stride, pad, what="pool")
    return n, c, h, w, ph, pw, s, p, oh, ow


def maxpool_forward(x, pool_h, pool_w, stride=2, pad=0):
    """Max pooling; padding counts as -inf.  Returns (out, argmax) with argmax the
    position of the maximum inside its window (fy*pool_w + fx, first one on ties)."""
    n, c, h, w, ph, pw, s, p, oh, ow = _pool_setup(x, pool_h, pool_w, stride, pad)
    planes = x.reshape(n * c, 1, h, w)
    if p:
        planes = np.pad(planes, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    col = im2col(planes, ph, pw, s, 0)
    argmax = col.argmax(axis=1) if col.shape[0] else np.zeros(0, dtype=np.intp)
    out = col[np.arange(col.shape[0]), argmax]
    return out.reshape(n, c, oh, ow), argmax.reshape(n, c, oh, ow).astype(np.intp)


def _pool_back_setup(dout, input_shape, pool_h, pool_w, stride, pad):
    chk.float_array("dout", dout, 4)
    n, c, h, w = chk.image_shape("input_shape", input_shape)
    ph, pw, s, p, oh, ow = chk.conv_geometry(h, w, pool_h, pool_w, stride, pad, what="pool")
    chk.shape_is("dout", dout, (n, c, oh, ow), "(N, C, OH, OW) of the pooled output")
    return n, c, h, w, ph, pw, s, p, oh, ow


def maxpool_backward(dout, argmax, input_shape, pool_h, pool_w, stride=2, pad=0):
    n, c, h, w, ph, pw, s, p, oh, ow = _pool_back_setup(dout, input_shape, pool_h, pool_w,
                                                         stride, pad)
    chk.pool_argmax("argmax", argmax, dout.shape, ph * pw)
    dcol = np.zeros((n * c * oh * ow, ph * pw), dtype=dout.dtype)
    dcol[np.arange(dcol.shape[0]), argmax.ravel()] = dout.ravel()
    # Scatter back with the same padding geometry; the padded border is dropped.
    return col2im(dcol, (n * c, 1, h, w), ph, pw, s, p).reshape(n, c, h, w)


def avgpool_forward(x, pool_h, pool_w, stride=2, pad=0):
    """Average pooling; padded zeros count in the average (a fixed divisor ph*pw)."""
    n, c, h, w, ph, pw, s, p, oh, ow = _pool_setup(x, pool_h, pool_w, stride, pad)
    col = im2col(x.reshape(n * c, 1, h, w), ph, pw, s, p)
    out = col.mean(axis=1, dtype=np.float64).astype(x.dtype, copy=False)
    return out.reshape(n, c, oh, ow)


def avgpool_backward(dout, input_shape, pool_h, pool_w, stride=2, pad=0):
    n, c, h, w, ph, pw, s, p, oh, ow = _pool_back_setup(dout, input_shape, pool_h, pool_w,
                                                         stride, pad)
    dcol = np.repeat(dout.reshape(-1, 1) / (ph * pw), ph * pw, axis=1).astype(dout.dtype)
    return col2im(dcol, (n * c, 1, h, w), ph, pw, s, p).reshape(n, c, h, w)


# ---------------------------------------------------------------- optimizer updates
# Each updates params (and its state lists) in place, over parallel lists of arrays.

def sgd_update(params, grads, lr):
    """p -= lr * g."""
    chk.update_lists(params, grads)
    lr = chk.real("lr", lr)
    for p, g in zip(params, grads):
        p -= lr * g


def momentum_update(params, grads, velocities, lr, momentum):
    """v = momentum*v - lr*g; p += v."""
    chk.update_lists(params, grads, velocities=velocities)
    lr, momentum = chk.real("lr", lr), chk.real("momentum", momentum)
    for p, g, v in zip(params, grads, velocities):
        v *= momentum
        v -= lr * g
        p += v


def nesterov_update(params, grads, velocities, lr, momentum):
    """p += momentum^2*v - (1+momentum)*lr*g (old v); then v = momentum*v - lr*g."""
    chk.update_lists(params, grads, velocities=velocities)
    lr, momentum = chk.real("lr", lr), chk.real("momentum", momentum)
    for p, g, v in zip(params, grads, velocities):
        p += (momentum * momentum) * v
        p -= ((1 + momentum) * lr) * g
        v *= momentum
        v -= lr * g


def adagrad_update(params, grads, hs, lr, eps=1e-7):
    """h += g*g; p -= lr*g / (sqrt(h) + eps)."""
    chk.update_lists(params, grads, hs=hs)
    lr, eps = chk.real("lr", lr), chk.real("eps", eps, 0.0)
    for p, g, h in zip(params, grads, hs):
        h += g * g
        p -= lr * g / (np.sqrt(h) + eps)


def rmsprop_update(params, grads, hs, lr, decay_rate=0.99, eps=1e-7):
    """h = decay*h + (1-decay)*g*g; p -= lr*g / (sqrt(h) + eps)."""
    chk.update_lists(params, grads, hs=hs)
    lr, eps = chk.real("lr", lr), chk.real("eps", eps, 0.0)
    decay_rate = chk.real("decay_rate", decay_rate, 0.0, 1.0)
    for p, g, h in zip(params, grads, hs):
        h *= decay_rate
        h += (1 - decay_rate) * g * g
        p -= lr * g / (np.sqrt(h) + eps)


def _adam_core(params, grads, ms, vs, lr, beta1, beta2, step, eps, shrink=None):
    """Adam's step over the lists, one parameter after the other; with shrink (AdamW's
    1 - lr*weight_decay) each parameter is first scaled by it (so a parameter listed
    twice is decayed and stepped, then decayed and stepped again)."""
    lr_t = lr * np.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
    for p, g, m, v in zip(params, grads, ms, vs):
        if shrink is not None:
            p *= shrink
        m += (1 - beta1) * (g - m)
        v += (1 - beta2) * (g * g - v)
        p -= lr_t * m / (np.sqrt(v) + eps)


def adam_update(params, grads, ms, vs, lr, beta1, beta2, step, eps=1e-7):
    """The book's Adam at 1-based step t: lr_t = lr*sqrt(1-beta2^t)/(1-beta1^t);
    m += (1-beta1)(g-m); v += (1-beta2)(g^2-v); p -= lr_t*m/(sqrt(v)+eps)."""
    args = chk.adam_args(params, grads, ms, vs, lr, beta1, beta2, step, eps)
    _adam_core(params, grads, ms, vs, *args)


def adamw_update(params, grads, ms, vs, lr, beta1, beta2, step, eps=1e-7, weight_decay=0.01):
    """Adam with decoupled weight decay: p -= lr*weight_decay*p, then the Adam step."""
    args = chk.adam_args(params, grads, ms, vs, lr, beta1, beta2, step, eps)
    wd = chk.real("weight_decay", weight_decay, 0.0)
    _adam_core(params, grads, ms, vs, *args, shrink=1.0 - args[0] * wd)
