"""Does the selection grid recover a known dimension? Mocks with m varying parameters, VAE only.

For each mock, a bagpipes survey in which only m generating parameters vary (all others, redshift
and stellar mass included, pinned to typical values; noise, sky, resolution, fibre aperture and masks
vary as always) is prepared and a VAE-only grid over d × seeds is trained with ``select_grid``. Two
parameter combinations per m (``VARY``: "2a", "2b", … one of each pair with ``vdisp`` or ``logu``).
The chosen d of each criterion is compared with m:

* ``bic_one_se``  the recommended rule: the smallest d within one paired standard error of the lowest
                  mean BIC (BIC at each spectrum's maximum-likelihood latent; galvae.select.choice);
* ``bic``         the paper's: lowest mean test BIC;  ``bic_amortized``: the same at the posterior mean;
* ``bic_best_restart``: lowest BIC of each d's best-validation seed;
* ``elbo``, ``iwae``: highest mean test ELBO / importance-weighted bound on ln p(x);
* ``active``      the number of latent dimensions the largest-d VAEs use (Var_x E_q[z_j] > 0.01).

Everything is cached and resumable (mocks, datasets, grid cells): a rerun only redoes the analysis.

    python benchmarks/recover_dimension.py --m 2a,2b,3a,3b,4a,4b,5a,5b --seeds 3 --mock-seed 7
    python benchmarks/recover_dimension.py --m 2a --latent 1-4 --seeds 1 --epochs 10   # a quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("recover_dimension")

#: Parameters that change the spectrum's shape (not only its amplitude), in the order they are added:
#: sSFR (emission lines, blue continuum), age (4000 Å break, Balmer absorption), stellar metallicity
#: (metal lines, colour), dust (the continuum's slope), ionisation parameter (line ratios).
VARY = {"2a": ("logssfr", "age"), "2b": ("age", "vdisp"),
        "3a": ("logssfr", "age", "logzsol"), "3b": ("logssfr", "a_v", "logu"),
        "4a": ("logssfr", "age", "logzsol", "a_v"), "4b": ("logssfr", "age", "logzsol", "vdisp"),
        "5a": ("logssfr", "age", "logzsol", "a_v", "logu"), "5b": ("logssfr", "age", "logzsol", "a_v", "vdisp")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/recovery")
    p.add_argument("--m", default="2a,2b,3a,3b,4a,4b,5a,5b", help="mocks (keys of VARY)")
    p.add_argument("--n", type=int, default=2500, help="galaxies per mock")
    p.add_argument("--latent", default="around", help="d values, or 'around': m − 1 … m + 2")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--time-limit", type=float, default=100.0, help="seconds of training per cell (a safety net)")
    p.add_argument("--n-iwae", type=int, default=16, help="importance samples of the IWAE bound")
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--summarise-only", action="store_true",
                   help="no training: summarise the grids already finished under --out (grid.ecsv, best.json)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--mock-seed", type=int, default=1)
    p.add_argument("--figure", default="docs/figures/recovery_bic_vs_d.png")
    return p.parse_args(argv)


def dataset_for(m: str, args) -> Path:
    """Make (or find) the mock ``m`` (a key of VARY) and its prepared dataset."""
    from galvae.prepare.pipeline import prepare_dataset
    from galvae.sources.mock import make_mock_survey

    root = Path(args.out) / f"m{m}"
    survey = make_mock_survey(root / "mock", n=args.n, seed=args.mock_seed, vary=",".join(VARY[m]),
                              workers=args.workers, progress=False)
    data = root / "dataset.zarr"
    if not data.exists():
        prepare_dataset(root / "mock" / "spectra", data, catalog=survey.truth, scheduler="sync", progress=False)
    return data


CRITERIA = ("bic_one_se", "bic", "bic_amortized", "bic_best_restart", "iwae", "elbo", "active_at_dmax")


def curves(table) -> dict:
    """Per d: each criterion's value (mean over seeds, and the best-validation seed's) and its seed spread."""
    from galvae.select.choice import model_groups

    out = {}
    for column in ("bic_mean", "bic_amortized_mean", "refine_gap", "elbo_mean", "iwae_mean", "ln_l_mean",
                   "chi2_per_pixel", "n_active", "kl_mean"):
        for seeds, suffix in (("mean", ""), ("best_val", "_best_restart")):
            groups = sorted((g for g in model_groups(table, column, seeds) if g["conditions_label"] == "vae"),
                            key=lambda g: g["d"])
            out[column + suffix] = {"d": [g["d"] for g in groups], "mean": [g["mean"] for g in groups],
                                    "seed_std": [g["seed_std"] for g in groups],
                                    "by_seed": [g["seeds"] for g in groups]}
    return out


def chosen_dimensions(c: dict, best: dict | None) -> dict:
    """The d each criterion picks."""
    d = np.array(c["bic_mean"]["d"])
    one_se = (best or {}).get("one_se_plain_vae") or {}
    return {
        "bic_one_se": one_se.get("d"),
        "bic": int(d[np.argmin(c["bic_mean"]["mean"])]),
        "bic_amortized": int(d[np.argmin(c["bic_amortized_mean"]["mean"])]),
        "bic_best_restart": int(d[np.argmin(c["bic_mean_best_restart"]["mean"])]),
        "elbo": int(d[np.argmax(c["elbo_mean"]["mean"])]),
        "elbo_best_restart": int(d[np.argmax(c["elbo_mean_best_restart"]["mean"])]),
        "iwae": int(d[np.argmax(c["iwae_mean"]["mean"])]),
        "iwae_best_restart": int(d[np.argmax(c["iwae_mean_best_restart"]["mean"])]),
        "active_at_dmax": sorted(c["n_active"]["by_seed"][-1].values()),
    }


def _criterion_panel(ax, c: dict, col: str, scale: float, m: int) -> None:
    """Δ(scale × criterion) against d: mean over seeds ± std, each seed, and the best-validation seed."""
    d = np.array(c[col]["d"])
    mean = scale * np.array(c[col]["mean"], dtype=float)
    restart = scale * np.array(c[col + "_best_restart"]["mean"], dtype=float)
    ref = min(np.nanmin(mean), np.nanmin(restart))
    std = abs(scale) * np.nan_to_num(np.array(c[col]["seed_std"], dtype=float))
    for dd, seeds in zip(d, c[col]["by_seed"], strict=True):
        ax.plot([dd] * len(seeds), scale * np.array(list(seeds.values())) - ref, ".", color="0.6", ms=4)
    ax.errorbar(d, mean - ref, yerr=std, marker="o", capsize=3,
                label=f"mean over seeds ± std (best d = {d[np.argmin(mean)]})")
    ax.plot(d, restart - ref, "s--", mfc="none", color="tab:green", ms=6,
            label=f"best-val seed (best d = {d[np.argmin(restart)]})")
    ax.axvline(len(VARY[m]), color="tab:red", ls=":", label=f"true m = {len(VARY[m])}")
    ax.set_yscale("symlog", linthresh=10.0)
    ax.set_ylim(bottom=-1)


def plot_recovery(results: dict, path: Path) -> Path:
    """Per m (columns): ΔBIC, −2 ΔIWAE and the active dimensions against d."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = sorted(results)
    fig, axes = plt.subplots(3, len(ms), figsize=(4.4 * len(ms), 9.0), squeeze=False, sharex=True)
    for j, m in enumerate(ms):
        c = results[m]["curves"]
        _criterion_panel(axes[0, j], c, "bic_mean", 1.0, m)
        axes[0, j].set_ylabel("BIC − min (per test spectrum)", fontsize=8)
        axes[0, j].set_title(f"{m}: {', '.join(VARY[m])}", fontsize=9)
        _criterion_panel(axes[1, j], c, "iwae_mean", -2.0, m)
        axes[1, j].set_ylabel("−2 × (IWAE bound − max)", fontsize=8)
        d = np.array(c["n_active"]["d"])
        axes[2, j].errorbar(d, c["n_active"]["mean"], yerr=np.nan_to_num(c["n_active"]["seed_std"]), marker="o",
                            capsize=3, label="active dims (Var E_q[z_j] > 0.01)")
        axes[2, j].plot(d, d, ":", color="0.5", label="d")
        axes[2, j].axhline(len(VARY[m]), color="tab:red", ls=":", label=f"m = {len(VARY[m])}")
        axes[2, j].set_ylabel("active latent dimensions", fontsize=8)
        axes[2, j].set_xlabel("latent dimensions d")
        for ax in axes[:, j]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def summarise_finished(ms, args) -> None:
    """The recovery table from the grids that finished (a run stopped midway still tells what it found)."""
    from astropy.table import Table

    results = {}
    for m in ms:
        grid = Path(args.out) / f"m{m}" / "grid"
        if not (grid / "best.json").exists():
            continue
        table, best = Table.read(grid / "grid.ecsv"), json.loads((grid / "best.json").read_text())
        c = curves(table)
        results[m] = {"vary": VARY[m], "m": len(VARY[m]), "curves": c, "chosen": chosen_dimensions(c, best),
                      "paired_steps": best.get("paired", {}).get("steps", []),
                      "n_cells_done": int(np.sum(np.asarray(table["status"]) == "done")), "n_cells": len(table),
                      "latents": what_latents_track(Path(args.out) / f"m{m}", best)}
    report(results, args)


def what_latents_track(root: Path, best: dict, min_abs_rho: float = 0.3) -> list[dict]:
    """For the recommended model of a mock's grid: its test latents rotated to D1…Dd (PCA of the posterior
    means), and per D the truth columns it follows (Spearman |ρ| ≥ ``min_abs_rho``, strongest first).
    Shows what latents beyond the m varied parameters encode."""
    from astropy.table import Table
    from scipy.stats import spearmanr

    chosen = (best or {}).get("one_se_plain_vae")
    if not chosen:
        return []
    scores = np.load(root / "grid" / chosen["model_dir"] / "scores.npz")
    mu, ids = scores["mu"], scores["ids"]
    centred = mu - mu.mean(0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    dims = centred @ vt.T
    truth = Table.read(root / "mock" / "truth.fits")
    row = {str(i): k for k, i in enumerate(truth["id"])}
    take = np.array([row[str(i)] for i in ids])
    out = []
    for j in range(dims.shape[1]):
        tracked = []
        for name in truth.colnames:
            values = np.asarray(truth[name])[take]
            if values.dtype.kind not in "fi" or np.nanstd(values) == 0:
                continue
            rho = spearmanr(dims[:, j], values, nan_policy="omit").statistic
            if np.isfinite(rho) and abs(rho) >= min_abs_rho:
                tracked.append((name, round(float(rho), 2)))
        tracked.sort(key=lambda kv: -abs(kv[1]))
        out.append({"D": j + 1, "variance_share": float(sv[j] ** 2 / np.sum(sv ** 2)), "tracks": tracked[:5]})
    return out


def report(results: dict, args) -> None:
    summary = Path(args.out) / "summary.json"
    summary.write_text(json.dumps({str(m): v for m, v in results.items()}, indent=1, default=float))
    if results:
        plot_recovery(results, Path(args.figure))
    print("| mock | varying | m | " + " | ".join(CRITERIA) + " |")
    print("|---|---|---|" + "---|" * len(CRITERIA))
    for m, v in results.items():
        print(f"| {m} | {', '.join(v['vary'])} | {v['m']} | " + " | ".join(str(v["chosen"][k]) for k in CRITERIA) + " |")
    for m, v in results.items():
        for lat in v.get("latents", []):
            print(f"{m}: D{lat['D']} ({lat['variance_share']:.0%} of the latent variance) tracks "
                  + (", ".join(f"{name} (ρ {rho:+.2f})" for name, rho in lat["tracks"]) or "no truth column"))
        for step in v["paired_steps"]:
            print(f"{m}: d {step['d_from']} -> {step['d_to']}: {step['mean']:+.1f} ± {step['se']:.1f} "
                  f"(spectra {step['se_spectra']:.1f}, seeds {step['se_seeds']:.1f})")


def main(argv=None):
    from galvae._dask import close_client, make_client
    from galvae.select import select_grid

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("galvae.fit").setLevel(logging.WARNING)
    ms = [v.strip() for v in args.m.split(",")]
    unknown = [m for m in ms if m not in VARY]
    if unknown:
        raise SystemExit(f"unknown mocks {unknown}; known: {sorted(VARY)}")
    if args.summarise_only:
        return summarise_finished(ms, args)
    t0 = time.perf_counter()
    paths = {m: dataset_for(m, args) for m in ms}
    log.info("datasets ready after %.0f s", time.perf_counter() - t0)
    client = make_client(workers=args.workers)  # one cluster for every grid
    results = {}
    try:
        for m in ms:
            t1 = time.perf_counter()
            n_vary = len(VARY[m])
            latent = args.latent if args.latent != "around" else f"{max(1, n_vary - 1)}-{n_vary + 2}"
            r = select_grid(paths[m], Path(args.out) / f"m{m}" / "grid", latent=latent, conditions="none",
                            seeds=args.seeds, epochs=args.epochs, time_limit=args.time_limit, patience=args.patience,
                            scheduler=client.scheduler.address, progress=False, n_iwae=args.n_iwae)
            c = curves(r.table)
            results[m] = {"vary": VARY[m], "m": n_vary, "curves": c, "chosen": chosen_dimensions(c, r.best),
                          "paired_steps": [s for s in (r.best or {}).get("paired", {}).get("steps", [])],
                          "grid_seconds": time.perf_counter() - t1, "n_spectra": r.best["n_spectra"] if r.best else None}
            log.info("%s: chosen %s (grid %.0f s)", m, results[m]["chosen"], results[m]["grid_seconds"])
    finally:
        close_client(client)
    report(results, args)
    log.info("done in %.0f s; figure %s", time.perf_counter() - t0, args.figure)
    for m, v in results.items():
        c = v["curves"]
        log.info("%s  d: %s", m, c["bic_mean"]["d"])
        for col in ("bic_mean", "bic_mean_best_restart", "iwae_mean", "iwae_mean_best_restart", "elbo_mean",
                    "ln_l_mean", "chi2_per_pixel", "n_active"):
            log.info("   %-15s %s ± %s", col, np.round(c[col]["mean"], 2).tolist(), np.round(c[col]["seed_std"], 2).tolist())


if __name__ == "__main__":
    main()
