"""Atomic file writes: a temp file in the target's folder, fsync, then os.replace.

A reader - or a crash - never sees a half-written checkpoint, cache, figure or report.
"""
from __future__ import annotations

import contextlib
import os
import tempfile


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb", suffix: str = ""):
    """Yield a file object whose content replaces ``path`` when the block succeeds.

    The file gets the usual permissions (0666 & ~umask; mkstemp would leave 0600) and is
    fsynced before the rename; on any error the temp file is removed and ``path`` is
    left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text: str) -> str:
    with atomic_file(path, "w") as fh:
        fh.write(text)
    return os.fspath(path)
