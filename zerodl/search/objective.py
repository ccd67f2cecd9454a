"""What one trial does: the training/validation split, the network, the training loop.

The split is drawn from MNIST's *training* set only (a seeded random subset of
``train_size`` images, ``val_fraction`` of them held out for validation).  The test set
is loaded by :func:`score_on_test` alone, which the search calls once for its final pick.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import datasets
from .errors import SearchError

__all__ = ["Split", "split_indices", "load_split", "train_config", "score_on_test",
           "derive_seed"]


def derive_seed(*parts) -> int:
    """A 63-bit seed from ints and strings (stable across processes and machines)."""
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def split_indices(n_total: int, train_size: int, val_fraction: float, seed: int):
    """Indices into the training set: (train part, validation part), disjoint."""
    if not 2 <= train_size <= n_total:
        raise SearchError(f"train_size must be in [2, {n_total}], got {train_size}")
    n_val = int(round(train_size * val_fraction))
    if not 1 <= n_val < train_size:
        raise SearchError(f"val_fraction {val_fraction} of {train_size} samples leaves an "
                          "empty training or validation part")
    rng = np.random.default_rng(derive_seed("split", seed))
    chosen = rng.permutation(n_total)[:train_size]
    return np.sort(chosen[n_val:]), np.sort(chosen[:n_val])


def _digest(train_idx, val_idx) -> str:
    h = hashlib.sha256()
    h.update(np.asarray(train_idx, dtype=np.int64).tobytes())
    h.update(b"|")
    h.update(np.asarray(val_idx, dtype=np.int64).tobytes())
    return h.hexdigest()


def _load_raw(data_dir):
    """MNIST as the loader stores it (uint8 pixels): normalising only the rows a search
    uses is much cheaper than converting all 70,000 images."""
    return datasets.load_mnist(normalize=False, flatten=True, data_dir=data_dir)


def _normalize(x, dtype) -> np.ndarray:
    """Pixels to [0, 1] exactly as ``load_mnist(normalize=True)`` does it."""
    dtype = np.dtype(dtype)
    if x.dtype == np.uint8:
        out = x.astype(dtype)
        out /= 255.0
        return out
    return np.ascontiguousarray(x, dtype=dtype)


@dataclass
class Split:
    x_train: np.ndarray
    t_train: np.ndarray
    x_val: np.ndarray
    t_val: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray

    @property
    def digest(self) -> str:
        return _digest(self.train_idx, self.val_idx)


def load_split(train_size: int, val_fraction: float, seed: int, dtype="float32",
               data_dir=None, expected_digest: str | None = None) -> Split:
    """The training/validation split of the search (the test arrays are dropped at once)."""
    (x, t), _test = _load_raw(data_dir)
    del _test
    train_idx, val_idx = split_indices(len(x), train_size, val_fraction, seed)
    split = Split(_normalize(x[train_idx], dtype), t[train_idx],
                  _normalize(x[val_idx], dtype), t[val_idx], train_idx, val_idx)
    if expected_digest is not None and split.digest != expected_digest:
        raise SearchError("this machine draws a different training/validation split from the "
                          "study's seed (another MNIST copy or NumPy version?); the split "
                          "must be identical on every worker")
    return split


def build_network(params: dict, dtype, seed: int):
    from ..nets import MultiLayerNetExtend

    init = params["init"]
    return MultiLayerNetExtend(
        784, [int(params["units"])] * int(params["layers"]), 10,
        activation=params["activation"], weight_init_std=init,
        weight_decay_lambda=float(params["weight_decay"]),
        use_dropout=float(params["dropout"]) > 0,
        dropout_ration=float(params["dropout"]) or 0.5,
        use_batchnorm=bool(params["batchnorm"]), l1_lambda=float(params["l1"]),
        dtype=np.dtype(dtype), seed=derive_seed("net", seed))


@dataclass
class Curves:
    """Per-epoch accuracies of one training run (filled while it trains)."""

    val_acc: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    diverged_epoch: int | None = None
    seconds: float = 0.0


def train_config(params: dict, x_train, t_train, x_val, t_val, *, epochs: int, dtype,
                 seed: int, curves: Curves | None = None, on_epoch=None):
    """Train a network with ``params`` as the book's Trainer does (random mini-batches drawn
    with replacement, ``max(n // batch, 1)`` iterations per epoch) and score it after every
    epoch.  ``on_epoch(epoch, val_acc)`` may raise (to prune); ``curves`` keeps what was
    measured up to then.  Stops early if the loss becomes NaN/inf (the accuracies stay
    flat from there).  Returns (network, curves)."""
    from ..optimizers import make_optimizer

    curves = curves if curves is not None else Curves()
    start = time.perf_counter()
    net = build_network(params, dtype, seed)
    opt = make_optimizer(params["optimizer"], lr=float(params["lr"]))
    rng = np.random.default_rng(derive_seed("batches", seed))
    n = x_train.shape[0]
    bs = int(params["batch_size"])
    iters = max(n // bs, 1)
    try:
        for epoch in range(1, int(epochs) + 1):
            loss = 0.0
            with np.errstate(all="ignore"):
                for _ in range(iters):
                    batch = rng.integers(0, n, bs)
                    loss = net.train_step(x_train[batch], t_train[batch], opt)
                curves.train_acc.append(float(net.accuracy(x_train, t_train)))
                curves.val_acc.append(float(net.accuracy(x_val, t_val)))
            diverged = not math.isfinite(float(loss))
            if diverged:
                curves.diverged_epoch = epoch
            if on_epoch is not None:
                on_epoch(epoch, curves.val_acc[-1])
            if diverged:
                break
    finally:
        curves.seconds = time.perf_counter() - start
    return net, curves


def score_on_test(params: dict, settings: dict, seed: int, data_dir=None) -> dict:
    """Retrain ``params`` on the search's training part (same seed as its trial) and score
    it once on MNIST's test set.  The only place the search reads the test set."""
    split = load_split(settings["train_size"], settings["val_fraction"], settings["seed"],
                       settings["dtype"], data_dir, settings.get("split_sha256"))
    net, curves = train_config(params, split.x_train, split.t_train, split.x_val,
                               split.t_val, epochs=settings["epochs"],
                               dtype=settings["dtype"], seed=seed)
    _train, (x_test, t_test) = _load_raw(data_dir)
    del _train
    x_test = _normalize(x_test, settings["dtype"])
    with np.errstate(all="ignore"):
        test_acc = float(net.accuracy(x_test, t_test))
    return {"val_acc_retrained": curves.val_acc[-1], "test_acc": test_acc,
            "n_test": int(len(x_test)), "seconds": round(curves.seconds, 3)}
