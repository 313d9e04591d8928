"""Batch rebinning: agreement with spectres (and with a direct overlap sum), bad-pixel rules and the SDSS
mask bits that feed them, real SDSS files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits

from galvae.prepare.masks import SDSS_BAD_AND_MASK_BITS, SPPIXMASK, bad_pixel_mask, bits_to_mask
from galvae.prepare.resample import log_grid, pixel_edges, resample_batch

RTOL = 1e-6


def direct_rebin(new_wave, wave, flux, sigma):
    """Reference: for each new pixel, sum the overlap of every old pixel (O(P·M), plain loops)."""
    new_e, old_e = pixel_edges(new_wave), pixel_edges(wave)
    f_out = np.full(new_wave.size, np.nan)
    s_out = np.full(new_wave.size, np.nan)
    for j in range(new_wave.size):
        lo, hi = new_e[j], new_e[j + 1]
        if lo < old_e[0] or hi > old_e[-1]:
            continue
        overlap = np.minimum(hi, old_e[1:]) - np.maximum(lo, old_e[:-1])
        o = overlap > 0
        f_out[j] = np.sum(overlap[o] * flux[o]) / overlap[o].sum()
        s_out[j] = np.sqrt(np.sum((overlap[o] * sigma[o]) ** 2)) / overlap[o].sum()
    return f_out, s_out


def spectres_rebin(new_wave, wave, flux, sigma):
    spectres = pytest.importorskip("spectres")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spectres.spectres(new_wave, wave, flux, spec_errs=sigma, fill=np.nan, verbose=False)


def galaxy_like_batch(n, rng, n_pix=3000):
    """SDSS-like spectra: 1e-4 dex pixels from 3800 Å, z in 0.01–0.1, continuum + lines + noise."""
    z = rng.uniform(0.01, 0.1, n)
    wave = 10 ** (np.log10(3800) + 1e-4 * np.arange(n_pix))[None, :] / (1 + z[:, None])
    cont = 5 + 3 * np.tanh((wave - 4000) / 300)
    lines = sum(a * np.exp(-0.5 * ((wave - c) / 2.5) ** 2) for c, a in ((3727, 20), (4861, 10), (5007, 30)))
    ivar = rng.uniform(0.5, 4, wave.shape)
    flux = cont + lines + rng.normal(size=wave.shape) / np.sqrt(ivar)
    return wave, flux, ivar


def sigma_of(ivar):
    return np.where(ivar > 0, 1 / np.sqrt(np.where(ivar > 0, ivar, 1)), np.inf)


def assert_close_where_good(res_flux, res_ivar, ref_flux, ref_sigma, scale=None):
    """Flux and σ agree to RTOL (flux relative to max(|f|, scale) where the reference is near 0)."""
    good = res_ivar > 0
    floor = 0.0 if scale is None else scale
    np.testing.assert_array_less(np.abs(res_flux[good] - ref_flux[good]),
                                 RTOL * np.maximum(np.abs(ref_flux[good]), floor) + 1e-300)
    np.testing.assert_allclose(1 / np.sqrt(res_ivar[good]), ref_sigma[good], rtol=RTOL)


def test_log_grid_is_log_uniform_between_the_limits():
    grid = log_grid(4000, 3400.0, 8400.0)
    assert grid.shape == (4000,)
    assert grid[0] == pytest.approx(3400.0, rel=1e-12) and grid[-1] == pytest.approx(8400.0, rel=1e-12)
    steps = np.diff(np.log(grid))
    np.testing.assert_allclose(steps, np.log(8400 / 3400) / 3999, rtol=1e-9)


def test_pixel_edges_are_midpoints_with_half_pixel_ends():
    edges = pixel_edges(np.array([1.0, 2.0, 4.0, 7.0]))
    np.testing.assert_array_equal(edges, [0.5, 1.5, 3.0, 5.5, 8.5])
    two_rows = pixel_edges(np.array([[1.0, 2.0, 4.0], [10.0, 11.0, 13.0]]))
    np.testing.assert_array_equal(two_rows[1], [9.5, 10.5, 12.0, 14.0])


def test_matches_direct_overlap_sum_for_finer_equal_and_coarser_grids():
    rng = np.random.default_rng(1)
    wave, flux, ivar = galaxy_like_batch(3, rng, n_pix=600)
    for new_wave in (np.geomspace(3600, 4600, 150), np.geomspace(3600, 4600, 700), np.geomspace(3500, 4700, 3000)):
        res = resample_batch(new_wave, wave, flux, ivar)
        for i in range(len(wave)):
            ref_f, ref_s = direct_rebin(new_wave, wave[i], flux[i], sigma_of(ivar[i]))
            np.testing.assert_array_equal(res.covered[i], np.isfinite(ref_f))
            assert_close_where_good(res.flux[i], res.ivar[i], ref_f, ref_s)
            assert np.all(res.ivar[i][res.covered[i]] > 0) and np.all(res.ivar[i][~res.covered[i]] == 0)


def test_matches_spectres_on_smooth_plus_line_spectra_each_on_its_own_grid():
    rng = np.random.default_rng(2)
    wave, flux, ivar = galaxy_like_batch(20, rng)
    grid = log_grid()
    res = resample_batch(grid, wave, flux, ivar)
    assert res.flux.shape == res.ivar.shape == res.covered.shape == (20, 4000)
    for i in range(20):
        ref_f, ref_s = spectres_rebin(grid, wave[i], flux[i], sigma_of(ivar[i]))
        np.testing.assert_array_equal(res.covered[i], np.isfinite(ref_f))
        assert_close_where_good(res.flux[i], res.ivar[i], ref_f, ref_s)
    assert res.covered.sum() > 0.5 * res.covered.size


def test_shared_grid_gives_the_same_as_one_grid_per_row():
    rng = np.random.default_rng(3)
    wave, flux, ivar = galaxy_like_batch(4, rng, n_pix=800)
    grid = np.geomspace(3600, 5000, 500)
    shared = resample_batch(grid, wave[0], flux, ivar)
    per_row = resample_batch(grid, np.repeat(wave[:1], 4, axis=0), flux, ivar)
    for a, b in zip(shared, per_row):
        np.testing.assert_array_equal(a, b)


def test_flux_is_conserved_over_a_covered_range():
    rng = np.random.default_rng(4)
    wave, flux, ivar = galaxy_like_batch(2, rng, n_pix=1000)
    old_edges = pixel_edges(wave[0])
    # a new grid whose outer edges coincide with old edges 100 and 900: the integrals must agree
    new_edges = np.sort(np.concatenate([old_edges[[100, 900]], rng.uniform(old_edges[100], old_edges[900], 300)]))
    new_wave = 0.5 * (new_edges[1:] + new_edges[:-1])
    res = resample_batch(new_wave, wave[0], flux[0], ivar[0])
    realised = pixel_edges(new_wave)
    good = res.covered
    integral_new = np.sum(res.flux[good] * np.diff(realised)[good])
    lo, hi = realised[np.argmax(good)], realised[len(good) - np.argmax(good[::-1])]
    overlap = np.clip(np.minimum(hi, old_edges[1:]) - np.maximum(lo, old_edges[:-1]), 0, None)
    assert integral_new == pytest.approx(np.sum(overlap * flux[0]), rel=1e-10)


def test_two_to_one_rebinning_averages_flux_and_doubles_ivar():
    wave = np.arange(100.0, 200.0)
    flux = np.arange(100.0)
    ivar = np.full(100, 3.0)
    res = resample_batch(wave[1:-1].reshape(-1, 2).mean(axis=1), wave, flux, ivar)
    np.testing.assert_allclose(res.flux, flux[1:-1].reshape(-1, 2).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(res.ivar, 6.0, rtol=1e-12)


def test_identity_grid_returns_the_input_and_a_bad_pixel_stays_alone():
    wave = np.geomspace(4000, 5000, 300)
    flux = np.sin(wave / 30) + 2
    ivar = np.linspace(1, 2, 300)
    ivar[150] = 0.0
    res = resample_batch(wave, wave, flux, ivar)
    ok = np.arange(300) != 150
    np.testing.assert_allclose(res.flux[ok], flux[ok], rtol=1e-12)
    np.testing.assert_allclose(res.ivar[ok], ivar[ok], rtol=1e-9)
    assert np.isnan(res.flux[150]) and res.ivar[150] == 0.0
    assert res.covered.all()


def test_any_bad_input_pixel_makes_the_output_pixels_it_touches_bad_like_spectres_infinite_errors():
    rng = np.random.default_rng(5)
    wave, flux, ivar = galaxy_like_batch(3, rng, n_pix=1500)
    ivar[:, 200:203] = 0.0                      # a run of rejected pixels
    ivar[0, 700] = 0.0
    flux[1, 900] = np.nan                       # non-finite flux
    and_bad = np.zeros_like(ivar, dtype=bool)
    and_bad[2, 1100] = True                     # flagged by the caller (e.g. and_mask)
    grid = np.geomspace(3500, 5500, 2000)
    res = resample_batch(grid, wave, flux, ivar, bad=and_bad)
    for i in range(3):
        sigma = sigma_of(ivar[i])
        sigma[~np.isfinite(flux[i]) | and_bad[i]] = np.inf
        ref_f, ref_s = direct_rebin(grid, wave[i], np.nan_to_num(flux[i]), sigma)
        expected_bad = res.covered[i] & ~np.isfinite(ref_s)
        assert expected_bad.sum() >= 2
        np.testing.assert_array_equal(res.ivar[i] == 0, ~res.covered[i] | expected_bad)
        assert np.all(np.isnan(res.flux[i][res.ivar[i] == 0]))
        assert_close_where_good(res.flux[i], res.ivar[i], ref_f, ref_s)


def test_max_bad_weight_keeps_partly_bad_pixels_from_their_good_part():
    wave = np.arange(100.0, 110.0)              # edges 99.5, 100.5, …, 109.5
    flux = np.arange(10.0)
    ivar = np.ones(10)
    ivar[4] = 0.0                               # bad old pixel [103.5, 104.5]
    new_wave = np.array([101.0, 103.25, 105.5, 107.75])  # edges 99.875, 102.125, 104.375, 106.625, 108.875
    res_strict = resample_batch(new_wave, wave, flux, ivar)
    res_loose = resample_batch(new_wave, wave, flux, ivar, max_bad_weight=0.5)
    e = pixel_edges(new_wave)
    # new pixel 1 spans [e1, e2] = [102.125, 104.375]: 0.875 Å of it in the bad pixel (39 %)
    assert res_strict.ivar[1] == 0 and np.isnan(res_strict.flux[1])
    good_part = np.array([[e[1], 102.5, 2.0], [102.5, 103.5, 3.0]])  # (from, to, flux)
    expected = np.sum((good_part[:, 1] - good_part[:, 0]) * good_part[:, 2]) / np.sum(good_part[:, 1] - good_part[:, 0])
    assert res_loose.flux[1] == pytest.approx(expected, rel=1e-12)
    assert res_loose.ivar[1] > 0
    # new pixel 2 spans [104.375, 106.625]: 0.125 Å of it bad (6 %)
    assert res_strict.ivar[2] == 0 and res_loose.ivar[2] > 0
    np.testing.assert_array_equal(res_strict.ivar[[0, 3]] > 0, [True, True])


def test_uncovered_pixels_are_filled_and_flagged():
    wave = np.linspace(4000, 5000, 501)
    flux = np.ones_like(wave)
    res = resample_batch(np.linspace(3900, 5100, 121), wave, flux, np.ones_like(wave), fill=-1.0)
    e = pixel_edges(np.linspace(3900, 5100, 121))
    inside = (e[:-1] >= 3999.0) & (e[1:] <= 5001.0)
    np.testing.assert_array_equal(res.covered, inside)
    assert np.all(res.flux[~inside] == -1.0) and np.all(res.ivar[~inside] == 0)
    np.testing.assert_allclose(res.flux[inside], 1.0, rtol=1e-12)


def test_one_spectrum_in_gives_one_spectrum_out_and_float32_is_accepted():
    wave = np.geomspace(4000, 5000, 400)
    res = resample_batch(np.geomspace(4100, 4900, 100), wave.astype(np.float32),
                         np.ones(400, np.float32), np.ones(400, np.float32))
    assert res.flux.shape == (100,) and res.flux.dtype == np.float64
    np.testing.assert_allclose(res.flux, 1.0, rtol=1e-6)


def test_rejects_unsorted_or_mismatched_input():
    wave = np.geomspace(4000, 5000, 50)
    with pytest.raises(ValueError, match="increasing"):
        resample_batch(wave, wave[::-1], np.ones(50), np.ones(50))
    with pytest.raises(ValueError, match="shape"):
        resample_batch(wave, wave, np.ones((2, 50)), np.ones((2, 49)))
    with pytest.raises(ValueError, match="does not match"):
        resample_batch(wave, np.tile(wave, (3, 1)), np.ones((2, 50)), np.ones((2, 50)))
    with pytest.raises(ValueError, match="max_bad_weight"):
        resample_batch(wave, wave, np.ones(50), np.ones(50), max_bad_weight=1.0)


def read_sdss_rest_frame(path):
    """(rest-frame λ Å, flux, ivar, z) of one real SDSS file, read with astropy."""
    with fits.open(path, memmap=False) as hdul:
        coadd = hdul["COADD"].data
        meta = (hdul["SPECOBJ"] if "SPECOBJ" in hdul else hdul["SPALL"]).data
        z = float(meta["Z"][0])
        wave = 10 ** np.asarray(coadd["loglam"], np.float64) / (1 + z)
        return wave, np.asarray(coadd["flux"], np.float64), np.asarray(coadd["ivar"], np.float64), z


def test_real_sdss_spectra_match_spectres(sdss_dir):
    grid = log_grid()
    n_compared = 0
    for path in sorted(sdss_dir.glob("spec-*.fits")):
        wave, flux, ivar, _ = read_sdss_rest_frame(path)
        res = resample_batch(grid, wave, flux, ivar)
        ref_f, ref_s = spectres_rebin(grid, wave, flux, sigma_of(ivar))
        np.testing.assert_array_equal(res.covered, np.isfinite(ref_f), err_msg=path.name)
        # bad output pixels are exactly those where spectres' error is infinite
        np.testing.assert_array_equal(res.ivar == 0, ~res.covered | ~np.isfinite(ref_s), err_msg=path.name)
        scale = np.median(np.abs(flux[ivar > 0])) if np.any(ivar > 0) else 1.0
        assert_close_where_good(res.flux, res.ivar, ref_f, ref_s, scale=scale)
        n_compared += int(np.sum(res.ivar > 0))
    assert n_compared > 50_000  # most files overlap the 3400–8400 Å rest-frame grid


def test_real_sdss_batch_equals_one_at_a_time(sdss_dir):
    rows = [read_sdss_rest_frame(p) for p in sorted(sdss_dir.glob("spec-0266-*.fits"))]
    m = min(r[0].size for r in rows)
    wave, flux, ivar = (np.stack([r[k][:m] for r in rows]) for k in range(3))
    batch = resample_batch(log_grid(), wave, flux, ivar, chunk_rows=5)
    for i in range(len(rows)):
        alone = resample_batch(log_grid(), wave[i], flux[i], ivar[i])
        for a, b in zip(batch, alone):
            np.testing.assert_array_equal(a[i], b)


def test_bad_pixel_mask_rules():
    flux = np.ones((2, 6))
    ivar = np.ones((2, 6))
    and_mask = np.zeros((2, 6), np.int32)
    ivar[0, 0] = 0.0
    ivar[0, 1] = np.inf
    flux[0, 2] = np.nan
    and_mask[1, 0] = 1 << SPPIXMASK["COMBINEREJ"]
    and_mask[1, 1] = 1 << SPPIXMASK["BRIGHTSKY"]        # noisier, but ivar says so: kept
    and_mask[1, 2] = 1 << SPPIXMASK["MANYBADCOLUMNS"]   # a per-camera count: kept
    and_mask[1, 3] = (1 << SPPIXMASK["NEARBADPIXEL"]) | (1 << SPPIXMASK["REDMONSTER"])
    expected = np.zeros((2, 6), bool)
    expected[0, :3] = True
    expected[1, [0, 3]] = True
    np.testing.assert_array_equal(bad_pixel_mask(flux, ivar, and_mask), expected)
    np.testing.assert_array_equal(bad_pixel_mask(flux, ivar), np.r_[[expected[0]], [np.zeros(6, bool)]])
    strict = bad_pixel_mask(flux, ivar, and_mask, bits=SPPIXMASK)
    assert strict[1, :4].all() and not strict[1, 4:].any()
    assert bits_to_mask(["BRIGHTSKY", 0]) == bits_to_mask(1 << 23 | 1) == (1 << 23) + 1
    assert set(SDSS_BAD_AND_MASK_BITS.items()) <= set(SPPIXMASK.items())
    assert SPPIXMASK["NEARBADPIXEL"] == 16 and SPPIXMASK["REDMONSTER"] == 28
    with pytest.raises(KeyError):
        bits_to_mask(["NOT_A_BIT"])


def test_real_sdss_masks_then_rebinning(sdss_dir):
    """Per-camera flags stay good; ivar = 0 is bad; masked input pixels spoil exactly their output pixels."""
    with fits.open(sdss_dir / "spec-0266-51602-0013.fits", memmap=False) as hdul:
        coadd = hdul["COADD"].data
        loglam, flux, ivar = (np.asarray(coadd[c], np.float64) for c in ("loglam", "flux", "ivar"))
        and_mask = np.asarray(coadd["and_mask"])
        z = float(hdul["SPECOBJ"].data["Z"][0])
    bad = bad_pixel_mask(flux, ivar, and_mask)
    camera_flag = (and_mask & (1 << SPPIXMASK["MANYBADCOLUMNS"])) != 0
    assert camera_flag.mean() > 0.4                        # half the spectrum carries it ...
    assert bad.mean() < 0.01                               # ... yet almost nothing is bad
    assert np.all(bad[ivar <= 0])
    res = resample_batch(log_grid(), 10**loglam / (1 + z), flux, ivar, bad=bad)
    plain = resample_batch(log_grid(), 10**loglam / (1 + z), flux, np.where(bad, 0.0, ivar))
    for a, b in zip(res, plain):
        np.testing.assert_array_equal(a, b)
