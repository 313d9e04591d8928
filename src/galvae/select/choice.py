"""Choosing the best cell of a grid: the paper's BIC, with its seed spread, and the criteria beside it.

Numbers are grouped by model (condition set, d). Two ways of summarising a model's seeds:

``mean``       the mean over seeds of each cell's test mean (the paper's BIC, averaged over seeds).
``best_val``   the seed with the best validation loss (lowest negative ELBO on ``val``). Seeds are
               restarts of a non-convex fit; BIC is defined at the maximum-likelihood fit, which the best
               restart approximates, and validation (not test) picks it, so the test numbers stay honest.
               The mean instead charges a model for its optimiser's failed restarts (docs/dimension_recovery.md).

Either way the standard deviation over seeds is reported. Differences between two models are also
computed on the same test spectra (paired, :func:`paired_comparison`), with a standard error that adds
the test sample's (over spectra) and the training's (over seeds).

The recommended choice, ``bic_one_se``, is the **one-standard-error rule** (Breiman et al. 1984;
Hastie, Tibshirani & Friedman 2009, §7.10) on those paired differences: of the models whose mean BIC
is within one paired standard error of the lowest, the one with the fewest parameters k (then the lower
BIC). A difference smaller than its error is not evidence that the larger model describes the
spectra better, so the smaller one is kept (docs/model_selection.md).
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


def per_seed_values(cells_dir: Path, group: dict, key: str, seeds=None) -> tuple[np.ndarray, dict] | None:
    """(sorted ids, {seed: per-spectrum ``key``}) for ``seeds`` (default: the group's used seeds), or None
    when a cell's scores are missing or its test spectra differ."""
    from .evaluate import load_scores

    values, ids = {}, None
    for seed in group["used_seeds"] if seeds is None else seeds:
        path = Path(cells_dir) / group["cells"][seed] / "scores.npz"
        if not path.exists():
            return None
        s = load_scores(path)
        if key not in s:
            return None
        order = np.argsort(s["ids"])
        if ids is None:
            ids = s["ids"][order]
        elif not np.array_equal(ids, s["ids"][order]):
            return None
        values[seed] = np.asarray(s[key], dtype=float)[order]
    return (ids, values) if values else None


def per_spectrum_values(cells_dir: Path, group: dict, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, per-spectrum ``key`` averaged over the group's used seeds), or None when scores are missing."""
    got = per_seed_values(cells_dir, group, key)
    return None if got is None else (got[0], np.mean(list(got[1].values()), axis=0))


def paired_comparison(cells_dir: Path, a: dict, b: dict, key: str = "bic") -> dict | None:
    """key(b) − key(a) on the test spectra both were scored on, each model's seeds averaged per spectrum.

    ``mean``: the mean difference; ``se_spectra``: its standard error over the test spectra (the sample);
    ``se_seeds``: the spread over seeds of each seed's mean difference (seeds paired by number; the
    training's randomness), √(var/n_seeds), 0 with one common seed; ``se``: both in quadrature."""
    pa, pb = per_seed_values(cells_dir, a, key), per_seed_values(cells_dir, b, key)
    if pa is None or pb is None:
        return None
    common, ia, ib = np.intersect1d(pa[0], pb[0], return_indices=True)
    if common.size < 2:
        return None
    va = np.mean([v[ia] for v in pa[1].values()], axis=0)
    vb = np.mean([v[ib] for v in pb[1].values()], axis=0)
    diff = vb - va
    ok = np.isfinite(diff)
    mean, se_spectra = lk.mean_and_stderr(diff[ok])
    seeds = sorted(set(pa[1]) & set(pb[1]))
    per_seed = [float(np.mean((pb[1][s][ib] - pa[1][s][ia])[ok])) for s in seeds]
    se_seeds = float(np.std(per_seed, ddof=1) / math.sqrt(len(per_seed))) if len(per_seed) > 1 else 0.0
    return {"mean": mean, "se_spectra": se_spectra, "se_seeds": se_seeds,
            "se": float(math.hypot(se_spectra, se_seeds)), "n_spectra": int(ok.sum()), "n_seeds": len(seeds),
            # kept for readers of older best.json files
            "stderr": se_spectra, "n": int(ok.sum())}


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
        out["runner_up_paired_difference"] = paired_comparison(cells_dir, models[0], models[1],
                                                               SCORE_KEY[COLUMN[criterion]])
    return out


ONE_SE_DEFINITION = ("of the models whose mean BIC over seeds is within one paired standard error (test spectra "
                     "and seeds) of the lowest, the one with the fewest parameters k, then the lowest BIC")


def one_se_choice(table, cells_dir, plain_only: bool = False) -> dict | None:
    """The one-standard-error rule on BIC (module docstring): the chosen model, and every model's paired
    difference to the lowest mean BIC with its standard error."""
    models = [g for g in ranked(table, "bic") if not plain_only or g["n_conditions"] == 0]
    if not models:
        return None
    lowest = models[0]
    compared = []
    for g in models:
        c = {"mean": 0.0, "se": 0.0, "se_spectra": 0.0, "se_seeds": 0.0} if g is lowest else \
            paired_comparison(cells_dir, lowest, g, "bic")
        within = c is not None and c["mean"] <= c["se"]
        compared.append((g, c, within))
    chosen = min((g for g, _, within in compared if within), key=lambda g: (g["k"], g["mean"]))
    out = describe(chosen, "bic")
    out.update(criterion="bic_one_se", definition=ONE_SE_DEFINITION,
               lowest={"conditions_label": lowest["conditions_label"], "d": lowest["d"], "k": lowest["k"],
                       "bic_mean": lowest["mean"]},
               compared=[{"conditions_label": g["conditions_label"], "d": g["d"], "k": g["k"], "bic_mean": g["mean"],
                          "difference_to_lowest": None if c is None else c["mean"],
                          "se": None if c is None else c["se"], "within_one_se": within}
                         for g, c, within in compared])
    return out


def paired_steps(table, cells_dir) -> dict:
    """Per condition set, each step d → d′ (the next d of the grid) as a paired BIC difference with its
    standard error; and each condition set against the plain VAE at the same d."""
    groups = {(g["conditions_label"], g["d"]): g for g in model_groups(table, "bic_mean")}
    steps, vs_vae = [], []
    for label in dict.fromkeys(lab for lab, _ in groups):
        ds = sorted(d for lab, d in groups if lab == label)
        for d0, d1 in zip(ds, ds[1:]):
            c = paired_comparison(cells_dir, groups[(label, d0)], groups[(label, d1)], "bic")
            if c is not None:
                steps.append({"conditions_label": label, "d_from": d0, "d_to": d1, **_short(c)})
        if label != "vae":
            for d in ds:
                if ("vae", d) in groups:
                    c = paired_comparison(cells_dir, groups[("vae", d)], groups[(label, d)], "bic")
                    if c is not None:
                        vs_vae.append({"conditions_label": label, "d": d, **_short(c)})
    return {"definition": "BIC(second) - BIC(first), mean over the same test spectra; negative: the second is "
                          "better; se combines the test sample's and the seeds' errors",
            "steps": steps, "vs_vae": vs_vae}


def _short(c: dict) -> dict:
    return {k: c[k] for k in ("mean", "se", "se_spectra", "se_seeds", "n_spectra", "n_seeds")}


def best_model(table, cells_dir) -> dict | None:
    """best.json: the paper's choice (lowest mean BIC over seeds) with its spread and runner-up, and
    beside it the best-restart BIC, the IWAE bound and the latent activity."""
    best = choice(table, cells_dir, "bic")
    if best is None:
        return best
    best["other_criteria"] = {c: choice(table, cells_dir, c, n_ranking=5)
                              for c in ("bic_best_restart", "iwae", "iwae_best_restart")}
    best["other_criteria"]["active_dims"] = active_dims_summary(table)
    best["one_se"] = one_se_choice(table, cells_dir)
    best["one_se_plain_vae"] = one_se_choice(table, cells_dir, plain_only=True)
    best["paired"] = paired_steps(table, cells_dir)
    best["recommended"] = {
        "criterion": "bic_one_se",
        "why": "BIC differences smaller than their paired standard error (test spectra and seeds) are not "
               "evidence for the larger model; of those within one error of the lowest BIC the fewest "
               "parameters are kept (docs/model_selection.md)"}
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
