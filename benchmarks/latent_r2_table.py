"""Markdown tables of an analysis' r2.ecsv (galvae explain): R² per property and latent set, with the
paired differences VAE − PCA and VAE − weighted PCA (docs/latent_information.md).

Usage: python benchmarks/latent_r2_table.py RUN/analysis/r2.ecsv [--source catalog|truth] [--method knn|linear]
"""
import argparse

import numpy as np
from astropy.table import Table


def pm(v, e):
    return f"{v:.3f} ± {e:.3f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("table")
    ap.add_argument("--source", default="catalog")
    ap.add_argument("--method", default="knn")
    args = ap.parse_args()
    t = Table.read(args.table)
    t = t[(t["source"] == args.source) & (t["method"] == args.method)]
    models = list(dict.fromkeys(str(m) for m in t["model"]))
    base = [m for m in ("pca", "wpca") if m in models]
    print("| property | n | " + " | ".join(models) + " | " + " | ".join(f"VAE − {m}" for m in base) + " |")
    print("|---" * (2 + len(models) + len(base)) + "|")
    for prop in dict.fromkeys(str(p) for p in t["property"]):
        at = {str(r["model"]): r for r in t[t["property"] == prop]}
        cells = [prop, str(at["vae"]["n"])]
        cells += [pm(at[m]["r2"], at[m]["r2_err"]) if m in at else "–" for m in models]
        for m in base:
            r = at[m]
            mark = "" if r["vae_minus"] >= 0 else " (VAE lower)"
            cells.append(f"{r['vae_minus']:+.3f} ± {r['vae_minus_err']:.3f}{mark}")
        print("| " + " | ".join(cells) + " |")
    for m in base:
        sub = t[t["model"] == m]
        ok = np.asarray(sub["vae_minus"]) >= 0
        print(f"\nVAE ≥ {m}: {ok.sum()} of {len(sub)} properties; "
              f"of those below, within 2 paired errors: "
              f"{int(np.sum(~ok & (np.abs(sub['vae_minus']) <= 2 * sub['vae_minus_err'])))} of {int((~ok).sum())}")


if __name__ == "__main__":
    main()
