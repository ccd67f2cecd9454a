"""The experiments of chapters 6 and 7 (zerodl.experiments) in quick mode.

Every experiment runs once (module fixture, seed 0) and the book's qualitative finding is
asserted where it is robust.  The thresholds were checked over seeds 0-4 of the quick mode
during development, with margin; they are not tuned to one seed.
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from zerodl.experiments import EXPERIMENTS, get_experiment, run_all, run_experiment  # noqa: E402
from zerodl.experiments import _common  # noqa: E402
from zerodl.experiments import hyperparameter_search as hps  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def one_thread():
    """One BLAS thread and one kernel thread: these small matrices gain nothing from two,
    and on a busy 2-core machine spinning worker threads slow everything down (measured:
    3-5x more CPU time).  The findings do not depend on the thread count."""
    import zerodl
    from zerodl import _config

    before = _config._num_threads  # None: the default (all cores)
    zerodl.set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            yield
        else:
            with threadpool_limits(limits=1):
                yield
    finally:
        _config._num_threads = before


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("experiments")
    results = run_all(out, quick=True, seed=0, progress=False)
    return out, {r["name"]: r for r in results}


def numbers(quick_run, name):
    return quick_run[1][name]["numbers"]


# ---------------------------------------------------------------- registry and outputs

def test_registry_lists_ten_experiments_in_the_books_order():
    assert list(EXPERIMENTS) == [
        "optimizer-paths", "optimizer-mnist", "init-histograms", "init-mnist",
        "activation-init-grid", "batchnorm", "overfit", "hyperparameter-search", "convnet",
        "ablation"]
    for name in EXPERIMENTS:
        module = get_experiment(name)
        assert module.NAME == name
        assert module.TITLE and module.DESCRIPTION
        assert callable(module.run)
        quick, full = module.settings(True), module.settings(False)
        assert quick.keys() == full.keys()
    assert get_experiment("init_mnist") is get_experiment("init-mnist")
    with pytest.raises(KeyError, match="unknown experiment"):
        get_experiment("nope")


def test_book_settings_are_the_defaults():
    assert get_experiment("batchnorm").settings(False)["train_size"] == 1000
    assert len(get_experiment("batchnorm").settings(False)["scales"]) == 16
    s = get_experiment("hyperparameter-search").settings(False)
    assert (s["train_size"], s["validation_fraction"], s["trials"], s["epochs"]) == \
        (500, 0.2, 100, 50)
    assert (s["lr_log10"], s["weight_decay_log10"]) == ([-6.0, -2.0], [-8.0, -4.0])
    s = get_experiment("overfit").settings(False)
    assert (s["train_size"], len(s["hidden"])) == (300, 6)
    s = get_experiment("convnet").settings(False)
    assert (s["train_size"], s["epochs"], s["lr"]) == (60000, 20, 0.001)
    s = get_experiment("optimizer-mnist").settings(False)
    assert (s["iterations"], s["batch_size"]) == (2000, 128)


def _png_size(path):
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_every_experiment_writes_figures_numbers_and_result(quick_run):
    out, results = quick_run
    assert list(results) == list(EXPERIMENTS)
    for name, r in results.items():
        assert r["figures"], name
        assert r["quick"] is True and r["seed"] == 0
        assert r["seconds"] > 0
        for fig in r["figures"]:
            path = os.path.join(out, fig["file"])
            width, height = _png_size(path)
            assert 300 < width < 3000 and 200 < height < 3000, (path, width, height)
            assert fig["caption"].strip().endswith("."), fig
            assert len(fig["caption"]) > 30
        with open(os.path.join(out, r["numbers_file"]), encoding="utf-8") as fh:
            saved = json.load(fh)
        assert saved["experiment"] == name
        assert saved["settings"] == json.loads(json.dumps(r["settings"]))
        with open(os.path.join(out, name, "result.json"), encoding="utf-8") as fh:
            assert json.load(fh)["figures"] == r["figures"]
    leftovers = [f for _, _, files in os.walk(out) for f in files if f.startswith(".tmp-")]
    assert not leftovers


def test_figures_are_valid_images(quick_run):
    from matplotlib.image import imread

    out, results = quick_run
    r = results["optimizer-paths"]
    img = imread(os.path.join(out, r["figures"][0]["file"]))
    assert img.ndim == 3 and img.shape[0] > 200
    assert img.std() > 0.01  # not blank


def test_report_lists_every_figure_caption_and_time(quick_run):
    out, results = quick_run
    md = (out / "report.md").read_text(encoding="utf-8")
    page = (out / "index.html").read_text(encoding="utf-8")
    import html
    for name, r in results.items():
        assert f"`{name}`" in md
        assert f'id="{name}"' in page
        for fig in r["figures"]:
            path = fig["file"].replace(os.sep, "/")
            assert f"]({path})" in md
            assert f'src="{html.escape(path)}"' in page
            assert fig["caption"] in md
            assert html.escape(fig["caption"]) in page
        for key in r["key_numbers"]:
            assert key in md
    assert "Closing note" in md and "Closing note" in page
    assert "wall time" in md and "kernel and BLAS threads" in md
    _assert_balanced_html(page, n_images=sum(len(r["figures"]) for r in results.values()))


def test_report_can_be_rewritten_and_compared(quick_run, tmp_path):
    from zerodl.experiments import write_report

    out, results = quick_run
    md_path, _ = write_report(out)                 # from the result.json files on disk
    md = open(md_path, encoding="utf-8").read()
    assert "wall time of this run" in md           # kept in run.json by the `all` run
    other = tmp_path / "other"
    run_experiment("optimizer-paths", other, quick=True, progress=False)
    md_path, page_path = write_report(out, compare_dir=other)
    md = open(md_path, encoding="utf-8").read()
    assert "(measured)" in md and "ratio" in md
    _assert_balanced_html(open(page_path, encoding="utf-8").read(),
                          n_images=sum(len(r["figures"]) for r in results.values()))


def _assert_balanced_html(page, n_images):
    from html.parser import HTMLParser

    class Checker(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.images = [], 0

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.images += 1
            elif tag not in ("meta", "br", "link"):
                self.stack.append(tag)

        def handle_endtag(self, tag):
            assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])
            self.stack.pop()

    checker = Checker()
    checker.feed(page)
    assert checker.stack == [] and checker.images == n_images


# ---------------------------------------------------------------- the book's findings

def test_optimizer_paths_sgd_zigzags(quick_run):
    s = numbers(quick_run, "optimizer-paths")["summary"]
    for name in ("Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"):
        # SGD's path is at least twice as long as any other: the zig-zag
        assert s["SGD"]["path_length"] > 2 * s[name]["path_length"], name
        assert s[name]["final_distance"] < 1.0
    # the adaptive methods reach the minimum faster than SGD
    for name in ("AdaGrad", "RMSprop"):
        assert s[name]["final_distance"] < s["SGD"]["final_distance"]
    assert s["SGD"]["y_sign_changes"] >= 25


def test_optimizer_paths_start_and_steps(quick_run):
    paths = numbers(quick_run, "optimizer-paths")["paths"]
    for path in paths.values():
        assert len(path) == 31
        assert path[0] == [-7.0, 2.0]


def test_optimizer_mnist_sgd_learns_slowest(quick_run):
    s = numbers(quick_run, "optimizer-mnist")["summary"]
    for name in ("Momentum", "Nesterov", "AdaGrad", "Adam"):
        assert s[name]["final_loss"] < 0.6 * s["SGD"]["final_loss"], name
        assert s[name]["test_acc"] > s["SGD"]["test_acc"], name


def test_init_histograms_match_the_book(quick_run):
    st = numbers(quick_run, "init-histograms")["layer_stats"]
    last = -1
    # sigmoid, std 1: most activations at 0 or 1 (gradient vanishing)
    assert st["sigmoid"]["std=1"][last]["saturated"] > 0.6
    # sigmoid, std 0.01: all near 0.5 (no expressiveness)
    assert st["sigmoid"]["std=0.01"][last]["std"] < 0.05
    assert st["sigmoid"]["std=0.01"][last]["saturated"] == 0.0
    # sigmoid, Xavier: spread, not saturated
    assert 0.05 < st["sigmoid"]["Xavier"][last]["std"] < 0.3
    # ReLU: He keeps the spread, std 0.01 collapses, Xavier shrinks gently
    he = [layer["std"] for layer in st["relu"]["He"]]
    small = [layer["std"] for layer in st["relu"]["std=0.01"]]
    xavier = [layer["std"] for layer in st["relu"]["Xavier"]]
    assert 0.5 < he[last] / he[0] < 2.0
    assert small[last] / small[0] < 1e-3
    assert xavier[last] < xavier[0] and xavier[last] / xavier[0] > 0.05
    # tanh, std 0.01 collapses towards 0
    assert st["tanh"]["std=0.01"][last]["std"] < 1e-3


@pytest.mark.parametrize("seed", [1, 2])
def test_init_histograms_other_seeds(tmp_path, seed, one_thread):
    r = run_experiment("init-histograms", tmp_path, quick=True, seed=seed, progress=False,
                       overrides={"samples": 300, "activations": ["relu"]})
    st = r["numbers"]["layer_stats"]["relu"]
    assert 0.5 < st["He"][-1]["std"] / st["He"][0]["std"] < 2.0
    assert st["std=0.01"][-1]["std"] / st["std=0.01"][0]["std"] < 1e-3


def test_init_mnist_he_learns_and_std001_does_not(quick_run):
    s = numbers(quick_run, "init-mnist")["summary"]
    assert s["std=0.01"]["final_loss"] > 2.2          # stuck at ln 10
    assert s["He"]["final_loss"] < s["std=0.01"]["final_loss"] - 0.8
    assert s["He"]["final_loss"] < s["Xavier"]["final_loss"]
    assert s["He"]["test_acc"] > 0.6


def test_activation_init_grid_batchnorm_rescues_bad_inits(quick_run):
    final = numbers(quick_run, "activation-init-grid")["final"]
    combos = [(a, i) for a in ("sigmoid", "relu") for i in ("std=0.01", "Xavier", "He")]
    ahead = sum(final[f"batchnorm/{a}/{i}"]["test_acc"] > final[f"plain/{a}/{i}"]["test_acc"]
                for a, i in combos)
    assert ahead >= 4
    # the small init does not learn without BN, and does with it
    assert final["plain/relu/std=0.01"]["test_acc"] < 0.2
    assert final["batchnorm/relu/std=0.01"]["test_acc"] > 0.4


def test_batchnorm_ahead_on_most_scales(quick_run):
    n = numbers(quick_run, "batchnorm")
    scales = len(n["per_scale"])
    assert scales == 16
    assert n["bn_ahead_mean"] >= 11
    assert n["plain_failed"] >= 10            # without BN most scales fail...
    assert n["batchnorm_failed"] <= 5         # ...with BN most learn
    assert n["batchnorm_reach_50"] > n["plain_reach_50"]


def test_overfit_regularisation_narrows_the_gap(quick_run):
    s = numbers(quick_run, "overfit")["summary"]
    none = s["none"]
    assert none["train_acc"] - none["test_acc"] > 0.15     # overfitting
    for name in ("L2 0.1", "Dropout 0.2", "Dropout 0.15"):
        assert s[name]["gap"] < none["gap"] - 0.03, name


def test_hyperparameter_search_uses_only_training_data(quick_run):
    out, results = quick_run
    n = numbers(quick_run, "hyperparameter-search")
    data = n["data"]
    train, val = set(data["train_indices"]), set(data["validation_indices"])
    assert not train & val
    assert train | val == set(range(500))
    assert (len(train), len(val)) == (400, 100)
    assert data["test_set_used"] is False
    s = results["hyperparameter-search"]["settings"]
    for trial in n["trials"]:
        assert 10 ** s["lr_log10"][0] <= trial["params"]["lr"] <= 10 ** s["lr_log10"][1]
        assert (10 ** s["weight_decay_log10"][0] <= trial["params"]["weight_decay"]
                <= 10 ** s["weight_decay_log10"][1])
        assert len(trial["val_acc_curve"]) == s["epochs"]
    accs = sorted(t["val_acc"] for t in n["trials"])
    assert n["ranking"][0] == max(n["trials"], key=lambda t: t["val_acc"])["number"]
    r = n["narrowed_ranges"]["lr"]
    assert r["min"] <= r["max"]
    assert accs[-1] >= accs[0]


class _Poison:
    """Stands in for the test set: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the test set was used ({name})")

    def __len__(self):
        raise AssertionError("the test set was used (len)")

    def __getitem__(self, item):
        raise AssertionError("the test set was used (indexing)")

    def __array__(self, *args, **kwargs):
        raise AssertionError("the test set was used (as an array)")


def test_hyperparameter_search_never_touches_the_test_set(tmp_path, monkeypatch, one_thread):
    real = _common.load_mnist_cached

    def poisoned(data_dir=None, flatten=True):
        (x, t), _ = real(data_dir, flatten)
        return (x, t), (_Poison(), _Poison())

    monkeypatch.setattr(_common, "load_mnist_cached", poisoned)
    r = run_experiment("hyperparameter-search", tmp_path, quick=True, seed=3, progress=False,
                       overrides={"trials": 3, "epochs": 2, "best_grid": 3})
    assert len(r["numbers"]["trials"]) == 3


def test_hyperparameter_sampler_is_seeded_and_log_uniform():
    def draw(seed, n=2000):
        sample = hps.log_uniform_sampler(np.random.default_rng(seed), (-6, -2), (-8, -4))
        return [sample(i) for i in range(n)]

    a, b, c = draw(5), draw(5), draw(6)
    assert a == b and a != c
    lr = np.log10([p["lr"] for p in a])
    wd = np.log10([p["weight_decay"] for p in a])
    assert lr.min() >= -6 and lr.max() <= -2 and abs(lr.mean() + 4) < 0.1
    assert wd.min() >= -8 and wd.max() <= -4 and abs(wd.mean() + 6) < 0.1


def test_random_search_loop_is_swappable():
    calls = []

    def objective(params, number):
        calls.append(number)
        return {"val_acc": -abs(np.log10(params["lr"]) + 3)}

    sample = hps.log_uniform_sampler(np.random.default_rng(0), (-6, -2), (-8, -4))
    trials = hps.random_search(objective, 20, sample)
    assert calls == list(range(20))
    assert [t["number"] for t in trials] == calls
    ranges = hps.narrowed_ranges(trials, 3)
    assert -4 < ranges["lr"]["log10_min"] <= ranges["lr"]["log10_max"] < -2


def test_split_training_data_is_disjoint():
    x = np.arange(1000, dtype=np.float32).reshape(1000, 1)
    t = np.arange(1000)
    x_tr, t_tr, x_val, t_val, tr, va = hps.split_training_data(
        x, t, 500, 0.2, np.random.default_rng(0))
    assert len(x_tr) == 400 and len(x_val) == 100
    assert not set(t_tr) & set(t_val)
    assert set(t_tr) | set(t_val) == set(range(500))
    with pytest.raises(ValueError):
        hps.split_training_data(x, t, 2000, 0.2, np.random.default_rng(0))


def test_convnet_learns_and_its_filters_change(quick_run):
    n = numbers(quick_run, "convnet")
    assert n["final_test_acc"] > 0.4           # chance is 0.1
    assert n["curves"]["test_acc"][-1] > n["curves"]["test_acc"][0] + 0.2
    before, after = np.array(n["filters_before"]), np.array(n["filters_after"])
    assert before.shape == after.shape == (30, 5, 5)
    assert not np.allclose(before, after)
    assert n["filter_roughness_after"] < n["filter_roughness_before"]


def test_ablation_table(quick_run):
    out, results = quick_run
    n = numbers(quick_run, "ablation")
    rows = {r["configuration"]: r for r in n["rows"]}
    assert len(rows) == 7
    base = rows["AdaGrad base (std 0.01)"]["test_acc"]
    assert rows["+He"]["test_acc"] > base
    assert rows["+He +BatchNorm"]["test_acc"] > base
    assert n["tuning"]["best_lr"] in n["tuning"]["lr_grid"]
    table = (out / "ablation" / "ablation_table.md").read_text(encoding="utf-8")
    assert table.count("\n") == 9
    for name in rows:
        assert name in table
    assert any(f["file"].endswith("ablation_table.png") for f in results["ablation"]["figures"])


# ---------------------------------------------------------------- command line

def test_cli_runs_one_experiment_and_writes_the_report(tmp_path, capsys):
    from zerodl.cli import main

    out = tmp_path / "cli"
    assert main(["experiment", "optimizer-paths", "--quick", "--out", str(out),
                 "--no-progress", "--seed", "4"]) == 0
    assert (out / "optimizer-paths" / "optimizer_paths.png").exists()
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "optimizer-paths/optimizer_paths.png" in md
    assert (out / "index.html").exists()
    assert "report" in capsys.readouterr().out


def test_cli_list_and_unknown_name(capsys):
    from zerodl.cli import main

    assert main(["experiment", "--list", "all"]) == 0
    listed = capsys.readouterr().out
    for name in EXPERIMENTS:
        assert name in listed
    assert main(["experiment", "no-such-experiment"]) == 2
    assert "unknown experiment" in capsys.readouterr().out


def test_overrides_are_checked(tmp_path):
    with pytest.raises(KeyError, match="unknown settings"):
        run_experiment("optimizer-paths", tmp_path, quick=True, overrides={"nope": 1})


def test_json_writer_is_strict_and_atomic(tmp_path):
    path = tmp_path / "n.json"
    _common.write_json_atomic(path, {"a": np.float32(1.5), "b": np.arange(3),
                                     "c": float("nan"), "d": (np.int64(2),)})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": None, "d": [2]}
    assert [p.name for p in tmp_path.iterdir()] == ["n.json"]
