"""The likelihood, ELBO and BIC that every stage shares (docs/design.md §3), defined once.

Every function takes NumPy arrays or torch tensors (the last axis is pixels or latent dimensions) and
returns the same kind, so the trainer, ``select`` and ``explain`` use literally the same formulas.

Definitions, per spectrum i with flux x, model x̂ and inverse variance w (0 at bad or filled pixels),
are held in :data:`DEFINITIONS` (the report prints the same lines) and appended below:

"""

from __future__ import annotations

import math

import numpy as np

#: Each quantity's formula, per spectrum i: written once, shown in this module's docstring and the report.
DEFINITIONS = {
    "χ²_i": "Σ_p w_p (x_p − x̂_p)²                       (bad pixels have w = 0 and drop out)",
    "ln L_i": "Σ_{p: w_p > 0} −½ [w_p (x_p − x̂_p)² − ln w_p + ln 2π]",
    "χ²/pixel": "χ²_i / P_i,  P_i = number of good pixels (w > 0)",
    "KL_i": "½ Σ_j (μ_j² + σ_j² − ln σ_j² − 1)          (to N(0, I), summed over latent dims)",
    "ELBO_i": "E_q[ln L_i] − β KL_i                        (β = 1 is the ELBO proper)",
    "BIC_i": "k ln P_i − 2 ln L_i,  k = d + number of conditions, L_i at the posterior mean",
    "MSE_i": "mean_p (x_p − x̂_p)²   over all pixels, filled ones too: the paper's fixed-σ loss",
}


def definition_lines(names=None) -> list[str]:
    """``name = formula`` lines of :data:`DEFINITIONS` (all, or those of ``names``, in this order)."""
    return [f"{name:<16}= {DEFINITIONS[name]}" for name in (DEFINITIONS if names is None else names)]


__doc__ += "".join(f"    {line}\n" for line in definition_lines())

LN_2PI = math.log(2.0 * math.pi)


def _is_torch(a) -> bool:
    return type(a).__module__.startswith("torch")


def _log(a):
    if _is_torch(a):
        import torch

        return torch.log(a)
    return np.log(a)


def _where(cond, a, b):
    if _is_torch(cond):
        import torch

        return torch.where(cond, a, b)
    return np.where(cond, a, b)


def n_good(ivar):
    """Number of good pixels (ivar > 0) per spectrum."""
    return (ivar > 0).sum(-1)


def ln_likelihood_constant(ivar):
    """The data-only part of ln L per spectrum: ½ Σ_good (ln ivar − ln 2π).

    Depends on the noise alone, so the trainer computes it once per spectrum and caches it.
    """
    good = ivar > 0
    safe = _where(good, ivar, ivar * 0 + 1)  # ln 1 = 0 where bad, no warnings
    return 0.5 * (_where(good, _log(safe) - LN_2PI, safe * 0)).sum(-1)


def chi2(flux, model, ivar):
    """χ² per spectrum, Σ_p ivar_p (x_p − x̂_p)², over good pixels (ivar is 0 elsewhere)."""
    return (ivar * (flux - model) ** 2).sum(-1)


def ln_likelihood(flux, model, ivar, constant=None):
    """Gaussian log-likelihood per spectrum over good pixels (nats).

    ``constant`` is :func:`ln_likelihood_constant` of ``ivar`` when already known.
    """
    if constant is None:
        constant = ln_likelihood_constant(ivar)
    return -0.5 * chi2(flux, model, ivar) + constant


def chi2_per_pixel(flux, model, ivar):
    """χ² divided by the number of good pixels, per spectrum (NaN with no good pixel)."""
    n = n_good(ivar)
    c = chi2(flux, model, ivar)
    if _is_torch(c):
        return c / n.to(c.dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        return c / n


def mse(flux, model):
    """The paper's reconstruction loss: mean squared error over all pixels, per spectrum."""
    return ((flux - model) ** 2).mean(-1)


def kl_divergence(mu, logvar):
    """KL(N(μ, σ²) ‖ N(0, I)) per spectrum, summed over latent dimensions (nats)."""
    var = logvar.exp() if _is_torch(logvar) else np.exp(logvar)
    return 0.5 * (mu**2 + var - logvar - 1.0).sum(-1)


def elbo(expected_ln_likelihood, kl, beta: float = 1.0):
    """ELBO per spectrum: E_q[ln L] − β KL (nats); β = 1 gives the evidence lower bound proper."""
    return expected_ln_likelihood - beta * kl


def n_parameters(latent_dim: int, n_conditions: int) -> int:
    """BIC's k, the paper's number of parameters: latent dimensions plus conditions."""
    return int(latent_dim) + int(n_conditions)


def bic(ln_like, k: int, n_good_pixels):
    """BIC per spectrum: k ln P_i − 2 ln L_i, with P_i good pixels and L_i at the posterior mean."""
    if _is_torch(n_good_pixels):
        return k * n_good_pixels.double().log() - 2.0 * ln_like
    return k * np.log(np.asarray(n_good_pixels, dtype=float)) - 2.0 * np.asarray(ln_like, dtype=float)


def mean_and_stderr(values) -> tuple[float, float]:
    """Mean over finite values and its standard error (std with ddof=1 over √n)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))
