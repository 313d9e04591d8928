"""Moved to :mod:`galvae.prepare.synthetic` (it makes a dataset, not a model); this name still imports it."""

from ..prepare.synthetic import log_wave, noiseless_spectra, synthetic_dataset  # noqa: F401
