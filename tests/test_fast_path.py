"""net.train_step (flat parameter/gradient buffers, one optimizer call) equals the
book's path (gradient() then optimizer.update()) step for step."""
import numpy as np
import pytest

import zerodl
from zerodl import _kernels
from zerodl.nets import DeepConvNet, MultiLayerNetExtend, SimpleConvNet
from zerodl.optimizers import OPTIMIZERS

BACKENDS = ["numpy"] + (["cython"] if _kernels.cython_available() else [])
TOL = {np.float64: 1e-10, np.float32: 1e-4}


def _mlp(dtype):
    return MultiLayerNetExtend(30, [11, 9], 5, use_batchnorm=True, use_dropout=True,
                               dropout_ration=0.2, weight_decay_lambda=0.01, l1_lambda=0.001,
                               dtype=dtype, seed=3)


def _cnn(dtype):
    return SimpleConvNet(input_dim=(2, 10, 10),
                         conv_param={"filter_num": 4, "filter_size": 3, "pad": 1, "stride": 1},
                         hidden_size=7, output_size=5, weight_init_std=0.3, dtype=dtype, seed=3)


def _batch(net, rng):
    shape = (6, 30) if isinstance(net, MultiLayerNetExtend) else (6, 2, 10, 10)
    return rng.standard_normal(shape).astype(net.dtype), rng.integers(0, 5, 6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("make", [_mlp, _cnn], ids=["mlp-bn-dropout", "convnet"])
@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_train_step_matches_book_path(backend, dtype, make, opt_name):
    tol = TOL[dtype]
    rng = np.random.default_rng(0)
    fast, book = make(dtype), make(dtype)
    opt_fast, opt_book = OPTIMIZERS[opt_name](), OPTIMIZERS[opt_name]()
    with zerodl.use_backend(backend):
        for _ in range(20):
            x, t = _batch(fast, rng)
            loss_fast = fast.train_step(x, t, opt_fast)
            grads = book.gradient(x, t)
            loss_book = book.last_layer.loss + book.regularization_loss()
            opt_book.update(book.params, grads)
            assert loss_fast == pytest.approx(loss_book, rel=tol)
    for k in book.params:
        scale = np.max(np.abs(book.params[k])) + 1e-30
        assert np.max(np.abs(fast.params[k] - book.params[k])) / scale < tol, k


def test_params_are_views_of_one_buffer():
    net = _cnn(np.float32)
    total = 0
    for k, p in net.params.items():
        assert np.shares_memory(p, net.flat_params), k
        total += p.size
    assert net.flat_params.size == total
    # Layers see the same arrays, so an in-place optimizer update reaches them.
    assert net.layers["Conv1"].W is net.params["W1"]
    net.flat_params[:] = 0.5
    assert np.all(net.layers["Affine2"].W == 0.5)


def test_update_flat_state_is_shared_with_per_key_view():
    net = _mlp(np.float64)
    opt = OPTIMIZERS["adam"]()
    rng = np.random.default_rng(1)
    x, t = _batch(net, rng)
    net.train_step(x, t, opt)
    # The per-parameter state (book attribute names) are views of the flat state.
    for k in net.params:
        assert np.shares_memory(opt.m[k], opt._flat_state["m"])
    assert opt.iter == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_deepconvnet_step_reduces_loss(backend):
    net = DeepConvNet(dtype=np.float32, seed=0, dropout_ratio=0.0)
    opt = OPTIMIZERS["adam"](lr=0.003)
    rng = np.random.default_rng(0)
    x = rng.random((8, 1, 28, 28), dtype=np.float32)
    t = np.arange(8) % 10
    with zerodl.use_backend(backend):
        first = net.train_step(x, t, opt)
        for _ in range(15):
            last = net.train_step(x, t, opt)
    assert last < 0.5 * first


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_deepconvnet_train_step_matches_book_path(backend, dtype):
    """DeepConvNet's Conv-Relu-Conv-Relu-Pool stacks: the second pair of each runs fused."""
    tol = TOL[dtype]
    rng = np.random.default_rng(1)

    def make():
        return DeepConvNet(input_dim=(1, 12, 12), hidden_size=8, dropout_ratio=0.3,
                           dtype=dtype, seed=4)

    fast, book = make(), make()
    kinds = [type(s).__name__ for s in fast._steps()]
    assert kinds.count("ConvReluPool") == 3 and kinds.count("Convolution") == 3
    opt_fast, opt_book = OPTIMIZERS["adam"](), OPTIMIZERS["adam"]()
    with zerodl.use_backend(backend):
        for _ in range(5):
            x = rng.standard_normal((4, 1, 12, 12)).astype(dtype)
            t = rng.integers(0, 10, 4)
            loss_fast = fast.train_step(x, t, opt_fast)
            grads = book.gradient(x, t)
            opt_book.update(book.params, grads)
            assert loss_fast == pytest.approx(book.last_layer.loss, rel=tol)
    for k in book.params:
        scale = np.max(np.abs(book.params[k])) + 1e-30
        assert np.max(np.abs(fast.params[k] - book.params[k])) / scale < tol, k


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", [_mlp, _cnn], ids=["mlp-bn-dropout", "convnet"])
def test_fused_steps_used_and_inference_matches_layers(backend, make):
    """train_step fuses Affine-BatchNorm-Relu and Conv-Relu-Pool; inference through the
    fused steps gives the same scores as the layers one by one."""
    net = make(np.float64)
    kinds = {type(s).__name__ for s in net._steps()}
    assert kinds & {"AffineBNReLU", "ConvReluPool"}
    rng = np.random.default_rng(2)
    opt = OPTIMIZERS["adam"]()
    with zerodl.use_backend(backend):
        for _ in range(3):
            net.train_step(*_batch(net, rng), opt)
        x, _ = _batch(net, rng)
        y = x
        for layer in net.layers.values():
            y = layer.forward(y, False) if layer.train_dependent else layer.forward(y)
        np.testing.assert_allclose(net.predict(x), y, rtol=1e-12, atol=1e-12)


def test_first_layer_skips_its_input_gradient(monkeypatch):
    """The first step of train_step is asked for no input gradient."""
    net = _cnn(np.float64)
    first = net._steps()[0]
    seen = []
    original = type(first).backward

    def spy(self, dout, need_dx=True):
        seen.append(need_dx)
        return original(self, dout, need_dx)

    monkeypatch.setattr(type(first), "backward", spy)
    net.train_step(*_batch(net, np.random.default_rng(0)), OPTIMIZERS["sgd"]())
    assert seen == [False]
