"""Rest-frame galaxy spectra from bagpipes (BC03 + MILES stellar grids, Cloudy nebular grids).

One :class:`Renderer` per process: building a ``bagpipes.model_galaxy`` resamples the stellar and
nebular grids (~1 s), updating it for a new galaxy costs ~2 ms. Departures from a plain
``model_galaxy(..., spec_wavs=...)`` call, each for speed or fidelity:

- ``spec_wavs`` only sets bagpipes' internal sampling (R = 3000 between the bluest rest wavelength
  any redshift needs and the reddest observed one); afterwards ``spec_wavs`` is unset so ``update``
  stops resampling with ``spectres`` (a Python loop, 38 of its 41 ms) and we rebin ourselves;
- nebular lines are taken out of bagpipes' nebular grid (which drops each line into one pixel) and
  returned as a list, so the instrument can draw them as resolved Gaussians with the gas dispersion;
- wavelengths are converted from air (BC03, MILES and Cloudy line lists are in air) to vacuum, like
  SDSS spectra;
- the nebular emission has its own metallicity (bagpipes' ``nebular`` ``metallicity``), the gas's,
  above the stars' (:func:`.population.gas_metallicity_offset`);
- the [N II] 6548, 6584 lines are scaled by 10^−0.2 (:data:`NII_SCALE_DEX`): bagpipes' grid ties
  nitrogen to the one metallicity of stars and gas, and its metal-rich H II regions then lie 0.1–0.3 dex
  right of the SDSS star-forming sequence, across the Kauffmann et al. (2003) line that bounds it
  (with this scaling and log U of :mod:`.population`, every star-forming host is below that line);
- the [S II] 6717, 6731 lines are scaled by 10^−0.2 (:data:`SII_SCALE_DEX`): at that log U bagpipes' grid
  puts the star-forming hosts' [S II]/Hα about 0.2 dex above the SDSS star-forming galaxies';
- the stellar continuum's Lick Mg and Fe features are deepened or weakened for the galaxy's [α/Fe]
  (:mod:`.alpha`), before the velocity broadening, which the observation applies.

Importing bagpipes prints to stdout and may write its IGM table into its own package folder on the
very first import; it writes nothing into the working directory while making models (checked in
``tests/test_mock.py``).
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

C_KMS = 299792.458
R_INTERNAL = 3000.0  # bagpipes sampling, λ/Δλ = 2R: 1.7e-4 in ln λ, finer than an SDSS pixel (2.3e-4)
T_BIRTH_CLOUD = 0.01  # Gyr: stars younger than this ionise gas and sit behind eta × A_V
ETA_BIRTH_CLOUD = 2.0  # Calzetti (2000): nebular lines see ~2× the continuum attenuation (default; the
#                        mock sets it per galaxy, population.nebular_eta)
MASSFORMED = 10.0  # log10 Msun formed in the model; spectra are rescaled to the wanted mass
NII_SCALE_DEX = -0.2  # host [N II] lines (see the module docstring)
#: Host [S II] 6717, 6731 lines. bagpipes' grid at the log U that puts the star-forming hosts on the SDSS
#: [N II]–[O III] sequence (:func:`.population.median_logu`) gives log [S II]/Hα ≈ −0.2 to −0.3 ([S II]
#: forms in the partly ionised zone beyond the ionisation front, which grows as log U falls), while SDSS star-forming galaxies lie near −0.4 to −0.5 (Kewley et al. 2006,
#: MNRAS 372, 961, their [S II] diagram). An empirical correction like the [N II] one.
SII_SCALE_DEX = -0.2


def import_bagpipes():
    """bagpipes, imported with its start-up chatter routed to the debug log."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        import bagpipes
    for line in buffer.getvalue().splitlines():
        log.debug("bagpipes: %s", line)
    return bagpipes


def air_to_vacuum(wave_air):
    """Vacuum wavelengths (Å) from air wavelengths (Å): refractive index of standard air.

    n − 1 = 8.336624e-5 + 2.408927e-2/(130.10659 − s²) + 1.599741e-4/(38.925688 − s²), s = 10⁴/λ_air
    (the air-to-vacuum inversion of the Ciddor 1996 / Morton 2000 relation); below 2000 Å unchanged.
    """
    wave_air = np.asarray(wave_air, dtype=np.float64)
    s2 = (1e4 / np.maximum(wave_air, 2000.0)) ** 2
    n = (1.0 + 8.336624212083e-5 + 2.408926869968e-2 / (130.1065924522 - s2)
         + 1.599740894897e-4 / (38.92568793293 - s2))
    return np.where(wave_air >= 2000.0, wave_air * n, wave_air)


def components(z, age, tau, logzsol, a_v, logu, logzgas=None, eta=ETA_BIRTH_CLOUD) -> dict:
    """bagpipes model components of one galaxy: delayed-τ SFH, nebular emission (gas metallicity
    ``logzgas``, that of the stars when None), Calzetti dust."""
    return {
        "redshift": float(z),
        "t_bc": T_BIRTH_CLOUD,
        "delayed": {"age": float(age), "tau": float(tau), "massformed": MASSFORMED,
                    "metallicity": 10.0 ** float(logzsol)},
        "nebular": {"logU": float(logu), "metallicity": 10.0 ** float(logzsol if logzgas is None else logzgas)},
        "dust": {"type": "Calzetti", "Av": float(a_v), "eta": float(eta)},
    }


@dataclass
class RestSpectrum:
    """One galaxy from bagpipes, for its stellar mass as formed in the model (10^MASSFORMED).

    ``wave``: vacuum rest wavelength, Å; ``flux``: f_λ at observed wavelength wave·(1+z),
    erg s⁻¹ cm⁻² Å⁻¹, nebular continuum included, lines excluded; ``line_wave`` (vacuum rest, Å) and
    ``line_flux`` (erg s⁻¹ cm⁻², attenuated); SFH summaries from bagpipes.
    """

    wave: np.ndarray
    flux: np.ndarray
    line_wave: np.ndarray
    line_flux: np.ndarray
    logmstar: float  # surviving stellar mass of the model, log10 Msun
    sfr: float  # Msun/yr averaged over 100 Myr
    mwage: float  # mass-weighted age, Gyr


@contextlib.contextmanager
def _bagpipes_sampling(config, r_spec: float, max_redshift: float):
    """Temporarily set bagpipes' spectral sampling (read only while a model is built)."""
    saved = config.R_spec, config.max_redshift
    config.R_spec, config.max_redshift = r_spec, max_redshift
    try:
        yield
    finally:
        config.R_spec, config.max_redshift = saved


def _nebular_continuum_grid(config, wavelengths):
    """bagpipes' nebular grid without its lines: continuum resampled to ``wavelengths``.

    Same layout as ``nebular.combined_grid`` (wavelength, metallicity, logU, age).
    """
    n_z, n_u, n_age = config.metallicities.size, config.logU.size, config.neb_ages.size
    grid = np.zeros((wavelengths.size, n_z, n_u, n_age))
    for i in range(n_z):
        for j in range(n_u):
            raw = config.cont_grid[n_z * j + i + 1]
            for k in range(n_age):
                grid[:, i, j, k] = np.interp(wavelengths, config.neb_wavs, raw[k + 1, 1:], left=0, right=0)
    return grid


class Renderer:
    """A bagpipes model built once and updated per galaxy.

    ``obs_wave_range``: observed-frame wavelengths (Å) that spectra must cover; ``zmax`` the highest
    redshift asked for (sets the bluest rest wavelength sampled finely).
    """

    def __init__(self, obs_wave_range: tuple[float, float], zmax: float, r_spec: float = R_INTERNAL):
        bagpipes = import_bagpipes()
        from bagpipes import config, utils
        from bagpipes.models.dust_attenuation_model import dust_attenuation

        self._config, self._utils = config, utils
        comps = components(min(zmax, 0.05), 5.0, 3.0, 0.0, 0.5, -3.0)
        spec_wavs = np.array([obs_wave_range[0], obs_wave_range[1]], dtype=float)
        with _bagpipes_sampling(config, r_spec, zmax + 0.05):
            model = bagpipes.model_galaxy(comps, spec_wavs=spec_wavs)
        model.spec_wavs = None  # update() would otherwise resample with spectres every time
        model.nebular.combined_grid = _nebular_continuum_grid(config, model.wavelengths)
        self.model = model
        self.wave_vac = air_to_vacuum(model.wavelengths)
        self.line_wave_vac = air_to_vacuum(config.line_wavs)
        calzetti = dust_attenuation(np.array([1528.0, 4400.0, 5500.0]), {"type": "Calzetti"}).A_cont
        self.a_fuv_per_a_v = float(calzetti[0] / calzetti[2])
        self.a_b_per_a_v = float(calzetti[1] / calzetti[2])
        self._sfh_comps = comps
        if len(model.line_fluxes) != config.line_wavs.size:
            raise RuntimeError("bagpipes line names are not unique: line fluxes would be lost")
        self.halpha_index = int(np.argmin(np.abs(config.line_wavs - 6562.8)))
        self.nii_index = np.array([int(np.argmin(np.abs(config.line_wavs - w))) for w in (6548.05, 6583.45)])
        self.sii_index = np.array([int(np.argmin(np.abs(config.line_wavs - w))) for w in (6716.44, 6730.82)])
        if not np.allclose(config.line_wavs[self.sii_index], (6716.44, 6730.82), atol=0.5):
            raise RuntimeError("bagpipes' line list has no [S II] 6717, 6731")
        from .alpha import AlphaResponse

        self.alpha = AlphaResponse(self.wave_vac)
        log.debug("bagpipes model ready: %d wavelengths", self.wave_vac.size)

    # --- star-formation history -----------------------------------------------------------------

    def _sfh_logssfr(self, age, log_tau, logzsol):
        comps = self._sfh_comps
        comps["delayed"].update(age=float(age), tau=float(10.0 ** log_tau), metallicity=10.0 ** float(logzsol))
        sfh = self.model.sfh
        sfh.update(comps)
        return float(np.log10(max(sfh.sfr, 1e-300)) - sfh.stellar_mass)

    def solve_tau(self, age: float, logssfr: float, logzsol: float) -> float:
        """τ (Gyr) of the delayed-τ SFH of this age whose 100-Myr sSFR is ``logssfr`` (log yr⁻¹).

        Bisection on log τ in [−2, 2] with bagpipes' own SFH object (0.1 ms per step); sSFR rises
        monotonically with τ at fixed age. Unreachable targets give the nearest end of the range.
        """
        lo, hi = -2.0, 2.0
        if self._sfh_logssfr(age, hi, logzsol) <= logssfr:
            return 10.0 ** hi
        if self._sfh_logssfr(age, lo, logzsol) >= logssfr:
            return 10.0 ** lo
        while hi - lo > 1e-5:  # 19 steps; τ to 0.002 %, sSFR to ~1e-5 dex
            mid = 0.5 * (lo + hi)
            if self._sfh_logssfr(age, mid, logzsol) < logssfr:
                lo = mid
            else:
                hi = mid
        return float(10.0 ** (0.5 * (lo + hi)))

    # --- spectra -----------------------------------------------------------------------------------

    def luminosity_distance_correction(self, z: float, d_l_mpc: float) -> float:
        """Factor turning bagpipes' flux (its tabulated distance, Δz = 0.01) into one at ``d_l_mpc``."""
        d_bagpipes = float(np.interp(z, self._utils.z_array, self._utils.ldist_at_z))
        return (d_bagpipes / d_l_mpc) ** 2

    def render(self, z, age, tau, logzsol, a_v, logu, alpha_fe: float = 0.0, logzgas=None,
               eta: float = ETA_BIRTH_CLOUD) -> RestSpectrum:
        """The model galaxy's spectrum and lines for these parameters (10^MASSFORMED Msun formed);
        ``alpha_fe``: [α/Fe] of the stars (:mod:`.alpha`; 0 leaves bagpipes' solar-scaled spectrum);
        ``logzgas``: log Z/Zsun of the gas of the nebular lines and continuum (None: that of the stars);
        ``eta``: A_V of the lines and of stars younger than 10 Myr over ``a_v``."""
        model = self.model
        model.update(components(z, age, tau, logzsol, a_v, logu, logzgas, eta))
        lines = np.array(list(model.line_fluxes.values()), dtype=float)
        lines[self.nii_index] *= 10.0 ** NII_SCALE_DEX
        lines[self.sii_index] *= 10.0 ** SII_SCALE_DEX
        return RestSpectrum(
            wave=self.wave_vac, flux=self.alpha.enhance(np.asarray(model.spectrum_full, dtype=float), float(alpha_fe)),
            line_wave=self.line_wave_vac, line_flux=lines,
            logmstar=float(model.sfh.stellar_mass), sfr=float(model.sfh.sfr),
            mwage=float(model.sfh.mass_weighted_age),
        )
