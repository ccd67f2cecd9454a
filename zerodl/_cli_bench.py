"""`zerodl bench`: time one training iteration of the book's networks against PyTorch.

Runs :func:`zerodl.benchmarks.compare` (all variants in one process, interleaved), prints a
markdown table (median ms, speedup vs PyTorch eager and vs the book stand-in) and writes
``OUT/bench.json`` and ``OUT/bench.png``.  ``--epoch`` adds one MNIST epoch (600
iterations) per model and variant, ``--memory`` the peak RSS of a 1-epoch SimpleConvNet
run of zerodl and PyTorch, each in a fresh process.  Absolute times drift on a shared
machine: compare the ratios of one run.
"""
from __future__ import annotations

import json
import os
import sys


def _csv(text):
    return [s.strip() for s in str(text).split(",") if s.strip()]


def configure(parser):
    from .benchmarks import DEFAULT_THREADS, MODELS, VARIANTS

    parser.add_argument("--models", default="mlp,convnet",
                        help=f"comma-separated, from {','.join(MODELS)} (default mlp,convnet)")
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated, from {','.join(VARIANTS)} (default: all; "
                             "torch-compile only for the MLP)")
    parser.add_argument("--repeats", type=int, default=20,
                        help="interleaved rounds per model (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"threads for zerodl, BLAS and PyTorch (default {DEFAULT_THREADS})")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-compile", action="store_true",
                        help="leave out torch-compile (it compiles for ~25 s)")
    parser.add_argument("--compile-models", default="mlp",
                        help="models to try torch.compile on (default mlp)")
    parser.add_argument("--verify", action="store_true",
                        help="first check every variant trains (loss falls over 50 steps)")
    parser.add_argument("--epoch", action="store_true",
                        help="also time a full MNIST epoch (600 iterations) of mlp and convnet")
    parser.add_argument("--epoch-iterations", type=int, default=600)
    parser.add_argument("--epoch-models", default="mlp,convnet")
    parser.add_argument("--memory", action="store_true",
                        help="also measure the peak RSS of a 1-epoch SimpleConvNet run, "
                             "zerodl vs PyTorch, each in a fresh process")
    parser.add_argument("--memory-variants", default="zerodl-cython,torch-eager")
    parser.add_argument("--out", default=os.path.join("runs", "bench"),
                        help="folder for bench.json and bench.png (default runs/bench)")
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args):
    from . import benchmarks as B

    models = _csv(args.models)
    for m in models + _csv(args.epoch_models):
        if m not in B.MODELS:
            print(f"zerodl bench: unknown model {m!r}; choose from {', '.join(B.MODELS)}",
                  file=sys.stderr)
            return 2
    variants = _csv(args.variants) if args.variants else list(B.VARIANTS)
    bad = [v for v in variants if v not in B.VARIANTS]
    if bad:
        print(f"zerodl bench: unknown variant(s) {bad}; choose from {', '.join(B.VARIANTS)}",
              file=sys.stderr)
        return 2
    if args.no_compile:
        variants = [v for v in variants if v != "torch-compile"]
    if args.repeats < 1 or args.threads < 1:
        print("zerodl bench: --repeats and --threads must be >= 1", file=sys.stderr)
        return 2
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))

    result = B.compare(models, repeats=args.repeats, warmup=args.warmup, variants=variants,
                       threads=args.threads, batch_size=args.batch_size, seed=args.seed,
                       verify=args.verify, compile_models=tuple(_csv(args.compile_models)),
                       log=log)
    plural = "s" if args.threads != 1 else ""
    print(f"## One training iteration (batch {args.batch_size}, {args.threads} thread{plural}, "
          f"{args.repeats} interleaved rounds)\n")
    print(B.markdown_table(result))
    load = result["machine"].get("load_average")
    if load:
        start = result["machine"].get("load_average_start") or load
        cpus = result["machine"].get("cpus") or 1
        print(f"\nhost load average (1 min) {start[0]:.1f} at start, {load[0]:.1f} at end, "
              f"on {cpus} CPUs")
        if max(start[0], load[0]) > cpus and args.threads > 1:
            print("warning: the host is oversubscribed; with several threads per process, "
                  "thread pools (OpenBLAS, OpenMP) wait for descheduled workers and the "
                  "timings measure the scheduler more than the code. Compare with "
                  "--threads 1.")

    if args.epoch:
        epoch_variants = [v for v in variants if v != "torch-compile"]
        result["epochs"] = B.compare_epochs(_csv(args.epoch_models), epoch_variants,
                                            args.epoch_iterations, args.threads,
                                            args.seed, log)
        print(f"\n## One MNIST epoch ({args.epoch_iterations} iterations of "
              f"{args.batch_size}; test accuracy after it, untimed)\n")
        print(B.epoch_table(result["epochs"]))

    if args.memory:
        mem = {}
        for v in _csv(args.memory_variants):
            if log:
                log(f"[memory] {v}: 1-epoch SimpleConvNet in a fresh process")
            try:
                mem[v] = B.peak_rss(v, "convnet", args.epoch_iterations, args.seed,
                                    args.threads)
            except B.Unavailable as exc:
                mem[v] = {"skipped": str(exc)}
            except Exception as exc:  # noqa: BLE001 - report and carry on
                mem[v] = {"error": f"{type(exc).__name__}: {exc}"}
        result["memory"] = mem
        print(f"\n## Peak RSS, 1-epoch SimpleConvNet run ({args.epoch_iterations} "
              f"iterations), fresh process each\n")
        print(B.memory_table(mem))

    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "bench.json")
    tmp = json_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh, indent=1, default=str)
    os.replace(tmp, json_path)
    print(f"\nwrote {json_path}", end="")
    if not args.no_plot:
        try:
            from .plotting import save_figure
            png = save_figure(B.comparison_chart(result), os.path.join(args.out, "bench.png"))
            print(f" and {png}", end="")
        except ImportError as exc:
            print(f" (no chart: {exc})", end="")
    print()
    return 0
