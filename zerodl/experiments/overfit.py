"""Overfitting and regularisation: the book's Figures 6-20, 6-21 and 6-23
(ch6 overfit_weight_decay.py, overfit_dropout.py), with L1 and elastic net added."""
from __future__ import annotations

import numpy as np

from ..nets import MultiLayerNetExtend
from ..optimizers import SGD
from ..plotting import new_figure
from ._common import accuracy_curves, epoch_iterations, style_axes, train_together

NAME = "overfit"
TITLE = "Overfitting, weight decay and Dropout"
DESCRIPTION = (
    "A 7-layer ReLU network (784-100x6-10, He initialisation) trained on only 300 MNIST "
    "images with SGD (lr 0.01, batch 100), as in the book's overfit_weight_decay.py "
    "(200 epochs) and overfit_dropout.py (300 epochs; the full mode runs 300 for all): "
    "without regularisation, with L2 weight decay 0.1 (the book's), L1, elastic net "
    "(L2 + L1), and Dropout 0.15 and 0.2 (the book's). All variants start from the same "
    "weights and see the same mini-batches; the gap is averaged over the last tenth of the "
    "epochs.")

VARIANTS = {
    "none": {},
    "L2 0.1": {"weight_decay_lambda": 0.1},
    "L1 0.01": {"l1_lambda": 0.01},
    "elastic net (L2 0.05 + L1 0.005)": {"weight_decay_lambda": 0.05, "l1_lambda": 0.005},
    "Dropout 0.15": {"use_dropout": True, "dropout_ration": 0.15},
    "Dropout 0.2": {"use_dropout": True, "dropout_ration": 0.2},
}


def settings(quick):
    return {"train_size": 300, "epochs": 60 if quick else 300, "batch_size": 100,
            "hidden": [100] * 6, "lr": 0.01, "variants": VARIANTS,
            "test_size": 2000 if quick else 10000}


def gap_window(epochs):
    return max(1, epochs // 10)


def run(ctx, s):
    (x, t), (xt, tt) = ctx.mnist()
    x, t = x[:s["train_size"]], t[:s["train_size"]]
    xt, tt = xt[:s["test_size"]], tt[:s["test_size"]]
    models = {}
    for name, kwargs in s["variants"].items():
        net = MultiLayerNetExtend(784, s["hidden"], 10, seed=ctx.seed_for("net"), **kwargs)
        models[name] = (net, SGD(lr=s["lr"]))
    curves, evaluate = accuracy_curves(models, (x, t), (xt, tt))
    bar = ctx.progress(epoch_iterations(s))
    losses = train_together(models, x, t, batch_size=s["batch_size"], rng=ctx.rng("batches"),
                            epochs=s["epochs"], evaluate=evaluate, bar=bar)
    w = gap_window(s["epochs"])
    summary = {}
    for name, c in curves.items():
        tr = float(np.mean(c["train_acc"][-w:]))
        te = float(np.mean(c["test_acc"][-w:]))
        summary[name] = {"train_acc": tr, "test_acc": te, "gap": tr - te,
                         "final_loss": float(np.mean(losses[name][-10:]))}
    ctx.numbers.update(curves=curves, summary=summary, gap_window_epochs=w)

    names = list(models)
    cols = 3
    rows = int(np.ceil(len(names) / cols))
    fig = new_figure(figsize=(13, 3.6 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
    epochs = np.arange(0, s["epochs"] + 1)
    for i, name in enumerate(names):
        ax = axes.flat[i]
        ax.plot(epochs, curves[name]["train_acc"], "-", color="C0", label="train")
        ax.plot(epochs, curves[name]["test_acc"], "-", color="C1", label="test")
        st = summary[name]
        style_axes(ax, f"{name}\ntrain {st['train_acc']:.2f}, test {st['test_acc']:.2f}, "
                       f"gap {st['gap']:.2f}",
                   "epoch" if i // cols == rows - 1 else None,
                   "accuracy" if i % cols == 0 else None)
        ax.set_ylim(0, 1.02)
    for j in range(len(names), rows * cols):
        axes.flat[j].set_visible(False)
    axes[0, 0].legend(loc="lower right")
    fig.suptitle(f"Train and test accuracy, {s['train_size']} training images, "
                 f"784-{'-'.join(map(str, s['hidden']))}-10, SGD lr {s['lr']}")
    base = summary["none"] if "none" in summary else None
    narrower = [n for n in names if base and n != "none" and summary[n]["gap"] < base["gap"]]
    caption = (f"Without regularisation the network reaches {base['train_acc']:.0%} training "
               f"accuracy but only {base['test_acc']:.0%} on the test set; "
               f"{len(narrower)} of {len(names) - 1} regularisers narrow that "
               f"{base['gap']:.2f} gap." if base else "Train and test accuracy per epoch.")
    ctx.add_figure(fig, "overfit_curves.png", caption)

    fig = new_figure(figsize=(10, 4.4), layout="constrained")
    ax = fig.subplots()
    pos = np.arange(len(names))
    ax.bar(pos - 0.27, [summary[n]["train_acc"] for n in names], 0.27, color="C0",
           label="train accuracy")
    ax.bar(pos, [summary[n]["test_acc"] for n in names], 0.27, color="C1",
           label="test accuracy")
    ax.bar(pos + 0.27, [summary[n]["gap"] for n in names], 0.27, color="C3",
           label="gap (train - test)")
    for p_, n in zip(pos, names):
        ax.text(p_ + 0.27, summary[n]["gap"] + 0.01, f"{summary[n]['gap']:.2f}",
                ha="center", fontsize=8.5)
    ax.set_xticks(pos, [n.replace(" (", "\n(") for n in names], fontsize=8.5)
    ax.set_ylim(0, 1.1)
    style_axes(ax, f"Mean over the last {w} epochs of {s['epochs']}", None, "accuracy")
    ax.legend(fontsize=8.5, loc="upper right", ncols=3)
    best = min(names, key=lambda n: summary[n]["gap"])
    caption = "The train-test gap per regulariser."
    if "none" in summary:
        caption = (f"The train-test gap per regulariser: smallest with {best} "
                   f"({summary[best]['gap']:.2f}) against {summary['none']['gap']:.2f} "
                   f"without regularisation")
        if summary[best]["test_acc"] < summary["none"]["test_acc"] - 0.05:
            caption += (f", partly because it learns more slowly (test accuracy "
                        f"{summary[best]['test_acc']:.2f} against "
                        f"{summary['none']['test_acc']:.2f})")
        caption += "."
    ctx.add_figure(fig, "overfit_gap.png", caption)
    for n in names:
        ctx.key_numbers[f"{n}: train / test / gap"] = (
            f"{summary[n]['train_acc']:.3f} / {summary[n]['test_acc']:.3f} / "
            f"{summary[n]['gap']:.3f}")
