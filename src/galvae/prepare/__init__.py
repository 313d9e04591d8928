"""Prepare: observed spectra → rest-frame, resampled, masked, filled, normalised dataset.

- :mod:`galvae.prepare.resample`   log-λ rest-frame grid and flux-conserving batch rebinning (spectres' definition)
- :mod:`galvae.prepare.masks`      SDSS ``and_mask`` bits treated as bad, and the bad-pixel mask
- :mod:`galvae.prepare.gappy_pca`  iterative (gappy) PCA fill of bad pixels, batched least squares
- :mod:`galvae.prepare.normalize`  per-spectrum normalisation factors
- :mod:`galvae.prepare.dataset`    the ``dataset.zarr`` store and its splits
- :mod:`galvae.prepare.pipeline`   ``galvae prepare``: files → dataset, over Dask
"""

from .dataset import Dataset, open_dataset, read_rejects
from .pipeline import PrepareConfig, PrepareResult, prepare_dataset

__all__ = ["Dataset", "PrepareConfig", "PrepareResult", "open_dataset", "prepare_dataset", "read_rejects"]
