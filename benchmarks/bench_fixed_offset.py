"""Training on basis statistics (``--fixed-offset``) against training on the pixels: speed, memory, quality.

Four measurements, each its own subcommand; results go to ``--work``/results.json and a Markdown table
to stdout.

``epochs``   ``galvae train --latent 4 --epochs 2`` on one dataset, on the pixels (the default compact
             model, its offset trained) and on the statistics (``--fixed-offset``), as two processes run
             one after the other; seconds per epoch (history.csv), the start-up before epoch 1 (basis,
             scaling and, with the fixed offset, the statistics pass; config.json ``setup_seconds``),
             wall time and peak RSS of each.

``quality``  both models at d = 4, trained to early stopping (same seeds, same settings) on a smaller
             dataset; per test spectrum ln L at the posterior mean, and the paired difference fixed −
             trained with its standard error over the same test spectra (in BIC units, −2 Δ ln L: k is the
             same for both).

``score``    each finished cell of such a grid scored again from the test rows' basis statistics, timed
             (the grid's own ``score_seconds`` are those of the code that ran it).

``grid``     a finished ``galvae select --fixed-offset`` run on the survey-size dataset: per cell its
             start-up, epochs, training and scoring seconds, and what a full grid of 8 × 16 × 3 cells costs
             at that rate.

    python benchmarks/bench_fixed_offset.py epochs --data out/scale/n320000/dataset.zarr --work out/fixed-offset/epochs
    python benchmarks/bench_fixed_offset.py quality --data out/select-demo/dataset.zarr --work out/fixed-offset/quality
    python benchmarks/bench_fixed_offset.py grid --select out/fixed-offset/select320k --work out/fixed-offset/grid
    python benchmarks/bench_fixed_offset.py score --select out/fixed-offset/select320k \
        --data out/scale/n320000/dataset.zarr --work out/fixed-offset/grid
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import run_measured  # noqa: E402

GALVAE = [sys.executable, "-c", "from galvae.cli import main; import sys; sys.exit(main())"]
FULL_GRID_CELLS = 8 * 16 * 3


def _history(model_dir: Path) -> list[dict]:
    with open(model_dir / "history.csv") as fh:
        return list(csv.DictReader(fh))


def _save(work: Path, key: str, value) -> None:
    path = work / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[key] = value
    path.write_text(json.dumps(results, indent=1))


def bench_epochs(args) -> None:
    rows = []
    for name, extra in (("pixels (offset trained)", []), ("statistics (--fixed-offset)", ["--fixed-offset"])):
        out = args.work / ("fixed" if extra else "pixels")
        cmd = [*GALVAE, "train", "--data", str(args.data), "--latent", "4", "--epochs", str(args.epochs),
               "--patience", "50", "--out", str(out), "--overwrite", "-q", *extra]
        m = run_measured(cmd, args.work / f"{out.name}.log")
        if m["rc"] != 0:
            raise SystemExit(f"{name}: exit {m['rc']}, see {args.work / (out.name + '.log')}")
        config = json.loads((out / "config.json").read_text())
        seconds = [float(r["seconds"]) for r in _history(out)]
        n_train = config["n_spectra"]["train"]
        rows.append({"path": name, "n_train": n_train, "setup_s": round(config["setup_seconds"], 1),
                     "epoch_s": [round(s, 2) for s in seconds],
                     "s_per_1000_per_epoch": round(min(seconds) / n_train * 1000, 4),
                     "wall_s": m["seconds"], "peak_rss_gb": m["peak_rss_process_gb"]})
    _save(args.work, f"epochs:{args.data}", rows)
    print(f"dataset {args.data}, {rows[0]['n_train']} training spectra, {args.epochs} epochs each\n")
    print("| training on | start-up, s | seconds per epoch | s per 1000 training spectra per epoch (best) "
          "| wall, s | peak RSS, GB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['setup_s']} | {', '.join(map(str, r['epoch_s']))} | "
              f"{r['s_per_1000_per_epoch']} | {r['wall_s']} | {r['peak_rss_gb']} |")
    print(f"\nper epoch, pixels / statistics: "
          f"{rows[0]['s_per_1000_per_epoch'] / rows[1]['s_per_1000_per_epoch']:.1f}×")


def _test_scores(model_dir: Path, data) -> dict:
    import torch

    from galvae.models import load_model
    from galvae.models.vae import score
    from galvae.prepare.dataset import take_rows
    from galvae.splits import clean

    rows = data.indices("test")
    flux, ivar = clean(take_rows(data.flux, rows), take_rows(data.ivar, rows))
    module = load_model(model_dir).module
    r = score(module, torch.from_numpy(flux), torch.from_numpy(ivar))
    return {"ln_l": r["ln_likelihood"], "chi2": r["chi2_per_pixel"]}


def bench_quality(args) -> None:
    from galvae.fit import fit
    from galvae.prepare import open_dataset

    data = open_dataset(args.data)
    per_seed = []
    for seed in args.seeds:
        scores = {}
        for name, offset in (("trained", True), ("fixed", False)):
            out = args.work / f"{name}_s{seed}"
            fit(data, out, latent_dim=4, epochs=args.epochs, patience=args.patience, seed=seed,
                train_offset=offset, resume=True, progress=False)
            scores[name] = _test_scores(out, data)
            scores[name]["epochs"] = json.loads((out / "metrics.json").read_text())["epochs_run"]
        diff = -2 * (scores["fixed"]["ln_l"] - scores["trained"]["ln_l"])  # BIC, fixed − trained
        per_seed.append({
            "seed": seed, "n_test": int(diff.size),
            **{f"chi2_{k}": float(np.mean(v["chi2"])) for k, v in scores.items()},
            **{f"epochs_{k}": v["epochs"] for k, v in scores.items()},
            "bic_fixed_minus_trained": float(diff.mean()),
            "bic_stderr": float(diff.std(ddof=1) / np.sqrt(diff.size))})
    _save(args.work, f"quality:{args.data}", per_seed)
    print(f"dataset {args.data}, d = 4, epochs ≤ {args.epochs}, patience {args.patience}\n")
    print("| seed | test χ²/pixel, offset trained | test χ²/pixel, offset fixed | epochs (trained, fixed) "
          "| BIC fixed − trained (paired, ± SE) |")
    print("|---|---|---|---|---|")
    for r in per_seed:
        print(f"| {r['seed']} | {r['chi2_trained']:.4f} | {r['chi2_fixed']:.4f} | {r['epochs_trained']}, "
              f"{r['epochs_fixed']} | {r['bic_fixed_minus_trained']:+.1f} ± {r['bic_stderr']:.1f} |")


def bench_grid(args) -> None:
    from astropy.table import Table

    table = Table.read(args.select / "grid.ecsv")
    cells = []
    for row in table:
        cell = args.select / "cells" / row["cell"]
        config = json.loads((cell / "config.json").read_text())
        cells.append({"cell": str(row["cell"]), "warm": bool(config.get("init_from")),
                      "setup_s": round(config.get("setup_seconds", float("nan")), 1),
                      "epochs": int(row["epochs"]), "train_s": round(float(row["train_seconds"]), 1),
                      "score_s": round(float(row["score_seconds"]), 1), "n_train": config["n_spectra"]["train"],
                      "n_test": int(row["n_test"]), "bic": round(float(row["bic_mean"]), 1),
                      "chi2_ml": round(float(row["chi2_per_pixel_ml"]), 4)})
    _save(args.work, f"grid:{args.select}", cells)
    print(f"grid {args.select}\n")
    print("| cell | warm start | start-up, s | epochs | training, s | scoring, s | test BIC | χ²/pixel (ML z) |")
    print("|---|---|---|---|---|---|---|---|")
    for c in cells:
        print(f"| {c['cell']} | {'yes' if c['warm'] else 'no'} | {c['setup_s']} | {c['epochs']} | {c['train_s']} "
              f"| {c['score_s']} | {c['bic']} | {c['chi2_ml']} |")
    warm_cache = [c for c in cells if c["setup_s"] < 60] or cells  # cells that found the statistics computed
    per_cell = float(np.mean([c["setup_s"] + c["train_s"] + c["score_s"] for c in warm_cache]))
    first = max(c["setup_s"] for c in cells)
    hours = (FULL_GRID_CELLS * per_cell / args.workers + first) / 3600
    print(f"\nper cell once a worker holds the statistics (start-up + training + scoring): {per_cell:.0f} s; a "
          f"worker's first start-up (basis, scaling, statistics): {first:.0f} s; {FULL_GRID_CELLS} cells on "
          f"{args.workers} workers side by side: ≈ {hours:.1f} h")


def bench_score(args) -> None:
    """Score each finished cell of a grid again, from the basis statistics, and time it."""
    import time

    from galvae.basis_split import _cache
    from galvae.prepare import open_dataset
    from galvae.select.evaluate import score_test_split

    data = open_dataset(args.data, load=False)
    _cache.clear()
    rows = []
    for cell in sorted(p for p in (args.select / "cells").iterdir() if (p / "metrics.json").exists()):
        t0 = time.perf_counter()
        scores = score_test_split(cell, data, seed=int(cell.name.rsplit("_s", 1)[1]))
        rows.append({"cell": cell.name, "seconds": round(time.perf_counter() - t0, 1),
                     "n_test": int(len(scores["bic"])), "bic": round(float(np.mean(scores["bic"])), 1)})
    _save(args.work, f"score:{args.select}", rows)
    print("| cell | scoring, s (the first includes the test statistics pass) | test spectra | test BIC |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['cell']} | {r['seconds']} | {r['n_test']} | {r['bic']} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    e = sub.add_parser("epochs")
    e.add_argument("--data", type=Path, required=True)
    e.add_argument("--epochs", type=int, default=2)
    q = sub.add_parser("quality")
    q.add_argument("--data", type=Path, required=True)
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    q.add_argument("--epochs", type=int, default=200)
    q.add_argument("--patience", type=int, default=10)
    g = sub.add_parser("grid")
    g.add_argument("--select", type=Path, required=True)
    g.add_argument("--workers", type=int, default=2, help="workers the grid ran on, side by side")
    c = sub.add_parser("score")
    c.add_argument("--select", type=Path, required=True)
    c.add_argument("--data", type=Path, required=True)
    for s in (e, q, g, c):
        s.add_argument("--work", type=Path, required=True)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    {"epochs": bench_epochs, "quality": bench_quality, "grid": bench_grid, "score": bench_score}[args.what](args)


if __name__ == "__main__":
    main()
