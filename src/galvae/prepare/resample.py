"""Rest-frame wavelength grid and flux-conserving rebinning of a whole batch of spectra at once.

The rebinning has exactly the definition of ``spectres.spectres`` (Carnall 2017) with ``spec_errs``:
pixel edges are the midpoints between centres, the two end edges half a pixel out; a new pixel's flux
is the overlap-weighted mean of the old fluxes, and its error σ_new = √(Σ (o_i σ_i)²) / Σ o_i, with o_i
the overlap (Å) of old pixel i. Here it runs over a batch of N spectra, each on its own wavelength
grid, without a Python loop over pixels: the overlap sums are differences of cumulative integrals
evaluated at the new edges.

Bad pixels (a choice spectres does not make; docs/design.md §3):

- an input pixel is bad when ``ivar <= 0``, flux or ivar is not finite, or ``bad`` marks it;
- an output pixel is bad when it is not fully inside the input's edges (``covered`` is False), or when
  bad input pixels cover more than ``max_bad_weight`` of its width. The default 0 makes any overlap
  with a bad input pixel bad: spectres itself would give σ = ∞ there (ivar 0 is σ = ∞), and a flux
  that silently averages a rejected pixel is worse than a gap the gappy-PCA fill handles.
- with ``max_bad_weight > 0`` a partly bad output pixel is computed from its good input pixels only
  (their overlaps renormalised), so its flux differs from spectres', which would mix the bad ones in;
- bad output pixels get ``flux = fill`` and ``ivar = 0``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Resampled", "log_grid", "pixel_edges", "resample_batch"]


class Resampled(NamedTuple):
    """Output of :func:`resample_batch`, each (N, P): flux, inverse variance, pixel fully covered."""

    flux: np.ndarray
    ivar: np.ndarray
    covered: np.ndarray


def log_grid(n_pix: int = 4000, wmin: float = 3400.0, wmax: float = 8400.0) -> np.ndarray:
    """Pixel centres (Å), ``n_pix`` of them evenly spaced in log λ; the first is ``wmin``, the last ``wmax``."""
    if n_pix < 2 or not 0 < wmin < wmax:
        raise ValueError(f"need n_pix >= 2 and 0 < wmin < wmax, got {n_pix}, {wmin}, {wmax}")
    return np.geomspace(wmin, wmax, n_pix)


def pixel_edges(centres: np.ndarray) -> np.ndarray:
    """Pixel edges (Å) along the last axis: midpoints between centres, end edges half a pixel out.

    Shape (..., M) → (..., M + 1); the same edges as ``spectres.make_bins``.
    """
    c = np.asarray(centres, dtype=np.float64)
    if c.shape[-1] < 2:
        raise ValueError("need at least two pixel centres")
    edges = np.empty(c.shape[:-1] + (c.shape[-1] + 1,))
    edges[..., 1:-1] = 0.5 * (c[..., 1:] + c[..., :-1])
    edges[..., 0] = c[..., 0] - 0.5 * (c[..., 1] - c[..., 0])
    edges[..., -1] = c[..., -1] + 0.5 * (c[..., -1] - c[..., -2])
    return edges


def resample_batch(new_wave, wave, flux, ivar, fill: float = np.nan, *, bad=None,
                   max_bad_weight: float = 0.0, chunk_rows: int = 64) -> Resampled:
    """Rebin N spectra onto the pixel centres ``new_wave`` (Å), conserving flux as spectres does.

    Parameters
    ----------
    new_wave : (P,) increasing pixel centres of the output grid, Å.
    wave : (N, M) or (M,) increasing input pixel centres, Å (each row its own grid, e.g. λ_obs/(1+z)).
    flux, ivar : (N, M) (or (M,) for one spectrum) flux density and its inverse variance.
    fill : flux given to bad output pixels (their ivar is 0).
    bad : optional (N, M) bool, True where an input pixel is bad for other reasons (e.g. ``and_mask``).
    max_bad_weight : an output pixel is bad when bad input pixels cover more than this fraction of its
        width; 0 (default): any overlap with a bad input pixel.
    chunk_rows : rows processed together (keeps the work in cache).

    Returns
    -------
    Resampled(flux, ivar, covered), each (N, P) (or (P,) for one spectrum); float64, float64, bool.
    ``covered`` is True where the output pixel lies fully inside the input's edges.
    """
    new_edges = pixel_edges(_increasing(new_wave, "new_wave"))
    wave = _increasing(wave, "wave")
    flux = np.asarray(flux)
    single = flux.ndim == 1
    flux = np.atleast_2d(flux)
    ivar = np.atleast_2d(np.asarray(ivar))
    bad = None if bad is None else np.atleast_2d(np.asarray(bad, dtype=bool))
    _check_shapes(wave, flux, ivar, bad)
    if not 0.0 <= max_bad_weight < 1.0:
        raise ValueError(f"max_bad_weight must be in [0, 1), got {max_bad_weight}")

    n, p = flux.shape[0], new_edges.size - 1
    out = Resampled(np.empty((n, p)), np.empty((n, p)), np.empty((n, p), dtype=bool))
    shared_edges = pixel_edges(wave) if wave.ndim == 1 else None
    for lo in range(0, n, chunk_rows):
        rows = slice(lo, min(lo + chunk_rows, n))
        edges = shared_edges if shared_edges is not None else pixel_edges(wave[rows])
        _resample_rows(new_edges, edges, flux[rows], ivar[rows], None if bad is None else bad[rows],
                       fill, max_bad_weight, out.flux[rows], out.ivar[rows], out.covered[rows])
    if single:
        return Resampled(out.flux[0], out.ivar[0], out.covered[0])
    return out


def _increasing(wave, name: str) -> np.ndarray:
    """``wave`` as float64, checked finite and strictly increasing along its last axis."""
    w = np.asarray(wave, dtype=np.float64)
    if w.ndim not in (1, 2) or w.shape[-1] < 2:
        raise ValueError(f"{name} must be (M,) or (N, M) with M >= 2, got shape {w.shape}")
    if not (np.all(np.diff(w, axis=-1) > 0) and np.isfinite(w[..., [0, -1]]).all()):  # NaN fails too
        raise ValueError(f"{name} must be finite and strictly increasing along its last axis")
    return w


def _check_shapes(wave, flux, ivar, bad) -> None:
    if flux.ndim != 2 or ivar.shape != flux.shape or (bad is not None and bad.shape != flux.shape):
        raise ValueError(f"flux, ivar (and bad) must share one (N, M) shape: {flux.shape}, {ivar.shape}")
    if wave.shape[-1] != flux.shape[1] or (wave.ndim == 2 and wave.shape[0] != flux.shape[0]):
        raise ValueError(f"wave shape {wave.shape} does not match flux shape {flux.shape}")


def _resample_rows(new_edges, edges, flux, ivar, bad, fill, max_bad_weight,
                   out_flux, out_ivar, out_covered) -> None:
    """Rebin one chunk of rows into the ``out_*`` views.

    With old edges x_0 < … < x_M, widths w_k, and old bin k holding a new edge e (x_k <= e < x_{k+1}),
    dL = e - x_k. A sum over whole old bins before k, plus the part dL of bin k, is that sum evaluated
    at e; a new pixel's overlap sums are the differences between its two edges. Arrays are updated in
    place to keep the number of passes over memory small.
    """
    n, m = flux.shape
    t = _bin_terms(edges, flux, ivar, bad, bad_width=max_bad_weight > 0)
    k = _edge_bins(new_edges, edges, n)
    take = _gatherer(k, m + 1)
    d_edge = np.diff(new_edges)
    d_edge2 = d_edge * d_edge

    dl = take(edges) if edges.ndim == 2 else edges[k]
    np.subtract(new_edges, dl, out=dl)

    flux_at = take(t.flux)                     # ∫ good flux dλ up to each edge
    flux_at *= dl
    flux_at += take(t.cum_flux)
    sum_flux = np.diff(flux_at, axis=1)

    s_k = take(t.sigma2)                       # σ² of bin k (0 if bad)
    v_k = take(t.cum_var)
    right_end = s_k * (dl * dl)                # Σ o²σ² up to e, e the right end of a new pixel
    right_end += v_k
    left_end = take(t.width)                   # ... e the left end: bin k whole, minus (w - dL)²σ²
    left_end *= 2.0
    left_end -= dl
    left_end *= dl
    left_end *= s_k
    left_end += v_k
    var_sum = np.subtract(right_end[:, 1:], left_end[:, :-1], out=right_end[:, 1:])
    same_bin = k[..., 1:] == k[..., :-1]       # both edges in one old bin: overlap is the new width
    np.copyto(var_sum, s_k[:, :-1] * d_edge2, where=same_bin)

    covered = (new_edges[:-1] >= edges[..., :1]) & (new_edges[1:] <= edges[..., -1:])
    if max_bad_weight == 0.0:
        usable = covered & (_bad_bins_overlapping(take, t, dl) == 0)
        good_width = d_edge
    else:
        bad_at = take(t.bad).astype(np.float64)
        bad_at *= dl
        bad_at += take(t.cum_bad_width)
        good_width = d_edge - np.diff(bad_at, axis=1)
        usable = covered & (good_width > (1.0 - max_bad_weight) * d_edge)
    usable &= var_sum > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        np.divide(sum_flux, good_width, out=out_flux)
        np.divide(good_width * good_width, var_sum, out=out_ivar)
    unusable = ~usable
    out_flux[unusable] = fill
    out_ivar[unusable] = 0.0
    out_covered[...] = covered


def _bad_bins_overlapping(take, t, dl) -> np.ndarray:
    """Number of bad old bins with a positive overlap with each new pixel, (n, P); exact integers.

    The new pixel's left edge lies in bin a, its right edge e in bin b at dL from x_b: it overlaps bins
    a … b-1, and b too when dL > 0.
    """
    nb_k = take(t.cum_bad)
    upto = take(t.bad)
    upto &= dl > 0
    right = nb_k + upto
    return right[:, 1:] - nb_k[:, :-1]


class _BinTerms(NamedTuple):
    """Per old bin k, each (n, M + 1) with an unused last column; cumulative ones sum bins 0 … k-1."""

    width: np.ndarray          # w_k, Å
    flux: np.ndarray           # flux if good else 0
    sigma2: np.ndarray         # 1/ivar if good else 0
    bad: np.ndarray            # bool
    cum_flux: np.ndarray       # Σ w f over good bins
    cum_var: np.ndarray        # Σ w² σ² over good bins
    cum_bad: np.ndarray        # number of bad bins (int32: exact, and fast to sum)
    cum_bad_width: np.ndarray | None  # Σ w over bad bins, Å (only needed when max_bad_weight > 0)


def _bin_terms(edges, flux, ivar, bad, bad_width: bool) -> _BinTerms:
    """The per-bin quantities and running sums of one chunk (float64 inside)."""
    n, m = flux.shape
    width = np.zeros((n, m + 1))
    width[:, :m] = np.diff(edges, axis=-1)
    f = flux.astype(np.float64, copy=False)
    iv = ivar.astype(np.float64, copy=False)
    is_bad = np.ones((n, m + 1), dtype=bool)
    with np.errstate(invalid="ignore"):
        np.logical_not((iv > 0) & np.isfinite(iv) & np.isfinite(f), out=is_bad[:, :m])
    if bad is not None:
        is_bad[:, :m] |= bad
    good = ~is_bad[:, :m]
    f_good = np.zeros((n, m + 1))
    np.copyto(f_good[:, :m], f, where=good)
    sigma2 = np.zeros((n, m + 1))
    np.divide(1.0, iv, out=sigma2[:, :m], where=good)
    w = width[:, :m]
    cum_flux = _cumulative(f_good[:, :m] * w)
    cum_var = _cumulative(sigma2[:, :m] * (w * w))
    cum_bad = _cumulative(is_bad[:, :m], dtype=np.int32)
    cum_bad_width = _cumulative(np.where(good, 0.0, w)) if bad_width else None
    return _BinTerms(width, f_good, sigma2, is_bad, cum_flux, cum_var, cum_bad, cum_bad_width)


def _cumulative(per_bin: np.ndarray, dtype=np.float64) -> np.ndarray:
    """(n, M) → (n, M + 1): column k holds the sum over bins 0 … k-1."""
    out = np.zeros((per_bin.shape[0], per_bin.shape[1] + 1), dtype=dtype)
    np.cumsum(per_bin, axis=1, dtype=dtype, out=out[:, 1:])
    return out


def _edge_bins(new_edges, edges, n) -> np.ndarray:
    """Index k of the old bin holding each new edge (x_k <= e < x_{k+1}), clipped to [0, M - 1].

    (P + 1,) when all rows share one input grid, else (n, P + 1). np.interp of the bin index is a
    compiled search that exploits sorted queries; its integer part is the bin.
    """
    m = edges.shape[-1] - 1
    index = np.arange(m + 1, dtype=np.float64)
    if edges.ndim == 1:
        pos = np.interp(new_edges, edges, index)
    else:
        pos = np.empty((n, new_edges.size))
        for r in range(n):
            pos[r] = np.interp(new_edges, edges[r], index)
    return np.minimum(pos.astype(np.intp), m - 1)


def _gatherer(k: np.ndarray, ncol: int):
    """A function taking per-bin arrays (n, ncol) to their values at the edges' bins (n, P + 1)."""
    if k.ndim == 1:
        return lambda a: np.take(a, k, axis=1)
    flat = (k + ncol * np.arange(k.shape[0])[:, None]).ravel()
    return lambda a: np.take(np.ascontiguousarray(a).reshape(-1), flat).reshape(k.shape)
