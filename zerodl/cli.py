"""Command line: ``zerodl train | info | experiment | search | bench``.

Each subcommand lives in its own module exposing ``configure(parser)`` and ``run(args)``;
this file only wires them together, so `zerodl --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "train": ("zerodl._cli_train", "train a network on MNIST (the main job)"),
    "info": ("zerodl._cli_info", "version, backend, compiled kernels, BLAS and threads"),
    "experiment": ("zerodl.experiments.cli", "run the experiments of chapters 6 and 7"),
    "search": ("zerodl.search.cli", "hyperparameter search (needs zerodl[search])"),
    "bench": ("zerodl._cli_bench", "time one training step against PyTorch"),
}


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="zerodl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"zerodl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not (exc.name and module_name.startswith(exc.name)):
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
