"""Weight initialisation on MNIST: the book's Figure 6-15 (ch6 weight_init_compare.py)."""
from __future__ import annotations

import numpy as np

from ..nets import MultiLayerNet
from ..optimizers import SGD
from ..plotting import new_figure
from ..util import smooth_curve
from ._common import style_axes, train_together

NAME = "init-mnist"
TITLE = "Weight initialisation on MNIST"
DESCRIPTION = (
    "A 5-layer ReLU network (784-100-100-100-100-10) trained with SGD (lr 0.01) on the same "
    "mini-batches of 128 images from three initial weight scales: Gaussian std 0.01, Xavier "
    "and He, as in the book's weight_init_compare.py.")

INITS = {"std=0.01": 0.01, "Xavier": "xavier", "He": "he"}


def settings(quick):
    return {"train_size": 5000 if quick else 60000,
            "iterations": 300 if quick else 2000,
            "batch_size": 128, "hidden": [100, 100, 100, 100], "activation": "relu",
            "lr": 0.01, "inits": list(INITS), "test_size": 2000 if quick else 10000}


def run(ctx, s):
    (x, t), (xt, tt) = ctx.mnist()
    x, t = x[:s["train_size"]], t[:s["train_size"]]
    xt, tt = xt[:s["test_size"]], tt[:s["test_size"]]
    models = {}
    for name in s["inits"]:
        net = MultiLayerNet(784, s["hidden"], 10, activation=s["activation"],
                            weight_init_std=INITS[name], seed=ctx.seed_for("net"))
        models[name] = (net, SGD(lr=s["lr"]))
    bar = ctx.progress(s["iterations"])
    losses = train_together(models, x, t, batch_size=s["batch_size"], rng=ctx.rng("batches"),
                            iterations=s["iterations"], bar=bar)
    tail = max(10, s["iterations"] // 20)
    summary = {name: {"final_loss": float(np.mean(losses[name][-tail:])),
                      "first_loss": float(losses[name][0]),
                      "test_acc": net.accuracy(xt, tt)}
               for name, (net, _) in models.items()}
    ctx.numbers.update(summary=summary, loss_tail_iterations=tail,
                       losses={k: np.round(v, 5).tolist() for k, v in losses.items()})

    fig = new_figure(figsize=(8.5, 5.2), layout="constrained")
    ax = fig.subplots()
    n = s["iterations"]
    markers = {"std=0.01": "o", "Xavier": "s", "He": "D"}
    for i, (name, curve) in enumerate(losses.items()):
        ax.plot(np.arange(1, n + 1), smooth_curve(curve), marker=markers.get(name, "o"),
                markevery=max(n // 20, 1), ms=5, color=f"C{i}",
                label=f"{name} (test acc {summary[name]['test_acc']:.3f})")
    ax.set_ylim(0, 2.5)
    style_axes(ax, f"784-{'-'.join(map(str, s['hidden']))}-10 {s['activation']}, SGD lr "
                   f"{s['lr']}, batch {s['batch_size']}, {s['train_size']} training images",
               "iteration", "training loss (smoothed)")
    ax.legend()
    fig.suptitle("Weight initialisation compared on MNIST")
    order = sorted(summary, key=lambda k: summary[k]["final_loss"])
    parts = [f"{k} {summary[k]['final_loss']:.2f}" for k in order]
    caption = (f"Training loss after {n} iterations: {', '.join(parts)}; "
               f"{order[0]} learns fastest{', as in the book' if order[0] == 'He' else ''}")
    if "std=0.01" in summary and summary["std=0.01"]["final_loss"] > 2.2:
        caption += (" and std 0.01 stays at ln 10 = 2.30: its signal vanishes in the deep "
                    "layers and nothing is learnt")
    caption += "."
    ctx.add_figure(fig, "init_mnist.png", caption)
    for name in models:
        ctx.key_numbers[f"{name}: loss, last {tail} iterations"] = round(
            summary[name]["final_loss"], 4)
    for name in models:
        ctx.key_numbers[f"{name}: test accuracy"] = round(summary[name]["test_acc"], 4)
