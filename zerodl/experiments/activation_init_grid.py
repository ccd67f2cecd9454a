"""Activation x initialisation, with and without Batch Normalization."""
from __future__ import annotations

import numpy as np

from ..nets import MultiLayerNetExtend
from ..optimizers import make_optimizer
from ..plotting import new_figure
from ._common import accuracy_curves, epoch_iterations, style_axes, train_together

NAME = "activation-init-grid"
TITLE = "Activation function x weight initialisation, with and without BatchNorm"
DESCRIPTION = (
    "Six 6-layer networks (784-100x5-10): sigmoid or ReLU, initial weights Gaussian std "
    "0.01, Xavier or He; each trained with plain SGD (lr 0.01) on the same mini-batches, "
    "once without and once with Batch Normalization before every activation. The curves "
    "are training and test accuracy per epoch.")

INITS = {"std=0.01": 0.01, "Xavier": "xavier", "He": "he"}


def settings(quick):
    return {"train_size": 1000 if quick else 5000, "epochs": 6 if quick else 20,
            "batch_size": 100, "hidden": [100] * 5, "optimizer": "sgd", "lr": 0.01,
            "activations": ["sigmoid", "relu"], "inits": list(INITS),
            "test_size": 1000 if quick else 10000}


def run(ctx, s):
    (x, t), (xt, tt) = ctx.mnist()
    x, t = x[:s["train_size"]], t[:s["train_size"]]
    xt, tt = xt[:s["test_size"]], tt[:s["test_size"]]
    models = {}
    for bn in (False, True):
        for act in s["activations"]:
            for init in s["inits"]:
                net = MultiLayerNetExtend(784, s["hidden"], 10, activation=act,
                                          weight_init_std=INITS[init], use_batchnorm=bn,
                                          seed=ctx.seed_for("net", act, init))
                models[(bn, act, init)] = (net, make_optimizer(s["optimizer"], lr=s["lr"]))
    curves, evaluate = accuracy_curves(models, (x, t), (xt, tt))
    bar = ctx.progress(epoch_iterations(s))
    train_together(models, x, t, batch_size=s["batch_size"], rng=ctx.rng("batches"),
                   epochs=s["epochs"], evaluate=evaluate, bar=bar)

    def label(key):
        bn, act, init = key
        return f"{'batchnorm' if bn else 'plain'}/{act}/{init}"

    ctx.numbers["curves"] = {label(k): v for k, v in curves.items()}
    final = {k: {"train_acc": v["train_acc"][-1], "test_acc": v["test_acc"][-1]}
             for k, v in curves.items()}
    ctx.numbers["final"] = {label(k): v for k, v in final.items()}

    epochs = np.arange(0, s["epochs"] + 1)
    rows, cols = s["activations"], s["inits"]
    for bn in (False, True):
        fig = new_figure(figsize=(12.5, 3.3 * len(rows) + 0.7), layout="constrained")
        axes = fig.subplots(len(rows), len(cols), sharex=True, sharey=True, squeeze=False)
        for r, act in enumerate(rows):
            for c, init in enumerate(cols):
                ax = axes[r, c]
                cur = curves[(bn, act, init)]
                ax.plot(epochs, cur["train_acc"], "--", color="C0", label="train")
                ax.plot(epochs, cur["test_acc"], "-", color="C1", label="test")
                style_axes(ax, f"{act}, {init}: test {cur['test_acc'][-1]:.3f}",
                           "epoch" if r == len(rows) - 1 else None,
                           "accuracy" if c == 0 else None)
                ax.set_ylim(0, 1.02)
        axes[0, 0].legend(loc="lower right")
        which = "with Batch Normalization" if bn else "without Batch Normalization"
        fig.suptitle(f"Accuracy per epoch {which} ({s['train_size']} training images, "
                     f"SGD lr {s['lr']})")
        if bn:
            worst = min((k for k in final if k[0]), key=lambda k: final[k]["test_acc"])
            learnt = sum(final[k]["test_acc"] >= 0.3 for k in final if k[0])
            total = sum(1 for k in final if k[0])
            caption = (f"With BatchNorm {learnt} of {total} combinations learn (the lowest "
                       f"final test accuracy is {final[worst]['test_acc']:.3f}, "
                       f"{worst[1]}/{worst[2]}): normalising every layer's input makes the "
                       f"initial scale matter far less.")
        else:
            failed = [f"{k[1]}/{k[2]}" for k in final
                      if not k[0] and final[k]["test_acc"] < 0.2]
            best = max((k for k in final if not k[0]), key=lambda k: final[k]["test_acc"])
            caption = (f"Without BatchNorm the initial scale decides: "
                       f"{', '.join(failed) if failed else 'no combination'} "
                       f"{'stay' if len(failed) != 1 else 'stays'} near chance, and "
                       f"{best[1]}/{best[2]} learns best "
                       f"({final[best]['test_acc']:.3f} test accuracy).")
        ctx.add_figure(fig, f"activation_init_{'batchnorm' if bn else 'plain'}.png", caption)

    # summary: final test accuracy with and without BN
    fig = new_figure(figsize=(9, 4.2), layout="constrained")
    ax = fig.subplots()
    combos = [(a, i) for a in rows for i in cols]
    pos = np.arange(len(combos))
    plain = [final[(False, a, i)]["test_acc"] for a, i in combos]
    withbn = [final[(True, a, i)]["test_acc"] for a, i in combos]
    ax.bar(pos - 0.2, plain, 0.4, color="C7", label="without BatchNorm")
    ax.bar(pos + 0.2, withbn, 0.4, color="C2", label="with BatchNorm")
    for p_, v in zip(pos, plain):
        ax.text(p_ - 0.2, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
    for p_, v in zip(pos, withbn):
        ax.text(p_ + 0.2, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
    ax.set_xticks(pos, [f"{a}\n{i}" for a, i in combos])
    ax.set_ylim(0, 1.08)
    style_axes(ax, f"Final test accuracy after {s['epochs']} epochs", None, "test accuracy")
    ax.legend(loc="upper left", fontsize=9)
    ahead = sum(w > p_ for w, p_ in zip(withbn, plain))
    ctx.add_figure(fig, "activation_init_summary.png",
                   f"BatchNorm gives the higher final test accuracy in {ahead} of "
                   f"{len(combos)} combinations of activation and initialisation.")
    ctx.key_numbers["combinations where BatchNorm is ahead (final test acc)"] = \
        f"{ahead} of {len(combos)}"
    for a, i in combos:
        ctx.key_numbers[f"{a}/{i}: test acc without / with BN"] = \
            f"{final[(False, a, i)]['test_acc']:.3f} / {final[(True, a, i)]['test_acc']:.3f}"
