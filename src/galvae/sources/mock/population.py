"""The mock galaxy population: who is in the survey, before any spectrum is made.

Every galaxy's generating parameters are drawn from its own random stream, seeded by
``(seed, index, 0)``, so galaxy *i* is the same whatever the survey size or the number of workers.
Parameters are drawn in a fixed order, each conditional on the ones before (mass and redshift
first, together, through the SDSS flux limit):

=============  =====================================================================================
``logmstar``   log10 surviving stellar mass / Msun. Double-Schechter stellar-mass function (Baldry et
``z``          al. 2012, GAMA) times dV/dz (flat ΛCDM, H0 = 70, Ωm = 0.3, as GSWLC and bagpipes), kept
               when the galaxy is brighter than the SDSS main-sample limit r = 17.77 (r-band M/L
               rising with mass, 0.15 dex scatter). Range 8.5–11.8, zmin < z < zmax.
``logssfr``    log10 sSFR / yr⁻¹ averaged over 100 Myr. Quiescent with probability rising from 6 % at
               10^9 to 72 % at 10^11 Msun; star-forming main sequence (Renzini & Peng 2015 slope,
               flattening above 10^10.5, 0.3 dex scatter) or quiescent cloud (−11.9, 0.4 dex); up to
               10 % (where both populations are common) in the green valley, −11.4 to −10.6.
               ``quiescent`` means log sSFR < −11.
``age``        Gyr since star formation began (delayed-τ SFH, ψ ∝ t e^(−t/τ)); older for massive and
               quiescent galaxies; τ is then solved so that the SFH has exactly this sSFR.
``logzsol``    log10 Z*/Zsun of the stars: mass–metallicity relation of
               Gallazzi et al. (2005) shape, scatter 0.3 dex at 10^9 shrinking to 0.1 dex.
``logzgas``    (derived, not drawn) log10 Z/Zsun of the ionised gas that makes the nebular lines: the stars'
               ``logzsol`` plus the gap, at the galaxy's mass, between the gas-phase mass–metallicity
               relation of Tremonti et al. (2004) and the stellar one above (+0.3 to +0.5 dex).
``a_v``        Calzetti (2000) V-band attenuation of stars older than 10 Myr, mag; mean rises with SFR
               and mass (0.2 at 10^9 to 0.8 at 10^11 on the main sequence), ×/÷ 1.6 scatter. Young
               stars and nebular lines see ``eta`` times as much (derived from the mass,
               :func:`nebular_eta`: 2.0–2.7 above 10^9 Msun, up to 4 below, so that the lines' A_Hα
               follows Garn & Best 2010).
``logu``       log10 ionisation parameter of the nebular emission, lower at high metallicity
               (−3.35 at solar).
``vdisp``      stellar velocity dispersion, km/s: σ ∝ M^0.29 (100 km/s at 10^10 Msun), gas σ = 0.65 σ*.
``alpha_fe``   [α/Fe] of the stars (:mod:`.alpha` turns it into deeper Mg and weaker Fe features): for
               quiescent galaxies the [α/Fe]–σ relation of Thomas et al. (2005),
               −0.55 + 0.33 log σ (≈ 0.21 at 200 km/s), intrinsic scatter 0.05 dex; ≈ 0 on the
               star-forming main sequence (continued star formation, Fe from type Ia supernovae), a
               linear ramp in log sSFR between the two. Drawn from its own stream.
``agn``        narrow-line AGN (Seyfert) or LINER-like emission in the fibre (:func:`draw_agn`); drawn
               from its own stream, so adding it left every other draw of galaxy *i* unchanged.
               Pinned (``vary`` without ``agn``): no AGN. An AGN's [O III] may carry an outflow wing
               (:func:`draw_outflow`, own stream; Woo et al. 2016).
=============  =====================================================================================

Observing conditions (fibre aperture fraction, sky position) are drawn here too but are nuisance
parameters, never fixed by ``vary``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Generating parameters in the order they are drawn; ``vary`` picks a subset.
GENERATING_PARAMETERS = ("logmstar", "z", "logssfr", "age", "logzsol", "a_v", "logu", "vdisp", "alpha_fe", "agn")

AGN_NONE, AGN_SEYFERT, AGN_LINER = 0, 1, 2  # truth column agn_class

#: Values of the parameters that ``vary`` leaves out (a typical star-forming disc near the knee).
TYPICAL_VALUES = {
    "logmstar": 10.4, "z": 0.06, "logssfr": -10.1, "age": 7.0, "logzsol": -0.05,
    "a_v": 0.5, "logu": -3.05, "vdisp": 120.0, "alpha_fe": 0.0, "agn": AGN_NONE,
}  # fmt: skip

#: Truth-table columns that each generating parameter drives (the others stay constant when it is fixed).
DRIVEN_COLUMNS = {
    "logmstar": ("logmstar", "metallicity", "a_v_lines"),
    "z": ("z",),
    "logssfr": ("logssfr", "logsfr", "tau", "mwage"),
    "age": ("age", "tau", "mwage"),
    "logzsol": ("logzsol", "metallicity"),  # metallicity: of the gas, logzsol + an offset set by the mass
    "a_v": ("a_v", "a_b", "a_v_lines"),
    "logu": ("logu",),
    "vdisp": ("vdisp", "vdisp_gas"),
    "alpha_fe": ("alpha_fe",),
    "agn": ("agn_class", "agn_log_loiii"),
}

LOGM_RANGE = (8.5, 11.8)
QUIESCENT_BELOW = -11.0  # log sSFR / yr⁻¹ under which a galaxy counts as quiescent
GREEN_VALLEY_PEAK = 0.1  # largest fraction of galaxies drawn between the two populations
R_LIMIT = 17.77  # SDSS main galaxy sample, Petrosian r
FIBER_RADIUS_ARCSEC = 1.5
H0, OM0 = 70.0, 0.3


def population_stream(seed: int, index: int) -> np.random.Generator:
    """The random stream of galaxy ``index``'s generating parameters."""
    return np.random.default_rng([int(seed), int(index), 0])


def alpha_stream(seed: int, index: int) -> np.random.Generator:
    """The random stream of galaxy ``index``'s [α/Fe] (separate, so the other draws predate it unchanged)."""
    return np.random.default_rng([int(seed), int(index), 5])


def outflow_stream(seed: int, index: int) -> np.random.Generator:
    """The random stream of galaxy ``index``'s AGN outflow (separate, so every earlier draw is unchanged)."""
    return np.random.default_rng([int(seed), int(index), 6])


def agn_stream(seed: int, index: int) -> np.random.Generator:
    """The random stream of galaxy ``index``'s AGN (separate, so the other parameters predate it unchanged)."""
    return np.random.default_rng([int(seed), int(index), 4])


# ------------------------------------------------------------------------------------------------
# Cosmology tables (cached: astropy is slow per call, and every galaxy needs these)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CosmoTable:
    """Distances on a fine redshift grid: z, luminosity distance (Mpc), dV/dz (arbitrary), age (Gyr)."""

    z: np.ndarray
    d_l: np.ndarray
    dvdz_cdf: np.ndarray
    age: np.ndarray

    def luminosity_distance(self, z):
        return np.interp(z, self.z, self.d_l)

    def age_at(self, z):
        return np.interp(z, self.z, self.age)


@lru_cache(maxsize=8)
def cosmo_table(zmin: float, zmax: float) -> CosmoTable:
    """Cosmology on ``zmin ≤ z ≤ zmax`` (flat ΛCDM, H0 = 70, Ωm = 0.3: GSWLC's and bagpipes')."""
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=H0, Om0=OM0)
    z = np.linspace(zmin, zmax, 2001)
    d_l = cosmo.luminosity_distance(z).to_value("Mpc")
    dvdz = cosmo.differential_comoving_volume(z).value
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dvdz[1:] + dvdz[:-1]) * np.diff(z))])
    return CosmoTable(z=z, d_l=d_l, dvdz_cdf=cdf / cdf[-1], age=cosmo.age(z).to_value("Gyr"))


# ------------------------------------------------------------------------------------------------
# Scaling relations (medians); each returns the value for given parents
# ------------------------------------------------------------------------------------------------


def mass_function(logm):
    """Double-Schechter stellar-mass function, Mpc⁻³ dex⁻¹ (Baldry et al. 2012, h = 0.7)."""
    x = 10.0 ** (np.asarray(logm) - 10.66)
    return np.log(10) * np.exp(-x) * (3.96e-3 * x ** (1 - 0.35) + 0.79e-3 * x ** (1 - 1.47))


def absolute_r(logm, ml_offset=0.0):
    """Absolute r magnitude (AB) of a galaxy of stellar mass 10^logm; M/L_r rises with mass."""
    log_ml = 0.25 + 0.1 * (np.asarray(logm) - 10.0) + ml_offset
    return 4.65 - 2.5 * (np.asarray(logm) - log_ml)


def quiescent_fraction(logm):
    """Fraction of quiescent galaxies at stellar mass 10^logm."""
    return 0.05 + 0.85 / (1.0 + np.exp(-(np.asarray(logm) - 10.55) / 0.35))


def main_sequence_logssfr(logm):
    """Median log sSFR (yr⁻¹) of the star-forming main sequence, flattening above 10^10.5."""
    logm = np.asarray(logm)
    return -10.0 - 0.24 * (logm - 10.0) - 0.25 * np.clip(logm - 10.5, 0.0, None)


def quiescent_logssfr(logm):
    """Median log sSFR (yr⁻¹) of quiescent galaxies."""
    return -11.9 - 0.1 * (np.asarray(logm) - 10.5)


def median_logzsol(logm, quiescent=False):
    """Median log Z*/Zsun at 10^logm (Gallazzi et al. 2005 shape; quiescent +0.08 dex)."""
    return 0.1 - 0.75 / (1.0 + np.exp((np.asarray(logm) - 9.7) / 0.45)) + 0.08 * quiescent


SOLAR_OH = 8.69  # 12 + log10(O/H) of the Sun (Asplund et al. 2009)
LOGZ_GAS_RANGE = (-1.3, 0.6)  # within bagpipes' nebular grid (0.005–5 Zsun)


def tremonti_oh(logm):
    """Gas-phase 12 + log(O/H) of SDSS star-forming galaxies at stellar mass 10^logm: Tremonti et al.
    (2004, ApJ 613, 898), −1.492 + 1.847 x − 0.08026 x² (x = log M*, 8.5 < x < 11.5)."""
    x = np.clip(np.asarray(logm, float), 8.5, 11.5)
    return -1.492 + 1.847 * x - 0.08026 * x ** 2


def gas_metallicity_offset(logm):
    """log Z_gas − log Z* (dex) at stellar mass 10^logm: the gap between the gas-phase relation of
    Tremonti et al. (2004) and the stellar :func:`median_logzsol` of star-forming galaxies.

    bagpipes gives the stars and the gas one metallicity; in SDSS galaxies the gas, enriched after most
    of the stars formed, is 0.3–0.5 dex more metal-rich than the stars on this (photoionisation-model)
    abundance scale, the scale of bagpipes' Cloudy grid too. With the gas at the stars' metallicity the
    mock's star-forming hosts sat up and left of the SDSS star-forming sequence on the BPT diagram
    (too high [O III]/Hβ, too low [N II]/Hα) with too strong [O II] (docs/mock_realism.md).
    """
    return tremonti_oh(logm) - SOLAR_OH - median_logzsol(logm, quiescent=False)


def median_a_v(logm, logsfr):
    """Median Calzetti A_V (mag) given stellar mass and SFR (rising with both)."""
    return np.clip(0.5 + 0.2 * np.asarray(logsfr) + 0.15 * (np.asarray(logm) - 10.0), 0.08, 1.5)


A_HALPHA_PER_A_V = 0.820  # Calzetti et al. (2000) k(6563 Å)/R_V = 3.32/4.05
ETA_RANGE = (1.5, 4.0)


def garn_best_a_halpha(logm):
    """Median Hα attenuation (mag) of SDSS star-forming galaxies at stellar mass 10^logm, from their
    Balmer decrements: Garn & Best (2010, MNRAS 409, 421), 0.91 + 0.77 X + 0.11 X² − 0.09 X³ with
    X = log M* − 10 (here within 8.5–11.5)."""
    x = np.clip(np.asarray(logm, float), 8.5, 11.5) - 10.0
    return 0.91 + 0.77 * x + 0.11 * x ** 2 - 0.09 * x ** 3


def nebular_eta(logm):
    """Ratio of the lines' (and < 10 Myr stars') A_V to the older stars' (bagpipes ``eta``) at this mass:
    a main-sequence galaxy of median a_v then has the Garn & Best (2010) A_Hα of its mass, and others
    A_Hα = eta × a_v × k(Hα)/R_V with the scatter (and the lower dust of quiescent galaxies) of their
    a_v. A fixed 2 (Calzetti 2000) left the star-forming mock's lines 0.1–0.4 mag less attenuated than
    that above 10^10 Msun."""
    main_sequence_sfr = np.asarray(logm, float) + main_sequence_logssfr(logm)
    eta = garn_best_a_halpha(logm) / (median_a_v(logm, main_sequence_sfr) * A_HALPHA_PER_A_V)
    return np.clip(eta, *ETA_RANGE)


def median_logu(logzsol):
    """Median log ionisation parameter; more metal-rich H II regions are less ionised. With the [N II]
    scaling of :mod:`.render` it puts the star-forming hosts' lines below the Kauffmann et al. (2003)
    line on the BPT diagram, as SDSS star-forming galaxies are (−3.1 before: 57 % of them fell between
    the Kauffmann and Kewley lines, docs/mock_realism.md)."""
    return -3.35 - 0.5 * np.asarray(logzsol)


def median_log_vdisp(logm, quiescent=False):
    """Median log10 stellar velocity dispersion (km/s)."""
    return 2.0 + 0.29 * (np.asarray(logm) - 10.0) + 0.05 * quiescent


ALPHA_FE_SCATTER = 0.05  # dex, intrinsic (Thomas et al. 2005)
ALPHA_FE_RANGE = (-0.1, 0.5)


def median_alpha_fe(vdisp, logssfr):
    """Median [α/Fe] of the stars given σ* (km/s) and log sSFR (yr⁻¹).

    Quiescent (log sSFR ≤ −11): Thomas et al. (2005, ApJ 621, 673), [α/Fe] = −0.55 + 0.33 log σ; on the
    main sequence (log sSFR ≥ −10) 0, their low-mass galaxies with young populations having low
    [α/Fe]; linear in log sSFR between.
    """
    early = np.clip((-10.0 - np.asarray(logssfr, float)) / 1.0, 0.0, 1.0)
    return early * (-0.55 + 0.33 * np.log10(np.asarray(vdisp, float)))


def median_age(logm, quiescent: bool):
    """Median Gyr since star formation began: older for massive and quiescent galaxies."""
    if quiescent:
        return 9.5 + 1.0 * (logm - 10.5)
    return 4.5 + 2.0 * (logm - 9.0)


def max_age_for_logssfr(logssfr: float) -> float:
    """Oldest delayed-τ SFH (Gyr) that can still reach this sSFR.

    As τ → ∞ the SFH is ψ ∝ t, so sSFR → 2/(age·f_live); f_live ≈ 0.6 is the surviving fraction.
    """
    return 0.95 * 2.0 / (10.0 ** logssfr * 0.6) / 1e9


# ------------------------------------------------------------------------------------------------
# Drawing one galaxy
# ------------------------------------------------------------------------------------------------


def _draw_z(rng, table: CosmoTable, size):
    """Redshifts with density ∝ dV/dz on the table's range."""
    return np.interp(rng.random(size), table.dvdz_cdf, table.z)


def _draw_mass_and_z(rng, table: CosmoTable, fixed: dict, flux_limit: float | None):
    """(logmstar, z): stellar-mass function × volume, kept if brighter than the flux limit."""
    vary_m, vary_z = "logmstar" not in fixed, "z" not in fixed
    if not vary_m and not vary_z:
        return fixed["logmstar"], fixed["z"]
    phi_max = mass_function(LOGM_RANGE[0])
    for _ in range(200):
        size = 256
        logm = rng.uniform(*LOGM_RANGE, size) if vary_m else np.full(size, fixed["logmstar"])
        z = _draw_z(rng, table, size) if vary_z else np.full(size, fixed["z"])
        keep = rng.random(size) < (mass_function(logm) / phi_max if vary_m else 1.0)
        if flux_limit is not None:
            dist_mod = 5.0 * np.log10(table.luminosity_distance(z) * 1e5)
            m_r = absolute_r(logm, rng.normal(0.0, 0.15, size)) + dist_mod
            keep &= m_r < flux_limit
        hit = np.flatnonzero(keep)
        if hit.size:
            return float(logm[hit[0]]), float(z[hit[0]])
    # A fixed mass too faint to be seen anywhere in the range: ignore the flux limit.
    return _draw_mass_and_z(rng, table, fixed, None)


def _truncated_normal(rng, mean, sigma, low, high):
    """One draw of N(mean, sigma) restricted to [low, high] (resampling, then clipping)."""
    for _ in range(50):
        x = rng.normal(mean, sigma)
        if low <= x <= high:
            return float(x)
    return float(np.clip(mean, low, high))


def fiber_fraction(logm, z, d_l_mpc, size_offset_dex, seeing_fwhm=1.4):
    """Fraction of the galaxy's light inside the 3″ SDSS fibre.

    Exponential profile with half-light radius log R_e/kpc = 0.6 + 0.2 (log M − 10.5) (+ scatter; Shen
    et al. 2003 late types),
    blurred by the seeing; enclosed light 1 − (1 + x) e^(−x), x = 1.678 r_fibre / R_e.
    """
    r_e_kpc = 10.0 ** (0.6 + 0.2 * (logm - 10.5) + size_offset_dex)
    d_a_kpc = d_l_mpc * 1e3 / (1.0 + z) ** 2
    theta_e = r_e_kpc / d_a_kpc * 206264.8
    theta = math.hypot(theta_e, 0.5 * seeing_fwhm)
    x = 1.678 * FIBER_RADIUS_ARCSEC / theta
    return float(np.clip(1.0 - (1.0 + x) * math.exp(-x), 0.03, 0.95))


def draw_galaxy(seed: int, index: int, fixed: dict, zmin: float, zmax: float,
                flux_limit: float | None = R_LIMIT) -> dict:
    """Generating parameters of galaxy ``index``; ``fixed`` maps parameter names to pinned values.

    Returns a dict with every name of :data:`GENERATING_PARAMETERS` plus ``quiescent``,
    ``vdisp_gas`` (km/s), ``fiber_frac`` and ``ra``/``dec`` offsets from the plate centre (deg).
    """
    check_pinned_z(fixed, zmin, zmax)
    rng = population_stream(seed, index)
    table = cosmo_table(float(zmin), float(zmax))
    p: dict = {}
    p["logmstar"], p["z"] = _draw_mass_and_z(rng, table, fixed, flux_limit)
    logm = p["logmstar"]

    if "logssfr" in fixed:
        p["logssfr"] = fixed["logssfr"]
    else:
        f_q = float(quiescent_fraction(logm))
        u = rng.random()
        if u < GREEN_VALLEY_PEAK * 4.0 * f_q * (1.0 - f_q):  # leaving the main sequence
            p["logssfr"] = float(rng.uniform(-11.4, -10.6))
        elif rng.random() < f_q:
            p["logssfr"] = _truncated_normal(rng, quiescent_logssfr(logm), 0.4, -13.0, -10.6)
        else:
            p["logssfr"] = _truncated_normal(rng, main_sequence_logssfr(logm), 0.3, -11.3, -8.8)
    p["quiescent"] = bool(p["logssfr"] < QUIESCENT_BELOW)
    quiescent = p["quiescent"]

    universe_age = float(table.age_at(p["z"]))
    oldest = min(universe_age - 0.3, max_age_for_logssfr(p["logssfr"]))
    if "age" in fixed:
        p["age"] = fixed["age"]
    else:
        spread = 1.5 if quiescent else 2.0
        p["age"] = _truncated_normal(rng, median_age(logm, quiescent), spread, 1.0, max(oldest, 1.0))

    if "logzsol" in fixed:
        p["logzsol"] = fixed["logzsol"]
    else:
        scatter = float(np.clip(0.3 - 0.1 * (logm - 9.0), 0.1, 0.3))
        p["logzsol"] = _truncated_normal(rng, median_logzsol(logm, quiescent), scatter, -1.3, 0.35)

    p["logzgas"] = float(np.clip(p["logzsol"] + gas_metallicity_offset(logm), *LOGZ_GAS_RANGE))

    if "a_v" in fixed:
        p["a_v"] = fixed["a_v"]
    else:
        mean = median_a_v(logm, p["logssfr"] + logm)
        p["a_v"] = float(np.clip(mean * 10.0 ** rng.normal(0.0, 0.2), 0.0, 3.0))
    p["eta"] = float(nebular_eta(logm))

    if "logu" in fixed:
        p["logu"] = fixed["logu"]
    else:
        p["logu"] = _truncated_normal(rng, median_logu(p["logzsol"]), 0.25, -3.9, -1.6)

    if "vdisp" in fixed:
        p["vdisp"] = fixed["vdisp"]
    else:
        p["vdisp"] = float(np.clip(10.0 ** rng.normal(median_log_vdisp(logm, quiescent), 0.07), 30.0, 400.0))
    p["vdisp_gas"] = max(25.0, 0.65 * p["vdisp"])

    if "alpha_fe" in fixed:
        p["alpha_fe"] = fixed["alpha_fe"]
    else:
        p["alpha_fe"] = _truncated_normal(alpha_stream(seed, index), float(median_alpha_fe(p["vdisp"], p["logssfr"])),
                                          ALPHA_FE_SCATTER, *ALPHA_FE_RANGE)

    p.update(draw_agn(agn_stream(seed, index), logm, p["logssfr"], p["vdisp"], pinned="agn" in fixed))
    p["agn"] = p["agn_class"]
    p.update(draw_outflow(outflow_stream(seed, index), p["agn_class"], p["agn_log_loiii"], p["agn_sigma"]))

    # Nuisances: always drawn, never fixed (they change amplitude or position, not the galaxy).
    size_offset = rng.normal(0.0, 0.15)
    p["fiber_frac"] = fiber_fraction(logm, p["z"], float(table.luminosity_distance(p["z"])), size_offset)
    radius = 1.49 * math.sqrt(rng.random())
    angle = rng.uniform(0.0, 2.0 * math.pi)
    p["dra"], p["ddec"] = radius * math.cos(angle), radius * math.sin(angle)
    return p


# ------------------------------------------------------------------------------------------------
# AGN and LINER-like emission
# ------------------------------------------------------------------------------------------------

#: BPT demarcations, y = log [O III]5007/Hβ against x = log [N II]6584/Hα or log [S II]6717,6731/Hα.
def kauffmann03_n2(x):
    """Kauffmann et al. (2003): star-forming galaxies lie below y = 0.61/(x − 0.05) + 1.30 (x < 0.05)."""
    x = np.asarray(x, float)
    return np.where(x < 0.05, 0.61 / (np.minimum(x, 0.0499) - 0.05) + 1.30, -np.inf)


def kewley01_n2(x):
    """Kewley et al. (2001) maximum starburst line: y = 0.61/(x − 0.47) + 1.19 (x < 0.47)."""
    x = np.asarray(x, float)
    return np.where(x < 0.47, 0.61 / (np.minimum(x, 0.4699) - 0.47) + 1.19, -np.inf)


def kewley01_s2(x):
    """Kewley et al. (2001) maximum starburst line: y = 0.72/(x − 0.32) + 1.30 (x < 0.32)."""
    x = np.asarray(x, float)
    return np.where(x < 0.32, 0.72 / (np.minimum(x, 0.3199) - 0.32) + 1.30, -np.inf)


def kewley06_seyfert_liner(x):
    """Kewley et al. (2006) Seyfert/LINER division on the [S II] diagram: y = 1.89 x + 0.76."""
    return 1.89 * np.asarray(x, float) + 0.76


AGN_FRACTION_MAX = 0.5  # fraction of AGN among the most massive galaxies
AGN_MASS_MID, AGN_MASS_WIDTH = 10.6, 0.25  # log M* where the fraction is half its maximum; logistic width


def agn_fraction(logm):
    """Fraction of galaxies with an AGN or LINER-like nucleus at stellar mass 10^logm.

    Kauffmann et al. (2003, MNRAS 346, 1055) find 22,623 narrow-line AGN among 122,808 SDSS galaxies
    (18 %), "almost exclusively in massive galaxies": here a logistic rise from < 3 % below 10^9.8 to
    40–50 % above 10^11, which gives 18 % over the mock's flux-limited population (tests/test_mock_agn.py).
    """
    return AGN_FRACTION_MAX / (1.0 + np.exp(-(np.asarray(logm) - AGN_MASS_MID) / AGN_MASS_WIDTH))


#: Line ratios of the AGN component (log10; mean, scatter, low, high). Seyferts: high [O III]/Hβ, above
#: the Kewley (2006) line on the [S II] diagram; LINERs: [O III]/Hβ < 3 and [O II]3727/[O III] ≥ 1,
#: [O I]6300/[O III] ≥ 1/3 (Heckman 1980's definition). Both lie above Kewley (2001) on both diagrams.
#: n2ha = [N II]6584/Hα, s2ha = [S II]6717+6731/Hα, o3hb = [O III]5007/Hβ (observed, as on the BPT
#: diagrams); o1o3 = [O I]6300/[O III]5007 and o2o3 = [O II]3726+3729/[O III]5007 (before dust).
AGN_RATIOS = {
    AGN_SEYFERT: {"o3hb": (0.85, 0.15, 0.55, 1.15), "n2ha": (0.0, 0.15, -0.3, 0.35),
                  "s2ha": (-0.3, 0.12, -0.6, 0.0), "o1o3": (-1.0, 0.15, -1.4, -0.6), "o2o3": (-0.5, 0.15, -0.9, -0.1)},
    AGN_LINER: {"o3hb": (0.1, 0.15, -0.3, 0.45), "n2ha": (0.15, 0.12, -0.1, 0.45),
                "s2ha": (0.0, 0.1, -0.25, 0.25), "o1o3": (-0.2, 0.12, -0.45, 0.2), "o2o3": (0.4, 0.15, 0.0, 0.8)},
}  # fmt: skip
#: log10 L[O III]5007 / Lsun in the fibre, observed (not corrected for dust), as Kauffmann et al. (2003)
#: measure it: their strong AGN have L[O III] > 10^7 Lsun; LINERs are weaker. (mean at 10^10.5, slope, σ, low, high)
AGN_LOG_LOIII = {AGN_SEYFERT: (6.7, 0.3, 0.45, 5.5, 8.5), AGN_LINER: (5.9, 0.2, 0.35, 5.0, 7.0)}


def agn_in_region(cls: int, n2ha: float, s2ha: float, o3hb: float) -> bool:
    """Whether AGN line ratios lie in their class's BPT region (above Kewley 2001 on both diagrams;
    Seyferts above and LINERs below the Kewley 2006 line)."""
    above = o3hb > float(kewley01_n2(n2ha)) and o3hb > float(kewley01_s2(s2ha))
    seyfert_side = o3hb > float(kewley06_seyfert_liner(s2ha))
    return above and (seyfert_side if cls == AGN_SEYFERT else not seyfert_side)


def draw_agn(rng, logm: float, logssfr: float, vdisp: float, pinned: bool = False) -> dict:
    """AGN of one galaxy: ``agn_class`` (0 none, 1 Seyfert, 2 LINER-like), ``agn_log_loiii`` (log10 Lsun,
    None without AGN: NaN would make two equal draws compare unequal), line ratios ``agn_ratios`` (log10) and gas dispersion ``agn_sigma`` (km/s).

    Seyferts sit preferentially in star-forming hosts and LINERs in quiescent ones (Kauffmann et al.
    2003: hosts of luminous AGN are young, of weak ones like normal early types). Narrow-line widths
    follow σ* with 0.1 dex scatter (Nelson & Whittle 1996).
    """
    none = {"agn_class": AGN_NONE, "agn_log_loiii": None, "agn_ratios": {}, "agn_sigma": 0.0}
    u_agn, u_kind = rng.random(), rng.random()
    if pinned or u_agn >= float(agn_fraction(logm)):
        return none
    p_seyfert = 0.25 if logssfr < QUIESCENT_BELOW else 0.6
    cls = AGN_SEYFERT if u_kind < p_seyfert else AGN_LINER
    mean, slope, sigma, low, high = AGN_LOG_LOIII[cls]
    log_l = _truncated_normal(rng, mean + slope * (logm - 10.5), sigma, low, high)
    for _ in range(100):  # redraw until the ratios fall in the class's region (a few tries at most)
        ratios = {k: _truncated_normal(rng, *v) for k, v in AGN_RATIOS[cls].items()}
        if agn_in_region(cls, ratios["n2ha"], ratios["s2ha"], ratios["o3hb"]):
            break
    else:
        raise RuntimeError("AGN line ratios: no draw in the class's BPT region")  # the table above is wrong
    agn_sigma = float(np.clip(vdisp * 10.0 ** rng.normal(0.0, 0.1), 50.0, 500.0))
    return {"agn_class": cls, "agn_log_loiii": log_l, "agn_ratios": ratios, "agn_sigma": agn_sigma}


#: [O III] outflow wings (Woo et al. 2016, ApJ 817, 108: ~39,000 SDSS type 2 AGN). Their [O III] is often
#: a narrow core plus a broader, usually blueshifted wing; the share of AGN with such non-gravitational
#: kinematics rises with L[O III] (most luminous AGN have it), and where the profile needs two Gaussians
#: its overall dispersion is 1.3–1.4 × σ*. Here: the chance of a wing rises linearly in log L[O III]
#: (:func:`outflow_probability`); the wing carries a share U(0.15, 0.45) of the [O III] flux with
#: σ = U(1.5, 2.5) × the core's, shifted by N(−100, 100) km/s, which gives an overall [O III] σ ≈ 1.4 × the
#: core's. Rounded values chosen to match those published summaries, not a fit to their distributions.
OUTFLOW_SHARE = (0.15, 0.45)
OUTFLOW_SIGMA_RATIO = (1.5, 2.5)
OUTFLOW_DV_KMS = (-100.0, 100.0)  # mean, scatter


def outflow_probability(log_loiii):
    """Chance that an AGN's [O III] has an outflow wing: 0.5 at L[O III] = 10^6.7 Lsun, +0.3 per dex,
    within 0.1–0.9."""
    return np.clip(0.5 + 0.3 * (np.asarray(log_loiii, float) - 6.7), 0.1, 0.9)


def draw_outflow(rng, agn_class: int, log_loiii, agn_sigma: float) -> dict:
    """[O III] outflow wing of an AGN: ``oiii_wing_frac`` (share of the [O III] flux in the wing, 0 without),
    ``oiii_wing_sigma`` and ``oiii_wing_dv`` (km/s, the wing's dispersion and velocity offset)."""
    none = {"oiii_wing_frac": 0.0, "oiii_wing_sigma": 0.0, "oiii_wing_dv": 0.0}
    u, share, ratio, dv = rng.random(), rng.uniform(*OUTFLOW_SHARE), rng.uniform(*OUTFLOW_SIGMA_RATIO), rng.normal(*OUTFLOW_DV_KMS)
    if agn_class == AGN_NONE or u >= float(outflow_probability(log_loiii)):
        return none
    return {"oiii_wing_frac": float(share), "oiii_wing_sigma": float(min(ratio * agn_sigma, 1500.0)),
            "oiii_wing_dv": float(dv)}


def typical_values(vary, overrides: dict | None = None) -> dict:
    """The pinned values for the parameters that ``vary`` leaves out (``vary=None``: none pinned)."""
    if vary is None:
        return {}
    values = dict(TYPICAL_VALUES, **(overrides or {}))
    return {name: values[name] for name in GENERATING_PARAMETERS if name not in vary}


def check_pinned_z(fixed: dict, zmin: float, zmax: float) -> None:
    """ValueError when ``fixed`` pins z outside (zmin, zmax): every galaxy would miss the asked range."""
    if "z" in fixed and not zmin < fixed["z"] < zmax:
        raise ValueError(
            f"z is pinned to {fixed['z']} (vary leaves it out) but the redshift range is ({zmin}, {zmax}): "
            f"add z to vary or choose a range that contains {fixed['z']}")


def check_vary(vary) -> tuple[str, ...] | None:
    """``vary`` as a sorted tuple in generation order; ValueError for unknown names."""
    if vary is None:
        return None
    if isinstance(vary, str):
        vary = [v for v in vary.replace(",", " ").split() if v]
    unknown = sorted(set(vary) - set(GENERATING_PARAMETERS))
    if unknown:
        raise ValueError(f"unknown generating parameter(s) {unknown}; choose from {GENERATING_PARAMETERS}")
    return tuple(name for name in GENERATING_PARAMETERS if name in set(vary))
