"""The book's SimpleConvNet on MNIST and its first-layer filters before and after
training: Figures 7-23 and 7-24 (ch7 train_convnet.py, visualize_filter.py)."""
from __future__ import annotations

import time

import numpy as np

from ..nets import SimpleConvNet
from ..optimizers import Adam
from ..plotting import new_figure
from ..util import smooth_curve
from ._common import accuracy_curves, epoch_iterations, style_axes, train_together

NAME = "convnet"
TITLE = "SimpleConvNet on MNIST and its learned filters"
DESCRIPTION = (
    "The book's SimpleConvNet (conv 30 filters 5x5 - ReLU - 2x2 max pool - affine 100 - "
    "ReLU - affine 10, initial weight std 0.01) trained on MNIST with Adam (lr 0.001, "
    "batch 100), as in train_convnet.py; accuracy is scored each epoch on 1000 training "
    "and 1000 test images (the book's evaluate_sample_num_per_epoch) and at the end on "
    "the whole test set. The 30 first-layer filters are shown before and after training.")


def settings(quick):
    return {"train_size": 3000 if quick else 60000, "epochs": 1 if quick else 20,
            "batch_size": 100, "lr": 0.001, "filter_num": 30, "filter_size": 5,
            "hidden_size": 100, "weight_init_std": 0.01, "eval_samples": 1000,
            "test_size": 1000 if quick else 10000}


def filter_grid(fig, W, title, cols=6):
    """Draw filters W (FN, C, FH, FW) as grey images on ``fig`` (a figure or subfigure)."""
    fn = W.shape[0]
    rows = int(np.ceil(fn / cols))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i < fn:
            ax.imshow(W[i, 0], cmap="gray_r", interpolation="nearest")
        else:
            ax.set_visible(False)
    fig.suptitle(title)


def filter_smoothness(W):
    """Mean absolute difference between neighbouring pixels, relative to the filters'
    spread: about 1.13 for white noise, lower for smooth (blob and edge) filters."""
    W = np.asarray(W, dtype=np.float64)[:, 0]
    dx = np.abs(np.diff(W, axis=2)).mean()
    dy = np.abs(np.diff(W, axis=1)).mean()
    return float((dx + dy) / 2 / (W.std() + 1e-12))


def run(ctx, s):
    (x, t), (xt, tt) = ctx.mnist(flatten=False)
    x, t = x[:s["train_size"]], t[:s["train_size"]]
    xt, tt = xt[:s["test_size"]], tt[:s["test_size"]]
    net = SimpleConvNet(input_dim=(1, 28, 28),
                        conv_param={"filter_num": s["filter_num"],
                                    "filter_size": s["filter_size"], "pad": 0, "stride": 1},
                        hidden_size=s["hidden_size"], output_size=10,
                        weight_init_std=s["weight_init_std"], seed=ctx.seed_for("net"))
    W_before = net.params["W1"].copy()
    k = s["eval_samples"]
    models = {"convnet": (net, Adam(lr=s["lr"]))}
    curves, evaluate = accuracy_curves(models, (x[:k], t[:k]), (xt[:k], tt[:k]))
    curves = curves["convnet"]
    bar = ctx.progress(epoch_iterations(s))
    start = time.perf_counter()
    losses = train_together(models, x, t, batch_size=s["batch_size"], rng=ctx.rng("batches"),
                            epochs=s["epochs"], evaluate=evaluate, bar=bar)["convnet"]
    train_seconds = time.perf_counter() - start
    test_acc = net.accuracy(xt, tt)
    W_after = net.params["W1"].copy()
    smooth_before, smooth_after = filter_smoothness(W_before), filter_smoothness(W_after)
    ctx.numbers.update(curves=curves, final_test_acc=test_acc,
                       test_images=len(xt), train_seconds=train_seconds,
                       seconds_per_epoch=train_seconds / max(s["epochs"], 1),
                       loss=np.round(losses, 5).tolist(),
                       filters_before=W_before[:, 0], filters_after=W_after[:, 0],
                       filter_roughness_before=smooth_before,
                       filter_roughness_after=smooth_after)

    fig = new_figure(figsize=(11, 4.2), layout="constrained")
    ax_l, ax_a = fig.subplots(1, 2)
    ax_l.plot(losses, color="0.8", lw=0.6, label="per iteration")
    ax_l.plot(smooth_curve(losses), color="C0", label="smoothed")
    ax_l.set_ylim(0, None)
    style_axes(ax_l, "Training loss", "iteration", "loss")
    ax_l.legend()
    epochs = np.arange(0, s["epochs"] + 1)
    zoom = s["epochs"] >= 3  # long runs: show the last per cent, from epoch 1
    first = 1 if zoom else 0
    ax_a.plot(epochs[first:], curves["train_acc"][first:], "o-", ms=4,
              label=f"train ({k} images)")
    ax_a.plot(epochs[first:], curves["test_acc"][first:], "s-", ms=4,
              label=f"test ({k} images)")
    ax_a.axhline(test_acc, color="C2", ls=":", label=f"final, all {len(xt)} test: "
                                                      f"{test_acc:.4f}")
    if zoom:
        lo = min(curves["train_acc"][1:] + curves["test_acc"][1:] + [test_acc])
        ax_a.set_ylim(max(0.0, np.floor(lo * 50) / 50 - 0.01), 1.0)
    else:
        ax_a.set_ylim(0, 1.02)
    ax_a.set_xlim(first, s["epochs"])
    style_axes(ax_a, "Accuracy", "epoch", "accuracy")
    ax_a.legend(loc="lower right")
    fig.suptitle(f"SimpleConvNet, Adam lr {s['lr']}, {s['train_size']} training images, "
                 f"{s['epochs']} epoch{'s' if s['epochs'] != 1 else ''}")
    ctx.add_figure(fig, "convnet_learning.png",
                   f"SimpleConvNet reaches {test_acc:.2%} accuracy on all {len(xt)} test "
                   f"images after {s['epochs']} epoch{'s' if s['epochs'] != 1 else ''} "
                   f"(the book: about 98.9% after 20 epochs on full MNIST).")

    fig = new_figure(figsize=(11, 4.4), layout="constrained")
    left, right = fig.subfigures(1, 2, wspace=0.06)
    filter_grid(left, W_before, f"before training (random, std {s['weight_init_std']})")
    filter_grid(right, W_after, f"after {s['epochs']} epoch{'s' if s['epochs'] != 1 else ''}")
    fig.suptitle(f"The {s['filter_num']} first-layer filters ({s['filter_size']}x"
                 f"{s['filter_size']}, dark = large weight)")
    if smooth_after < 0.8 * smooth_before:
        what = ("after training they have smooth blobs and edges, the edge and blob "
                "detectors of the book's Figure 7-24")
    else:
        what = "after this short training they are still mostly noise"
    ctx.add_figure(fig, "convnet_filters.png",
                   f"Before training the filters are noise; {what} (pixel-to-pixel "
                   f"roughness {smooth_before:.2f} -> {smooth_after:.2f}; white noise is "
                   f"about 1.13).")
    ctx.key_numbers["final test accuracy"] = round(test_acc, 4)
    ctx.key_numbers["test images scored"] = len(xt)
    ctx.key_numbers["training seconds per epoch"] = round(train_seconds / max(s["epochs"], 1), 1)
    ctx.key_numbers["filter roughness before -> after"] = \
        f"{smooth_before:.2f} -> {smooth_after:.2f}"
