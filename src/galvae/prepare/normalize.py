"""Per-spectrum normalisation (docs/design.md §3).

Each spectrum is divided by the median of its good pixels in a rest-frame window that every accepted
redshift covers. The default 5300–5800 Å lies inside the rest-frame coverage of an SDSS spectrum
(3800–9200 Å observed) for all z < 0.58 and holds no strong emission line ([N I] 5200 and He I 5876 are
outside), so the factor measures the stellar continuum, not the nebular lines.
"""

from __future__ import annotations

import warnings

import numpy as np

DEFAULT_WINDOW = (5300.0, 5800.0)


def normalisation_factors(wave: np.ndarray, flux: np.ndarray, good: np.ndarray,
                          window: tuple[float, float] = DEFAULT_WINDOW, min_pixels: int = 20) -> np.ndarray:
    """Median flux of good pixels in ``window`` (Å) per spectrum, shape (N,).

    NaN where fewer than ``min_pixels`` good pixels fall in the window or the median is not positive:
    such a spectrum cannot be normalised and is rejected by the caller.
    """
    in_window = (wave >= window[0]) & (wave <= window[1])
    if not in_window.any():
        raise ValueError(f"normalisation window {window} Å lies outside the wavelength grid "
                         f"{wave[0]:.0f}–{wave[-1]:.0f} Å")
    f = np.where(good[:, in_window], flux[:, in_window], np.nan)
    n_good = np.count_nonzero(good[:, in_window], axis=1)
    with warnings.catch_warnings():  # all-NaN rows are expected here and handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(f, axis=1) if f.size else np.full(len(flux), np.nan)
    med = np.where((n_good >= min_pixels) & (med > 0), med, np.nan)
    return med
