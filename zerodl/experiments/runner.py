"""Run one experiment (or all) and record what it produced."""
from __future__ import annotations

import datetime as _dt
import os
import time

import numpy as np

from ._common import Context, write_json_atomic
from .registry import EXPERIMENTS, get_experiment, normalize_name

__all__ = ["run_experiment", "run_all"]


def run_experiment(name, out_dir, quick=False, seed=0, progress=None, *, data_dir=None,
                   overrides=None) -> dict:
    """Run experiment ``name``; write its figures and JSON to ``out_dir/NAME/``.

    ``quick`` shrinks data and iterations to a few seconds; ``progress`` shows a tqdm bar
    (None: only on a terminal); ``overrides`` replaces entries of the default settings.
    Returns the result: name, title, settings, figures (file relative to ``out_dir``,
    caption, title), numbers, key_numbers, seconds, backend, seed and quick.  The same
    result is saved as ``NAME/result.json`` and the numbers as ``NAME/numbers.json``.
    """
    from .. import get_backend, get_num_threads
    from .._version import __version__

    key = normalize_name(name)
    module = get_experiment(key)
    settings = module.settings(bool(quick))
    if overrides:
        unknown = set(overrides) - set(settings)
        if unknown:
            raise KeyError(f"{key}: unknown settings {sorted(unknown)}; "
                           f"known: {sorted(settings)}")
        settings.update(overrides)
    exp_dir = os.path.join(os.fspath(out_dir), key)
    ctx = Context(key, exp_dir, quick=quick, seed=seed, progress=progress, data_dir=data_dir)
    started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    start = time.perf_counter()
    cpu_start = time.process_time()
    try:
        # Some settings diverge on purpose (e.g. weight std 1 without BatchNorm): their
        # overflows are results, not warnings.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            module.run(ctx, settings)
    finally:
        ctx.close()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    numbers_file = os.path.join(key, "numbers.json")
    write_json_atomic(os.path.join(os.fspath(out_dir), numbers_file),
                      {"experiment": key, "settings": settings, "numbers": ctx.numbers})
    result = {
        "name": key,
        "title": module.TITLE,
        "description": module.DESCRIPTION,
        "quick": bool(quick),
        "seed": int(seed),
        "backend": get_backend(),
        "threads": _blas_threads(get_num_threads()),
        "zerodl_version": __version__,
        "started": started,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "settings": settings,
        "figures": [dict(fig, file=os.path.join(key, fig["file"])) for fig in ctx.figures],
        "numbers_file": numbers_file,
        "key_numbers": ctx.key_numbers,
        "notes": ctx.notes,
        "numbers": ctx.numbers,
    }
    summary = {k: v for k, v in result.items() if k != "numbers"}
    write_json_atomic(os.path.join(exp_dir, "result.json"), summary)
    return result


def _blas_threads(kernel_threads):
    """'N' when zerodl's kernels and BLAS use N threads alike, else 'N kernel, M BLAS'."""
    try:
        from threadpoolctl import threadpool_info
        blas = sorted({d["num_threads"] for d in threadpool_info()
                       if d.get("user_api") == "blas"})
    except Exception:
        return str(kernel_threads)
    if not blas or blas == [kernel_threads]:
        return str(kernel_threads)
    return f"{kernel_threads} kernel, {'/'.join(map(str, blas))} BLAS"


def run_all(out_dir, quick=False, seed=0, progress=None, *, names=None, data_dir=None,
            report=True, on_result=None) -> list[dict]:
    """Run every experiment (or ``names``) in the book's order; then write the report."""
    from tqdm.auto import tqdm

    from .report import write_report

    names = [normalize_name(n) for n in (names or EXPERIMENTS)]
    disable = None if progress is None else not progress
    results = []
    start = time.perf_counter()
    with tqdm(names, desc="experiments", unit="exp", disable=disable,
              dynamic_ncols=True) as outer:
        for name in outer:
            outer.set_postfix_str(name)
            result = run_experiment(name, out_dir, quick=quick, seed=seed, progress=progress,
                                    data_dir=data_dir)
            results.append(result)
            if on_result is not None:
                on_result(result)
    total = time.perf_counter() - start
    if report:
        write_report(out_dir, results, total_seconds=total)
    return results
