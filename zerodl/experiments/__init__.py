"""The experiments of chapters 6 and 7, each reproducing a figure of the book.

``zerodl experiment NAME`` (or :func:`run_experiment`) runs one and writes its PNG figures,
``numbers.json`` and ``result.json`` to ``OUT/NAME/``; ``zerodl experiment all`` runs all
of them and writes ``OUT/report.md`` and ``OUT/index.html``.  Every experiment has a
``quick`` mode (small data, few iterations) for tests and CI.

Each experiment is a module with ``NAME``, ``TITLE``, ``DESCRIPTION``,
``settings(quick) -> dict`` and ``run(ctx, settings)``; :data:`REGISTRY` maps the names
to the modules in the book's order.
"""
from __future__ import annotations

from .registry import EXPERIMENTS, REGISTRY, get_experiment
from .runner import run_all, run_experiment
from .report import write_report

__all__ = ["EXPERIMENTS", "REGISTRY", "get_experiment", "run_experiment", "run_all",
           "write_report"]
