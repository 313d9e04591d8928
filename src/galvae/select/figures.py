"""The grid's figures: the paper's Figure 2 and BIC against d for the VAE (matplotlib, Agg)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .choice import model_groups

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    from .._atomic import atomic_write

    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight"))
    finally:
        _pyplot().close(fig)
    return path


def plot_bic_grid(table, path, best: dict | None = None) -> Path | None:
    """Figure 2 of the paper: mean BIC over seeds on (k = d + conditions) × condition set; best starred."""
    groups = model_groups(table, "bic_mean")
    if not groups:
        return None
    plt = _pyplot()
    labels = list(dict.fromkeys(str(c) for c in table["conditions"]))  # the grid's order, VAE first
    ks = np.arange(min(g["k"] for g in groups), max(g["k"] for g in groups) + 1)
    grid = np.full((len(labels), ks.size), np.nan)
    for g in groups:
        grid[labels.index(g["conditions_label"]), g["k"] - ks[0]] = g["mean"]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * ks.size, 1.2 + 0.38 * len(labels)))
    mesh = ax.pcolormesh(np.append(ks, ks[-1] + 1) - 0.5, np.arange(len(labels) + 1) - 0.5,
                         np.ma.masked_invalid(grid), cmap="viridis_r", shading="flat")
    cbar = fig.colorbar(mesh, ax=ax)
    cbar.set_label("mean BIC over seeds (test spectra)")
    if best is not None:
        ax.plot(best["k"], labels.index(best["conditions_label"]), marker="*", ms=16, color="tab:blue",
                mec="white", mew=1.2, ls="none", label=f"best: {best['conditions_label']}, d={best['d']}")
        restart = (best.get("other_criteria") or {}).get("bic_best_restart")
        if restart and restart["conditions_label"] in labels:
            ax.plot(restart["k"], labels.index(restart["conditions_label"]), marker="o", ms=13, mfc="none",
                    mec="tab:red", mew=1.6, ls="none",
                    label=f"best restart (seed with the best val loss): {restart['conditions_label']}, d={restart['d']}")
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12 - 0.4 / len(labels)), frameon=False, fontsize=8)
    ax.set_xticks(ks)
    ax.set_yticks(range(len(labels)), [lab.replace("+", " + ") for lab in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("total number of parameters k = latent variables + conditions")
    ax.set_ylabel("conditions")
    ax.set_title("BIC for latent size × conditions", fontsize=10)
    return _save(fig, Path(path))


def plot_bic_vs_d(table, path, label: str = "vae", ax=None, title: str | None = None) -> Path | None:
    """BIC (mean over seeds, error bars = std over seeds; dots = seeds) against d for one condition set."""
    groups = sorted((g for g in model_groups(table, "bic_mean") if g["conditions_label"] == label),
                    key=lambda g: g["d"])
    if not groups:
        return None
    plt = _pyplot()
    own = ax is None
    if own:
        _, ax = plt.subplots(figsize=(5.5, 3.8))
    d = np.array([g["d"] for g in groups])
    mean = np.array([g["mean"] for g in groups])
    std = np.nan_to_num(np.array([g["seed_std"] for g in groups]))
    for g in groups:
        ax.plot([g["d"]] * len(g["seeds"]), list(g["seeds"].values()), ".", color="0.6", ms=4)
    ax.errorbar(d, mean, yerr=std, marker="o", capsize=3, color="tab:blue", label="mean ± std over seeds")
    i = int(np.argmin(mean))
    ax.plot(d[i], mean[i], "*", ms=15, color="tab:orange", mec="k", label=f"minimum of the mean: d = {d[i]}")
    restart = sorted((g for g in model_groups(table, "bic_mean", "best_val") if g["conditions_label"] == label),
                     key=lambda g: g["d"])
    if any(len(g["seeds"]) > 1 for g in restart):
        best_val = np.array([g["mean"] for g in restart])
        j = int(np.argmin(best_val))
        ax.plot(d, best_val, "s--", mfc="none", color="tab:green", ms=5,
                label=f"seed with the best val loss (minimum: d = {d[j]})")
    ax.set_xlabel("latent dimensions d")
    ax.set_ylabel("BIC per test spectrum")
    ax.set_xticks(d)
    ax.legend(fontsize=8)
    ax.set_title(title or f"BIC against d ({'VAE' if label == 'vae' else label})", fontsize=10)
    return _save(ax.figure, Path(path)) if own else None


def plot_one_se(best: dict | None, path, key: str = "one_se_plain_vae") -> Path | None:
    """The one-standard-error rule, drawn: each model's paired BIC difference to the lowest (± its standard
    error over test spectra and seeds) against k; filled: within one error; star: the chosen model."""
    choice = (best or {}).get(key)
    rows = [r for r in (choice or {}).get("compared", []) if r["difference_to_lowest"] is not None]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.8, 3.8))
    labels = list(dict.fromkeys(r["conditions_label"] for r in rows))
    for i, label in enumerate(labels):
        mine = sorted((r for r in rows if r["conditions_label"] == label), key=lambda r: r["k"])
        k = np.array([r["k"] for r in mine], dtype=float) + 0.08 * (i - (len(labels) - 1) / 2)
        diff = np.array([r["difference_to_lowest"] for r in mine])
        se = np.array([r["se"] for r in mine])
        line = ax.errorbar(k, diff, yerr=se, ls="-", marker="none", capsize=3, lw=1, label=label)
        within = np.array([r["within_one_se"] for r in mine])
        color = line[0].get_color()
        ax.plot(k[within], diff[within], "o", color=color)
        ax.plot(k[~within], diff[~within], "o", mfc="white", color=color)
    ax.axhline(0, color="0.5", lw=0.8)
    chosen = next(r for r in rows if r["conditions_label"] == choice["conditions_label"] and r["d"] == choice["d"])
    ax.plot(chosen["k"], chosen["difference_to_lowest"], "*", ms=16, color="tab:orange", mec="k",
            label=f"chosen: {choice['conditions_label']}, d = {choice['d']}")
    ax.set_xlabel("number of parameters k = d + conditions")
    ax.set_ylabel("BIC − lowest BIC (paired, per test spectrum)")
    ax.set_yscale("symlog", linthresh=max(1.0, 3 * max(r["se"] for r in rows)))
    ax.legend(fontsize=8)
    ax.set_title("One-standard-error rule: filled = within one paired SE of the lowest", fontsize=9)
    return _save(fig, Path(path))
