"""An ablation table in the spirit of a reader's write-up of chapter 6: start from a
784-100-50-10 network trained with AdaGrad and add one technique at a time."""
from __future__ import annotations

import os
import time

import numpy as np

from ..nets import MultiLayerNetExtend
from ..optimizers import AdaGrad
from ..plotting import new_figure
from ..trainer import split_validation
from ._common import (accuracy_curves, epoch_iterations, style_axes, train_together,
                      write_text_atomic)

NAME = "ablation"
TITLE = "Ablation: one technique at a time"
DESCRIPTION = (
    "A 784-100-50-10 ReLU network trained with AdaGrad (lr 0.01, batch 100) on MNIST from "
    "weights of std 0.01, then the same with He or Xavier initialisation, Dropout, "
    "BatchNorm, BatchNorm plus one more hidden layer of 100, and finally that network with "
    "its learning rate tuned on a validation split of the training set (the test set is "
    "only scored, never used for choices). The learner's write-up reported +He 96.1%, "
    "+BN 96.9%, +BN and one more layer 98.1% test accuracy.")

# name -> (hidden sizes, init, use_batchnorm, dropout ratio or 0)
CONFIGS = {
    "AdaGrad base (std 0.01)": ([100, 50], 0.01, False, 0.0),
    "+He": ([100, 50], "he", False, 0.0),
    "+Xavier (instead of He)": ([100, 50], "xavier", False, 0.0),
    "+He +Dropout 0.2": ([100, 50], "he", False, 0.2),
    "+He +BatchNorm": ([100, 50], "he", True, 0.0),
    "+He +BatchNorm +1 hidden layer": ([100, 100, 50], "he", True, 0.0),
    "+tuned learning rate": ([100, 100, 50], "he", True, 0.0),
}
TUNED = "+tuned learning rate"


def settings(quick):
    return {"train_size": 5000 if quick else 60000, "epochs": 3 if quick else 20,
            "batch_size": 100, "lr": 0.01, "lr_grid": [0.003, 0.01, 0.03, 0.1],
            "tune_epochs": 1 if quick else 3, "validation_fraction": 0.2 if quick else 1 / 6,
            "eval_train_samples": 2000 if quick else 10000,
            "test_size": 2000 if quick else 10000}


def build(config, seed):
    hidden, init, bn, dropout = config
    return MultiLayerNetExtend(784, hidden, 10, weight_init_std=init, use_batchnorm=bn,
                               use_dropout=dropout > 0, dropout_ration=dropout or 0.5,
                               seed=seed)


def tune_lr(ctx, s, x, t, config, bar):
    """Pick AdaGrad's learning rate from ``lr_grid`` by validation accuracy on a split of
    the training images: short runs, the test set is not looked at."""
    x_tr, t_tr, x_val, t_val = split_validation(x, t, s["validation_fraction"],
                                                ctx.rng("tune-split"))
    models = {lr: (build(config, ctx.seed_for("tune-net")), AdaGrad(lr=lr))
              for lr in s["lr_grid"]}
    train_together(models, x_tr, t_tr, batch_size=s["batch_size"], rng=ctx.rng("tune-batches"),
                   epochs=s["tune_epochs"], bar=bar)
    scores = {lr: net.accuracy(x_val, t_val) for lr, (net, _) in models.items()}
    best = max(scores, key=lambda lr: (scores[lr], -abs(np.log10(lr / s["lr"]))))
    return best, scores, len(x_tr), len(x_val)


def run(ctx, s):
    (x, t), (xt, tt) = ctx.mnist()
    x, t = x[:s["train_size"]], t[:s["train_size"]]
    xt, tt = xt[:s["test_size"]], tt[:s["test_size"]]
    n_val = int(round(s["train_size"] * s["validation_fraction"]))
    tune_iters = s["tune_epochs"] * max((s["train_size"] - n_val) // s["batch_size"], 1)
    bar = ctx.progress(len(CONFIGS) * epoch_iterations(s) + tune_iters)
    start = time.perf_counter()
    best_lr, scores, n_tr, n_va = tune_lr(ctx, s, x, t, CONFIGS[TUNED], bar)
    tune_seconds = time.perf_counter() - start
    ctx.numbers["tuning"] = {"lr_grid": s["lr_grid"], "validation_acc": scores,
                             "best_lr": best_lr, "train_images": n_tr,
                             "validation_images": n_va, "epochs": s["tune_epochs"],
                             "seconds": tune_seconds}
    k = s["eval_train_samples"]
    rows, curves = [], {}
    for name, config in CONFIGS.items():
        lr = best_lr if name == TUNED else s["lr"]
        net = build(config, ctx.seed_for("net"))
        models = {name: (net, AdaGrad(lr=lr))}
        run_curves, evaluate = accuracy_curves(models, (x[:k], t[:k]), (xt, tt),
                                               skip_initial=True)
        cur = run_curves[name]
        t0 = time.perf_counter()
        train_together(models, x, t, batch_size=s["batch_size"], rng=ctx.rng("batches"),
                       epochs=s["epochs"], evaluate=evaluate, bar=bar)
        hidden, init, bn, dropout = config
        extras = [e for e, on in (("BatchNorm", bn), (f"Dropout {dropout}", dropout > 0)) if on]
        rows.append({"configuration": name,
                     "layers": "784-" + "-".join(map(str, hidden)) + "-10",
                     "init": init if isinstance(init, str) else f"std {init}",
                     "extras": ", ".join(extras) or "-", "lr": lr,
                     "train_acc": cur["train_acc"][-1], "test_acc": cur["test_acc"][-1],
                     "seconds": time.perf_counter() - t0})
        curves[name] = cur
    base = rows[0]["test_acc"]
    for r in rows:
        r["test_gain_vs_base"] = r["test_acc"] - base
    ctx.numbers.update(rows=rows, curves=curves, train_acc_images=min(k, len(x)),
                       test_images=len(xt))

    # markdown table (also in the report's key numbers)
    header = "| configuration | layers | init | extras | AdaGrad lr | train acc | test acc |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['configuration']} | {r['layers']} | {r['init']} | {r['extras']} | "
                     f"{r['lr']:g} | {r['train_acc']:.4f} | {r['test_acc']:.4f} |")
    table_md = "\n".join(lines) + "\n"
    write_text_atomic(os.path.join(ctx.out_dir, "ablation_table.md"), table_md)
    ctx.numbers["table_markdown"] = table_md

    # table as a PNG
    fig = new_figure(figsize=(12, 0.36 * (len(rows) + 1) + 0.9), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    cells = [[r["configuration"], r["layers"], r["init"], r["extras"], f"{r['lr']:g}",
              f"{r['train_acc']:.2%}", f"{r['test_acc']:.2%}",
              f"{r['test_gain_vs_base'] * 100:+.2f}"] for r in rows]
    table = ax.table(cellText=cells, bbox=[0, 0, 1, 1], cellLoc="center",
                     colLabels=["configuration", "layers", "init", "extras", "AdaGrad lr",
                                "train acc", "test acc", "test vs base (pt)"],
                     colWidths=[0.27, 0.13, 0.08, 0.1, 0.09, 0.1, 0.1, 0.13])
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    best_row = int(np.argmax([r["test_acc"] for r in rows]))
    for (row, col), cell in table.get_celld().items():
        if row == 0:
            cell.set_facecolor("#dde6f0")
            cell.set_text_props(weight="bold")
        elif row - 1 == best_row:
            cell.set_facecolor("#e6f4e6")
        if col == 0 and row > 0:
            cell.set_text_props(ha="left")
            cell.PAD = 0.03
            cell._loc = "left"
    ax.set_title(f"MNIST, {s['train_size']} training images, {s['epochs']} epochs, "
                 f"batch {s['batch_size']}; train acc on {min(k, len(x))} training images, "
                 f"test acc on {len(xt)} test images", fontsize=10)
    fig.suptitle("Ablation: adding one technique at a time to a 784-100-50-10 AdaGrad network")
    r_he = next(r for r in rows if r["configuration"] == "+He")
    r_bn = next(r for r in rows if r["configuration"] == "+He +BatchNorm")
    r_bn2 = next(r for r in rows if r["configuration"] == "+He +BatchNorm +1 hidden layer")
    ctx.add_figure(fig, "ablation_table.png",
                   f"Test accuracy from {base:.2%} (std 0.01) to {r_he['test_acc']:.2%} with "
                   f"He, {r_bn['test_acc']:.2%} with BatchNorm and {r_bn2['test_acc']:.2%} "
                   f"with one more hidden layer (the write-up: 96.1%, 96.9%, 98.1%); the best "
                   f"row, highlighted, is '{rows[best_row]['configuration']}'.")

    fig = new_figure(figsize=(11, 4.8), layout="constrained")
    ax = fig.subplots()
    epochs = np.arange(1, s["epochs"] + 1)
    for i, (name, cur) in enumerate(curves.items()):
        ax.plot(epochs, cur["test_acc"], "o-", ms=3.5, color=f"C{i}", label=name)
    style_axes(ax, "Test accuracy per epoch", "epoch", "test accuracy")
    lo = min(min(c["test_acc"]) for c in curves.values())
    ax.set_ylim(max(0.0, lo - 0.02), 1.0)
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ctx.add_figure(fig, "ablation_curves.png",
                   f"Test accuracy per epoch for each configuration of the table; at the end "
                   f"He adds {100 * (r_he['test_acc'] - base):+.1f} points to the base, "
                   f"BatchNorm {100 * (r_bn['test_acc'] - r_he['test_acc']):+.1f} more and "
                   f"the extra hidden layer {100 * (r_bn2['test_acc'] - r_bn['test_acc']):+.1f}.")
    for r in rows:
        ctx.key_numbers[f"{r['configuration']}: train / test acc"] = \
            f"{r['train_acc']:.4f} / {r['test_acc']:.4f}"
    ctx.key_numbers["tuned AdaGrad lr (validation split)"] = best_lr
