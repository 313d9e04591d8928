"""Which latents of a VAE know most: the k-NN / linear R² protocol of ``galvae explain``
(:mod:`galvae.explain.predictive`: same probes, folds, properties and paired bootstrap) applied to
several models and two ways of taking each test spectrum's latents:

- ``mean``: the encoder's posterior mean (what ``explain`` uses);
- ``ml``: the maximum-likelihood latent under the trained decoder
  (:func:`galvae.select.evaluate.refine_latents`, starting at the mean, ``--steps`` Adam steps).

For every (model, latents) it prints R² per catalogue property and the paired differences against
PCA-d and weighted PCA-d (fitted once on the training split, as in ``explain``); over several models
(e.g. seeds) it prints the mean difference, its spread over the models and the standard error of the
mean (spread / √n_models).

    python benchmarks/latent_r2_variants.py --data out/select-demo/dataset.zarr \\
        --models out/r2/vae4_conv_s0 out/r2/vae4_conv_s1 --steps 40 --out out/r2/variants.ecsv
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def latents_of(model, dataset, rows, steps: int, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(mean latents, ML latents) of ``rows``; also the mean χ²/pixel at each, for context."""
    from galvae import likelihood as lk
    from galvae.prepare.dataset import take_rows
    from galvae.select.evaluate import refine_latents

    module = model.module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    mus, mls, chi_mu, chi_ml = [], [], [], []
    for lo in range(0, len(rows), batch):
        part = rows[lo:lo + batch]
        flux = torch.as_tensor(take_rows(dataset.flux, part), dtype=torch.float32, device=model.device)
        ivar = torch.as_tensor(take_rows(dataset.ivar, part), dtype=torch.float32, device=model.device)
        with torch.no_grad():
            mu, _ = module.encode(flux, None)
        const = lk.ln_likelihood_constant(ivar)
        z, ll = refine_latents(module, flux, ivar, mu, None, steps=steps, constant=const)
        with torch.no_grad():
            ll0 = lk.ln_likelihood(flux, module.decode(mu, None), ivar, constant=const)
        n_good = lk.n_good(ivar).double()
        chi_mu.append((-2 * (ll0.double() - const.double()) / n_good).cpu().numpy())
        chi_ml.append((-2 * (ll.double() - const.double()) / n_good).cpu().numpy())
        mus.append(mu.cpu().numpy())
        mls.append(z.cpu().numpy())
    return (np.concatenate(mus).astype(np.float64), np.concatenate(mls).astype(np.float64),
            float(np.mean(np.concatenate(chi_mu))), float(np.mean(np.concatenate(chi_ml))))


def main(argv=None) -> None:
    from astropy.table import Table, vstack

    from galvae import load_model
    from galvae.explain.predictive import _target_columns, compare, encode_rows, fit_baselines
    from galvae.prepare.dataset import open_dataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--models", nargs="+", required=True, help="VAE model folders of the same d")
    ap.add_argument("--steps", type=int, default=40, help="Adam steps of the ML refinement")
    ap.add_argument("--seed", type=int, default=0, help="the protocol's seed (folds, bootstrap, baselines)")
    ap.add_argument("--out", help="write every row here (.ecsv)")
    ap.add_argument("--extra", nargs="*", default=[],
                    help="more numeric columns of the dataset's props (e.g. a mock's vdisp_catalog) as targets")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    dataset = open_dataset(args.data)
    test = dataset.indices("test")
    models = [load_model(m) for m in args.models]
    d = models[0].latent_dim
    baselines = encode_rows(fit_baselines(dataset, d, args.seed), dataset, test)
    targets = _target_columns(dataset.props, {}, test)
    targets += [("extra", c, np.asarray(dataset.props[c], dtype=np.float64)[test]) for c in args.extra]
    # the two baselines against each other, same protocol (is a gap the weighting's or the non-linearity's?)
    base_table = compare(baselines, targets, seed=args.seed, reference="pca")
    tables = []
    for path, model in zip(args.models, models):
        mu, ml, chi_mu, chi_ml = latents_of(model, dataset, test, args.steps)
        print(f"{path}: test χ²/pixel at the mean {chi_mu:.4f}, at the ML latent {chi_ml:.4f}")
        for kind, z in (("mean", mu), ("ml", ml)):
            sets = {"vae": (z, np.isfinite(z).all(axis=1)), **baselines}
            t = compare(sets, targets, seed=args.seed)
            t["vae_model"] = str(path)
            t["latents"] = kind
            tables.append(t)
    table = vstack(tables)
    table.meta["steps"] = args.steps
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.write(args.out, overwrite=True)

    for method in ("knn", "linear"):
        sub = table[(table["method"] == method) & (table["source"] != "truth")]
        props = list(dict.fromkeys(str(p) for p in sub["property"]))
        print(f"\n## {method}: R²(VAE) − R²(baseline), paired bootstrap error; per model, then over models")
        for kind in ("mean", "ml"):
            for base in ("pca", "wpca"):
                print(f"\n### latents = {kind}, baseline = {base}")
                print("| model | " + " | ".join(props) + " |")
                print("|---" * (1 + len(props)) + "|")
                diffs = {p: [] for p in props}
                for path in args.models:
                    cells = []
                    for p in props:
                        r = sub[(sub["vae_model"] == str(path)) & (sub["latents"] == kind) & (sub["model"] == base)
                                & (sub["property"] == p)][0]
                        diffs[p].append(float(r["vae_minus"]))
                        cells.append(f"{r['vae_minus']:+.3f} ± {r['vae_minus_err']:.3f}")
                    print(f"| {Path(path).name} | " + " | ".join(cells) + " |")
                if len(args.models) > 1:
                    cells = []
                    for p in props:
                        v = np.array(diffs[p])
                        cells.append(f"{v.mean():+.3f} (sd {v.std(ddof=1):.3f}, se {v.std(ddof=1) / np.sqrt(len(v)):.3f}; "
                                     f"{int((v < 0).sum())} of {len(v)} below 0)")
                    print(f"| mean over {len(args.models)} | " + " | ".join(cells) + " |")
        print(f"\n### R² ({method})")
        print("| latents | " + " | ".join(props) + " |")
        print("|---" * (1 + len(props)) + "|")
        for base in ("pca", "wpca"):
            r = [sub[(sub["vae_model"] == str(args.models[0])) & (sub["latents"] == "mean") & (sub["model"] == base)
                     & (sub["property"] == p)][0] for p in props]
            print(f"| {base} | " + " | ".join(f"{x['r2']:.3f} ± {x['r2_err']:.3f}" for x in r) + " |")
        for kind in ("mean", "ml"):
            for path in args.models:
                r = [sub[(sub["vae_model"] == str(path)) & (sub["latents"] == kind) & (sub["model"] == "vae")
                         & (sub["property"] == p)][0] for p in props]
                print(f"| VAE {Path(path).name} {kind} | " + " | ".join(f"{x['r2']:.3f} ± {x['r2_err']:.3f}"
                                                                     for x in r) + " |")
    print("\n## R²(PCA) − R²(weighted PCA), paired bootstrap error")
    for method in ("knn", "linear"):
        sub = base_table[(base_table["method"] == method)
                         & (base_table["model"] == "wpca")]
        print(f"{method}: " + ", ".join(f"{r['property']} {r['vae_minus']:+.3f} ± {r['vae_minus_err']:.3f}"
                                        for r in sub))
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
