"""Mutual information and Spearman ρ between the rotated latents D1…Dd and physical properties.

MI is the Kraskov–Stögbauer–Grassberger (KSG) k-nearest-neighbour estimate of scikit-learn's
``mutual_info_regression`` (k = 3, seeded), in nats: the paper's Figure 4.

Uncertainty: the standard deviation of the estimate over ``n_boot`` random half-samples drawn *without*
replacement. A classical bootstrap would repeat points, and repeated points sit at zero distance from
each other, which biases a nearest-neighbour estimator upward. For half-samples (m = n/2) the spread of
the subsample estimate estimates the full-sample standard error: Var θ_n ≈ Var* θ_m · m / (n − m).
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

PROPERTIES = ("logmstar", "logsfr", "logssfr", "metallicity", "tau", "vdisp", "a_b", "a_v")
PROPERTY_LABELS = {
    "logmstar": "log M*/M☉", "logsfr": "log SFR", "logssfr": "log sSFR", "metallicity": "metallicity",
    "tau": "τ", "vdisp": "σ_v", "a_b": "A_B", "a_v": "A_V", "mwage": "mass-weighted age", "logu": "log U",
    "logzsol": "log Z/Z☉", "age": "age", "ew_halpha": "EW(Hα)", "z": "redshift",
}
# truth columns that are bookkeeping, not physics
TRUTH_SKIP = ("id", "index", "plate", "mjd", "fiber", "specobjid", "filename", "ra", "dec", "subclass")


def numeric_columns(table, skip=TRUTH_SKIP) -> list[str]:
    """Names of a table's numeric (or boolean) 1-d columns, minus ``skip``."""
    out = []
    for name in table.colnames:
        col = np.asarray(table[name])
        if name in skip or col.ndim != 1 or col.dtype.kind not in "biuf":
            continue
        out.append(name)
    return out


def _finite_rows(latents: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.all(np.isfinite(latents), axis=1) & np.isfinite(y))


def mutual_information(latents, y, n_neighbors: int = 3, seed: int = 0) -> np.ndarray:
    """KSG MI (nats) between each latent column (N, d) and one property y (N,); finite rows only."""
    from sklearn.feature_selection import mutual_info_regression

    latents = np.atleast_2d(np.asarray(latents, dtype=np.float64))
    y = np.asarray(y, dtype=np.float64)
    rows = _finite_rows(latents, y)
    if len(rows) <= n_neighbors + 1 or np.ptp(y[rows]) == 0:
        return np.full(latents.shape[1], np.nan)
    mi = mutual_info_regression(latents[rows], y[rows], n_neighbors=n_neighbors, random_state=seed)
    return np.asarray(mi, dtype=np.float64)  # sklearn may hand back integer zeros, where NaN cannot go


def mutual_information_with_errors(latents, y, n_boot: int = 30, n_neighbors: int = 3,
                                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """MI (nats, per latent), its half-sample standard error, and the number of rows used."""
    latents = np.atleast_2d(np.asarray(latents, dtype=np.float64))
    y = np.asarray(y, dtype=np.float64)
    rows = _finite_rows(latents, y)
    mi = mutual_information(latents[rows], y[rows], n_neighbors, seed)
    m = len(rows) // 2
    if n_boot < 2 or m <= n_neighbors + 1:
        return mi, np.full(mi.shape, np.nan), len(rows)
    rng = np.random.default_rng(seed)
    draws = np.array([mutual_information(latents[sub], y[sub], n_neighbors, seed + 1 + b)
                      for b, sub in enumerate(rng.permutation(rows)[:m] for _ in range(n_boot))])
    err = np.nanstd(draws, axis=0, ddof=1) * np.sqrt(m / (len(rows) - m))
    return mi, err, len(rows)


def capped_rows(n: int, max_samples: int | None, seed: int) -> np.ndarray:
    """All row indices, or a seeded random subset of ``max_samples`` of them (KSG is O(n log n) per call)."""
    if max_samples is None or n <= max_samples:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_samples, replace=False))


def mi_table(latents, props, names, latent_names=None, n_boot: int = 30, n_neighbors: int = 3,
             max_samples: int | None = 5000, seed: int = 0, source: str = "catalog", progress: bool = False):
    """Long table of MI: one row per (property, latent) with columns property, source, latent, mi, mi_err, n.

    ``props`` is a table or mapping of columns aligned with ``latents`` (N, d); properties missing from it
    are skipped. MI and mi_err are in nats.
    """
    from astropy.table import Table
    from .._progress import tqdm

    latents = np.atleast_2d(np.asarray(latents, dtype=np.float64))
    latent_names = latent_names or [f"D{j + 1}" for j in range(latents.shape[1])]
    rows = capped_rows(latents.shape[0], max_samples, seed)
    out = {k: [] for k in ("property", "source", "latent", "mi", "mi_err", "n")}
    present = [n for n in names if _has(props, n)]
    for name in tqdm(present, desc=f"MI ({source})", disable=not progress, unit="property"):
        y = np.asarray(props[name], dtype=np.float64)[rows]
        mi, err, n = mutual_information_with_errors(latents[rows], y, n_boot, n_neighbors, seed)
        for j, lname in enumerate(latent_names):
            for k, v in zip(out, (name, source, lname, mi[j], err[j], n)):
                out[k].append(v)
    table = Table(out, dtype=(str, str, str, float, float, int)) if present else _empty_mi()
    table["mi"].unit = table["mi_err"].unit = "nat"
    table.meta.update({"estimator": f"KSG (sklearn mutual_info_regression, n_neighbors={n_neighbors})",
                       "uncertainty": f"std over {n_boot} half-samples without replacement",
                       "seed": seed, "max_samples": max_samples})
    return table


def _empty_mi():
    from astropy.table import Table

    return Table(names=("property", "source", "latent", "mi", "mi_err", "n"), dtype=(str, str, str, float, float, int))


def _has(props, name: str) -> bool:
    names = props.colnames if hasattr(props, "colnames") else list(props)
    return name in names and np.isfinite(np.asarray(props[name], dtype=np.float64)).sum() > 3


def spearman_table(latents, props, names, latent_names=None, source: str = "catalog"):
    """Long table of Spearman ρ: columns property, source, latent, rho, p_value, n (finite rows)."""
    from astropy.table import Table
    from scipy.stats import spearmanr

    latents = np.atleast_2d(np.asarray(latents, dtype=np.float64))
    latent_names = latent_names or [f"D{j + 1}" for j in range(latents.shape[1])]
    out = {k: [] for k in ("property", "source", "latent", "rho", "p_value", "n")}
    for name in (n for n in names if _has(props, n)):
        y = np.asarray(props[name], dtype=np.float64)
        for j, lname in enumerate(latent_names):
            ok = np.isfinite(latents[:, j]) & np.isfinite(y)
            if ok.sum() > 2 and np.ptp(y[ok]) > 0 and np.ptp(latents[ok, j]) > 0:
                rho, p = spearmanr(latents[ok, j], y[ok])
            else:
                rho, p = np.nan, np.nan
            for k, v in zip(out, (name, source, lname, float(rho), float(p), int(ok.sum()))):
                out[k].append(v)
    if not out["property"]:
        return Table(names=tuple(out), dtype=(str, str, str, float, float, int))
    return Table(out, dtype=(str, str, str, float, float, int))


def tracking_summary(mi, spearman, latent_names) -> list[dict]:
    """For each latent: the property with the highest MI, with its MI ± error and Spearman ρ."""
    out = []
    for lname in latent_names:
        sub = mi[(mi["latent"] == lname) & np.isfinite(mi["mi"])]
        if len(sub) == 0:
            out.append({"latent": lname, "property": None})
            continue
        best = sub[int(np.argmax(sub["mi"]))]
        rho = spearman[(spearman["latent"] == lname) & (spearman["property"] == best["property"])
                       & (spearman["source"] == best["source"])]
        out.append({"latent": lname, "property": str(best["property"]), "source": str(best["source"]),
                    "mi": float(best["mi"]), "mi_err": float(best["mi_err"]),
                    "rho": float(rho["rho"][0]) if len(rho) else float("nan")})
    return out
