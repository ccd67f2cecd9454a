"""One search worker process, started by ``zerodl search --workers N``.

The storage comes from $ZERODL_SEARCH_STORAGE (a URL may hold a password, which should
not show in ``ps``); everything else about the study is read from the study itself.
The parent has set the BLAS/OpenMP thread variables before this interpreter started.
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m zerodl.search._worker")
    p.add_argument("--study-name", required=True)
    p.add_argument("--label", default="w")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--backend", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--heartbeat-interval", type=int, default=5)
    p.add_argument("--grace-period", type=int, default=20)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    storage = os.environ.get("ZERODL_SEARCH_STORAGE")
    if not storage:
        print("zerodl search worker: ZERODL_SEARCH_STORAGE is not set", file=sys.stderr)
        return 2
    from .errors import SearchError
    from .runner import worker_main
    try:
        return worker_main(args.study_name, storage, args.label, args.threads, args.backend,
                           args.data_dir, not args.quiet, args.heartbeat_interval,
                           args.grace_period)
    except KeyboardInterrupt:
        return 130
    except SearchError as exc:
        print(f"zerodl search worker {args.label}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
