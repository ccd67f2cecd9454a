"""Bad input fails early with ValueError/TypeError whose message names the argument.

One table for the kernels (``zerodl._kernels.table(b)[name]``, run on every available
backend: the compiled kernels must reject exactly what the reference rejects) and one for
the public functions and layers.  Rows are (id, callable or kernel name + args builder,
exception, substring of the message).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import zerodl.layers as L
from zerodl import _kernels
from zerodl.util import col2im, im2col



def f64(*shape):
    return np.random.default_rng(sum(shape)).normal(size=shape)


def f32(*shape):
    return f64(*shape).astype(np.float32)


def i64(*shape):
    return np.ones(shape, dtype=np.int64)


def readonly(a):
    a.flags.writeable = False
    return a


X4 = (2, 3, 5, 6)   # N, C, H, W
XS = (3, 7)         # N, D
BN = lambda d=7: (np.ones(d), np.zeros(d), np.zeros(d), np.ones(d))  # noqa: E731

# (id, kernel, args builder, exception, substring)
KERNEL_CASES = [
    # -- affine
    ("affine-x-1d", "affine_forward", lambda: (f64(7), f64(7, 4), f64(4)), ValueError,
     "x must be 2-D"),
    ("affine-shape", "affine_forward", lambda: (f64(3, 5), f64(7, 4), f64(4)), ValueError,
     "W has 7 rows"),
    ("affine-b-shape", "affine_forward", lambda: (f64(*XS), f64(7, 4), f64(3)), ValueError,
     "b must have shape (4,)"),
    ("affine-dtypes", "affine_forward", lambda: (f32(*XS), f64(7, 4), f64(4)), TypeError,
     "W has dtype float64"),
    ("affine-int-x", "affine_forward", lambda: (i64(*XS), f64(7, 4), f64(4)), TypeError,
     "x must have dtype"),
    ("affine-complex-W", "affine_forward",
     lambda: (f64(*XS), f64(7, 4).astype(complex), f64(4)), TypeError, "W must have dtype"),
    ("affine-object-x", "affine_forward",
     lambda: (f64(*XS).astype(object), f64(7, 4), f64(4)), TypeError, "x must have dtype"),
    ("affine-list-x", "affine_forward", lambda: (f64(*XS).tolist(), f64(7, 4), f64(4)),
     TypeError, "x must be a numpy.ndarray"),
    ("affine-back-dout", "affine_backward", lambda: (f64(3, 5), f64(*XS), f64(7, 4)),
     ValueError, "dout must have shape (3, 4)"),
    # -- activations
    ("relu-int", "relu_forward", lambda: (i64(*XS),), TypeError, "x must have dtype"),
    ("relu-back-shape", "relu_backward", lambda: (f64(3, 4), f64(3, 5)), ValueError,
     "dout must have shape (3, 5)"),
    ("relu-back-dtypes", "relu_backward", lambda: (f64(*XS), f32(*XS)), TypeError,
     "out has dtype float32"),
    ("sigmoid-complex", "sigmoid_forward", lambda: (f64(*XS).astype(complex),), TypeError,
     "x must have dtype"),
    ("sigmoid-back-shape", "sigmoid_backward", lambda: (f64(2, 7), f64(*XS)), ValueError,
     "dout must have shape"),
    ("tanh-object", "tanh_forward", lambda: (f64(*XS).astype(object),), TypeError,
     "x must have dtype"),
    ("tanh-back-object", "tanh_backward", lambda: (f64(*XS).astype(object), f64(*XS)),
     TypeError, "dout must have dtype"),
    # -- loss
    ("ce-label-high", "softmax_cross_entropy_forward",
     lambda: (f64(3, 4), np.array([0, 4, 1])), ValueError, "t labels must lie in [0, 4)"),
    ("ce-label-negative", "softmax_cross_entropy_forward",
     lambda: (f64(3, 4), np.array([0, -1, 1])), ValueError, "t labels must lie in [0, 4)"),
    ("ce-label-count", "softmax_cross_entropy_forward",
     lambda: (f64(3, 4), np.array([0, 1])), ValueError, "t must have 3 labels"),
    ("ce-onehot-shape", "softmax_cross_entropy_forward",
     lambda: (f64(3, 4), np.eye(3)), ValueError, "one-hot t must have shape (3, 4)"),
    ("ce-float-labels", "softmax_cross_entropy_forward",
     lambda: (f64(3, 4), np.array([0.0, 1.0, 2.0])), ValueError, "t must be 1-D integer"),
    ("ce-complex-t", "softmax_cross_entropy_forward",
     lambda: (f64(3, 4), np.eye(4)[:3].astype(complex)), TypeError, "t must hold"),
    ("ce-list-t", "softmax_cross_entropy_forward", lambda: (f64(3, 4), [0, 1, 2]),
     TypeError, "t must be a numpy.ndarray"),
    ("ce-x-3d", "softmax_cross_entropy_forward", lambda: (f64(3, 4, 1), np.array([0, 1, 2])),
     ValueError, "x must be 2-D"),
    ("ce-int-x", "softmax_cross_entropy_forward", lambda: (i64(3, 4), np.array([0, 1, 2])),
     TypeError, "x must have dtype"),
    ("ce-back-label", "softmax_cross_entropy_backward",
     lambda: (f64(3, 4), np.array([0, 9, 1])), ValueError, "t labels must lie in [0, 4)"),
    ("ce-back-dout-nan", "softmax_cross_entropy_backward",
     lambda: (f64(3, 4), np.array([0, 1, 2]), float("nan")), ValueError, "dout must be finite"),
    # -- batch / layer / instance norm
    ("bn-x-3d", "batchnorm_forward_train", lambda: (f64(3, 7, 1), *BN()), ValueError,
     "x must be 2-D"),
    ("bn-gamma-shape", "batchnorm_forward_train",
     lambda: (f64(*XS), np.ones(6), np.zeros(7), np.zeros(7), np.ones(7)), ValueError,
     "gamma must have shape (7,)"),
    ("bn-running-dtype", "batchnorm_forward_train",
     lambda: (f64(*XS), np.ones(7), np.zeros(7), np.zeros(7), np.ones(7, np.float32)),
     TypeError, "running_var has dtype float32"),
    ("bn-momentum", "batchnorm_forward_train", lambda: (f64(*XS), *BN(), 1.5), ValueError,
     "momentum must be <= 1.0"),
    ("bn-eps", "batchnorm_forward_train", lambda: (f64(*XS), *BN(), 0.9, 0.0), ValueError,
     "eps must be > 0.0"),
    ("bn-readonly", "batchnorm_forward_train",
     lambda: (f64(*XS), np.ones(7), np.zeros(7), readonly(np.zeros(7)), np.ones(7)),
     ValueError, "running_mean is read-only"),
    ("bn-empty", "batchnorm_forward_train", lambda: (f64(0, 7), *BN()), ValueError,
     "x must have at least one row"),
    ("bn-infer-gamma-dtype", "batchnorm_forward_infer",
     lambda: (f64(*XS), np.ones(7, np.float32), np.zeros(7), np.zeros(7), np.ones(7)),
     TypeError, "gamma has dtype float32"),
    ("bn-back-xhat-shape", "batchnorm_backward",
     lambda: (f64(*XS), f64(3, 6), np.ones(7), np.ones(7)), ValueError,
     "xhat must have shape (3, 7)"),
    # -- fused affine + batch norm + ReLU: x (3, 7) @ W (7, 4) + b (4,), batch norm of
    # the 4 columns: gamma, beta, running_mean, running_var (4,), then momentum, eps
    ("abr-int-x", "affine_bn_relu_forward", lambda: (i64(*XS), f64(7, 4), f64(4), *BN(4)),
     TypeError, "x must have dtype"),
    ("abr-complex-W", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4).astype(complex), f64(4), *BN(4)), TypeError,
     "W must have dtype"),
    ("abr-object-gamma", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), np.ones(4, object), *BN(4)[1:]), TypeError,
     "gamma must have dtype"),
    ("abr-float16-rv", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), *BN(4)[:3], np.ones(4, np.float16)), TypeError,
     "running_var must have dtype"),
    ("abr-dtypes", "affine_bn_relu_forward",
     lambda: (f32(*XS), f64(7, 4), f64(4), *BN(4)), TypeError, "W has dtype float64"),
    ("abr-b-dtype", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f32(4), *BN(4)), TypeError, "b has dtype float32"),
    ("abr-gamma-dtype", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), np.ones(4, np.float32), *BN(4)[1:]), TypeError,
     "gamma has dtype float32"),
    ("abr-beta-dtype", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), np.ones(4), np.zeros(4, np.float32),
              *BN(4)[2:]), TypeError, "beta has dtype float32"),
    ("abr-running-dtype", "affine_bn_relu_forward",
     lambda: (f32(*XS), f32(7, 4), f32(4), *(a.astype(np.float32) for a in BN(4)[:3]),
              np.ones(4)), TypeError, "running_var has dtype float64"),
    ("abr-x-1d", "affine_bn_relu_forward", lambda: (f64(7), f64(7, 4), f64(4), *BN(4)),
     ValueError, "x must be 2-D"),
    ("abr-x-3d", "affine_bn_relu_forward",
     lambda: (f64(3, 7, 1), f64(7, 4), f64(4), *BN(4)), ValueError, "x must be 2-D"),
    ("abr-W-1d", "affine_bn_relu_forward", lambda: (f64(*XS), f64(7), f64(4), *BN(4)),
     ValueError, "W must be 2-D"),
    ("abr-b-2d", "affine_bn_relu_forward", lambda: (f64(*XS), f64(7, 4), f64(1, 4), *BN(4)),
     ValueError, "b must be 1-D"),
    ("abr-gamma-2d", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), np.ones((1, 4)), *BN(4)[1:]), ValueError,
     "gamma must be 1-D"),
    ("abr-running-mean-0d", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), np.ones(4), np.zeros(4), np.zeros(()),
              np.ones(4)), ValueError, "running_mean must be 1-D"),
    ("abr-x-W", "affine_bn_relu_forward", lambda: (f64(3, 5), f64(7, 4), f64(4), *BN(4)),
     ValueError, "x has 5 columns but W has 7 rows"),
    ("abr-b-shape", "affine_bn_relu_forward", lambda: (f64(*XS), f64(7, 4), f64(7), *BN(4)),
     ValueError, "b must have shape (4,)"),
    # batch norm parameters sized by x's features (7) instead of W's columns (4)
    ("abr-gamma-per-input", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), np.ones(7), np.zeros(4), np.zeros(4), np.ones(4)),
     ValueError, "gamma must have shape (4,)"),
    ("abr-beta-shape", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), np.ones(4), np.zeros(3), np.zeros(4), np.ones(4)),
     ValueError, "beta must have shape (4,)"),
    ("abr-running-mean-shape", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), np.ones(4), np.zeros(4), np.zeros(7), np.ones(4)),
     ValueError, "running_mean must have shape (4,)"),
    ("abr-running-var-shape", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), np.ones(4), np.zeros(4), np.zeros(4), np.ones(5)),
     ValueError, "running_var must have shape (4,)"),
    ("abr-empty", "affine_bn_relu_forward", lambda: (f64(0, 7), f64(7, 4), f64(4), *BN(4)),
     ValueError, "x must have at least one row"),
    ("abr-readonly-mean", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), np.ones(4), np.zeros(4), readonly(np.zeros(4)),
              np.ones(4)), ValueError, "running_mean is read-only"),
    ("abr-readonly-var", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), *BN(4)[:3], readonly(np.ones(4))), ValueError,
     "running_var is read-only"),
    ("abr-momentum-high", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), *BN(4), 1.5), ValueError, "momentum must be <= 1.0"),
    ("abr-momentum-negative", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), *BN(4), -0.1), ValueError,
     "momentum must be >= 0.0"),
    ("abr-momentum-nan", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), *BN(4), float("nan")), ValueError,
     "momentum must be finite"),
    ("abr-momentum-str", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), *BN(4), "0.9"), TypeError,
     "momentum must be a real number"),
    ("abr-momentum-bool", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), *BN(4), True), TypeError,
     "momentum must be a real number"),
    ("abr-eps-zero", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), *BN(4), 0.9, 0.0), ValueError, "eps must be > 0.0"),
    ("abr-eps-inf", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), *BN(4), 0.9, float("inf")), ValueError,
     "eps must be finite"),
    ("abr-eps-none", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), *BN(4), 0.9, None), TypeError,
     "eps must be a real number"),
    ("abr-list-x", "affine_bn_relu_forward",
     lambda: (f64(*XS).tolist(), f64(7, 4), f64(4), *BN(4)), TypeError,
     "x must be a numpy.ndarray"),
    ("abr-list-b", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), [0.0] * 4, *BN(4)), TypeError, "b must be a numpy.ndarray"),
    ("abr-list-beta", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), np.ones(4), [0.0] * 4, np.zeros(4), np.ones(4)),
     TypeError, "beta must be a numpy.ndarray"),
    ("abr-none-running-var", "affine_bn_relu_forward",
     lambda: (f64(*XS), f64(7, 4), f64(4), *BN(4)[:3], None), TypeError,
     "running_var must be a numpy.ndarray"),
    # backward: (dout, out, xhat, gamma, inv_std, x, W) with dout, out, xhat (3, 4)
    ("abr-back-out-shape", "affine_bn_relu_backward",
     lambda: (f64(3, 4), f64(3, 5), f64(3, 4), np.ones(4), np.ones(4), f64(*XS), f64(7, 4)),
     ValueError, "out must have shape (3, 4)"),
    ("abr-back-out-rows", "affine_bn_relu_backward",
     lambda: (f64(3, 4), f64(2, 4), f64(3, 4), np.ones(4), np.ones(4), f64(*XS), f64(7, 4)),
     ValueError, "out must have shape (3, 4)"),
    ("abr-back-xhat-shape", "affine_bn_relu_backward",
     lambda: (f64(3, 4), f64(3, 4), f64(3, 5), np.ones(4), np.ones(4), f64(*XS), f64(7, 4)),
     ValueError, "xhat must have shape (3, 4)"),
    ("abr-back-dout-shape", "affine_bn_relu_backward",
     lambda: (f64(3, 5), f64(3, 5), f64(3, 5), np.ones(5), np.ones(5), f64(*XS), f64(7, 4)),
     ValueError, "dout must have shape (3, 4)"),
    ("abr-back-dout-rows", "affine_bn_relu_backward",
     lambda: (f64(2, 4), f64(2, 4), f64(2, 4), np.ones(4), np.ones(4), f64(*XS), f64(7, 4)),
     ValueError, "dout must have shape (3, 4)"),
    ("abr-back-gamma-shape", "affine_bn_relu_backward",
     lambda: (f64(3, 4), f64(3, 4), f64(3, 4), np.ones(7), np.ones(4), f64(*XS), f64(7, 4)),
     ValueError, "gamma must have shape (4,)"),
    ("abr-back-inv-std-shape", "affine_bn_relu_backward",
     lambda: (f64(3, 4), f64(3, 4), f64(3, 4), np.ones(4), np.ones(3), f64(*XS), f64(7, 4)),
     ValueError, "inv_std must have shape (4,)"),
    ("abr-back-inv-std-2d", "affine_bn_relu_backward",
     lambda: (f64(3, 4), f64(3, 4), f64(3, 4), np.ones(4), np.ones((1, 4)), f64(*XS),
              f64(7, 4)), ValueError, "inv_std must be 1-D"),
    ("abr-back-x-W", "affine_bn_relu_backward",
     lambda: (f64(3, 4), f64(3, 4), f64(3, 4), np.ones(4), np.ones(4), f64(3, 5), f64(7, 4)),
     ValueError, "x has 5 columns but W has 7 rows"),
    ("abr-back-W-columns", "affine_bn_relu_backward",
     lambda: (f64(3, 4), f64(3, 4), f64(3, 4), np.ones(4), np.ones(4), f64(*XS), f64(7, 5)),
     ValueError, "dout must have shape (3, 5)"),
    ("abr-back-out-1d", "affine_bn_relu_backward",
     lambda: (f64(3, 4), f64(12), f64(3, 4), np.ones(4), np.ones(4), f64(*XS), f64(7, 4)),
     ValueError, "out must be 2-D"),
    ("abr-back-dout-3d", "affine_bn_relu_backward",
     lambda: (f64(3, 4, 1), f64(3, 4), f64(3, 4), np.ones(4), np.ones(4), f64(*XS),
              f64(7, 4)), ValueError, "dout must be 2-D"),
    ("abr-back-x-1d", "affine_bn_relu_backward",
     lambda: (f64(3, 4), f64(3, 4), f64(3, 4), np.ones(4), np.ones(4), f64(21), f64(7, 4)),
     ValueError, "x must be 2-D"),
    ("abr-back-int-dout", "affine_bn_relu_backward",
     lambda: (i64(3, 4), f64(3, 4), f64(3, 4), np.ones(4), np.ones(4), f64(*XS), f64(7, 4)),
     TypeError, "dout must have dtype"),
    ("abr-back-out-dtype", "affine_bn_relu_backward",
     lambda: (f64(3, 4), f32(3, 4), f64(3, 4), np.ones(4), np.ones(4), f64(*XS), f64(7, 4)),
     TypeError, "out has dtype float32"),
    ("abr-back-inv-std-dtype", "affine_bn_relu_backward",
     lambda: (f64(3, 4), f64(3, 4), f64(3, 4), np.ones(4), np.ones(4, np.float32), f64(*XS),
              f64(7, 4)), TypeError, "inv_std has dtype float32"),
    ("abr-back-W-dtype", "affine_bn_relu_backward",
     lambda: (f64(3, 4), f64(3, 4), f64(3, 4), np.ones(4), np.ones(4), f64(*XS), f32(7, 4)),
     TypeError, "W has dtype float32"),
    ("abr-back-list-xhat", "affine_bn_relu_backward",
     lambda: (f64(3, 4), f64(3, 4), f64(3, 4).tolist(), np.ones(4), np.ones(4), f64(*XS),
              f64(7, 4)), TypeError, "xhat must be a numpy.ndarray"),
    ("abr-back-none-x", "affine_bn_relu_backward",
     lambda: (f64(3, 4), f64(3, 4), f64(3, 4), np.ones(4), np.ones(4), None, f64(7, 4)),
     TypeError, "x must be a numpy.ndarray"),
    ("sbn-x-2d", "spatial_batchnorm_forward_train", lambda: (f64(*XS), *BN()), ValueError,
     "x must be 4-D"),
    ("sbn-gamma-per-activation", "spatial_batchnorm_forward_train",
     lambda: (f64(*X4), *BN(3 * 5 * 6)), ValueError, "gamma must have shape (3,)"),
    ("sbn-infer-running-shape", "spatial_batchnorm_forward_infer",
     lambda: (f64(*X4), np.ones(3), np.zeros(3), np.zeros(4), np.ones(3)), ValueError,
     "running_mean must have shape (3,)"),
    ("sbn-back-gamma", "spatial_batchnorm_backward",
     lambda: (f64(*X4), f64(*X4), np.ones(4), np.ones(3)), ValueError,
     "gamma must have shape (3,)"),
    ("ln-beta-shape", "layernorm_forward",
     lambda: (f64(*XS), np.ones(7), np.zeros(6)), ValueError, "beta must have shape (7,)"),
    ("ln-back-inv-std", "layernorm_backward",
     lambda: (f64(*XS), f64(*XS), np.ones(7), np.ones(7)), ValueError,
     "inv_std must have shape (3,)"),
    ("in-x-2d", "instancenorm_forward", lambda: (f64(*XS), np.ones(7), np.zeros(7)),
     ValueError, "x must be 4-D"),
    ("in-eps-negative", "instancenorm_forward",
     lambda: (f64(*X4), np.ones(3), np.zeros(3), -1e-5), ValueError, "eps must be > 0.0"),
    ("in-back-inv-std", "instancenorm_backward",
     lambda: (f64(*X4), f64(*X4), np.ones(3), np.ones(3)), ValueError, "inv_std must be 2-D"),
    # -- dropout
    ("dropout-mask-dtype", "dropout_forward", lambda: (f64(*XS), i64(*XS)), TypeError,
     "mask must be a numpy.ndarray of bool"),
    ("dropout-mask-shape", "dropout_forward",
     lambda: (f64(*XS), np.ones((7, 3), dtype=bool)), ValueError, "mask must have shape"),
    ("dropout-back-int", "dropout_backward", lambda: (i64(*XS), np.ones(XS, dtype=bool)),
     TypeError, "dout must have dtype"),
    ("dropout-scale-nan", "dropout_forward",
     lambda: (f64(*XS), np.ones(XS, dtype=bool), float("nan")), ValueError,
     "scale must be finite"),
    # -- im2col / col2im
    ("im2col-stride-0", "im2col", lambda: (f64(*X4), 3, 3, 0, 0), ValueError,
     "stride must be >= 1"),
    ("im2col-pad-negative", "im2col", lambda: (f64(*X4), 3, 3, 1, -1), ValueError,
     "pad must be >= 0"),
    ("im2col-filter-large", "im2col", lambda: (f64(*X4), 8, 3, 1, 1), ValueError,
     "filter 8x3 is larger than the padded input 7x8"),
    ("im2col-3d", "im2col", lambda: (f64(3, 5, 6), 3, 3), ValueError, "x must be 4-D"),
    ("im2col-int", "im2col", lambda: (i64(*X4), 3, 3), TypeError, "x must have dtype"),
    ("im2col-filter-float", "im2col", lambda: (f64(*X4), 2.5, 3), TypeError,
     "filter_h must be an integer"),
    ("im2col-filter-0", "im2col", lambda: (f64(*X4), 3, 0), ValueError,
     "filter_w must be >= 1"),
    ("col2im-col-shape", "col2im", lambda: (f64(10, 27), X4, 3, 3), ValueError,
     "col must have shape (24, 27)"),
    ("col2im-input-shape", "col2im", lambda: (f64(24, 27), (2, 3, 5), 3, 3), ValueError,
     "input_shape must be 4"),
    ("col2im-stride-0", "col2im", lambda: (f64(24, 27), X4, 3, 3, 0), ValueError,
     "stride must be >= 1"),
    # -- convolution
    ("conv-channels", "conv_forward", lambda: (f64(2, 2, 5, 6), f64(4, 3, 3, 3), f64(4)),
     ValueError, "x has 2 channels but W expects 3"),
    ("conv-b-shape", "conv_forward", lambda: (f64(*X4), f64(4, 3, 3, 3), f64(3)),
     ValueError, "b must have shape (4,)"),
    ("conv-stride-0", "conv_forward", lambda: (f64(*X4), f64(4, 3, 3, 3), f64(4), 0),
     ValueError, "stride must be >= 1"),
    ("conv-pad-negative", "conv_forward",
     lambda: (f64(*X4), f64(4, 3, 3, 3), f64(4), 1, -2), ValueError, "pad must be >= 0"),
    ("conv-filter-large", "conv_forward", lambda: (f64(*X4), f64(4, 3, 6, 3), f64(4)),
     ValueError, "filter 6x3 is larger than the padded input 5x6"),
    ("conv-dtypes", "conv_forward", lambda: (f64(*X4), f32(4, 3, 3, 3), f64(4)), TypeError,
     "W has dtype float32"),
    ("conv-W-3d", "conv_forward", lambda: (f64(*X4), f64(4, 3, 3), f64(4)), ValueError,
     "W must be 4-D"),
    ("conv-back-dout", "conv_backward",
     lambda: (f64(2, 4, 3, 3), f64(24, 27), X4, f64(4, 3, 3, 3)), ValueError,
     "dout must have shape (2, 4, 3, 4)"),
    ("conv-back-col", "conv_backward",
     lambda: (f64(2, 4, 3, 4), f64(24, 26), X4, f64(4, 3, 3, 3)), ValueError,
     "col must have shape (24, 27)"),
    # -- convolution + ReLU + max pooling: conv output of X4 with 3x3 filters is 3x4
    ("crp-int-x", "conv_relu_pool_forward", lambda: (i64(*X4), f64(4, 3, 3, 3), f64(4)),
     TypeError, "x must have dtype"),
    ("crp-x-3d", "conv_relu_pool_forward", lambda: (f64(3, 5, 6), f64(4, 3, 3, 3), f64(4)),
     ValueError, "x must be 4-D"),
    ("crp-list-W", "conv_relu_pool_forward",
     lambda: (f64(*X4), f64(4, 3, 3, 3).tolist(), f64(4)), TypeError,
     "W must be a numpy.ndarray"),
    ("crp-dtypes", "conv_relu_pool_forward", lambda: (f64(*X4), f64(4, 3, 3, 3), f32(4)),
     TypeError, "b has dtype float32"),
    ("crp-channels", "conv_relu_pool_forward",
     lambda: (f64(*X4), f64(4, 2, 3, 3), f64(4)), ValueError, "x has 3 channels but W expects 2"),
    ("crp-b-shape", "conv_relu_pool_forward", lambda: (f64(*X4), f64(4, 3, 3, 3), f64(3)),
     ValueError, "b must have shape (4,)"),
    ("crp-filter-large", "conv_relu_pool_forward",
     lambda: (f64(*X4), f64(4, 3, 3, 7), f64(4)), ValueError,
     "filter 3x7 is larger than the padded input 5x6"),
    ("crp-pool-large", "conv_relu_pool_forward",
     lambda: (f64(*X4), f64(4, 3, 3, 3), f64(4), 1, 0, 4, 2), ValueError,
     "pool 4x2 is larger than the padded input 3x4"),
    ("crp-pool-padded-large", "conv_relu_pool_forward",
     lambda: (f64(*X4), f64(4, 3, 3, 3), f64(4), 1, 0, 2, 7, 2, 1), ValueError,
     "pool 2x7 is larger than the padded input 5x6"),
    ("crp-pool-float", "conv_relu_pool_forward",
     lambda: (f64(*X4), f64(4, 3, 3, 3), f64(4), 1, 0, 2.0, 2), TypeError,
     "pool_h must be an integer"),
    ("crp-pool-stride-0", "conv_relu_pool_forward",
     lambda: (f64(*X4), f64(4, 3, 3, 3), f64(4), 1, 0, 2, 2, 0), ValueError,
     "stride must be >= 1"),
    ("crp-pool-pad-negative", "conv_relu_pool_forward",
     lambda: (f64(*X4), f64(4, 3, 3, 3), f64(4), 1, 0, 2, 2, 2, -1), ValueError,
     "pad must be >= 0"),
    # backward: (dout, out, argmax, col, x_shape, W); 2x2/2 pool of 3x4 -> (2, 4, 1, 2)
    ("crp-back-argmax-float", "conv_relu_pool_backward",
     lambda: (f64(2, 4, 1, 2), f64(2, 4, 1, 2), f64(2, 4, 1, 2), f64(24, 27), X4,
              f64(4, 3, 3, 3)), TypeError, "argmax must be an integer"),
    ("crp-back-argmax-list", "conv_relu_pool_backward",
     lambda: (f64(2, 4, 1, 2), f64(2, 4, 1, 2), [[[[0, 1]]] * 4] * 2, f64(24, 27), X4,
              f64(4, 3, 3, 3)), TypeError, "argmax must be an integer"),
    ("crp-back-argmax-range", "conv_relu_pool_backward",
     lambda: (f64(2, 4, 1, 2), f64(2, 4, 1, 2), np.full((2, 4, 1, 2), 4), f64(24, 27), X4,
              f64(4, 3, 3, 3)), ValueError, "argmax values must lie in [0, 4)"),
    ("crp-back-argmax-negative", "conv_relu_pool_backward",
     lambda: (f64(2, 4, 1, 2), f64(2, 4, 1, 2), np.full((2, 4, 1, 2), -1), f64(24, 27), X4,
              f64(4, 3, 3, 3)), ValueError, "argmax values must lie in [0, 4)"),
    ("crp-back-argmax-shape", "conv_relu_pool_backward",
     lambda: (f64(2, 4, 1, 2), f64(2, 4, 1, 2), np.zeros((2, 4, 2, 1), np.intp), f64(24, 27),
              X4, f64(4, 3, 3, 3)), ValueError, "argmax must have shape (2, 4, 1, 2)"),
    ("crp-back-dout-shape", "conv_relu_pool_backward",
     lambda: (f64(2, 4, 3, 4), f64(2, 4, 1, 2), np.zeros((2, 4, 1, 2), np.intp), f64(24, 27),
              X4, f64(4, 3, 3, 3)), ValueError, "dout must have shape (2, 4, 1, 2)"),
    ("crp-back-out-shape", "conv_relu_pool_backward",
     lambda: (f64(2, 4, 1, 2), f64(2, 4, 3, 4), np.zeros((2, 4, 1, 2), np.intp), f64(24, 27),
              X4, f64(4, 3, 3, 3)), ValueError, "out must have shape (2, 4, 1, 2)"),
    ("crp-back-out-dtype", "conv_relu_pool_backward",
     lambda: (f64(2, 4, 1, 2), f32(2, 4, 1, 2), np.zeros((2, 4, 1, 2), np.intp), f64(24, 27),
              X4, f64(4, 3, 3, 3)), TypeError, "out has dtype float32"),
    ("crp-back-out-list", "conv_relu_pool_backward",
     lambda: (f64(2, 4, 1, 2), f64(2, 4, 1, 2).tolist(), np.zeros((2, 4, 1, 2), np.intp),
              f64(24, 27), X4, f64(4, 3, 3, 3)), TypeError, "out must be a numpy.ndarray"),
    ("crp-back-col-shape", "conv_relu_pool_backward",
     lambda: (f64(2, 4, 1, 2), f64(2, 4, 1, 2), np.zeros((2, 4, 1, 2), np.intp), f64(24, 26),
              X4, f64(4, 3, 3, 3)), ValueError, "col must have shape (24, 27)"),
    ("crp-back-x-shape", "conv_relu_pool_backward",
     lambda: (f64(2, 4, 1, 2), f64(2, 4, 1, 2), np.zeros((2, 4, 1, 2), np.intp), f64(24, 27),
              (2, 3, 5), f64(4, 3, 3, 3)), ValueError, "x_shape must be 4"),
    ("crp-back-channels", "conv_relu_pool_backward",
     lambda: (f64(2, 4, 1, 2), f64(2, 4, 1, 2), np.zeros((2, 4, 1, 2), np.intp), f64(24, 27),
              X4, f64(4, 2, 3, 3)), ValueError, "x_shape has 3 channels but W expects 2"),
    ("crp-back-pool-large", "conv_relu_pool_backward",
     lambda: (f64(2, 4, 1, 2), f64(2, 4, 1, 2), np.zeros((2, 4, 1, 2), np.intp), f64(24, 27),
              X4, f64(4, 3, 3, 3), 1, 0, 2, 5), ValueError,
     "pool 2x5 is larger than the padded input 3x4"),
    ("crp-back-pool-stride-0", "conv_relu_pool_backward",
     lambda: (f64(2, 4, 1, 2), f64(2, 4, 1, 2), np.zeros((2, 4, 1, 2), np.intp), f64(24, 27),
              X4, f64(4, 3, 3, 3), 1, 0, 2, 2, 0), ValueError, "stride must be >= 1"),
    # -- pooling
    ("maxpool-stride-0", "maxpool_forward", lambda: (f64(*X4), 2, 2, 0), ValueError,
     "stride must be >= 1"),
    ("maxpool-large", "maxpool_forward", lambda: (f64(*X4), 7, 2), ValueError,
     "pool 7x2 is larger than the padded input 5x6"),
    ("maxpool-int", "maxpool_forward", lambda: (i64(*X4), 2, 2), TypeError,
     "x must have dtype"),
    ("maxpool-back-argmax-float", "maxpool_backward",
     lambda: (f64(2, 3, 2, 3), f64(2, 3, 2, 3), X4, 2, 2), TypeError, "argmax"),
    ("maxpool-back-argmax-range", "maxpool_backward",
     lambda: (f64(2, 3, 2, 3), np.full((2, 3, 2, 3), 4), X4, 2, 2), ValueError,
     "argmax values must lie in [0, 4)"),
    ("avgpool-pad-negative", "avgpool_forward", lambda: (f64(*X4), 2, 2, 2, -1), ValueError,
     "pad must be >= 0"),
    ("avgpool-back-dout", "avgpool_backward", lambda: (f64(2, 3, 3, 3), X4, 2, 2), ValueError,
     "dout must have shape (2, 3, 2, 3)"),
    # -- optimizer updates
    ("sgd-grad-shape", "sgd_update", lambda: ([f64(3, 4)], [f64(4, 3)], 0.1), ValueError,
     "grads[0] must have shape (3, 4)"),
    ("sgd-not-list", "sgd_update", lambda: (f64(3, 4), [f64(3, 4)], 0.1), TypeError,
     "params must be a list"),
    ("sgd-lr-nan", "sgd_update", lambda: ([f64(3, 4)], [f64(3, 4)], float("nan")),
     ValueError, "lr must be finite"),
    ("sgd-lr-str", "sgd_update", lambda: ([f64(3, 4)], [f64(3, 4)], "0.1"), TypeError,
     "lr must be a real number"),
    ("sgd-int-param", "sgd_update", lambda: ([i64(3)], [f64(3)], 0.1), TypeError,
     "params[0] must have dtype"),
    ("sgd-readonly", "sgd_update", lambda: ([f64(3), readonly(f64(4))], [f64(3), f64(4)], 0.1),
     ValueError, "params[1] is read-only"),
    ("momentum-count", "momentum_update", lambda: ([f64(3)], [f64(3)], [], 0.1, 0.9),
     ValueError, "velocities has 0 arrays"),
    ("momentum-dtypes", "momentum_update",
     lambda: ([f64(3)], [f32(3)], [f64(3)], 0.1, 0.9), TypeError, "grads[0] has dtype"),
    ("nesterov-state-shape", "nesterov_update",
     lambda: ([f64(3)], [f64(3)], [f64(4)], 0.1, 0.9), ValueError,
     "velocities[0] must have shape (3,)"),
    ("adagrad-grads-count", "adagrad_update", lambda: ([f64(3)], [], [f64(3)], 0.1),
     ValueError, "grads has 0 arrays"),
    ("rmsprop-decay", "rmsprop_update", lambda: ([f64(3)], [f64(3)], [f64(3)], 0.1, 2.0),
     ValueError, "decay_rate must be <= 1.0"),
    ("adam-step-0", "adam_update",
     lambda: ([f64(3)], [f64(3)], [f64(3)], [f64(3)], 0.1, 0.9, 0.999, 0), ValueError,
     "step must be >= 1"),
    ("adam-beta-1", "adam_update",
     lambda: ([f64(3)], [f64(3)], [f64(3)], [f64(3)], 0.1, 1.0, 0.999, 1), ValueError,
     "beta1 and beta2 must be < 1"),
    ("adam-state-dtype", "adam_update",
     lambda: ([f64(3)], [f64(3)], [f32(3)], [f64(3)], 0.1, 0.9, 0.999, 1), TypeError,
     "ms[0] has dtype float32"),
    ("adamw-decay-negative", "adamw_update",
     lambda: ([f64(3)], [f64(3)], [f64(3)], [f64(3)], 0.1, 0.9, 0.999, 1, 1e-7, -0.1),
     ValueError, "weight_decay must be >= 0.0"),
]


def test_every_kernel_has_a_bad_input_case():
    assert {row[1] for row in KERNEL_CASES} == set(_kernels.KERNEL_NAMES)


@pytest.mark.parametrize("case_id,kernel,build,exc,substring", KERNEL_CASES,
                         ids=[c[0] for c in KERNEL_CASES])
def test_kernel_rejects_bad_input(case_id, kernel, build, exc, substring, backend):
    fn = _kernels.table(backend)[kernel]
    with pytest.raises(exc, match=re.escape(substring)):
        fn(*build())


@pytest.mark.parametrize("kernel,states", [
    ("sgd_update", 0), ("momentum_update", 1), ("nesterov_update", 1), ("adagrad_update", 1),
    ("rmsprop_update", 1), ("adam_update", 2), ("adamw_update", 2)])
def test_update_kernels_check_everything_before_writing(kernel, states, backend):
    """A bad second parameter must leave the first one (and all state) untouched."""
    params = [f64(3), f64(4)]
    grads = [f64(3), f64(5)]  # the second gradient has the wrong shape
    state = [[np.zeros(3), np.zeros(4)] for _ in range(states)]
    before = [p.copy() for p in params] + [s.copy() for lst in state for s in lst]
    extra = {"sgd_update": (0.1,), "momentum_update": (0.1, 0.9),
             "nesterov_update": (0.1, 0.9), "adagrad_update": (0.1,),
             "rmsprop_update": (0.1, 0.9), "adam_update": (0.1, 0.9, 0.999, 1),
             "adamw_update": (0.1, 0.9, 0.999, 1)}[kernel]
    with pytest.raises(ValueError, match=re.escape("grads[1] must have shape (4,)")):
        _kernels.table(backend)[kernel](params, grads, *state, *extra)
    after = params + [s for lst in state for s in lst]
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


def test_batchnorm_rejects_before_touching_running_stats(backend):
    rm, rv = np.full(7, 0.5), np.full(7, 2.0)
    with pytest.raises(ValueError, match="momentum"):
        _kernels.table(backend)["batchnorm_forward_train"](f64(*XS), np.ones(7), np.zeros(7),
                                                           rm, rv, -0.1)
    np.testing.assert_array_equal(rm, 0.5)
    np.testing.assert_array_equal(rv, 2.0)


@pytest.mark.parametrize("bad", ["momentum", "eps", "running_var", "gamma", "W"])
def test_affine_bn_relu_rejects_before_touching_running_stats(bad, backend):
    """A bad argument checked after the running statistics leaves them unwritten."""
    rm, rv = np.full(4, 0.5), np.full(4, 2.0)
    args = {"x": f64(*XS), "W": f64(7, 4), "b": f64(4), "gamma": np.ones(4),
            "beta": np.zeros(4), "running_mean": rm, "running_var": rv, "momentum": 0.9,
            "eps": 1e-5}
    args[bad], message = {"momentum": (-0.1, "momentum must be >= 0.0"),
                          "eps": (0.0, "eps must be > 0.0"),
                          "running_var": (np.full(5, 2.0), "running_var must have shape (4,)"),
                          "gamma": (np.ones(7), "gamma must have shape (4,)"),
                          "W": (f64(7, 5), "b must have shape (5,)")}[bad]
    with pytest.raises(ValueError, match=re.escape(message)):
        _kernels.table(backend)["affine_bn_relu_forward"](**args)
    np.testing.assert_array_equal(rm, 0.5)
    np.testing.assert_array_equal(rv, 2.0)


# ---------------------------------------------------------------- public functions, layers

def _affine():
    return L.Affine(f64(7, 4), f64(4))


def _conv(**kw):
    return L.Convolution(f64(4, 3, 3, 3), f64(4), **kw)


def _norm(cls, n):
    return cls(np.ones(n), np.zeros(n))


PUBLIC_CASES = [
    # zerodl.util
    ("im2col-stride-0", lambda: im2col(f64(*X4), 3, 3, stride=0), ValueError, "stride"),
    ("im2col-pad-negative", lambda: im2col(f64(*X4), 3, 3, pad=-1), ValueError, "pad"),
    ("im2col-filter-large", lambda: im2col(f64(*X4), 3, 9), ValueError,
     "filter 3x9 is larger"),
    ("im2col-ndim", lambda: im2col(f64(5, 6), 3, 3), ValueError, "must be 4-D"),
    pytest.param("im2col-complex", lambda: im2col(f64(*X4).astype(complex), 3, 3), TypeError,
                 "input_data"),
    pytest.param("im2col-object", lambda: im2col(f64(*X4).astype(object), 3, 3), TypeError,
                 "input_data"),
    ("col2im-shape", lambda: col2im(f64(24, 26), X4, 3, 3), ValueError, "col must have shape"),
    ("col2im-input-shape", lambda: col2im(f64(24, 27), (2, 3, -5, 6), 3, 3), ValueError,
     "input_shape"),
    ("col2im-stride-0", lambda: col2im(f64(24, 27), X4, 3, 3, stride=0), ValueError,
     "stride"),
    # layers: shapes and geometry
    ("affine-shape", lambda: _affine().forward(f64(3, 5)), ValueError, "W has 7 rows"),
    pytest.param("affine-0d", lambda: _affine().forward(np.float64(1.0)), ValueError, "x"),
    ("affine-b-dtype", lambda: L.Affine(f32(7, 4), f64(4)).forward(f64(*XS)), TypeError,
     "b has dtype float64"),
    pytest.param("affine-int-W", lambda: L.Affine(i64(7, 4), f64(4)).forward(f64(*XS)),
                 TypeError, "W"),
    ("dropconnect-shape", lambda: L.DropConnect(f64(7, 4), f64(4)).forward(f64(3, 6)),
     ValueError, "W has 7 rows"),
    ("conv-channels", lambda: _conv().forward(f64(2, 2, 5, 6)), ValueError,
     "x has 2 channels but W expects 3"),
    ("conv-stride-0", lambda: _conv(stride=0).forward(f64(*X4)), ValueError, "stride"),
    ("conv-pad-negative", lambda: _conv(pad=-1).forward(f64(*X4)), ValueError, "pad"),
    ("conv-filter-large", lambda: L.Convolution(f64(4, 3, 7, 3), f64(4), pad=0)
     .forward(f64(*X4)), ValueError, "filter 7x3 is larger than the padded input 5x6"),
    ("conv-ndim", lambda: _conv().forward(f64(3, 5, 6)), ValueError, "x must be 4-D"),
    ("conv-b-dtype", lambda: L.Convolution(f32(4, 3, 3, 3), f64(4)).forward(f64(*X4)),
     TypeError, "b has dtype float64"),
    ("pool-stride-0", lambda: L.Pooling(2, 2, stride=0).forward(f64(*X4)), ValueError,
     "stride"),
    ("pool-large", lambda: L.Pooling(6, 2).forward(f64(*X4)), ValueError,
     "pool 6x2 is larger"),
    ("pool-ndim", lambda: L.Pooling(2, 2).forward(f64(5, 6)), ValueError, "x must be 4-D"),
    ("avgpool-pad-negative", lambda: L.AvgPooling(2, 2, pad=-1).forward(f64(*X4)),
     ValueError, "pad"),
    # layers: labels
    ("softmax-label-high", lambda: L.SoftmaxWithLoss().forward(f64(3, 4), np.array([0, 4, 1])),
     ValueError, "t labels must lie in [0, 4)"),
    ("softmax-label-negative",
     lambda: L.SoftmaxWithLoss().forward(f64(3, 4), np.array([-1, 0, 1])), ValueError,
     "t labels"),
    ("softmax-onehot-shape", lambda: L.SoftmaxWithLoss().forward(f64(3, 4), np.eye(4)),
     ValueError, "one-hot t must have shape (3, 4)"),
    ("softmax-complex-t",
     lambda: L.SoftmaxWithLoss().forward(f64(3, 4), np.eye(4)[:3] + 0j), TypeError, "t must"),
    # layers: normalisation parameters
    ("bn-gamma-shape", lambda: L.BatchNormalization(np.ones(6), np.zeros(6)).forward(f64(*XS)),
     ValueError, "gamma must have shape (7,)"),
    ("bn-4d-per-activation",
     lambda: L.BatchNormalization(np.ones(3), np.zeros(3)).forward(f64(*X4)), ValueError,
     "gamma must have shape (90,)"),
    pytest.param("bn-0d", lambda: _norm(L.BatchNormalization, 7).forward(np.array(1.0)),
                 ValueError, "x"),
    ("sbn-ndim", lambda: _norm(L.SpatialBatchNormalization, 3).forward(f64(*XS)), ValueError,
     "(N, C, H, W)"),
    ("ln-beta-dtype",
     lambda: L.LayerNormalization(np.ones(7), np.zeros(7, np.float32)).forward(f64(*XS)),
     TypeError, "beta has dtype float32"),
    pytest.param("ln-0d", lambda: _norm(L.LayerNormalization, 7).forward(np.array(1.0)),
                 ValueError, "x"),
    ("in-ndim", lambda: _norm(L.InstanceNormalization, 3).forward(f64(3, 5, 6)), ValueError,
     "x must be 4-D"),
    ("in-gamma-shape", lambda: _norm(L.InstanceNormalization, 2).forward(f64(*X4)),
     ValueError, "gamma must have shape (3,)"),
    # layers: the fused blocks
    ("affine-bn-relu-gamma-shape",
     lambda: L.AffineBNReLU(_affine(), _norm(L.BatchNormalization, 7), L.Relu())
     .forward(f64(*XS)), ValueError, "gamma must have shape (4,)"),
    ("affine-bn-relu-empty",
     lambda: L.AffineBNReLU(_affine(), _norm(L.BatchNormalization, 4), L.Relu())
     .forward(f64(0, 7)), ValueError, "x must have at least one row"),
    ("affine-bn-relu-shape",
     lambda: L.AffineBNReLU(_affine(), _norm(L.BatchNormalization, 4), L.Relu())
     .forward(f64(3, 5)), ValueError, "W has 7 rows"),
    ("affine-bn-relu-dropconnect",
     lambda: L.AffineBNReLU(L.DropConnect(f64(7, 4), f64(4)),
                            _norm(L.BatchNormalization, 4), L.Relu()),
     TypeError, "AffineBNReLU needs an Affine and a BatchNormalization layer"),
    ("affine-bn-relu-spatial-bn",
     lambda: L.AffineBNReLU(_affine(), _norm(L.SpatialBatchNormalization, 4), L.Relu()),
     TypeError, "AffineBNReLU needs an Affine and a BatchNormalization layer"),
    ("conv-relu-pool-avgpool", lambda: L.ConvReluPool(_conv(), L.AvgPooling(2, 2)),
     TypeError, "ConvReluPool needs a max Pooling layer"),
    ("conv-relu-pool-channels",
     lambda: L.ConvReluPool(_conv(), L.Pooling(2, 2)).forward(f64(2, 2, 5, 6)), ValueError,
     "x has 2 channels but W expects 3"),
    ("conv-relu-pool-large",
     lambda: L.ConvReluPool(_conv(), L.Pooling(4, 2)).forward(f64(*X4)), ValueError,
     "pool 4x2 is larger than the padded input 3x4"),
    # layers: constructor arguments
    ("dropout-ratio-1", lambda: L.Dropout(1.0), ValueError, "dropout_ratio"),
    ("dropout-ratio-negative", lambda: L.Dropout(-0.1), ValueError, "dropout_ratio"),
    ("dropconnect-ratio", lambda: L.DropConnect(f64(7, 4), f64(4), drop_ratio=1.5),
     ValueError, "drop_ratio"),
    # layers: element types
    pytest.param("relu-complex", lambda: L.Relu().forward(f64(*XS) + 1j), TypeError, "x"),
    pytest.param("sigmoid-object", lambda: L.Sigmoid().forward(f64(*XS).astype(object)),
                 TypeError, "x"),
    pytest.param("dropout-str", lambda: L.Dropout().forward(np.array([["a", "b"]])),
                 TypeError, "x"),
    pytest.param("softmax-object-x",
                 lambda: L.SoftmaxWithLoss().forward(f64(3, 4).astype(object),
                                                     np.array([0, 1, 2])),
                 TypeError, "x"),
    pytest.param("pool-complex", lambda: L.Pooling(2, 2).forward(f64(*X4) + 1j), TypeError,
                 "x"),
]


def _case_id(row):
    return row.values[0] if hasattr(row, "values") else row[0]


@pytest.mark.parametrize("case_id,call,exc,substring", PUBLIC_CASES,
                         ids=[_case_id(c) for c in PUBLIC_CASES])
def test_public_api_rejects_bad_input(case_id, call, exc, substring, backend):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    if substring.isidentifier():  # an argument name: as a word ('x', not the x of 'expected')
        found = re.search(rf"\b{substring}\b", message) is not None
    else:
        found = substring in message
    assert found, f"message {message!r} lacks {substring!r}"
