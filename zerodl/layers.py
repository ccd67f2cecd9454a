"""Layers with the book's names, constructors and attributes (``common.layers``).

Each layer has ``forward`` and ``backward``; backward returns the gradient with respect
to the input and keeps parameter gradients on the layer (``dW``, ``db``, ``dgamma``,
``dbeta``).  All arithmetic runs through the kernel table, so the active backend decides
how it is computed.  Layers whose behaviour differs between training and inference
(Dropout, DropConnect, the batch norms) have ``train_dependent = True`` and take
``train_flg``.

Differences from the book, all deliberate: ``backward`` never writes into ``dout``;
float32 input stays float32 (running statistics too); Dropout and DropConnect draw from
their own ``numpy.random.Generator``; Pooling uses its ``pad`` and pads max pooling with
-inf; SoftmaxWithLoss uses an exact log-sum-exp.
"""
from __future__ import annotations

import numpy as np

from ._arrays import as_float, batch_rows, make_rng
from ._kernels import _checks as chk
from ._kernels import ops

__all__ = ["Relu", "Sigmoid", "Tanh", "Affine", "SoftmaxWithLoss", "Dropout", "DropConnect",
           "BatchNormalization", "SpatialBatchNormalization", "LayerNormalization",
           "InstanceNormalization", "Convolution", "Pooling", "AvgPooling", "ConvReluPool",
           "AffineBNReLU"]


class Layer:
    """Base class: parameter-free, same behaviour in training and inference."""

    train_dependent = False
    # backward(dout, need_dx=False) skips the input gradient (returns None): a network's
    # first layer has no use for it
    input_grad_optional = False

    def param_names(self) -> tuple[str, ...]:
        """Attribute names of this layer's parameters (gradient: 'd' + name)."""
        return ()


class Relu(Layer):
    def __init__(self):
        self.out = None

    @property
    def mask(self):
        """The book's mask: True where the input was <= 0."""
        return None if self.out is None else self.out <= 0

    def forward(self, x):
        self.out = ops.relu_forward(as_float(x))
        return self.out

    def backward(self, dout):
        return ops.relu_backward(as_float(dout, self.out.dtype), self.out)


class Sigmoid(Layer):
    def __init__(self):
        self.out = None

    def forward(self, x):
        self.out = ops.sigmoid_forward(as_float(x))
        return self.out

    def backward(self, dout):
        return ops.sigmoid_backward(as_float(dout, self.out.dtype), self.out)


class Tanh(Layer):
    def __init__(self):
        self.out = None

    def forward(self, x):
        self.out = ops.tanh_forward(as_float(x))
        return self.out

    def backward(self, dout):
        return ops.tanh_backward(as_float(dout, self.out.dtype), self.out)


class Affine(Layer):
    """out = x @ W + b; x of any ndim is flattened to (N, -1)."""

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def param_names(self):
        return ("W", "b")

    def _rows(self, x):
        chk.float_array("W", self.W)  # before x is converted to W's dtype
        x = as_float(x, self.W.dtype)
        self.original_x_shape = x.shape
        self.x = batch_rows(x)
        return self.x

    input_grad_optional = True

    def forward(self, x):
        return ops.affine_forward(self._rows(x), self.W, self.b)

    def backward(self, dout, need_dx=True):
        dx, self.dW, self.db = ops.affine_backward(as_float(dout, self.W.dtype), self.x, self.W,
                                                   need_dx)
        return dx.reshape(self.original_x_shape) if need_dx else None


class SoftmaxWithLoss(Layer):
    """Softmax followed by mean cross-entropy; t is labels or one-hot rows."""

    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x, t):
        self.t = np.asarray(t)
        self.loss, self.y = ops.softmax_cross_entropy_forward(as_float(x), self.t)
        return self.loss

    def backward(self, dout=1):
        return ops.softmax_cross_entropy_backward(self.y, self.t, dout)


class Dropout(Layer):
    """The book's dropout: training keeps each unit with probability 1 - ratio;
    inference scales by (1 - ratio).  ``inverted=True`` scales at training time instead."""

    train_dependent = True

    def __init__(self, dropout_ratio=0.5, rng=None, inverted=False):
        if not 0.0 <= float(dropout_ratio) < 1.0:
            raise ValueError(f"dropout_ratio must be in [0, 1), got {dropout_ratio}")
        self.dropout_ratio = float(dropout_ratio)
        self.rng = make_rng(rng)
        self.inverted = bool(inverted)
        self.mask = None

    def _train_scale(self):
        return 1.0 / (1.0 - self.dropout_ratio) if self.inverted else 1.0

    def forward(self, x, train_flg=True):
        x = as_float(x)
        if train_flg:
            self.mask = self.rng.random(x.shape, dtype=x.dtype) > self.dropout_ratio
            return ops.dropout_forward(x, self.mask, self._train_scale())
        if self.inverted:
            return x
        return x * x.dtype.type(1.0 - self.dropout_ratio)

    def backward(self, dout):
        return ops.dropout_backward(as_float(dout), self.mask, self._train_scale())


class DropConnect(Affine):
    """Affine layer whose weights are dropped at random during training (Wan et al. 2013).

    Training uses W * mask (each weight kept with probability 1 - drop_ratio); inference
    uses the expected weights W * (1 - drop_ratio).
    """

    train_dependent = True

    def __init__(self, W, b, drop_ratio=0.5, rng=None):
        super().__init__(W, b)
        if not 0.0 <= float(drop_ratio) < 1.0:
            raise ValueError(f"drop_ratio must be in [0, 1), got {drop_ratio}")
        self.drop_ratio = float(drop_ratio)
        self.rng = make_rng(rng)
        self.mask = None
        self._W_used = None

    def forward(self, x, train_flg=True):
        chk.float_array("W", self.W)
        if train_flg:
            self.mask = self.rng.random(self.W.shape, dtype=self.W.dtype) > self.drop_ratio
            self._W_used = ops.dropout_forward(self.W, self.mask)
        else:
            self.mask = None
            self._W_used = self.W * self.W.dtype.type(1.0 - self.drop_ratio)
        return ops.affine_forward(self._rows(x), self._W_used, self.b)

    def backward(self, dout, need_dx=True):
        dx, dW_used, self.db = ops.affine_backward(as_float(dout, self.W.dtype), self.x,
                                                   self._W_used, need_dx)
        if self.mask is not None:
            self.dW = ops.dropout_backward(dW_used, self.mask)
        else:
            self.dW = dW_used * self.W.dtype.type(1.0 - self.drop_ratio)
        return dx.reshape(self.original_x_shape) if need_dx else None


class _Norm(Layer):
    """Shared parameter handling of the normalisation layers."""

    def __init__(self, gamma, beta, eps):
        self.gamma = gamma
        self.beta = beta
        self.eps = eps
        self.input_shape = None
        self.xhat = None
        self.inv_std = None
        self.dgamma = None
        self.dbeta = None

    def param_names(self):
        return ("gamma", "beta")

    def _input(self, x):
        chk.float_array("gamma", self.gamma)  # before x is converted to gamma's dtype
        return as_float(x, self.gamma.dtype)


class BatchNormalization(_Norm):
    """The book's batch norm: per activation; 4-D input is flattened to (N, C*H*W).

    eps defaults to the book's 10e-7 (= 1e-6); running statistics follow
    r = momentum*r + (1-momentum)*batch statistic with the biased batch variance.
    """

    train_dependent = True
    # Kernel names, looked up in the active backend's table at call time.
    _kernels = ("batchnorm_forward_train", "batchnorm_forward_infer", "batchnorm_backward")

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None,
                 eps=10e-7):
        super().__init__(gamma, beta, eps)
        self.momentum = momentum
        self.running_mean = running_mean
        self.running_var = running_var

    def _shape_in(self, x):
        return batch_rows(x)

    def _features(self, x):
        return x.shape[1]

    def _init_running(self, features, dtype):
        """Zero running statistics, sized by the first input, unless given or kept."""
        if self.running_mean is None:
            self.running_mean = np.zeros(features, dtype=dtype)
            self.running_var = np.zeros(features, dtype=dtype)

    def forward(self, x, train_flg=True):
        x = self._input(x)
        self.input_shape = x.shape
        x = self._shape_in(x)
        self._init_running(self._features(x), x.dtype)
        if train_flg:
            out, self.xhat, self.inv_std = getattr(ops, self._kernels[0])(
                x, self.gamma, self.beta, self.running_mean, self.running_var,
                self.momentum, self.eps)
        else:
            out = getattr(ops, self._kernels[1])(x, self.gamma, self.beta, self.running_mean,
                                  self.running_var, self.eps)
        return out.reshape(self.input_shape)

    def backward(self, dout):
        dout = self._shape_in(as_float(dout, self.gamma.dtype))
        dx, self.dgamma, self.dbeta = getattr(ops, self._kernels[2])(dout, self.xhat,
                                                                     self.gamma, self.inv_std)
        return dx.reshape(self.input_shape)


class SpatialBatchNormalization(BatchNormalization):
    """Batch norm of (N, C, H, W) per channel over (N, H, W), like PyTorch's BatchNorm2d;
    gamma and beta have shape (C,).  eps defaults to the book's 1e-6."""

    _kernels = ("spatial_batchnorm_forward_train", "spatial_batchnorm_forward_infer",
                "spatial_batchnorm_backward")

    def _shape_in(self, x):
        if x.ndim != 4:
            raise ValueError(f"SpatialBatchNormalization expects (N, C, H, W) input, got {x.shape}")
        return x


class LayerNormalization(_Norm):
    """Normalise each sample over all its features; gamma, beta have the per-sample size."""

    def __init__(self, gamma, beta, eps=1e-5):
        super().__init__(gamma, beta, eps)

    def forward(self, x):
        x = self._input(x)
        self.input_shape = x.shape
        out, self.xhat, self.inv_std = ops.layernorm_forward(
            batch_rows(x), self.gamma, self.beta, self.eps)
        return out.reshape(self.input_shape)

    def backward(self, dout):
        dout = as_float(dout, self.gamma.dtype)
        dx, self.dgamma, self.dbeta = ops.layernorm_backward(
            batch_rows(dout, "dout"), self.xhat, self.gamma, self.inv_std)
        return dx.reshape(self.input_shape)


class InstanceNormalization(_Norm):
    """Normalise each (sample, channel) plane of (N, C, H, W); gamma, beta have shape (C,)."""

    def __init__(self, gamma, beta, eps=1e-5):
        super().__init__(gamma, beta, eps)

    def forward(self, x):
        x = self._input(x)
        out, self.xhat, self.inv_std = ops.instancenorm_forward(x, self.gamma, self.beta,
                                                                self.eps)
        return out

    def backward(self, dout):
        dx, self.dgamma, self.dbeta = ops.instancenorm_backward(
            as_float(dout, self.gamma.dtype), self.xhat, self.gamma, self.inv_std)
        return dx


class Convolution(Layer):
    """Convolution through im2col and one matrix product; W is (FN, C, FH, FW)."""

    def __init__(self, W, b, stride=1, pad=0):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x = None
        self.col = None
        self.dW = None
        self.db = None

    @property
    def col_W(self):
        """The book's reshaped filter matrix (C*FH*FW, FN)."""
        return self.W.reshape(self.W.shape[0], -1).T

    def param_names(self):
        return ("W", "b")

    input_grad_optional = True

    def forward(self, x):
        self.x = as_float(x, self.W.dtype)
        out, self.col = ops.conv_forward(self.x, self.W, self.b, self.stride, self.pad)
        return out

    def backward(self, dout, need_dx=True):
        dx, self.dW, self.db = ops.conv_backward(as_float(dout, self.W.dtype), self.col,
                                                 self.x.shape, self.W, self.stride, self.pad,
                                                 need_dx)
        return dx


class Pooling(Layer):
    """Max pooling (padding counts as -inf)."""

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x_shape = None
        self.arg_max = None

    def forward(self, x):
        x = as_float(x)
        self.x_shape = x.shape
        out, self.arg_max = ops.maxpool_forward(x, self.pool_h, self.pool_w, self.stride,
                                                self.pad)
        return out

    def backward(self, dout):
        return ops.maxpool_backward(as_float(dout), self.arg_max, self.x_shape, self.pool_h,
                                    self.pool_w, self.stride, self.pad)


class AvgPooling(Pooling):
    """Average pooling; padded zeros count towards the average."""

    def forward(self, x):
        x = as_float(x)
        self.x_shape = x.shape
        return ops.avgpool_forward(x, self.pool_h, self.pool_w, self.stride, self.pad)

    def backward(self, dout):
        return ops.avgpool_backward(as_float(dout), self.x_shape, self.pool_h, self.pool_w,
                                    self.stride, self.pad)


class ConvReluPool(Layer):
    """Convolution - ReLU - max Pooling as one step, over the given Convolution and
    Pooling layers (their parameters, settings and gradients ``dW``, ``db``).

    Equal to the three layers in turn, in fewer passes over memory: each image is
    convolved, rectified and pooled while in cache, and the full-size convolution and
    ReLU outputs are never stored.  Networks use it in ``train_step`` and inference.
    """

    input_grad_optional = True

    def __init__(self, conv: Convolution, pool: Pooling):
        if type(pool) is not Pooling:
            raise TypeError(f"ConvReluPool needs a max Pooling layer, got {type(pool).__name__}")
        self.conv = conv
        self.pool = pool
        self.out = None
        self.arg_max = None

    def param_names(self):
        return ()  # the Convolution layer owns them

    def forward(self, x):
        conv, pool = self.conv, self.pool
        conv.x = as_float(x, conv.W.dtype)
        self.out, conv.col, self.arg_max = ops.conv_relu_pool_forward(
            conv.x, conv.W, conv.b, conv.stride, conv.pad, pool.pool_h, pool.pool_w,
            pool.stride, pool.pad)
        return self.out

    def backward(self, dout, need_dx=True):
        conv, pool = self.conv, self.pool
        dx, conv.dW, conv.db = ops.conv_relu_pool_backward(
            as_float(dout, conv.W.dtype), self.out, self.arg_max, conv.col, conv.x.shape,
            conv.W, conv.stride, conv.pad, pool.pool_h, pool.pool_w, pool.stride, pool.pad,
            need_dx)
        return dx


class AffineBNReLU(Layer):
    """Affine - BatchNormalization - Relu as one step, over the given Affine and
    BatchNormalization layers (their parameters, running statistics and gradients).

    In training one kernel call each way computes what the three layers would, keeping
    the GEMM output, its normalisation and the rectification in cache; in inference the
    three layers run in turn.  Networks use it in ``train_step``.
    """

    train_dependent = True
    input_grad_optional = True

    def __init__(self, affine: Affine, bn: BatchNormalization, relu: Relu):
        if type(affine) is not Affine or type(bn) is not BatchNormalization:
            raise TypeError("AffineBNReLU needs an Affine and a BatchNormalization layer")
        self.affine = affine
        self.bn = bn
        self.relu = relu
        self.out = None

    def param_names(self):
        return ()  # the Affine and BatchNormalization layers own them

    def forward(self, x, train_flg=True):
        affine, bn = self.affine, self.bn
        if not train_flg:
            y = bn.forward(affine.forward(x), train_flg=False)
            return self.relu.forward(y)
        x = affine._rows(x)
        bn._init_running(affine.W.shape[1], x.dtype)
        bn.input_shape = (x.shape[0], affine.W.shape[1])
        self.out, bn.xhat, bn.inv_std = ops.affine_bn_relu_forward(
            x, affine.W, affine.b, bn.gamma, bn.beta, bn.running_mean, bn.running_var,
            bn.momentum, bn.eps)
        return self.out

    def backward(self, dout, need_dx=True):
        affine, bn = self.affine, self.bn
        dx, affine.dW, affine.db, bn.dgamma, bn.dbeta = ops.affine_bn_relu_backward(
            as_float(dout, affine.W.dtype), self.out, bn.xhat, bn.gamma, bn.inv_std, affine.x,
            affine.W, need_dx)
        return dx.reshape(affine.original_x_shape) if need_dx else None

