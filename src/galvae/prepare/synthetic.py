"""Synthetic galaxy-like spectra as an in-memory :class:`~galvae.prepare.dataset.Dataset`.

For tests, benchmarks and examples that must not depend on SDSS files or the prepare stage. Each
spectrum is a mix of an old (red, 4000 Å break, metal absorption) and a young (blue) continuum, reddened
by dust, plus Gaussian emission lines whose strengths follow a star-formation and an AGN-like parameter.
Noise follows per-pixel ivar at a median S/N drawn in [5, 30]; a few runs of pixels per spectrum are
masked (ivar 0, ``filled`` True, flux interpolated across), as prepare's gappy-PCA fill leaves them.

Hidden parameters per spectrum (``props``): ``age`` (0 young … 1 old), ``sf`` (line strength), ``agn``
([O III]/Hα tilt), ``dust`` (τ_V), ``vdisp`` (line and absorption widths, km/s); physical-looking columns ``logmstar``, ``logsfr``, ``logssfr``,
``metallicity`` are noisy functions of them, NaN for a few percent of rows.
"""

from __future__ import annotations

import hashlib

import numpy as np

# rest-frame vacuum-ish wavelengths (Å) and relative strengths of the lines
EMISSION = {  # name: (wavelength, star-forming strength, AGN strength)
    "OII": (3728.5, 1.2, 0.8), "Hb": (4862.7, 0.35, 0.2), "OIII4959": (4960.3, 0.12, 0.6),
    "OIII5007": (5008.2, 0.36, 1.8), "Ha": (6564.6, 1.0, 0.7), "NII": (6585.3, 0.3, 0.8),
    "SII6716": (6718.3, 0.2, 0.3), "SII6731": (6732.7, 0.15, 0.25),
}
ABSORPTION = {"CaK": (3934.8, 0.35), "CaH": (3969.6, 0.3), "Gband": (4305.0, 0.15), "Mgb": (5176.7, 0.2),
              "NaD": (5895.6, 0.15), "Hd": (4102.9, 0.1)}


def log_wave(n_pix: int, wave_min: float = 3400.0, wave_max: float = 8400.0) -> np.ndarray:
    """Log-spaced pixel centres, Å."""
    return np.geomspace(wave_min, wave_max, n_pix)


def _profiles(wave: np.ndarray, centres, sigma: np.ndarray) -> np.ndarray:
    """(N, n_lines, P) unit-area Gaussians with a per-spectrum width ``sigma`` (N,), Å."""
    c = np.asarray(centres, dtype=float)[None, :, None]
    s = np.asarray(sigma, dtype=float)[:, None, None]
    return np.exp(-0.5 * ((wave[None, None, :] - c) / s) ** 2) / (s * np.sqrt(2 * np.pi))


def noiseless_spectra(wave: np.ndarray, age, sf, agn, dust, vdisp) -> np.ndarray:
    """(N, P) model spectra for the hidden parameters (vdisp in km/s), normalised to 1 near 5500 Å."""
    x = wave[None, :] / 5500.0
    age, sf, agn, dust = (np.asarray(v, dtype=float)[:, None] for v in (age, sf, agn, dust))
    width = np.sqrt(1.5**2 + (np.asarray(vdisp, dtype=float) / 3e5 * 5000.0) ** 2)  # Å, instrument ⊕ galaxy
    old = x**1.2 * (1.0 - 0.45 / (1.0 + np.exp((wave[None, :] - 4000.0) / 40.0)))
    depth = np.array([s for _, s in ABSORPTION.values()])[None, :, None]
    absorb = 1.0 - (depth * _profiles(wave, [w for w, _ in ABSORPTION.values()], 2 * width)
                    * 6.0 * np.sqrt(2 * np.pi)).sum(1)
    young = x**-1.5
    cont = (age * old * absorb + (1.0 - age) * young) * np.exp(-dust * (x**-1.0 - 1.0))
    prof = _profiles(wave, [w for w, _, _ in EMISSION.values()], width)  # (N, L, P)
    sf_str = np.array([s for _, s, _ in EMISSION.values()])
    agn_str = np.array([a for _, _, a in EMISSION.values()])
    # line ratios move non-linearly with the AGN fraction (a BPT-like curve)
    mix = agn**2 * (3.0 - 2.0 * agn)
    amp = sf * (sf_str[None, :] * (1.0 - mix) + agn_str[None, :] * mix) * 40.0  # equivalent widths, Å
    lines = np.einsum("nl,nlp->np", amp, prof) * np.exp(-dust * (x**-1.0 - 1.0))
    spec = cont + lines
    window = (wave > 5400) & (wave < 5600)
    return spec / np.median(spec[:, window], axis=1, keepdims=True)


def _mask_runs(rng, n: int, n_pix: int, max_runs: int = 3) -> np.ndarray:
    """(N, P) bool: a few runs of 5–40 bad pixels per spectrum, and an unobserved red end for some."""
    bad = np.zeros((n, n_pix), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(0, max_runs + 1)):
            start = rng.integers(0, n_pix - 40)
            bad[i, start:start + rng.integers(5, 41)] = True
        if rng.random() < 0.2:  # higher-z galaxies lose the red end of the rest-frame grid
            bad[i, n_pix - rng.integers(1, n_pix // 20):] = True
    return bad


def _fill_by_interpolation(flux: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Linear interpolation across bad pixels (a stand-in for prepare's gappy-PCA fill)."""
    out = flux.copy()
    idx = np.arange(flux.shape[1])
    for i in np.flatnonzero(bad.any(1)):
        g = ~bad[i]
        out[i, bad[i]] = np.interp(idx[bad[i]], idx[g], flux[i, g])
    return out


def synthetic_dataset(n: int = 2000, n_pix: int = 1000, seed: int = 0, nan_fraction: float = 0.03,
                      snr_range: tuple = (5.0, 30.0)):
    """A :class:`~galvae.prepare.dataset.Dataset` of ``n`` synthetic spectra on ``n_pix`` pixels.

    Splits come from :func:`galvae.prepare.dataset.split_of` on the ids, as in a real dataset.
    """
    from astropy.table import Table

    from .dataset import Dataset, split_of

    rng = np.random.default_rng(seed)
    wave = log_wave(n_pix)
    age, sf, agn, dust = rng.beta(2, 2, n), rng.gamma(2.0, 0.5, n), rng.beta(1.2, 4, n), rng.uniform(0, 1.0, n)
    sf *= 1.2 - age  # old galaxies form fewer stars
    vdisp = rng.uniform(50.0, 300.0, n)  # km/s
    truth = np.concatenate([noiseless_spectra(wave, *(v[i:i + 512] for v in (age, sf, agn, dust, vdisp)))
                            for i in range(0, n, 512)])  # in blocks: the line profiles are (N, L, P)
    snr = rng.uniform(*snr_range, n)[:, None]
    sigma = (np.median(truth, axis=1, keepdims=True) / snr) * (1.0 + 0.5 * (wave[None, :] < 4000))
    ivar = 1.0 / sigma**2
    flux = truth + rng.normal(size=truth.shape) * sigma
    bad = _mask_runs(rng, n, n_pix)
    ivar[bad] = 0.0
    flux = _fill_by_interpolation(flux, bad)

    ids = np.array([f"SYN-{seed}-{i:06d}" for i in range(n)])
    logmstar = 9.0 + 2.0 * age + 0.3 * dust + rng.normal(0, 0.1, n)
    logsfr = np.log10(sf + 0.02) + 0.5 * (logmstar - 10.0) + rng.normal(0, 0.1, n)
    props = Table({
        "id": ids, "z": rng.uniform(0.01, 0.1, n), "logmstar": logmstar, "logsfr": logsfr,
        "logssfr": logsfr - logmstar, "metallicity": 0.02 * (0.5 + age) + rng.normal(0, 0.002, n),
        "vdisp": vdisp, "age": age, "sf": sf, "agn": agn, "dust": dust,
    })
    for name in ("logmstar", "logsfr", "logssfr", "metallicity"):
        props[name][rng.random(n) < nan_fraction] = np.nan
    digest = hashlib.sha256(f"synthetic:{n}:{n_pix}:{seed}:{nan_fraction}:{snr_range}".encode()).hexdigest()[:16]
    return Dataset(
        wave=wave, flux=flux.astype(np.float32), ivar=ivar.astype(np.float32), filled=bad,
        norm=np.ones(n, np.float32), split=split_of(ids), props=props,
        attrs={"source": "synthetic", "inputs_digest": digest, "seed": seed}, path="",
    )
