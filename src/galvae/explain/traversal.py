"""Latent traversals: spectra decoded along one direction at a time (the paper's Figures 3 and 5).

- VAE: decode along D_j with every other D at 0 (the training mean), in the rotated space, mapped back
  with the inverse rotation; steps in units of D_j's standard deviation over the training split.
- CVAE: decode with z = 0 while one condition runs through percentiles of its training distribution,
  the model's other conditions held at their training medians.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# vacuum rest wavelengths, Å
EMISSION_LINES = {
    "[O II] 3727": 3727.092, "[O II] 3729": 3729.875, "Hβ": 4862.683, "[O III] 4959": 4960.295,
    "[O III] 5007": 5008.240, "[N II] 6548": 6549.86, "Hα": 6564.61, "[N II] 6584": 6585.27,
    "[S II] 6717": 6718.29, "[S II] 6731": 6732.67,
}
# labels drawn once per blend (the doublets sit within a few Å; [N II] flanks Hα)
LINE_LABELS = {"[O II]": 3728.5, "Hβ": 4862.683, "[O III]": 5008.240, "Hα": 6564.61, "[S II]": 6725.5}
D4000_BANDS = ((3850.0, 3950.0), (4000.0, 4100.0))  # Balogh et al. (1999) narrow D4000 windows, Å
DEFAULT_STEPS = (-2.0, -1.0, 0.0, 1.0, 2.0)
DEFAULT_PERCENTILES = (5.0, 25.0, 50.0, 75.0, 95.0)


@dataclass
class Traversal:
    """Decoded spectra along one latent direction or condition."""

    name: str              # 'D1', … or a condition name
    values: np.ndarray     # (n_steps,) the value of D_j (latent units) or of the condition (physical units)
    spectra: np.ndarray    # (n_steps, P) normalised flux
    label: str = ""        # e.g. 'D1 = −2σ … +2σ' or the CVAE model's name


def latent_traversals(model, rotation, steps=DEFAULT_STEPS) -> list[Traversal]:
    """One :class:`Traversal` per D_j: D_j = step × σ_j, the others 0, decoded (plain VAE only)."""
    if model.condition_names:
        raise ValueError("latent traversals need a plain VAE; use condition_traversals for a CVAE")
    steps = np.asarray(steps, dtype=np.float64)
    sigma = np.sqrt(rotation.explained_variance_)
    out = []
    for j, name in enumerate(rotation.names):
        d = np.zeros((len(steps), rotation.n_components))
        d[:, j] = steps * sigma[j]
        spectra = model.decode(rotation.inverse_transform(d).astype(np.float32))
        out.append(Traversal(name, d[:, j], spectra, f"{name} = {steps[0]:+g}σ … {steps[-1]:+g}σ"))
    return out


def condition_values(model, props, rows, percentiles=DEFAULT_PERCENTILES) -> dict[str, np.ndarray]:
    """Per condition of a CVAE: its values (physical units) at ``percentiles`` of the given rows."""
    raw = model.conditions.raw_values(props, rows)
    return {name: np.nanpercentile(raw[:, k], percentiles) for k, name in enumerate(model.condition_names)}


def condition_traversals(model, props, train_rows, percentiles=DEFAULT_PERCENTILES, label: str = "") -> list[Traversal]:
    """One :class:`Traversal` per condition of a CVAE: z = 0, that condition at the training percentiles,
    the others at their training medians."""
    names = model.condition_names
    if not names:
        raise ValueError("condition traversals need a CVAE (a model with conditions)")
    grid = condition_values(model, props, train_rows, percentiles)
    medians = np.array([np.nanmedian(model.conditions.raw_values(props, train_rows)[:, k])
                        for k in range(len(names))])
    out = []
    for k, name in enumerate(names):
        cond = np.tile(medians, (len(grid[name]), 1))
        cond[:, k] = grid[name]
        z = np.zeros((len(grid[name]), model.latent_dim), dtype=np.float32)
        out.append(Traversal(name, grid[name], model.decode(z, cond), label or "+".join(names)))
    return out


def traversals_to_npz(traversals: list[Traversal], wave, unobserved=None) -> dict:
    """Flat arrays for ``np.savez``; ``unobserved`` (P,) bool marks the columns no spectrum observed
    (the dataset's ``unobserved``), for the figures to shade."""
    out = {"wave": np.asarray(wave), "names": np.array([t.name for t in traversals]),
           "labels": np.array([t.label for t in traversals]),
           "unobserved": np.zeros(len(wave), bool) if unobserved is None else np.asarray(unobserved, bool)}
    for k, t in enumerate(traversals):
        out[f"{k}_values"], out[f"{k}_spectra"] = t.values, t.spectra
    return out


def traversals_from_npz(data) -> tuple[np.ndarray, list[Traversal]]:
    """(wave, traversals) from :func:`traversals_to_npz`'s arrays."""
    return data["wave"], [Traversal(str(n), data[f"{k}_values"], data[f"{k}_spectra"], str(lbl))
                          for k, (n, lbl) in enumerate(zip(data["names"], data["labels"]))]
