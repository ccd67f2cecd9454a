"""Activation histograms of a 5-layer net for four weight scales and three activations:
the book's Figures 6-10 to 6-14 (ch6 weight_init_activation_histogram.py)."""
from __future__ import annotations

import numpy as np

from ..functions import relu, sigmoid
from ..nets import init_std
from ..plotting import new_figure
from ._common import style_axes

NAME = "init-histograms"
TITLE = "Activation distributions and weight initialisation"
DESCRIPTION = (
    "1000 random Gaussian inputs of 100 features pass through 5 fully connected layers of "
    "100 units (no bias, no training), with weights drawn at std 1, std 0.01, Xavier "
    "(sqrt(1/n)) or He (sqrt(2/n)); the histograms show each layer's activations for "
    "sigmoid, tanh and ReLU, as in the book.")

ACTIVATIONS = {"sigmoid": sigmoid, "tanh": np.tanh, "relu": relu}
INITS = {"std=1": 1.0, "std=0.01": 0.01, "Xavier": "xavier", "He": "he"}
# ReLU's activations span many decades between the inits: histogram log10 of the
# positive ones (the zeros, about half, are given as a share in each panel).
RANGES = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "relu": (-9.0, 6.0)}


def settings(quick):
    return {"samples": 1000, "units": 100, "layers": 5, "bins": 30,
            "activations": list(ACTIVATIONS), "inits": list(INITS)}


def forward(x, activation, weight_init, layers, rng):
    """Activations of every layer: list of arrays (N, units)."""
    fn = ACTIVATIONS[activation]
    outs = []
    a = x
    for _ in range(layers):
        n_in = a.shape[1]
        W = rng.standard_normal((n_in, x.shape[1])) * init_std(INITS[weight_init], n_in)
        a = fn(a @ W)
        outs.append(a)
    return outs


def layer_stats(a, activation):
    a = np.asarray(a, dtype=np.float64)
    stats = {"mean": float(a.mean()), "std": float(a.std())}
    if activation == "sigmoid":
        stats["saturated"] = float(np.mean((a < 0.1) | (a > 0.9)))
    elif activation == "tanh":
        stats["saturated"] = float(np.mean(np.abs(a) > 0.9))
    else:
        stats["zero"] = float(np.mean(a <= 0))
    return stats


def run(ctx, s):
    x = ctx.rng("input").standard_normal((s["samples"], s["units"]))
    bar = ctx.progress(len(s["activations"]) * len(s["inits"]), unit="net")
    acts, stats = {}, {}
    for act in s["activations"]:
        for init in s["inits"]:
            outs = forward(x, act, init, s["layers"], ctx.rng(act, init))
            acts[(act, init)] = outs
            stats.setdefault(act, {})[init] = [layer_stats(a, act) for a in outs]
            bar.update(1)
    ctx.numbers["layer_stats"] = stats

    captions = {
        "sigmoid": "With sigmoid, std=1 pushes the activations to 0 and 1 (vanishing "
                   "gradients), std=0.01 squeezes them around 0.5 (every unit alike), and "
                   "Xavier keeps them spread in every layer.",
        "tanh": "tanh behaves like sigmoid but centred on 0: std=1 saturates at ±1, "
                "std=0.01 collapses towards 0 layer by layer, Xavier keeps a bell shape.",
        "relu": "With ReLU (log scale), std=0.01 shrinks the activations about tenfold in "
                "every layer and std=1 blows them up, Xavier lets them drift smaller with "
                "depth, and He keeps the same distribution in all five layers.",
    }
    for act in s["activations"]:
        rows = len(s["inits"])
        fig = new_figure(figsize=(13, 2.3 * rows + 0.8), layout="constrained")
        axes = fig.subplots(rows, s["layers"], sharex=True, squeeze=False)
        lo, hi = RANGES[act]
        for r, init in enumerate(s["inits"]):
            row_max = 0
            for c, a in enumerate(acts[(act, init)]):
                ax = axes[r, c]
                values = a.ravel()
                note = ""
                if act == "relu":
                    zero = float(np.mean(values <= 0))
                    values = np.log10(values[values > 0])
                    note = f"zeros: {100 * zero:.0f}%"
                counts, _, _ = ax.hist(np.clip(values, lo, hi), bins=s["bins"],
                                       range=(lo, hi), color=f"C{r}")
                row_max = max(row_max, counts.max() if counts.size else 0)
                st = stats[act][init][c]
                text = f"std {st['std']:.3g}"
                if note:
                    text += "\n" + note
                ax.text(0.03 if act == "relu" else 0.97, 0.95, text, transform=ax.transAxes,
                        ha="left" if act == "relu" else "right", va="top",
                        fontsize=8, bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
                if r == 0:
                    ax.set_title(f"layer {c + 1}")
                if c == 0:
                    ax.set_ylabel(f"{init}\ncount")
                else:
                    ax.tick_params(labelleft=False)
                if r == rows - 1:
                    ax.set_xlabel("log10(activation), positive ones" if act == "relu"
                                  else "activation")
            for ax in axes[r]:
                ax.set_ylim(0, row_max * 1.12 + 1)
        fig.suptitle(f"{act} activations of a 5-layer net (100 units each) for four "
                     f"weight scales (rows)")
        ctx.add_figure(fig, f"init_histograms_{act}.png", captions[act])

    # summary: the std of each layer's activations
    fig = new_figure(figsize=(13, 4.2), layout="constrained")
    axes = fig.subplots(1, len(s["activations"]))
    layers = np.arange(1, s["layers"] + 1)
    for ax, act in zip(np.atleast_1d(axes), s["activations"]):
        for r, init in enumerate(s["inits"]):
            ax.semilogy(layers, [st["std"] for st in stats[act][init]], "o-", color=f"C{r}",
                        label=init)
        style_axes(ax, act, "layer", "std of the activations (log scale)")
        ax.set_xticks(layers)
        ax.legend(fontsize=8.5)
    fig.suptitle("Spread of the activations layer by layer")
    he = [st["std"] for st in stats["relu"]["He"]] if "relu" in stats else None
    small = [st["std"] for st in stats["relu"]["std=0.01"]] if "relu" in stats else None
    caption = "The spread of the activations per layer: only the matching initialisation " \
              "(Xavier for sigmoid and tanh, He for ReLU) keeps it steady"
    if he and small:
        caption += (f"; with ReLU, He goes from {he[0]:.2f} to {he[-1]:.2f} while std=0.01 "
                    f"falls from {small[0]:.1e} to {small[-1]:.1e}")
    ctx.add_figure(fig, "init_activation_std.png", caption + ".")

    for act in s["activations"]:
        for init in s["inits"]:
            st = stats[act][init]
            ctx.key_numbers[f"{act}, {init}: activation std, layer 1 -> {s['layers']}"] = (
                f"{st[0]['std']:.3g} -> {st[-1]['std']:.3g}")
    if "sigmoid" in stats:
        for init in s["inits"]:
            ctx.key_numbers[f"sigmoid, {init}: share near 0 or 1, layer {s['layers']}"] = \
                round(stats["sigmoid"][init][-1]["saturated"], 3)
