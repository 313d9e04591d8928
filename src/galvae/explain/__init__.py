"""Explain: what the latent variables mean (docs/design.md §1, the paper's §4 and Figures 1, 3–6).

- :mod:`.rotation`     PCA of the training posterior means → D1…Dd by explained variance
- :mod:`.mutual_info`  KSG mutual information and Spearman ρ between each D_j and each property
- :mod:`.maps`         property medians in bins of latent pairs (Figure 1)
- :mod:`.traversal`    decoded spectra along each D_j and along each CVAE condition (Figures 3, 5)
- :mod:`.attribution`  SHAP per wavelength for each D_j, with a fidelity check (Figure 6)
- :mod:`.catalog`      ``latents.fits``: every spectrum's latents, χ²/pixel, ELBO and outlier score
- :mod:`.unusual`      the most unusual test spectra beside their reconstructions
- :mod:`.predictive`   what the latents know: cross-validated R² of properties, VAE against PCA
- :mod:`.external`     a user's own spec files through the model (``galvae encode --spectra``)

:func:`explain` runs them all on one model and dataset and writes ``OUT/analysis/``::

    rotation.json  latents.fits  mi.ecsv  spearman.ecsv  maps.npz  traversals.npz  cvae_traversals.npz
    shap.npz  unusual.npz  r2.ecsv  summary.json  stamps.json  figures/*.png

and, in the model folder when the dataset is the one it was trained on, ``rotation.json`` and
``reference.npz``: what ``galvae encode --spectra`` needs to score new spectra (:mod:`.external`).

Rerunning skips the expensive parts (encoding, MI, SHAP) whose inputs and settings are unchanged.
"""

from .figures import draw_figures
from .pipeline import ANALYSIS, ExplainResult, align_truth, encode_external, explain, load_truth
from .rotation import LatentRotation

__all__ = ["ANALYSIS", "ExplainResult", "LatentRotation", "align_truth", "draw_figures", "encode_external", "explain",
           "load_truth"]
