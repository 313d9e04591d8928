"""Emission lines of an AGN (Seyfert) or LINER-like nucleus, added to the galaxy's own.

:func:`agn_lines` turns the draws of :func:`.population.draw_agn` (class, L[O III], line ratios) into
line fluxes: [O III]5007 from the luminosity, Hβ from [O III]/Hβ, Hα from Hβ with the case-B-like AGN
decrement Hα/Hβ = 3.1 (Osterbrock & Ferland 2006) reddened by the nebular dust, [N II]6584 and
[S II]6717+6731 from their ratios to Hα, [O I]6300 and [O II]3727 from their ratios to [O III]. Fixed doublet ratios: [O III]
5007/4959 = 2.98, [N II] 6584/6548 = 3.05, [O I] 6300/6363 = 3.0 (atomic data); [S II] 6717/6731 = 1.1
and [O II] 3729/3726 = 1.2 (low-density gas).

The BPT ratios are drawn as observed ratios (each pair is close in wavelength, so dust hardly changes
them); [O II]/[O III] and the higher Balmer lines are reddened with Calzetti (2000), A_V(gas) = η·A_V.
:func:`line_profiles` gives the lines their widths and splits off the [O III] outflow wing.
"""

from __future__ import annotations

import numpy as np

from .observe import C_KMS
from .population import AGN_NONE

L_SUN = 3.828e33  # erg/s
MPC_CM = 3.0857e24
R_V = 4.05  # Calzetti (2000)
BALMER_DECREMENT_AGN = 3.1

#: Vacuum rest wavelengths (Å).
WAVE = {
    "oii3726": 3727.09, "oii3729": 3729.88, "neiii3869": 3870.16, "hdelta": 4102.89, "hgamma": 4341.69,
    "hbeta": 4862.68, "oiii4959": 4960.30, "oiii5007": 5008.24, "oi6300": 6302.05, "oi6363": 6365.54,
    "nii6548": 6549.86, "halpha": 6564.61, "nii6584": 6585.27, "sii6717": 6718.29, "sii6731": 6732.67,
}  # fmt: skip


def calzetti_k(wave_angstrom):
    """Calzetti et al. (2000) k(λ) = A_λ / E(B−V) for 0.12–2.2 µm (λ in Å)."""
    x = 1e4 / np.asarray(wave_angstrom, float)  # inverse microns
    blue = 2.659 * (-2.156 + 1.509 * x - 0.198 * x ** 2 + 0.011 * x ** 3) + R_V
    red = 2.659 * (-1.857 + 1.040 * x) + R_V
    return np.where(x > 1.0 / 0.63, blue, red)


def agn_lines(p: dict, d_l_mpc: float, a_v_gas: float) -> tuple[np.ndarray, np.ndarray]:
    """(vacuum rest wavelengths Å, observed fluxes 1e-17 erg s⁻¹ cm⁻²) of the AGN's lines; empty without AGN."""
    if p.get("agn_class", AGN_NONE) == AGN_NONE:
        return np.zeros(0), np.zeros(0)
    r = p["agn_ratios"]
    ebv = a_v_gas / R_V

    def dust(line, ref):  # observed/intrinsic of ``line`` relative to ``ref``
        return 10.0 ** (-0.4 * ebv * (calzetti_k(WAVE[line]) - calzetti_k(WAVE[ref])))

    o3 = 10.0 ** p["agn_log_loiii"] * L_SUN / (4.0 * np.pi * (d_l_mpc * MPC_CM) ** 2) * 1e17
    hb = o3 / 10.0 ** r["o3hb"]
    ha = hb * BALMER_DECREMENT_AGN * dust("halpha", "hbeta")
    n2, s2 = ha * 10.0 ** r["n2ha"], ha * 10.0 ** r["s2ha"]
    o1 = o3 * 10.0 ** r["o1o3"] * dust("oi6300", "oiii5007")
    o2 = o3 * 10.0 ** r["o2o3"] * dust("oii3726", "oiii5007")
    flux = {
        "oiii5007": o3, "oiii4959": o3 / 2.98, "hbeta": hb, "halpha": ha,
        "nii6584": n2, "nii6548": n2 / 3.05,
        "sii6717": s2 * 1.1 / 2.1, "sii6731": s2 / 2.1,
        "oi6300": o1, "oi6363": o1 / 3.0,
        "oii3729": o2 * 1.2 / 2.2, "oii3726": o2 / 2.2,
        "neiii3869": 0.1 * o3 * dust("neiii3869", "oiii5007"),
        "hgamma": hb * 0.468 * dust("hgamma", "hbeta"), "hdelta": hb * 0.259 * dust("hdelta", "hbeta"),
    }
    names = list(flux)
    return np.array([WAVE[n] for n in names]), np.array([flux[n] for n in names], float)


def line_profiles(p: dict, wave, flux) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The AGN's lines as the spectrograph sees them: (vacuum rest Å, flux, σ km/s), each [O III] line split
    into a core and, when the AGN has one (:func:`.population.draw_outflow`), an outflow wing that holds
    ``oiii_wing_frac`` of its flux, broader and shifted by ``oiii_wing_dv``. Line totals are unchanged."""
    wave, flux = np.asarray(wave, float), np.asarray(flux, float)
    sigma = np.full(wave.size, float(p.get("agn_sigma", 0.0)))
    share = float(p.get("oiii_wing_frac", 0.0))
    if share <= 0.0 or wave.size == 0:
        return wave, flux, sigma
    oiii = np.isin(wave, [WAVE["oiii4959"], WAVE["oiii5007"]])
    shift = 1.0 + float(p["oiii_wing_dv"]) / C_KMS
    return (np.concatenate([wave, wave[oiii] * shift]),
            np.concatenate([np.where(oiii, flux * (1.0 - share), flux), flux[oiii] * share]),
            np.concatenate([sigma, np.full(int(oiii.sum()), float(p["oiii_wing_sigma"]))]))


def bpt_ratios(line_wave, line_flux) -> dict:
    """log10 [N II]6584/Hα, [S II]6717+6731/Hα, [O III]5007/Hβ of lines given as (vacuum rest Å, flux);
    the lines nearest each wavelength within 1 Å are summed (NaN where a line is missing or zero)."""
    line_wave, line_flux = np.asarray(line_wave, float), np.asarray(line_flux, float)

    def f(name):
        return float(line_flux[np.abs(line_wave - WAVE[name]) < 1.0].sum())

    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "n2ha": float(np.log10(f("nii6584") / f("halpha"))),
            "s2ha": float(np.log10((f("sii6717") + f("sii6731")) / f("halpha"))),
            "o3hb": float(np.log10(f("oiii5007") / f("hbeta"))),
        }
