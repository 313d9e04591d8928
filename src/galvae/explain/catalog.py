"""The latent catalogue ``latents.fits``: every spectrum's latents, rotated latents and fit quality.

Columns: id, z, sn_median, split, D1…Dd (rotated posterior means), mu_1…d and sigma_1…d (raw posterior
means and standard deviations), chi2_per_pixel, ln_likelihood, elbo (nats; low = poorly explained),
n_good, elbo_percentile (the ELBO's percentile among the test split's spectra), sn_bin and
outlier_percentile (the ELBO's percentile among the training spectra of similar S/N: the outlier score,
:mod:`.unusual`). The encoding
itself is :func:`galvae.fit.encode_dataset`; this module adds the rotation and the percentile.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .rotation import LatentRotation

log = logging.getLogger(__name__)


def write_fits(table, path) -> Path:
    """Write a table as FITS atomically (temporary file, then rename)."""
    from .._atomic import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: table.write(tmp, overwrite=True, format="fits"))


def with_plain_ids(dataset):
    """The dataset with its props' string columns as fixed-width NumPy strings.

    Zarr v3 hands strings back as NumPy's variable-width StringDType, which FITS cannot write.
    """
    import dataclasses

    props = dataset.props.copy(copy_data=False)
    for name in props.colnames:
        col = np.asarray(props[name])
        if col.dtype.kind == "T":
            props[name] = np.array(col.tolist(), dtype=str)
    return dataclasses.replace(dataset, props=props)


def read_latents(path):
    """A latent catalogue (``latents.fits``) read back, its string columns (id, split) as str, not bytes.

    Not :func:`galvae.sources.catalogs.read_catalog`, which reads a property catalogue."""
    from astropy.table import Table

    table = Table.read(path)
    table.convert_bytestring_to_unicode()
    return table



def raw_latents(table) -> np.ndarray:
    """(N, d) posterior means from a catalogue's mu_1…mu_d columns."""
    d = int(table.meta.get("LATDIM") or sum(1 for c in table.colnames if c.startswith("mu_")))
    return np.stack([np.asarray(table[f"mu_{j + 1}"], dtype=np.float64) for j in range(d)], axis=1)


def rotated_latents(table) -> np.ndarray:
    """(N, d) rotated latents from a catalogue's D1…Dd columns."""
    names = sorted((c for c in table.colnames if c[0] == "D" and c[1:].isdigit()), key=lambda c: int(c[1:]))
    return np.stack([np.asarray(table[c], dtype=np.float64) for c in names], axis=1)


def percentile_of(values, reference) -> np.ndarray:
    """Percentile (0–100) of each value among the finite ``reference`` values (NaN stays NaN)."""
    ref = np.sort(np.asarray(reference, dtype=np.float64)[np.isfinite(reference)])
    v = np.asarray(values, dtype=np.float64)
    out = np.full(v.shape, np.nan)
    ok = np.isfinite(v)
    if ref.size:
        out[ok] = 100.0 * np.searchsorted(ref, v[ok], side="right") / ref.size
    return out


def add_rotation(table, rotation: LatentRotation):
    """Insert D1…Dd after ``split`` (in place); returns the table."""
    d = rotation.transform(raw_latents(table))
    at = table.colnames.index("split") + 1 if "split" in table.colnames else len(table.colnames)
    for j, name in enumerate(rotation.names):
        table.add_column(d[:, j], name=name, index=at + j)
    return table


def latent_catalog(model_dir, dataset, out_path, rotation: LatentRotation | None = None, n_samples: int = 8,
                   progress: bool = True):
    """Encode ``dataset`` with the model, fit the rotation on ``train`` if not given, write ``out_path``.

    Returns (table, rotation).
    """
    from ..fit import encode_dataset

    from .unusual import score_catalog

    out_path = Path(out_path)
    table = encode_dataset(model_dir, with_plain_ids(dataset), None, n_samples=n_samples, progress=progress)
    if rotation is None:
        train = np.asarray(table["split"]) == "train"
        rotation = LatentRotation(meta={"model_dir": str(model_dir), "fitted_on": "train posterior means"})
        rotation.fit(raw_latents(table)[train])
    add_rotation(table, rotation)
    test = np.asarray(table["split"]) == "test"
    table["elbo_percentile"] = percentile_of(table["elbo"], np.asarray(table["elbo"])[test])
    sn = dataset.props["sn_median"] if "sn_median" in dataset.props.colnames else np.full(len(table), np.nan)
    table.add_column(np.asarray(sn, dtype=np.float64), name="sn_median", index=table.colnames.index("z") + 1)
    score_catalog(table, table["sn_median"])
    for name in ("chi2_per_pixel", "ln_likelihood", "elbo"):
        table[name].description = {"chi2_per_pixel": "chi^2 per good pixel at the posterior mean",
                                   "ln_likelihood": "Gaussian ln L at the posterior mean, nats",
                                   "elbo": "ELBO, nats (low: poorly explained; an outlier score)"}[name]
    table.meta["ROTATION"] = "D = (mu - mean) @ components.T, PCA of train mu (rotation.json)"
    write_fits(table, out_path)
    return table, rotation


def encode_with(model_dir, dataset, rotation: LatentRotation, reference=None, n_samples: int = 8,
                progress: bool = False):
    """Catalogue of another dataset (e.g. real SDSS galaxies) in the same D basis, not written to disk.

    ``reference``: ELBO values (e.g. the mock's test spectra) to express each ELBO as a percentile of.
    """
    from ..fit import encode_dataset

    table = encode_dataset(model_dir, with_plain_ids(dataset), None, n_samples=n_samples, progress=progress)
    add_rotation(table, rotation)
    if reference is not None:
        table["elbo_percentile"] = percentile_of(table["elbo"], reference)
    return table
