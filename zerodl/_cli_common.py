"""Options shared by the subcommands that train networks."""
from __future__ import annotations

import os


def add_runtime_options(parser):
    parser.add_argument("--backend", choices=("auto", "cython", "numpy"), default=None,
                        help="kernel backend (default: $ZERODL_BACKEND or auto)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for zerodl's kernels and for BLAS (default: "
                             "$ZERODL_NUM_THREADS, else 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--data-dir", default=None, help="folder with the MNIST .gz files")


def apply_runtime_options(args):
    """Set backend and thread counts from parsed options; returns a threadpool limiter
    context (or None) that the caller keeps open while it trains."""
    from . import _kernels, get_num_threads, set_backend, set_num_threads
    if args.backend:
        set_backend(args.backend)
    threads = args.threads or get_num_threads()
    set_num_threads(threads)
    # BLAS gets the same count, so the kernels' OpenMP threads and BLAS's threads never
    # outnumber what was asked for.  Load the compiled kernels first: they bring scipy's
    # BLAS, which a limit set before it is loaded would not reach.
    _kernels.cython_available()
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(limits=threads, user_api="blas")
    except ImportError:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
        return None
