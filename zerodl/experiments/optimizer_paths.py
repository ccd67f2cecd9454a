"""Optimizers on f(x, y) = x²/20 + y² from (-7, 2): the book's Figure 6-8 (ch6
optimizer_compare_naive.py), with Nesterov and RMSprop added."""
from __future__ import annotations

import numpy as np

from ..optimizers import make_optimizer
from ..plotting import new_figure
from ._common import style_axes

NAME = "optimizer-paths"
TITLE = "Optimizer paths on f(x, y) = x²/20 + y²"
DESCRIPTION = (
    "Each optimizer starts at (-7, 2) and takes the book's 30 steps on the elongated "
    "bowl f(x, y) = x²/20 + y², whose gradient is 20 times steeper along y than along x. "
    "Learning rates are the book's (SGD 0.95, Momentum 0.1, AdaGrad 1.5, Adam 0.3); "
    "Nesterov uses Momentum's 0.1 and RMSprop 0.2 (the book does not plot them).")

START = (-7.0, 2.0)


def settings(quick):
    return {
        "steps": 30,
        "start": list(START),
        "optimizers": {
            "SGD": {"lr": 0.95},
            "Momentum": {"lr": 0.1},
            "Nesterov": {"lr": 0.1},
            "AdaGrad": {"lr": 1.5},
            "RMSprop": {"lr": 0.2},
            "Adam": {"lr": 0.3},
        },
    }


def f(x, y):
    return x ** 2 / 20.0 + y ** 2


def df(x, y):
    return x / 10.0, 2.0 * y


def optimize(name, hyper, steps, start=START):
    """The path of ``steps`` updates of optimizer ``name``: array (steps + 1, 2)."""
    opt = make_optimizer(name, **hyper)
    params = {"x": np.array([start[0]], dtype=np.float64),
              "y": np.array([start[1]], dtype=np.float64)}
    path = [(params["x"][0], params["y"][0])]
    for _ in range(steps):
        gx, gy = df(params["x"][0], params["y"][0])
        opt.update(params, {"x": np.array([gx]), "y": np.array([gy])})
        path.append((params["x"][0], params["y"][0]))
    return np.array(path)


def run(ctx, s):
    steps = int(s["steps"])
    start = tuple(s["start"])
    bar = ctx.progress(len(s["optimizers"]), unit="optimizer")
    paths, summary = {}, {}
    for name, hyper in s["optimizers"].items():
        path = optimize(name, hyper, steps, start)
        paths[name] = path
        dist = np.hypot(path[:, 0], path[:, 1])
        seg = np.hypot(np.diff(path[:, 0]), np.diff(path[:, 1]))
        signs = np.sign(path[:, 1])
        summary[name] = {
            "final_point": path[-1].tolist(),
            "final_distance": float(dist[-1]),
            "final_f": float(f(*path[-1])),
            "path_length": float(seg.sum()),
            "y_sign_changes": int(np.sum(signs[1:] * signs[:-1] < 0)),
            "steps_to_within_0.5": (int(np.argmax(dist < 0.5)) if np.any(dist < 0.5)
                                    else None),
        }
        bar.update(1)
    ctx.numbers.update(summary=summary, paths={k: v.tolist() for k, v in paths.items()})

    # Figure 1: one contour panel per optimizer, as in the book.
    fig = new_figure(figsize=(13, 7.6), layout="constrained")
    axes = fig.subplots(2, 3, sharex=True, sharey=True)
    xs = np.linspace(-10, 10, 401)
    ys = np.linspace(-5, 5, 201)
    X, Y = np.meshgrid(xs, ys)
    Z = f(X, Y)
    levels = [0.05, 0.25, 0.75, 1.5, 2.5, 4, 6, 9, 13, 18, 25]
    for ax, (name, path) in zip(axes.flat, paths.items()):
        ax.contour(X, Y, Z, levels=levels, colors="0.75", linewidths=0.8)
        ax.plot(path[:, 0], path[:, 1], "o-", color="C3", ms=3.5, lw=1.2, label="path")
        ax.plot(0, 0, "+", color="k", ms=12, mew=2, label="minimum")
        ax.plot(*start, "s", color="C0", ms=6, label="start")
        hyper = ", ".join(f"{k}={v}" for k, v in s["optimizers"][name].items())
        d = summary[name]
        style_axes(ax, f"{name} ({hyper})", grid=False)
        ax.text(0.02, 0.03, f"after {steps} steps: distance {d['final_distance']:.3f}, "
                            f"path length {d['path_length']:.1f}",
                transform=ax.transAxes, fontsize=8.5,
                bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
        ax.set_xlim(-10, 10)
        ax.set_ylim(-5, 5)
    for ax in axes[1]:
        ax.set_xlabel("x")
    for ax in axes[:, 0]:
        ax.set_ylabel("y")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"{steps} steps on f(x, y) = x²/20 + y² from (-7, 2)")
    ctx.add_figure(fig, "optimizer_paths.png",
                   "SGD zig-zags across the steep y direction while creeping along x; "
                   "Momentum and Nesterov swing in long arcs, and AdaGrad, RMSprop and Adam "
                   "damp the y oscillation from the first steps.")

    # Figure 2: distance to the minimum and path length per step.
    fig = new_figure(figsize=(11, 4.2), layout="constrained")
    ax_d, ax_l = fig.subplots(1, 2)
    for i, (name, path) in enumerate(paths.items()):
        dist = np.hypot(path[:, 0], path[:, 1])
        seg = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(path[:, 0]),
                                                         np.diff(path[:, 1])))])
        ax_d.semilogy(dist, marker=".", color=f"C{i}", label=name)
        ax_l.plot(seg, marker=".", color=f"C{i}", label=name)
    style_axes(ax_d, "Distance to the minimum (0, 0)", "step", "distance (log scale)")
    style_axes(ax_l, "Distance travelled", "step", "cumulative path length")
    ax_d.legend(fontsize=8.5)
    ax_l.legend(fontsize=8.5)
    fig.suptitle("How fast and how directly each optimizer approaches the minimum")
    others = [summary[k]["path_length"] for k in paths if k != "SGD"]
    ratio_lo = summary["SGD"]["path_length"] / max(others) if others else float("nan")
    ratio_hi = summary["SGD"]["path_length"] / min(others) if others else float("nan")
    fastest = min(paths, key=lambda k: summary[k]["final_distance"])
    ctx.add_figure(fig, "optimizer_distance.png",
                   f"{fastest} ends closest to the minimum; SGD travels {ratio_lo:.1f}-"
                   f"{ratio_hi:.1f} times as far as the others because every step "
                   f"overshoots in y, even where its distance to the minimum keeps up.")

    for name in paths:
        ctx.key_numbers[f"{name}: distance after {steps} steps"] = round(
            summary[name]["final_distance"], 4)
    for name in paths:
        ctx.key_numbers[f"{name}: path length"] = round(summary[name]["path_length"], 2)
    ctx.key_numbers["SGD path length / others"] = f"{ratio_lo:.1f}x - {ratio_hi:.1f}x"
