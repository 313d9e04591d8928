"""galvae: informative latent representations of galaxy spectra."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("galvae")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "load_model", "open_dataset"]


def __getattr__(name):
    # Lazy, so that `import galvae` (and the CLI's --help) does not import torch or zarr.
    if name == "load_model":
        from .models import load_model

        return load_model
    if name == "open_dataset":
        from .prepare import open_dataset

        return open_dataset
    raise AttributeError(f"module 'galvae' has no attribute {name!r}")
