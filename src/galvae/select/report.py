"""Choosing the best cell of a grid: the paper's BIC, with its seed spread, and the criteria beside it.

Numbers are grouped by model (condition set, d). Two ways of summarising a model's seeds:

``mean``       the mean over seeds of each cell's test mean (the paper's BIC, averaged over seeds).
``best_val``   the seed with the best validation loss (lowest negative ELBO on ``val``). Seeds are
               restarts of a non-convex fit; BIC is defined at the maximum-likelihood fit, which the best
               restart approximates, and validation (not test) picks it, so the test numbers stay honest.
               The mean instead charges a model for its optimiser's failed restarts (docs/dimension_recovery.md).

Either way the standard deviation over seeds is reported. Differences between two models are also
computed on the same test spectra (paired), whose standard error is far smaller than the spread of the
per-spectrum values themselves.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import likelihood as lk

DEFINITIONS = {
    "bic": "mean over test spectra of BIC_i = k ln P_i - 2 ln L_i (k = d + n_conditions, P_i good pixels, "
           "L_i at the posterior mean), then the mean over seeds; lower is better (the paper's criterion)",
    "bic_best_restart": "the same per-cell test BIC, taken from the seed with the lowest validation loss; "
                        "lower is better",
    "iwae": "plain VAEs only: mean over test spectra of the importance-weighted bound on ln p(x), then the "
            "mean over seeds; higher is better (a CVAE's bound is on ln p(x|c), not comparable)",
    "iwae_best_restart": "plain VAEs only: the same per-cell IWAE bound, from the seed with the lowest validation "
                         "loss; higher is better",
}
PLAIN_VAES_ONLY = {"iwae", "iwae_best_restart"}
SEED_CHOICE = {"bic": "mean", "bic_best_restart": "best_val", "iwae": "mean", "iwae_best_restart": "best_val"}
COLUMN = {"bic": "bic_mean", "bic_best_restart": "bic_mean", "iwae": "iwae_mean", "iwae_best_restart": "iwae_mean"}
LOWER_IS_BETTER = {"bic": True, "bic_best_restart": True, "iwae": False, "iwae_best_restart": False}
SCORE_KEY = {"bic_mean": "bic", "iwae_mean": "iwae", "elbo_mean": "elbo", "ln_l_mean": "ln_likelihood"}


def done_rows(table) -> list[dict]:
    return [dict(zip(table.colnames, r, strict=True)) for r in table if r["status"] == "done"]


def lowest_val_loss(rows: list) -> dict:
    """Of a model's seeds (grid rows), the one with the lowest validation loss: restarts are told apart
    on ``val``, so that its test numbers stay honest."""
    return min(rows, key=lambda r: float(r["val_loss"]) if np.isfinite(r["val_loss"]) else math.inf)


def model_groups(table, column: str, seeds: str = "mean") -> list[dict]:
    """Per (conditions, d): ``value`` (the mean over seeds, or the best-validation seed's value), the std
    over seeds, each seed's value and cell, and the seeds that ``value`` stands for."""
    groups: dict = {}
    for r in done_rows(table):
        groups.setdefault((str(r["conditions"]), int(r["d"])), []).append(r)
    out = []
    for (label, d), rows in groups.items():
        values = np.array([float(r[column]) for r in rows])
        best_val = lowest_val_loss(rows)
        if seeds == "best_val":
            value, used = float(best_val[column]), [int(best_val["seed"])]
        elif seeds == "mean":
            value, used = float(values.mean()), [int(r["seed"]) for r in rows]
        else:
            raise ValueError(f"seeds must be 'mean' or 'best_val', got {seeds!r}")
        out.append({"conditions_label": label, "d": d, "k": int(rows[0]["k"]),
                    "n_conditions": int(rows[0]["n_conditions"]), "mean": value,
                    "seed_std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                    "seeds": {int(r["seed"]): float(r[column]) for r in rows},
                    "cells": {int(r["seed"]): str(r["cell"]) for r in rows}, "used_seeds": used,
                    "best_val_seed": int(best_val["seed"])})
    return out


def per_spectrum_values(cells_dir: Path, group: dict, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, per-spectrum ``key`` averaged over the group's used seeds), or None when scores are missing."""
    from .evaluate import load_scores

    values, ids = [], None
    for seed in group["used_seeds"]:
        path = Path(cells_dir) / group["cells"][seed] / "scores.npz"
        if not path.exists():
            return None
        s = load_scores(path)
        order = np.argsort(s["ids"])
        if ids is None:
            ids = s["ids"][order]
        elif not np.array_equal(ids, s["ids"][order]):
            return None
        values.append(np.asarray(s[key], dtype=float)[order])
    return (ids, np.mean(values, axis=0)) if values else None


def paired_difference(cells_dir: Path, a: dict, b: dict, key: str) -> dict | None:
    """Mean over common test spectra of key(b) − key(a) (per spectrum, over each group's used seeds),
    with its standard error."""
    pa, pb = per_spectrum_values(cells_dir, a, key), per_spectrum_values(cells_dir, b, key)
    if pa is None or pb is None:
        return None
    common, ia, ib = np.intersect1d(pa[0], pb[0], return_indices=True)
    if common.size == 0:
        return None
    mean, err = lk.mean_and_stderr(pb[1][ib] - pa[1][ia])
    return {"mean": mean, "stderr": err, "n": int(common.size)}


def ranked(table, criterion: str) -> list[dict]:
    """The models, best first, under one criterion of :data:`DEFINITIONS`."""
    groups = [g for g in model_groups(table, COLUMN[criterion], SEED_CHOICE[criterion]) if np.isfinite(g["mean"])
              and (criterion not in PLAIN_VAES_ONLY or g["n_conditions"] == 0)]
    return sorted(groups, key=lambda g: g["mean"] if LOWER_IS_BETTER[criterion] else -g["mean"])


def describe(group: dict, criterion: str) -> dict:
    """A model's entry in best.json."""
    value_key = criterion.split("_best_restart")[0]
    seed = group["best_val_seed"]  # the seed explained and pointed to: told apart on val, never on test
    return {"criterion": criterion, "definition": DEFINITIONS[criterion],
            "conditions_label": group["conditions_label"],
            "conditions": [] if group["conditions_label"] == "vae" else group["conditions_label"].split("+"),
            "d": group["d"], "k": group["k"], f"{value_key}_mean": group["mean"],
            f"{value_key}_seed_std": group["seed_std"], f"{value_key}_by_seed": group["seeds"],
            "best_seed": seed, "model_dir": str(Path("cells") / group["cells"][seed])}


def choice(table, cells_dir, criterion: str, n_ranking: int = 10) -> dict | None:
    """The best model under ``criterion``, the ranking, and its paired difference to the runner-up."""
    models = ranked(table, criterion)
    if not models:
        return None
    out = describe(models[0], criterion)
    value_key = criterion.split("_best_restart")[0]
    out["ranking"] = [{"conditions_label": g["conditions_label"], "d": g["d"], "k": g["k"],
                       f"{value_key}_mean": g["mean"], f"{value_key}_seed_std": g["seed_std"]}
                      for g in models[:n_ranking]]
    if len(models) > 1:
        out["runner_up_paired_difference"] = paired_difference(cells_dir, models[0], models[1],
                                                               SCORE_KEY[COLUMN[criterion]])
    return out


def best_model(table, cells_dir) -> dict | None:
    """best.json: the paper's choice (lowest mean BIC over seeds) with its spread and runner-up, and
    beside it the best-restart BIC, the IWAE bound and the latent activity."""
    best = choice(table, cells_dir, "bic")
    if best is None:
        return best
    best["other_criteria"] = {c: choice(table, cells_dir, c, n_ranking=5)
                              for c in ("bic_best_restart", "iwae", "iwae_best_restart")}
    best["other_criteria"]["active_dims"] = active_dims_summary(table)
    best["recommended"] = {
        "criterion": "bic_best_restart",
        "why": "seeds are restarts of a non-convex fit: the mean over seeds charges a model for its failed "
               "restarts, the best-validation restart does not (docs/dimension_recovery.md)"}
    return best


def active_dims_summary(table) -> dict:
    """Per condition set: the number of active latent dimensions of its largest-d models, per seed."""
    out: dict = {}
    rows = done_rows(table)
    for label in sorted({str(r["conditions"]) for r in rows}):
        mine = [r for r in rows if str(r["conditions"]) == label]
        d_max = max(int(r["d"]) for r in mine)
        out[label] = {"d": d_max, "n_active_by_seed": {int(r["seed"]): int(r["n_active"]) for r in mine
                                                       if int(r["d"]) == d_max}}
    return out
