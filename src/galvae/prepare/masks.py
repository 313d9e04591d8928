"""Which SDSS pixels are bad: ivar, non-finite values, and the ``and_mask`` bits we do not trust.

``and_mask`` holds the SPPIXMASK bits set in *every* exposure of a pixel (bit numbers from the SDSS
idlutils ``sdssMaskbits.par``; bits 13–15 and 29–31 are unused). Which bits count as bad was decided
on the 30 real files of ``shared/data/sdss`` by comparing, for pixels with ivar > 0, the fraction each
bit covers and χ² = ivar·(flux − model)² against the pipeline's own model (clean pixels: median 0.6):

- bits that only ever appear with ivar = 0 there (LOWFLAT, FULLREJECT, NOSKY, NODATA; SCATTEREDLIGHT
  on all but 2 of 1269 pixels) are listed as bad anyway, so the mask does not depend on ivar handling;
- per-fibre calibration failures (NOPLUG, BADTRACE, BADFLAT, BADARC, LARGESHIFT) are bad: they can
  bend the continuum of a whole camera, which a χ² against a model with free polynomial terms cannot
  reveal, and the continuum shape is what the VAE learns. They are rare (BADTRACE/BADFLAT: the red
  camera of 2 galaxies and 1 QSO in 30), and the gappy-PCA fill replaces them;
- pixel-level rejections and sky failures (COMBINEREJ, BADFLUXFACTOR, BADSKYCHI, REDMONSTER) and
  CROSSTALK (light from a neighbouring fibre) are bad;
- NOT bad: MANYBADCOLUMNS and MANYREJECTED are per-camera counts ("more than 10 % of pixels …"); the
  offending pixels carry their own bits or ivar = 0. MANYBADCOLUMNS covers 27–47 % of the pixels
  (one camera) of 7 of the 30 spectra, with χ² no different from clean pixels (median 0.60 vs 0.64). NEARBADPIXEL covers
  up to 22 % of a spectrum (3 % of all pixels) with χ² equal to clean (0.64 vs 0.62). BRIGHTSKY covers
  1–8 % of pixels, mostly red sky lines, with median χ² 1.05: noisier, but ivar already says so, and
  masking it would punch holes at every bright sky line. PARTIALREJECT keeps a valid extraction with
  a larger error. SMEARIMAGE/SMEARHIGHSN/SMEARMEDSN only say a smear exposure exists; NEARWHOPPER
  and WHOPPER are deprecated; BADSKYFIBER concerns sky fibres.

Pass ``bits=`` to :func:`bad_pixel_mask` for another choice (e.g. ``SPPIXMASK`` to reject any bit).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["SDSS_BAD_AND_MASK_BITS", "SPPIXMASK", "bad_pixel_mask", "bits_to_mask"]

#: Every SDSS SPPIXMASK bit: name → bit number.
SPPIXMASK: dict[str, int] = {
    "NOPLUG": 0,           # fibre not listed in the plug map
    "BADTRACE": 1,         # bad trace
    "BADFLAT": 2,          # low counts in the fibre flat
    "BADARC": 3,           # bad arc (wavelength) solution
    "MANYBADCOLUMNS": 4,   # > 10 % of the pixels are bad columns
    "MANYREJECTED": 5,     # > 10 % of the pixels rejected in extraction
    "LARGESHIFT": 6,       # large spatial shift between flat and object
    "BADSKYFIBER": 7,      # sky fibre with extreme residuals
    "NEARWHOPPER": 8,      # within 2 fibres of a very bright fibre (deprecated)
    "WHOPPER": 9,          # very bright fibre
    "SMEARIMAGE": 10,      # smear exposure available (deprecated)
    "SMEARHIGHSN": 11,     # S/N enough for a full smear fit (deprecated)
    "SMEARMEDSN": 12,      # S/N enough for a scaled median smear fit (deprecated)
    "NEARBADPIXEL": 16,    # bad CCD pixel within 3 pixels of the trace
    "LOWFLAT": 17,         # flat field < 0.5
    "FULLREJECT": 18,      # pixel fully rejected in extraction (ivar = 0)
    "PARTIALREJECT": 19,   # some CCD pixels rejected in extraction
    "SCATTEREDLIGHT": 20,  # scattered light significant
    "CROSSTALK": 21,       # cross-talk from neighbouring fibres significant
    "NOSKY": 22,           # sky level unknown (ivar = 0)
    "BRIGHTSKY": 23,       # sky much brighter than the object
    "NODATA": 24,          # no data in the combine B-spline (ivar = 0)
    "COMBINEREJ": 25,      # rejected when combining exposures
    "BADFLUXFACTOR": 26,   # low flux-calibration or flux-correction factor
    "BADSKYCHI": 27,       # relative χ² > 3 in sky residuals at this wavelength
    "REDMONSTER": 28,      # contiguous region of bad sky-residual χ²
}

_BAD_NAMES = ("NOPLUG", "BADTRACE", "BADFLAT", "BADARC", "LARGESHIFT", "LOWFLAT", "FULLREJECT",
              "SCATTEREDLIGHT", "CROSSTALK", "NOSKY", "NODATA", "COMBINEREJ", "BADFLUXFACTOR",
              "BADSKYCHI", "REDMONSTER")

#: The ``and_mask`` bits treated as bad by default (name → bit number); the module docstring says why.
SDSS_BAD_AND_MASK_BITS: dict[str, int] = {name: SPPIXMASK[name] for name in _BAD_NAMES}


def bits_to_mask(bits) -> int:
    """An integer bitmask from bit names, bit numbers, a name → bit mapping, or an int mask itself."""
    if isinstance(bits, (int, np.integer)):
        return int(bits)
    if isinstance(bits, Mapping):
        bits = bits.values()
    if isinstance(bits, (str, bytes)) or not isinstance(bits, Iterable):
        raise TypeError(f"bits must be a mapping, an iterable of names/numbers, or an int, got {bits!r}")
    mask = 0
    for b in bits:
        number = SPPIXMASK[b] if isinstance(b, str) else int(b)
        if not 0 <= number < 32:
            raise ValueError(f"mask bit {number} outside 0–31")
        mask |= 1 << number
    return mask


def bad_pixel_mask(flux, ivar, and_mask=None, bits=None) -> np.ndarray:
    """True where a pixel is bad: ivar <= 0, flux or ivar not finite, or ``and_mask`` has a bad bit.

    ``flux``, ``ivar``, ``and_mask``: arrays of one shape, (M,) or (N, M); ``and_mask`` may be None.
    ``bits``: the bits counted as bad (see :func:`bits_to_mask`); None: :data:`SDSS_BAD_AND_MASK_BITS`.
    """
    flux = np.asarray(flux)
    ivar = np.asarray(ivar)
    if flux.shape != ivar.shape:
        raise ValueError(f"flux {flux.shape} and ivar {ivar.shape} differ in shape")
    with np.errstate(invalid="ignore"):
        bad = ~(ivar > 0) | ~np.isfinite(ivar) | ~np.isfinite(flux)
    if and_mask is not None:
        and_mask = np.asarray(and_mask)
        if and_mask.shape != flux.shape:
            raise ValueError(f"and_mask {and_mask.shape} and flux {flux.shape} differ in shape")
        mask = bits_to_mask(SDSS_BAD_AND_MASK_BITS if bits is None else bits)
        bad |= (and_mask.astype(np.int64, copy=False) & mask) != 0
    return bad
