"""One writer per output folder: a lock that `prepare`, `train`, `select` and `run` hold while they write.

The lock of folder ``F`` is the file ``.F.galvae-lock`` beside it (in F's parent, so that a stage that
deletes and rebuilds F, as `prepare` does when its inputs change, cannot delete the lock with it). A
writer holds an exclusive ``flock`` on that file for as long as it runs and writes into it who it is
(host, PID, start time, command line), so that a second writer is refused at once with a message
naming the first. The kernel drops the ``flock`` when its process ends, however it ends: a lock file
left by a killed run is stale by construction, and the next run takes it over (and says so). On NFS,
Linux turns ``flock`` into an NFS byte-range lock, which the server arbitrates between machines
(docs/cluster_safety.md says what that relies on).

Releasing deletes the file before dropping the lock; a process that opened the old file in between
finds, once it holds the lock, that the path no longer names the file it locked, and starts again.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import socket
import sys
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".galvae-lock"

_held: dict[str, list] = {}  # lock path -> [fd, depth]: a process re-entering its own lock nests


class FolderInUseError(OSError):
    """Another process holds the folder's lock (or the lock of a folder holding it)."""


def lock_path(folder) -> Path:
    """The lock file of ``folder``: ``.<name>.galvae-lock`` in its parent."""
    folder = Path(os.path.abspath(folder)).resolve()
    return folder.parent / f".{folder.name}{SUFFIX}"


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process (it is starting and has not yet written who it is)"
    return (f"PID {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')} "
            f"({holder.get('command', '?')})")


def _read_holder(fd: int) -> dict | None:
    try:
        text = os.pread(fd, 65536, 0).decode("utf-8", "replace")
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def _busy(fd: int, shared: bool = False) -> bool:
    """True when another open file holds a conflicting flock on ``fd``'s file."""
    import fcntl

    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True


def _neighbours_in_use(folder: Path, own: Path) -> tuple[Path, dict | None] | None:
    """A folder holding ``folder`` (``run --out R`` while ``select --out R/select``), or one directly
    inside it, whose lock another process holds: (that folder, its holder), or None."""
    candidates = [lock_path(a) for a in folder.parents if a != a.parent]
    if folder.is_dir():
        candidates += sorted(folder.glob(f".*{SUFFIX}"))
    for path in candidates:
        if path == own or str(path) in _held or not path.exists():
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _busy(fd, shared=True):
                return path.parent / path.name[1:-len(SUFFIX)], _read_holder(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
    return None


def acquire(folder, command: str | None = None) -> Path:
    """Take ``folder``'s lock for this process; :class:`FolderInUseError` when another process has it."""
    path = lock_path(folder)
    key = str(path)
    if key in _held:
        _held[key][1] += 1
        return path
    # before creating anything: a folder holding this one (or one inside it) that another run writes
    other = _neighbours_in_use(Path(os.path.abspath(folder)).resolve(), path)
    if other:
        raise FolderInUseError(
            errno.EBUSY, f"{Path(folder)} overlaps {other[0]}, which is in use by another galvae process: "
            f"{_describe(other[1])}. Wait for it to finish (or stop it), then rerun")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if _busy(fd):
                holder = _read_holder(fd)
                raise FolderInUseError(
                    errno.EBUSY, f"{Path(folder)} is in use by another galvae process: {_describe(holder)}. Wait "
                    f"for it to finish (or stop it), then rerun; two writers in one folder would overwrite each "
                    f"other's files (lock file {path})")
        except OSError as exc:
            os.close(fd)
            if isinstance(exc, FolderInUseError):
                raise
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # a filesystem without locks
                log.warning("cannot lock %s (%s): nothing stops a second run from writing into %s at the "
                            "same time", path, exc.strerror, folder)
                return path
            raise
        try:  # the previous holder may have deleted the file between our open and our flock
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    previous = _read_holder(fd)
    if previous:  # a killed run's record: the kernel dropped its flock when the process died
        log.warning("taking over the lock of %s left by %s, which ended without releasing it", folder,
                    _describe(previous))
    me = {"host": socket.gethostname(), "pid": os.getpid(),
          "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
          "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    os.fsync(fd)
    _held[key] = [fd, 1]
    return path


def release(folder) -> None:
    """Give back ``folder``'s lock (the outermost release of a nested one deletes the lock file)."""
    path = lock_path(folder)
    entry = _held.get(str(path))
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _held[str(path)]
    fd = entry[0]
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            path.unlink()  # before closing: nobody can take the lock of a file still being removed
    except OSError:
        pass
    os.close(fd)


@contextlib.contextmanager
def folder_lock(folder, command: str | None = None):
    """``with folder_lock(out): ...``: hold ``out``'s lock for the block."""
    acquire(folder, command)
    try:
        yield
    finally:
        release(folder)
