"""Import Optuna (an optional extra) with a helpful message, and smooth over versions."""
from __future__ import annotations

import inspect
import warnings

from .errors import SearchDependencyError

INSTALL_HINT = ("zerodl search needs Optuna (and psycopg2 for PostgreSQL): "
                "pip install 'zerodl[search]'")


def require_optuna():
    """The optuna module, or SearchDependencyError saying how to install it."""
    try:
        import optuna
    except ImportError as exc:
        raise SearchDependencyError(f"{INSTALL_HINT} ({exc})") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"optuna\..*")
    return optuna


def require_psycopg2():
    try:
        import psycopg2  # noqa: F401
    except ImportError as exc:
        raise SearchDependencyError(
            "a postgresql:// storage needs the psycopg2 driver: pip install 'zerodl[search]' "
            f"(or psycopg2-binary) ({exc})") from None


class FlockJournalLock:
    """Journal file lock on ``flock(2)``: the kernel drops it when its holder dies.

    Optuna's own journal locks are files that a SIGKILLed writer leaves behind; the
    others then wait out a 30 s grace period before breaking them.  (On a network file
    system flock needs working NFS locking; Linux maps it to POSIX locks there.)
    """

    def __init__(self, path: str):
        self._path = path
        self._fh = None

    def acquire(self) -> bool:
        import fcntl
        if self._fh is None or self._fh.closed:
            self._fh = open(self._path, "a+")
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
        return True

    def release(self) -> None:
        import fcntl
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)


def journal_storage(path: str):
    """A JournalStorage on a file (JournalFileBackend on Optuna >= 4, JournalFileStorage
    before), locked with :class:`FlockJournalLock`."""
    import optuna
    try:
        from optuna.storages.journal import JournalFileBackend as Backend
    except ImportError:  # Optuna 3.x
        from optuna.storages import JournalFileStorage as Backend
    return optuna.storages.JournalStorage(Backend(path, lock_obj=FlockJournalLock(
        path + ".flock")))


def rdb_storage(url: str, heartbeat_interval: int, grace_period: int, stale_callback,
                engine_kwargs: dict):
    """An RDBStorage with heartbeats; ``stale_callback(study, frozen_trial)`` runs for each
    trial that the heartbeat check fails (the keyword was renamed in Optuna 4.9)."""
    import optuna
    params = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    key = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params
           else "failed_trial_callback")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                          heartbeat_interval=heartbeat_interval,
                                          grace_period=grace_period, **{key: stale_callback})
