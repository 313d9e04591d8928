"""The most unusual test spectra beside their reconstructions (``analysis/unusual.npz``, a figure).

"Unusual" is the outlier score of :mod:`.external`: the percentile of a spectrum's ELBO among the
training spectra of similar S/N (``outlier_percentile`` in latents.fits); the lowest come first, ties
broken by the lower ELBO. Test spectra only: they took no part in training or early stopping.
"""

from __future__ import annotations

import numpy as np

N_UNUSUAL = 6


def score_catalog(table, sn) -> dict:
    """Add ``sn_bin`` and ``outlier_percentile`` to a latent catalogue (in place), its training rows the
    reference; returns the numbers the reference was built from (for :class:`.external.Reference`)."""
    from .external import outlier_percentile, sn_bin_edges

    elbo = np.asarray(table["elbo"], dtype=np.float64)
    sn = np.asarray(sn, dtype=np.float64)
    train = (np.asarray(table["split"]).astype(str) == "train") & np.isfinite(elbo)
    edges = sn_bin_edges(sn[train])
    pct, bins = outlier_percentile(elbo, sn, elbo[train], sn[train], edges)
    table["sn_bin"] = bins
    table["outlier_percentile"] = pct
    table["outlier_percentile"].description = ("percentile of the ELBO among the training spectra in the same "
                                               "S/N bin (SN_MEDIAN_ALL quintiles); low = unusual")
    return {"train_elbo": elbo[train], "train_sn": sn[train], "sn_edges": edges}


def unusual_rows(table, n: int = N_UNUSUAL, split: str = "test") -> np.ndarray:
    """Row numbers of the ``n`` most unusual spectra of ``split`` (lowest outlier percentile, then ELBO)."""
    pct = np.asarray(table["outlier_percentile"], dtype=np.float64)
    elbo = np.asarray(table["elbo"], dtype=np.float64)
    rows = np.flatnonzero((np.asarray(table["split"]).astype(str) == split) & np.isfinite(pct))
    order = np.lexsort((elbo[rows], pct[rows]))
    return rows[order[:n]]


def unusual_arrays(model, dataset, table, rows) -> dict:
    """What the figure shows, as arrays for ``unusual.npz``: spectra, reconstructions, masks, scores."""
    from ..prepare.dataset import take_rows

    flux = take_rows(dataset.flux, rows)
    return {"wave": np.asarray(dataset.wave), "id": np.asarray(table["id"])[rows].astype(str),
            "flux": flux, "reconstruction": model.reconstruct(flux).astype(np.float32),
            "filled": take_rows(dataset.filled, rows).astype(bool),
            "outlier_percentile": np.asarray(table["outlier_percentile"], dtype=np.float64)[rows],
            "chi2_per_pixel": np.asarray(table["chi2_per_pixel"], dtype=np.float64)[rows],
            "elbo": np.asarray(table["elbo"], dtype=np.float64)[rows]}


def unusual_figure(arrays: dict):
    """One panel per spectrum: the observed flux (grey where filled), the model's reconstruction in colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(arrays["id"])
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.7 * n + 0.6), sharex=True, squeeze=False)
    wave = arrays["wave"]
    for ax, k in zip(axes[:, 0], range(n)):
        flux, filled = arrays["flux"][k], arrays["filled"][k]
        ax.plot(wave, np.where(filled, np.nan, flux), color="0.15", lw=0.6, label="spectrum")
        ax.plot(wave, np.where(filled, flux, np.nan), color="0.7", lw=0.6, label="filled (not scored)")
        ax.plot(wave, arrays["reconstruction"][k], color="tab:red", lw=0.9, label="reconstruction")
        lo, hi = np.nanpercentile(flux, [0.5, 99.5])
        ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.2 * (hi - lo))
        ax.text(0.01, 0.93, f"{arrays['id'][k]}: outlier percentile {arrays['outlier_percentile'][k]:.1f}, "
                f"χ²/pixel {arrays['chi2_per_pixel'][k]:.2f}", transform=ax.transAxes, va="top", fontsize=8.5)
        ax.set_ylabel("flux (norm.)", fontsize=8)
    axes[0, 0].legend(loc="upper right", fontsize=7.5, ncol=3, frameon=False)
    axes[-1, 0].set_xlabel("rest-frame wavelength (Å)")
    fig.tight_layout()
    return fig
