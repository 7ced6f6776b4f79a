"""One process per run folder: an exclusive `fcntl.flock` on <run folder>/.mnist-drill.lock while a run trains there.
The kernel releases a flock however its holder exits: a killed run's lock never blocks, the next run takes it over."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from ..errors import UsageError
from .files import TEMP_SUFFIX

try:
    import fcntl
except ImportError:  # Windows: no flock; runs go unlocked there
    fcntl = None

LOCK_NAME = ".mnist-drill.lock"
NO_DETAILS = "a process that left no details"
_HELD: set[Path] = set()  # lock files this process holds: lock_holder() does not report them


@contextlib.contextmanager
def run_lock(run_dir: Path, echo: Callable[[str], None] = print):
    """Hold `run_dir`'s lock for the block, creating the folder (and removing the folders it created if they are
    still empty at the end: a run refused before writing leaves no trace). Another live holder: UsageError."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"{run_dir}: exists and is not a folder")
    created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, left_by = _acquire(path, run_dir)  # OSError: the lock file cannot be created
    except OSError as err:
        raise UsageError(f"{run_dir}: cannot write here ({err.strerror})") from None
    if fd is None:  # no locks on this file system: run as before locks existed, and say so
        echo(f"{run_dir}: cannot be locked here ({left_by}); a second run of this folder would not be refused")
        yield
        return
    _HELD.add(path.resolve())
    try:
        if left_by is not None:
            echo(f"{run_dir}: took over the lock left by {left_by}, which no longer runs")
        _record(fd)
        for tmp in run_dir.glob(f".*{TEMP_SUFFIX}"):  # atomic writes a killed run left; nobody else writes here now
            with contextlib.suppress(OSError):
                tmp.unlink()
        yield
    finally:
        _HELD.discard(path.resolve())
        with contextlib.suppress(OSError):
            os.unlink(path)  # before closing: see the inode check in _acquire
        os.close(fd)
        for folder in created:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty


def refuse_if_in_use(run_dir: Path) -> None:
    """UsageError when another live process holds `run_dir`'s lock: what is there is still changing."""
    if (holder := lock_holder(run_dir / LOCK_NAME)) is not None:
        raise in_use(run_dir, holder)


def in_use(run_dir: Path, holder: str) -> UsageError:
    return UsageError(f"{run_dir}: in use by another mnist-drill ({holder}); wait for it to finish, or stop it first")


def lock_holder(path: Path) -> str | None:
    """'pid N on HOST since TIME' when another live process holds the lock file `path`, else None."""
    if fcntl is None or path.resolve() in _HELD:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # taken: nobody holds it (closing the file releases it)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return _holder(fd) or NO_DETAILS
    finally:
        os.close(fd)
    return None


def _acquire(path: Path, run_dir: Path) -> tuple[int | None, str | None]:
    """Open and flock `path`; returns the fd and who a dead holder was (None if it recorded nothing),
    or (None, why) where the file system has no locks."""
    if fcntl is None:
        return None, "no file locks on this system"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _holder(fd)
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise in_use(run_dir, holder or NO_DETAILS) from None
            if holder is None:  # the empty file this call created
                with contextlib.suppress(OSError):
                    os.unlink(path)
            return None, err.strerror  # ENOLCK, EOPNOTSUPP: some network and FUSE file systems
        # The previous holder removes the file as it finishes; if it did so between our open and our
        # flock, we hold a file nobody else will open: start again with the file now at `path`.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd, _holder(fd)
        os.close(fd)


def _record(fd: int) -> None:
    since = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
    with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, only the note is lost
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


def _holder(fd: int) -> str | None:
    """Who the holder recorded it was; None for an empty or unreadable file, NO_DETAILS for what is not our record."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        info = json.loads(text) if text else None
    except OSError:
        return None
    except ValueError:
        return NO_DETAILS
    if not text:
        return None
    if not isinstance(info, dict) or not info:
        return NO_DETAILS
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('since', '?')}"
