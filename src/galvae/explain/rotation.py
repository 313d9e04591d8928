"""The latent rotation: PCA on the training split's posterior means, D1…Dd by explained variance.

A VAE's latent axes are arbitrary; rotating them onto their principal axes (as the paper does, §4.1)
orders them by how much of the population's spread each carries. The rotation is orthogonal, so no
information is lost: ``inverse_transform(transform(mu)) == mu``. Stored as plain numbers (JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class LatentRotation:
    """PCA of posterior means with scikit-learn's manners: ``fit``, ``transform``, ``inverse_transform``.

    After ``fit``: ``mean_`` (d,), ``components_`` (d, d) with one unit direction per row (D1 first),
    ``explained_variance_`` (d,) in latent units², ``explained_variance_ratio_`` (d,) summing to 1.
    Signs are fixed (the largest-|loading| entry of each direction is positive) so refits agree.
    """

    mean_: np.ndarray | None = None
    components_: np.ndarray | None = None
    explained_variance_: np.ndarray | None = None
    n_samples_: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return 0 if self.components_ is None else int(self.components_.shape[0])

    @property
    def explained_variance_ratio_(self) -> np.ndarray:
        total = float(np.sum(self.explained_variance_))
        return self.explained_variance_ / total if total > 0 else np.full_like(self.explained_variance_, np.nan)

    @property
    def names(self) -> list[str]:
        """Column names of the rotated latents: D1…Dd."""
        return [f"D{j + 1}" for j in range(self.n_components)]

    def fit(self, mu) -> LatentRotation:
        """Fit on posterior means (N, d); rows with non-finite values are ignored."""
        mu = np.asarray(mu, dtype=np.float64)
        mu = mu[np.all(np.isfinite(mu), axis=1)]
        if mu.shape[0] < 2:
            raise ValueError(f"need at least 2 finite latent vectors to fit the rotation, got {mu.shape[0]}")
        self.mean_ = mu.mean(axis=0)
        cov = np.atleast_2d(np.cov(mu - self.mean_, rowvar=False))
        values, vectors = np.linalg.eigh(cov)  # ascending
        order = np.argsort(values)[::-1]
        values, vectors = np.clip(values[order], 0.0, None), vectors[:, order].T
        biggest = np.argmax(np.abs(vectors), axis=1)
        vectors *= np.sign(vectors[np.arange(len(vectors)), biggest])[:, None]
        self.components_, self.explained_variance_ = vectors, values
        self.n_samples_ = int(mu.shape[0])
        return self

    def transform(self, mu) -> np.ndarray:
        """Rotated latents D (N, d) from posterior means (N, d)."""
        self._check()
        return (np.asarray(mu, dtype=np.float64) - self.mean_) @ self.components_.T

    def inverse_transform(self, d) -> np.ndarray:
        """Posterior-mean-space latents (N, d) from rotated ones; D = 0 maps to the training mean."""
        self._check()
        return np.asarray(d, dtype=np.float64) @ self.components_ + self.mean_

    def _check(self) -> None:
        if self.components_ is None:
            raise RuntimeError("LatentRotation is not fitted: call fit(mu) first")

    # ---- plain numbers in and out ----------------------------------------------------------------------

    def to_dict(self) -> dict:
        self._check()
        return {"kind": "latent_rotation", "mean": self.mean_.tolist(), "components": self.components_.tolist(),
                "explained_variance": self.explained_variance_.tolist(),
                "explained_variance_ratio": self.explained_variance_ratio_.tolist(),
                "n_samples": self.n_samples_, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> LatentRotation:
        return cls(mean_=np.asarray(d["mean"], dtype=np.float64),
                   components_=np.atleast_2d(np.asarray(d["components"], dtype=np.float64)),
                   explained_variance_=np.asarray(d["explained_variance"], dtype=np.float64),
                   n_samples_=int(d.get("n_samples", 0)), meta=dict(d.get("meta", {})))

    def save(self, path) -> Path:
        """Write JSON atomically; returns the path."""
        from .._atomic import write_text

        return write_text(Path(path), json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path) -> LatentRotation:
        return cls.from_dict(json.loads(Path(path).read_text()))
