"""Atomic JSON files, the way every stage writes its small artifacts (config, metrics, summaries)."""

from __future__ import annotations

import json
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
