"""Warm starts across d against cold starts: epochs to early stopping, time per cell, and the BIC reached.

Tiles a dataset of N spectra from a prepared one (as ``bench_scale.py`` does), then runs the same VAE-only
grid twice with the settings used at survey size (``--patience 1``, one worker with every core):
cold (every cell from a random start) and warm (``--warm-start``: each d from the trained d − 1). Prints
per cell the epochs run, the training and scoring seconds and the test BIC, and writes them as JSON.

    python benchmarks/warm_start.py --base out/select-demo/dataset.zarr --n 25000 --latent 1-4 \
        --work out/warm-start --out out/warm-start/results.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from astropy.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import tile_dataset  # noqa: E402


def run_grid(data: Path, out: Path, latent: str, epochs: int, patience: int, warm: bool, seeds: int) -> dict:
    cmd = ["galvae", "select", "--data", str(data), "--out", str(out), "--latent", latent,
           "--conditions", "none", "--seeds", str(seeds), "--epochs", str(epochs), "--patience", str(patience),
           "--workers", "1", "--quiet"] + (["--warm-start"] if warm else [])
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    t = Table.read(out / "grid.ecsv")
    cells = [{k: (t[k][i].item() if hasattr(t[k][i], "item") else t[k][i])
              for k in ("d", "seed", "epochs", "train_seconds", "score_seconds", "bic_mean", "bic_amortized_mean",
                        "chi2_per_pixel_ml", "refine_gap", "fit_status")} for i in range(len(t))]
    return {"wall_seconds": wall, "cells": cells, "command": " ".join(cmd)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, default=Path("out/select-demo/dataset.zarr"))
    ap.add_argument("--n", type=int, default=25000)
    ap.add_argument("--latent", default="1-4")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("out/warm-start"))
    ap.add_argument("--out", type=Path, default=Path("out/warm-start/results.json"))
    args = ap.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / f"n{args.n}.zarr"
    if not data.exists():
        tile_dataset(args.base, data, args.n)
    results = {"n": args.n, "latent": args.latent, "epochs": args.epochs, "patience": args.patience}
    for name, warm in (("cold", False), ("warm", True)):
        results[name] = run_grid(data, args.work / name, args.latent, args.epochs, args.patience, warm, args.seeds)
        args.out.write_text(json.dumps(results, indent=1))
        for c in results[name]["cells"]:
            print(f"{name} d={c['d']} s{c['seed']}: {c['epochs']} epochs ({c['fit_status']}), train {c['train_seconds']:.0f} s, "
                  f"score {c['score_seconds']:.0f} s, BIC {c['bic_mean']:.1f} (amortized {c['bic_amortized_mean']:.1f})",
                  flush=True)
        print(f"{name}: {results[name]['wall_seconds']:.0f} s in all", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
