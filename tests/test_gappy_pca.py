"""Gappy-PCA fill: recovery of known low-rank spectra, untouched good pixels, agreement with astroML
and with a plain loop implementation, the Yip et al. (2004) eigenspectra, fit-then-fill."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from galvae.prepare.gappy_pca import fill_with_basis, fit_fill_basis, gappy_pca_fill

YIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "yip2004_galaxy_eigenspectra.fits"


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Many tiny LAPACK calls (the references' loops) crawl when a threaded BLAS competes for busy
    cores; one thread keeps these tests fast. threadpoolctl is optional."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1):
        yield


def low_rank_spectra(n=300, p=500, k=5, seed=0, noise=0.0):
    """Spectra in a known k-dim affine subspace (+ optional noise), and a mask: 20 % random + a run."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(p, k)))[0].T
    mean = 2 + np.sin(6 * np.linspace(0, 1, p))
    truth = mean + (rng.normal(size=(n, k)) * np.geomspace(3, 0.5, k)) @ basis
    flux = truth + noise * rng.normal(size=truth.shape)
    return flux, truth, gaps(rng, n, p)


def gaps(rng, n, p, frac=0.2, max_run=40):
    bad = rng.random((n, p)) < frac
    for i in range(n):
        start = rng.integers(0, p - max_run)
        bad[i, start:start + rng.integers(5, max_run)] = True
    return bad


def max_relative_error(filled, truth, bad):
    return np.max(np.abs(filled[bad] - truth[bad]) / np.abs(truth[bad]))


def astroml_iterative_pca():
    """astroML's iterative_pca; its SciPy keyword ``sym_pos`` (removed in 1.11) mapped to assume_a."""
    pytest.importorskip("astroML")
    import astroML.dimensionality  # noqa: F401
    import scipy.linalg

    module = sys.modules["astroML.dimensionality.iterative_pca"]

    def solve(a, b, sym_pos=False, **kwargs):
        return scipy.linalg.solve(a, b, assume_a="pos" if sym_pos else None, **kwargs)

    module.solve = solve
    return module.iterative_pca


def plain_gappy_pca(flux, good, k, n_iter):
    """Reference, written for clarity: mean fill, then full SVD and one lstsq per spectrum."""
    x = flux.copy()
    start = np.nansum(np.where(good, x, 0), axis=0) / good.sum(axis=0)
    x[~good] = np.broadcast_to(start, x.shape)[~good]
    for _ in range(n_iter):
        mean = x.mean(axis=0)
        basis = np.linalg.svd(x - mean, full_matrices=False)[2][:k]
        for i in range(len(x)):
            g = good[i]
            coeffs = np.linalg.lstsq(basis[:, g].T, x[i, g] - mean[g], rcond=None)[0]
            x[i, ~g] = (mean + coeffs @ basis)[~g]
    return x


def test_fills_gaps_of_spectra_in_a_known_subspace():
    flux, truth, bad = low_rank_spectra()
    flux[bad] = np.nan  # values at bad pixels must not matter
    filled, basis, mean = gappy_pca_fill(flux, ~bad, n_components=5, n_iter=20)
    assert max_relative_error(filled, truth, bad) < 1e-6
    assert basis.shape == (5, 500) and mean.shape == (500,)
    np.testing.assert_allclose(basis @ basis.T, np.eye(5), atol=1e-10)
    # fewer iterations are less converged, but already close
    assert max_relative_error(gappy_pca_fill(flux, ~bad, 5, n_iter=10)[0], truth, bad) < 1e-3


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_good_pixels_are_returned_bit_for_bit(dtype):
    flux, _, bad = low_rank_spectra(n=100, p=200, noise=0.01)
    flux = flux.astype(dtype)
    filled = gappy_pca_fill(flux, ~bad, n_components=4, n_iter=3)[0]
    assert filled.dtype == dtype
    np.testing.assert_array_equal(filled[~bad], flux[~bad])
    assert np.all(np.isfinite(filled)) and not np.array_equal(filled[bad], flux[bad])


def test_matches_a_plain_loop_implementation():
    flux, _, bad = low_rank_spectra(n=120, p=200, noise=0.05, seed=1)
    ref = plain_gappy_pca(flux, ~bad, k=4, n_iter=6)
    exact = gappy_pca_fill(flux, ~bad, n_components=4, n_iter=6, svd="exact")[0]
    fast = gappy_pca_fill(flux, ~bad, n_components=4, n_iter=6)[0]
    assert max_relative_error(exact, ref, bad) < 1e-8
    assert max_relative_error(fast, ref, bad) < 1e-6


def test_matches_astroml_iterative_pca_with_l2_norm():
    iterative_pca = astroml_iterative_pca()
    flux, _, bad = low_rank_spectra(n=200, p=400, noise=0.05, seed=2)
    with contextlib.redirect_stdout(io.StringIO()):  # astroML prints its progress
        ref = iterative_pca(flux, bad, n_ev=5, n_iter=8, norm="L2")
    exact = gappy_pca_fill(flux, ~bad, n_components=5, n_iter=8, row_norm="l2", svd="exact")[0]
    fast = gappy_pca_fill(flux, ~bad, n_components=5, n_iter=8, row_norm="l2")[0]
    assert max_relative_error(exact, ref, bad) < 1e-8
    assert max_relative_error(fast, ref, bad) < 1e-6
    np.testing.assert_array_equal(fast[~bad], flux[~bad])


def test_l2_rows_need_one_more_component_to_be_exact():
    # rescaled spectra of a k-dim affine subspace span k + 1 linear dimensions
    flux, truth, bad = low_rank_spectra(k=5, seed=3)
    assert max_relative_error(gappy_pca_fill(flux, ~bad, 6, n_iter=40, row_norm="l2")[0], truth, bad) < 1e-6
    assert max_relative_error(gappy_pca_fill(flux, ~bad, 5, n_iter=40, row_norm="l2")[0], truth, bad) > 1e-3


def test_weighted_least_squares_with_ivar_weights():
    flux, truth, bad = low_rank_spectra(seed=4)
    ivar = np.random.default_rng(4).uniform(0.1, 10, flux.shape)
    ivar[bad] = 0.0
    filled = gappy_pca_fill(flux, ivar, n_components=5, n_iter=20)[0]
    assert max_relative_error(filled, truth, bad) < 1e-6


def test_basis_from_a_subset_of_rows_and_fill_with_a_fixed_basis():
    flux, truth, bad = low_rank_spectra(n=400, seed=5)
    basis, mean = fit_fill_basis(flux[:200], ~bad[:200], n_components=5, n_iter=30, basis_rows=150)
    filled = fill_with_basis(flux[200:], ~bad[200:], basis, mean)
    assert max_relative_error(filled, truth[200:], bad[200:]) < 1e-6
    np.testing.assert_array_equal(filled[~bad[200:]], flux[200:][~bad[200:]])
    # a spectrum with no good pixel gets the mean spectrum
    empty = fill_with_basis(flux[:1], np.zeros((1, 500), bool), basis, mean)
    np.testing.assert_allclose(empty[0], mean, rtol=1e-12)


def test_pixels_no_spectrum_observes_stay_nan(caplog):
    flux, _, bad = low_rank_spectra(n=100, p=200, seed=6)
    bad[:, :10] = True
    with caplog.at_level(logging.INFO, logger="galvae.prepare.gappy_pca"):
        filled, basis, mean = gappy_pca_fill(flux, ~bad, n_components=4, n_iter=3)
    assert "10 of 200 pixels" in caplog.text
    assert np.all(np.isnan(filled[:, :10])) and np.all(np.isfinite(filled[:, 10:]))
    assert np.all(np.isnan(basis[:, :10])) and np.all(np.isnan(mean[:10]))
    # fill_with_basis ignores those columns, keeps a good value there, NaN where bad
    other = flux[:2].copy()
    good = np.ones((2, 200), bool)
    good[0, 3] = False
    out = fill_with_basis(other, good, basis, mean)
    assert np.isnan(out[0, 3]) and out[1, 3] == other[1, 3]


def test_rejects_impossible_requests():
    flux, _, bad = low_rank_spectra(n=20, p=50)
    with pytest.raises(ValueError, match="n_components"):
        gappy_pca_fill(flux, ~bad, n_components=21)
    with pytest.raises(ValueError, match="row_norm"):
        gappy_pca_fill(flux, ~bad, n_components=3, row_norm="L1")
    with pytest.raises(ValueError, match="shape"):
        gappy_pca_fill(flux, ~bad[:, :10], n_components=3)


def yip_eigenspectra():
    if not YIP.exists():
        pytest.skip("Yip et al. eigenspectra not available (../shared/data)")
    from astropy.io import fits

    with fits.open(YIP) as hdul:
        table = hdul[1].data
        return np.array(table["WAVE"][0], np.float64), np.array(table["PCA"][0], np.float64)


def test_fills_galaxy_like_spectra_built_from_yip_eigenspectra():
    wave, eigen = yip_eigenspectra()
    assert eigen.shape == (10, 3839) and wave[0] == pytest.approx(3450) and wave[-1] == pytest.approx(8348.7)
    rng = np.random.default_rng(7)
    n = 400
    coeffs = rng.normal(size=(n, 10)) * [0.1, 0.15, 0.08, 0.05, 0.03, 0.02, 0.015, 0.01, 0.008, 0.006]
    coeffs[:, 0] += 1.0                            # the first eigenspectrum is the mean galaxy
    truth = np.sqrt(3839) * coeffs @ eigen         # flux ~ 1 per pixel
    noise = 0.02
    flux = truth + rng.normal(0, noise, truth.shape)
    bad = gaps(rng, n, 3839, frac=0.2, max_run=300)
    filled = gappy_pca_fill(flux, ~bad, n_components=10, n_iter=10)[0]
    err = filled[bad] - truth[bad]
    # the fill is a fit to hundreds of good pixels: far better than one pixel's noise, except at
    # emission lines lost in a gap, which only the other lines constrain
    assert np.sqrt(np.mean(err**2)) < 0.25 * noise
    assert np.percentile(np.abs(err), 99.9) < 2 * noise
    mean_fill = np.broadcast_to(np.nanmean(np.where(bad, np.nan, flux), axis=0), flux.shape)[bad]
    assert np.sqrt(np.mean(err**2)) < 0.05 * np.sqrt(np.mean((mean_fill - truth[bad]) ** 2))
