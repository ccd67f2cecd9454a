"""zerodl's networks against a straight re-implementation of the book's formulas.

The ``Book*`` classes below are written the way "Deep Learning from Scratch" writes its
layers (``common/layers.py``, ``common/util.py``): affine, ReLU/sigmoid, the BatchNorm
backward through dxn/dxc/dstd/dvar/dmu, softmax-with-loss, weight decay lambda*W, an
im2col convolution and a max pool via argmax.  They share nothing with zerodl.  In
float64, zerodl's backpropagated gradients must equal theirs to 1e-7 (relative).

Then the networks' own check: ``net.numerical_gradient`` (central differences) against
``net.gradient`` on small nets with odd sizes, including L1 and elastic-net decay.
"""
from __future__ import annotations

import numpy as np
import pytest

from zerodl.nets import DeepConvNet, MultiLayerNet, MultiLayerNetExtend, SimpleConvNet

# Tolerances, one table per dtype (everything here is float64).
TOL = {
    np.dtype(np.float64): {"book": 1e-7, "numerical": 1e-6, "loss": 1e-10},
}
T64 = TOL[np.dtype(np.float64)]


def rel_error(a, b, floor=1e-6) -> float:
    """max |a - b| relative to the larger max |.|; ``floor`` keeps gradients that are zero
    in exact arithmetic (a bias right before BatchNorm) from dividing noise by noise."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)), floor)
    return float(np.max(np.abs(a - b)) / scale)


# ================================================================ the book, re-written

def book_im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    N, C, H, W = input_data.shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    img = np.pad(input_data, [(0, 0), (0, 0), (pad, pad), (pad, pad)], "constant")
    col = np.zeros((N, C, filter_h, filter_w, out_h, out_w))
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            col[:, :, y, x, :, :] = img[:, :, y:y_max:stride, x:x_max:stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * out_h * out_w, -1)


def book_col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    N, C, H, W = input_shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    col = col.reshape(N, out_h, out_w, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1))
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            img[:, :, y:y_max:stride, x:x_max:stride] += col[:, :, y, x, :, :]
    return img[:, :, pad:H + pad, pad:W + pad]


class BookRelu:
    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout = dout.copy()
        dout[self.mask] = 0
        return dout


class BookSigmoid:
    def forward(self, x):
        self.out = 1 / (1 + np.exp(-x))
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


class BookAffine:
    def __init__(self, W, b):
        self.W, self.b = W, b

    def forward(self, x):
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return np.dot(self.x, self.W) + self.b

    def backward(self, dout):
        dx = np.dot(dout, self.W.T)
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class BookBatchNormalization:
    def __init__(self, gamma, beta):
        self.gamma, self.beta = gamma, beta

    def forward(self, x):
        mu = x.mean(axis=0)
        xc = x - mu
        var = np.mean(xc ** 2, axis=0)
        std = np.sqrt(var + 10e-7)
        xn = xc / std
        self.batch_size, self.xc, self.xn, self.std = x.shape[0], xc, xn, std
        return self.gamma * xn + self.beta

    def backward(self, dout):
        dbeta = dout.sum(axis=0)
        dgamma = np.sum(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        dxc = dxn / self.std
        dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc += (2.0 / self.batch_size) * self.xc * dvar
        dmu = np.sum(dxc, axis=0)
        dx = dxc - dmu / self.batch_size
        self.dgamma, self.dbeta = dgamma, dbeta
        return dx


class BookDropout:
    """The book's dropout with the mask given (zerodl's draw), so both see one mask."""

    def __init__(self, mask):
        self.mask = mask

    def forward(self, x):
        return x * self.mask

    def backward(self, dout):
        return dout * self.mask


class BookSoftmaxWithLoss:
    def forward(self, x, t):
        x = x - x.max(axis=1, keepdims=True)
        self.y = np.exp(x) / np.sum(np.exp(x), axis=1, keepdims=True)
        self.t = t
        # Exact -log(y); the book adds 1e-7 inside the log (a quirk zerodl drops).
        return -np.sum(np.log(self.y[np.arange(x.shape[0]), t])) / x.shape[0]

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        dx = self.y.copy()
        dx[np.arange(batch_size), self.t] -= 1
        return dx * dout / batch_size


class BookConvolution:
    def __init__(self, W, b, stride=1, pad=0):
        self.W, self.b, self.stride, self.pad = W, b, stride, pad

    def forward(self, x):
        FN, C, FH, FW = self.W.shape
        N, C, H, W = x.shape
        out_h = 1 + int((H + 2 * self.pad - FH) / self.stride)
        out_w = 1 + int((W + 2 * self.pad - FW) / self.stride)
        col = book_im2col(x, FH, FW, self.stride, self.pad)
        col_W = self.W.reshape(FN, -1).T
        out = np.dot(col, col_W) + self.b
        self.x, self.col, self.col_W = x, col, col_W
        return out.reshape(N, out_h, out_w, -1).transpose(0, 3, 1, 2)

    def backward(self, dout):
        FN, C, FH, FW = self.W.shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
        self.db = np.sum(dout, axis=0)
        self.dW = np.dot(self.col.T, dout).transpose(1, 0).reshape(FN, C, FH, FW)
        dcol = np.dot(dout, self.col_W.T)
        return book_col2im(dcol, self.x.shape, FH, FW, self.stride, self.pad)


class BookPooling:
    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h, self.pool_w, self.stride, self.pad = pool_h, pool_w, stride, pad

    def forward(self, x):
        N, C, H, W = x.shape
        out_h = int(1 + (H - self.pool_h) / self.stride)
        out_w = int(1 + (W - self.pool_w) / self.stride)
        col = book_im2col(x, self.pool_h, self.pool_w, self.stride, self.pad)
        col = col.reshape(-1, self.pool_h * self.pool_w)
        self.x, self.arg_max = x, np.argmax(col, axis=1)
        out = np.max(col, axis=1)
        return out.reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)

    def backward(self, dout):
        dout = dout.transpose(0, 2, 3, 1)
        pool_size = self.pool_h * self.pool_w
        dmax = np.zeros((dout.size, pool_size))
        dmax[np.arange(self.arg_max.size), self.arg_max.flatten()] = dout.flatten()
        dmax = dmax.reshape(dout.shape + (pool_size,))
        dcol = dmax.reshape(dmax.shape[0] * dmax.shape[1] * dmax.shape[2], -1)
        return book_col2im(dcol, self.x.shape, self.pool_h, self.pool_w, self.stride,
                           self.pad)


def book_gradient(layers, param_of, params, x, t, weight_decay_lambda=0.0):
    """The book's gradient(): forward, loss + 0.5*lambda*sum(W^2), backward, dW + lambda*W.

    ``layers``: ordered list; ``param_of``: param name -> (layer, attribute).
    """
    last = BookSoftmaxWithLoss()
    y = x
    for layer in layers:
        y = layer.forward(y)
    loss = last.forward(y, t)
    for k, W in params.items():
        if k.startswith("W"):
            loss += 0.5 * weight_decay_lambda * np.sum(W ** 2)
    dout = last.backward(1)
    for layer in reversed(layers):
        dout = layer.backward(dout)
    grads = {}
    for k, (layer, attr) in param_of.items():
        g = getattr(layer, "d" + attr)
        grads[k] = g + weight_decay_lambda * params[k] if k.startswith("W") else g
    return loss, grads


def book_mlp(net, params, activation, masks=None):
    """The book's MultiLayerNet(Extend) layer stack over a copy of ``net``'s parameters."""
    act = {"relu": BookRelu, "sigmoid": BookSigmoid}[activation]
    n_layers = net.hidden_layer_num + 1
    layers, param_of = [], {}
    for i in range(1, n_layers + 1):
        aff = BookAffine(params[f"W{i}"], params[f"b{i}"])
        layers.append(aff)
        param_of[f"W{i}"], param_of[f"b{i}"] = (aff, "W"), (aff, "b")
        if i < n_layers:
            if f"gamma{i}" in params:
                bn = BookBatchNormalization(params[f"gamma{i}"], params[f"beta{i}"])
                layers.append(bn)
                param_of[f"gamma{i}"], param_of[f"beta{i}"] = (bn, "gamma"), (bn, "beta")
            layers.append(act())
            if masks is not None:
                layers.append(BookDropout(masks[i]))
    return layers, param_of


# ================================================================ zerodl == the book

def _data(rng, n, shape, classes):
    return rng.normal(size=(n, *shape)), rng.integers(0, classes, n)


def _check_against_book(net, layers, param_of, params, x, t):
    loss, book_grads = book_gradient(layers, param_of, params, x, t,
                                     net.weight_decay_lambda)
    grads = net.gradient(x, t)
    assert set(grads) == set(net.params) == set(book_grads)
    for k in grads:
        assert grads[k].shape == net.params[k].shape
        assert grads[k].dtype == np.float64
        err = rel_error(grads[k], book_grads[k])
        assert err < T64["book"], f"{k}: relative error {err:.2e}"
    zerodl_loss = net.last_layer.loss + net.regularization_loss()
    assert abs(zerodl_loss - loss) <= T64["loss"] * max(1.0, abs(loss))


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("decay", [0.0, 0.3])
def test_multilayernet_matches_book(activation, decay, backend):
    rng = np.random.default_rng(1)
    net = MultiLayerNet(7, [5, 3], 4, activation=activation, weight_decay_lambda=decay,
                        dtype=np.float64, seed=2)
    params = {k: v.copy() for k, v in net.params.items()}
    x, t = _data(rng, 9, (7,), 4)
    _check_against_book(net, *book_mlp(net, params, activation), params, x, t)


@pytest.mark.parametrize("use_dropout", [False, True])
@pytest.mark.parametrize("use_batchnorm", [False, True])
def test_multilayernet_extend_matches_book(use_batchnorm, use_dropout, backend):
    rng = np.random.default_rng(3)
    net = MultiLayerNetExtend(7, [6, 5, 3], 4, weight_decay_lambda=0.1,
                              use_dropout=use_dropout, dropout_ration=0.3,
                              use_batchnorm=use_batchnorm, dtype=np.float64, seed=4)
    # Perturb gamma/beta off their (1, 0) start so their gradients matter.
    for k, v in net.params.items():
        if k.startswith(("gamma", "beta")):
            v += rng.normal(scale=0.3, size=v.shape)
    params = {k: v.copy() for k, v in net.params.items()}
    x, t = _data(rng, 11, (7,), 4)
    grads = net.gradient(x, t)  # draws zerodl's dropout masks, read back below
    masks = ({i: net.layers[f"Dropout{i}"].mask for i in range(1, 4)} if use_dropout
             else None)
    layers, param_of = book_mlp(net, params, "relu", masks)
    loss, book_grads = book_gradient(layers, param_of, params, x, t, 0.1)
    assert set(grads) == set(book_grads)
    if use_batchnorm:
        assert {"gamma1", "beta1", "gamma3", "beta3"} <= set(grads)
    for k in grads:
        err = rel_error(grads[k], book_grads[k])
        assert err < T64["book"], f"{k}: relative error {err:.2e}"
    assert abs(net.last_layer.loss + net.regularization_loss() - loss) <= T64["loss"] * loss


@pytest.mark.parametrize("conv_param,input_dim", [
    ({"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1}, (2, 9, 8)),
    ({"filter_num": 4, "filter_size": 3, "pad": 0, "stride": 2}, (1, 9, 8)),
    ({"filter_num": 2, "filter_size": 5, "pad": 2, "stride": 1}, (3, 7, 7)),
])
def test_simpleconvnet_matches_book(conv_param, input_dim, backend):
    rng = np.random.default_rng(5)
    net = SimpleConvNet(input_dim=input_dim, conv_param=conv_param, hidden_size=6,
                        output_size=5, weight_init_std=0.3, dtype=np.float64, seed=6)
    p = {k: v.copy() for k, v in net.params.items()}
    p["b1"] += rng.normal(scale=0.1, size=p["b1"].shape)
    net.params["b1"][...] = p["b1"]
    conv = BookConvolution(p["W1"], p["b1"], conv_param["stride"], conv_param["pad"])
    aff1, aff2 = BookAffine(p["W2"], p["b2"]), BookAffine(p["W3"], p["b3"])
    layers = [conv, BookRelu(), BookPooling(2, 2, stride=2), aff1, BookRelu(), aff2]
    param_of = {"W1": (conv, "W"), "b1": (conv, "b"), "W2": (aff1, "W"), "b2": (aff1, "b"),
                "W3": (aff2, "W"), "b3": (aff2, "b")}
    x, t = _data(rng, 4, input_dim, 5)
    _check_against_book(net, layers, param_of, p, x, t)


def test_book_helpers_agree_with_zerodl_util():
    """The test's own im2col/col2im are the book's layout; zerodl.util must match them."""
    from zerodl.util import col2im, im2col
    x = np.random.default_rng(7).normal(size=(2, 3, 5, 6))
    for fh, fw, s, p in [(3, 3, 1, 0), (2, 3, 2, 1), (3, 2, 3, 2)]:
        col = book_im2col(x, fh, fw, s, p)
        np.testing.assert_array_equal(im2col(x, fh, fw, s, p), col)
        np.testing.assert_allclose(col2im(col, x.shape, fh, fw, s, p),
                                   book_col2im(col, x.shape, fh, fw, s, p), rtol=1e-12)


# ================================================================ numerical vs backprop

NUMERICAL_NETS = {
    "mlp-relu": lambda: MultiLayerNet(5, [4, 3], 3, dtype=np.float64, seed=10),
    "mlp-sigmoid-l2": lambda: MultiLayerNet(5, [4, 3], 3, activation="sigmoid",
                                            weight_init_std="xavier",
                                            weight_decay_lambda=0.2, dtype=np.float64,
                                            seed=11),
    "mlp-tanh-l1": lambda: MultiLayerNet(5, [3], 3, activation="tanh", l1_lambda=0.05,
                                         dtype=np.float64, seed=12),
    "mlp-elastic": lambda: MultiLayerNet(5, [4], 3, weight_decay_lambda=0.1, l1_lambda=0.03,
                                         dtype=np.float64, seed=13),
    "extend-bn-l2": lambda: MultiLayerNetExtend(5, [4, 3], 3, weight_decay_lambda=0.1,
                                                use_batchnorm=True, dtype=np.float64,
                                                seed=14),
    "extend-bn-elastic": lambda: MultiLayerNetExtend(5, [3], 3, activation="sigmoid",
                                                     weight_decay_lambda=0.05,
                                                     l1_lambda=0.02, use_batchnorm=True,
                                                     dtype=np.float64, seed=15),
    "simpleconvnet": lambda: SimpleConvNet(
        input_dim=(2, 7, 6), conv_param={"filter_num": 3, "filter_size": 3, "pad": 1,
                                         "stride": 2},
        hidden_size=4, output_size=3, weight_init_std=0.5, dtype=np.float64, seed=16),
}


@pytest.mark.parametrize("name", list(NUMERICAL_NETS))
def test_numerical_gradient_of_network(name, backend):
    net = NUMERICAL_NETS[name]()
    rng = np.random.default_rng(17)
    input_shape = (2, 7, 6) if name == "simpleconvnet" else (5,)
    x, t = _data(rng, 5, input_shape, 3)
    if name == "simpleconvnet":
        net.params["b1"][...] = rng.normal(scale=0.1, size=net.params["b1"].shape)
    numerical = net.numerical_gradient(x, t)
    analytic = net.gradient(x, t)
    assert set(numerical) == set(analytic) == set(net.params)
    for k in net.params:
        # floor 1e-4: central differences with h=1e-4 carry ~1e-12 of rounding noise
        err = rel_error(analytic[k], numerical[k], floor=1e-4)
        assert err < T64["numerical"], f"{name} {k}: relative error {err:.2e}"


def test_decay_terms_in_loss_and_gradient():
    """loss adds 0.5*l2*sum(W^2) + l1*sum|W| over the W's only; dW adds l2*W + l1*sign(W)."""
    rng = np.random.default_rng(18)
    plain = MultiLayerNet(5, [4], 3, dtype=np.float64, seed=19)
    net = MultiLayerNet(5, [4], 3, weight_decay_lambda=0.2, l1_lambda=0.05,
                        dtype=np.float64, seed=19)
    x, t = _data(rng, 6, (5,), 3)
    Ws = [net.params["W1"], net.params["W2"]]
    expected = (plain.loss(x, t) + sum(0.5 * 0.2 * np.sum(W ** 2) for W in Ws)
                + sum(0.05 * np.sum(np.abs(W)) for W in Ws))
    assert net.loss(x, t) == pytest.approx(expected, rel=1e-12)
    g0, g = plain.gradient(x, t), net.gradient(x, t)
    for k in net.params:
        extra = (0.2 * net.params[k] + 0.05 * np.sign(net.params[k])) if k[0] == "W" else 0
        np.testing.assert_allclose(g[k], g0[k] + extra, rtol=1e-12, atol=1e-15)


# ================================================================ DeepConvNet

def test_deepconvnet_gradient_shapes_and_finite_loss(backend):
    net = DeepConvNet(dtype=np.float64, seed=20)
    expected = {
        "W1": (16, 1, 3, 3), "W2": (16, 16, 3, 3), "W3": (32, 16, 3, 3),
        "W4": (32, 32, 3, 3), "W5": (64, 32, 3, 3), "W6": (64, 64, 3, 3),
        "W7": (64 * 4 * 4, 50), "W8": (50, 10),
    }
    for k, shape in expected.items():
        assert net.params[k].shape == shape
        assert net.params["b" + k[1:]].shape == (shape[0] if k < "W7" else shape[1],)
    rng = np.random.default_rng(21)
    x, t = rng.random((3, 1, 28, 28)), rng.integers(0, 10, 3)
    loss = net.loss(x, t, train_flg=True)
    assert np.isfinite(loss) and loss > 0
    grads = net.gradient(x, t)
    assert set(grads) == set(net.params)
    for k, g in grads.items():
        assert g.shape == net.params[k].shape and g.dtype == np.float64
        assert np.all(np.isfinite(g)), k
    assert any(np.any(g != 0) for g in grads.values())
    assert net.predict(x).shape == (3, 10)


# ================================================================ layer formulas

def test_batchnorm_running_statistics_and_inference_are_the_books(backend):
    """r = momentum*r + (1-momentum)*batch stat (biased var); inference with eps=10e-7."""
    rng = np.random.default_rng(30)
    gamma, beta = rng.uniform(0.5, 1.5, 7), rng.normal(size=7)
    from zerodl.layers import BatchNormalization
    layer = BatchNormalization(gamma, beta, momentum=0.8)
    rm, rv = np.zeros(7), np.zeros(7)
    for _ in range(3):
        x = rng.normal(loc=2.0, scale=3.0, size=(9, 7))
        out = layer.forward(x, train_flg=True)
        book = BookBatchNormalization(gamma, beta)
        np.testing.assert_allclose(out, book.forward(x), rtol=1e-12, atol=1e-12)
        rm = 0.8 * rm + 0.2 * x.mean(axis=0)
        rv = 0.8 * rv + 0.2 * x.var(axis=0)
    np.testing.assert_allclose(layer.running_mean, rm, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, rv, rtol=1e-12)
    x = rng.normal(size=(4, 7))
    expected = gamma * (x - rm) / np.sqrt(rv + 10e-7) + beta
    np.testing.assert_allclose(layer.forward(x, train_flg=False), expected, rtol=1e-12)


def test_batchnorm_4d_is_per_activation_and_spatial_is_per_channel(backend):
    from zerodl.layers import BatchNormalization, SpatialBatchNormalization
    rng = np.random.default_rng(31)
    x = rng.normal(loc=1.0, scale=2.0, size=(4, 2, 3, 5))
    flat = BatchNormalization(np.ones(30), np.zeros(30))
    out = flat.forward(x)
    xf = x.reshape(4, -1)
    np.testing.assert_allclose(out.reshape(4, -1),
                               (xf - xf.mean(0)) / np.sqrt(xf.var(0) + 10e-7), rtol=1e-10)
    spatial = SpatialBatchNormalization(np.ones(2), np.zeros(2))
    out = spatial.forward(x)
    mu = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(out, (x - mu) / np.sqrt(var + 10e-7), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(spatial.running_mean, 0.1 * mu.ravel(), rtol=1e-12)
    np.testing.assert_allclose(spatial.running_var, 0.1 * var.ravel(), rtol=1e-12)


def test_dropconnect_forward_formulas(backend):
    from zerodl.layers import DropConnect
    rng = np.random.default_rng(32)
    W, b, x = rng.normal(size=(7, 4)), rng.normal(size=4), rng.normal(size=(3, 7))
    layer = DropConnect(W, b, drop_ratio=0.3, rng=9)
    out = layer.forward(x, train_flg=True)
    mask = np.random.default_rng(9).random(W.shape) > 0.3
    np.testing.assert_array_equal(layer.mask, mask)
    np.testing.assert_allclose(out, x @ (W * mask) + b, rtol=1e-12)
    np.testing.assert_allclose(layer.forward(x, train_flg=False), x @ (W * 0.7) + b,
                               rtol=1e-12)


def test_layer_and_instance_norm_formulas(backend):
    from zerodl.layers import InstanceNormalization, LayerNormalization
    rng = np.random.default_rng(33)
    x = rng.normal(loc=1.0, scale=2.0, size=(3, 2, 5, 6))
    g, b = rng.uniform(0.5, 1.5, 60), rng.normal(size=60)
    xf = x.reshape(3, -1)
    expected = (xf - xf.mean(1, keepdims=True)) / np.sqrt(xf.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(LayerNormalization(g, b).forward(x).reshape(3, -1),
                               expected * g + b, rtol=1e-10)
    g, b = rng.uniform(0.5, 1.5, 2), rng.normal(size=2)
    mu, var = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
    expected = (x - mu) / np.sqrt(var + 1e-5) * g[:, None, None] + b[:, None, None]
    np.testing.assert_allclose(InstanceNormalization(g, b).forward(x), expected, rtol=1e-10)


def test_max_and_average_pooling_values(backend):
    from zerodl.layers import AvgPooling, Pooling
    x = np.arange(2 * 5 * 6, dtype=np.float64).reshape(1, 2, 5, 6) % 7
    # max pooling 2x2 stride 2 over a 5x6 plane: windows at rows 0,2 and cols 0,2,4
    expected = np.array([[[max(x[0, c, r:r + 2, q:q + 2].ravel()) for q in (0, 2, 4)]
                          for r in (0, 2)] for c in range(2)])
    np.testing.assert_array_equal(Pooling(2, 2, stride=2).forward(x)[0], expected)
    # padded max pooling uses its pad (the book drops it) and never picks the padding
    out = Pooling(3, 3, stride=2, pad=1).forward(-1.0 - x)
    assert out.shape == (1, 2, 3, 3) and np.all(out < 0)
    # average pooling with pad: zeros count, the divisor is always 3*3
    avg = AvgPooling(3, 3, stride=2, pad=1).forward(x)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    np.testing.assert_allclose(avg[0, 1, 0, 0], padded[0, 1, 0:3, 0:3].sum() / 9)
    np.testing.assert_allclose(avg[0, 0, 2, 1], padded[0, 0, 4:7, 2:5].sum() / 9)


def test_book_utilities():
    from zerodl.util import conv_output_size, shuffle_dataset, smooth_curve
    rng = np.random.default_rng(34)
    loss = rng.random(57)
    window_len = 11
    s = np.r_[loss[window_len - 1:0:-1], loss, loss[-1:-window_len:-1]]
    w = np.kaiser(window_len, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    np.testing.assert_allclose(smooth_curve(loss), y[5:len(y) - 5], rtol=1e-12)
    x, t = rng.random((20, 3)), np.arange(20)
    xs, ts = shuffle_dataset(x, t)
    np.testing.assert_array_equal(xs, x[ts])
    assert sorted(ts) == list(range(20)) and not np.array_equal(ts, t)
    x4 = rng.random((6, 1, 2, 2))
    xs4, ts4 = shuffle_dataset(x4, np.arange(6))
    np.testing.assert_array_equal(xs4, x4[ts4])
    assert conv_output_size(28, 5) == 24 and conv_output_size(7, 3, 2, 1) == 4
