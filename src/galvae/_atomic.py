"""Atomic file writes, the one way every stage puts a file on disk, and a full disk's clear message.

:func:`atomic_write` hands the writer a temporary name in the target's own folder
(``.tmp-<pid>-<random>-<name>``: hidden, unique to the writer, ending with the target's name so that
writers that go by the suffix, such as ``np.savez``, keep it), flushes it to the disk, and renames it
onto the target: a reader, or a rerun after a crash, sees the old file or the new one, never half of
one. On any error the temporary file is removed; a full disk (ENOSPC, or a quota: EDQUOT) becomes a
:class:`DiskFullError` that names the file and says how to finish the stage.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path

TMP_PREFIX = ".tmp-"
_FULL = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = tuple(os.strerror(e) for e in _FULL)  # "No space left on device", "Disk quota exceeded"


class DiskFullError(OSError):
    """A write met a full disk (or quota): nothing was marked complete; free space and rerun."""


def disk_full(exc: BaseException | None) -> bool:
    """True when ``exc``, or an error it was raised from, is a full disk or quota.

    Some writers (torch.save) report the failed write as a RuntimeError quoting the system's message."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return True
        if any(text in str(exc) for text in _FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(path, exc: BaseException | None = None) -> DiskFullError:
    """The error a stage stops with when writing ``path`` met a full disk."""
    return DiskFullError(errno.ENOSPC, f"no space left on the device (or the disk quota is reached) while writing "
                                       f"{path}; the partial file was removed and nothing was marked complete. "
                                       f"Free some space (or write to another filesystem) and rerun the same "
                                       f"command: it resumes from what was finished"
                                       + (f" ({exc})" if exc is not None and str(exc) else ""))


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path`` (see the module docstring)."""
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(3)}-{path.name}")


def atomic_write(path, write: Callable[[Path], object], durable: bool = True) -> Path:
    """Call ``write(tmp)``, then rename ``tmp`` onto ``path``; returns ``path``.

    ``durable``: fsync the file before the rename and the folder after it, so that a machine that
    crashes (not just a process) keeps the old file or the whole new one; off for caches that are
    checked when read (the mock's spectra), where it would cost more than the file.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        if durable:
            _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except BaseException as exc:  # interrupted too: never leave the temporary file behind
        try:
            tmp.unlink()
        except OSError:
            pass
        if disk_full(exc) and not isinstance(exc, DiskFullError):
            raise disk_full_error(path, exc) from exc
        raise
    if durable:
        try:
            _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:  # folders cannot be fsynced everywhere (some network filesystems): the rename stands
            pass
    return path


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path, data: bytes, durable: bool = True) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), durable)


def write_text(path, text: str, durable: bool = True) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), durable)
