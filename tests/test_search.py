"""Tests for zerodl.search: spaces, storages, the exact trial budget with parallel workers
(journal file and PostgreSQL), killed workers, resume, pruning, the split, the errors.

Trials are tiny (a few epochs of a 2x30 MLP on 200 images) so the file runs in about two
minutes on two shared cores.  The PostgreSQL tests need $ZERODL_TEST_PG_URL (set by
`source .ci/postgres.sh`); without it they are skipped.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from zerodl.search import (SearchError, SearchSpace, SearchSpaceError, StorageError)
from zerodl.search.space import Dimension
from zerodl.search.storage import parse_storage

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO / "data" / "mnist"
PG_URL = os.environ.get("ZERODL_TEST_PG_URL")

optuna = pytest.importorskip("optuna")
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason="needs the data/mnist checkout")
needs_pg = pytest.mark.skipif(not PG_URL, reason="set ZERODL_TEST_PG_URL (source .ci/postgres.sh)")

TINY = "lr=log:1e-2:2e-1 units=30 layers=2"
TINY_KW = dict(train_size=200, epochs=3, batch_size=50, plots=False, verbose=False,
               data_dir=str(MNIST))


def _env():
    import zerodl
    env = os.environ.copy()
    home = str(Path(zerodl.__file__).resolve().parent.parent)  # the zerodl under test
    env["PYTHONPATH"] = os.pathsep.join(p for p in (home, env.get("PYTHONPATH")) if p)
    env["PYTHONSAFEPATH"] = "1"  # not the working directory's zerodl (Python >= 3.11)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ZERODL_NUM_THREADS"):
        env[var] = "1"
    return env


def _journal_study(path, name="zerodl-search"):
    from zerodl.search._optuna import journal_storage
    return optuna.load_study(study_name=name, storage=journal_storage(str(path)))


def _states(study):
    out = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _run(**kw):
    from zerodl.search import run_search
    args = {**TINY_KW, **kw}
    return run_search(args.pop("space", TINY), args.pop("n_trials", None), **args)


# -- search spaces ------------------------------------------------------------------------

def test_space_forms_and_round_trip(tmp_path):
    s = SearchSpace.parse("lr=log:1e-6:1e-2 weight_decay=log:1e-8:1e-4 layers=int:2:6 "
                          "optimizer=choice:sgd,adam units=100 batchnorm=choice:true,false "
                          "init=choice:he,0.01 dropout=float:0:0.5 batch_size=int:50:200:50 "
                          "activation=relu")
    assert s["lr"].kind == "log" and s["lr"].low == 1e-6
    assert s["layers"].distribution().high == 6
    assert s["optimizer"].choices == ("sgd", "adam")
    assert s["batchnorm"].choices == (True, False)
    assert s["init"].choices == ("he", 0.01)
    assert s["batch_size"].step == 50
    assert s.fixed_values() == {"units": 100, "activation": "relu"}
    assert SearchSpace.parse(s.to_cli()) == s
    toml = tmp_path / "space.toml"
    toml.write_text(s.to_toml())
    assert SearchSpace.from_toml(toml) == s
    # TOML tables, lists and plain values; CLI entries override the file's
    toml.write_text('[space]\nlr = {type = "log", low = 1e-4, high = 0.1}\n'
                    'optimizer = ["sgd", "momentum"]\nunits = 64\nbatchnorm = true\n')
    t = SearchSpace.from_toml(toml)
    assert t["lr"].spec() == "log:0.0001:0.1" and t["units"].value == 64
    assert t["batchnorm"].value is True
    u = SearchSpace.parse(["lr=log:1e-3:1e-2"], t)
    assert u["lr"].low == 1e-3 and u["optimizer"].choices == ("sgd", "momentum")
    assert SearchSpace.book().to_cli() == "lr=log:1e-06:0.01 weight_decay=log:1e-08:0.0001"


@pytest.mark.parametrize("spec, words", [
    ("lr=log:0:1", "LOW > 0"),
    ("lr=log:1e-2:1e-6", "LOW must be below HIGH"),
    ("lr=int:1:3", "real number"),
    ("layers=log:1:3", "integer"),
    ("layers=int:0:3", ">= 1"),
    ("foo=int:1:2", "unknown parameter 'foo'"),
    ("optimizer=choice:sgd,bogus", "not one of"),
    ("optimizer=log:1:2", "choice"),
    ("dropout=float:0:1", "[0, 1)"),
    ("lr=banana:1:2", "unknown range type"),
    ("lr=log:1e-3", "LOW:HIGH"),
    ("batch_size=int:10:100:7", "multiple of the step"),
    ("lr", "NAME=SPEC"),
    ("units=100", "searches nothing"),
    ("lr=log:1e-3:1e-2 lr=log:1e-3:1e-1", "given twice"),
])
def test_invalid_spaces_are_refused(spec, words):
    with pytest.raises(SearchSpaceError) as info:
        SearchSpace.parse(spec)
    assert words in str(info.value)


def test_narrowed_ranges_and_next_space():
    lr = Dimension.parse("lr", "log:1e-6:1e-2")
    n = lr.narrowed([1e-3, 3e-3, 2e-3])
    assert (n.low, n.high) == (1e-3, 3e-3)
    w = n.widened(within=lr)
    assert w.low < 1e-3 and w.high > 3e-3 and w.kind == "log"
    assert lr.edges([9.9e-3, 5e-3]) == ["upper"]
    assert lr.edges([1e-6, 1e-2]) == []  # covering the whole range: nothing to say
    layers = Dimension.parse("layers", "int:2:6")
    assert layers.narrowed([2, 3]).widened().spec() == "int:1:4"
    opt = Dimension.parse("optimizer", "choice:sgd,adam,momentum")
    assert opt.narrowed(["adam", "sgd"]).choices == ("sgd", "adam")
    drop = Dimension.parse("dropout", "float:0:0.5")
    assert drop.narrowed([0.0]).widened(within=drop).spec() == "float:0:0.05"


# -- storage URLs and errors before any work -----------------------------------------------

def test_storage_urls(tmp_path):
    assert parse_storage(None, tmp_path / "s.journal").kind == "journal"
    assert parse_storage(str(tmp_path / "x.log"), None).target == str(tmp_path / "x.log")
    assert parse_storage("journal:" + str(tmp_path / "j"), None).kind == "journal"
    pg = parse_storage("postgres://u:secret@db.example:5432/zerodl", None)
    assert pg.kind == "postgresql" and "secret" not in pg.display and pg.has_heartbeat
    assert parse_storage("sqlite:///" + str(tmp_path / "a.db"), None).kind == "sqlite"
    for bad, words in [("mysql://u@h/db", "unsupported storage"),
                       ("redis://localhost", "unsupported storage"),
                       ("postgresql://u@h:notaport/db", "malformed"),
                       ("postgresql://u@h:5432/", "database name"),
                       ("sqlite:///:memory:", "in-memory"),
                       (str(tmp_path), "is a directory")]:
        with pytest.raises(StorageError, match=words):
            parse_storage(bad, None)


@pytest.fixture
def no_data(monkeypatch):
    """Any attempt to load MNIST fails the test: errors must come before any work."""
    import zerodl.datasets

    def refuse(*a, **k):
        raise AssertionError("MNIST was loaded before the settings were checked")
    monkeypatch.setattr(zerodl.datasets, "load_mnist", refuse)


@pytest.mark.parametrize("kw, err, words", [
    (dict(storage="mysql://u@localhost/db"), StorageError, "unsupported storage"),
    (dict(storage="postgresql://u@127.0.0.1:1/db"), StorageError, "cannot open storage"),
    (dict(space="lr=log:0:1"), SearchSpaceError, "LOW > 0"),
    (dict(space="lr=log:1e-3:1e-1 layers=int:3:2"), SearchSpaceError, "below HIGH"),
    (dict(n_trials=0), SearchError, "n_trials"),
    (dict(workers=0), SearchError, "workers"),
    (dict(val_fraction=1.5), SearchError, "val_fraction"),
    (dict(train_size=3, val_fraction=0.1), SearchError, "empty"),
    (dict(sampler="grid"), SearchError, "sampler"),
    (dict(pruner="hyperband"), SearchError, "pruner"),
    (dict(enqueue=[{"lr": 5.0}]), SearchError, "outside"),
    (dict(resume=True), SearchError, "nothing to resume"),
])
def test_bad_settings_fail_before_any_work(tmp_path, no_data, kw, err, words):
    kw.setdefault("out_dir", tmp_path / "out")
    kw.setdefault("n_trials", 2)
    with pytest.raises(err, match=words):
        _run(**kw)
    assert not list((tmp_path / "out").glob("*.json"))


def test_cli_reports_errors_without_traceback(tmp_path, capsys, no_data):
    from zerodl.cli import main
    assert main(["search", "lr=log:0:1", "--out", str(tmp_path)]) == 2
    assert "zerodl search: error: lr: a log range needs LOW > 0" in capsys.readouterr().err
    assert main(["search", "--storage", "mysql://x@y/z", "--out", str(tmp_path)]) == 2
    assert "unsupported storage" in capsys.readouterr().err


def test_without_optuna_says_how_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna", None)
    from zerodl.cli import build_parser, main
    assert "search" in build_parser().format_help()  # the command stays listed
    assert main(["search", "--out", str(tmp_path)]) == 2
    assert "pip install 'zerodl[search]'" in capsys.readouterr().err
    from zerodl.search import SearchDependencyError, run_search
    with pytest.raises(SearchDependencyError, match=r"zerodl\[search\]"):
        run_search(TINY, 2, out_dir=tmp_path)


# -- the split never touches the test set --------------------------------------------------

def test_validation_split_never_touches_the_test_set(tmp_path, monkeypatch):
    import zerodl.datasets
    import zerodl.search.objective as objective
    from zerodl.search.objective import split_indices

    n_train, n_test = 1000, 300
    rng = np.random.default_rng(5)

    def fake_load_mnist(normalize=True, flatten=True, one_hot_label=False, *, data_dir=None,
                        dtype=np.float32, **kw):
        x = rng.random((n_train, 784)).astype(dtype)
        x[:, 0] = (np.arange(n_train) + 1) / 1e4          # training rows: +id
        xt = rng.random((n_test, 784)).astype(dtype)
        xt[:, 0] = -(np.arange(n_test) + 1) / 1e4         # test rows: -id
        return ((x, rng.integers(0, 10, n_train).astype(np.uint8)),
                (xt, rng.integers(0, 10, n_test).astype(np.uint8)))

    events = []

    def ids(x):
        return np.rint(np.asarray(x)[:, 0] * 1e4).astype(np.int64)

    real_build = objective.build_network

    def spy_build(params, dtype, seed):
        net = real_build(params, dtype, seed)
        train_step, accuracy = net.train_step, net.accuracy

        def spy_step(x, t, opt):
            events.append(("train", ids(x)))
            return train_step(x, t, opt)

        def spy_acc(x, t, batch_size=100):
            events.append(("acc", ids(x)))
            return accuracy(x, t, batch_size)
        net.train_step, net.accuracy = spy_step, spy_acc
        return net

    monkeypatch.setattr(zerodl.datasets, "load_mnist", fake_load_mnist)
    monkeypatch.setattr(objective, "build_network", spy_build)
    res = _run(n_trials=3, train_size=250, val_fraction=0.2, seed=11, out_dir=tmp_path,
               pruner=None, threads=1, data_dir=None)
    assert res.complete and res.final is not None
    train_idx, val_idx = split_indices(n_train, 250, 0.2, 11)
    assert len(val_idx) == 50 and len(train_idx) == 200
    assert not set(train_idx) & set(val_idx)
    train_ids, val_ids = set(train_idx + 1), set(val_idx + 1)
    test_events = [i for i, (_, got) in enumerate(events) if (got < 0).any()]
    assert test_events == [len(events) - 1]  # once, at the very end (the final pick)
    kind, got = events[-1]
    assert kind == "acc" and sorted(-got) == list(range(1, n_test + 1))
    for kind, got in events[:-1]:
        if kind == "train":
            assert set(got) <= train_ids
        else:
            assert set(got) in (train_ids, val_ids)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["split"]["seed"] == 11 and doc["final"]["n_test"] == n_test


# -- pruning --------------------------------------------------------------------------------

@needs_mnist
def test_pruning_stops_a_hopeless_trial(tmp_path):
    good = [{"lr": 0.1}] * 5
    res = _run(space="lr=log:1e-9:0.2 units=30 layers=2 batch_size=20",
               n_trials=6, epochs=6, out_dir=tmp_path, enqueue=good + [{"lr": 1e-9}],
               pruner="median", threads=1)
    study = _journal_study(tmp_path / "study.journal")
    trials = study.get_trials(deepcopy=False)
    hopeless = [t for t in trials if t.params["lr"] == 1e-9]
    assert len(hopeless) == 1
    assert hopeless[0].state.name == "PRUNED"
    assert len(hopeless[0].intermediate_values) < 6
    assert all(t.state.name == "COMPLETE" for t in trials if t.params["lr"] == 0.1)
    assert res.counts["PRUNED"] == 1 and res.counts["COMPLETE"] == 5


# -- parallel workers: exact budget --------------------------------------------------------

def _assert_exact(study, n):
    states = _states(study)
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == n, states
    assert len(study.trials) == n, states  # nothing extra: no FAIL, WAITING or RUNNING
    assert sorted(t.number for t in study.trials) == list(range(n))


@needs_mnist
def test_journal_two_workers_exact_budget(tmp_path):
    res = _run(n_trials=10, workers=2, out_dir=tmp_path)
    assert res.complete and 0.0 <= res.final["test_acc"] <= 1.0
    study = _journal_study(tmp_path / "study.journal")
    _assert_exact(study, 10)
    owners = {t.user_attrs["zerodl_worker"]["pid"] for t in study.trials}
    assert os.getpid() not in owners  # the trials ran in the worker processes
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    for t in study.trials:
        assert t.user_attrs["zerodl_worker"]["threads"] == max(1, cores // 2)
    # Random sampling depends on (seed, trial number) only: one in-process worker draws
    # the same values for the same trial numbers.
    ref = _run(n_trials=3, epochs=1, out_dir=tmp_path / "ref", threads=1, pruner=None)
    assert ref.complete
    ref_study = _journal_study(tmp_path / "ref" / "study.journal")
    for t in ref_study.trials:
        assert study.trials[t.number].params == t.params


@needs_mnist
def test_journal_three_workers_race_for_the_last_slots(tmp_path):
    # Trials of a few milliseconds: the workers contend for the study all the time.
    res = _run(space="lr=log:1e-2:2e-1 units=10 layers=1", n_trials=30, workers=3,
               epochs=1, train_size=20, out_dir=tmp_path, pruner=None)
    assert res.complete
    _assert_exact(_journal_study(tmp_path / "study.journal"), 30)


@needs_pg
@needs_mnist
def test_postgresql_three_workers_exact_budget(tmp_path):
    name = f"t-{uuid.uuid4().hex[:10]}"
    res = _run(n_trials=9, workers=3, storage=PG_URL, study_name=name, out_dir=tmp_path)
    assert res.complete and res.final is not None
    from zerodl.search.storage import open_storage
    handle = open_storage(parse_storage(PG_URL, None))
    try:
        study = optuna.load_study(study_name=name, storage=handle.storage)
        _assert_exact(study, 9)
    finally:
        handle.close()


# -- resume ---------------------------------------------------------------------------------

@needs_mnist
def test_resume_extends_and_rerun_joins(tmp_path):
    first = _run(n_trials=3, out_dir=tmp_path, threads=1)
    assert first.complete and first.counts["COMPLETE"] + first.counts["PRUNED"] == 3
    study = _journal_study(tmp_path / "study.journal")
    before = {t.number: t.value for t in study.trials}
    # The same command again joins the finished study: no new trial, same final pick.
    again = _run(n_trials=3, out_dir=tmp_path, threads=1)
    assert len(_journal_study(tmp_path / "study.journal").trials) == 3
    assert again.final == first.final
    # Other settings without --resume: refused, naming the difference.
    with pytest.raises(SearchError, match="epochs: study has 3, asked for 4"):
        _run(n_trials=3, epochs=4, out_dir=tmp_path)
    with pytest.raises(SearchError, match="pass --resume"):
        _run(n_trials=5, out_dir=tmp_path)
    # --resume with nothing but a larger budget: stored settings, 2 more trials.
    from zerodl.search import run_search
    res = run_search(None, 5, out_dir=tmp_path, resume=True, threads=1, plots=False,
                     verbose=False, data_dir=str(MNIST))
    assert res.complete and res.settings["epochs"] == 3
    study = _journal_study(tmp_path / "study.journal")
    _assert_exact(study, 5)
    assert {t.number: t.value for t in study.trials if t.number < 3} == before


# -- killed workers -------------------------------------------------------------------------

def _start_cli_worker(out, extra):
    cmd = [sys.executable, "-m", "zerodl", "search", "lr=log:1e-2:1e-1", "units=30",
           "layers=2", "--n-trials", "1", "--epochs", "1500", "--train-size", "200",
           "--batch-size", "50", "--no-prune", "--no-plot", "--quiet", "--threads", "1",
           "--out", str(out), "--data-dir", str(MNIST)] + extra
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _kill_mid_trial(proc, load_study, timeout=90):
    """SIGKILL ``proc`` while it trains its trial; returns that trial."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            study = load_study()
        except KeyError:  # not created yet
            study = None
        if study is not None:
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                owner = t.user_attrs.get("zerodl_worker", {})
                if owner.get("pid") == proc.pid and t.params:
                    proc.send_signal(signal.SIGKILL)  # it trains for a second or more
                    proc.wait()
                    after = load_study().trials[t.number]
                    assert after.state.name == "RUNNING", "the trial ended before the kill"
                    return t
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the worker never got into a trial")


def _check_after_kill(study, killed):
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state.name == "FAIL"
    retries = [t for t in trials if t.user_attrs.get("zerodl_retry_of") == killed.number]
    assert len(retries) == 1 and retries[0].state.name in ("COMPLETE", "PRUNED")
    assert retries[0].params == killed.params  # the lost trial ran again, once
    states = _states(study)
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 1
    assert states == {"FAIL": 1, retries[0].state.name: 1}


@needs_mnist
def test_killed_worker_on_journal_is_failed_on_resume(tmp_path):
    proc = _start_cli_worker(tmp_path, [])
    killed = _kill_mid_trial(proc, lambda: _journal_study(tmp_path / "study.journal"))
    from zerodl.search import run_search
    res = run_search(None, None, out_dir=tmp_path, resume=True, threads=1, plots=False,
                     verbose=False, data_dir=str(MNIST), epochs=None)
    assert res.complete
    study = _journal_study(tmp_path / "study.journal")
    _check_after_kill(study, killed)
    reason = study.trials[killed.number].user_attrs["zerodl_fail_reason"]
    assert f"pid {proc.pid}" in reason and "no longer running" in reason


@needs_pg
@needs_mnist
def test_killed_worker_on_postgresql_is_failed_by_heartbeat(tmp_path):
    from zerodl.search.storage import open_storage
    name = f"k-{uuid.uuid4().hex[:10]}"
    proc = _start_cli_worker(tmp_path, ["--storage", PG_URL, "--study-name", name,
                                        "--heartbeat-interval", "1", "--grace-period", "3"])
    handle = open_storage(parse_storage(PG_URL, None))
    try:
        killed = _kill_mid_trial(
            proc, lambda: optuna.load_study(study_name=name, storage=handle.storage))
        # Join (no --resume): the waiting worker sees the heartbeat stop, fails the
        # trial and runs it again.
        from zerodl.search import run_search
        t0 = time.monotonic()
        res = run_search("lr=log:1e-2:1e-1 units=30 layers=2", 1, storage=PG_URL,
                         study_name=name, epochs=1500, train_size=200, batch_size=50,
                         pruner=None, threads=1, plots=False, verbose=False,
                         out_dir=tmp_path / "join", data_dir=str(MNIST),
                         heartbeat_interval=1, grace_period=3)
        assert res.complete and time.monotonic() - t0 < 120
        _check_after_kill(optuna.load_study(study_name=name, storage=handle.storage), killed)
    finally:
        handle.close()


# -- the command line end to end ------------------------------------------------------------

@needs_mnist
def test_cli_writes_table_plots_and_next_space(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from zerodl.cli import main
    out = tmp_path / "run"
    code = main(["search", "lr=log:1e-2:2e-1", "weight_decay=log:1e-8:1e-4", "units=30",
                 "layers=2", "--n-trials", "6", "--epochs", "3", "--train-size", "200",
                 "--batch-size", "50", "--threads", "1", "--out", str(out),
                 "--data-dir", str(MNIST), "--seed", "3"])
    text = capsys.readouterr().out
    assert code == 0
    assert "Best " in text and "Suggested next space" in text and "test acc" in text
    for f in ("results.json", "results.md", "next_space.toml", "best_curves.png",
              "lr_vs_weight_decay.png", "study.journal"):
        assert (out / f).is_file(), f
    doc = json.loads((out / "results.json").read_text())
    assert doc["settings"]["seed"] == 3 and doc["complete"]
    assert doc["counts"]["COMPLETE"] + doc["counts"]["PRUNED"] == 6
    assert doc["final"]["trial"] == doc["best"]["trial"]
    nxt = SearchSpace.from_toml(out / "next_space.toml")
    assert nxt.to_cli() == doc["next_space"]["cli"] and nxt["units"].value == 30
