"""The search itself: study setup, the worker loop, parallel workers, the final pick.

Trial budget.  Every worker takes the study's lock, fails trials whose worker died, counts
the trials that are finished (COMPLETE, PRUNED) or running, and starts a new one only if
that count is below the budget - all under the lock, so N workers never start more than
the budget between them.  Failed trials do not count: a trial lost with its worker is run
again (with the same hyperparameters, once) so the study still ends with exactly
``n_trials`` finished trials.  Workers that find no free slot wait while other trials run
(any of them might still fail) and stop when the budget is reached.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .errors import SearchError
from .space import DEFAULTS, SearchSpace, resolve_params

OWNER = "zerodl_worker"
RUN = "zerodl_run"
RETRY_OF = "zerodl_retry_of"
FAIL_REASON = "zerodl_fail_reason"
SETTINGS = "zerodl_settings"
BUDGET = "zerodl_n_trials"
FINAL = "zerodl_final"
FINAL_HISTORY = "zerodl_final_history"

SAMPLERS = ("random", "tpe")
PRUNERS = ("median", "halving")
SETTING_DEFAULTS = {"train_size": 500, "val_fraction": 0.2, "epochs": 50, "batch_size": 100,
                    "dtype": "float32", "seed": 0, "sampler": "random", "pruner": "median"}
DEFAULT_N_TRIALS = 100


class _Default(str):
    """The default pruner ("median"), told apart from an explicit choice."""


DEFAULT_PRUNER = _Default("median")


def _log(msg: str, verbose: bool = True):
    if verbose:
        print(msg, flush=True)


# -- settings -----------------------------------------------------------------------------

def _check_int(name, value, low=1, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low \
            or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise SearchError(f"{name} must be an integer {rng}, got {value!r}")
    return int(value)


def _coerce_space(space, base=None) -> SearchSpace:
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, dict):
        return SearchSpace.from_dict(space)
    if isinstance(space, (str, list, tuple)):
        items = space.split() if isinstance(space, str) else list(space)
        if len(items) == 1 and isinstance(items[0], str) and "=" not in items[0] \
                and items[0].endswith(".toml"):
            return SearchSpace.from_toml(items[0])
        return SearchSpace.parse(items, base)
    if isinstance(space, os.PathLike):
        return SearchSpace.from_toml(space)
    raise SearchError(f"space must be a SearchSpace, a dict, 'name=spec' strings or a TOML "
                      f"path, got {type(space).__name__}")


def _validate_settings(s: dict) -> dict:
    s = dict(s)
    s["train_size"] = _check_int("train_size", s["train_size"], 2, 60000)
    vf = s["val_fraction"]
    if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 < vf < 1:
        raise SearchError(f"val_fraction must be in (0, 1), got {vf!r}")
    s["val_fraction"] = float(vf)
    n_val = int(round(s["train_size"] * s["val_fraction"]))
    if not 1 <= n_val < s["train_size"]:
        raise SearchError(f"val_fraction {vf} of train_size {s['train_size']} leaves an empty "
                          "training or validation part")
    s["epochs"] = _check_int("epochs", s["epochs"])
    s["batch_size"] = _check_int("batch_size", s["batch_size"])
    s["seed"] = _check_int("seed", s["seed"], 0)
    if str(s["dtype"]) not in ("float32", "float64"):
        raise SearchError(f"dtype must be float32 or float64, got {s['dtype']!r}")
    s["dtype"] = str(s["dtype"])
    if s["sampler"] not in SAMPLERS:
        raise SearchError(f"sampler must be one of {', '.join(SAMPLERS)}, got {s['sampler']!r}")
    if s["pruner"] in (None, False, "none", "off"):
        s["pruner"] = "none"
    elif s["pruner"] not in PRUNERS:
        raise SearchError(f"pruner must be median, halving or None, got {s['pruner']!r}")
    return s


def _compare(stored: dict, wanted: dict) -> list[str]:
    diffs = []
    for key, value in wanted.items():
        if key == "split_sha256":
            continue
        if stored.get(key) != value:
            if key == "space":
                a = SearchSpace.from_dict(stored["space"]).to_cli()
                b = SearchSpace.from_dict(value).to_cli()
                diffs.append(f"space: study has `{a}`, asked for `{b}`")
            else:
                diffs.append(f"{key}: study has {stored.get(key)!r}, asked for {value!r}")
    return diffs


# -- samplers and pruners -----------------------------------------------------------------

def _make_sampler(optuna, settings: dict, worker_key: str):
    if settings["sampler"] == "tpe":
        return optuna.samplers.TPESampler(seed=_seed32(settings["seed"], "tpe", worker_key),
                                          constant_liar=True)
    return _per_trial_random_sampler(optuna, settings["seed"])


def _seed32(*parts) -> int:
    from .objective import derive_seed
    return derive_seed(*parts) % (2 ** 32)


def _per_trial_random_sampler(optuna, seed: int):
    """Random sampling (the book's method) where trial k's values depend only on
    (seed, k, name): the same study seed gives the same trials whatever the number of
    workers and the order they finish in."""

    class PerTrialRandomSampler(optuna.samplers.BaseSampler):
        def __init__(self, seed):
            self._seed = int(seed)

        def infer_relative_search_space(self, study, trial):
            return {}

        def sample_relative(self, study, trial, search_space):
            return {}

        def sample_independent(self, study, trial, name, dist):
            from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                              IntDistribution)
            from .objective import derive_seed
            rng = np.random.default_rng(derive_seed("sample", self._seed, trial.number, name))
            if isinstance(dist, CategoricalDistribution):
                return dist.choices[int(rng.integers(len(dist.choices)))]
            if isinstance(dist, FloatDistribution):
                lo, hi = dist.low, dist.high
                if dist.log:
                    return float(min(max(math.exp(rng.uniform(math.log(lo), math.log(hi))),
                                         lo), hi))
                if dist.step:
                    n = int(round((hi - lo) / dist.step))
                    return float(lo + dist.step * int(rng.integers(n + 1)))
                return float(rng.uniform(lo, hi))
            if isinstance(dist, IntDistribution):
                lo, hi = dist.low, dist.high
                if dist.log:
                    v = math.exp(rng.uniform(math.log(lo - 0.5), math.log(hi + 0.5)))
                    return int(min(max(round(v), lo), hi))
                n = (hi - lo) // dist.step
                return int(lo + dist.step * int(rng.integers(n + 1)))
            raise TypeError(f"unsupported distribution {dist!r}")

    return PerTrialRandomSampler(seed)


def report_interval(epochs: int) -> int:
    """Trials report their validation accuracy every this many epochs (about ten times
    per trial: each report is a write to the shared storage)."""
    return max(1, int(epochs) // 10)


def _make_pruner(optuna, settings: dict):
    """median: once 5 trials are complete, stop a trial whose best accuracy so far is
    below the median of the complete trials at the same epoch, checked from a fifth of
    the epochs on (the book's curves start slowly).  halving: successive halving with
    rungs at k, 3k, 9k, ... epochs (k = the report interval, a tenth of the epochs)."""
    every = report_interval(settings["epochs"])
    if settings["pruner"] == "median":
        warmup = max(every, (settings["epochs"] // 5) // every * every)
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup,
                                           interval_steps=every)
    if settings["pruner"] == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=every, reduction_factor=3)
    return optuna.pruners.NopPruner()


# -- the per-process context --------------------------------------------------------------

@dataclass
class _Ctx:
    optuna: object
    handle: object
    study: object
    study_name: str
    settings: dict
    space: SearchSpace
    label: str = "main"
    data_dir: object = None
    verbose: bool = True
    _split: object = None
    ran: int = 0
    trial_seconds: list = field(default_factory=list)

    @property
    def split(self):
        if self._split is None:
            from .objective import load_split
            s = self.settings
            self._split = load_split(s["train_size"], s["val_fraction"], s["seed"],
                                     s["dtype"], self.data_dir, s.get("split_sha256"))
        return self._split

    def budget(self) -> int:
        return int(self.study.user_attrs.get(BUDGET, 0))


def _on_stale_trial(study, trial):
    """Heartbeat callback (RDB storages): run a trial lost with its worker again, once."""
    _enqueue_retry(study, trial)


def _enqueue_retry(study, trial):
    if trial.user_attrs.get(RETRY_OF) is not None or not trial.params:
        return  # a retry that failed again, or nothing sampled yet: a fresh trial fills in
    study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF: trial.number})


def _fail(ctx: _Ctx, trial, reason: str) -> bool:
    """Mark a RUNNING trial failed (if nobody finished it first) and queue its retry."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = ctx.handle.storage
    try:
        storage.set_trial_user_attr(trial._trial_id, FAIL_REASON, reason)
        ok = storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False
    if ok:
        _enqueue_retry(ctx.study, trial)
        _log(f"[{ctx.label}] trial {trial.number} marked failed: {reason}", ctx.verbose)
    return ok


def _reap(ctx: _Ctx, fail_running: bool = False) -> list[int]:
    """Fail the trials of dead workers (call with the lock held)."""
    from optuna.trial import TrialState
    from .storage import owner_alive

    if ctx.handle.has_heartbeat:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ctx.optuna.storages.fail_stale_trials(ctx.study)
    failed = []
    for t in ctx.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(OWNER)
        if fail_running:
            reason = "--fail-running"
        elif owner is None:
            # Workers record their owner under the lock right after creating a trial, so
            # a running trial without one lost its worker inside that step.
            reason = "its worker died while starting it"
        elif not ctx.handle.has_heartbeat and owner_alive(owner) is False:
            reason = (f"its worker (pid {owner.get('pid')} on {owner.get('host')}) "
                      "is no longer running")
        else:
            continue
        if _fail(ctx, t, reason):
            failed.append(t.number)
    return failed


def _counts(trials) -> dict:
    from optuna.trial import TrialState
    c = {s.name: 0 for s in TrialState}
    for t in trials:
        c[t.state.name] += 1
    return c


def _suggest(trial, space: SearchSpace) -> dict:
    out = {}
    for d in space.searched():
        if d.kind == "log":
            out[d.name] = trial.suggest_float(d.name, d.low, d.high, log=True)
        elif d.kind == "float":
            out[d.name] = trial.suggest_float(d.name, d.low, d.high)
        elif d.kind == "int":
            out[d.name] = trial.suggest_int(d.name, d.low, d.high, step=d.step or 1)
        elif d.kind == "logint":
            out[d.name] = trial.suggest_int(d.name, d.low, d.high, log=True)
        else:
            out[d.name] = trial.suggest_categorical(d.name, list(d.choices))
    return out


def _fmt_params(params: dict, space: SearchSpace) -> str:
    parts = []
    for d in space.searched():
        v = params.get(d.name)
        parts.append(f"{d.name}={v:.3g}" if isinstance(v, float) else f"{d.name}={v}")
    return " ".join(parts)


def _run_trial(ctx: _Ctx, trial) -> str:
    """Train one trial and tell the study; returns the final state's name."""
    from optuna.exceptions import TrialPruned, UpdateFinishedTrialError
    from optuna.trial import TrialState
    from .objective import Curves, derive_seed, train_config

    s = ctx.settings
    seed = derive_seed("trial", s["seed"], trial.number)
    retry_of = trial.user_attrs.get(RETRY_OF)
    if retry_of is not None:  # a rerun of a lost trial trains exactly like it
        seed = derive_seed("trial", s["seed"], retry_of)
    curves = Curves()
    params = {}

    every = report_interval(s["epochs"])

    def on_epoch(epoch, val_acc):
        # Report (a storage write) every `every` epochs and at the end; the pruners look
        # at the same epochs of every trial.
        if epoch % every and epoch != s["epochs"]:
            return
        trial.report(val_acc, epoch)
        if trial.should_prune():
            raise TrialPruned(f"epoch {epoch}: val acc {val_acc:.4f}")

    state, value, error = TrialState.COMPLETE, None, None
    try:
        params = resolve_params(ctx.space, _suggest(trial, ctx.space), s["batch_size"])
        split = ctx.split
        train_config(params, split.x_train, split.t_train, split.x_val, split.t_val,
                     epochs=s["epochs"], dtype=s["dtype"], seed=seed, curves=curves,
                     on_epoch=on_epoch if s["pruner"] != "none" else None)
        value = curves.val_acc[-1]
    except TrialPruned:
        state = TrialState.PRUNED
    except BaseException as exc:  # noqa: BLE001 - failed, then re-raised below
        state, error = TrialState.FAIL, exc
        if isinstance(exc, KeyboardInterrupt):
            _enqueue_retry(ctx.study, trial)
    record = {"seed": seed, "seconds": round(curves.seconds, 4),
              "val_acc": curves.val_acc, "train_acc": curves.train_acc,
              "epochs_run": len(curves.val_acc), "diverged_epoch": curves.diverged_epoch}
    try:
        trial.set_user_attr(RUN, record)
        if error is not None:
            trial.set_user_attr(FAIL_REASON, f"{type(error).__name__}: {error}")
            ctx.study.tell(trial, state=TrialState.FAIL)
        elif state == TrialState.PRUNED:
            ctx.study.tell(trial, state=TrialState.PRUNED)
        else:
            ctx.study.tell(trial, value)
    except UpdateFinishedTrialError:
        _log(f"[{ctx.label}] trial {trial.number}: another worker already marked it failed "
             "(missed heartbeats); its result is dropped and a rerun counts instead",
             ctx.verbose)
        if error is not None:
            raise error
        return "DROPPED"
    ctx.ran += 1
    ctx.trial_seconds.append(curves.seconds)
    if error is not None:
        raise error
    v = curves.val_acc[-1] if curves.val_acc else float("nan")
    tag = {TrialState.COMPLETE: "done  ", TrialState.PRUNED: "pruned"}[state]
    extra = f" (diverged at epoch {curves.diverged_epoch})" if curves.diverged_epoch else ""
    ep = "" if state == TrialState.COMPLETE else f" at epoch {len(curves.val_acc)}"
    _log(f"[{ctx.label}] trial {trial.number:4d} {tag} val acc {v:.4f}{ep}  "
         f"{_fmt_params(params, ctx.space)}  {curves.seconds:.2f} s{extra}", ctx.verbose)
    return state.name


def _worth_waiting(ctx: _Ctx, running) -> bool:
    """Whether to wait for other workers' running trials (one might fail and need a
    rerun).  With heartbeats a dead worker's trial fails by itself; on a journal file only
    workers on this machine can be checked."""
    from .storage import owner_alive
    if ctx.handle.has_heartbeat:
        return bool(running)
    return any(owner_alive(t.user_attrs.get(OWNER) or {}) for t in running)


def work(ctx: _Ctx, poll: float | None = None) -> int:
    """Run trials until the budget is used up; returns how many this process ran."""
    from optuna.trial import TrialState
    from .storage import this_worker

    poll = poll or (min(2.0, ctx.handle.heartbeat_interval) if ctx.handle.has_heartbeat
                    else 0.5)
    owner = this_worker(ctx.label)
    ctx.split  # load the data before taking trials
    while True:
        trial = beat = None
        with ctx.handle.lock(ctx.study_name):
            _reap(ctx)
            budget = ctx.budget()
            trials = ctx.study.get_trials(deepcopy=False)
            done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
            running = [t for t in trials if t.state == TrialState.RUNNING]
            if done + len(running) < budget:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    trial = ctx.study.ask()
                beat = ctx.handle.start_heartbeat(trial._trial_id)
                trial.set_user_attr(OWNER, owner)
        if trial is None:
            if done >= budget or not _worth_waiting(ctx, running):
                return ctx.ran
            time.sleep(poll)
            continue
        try:
            _run_trial(ctx, trial)
        finally:
            beat.stop()


# -- opening a study ----------------------------------------------------------------------

def _open(optuna, spec, study_name, heartbeat_interval, grace_period):
    from .storage import open_storage
    return open_storage(spec, heartbeat_interval, grace_period, _on_stale_trial)


def _load_study(optuna, handle, study_name, settings, label):
    return optuna.load_study(study_name=study_name, storage=handle.storage,
                             sampler=_make_sampler(optuna, settings, label),
                             pruner=_make_pruner(optuna, settings))


# -- workers in subprocesses --------------------------------------------------------------

def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
               "ZERODL_NUM_THREADS")


def pin_threads(n: int):
    """Limit this process's BLAS/OpenMP pools and zerodl's kernels to ``n`` threads."""
    from .. import set_num_threads
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(limits=n)
    except ImportError:
        return None


def _spawn(n_workers, spec, study_name, threads, backend, data_dir, verbose,
           heartbeat_interval, grace_period, out_dir):
    pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = os.environ.copy()
    for var in THREAD_VARS:
        env[var] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    # Import this zerodl, not one in the working directory that `-m` would put first
    # (a checkout without compiled kernels); honoured by Python >= 3.11.
    env["PYTHONSAFEPATH"] = "1"
    env["ZERODL_SEARCH_STORAGE"] = spec.target  # not on the command line: it may hold a password
    procs = []
    for i in range(n_workers):
        cmd = [sys.executable, "-m", "zerodl.search._worker", "--study-name", study_name,
               "--label", f"w{i + 1}", "--threads", str(threads),
               "--heartbeat-interval", str(heartbeat_interval),
               "--grace-period", str(grace_period)]
        if backend:
            cmd += ["--backend", backend]
        if data_dir:
            cmd += ["--data-dir", os.fspath(data_dir)]
        if not verbose:
            cmd.append("--quiet")
        procs.append(subprocess.Popen(cmd, env=env))
    return procs


def _wait(procs, verbose) -> list[int]:
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(0.2)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    codes = [p.returncode for p in procs]
    for i, code in enumerate(codes):
        if code:
            how = (f"killed by {signal.Signals(-code).name}" if code < 0
                   else f"exit code {code}")
            _log(f"worker w{i + 1} stopped abnormally ({how})", True)
    return codes


# -- the public entry point ---------------------------------------------------------------

@dataclass
class SearchResult:
    """What :func:`run_search` found (also written to ``out_dir/results.json``)."""

    study_name: str
    storage: str
    complete: bool
    n_trials: int
    counts: dict
    best: dict | None
    final: dict | None
    table: list
    narrowed: dict
    next_space: SearchSpace | None
    notes: list
    out_dir: str
    files: dict
    seconds: float
    settings: dict

    @property
    def test_acc(self):
        return (self.final or {}).get("test_acc")


def run_search(space=None, n_trials=None, storage=None, study_name="zerodl-search",
               workers=1, sampler=None, pruner=DEFAULT_PRUNER, train_size=None, val_fraction=None,
               epochs=None, batch_size=None, seed=None, out_dir=None, resume=False, *,
               dtype=None, backend=None, threads=None, data_dir=None, top=20, best_k=5,
               plots=True, verbose=True, heartbeat_interval=5, grace_period=20,
               enqueue=None, fail_running=False) -> SearchResult:
    """Search hyperparameters of the book's MLP on MNIST with Optuna.

    ``space``: a :class:`SearchSpace`, ``"lr=log:1e-6:1e-2 ..."`` strings, a dict (TOML
    layout) or a .toml path; default the book's lr x weight decay space.  Settings left as
    None take the book's values (``n_trials`` 100, ``train_size`` 500, ``val_fraction`` 0.2,
    ``epochs`` 50, ``batch_size`` 100, sampler "random", ``seed`` 0, float32) - or, when
    the study exists already, the values stored with it.  ``pruner`` is "median",
    "halving" or None.  ``storage``: a journal file path (default
    ``out_dir/study.journal``), ``postgresql://...`` or ``sqlite:///...``.  ``workers``
    processes share the study, each pinned to ``threads`` threads (default
    ``max(1, cores // workers)``).  A study that exists is joined if its settings match
    (that is how several machines share one); ``resume=True`` continues it with its stored
    settings (raising ``n_trials`` extends it) and first fails trials whose workers are
    dead.  ``enqueue``: dicts of hyperparameters to try first.  Everything is checked
    before any trial starts; errors raise :class:`SearchError`.
    """
    t_start = time.perf_counter()
    from ._optuna import require_optuna
    from .storage import parse_storage

    optuna = require_optuna()
    workers = _check_int("workers", workers)
    if n_trials is not None:
        n_trials = _check_int("n_trials", n_trials)
    top = _check_int("top", top)
    best_k = _check_int("best_k", best_k)
    if threads is not None:
        threads = _check_int("threads", threads)
    if backend is not None and backend not in ("auto", "cython", "numpy"):
        raise SearchError(f"backend must be auto, cython or numpy, got {backend!r}")
    if not isinstance(study_name, str) or not study_name.strip():
        raise SearchError("study_name must be a non-empty string")
    explicit = {"train_size": train_size, "val_fraction": val_fraction, "epochs": epochs,
                "batch_size": batch_size, "dtype": dtype, "seed": seed, "sampler": sampler}
    given = {k: v for k, v in explicit.items() if v is not None}
    if not isinstance(pruner, _Default):
        given["pruner"] = "none" if pruner is None else pruner
    space_obj = _coerce_space(space) if space is not None else None
    wanted = _validate_settings({**SETTING_DEFAULTS, **given})
    out_dir = os.path.abspath(os.fspath(out_dir or os.path.join("runs", "search", study_name)))
    spec = parse_storage(storage, os.path.join(out_dir, "study.journal"))
    enqueue = list(enqueue or [])
    check_space = space_obj or SearchSpace.book()
    for params in enqueue:
        _check_enqueued(params, check_space)
    if data_dir is not None and not os.path.isdir(os.fspath(data_dir)):
        raise SearchError(f"data_dir {data_dir} is not a folder")
    with contextlib.ExitStack() as stack:
        if backend:  # for this call only (workers get --backend)
            from .. import use_backend
            try:
                stack.enter_context(use_backend(backend))
            except ImportError as exc:
                raise SearchError(str(exc)) from None
        return _run_search(optuna, space_obj, n_trials, spec, study_name, workers, given,
                           wanted, out_dir, resume, backend, threads, data_dir, top, best_k,
                           plots, verbose, heartbeat_interval, grace_period, enqueue,
                           fail_running, t_start)


def _run_search(optuna, space_obj, n_trials, spec, study_name, workers, given, wanted,
                out_dir, resume, backend, threads, data_dir, top, best_k, plots, verbose,
                heartbeat_interval, grace_period, enqueue, fail_running, t_start):
    # -- open the storage and the study (checks the URL and connects: still no training)
    handle = _open(optuna, spec, study_name, heartbeat_interval, grace_period)
    try:
        split = None
        with handle.lock(study_name):
            names = optuna.study.get_all_study_names(storage=handle.storage)
            exists = study_name in names
            if resume and not exists:
                raise SearchError(f"nothing to resume: no study {study_name!r} in "
                                  f"{spec.display}" + (f" (it has: {', '.join(names)})"
                                                       if names else ""))
            if exists and enqueue:
                raise SearchError("enqueue only applies when the study is created; study "
                                  f"{study_name!r} exists")
            if exists:
                study0 = optuna.load_study(study_name=study_name, storage=handle.storage)
                settings, budget = _join(study0, study_name, spec, resume, given, wanted,
                                         space_obj, n_trials)
                space_final = SearchSpace.from_dict(settings["space"])
            else:
                space_final = space_obj or SearchSpace.book()
                settings = {**wanted, "space": space_final.to_dict()}
                budget = n_trials or DEFAULT_N_TRIALS
                # Draw the split now (loads MNIST): its digest is stored with the study so
                # that every worker on every machine checks it trains on the same data.
                from .objective import load_split
                split = load_split(settings["train_size"], settings["val_fraction"],
                                   settings["seed"], settings["dtype"], data_dir)
                settings["split_sha256"] = split.digest
                settings["zerodl_search"] = 1
                study0 = optuna.create_study(study_name=study_name, storage=handle.storage,
                                             direction="maximize")
                study0.set_user_attr(SETTINGS, settings)
                study0.set_user_attr(BUDGET, budget)
                _log(f"new study {study_name!r} in {spec.display}", verbose)
            for params in enqueue:
                study0.enqueue_trial(dict(params), user_attrs={"zerodl_enqueued": True})
        study = _load_study(optuna, handle, study_name, settings, "main")
        ctx = _Ctx(optuna, handle, study, study_name, settings, space_final, "main",
                   data_dir, verbose, split)
        ctx.split  # loads and checks the split of a study that existed
        with handle.lock(study_name):
            reaped = _reap(ctx, fail_running=fail_running)
            counts = _counts(study.get_trials(deepcopy=False))
        done = counts["COMPLETE"] + counts["PRUNED"]
        _log(f"study {study_name!r}: {done}/{budget} trials finished, {counts['RUNNING']} "
             f"running, {counts['FAIL']} failed; space: {space_final.to_cli()}", verbose)
        if reaped:
            _log(f"marked failed (their workers are gone): trials {reaped}", verbose)

        # -- run
        codes = []
        per = threads or (max(1, _cores() // workers) if workers > 1 else None)
        if done < budget:
            if workers == 1:
                with _pinned(threads):
                    work(ctx)
            else:
                _log(f"starting {workers} workers x {per} thread(s) on {spec.display}",
                     verbose)
                procs = _spawn(workers, spec, study_name, per, backend, data_dir, verbose,
                               heartbeat_interval, grace_period, out_dir)
                codes = _wait(procs, verbose)

        # -- final pick and report
        trials = study.get_trials(deepcopy=False)
        counts = _counts(trials)
        done = counts["COMPLETE"] + counts["PRUNED"]
        complete = done >= budget and counts["RUNNING"] == 0
        final = None
        notes = []
        if complete and counts["COMPLETE"]:
            with _pinned(per):  # the workers' thread count (all cores can be much slower
                final = _final_pick(ctx, verbose)  # on a busy machine)
        elif not complete:
            notes.append(f"the study is not finished ({done}/{budget} trials, "
                         f"{counts['RUNNING']} running); continue it with --resume")
            if any(codes):
                notes.append("some workers stopped abnormally; --resume fails their trials "
                             "and runs them again")
        from .report import write_report
        return write_report(study, space_final, settings, budget, final, out_dir,
                            complete=complete, top=top, best_k=best_k, plots=plots,
                            verbose=verbose, notes=notes, storage_display=spec.display,
                            seconds=time.perf_counter() - t_start)
    finally:
        handle.close()


def _join(study0, study_name, spec, resume, given, wanted, space_obj, n_trials):
    """Settings and budget of an existing study, after checking the caller's against them."""
    stored = study0.user_attrs.get(SETTINGS)
    if stored is None:
        raise SearchError(f"study {study_name!r} in {spec.display} was not made by zerodl "
                          "search; pick another --study-name")
    if resume:  # stored settings win; only what was passed explicitly must agree
        mine = dict(given)
        if space_obj is not None:
            mine["space"] = space_obj.to_dict()
        mine = {k: v for k, v in _validate_settings({**stored, **mine}).items() if k in mine}
    else:  # joining (e.g. the same command on another machine): everything must agree
        mine = {**wanted, "space": (space_obj or SearchSpace.book()).to_dict()}
    diffs = _compare(stored, mine)
    if diffs:
        raise SearchError(
            f"study {study_name!r} in {spec.display} exists with other settings:\n  "
            + "\n  ".join(diffs) + "\nuse another --study-name (or --out), or --resume "
            "without these options to continue it as it is")
    budget = int(study0.user_attrs.get(BUDGET, DEFAULT_N_TRIALS))
    if n_trials is not None and n_trials != budget:
        if not resume:
            raise SearchError(f"study {study_name!r} has a budget of {budget} trials; pass "
                              f"--resume to change it to {n_trials}")
        study0.set_user_attr(BUDGET, n_trials)
        budget = n_trials
    return dict(stored), budget


@contextlib.contextmanager
def _pinned(threads):
    """Pin this process to ``threads`` threads for a block (restored afterwards)."""
    if not threads:
        yield
        return
    from .. import get_num_threads, set_num_threads
    saved_env = {v: os.environ.get(v) for v in THREAD_VARS}
    saved = get_num_threads()
    limiter = pin_threads(threads)
    try:
        yield
    finally:
        if limiter is not None and hasattr(limiter, "restore_original_limits"):
            limiter.restore_original_limits()
        set_num_threads(saved)
        for v, old in saved_env.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


def _check_enqueued(params, space: SearchSpace):
    if not isinstance(params, dict):
        raise SearchError(f"enqueue entries must be dicts, got {params!r}")
    for k, v in params.items():
        if k not in space or not space[k].searched:
            raise SearchError(f"enqueued parameter {k!r} is not searched by the space")
        if not space[k].contains(v):
            raise SearchError(f"enqueued {k}={v!r} lies outside {k}={space[k].spec()}")


def _final_pick(ctx: _Ctx, verbose: bool) -> dict | None:
    """Score the best trial once on the test set (kept in the study so every machine and
    every later report shows the same number)."""
    from optuna.trial import TrialState
    from .objective import score_on_test

    with ctx.handle.lock(ctx.study_name):
        complete = ctx.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            return None
        best = max(complete, key=lambda t: (t.value, -t.number))
        final = ctx.study.user_attrs.get(FINAL)
        if final and final.get("trial") == best.number:
            return final
        history = list(ctx.study.user_attrs.get(FINAL_HISTORY, []))
        params = resolve_params(ctx.space, best.params, ctx.settings["batch_size"])
        run = best.user_attrs.get(RUN, {})
        seed = run.get("seed")
        _log(f"final pick: trial {best.number} (val acc {best.value:.4f}); retraining it and "
             "scoring it once on the test set", verbose)
        scored = score_on_test(params, ctx.settings, seed, ctx.data_dir)
        final = {"trial": best.number, "val_acc": best.value, "params": params,
                 "seed": seed, **scored, "scored_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        if history:
            final["note"] = (f"the test set was scored before for trial(s) "
                             f"{[h['trial'] for h in history]} (the budget was extended)")
        history.append({"trial": best.number, "test_acc": final["test_acc"]})
        ctx.study.set_user_attr(FINAL, final)
        ctx.study.set_user_attr(FINAL_HISTORY, history)
        return final


def worker_main(study_name: str, storage: str, label: str, threads: int | None,
                backend: str | None, data_dir, verbose: bool, heartbeat_interval: int,
                grace_period: int) -> int:
    """Body of one worker process (``python -m zerodl.search._worker``)."""
    from ._optuna import require_optuna
    from .storage import parse_storage

    if threads:
        pin_threads(threads)
    if backend:
        from .. import set_backend
        set_backend(backend)

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    optuna = require_optuna()
    spec = parse_storage(storage, None)
    handle = _open(optuna, spec, study_name, heartbeat_interval, grace_period)
    try:
        probe = optuna.load_study(study_name=study_name, storage=handle.storage)
        settings = probe.user_attrs[SETTINGS]
        study = _load_study(optuna, handle, study_name, settings, f"{label}:{os.getpid()}")
        ctx = _Ctx(optuna, handle, study, study_name, settings,
                   SearchSpace.from_dict(settings["space"]), label, data_dir, verbose)
        work(ctx)
        return 0
    finally:
        handle.close()


def settings_json(settings: dict) -> str:
    return json.dumps(settings, indent=2, sort_keys=True, default=str)


__all__ = ["run_search", "SearchResult", "work", "worker_main", "DEFAULTS"]
