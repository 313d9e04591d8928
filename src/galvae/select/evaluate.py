"""Per-spectrum test scores of a trained cell, beyond fit's metrics.json.

:func:`score_test_split` loads a model directory, scores the dataset's ``test`` rows and returns
per-spectrum arrays that grids compare cell against cell on the same spectra (paired differences):

``ln_likelihood``   ln L at the posterior mean, the encoder's answer (fit's definition, :mod:`galvae.likelihood`)
``ln_likelihood_ml`` ln L at the maximum-likelihood latent: z refined per spectrum under the decoder,
                    starting at the posterior mean (:func:`refine_latents`); never below ``ln_likelihood``
``bic``             k ln P_i − 2 ln L_i at the maximum-likelihood latent (:func:`galvae.likelihood.bic`):
                    BIC is defined with the maximised likelihood
``bic_amortized``   the same at the posterior mean (what galvae reported before the refinement)
``elbo``            E_q[ln L] − KL, Monte Carlo
``iwae``            the importance-weighted bound on ln p(x) (Burda, Grosse & Salakhutdinov 2016),
                    ln (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x): between the ELBO (K = 1)
                    and ln p(x) (K → ∞), so it charges a model only for the latent information it uses
``kl_per_dim``      KL(q(z_j|x) ‖ N(0, 1)) per latent dimension, nats
``mu``              posterior means (for the activity of each latent dimension)

:func:`active_dimensions` counts the latent dimensions a model uses: those whose posterior mean
varies across spectra, Var_x(E_q[z_j]) > 0.01 (Burda et al. 2016); a dimension the KL term has
collapsed onto the prior has Var ≈ 0 and KL ≈ 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import likelihood as lk
from .. import basis_split
from ..basis_split import unpack

ACTIVITY_THRESHOLD = 0.01  # Var_x(E_q[z_j]) above which dimension j counts as used (Burda et al. 2016)
#: Adam steps and rate of the per-spectrum latent refinement (:func:`refine_latents`): z is in units of
#: the prior's σ, so 0.05 moves it by at most ≈ 1σ in 20 steps; docs/model_selection.md measures the budget.
REFINE_STEPS = 40
REFINE_LR = 0.05
IWAE_BATCH = 256


def refine_latents(module, flux, ivar, mu, cond=None, steps: int = REFINE_STEPS, lr: float = REFINE_LR,
                   constant=None, ln_l=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximise each spectrum's ln L(x | decode(z)) over its latent z, starting at the encoder's ``mu``.

    Adam on the batch's summed ln L: its steps are per coordinate, so every spectrum's z moves as if
    optimised alone. Each spectrum keeps the best z seen (the start included), so the result is never
    worse than the encoder's. Returns (z, ln L at z), both detached. The decoder's weights are untouched.

    ``ln_l``: z ↦ per-spectrum ln L, instead of decoding onto ``flux`` and ``ivar`` (e.g. from a spectrum's
    basis statistics, :mod:`galvae.basis_split`; ``flux`` and ``ivar`` are then unused).
    """
    const = None
    if ln_l is None:
        const = lk.ln_likelihood_constant(ivar) if constant is None else constant

    def exact(z):
        with torch.no_grad():
            return ln_l(z) if ln_l is not None else lk.ln_likelihood(flux, module.decode(z, cond), ivar, constant=const)

    start = mu.detach().clone()
    start_ll = exact(start)
    if steps <= 0:
        return start, start_ll
    ln_l = ln_l or _ln_l_of_z(module, flux, ivar, cond, const, start)
    best_z = start.clone()
    best_ll = torch.full_like(start_ll, -math.inf)
    z = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for step in range(steps + 1):
        with torch.enable_grad():
            ll = ln_l(z)
            (grad,) = torch.autograd.grad(-ll.sum(), z) if step < steps else (None,)
        with torch.no_grad():
            better = ll > best_ll  # NaN never counts as better
            best_ll = torch.where(better, ll, best_ll)
            best_z[better] = z[better]
        if grad is None:
            break
        z.grad = grad
        opt.step()
    final = exact(best_z)  # the reported value: the same arithmetic as the encoder's, never below it
    keep = final >= start_ll
    return torch.where(keep[:, None], best_z, start), torch.where(keep, final, start_ll)


def _ln_l_of_z(module, flux, ivar, cond, const, z0):
    """z ↦ per-spectrum ln L(x | decode(z)). A compact model with eigenspectra decodes linearly from K
    coefficients u (:meth:`galvae.models.vae.VAE.output_basis`), so χ² is a quadratic form in u. About the
    start u0 = u(z0): χ²(u) = χ²(u0) − 2 δu·h + δuᵀ G δu, with h = B (w r0) and G = B diag(w) Bᵀ made once
    per spectrum (r0 the residual at the start): each step then costs K² per spectrum instead of a decode
    of P pixels. Centred on the start, the terms stay small and float32 suffices. Other models decode
    every step."""
    linear = module.output_basis() if hasattr(module, "output_basis") else None
    if linear is None:
        return lambda z: lk.ln_likelihood(flux, module.decode(z, cond), ivar, constant=const)
    coefficients, basis, offset = linear
    with torch.no_grad():
        u0 = coefficients(z0, cond)
        good = ivar > 0
        w = torch.where(good, ivar, torch.zeros_like(ivar))
        r0 = torch.where(good, flux - (offset + u0 @ basis), torch.zeros_like(flux))
        h = (w * r0) @ basis.T                                                   # (n, K)
        chi2_0 = (w * r0 * r0).sum(-1)                                           # (n,)
        i, j = torch.triu_indices(len(basis), len(basis), device=basis.device)
        gram = unpack(w @ (basis[i] * basis[j]).T, len(basis))                   # (n, K, K), one GEMM

    def ln_l(z):
        du = coefficients(z, cond) - u0
        return const - 0.5 * (chi2_0 - 2 * (du * h).sum(-1) + torch.einsum("nk,nkj,nj->n", du, gram, du))

    return ln_l


@torch.no_grad()
def importance_weighted_bound(module, flux, ivar, cond=None, n_samples: int = 64, seed: int = 0,
                              batch_size: int = IWAE_BATCH, gen: torch.Generator | None = None) -> np.ndarray:
    """Per-spectrum importance-weighted lower bound on ln p(x) with ``n_samples`` samples (nats).

    ``gen``: a generator to draw from (and advance), so that a stream of batches continues one sequence."""
    module.eval()
    gen = gen if gen is not None else torch.Generator(device=flux.device).manual_seed(seed)
    out = []
    for start in range(0, flux.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        x, w = flux[sl], ivar[sl]
        c = None if cond is None else cond[sl]
        const = lk.ln_likelihood_constant(w)
        mu, logvar = module.encode(x, c)
        out.append(_iwae(mu, logvar, lambda z: lk.ln_likelihood(x, module.decode(z, c), w, constant=const),
                         n_samples, gen))
    return torch.cat(out).cpu().numpy() if out else np.zeros(0)


def _iwae(mu, logvar, ln_px, n_samples: int, gen) -> torch.Tensor:
    """ln (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x) per spectrum, z_k drawn from ``gen``; ``ln_px``: z ↦ ln L."""
    std = torch.exp(0.5 * logvar)
    log_w = []
    for _ in range(n_samples):
        eps = torch.randn(mu.shape, device=mu.device, generator=gen)
        z = mu + std * eps
        ln_pz = -0.5 * (z.double() ** 2 + lk.LN_2PI).sum(-1)
        ln_qz = -0.5 * (eps.double() ** 2 + lk.LN_2PI + logvar.double()).sum(-1)
        log_w.append(ln_px(z).double() + ln_pz - ln_qz)
    return torch.logsumexp(torch.stack(log_w), 0) - math.log(n_samples)


def score_test_split(model_dir, dataset, n_iwae: int = 16, n_elbo: int = 8, seed: int = 0,
                     batch_size: int = 1024, refine_steps: int = REFINE_STEPS) -> dict:
    """Per-spectrum scores of the model in ``model_dir`` on ``dataset``'s test rows (module docstring).

    ``refine_steps``: Adam steps of the per-spectrum latent refinement (0: BIC at the posterior mean).

    Rows lacking a condition the model needs are left out, as fit leaves them out. The rows are read
    from the store a block at a time (galvae.splits), so memory does not grow with the test split.
    """
    from ..models import load_model
    from ..models.conditions import rows_with_conditions
    from ..models.vae import score_batches
    from ..splits import Split

    model = load_model(model_dir)
    names = model.condition_names
    test = dataset.indices("test")
    rows = test[rows_with_conditions(dataset.props, names)[test]]
    cond = model.conditions.transform(model.conditions.raw_values(dataset.props, rows)) if names else None
    split = Split(dataset, rows, cond, model.device, resident_bytes=0)
    module = model.module.eval()
    for p in module.parameters():
        p.requires_grad_(False)  # the refinement differentiates with respect to z only
    if basis_split.uses_statistics(module.cfg, "gaussian"):
        r = _score_from_statistics(module, dataset, split, n_iwae, n_elbo, seed, batch_size, refine_steps)
        return _test_scores(model, dataset, rows, r)
    iwae_gen = torch.Generator(device=split.device).manual_seed(seed + 3)
    iwae = np.empty(len(rows))  # made once: see score_batches(n=) on the heap
    ln_l_ml, chi2_ml = np.empty(len(rows)), np.empty(len(rows))

    def batches():  # one read of the test rows feeds the scores, the IWAE bound and the refinement
        for b in split.eval_batches(batch_size):
            p = b.positions.cpu().numpy()
            iwae[p] = importance_weighted_bound(module, b.flux, b.ivar, b.cond, n_samples=n_iwae, gen=iwae_gen)
            with torch.no_grad():
                mu, _ = module.encode(b.flux, b.cond)
            _, ll = refine_latents(module, b.flux, b.ivar, mu, b.cond, steps=refine_steps, constant=b.ln_norm)
            ln_l_ml[p] = ll.double().cpu().numpy()
            # ln L = −½ χ² + its data-only constant: χ² at z follows from ln L without another decode
            chi2_ml[p] = (-2.0 * (ll.double() - b.ln_norm.double()) / lk.n_good(b.ivar).double()).cpu().numpy()
            yield b.flux, b.ivar, b.cond, b.ln_norm

    r = score_batches(model.module, batches(), n_samples=n_elbo, seed=seed + 2, n=len(rows))
    r.update(ln_likelihood_ml=ln_l_ml, chi2_per_pixel_ml=chi2_ml, iwae=iwae)
    return _test_scores(model, dataset, rows, r)


def _test_scores(model, dataset, rows, r: dict) -> dict:
    """score_test_split's dictionary from the per-spectrum arrays of either path."""
    names = model.condition_names
    empty = np.zeros((0, model.latent_dim))
    mu, sigma = (r["mu"], r["sigma"]) if r["mu"] is not None else (empty, empty)
    kl_per_dim = 0.5 * (mu**2 + sigma**2 - 2 * np.log(np.maximum(sigma, 1e-30)) - 1.0)
    k = lk.n_parameters(model.latent_dim, len(names))
    ln_l = r["ln_likelihood"] if r["ln_likelihood"] is not None else np.zeros(0)
    n_good = r["n_good"] if r["n_good"] is not None else np.zeros(0)
    return {
        "ids": np.array([str(i) for i in np.asarray(dataset.props["id"])[rows]]),
        "n_good": n_good, "ln_likelihood": ln_l, "chi2_per_pixel": _or_empty(r["chi2_per_pixel"]),
        "ln_likelihood_ml": r["ln_likelihood_ml"], "chi2_per_pixel_ml": r["chi2_per_pixel_ml"],
        "bic": lk.bic(r["ln_likelihood_ml"], k, n_good), "bic_amortized": lk.bic(ln_l, k, n_good),
        "elbo": _or_empty(r["elbo"]), "iwae": r["iwae"],
        "kl": _or_empty(r["kl"]), "kl_per_dim": kl_per_dim, "mu": mu,
    }


@torch.no_grad()
def _score_from_statistics(module, dataset, split, n_iwae: int, n_elbo: int, seed: int, batch_size: int,
                           refine_steps: int) -> dict:
    """The scores of :func:`score_test_split` for a fixed-offset compact model, from the test rows' basis
    statistics (computed once per process and grid, :mod:`galvae.basis_split`) instead of their pixels:
    the same batches, the same random draws and the same formulas, every ln L a quadratic form in K
    coefficients. Equal to the pixel path up to float rounding (``tests/test_basis_split.py``)."""
    key = basis_split.cache_key(dataset, module.cfg.n_basis, split.rows)
    if key is not None:
        key = ("test", *key, basis_split.model_digest(module), str(split.device))
    stats = basis_split.cached_statistics(key, lambda: basis_split.compute_statistics(split, module))
    coefficients = module.output_basis()[0]
    n, d = len(split), module.cfg.latent_dim
    out = {k: np.empty(n) for k in ("ln_likelihood", "chi2_per_pixel", "kl", "elbo", "n_good", "iwae",
                                    "ln_likelihood_ml", "chi2_per_pixel_ml")}
    out.update(mu=np.empty((n, d)), sigma=np.empty((n, d)))
    iwae_gen = torch.Generator(device=split.device).manual_seed(seed + 3)
    elbo_gen = torch.Generator(device=split.device).manual_seed(seed + 2)
    data = basis_split.BasisSplit(stats, split.blocks, split.cond)
    for b in data.eval_batches(batch_size):
        st, c = b.stats, b.cond

        def ln_l(z, st=st, c=c):
            return basis_split.ln_likelihood(coefficients(z, c), st)

        p = b.positions.cpu().numpy()
        for s in range(0, len(p), IWAE_BATCH):  # the pixel path's sub-batches, so the same draws
            sub = slice(s, s + IWAE_BATCH)
            st_sub, c_sub = basis_split.Statistics(*(t[sub] for t in st)), None if c is None else c[sub]
            mu, logvar = module.encode_projections(st_sub.p, c_sub)
            out["iwae"][p[sub]] = _iwae(mu, logvar, lambda z: basis_split.ln_likelihood(coefficients(z, c_sub), st_sub),
                                        n_iwae, iwae_gen).cpu().numpy()
        mu, logvar = module.encode_projections(st.p, c)
        with torch.enable_grad():
            _, ll = refine_latents(module, None, None, mu, c, steps=refine_steps, ln_l=ln_l)
        kl = lk.kl_divergence(mu, logvar)
        expected = torch.zeros_like(kl)
        for _ in range(max(n_elbo, 1)):
            expected += ln_l(mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, device=mu.device, generator=elbo_gen))
        at_mean = ln_l(mu)
        rows = {"ln_likelihood": at_mean, "chi2_per_pixel": -2 * (at_mean - st.ln_norm) / st.n_good, "kl": kl,
                "elbo": lk.elbo(expected / max(n_elbo, 1), kl), "n_good": st.n_good, "mu": mu,
                "sigma": torch.exp(0.5 * logvar), "ln_likelihood_ml": ll,
                "chi2_per_pixel_ml": -2 * (ll - st.ln_norm) / st.n_good}
        for k, v in rows.items():
            out[k][p] = v.double().cpu().numpy()
    return out


def _or_empty(values) -> np.ndarray:
    return np.zeros(0) if values is None else values


def active_dimensions(mu: np.ndarray, threshold: float = ACTIVITY_THRESHOLD) -> int:
    """Number of latent dimensions whose posterior mean varies across spectra by more than ``threshold``."""
    mu = np.asarray(mu, dtype=float)
    if mu.ndim != 2 or mu.shape[0] < 2:
        return 0
    return int((mu.var(axis=0, ddof=1) > threshold).sum())


#: the per-spectrum scores summarised as mean and standard error in cell.json's ``test``
TEST_SUMMARY = ("ln_likelihood", "ln_likelihood_ml", "elbo", "chi2_per_pixel", "chi2_per_pixel_ml", "bic",
                "bic_amortized")


def summarise_scores(scores: dict) -> dict:
    """Means (with standard errors) of the test scores and the extra criteria, and the latent activity."""
    iwae, iwae_err = lk.mean_and_stderr(scores["iwae"])
    kl, _ = lk.mean_and_stderr(scores["kl"])
    mu = np.asarray(scores["mu"], dtype=float)
    activity = mu.var(axis=0, ddof=1) if mu.shape[0] > 1 else np.zeros(mu.shape[1])
    test = {"n_test": int(len(scores["ln_likelihood"]))}
    for name in TEST_SUMMARY:
        mean, err = lk.mean_and_stderr(scores[name])
        test[name] = {"mean": mean, "stderr": err}
    return {
        "test": test,
        "iwae_mean": iwae, "iwae_stderr": iwae_err, "kl_mean": kl,
        "n_active": active_dimensions(mu),
        "kl_per_dim": [float(v) for v in np.asarray(scores["kl_per_dim"]).mean(0)] if mu.shape[0] else [],
        "activity_per_dim": [float(v) for v in activity],
    }


def save_scores(path, scores: dict) -> None:
    """Write the per-spectrum arrays as .npz, atomically."""
    from .._atomic import atomic_write

    atomic_write(path, lambda tmp: np.savez(tmp, **scores))


def load_scores(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
