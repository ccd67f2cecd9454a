"""The optimizers on MNIST: the book's Figure 6-9 (ch6 optimizer_compare_mnist.py)."""
from __future__ import annotations

import numpy as np

from ..nets import MultiLayerNet
from ..optimizers import make_optimizer
from ..plotting import new_figure
from ..util import smooth_curve
from ._common import style_axes, train_together

NAME = "optimizer-mnist"
TITLE = "Optimizers on MNIST"
DESCRIPTION = (
    "A 5-layer ReLU network (784-100-100-100-100-10, He initialisation) trained with each "
    "optimizer at its default learning rate on the same mini-batches of 128 images, as in "
    "the book's optimizer_compare_mnist.py; the curves are smoothed training losses.")


def settings(quick):
    return {
        "train_size": 5000 if quick else 60000,
        "iterations": 300 if quick else 2000,
        "batch_size": 128,
        "hidden": [100, 100, 100, 100],
        "weight_init": "he",
        "optimizers": {"SGD": {"lr": 0.01}, "Momentum": {"lr": 0.01},
                       "Nesterov": {"lr": 0.01}, "AdaGrad": {"lr": 0.01},
                       "RMSprop": {"lr": 0.01}, "Adam": {"lr": 0.001}},
        "test_size": 2000 if quick else 10000,
    }


def run(ctx, s):
    (x, t), (xt, tt) = ctx.mnist()
    x, t = x[:s["train_size"]], t[:s["train_size"]]
    xt, tt = xt[:s["test_size"]], tt[:s["test_size"]]
    models = {}
    for name, hyper in s["optimizers"].items():
        # the same initial weights for every optimizer: only the update rule differs
        net = MultiLayerNet(784, s["hidden"], 10, weight_init_std=s["weight_init"],
                            seed=ctx.seed_for("net"))
        models[name] = (net, make_optimizer(name, **hyper))
    bar = ctx.progress(s["iterations"])
    losses = train_together(models, x, t, batch_size=s["batch_size"], rng=ctx.rng("batches"),
                            iterations=s["iterations"], bar=bar)
    tail = max(10, s["iterations"] // 20)
    summary = {}
    for name, (net, _) in models.items():
        summary[name] = {"final_loss": float(np.mean(losses[name][-tail:])),
                         "test_acc": net.accuracy(xt, tt)}
    ctx.numbers.update(summary=summary, loss_tail_iterations=tail,
                       losses={k: np.round(v, 5).tolist() for k, v in losses.items()})

    fig = new_figure(figsize=(8.5, 5.2), layout="constrained")
    ax = fig.subplots()
    markers = ["o", "x", "^", "s", "D", "v"]
    n = s["iterations"]
    every = max(n // 20, 1)
    for i, (name, curve) in enumerate(losses.items()):
        label = f"{name} (lr {s['optimizers'][name]['lr']}; test acc {summary[name]['test_acc']:.3f})"
        ax.plot(np.arange(1, n + 1), smooth_curve(curve), marker=markers[i % len(markers)],
                markevery=every, ms=5, color=f"C{i}", label=label)
    ax.set_ylim(0, 1.0 if not ctx.quick else 2.5)
    style_axes(ax, f"MNIST, 784-{'-'.join(map(str, s['hidden']))}-10 ReLU, batch "
                   f"{s['batch_size']}, {s['train_size']} training images",
               "iteration", "training loss (smoothed)")
    ax.legend(fontsize=9)
    fig.suptitle("Optimizers compared on MNIST")
    order = sorted(summary, key=lambda k: summary[k]["final_loss"])
    ctx.add_figure(fig, "optimizer_mnist.png",
                   f"After {n} iterations the loss is lowest with {order[0]} and "
                   f"{order[1]} and highest with {order[-1]}"
                   + (": the adaptive and momentum methods learn faster than plain SGD, as "
                      "in the book." if order[-1] == "SGD" else "."))
    for name in order:
        ctx.key_numbers[f"{name}: loss, last {tail} iterations"] = round(
            summary[name]["final_loss"], 4)
    for name in order:
        ctx.key_numbers[f"{name}: test accuracy"] = round(summary[name]["test_acc"], 4)
