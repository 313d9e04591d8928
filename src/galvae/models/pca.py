"""PCA baselines with the VAE's encode/decode API: plain PCA (SVD) and ivar-weighted EM-PCA.

Weighted EM-PCA follows Bailey (2012, PASP 124, 1015): alternate two weighted least-squares solves,
(1) each spectrum's coefficients given the eigenvectors, with its own ivar as weights, and
(2) each pixel's eigenvector entries given all coefficients, with that pixel's ivar across spectra,
then re-orthonormalise. Both solves are batched: all spectra (or all pixels) at once with
``np.linalg.solve`` on stacks of k × k systems. Bad pixels (ivar 0) carry no weight anywhere.

scikit-learn manners: configuration in the constructor, ``fit``, ``transform``/``encode``,
``inverse_transform``/``decode``; fitted attributes end in an underscore.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from .._jsonio import write_json as _write_json

log = logging.getLogger(__name__)

ARRAYS = "pca.npz"


def _weighted_coefficients(resid: np.ndarray, ivar: np.ndarray, components: np.ndarray, ridge: float = 1e-6):
    """Weighted least-squares coefficients (N, k) and their covariances (N, k, k).

    Solves (Vᵀ W_i V) c_i = Vᵀ W_i r_i for every spectrum i at once; a tiny ridge, relative to the
    system's trace, keeps spectra with few good pixels solvable.
    """
    v = components  # (k, P)
    k = v.shape[0]
    a = (ivar @ (v[:, None, :] * v[None, :, :]).reshape(k * k, -1).T).reshape(-1, k, k)
    b = (ivar * resid) @ v.T
    scale = np.trace(a, axis1=1, axis2=2)[:, None, None] / k
    a = a + ridge * np.maximum(scale, 1e-30) * np.eye(k)
    coef = np.linalg.solve(a, b[..., None])[..., 0]
    return coef, a


def top_singular_vectors(a: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The k largest singular values and right singular vectors (k, P) of ``a``.

    Exact SVD for small matrices; for big ones a randomized range finder with power iterations
    (Halko, Martinsson & Tropp 2011), accurate to float precision for the leading components.
    """
    if min(a.shape) <= 2000 or k >= min(a.shape) // 4:
        _, s, vt = np.linalg.svd(a, full_matrices=False)
        return s[:k], vt[:k]
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(a @ rng.standard_normal((a.shape[1], k + 20)))[0]
    for _ in range(4):  # power iterations sharpen the spectrum's decay
        q = np.linalg.qr(a @ np.linalg.qr(a.T @ q)[0])[0]
    _, s, vt = np.linalg.svd(q.T @ a, full_matrices=False)
    return s[:k], vt[:k]


class PCA:
    """Principal components of spectra: plain (SVD of the filled flux) or ivar-weighted EM-PCA.

    Parameters
    ----------
    n_components : number of eigenspectra k (the latent size d).
    weighted : fit and encode with per-pixel ivar (EM-PCA); plain PCA ignores ivar.
    n_iter : EM iterations for the weighted fit.
    tol : stop the EM early when the weighted χ² changes by less than this fraction.
    """

    def __init__(self, n_components: int = 4, weighted: bool = False, n_iter: int = 20, tol: float = 1e-6):
        if int(n_components) < 1:
            raise ValueError(f"n_components must be ≥ 1, got {n_components}")
        self.n_components = int(n_components)
        self.weighted = bool(weighted)
        self.n_iter = int(n_iter)
        self.tol = float(tol)
        self.config = {"kind": "pca", "n_components": self.n_components, "weighted": self.weighted,
                       "n_iter": self.n_iter, "tol": self.tol, "conditions": []}

    # ---- fitting ------------------------------------------------------------------------------------
    def fit(self, flux: np.ndarray, ivar: np.ndarray | None = None) -> PCA:
        """Fit the mean spectrum and k eigenspectra on (N, P) flux (and ivar for the weighted fit)."""
        x = np.asarray(flux, dtype=np.float64)
        if self.weighted and ivar is None:
            raise ValueError("weighted PCA needs ivar")
        if self.weighted:
            w = np.where(np.isfinite(ivar) & (ivar > 0), ivar, 0.0).astype(np.float64)
            wsum = w.sum(0)
            self.mean_ = np.where(wsum > 0, (w * x).sum(0) / np.where(wsum > 0, wsum, 1), x.mean(0))
        else:
            self.mean_ = x.mean(0)
        r = x - self.mean_
        s, vt = top_singular_vectors(r, self.n_components)
        self.components_ = vt
        self.explained_variance_ = s[: self.n_components] ** 2 / max(len(x) - 1, 1)
        if self.weighted:
            self._em_iterations(r, w)
        self.config["n_pix"] = int(x.shape[1])
        return self

    def _em_iterations(self, r: np.ndarray, w: np.ndarray) -> None:
        """Alternate weighted coefficient and eigenvector solves (Bailey 2012), starting from plain PCA."""
        v = self.components_
        k = v.shape[0]
        last = np.inf
        for it in range(self.n_iter):
            c, _ = _weighted_coefficients(r, w, v)                       # step 1: per spectrum, (N, k)
            a = (w.T @ (c[:, :, None] * c[:, None, :]).reshape(len(c), k * k)).reshape(-1, k, k)
            b = (w * r).T @ c                                            # step 2: per pixel, k × k systems
            a += 1e-9 * (np.trace(a, axis1=1, axis2=2)[:, None, None] / k + 1e-30) * np.eye(k)
            v_new = np.linalg.solve(a, b[..., None])[..., 0].T           # (k, P)
            chi2 = sum(float((w[s:s + 4096] * (r[s:s + 4096] - c[s:s + 4096] @ v_new) ** 2).sum())
                       for s in range(0, len(r), 4096))  # in slices: no N × P temporaries
            v = self._orthonormal_basis(c, v_new)
            log.debug("EM-PCA iteration %d: weighted chi2 %.8g", it, chi2)
            if abs(last - chi2) <= self.tol * chi2:
                break
            last = chi2
        self.components_ = v
        c, _ = _weighted_coefficients(r, w, v)
        self.explained_variance_ = c.var(0, ddof=1) if len(c) > 1 else np.zeros(k)

    @staticmethod
    def _orthonormal_basis(c: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Orthonormal rows spanning the model c @ v, ordered by the variance they carry.

        Works on the small factors (QR of vᵀ, SVD of an N × k matrix), never on the N × P model.
        """
        q, r = np.linalg.qr(v.T)                      # vᵀ = Q R, so c v = (c Rᵀ) Qᵀ
        _, _, wt = np.linalg.svd(c @ r.T, full_matrices=False)
        return (q @ wt.T).T

    # ---- the encode / decode API ----------------------------------------------------------------
    def encode(self, flux: np.ndarray, ivar: np.ndarray | None = None, conditions=None):
        """Coefficients (N, k) and their 1σ uncertainties (N, k); σ is NaN without ivar.

        Weighted PCA solves weighted least squares on good pixels; plain PCA projects the filled flux
        (σ then comes from the same normal equations, for information).
        """
        x, w = self._flux_ivar(flux, ivar)
        r = x - self.mean_
        if w is None:
            coef = r @ self.components_.T
            return coef, np.full_like(coef, np.nan)
        wc, a = _weighted_coefficients(r, w, self.components_)
        coef = wc if self.weighted else r @ self.components_.T
        with np.errstate(invalid="ignore"):
            sigma = np.sqrt(np.diagonal(np.linalg.inv(a), axis1=1, axis2=2))
        return coef, sigma

    def _flux_ivar(self, flux, ivar):
        """float64 flux and ivar (None stays None); a pixel with non-finite flux or ivar gets ivar 0 and
        flux 0, as in training, so one NaN at a masked pixel cannot spoil a spectrum's coefficients."""
        x = np.atleast_2d(np.asarray(flux, dtype=np.float64))
        if x.shape[-1] != self.mean_.size:
            raise ValueError(f"spectra have {x.shape[-1]} pixels; this PCA expects {self.mean_.size}")
        if ivar is None:
            return x, None
        w = np.atleast_2d(np.asarray(ivar, dtype=np.float64))
        w = np.where(np.isfinite(w) & (w > 0) & np.isfinite(x), w, 0.0)
        return np.where(np.isfinite(x), x, 0.0), w

    def transform(self, flux: np.ndarray, ivar: np.ndarray | None = None) -> np.ndarray:
        """Coefficients only (scikit-learn's name)."""
        return self.encode(flux, ivar)[0]

    def decode(self, z: np.ndarray, conditions=None) -> np.ndarray:
        """Spectra (N, P) from coefficients (N, k)."""
        return self.mean_ + np.atleast_2d(z) @ self.components_

    inverse_transform = decode

    def reconstruct(self, flux: np.ndarray, ivar: np.ndarray | None = None, conditions=None) -> np.ndarray:
        """decode(encode(flux)): the model spectrum at the best coefficients."""
        return self.decode(self.encode(flux, ivar)[0])

    def score(self, flux, ivar, conditions=None, **_) -> dict:
        """Per-spectrum ln L, χ²/pixel at the best coefficients, with mu and sigma; KL and ELBO are NaN.

        The same keys as :meth:`galvae.models.TrainedVAE.score`, so both evaluate alike.
        """
        from .. import likelihood as lk

        x, w = self._flux_ivar(flux, ivar)
        mu, sigma = self.encode(x, w)
        model = self.decode(mu)
        nan = np.full(len(x), np.nan)
        return {"ln_likelihood": lk.ln_likelihood(x, model, w), "chi2_per_pixel": lk.chi2_per_pixel(x, model, w),
                "kl": nan, "elbo": nan, "loss": nan, "n_good": lk.n_good(w).astype(float), "mu": mu, "sigma": sigma}

    @property
    def latent_dim(self) -> int:
        return self.n_components

    @property
    def condition_names(self) -> tuple:
        return ()

    # ---- a model directory ------------------------------------------------------------------------
    def save(self, out_dir, extra: dict | None = None) -> Path:
        """Write config.json and pca.npz (plain arrays, loaded without pickle) atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / ARRAYS, lambda tmp: np.savez(tmp, mean=self.mean_, components=self.components_,
                                                        explained_variance=self.explained_variance_))
        cfg = dict(self.config, **(extra or {}))
        _write_json(out / "config.json", cfg)
        return out

    @classmethod
    def load(cls, model_dir) -> PCA:
        d = Path(model_dir)
        cfg = json.loads((d / "config.json").read_text())
        pca = cls(cfg["n_components"], cfg["weighted"], cfg.get("n_iter", 20), cfg.get("tol", 1e-6))
        pca.config = cfg
        with np.load(d / ARRAYS, allow_pickle=False) as z:
            pca.mean_, pca.components_, pca.explained_variance_ = z["mean"], z["components"], z["explained_variance"]
        return pca


