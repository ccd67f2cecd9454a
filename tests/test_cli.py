"""The command line: `python -m zerodl info`, `train` with checkpoints and `--resume`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO, run_python, subprocess_env

MNIST_DIR = REPO / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="data/mnist is missing")


def zerodl(*args, cwd=None, **env):
    return run_python(["-m", "zerodl", *args], cwd=cwd,
                      env=subprocess_env(ZERODL_DATA=str(MNIST_DIR), **env), timeout=300)


def test_info_runs():
    proc = zerodl("info")
    assert proc.returncode == 0, proc.stderr
    assert "backend:" in proc.stdout and "zerodl" in proc.stdout


def test_info_json():
    proc = zerodl("info", "--json", ZERODL_BACKEND="numpy")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["backend"] == "numpy"
    assert {"compiled_kernels", "reference_fallbacks", "blas"} <= set(data)


def test_no_command_prints_help():
    proc = zerodl()
    assert proc.returncode == 2
    assert "train" in proc.stdout and "info" in proc.stdout


def test_unknown_backend_option_is_rejected(tmp_path):
    proc = zerodl("train", "--backend", "bogus", "--out", "run", cwd=tmp_path)
    assert proc.returncode != 0
    assert "invalid choice: 'bogus'" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_backend_in_environment_is_an_error():
    proc = zerodl("info", ZERODL_BACKEND="bogus")
    assert proc.returncode != 0
    assert "unknown backend 'bogus'" in proc.stderr


def _history(folder):
    with open(folder / "history.json") as fh:
        return json.load(fh)


@needs_mnist
def test_train_checkpoint_and_resume(tmp_path):
    common = ["--train-size", "600", "--no-plot", "--quiet", "--model", "mlp",
              "--hidden", "50,20", "--eval-samples", "200"]
    proc = zerodl("train", *common, "--epochs", "1", "--out", "run", "--checkpoint",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    ckpt = run / "checkpoint.npz"
    assert ckpt.is_file()
    assert not (run / "learning_curve.png").exists()  # --no-plot
    h1 = _history(run)
    assert h1["epoch"] == 1 and h1["iteration"] == 6 == len(h1["train_loss"])
    assert h1["settings"]["train_size"] == 600 and h1["settings"]["epochs"] == 1
    assert len(h1["train_acc"]) == len(h1["test_acc"]) == 1
    assert 0.0 <= h1["final_test_acc"] <= 1.0
    assert all(np.isfinite(h1["train_loss"]))
    assert "epoch   1/1" not in proc.stdout  # --quiet: no per-epoch lines

    proc = zerodl("train", "--resume", str(ckpt), "--epochs", "2", "--quiet", "--no-plot",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "resuming" in proc.stdout and "at epoch 1/2" in proc.stdout
    h2 = _history(run)  # --resume writes beside its checkpoint
    assert h2["epoch"] == 2 and h2["iteration"] == 12 == len(h2["train_loss"])
    assert h2["train_loss"][:6] == h1["train_loss"]
    assert len(h2["test_acc"]) == 2 and h2["test_acc"][0] == h1["test_acc"][0]
    assert h2["settings"]["epochs"] == 2

    # resuming equals training two epochs straight
    proc = zerodl("train", *common, "--epochs", "2", "--out", "straight", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    straight = _history(tmp_path / "straight")
    assert straight["train_loss"] == h2["train_loss"]
    assert straight["test_acc"] == h2["test_acc"]
    assert straight["final_test_acc"] == h2["final_test_acc"]


@needs_mnist
def test_resume_of_a_missing_checkpoint_fails(tmp_path):
    proc = zerodl("train", "--resume", str(tmp_path / "nope.npz"), "--quiet", cwd=tmp_path)
    assert proc.returncode != 0
    assert "nope.npz" in proc.stderr
