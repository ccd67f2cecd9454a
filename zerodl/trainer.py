"""The book's Trainer (``common.trainer``), plus a validation split, early stopping,
a progress bar and exact checkpoint/resume."""
from __future__ import annotations

import time

import numpy as np

from ._arrays import make_rng
from .optimizers import make_optimizer

__all__ = ["Trainer", "split_validation"]


def split_validation(x, t, fraction, rng):
    """Split off a random ``fraction`` of (x, t) as validation data: (x_tr, t_tr, x_val, t_val)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_split must be in (0, 1), got {fraction}")
    n = x.shape[0]
    n_val = int(round(n * fraction))
    if n_val < 1 or n_val >= n:
        raise ValueError(f"validation_split {fraction} of {n} samples leaves an empty part")
    order = make_rng(rng).permutation(n)
    val, train = order[:n_val], order[n_val:]
    return x[train], t[train], x[val], t[val]


class Trainer:
    """Train ``network`` with random mini-batches (drawn with replacement, as the book does).

    The book's arguments keep their meaning.  Additions (keyword-only):
    ``validation_split`` holds out part of the training data (or pass ``x_val``/``t_val``);
    ``patience`` stops after that many epochs without a better validation accuracy, and
    ``restore_best`` then puts back the best parameters; ``seed`` fixes the mini-batch
    order; ``progress`` shows a bar (None: only on a terminal); ``on_epoch`` is called
    as ``on_epoch(trainer)`` after each epoch's evaluation.
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20,
                 mini_batch_size=100, optimizer="SGD", optimizer_param={"lr": 0.01},
                 evaluate_sample_num_per_epoch=None, verbose=True, *, validation_split=0.0,
                 x_val=None, t_val=None, patience=None, restore_best=True, seed=None,
                 progress=None, on_epoch=None):
        self.network = network
        self.verbose = verbose
        self.rng = make_rng(seed)
        if validation_split:
            if x_val is not None:
                raise ValueError("give either validation_split or x_val/t_val, not both")
            x_train, t_train, x_val, t_val = split_validation(x_train, t_train,
                                                              validation_split, self.rng)
        if patience is not None and x_val is None:
            raise ValueError("early stopping (patience) needs validation data: set "
                             "validation_split or pass x_val/t_val")
        self.x_train, self.t_train = x_train, t_train
        self.x_test, self.t_test = x_test, t_test
        self.x_val, self.t_val = x_val, t_val
        self.epochs = int(epochs)
        self.batch_size = int(mini_batch_size)
        if self.batch_size < 1:
            raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size}")
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.optimizer = make_optimizer(optimizer, **dict(optimizer_param or {}))
        self.patience = patience
        self.restore_best = restore_best
        self.progress = progress
        self.on_epoch = on_epoch

        self.train_size = x_train.shape[0]
        if self.train_size < 1:
            raise ValueError("x_train is empty")
        self.iter_per_epoch = max(self.train_size // self.batch_size, 1)
        self.max_iter = int(self.epochs * self.iter_per_epoch)
        self.current_iter = 0
        self.current_epoch = 0
        self.train_loss_list: list[float] = []
        self.train_acc_list: list[float] = []
        self.test_acc_list: list[float] = []
        self.val_acc_list: list[float] = []
        self.epoch_seconds: list[float] = []
        self.best_val_acc = -1.0
        self.best_epoch = 0
        self._best_params = None
        self.stopped_early = False
        self._x_batch = self._t_batch = None

    # -- one step and one evaluation
    def _gather(self, batch):
        """The mini-batch rows, gathered into buffers reused from step to step."""
        if self._x_batch is None:
            self._x_batch = np.empty((self.batch_size,) + self.x_train.shape[1:],
                                     dtype=self.x_train.dtype)
            self._t_batch = np.empty((self.batch_size,) + self.t_train.shape[1:],
                                     dtype=self.t_train.dtype)
        np.take(self.x_train, batch, axis=0, out=self._x_batch)
        np.take(self.t_train, batch, axis=0, out=self._t_batch)
        return self._x_batch, self._t_batch

    def train_step(self):
        batch = self.rng.integers(0, self.train_size, self.batch_size)
        x_batch, t_batch = self._gather(batch)
        step = getattr(self.network, "train_step", None)
        if step is not None:
            loss = step(x_batch, t_batch, self.optimizer)
        else:  # any object with the book's network API
            grads = self.network.gradient(x_batch, t_batch)
            self.optimizer.update(self.network.params, grads)
            loss = self.network.loss(x_batch, t_batch)
        self.train_loss_list.append(float(loss))
        self.current_iter += 1
        return loss

    def _sample(self, x, t):
        k = self.evaluate_sample_num_per_epoch
        return (x, t) if k is None else (x[:k], t[:k])

    def evaluate(self):
        """Accuracy on the (sampled) training, validation and test data; appended to the lists."""
        train_acc = self.network.accuracy(*self._sample(self.x_train, self.t_train))
        self.train_acc_list.append(train_acc)
        test_acc = None
        if self.x_test is not None:
            test_acc = self.network.accuracy(*self._sample(self.x_test, self.t_test))
            self.test_acc_list.append(test_acc)
        if self.x_val is not None:
            val_acc = self.network.accuracy(self.x_val, self.t_val)
            self.val_acc_list.append(val_acc)
            if val_acc > self.best_val_acc:
                self.best_val_acc, self.best_epoch = val_acc, self.current_epoch
                if self.restore_best and self.patience is not None:
                    self._best_params = {k: v.copy() for k, v in self.network.params.items()}
        return train_acc, test_acc

    def _report(self, seconds):
        if not self.verbose:
            return
        loss = np.mean(self.train_loss_list[-self.iter_per_epoch:])
        parts = [f"epoch {self.current_epoch:3d}/{self.epochs}", f"loss {loss:.4f}",
                 f"train acc {self.train_acc_list[-1]:.4f}"]
        if self.val_acc_list:
            parts.append(f"val acc {self.val_acc_list[-1]:.4f}")
        if self.test_acc_list:
            parts.append(f"test acc {self.test_acc_list[-1]:.4f}")
        parts.append(f"{self.iter_per_epoch * self.batch_size / max(seconds, 1e-9):,.0f} ex/s")
        print(" | ".join(parts), flush=True)

    def _should_stop(self):
        return (self.patience is not None
                and self.current_epoch - self.best_epoch >= self.patience)

    def train(self):
        """Run the remaining epochs (all of them, or what is left after a resume)."""
        from tqdm.auto import tqdm

        bar = tqdm(total=self.max_iter, initial=self.current_iter, unit="it",
                   disable=(None if self.progress is None else not self.progress),
                   leave=False, dynamic_ncols=True)
        try:
            while self.current_epoch < self.epochs and not self.stopped_early:
                start = time.perf_counter()
                for _ in range(self.iter_per_epoch):
                    loss = self.train_step()
                    bar.update(1)
                    if self.current_iter % 20 == 0:
                        bar.set_postfix(loss=f"{float(loss):.3f}", refresh=False)
                seconds = time.perf_counter() - start
                self.epoch_seconds.append(seconds)
                self.current_epoch += 1
                self.evaluate()
                self._report(seconds)
                if self.on_epoch is not None:
                    self.on_epoch(self)
                if self._should_stop():
                    self.stopped_early = True
        finally:
            bar.close()
        if self.stopped_early and self._best_params is not None:
            for k, v in self._best_params.items():
                self.network.params[k][...] = v
        if self.x_test is not None and len(self.x_test):
            test_acc = self.network.accuracy(self.x_test, self.t_test)
            if self.verbose:
                print(f"=============== Final Test Accuracy ===============\ntest acc:{test_acc}")
            self.final_test_acc = test_acc
        return self

    # -- checkpoint support
    def history(self) -> dict:
        return {"train_loss": self.train_loss_list, "train_acc": self.train_acc_list,
                "test_acc": self.test_acc_list, "val_acc": self.val_acc_list,
                "epoch_seconds": self.epoch_seconds, "epoch": self.current_epoch,
                "iteration": self.current_iter, "best_val_acc": self.best_val_acc,
                "best_epoch": self.best_epoch}

    def load_history(self, h: dict) -> None:
        self.train_loss_list = list(h["train_loss"])
        self.train_acc_list = list(h["train_acc"])
        self.test_acc_list = list(h["test_acc"])
        self.val_acc_list = list(h["val_acc"])
        self.epoch_seconds = list(h["epoch_seconds"])
        self.current_epoch = int(h["epoch"])
        self.current_iter = int(h["iteration"])
        self.best_val_acc = float(h["best_val_acc"])
        self.best_epoch = int(h["best_epoch"])
