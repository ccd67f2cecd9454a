"""Figures as ``matplotlib.figure.Figure`` objects (never pyplot, never a global backend).

matplotlib is an optional extra (``pip install zerodl[plot]``); these functions import it
when called and say how to install it when it is missing.
"""
from __future__ import annotations

import os


def new_figure(**kwargs):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'zerodl[plot]'") from None
    return Figure(**kwargs)


def save_figure(fig, path, dpi=110) -> str:
    """Write a figure to PNG atomically."""
    from ._io import atomic_file

    with atomic_file(path, "wb", suffix=".png") as fh:
        fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight")
    return os.fspath(path)


def learning_curves(history: dict, title: str = ""):
    """Loss per iteration (smoothed) and accuracy per epoch, side by side."""
    from .util import smooth_curve

    fig = new_figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    loss = history.get("train_loss", [])
    if loss:
        ax_loss.plot(loss, color="0.8", lw=0.6, label="per iteration")
        ax_loss.plot(smooth_curve(loss), color="C0", label="smoothed")
        ax_loss.set_yscale("log")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title("Loss")
    ax_loss.legend()
    epochs = range(1, len(history.get("train_acc", [])) + 1)
    for key, label in (("train_acc", "train"), ("val_acc", "validation"), ("test_acc", "test")):
        values = history.get(key) or []
        if values:
            ax_acc.plot(list(epochs)[:len(values)], values, marker="o", ms=3, label=label)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title("Accuracy")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend()
    if title:
        fig.suptitle(title)
    return fig
