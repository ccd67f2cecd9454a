"""A stand-in for the book's search loop (ch06/hyperparameter_optimization.py), to time.

The book draws lr = 10**U(-6, -2) and weight decay = 10**U(-8, -4) for 100 trials and
trains ``MultiLayerNet(784, [100]*6, 10, weight_decay_lambda=wd)`` with SGD for 50
epochs (batch 100) on the first 500 MNIST training images, 20% of them held out, one
trial after another, no pruning.  This runs that loop with zerodl's Trainer - by default
on the NumPy backend in float64, the closest thing to the book's own code - and times it:

    python -m zerodl.search._book --trials 10      # 10 trials, extrapolated to 100
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def book_loop(n_trials=100, *, backend="numpy", dtype="float64", data_dir=None, seed=0,
              epochs=50, verbose=True):
    """Run the book's loop for ``n_trials``; returns per-trial seconds and results."""
    import zerodl
    from zerodl.datasets import load_mnist
    from zerodl.nets import MultiLayerNet
    from zerodl.trainer import Trainer

    zerodl.set_backend(backend)
    dt = np.dtype(dtype)
    (x_train, t_train), _ = load_mnist(normalize=True, data_dir=data_dir, dtype=dt)
    rng = np.random.default_rng(seed)
    x_train, t_train = x_train[:500], t_train[:500]
    order = rng.permutation(500)  # the book's shuffle_dataset
    x_train, t_train = x_train[order], t_train[order]
    n_val = int(500 * 0.20)
    x_val, t_val = x_train[:n_val], t_train[:n_val]
    x_train, t_train = x_train[n_val:], t_train[n_val:]
    out = []
    for i in range(n_trials):
        weight_decay = 10 ** rng.uniform(-8, -4)
        lr = 10 ** rng.uniform(-6, -2)
        t0 = time.perf_counter()
        net = MultiLayerNet(784, [100] * 6, 10, weight_decay_lambda=weight_decay, dtype=dt,
                            seed=int(rng.integers(2 ** 31)))
        trainer = Trainer(net, x_train, t_train, x_val, t_val, epochs=epochs,
                          mini_batch_size=100, optimizer="sgd", optimizer_param={"lr": lr},
                          verbose=False, progress=False, seed=int(rng.integers(2 ** 31)))
        with np.errstate(all="ignore"):
            trainer.train()
        sec = time.perf_counter() - t0
        out.append({"lr": lr, "weight_decay": weight_decay, "seconds": sec,
                    "val_acc": trainer.test_acc_list[-1]})
        if verbose:
            print(f"trial {i:3d} val acc {trainer.test_acc_list[-1]:.4f} lr {lr:.3g} "
                  f"weight decay {weight_decay:.3g}  {sec:.2f} s", flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m zerodl.search._book", description=__doc__)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--backend", default="numpy")
    p.add_argument("--dtype", default="float64")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    res = book_loop(args.trials, backend=args.backend, dtype=args.dtype,
                    data_dir=args.data_dir, seed=args.seed)
    wall = time.perf_counter() - t0
    secs = [r["seconds"] for r in res]
    mean = float(np.mean(secs))
    print(f"{len(secs)} trials: {sum(secs):.1f} s in trials ({wall:.1f} s wall incl. loading), "
          f"mean {mean:.2f} s, median {float(np.median(secs)):.2f} s per trial; "
          f"100 trials ~ {100 * mean:.0f} s (extrapolated from the mean)")


if __name__ == "__main__":
    main()
