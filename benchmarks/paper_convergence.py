"""The paper architecture trained to early stopping on CPU, beside `compact` and PCA, at one latent size.

Trains (or reuses, ``resume``) the `paper` and `compact` VAEs at d on a prepared mock until early stopping
on `val`, fits PCA and weighted PCA with d components, computes the mock's noise floor (its noiseless
models scored like a model), and draws the validation χ²/pixel of both VAEs against epoch and against
training time, with the test χ²/pixel of every model:

    python benchmarks/paper_convergence.py --data out/select-demo/dataset.zarr --mock out/select-demo/mock \
        --out out/paper-converge --d 4 --paper-epochs 80 --patience 6

Writes OUT/paper_convergence.json and docs/figures/paper_convergence.png (``--figure``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def history(model_dir: Path) -> dict:
    with open(model_dir / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) for r in rows]) for k in ("epoch", "val_chi2_per_pixel", "seconds", "lr")}


def test_numbers(model_dir: Path) -> dict:
    m = json.loads((model_dir / "metrics.json").read_text())
    return {"chi2_per_pixel": m["chi2_per_pixel"]["mean"], "chi2_per_pixel_err": m["chi2_per_pixel"]["stderr"],
            "status": m.get("status"), "epochs": m.get("epochs_run"), "best_epoch": m.get("best_epoch"),
            "train_seconds": m.get("train_seconds")}


def main(argv=None) -> int:
    from galvae.fit import fit, fit_pca
    from galvae.prepare import open_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--mock", type=Path, default=None, help="the mock's folder, for the noise floor")
    ap.add_argument("--out", type=Path, default=Path("out/paper-converge"))
    ap.add_argument("--d", type=int, default=4)
    ap.add_argument("--paper-epochs", type=int, default=80)
    ap.add_argument("--compact-epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=6, help="paper's patience (compact keeps fit's 10)")
    ap.add_argument("--figure", type=Path, default=Path("docs/figures/paper_convergence.png"))
    args = ap.parse_args(argv)

    data = open_dataset(args.data)
    d = args.d
    paper = args.out / f"paper_d{d}_e{args.paper_epochs}"
    compact = args.out / f"compact_d{d}"
    fit(data, paper, latent_dim=d, arch="paper", epochs=args.paper_epochs, patience=args.patience, device="cpu",
        resume=True, progress=True)
    fit(data, compact, latent_dim=d, arch="compact", epochs=args.compact_epochs, device="cpu", resume=True,
        progress=False)
    pca = {}
    for name, weighted in (("pca", False), ("weighted_pca", True)):
        cell = args.out / f"{name}_d{d}"
        if not (cell / "metrics.json").exists():
            fit_pca(data, cell, d, weighted=weighted)
        pca[name] = test_numbers(cell)
    floor = None
    if args.mock is not None:
        from compare_models import noise_floor

        floor = noise_floor(data, args.mock)
    result = {"d": d, "paper": test_numbers(paper), "compact": test_numbers(compact), **pca,
              "noise_floor": None if floor is None else {"chi2_per_pixel": floor[0], "stderr": floor[1]},
              "n_test": int(len(data.indices("test"))), "n_train": int(len(data.indices("train")))}
    (args.out / "paper_convergence.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.3), sharey=True)
    for name, path, colour in (("paper", paper, "C3"), ("compact", compact, "C0")):
        h, t = history(path), result[name]
        label = f"VAE {name} (test {t['chi2_per_pixel']:.3f}, {t['status']} after {t['epochs']} epochs)"
        axes[0].plot(h["epoch"], h["val_chi2_per_pixel"], color=colour, label=label)
        axes[1].plot(np.cumsum(h["seconds"]), h["val_chi2_per_pixel"], color=colour)
        axes[0].axvline(t["best_epoch"], color=colour, ls=":", lw=0.8)
    for ax in axes:
        for name, colour in (("pca", "0.35"), ("weighted_pca", "C2")):
            ax.axhline(pca[name]["chi2_per_pixel"], color=colour, ls="--", lw=1,
                       label=f"{name.replace('_', ' ')} d={d} (test {pca[name]['chi2_per_pixel']:.3f})")
        if floor is not None:
            ax.axhline(floor[0], color="k", lw=0.8, label=f"noise floor {floor[0]:.3f}")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0].set(xlabel="epoch", ylabel="validation χ²/pixel", title=f"d = {d}: validation χ²/pixel by epoch")
    axes[1].set(xlabel="training time (s, 2-core CPU, shared)", xscale="log", title="… and by training time")
    axes[0].legend(fontsize=7.5)
    fig.tight_layout()
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=110)
    print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
