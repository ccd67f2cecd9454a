"""Hyperparameter search on Optuna: ``zerodl search`` and :func:`run_search`.

The book's recipe (ch. 6.5): sample hyperparameters at random on a log scale, judge them
on a validation split of the training data (never the test set), stop hopeless trials
early, narrow the ranges around the best and repeat.  Trials run in parallel processes on
one machine (journal file storage) or on many machines (PostgreSQL).

Optuna is an optional extra: ``pip install 'zerodl[search]'``.  Importing this package
does not import it; :class:`SearchSpace` works without it.
"""
from __future__ import annotations

from .errors import SearchDependencyError, SearchError, SearchSpaceError, StorageError
from .space import BOOK_SPACE, PARAMETERS, Dimension, SearchSpace

__all__ = ["run_search", "SearchResult", "SearchSpace", "Dimension", "PARAMETERS",
           "BOOK_SPACE", "SearchError", "SearchSpaceError", "SearchDependencyError",
           "StorageError"]


def run_search(*args, **kwargs):
    from .runner import run_search as _run
    return _run(*args, **kwargs)


run_search.__doc__ = """Search hyperparameters of the book's MLP on MNIST with Optuna
(see :func:`zerodl.search.runner.run_search`)."""


def __getattr__(name):
    if name == "SearchResult":
        from .runner import SearchResult
        return SearchResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
