"""Batch rebinning: galvae ``resample_batch`` against a loop of ``spectres.spectres`` (with errors), one core.

N spectra (the real SDSS files of ../shared/data/sdss, repeated with jittered redshift and noise, or
SDSS-like synthetic log-λ spectra when the folder is absent) are shifted to the rest frame and rebinned
onto the default 4000-pixel grid (3400–8400 Å). Both get the same arrays; ivar = 0 is σ = ∞ for spectres.
Prints the time of each, spectra/s, the ratio, and the largest relative differences on pixels both
call good (covered, and no bad input pixel in them).

    pip install spectres
    python benchmarks/bench_resample.py [--n 1000] [--repeat 3]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, for both sides, before numpy loads

import argparse
import warnings
from pathlib import Path

import numpy as np

from galvae.prepare.resample import log_grid, resample_batch

from timing import best_time  # benchmarks/timing.py

SDSS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sdss"


def sdss_batch(n: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(N, M) rest-frame λ, flux, ivar from the real files, cut to a common length, jittered."""
    from astropy.io import fits

    rows = []
    for path in sorted(SDSS_DIR.glob("spec-*.fits")):
        with fits.open(path, memmap=False) as hdul:
            meta = (hdul["SPECOBJ"] if "SPECOBJ" in hdul else hdul["SPALL"]).data
            z = float(meta["Z"][0])
            d = hdul["COADD"].data
            if 0.001 < z < 0.5:  # rest frames that overlap the grid
                rows.append((np.array(d["loglam"], np.float64), np.array(d["flux"], np.float64),
                             np.array(d["ivar"], np.float64), z))
    m = min(r[0].size for r in rows)
    pick = rng.integers(0, len(rows), n)
    z_shift = rng.uniform(-0.005, 0.005, n)
    wave = np.stack([10 ** rows[i][0][:m] / (1 + max(rows[i][3] + dz, 0.0)) for i, dz in zip(pick, z_shift)])
    ivar = np.stack([rows[i][2][:m] for i in pick])
    sigma = np.where(ivar > 0, 1 / np.sqrt(np.where(ivar > 0, ivar, 1)), 0.0)
    flux = np.stack([rows[i][1][:m] for i in pick]) + rng.normal(0, 1, (n, m)) * sigma
    return wave, flux, ivar, f"{len(rows)} real SDSS files, repeated"


def synthetic_batch(n: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """SDSS-like spectra: 1e-4 dex pixels over 3800–9200 Å, z in 0.01–0.1, continuum + lines + noise."""
    loglam = np.arange(np.log10(3800), np.log10(9200), 1e-4)
    z = rng.uniform(0.01, 0.1, n)
    wave = 10 ** loglam[None, :] / (1 + z[:, None])
    cont = 5 + 3 * np.tanh((wave - 4000) / 300)
    lines = sum(a * np.exp(-0.5 * ((wave - c) / 3) ** 2) for c, a in ((3727, 20), (4861, 10), (5007, 30), (6563, 40)))
    ivar = rng.uniform(0.5, 4, wave.shape)
    ivar[rng.random(wave.shape) < 0.01] = 0.0
    flux = cont + lines + rng.normal(size=wave.shape) / np.sqrt(np.where(ivar > 0, ivar, 1))
    return wave, flux, ivar, "synthetic SDSS-like spectra"


def run_spectres(grid, wave, flux, ivar):
    import spectres

    sigma = np.full_like(ivar, np.inf)
    np.divide(1.0, np.sqrt(np.where(ivar > 0, ivar, 1.0)), out=sigma, where=ivar > 0)
    f_out = np.empty((len(flux), grid.size))
    s_out = np.empty_like(f_out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(len(flux)):
            f_out[i], s_out[i] = spectres.spectres(grid, wave[i], flux[i], spec_errs=sigma[i], fill=np.nan,
                                                   verbose=False)
    return f_out, s_out




def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="number of spectra (default 1000)")
    ap.add_argument("--repeat", type=int, default=3, help="galvae runs; the best is kept (spectres runs once)")
    ap.add_argument("--synthetic", action="store_true", help="use synthetic spectra even if real files exist")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    use_real = SDSS_DIR.is_dir() and not args.synthetic
    wave, flux, ivar, what = sdss_batch(args.n, rng) if use_real else synthetic_batch(args.n, rng)
    grid = log_grid()

    w_ref, t_ref, (f_ref, s_ref) = best_time(lambda: run_spectres(grid, wave, flux, ivar), 1)
    w_gal, t_gal, res = best_time(lambda: resample_batch(grid, wave, flux, ivar), args.repeat)

    both = (res.ivar > 0) & np.isfinite(s_ref)
    same_bad = np.array_equal(res.covered & ~(res.ivar > 0), res.covered & ~np.isfinite(s_ref))
    rel_f = np.abs(res.flux[both] - f_ref[both]) / np.abs(f_ref[both])
    scale = np.nanmedian(np.abs(f_ref), axis=1, keepdims=True) * np.ones_like(f_ref)
    rel_f_scaled = np.abs(res.flux[both] - f_ref[both]) / scale[both]
    rel_s = np.abs(1 / np.sqrt(res.ivar[both]) - s_ref[both]) / s_ref[both]

    print(f"{args.n} spectra ({what}), {wave.shape[1]} pixels each -> {grid.size}-pixel grid; one core")
    print(f"{'method':<26}{'wall (s)':>10}{'CPU (s)':>10}{'spectra/s':>11}")
    print(f"{'spectres.spectres loop':<26}{w_ref:>10.3f}{t_ref:>10.3f}{args.n / t_ref:>11.0f}")
    print(f"{'galvae resample_batch':<26}{w_gal:>10.4f}{t_gal:>10.4f}{args.n / t_gal:>11.0f}")
    print(f"ratio spectres / galvae: {t_ref / t_gal:.0f}x CPU time, {w_ref / w_gal:.0f}x wall time (target >= 300x)")
    print(f"pixels compared: {both.sum()} ; bad pixels identical to spectres' infinite errors: {same_bad}")
    print(f"max relative difference: flux {rel_f.max():.2e} (vs median |flux| of the spectrum: "
          f"{rel_f_scaled.max():.2e}), sigma {rel_s.max():.2e}")


if __name__ == "__main__":
    main()
