"""A split held as statistics in a compact model's eigenbasis: training without reading the pixels again.

A compact model with K eigenspectra and a fixed offset (``ModelConfig.train_offset = False``) decodes
x̂ = o + u B, with the offset o (P,) and the basis B (K, P) frozen and u (K,) the decoder MLP's output;
its encoder's frozen first layer reads only the K projections p of x. The χ² of a spectrum x with
inverse variances w (W = diag w, r = x − o) is then a quadratic in u:

    χ²(u) = s − 2 u·g + uᵀ A u,    s = rᵀ W r,   g = B W r,   A = B W Bᵀ,

so p, g, A (its upper triangle), s, the ln L constant and the number of good pixels — 3K + K(K + 1)/2 + 3
numbers, 595 at K = 32 against 2P = 8000 for flux and ivar — hold everything training and validation
need. They are computed in one pass over a split's pixels (streamed when the split is large) and held
in memory: 0.6 GB for 256,000 spectra. An epoch then costs O(K²) per spectrum instead of O(P K), and
reads nothing from the store.

The statistics depend on the model's frozen parts only (the data's mean and std, the basis), which
every cell of a selection grid shares: :func:`cached_statistics` keeps the latest ones per process, so a
worker computes them once per grid. Batches come in the same order as a :class:`galvae.splits.Split`'s
(same blocks, same draws), so a model trained on the statistics equals, up to float rounding, the same
fixed-offset model trained on the pixels (``tests/test_basis_split.py``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from . import likelihood as lk
from .models.vae import VAE, kl_term
from .splits import Split

STAT_BATCH = 1024  # spectra per step of the statistics pass


class Statistics(NamedTuple):
    """Per-spectrum statistics of a split's rows, in the split's order."""

    p: torch.Tensor        # (n, K) the encoder's projections
    g: torch.Tensor        # (n, K) B W r
    a: torch.Tensor        # (n, K(K+1)/2) upper triangle of B W Bᵀ, row by row
    s: torch.Tensor        # (n,) rᵀ W r
    ln_norm: torch.Tensor  # (n,) the data-only constant of ln L
    n_good: torch.Tensor   # (n,) good pixels


class StatBatch(NamedTuple):
    positions: torch.Tensor
    stats: Statistics
    cond: torch.Tensor | None


def uses_statistics(cfg, loss: str) -> bool:
    """Whether a model of this config, trained on this loss, can train on basis statistics."""
    return cfg.arch == "compact" and cfg.n_basis > 0 and not cfg.train_offset and loss == "gaussian"


@torch.no_grad()
def compute_statistics(split: Split, model: VAE) -> Statistics:
    """One pass over ``split``'s pixels (resident or streamed) → its :class:`Statistics` on its device."""
    _, basis, offset = model.output_basis()
    k = basis.shape[0]
    iu = _triangle(k, basis.device)
    n = len(split)
    dev = split.device
    out = Statistics(*(torch.empty(shape, dtype=torch.float32, device=dev)
                       for shape in ((n, k), (n, k), (n, len(iu[0])), (n,), (n,), (n,))))
    products = basis[iu[0]] * basis[iu[1]]  # (K(K+1)/2, P): A's upper triangle is then w @ productsᵀ, one GEMM
    for b in split.eval_batches(STAT_BATCH):
        x, w = b.flux, b.ivar
        r = x - offset
        pos = b.positions
        out.p[pos] = model.encoder.project((x - model.shift) / model.scale)
        out.g[pos] = (w * r) @ basis.T
        out.a[pos] = w @ products.T
        out.s[pos] = (w.double() * r.double() ** 2).sum(-1).float()
        out.ln_norm[pos] = b.ln_norm
        out.n_good[pos] = lk.n_good(w).float()
    return out


def chi2(u: torch.Tensor, st: Statistics) -> torch.Tensor:
    """χ² of the decoded spectra with coefficients u (b, K) from the statistics: s − 2 u·g + uᵀ A u."""
    a = unpack(st.a, u.shape[-1])
    quadratic = (torch.bmm(u[:, None, :], a)[:, 0] * u).sum(-1)
    return st.s - 2 * (u * st.g).sum(-1) + quadratic


def unpack(a: torch.Tensor, k: int) -> torch.Tensor:
    """(b, K, K) symmetric matrices from their upper triangles, row by row (b, K(K+1)/2)."""
    i, j = _triangle(k, a.device)
    full = a.new_empty((a.shape[0], k, k))
    full[:, i, j] = a
    full[:, j, i] = a
    return full


_triangles: dict = {}


def _triangle(k: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    key = (k, str(device))
    if key not in _triangles:
        _triangles[key] = tuple(torch.triu_indices(k, k, device=device))
    return _triangles[key]


def ln_likelihood(u: torch.Tensor, st: Statistics) -> torch.Tensor:
    """Gaussian ln L per spectrum (nats), as :func:`galvae.likelihood.ln_likelihood` on the pixels."""
    return -0.5 * chi2(u, st) + st.ln_norm


class BasisSplit:
    """A split's rows as :class:`Statistics` with their conditions; the batches of a :class:`Split`."""

    def __init__(self, stats: Statistics, blocks: list[np.ndarray], cond: torch.Tensor | None):
        self.stats, self.blocks, self.cond = stats, blocks, cond
        self.device = stats.s.device
        self.rows = np.arange(len(stats.s))  # only its length is used by the trainer
        self.resident = True

    def __len__(self) -> int:
        return len(self.stats.s)

    epoch_order = Split.epoch_order  # the same shuffle, drawn from the same generator

    def _batch(self, p: torch.Tensor) -> StatBatch:
        return StatBatch(p, Statistics(*(t[p] for t in self.stats)), None if self.cond is None else self.cond[p])

    def train_batches(self, windows: list[np.ndarray], n_batches: int) -> Iterator[StatBatch]:
        order = np.concatenate(windows) if windows else np.zeros(0, np.int64)
        cuts = np.linspace(0, len(order), n_batches + 1).round().astype(np.int64)
        for b in range(n_batches):
            yield self._batch(torch.from_numpy(order[cuts[b]:cuts[b + 1]]).to(self.device))

    def eval_batches(self, batch_size: int) -> Iterator[StatBatch]:
        for pos in self.blocks:
            for s in range(0, len(pos), batch_size):
                yield self._batch(torch.from_numpy(pos[s:s + batch_size]).to(self.device))


def batch_loss(model: VAE, batch: StatBatch, beta: float, generator: torch.Generator | None = None):
    """Per-spectrum negative β-ELBO with one reparameterised sample, as ``vae_loss`` on the pixels."""
    mu, logvar = model.encode_projections(batch.stats.p, batch.cond)
    eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
    z = mu + torch.exp(0.5 * logvar) * eps
    u = model.output_basis()[0](z, batch.cond)
    return -ln_likelihood(u, batch.stats) + kl_term(mu, logvar, "gaussian", beta), mu


@torch.no_grad()
def validate(model: VAE, data: BasisSplit, beta: float, seed: int, batch_size: int) -> tuple[float, float]:
    """Mean loss (one sample from a generator seeded ``seed``) and mean χ²/pixel at the posterior mean,
    as ``fit``'s validation on the pixels."""
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=data.device).manual_seed(seed)
    losses, chi2s = [], []
    for b in data.eval_batches(batch_size):
        loss, mu = batch_loss(model, b, beta, gen)
        u_mean = model.output_basis()[0](mu, b.cond)
        losses.append(loss)
        chi2s.append(chi2(u_mean, b.stats) / b.stats.n_good)
    model.train(was_training)
    chi2_pp = torch.cat(chi2s)
    chi2_pp = chi2_pp[torch.isfinite(chi2_pp)]
    return float(torch.cat(losses).double().mean()), float(chi2_pp.double().mean()) if len(chi2_pp) else math.nan


# ---- one set of statistics per process ---------------------------------------------------------------

_cache: dict = {}


def cache_key(dataset, n_basis: int, *row_sets: np.ndarray):
    """What a split's statistics depend on: the dataset, K, and the row sets (the training rows give the
    data's mean, std and basis; then the split's own rows). None when the dataset has no digest."""
    digest = dataset.attrs.get("inputs_digest")
    if digest is None:
        return None
    return (digest, int(n_basis), *(hashlib.sha1(np.ascontiguousarray(r).tobytes()).hexdigest() for r in row_sets))


def model_digest(model: VAE) -> str:
    """A digest of the frozen parts the statistics depend on (basis, offset, the encoder's projection)."""
    _, basis, offset = model.output_basis()
    h = hashlib.sha1()
    for t in (basis, offset, model.encoder.project.weight, model.encoder.project.bias):
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def cached_statistics(key, compute):
    """``compute()``'s result, kept per process for ``key`` (the two latest keys: a grid's train and val
    statistics, and its test statistics), so that the cells a worker trains and scores one after another
    read the pixels once."""
    if key is None:
        return compute()
    if key not in _cache:
        while len(_cache) >= 2:
            _cache.pop(next(iter(_cache)))
        _cache[key] = compute()
    return _cache[key]
