"""Where a study lives, and the cross-process glue the search needs around Optuna.

Storages (checked before any work starts):

* a file path (or ``journal:PATH``): Optuna's journal file storage - no server, many
  processes on one machine (or on a shared file system);
* ``postgresql://user:password@host:port/db``: many machines; trials carry a heartbeat so a
  dead worker's trial is failed by the others;
* ``sqlite:///path.db``: one machine, kept for convenience.

Besides opening it, this module gives every storage

* a study-wide lock (``flock`` on a file beside the journal/SQLite file; a PostgreSQL
  advisory lock), which makes "count the trials, then start one" atomic across workers -
  that is what keeps the trial budget exact;
* a heartbeat thread per trial (RDB storages only);
* the identity of a worker (host, boot id, pid, process start time) and a check whether
  that worker is still alive, for storages without a heartbeat.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from .errors import StorageError

SUPPORTED = ("a journal file path (e.g. runs/search/study.journal)",
             "postgresql://USER:PASSWORD@HOST:PORT/DB", "sqlite:///PATH.db")


@dataclass(frozen=True)
class StorageSpec:
    kind: str    # "journal", "postgresql" or "sqlite"
    target: str  # absolute journal path, or the URL
    display: str  # the URL with its password hidden

    @property
    def has_heartbeat(self) -> bool:
        return self.kind != "journal"


def _mask(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def parse_storage(storage, default_path) -> StorageSpec:
    """Check a storage argument without touching it.  None means the journal file
    ``default_path``."""
    if storage is None or (isinstance(storage, str) and not storage.strip()):
        path = os.path.abspath(os.fspath(default_path))
        return StorageSpec("journal", path, path)
    if not isinstance(storage, (str, os.PathLike)):
        raise StorageError(f"storage must be a string or path, got {type(storage).__name__}")
    text = os.fspath(storage).strip()
    if text.startswith("journal:"):
        text = text[len("journal:"):]
        if text.startswith("//"):
            text = text[2:]
        if not text:
            raise StorageError("journal: needs a file path, e.g. journal:runs/study.journal")
        path = os.path.abspath(text)
        return StorageSpec("journal", path, path)
    if "://" not in text:
        path = os.path.abspath(text)
        if os.path.isdir(path):
            raise StorageError(f"storage {text!r} is a directory; give a journal file path "
                               f"such as {os.path.join(text, 'study.journal')}")
        return StorageSpec("journal", path, path)
    scheme = text.split("://", 1)[0].lower()
    if scheme in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        url = ("postgresql" if scheme == "postgres" else scheme) + text[len(scheme):]
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise StorageError(f"malformed PostgreSQL URL {_mask(text)!r}: {exc}") from None
        db = parts.path.lstrip("/")
        if not db or "/" in db:
            raise StorageError(f"the PostgreSQL URL {_mask(text)!r} needs a database name: "
                               "postgresql://USER:PASSWORD@HOST:PORT/DB")
        if not parts.hostname and "host=" not in (parts.query or ""):
            raise StorageError(f"the PostgreSQL URL {_mask(text)!r} has no host")
        return StorageSpec("postgresql", url, _mask(url))
    if scheme == "sqlite":
        path = text[len("sqlite:///"):] if text.startswith("sqlite:///") else ""
        if not path or path.startswith(":memory:"):
            raise StorageError(f"{text!r}: use sqlite:///PATH.db (a file; in-memory "
                               "databases cannot be shared by workers)")
        return StorageSpec("sqlite", text, text)
    raise StorageError(f"unsupported storage {_mask(text)!r}; use one of: "
                       + "; ".join(SUPPORTED))


# -- worker identity ---------------------------------------------------------------------

def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _proc_stat(pid: int):
    """(state, start time in clock ticks) of a process from /proc, or None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def _blas_threads():
    try:
        from threadpoolctl import threadpool_info
        return max((p.get("num_threads") or 0 for p in threadpool_info()), default=None)
    except Exception:
        return None


def this_worker(label: str = "") -> dict:
    """Who runs a trial: host, boot id, pid and start time (to tell a live worker from a
    reused pid), plus its thread settings."""
    from .. import get_num_threads

    pid = os.getpid()
    stat = _proc_stat(pid)
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid,
            "start": stat[1] if stat else None, "label": label,
            "threads": get_num_threads(), "blas_threads": _blas_threads()}


def is_local(owner: dict) -> bool:
    return (owner.get("host") == socket.gethostname()
            and (owner.get("boot") or "") == _boot_id())


def owner_alive(owner: dict):
    """True/False for a worker on this machine; None if it ran elsewhere (unknown)."""
    if not isinstance(owner, dict) or not is_local(owner):
        return None
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return None
    stat = _proc_stat(pid)
    if stat is None:
        if os.path.isdir("/proc/self"):
            return False
        try:  # no /proc: fall back to signal 0
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state, start = stat
    if state in ("Z", "X"):
        return False
    if owner.get("start") is not None and start != owner["start"]:
        return False  # the pid was reused
    return True


# -- locks -------------------------------------------------------------------------------

class _FileLock:
    """An exclusive flock on ``path`` (re-entrant within a process)."""

    def __init__(self, path: str):
        self.path = path
        self._depth = 0
        self._fh = None
        self._guard = threading.RLock()

    @contextlib.contextmanager
    def __call__(self):
        import fcntl

        with self._guard:
            if self._depth == 0:
                self._fh = open(self.path, "a+")
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    try:
                        fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
                    finally:
                        self._fh.close()
                        self._fh = None


class _AdvisoryLock:
    """A PostgreSQL advisory lock (released by the server if the holder dies)."""

    def __init__(self, engine, key: int):
        self.engine = engine
        self.key = key
        self._depth = 0
        self._guard = threading.RLock()

    @contextlib.contextmanager
    def __call__(self):
        from sqlalchemy import text

        with self._guard:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
                conn.commit()
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                    conn.commit()


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"zerodl-search:{name}".encode()).digest()[:8],
                          "big", signed=True)


class _Heartbeat:
    """Records a trial's heartbeat now, then every ``interval`` seconds from a thread."""

    def __init__(self, rdb, trial_id: int, interval: float):
        self.rdb, self.trial_id, self.interval = rdb, trial_id, interval
        self._stop = threading.Event()
        self.rdb.record_heartbeat(trial_id)
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}",
                                        daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.rdb.record_heartbeat(self.trial_id)
            except Exception:  # a hiccup of the database; try again next time
                pass

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)


class _NoHeartbeat:
    def stop(self):
        pass


class StorageHandle:
    """An opened storage: the Optuna storage object, a lock and heartbeats."""

    def __init__(self, spec: StorageSpec, storage, rdb=None, heartbeat_interval=None,
                 grace_period=None):
        self.spec = spec
        self.storage = storage
        self.rdb = rdb
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self._locks: dict[str, object] = {}

    @property
    def has_heartbeat(self) -> bool:
        return self.rdb is not None and self.heartbeat_interval is not None

    def lock(self, study_name: str):
        lk = self._locks.get(study_name)
        if lk is None:
            if self.spec.kind == "postgresql":
                lk = _AdvisoryLock(self.rdb.engine, _lock_key(study_name))
            else:
                path = (self.spec.target if self.spec.kind == "journal"
                        else self.spec.target[len("sqlite:///"):])
                lk = _FileLock(path + ".zerodl-lock")
            self._locks[study_name] = lk
        return lk()

    def start_heartbeat(self, trial_id: int):
        if not self.has_heartbeat:
            return _NoHeartbeat()
        return _Heartbeat(self.rdb, trial_id, self.heartbeat_interval)

    def close(self):
        if self.rdb is not None:
            with contextlib.suppress(Exception):
                self.rdb.engine.dispose()


def _with_driver(url: str, require_psycopg2) -> str:
    """Name the driver in the URL: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3,
    while zerodl[search] installs psycopg2.  Use whichever is installed (psycopg2 first)."""
    import importlib.util

    scheme, rest = url.split("://", 1)
    if "+" in scheme:
        require = {"postgresql+psycopg2": require_psycopg2}.get(scheme)
        if require:
            require()
        return url
    if importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + rest
    if importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + rest
    require_psycopg2()  # raises with the install hint
    return url


def open_storage(spec: StorageSpec, heartbeat_interval: int = 5, grace_period: int = 20,
                 stale_callback=None) -> StorageHandle:
    """Open (and for journal files create) the storage; StorageError if that fails."""
    from ._optuna import journal_storage, rdb_storage, require_psycopg2

    if spec.kind == "journal":
        folder = os.path.dirname(spec.target)
        try:
            os.makedirs(folder, exist_ok=True)
            with open(spec.target, "ab"):
                pass
            with open(spec.target + ".zerodl-lock", "a"):
                pass
        except OSError as exc:
            raise StorageError(f"cannot create the journal file {spec.target}: "
                               f"{exc.strerror or exc}") from None
        try:
            return StorageHandle(spec, journal_storage(spec.target))
        except Exception as exc:
            raise StorageError(f"cannot open the journal file {spec.target}: {exc}") from None
    engine_kwargs = {"pool_pre_ping": True}
    url = spec.target
    if spec.kind == "postgresql":
        url = _with_driver(url, require_psycopg2)
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    else:
        path = spec.target[len("sqlite:///"):]
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise StorageError(f"{spec.display}: folder {folder} does not exist")
    hb = int(heartbeat_interval)
    grace = int(grace_period)
    if hb < 1 or grace <= hb:
        raise StorageError(f"heartbeat interval ({hb} s) must be >= 1 and below the grace "
                           f"period ({grace} s)")
    try:
        rdb = rdb_storage(url, hb, grace, stale_callback, engine_kwargs)
    except Exception as exc:
        msg = str(exc).strip().splitlines()
        reason = next((m.strip() for m in msg if m.strip() and not m.startswith("(Background")),
                      type(exc).__name__)
        raise StorageError(f"cannot open storage {spec.display}: {reason}") from None
    return StorageHandle(spec, rdb, rdb, hb, grace)
