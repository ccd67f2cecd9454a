"""Saving and loading networks, exact checkpoint/resume, and the Trainer's bookkeeping
(validation split, early stopping, evaluate_sample_num_per_epoch)."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

from zerodl._cli_train import build_network
from zerodl.checkpoint import read_checkpoint, restore_checkpoint, save_checkpoint
from zerodl.nets import MultiLayerNet, MultiLayerNetExtend, SimpleConvNet
from zerodl.trainer import Trainer


# ---------------------------------------------------------------- save / load params

def _bn_net(seed, dtype=np.float64):
    return MultiLayerNetExtend(11, [9, 5], 3, use_batchnorm=True, dtype=dtype, seed=seed)


def _warm_up(net, x):
    """Some training-mode passes, so the running statistics are not their initial zeros."""
    for _ in range(3):
        net.predict(x, train_flg=True)


NETS = {
    "mlp-bn-f64": (lambda seed: _bn_net(seed), (11,)),
    "mlp-bn-f32": (lambda seed: _bn_net(seed, np.float32), (11,)),
    "mlp": (lambda seed: MultiLayerNet(11, [6], 3, dtype=np.float64, seed=seed), (11,)),
    "convnet": (lambda seed: SimpleConvNet(
        input_dim=(1, 8, 7), conv_param={"filter_num": 3, "filter_size": 3, "pad": 1,
                                         "stride": 1},
        hidden_size=5, output_size=3, weight_init_std=0.3, seed=seed), (1, 8, 7)),
}


@pytest.mark.parametrize("name", list(NETS))
def test_save_load_round_trip(name, tmp_path):
    make, shape = NETS[name]
    x = np.random.default_rng(0).normal(size=(6, *shape))
    net = make(1)
    _warm_up(net, x)
    path = net.save_params(tmp_path / "params")  # .npz is appended
    assert path == str(tmp_path / "params.npz") and os.path.isfile(path)

    other = make(2)
    assert not np.array_equal(other.predict(x), net.predict(x))
    ids = {k: id(v) for k, v in other.params.items()}
    other.load_params(path)
    assert {k: id(v) for k, v in other.params.items()} == ids, "load_params must work in place"
    for k in net.params:
        np.testing.assert_array_equal(other.params[k], net.params[k])
        assert other.params[k].dtype == net.params[k].dtype
    np.testing.assert_array_equal(other.predict(x), net.predict(x))
    for key, value in net.buffers().items():
        np.testing.assert_array_equal(other.buffers()[key], value)
    # the layers still use the arrays in params
    for pname, (layer_name, attr) in other._param_owner.items():
        assert getattr(other.layers[layer_name], attr) is other.params[pname]
    other.params["W1"] *= 2
    assert not np.array_equal(other.predict(x), net.predict(x))


def _write(path, arrays):
    np.savez(path, **arrays)
    return path


class Canary:
    """Unpickling this creates a file: proof that a loader ran pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _bad_files(tmp_path, params):
    good = {k: v.copy() for k, v in params.items()}
    marker = str(tmp_path / "unpickled")
    bad = {
        "missing": ({k: v for k, v in good.items() if k != "b2"}, "missing parameter 'b2'"),
        "shape": (dict(good, W1=np.zeros((3, 3))), "'W1' has shape (3, 3)"),
        "int": (dict(good, W2=good["W2"].astype(np.int64)), "'W2' has dtype int64"),
        "nan": (dict(good, b1=np.full_like(good["b1"], np.nan)), "'b1' holds NaN"),
        "inf": (dict(good, W1=np.full_like(good["W1"], np.inf)), "'W1' holds NaN or infinity"),
        "unexpected": (dict(good, W9=np.zeros(2)), "unexpected arrays ['W9']"),
        "object": (dict(good, W1=np.array([Canary(marker), 1], dtype=object)),
                   "not a plain .npz"),
    }
    return {name: (_write(tmp_path / f"{name}.npz", arrays), message)
            for name, (arrays, message) in bad.items()}, marker


@pytest.mark.parametrize("kind", ["missing", "shape", "int", "nan", "inf", "unexpected",
                                  "object"])
def test_load_params_refuses_bad_files(kind, tmp_path):
    net = MultiLayerNet(5, [4], 3, dtype=np.float64, seed=3)
    files, marker = _bad_files(tmp_path, net.params)
    before = {k: v.copy() for k, v in net.params.items()}
    path, message = files[kind]
    with pytest.raises(ValueError, match=re.escape(message)):
        net.load_params(path)
    for k, v in before.items():
        np.testing.assert_array_equal(net.params[k], v)  # nothing half-loaded
    assert not os.path.exists(marker), "an object array was unpickled"


def test_load_params_is_all_or_nothing_with_buffers(tmp_path):
    net = _bn_net(6)
    arrays = {k: v + 1.0 for k, v in net.params.items()}
    arrays["buffer:NoSuchLayer.running_mean"] = np.zeros(9)
    path = _write(tmp_path / "bad.npz", arrays)
    before = {k: v.copy() for k, v in net.params.items()}
    with pytest.raises(ValueError, match="unexpected buffer"):
        net.load_params(path)
    for k, v in before.items():
        np.testing.assert_array_equal(net.params[k], v)


@pytest.mark.parametrize("bad", ["shape", "nan"])
def test_load_params_refuses_bad_buffers(bad, tmp_path):
    net = _bn_net(6)
    x = np.random.default_rng(0).normal(size=(4, 11))
    _warm_up(net, x)
    arrays = dict(net.params)
    arrays.update({f"buffer:{k}": v for k, v in net.buffers().items()})
    arrays["buffer:BatchNorm1.running_var"] = (np.ones(4) if bad == "shape"
                                               else np.full(9, np.nan))
    path = _write(tmp_path / "bad.npz", arrays)
    with pytest.raises(ValueError, match="running_var"):
        net.load_params(path)


def test_save_is_atomic(tmp_path, monkeypatch):
    net = MultiLayerNet(5, [4], 3, dtype=np.float64, seed=4)
    path = net.save_params(tmp_path / "model.npz")
    original = open(path, "rb").read()

    def broken_savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    net.params["W1"] += 1
    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        net.save_params(path)
    monkeypatch.undo()
    assert open(path, "rb").read() == original
    assert sorted(os.listdir(tmp_path)) == ["model.npz"], "temporary files left behind"
    fresh = MultiLayerNet(5, [4], 3, dtype=np.float64, seed=5)
    fresh.load_params(path)  # the old file is still whole


# ---------------------------------------------------------------- checkpoint exactness

def _synthetic(n=240, n_test=60, seed=0, dtype=np.float32):
    """Linearly separable-ish 784-feature data with 10 classes (a random teacher)."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(784, 10))
    x = rng.random((n + n_test, 784)).astype(dtype)
    t = np.argmax(x @ teacher + rng.normal(scale=2.0, size=(n + n_test, 10)), axis=1)
    return x[:n], t[:n].astype(np.uint8), x[n:], t[n:].astype(np.uint8)


def _settings(**overrides):
    s = {"model": "mlp", "hidden": [16, 8], "activation": "relu", "optimizer": "adam",
         "lr": 0.003, "epochs": 2, "batch_size": 20, "init": "he", "weight_decay": 0.0,
         "l1": 0.0, "dropout": 0.0, "dtype": "float32", "train_size": None,
         "val_split": 0.0, "patience": None, "eval_samples": 50, "seed": 7}
    s.update(overrides)
    return s


def _trainer(s, data, epochs):
    x, t, xt, tt = data
    return Trainer(build_network(s), x, t, xt, tt, epochs=epochs,
                   mini_batch_size=s["batch_size"], optimizer=s["optimizer"],
                   optimizer_param={"lr": s["lr"]},
                   evaluate_sample_num_per_epoch=s["eval_samples"], verbose=False,
                   validation_split=s["val_split"], patience=s["patience"],
                   seed=s["seed"] + 1, progress=False)


@pytest.mark.parametrize("overrides", [
    {"optimizer": "adam", "dropout": 0.3},
    {"optimizer": "adamw", "dropout": 0.2, "weight_decay": 0.01, "l1": 0.001},
    {"optimizer": "momentum", "lr": 0.05, "model": "mlp-bn", "val_split": 0.25},
    {"optimizer": "rmsprop", "model": "mlp-bn", "dropout": 0.25, "dtype": "float64"},
], ids=["adam-dropout", "adamw-dropout-elastic", "momentum-bn-val", "rmsprop-bn-dropout-f64"])
def test_checkpoint_resume_is_exact(overrides, tmp_path, backend):
    s = _settings(**overrides)
    data = _synthetic(dtype=np.dtype(s["dtype"]))

    straight = _trainer(s, data, epochs=2)
    straight.train()

    first = _trainer(s, data, epochs=1)
    first.train()
    path = save_checkpoint(tmp_path / "ckpt.npz", first, s)
    del first
    resumed = _trainer(s, data, epochs=2)
    meta, arrays = read_checkpoint(path)
    assert meta["settings"] == s and meta["history"]["epoch"] == 1
    restore_checkpoint(resumed, meta, arrays)
    assert resumed.current_epoch == 1
    resumed.train()

    assert resumed.current_epoch == straight.current_epoch == 2
    assert resumed.current_iter == straight.current_iter
    for k in straight.network.params:
        assert np.array_equal(resumed.network.params[k], straight.network.params[k]), k
    for k, v in straight.network.buffers().items():
        assert np.array_equal(resumed.network.buffers()[k], v), k
    assert resumed.train_loss_list == straight.train_loss_list
    assert resumed.train_acc_list == straight.train_acc_list
    assert resumed.test_acc_list == straight.test_acc_list
    assert resumed.val_acc_list == straight.val_acc_list
    assert resumed.optimizer.step_count == straight.optimizer.step_count
    # training actually happened
    assert straight.train_loss_list[-1] < straight.train_loss_list[0]


def test_checkpoint_resume_with_early_stopping_is_exact(tmp_path):
    # lr so small that the validation accuracy never improves after epoch 1: the run stops
    # at epoch 3 and puts back the epoch-1 parameters.
    s = _settings(optimizer="sgd", lr=1e-5, val_split=0.25, patience=2, epochs=6)
    data = _synthetic()
    straight = _trainer(s, data, epochs=6)
    straight.train()
    assert straight.stopped_early and straight.best_epoch == 1
    first = _trainer(s, data, epochs=1)
    first.train()
    meta, arrays = read_checkpoint(save_checkpoint(tmp_path / "c.npz", first, s))
    resumed = _trainer(s, data, epochs=6)
    restore_checkpoint(resumed, meta, arrays)
    resumed.train()
    assert resumed.stopped_early and resumed.current_epoch == straight.current_epoch
    for k in straight.network.params:
        assert np.array_equal(resumed.network.params[k], straight.network.params[k]), k


def test_checkpoint_refuses_another_network(tmp_path):
    s = _settings(epochs=1)
    data = _synthetic(n=60, n_test=20)
    tr = _trainer(s, data, epochs=1)
    tr.train()
    meta, arrays = read_checkpoint(save_checkpoint(tmp_path / "c.npz", tr, s))
    other = _trainer(_settings(hidden=[16]), data, epochs=2)
    with pytest.raises(ValueError, match="do not match"):
        restore_checkpoint(other, meta, arrays)
    wrong_opt = _trainer(_settings(optimizer="sgd"), data, epochs=2)
    with pytest.raises(ValueError, match="optimizer"):
        restore_checkpoint(wrong_opt, meta, arrays)
    np.savez(tmp_path / "plain.npz", W1=np.zeros(3))
    with pytest.raises(ValueError, match="not a zerodl checkpoint"):
        read_checkpoint(tmp_path / "plain.npz")


# ---------------------------------------------------------------- Trainer bookkeeping

class RecordingNet:
    """The book's network API, recording what the Trainer feeds it.

    Column 0 of every sample holds the sample's id, so the test can tell which samples
    were used for what.  Validation accuracy follows ``val_script`` epoch by epoch.
    """

    def __init__(self, val_script=None):
        self.params = {"w": np.zeros(3)}
        self.trained_on: list[np.ndarray] = []
        self.scored: list[np.ndarray] = []
        self.val_script = list(val_script or [])
        self.x_val = None

    def gradient(self, x, t):
        self.trained_on.append(x[:, 0].copy())
        return {"w": np.ones(3)}

    def loss(self, x, t):
        return float(np.abs(self.params["w"]).sum())

    def accuracy(self, x, t):
        self.scored.append(x[:, 0].copy())
        if x is self.x_val and self.val_script:
            return self.val_script.pop(0)
        return 0.5


def _id_data(n, start=0):
    x = np.zeros((n, 4))
    x[:, 0] = np.arange(start, start + n)
    return x, np.arange(n) % 3


def test_validation_split_is_disjoint_and_test_is_never_trained_on():
    x, t = _id_data(100)
    x_test, t_test = _id_data(20, start=1000)
    x_test_before = x_test.copy()
    net = RecordingNet()
    tr = Trainer(net, x, t, x_test, t_test, epochs=3, mini_batch_size=10,
                 optimizer="sgd", verbose=False, validation_split=0.2, seed=0, progress=False)
    train_ids = set(tr.x_train[:, 0].astype(int))
    val_ids = set(tr.x_val[:, 0].astype(int))
    assert len(train_ids) == 80 and len(val_ids) == 20
    assert train_ids.isdisjoint(val_ids) and train_ids | val_ids == set(range(100))
    # labels travel with their samples
    np.testing.assert_array_equal(tr.t_train, tr.x_train[:, 0].astype(int) % 3)
    np.testing.assert_array_equal(tr.t_val, tr.x_val[:, 0].astype(int) % 3)
    tr.train()
    seen = set(np.concatenate(net.trained_on).astype(int))
    assert seen <= train_ids, "trained on validation or test samples"
    assert tr.x_test is x_test and np.array_equal(x_test, x_test_before)
    assert tr.current_iter == 3 * (80 // 10) == len(tr.train_loss_list)
    assert len(tr.val_acc_list) == len(tr.test_acc_list) == len(tr.train_acc_list) == 3


def test_early_stopping_stops_and_restores_the_best_params():
    x, t = _id_data(20)
    x_val, t_val = _id_data(5, start=500)
    x_test, t_test = _id_data(5, start=1000)
    net = RecordingNet(val_script=[0.1, 0.5, 0.4, 0.3, 0.9, 0.9])
    net.x_val = x_val
    tr = Trainer(net, x, t, x_test, t_test, epochs=10, mini_batch_size=10,
                 optimizer="sgd", optimizer_param={"lr": 0.1}, verbose=False,
                 x_val=x_val, t_val=t_val, patience=2, seed=0, progress=False)
    tr.train()
    assert tr.stopped_early
    assert tr.current_epoch == 4 and tr.best_epoch == 2 and tr.best_val_acc == 0.5
    assert tr.val_acc_list == [0.1, 0.5, 0.4, 0.3]
    # 2 steps per epoch of w -= 0.1 * 1: best (epoch 2) had w = -0.4, the last -0.8
    np.testing.assert_allclose(net.params["w"], -0.4)


def test_early_stopping_without_restore_keeps_the_last_params():
    x, t = _id_data(20)
    x_val, t_val = _id_data(5, start=500)
    x_test, t_test = _id_data(5, start=1000)
    net = RecordingNet(val_script=[0.5, 0.4, 0.3])
    net.x_val = x_val
    tr = Trainer(net, x, t, x_test, t_test, epochs=10, mini_batch_size=10, optimizer="sgd",
                 optimizer_param={"lr": 0.1}, verbose=False, x_val=x_val, t_val=t_val,
                 patience=2, restore_best=False, seed=0, progress=False)
    tr.train()
    assert tr.stopped_early and tr.current_epoch == 3
    np.testing.assert_allclose(net.params["w"], -0.6)


def test_trainer_without_test_data():
    x = np.random.default_rng(0).random((20, 5))
    t = np.arange(20) % 3
    net = MultiLayerNet(5, [4], 3, seed=0)
    tr = Trainer(net, x, t, None, None, epochs=1, mini_batch_size=10, verbose=False,
                 validation_split=0.25, seed=0, progress=False)
    tr.train()
    assert len(tr.val_acc_list) == 1


def test_patience_needs_validation_data():
    x, t = _id_data(20)
    with pytest.raises(ValueError, match="validation"):
        Trainer(RecordingNet(), x, t, x, t, patience=2, verbose=False)
    with pytest.raises(ValueError, match="validation_split"):
        Trainer(RecordingNet(), x, t, x, t, validation_split=1.5, verbose=False)


@pytest.mark.parametrize("k", [None, 7])
def test_evaluate_sample_num_per_epoch(k):
    x, t = _id_data(30)
    x_test, t_test = _id_data(12, start=1000)
    x_val, t_val = _id_data(9, start=500)
    net = RecordingNet()
    tr = Trainer(net, x, t, x_test, t_test, epochs=2, mini_batch_size=10, optimizer="sgd",
                 evaluate_sample_num_per_epoch=k, verbose=False, x_val=x_val, t_val=t_val,
                 seed=0, progress=False)
    tr.train()
    per_epoch = net.scored[:6]  # 2 epochs x (train, test, val); then the final test score
    for epoch in range(2):
        train_ids, test_ids, val_ids = per_epoch[3 * epoch:3 * epoch + 3]
        np.testing.assert_array_equal(train_ids, np.arange(30)[:k])
        np.testing.assert_array_equal(test_ids, np.arange(1000, 1012)[:k])
        np.testing.assert_array_equal(val_ids, np.arange(500, 509))  # never sampled
    np.testing.assert_array_equal(net.scored[6], np.arange(1000, 1012))  # final: all
    assert len(net.scored) == 7
