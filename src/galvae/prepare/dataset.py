"""The dataset store (``dataset.zarr``, docs/design.md §2): layout, splits, and reading it back.

Layout of the Zarr group::

    wave     (P,)     float64  rest-frame pixel centres, Å
    flux     (N, P)   float32  normalised rest-frame flux, bad pixels filled by gappy PCA
    ivar     (N, P)   float32  inverse variance on the same scale; 0 where filled
    filled   (N, P)   bool     pixel was bad or outside the observed range, and was filled
    norm     (N,)     float32  the factor each spectrum was divided by (1e-17 erg/s/cm²/Å)
    split    (N,)     uint8    0 train, 1 val, 2 test (attrs['codes'])
    props/   one (N,) array per property column (id, z, logmstar, …; NaN where unknown)
    rejects/ path, id, reason: every input left out, and why
    fill_basis/ basis (K, P), mean (P): the gappy-PCA eigenspectra the bad pixels were filled with
    attrs    provenance: config, versions, counts; ``fill``: how bad pixels were filled, and the
             columns no (or too few) training spectra observe (``Dataset.unobserved``)

Every array is written Zstandard-compressed with a CRC32C of each compressed chunk (:func:`checksummed`),
so that a damaged chunk is an error naming its file, never numbers; stores written before the
checksum was added are read as they are.

Reading rows back: :func:`take_rows` reads any rows of an in-memory array, a lazy Zarr array or a
:class:`RowView`; :func:`row_blocks` groups sorted rows in blocks of BLOCK_ROWS stored rows (one Zarr
chunk as prepare writes them), so that a reader decodes each chunk once (galvae.splits streams
training batches that way).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLIT_CODES = ("train", "val", "test")


def checksummed() -> dict:
    """``create_array`` keywords of every dataset array: Zstandard as zarr's default, then CRC32C, which
    stores a checksum after each compressed chunk and checks it on every read."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return {"compressors": (ZstdCodec(level=0), Crc32cCodec())}


class DamagedStoreError(ValueError):
    """A chunk of the dataset store fails its checksum (or cannot be decoded)."""


def _chunk_file(array, coords) -> str:
    store = array.store_path.store
    root = getattr(store, "root", None)
    key = f"{array.store_path.path}/{array.metadata.encode_chunk_key(coords)}"
    return str(Path(root) / key) if root is not None else f"{array.store_path}/{key}"


def _damaged_chunk(array, lo: int = 0, hi: int | None = None) -> str | None:
    """The file of the first chunk holding rows [lo, hi) that cannot be read back, or None."""
    chunks, shape = array.chunks, array.shape
    first = range(lo // chunks[0], -(-(shape[0] if hi is None else hi) // chunks[0])) if shape else [()]
    rest = [range(-(-n // c)) for n, c in zip(shape[1:], chunks[1:])]
    for coords in itertools.product(first, *rest) if shape else [()]:
        block = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(coords, chunks, shape))
        try:
            array[block]
        except Exception:  # noqa: BLE001 - any failure to decode this chunk is the damage looked for
            return _chunk_file(array, coords)
    return None


def checked_read(array, read, lo: int = 0, hi: int | None = None):
    """``read()`` of a Zarr array; a chunk that fails its checksum becomes a :class:`DamagedStoreError`
    naming the chunk's file and how to rebuild the dataset."""
    try:
        return read()
    except Exception as exc:
        damaged = _damaged_chunk(array, lo, hi)
        if damaged is None:
            raise
        root = getattr(array.store_path.store, "root", None) or array.store_path
        raise DamagedStoreError(
            f"{damaged} is damaged ({type(exc).__name__}: {exc}); the dataset cannot be trusted: delete {root} "
            "and rerun `galvae prepare` with the same inputs to rebuild it") from exc


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


BLOCK_ROWS = 1000  # stored rows per reading block: prepare's rows_per_chunk, so a block is one Zarr chunk


class RowView:
    """Some rows of a 2-D array (NumPy, Zarr or another view), read only when asked for.

    What :func:`galvae.select.grid.comparable_view` puts in a restricted dataset, so that leaving out
    rows never copies the survey into memory."""

    def __init__(self, base, rows):
        self.base, self.rows = base, np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple:
        return (len(self.rows), *self.base.shape[1:])

    @property
    def dtype(self):
        return self.base.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        return take_rows(self.base, self.rows[key])

    def __array__(self, dtype=None, copy=None):
        a = take_rows(self.base, self.rows)
        return a if dtype is None else a.astype(dtype)


def base_rows(array, rows) -> tuple[object, np.ndarray]:
    """(the stored array, its row indices) behind ``array[rows]``, looking through RowViews."""
    rows = np.asarray(rows, dtype=np.int64)
    while isinstance(array, RowView):
        array, rows = array.base, array.rows[rows]
    return array, rows


def take_rows(array, rows) -> np.ndarray:
    """``array[rows]`` as NumPy for in-memory arrays, lazy Zarr arrays and RowViews.

    From Zarr, rows are read in store order, as the slab they span when they fill a quarter of it or
    more (one decode per chunk, no per-row selection), else by orthogonal selection."""
    array, rows = base_rows(array, rows)
    if not hasattr(array, "oindex"):
        return np.asarray(array[rows])
    if rows.size == 0:
        return np.zeros((0, *array.shape[1:]), array.dtype)
    if np.any(np.diff(rows) <= 0):  # read each stored row once, in store order, then arrange as asked
        unique, inverse = np.unique(rows, return_inverse=True)
        return take_rows(array, unique)[inverse]
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    if rows.size * 4 >= hi - lo:
        return checked_read(array, lambda: np.asarray(array[lo:hi]), lo, hi)[rows - lo]
    return checked_read(array, lambda: np.asarray(array.oindex[rows]), lo, hi)


def row_blocks(array, rows) -> list[np.ndarray]:
    """Positions into increasing ``rows`` grouped by the block of BLOCK_ROWS stored rows each lies in.

    The blocks follow the stored row numbers alone, not the storage (in memory, Zarr of any chunking),
    so the same data give the same blocks, hence the same training batches, wherever they sit."""
    _, stored = base_rows(array, rows)
    if stored.size and np.any(np.diff(stored) <= 0):
        raise ValueError("row_blocks needs increasing rows")
    key = stored // BLOCK_ROWS
    return np.split(np.arange(stored.size), np.flatnonzero(np.diff(key)) + 1) if stored.size else []


def split_rows(dataset, name: str, keep: np.ndarray) -> np.ndarray:
    """Rows of a split that have every needed condition."""
    rows = dataset.indices(name)
    return rows[keep[rows]]


@dataclass
class Dataset:
    """A prepared dataset (what :func:`open_dataset` returns).

    ``flux``, ``ivar`` and ``filled`` are NumPy arrays (``load=True``), lazy Zarr arrays
    (``load=False``), or RowViews of either (a restricted view); read them with :func:`take_rows`."""

    wave: np.ndarray
    flux: "np.ndarray | zarr.Array | RowView"  # noqa: F821
    ivar: "np.ndarray | zarr.Array | RowView"  # noqa: F821
    filled: "np.ndarray | zarr.Array | RowView"  # noqa: F821
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

    @property
    def unobserved(self) -> np.ndarray:
        """(P,) bool: columns the fill basis could not describe, each spectrum's own edge value there
        (``attrs['fill']``; all False for a dataset written before prepare recorded them)."""
        mask = np.zeros(len(self.wave), dtype=bool)
        for start, stop in self.attrs.get("fill", {}).get("unobserved_columns", []):
            mask[start:stop] = True
        return mask


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
    whole = (lambda a: checked_read(a, lambda: a[...]))
    get = whole if load else (lambda a: a)
    props = Table({name: _column(root["props"][name]) for name in attrs["props_columns"]})
    return Dataset(
        wave=whole(root["wave"]), flux=get(root["flux"]), ivar=get(root["ivar"]), filled=get(root["filled"]),
        norm=whole(root["norm"]), split=whole(root["split"]), props=props, attrs=attrs, path=str(path),
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
    values = checked_read(array, lambda: array[...])
    return np.array(values.tolist(), dtype=str) if values.dtype.kind in "OT" else values
