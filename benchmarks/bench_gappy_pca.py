"""Gappy-PCA fill: galvae ``gappy_pca_fill`` against ``astroML.dimensionality.iterative_pca``, one core.

Same spectra, same mask, same n_components and n_iter, same definition (astroML ``norm="L2"`` =
galvae ``row_norm="l2"``). Spectra: random combinations of the 10 Yip et al. (2004) eigenspectra
(../shared/data, 3839 pixels) with noise, or of 10 smooth synthetic components (4000 pixels) when
the file is absent; the mask is random single pixels plus runs (sky lines, chip gaps).
Prints wall and CPU time of each, the ratio, and how far apart the filled pixels are.

astroML 1.0.2 calls ``scipy.linalg.solve(..., sym_pos=True)``, removed in SciPy 1.11; the benchmark
maps it to ``assume_a="pos"`` (the same Cholesky solve).

    pip install astroML
    python benchmarks/bench_gappy_pca.py [--n 1000] [--n-components 10] [--n-iter 10] [--exact]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, for both sides, before numpy loads

import argparse
import contextlib
import io
import sys
from pathlib import Path

import numpy as np

from galvae.prepare.gappy_pca import gappy_pca_fill

from timing import best_time  # benchmarks/timing.py

YIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "yip2004_galaxy_eigenspectra.fits"


def components() -> tuple[np.ndarray, str]:
    """(10, P) orthonormal components: the Yip et al. eigenspectra, or smooth synthetic ones."""
    if YIP.exists():
        from astropy.io import fits

        with fits.open(YIP) as hdul:
            return np.array(hdul[1].data["PCA"][0], dtype=np.float64), "Yip et al. 2004 eigenspectra"
    x = np.linspace(-1, 1, 4000)
    raw = [np.polynomial.legendre.Legendre.basis(d)(x) for d in range(6)]
    raw += [np.exp(-0.5 * ((x - c) / 0.004) ** 2) for c in (-0.6, -0.2, 0.1, 0.5)]
    return np.linalg.qr(np.array(raw).T)[0].T, "synthetic smooth components"


def galaxy_like(n: int, rng) -> tuple[np.ndarray, np.ndarray, str]:
    """(N, P) spectra (median flux ~1, per-pixel noise 0.05) and their bad-pixel mask (True = bad)."""
    basis, what = components()
    sd = np.array([0.1, 0.15, 0.08, 0.05, 0.03, 0.02, 0.015, 0.01, 0.008, 0.006])
    coeffs = rng.normal(size=(n, 10)) * sd
    coeffs[:, 0] += 1.0  # the first eigenspectrum is the mean galaxy
    amplitude = np.sqrt(basis.shape[1])  # unit-norm components → pixel values ~1
    flux = amplitude * coeffs @ basis + rng.normal(0, 0.05, (n, basis.shape[1]))
    bad = rng.random(flux.shape) < 0.1
    for i in range(n):
        for _ in range(3):
            start = rng.integers(0, flux.shape[1] - 200)
            bad[i, start:start + rng.integers(10, 200)] = True
    return flux, bad, what


def astroml_iterative_pca():
    """astroML's iterative_pca with its removed SciPy keyword mapped to the current one."""
    import astroML.dimensionality  # noqa: F401  (loads the module below)
    import scipy.linalg

    module = sys.modules["astroML.dimensionality.iterative_pca"]

    def solve(a, b, sym_pos=False, **kwargs):
        return scipy.linalg.solve(a, b, assume_a="pos" if sym_pos else None, **kwargs)

    module.solve = solve
    return module.iterative_pca




def differences(ours, ref, bad) -> tuple[float, float, float]:
    """Max and median relative difference on filled pixels, and max difference / spectrum rms."""
    rel = np.abs(ours[bad] - ref[bad]) / np.abs(ref[bad])
    rms = np.sqrt(np.mean(ref**2, axis=1, keepdims=True))
    scaled = (np.abs(ours - ref) / rms)[bad]
    return float(rel.max()), float(np.median(rel)), float(scaled.max())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="number of spectra (default 1000)")
    ap.add_argument("--n-components", type=int, default=10)
    ap.add_argument("--n-iter", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3, help="galvae runs; the best is kept (astroML runs once)")
    ap.add_argument("--exact", action="store_true", help="also run galvae with svd='exact'")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    flux, bad, what = galaxy_like(args.n, rng)
    k, n_iter = args.n_components, args.n_iter
    iterative_pca = astroml_iterative_pca()

    def run_astroml():
        with contextlib.redirect_stdout(io.StringIO()):  # it writes a progress line per iteration
            return iterative_pca(flux, bad, n_ev=k, n_iter=n_iter, norm="L2")

    def run_galvae(svd="randomized"):
        return gappy_pca_fill(flux, ~bad, n_components=k, n_iter=n_iter, row_norm="l2", svd=svd)[0]

    ref_wall, ref_cpu, ref = best_time(run_astroml)
    rows = [("astroML iterative_pca", ref_wall, ref_cpu, None)]
    wall, cpu, ours = best_time(run_galvae, args.repeat)
    rows.append(("galvae gappy_pca_fill", wall, cpu, differences(ours, ref, bad)))
    unchanged = np.array_equal(ours[~bad], flux[~bad])
    if args.exact:
        w, c, exact = best_time(lambda: run_galvae("exact"))
        rows.append(("galvae, svd='exact'", w, c, differences(exact, ref, bad)))

    print(f"{args.n} spectra x {flux.shape[1]} pixels ({what}), {100 * bad.mean():.0f}% masked, "
          f"n_components={k}, n_iter={n_iter}, norm L2; one core")
    print(f"{'method':<24}{'wall (s)':>9}{'CPU (s)':>9}{'ratio':>7}{'max rel':>10}{'median rel':>12}"
          f"{'max/rms':>10}")
    for name, w, c, diff in rows:
        ratio = "" if diff is None else f"{ref_cpu / c:.1f}x"
        d = "" if diff is None else f"{diff[0]:>10.1e}{diff[1]:>12.1e}{diff[2]:>10.1e}"
        print(f"{name:<24}{w:>9.2f}{c:>9.2f}{ratio:>7}{d}")
    print(f"ratio = astroML CPU time / galvae CPU time (target >= 10x; wall-time ratio "
          f"{ref_wall / rows[1][1]:.1f}x). Relative differences on the filled pixels; 'max/rms': largest "
          f"difference over that spectrum's rms flux. Good pixels unchanged bit for bit: {unchanged}")


if __name__ == "__main__":
    main()
