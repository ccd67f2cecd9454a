"""Random search of the learning rate and weight decay: the book's Figure 6-24 and
section 6.5 (ch6 hyperparameter_optimization.py).

The search is split in three parts so that the trial loop can later be swapped for
``zerodl.search`` (Optuna) without touching the rest:

* :func:`split_training_data` - 20% validation split of the *training* images only;
* :func:`make_objective` - one trial: build, train, return the validation curve;
* :func:`random_search` - the book's trial loop: sample log-uniformly, call the objective.
"""
from __future__ import annotations

import math

import numpy as np

from ..nets import MultiLayerNet
from ..optimizers import SGD
from ..plotting import new_figure
from ._common import derive_seed, style_axes, train_together

NAME = "hyperparameter-search"
TITLE = "Hyperparameter search: learning rate and weight decay"
DESCRIPTION = (
    "The book's random search: 500 MNIST training images, 20% of them (100) held out as "
    "validation data - the test set is never touched - and a 7-layer ReLU network "
    "(784-100x6-10) trained with SGD, with the learning rate drawn from 10^U(-6, -2) and "
    "the weight decay from 10^U(-8, -4); full mode: the book's 100 trials of 50 epochs.")


def settings(quick):
    return {"train_size": 500, "validation_fraction": 0.2,
            "trials": 10 if quick else 100, "epochs": 20 if quick else 50,
            "batch_size": 100, "hidden": [100] * 6,
            "lr_log10": [-6.0, -2.0], "weight_decay_log10": [-8.0, -4.0],
            "best_grid": 8 if quick else 20, "best_for_ranges": 3 if quick else 10}


# ---------------------------------------------------------------- the three parts

def split_training_data(x_train, t_train, size, fraction, rng):
    """The first ``size`` training images, shuffled and split into (train, validation).

    Only training data comes in; returns ``(x_tr, t_tr, x_val, t_val, train_idx,
    val_idx)`` with indices into ``x_train`` (disjoint, all below ``size``).
    """
    if size > len(x_train):
        raise ValueError(f"asked for {size} training images, only {len(x_train)} given")
    order = rng.permutation(size)
    n_val = int(round(size * fraction))
    if not 0 < n_val < size:
        raise ValueError(f"validation fraction {fraction} of {size} leaves an empty part")
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    return (x_train[train_idx], t_train[train_idx], x_train[val_idx], t_train[val_idx],
            train_idx, val_idx)


def make_objective(x_tr, t_tr, x_val, t_val, *, hidden, epochs, batch_size, seed,
                   progress_bar=None):
    """One trial: train a MultiLayerNet with SGD(lr) and L2 ``weight_decay``; the
    validation accuracy after the last epoch is the score (as in the book)."""

    def objective(params, number):
        net = MultiLayerNet(784, hidden, 10, weight_decay_lambda=params["weight_decay"],
                            seed=derive_seed(seed, "net", number))
        train_acc, val_acc = [], []

        def evaluate(epoch):
            if epoch > 0:  # the book's Trainer scores after every epoch
                train_acc.append(net.accuracy(x_tr, t_tr))
                val_acc.append(net.accuracy(x_val, t_val))

        train_together({"net": (net, SGD(lr=params["lr"]))}, x_tr, t_tr,
                       batch_size=batch_size, rng=np.random.default_rng(
                           derive_seed(seed, "batches", number)),
                       epochs=epochs, evaluate=evaluate, bar=progress_bar)
        score = val_acc[-1] if val_acc else 0.0
        return {"val_acc": float(score) if math.isfinite(score) else 0.0,
                "val_acc_curve": val_acc, "train_acc_curve": train_acc}

    return objective


def log_uniform_sampler(rng, lr_log10, weight_decay_log10):
    """The book's sampler: lr = 10^U(lr_log10), weight_decay = 10^U(weight_decay_log10)."""

    def sample(number):
        return {"lr": float(10 ** rng.uniform(*lr_log10)),
                "weight_decay": float(10 ** rng.uniform(*weight_decay_log10))}

    return sample


def random_search(objective, n_trials, sample, on_trial=None) -> list[dict]:
    """The trial loop: ``params = sample(i)``, ``result = objective(params, i)``.

    Returns one dict per trial: number, params and the objective's result.  This is the
    part to replace with ``zerodl.search`` (Optuna) when it lands: same objective,
    same records.
    """
    trials = []
    for number in range(int(n_trials)):
        params = sample(number)
        result = objective(params, number)
        trials.append({"number": number, "params": params, **result})
        if on_trial is not None:
            on_trial(trials[-1])
    return trials


def narrowed_ranges(trials, k):
    """log10 range of lr and weight decay spanned by the ``k`` best trials."""
    best = sorted(trials, key=lambda tr: -tr["val_acc"])[:k]
    out = {}
    for key in ("lr", "weight_decay"):
        logs = [math.log10(tr["params"][key]) for tr in best]
        out[key] = {"min": 10 ** min(logs), "max": 10 ** max(logs),
                    "log10_min": min(logs), "log10_max": max(logs)}
    return out


# ---------------------------------------------------------------- the experiment

def run(ctx, s):
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator

    (x_train, t_train), _ = ctx.mnist()  # the test half is deliberately not kept
    x_tr, t_tr, x_val, t_val, train_idx, val_idx = split_training_data(
        x_train, t_train, s["train_size"], s["validation_fraction"], ctx.rng("split"))
    iters = s["trials"] * s["epochs"] * max(len(x_tr) // s["batch_size"], 1)
    bar = ctx.progress(iters)
    objective = make_objective(x_tr, t_tr, x_val, t_val, hidden=s["hidden"],
                               epochs=s["epochs"], batch_size=s["batch_size"],
                               seed=ctx.seed_for("trials"), progress_bar=bar)
    sample = log_uniform_sampler(ctx.rng("sampler"), s["lr_log10"], s["weight_decay_log10"])
    trials = random_search(objective, s["trials"], sample)

    ranked = sorted(trials, key=lambda tr: -tr["val_acc"])
    k = min(s["best_for_ranges"], len(trials))
    ranges = narrowed_ranges(trials, k)
    ctx.numbers.update(
        data={"source": "MNIST training set", "train_size": s["train_size"],
              "train_indices": train_idx, "validation_indices": val_idx,
              "test_set_used": False},
        trials=trials, ranking=[tr["number"] for tr in ranked], narrowed_ranges=ranges,
        best_for_ranges=k)

    # Figure 1: the best trials' curves (the book's Best-N grid)
    n_grid = min(s["best_grid"], len(trials))
    cols = 5 if n_grid >= 10 else 4
    rows = int(np.ceil(n_grid / cols))
    fig = new_figure(figsize=(2.8 * cols, 2.4 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
    epochs = np.arange(1, s["epochs"] + 1)
    for i, tr in enumerate(ranked[:n_grid]):
        ax = axes.flat[i]
        ax.plot(epochs, tr["val_acc_curve"], "-", color="C0", label="validation")
        ax.plot(epochs, tr["train_acc_curve"], "--", color="C1", label="train")
        ax.set_title(f"Best-{i + 1} (val {tr['val_acc']:.2f})\nlr {tr['params']['lr']:.1e}, "
                     f"decay {tr['params']['weight_decay']:.1e}", fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel("accuracy")
        if i // cols == rows - 1 or i + cols >= n_grid:
            ax.set_xlabel("epoch")
            ax.tick_params(labelbottom=True)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for j in range(n_grid, rows * cols):
        axes.flat[j].set_visible(False)
    axes[0, 0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"The {n_grid} best of {len(trials)} trials: validation (solid) and train "
                 f"(dashed) accuracy")
    ctx.add_figure(fig, "hyperparameter_best.png",
                   f"The best trial reaches {ranked[0]['val_acc']:.2f} validation accuracy "
                   f"(the book's run: about 0.8); further down the ranking the learning rate "
                   f"is too small to learn much in {s['epochs']} epochs.")

    # Figure 2: lr against weight decay, coloured by validation accuracy
    fig = new_figure(figsize=(8, 5.6), layout="constrained")
    ax = fig.subplots()
    lr = np.array([tr["params"]["lr"] for tr in trials])
    wd = np.array([tr["params"]["weight_decay"] for tr in trials])
    acc = np.array([tr["val_acc"] for tr in trials])
    sc = ax.scatter(lr, wd, c=acc, cmap="viridis", vmin=0, vmax=max(1e-9, acc.max()), s=45,
                    edgecolors="none")
    best = ranked[:k]
    ax.scatter([tr["params"]["lr"] for tr in best],
               [tr["params"]["weight_decay"] for tr in best], s=130, facecolors="none",
               edgecolors="C3", linewidths=1.6, label=f"best {k}")
    r_lr, r_wd = ranges["lr"], ranges["weight_decay"]
    ax.add_patch(Rectangle((r_lr["min"], r_wd["min"]), r_lr["max"] - r_lr["min"],
                           r_wd["max"] - r_wd["min"], fill=False, ls="--", ec="C3", lw=1.2,
                           label="narrowed ranges"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(10 ** s["lr_log10"][0] / 1.5, 10 ** s["lr_log10"][1] * 1.5)
    ax.set_ylim(10 ** s["weight_decay_log10"][0] / 1.5, 10 ** s["weight_decay_log10"][1] * 1.5)
    fig.colorbar(sc, ax=ax, label="validation accuracy")
    style_axes(ax, f"{len(trials)} trials: learning rate vs weight decay",
               "learning rate (log scale)", "weight decay λ (log scale)")
    ax.legend(loc="lower left", fontsize=9)
    ctx.add_figure(fig, "hyperparameter_scatter.png",
                   f"Each dot is a trial, coloured by its validation accuracy; the best {k} "
                   f"(circled) lie at lr {r_lr['min']:.1e}-{r_lr['max']:.1e} and weight decay "
                   f"{r_wd['min']:.0e}-{r_wd['max']:.0e}.")

    # Figure 3: the narrowed ranges, one parameter at a time
    fig = new_figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, values, label in ((axes[0], "lr", lr, "learning rate"),
                                   (axes[1], "weight_decay", wd, "weight decay λ")):
        r = ranges[key]
        ax.axvspan(r["min"], r["max"], color="C3", alpha=0.12,
                   label=f"best {k}: {r['min']:.1e} - {r['max']:.1e}")
        ax.scatter(values, acc, c="C0", s=22)
        ax.set_xscale("log")
        style_axes(ax, f"Validation accuracy against the {label}", f"{label} (log scale)",
                   "validation accuracy" if key == "lr" else None)
        ax.legend(loc="upper left", fontsize=9)
    axes[0].set_ylim(0, 1.02)
    fig.suptitle("Narrowing the search: where the best trials lie")
    ctx.add_figure(fig, "hyperparameter_ranges.png",
                   f"The next round of the search would sample lr from "
                   f"10^[{r_lr['log10_min']:.1f}, {r_lr['log10_max']:.1f}] and weight decay "
                   f"from 10^[{r_wd['log10_min']:.1f}, {r_wd['log10_max']:.1f}] "
                   f"(the book: lr 0.001-0.01, decay 1e-8-1e-6).")

    top = ranked[0]
    ctx.key_numbers["best validation accuracy"] = round(top["val_acc"], 4)
    ctx.key_numbers["best trial: lr, weight decay"] = \
        f"{top['params']['lr']:.2e}, {top['params']['weight_decay']:.2e}"
    ctx.key_numbers[f"narrowed lr range (best {k})"] = f"{r_lr['min']:.1e} - {r_lr['max']:.1e}"
    ctx.key_numbers[f"narrowed weight-decay range (best {k})"] = \
        f"{r_wd['min']:.1e} - {r_wd['max']:.1e}"
    ctx.key_numbers["median validation accuracy of all trials"] = round(float(np.median(acc)), 4)
    ctx.key_numbers["train / validation images (test images used)"] = \
        f"{len(train_idx)} / {len(val_idx)} (0)"
