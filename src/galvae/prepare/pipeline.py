"""``galvae prepare``: spectrum files (+ catalogue) → ``dataset.zarr``, in two passes over Dask.

Pass 1, one task per chunk of files: read, apply the selection cuts, mask bad pixels, shift to the
rest frame, resample onto the grid, normalise. Each task writes its chunk to the staging folder
(``<out>/.staging/chunk-NNNNN.npz``, atomically) and returns its tally.

Between passes: a spectrum id staged twice keeps its first path (later copies become rejects), and the
gappy-PCA eigenbasis is fitted once on a seeded sample of staged *training* spectra (the split is the
hash of the id, :func:`galvae.prepare.dataset.split_of`), so no validation or test spectrum shapes the
values that fill the others.

Pass 2, one task per block of output rows: fill the bad pixels of its rows with that basis and write
its own Zarr chunks of ``flux``, ``ivar`` and ``filled`` (blocks align with Zarr chunks, so no two
workers touch the same chunk). Rest-frame columns too few training spectra observe for the basis to
describe them (3400–3455 Å at z < 0.1) get, in each spectrum, the median of its own values at the edge
of what the basis describes (:func:`extend_into_unobserved`); the dataset records those columns
(attribute ``fill.unobserved_columns``) so that figures can mark them.

An interrupted run resumes: finished chunks and blocks are skipped. A rerun with the same inputs and
configuration gives the same dataset, bit for bit, whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._atomic import atomic_write, write_text
from .._dask import close_client, make_client, run_tasks
from ..sources.sdss import find_spectrum_files, read_spectra
from . import dataset as ds
from .gappy_pca import fit_fill_basis, fill_with_basis
from .masks import bad_pixel_mask
from .normalize import DEFAULT_WINDOW, normalisation_factors
from .resample import log_grid, resample_batch

log = logging.getLogger(__name__)

STAGING = ".staging"
DATASET_FORMAT = "galvae-dataset"
FORMAT_VERSION = 2  # 2: fill basis from the training split only; unobserved columns from each spectrum's edge
EDGE_PIXELS = 15  # values whose median extends a spectrum into the columns its basis cannot describe


def chunk_path(staging, index: int) -> Path:
    """Pass 1's output for chunk ``index`` in the staging folder."""
    return Path(staging) / f"chunk-{index:05d}.npz"


def _savez_atomic(target: Path, **arrays) -> None:
    """np.savez to a temporary name, then rename: a reader never sees half a file."""
    atomic_write(target, lambda tmp: np.savez(tmp, **arrays))


@dataclass
class PrepareConfig:
    """Every choice `prepare` makes, recorded in the dataset's provenance."""

    n_pix: int = 4000                 # rest-frame pixels, log-spaced
    wave_min: float = 3400.0          # Å
    wave_max: float = 8400.0          # Å
    zmin: float = 0.0                 # exclusive
    zmax: float = 0.1                 # exclusive
    classes: tuple = ("GALAXY",)
    zwarning_zero: bool = True
    min_sn: float | None = None       # floor on SN_MEDIAN_ALL
    max_bad_fraction: float = 0.3     # of the rest-frame grid, before filling
    norm_window: tuple = DEFAULT_WINDOW
    n_components: int = 10            # gappy-PCA eigenspectra
    n_iter: int = 10                  # gappy-PCA iterations when fitting the basis
    basis_sample: int = 20000         # training spectra used to fit the basis
    min_column_coverage: float = 0.01  # a column fewer of them (or < 2 n_components) observe: each spectrum's edge value
    split_fractions: tuple = (0.8, 0.1, 0.1)
    files_per_task: int = 250
    rows_per_chunk: int = 1000
    seed: int = 0

    def digest(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class PrepareResult:
    path: str
    n_files: int
    n_kept: int
    rejects_by_reason: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def n_rejected(self) -> int:
        return sum(self.rejects_by_reason.values())

    def summary(self) -> str:
        lines = [f"prepared {self.n_kept} of {self.n_files} spectra into {self.path} in {self.seconds:.1f} s"]
        lines += [f"  rejected {n:6d}: {reason}" for reason, n in sorted(self.rejects_by_reason.items(),
                                                                        key=lambda kv: -kv[1])]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------- pass 1

def _selection_problem(spec, cfg: PrepareConfig) -> str | None:
    """Why a readable spectrum fails the selection cuts (None if it passes)."""
    if cfg.classes and spec.spec_class not in cfg.classes:
        return f"not a galaxy: class {spec.spec_class or '?'} not in {'/'.join(cfg.classes)}"
    if cfg.zwarning_zero and spec.zwarning != 0:
        return f"redshift flagged: ZWARNING = {spec.zwarning}"
    if not (cfg.zmin < spec.z < cfg.zmax):
        return f"redshift out of range: z = {spec.z:.4f} outside ({cfg.zmin}, {cfg.zmax})"
    if cfg.min_sn is not None and not (spec.sn_median >= cfg.min_sn):
        return f"low S/N: median S/N {spec.sn_median:.1f} below {cfg.min_sn}"
    return None


def _stack_rest_frame(spectra) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rest-frame wavelength, flux and ivar of a batch as (N, M) arrays, bad pixels at ivar = 0.

    Spectra have different lengths; shorter ones are padded by continuing their log-λ grid with
    ivar = 0, so the padding is simply bad coverage.
    """
    m = max(s.wave.size for s in spectra)
    wave = np.empty((len(spectra), m))
    flux = np.zeros((len(spectra), m))
    ivar = np.zeros((len(spectra), m))
    for i, s in enumerate(spectra):
        n = s.wave.size
        loglam = np.log10(s.wave)
        step = (loglam[-1] - loglam[0]) / max(n - 1, 1) if n > 1 else 1e-4
        wave[i, :n] = s.wave / (1.0 + s.z)
        wave[i, n:] = 10 ** (loglam[-1] + step * np.arange(1, m - n + 1)) / (1.0 + s.z)
        bad = bad_pixel_mask(s.flux, s.ivar, s.and_mask)
        flux[i, :n] = np.where(bad, 0.0, s.flux)
        ivar[i, :n] = np.where(bad, 0.0, s.ivar)
    return wave, flux, ivar


def rest_frame_batch(spectra, cfg: PrepareConfig):
    """Pass 1 on spectra already read: selection cuts, bad pixels, rest frame, resampling, normalisation.

    Returns ``(kept, flux, ivar, norm, rejects)``: the spectra kept, their (n, P) normalised flux and
    ivar on the grid (0 at bad pixels, not yet filled), the factors, and (path, id, reason) rejects.
    Shared by prepare and by the encoding of a user's own spectra with a trained model
    (:mod:`galvae.explain.external`), so both see a spectrum the same way.
    """
    rejects, kept = [], []
    for s in spectra:
        problem = _selection_problem(s, cfg)
        if problem:
            rejects.append((s.path, s.id, problem))
        else:
            kept.append(s)
    grid = log_grid(cfg.n_pix, cfg.wave_min, cfg.wave_max)
    n_pix = grid.size
    flux = np.zeros((0, n_pix), np.float32)
    ivar = np.zeros((0, n_pix), np.float32)
    norm = np.zeros(0, np.float32)
    if kept:
        wave_rest, flux_obs, ivar_obs = _stack_rest_frame(kept)
        flux_r, ivar_r, covered = resample_batch(grid, wave_rest, flux_obs, ivar_obs)
        good = covered & (ivar_r > 0) & np.isfinite(flux_r)
        bad_frac = 1.0 - good.mean(axis=1)
        factors = normalisation_factors(grid, flux_r, good, cfg.norm_window)
        ok = (bad_frac <= cfg.max_bad_fraction) & np.isfinite(factors)
        for i in np.flatnonzero(~ok):
            reason = (f"too many bad pixels: {100 * bad_frac[i]:.0f}% of the rest-frame grid "
                      f"(max {100 * cfg.max_bad_fraction:.0f}%)" if bad_frac[i] > cfg.max_bad_fraction else
                      f"cannot normalise: no positive flux in {cfg.norm_window[0]:.0f}–{cfg.norm_window[1]:.0f} Å")
            rejects.append((kept[i].path, kept[i].id, reason))
        kept = [s for s, k in zip(kept, ok) if k]
        f = factors[ok][:, None]
        flux = np.where(good[ok], flux_r[ok] / f, 0.0).astype(np.float32)
        ivar = np.where(good[ok], ivar_r[ok] * f**2, 0.0).astype(np.float32)
        norm = factors[ok].astype(np.float32)
    return kept, flux, ivar, norm, rejects


def stage_chunk(index: int, paths: list[str], staging: str, cfg: PrepareConfig) -> dict:
    """Pass 1 for one chunk of files; writes ``chunk-{index:05d}.npz`` and returns its tally."""
    target = chunk_path(staging, index)
    if target.exists():
        with np.load(target, allow_pickle=False) as z:
            return {"index": index, "n_kept": int(z["flux"].shape[0]), "skipped": True}
    spectra, rejects = read_spectra(paths, workers=1, require_good_pixels=True)
    kept, flux, ivar, norm, more = rest_frame_batch(spectra, cfg)
    rejects = [(r.path, "", r.reason) for r in rejects] + more
    meta = {
        "id": np.array([s.id for s in kept], dtype=str),
        "specobjid": np.array([s.specobjid for s in kept], dtype=str),
        "path": np.array([s.path for s in kept], dtype=str),
        "z": np.array([s.z for s in kept], dtype=np.float64),
        "vdisp_sdss": np.array([s.vdisp for s in kept], dtype=np.float64),
        "sn_median": np.array([s.sn_median for s in kept], dtype=np.float64),
    }
    rej = np.array(rejects, dtype=str).reshape(-1, 3)
    _savez_atomic(target, flux=flux, ivar=ivar, norm=norm, rejects=rej, **meta)
    return {"index": index, "n_kept": len(kept), "skipped": False}


# ------------------------------------------------------------------------------- between passes

def drop_duplicate_ids(staging: Path, chunk_counts: list[int]) -> list[int]:
    """Keep the first staged row of each spectrum id (in path order); reject the others. New row counts.

    The same spectrum found twice (an SAS-layout copy and a loose one, spec and spec-lite) would weigh
    twice in training and could sit in two splits. Chunks holding a later copy are rewritten
    atomically, so a rerun after an interruption finds nothing left to drop.
    """
    first_path: dict[str, str] = {}
    duplicates: dict[int, list[int]] = {}  # chunk -> its rows that repeat an earlier id
    for c, n in enumerate(chunk_counts):
        if not n:
            continue
        with np.load(chunk_path(staging, c), allow_pickle=False) as z:
            ids, paths = z["id"], z["path"]
        for row, (spectrum_id, path) in enumerate(zip(ids.tolist(), paths.tolist())):
            if spectrum_id in first_path:
                duplicates.setdefault(c, []).append(row)
            else:
                first_path[spectrum_id] = path
    counts = list(chunk_counts)
    for c, rows in duplicates.items():
        target = chunk_path(staging, c)
        with np.load(target, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        keep = np.ones(counts[c], dtype=bool)
        keep[rows] = False
        new_rejects = [(arrays["path"][r], arrays["id"][r], f"duplicate id (first: {first_path[arrays['id'][r]]})")
                       for r in rows]
        arrays = {k: (v if k == "rejects" else v[keep]) for k, v in arrays.items()}
        arrays["rejects"] = np.concatenate([arrays["rejects"], np.array(new_rejects, dtype=str)]).reshape(-1, 3)
        _savez_atomic(target, **arrays)
        counts[c] = int(keep.sum())
        log.info("%d duplicate ids rejected in chunk %d", len(rows), c)
    return counts


# ----------------------------------------------------------------------------------------- pass 2

def _load_rows(staging: Path, chunk_counts: list[int], start: int, stop: int, keys=("flux", "ivar")):
    """Rows [start, stop) of the concatenated staged chunks."""
    offsets = np.concatenate([[0], np.cumsum(chunk_counts)])
    parts = {k: [] for k in keys}
    first = int(np.searchsorted(offsets, start, side="right") - 1)
    for c in range(first, len(chunk_counts)):
        lo, hi = offsets[c], offsets[c + 1]
        if lo >= stop:
            break
        if hi <= start or hi == lo:
            continue
        with np.load(chunk_path(staging, c), allow_pickle=False) as z:
            a, b = max(start, lo) - lo, min(stop, hi) - lo
            for k in keys:
                parts[k].append(z[k][a:b])
    return {k: np.concatenate(v) for k, v in parts.items()}


def fill_block(block: int, out: str, chunk_counts: list[int], cfg: PrepareConfig) -> int:
    """Pass 2 for one block of output rows: fill bad pixels, write this block's Zarr chunks."""
    import zarr

    staging = Path(out) / STAGING
    marker = staging / f"block-{block:05d}.done"
    if marker.exists():
        return 0
    start = block * cfg.rows_per_chunk
    stop = min(start + cfg.rows_per_chunk, int(sum(chunk_counts)))
    rows = _load_rows(staging, chunk_counts, start, stop)
    with np.load(staging / "basis.npz", allow_pickle=False) as z:
        basis, mean = z["basis"], z["mean"]
    good = rows["ivar"] > 0
    filled_flux = extend_into_unobserved(fill_with_basis(rows["flux"], good, basis, mean))
    root = zarr.open_group(out, mode="r+")
    root["flux"][start:stop] = filled_flux.astype(np.float32)
    root["ivar"][start:stop] = rows["ivar"]
    root["filled"][start:stop] = ~good
    marker.touch()
    return stop - start


def extend_into_unobserved(flux: np.ndarray, edge_pixels: int = EDGE_PIXELS) -> np.ndarray:
    """Replace the NaN left by the fill, in each row, with a value derived from that row alone.

    The NaN sit in rest-frame columns the basis cannot describe (no, or too few, training spectra
    observe them: 3400–3455 Å for SDSS-I/II at z < 0.1). Each run of them takes the median of the row's
    ``edge_pixels`` finite values next to it (on the nearer side for a run inside the row): the
    spectrum's own level at its described edge, robust to one noisy pixel, so every spectrum continues
    flat from where its own data (or its own fit) stops, not from one value shared by all. Those pixels
    are marked filled with ivar 0, so no likelihood sees them. A row with no finite value becomes 0.
    """
    bad = ~np.isfinite(flux)
    if not bad.any():
        return flux
    out = flux.copy()
    p = flux.shape[1]
    for i in np.flatnonzero(bad.any(axis=1)):
        row, ok = out[i], ~bad[i]
        if not ok.any():
            row[:] = 0.0
            continue
        finite = np.flatnonzero(ok)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], bad[i].view(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2]):  # runs [start, stop) of NaN
            left = finite[finite < start][-edge_pixels:]
            right = finite[finite >= stop][:edge_pixels]
            if not left.size or not right.size:
                row[start:stop] = np.median(row[left if left.size else right])
                continue
            middle = (start + stop) // 2  # inside the row: each half from its nearer side
            row[start:middle] = np.median(row[left])
            row[middle:stop] = np.median(row[right])
    return out


def unobserved_ranges(basis: np.ndarray, mean: np.ndarray) -> list[list[int]]:
    """Column ranges [start, stop) where the fill basis is NaN: what :func:`extend_into_unobserved` fills."""
    dead = ~(np.isfinite(mean) & np.isfinite(basis).all(axis=0))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], dead.view(np.int8), [0]])))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def _basis_sample_rows(candidates: np.ndarray, cfg: PrepareConfig) -> np.ndarray:
    if len(candidates) <= cfg.basis_sample:
        return candidates
    return np.sort(np.random.default_rng(cfg.seed).choice(candidates, cfg.basis_sample, replace=False))


def fit_basis(staging: Path, chunk_counts: list[int], cfg: PrepareConfig) -> None:
    """Fit the gappy-PCA eigenbasis on a seeded sample of staged training spectra; save ``basis.npz``.

    Only the training split (the same hash of the id as the dataset's ``split``) is used: a test
    spectrum must not shape the values that fill it. Columns observed by fewer than
    ``min_column_coverage`` of the sample, or fewer than twice the number of eigenspectra, are taken
    out of the fit (NaN in the basis): a handful of spectra cannot constrain ten eigenspectra there,
    and extrapolating from them put one wrong value into every spectrum. With fewer than 2 training spectra (a toy dataset) all spectra are used, and
    ``basis.npz`` says so.
    """
    target = staging / "basis.npz"
    if target.exists():
        return
    offsets = np.concatenate([[0], np.cumsum(chunk_counts)])
    ids = []
    for c in range(len(chunk_counts)):
        if chunk_counts[c]:
            with np.load(chunk_path(staging, c), allow_pickle=False) as z:
                ids.append(z["id"])
    train = np.flatnonzero(ds.split_of(np.concatenate(ids), cfg.split_fractions) == ds.SPLIT_CODES.index("train"))
    fitted_on = "train"
    if train.size < 2:
        log.warning("only %d training spectra: the gappy-PCA basis is fitted on all %d spectra",
                    train.size, offsets[-1])
        train, fitted_on = np.arange(int(offsets[-1])), f"all (train has {train.size})"
    rows = _basis_sample_rows(train, cfg)
    flux, ivar = [], []
    for c in range(len(chunk_counts)):
        sel = rows[(rows >= offsets[c]) & (rows < offsets[c + 1])] - offsets[c]
        if sel.size:
            with np.load(chunk_path(staging, c), allow_pickle=False) as z:
                flux.append(z["flux"][sel])
                ivar.append(z["ivar"][sel])
    flux, ivar = np.concatenate(flux), np.concatenate(ivar)
    good = ivar > 0
    k = min(cfg.n_components, len(flux) - 1)
    # rarely observed columns out of the fit: K eigenspectrum entries need more than K spectra there
    good &= good.sum(axis=0) >= max(cfg.min_column_coverage * len(flux), 2 * k)
    basis, mean = fit_fill_basis(flux, good, n_components=k, n_iter=cfg.n_iter, seed=cfg.seed)
    _savez_atomic(target, basis=basis, mean=mean, fitted_on=np.array(fitted_on), n_spectra=len(flux))


# -------------------------------------------------------------------------------------- driver

def _inputs_digest(paths: list[str], cfg: PrepareConfig, catalog) -> str:
    h = hashlib.sha1(f"{cfg.digest()}:v{FORMAT_VERSION}".encode())  # a new format rebuilds old datasets
    for p in paths:
        h.update(p.encode())
        h.update(str(os.path.getsize(p) if os.path.exists(p) else -1).encode())
    h.update(b"None" if catalog is None else _catalog_fingerprint(catalog).encode())
    return h.hexdigest()[:16]


def _catalog_fingerprint(catalog) -> str:
    """SHA-1 of the catalogue's content: a file's bytes, or a Table's column names, types and values.

    Content, not name: a catalogue edited in place or another Table must make the dataset stale.
    """
    h = hashlib.sha1()
    if hasattr(catalog, "colnames"):
        h.update(f"table:{len(catalog)}".encode())
        for name in catalog.colnames:
            column = catalog[name]
            values = np.asarray(column)
            if values.dtype.kind == "O":
                values = values.astype(str)
            h.update(f"{name}:{values.dtype.str}:{values.shape}".encode())
            h.update(np.ascontiguousarray(values).tobytes())
            h.update(np.ascontiguousarray(np.ma.getmaskarray(column)).tobytes())
        return h.hexdigest()
    h.update(f"file:{catalog}".encode())  # the path too: the dataset records it as provenance
    with open(catalog, "rb") as fh:  # catalogues are at most a few hundred MB: about a second
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_prepare_output(out: Path) -> bool:
    """True for a folder that `prepare` wrote: a dataset (its format attribute) or an unfinished run."""
    if _group_attrs(out).get("format") == DATASET_FORMAT:
        return True
    try:
        return "digest" in json.loads((out / STAGING / "inputs.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def _check_out_folder(out: Path, paths: list[str]) -> None:
    """ValueError when ``out`` may not be written: starting over deletes it, so it must be ours or empty.

    Refused: a folder that is or holds an input spectrum, a file, and a non-empty folder that is
    neither a galvae dataset nor an unfinished `prepare` run.
    """
    target = out.resolve()
    for folder in {os.path.dirname(os.path.abspath(p)) for p in paths}:
        resolved = Path(folder).resolve()
        if resolved == target or target in resolved.parents:
            raise ValueError(f"will not write the dataset into {out}: it holds input spectra ({folder}), "
                             "which starting over would delete; choose an output folder outside the inputs")
    if not out.exists():
        return
    if not out.is_dir():
        is_input = any(Path(p).resolve() == target for p in paths)
        raise ValueError(f"will not write the dataset to {out}: it is "
                         f"{'one of the input spectra' if is_input else 'a file'}, not a dataset folder")
    if not _is_prepare_output(out) and any(out.iterdir()):
        raise ValueError(f"will not write the dataset into {out}: the folder is not empty and is not a galvae "
                         f"dataset (no format attribute '{DATASET_FORMAT}', no {STAGING}/inputs.json), so "
                         "starting over would delete what it holds; choose a new or empty folder")


def prepare_dataset(spectra, out, catalog=None, config: PrepareConfig | None = None, *,
                    scheduler: str | None = None, cluster: str | None = None, workers: int | None = None,
                    progress: bool = True, keep_staging: bool = False) -> PrepareResult:
    """Turn SDSS spectrum files (a folder or a list) into ``out`` (a ``dataset.zarr``).

    ``catalog``: a GSWLC-2, MPA-JHU or mock catalogue (path, or an astropy Table of properties keyed by
    ``id``); without one every property is NaN. ``scheduler``: None starts a local Dask cluster with
    ``workers`` processes, an address joins a running scheduler, 'sync' runs in this process.
    ``cluster='slurm'`` starts workers through dask-jobqueue.
    """
    t0 = time.perf_counter()
    cfg = config or PrepareConfig()
    out = Path(out)
    if isinstance(spectra, (str, os.PathLike)) and Path(spectra).is_dir():
        paths = find_spectrum_files(spectra)
    else:
        paths = [str(p) for p in ([spectra] if isinstance(spectra, (str, os.PathLike)) else spectra)]
    if not paths:
        raise ValueError(f"no spectrum files in {spectra}")
    _check_out_folder(out, paths)
    digest = _inputs_digest(paths, cfg, catalog)

    if out.exists():
        done = _completed_attrs(out)
        if done and done.get("inputs_digest") == digest:
            log.info("%s is up to date", out)
            return PrepareResult(str(out), done["counts"]["files"], done["counts"]["kept"],
                                 done["counts"]["rejects_by_reason"], time.perf_counter() - t0)
        staging_manifest = out / STAGING / "inputs.json"
        if done or not staging_manifest.exists() or json.loads(staging_manifest.read_text())["digest"] != digest:
            shutil.rmtree(out)  # different inputs or config: start over (_check_out_folder: ours or empty)
    staging = out / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    write_text(staging / "inputs.json", json.dumps({"digest": digest, "n_files": len(paths)}))

    chunks = [paths[i:i + cfg.files_per_task] for i in range(0, len(paths), cfg.files_per_task)]
    client = make_client(scheduler, cluster, workers)
    try:
        log.info("cluster ready after %.1f s", time.perf_counter() - t0)
        tallies = run_tasks(client, stage_chunk, [(i, c, str(staging), cfg) for i, c in enumerate(chunks)],
                             "prepare: read+resample", progress)
        log.info("pass 1 done after %.1f s", time.perf_counter() - t0)
        counts = [0] * len(chunks)
        for t in tallies:
            counts[t["index"]] = t["n_kept"]
        counts = drop_duplicate_ids(staging, counts)
        n_rows = sum(counts)
        if n_rows == 0:
            raise ValueError(f"no spectrum of {len(paths)} passed the selection; see the rejects in {staging}")
        if n_rows == 1:
            # One spectrum has no variance to fit an eigenbasis on: its gaps could only be copied from itself.
            raise ValueError(f"only 1 spectrum of {len(paths)} passed the selection; the gappy-PCA fill needs "
                             f"at least 2 spectra; see the rejects in {staging}")
        # On a worker, like every heavy step: workers run single-threaded BLAS, which is many times
        # faster here than an oversubscribed multi-threaded BLAS in the driver.
        run_tasks(client, fit_basis, [(staging, counts, cfg)], "prepare: gappy-PCA basis", progress)
        log.info("basis fitted after %.1f s", time.perf_counter() - t0)
        _create_arrays(out, n_rows, cfg)
        n_blocks = -(-n_rows // cfg.rows_per_chunk)
        run_tasks(client, fill_block, [(b, str(out), counts, cfg) for b in range(n_blocks)],
                   "prepare: gappy-PCA fill", progress)
    finally:
        close_client(client)
    log.info("pass 2 done after %.1f s", time.perf_counter() - t0)
    result = _finalise(out, paths, counts, catalog, cfg, digest)
    if not keep_staging:
        shutil.rmtree(staging, ignore_errors=True)
    result.seconds = time.perf_counter() - t0
    return result


def _group_attrs(out: Path) -> dict:
    """The attributes of the Zarr group at ``out``; {} where there is none (yet)."""
    import zarr

    try:
        return zarr.open_group(str(out), mode="r").attrs.asdict()
    except Exception:  # not a Zarr group (yet): an unfinished first pass, or not ours
        return {}


def _completed_attrs(out: Path) -> dict | None:
    attrs = _group_attrs(out)
    return attrs if attrs.get("complete") else None


def _create_arrays(out: Path, n_rows: int, cfg: PrepareConfig) -> None:
    import zarr

    root = zarr.open_group(str(out), mode="a")
    if "flux" in root and root["flux"].shape == (n_rows, cfg.n_pix):
        return  # resuming pass 2
    chunks = (cfg.rows_per_chunk, cfg.n_pix)
    for name, dtype in (("flux", "float32"), ("ivar", "float32"), ("filled", "bool")):
        root.create_array(name, shape=(n_rows, cfg.n_pix), chunks=chunks, dtype=dtype, overwrite=True,
                          **ds.checksummed())


def _gather_staged(staging: Path, n_chunks: int) -> tuple[dict, np.ndarray]:
    keys = ("id", "specobjid", "path", "z", "vdisp_sdss", "sn_median", "norm")
    parts = {k: [] for k in keys}
    rejects = []
    for c in range(n_chunks):
        with np.load(chunk_path(staging, c), allow_pickle=False) as z:
            for k in keys:
                parts[k].append(z[k])
            rejects.append(z["rejects"])
    return {k: np.concatenate(v) for k, v in parts.items()}, np.concatenate(rejects).reshape(-1, 3)


def _properties(ids: np.ndarray, meta: dict, catalog):
    """The props table aligned to ``ids``: the catalogue's properties where matched, NaN elsewhere."""
    from astropy.table import Table

    props = Table({"id": ids.astype(str), "specobjid": meta["specobjid"].astype(str), "z": meta["z"],
                   "vdisp": np.where(meta["vdisp_sdss"] > 0, meta["vdisp_sdss"], np.nan),
                   "sn_median": meta["sn_median"]})
    stats = {"matched": 0, "unmatched": len(ids)}
    if catalog is None:
        return props, stats
    from ..sources.catalogs import load_properties, match_properties

    table = catalog if hasattr(catalog, "colnames") else load_properties(catalog)
    matched, stats = match_properties(ids, table)
    for name in matched.colnames:
        if name in ("id", "plate", "mjd", "fiber") or matched[name].dtype.kind not in "fiu":
            continue
        values = _stored_property(name, matched[name])
        if name in props.colnames:
            if (values != "").any() if values.dtype.kind == "U" else np.isfinite(values).any():
                props[f"{name}_catalog"] = values
        else:
            props[name] = values
    return props, stats.as_dict()


def _stored_property(name: str, column) -> np.ndarray:
    """A matched catalogue column as props stores it: exact values, unknown where unmatched or masked.

    Floats and integers become float64 with NaN where unknown (exact for integers up to 2**53: flags,
    counts). Identifiers (a name ending in "id": objid, glxid, …) and any integer column beyond 2**53
    become decimal strings, "" where unknown, as ``specobjid`` is: float64 would round them.
    """
    unknown = np.ma.getmaskarray(column)
    values = np.asarray(column)
    if values.dtype.kind == "f":
        return np.where(unknown, np.nan, values).astype(np.float64)
    exact_in_float = values.size == 0 or -2**53 <= int(values.min()) and int(values.max()) <= 2**53
    if name.lower().endswith("id") or not exact_in_float:
        return np.where(unknown, "", values.astype(str))
    return np.where(unknown, np.nan, values.astype(np.float64))


def _write_column(group, name: str, values: np.ndarray) -> None:
    """A 1-D column; text as Zarr's variable-length UTF-8 strings (a specified v3 data type)."""
    if values.dtype.kind in "USO":
        arr = group.create_array(name, shape=values.shape, dtype=str, overwrite=True, **ds.checksummed())
        if values.size:
            arr[:] = values.astype(str).astype(object)
    else:
        group.create_array(name, data=values, overwrite=True, **ds.checksummed())


def reason_category(reason: str) -> str:
    """The part of a reject reason before its details ('truncated: HDU 2 needs …' → 'truncated')."""
    head = reason.split(":", 1)[0]
    return head.split(" (", 1)[0].strip()


FILL_BASIS = "fill_basis"  # group of the dataset: the eigenbasis and mean its bad pixels were filled with


def _store_fill_basis(root, staging: Path) -> None:
    """Keep the gappy-PCA basis in the dataset: a model's user fills new spectra's gaps with the same one."""
    with np.load(staging / "basis.npz", allow_pickle=False) as z:
        g = root.require_group(FILL_BASIS)
        g.create_array("basis", data=z["basis"], overwrite=True, **ds.checksummed())
        g.create_array("mean", data=z["mean"], overwrite=True, **ds.checksummed())


def _finalise(out: Path, paths, counts, catalog, cfg: PrepareConfig, digest: str) -> PrepareResult:
    import zarr

    from .. import __version__

    staging = out / STAGING
    meta, rejects = _gather_staged(staging, len(counts))
    root = zarr.open_group(str(out), mode="a")
    grid = log_grid(cfg.n_pix, cfg.wave_min, cfg.wave_max)
    root.create_array("wave", data=grid, overwrite=True, **ds.checksummed())
    root.create_array("norm", data=meta["norm"].astype(np.float32), overwrite=True, **ds.checksummed())
    _store_fill_basis(root, staging)
    split = ds.split_of(meta["id"], cfg.split_fractions)
    root.create_array("split", data=split, overwrite=True, **ds.checksummed()).attrs["codes"] = list(ds.SPLIT_CODES)
    props, match_stats = _properties(meta["id"], meta, catalog)
    g = root.require_group("props")
    for name in props.colnames:
        _write_column(g, name, np.asarray(props[name]))
    r = root.require_group("rejects")
    for k, name in enumerate(("path", "id", "reason")):
        _write_column(r, name, rejects[:, k] if len(rejects) else np.array([], dtype=str))
    by_reason: dict = {}
    for reason in rejects[:, 2]:
        key = reason_category(reason)
        by_reason[key] = by_reason.get(key, 0) + 1
    with np.load(staging / "basis.npz", allow_pickle=False) as z:
        unobserved = unobserved_ranges(z["basis"], z["mean"])
        fill = {"basis_fitted_on": str(z["fitted_on"]), "basis_spectra": int(z["n_spectra"]),
                "n_components": int(z["basis"].shape[0]), "min_column_coverage": cfg.min_column_coverage,
                "unobserved_columns": unobserved,
                "unobserved_wave": [[float(grid[a]), float(grid[b - 1])] for a, b in unobserved],
                "unobserved_value": f"median of each spectrum's {EDGE_PIXELS} values next to the columns"}
    import numpy, astropy

    root.attrs.update({
        "fill": fill,
        "format": DATASET_FORMAT, "format_version": FORMAT_VERSION, "source": "sdss-spec-files",
        "config": json.loads(json.dumps(asdict(cfg))), "inputs_digest": digest,
        "versions": {"galvae": __version__, "numpy": numpy.__version__, "astropy": astropy.__version__,
                     "zarr": zarr.__version__},
        "catalog": None if catalog is None else str(catalog) if not hasattr(catalog, "colnames") else "table",
        "catalog_match": match_stats,
        "counts": {"files": len(paths), "kept": int(sum(counts)), "rejected": int(len(rejects)),
                   "rejects_by_reason": by_reason,
                   "split": {n: int((split == k).sum()) for k, n in enumerate(ds.SPLIT_CODES)}},
        "props_columns": list(props.colnames),
        "complete": True,
    })
    return PrepareResult(str(out), len(paths), int(sum(counts)), by_reason)
