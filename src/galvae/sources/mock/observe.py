"""Observe a model spectrum like the SDSS spectrographs did (SDSS-I/II, RUN2D 26).

Wavelengths: the SDSS co-add grid, log10 λ = 3.5760 + 10⁻⁴ k (vacuum, Å); each spectrum keeps a
slice of it whose ends move by a few tens of pixels, as real spec-lite files do.

Resolution: the instrumental line-spread σ per pixel (``wdisp``, in pixels of 10⁻⁴ dex) follows the
median of real files (0.7–1.2 px: R = λ/FWHM ≈ 1600–2600, 2100 at 5500 Å) times a per-spectrum factor.
The continuum is convolved with σ² = σ*² + σ_inst² − σ_templ², σ_templ being the 2.5 Å FWHM the
MILES-based templates already have; lines are Gaussians of σ² = σ_gas² + σ_inst², integrated over
each pixel.

Noise: variance = depth · g(λ) · (model + sky), the model of a photon-limited spectrum; g(λ) (the
inverse throughput, including the dichroic at 6000 Å) and the sky (continuum and lines) are medians
measured once from real SDSS-I/II files (:func:`derive_instrument_templates`), ``depth`` and the
sky's brightness vary per spectrum.

Sky-subtraction residuals (:func:`sky_residual`), added to the flux but not to the variance, as in real
data: at the sky lines of the shipped template (5577, 5890/5896, 6300, 6364 Å and the OH forest beyond
~7200 Å, observed frame) a per-camera scale error, a sub-pixel wavelength offset (the P-Cygni-like
residual of a shifted line) and per-pixel scatter. Their rms is 3.7 % of the sky-line flux, as measured
on the real files (``benchmarks/mock_realism.py``: 3.8 %).

Flux calibration (:func:`calibration_factor`): the spectrum is multiplied by a smooth function,
1 + Σ_{k=1..3} c_k P_k (Legendre in log λ), whose rms over the spectrum is ``calib_rms`` (median
:data:`CALIB_RMS`, 3 %, ×/÷ 1.6 between spectra): the few-per-cent, large-scale residuals of SDSS
spectrophotometry that Yan (2011, AJ 142, 153) measures and removes with red-sequence stacks.

Masks (SDSS SPPIXMASK bits; the rates follow the real files in ../shared/data/sdss):
BRIGHTSKY by the pipeline's rule (sky > flux + 20 σ on the co-add and sky > 1.25 × its 99-pixel median);
BADSKYCHI on the 5577 Å line core; MANYBADCOLUMNS over one camera in 20 % of spectra; short runs of
rejected pixels (LOWFLAT, SCATTEREDLIGHT, FULLREJECT, PARTIALREJECT; 5–60 px, 12 %), a lost trace on
the red camera (BADTRACE, 400–700 px, 4 %) and a lone dead pixel at the blue end (no bit, 25 %);
these have ivar = 0, flux interpolated across them and sky = wdisp = 0, as SDSS writes them.
``or_mask`` adds per-exposure rejections to ``and_mask``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.special import erf

log = logging.getLogger(__name__)

C_KMS = 299792.458
LOGLAM0 = 3.5760  # first pixel of the master grid (log10 Å)
DLOGLAM = 1e-4
N_MASTER = 3901  # to log10 λ = 3.9660
DV_PIXEL = C_KMS * np.log(10.0) * DLOGLAM  # 69.03 km/s per pixel
TEMPLATE_FWHM = 2.5  # Å, rest frame (MILES, Falcón-Barroso et al. 2011)

# Per-spectrum pixel range on the master grid, as observed in real files.
FIRST_PIXEL_RANGE = (25, 72)  # log10 λ_first in 3.5785–3.5831
LAST_PIXEL_RANGE = (3860, 3886)  # log10 λ_last in 3.9620–3.9645

#: SDSS SPPIXMASK bits used here (idlspec2d ``sdssMaskbits.par``).
BITS = {
    "NOPLUG": 0, "BADTRACE": 1, "BADFLAT": 2, "BADARC": 3, "MANYBADCOLUMNS": 4, "MANYREJECTED": 5,
    "NEARBADPIXEL": 16, "LOWFLAT": 17, "FULLREJECT": 18, "PARTIALREJECT": 19, "SCATTEREDLIGHT": 20,
    "CROSSTALK": 21, "NOSKY": 22, "BRIGHTSKY": 23, "NODATA": 24, "COMBINEREJ": 25, "BADFLUXFACTOR": 26,
    "BADSKYCHI": 27,
}  # fmt: skip
OR_MASK_EXTRA_BITS = ("NEARBADPIXEL", "LOWFLAT", "PARTIALREJECT", "SCATTEREDLIGHT", "COMBINEREJ", "BADSKYCHI")
DICHROIC = 6000.0  # Å: blue camera below, red above (they overlap 5800–6150 Å)
CALIB_RMS = 0.03  # median rms of the smooth flux-calibration residual (fraction of the flux)
CALIB_RMS_SCATTER_DEX = 0.2
SKY_SCALE_SIGMA = 0.02  # per-camera sky-line scale error
SKY_SHIFT_SIGMA_PIX = 0.05  # wavelength offset of the sky model, pixels
SKY_PIXEL_SIGMA = 0.015  # per-pixel residual, fraction of the sky-line flux

TEMPLATE_FILE = Path(__file__).resolve().parents[1] / "data" / "sdss_instrument.npz"


def master_loglam() -> np.ndarray:
    """log10 λ (vacuum Å) of the master pixel grid."""
    return LOGLAM0 + DLOGLAM * np.arange(N_MASTER)


def master_edges() -> np.ndarray:
    """Pixel edges (Å) of the master grid, N_MASTER + 1 values."""
    return 10.0 ** (LOGLAM0 + DLOGLAM * (np.arange(N_MASTER + 1) - 0.5))


def observation_stream(seed: int, index: int) -> np.random.Generator:
    """The random stream of galaxy ``index``'s observation (noise, masks, instrument)."""
    return np.random.default_rng([int(seed), int(index), 1])


# ------------------------------------------------------------------------------------------------
# Instrument templates: measured once from real files, shipped as a small .npz
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstrumentTemplates:
    """Median SDSS-I/II instrument on the master grid.

    ``sky_continuum``, ``sky_lines``: sky in the fibre, 1e-17 erg s⁻¹ cm⁻² Å⁻¹ (lines = sky minus
    its 101-pixel running median); ``gain``: variance per unit (model + sky) flux, 1e-17 cgs;
    ``wdisp``: line-spread σ in pixels; ``depth_sigma_dex``: spread of the per-spectrum depth;
    ``wdisp_sigma``: relative spread of wdisp between spectra.
    """

    sky_continuum: np.ndarray
    sky_lines: np.ndarray
    gain: np.ndarray
    wdisp: np.ndarray
    depth_sigma_dex: float
    wdisp_sigma: float
    sources: tuple


def _running_median(x: np.ndarray, width: int) -> np.ndarray:
    """Median over ``width`` pixels centred on each pixel (edges repeat the end values)."""
    from scipy.ndimage import median_filter

    return median_filter(np.asarray(x, dtype=float), size=width, mode="nearest")


def _fill_gaps(x: np.ndarray) -> np.ndarray:
    """NaNs replaced by linear interpolation, constant beyond the ends."""
    good = np.isfinite(x)
    return np.interp(np.arange(x.size), np.flatnonzero(good), x[good])


def _sdss_columns_on_master(path) -> dict | None:
    """sky, ivar, model, wdisp of one SDSS-I/II galaxy/QSO file placed on the master grid (NaN elsewhere)."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        names = [h.name for h in hdul]
        if "COADD" not in names or "SPECOBJ" not in names:
            return None
        meta = hdul["SPECOBJ"].data[0]
        if int(meta["ZWARNING"]) != 0 or str(meta["RUN2D"]).strip() != "26":
            return None
        data = hdul["COADD"].data
        k = np.round((data["loglam"].astype(float) - LOGLAM0) / DLOGLAM).astype(int)
        inside = (k >= 0) & (k < N_MASTER)
        out = {}
        for name in ("sky", "ivar", "model", "wdisp"):
            column = np.full(N_MASTER, np.nan)
            column[k[inside]] = data[name][inside]
            out[name] = column
    bad = ~(out["ivar"] > 0)
    for name in out:
        out[name][bad] = np.nan
    return out


def derive_instrument_templates(paths) -> InstrumentTemplates:
    """Median sky, noise gain and line spread from real SDSS-I/II spec files (RUN2D 26, ZWARNING 0).

    Only medians and spreads over the files are kept; no spectrum is copied.
    """
    used, columns = [], []
    for p in sorted(map(str, paths)):
        c = _sdss_columns_on_master(p)
        if c is not None:
            used.append(Path(p).name)
            columns.append(c)
    if len(columns) < 3:
        raise ValueError(f"need at least 3 usable SDSS-I/II files, found {len(columns)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pixels no file covers: filled below
        return _templates_from_columns(columns, tuple(used))


def _templates_from_columns(columns: list, used: tuple) -> InstrumentTemplates:
    sky = np.stack([c["sky"] for c in columns])
    var = 1.0 / np.stack([c["ivar"] for c in columns])
    model = np.clip(np.stack([c["model"] for c in columns]), 0.0, None)
    wdisp = np.stack([c["wdisp"] for c in columns])

    sky_median = _fill_gaps(np.nanmedian(sky, axis=0))
    sky_continuum = _running_median(sky_median, 101)
    sky_lines = np.clip(sky_median - sky_continuum, 0.0, None)

    ratio = var / (model + sky)
    gain = _running_median(_fill_gaps(np.nanmedian(ratio, axis=0)), 25)
    per_spectrum = np.nanmedian(ratio / gain, axis=1)
    depth_sigma = float(np.std(np.log10(per_spectrum)))

    wdisp_median = _fill_gaps(np.nanmedian(wdisp, axis=0))
    wdisp_sigma = float(np.std(np.nanmedian(wdisp / wdisp_median, axis=1)))
    return InstrumentTemplates(
        sky_continuum=sky_continuum, sky_lines=sky_lines, gain=gain, wdisp=wdisp_median,
        depth_sigma_dex=depth_sigma, wdisp_sigma=wdisp_sigma, sources=used,
    )


def save_instrument_templates(templates: InstrumentTemplates, path=TEMPLATE_FILE) -> Path:
    """Write the templates as a compressed .npz (float32; ~40 kB)."""
    path = Path(path)
    np.savez_compressed(
        path, loglam0=LOGLAM0, dloglam=DLOGLAM,
        sky_continuum=templates.sky_continuum.astype(np.float32), sky_lines=templates.sky_lines.astype(np.float32),
        gain=templates.gain.astype(np.float32), wdisp=templates.wdisp.astype(np.float32),
        depth_sigma_dex=templates.depth_sigma_dex, wdisp_sigma=templates.wdisp_sigma,
        sources=np.array(templates.sources),
    )
    return path


@lru_cache(maxsize=2)
def load_instrument_templates(path=TEMPLATE_FILE) -> InstrumentTemplates:
    """The shipped instrument templates (see :func:`derive_instrument_templates`)."""
    with np.load(path) as f:
        if not np.isclose(float(f["loglam0"]), LOGLAM0) or f["gain"].size != N_MASTER:
            raise ValueError(f"{path}: templates are not on the master grid")
        return InstrumentTemplates(
            sky_continuum=f["sky_continuum"].astype(float), sky_lines=f["sky_lines"].astype(float),
            gain=f["gain"].astype(float), wdisp=f["wdisp"].astype(float),
            depth_sigma_dex=float(f["depth_sigma_dex"]), wdisp_sigma=float(f["wdisp_sigma"]),
            sources=tuple(str(s) for s in f["sources"]),
        )


# ------------------------------------------------------------------------------------------------
# From a rest-frame model to an observed, noiseless spectrum on the master grid
# ------------------------------------------------------------------------------------------------


def rebin(wave, flux, edges) -> np.ndarray:
    """Flux-conserving average of f_λ sampled at ``wave`` over the bins ``edges`` (both Å)."""
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (flux[1:] + flux[:-1]) * np.diff(wave))])
    at_edges = np.interp(edges, wave, cumulative)
    return np.diff(at_edges) / np.diff(edges)


def gaussian_broaden(flux, sigma_pix) -> np.ndarray:
    """Convolve with a Gaussian whose σ (pixels) varies along the spectrum (gathered per output pixel)."""
    sigma = np.maximum(np.asarray(sigma_pix, dtype=float), 0.05)
    half = int(np.ceil(4.0 * sigma.max())) + 1
    offsets = np.arange(-half, half + 1)[:, None]
    weights = np.exp(-0.5 * (offsets / sigma[None, :]) ** 2)
    weights /= weights.sum(axis=0, keepdims=True)
    padded = np.pad(flux, half, mode="edge")
    n = flux.size
    out = np.zeros(n)
    for j, k in enumerate(range(-half, half + 1)):
        out += weights[j] * padded[half + k: half + k + n]
    return out


def add_lines(flux, edges, line_wave, line_flux, sigma_kms) -> np.ndarray:
    """Add Gaussian lines (centres Å, integrated fluxes, σ in km/s per line) integrated over pixels."""
    out = flux.copy()
    width = np.diff(edges)
    for centre, total, sigma_v in zip(line_wave, line_flux, sigma_kms):
        sigma = centre * sigma_v / C_KMS
        lo = np.searchsorted(edges, centre - 6 * sigma) - 1
        hi = np.searchsorted(edges, centre + 6 * sigma) + 1
        lo, hi = max(lo, 0), min(hi, edges.size - 1)
        if hi <= lo:
            continue
        cdf = 0.5 * (1.0 + erf((edges[lo:hi + 1] - centre) / (np.sqrt(2.0) * sigma)))
        out[lo:hi] += total * np.diff(cdf) / width[lo:hi]
    return out


def template_sigma_kms(rest_wave) -> np.ndarray:
    """Velocity σ of the templates' own resolution (2.5 Å FWHM at rest) at rest wavelength λ."""
    return C_KMS * TEMPLATE_FWHM / 2.3548 / np.asarray(rest_wave)


def observed_model(rest_wave, flux_obs, line_wave, line_flux, z, vdisp, vdisp_gas, wdisp_pix, extra_lines=None,
                   absorption=None):
    """Noiseless observed spectrum on the master grid, 1e-17 erg s⁻¹ cm⁻² Å⁻¹.

    ``rest_wave`` (vacuum Å) and ``flux_obs`` (f_λ at rest_wave·(1+z), 1e-17 cgs): the continuum;
    ``line_wave`` (vacuum rest Å), ``line_flux`` (1e-17 erg s⁻¹ cm⁻²); dispersions in km/s;
    ``wdisp_pix`` the instrumental σ per master pixel; ``extra_lines`` (wave, flux, σ km/s) lines with
    their own width (an AGN's); ``absorption`` (wave, rest EW Å, σ km/s) Gaussian absorption lines of
    gas in front of the stars (:mod:`.ism`), applied to the broadened continuum as a depth, after the
    stars' velocity broadening (the gas has its own). Returns (model, continuum) on the master grid.
    """
    if extra_lines is not None and len(extra_lines[0]):
        e_wave, e_flux, e_sigma = (np.asarray(a, float) for a in extra_lines)
        line_wave = np.concatenate([np.asarray(line_wave, float), e_wave])
        line_flux = np.concatenate([np.asarray(line_flux, float), e_flux])
        gas_sigma = np.concatenate([np.full(len(line_wave) - e_wave.size, float(vdisp_gas)), e_sigma])
    else:
        gas_sigma = np.full(len(line_wave), float(vdisp_gas))
    edges = master_edges()
    centres = 10.0 ** master_loglam()
    continuum = rebin(rest_wave * (1.0 + z), flux_obs, edges)
    sigma_inst = wdisp_pix * DV_PIXEL

    def seen_sigma(obs_wave, sigma_kms):  # a gas line's σ as observed: its own ⊕ the instrument's there
        return np.sqrt(sigma_kms ** 2 + np.interp(obs_wave, centres, sigma_inst) ** 2)

    sigma2 = vdisp ** 2 + sigma_inst ** 2 - template_sigma_kms(centres / (1.0 + z)) ** 2
    continuum = gaussian_broaden(continuum, np.sqrt(np.clip(sigma2, 0.0, None)) / DV_PIXEL)
    if absorption is not None and len(absorption[0]):
        a_wave, a_ew, a_sigma = (np.asarray(a, float) for a in absorption)
        a_obs = a_wave * (1.0 + z)
        depth = add_lines(np.zeros_like(continuum), edges, a_obs, a_ew * (1.0 + z), seen_sigma(a_obs, a_sigma))  # EW·φ per pixel
        continuum = continuum * np.clip(1.0 - depth, 0.0, None)
    obs_line_wave = line_wave * (1.0 + z)
    inside = (obs_line_wave > edges[0]) & (obs_line_wave < edges[-1]) & (line_flux > 0)
    sigma_lines = seen_sigma(obs_line_wave[inside], gas_sigma[inside])
    model = add_lines(continuum, edges, obs_line_wave[inside], line_flux[inside], sigma_lines)
    return model, continuum


# ------------------------------------------------------------------------------------------------
# Noise, sky and masks
# ------------------------------------------------------------------------------------------------


@dataclass
class ObservedArrays:
    """The COADD columns of one spectrum (already cut to its pixel range) and summary numbers."""

    loglam: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    and_mask: np.ndarray
    or_mask: np.ndarray
    wdisp: np.ndarray
    sky: np.ndarray
    model: np.ndarray
    sn_median: float
    depth: float
    calib_rms: float = 0.0
    sky_resid_rms: float = 0.0


def _bit(*names) -> int:
    value = 0
    for name in names:
        value |= 1 << BITS[name]
    return value


def _run_mask(n, start, length) -> np.ndarray:
    mask = np.zeros(n, bool)
    mask[max(start, 0): max(min(start + length, n), 0)] = True
    return mask


def _bright_sky(sky, flux, sigma) -> np.ndarray:
    """BRIGHTSKY: sky > flux + 20 σ and sky > 1.25 × the 99-pixel running median of sky.

    The pipeline applies 10 σ per exposure; on the co-add, 20 σ reproduces the rates of the real files
    (0.1 % at S/N 40 to 5 % at S/N 5).
    """
    return (sky > flux + 20.0 * sigma) & (sky > 1.25 * _running_median(sky, 99))


def draw_masks(rng, wave, sky_lines) -> tuple[np.ndarray, np.ndarray]:
    """(and_mask without BRIGHTSKY, dead pixels with ivar = 0) for one spectrum on its own pixels."""
    n = wave.size
    and_mask = np.zeros(n, np.int32)
    dead = np.zeros(n, bool)
    blue, red = wave < 5800.0, wave > 6150.0
    if rng.random() < 0.4:  # sky-subtraction χ² is bad in the core of [O I] 5577
        and_mask[(sky_lines > 200.0) & (np.abs(wave - 5578.9) < 4)] |= _bit("BADSKYCHI")
    if rng.random() < 0.2:
        and_mask[blue if rng.random() < 0.5 else red] |= _bit("MANYBADCOLUMNS")
    if rng.random() < 0.12:  # a short run of rejected pixels
        length = int(rng.integers(5, 61))
        run = _run_mask(n, int(rng.integers(0, n - length)), length)
        bits = _bit("LOWFLAT", "SCATTEREDLIGHT") | (_bit("FULLREJECT", "PARTIALREJECT") if rng.random() < 0.5 else 0)
        and_mask[run] |= bits
        dead |= run
    if rng.random() < 0.04:  # a lost trace on the red camera
        start = int(np.searchsorted(wave, rng.uniform(6150.0, 7600.0)))
        run = _run_mask(n, start, int(rng.integers(400, 701)))
        and_mask[red] |= _bit("MANYBADCOLUMNS", "BADTRACE")
        and_mask[run] |= _bit("FULLREJECT", "PARTIALREJECT", "LOWFLAT", "SCATTEREDLIGHT")
        dead |= run
    if dead.any():  # neighbours of rejected pixels
        near = np.convolve(dead, np.ones(7), mode="same") > 0
        and_mask[near & ~dead] |= _bit("NEARBADPIXEL")
    if rng.random() < 0.25:  # one dead pixel at the blue end, no bit set (seen in real files)
        dead[int(rng.integers(0, 3))] = True
    return and_mask, dead


def _interpolate_over(flux, dead) -> np.ndarray:
    """Flux with dead pixels replaced by linear interpolation between their good neighbours."""
    if not dead.any() or dead.all():
        return flux
    idx = np.arange(flux.size)
    out = flux.copy()
    out[dead] = np.interp(idx[dead], idx[~dead], flux[~dead])
    return out


def calibration_factor(rng, loglam, calib_rms: float, order: int = 3) -> np.ndarray:
    """Smooth multiplicative flux-calibration error over ``loglam``: 1 + Σ_{k=1..order} c_k P_k(x), x the
    position in log λ scaled to [−1, 1], with random direction c and rms over the pixels exactly ``calib_rms``."""
    x = np.linspace(-1.0, 1.0, loglam.size)
    shape = np.polynomial.legendre.legval(x, np.concatenate([[0.0], rng.standard_normal(order)]))
    shape -= shape.mean()  # the overall scale is the fibre's business, not the calibration's shape
    rms = float(np.sqrt(np.mean(shape ** 2)))
    return 1.0 + shape * (calib_rms / rms if rms > 0 else 0.0)


def sky_residual(rng, wave, sky_lines) -> np.ndarray:
    """Sky-subtraction residual at the sky lines: per-camera scale error, sub-pixel wavelength offset,
    per-pixel scatter (1e-17 cgs, same pixels as ``sky_lines``)."""
    red = wave > DICHROIC
    scale = np.where(red, rng.normal(0.0, SKY_SCALE_SIGMA), rng.normal(0.0, SKY_SCALE_SIGMA))
    shift = rng.normal(0.0, SKY_SHIFT_SIGMA_PIX)
    return (scale * sky_lines + shift * np.gradient(sky_lines)
            + SKY_PIXEL_SIGMA * sky_lines * rng.standard_normal(wave.size))


def observe(model, rng, templates: InstrumentTemplates, wdisp_pix, calib_rms: float | None = None) -> ObservedArrays:
    """Noise, sky, masks, calibration error and the pixel range of one spectrum; ``model`` on the master
    grid (1e-17 cgs). ``calib_rms``: rms of the smooth calibration error (None: drawn around :data:`CALIB_RMS`;
    0: none)."""
    first = int(rng.integers(*FIRST_PIXEL_RANGE))
    last = int(rng.integers(*LAST_PIXEL_RANGE))
    cut = slice(first, last + 1)
    loglam = master_loglam()[cut]
    wave = 10.0 ** loglam
    if calib_rms is None:
        calib_rms = CALIB_RMS * 10.0 ** rng.normal(0.0, CALIB_RMS_SCATTER_DEX)
    # The pipeline's model column fits the mis-calibrated spectrum, so it carries the error too.
    model = model[cut] * calibration_factor(rng, loglam, calib_rms)

    sky_lines = templates.sky_lines[cut] * 10.0 ** rng.normal(0.0, 0.08)
    sky = templates.sky_continuum[cut] * 10.0 ** rng.normal(0.0, 0.12) + sky_lines
    depth = float(10.0 ** rng.normal(0.0, templates.depth_sigma_dex))
    variance = depth * templates.gain[cut] * (np.clip(model, 0.0, None) + sky)
    sigma = np.sqrt(variance)
    residual = sky_residual(rng, wave, sky_lines)
    flux = model + sigma * rng.standard_normal(wave.size) + residual
    ivar = 1.0 / variance
    lit = sky_lines > 30.0  # pixels of bright sky lines (1e-17 cgs), where the residual's rms is measured
    sky_resid_rms = float(np.sqrt(np.sum(residual[lit] ** 2) / np.sum(sky_lines[lit] ** 2))) if lit.any() else 0.0

    and_mask, dead = draw_masks(rng, wave, sky_lines)
    and_mask[_bright_sky(sky, flux, sigma)] |= _bit("BRIGHTSKY")
    or_mask = and_mask.copy()
    extra = rng.random(wave.size) < rng.uniform(0.03, 0.3)
    extra_bits = np.array([_bit(b) for b in OR_MASK_EXTRA_BITS], np.int32)
    or_mask[extra] |= extra_bits[rng.integers(0, extra_bits.size, int(extra.sum()))]

    wdisp = np.asarray(wdisp_pix)[cut].copy()
    flux = _interpolate_over(flux, dead)
    ivar[dead] = 0.0
    sky[dead] = 0.0
    wdisp[dead] = 0.0
    good = ivar > 0
    sn = float(np.median(flux[good] * np.sqrt(ivar[good]))) if good.any() else 0.0
    return ObservedArrays(
        loglam=loglam, flux=flux, ivar=ivar, and_mask=and_mask, or_mask=or_mask, wdisp=wdisp, sky=sky,
        model=model, sn_median=sn, depth=depth, calib_rms=float(calib_rms), sky_resid_rms=sky_resid_rms,
    )
