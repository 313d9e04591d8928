"""SHAP values per wavelength for each rotated latent D_j (the paper's Figure 6), with a fidelity check.

The explained function is the encoder's posterior mean composed with the latent rotation,
x ↦ D(x) = (μ(x) − mean) · Vᵀ, as one torch module (:class:`RotatedEncoder`). The default method is
shap's ``DeepExplainer`` (DeepLIFT's rescale rule averaged over a background set; the method of the
paper's Appendix B). For a network of Linear layers and LeakyReLUs it is *exactly* additive: the SHAP
values of a spectrum sum to D(x) − E_background[D]. :func:`fidelity` measures how closely that holds
in floating point; we run the explainer in float64 so the error is round-off only.

``method='integrated_gradients'`` is our own fallback (no shap needed): Riemann-sum integrated
gradients from each background spectrum, averaged, whose completeness error shrinks with ``steps``.

Background (from ``train``) and explained spectra (from ``test``) are drawn stratified in bins of
stellar mass, so both span the population rather than its most common galaxies.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

FIDELITY_TOLERANCE = 1e-6  # max relative |Σφ − ΔD| in float64; DeepLIFT on Linear+LeakyReLU is exact up to round-off
FIDELITY_TOLERANCE_FLOAT32 = 1e-4  # measured ~2e-5 on the mock demo model


def _torch():
    import torch

    return torch


def rotated_encoder(vae_module, rotation, dtype="float64"):
    """A torch module computing D(x) from (batch, P) spectra, on a private copy of the VAE's weights."""
    torch = _torch()
    from torch import nn

    class RotatedEncoder(nn.Module):
        """x ↦ (μ(x) − mean) · componentsᵀ: the encoder's posterior mean in the rotated (D) basis."""

        def __init__(self, vae, mean, components):
            super().__init__()
            self.vae = vae
            self.register_buffer("mean", torch.as_tensor(mean))
            self.register_buffer("components", torch.as_tensor(components))

        def forward(self, x):
            mu, _ = self.vae.encode(x)
            return (mu - self.mean) @ self.components.T

    if vae_module.cfg.n_conditions:
        raise ValueError("attribution is defined for a plain VAE (no conditions)")
    dt = getattr(torch, dtype)
    module = RotatedEncoder(copy.deepcopy(vae_module), rotation.mean_, rotation.components_)
    return module.to(dt).eval()


def stratified_rows(rows, logmstar, n: int, n_bins: int = 5, seed: int = 0) -> np.ndarray:
    """Up to ``n`` of ``rows`` drawn in proportion from ``n_bins`` quantile bins of log M* (NaN: own bin)."""
    rows = np.asarray(rows)
    if n >= len(rows):
        return np.sort(rows)
    rng = np.random.default_rng(seed)
    v = np.asarray(logmstar, dtype=np.float64)[rows]
    ok = np.isfinite(v)
    strata = np.full(len(rows), n_bins)
    if ok.sum() > 1:
        edges = np.quantile(v[ok], np.linspace(0, 1, n_bins + 1))[1:-1]
        strata[ok] = np.searchsorted(edges, v[ok], side="right")
    picked = []
    for s in np.unique(strata):
        members = rows[strata == s]
        k = int(np.floor(n * len(members) / len(rows)))
        picked.extend(rng.choice(members, k, replace=False))
    rest = np.setdiff1d(rows, picked)
    picked.extend(rng.choice(rest, n - len(picked), replace=False))
    return np.sort(np.asarray(picked))


@dataclass
class ShapResult:
    """SHAP values of the explained spectra."""

    values: np.ndarray          # (n, P, d): contribution of each pixel to each D_j, latent units
    expected: np.ndarray        # (d,) E_background[D]
    outputs: np.ndarray         # (n, d) D of the explained spectra
    rows: np.ndarray            # (n,) dataset rows explained
    background_rows: np.ndarray
    method: str
    fidelity: dict = field(default_factory=dict)
    filled: np.ndarray | None = None      # (n, P) bool: the explained spectra's filled pixels
    unobserved: np.ndarray | None = None  # (P,) bool: columns no spectrum observed

    def mean_abs(self) -> np.ndarray:
        """(P, d) mean |SHAP| per wavelength over the explained spectra, at observed pixels only.

        A filled pixel's attribution is real for the encoder (the values add up to D(x) − E[D] only with
        it) but says nothing about the galaxy: those are left out, and a column with no observed pixel
        among the explained spectra is NaN."""
        a = np.abs(self.values).astype(np.float64)
        if self.filled is None:
            return a.mean(axis=0)
        observed = ~np.asarray(self.filled, bool)[..., None]
        count = observed.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, (a * observed).sum(axis=0) / count, np.nan)

    def filled_share(self) -> float | None:
        """The fraction of Σ|SHAP| (all spectra, pixels and D_j) that sits at filled pixels."""
        if self.filled is None:
            return None
        a = np.abs(self.values).astype(np.float64).sum(axis=-1)
        total = a.sum()
        return float(a[np.asarray(self.filled, bool)].sum() / total) if total > 0 else 0.0


def deep_shap(module, background, x, batch: int = 8) -> np.ndarray:
    """(n, P, d) SHAP values from shap's DeepExplainer, ``batch`` spectra per call (bounds memory)."""
    import shap
    torch = _torch()

    dt = next(module.parameters()).dtype
    explainer = shap.DeepExplainer(module, torch.as_tensor(background, dtype=dt))
    parts = []
    for s in range(0, len(x), batch):
        v = explainer.shap_values(torch.as_tensor(x[s:s + batch], dtype=dt), check_additivity=False)
        v = np.stack(v, axis=-1) if isinstance(v, list) else np.asarray(v)
        parts.append(v.reshape(len(x[s:s + batch]), x.shape[1], -1))
    return np.concatenate(parts)


def integrated_gradients(module, background, x, steps: int = 64) -> np.ndarray:
    """(n, P, d) integrated gradients from each background spectrum (midpoint rule), averaged over them."""
    torch = _torch()
    dt = next(module.parameters()).dtype
    bg = torch.as_tensor(background, dtype=dt)
    alphas = (torch.arange(steps, dtype=dt) + 0.5) / steps
    out = []
    for xi in torch.as_tensor(x, dtype=dt):
        delta = xi[None] - bg                                              # (B, P)
        path = (bg[None] + alphas[:, None, None] * delta[None]).reshape(-1, bg.shape[1]).requires_grad_(True)
        y = module(path)                                                   # (steps·B, d)
        grads = [torch.autograd.grad(y[:, j].sum(), path, retain_graph=True)[0] for j in range(y.shape[1])]
        g = torch.stack(grads, -1).reshape(steps, *bg.shape, -1).mean(0)   # (B, P, d)
        out.append((g * delta[..., None]).mean(0).detach().numpy())
    return np.stack(out)


def fidelity(values, outputs, expected, scale, tolerance: float = FIDELITY_TOLERANCE) -> dict:
    """How well Σ_p φ_pj = D_j(x) − E[D_j] holds.

    Relative error per spectrum and D_j: |Σφ − ΔD| / max(|ΔD|, 0.01 s_j), with s_j the standard deviation
    of D_j over the background (the floor keeps spectra that sit at the background mean from dividing by ~0).
    """
    delta = outputs - expected[None, :]
    err = np.abs(values.sum(axis=1) - delta)
    rel = err / np.maximum(np.abs(delta), 0.01 * np.asarray(scale)[None, :])
    return {"max_abs_error": float(err.max()), "max_relative_error": float(rel.max()),
            "median_relative_error": float(np.median(rel)), "tolerance": tolerance,
            "passed": bool(rel.max() <= tolerance),
            "definition": "max over spectra and D_j of |sum_p phi_pj - (D_j(x) - E_bg[D_j])| / "
                          "max(|D_j(x) - E_bg[D_j]|, 0.01 std_bg(D_j))"}


def shap_available() -> bool:
    try:
        import shap  # noqa: F401
    except ImportError:
        return False
    return True


def explain_latents(model, rotation, flux, background_rows, explain_rows, method: str = "deep",
                    ig_steps: int = 64, tolerance: float | None = None, dtype: str = "float64") -> ShapResult:
    """SHAP values of D(x) for ``flux[explain_rows]`` against ``flux[background_rows]``, with fidelity.

    ``model`` is a loaded :class:`~galvae.models.TrainedVAE`; ``method`` 'deep' (shap DeepExplainer) or
    'integrated_gradients'. 'deep' falls back to integrated gradients, with a warning, without shap.
    ``dtype``: the precision the explainer runs in ('float64' or 'float32').
    """
    if method == "deep" and not shap_available():
        log.warning("shap is not installed: using integrated gradients for the attributions")
        method = "integrated_gradients"
    module = rotated_encoder(model.module, rotation, dtype)
    torch = _torch()
    from ..prepare.dataset import take_rows

    bg = take_rows(flux, background_rows).astype(np.float64)
    x = take_rows(flux, explain_rows).astype(np.float64)
    dt = getattr(torch, dtype)
    with torch.no_grad():
        bg_out = module(torch.as_tensor(bg, dtype=dt)).double().numpy()
        outputs = module(torch.as_tensor(x, dtype=dt)).double().numpy()
    if method == "deep":
        values = deep_shap(module, bg, x).astype(np.float64)
        default = FIDELITY_TOLERANCE if dtype == "float64" else FIDELITY_TOLERANCE_FLOAT32
        tol = default if tolerance is None else tolerance
    elif method == "integrated_gradients":
        values = integrated_gradients(module, bg, x, ig_steps)
        tol = 1e-2 if tolerance is None else tolerance  # Riemann error, not round-off
    else:
        raise ValueError(f"method must be 'deep' or 'integrated_gradients', got {method!r}")
    expected = bg_out.mean(axis=0)
    fid = fidelity(values, outputs, expected, bg_out.std(axis=0), tol)
    fid["method"], fid["dtype"] = method, dtype
    log.info("SHAP (%s) for %d spectra against %d background: max relative additivity error %.2e "
             "(tolerance %.0e)", method, len(x), len(bg), fid["max_relative_error"], tol)
    return ShapResult(values.astype(np.float32), expected, outputs, np.asarray(explain_rows),
                      np.asarray(background_rows), method, fid)


def showcase_index(result: ShapResult, dims: tuple[int, int]) -> int:
    """Index (into the explained set) of the spectrum furthest from the background mean in ``dims``,
    in units of each D's spread: the galaxy whose SHAP values Figure 6 shows."""
    delta = result.outputs[:, dims] - result.expected[list(dims)]
    spread = result.outputs[:, dims].std(axis=0)
    return int(np.argmax(np.sum((delta / np.where(spread > 0, spread, 1.0)) ** 2, axis=1)))


def showcase_dims(d: int) -> tuple[int, int]:
    """The latents Figure 6 shows one galaxy's SHAP for: D3 and D4, or the last two when d < 4."""
    if d >= 4:
        return (2, 3)
    return (max(d - 2, 0), d - 1)


def save_shap(result: ShapResult, path, wave, ids, flux=None, filled=None, unobserved=None) -> None:
    """Write the result as .npz (float32 values), with the explained spectra's ``flux``, their ``filled``
    masks (n, P) and the dataset's ``unobserved`` columns (P,) when given (also kept on ``result``)."""
    from .._atomic import atomic_write

    if filled is not None:
        result.filled = np.asarray(filled, bool)
    if unobserved is not None:
        result.unobserved = np.asarray(unobserved, bool)
    masks = {k: v for k, v in (("filled", result.filled), ("unobserved", result.unobserved)) if v is not None}
    atomic_write(path, lambda tmp: np.savez_compressed(
        tmp, **masks, values=result.values, expected=result.expected, outputs=result.outputs, rows=result.rows,
        background_rows=result.background_rows, method=result.method, wave=np.asarray(wave),
        ids=np.array([str(i) for i in ids]),
        flux=np.zeros((0, len(wave)), np.float32) if flux is None else np.asarray(flux, np.float32)))


def load_shap(path) -> tuple[ShapResult, np.ndarray, np.ndarray, np.ndarray]:
    """(result, wave, ids, flux) from :func:`save_shap`'s file; fidelity is not stored there (summary.json)."""
    with np.load(path) as f:
        r = ShapResult(f["values"], f["expected"], f["outputs"], f["rows"], f["background_rows"], str(f["method"]),
                       filled=f["filled"] if "filled" in f.files else None,
                       unobserved=f["unobserved"] if "unobserved" in f.files else None)
        return r, f["wave"], f["ids"], f["flux"]
