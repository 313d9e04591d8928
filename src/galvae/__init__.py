"""galvae: informative latent representations of galaxy spectra."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("galvae")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

# The Python API (galvae.api): the pipeline for a notebook, Tables and arrays out.
_API = ("SpectrumVAE", "encode_spectra", "explain_latents", "prepare_spectra", "read_spectra", "select_latents",
       "write_report")

__all__ = ["__version__", "load_model", "open_dataset", *_API]


def __getattr__(name):
    # Lazy, so that `import galvae` (and the CLI's --help) does not import torch or zarr.
    if name == "load_model":
        from .models import load_model

        return load_model
    if name == "open_dataset":
        from .prepare import open_dataset

        return open_dataset
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'galvae' has no attribute {name!r}")
