"""Errors of zerodl.search; all derive from :class:`SearchError`."""
from __future__ import annotations


class SearchError(Exception):
    """A search cannot start or continue (bad settings, storage, study)."""


class SearchSpaceError(SearchError, ValueError):
    """The search space is invalid (raised before any trial starts)."""


class SearchDependencyError(SearchError, ImportError):
    """Optuna (or the PostgreSQL driver) is not installed."""


class StorageError(SearchError):
    """The storage URL is malformed or the storage cannot be opened."""
