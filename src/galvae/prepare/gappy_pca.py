"""Gappy (iterative) PCA fill of bad pixels: Connolly & Szalay (1999), Yip et al. (2004).

Start with every bad pixel set to the weighted mean spectrum of the good pixels; then, ``n_iter``
times: fit the mean spectrum and the ``n_components`` leading eigenspectra of the current filled data,
solve each spectrum's weighted least squares for its coefficients on its good pixels only, and
replace the bad pixels (weight 0) with the reconstruction mean + Σ a_k e_k. Good pixels never change.

The definitions are those of ``astroML.dimensionality.iterative_pca`` (eigenvectors of the centred,
filled data; coefficients a = (Eᵀ W E)⁻¹ Eᵀ W (x − mean) with W the pixel weights, 0/1 there), so the
two can be compared. ``row_norm="l2"`` reproduces astroML's ``norm="L2"``: the initial mean fill is
repeated ``n_iter`` times, each time after scaling every filled spectrum to unit L2 norm, and every
iteration rescales the rows again before fitting the basis. (astroML's ``norm=None`` is not plain PCA:
its loop still L2-normalises every row; galvae's ``row_norm=None`` does not normalise at all, for
spectra normalised beforehand.)

Differences from astroML, all for speed or robustness: the eigenbasis comes from a randomised SVD
(Halko et al. 2011) with K + 10 test directions, warm-started from the previous iteration's subspace
(``svd="exact"``: a full SVD, astroML's answer to ~1e-11), optionally on a random subset of rows; the
centred, rescaled data are never formed; all least-squares problems of a chunk of rows are solved
together from batched normal equations; a relative ridge of ``ridge`` × trace/K keeps spectra with
fewer good pixels than components solvable (astroML's solve would fail on them); pixels no spectrum
observes cannot be learned and come back NaN (astroML raises).
"""

from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["fill_with_basis", "fit_fill_basis", "gappy_pca_fill"]

ROW_NORMS = (None, "l2")
COLD_EXTRA_POWER_ITERS = 6  # the first basis has no warm start; its error would persist through the fill
OVERSAMPLE = 10  # extra test directions of the randomised SVD


def gappy_pca_fill(flux, weight, n_components: int = 10, n_iter: int = 10, seed: int = 0, *,
                   row_norm: str | None = None, svd: str = "randomized", basis_rows: int | None = 20000,
                   power_iters: int = 2, chunk_rows: int = 512, ridge: float = 1e-10,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fill the bad pixels of N spectra by iterative PCA; return ``(filled_flux, basis, mean)``.

    Parameters
    ----------
    flux : (N, P) spectra on one wavelength grid (any flux unit); values at bad pixels are ignored.
    weight : (N, P) pixel weights (e.g. ivar, or a bool good-pixel mask); <= 0 or non-finite is bad.
    n_components : number of eigenspectra K.
    n_iter : number of (basis, fit, fill) iterations.
    seed : seeds the random subset of rows and the randomised SVD.
    row_norm : None (spectra used as given) or "l2" (astroML's ``norm="L2"``, see the module docstring).
    svd : "randomized" (default) or "exact" (full SVD of the rows used for the basis).
    basis_rows : fit mean and basis on at most this many rows (a fixed random subset); None: all rows.
    power_iters : power iterations of the randomised SVD (more: closer to the exact basis).
    chunk_rows : rows whose least-squares problems are solved together (memory ~ 6 × chunk × P × 8 B).
    ridge : relative ridge added to each spectrum's normal matrix, × trace/K.

    Returns
    -------
    filled_flux : (N, P), dtype of ``flux`` (float64 if not floating): good pixels bit-identical to the
        input, bad pixels filled; NaN in columns with no good pixel in any spectrum.
    basis : (K, P) orthonormal eigenspectra (rows) of the last iteration, NaN in such columns.
    mean : (P,) mean spectrum of the last iteration, NaN in such columns.
    With ``row_norm="l2"`` basis and mean describe unit-L2-norm spectra.
    """
    out, good, weight = _start(flux, weight)
    n, p = out.shape
    _check_options(n_components, min(n, p), row_norm, svd, n_iter)
    rng = np.random.default_rng(seed)
    dead = ~good.any(axis=0)
    if dead.any():
        log.info("%d of %d pixels have no good value in any spectrum: they stay NaN", dead.sum(), p)
    rows = _basis_sample(n, basis_rows, rng)
    if rows is not None and rows.size < n_components:
        raise ValueError(f"basis_rows={basis_rows} is fewer than n_components={n_components}")
    scale = np.ones(n)

    t0 = time.perf_counter()
    _initial_fill(out, good, weight, scale, row_norm, n_iter, chunk_rows)
    basis = subspace = None
    for it in _iterations(n_iter, progress):
        if row_norm == "l2":
            scale *= _row_norms(out, scale, chunk_rows)
        sample = _CentredRows(out, scale, rows)
        mean = sample.mean
        basis, subspace = _leading_components(sample, n_components, svd, rng, subspace, power_iters)
        del sample
        _fill_pass(out, good, weight, scale, basis, mean, chunk_rows, ridge)
        log.debug("gappy PCA iteration %d/%d done at %.2f s", it + 1, n_iter, time.perf_counter() - t0)
    log.info("gappy PCA: %d spectra × %d pixels, K=%d, %d iterations in %.2f s (%.1f%% pixels filled)",
             n, p, n_components, n_iter, time.perf_counter() - t0, 100 * (1 - good.mean()))
    return _finish(out, good, dead), _with_nan(basis, dead), _with_nan(mean, dead)


def fit_fill_basis(flux, weight, n_components: int = 10, n_iter: int = 10, seed: int = 0,
                   **options) -> tuple[np.ndarray, np.ndarray]:
    """Fit the gappy-PCA ``(basis (K, P), mean (P,))`` on a sample of spectra, to fill others later.

    Same arguments as :func:`gappy_pca_fill`; apply the result with :func:`fill_with_basis`.
    """
    _, basis, mean = gappy_pca_fill(flux, weight, n_components, n_iter, seed, **options)
    return basis, mean


def fill_with_basis(flux, weight, basis, mean, *, row_norm: str | None = None, n_iter: int = 5,
                    chunk_rows: int = 512, ridge: float = 1e-10) -> np.ndarray:
    """Fill bad pixels with a fixed eigenbasis: least squares on each spectrum's good pixels.

    ``basis`` (K, P) and ``mean`` (P,) from :func:`fit_fill_basis`; columns where they are NaN are
    ignored in the fit and stay NaN where bad. With ``row_norm=None`` one solve is exact; with "l2"
    (a basis fitted with ``row_norm="l2"``) fit and rescaling alternate ``n_iter`` times.
    Returns the filled flux (N, P), dtype of ``flux``; good pixels unchanged.
    """
    if row_norm not in ROW_NORMS:
        raise ValueError(f"row_norm must be one of {ROW_NORMS}, got {row_norm!r}")
    out, good, weight = _start(flux, weight)
    basis = np.asarray(basis, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    if basis.ndim != 2 or basis.shape[1] != out.shape[1] or mean.shape != (out.shape[1],):
        raise ValueError(f"basis {basis.shape} / mean {mean.shape} do not match flux {out.shape}")
    dead = ~(np.isfinite(mean) & np.isfinite(basis).all(axis=0))
    basis = np.where(dead, 0.0, basis)  # a zero column adds nothing to any fit
    mean = np.where(dead, 0.0, mean)
    scale = np.ones(out.shape[0])
    for _ in range(n_iter if row_norm == "l2" else 1):
        if row_norm == "l2":
            scale *= _row_norms(out, scale, chunk_rows)
        _fill_pass(out, good, weight, scale, basis, mean, chunk_rows, ridge)
    return _finish(out, good, dead)


# ------------------------------------------------------------------------------------ pieces

def _start(flux, weight):
    """(working copy of flux with bad pixels 0, good mask, weights) after checking shapes."""
    flux = np.asarray(flux)
    weight = np.asarray(weight)
    if flux.ndim != 2 or weight.shape != flux.shape:
        raise ValueError(f"flux and weight must share one (N, P) shape, got {flux.shape}, {weight.shape}")
    dtype = flux.dtype if np.issubdtype(flux.dtype, np.floating) else np.float64
    out = np.array(flux, dtype=dtype, copy=True)
    if weight.dtype == bool:
        good = weight & np.isfinite(out)
    else:
        finite = np.isfinite(weight)
        with np.errstate(invalid="ignore"):
            good = (weight > 0) & finite & np.isfinite(out)
        if not finite.all():
            weight = np.where(finite, weight, 0.0)  # so that weight × good is finite
    np.putmask(out, ~good, 0.0)
    return out, good, weight


def _check_options(n_components, max_k, row_norm, svd, n_iter):
    if not 1 <= n_components <= max_k:
        raise ValueError(f"n_components must be in 1..{max_k}, got {n_components}")
    if row_norm not in ROW_NORMS:
        raise ValueError(f"row_norm must be one of {ROW_NORMS}, got {row_norm!r}")
    if svd not in ("randomized", "exact"):
        raise ValueError(f"svd must be 'randomized' or 'exact', got {svd!r}")
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}")


def _basis_sample(n, basis_rows, rng):
    """Sorted random row indices for the basis, or None for all rows."""
    if basis_rows is None or n <= basis_rows:
        return None
    return np.sort(rng.choice(n, size=basis_rows, replace=False))


def _iterations(n_iter, progress):
    if not progress:
        return range(n_iter)
    from .._progress import tqdm

    return tqdm(range(n_iter), desc="gappy PCA", unit="iter")


def _chunks(n, chunk_rows):
    for lo in range(0, n, chunk_rows):
        yield slice(lo, min(lo + chunk_rows, n))


def _chunk_weights(weight, good, rows) -> np.ndarray:
    """float64 weights of a chunk, 0 on bad pixels (weights are finite, see _start)."""
    if weight.dtype == bool:
        return good[rows].astype(np.float64)  # good implies weight True
    return np.multiply(weight[rows], good[rows], dtype=np.float64)


def _put_bad(out, rows, ok, values) -> None:
    """out[rows] ← values where not ok (flat indices: several times faster than a masked copy)."""
    idx = np.flatnonzero(~ok)
    out[rows].reshape(-1)[idx] = values.reshape(-1)[idx]


def _initial_fill(out, good, weight, scale, row_norm, n_rounds, chunk_rows):
    """Bad pixels ← weighted mean of the good values (after unit-L2 rescaling, repeated, for "l2").

    The mean is Σ_i w_ij x_ij / s_i / Σ_i w_ij, with the weights as given (0/1 in astroML).
    """
    n = out.shape[0]
    total_weight = np.zeros(out.shape[1])
    for rows in _chunks(n, chunk_rows):
        total_weight += _chunk_weights(weight, good, rows).sum(axis=0)
    for _ in range(n_rounds if row_norm == "l2" else 1):
        if row_norm == "l2":
            scale *= _row_norms(out, scale, chunk_rows)
        weighted_sum = np.zeros(out.shape[1])
        for rows in _chunks(n, chunk_rows):
            weighted_sum += (1.0 / scale[rows]) @ (_chunk_weights(weight, good, rows) * out[rows])
        mean = np.divide(weighted_sum, total_weight, out=np.zeros_like(weighted_sum),
                         where=total_weight > 0)
        for rows in _chunks(n, chunk_rows):
            _put_bad(out, rows, good[rows], np.outer(scale[rows], mean))


def _row_norms(out, scale, chunk_rows) -> np.ndarray:
    """L2 norm of every rescaled row, out / scale (1 for an all-zero row)."""
    norms = np.empty(out.shape[0])
    for rows in _chunks(out.shape[0], chunk_rows):
        x = out[rows]
        norms[rows] = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)) / scale[rows]
    norms[norms == 0] = 1.0
    return norms


class _CentredRows:
    """The rows used for the basis, rescaled and centred, C = D X − 1 μᵀ (D = diag(1/scale)), as a
    linear operator: products with C are computed from X without forming C (no copy of all rows)."""

    def __init__(self, out, scale, rows):
        x = out if rows is None else out[rows]
        self.x = x.astype(np.float64, copy=False)  # a float32 X would be converted at every product
        self.inv_scale = 1.0 / (scale if rows is None else scale[rows])
        self.mean = (self.inv_scale @ self.x) / self.x.shape[0]
        self.shape = self.x.shape

    def dot(self, v):
        """C @ v for v (P, l)."""
        return self.inv_scale[:, None] * (self.x @ v) - self.mean @ v

    def tdot(self, q):
        """Cᵀ @ q for q (R, l)."""
        return self.x.T @ (self.inv_scale[:, None] * q) - np.outer(self.mean, q.sum(axis=0))

    def dense(self):
        return self.inv_scale[:, None] * self.x - self.mean


def _leading_components(c, k, svd, rng, start, power_iters):
    """(k, P) orthonormal leading right singular vectors of the centred rows ``c`` (_CentredRows),
    and the wider subspace (l, P) that warm-starts the next call (None for the exact SVD)."""
    n_test = k + OVERSAMPLE
    if svd == "exact" or min(c.shape) <= n_test:
        return np.linalg.svd(c.dense(), full_matrices=False)[2][:k], None
    vt = _randomized_components(c, n_test, rng, start, power_iters)
    return vt[:k], vt


def _randomized_components(c, n_test, rng, start, power_iters) -> np.ndarray:
    """(n_test, P) approximate leading right singular vectors: randomised range finder with power
    iterations (Halko, Martinsson & Tropp 2011, alg. 4.4).

    Warm start: the previous call's whole subspace is the test matrix, so over the outer iterations
    this is subspace iteration on a slowly changing matrix and converges far past ``power_iters``.
    """
    omega = rng.standard_normal((c.shape[1], n_test)) if start is None else start.T
    q = np.linalg.qr(c.dot(omega))[0]
    for _ in range(power_iters if start is not None else power_iters + COLD_EXTRA_POWER_ITERS):
        q = np.linalg.qr(c.tdot(q))[0]
        q = np.linalg.qr(c.dot(q))[0]
    return np.linalg.svd(c.tdot(q).T, full_matrices=False)[2]


def _fill_pass(out, good, weight, scale, basis, mean, chunk_rows, ridge) -> None:
    """One fit-and-fill pass over all rows: bad pixels ← (mean + coefficients · basis) × scale.

    Each row's centred, rescaled values x/s − μ are never formed: the right-hand side Eᵀ W (x/s − μ)
    is (1/s)·(W x) Eᵀ − W (μ ⊙ E)ᵀ, and the reconstruction s·(a E + μ) is one product with [E; μ].
    """
    k = basis.shape[0]
    pair_products, pairs = _pair_products(basis)
    fit_columns = np.vstack([pair_products, basis * mean]).T    # (P, K(K+1)/2 + K)
    basis_and_mean = np.vstack([basis, mean])                   # (K + 1, P)
    for rows in _chunks(out.shape[0], chunk_rows):
        ok = good[rows]
        w = _chunk_weights(weight, good, rows)
        s = scale[rows, None]
        sums = w @ fit_columns
        rhs = ((w * out[rows]) @ basis.T) / s - sums[:, -k:]
        coeffs = _solve_coefficients(sums[:, :-k], rhs, k, pairs, ridge)
        coeffs_and_one = np.hstack([coeffs, np.ones((coeffs.shape[0], 1))]) * s
        _put_bad(out, rows, ok, coeffs_and_one @ basis_and_mean)


def _pair_products(basis) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Products e_a·e_b per pixel for a ≤ b, (K(K+1)/2, P), and their (a, b) indices."""
    iu = np.triu_indices(basis.shape[0])
    return basis[iu[0]] * basis[iu[1]], iu


def _solve_coefficients(pair_sums, rhs, k, pairs, ridge) -> np.ndarray:
    """Solve every row's normal equations A_i a_i = b_i at once; (n, K) coefficients.

    ``pair_sums`` (n, K(K+1)/2) holds Σ_p w_ip e_ap e_bp for a ≤ b, i.e. A_i = Eᵀ W_i E without any
    (n, P, K) array. Rows without any weight get coefficients 0 (the mean spectrum).
    """
    ia, ib = pairs
    normal = np.empty((rhs.shape[0], k, k))
    normal[:, ia, ib] = pair_sums
    normal[:, ib, ia] = pair_sums
    trace = np.trace(normal, axis1=1, axis2=2)
    empty = trace <= 0
    diag = np.arange(k)
    normal[:, diag, diag] += (ridge / k) * trace[:, None]
    normal[empty] = np.eye(k)
    rhs = np.where(empty[:, None], 0.0, rhs)
    return np.linalg.solve(normal, rhs[..., None])[..., 0]


def _with_nan(a, dead) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a[..., dead] = np.nan
    return a


def _finish(out, good, dead) -> np.ndarray:
    """Bad pixels in columns the basis cannot describe become NaN."""
    if dead.any():
        cols = out[:, dead]
        cols[~good[:, dead]] = np.nan
        out[:, dead] = cols
    return out
