"""What every experiment shares: its context (output folder, seeds, progress bar, figures
and numbers), MNIST loading, a training loop in the book's style, and atomic JSON."""
from __future__ import annotations

import json
import math
import os
import zlib

import numpy as np

from .._io import write_text_atomic

__all__ = ["Context", "write_json_atomic", "to_jsonable", "train_together", "batch_rng",
           "load_mnist_cached", "style_axes"]


# ---------------------------------------------------------------- JSON

def to_jsonable(obj):
    """Plain Python types for ``json``: NumPy scalars and arrays become numbers and lists,
    NaN and infinities become None (JSON has no spelling for them)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def write_json_atomic(path, obj) -> str:
    text = json.dumps(to_jsonable(obj), indent=1, ensure_ascii=False, allow_nan=False)
    return write_text_atomic(path, text + "\n")


# ---------------------------------------------------------------- data

_MNIST_CACHE: dict = {}


def load_mnist_cached(data_dir=None, flatten=True):
    """MNIST as float32 ((x_train, t_train), (x_test, t_test)), loaded once per process.

    The arrays are shared between experiments: treat them as read-only (they are not
    flagged so, because compiled kernels may take writable buffers only).
    """
    from ..datasets import load_mnist

    key = (os.fspath(data_dir) if data_dir else None, bool(flatten))
    if key not in _MNIST_CACHE:
        flat_key = (key[0], True)
        if not flatten and flat_key in _MNIST_CACHE:
            (x, t), (xt, tt) = _MNIST_CACHE[flat_key]
            data = ((x.reshape(-1, 1, 28, 28), t), (xt.reshape(-1, 1, 28, 28), tt))
        else:
            data = load_mnist(normalize=True, flatten=flatten, one_hot_label=False,
                              data_dir=data_dir, dtype=np.float32)
        _MNIST_CACHE[key] = data
    return _MNIST_CACHE[key]


# ---------------------------------------------------------------- seeds

def _key_int(key) -> int:
    if isinstance(key, (int, np.integer)):
        return int(key) & 0xFFFFFFFF
    return zlib.crc32(str(key).encode("utf-8"))


def derive_seed(seed: int, *keys) -> int:
    """A 32-bit seed from the run's seed and any labels (names, indices): independent
    streams for every network, mini-batch order and sampler, stable across runs."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF] + [_key_int(k) for k in keys])
    return int(ss.generate_state(1)[0])


def batch_rng(seed: int, *keys) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *keys))


# ---------------------------------------------------------------- context

class Context:
    """Handed to an experiment's ``run``: where to write, which seed, the progress bar,
    and the collectors for figures, numbers and key numbers."""

    def __init__(self, name, out_dir, quick=False, seed=0, progress=None, data_dir=None):
        self.name = name
        self.out_dir = os.fspath(out_dir)
        self.quick = bool(quick)
        self.seed = int(seed)
        self.progress_enabled = progress
        self.data_dir = data_dir
        self.figures: list[dict] = []
        self.numbers: dict = {}
        self.key_numbers: dict = {}
        self.notes: list[str] = []
        self._bar = None
        os.makedirs(self.out_dir, exist_ok=True)

    # seeds
    def seed_for(self, *keys) -> int:
        return derive_seed(self.seed, self.name, *keys)

    def rng(self, *keys) -> np.random.Generator:
        return np.random.default_rng(self.seed_for(*keys))

    # data
    def mnist(self, flatten=True):
        return load_mnist_cached(self.data_dir, flatten=flatten)

    # progress
    def progress(self, total, unit="it"):
        """The experiment's progress bar (tqdm; quiet unless stderr is a terminal)."""
        from tqdm.auto import tqdm

        if self._bar is not None:
            self._bar.close()
        disable = None if self.progress_enabled is None else not self.progress_enabled
        self._bar = tqdm(total=int(total), desc=self.name, unit=unit, disable=disable,
                         leave=False, dynamic_ncols=True)
        return self._bar

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # outputs
    def add_figure(self, fig, filename, caption, title=None) -> str:
        from ..plotting import save_figure

        path = os.path.join(self.out_dir, filename)
        save_figure(fig, path)
        self.figures.append({"file": filename, "caption": caption,
                             "title": title or _title_of(fig) or filename})
        return path


def _title_of(fig):
    text = getattr(fig, "_suptitle", None)
    if text is not None and text.get_text():
        return text.get_text()
    for ax in fig.get_axes():
        if ax.get_title():
            return ax.get_title()
    return None


def style_axes(ax, title=None, xlabel=None, ylabel=None, grid=True):
    if title:
        ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
        if xlabel.startswith("epoch"):
            from matplotlib.ticker import MaxNLocator
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ylabel:
        ax.set_ylabel(ylabel)
    if grid:
        ax.grid(alpha=0.3)


# ---------------------------------------------------------------- training

def train_together(models, x, t, *, batch_size, rng, epochs=None, iterations=None,
                   evaluate=None, bar=None):
    """Train several (network, optimizer) pairs on the same random mini-batches, the
    way the book's comparison scripts do.

    ``models``: name -> (network, optimizer).  Mini-batches are drawn with replacement
    from ``rng`` (the book's ``np.random.choice``).  With ``epochs`` an epoch is
    ``max(N // batch_size, 1)`` iterations and ``evaluate(epoch)`` is called before
    training (epoch 0) and after every epoch; with ``iterations`` it is not called.
    Returns name -> list of per-iteration training losses.
    """
    n = x.shape[0]
    iter_per_epoch = max(n // batch_size, 1)
    if iterations is None:
        iterations = int(epochs) * iter_per_epoch
    losses = {name: [] for name in models}
    if evaluate is not None and epochs is not None:
        evaluate(0)
    for i in range(1, int(iterations) + 1):
        idx = rng.integers(0, n, batch_size)
        xb, tb = x[idx], t[idx]
        for name, (net, opt) in models.items():
            losses[name].append(float(net.train_step(xb, tb, opt)))
        if bar is not None:
            bar.update(1)
        if evaluate is not None and epochs is not None and i % iter_per_epoch == 0:
            evaluate(i // iter_per_epoch)
    return losses


def epoch_iterations(s) -> int:
    """Training iterations of an experiment's settings: s["epochs"] epochs of
    max(train_size // batch_size, 1) mini-batches (train_together's epoch)."""
    return s["epochs"] * max(s["train_size"] // s["batch_size"], 1)


def accuracy_curves(models, train, test, *, skip_initial=False):
    """Per-epoch accuracy curves for :func:`train_together`: returns ``(curves,
    evaluate)`` where ``curves[name] = {"train_acc": [...], "test_acc": [...]}`` and
    ``evaluate(epoch)`` appends each network's accuracy on ``train`` and ``test`` (each an
    ``(x, t)`` pair).  With ``skip_initial`` the call before training (epoch 0) records
    nothing."""
    curves = {name: {"train_acc": [], "test_acc": []} for name in models}

    def evaluate(epoch):
        if skip_initial and epoch == 0:
            return
        for name, (net, _) in models.items():
            curves[name]["train_acc"].append(net.accuracy(*train))
            curves[name]["test_acc"].append(net.accuracy(*test))

    return curves, evaluate


def final_mean(values, last=1):
    values = [v for v in values if v is not None]
    if not values:
        return float("nan")
    return float(np.mean(values[-last:]))
