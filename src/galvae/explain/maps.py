"""Latent maps: the median of a property in bins of two rotated latents (the paper's Figure 1).

Bins holding fewer than ``min_count`` galaxies with a finite value are left empty (NaN), so a map never
shows a median of one or two objects as if it were a trend.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np


@dataclass
class BinnedMap:
    """Median of one property on a 2-d grid of latents."""

    x_name: str
    y_name: str
    prop: str
    x_edges: np.ndarray   # (nx + 1,)
    y_edges: np.ndarray   # (ny + 1,)
    median: np.ndarray    # (nx, ny), NaN where count < min_count
    count: np.ndarray     # (nx, ny) galaxies with a finite value per bin
    min_count: int


def latent_edges(values, bins: int = 20, clip_percent: float = 1.0) -> np.ndarray:
    """``bins + 1`` equal-width edges spanning the [clip, 100 − clip] percentiles of the finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    lo, hi = np.percentile(v, [clip_percent, 100 - clip_percent]) if v.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def binned_median(x, y, values, x_edges, y_edges, min_count: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(median, count), each (nx, ny): the median of ``values`` per (x, y) bin, NaN below ``min_count``."""
    from scipy.stats import binned_statistic_2d

    x, y, v = (np.asarray(a, dtype=np.float64) for a in (x, y, values))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(v)
    bins = [np.asarray(x_edges), np.asarray(y_edges)]
    if not ok.any():
        shape = (len(x_edges) - 1, len(y_edges) - 1)
        return np.full(shape, np.nan), np.zeros(shape, dtype=int)
    count = binned_statistic_2d(x[ok], y[ok], v[ok], "count", bins=bins).statistic.astype(int)
    median = binned_statistic_2d(x[ok], y[ok], v[ok], "median", bins=bins).statistic
    median[count < min_count] = np.nan
    return median, count


def latent_map(latents, props, prop: str, i: int = 0, j: int = 1, bins: int = 20,
               min_count: int = 5, latent_names=None) -> BinnedMap:
    """The map of ``prop`` in the (D_{i+1}, D_{j+1}) plane."""
    latents = np.asarray(latents, dtype=np.float64)
    names = latent_names or [f"D{k + 1}" for k in range(latents.shape[1])]
    xe, ye = latent_edges(latents[:, i], bins), latent_edges(latents[:, j], bins)
    median, count = binned_median(latents[:, i], latents[:, j], props[prop], xe, ye, min_count)
    return BinnedMap(names[i], names[j], prop, xe, ye, median, count, min_count)


def bins_for(n: int, min_count: int = 5, max_bins: int = 20, min_bins: int = 3) -> int:
    """Bins per axis so that a typical occupied bin can reach ``min_count``: ⌊√(n / (2 min_count))⌋,
    clipped to [min_bins, max_bins] (20 × 20 for a large survey, 3 × 3 for 60 galaxies)."""
    return int(np.clip(np.floor(np.sqrt(n / (2.0 * max(min_count, 1)))), min_bins, max_bins))


def latent_pairs(d: int, max_pairs: int = 3) -> list[tuple[int, int]]:
    """(D1, D2) first, then the next pairs in order: (0, 1), (0, 2), (0, 3), (1, 2), …"""
    return list(combinations(range(d), 2))[:max_pairs]


def latent_maps(latents, props, names, pairs=None, bins: int | None = None, min_count: int = 5,
                max_bins: int = 20) -> list[BinnedMap]:
    """Maps of every property in ``names`` that ``props`` has, for each latent pair (default: the first 3).

    ``bins`` per axis; by default :func:`bins_for` the number of spectra (at most ``max_bins``).
    """
    latents = np.asarray(latents, dtype=np.float64)
    bins = bins or bins_for(int(np.all(np.isfinite(latents), axis=1).sum()), min_count, max_bins)
    pairs = latent_pairs(latents.shape[1]) if pairs is None else pairs
    have = props.colnames if hasattr(props, "colnames") else list(props)
    return [latent_map(latents, props, p, i, j, bins, min_count)
            for i, j in pairs for p in names if p in have]


def maps_to_npz(maps: list[BinnedMap]) -> dict:
    """Flat arrays for ``np.savez``: one key group per map (``{k}_median``, …) plus ``index``."""
    out = {"index": np.array([f"{m.x_name}|{m.y_name}|{m.prop}|{m.min_count}" for m in maps])}
    for k, m in enumerate(maps):
        out.update({f"{k}_x_edges": m.x_edges, f"{k}_y_edges": m.y_edges, f"{k}_median": m.median,
                    f"{k}_count": m.count})
    return out


def maps_from_npz(data) -> list[BinnedMap]:
    """Inverse of :func:`maps_to_npz` (``data`` from ``np.load``)."""
    out = []
    for k, key in enumerate(data["index"]):
        x, y, prop, min_count = str(key).split("|")
        out.append(BinnedMap(x, y, prop, data[f"{k}_x_edges"], data[f"{k}_y_edges"], data[f"{k}_median"],
                             data[f"{k}_count"], int(min_count)))
    return out
