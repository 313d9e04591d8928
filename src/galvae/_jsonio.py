"""Atomic JSON files, the way every stage writes its small artifacts (config, metrics, summaries), and
the error a damaged one gives when read back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ._atomic import write_text


def to_jsonable(o):
    """``json.dumps`` default: NumPy scalars and arrays, tuples and paths as plain JSON values."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (np.ndarray, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (temporary file, then rename)."""
    write_text(path, json.dumps(obj, indent=2, default=to_jsonable))


class DamagedFileError(ValueError):
    """A file a stage wrote cannot be read back (truncated, overwritten, edited)."""


def set_aside(path) -> Path:
    """Rename a damaged ``path`` to ``<path>.damaged`` (kept for a look, out of the way of a rerun)."""
    path = Path(path)
    aside = path.with_name(path.name + ".damaged")
    try:
        os.replace(path, aside)
    except OSError:
        return path
    return aside


def damaged(path, exc: BaseException, redo: str, aside: bool = False) -> DamagedFileError:
    """The error for a damaged ``path``: which file, what is wrong, and ``redo`` (the command that makes it
    again). ``aside``: the file is first moved out of the way (:func:`set_aside`), so that ``redo`` rewrites it."""
    where = f"; moved to {set_aside(path)}" if aside else ""
    return DamagedFileError(f"{path} is damaged ({type(exc).__name__}: {exc}){where}. {redo}")


def read_json(path, redo: str, aside: bool = False):
    """The JSON in ``path``; a file that does not parse gives :func:`damaged`'s error."""
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise damaged(path, exc, redo, aside) from exc
