"""Held-out χ²/pixel on ``test`` at d = 2, 4, 6: VAE (compact), VAE (paper), PCA and weighted PCA.

Every model is trained on ``train`` (the VAEs stop early on ``val``) and scored on ``test`` with the
shared definitions of :mod:`galvae.likelihood`. Cells already finished in ``--out`` are reused, so an
interrupted comparison resumes. Writes ``compare.ecsv`` and, when matplotlib is installed,
``compare.png``; prints the table and how far the compact VAE at d = 4 is below each PCA at d = 4.

Two numbers put the table in context: ``chi2_train`` (the same score on the spectra each model was fitted
to, what it achieves when generalisation is not at stake) and, with ``--mock`` (the mock survey the dataset
was prepared from), the noise floor: the χ²/pixel of each test spectrum's noiseless model (the files'
``model`` column) pushed through the same rest-frame resampling and normalisation, scored with the
dataset's ivar. No model can go below it except by fitting noise.

    python benchmarks/compare_models.py --data dataset.zarr --out out/compare
    python benchmarks/compare_models.py --synthetic 5000 --n-pix 1000 --out out/compare-synthetic
    # on a CPU, cap the paper architecture's training time per cell (stated in the table):
    python benchmarks/compare_models.py --data dataset.zarr --paper-time 900
    python benchmarks/compare_models.py --data mock/dataset.zarr --mock mock/ --d 2 4 6 8 12 16
    # the same galaxies at twice the S/N (noise halved around the noiseless models):
    python benchmarks/compare_models.py --data mock/dataset.zarr --mock mock/ --snr-factor 2 --d 4 --out out/compare-snr2
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from galvae import load_model
from galvae.fit import fit, fit_pca

log = logging.getLogger("compare_models")
MODELS = ("pca", "weighted_pca", "vae_compact", "vae_compact_pixels", "vae_paper")


def train_chi2(dataset, cell: Path) -> float:
    """Mean χ²/pixel of a fitted model on its own training spectra (stored beside it: a rerun reuses it)."""
    stored = cell / "train_chi2.json"
    if stored.exists():
        return json.loads(stored.read_text())["chi2_per_pixel"]
    train = dataset.indices("train")
    chi2 = load_model(cell).score(dataset.flux[train], dataset.ivar[train], n_samples=1)["chi2_per_pixel"]
    value = float(np.nanmean(chi2))
    stored.write_text(json.dumps({"split": "train", "chi2_per_pixel": value}))
    return value


def run_cell(dataset, out: Path, model: str, d: int, args) -> dict:
    """Fit one model (or reuse a finished one) and return its row of the table."""
    cell = out / f"{model}_d{d}"
    if model in ("pca", "weighted_pca"):
        if not (cell / "metrics.json").exists():
            fit_pca(dataset, cell, d, weighted=model == "weighted_pca")
    else:
        arch = "paper" if model == "vae_paper" else "compact"
        limit = args.paper_time if arch == "paper" else args.compact_time
        epochs = args.paper_epochs if arch == "paper" else args.epochs
        n_basis = 0 if model == "vae_compact_pixels" else 32  # the ablation: the MLP on all P pixels
        fit(dataset, cell, latent_dim=d, arch=arch, epochs=epochs, seed=args.seed, patience=args.patience,
            device=args.device, resume=True, progress=not args.quiet, time_limit=limit or None, n_basis=n_basis)
    m = json.loads((cell / "metrics.json").read_text())
    return {"model": model, "d": d, "chi2_per_pixel": m["chi2_per_pixel"]["mean"],
            "chi2_per_pixel_err": m["chi2_per_pixel"]["stderr"], "chi2_train": train_chi2(dataset, cell),
            "ln_likelihood": m["ln_likelihood"]["mean"],
            "ln_likelihood_err": m["ln_likelihood"]["stderr"], "bic": m["bic"]["mean"],
            "n_test": m["n_test"], "epochs": m.get("epochs_run", 0), "train_seconds": m.get("train_seconds", 0.0),
            "status": m.get("status", "done")}


def noiseless_models(dataset, mock_dir: Path, rows: np.ndarray) -> np.ndarray:
    """The mock files' noiseless ``model`` column of ``rows``, in the dataset's frame: resampled to the rest
    frame with the same bad pixels and divided by the stored normalisation; 0 where ivar is 0."""
    from astropy.io import fits

    from galvae.prepare.masks import bad_pixel_mask
    from galvae.prepare.resample import resample_batch

    models = np.zeros((rows.size, dataset.wave.size))
    for i, r in enumerate(rows):
        path = mock_dir / "spectra" / f"spec-{dataset.ids[r]}.fits"
        coadd = fits.getdata(path, 1)
        bad = bad_pixel_mask(coadd["flux"], coadd["ivar"], coadd["and_mask"])
        rest = 10 ** coadd["loglam"].astype(float) / (1 + dataset.props["z"][r])
        ivar = np.where(bad, 0.0, coadd["ivar"]).astype(float)
        model, _, _ = resample_batch(dataset.wave, rest[None], coadd["model"].astype(float)[None], ivar[None])
        models[i] = model[0] / dataset.norm[r]
    return np.where(dataset.ivar[rows] > 0, models, 0.0)  # pixels without data do not count either way


def noise_floor(dataset, mock_dir: Path) -> tuple[float, float]:
    """Mean χ²/pixel (and its standard error) of the test spectra's noiseless models."""
    from galvae.likelihood import chi2_per_pixel, mean_and_stderr

    rows = dataset.indices("test")
    return mean_and_stderr(chi2_per_pixel(dataset.flux[rows], noiseless_models(dataset, mock_dir, rows),
                                          dataset.ivar[rows]))


def with_snr_factor(dataset, mock_dir: Path, k: float):
    """The same galaxies with k times the S/N, as if observed k² times longer: every good pixel's noise
    (flux − noiseless model) divided by k and its ivar multiplied by k². Filled pixels stay as they are."""
    from dataclasses import replace

    models = noiseless_models(dataset, mock_dir, np.arange(len(dataset)))
    good = dataset.ivar > 0
    flux = np.where(good, models + (dataset.flux - models) / k, dataset.flux).astype(np.float32)
    attrs = dict(dataset.attrs, inputs_digest=f"{dataset.attrs.get('inputs_digest', '')}:snr*{k:g}")
    return replace(dataset, flux=flux, ivar=(dataset.ivar * k**2).astype(np.float32), attrs=attrs)


def test_chi2(dataset, cell: Path) -> np.ndarray:
    """Per-spectrum test χ²/pixel of a fitted model at its posterior mean (the metrics' definition)."""
    rows = dataset.indices("test")
    return np.asarray(load_model(cell).score(dataset.flux[rows], dataset.ivar[rows], n_samples=1)["chi2_per_pixel"],
                      dtype=np.float64)


def paired_ratio(dataset, cell_a: Path, cell_b: Path) -> tuple[float, float]:
    """mean χ²(a) / mean χ²(b) over the test spectra and its standard error, paired spectrum by spectrum
    (delta method: SE = std(a_i − r b_i) / (√n · mean b))."""
    a, b = test_chi2(dataset, cell_a), test_chi2(dataset, cell_b)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    r = a.mean() / b.mean()
    return float(r), float(np.std(a - r * b, ddof=1) / (np.sqrt(len(a)) * b.mean()))


EMISSION_LINES = (3727.1, 3729.9, 3869.9, 4102.9, 4341.7, 4862.7, 4960.3, 5008.2, 6302.0, 6549.9, 6564.6,
                  6585.3, 6718.3, 6732.7)  # Å, vacuum: [O II], [Ne III], Hδ, Hγ, Hβ, [O III], [O I], [N II], Hα, [S II]


def chi2_near_lines(dataset, cell: Path, half_width: float = 8.0) -> tuple[float, float, float]:
    """Split a model's test χ²/pixel (mean over spectra) into the part from pixels within ``half_width`` Å
    of the strong emission lines and the rest; also the fraction of good pixels near the lines."""
    rows = dataset.indices("test")
    x, ivar = dataset.flux[rows], dataset.ivar[rows]
    model = load_model(cell).reconstruct(x, ivar)
    good = ivar > 0
    per_pixel = np.where(good, ivar * (x - model) ** 2, 0.0) / good.sum(1, keepdims=True)
    near = np.zeros(dataset.wave.size, bool)
    for line in EMISSION_LINES:
        near |= np.abs(dataset.wave - line) < half_width
    n = len(rows)
    return per_pixel[:, near].sum() / n, per_pixel[:, ~near].sum() / n, (good[:, near].sum() / good.sum())


def write_figure(table, out: Path, floor: float | None = None, d_time: int = 4) -> None:
    """Left: test χ²/pixel against d for every model. Right: the two VAEs' val χ²/pixel against
    training time at d = ``d_time`` (held-out quality per unit of training time)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed: no figure")
        return
    from astropy.table import Table

    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(10, 3.8))
    for model in MODELS:
        rows = table[table["model"] == model]
        if len(rows):
            ax.errorbar(rows["d"], rows["chi2_per_pixel"], yerr=rows["chi2_per_pixel_err"], marker="o",
                        capsize=3, label=model.replace("_", " "))
        history = out / f"{model}_d{d_time}" / "history.csv"
        if model.startswith("vae") and history.exists():
            h = Table.read(history, format="ascii.csv")
            ax_t.plot(np.cumsum(h["seconds"]), h["val_chi2_per_pixel"], marker=".", label=model.replace("_", " "))
    ax.set_xlabel("latent dimensions d")
    ax.set_ylabel("test χ² per good pixel")
    ax_t.set_xlabel("training time (s, this machine)")
    ax_t.set_ylabel(f"val χ² per good pixel, d = {d_time}")
    ax_t.set_xscale("log")
    ax_t.set_yscale("log")
    for a in (ax, ax_t):
        a.axhline(1.0, color="0.7", lw=0.8, ls=":")
        if floor is not None:
            a.axhline(floor, color="k", lw=0.8, ls="--", label=f"noiseless truth ({floor:.3f})")
        a.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "compare.png", dpi=150)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="a dataset.zarr from `galvae prepare`")
    src.add_argument("--synthetic", type=int, help="use this many synthetic spectra instead")
    p.add_argument("--n-pix", type=int, default=1000, help="pixels of the synthetic spectra")
    p.add_argument("--mock", help="the mock survey folder --data was prepared from: adds the noise floor")
    p.add_argument("--snr-factor", type=float, default=1.0,
                   help="with --mock: the same galaxies at this many times the S/N (noise / k, ivar * k^2)")
    p.add_argument("--out", default="out/compare")
    p.add_argument("--d", type=int, nargs="+", default=[2, 4, 6])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--paper-d", type=int, nargs="+", help="d values for the paper architecture (default: --d)")
    p.add_argument("--epochs", type=int, default=200, help="compact VAE epochs (early stopping on val)")
    p.add_argument("--paper-epochs", type=int, default=100)
    p.add_argument("--paper-time", type=float, default=0, help="seconds of training per paper cell (0: no cap)")
    p.add_argument("--compact-time", type=float, default=0, help="seconds per compact cell (0: no cap)")
    p.add_argument("--patience", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from astropy.table import Table

    if args.data:
        from galvae.prepare.dataset import open_dataset

        dataset = open_dataset(args.data)
        if args.snr_factor != 1.0:
            if not args.mock:
                p.error("--snr-factor needs --mock (the noiseless models)")
            dataset = with_snr_factor(dataset, Path(args.mock), args.snr_factor)
    else:
        from galvae.prepare.synthetic import synthetic_dataset

        dataset = synthetic_dataset(args.synthetic, args.n_pix, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paper_d = args.paper_d or args.d
    rows = [run_cell(dataset, out, model, d, args) for d in args.d for model in args.models
            if model != "vae_paper" or d in paper_d]
    table = Table(rows=rows)
    table.meta["dataset"] = args.data or f"synthetic {args.synthetic} x {args.n_pix}"
    table.meta["paper_time_cap_s"] = args.paper_time
    table.meta["snr_factor"] = args.snr_factor
    floor = None
    if args.mock and args.data:
        floor, floor_err = noise_floor(dataset, Path(args.mock))
        table.meta["noise_floor_chi2_per_pixel"] = [floor, floor_err]
        print(f"noise floor (noiseless mock models of the test spectra): χ²/pixel = {floor:.4f} ± {floor_err:.4f}")
    table.write(out / "compare.ecsv", overwrite=True)
    write_figure(table, out, floor)
    table["chi2_per_pixel"].format = table["chi2_per_pixel_err"].format = table["chi2_train"].format = ".4f"
    print(table)
    for ref in ("pca", "weighted_pca"):
        a = table[(table["model"] == "vae_compact") & (table["d"] == 4)]
        b = table[(table["model"] == ref) & (table["d"] == 4)]
        if len(a) and len(b):
            ratio, ratio_err = paired_ratio(dataset, out / "vae_compact_d4", out / f"{ref}_d4")
            print(f"d = 4: χ²/pixel of compact VAE / {ref.replace('_', ' ')} = {ratio:.3f} ± {ratio_err:.3f} "
                  "(paired standard error over the test spectra; target ≤ 0.80)")
            if floor is not None:
                excess = (a["chi2_per_pixel"][0] - floor) / (b["chi2_per_pixel"][0] - floor)
                print(f"       excess over the noise floor, compact VAE / {ref.replace('_', ' ')} = {excess:.3f}")
    for model in ("pca", "weighted_pca", "vae_compact"):
        cell = out / f"{model}_d4"
        if (cell / "metrics.json").exists():
            near, rest, frac = chi2_near_lines(dataset, cell)
            print(f"d = 4 {model}: χ²/pixel {near + rest:.4f} = {near:.4f} from the {100 * frac:.1f} % of good pixels "
                  f"within 8 Å of {len(EMISSION_LINES)} emission lines + {rest:.4f} from the rest")


if __name__ == "__main__":
    main()
