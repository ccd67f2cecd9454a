"""`zerodl experiment NAME|all`: run the experiments of chapters 6 and 7."""
from __future__ import annotations

import os
import time

from .._cli_common import add_runtime_options, apply_runtime_options
from .registry import EXPERIMENTS


def configure(parser):
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="experiment(s) to run, or 'all': " + ", ".join(EXPERIMENTS))
    parser.add_argument("--quick", action="store_true",
                        help="small data and few iterations (seconds per experiment)")
    parser.add_argument("--out", default=os.path.join("runs", "experiments"),
                        help="output folder (default runs/experiments): NAME/*.png, "
                             "NAME/numbers.json, report.md, index.html")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="always show progress bars (default: only on a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false",
                          help="never show progress bars")
    parser.add_argument("--compare-with", metavar="DIR", default=None,
                        help="output folder of another run (e.g. with --backend numpy) whose "
                             "measured times the report sets beside this run's")
    parser.add_argument("--report-only", action="store_true",
                        help="do not run anything: rewrite the report from the results "
                             "already in --out")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    add_runtime_options(parser)


def run(args):
    from .. import get_backend
    from .registry import get_experiment, normalize_name
    from .report import write_report
    from .runner import run_all

    if args.list:
        for name in EXPERIMENTS:
            print(f"{name:24s} {get_experiment(name).TITLE}")
        return 0
    if args.report_only:
        md, page = write_report(os.path.abspath(args.out), compare_dir=args.compare_with)
        print(f"report: {md} and {page}")
        return 0
    if not args.names:
        print("zerodl experiment: name an experiment or 'all': " + ", ".join(EXPERIMENTS))
        return 2
    if any(n.lower() == "all" for n in args.names):
        names = list(EXPERIMENTS)
    else:
        try:
            names = [normalize_name(n) for n in args.names]
        except KeyError as exc:
            print(f"zerodl experiment: {exc.args[0]}")
            return 2
    limiter = apply_runtime_options(args)
    out = os.path.abspath(args.out)
    print(f"zerodl experiment: {len(names)} experiment(s), "
          f"{'quick' if args.quick else 'full'} mode, backend {get_backend()}, "
          f"seed {args.seed} -> {out}", flush=True)

    def announce(result):
        print(f"  {result['name']:24s} {result['seconds']:8.1f} s  "
              f"{len(result['figures'])} figure(s)", flush=True)

    start = time.perf_counter()
    try:
        results = run_all(out, quick=args.quick, seed=args.seed, progress=args.progress,
                          names=names, data_dir=args.data_dir, report=False,
                          on_result=announce)
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    total = time.perf_counter() - start
    if len(names) == len(EXPERIMENTS):
        md, page = write_report(out, results, total_seconds=total,
                                compare_dir=args.compare_with)
    else:  # add to whatever else was run into the same folder
        md, page = write_report(out, compare_dir=args.compare_with)
    print(f"done in {total:.1f} s; report: {md} and {page}")
    return 0
