"""The data directory's disk running full: telling it apart, and a small reserve that lets a failure be recorded.

When the data directory's disk is full, a job fails at its next write there (its checkpoint, its model file,
or its epoch's row in the default SQLite database, which lives on the same disk). Checkpoints and model files
are written to a temporary name and renamed into place (:func:`forgeml.io.save`), so the failed write leaves
the previous checkpoint whole and nothing half-written in its place; the job ends ``failed`` with an error that
says so (:class:`DiskFullError`), and ``resume`` continues it from that checkpoint once space is freed.

Recording that failure is itself a write to the database, which on SQLite needs a little room on the same full
disk. So the server keeps :data:`RESERVE_NAME`, a file of :data:`RESERVE_BYTES` in the data directory, made at
start and again whenever a job is submitted (when there is room for it); a worker whose write failed for lack
of space deletes it before recording the failure. Requests that write to a full disk (a dataset upload, a row
in SQLite) answer ``507 Insufficient Storage`` with a message that names the disk.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

__all__ = [
    "RESERVE_BYTES",
    "RESERVE_NAME",
    "DiskFullError",
    "disk_full_message",
    "ensure_reserve",
    "is_disk_full",
    "naming_disk_full",
    "release_reserve",
    "run_with_reserve",
]

log = logging.getLogger("forgeml.server.storage")

RESERVE_NAME = ".forgeml-reserve"
RESERVE_BYTES = 1 << 20  # room for a job's failure to be recorded in SQLite on a full disk
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_FULL_MESSAGES = ("database or disk is full", "no space left on device", "could not extend file")


class DiskFullError(OSError):
    """A write to the data directory failed for lack of space; its message says what was being written and what
    was kept (``errno`` is ENOSPC)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a write that found no space: ENOSPC or EDQUOT,
    SQLite's "database or disk is full", or PostgreSQL's disk-full error."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        text = str(exc).lower()
        if any(m in text for m in _FULL_MESSAGES) or type(exc).__name__ == "DiskFull":
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
        seen += 1
    return False


def disk_full_message(what: str, kept: str | None = None) -> str:
    """``no space left on device while <what> (the data directory's disk is full)[; <kept>]``: the error of a job
    or a request that could not write."""
    message = f"no space left on device while {what} (the data directory's disk is full)"
    return f"{message}; {kept}" if kept else message


@contextlib.contextmanager
def naming_disk_full(what: str, kept: str | None = None):
    """Re-raise a full-disk error from the block as :class:`DiskFullError` with :func:`disk_full_message`'s text
    (``what`` was being written, ``kept`` says what is intact); other errors pass as they are."""
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(disk_full_message(what, kept)) from exc


def ensure_reserve(data_dir: Path, size: int = RESERVE_BYTES) -> bool:
    """Make the reserve file (``size`` bytes of real blocks) when it is missing and there is room; True when it is
    there afterwards. Never raises."""
    path = Path(data_dir) / RESERVE_NAME
    try:
        if path.is_file() and path.stat().st_size >= size:
            return True
        tmp = path.with_name(f"{RESERVE_NAME}.tmp")
        try:
            with tmp.open("wb") as fh:
                fh.write(b"\0" * size)  # written, not truncated: a sparse file would reserve nothing
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return True
    except OSError as exc:
        log.warning("no reserve file in the data directory: %s", exc)
        return False


def release_reserve(data_dir: Path) -> bool:
    """Delete the reserve file, so that a failure can be recorded on a full disk; True when there was one."""
    try:
        (Path(data_dir) / RESERVE_NAME).unlink()
    except OSError:
        return False
    log.warning("the data directory's disk is full: released the reserve file to record the failure")
    return True


def run_with_reserve(db, data_dir: Path, work):
    """``db.run(work)`` (run again while a database server is away), and on a full disk once more after the
    reserve file is released, so that a job's end is recorded in SQLite on that disk."""
    try:
        return db.run(work)
    except Exception as exc:
        if not is_disk_full(exc) or not release_reserve(data_dir):
            raise
        return db.run(work)
