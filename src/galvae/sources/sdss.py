"""Read SDSS spectrum files into observed spectra.

Both file kinds of DR8+ are read, plain or gzipped (``.fits.gz``): full ``spec`` files (COADD, metadata, SPZLINE, per-exposure HDUs)
and ``spec-lite`` files (without the exposures); SDSS-I/II keeps its metadata in HDU ``SPECOBJ``,
BOSS/eBOSS in ``SPALL``. Only the COADD and metadata HDUs are ever read (see :mod:`.fitsbin` for why
this does not go through ``astropy.io.fits``; ``benchmarks/bench_reader.py`` measures the difference).

A file that cannot give a spectrum raises :class:`SpectrumReadError` whose message is the reason;
:func:`read_spectra` turns those into a rejects list and never stops a batch.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple

import zlib

import numpy as np

from . import fitsbin

log = logging.getLogger(__name__)

COADD_COLUMNS = ("flux", "loglam", "ivar", "and_mask")
METADATA_HDUS = ("SPECOBJ", "SPALL")


class SpectrumReadError(ValueError):
    """A file did not yield a spectrum. ``str(exc)`` is the reason, ``exc.path`` the file."""

    def __init__(self, path, reason: str):
        super().__init__(reason)
        self.path = str(path)
        self.reason = reason


class Reject(NamedTuple):
    """A file left out of a batch, and why."""

    path: str
    reason: str


@dataclass
class ObservedSpectrum:
    """One galaxy's spectrum as observed (docs/design.md §2).

    ``wave`` is the vacuum observed-frame wavelength in Å, ``flux`` in 1e-17 erg s⁻¹ cm⁻² Å⁻¹,
    ``ivar`` its inverse variance, ``and_mask`` the SDSS pixel mask (bits of SPPIXMASK).
    """

    id: str
    plate: int
    mjd: int
    fiber: int
    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    and_mask: np.ndarray
    z: float
    z_err: float
    zwarning: int
    spec_class: str
    subclass: str = ""
    vdisp: float = float("nan")
    sn_median: float = float("nan")
    specobjid: str = ""
    run2d: str = ""
    path: str = ""
    meta_hdu: str = field(default="SPECOBJ", repr=False)

    @property
    def n_good(self) -> int:
        """Pixels with positive, finite inverse variance and finite flux."""
        return int(np.count_nonzero((self.ivar > 0) & np.isfinite(self.ivar) & np.isfinite(self.flux)))


def spectrum_id(plate: int, mjd: int, fiber: int) -> str:
    """The ``PLATE-MJD-FIBER`` identifier used across galvae (zero-padded as in SDSS file names)."""
    return f"{int(plate):04d}-{int(mjd):05d}-{int(fiber):04d}"


def _scalar(table, header, name, default=None, *, required=True, hdu="SPECOBJ"):
    try:
        value = fitsbin.column(table, header, name)[0]
    except KeyError:
        if required:
            raise KeyError(f"missing column {name} in {hdu}") from None
        return default
    return value.item() if hasattr(value, "item") else value


def read_spectrum(path: str | os.PathLike) -> ObservedSpectrum:
    """Read one SDSS spec or spec-lite file.

    Raises :class:`SpectrumReadError` naming the reason: not FITS, truncated or corrupt, no COADD or
    metadata HDU (not an SDSS spectrum file), a missing column, or wavelengths that are not finite and
    strictly increasing.
    """
    try:
        with _open_fits(path) as fh:
            hdus = fitsbin.scan_hdus(fh, wanted=("COADD", frozenset(METADATA_HDUS)))
            by_name = {h.name: h for h in hdus}
            coadd_hdu = by_name.get("COADD")
            if coadd_hdu is None:
                raise SpectrumReadError(path, "no COADD HDU: not an SDSS spectrum file")
            meta_name = next((n for n in METADATA_HDUS if n in by_name), None)
            if meta_name is None:
                raise SpectrumReadError(path, "no SPECOBJ or SPALL metadata HDU: not an SDSS spectrum file")
            meta_hdu = by_name[meta_name]
            coadd = fitsbin.read_table(fh, coadd_hdu)
            meta = fitsbin.read_table(fh, meta_hdu)
    except SpectrumReadError:
        raise
    except fitsbin.FitsFormatError as exc:
        raise SpectrumReadError(path, str(exc)) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise SpectrumReadError(path, f"corrupt gzip file: {exc}") from None
    except OSError as exc:
        raise SpectrumReadError(path, f"cannot read file: {exc.strerror or exc}") from None

    try:
        arrays = {c: fitsbin.column(coadd, coadd_hdu.header, c) for c in COADD_COLUMNS}
    except KeyError as exc:
        raise SpectrumReadError(path, f"missing column {exc.args[0]} in COADD") from None
    if len(meta) < 1:
        raise SpectrumReadError(path, f"{meta_name} HDU has no rows")
    try:
        h = meta_hdu.header
        plate = int(_scalar(meta, h, "PLATE", hdu=meta_name))
        mjd = int(_scalar(meta, h, "MJD", hdu=meta_name))
        fiber = int(_scalar(meta, h, "FIBERID", hdu=meta_name))
        z = float(_scalar(meta, h, "Z", hdu=meta_name))
        z_err = float(_scalar(meta, h, "Z_ERR", np.nan, required=False))
        zwarning = int(_scalar(meta, h, "ZWARNING", hdu=meta_name))
        spec_class = str(_scalar(meta, h, "CLASS", hdu=meta_name)).strip()
        subclass = str(_scalar(meta, h, "SUBCLASS", "", required=False)).strip()
        vdisp = float(_scalar(meta, h, "VDISP", np.nan, required=False))
        sn_median = float(_scalar(meta, h, "SN_MEDIAN_ALL", np.nan, required=False))
        specobjid = str(_scalar(meta, h, "SPECOBJID", "", required=False)).strip()
        run2d = str(_scalar(meta, h, "RUN2D", "", required=False)).strip()
    except KeyError as exc:
        raise SpectrumReadError(path, str(exc.args[0])) from None
    except (TypeError, ValueError) as exc:
        raise SpectrumReadError(path, f"invalid metadata value in {meta_name}: {exc}") from None

    loglam = arrays["loglam"].astype(np.float64)
    if loglam.size == 0:
        raise SpectrumReadError(path, "COADD has no pixels")
    problem = wavelength_problem(loglam)
    if problem:
        raise SpectrumReadError(path, problem)
    return ObservedSpectrum(
        id=spectrum_id(plate, mjd, fiber), plate=plate, mjd=mjd, fiber=fiber,
        wave=10.0 ** loglam,
        flux=arrays["flux"].astype(np.float32, copy=False),
        ivar=arrays["ivar"].astype(np.float32, copy=False),
        and_mask=arrays["and_mask"].astype(np.int32, copy=False),
        z=z, z_err=z_err, zwarning=zwarning, spec_class=spec_class, subclass=subclass,
        vdisp=vdisp, sn_median=sn_median, specobjid=specobjid, run2d=run2d,
        path=str(path), meta_hdu=meta_name,
    )


def _open_fits(path):
    """A seekable binary file: the file itself, or a gzipped file decompressed into memory.

    Gzip is recognised by its magic bytes, not by the name: a ``.fits.gz`` that is not compressed
    reads as the FITS it is. Spectra are at most a few MB, so decompressing whole is cheap and keeps
    the reader's seeks plain.
    """
    fh = open(path, "rb")
    magic = fh.read(2)
    fh.seek(0)
    if magic != b"\x1f\x8b":
        return fh
    with fh, gzip.GzipFile(fileobj=fh) as gz:
        return io.BytesIO(gz.read())


def wavelength_problem(loglam: np.ndarray) -> str | None:
    """Why a COADD ``loglam`` column cannot be a wavelength grid (None if it can).

    Rebinning needs finite, strictly increasing wavelengths; checked here so that one corrupt file is
    a reject with its name, not an error that stops the whole chunk it was read with.
    """
    finite = np.isfinite(loglam)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        return (f"non-finite wavelength: loglam is NaN or infinite at {bad.size} of {loglam.size} pixels "
                f"(first at pixel {bad[0]})")
    steps = np.diff(loglam)
    if (steps <= 0).any():
        bad = np.flatnonzero(steps <= 0)
        return (f"wavelengths not increasing: loglam does not increase at {bad.size} of {loglam.size} pixels "
                f"(first at pixel {bad[0] + 1})")
    return None


def usability_problem(spec: ObservedSpectrum) -> str | None:
    """Why a readable spectrum is useless for training (None if it is usable)."""
    if spec.n_good == 0:
        return f"no good pixel: ivar = 0 or non-finite on all {spec.flux.size} pixels"
    if not np.isfinite(spec.z):
        return "no redshift: Z is not finite"
    return None


def _read_one(path: str, require_good_pixels: bool) -> ObservedSpectrum | Reject:
    try:
        spec = read_spectrum(path)
    except SpectrumReadError as exc:
        return Reject(exc.path, exc.reason)
    except Exception as exc:  # a bug or an exotic file must not stop the batch; the reason says which
        return Reject(str(path), f"unexpected error: {type(exc).__name__}: {exc}")
    if require_good_pixels:
        problem = usability_problem(spec)
        if problem:
            return Reject(str(path), problem)
    return spec


def _read_chunk(paths: list[str], require_good_pixels: bool) -> list:
    return [_read_one(p, require_good_pixels) for p in paths]


SPECTRUM_SUFFIXES = (".fits", ".fits.gz")


def find_spectrum_files(folder: str | os.PathLike) -> list[str]:
    """Every ``*.fits`` and ``*.fits.gz`` file under ``folder`` (recursively, any name), sorted.

    Nothing is judged by its name: a galaxy's spectrum saved as ``NGC 4030.fits`` is as good as
    ``spec-0266-51602-0001.fits``, and a FITS file that is not a spectrum (a catalogue, an image) is
    read and becomes a reject with its reason, so the tally counts every file that was there.
    Suffixes match in any case (``.FITS``); folders are followed but links to folders are not (no
    cycles).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    found = []
    for root, _dirs, files in os.walk(folder):
        found += [os.path.join(root, f) for f in files if f.lower().endswith(SPECTRUM_SUFFIXES)]
    return sorted(found)


def expand_spectrum_paths(items) -> list[str]:
    """Files and folders (one path or a list) → files: each folder replaced by :func:`find_spectrum_files`.

    A path that does not exist stays in the list, so that reading it gives a reject with its reason.
    """
    items = [items] if isinstance(items, (str, os.PathLike)) else list(items)
    paths: list[str] = []
    for item in items:
        paths.extend(find_spectrum_files(item) if Path(item).is_dir() else [str(item)])
    return paths


def read_spectra(
    paths: Iterable[str | os.PathLike],
    workers: int | None = 1,
    chunk_size: int = 256,
    require_good_pixels: bool = True,
    progress: bool = False,
) -> tuple[list[ObservedSpectrum], list[Reject]]:
    """Read many files; return ``(spectra, rejects)`` in input order.

    ``workers`` > 1 reads chunks of files in worker processes (``None``: one per core). With
    ``require_good_pixels`` a readable file whose pixels are all bad is a reject, not a spectrum.
    """
    from .._progress import tqdm

    paths = [str(p) for p in paths]
    n_workers = os.cpu_count() or 1 if workers is None else max(1, int(workers))
    chunks = [paths[i:i + chunk_size] for i in range(0, len(paths), chunk_size)]
    bar = tqdm(total=len(paths), unit="file", desc="read", disable=not progress)
    results: list = []
    if n_workers == 1 or len(chunks) <= 1:
        for chunk in chunks:
            results.extend(_read_chunk(chunk, require_good_pixels))
            bar.update(len(chunk))
    else:
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            for out in pool.map(_read_chunk, chunks, [require_good_pixels] * len(chunks)):
                results.extend(out)
                bar.update(len(out))
    bar.close()
    spectra = [r for r in results if isinstance(r, ObservedSpectrum)]
    rejects = [r for r in results if isinstance(r, Reject)]
    for r in rejects:
        log.info("rejected %s: %s", r.path, r.reason)
    return spectra, rejects
