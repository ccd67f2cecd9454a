"""Batch Normalization over 16 initial weight scales: the book's Figure 6-19
(ch6 batch_norm_test.py)."""
from __future__ import annotations

import numpy as np

from ..nets import MultiLayerNetExtend
from ..optimizers import SGD
from ..plotting import new_figure
from ._common import epoch_iterations, style_axes, train_together

NAME = "batchnorm"
TITLE = "Batch Normalization across initial weight scales"
DESCRIPTION = (
    "A 6-layer ReLU network (784-100x5-10) trained with SGD (lr 0.01), with and without "
    "Batch Normalization, for 16 initial weight standard deviations from 1 down to 1e-4 "
    "(log-spaced), as in the book's batch_norm_test.py (full mode: the book's 1000 MNIST "
    "images and 20 epochs). "
    "Both networks of a panel start from the same weights and see the same mini-batches; "
    "the curves are accuracy on the training images.")


def settings(quick):
    return {"train_size": 500 if quick else 1000, "epochs": 5 if quick else 20,
            "batch_size": 100, "hidden": [100] * 5, "lr": 0.01,
            "scales": [float(v) for v in np.logspace(0, -4, num=16)],
            "test_size": 1000 if quick else 10000}


def run(ctx, s):
    (x, t), (xt, tt) = ctx.mnist()
    x, t = x[:s["train_size"]], t[:s["train_size"]]
    xt, tt = xt[:s["test_size"]], tt[:s["test_size"]]
    scales = list(s["scales"])
    models = {}
    for i, w in enumerate(scales):
        for bn in (True, False):
            net = MultiLayerNetExtend(784, s["hidden"], 10, weight_init_std=w,
                                      use_batchnorm=bn, seed=ctx.seed_for("net", i))
            models[(i, bn)] = (net, SGD(lr=s["lr"]))
    acc = {key: [] for key in models}

    def evaluate(epoch):
        for key, (net, _) in models.items():
            acc[key].append(net.accuracy(x, t))

    bar = ctx.progress(epoch_iterations(s))
    train_together(models, x, t, batch_size=s["batch_size"], rng=ctx.rng("batches"),
                   epochs=s["epochs"], evaluate=evaluate, bar=bar)
    test = {key: net.accuracy(xt, tt) for key, (net, _) in models.items()}

    per_scale = []
    for i, w in enumerate(scales):
        bn_c, plain_c = acc[(i, True)], acc[(i, False)]
        per_scale.append({
            "weight_scale": w,
            "batchnorm_train_acc": bn_c, "plain_train_acc": plain_c,
            "batchnorm_final_train_acc": bn_c[-1], "plain_final_train_acc": plain_c[-1],
            # area under the curve: "learns faster" as one number
            "batchnorm_mean_train_acc": float(np.mean(bn_c[1:])),
            "plain_mean_train_acc": float(np.mean(plain_c[1:])),
            "batchnorm_test_acc": test[(i, True)], "plain_test_acc": test[(i, False)],
        })
    ctx.numbers["per_scale"] = per_scale
    n = len(scales)
    ahead_final = sum(p["batchnorm_final_train_acc"] > p["plain_final_train_acc"]
                      for p in per_scale)
    ahead_mean = sum(p["batchnorm_mean_train_acc"] > p["plain_mean_train_acc"]
                     for p in per_scale)
    plain_fail = sum(p["plain_final_train_acc"] < 0.2 for p in per_scale)
    bn_fail = sum(p["batchnorm_final_train_acc"] < 0.2 for p in per_scale)
    ctx.numbers.update(bn_ahead_final=ahead_final, bn_ahead_mean=ahead_mean,
                       plain_failed=plain_fail, batchnorm_failed=bn_fail)

    side = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / side))
    fig = new_figure(figsize=(13, 2.75 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, side, sharex=True, sharey=True, squeeze=False)
    epochs = np.arange(0, s["epochs"] + 1)
    for i, p in enumerate(per_scale):
        ax = axes.flat[i]
        ax.plot(epochs, p["batchnorm_train_acc"], "-", color="C0", lw=1.8,
                label="with BatchNorm")
        ax.plot(epochs, p["plain_train_acc"], "--", color="C1", lw=1.8,
                label="without (normal)")
        style_axes(ax, f"weight std {p['weight_scale']:.2g}",
                   "epoch" if i // side == rows - 1 else None,
                   "train accuracy" if i % side == 0 else None)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0, s["epochs"])
    for j in range(n, rows * side):
        axes.flat[j].set_visible(False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2)
    fig.suptitle(f"Training accuracy with (solid) and without (dashed) Batch Normalization, "
                 f"{s['train_size']} images, SGD lr {s['lr']}")
    ctx.add_figure(fig, "batchnorm_grid.png",
                   f"BatchNorm is ahead at {ahead_mean} of {n} weight scales (mean accuracy "
                   f"over the epochs) and ends higher at {ahead_final}; without it "
                   f"{plain_fail} of {n} scales never get past 20% training accuracy, with it "
                   f"{bn_fail}.")

    fig = new_figure(figsize=(8.5, 4.4), layout="constrained")
    ax = fig.subplots()
    w = [p["weight_scale"] for p in per_scale]
    ax.semilogx(w, [p["batchnorm_final_train_acc"] for p in per_scale], "o-", color="C0",
                label="with BatchNorm: train")
    ax.semilogx(w, [p["plain_final_train_acc"] for p in per_scale], "s--", color="C1",
                label="without: train")
    ax.semilogx(w, [p["batchnorm_test_acc"] for p in per_scale], "o:", color="C0",
                alpha=0.6, label="with BatchNorm: test")
    ax.semilogx(w, [p["plain_test_acc"] for p in per_scale], "s:", color="C1", alpha=0.6,
                label="without: test")
    ax.invert_xaxis()
    ax.set_ylim(0, 1.02)
    style_axes(ax, f"Accuracy after {s['epochs']} epochs against the initial weight scale",
               "initial weight std (log scale)", "accuracy")
    ax.legend(fontsize=8.5)
    learn_bn = sum(p["batchnorm_final_train_acc"] >= 0.5 for p in per_scale)
    learn_plain = sum(p["plain_final_train_acc"] >= 0.5 for p in per_scale)
    ctx.numbers.update(batchnorm_reach_50=learn_bn, plain_reach_50=learn_plain)
    ctx.add_figure(fig, "batchnorm_final.png",
                   f"Accuracy after {s['epochs']} epochs against the initial weight scale: "
                   f"with BatchNorm {learn_bn} of {n} scales reach 50% training accuracy, "
                   f"without it {learn_plain}.")
    ctx.key_numbers["weight scales where BatchNorm is ahead (mean train acc)"] = \
        f"{ahead_mean} of {n}"
    ctx.key_numbers["weight scales where BatchNorm ends higher"] = f"{ahead_final} of {n}"
    ctx.key_numbers["scales stuck below 20% train acc: without / with BN"] = \
        f"{plain_fail} / {bn_fail}"
    ctx.key_numbers["mean final train acc over scales: without / with BN"] = (
        f"{np.mean([p['plain_final_train_acc'] for p in per_scale]):.3f} / "
        f"{np.mean([p['batchnorm_final_train_acc'] for p in per_scale]):.3f}")
