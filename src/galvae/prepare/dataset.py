"""The dataset store (``dataset.zarr``, DESIGN.md §2): layout, splits, and reading it back.

Layout of the Zarr group::

    wave     (P,)     float64  rest-frame pixel centres, Å
    flux     (N, P)   float32  normalised rest-frame flux, bad pixels filled by gappy PCA
    ivar     (N, P)   float32  inverse variance on the same scale; 0 where filled
    filled   (N, P)   bool     pixel was bad or outside the observed range, and was filled
    norm     (N,)     float32  the factor each spectrum was divided by (1e-17 erg/s/cm²/Å)
    split    (N,)     uint8    0 train, 1 val, 2 test (attrs['codes'])
    props/   one (N,) array per property column (id, z, logmstar, …; NaN where unknown)
    rejects/ path, id, reason: every input left out, and why
    attrs    provenance: config, versions, counts
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLIT_CODES = ("train", "val", "test")


def split_of(ids, fractions=(0.8, 0.1, 0.1), salt: str = "galvae-split-v1") -> np.ndarray:
    """Split code (0 train, 1 val, 2 test) per id, from a hash of the id alone.

    A spectrum keeps its split when the survey grows or shrinks, and two runs agree bit for bit.
    """
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    edges = np.cumsum(f)[:2] * 2**32
    keys = np.array([int.from_bytes(hashlib.blake2b(f"{salt}:{i}".encode(), digest_size=4).digest(), "big")
                     for i in ids], dtype=np.float64)
    return np.searchsorted(edges, keys, side="right").astype(np.uint8)


@dataclass
class Dataset:
    """A prepared dataset held in memory (what :func:`open_dataset` returns)."""

    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    filled: np.ndarray
    norm: np.ndarray
    split: np.ndarray
    props: "astropy.table.Table"  # noqa: F821
    attrs: dict
    path: str = ""

    def __len__(self) -> int:
        return self.flux.shape[0]

    def indices(self, name: str) -> np.ndarray:
        """Row indices of one split: 'train', 'val' or 'test'."""
        return np.flatnonzero(self.split == SPLIT_CODES.index(name))

    @property
    def ids(self) -> np.ndarray:
        return np.asarray(self.props["id"])


def open_dataset(path: str | Path, load: bool = True) -> Dataset:
    """Open ``dataset.zarr``. With ``load=False`` the big arrays stay lazy Zarr arrays."""
    import zarr
    from astropy.table import Table

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no dataset at {path}")
    try:
        root = zarr.open_group(str(path), mode="r")
        attrs = root.attrs.asdict()
    except (FileNotFoundError, ValueError, KeyError) as exc:  # zarr's error for "no group here"
        if (path / ".staging").exists():
            attrs = {}
        else:
            raise ValueError(f"{path} is not a galvae dataset ({exc})") from None
    if not attrs.get("complete"):
        raise ValueError(f"{path} is an unfinished dataset: rerun `galvae prepare` to complete it")
    get = (lambda a: a[...]) if load else (lambda a: a)
    props = Table({name: _column(root["props"][name]) for name in attrs["props_columns"]})
    return Dataset(
        wave=root["wave"][...], flux=get(root["flux"]), ivar=get(root["ivar"]), filled=get(root["filled"]),
        norm=root["norm"][...], split=root["split"][...], props=props, attrs=attrs, path=str(path),
    )


def read_rejects(path: str | Path):
    """The rejects table (path, id, reason) of a dataset."""
    import zarr
    from astropy.table import Table

    root = zarr.open_group(str(path), mode="r")
    g = root["rejects"]
    return Table({k: _column(g[k]) for k in ("path", "id", "reason")})


def _column(array) -> np.ndarray:
    """A stored 1-D column as plain NumPy; Zarr's variable-length strings become fixed-width str."""
    values = array[...]
    return np.array(values.tolist(), dtype=str) if values.dtype.kind in "OT" else values
