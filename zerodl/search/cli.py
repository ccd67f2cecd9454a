"""`zerodl search`: hyperparameter search (the book's ch. 6.5) on Optuna.

Nothing here imports Optuna until the command runs, so `zerodl --help` works without it.
"""
from __future__ import annotations

import argparse
import sys

from .._cli_common import add_runtime_options

EPILOG = """\
search space: NAME=SPEC arguments and/or --space FILE.toml; SPEC is one of
  log:LOW:HIGH  float:LOW:HIGH  int:LOW:HIGH[:STEP]  logint:LOW:HIGH  choice:A,B,..  VALUE
parameters: lr weight_decay l1 dropout layers units batch_size optimizer activation init
  batchnorm (the others keep the book's values: 6x100 ReLU, He init, SGD lr 0.01, batch 100)
default space (the book's): lr=log:1e-6:1e-2 weight_decay=log:1e-8:1e-4

examples:
  zerodl search --workers 2                              # the book's 100 trials
  zerodl search lr=log:1e-4:1e-1 optimizer=choice:sgd,adam layers=int:2:6 --sampler tpe
  zerodl search --resume                                 # continue after a crash
  zerodl search --storage postgresql://user:pw@db:5432/zerodl --study-name big \\
      --n-trials 2000 --workers 8                        # same command on every machine
"""


def configure(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("space", nargs="*", metavar="NAME=SPEC",
                        help="parameters to search, e.g. lr=log:1e-6:1e-2 (see below)")
    parser.add_argument("--space", dest="space_file", metavar="FILE.toml", default=None,
                        help="search space from a TOML file ([space] table); NAME=SPEC "
                             "arguments override its entries")
    parser.add_argument("--n-trials", type=int, default=None,
                        help="trial budget: finished (complete + pruned) trials (default 100)")
    parser.add_argument("--sampler", choices=("random", "tpe"), default=None,
                        help="random (default, the book's method) or tpe")
    parser.add_argument("--pruner", choices=("median", "halving"), default=None,
                        help="stop hopeless trials early: median (default) or successive "
                             "halving")
    parser.add_argument("--no-prune", action="store_true", help="train every trial to the end")
    parser.add_argument("--train-size", type=int, default=None,
                        help="training images drawn (with --seed) from MNIST's training set "
                             "(default 500, as in the book)")
    parser.add_argument("--val-fraction", type=float, default=None,
                        help="share of them held out for validation (default 0.2)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 50)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="mini-batch size unless searched (default 100)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default=None,
                        help="float type of the networks (default float32)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes on this machine sharing the study (default 1); each "
                             "gets max(1, cores // N) threads unless --threads is given")
    parser.add_argument("--storage", default=None,
                        help="journal file path (default OUT/study.journal), "
                             "postgresql://USER:PW@HOST:PORT/DB or sqlite:///FILE.db")
    parser.add_argument("--study-name", default="zerodl-search", help="default zerodl-search")
    parser.add_argument("--out", default=None,
                        help="folder for the journal, results and plots "
                             "(default runs/search/STUDY_NAME)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the study with its stored settings (a new --n-trials "
                             "extends it); trials of dead workers are failed and rerun")
    parser.add_argument("--fail-running", action="store_true",
                        help="with --resume: fail every running trial (when you know no "
                             "worker is alive, e.g. journal workers on other machines)")
    parser.add_argument("--top", type=int, default=20, help="rows of the best-N table (20)")
    parser.add_argument("--best-k", type=int, default=5,
                        help="best trials whose ranges are narrowed (5, the book's Best-5)")
    parser.add_argument("--no-plot", action="store_true", help="do not write PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no per-trial lines")
    parser.add_argument("--heartbeat-interval", type=int, default=5,
                        help=argparse.SUPPRESS)
    parser.add_argument("--grace-period", type=int, default=20, help=argparse.SUPPRESS)
    add_runtime_options(parser)
    parser.set_defaults(seed=None)  # None: 0, or the stored seed when the study exists


def _space_from_args(args):
    from .space import SearchSpace
    base = SearchSpace.from_toml(args.space_file) if args.space_file else None
    if args.space:
        if base is None:
            return SearchSpace.parse(args.space)
        return SearchSpace.parse(args.space, base)
    return base


def run(args) -> int:
    from .errors import SearchDependencyError, SearchError

    try:
        from ._optuna import require_optuna
        require_optuna()
        if args.fail_running and not args.resume:
            raise SearchError("--fail-running only goes with --resume")
        if args.no_prune and args.pruner:
            raise SearchError("--no-prune and --pruner contradict each other")
        space = _space_from_args(args)
        from .runner import DEFAULT_PRUNER, run_search
        pruner = None if args.no_prune else (args.pruner or DEFAULT_PRUNER)
        result = run_search(
            space, args.n_trials, storage=args.storage, study_name=args.study_name,
            workers=args.workers, sampler=args.sampler, pruner=pruner,
            train_size=args.train_size, val_fraction=args.val_fraction, epochs=args.epochs,
            batch_size=args.batch_size, seed=args.seed, out_dir=args.out,
            resume=args.resume, dtype=args.dtype, backend=args.backend,
            threads=args.threads, data_dir=args.data_dir, top=args.top, best_k=args.best_k,
            plots=not args.no_plot, verbose=not args.quiet,
            heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period,
            fail_running=args.fail_running)
    except SearchDependencyError as exc:
        print(f"zerodl search: {exc}", file=sys.stderr)
        return 2
    except SearchError as exc:
        print(f"zerodl search: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zerodl search: interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0 if result.complete else 1
