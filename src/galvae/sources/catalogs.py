"""Galaxy-property catalogues, read and joined on the spectrum key (plate, mjd, fiber).

Readers return an :class:`astropy.table.Table` with int64 ``plate``, ``mjd``, ``fiber``, a str ``id``
formatted ``PPPP-MMMMM-FFFF`` (``f"{plate:04d}-{mjd:05d}-{fiber:04d}"``) and the catalogue's
properties in lowercase, float64, NaN where missing or flagged:

- :func:`read_gswlc`    GSWLC-2 text tables (Salim et al. 2016, 2018): stellar mass, SFR, attenuation
- :func:`read_mpajhu`   MPA-JHU DR7 ``gal_info`` + ``gal_fiboh``: gas-phase metallicity, velocity dispersion
- :func:`read_specobj`  SDSS ``specObj`` / ``spAll``: redshift, class, zwarning, run2d, survey
- :func:`read_catalog`  any of the above recognised by content (used by ``galvae download --catalog``)

Join:

- :func:`catalog_properties`  one row per spectrum key from any subset of the three catalogues
- :func:`match_properties`    those properties aligned to a list of spectrum ids

Units: ``logmstar`` log10(M*/Msun); ``logsfr`` log10(SFR / Msun yr^-1); ``logssfr`` log10(sSFR / yr^-1);
``a_fuv``, ``a_b``, ``a_v`` mag; ``vdisp`` km/s; ``metallicity`` 12 + log10(O/H); ``ra``, ``dec`` deg;
``e_*`` the 1-sigma error of the column it names, same unit.

Bad input never stops a read (docs/design.md §6): a row that cannot be used is skipped and listed in
``table.meta['rejects']`` as ``(line_or_row_number, reason)`` (1-based), counted in
``table.meta['n_rejected']``.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from astropy.io import fits
from astropy.table import MaskedColumn, Table

log = logging.getLogger(__name__)

__all__ = [
    "GSWLC_COLUMNS",
    "GSWLC_INT_COLUMNS",
    "PROPERTY_COLUMNS",
    "JoinStats",
    "MatchStats",
    "catalog_properties",
    "format_ids",
    "join_catalog_files",
    "match_properties",
    "parse_ids",
    "read_catalog",
    "read_gswlc",
    "read_mpajhu",
    "read_specobj",
]

# --------------------------------------------------------------------------------------------------
# Column definitions
# --------------------------------------------------------------------------------------------------

#: The 24 whitespace-separated columns of a GSWLC-2 ``.dat`` file, in file order (no header).
GSWLC_COLUMNS = (
    "objid", "glxid", "plate", "mjd", "fiber", "ra", "dec", "z", "chi2",
    "logmstar", "e_logmstar", "logsfr", "e_logsfr", "a_fuv", "e_a_fuv", "a_b", "e_a_b", "a_v", "e_a_v",
    "flag_sed", "uv_survey", "flag_uv", "flag_midir", "flag_mgs",
)  # fmt: skip
GSWLC_INT_COLUMNS = frozenset(
    {"objid", "glxid", "plate", "mjd", "fiber", "flag_sed", "uv_survey", "flag_uv", "flag_midir", "flag_mgs"}
)
#: Columns that come from the SED fit: NaN when ``flag_sed != 0``.
_GSWLC_FIT_COLUMNS = (
    "logmstar", "e_logmstar", "logsfr", "e_logsfr", "a_fuv", "e_a_fuv", "a_b", "e_a_b", "a_v", "e_a_v",
)  # fmt: skip
#: GSWLC missing-value sentinel: −99 (also written −99.0, −99.9, …); any value at or below it.
_GSWLC_SENTINEL = -99.0

#: Property columns of :func:`catalog_properties` (all float64, NaN where unknown).
PROPERTY_COLUMNS = (
    "z", "logmstar", "e_logmstar", "logsfr", "e_logsfr", "logssfr", "metallicity", "e_metallicity",
    "a_fuv", "e_a_fuv", "a_b", "e_a_b", "a_v", "e_a_v", "vdisp", "e_vdisp",
)  # fmt: skip
_GSWLC_PROPERTIES = ("z",) + _GSWLC_FIT_COLUMNS

_DESCRIPTIONS = {
    "id": "spectrum id PLATE-MJD-FIBER",
    "z": "redshift",
    "logmstar": "log10 stellar mass / Msun",
    "logsfr": "log10 SFR / (Msun / yr)",
    "logssfr": "log10 specific SFR / (1 / yr) = logsfr - logmstar",
    "metallicity": "gas-phase 12 + log10(O/H), median of the MPA-JHU likelihood",
    "a_fuv": "FUV attenuation, mag",
    "a_b": "B-band attenuation, mag",
    "a_v": "V-band attenuation, mag",
    "vdisp": "stellar velocity dispersion, km/s",
    "ra": "right ascension, deg",
    "dec": "declination, deg",
}

# specObj / spAll column (upper case) -> output name; output in this order, whichever exist.
_SPECOBJ_COLUMNS = {
    "SPECOBJID": "specobjid", "CLASS": "class", "SUBCLASS": "subclass", "Z": "z", "Z_ERR": "z_err",
    "ZWARNING": "zwarning", "VDISP": "vdisp", "VDISP_ERR": "e_vdisp", "RUN2D": "run2d",
    "SURVEY": "survey", "SN_MEDIAN_ALL": "sn_median_all",
}  # fmt: skip

# --------------------------------------------------------------------------------------------------
# Spectrum keys and ids
# --------------------------------------------------------------------------------------------------

# A key packs (plate, mjd, fiber) into one int64 that sorts like the tuple.
_PLATE_LIMIT, _MJD_LIMIT, _FIBER_LIMIT = 10**9, 10**5, 10**4
_ID_PATTERN = re.compile(r"\s*(\d+)-(\d+)-(\d+)\s*")


def _valid_key_mask(plate: np.ndarray, mjd: np.ndarray, fiber: np.ndarray) -> np.ndarray:
    """True where (plate, mjd, fiber) is a usable SDSS key (all positive and within the id widths)."""
    return (
        (plate > 0) & (plate < _PLATE_LIMIT) & (mjd > 0) & (mjd < _MJD_LIMIT) & (fiber > 0) & (fiber < _FIBER_LIMIT)
    )


def _key_codes(plate, mjd, fiber) -> np.ndarray:
    """One int64 per (plate, mjd, fiber), ordered like the tuple; −1 where the key is not valid."""
    plate, mjd, fiber = (np.asarray(a, dtype=np.int64) for a in (plate, mjd, fiber))
    codes = (plate * _MJD_LIMIT + mjd) * _FIBER_LIMIT + fiber
    return np.where(_valid_key_mask(plate, mjd, fiber), codes, -1)


def _keys_to_parts(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(plate, mjd, fiber) int64 arrays from valid key codes."""
    return codes // (_MJD_LIMIT * _FIBER_LIMIT), (codes // _FIBER_LIMIT) % _MJD_LIMIT, codes % _FIBER_LIMIT


def _digit_codes(values: np.ndarray, width: int) -> np.ndarray:
    """(N, width) uint32 character codes of zero-padded decimal ``values`` (non-negative, fit width)."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] // powers) % 10 + ord("0")).astype(np.uint32)


def _n_digits(values: np.ndarray) -> np.ndarray:
    """Number of decimal digits of each non-negative int64 (1 for 0)."""
    n = np.ones(values.shape, dtype=np.int64)
    for k in range(1, 19):
        n += values >= 10**k
    return n


def format_ids(plate, mjd, fiber) -> np.ndarray:
    """Spectrum ids ``f"{plate:04d}-{mjd:05d}-{fiber:04d}"`` as a str array (vectorised).

    Raises ``ValueError`` when any (plate, mjd, fiber) is not a valid positive key.
    """
    plate, mjd, fiber = (np.atleast_1d(np.asarray(a, dtype=np.int64)) for a in (plate, mjd, fiber))
    if not np.all(_valid_key_mask(plate, mjd, fiber)):
        raise ValueError("format_ids: plate, mjd and fiber must be positive and below 1e9, 1e5, 1e4")
    plate_width = np.maximum(_n_digits(plate), 4)
    out = np.zeros(plate.shape, dtype=f"U{int(plate_width.max(initial=4)) + 11}")
    for width in np.unique(plate_width):
        rows = plate_width == width
        n_chars = int(width) + 11
        chars = np.empty((int(rows.sum()), n_chars), dtype=np.uint32)
        chars[:, :width] = _digit_codes(plate[rows], int(width))
        chars[:, width] = chars[:, width + 6] = ord("-")
        chars[:, width + 1 : width + 6] = _digit_codes(mjd[rows], 5)
        chars[:, width + 7 :] = _digit_codes(fiber[rows], 4)
        out[rows] = np.ascontiguousarray(chars).view(f"U{n_chars}").ravel()
    return out


def _parse_fixed_layout(chars: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised parse of ids of one ``length`` laid out ``P…P-MMMMM-FFFF``: (parts (n, 3), ok (n,))."""
    body = chars[:, :length].astype(np.int64) - ord("0")
    dashes = [length - 11, length - 5]
    is_digit = (body >= 0) & (body <= 9)
    is_digit[:, dashes] = True
    ok = is_digit.all(axis=1) & (chars[:, dashes] == ord("-")).all(axis=1) & (length >= 12)
    body = np.where((body >= 0) & (body <= 9), body, 0)
    spans = [(0, length - 11), (length - 10, length - 5), (length - 4, length)]
    parts = np.stack([body[:, a:b] @ (10 ** np.arange(b - a - 1, -1, -1, dtype=np.int64)) for a, b in spans], 1)
    return parts, ok


def parse_ids(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(plate, mjd, fiber) int64 arrays from ``PLATE-MJD-FIBER`` strings; −1 where an id does not parse.

    Vectorised for ids in the canonical ``PPPP-MMMMM-FFFF`` layout (any plate width); other spellings
    (e.g. unpadded ``266-51630-1``, surrounding blanks) go through a per-id regular expression.
    """
    arr = np.ascontiguousarray(_as_str_array(ids).ravel())
    n = arr.size
    parts = np.full((n, 3), -1, dtype=np.int64)
    if n == 0 or arr.dtype.itemsize == 0:
        return parts[:, 0], parts[:, 1], parts[:, 2]
    width = arr.dtype.itemsize // 4
    chars = arr.view(np.uint32).reshape(n, width)
    lengths = (chars != 0).sum(axis=1)
    parsed = np.zeros(n, dtype=bool)
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        if length < 12:
            continue
        got, ok = _parse_fixed_layout(chars[rows], int(length))
        parts[rows[ok]] = got[ok]
        parsed[rows[ok]] = True
    for i in np.flatnonzero(~parsed):
        match = _ID_PATTERN.fullmatch(str(arr[i]))
        if match:
            parts[i] = [int(g) for g in match.groups()]
    bad = ~_valid_key_mask(parts[:, 0], parts[:, 1], parts[:, 2])
    parts[bad] = -1
    return parts[:, 0], parts[:, 1], parts[:, 2]


def _bad_key_reason(plate, mjd, fiber) -> str:
    """The reject reason for an unusable (plate, mjd, fiber)."""
    return f"missing or invalid plate/mjd/fiber ({plate}, {mjd}, {fiber})"


def _table_keys(table: Table) -> np.ndarray:
    """Key codes of a table's rows, from ``plate``/``mjd``/``fiber`` or else from ``id``; −1 if unusable."""
    names = set(table.colnames)
    if {"plate", "mjd", "fiber"} <= names:
        return _key_codes(table["plate"], table["mjd"], table["fiber"])
    if "id" in names:
        return _key_codes(*parse_ids(np.asarray(table["id"])))
    raise ValueError(f"table has neither plate/mjd/fiber nor id columns (columns: {table.colnames})")


# --------------------------------------------------------------------------------------------------
# Small value helpers
# --------------------------------------------------------------------------------------------------


def _float_values(values, invalid_at_or_below: float | None = None) -> np.ndarray:
    """float64 copy of ``values`` with non-finite values, and values ≤ the threshold, set to NaN."""
    out = np.array(values, dtype=np.float64, copy=True)
    bad = ~np.isfinite(out)
    if invalid_at_or_below is not None:
        bad |= out <= invalid_at_or_below
    out[bad] = np.nan
    return out


def _stripped_strings(values) -> np.ndarray:
    """str array with FITS padding (blanks, NULs) stripped from both ends."""
    return np.char.strip(_as_str_array(values))


def _as_str_array(values) -> np.ndarray:
    """A numpy str array; bytes are decoded as ASCII (undecodable bytes replaced)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "S":
        try:
            return arr.astype(f"U{max(arr.dtype.itemsize, 1)}")  # fast C cast for ASCII
        except UnicodeDecodeError:
            return np.char.decode(arr, "ascii", "replace")
    return arr if arr.dtype.kind == "U" else arr.astype(str)


def _column_or_nan(table: Table, name: str) -> np.ndarray:
    """A table column as float64, or all-NaN when the table lacks it."""
    if name in table.colnames:
        return _float_values(table[name])
    return np.full(len(table), np.nan)


def _describe(table: Table) -> Table:
    """Attach the known column descriptions (units) to ``table``; returns it."""
    for name in table.colnames:
        base = name[2:] if name.startswith("e_") else name
        if base in _DESCRIPTIONS:
            table[name].description = ("1-sigma error of " if name != base else "") + _DESCRIPTIONS[base]
    return table


def _key_columns(plate: np.ndarray, mjd: np.ndarray, fiber: np.ndarray) -> dict[str, np.ndarray]:
    """The leading ``id``, ``plate``, ``mjd``, ``fiber`` columns (valid keys only)."""
    plate, mjd, fiber = (np.asarray(a, dtype=np.int64) for a in (plate, mjd, fiber))
    return {"id": format_ids(plate, mjd, fiber), "plate": plate, "mjd": mjd, "fiber": fiber}


def _log_rejects(source: str, rejects: list[tuple[int, str]], what: str = "line") -> None:
    """Warn once about skipped rows, showing the first few."""
    if rejects:
        head = "; ".join(f"{what} {n}: {reason}" for n, reason in rejects[:3])
        more = ", …" if len(rejects) > 3 else ""
        log.warning("%s: skipped %d unusable rows (%s%s)", source, len(rejects), head, more)


# --------------------------------------------------------------------------------------------------
# GSWLC-2
# --------------------------------------------------------------------------------------------------

_GSWLC_DTYPE = np.dtype([(n, np.int64 if n in GSWLC_INT_COLUMNS else np.float64) for n in GSWLC_COLUMNS])
_GSWLC_CHUNK_LINES = 20_000


def _read_text(path: Path) -> str:
    """Whole file as text (gzip-compressed files are decompressed); bytes map 1:1 to characters."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    with (gzip.open if gzipped else open)(path, "rb") as f:
        return f.read().decode("latin-1")


def _loadtxt_gswlc(source) -> np.ndarray | None:
    """Structured array from GSWLC text via numpy's C parser, or None if any line does not parse."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            return np.loadtxt(source, dtype=_GSWLC_DTYPE, comments="#", ndmin=1)
    except ValueError:
        return None


def _to_int64(token: str) -> int:
    """An int64 from a token such as ``123`` or ``123.0``; ValueError otherwise."""
    try:
        value = int(token)
    except ValueError:
        as_float = float(token)
        if not as_float.is_integer():
            raise
        value = int(as_float)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{token} is outside the int64 range")
    return value


def _parse_gswlc_line(fields: list[str]) -> tuple | str:
    """The row tuple of one split GSWLC line, or the reason it is unusable."""
    if len(fields) != len(GSWLC_COLUMNS):
        return f"expected {len(GSWLC_COLUMNS)} fields, found {len(fields)}"
    values = []
    for name, token in zip(GSWLC_COLUMNS, fields):
        try:
            values.append(_to_int64(token) if name in GSWLC_INT_COLUMNS else float(token))
        except ValueError:
            return f"column {name}: cannot read {token!r} as a number"
    return tuple(values)


def _parse_gswlc_lines(lines: list[str], first_line: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Line-by-line parse: (rows, their 1-based line numbers, rejects as (line, reason))."""
    rows, numbers, rejects = [], [], []
    for number, line in enumerate(lines, start=first_line):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        parsed = _parse_gswlc_line(fields)
        if isinstance(parsed, str):
            rejects.append((number, parsed))
        else:
            rows.append(parsed)
            numbers.append(number)
    return np.array(rows, dtype=_GSWLC_DTYPE), np.array(numbers, dtype=np.int64), rejects


def _data_line_numbers(lines: list[str], first_line: int = 1) -> np.ndarray:
    """1-based numbers of the lines that hold data (not blank, not only a ``#`` comment)."""
    return np.array(
        [n for n, line in enumerate(lines, start=first_line) if line.split("#", 1)[0].strip()], dtype=np.int64
    )


def _parse_gswlc_text(text: str) -> tuple[np.ndarray, np.ndarray | None, list]:
    """(rows, line numbers or None when every data line parsed, rejects) from GSWLC-2 text.

    Fast path: one ``np.loadtxt`` over the whole text. If that fails, the text is cut into chunks of
    lines; each chunk tries ``np.loadtxt`` again and only the chunks that fail are parsed line by line.
    """
    rows = _loadtxt_gswlc(io.StringIO(text))
    if rows is not None:
        return rows, None, []
    lines = text.splitlines()
    parts, numbers, rejects = [], [], []
    for start in range(0, len(lines), _GSWLC_CHUNK_LINES):
        chunk = lines[start : start + _GSWLC_CHUNK_LINES]
        block = _loadtxt_gswlc(chunk)
        if block is not None:
            block_numbers = _data_line_numbers(chunk, start + 1)
        else:
            block, block_numbers, block_rejects = _parse_gswlc_lines(chunk, start + 1)
            rejects.extend(block_rejects)
        parts.append(block)
        numbers.append(block_numbers)
    return np.concatenate(parts), np.concatenate(numbers), rejects


def _gswlc_table(rows: np.ndarray) -> Table:
    """The GSWLC output table from parsed rows with valid keys: sentinels → NaN, failed fits → NaN."""
    columns = _key_columns(rows["plate"], rows["mjd"], rows["fiber"])
    failed = rows["flag_sed"] != 0
    for name in GSWLC_COLUMNS:
        if name in columns:
            continue
        if name in GSWLC_INT_COLUMNS:
            columns[name] = np.array(rows[name], dtype=np.int64)
            continue
        values = _float_values(rows[name], invalid_at_or_below=_GSWLC_SENTINEL)
        if name in _GSWLC_FIT_COLUMNS:
            values[failed] = np.nan
        columns[name] = values
        if name == "e_logsfr":
            columns["logssfr"] = columns["logsfr"] - columns["logmstar"]
    return _describe(Table(columns))


def read_gswlc(path) -> Table:
    """Read a GSWLC-2 table (``GSWLC-X2.dat``, ``-M2``, ``-A2``, …; plain or gzip-compressed text).

    Returns every input column (see :data:`GSWLC_COLUMNS`; ``objid``, ``glxid`` and the flags int64,
    the rest float64) plus ``id`` and ``logssfr = logsfr − logmstar``. Float values ≤ −99 (the
    catalogue's missing-value sentinel) or non-finite become NaN. Where ``flag_sed != 0`` the SED fit
    failed: the row is kept but ``logmstar``, ``logsfr``, the attenuations and their errors are NaN.

    Unusable lines (wrong number of fields, non-numeric values, missing plate/mjd/fiber) are skipped;
    ``meta``: ``source``, ``n_rows``, ``n_flagged`` (failed fits), ``n_rejected``, ``rejects``
    ([(line number, reason)]). Raises ``ValueError`` when no line at all is usable.
    """
    path = Path(path)
    text = _read_text(path)
    rows, line_numbers, rejects = _parse_gswlc_text(text)
    valid = _valid_key_mask(rows["plate"], rows["mjd"], rows["fiber"])
    if not valid.all():
        if line_numbers is None:
            line_numbers = _data_line_numbers(text.splitlines())
        for number, row in zip(line_numbers[~valid], rows[~valid]):
            rejects.append((int(number), _bad_key_reason(row["plate"], row["mjd"], row["fiber"])))
        rejects.sort()
        rows = rows[valid]
    if len(rows) == 0 and rejects:
        raise ValueError(f"{path}: no usable GSWLC-2 row; first problem at line {rejects[0][0]}: {rejects[0][1]}")
    table = _gswlc_table(rows)
    n_flagged = int(np.count_nonzero(table["flag_sed"] != 0))
    table.meta.update(
        source=str(path), n_rows=len(table), n_flagged=n_flagged, n_rejected=len(rejects), rejects=rejects
    )
    _log_rejects(str(path), rejects)
    log.info("%s: %d GSWLC rows (%d failed SED fits, %d lines skipped)", path, len(table), n_flagged, len(rejects))
    return table


# --------------------------------------------------------------------------------------------------
# FITS helpers
# --------------------------------------------------------------------------------------------------


def _first_table_hdu(hdul: fits.HDUList, path) -> fits.BinTableHDU | fits.TableHDU:
    """The first table extension of an open FITS file; ValueError naming the file if there is none."""
    for hdu in hdul:
        if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
            return hdu
    raise ValueError(f"{path}: no table extension in this FITS file")


def _upper_names(hdu) -> dict[str, str]:
    """Upper-case column name → name as written, for case-insensitive look-ups."""
    return {name.upper(): name for name in hdu.columns.names}


def _require_columns(names: dict[str, str], required: Sequence[str], path, what: str) -> None:
    """ValueError naming the file and what is missing if any ``required`` column is absent."""
    missing = [c for c in required if c not in names]
    if missing:
        raise ValueError(f"{path}: not a {what} table, missing column(s) {', '.join(missing)}")


def _fits_column(hdu, name: str) -> np.ndarray:
    """One column of a table HDU; character columns as raw bytes (skips astropy's slow decoding)."""
    if hdu.columns[name].format.upper().endswith("A"):
        return np.asarray(hdu.data.view(np.ndarray)[name])
    return np.asarray(hdu.data[name])


def _fits_keys(data, names: dict[str, str], plate: str, mjd: str, fiber: str):
    """(plate, mjd, fiber) int64 arrays and the mask of valid keys."""
    parts = [np.array(data[names[c]], dtype=np.int64) for c in (plate, mjd, fiber)]
    return (*parts, _valid_key_mask(*parts))


def _row_rejects(valid: np.ndarray, plate, mjd, fiber) -> list[tuple[int, str]]:
    """[(1-based row number, reason)] for rows with an unusable key."""
    return [(int(i) + 1, _bad_key_reason(plate[i], mjd[i], fiber[i])) for i in np.flatnonzero(~valid)]


# --------------------------------------------------------------------------------------------------
# MPA-JHU DR7
# --------------------------------------------------------------------------------------------------


def read_mpajhu(info_path, fiboh_path) -> Table:
    """Read MPA-JHU DR7 ``gal_info_dr7_v5_2.fits`` with its row-aligned ``gal_fiboh_dr7_v5_2.fits``.

    Columns: ``id``, ``plate``, ``mjd``, ``fiber``, ``ra``, ``dec`` (deg), ``z``, ``z_err``, ``vdisp``,
    ``e_vdisp`` (km/s; ≤ 0 → NaN), ``metallicity`` = fiboh ``MEDIAN`` (12 + log O/H),
    ``metallicity_p16``, ``metallicity_p84`` and ``e_metallicity`` = (P84 − P16) / 2; metallicities
    that are non-finite or ≤ 0 (the −99.9 and −9999 sentinels) are NaN. Optional input columns that
    are absent are left out. Rows with an unusable key are skipped (``meta['rejects']``: FITS row
    number, reason). Raises ``ValueError`` when the two files have different numbers of rows.
    """
    with fits.open(info_path, memmap=True) as info, fits.open(fiboh_path, memmap=True) as fiboh:
        info_hdu, fiboh_hdu = _first_table_hdu(info, info_path), _first_table_hdu(fiboh, fiboh_path)
        n_info, n_fiboh = info_hdu.header["NAXIS2"], fiboh_hdu.header["NAXIS2"]
        if n_info != n_fiboh:
            raise ValueError(
                f"MPA-JHU files do not match: {info_path} has {n_info} rows but {fiboh_path} has {n_fiboh}; "
                "gal_fiboh must be the file written row by row for this gal_info"
            )
        info_names, fiboh_names = _upper_names(info_hdu), _upper_names(fiboh_hdu)
        _require_columns(info_names, ("PLATEID", "MJD", "FIBERID"), info_path, "MPA-JHU gal_info")
        _require_columns(fiboh_names, ("MEDIAN",), fiboh_path, "MPA-JHU gal_fiboh")
        plate, mjd, fiber, valid = _fits_keys(info_hdu.data, info_names, "PLATEID", "MJD", "FIBERID")
        columns = _key_columns(plate[valid], mjd[valid], fiber[valid])
        for source, name, floor in (
            ("RA", "ra", None), ("DEC", "dec", None), ("Z", "z", _GSWLC_SENTINEL), ("Z_ERR", "z_err", None),
            ("V_DISP", "vdisp", 0.0), ("V_DISP_ERR", "e_vdisp", 0.0),
        ):  # fmt: skip
            if source in info_names:
                columns[name] = _float_values(info_hdu.data[info_names[source]][valid], floor)
        columns["metallicity"] = _float_values(fiboh_hdu.data[fiboh_names["MEDIAN"]][valid], 0.0)
        if "P16" in fiboh_names and "P84" in fiboh_names:
            p16 = _float_values(fiboh_hdu.data[fiboh_names["P16"]][valid], 0.0)
            p84 = _float_values(fiboh_hdu.data[fiboh_names["P84"]][valid], 0.0)
            columns.update(metallicity_p16=p16, metallicity_p84=p84, e_metallicity=(p84 - p16) / 2)
    rejects = _row_rejects(valid, plate, mjd, fiber)
    table = _describe(Table(columns))
    table.meta.update(source=f"{info_path} + {fiboh_path}", n_rows=len(table), n_rejected=len(rejects), rejects=rejects)
    _log_rejects(str(info_path), rejects, what="row")
    log.info("%s: %d MPA-JHU rows (%d skipped)", info_path, len(table), len(rejects))
    return table


# --------------------------------------------------------------------------------------------------
# specObj
# --------------------------------------------------------------------------------------------------


def _specobj_column(values, name: str) -> np.ndarray:
    """One specObj output column, converted: ids and labels as stripped str, zwarning int64, floats."""
    arr = np.asarray(values)
    if name == "specobjid" or arr.dtype.kind in "SU":
        return _stripped_strings(arr)
    if name == "zwarning":
        return np.array(arr, dtype=np.int64)
    return _float_values(arr, 0.0 if name in ("vdisp", "e_vdisp") else None)


def _read_specobj_hdu(hdu, path) -> Table:
    """The specObj output table from an open table HDU (see :func:`read_specobj`)."""
    names = _upper_names(hdu)
    _require_columns(names, ("PLATE", "MJD", "FIBERID"), path, "specObj")
    plate, mjd, fiber, valid = _fits_keys(hdu.data, names, "PLATE", "MJD", "FIBERID")
    columns = _key_columns(plate[valid], mjd[valid], fiber[valid])
    for source, name in _SPECOBJ_COLUMNS.items():
        if source in names:
            columns[name] = _specobj_column(_fits_column(hdu, names[source])[valid], name)
    rejects = _row_rejects(valid, plate, mjd, fiber)
    table = _describe(Table(columns))
    table.meta.update(source=str(path), n_rows=len(table), n_rejected=len(rejects), rejects=rejects)
    _log_rejects(str(path), rejects, what="row")
    log.info("%s: %d specObj rows (%d skipped)", path, len(table), len(rejects))
    return table


def read_specobj(path) -> Table:
    """Read an SDSS ``specObj`` (or BOSS ``spAll``) FITS table: one row per spectrum.

    Columns, whichever the file has: ``id``, ``plate``, ``mjd``, ``fiber``, ``specobjid`` (str),
    ``class``, ``subclass``, ``z``, ``z_err``, ``zwarning`` (int), ``vdisp``, ``e_vdisp`` (km/s; ≤ 0 →
    NaN), ``run2d``, ``survey``, ``sn_median_all``. Strings have their FITS padding stripped. Only these
    columns are read (memory-mapped), so the multi-GB DR17 file is fine.
    """
    with fits.open(path, memmap=True) as hdul:
        return _read_specobj_hdu(_first_table_hdu(hdul, path), path)


# --------------------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------------------


def _file_head(path: Path, n_bytes: int = 65536) -> bytes:
    """The first ``n_bytes`` of a file, decompressed if it is gzip."""
    with open(path, "rb") as f:
        head = f.read(n_bytes)
    if head[:2] == b"\x1f\x8b":
        with gzip.open(path, "rb") as f:
            head = f.read(n_bytes)
    return head


def _first_data_fields(head: bytes) -> list[str] | None:
    """Whitespace-split fields of the first non-comment text line, or None if the bytes are not text."""
    if b"\x00" in head:
        return None
    for line in head.decode("latin-1").splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            return fields
    return None


def _is_number(token: str) -> bool:
    """True if ``token`` reads as a float."""
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_catalog(path) -> Table:
    """Read a catalogue whose format is recognised from its content, for ``galvae download --catalog``.

    - FITS table with ``PLATE``, ``MJD``, ``FIBERID`` → :func:`read_specobj` (specObj, spAll);
    - FITS table with ``id`` and ``logmstar`` → a ready properties table (a mock's ``truth.fits``, or
      the output of ``galvae catalog``), returned as it is;
    - FITS table with ``PLATEID`` → MPA-JHU ``gal_info``: refused, it needs its ``gal_fiboh`` file
      (use :func:`read_mpajhu`);
    - text whose first data line has 24 numeric fields → :func:`read_gswlc`.

    Every result has ``plate``, ``mjd``, ``fiber``, ``id``, ``z`` (and ``class``, ``zwarning``,
    ``run2d``, ``survey`` when the file has them); ``meta['format']`` names the format.
    Raises ``ValueError`` naming the file and the reason when it is none of these.
    """
    path = Path(path)
    head = _file_head(path)
    if head.startswith(b"SIMPLE"):
        with fits.open(path, memmap=True) as hdul:
            hdu = _first_table_hdu(hdul, path)
            names = _upper_names(hdu)
            if {"PLATE", "MJD", "FIBERID"} <= set(names):
                table = _read_specobj_hdu(hdu, path)
                table.meta["format"] = "specobj"
                return table
            if {"ID", "LOGMSTAR"} <= set(names):
                # A ready properties table keyed by id (a mock's truth.fits, or `galvae catalog`'s output)
                table = Table(hdu.data)
                table.meta["format"] = "properties"
                return table
        if "PLATEID" in names:
            raise ValueError(
                f"{path} looks like an MPA-JHU gal_info table (it has PLATEID): read it together with its "
                "gal_fiboh file using read_mpajhu(info_path, fiboh_path); it cannot be read alone"
            )
        raise ValueError(
            f"{path}: FITS table is neither specObj/spAll (PLATE, MJD, FIBERID) nor MPA-JHU gal_info "
            f"(PLATEID); its columns start {', '.join(list(names)[:8])}"
        )
    fields = _first_data_fields(head)
    if fields is None:
        raise ValueError(f"{path}: neither a FITS table nor a text catalogue (empty or binary content)")
    numeric = all(_is_number(f) for f in fields)
    if len(fields) != len(GSWLC_COLUMNS) or not numeric:
        raise ValueError(
            f"{path}: not a recognised catalogue; a GSWLC-2 text table has {len(GSWLC_COLUMNS)} numeric "
            f"fields per line, its first data line has {len(fields)}{'' if numeric else ' (not all numeric)'}"
        )
    table = read_gswlc(path)
    table.meta["format"] = "gswlc"
    return table


# --------------------------------------------------------------------------------------------------
# The join
# --------------------------------------------------------------------------------------------------


@dataclass
class JoinStats:
    """Counts from :func:`catalog_properties`; catalogue names are ``gswlc``, ``mpajhu``, ``specobj``.

    ``rows_read``: input rows per catalogue (``gswlc``: all its tables together, per table in
    ``gswlc_rows_per_table``). ``duplicates_dropped``: rows dropped because their key was already
    taken. ``flagged_rows``: GSWLC rows read with a failed SED fit; ``flagged_keys``: output keys whose
    chosen GSWLC row still has one (no successful fit anywhere). ``keys``: output rows. ``matched`` /
    ``unmatched``: a catalogue's unique keys found / not found in at least one of the other catalogues
    given (all unmatched when only one was given). ``overlap``: keys common to each pair, ``"a&b"``.
    """

    rows_read: dict[str, int] = field(default_factory=dict)
    gswlc_rows_per_table: list[int] = field(default_factory=list)
    duplicates_dropped: dict[str, int] = field(default_factory=dict)
    flagged_rows: int = 0
    flagged_keys: int = 0
    keys: int = 0
    matched: dict[str, int] = field(default_factory=dict)
    unmatched: dict[str, int] = field(default_factory=dict)
    overlap: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain dict (JSON-ready)."""
        return asdict(self)

    def summary(self) -> str:
        """A few human-readable lines for logs and the CLI tally."""
        lines = [f"{self.keys} spectrum keys with properties"]
        joined = len(self.rows_read) > 1  # matched/unmatched count keys found in the other catalogues
        for name, n in self.rows_read.items():
            line = f"  {name}: {n} rows read, {self.duplicates_dropped.get(name, 0)} duplicates dropped"
            if joined:
                line += (f", {self.matched.get(name, 0)} keys matched in another catalogue, "
                         f"{self.unmatched.get(name, 0)} unmatched")
            lines.append(line)
        if "gswlc" in self.rows_read:
            lines.append(f"  gswlc failed SED fits: {self.flagged_rows} rows read, {self.flagged_keys} kept")
        return "\n".join(lines)


def _as_table_list(tables) -> list[Table]:
    """``None`` → [], a Table → [it], a sequence of Tables → list."""
    if tables is None:
        return []
    if isinstance(tables, Table):
        return [tables]
    return list(tables)


def _usable(keys: np.ndarray, name: str) -> np.ndarray:
    """Mask of rows with a usable key; warns about the others."""
    ok = keys >= 0
    if not ok.all():
        log.warning("%s: %d rows without a usable plate/mjd/fiber ignored", name, np.count_nonzero(~ok))
    return ok


def _best_gswlc_rows(tables: list[Table]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """(unique keys, their property arrays, whether the chosen row's fit failed) after the duplicate rule.

    Rule: per key, prefer a row with ``flag_sed == 0``, then the earlier table, then the earlier row.
    """
    keys = np.concatenate([_table_keys(t) for t in tables])
    failed = np.concatenate(
        [np.asarray(t["flag_sed"]) != 0 if "flag_sed" in t.colnames else np.zeros(len(t), bool) for t in tables]
    )
    values = {c: np.concatenate([_column_or_nan(t, c) for t in tables]) for c in _GSWLC_PROPERTIES}
    ok = _usable(keys, "gswlc")
    order = np.flatnonzero(ok)  # concatenation order = (table, row) order
    order = order[np.lexsort((order, failed[order], keys[order]))]
    sorted_keys = keys[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    chosen = order[first]
    return keys[chosen], {c: v[chosen] for c, v in values.items()}, failed[chosen]


def _first_rows(table: Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(unique sorted keys, index of the first row holding each) of one table."""
    keys = _table_keys(table)
    ok = np.flatnonzero(_usable(keys, name))
    unique, first = np.unique(keys[ok], return_index=True)
    return unique, ok[first]


def _fill_where_known(props: dict, positions: np.ndarray, values: dict[str, np.ndarray], known: np.ndarray) -> None:
    """Overwrite ``props`` columns at ``positions[known]`` with ``values`` (a later call wins)."""
    for name, column in values.items():
        props[name][positions[known]] = column[known]


def catalog_properties(gswlc=None, mpajhu=None, specobj=None) -> tuple[Table, JoinStats]:
    """Join already-read catalogues on (plate, mjd, fiber): one row per key found in any of them.

    Parameters: ``gswlc`` a table from :func:`read_gswlc` or a list of them in priority order (pass
    X2 before M2 before A2 to prefer the deepest UV); ``mpajhu`` from :func:`read_mpajhu`; ``specobj``
    from :func:`read_specobj`. Any may be omitted, not all.

    Returns ``(props, stats)``: ``props`` sorted by (plate, mjd, fiber) with ``id``, ``plate``,
    ``mjd``, ``fiber`` and :data:`PROPERTY_COLUMNS` (float64, NaN where unknown); ``stats`` a
    :class:`JoinStats`. Where catalogues overlap:

    - ``z``: specObj, else GSWLC, else MPA-JHU (the first that is finite);
    - ``vdisp`` and ``e_vdisp`` (together): specObj ``VDISP`` when > 0, else MPA-JHU ``V_DISP``;
    - ``logmstar``, ``logsfr``, attenuations and errors from GSWLC, ``logssfr = logsfr − logmstar``;
    - ``metallicity``, ``e_metallicity`` from MPA-JHU.

    Duplicate keys: within and across the GSWLC tables the row kept is the one with a successful SED
    fit (``flag_sed == 0``), then the one from the earlier table in the list, then the earlier row in
    its file. For MPA-JHU and specObj the first row with the key is kept.
    """
    gswlc_tables = _as_table_list(gswlc)
    if not gswlc_tables and mpajhu is None and specobj is None:
        raise ValueError("catalog_properties: give at least one catalogue")
    stats = JoinStats()
    unique_keys: dict[str, np.ndarray] = {}  # catalogue -> its unique keys
    values: dict[str, dict[str, np.ndarray]] = {}  # catalogue -> column -> value per unique key
    if gswlc_tables:
        stats.gswlc_rows_per_table = [len(t) for t in gswlc_tables]
        stats.rows_read["gswlc"] = sum(stats.gswlc_rows_per_table)
        unique_keys["gswlc"], values["gswlc"], failed = _best_gswlc_rows(gswlc_tables)
        stats.flagged_rows = sum(_n_failed_fits(t) for t in gswlc_tables)
        stats.flagged_keys = int(np.count_nonzero(failed))
    for name, table, wanted in (
        ("mpajhu", mpajhu, ("z", "vdisp", "e_vdisp", "metallicity", "e_metallicity")),
        ("specobj", specobj, ("z", "vdisp", "e_vdisp")),
    ):
        if table is not None:
            stats.rows_read[name] = len(table)
            unique_keys[name], rows = _first_rows(table, name)
            values[name] = {c: _column_or_nan(table, c)[rows] for c in wanted}
    for name, keys in unique_keys.items():
        stats.duplicates_dropped[name] = stats.rows_read[name] - len(keys)

    all_keys = np.unique(np.concatenate(list(unique_keys.values())))
    n = len(all_keys)
    positions = {name: np.searchsorted(all_keys, keys) for name, keys in unique_keys.items()}
    props = {c: np.full(n, np.nan) for c in PROPERTY_COLUMNS}
    # Lowest priority first: each later fill overwrites where its own value is known.
    fills = (
        ("mpajhu", ("z",), ("vdisp", "e_vdisp"), ("metallicity", "e_metallicity")),
        ("gswlc", ("z",)) + tuple((c,) for c in _GSWLC_FIT_COLUMNS),
        ("specobj", ("z",), ("vdisp", "e_vdisp")),
    )
    for name, *groups in fills:
        if name in unique_keys:
            for group in groups:
                known = np.isfinite(values[name][group[0]])
                _fill_where_known(props, positions[name], {c: values[name][c] for c in group}, known)
    props["logssfr"] = props["logsfr"] - props["logmstar"]

    _count_matches(stats, unique_keys, positions, n)
    table = Table({**_key_columns(*_keys_to_parts(all_keys)), **props})
    table.meta["catalog_stats"] = stats.as_dict()
    log.info("catalogue join:\n%s", stats.summary())
    return _describe(table), stats


def _n_failed_fits(table: Table) -> int:
    """Rows of a GSWLC table with ``flag_sed != 0`` (0 when it has no such column)."""
    return int(np.count_nonzero(np.asarray(table["flag_sed"]) != 0)) if "flag_sed" in table.colnames else 0


def _count_matches(stats: JoinStats, unique_keys: dict, positions: dict, n: int) -> None:
    """Fill ``keys``, ``matched``, ``unmatched`` and ``overlap`` of ``stats``."""
    present = {}
    for name, pos in positions.items():
        present[name] = np.zeros(n, dtype=bool)
        present[name][pos] = True
    stats.keys = n
    names = list(present)
    for name in names:
        in_other = np.zeros(n, dtype=bool)
        for other in names:
            if other != name:
                in_other |= present[other]
        stats.matched[name] = int(np.count_nonzero(present[name] & in_other))
        stats.unmatched[name] = len(unique_keys[name]) - stats.matched[name]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            stats.overlap[f"{a}&{b}"] = int(np.count_nonzero(present[a] & present[b]))


# --------------------------------------------------------------------------------------------------
# Spectra ↔ properties
# --------------------------------------------------------------------------------------------------


@dataclass
class MatchStats:
    """Counts from :func:`match_properties`: ids given, matched, unmatched (including the ``invalid``
    ones whose id does not parse as PLATE-MJD-FIBER)."""

    n_ids: int = 0
    matched: int = 0
    unmatched: int = 0
    invalid: int = 0

    def as_dict(self) -> dict:
        """Plain dict (JSON-ready)."""
        return asdict(self)


def _aligned_column(column, rows: np.ndarray, hit: np.ndarray):
    """``column[rows]`` where ``hit``; NaN elsewhere for floats, masked elsewhere for other dtypes.

    A value masked in ``column`` itself counts as unknown too (NaN or masked), never as its fill value.
    """
    values = np.asarray(column)
    known = hit.copy()
    if len(values):
        known[hit] &= ~np.ma.getmaskarray(column)[rows[hit]]
    if values.dtype.kind == "f":
        out = np.full(len(rows), np.nan, dtype=values.dtype)
        out[known] = values[rows[known]]
        return out
    taken = values[np.where(hit, rows, 0)] if len(values) else np.zeros(len(rows), values.dtype)
    return MaskedColumn(taken, mask=~known)


def match_properties(ids: Sequence[str], props: Table) -> tuple[Table, MatchStats]:
    """Align ``props`` (from :func:`catalog_properties`) to spectrum ids ``PPPP-MMMMM-FFFF``.

    Returns ``(table, stats)``: ``table`` has one row per id, in the order given (repeats allowed),
    with ``id`` as given, ``plate``, ``mjd``, ``fiber`` parsed from it (−1 if it does not parse), a
    bool ``matched``, and every other ``props`` column (floats NaN where unmatched; other dtypes
    masked). If ``props`` repeats a key, its first row is used. Vectorised: sort + searchsorted.
    """
    ids = np.asarray(ids)
    plate, mjd, fiber = parse_ids(ids)
    query = _key_codes(plate, mjd, fiber)
    prop_keys = _table_keys(props)
    ok = np.flatnonzero(prop_keys >= 0)
    unique, first = np.unique(prop_keys[ok], return_index=True)
    rows_of_unique = ok[first]
    slot = np.minimum(np.searchsorted(unique, query), max(len(unique) - 1, 0))
    hit = (query >= 0) & (len(unique) > 0)
    if len(unique):
        hit &= unique[slot] == query
    rows = rows_of_unique[slot] if len(unique) else np.zeros(len(query), dtype=np.int64)

    id_column = ids.astype(str) if ids.size else np.array([], dtype=str)
    table = Table({"id": id_column, "plate": plate, "mjd": mjd, "fiber": fiber, "matched": hit})
    for name in props.colnames:
        if name not in ("id", "plate", "mjd", "fiber", "matched"):
            table[name] = _aligned_column(props[name], rows, hit)
            table[name].description = props[name].description
    n_matched = int(np.count_nonzero(hit))
    n_invalid = int(np.count_nonzero(query < 0))
    stats = MatchStats(n_ids=len(query), matched=n_matched, unmatched=len(query) - n_matched, invalid=n_invalid)
    table.meta["match_stats"] = stats.as_dict()
    log.info("properties matched for %d of %d spectra (%d ids unparseable)", stats.matched, stats.n_ids, stats.invalid)
    return table, stats


def load_properties(*paths) -> Table:
    """The joined properties table of one or more catalogue files (format detected per file).

    GSWLC tables are joined in the order given (X2 before M2 before A2 prefers the deepest UV);
    MPA-JHU needs its two files and therefore goes through :func:`read_mpajhu` and
    :func:`catalog_properties` directly. ``table.meta['catalog_stats']`` holds the join counts.
    """
    gswlc, specobj = [], None
    for path in paths:
        table = read_catalog(path)
        if table.meta.get("format") == "properties" and len(paths) == 1:
            return table
        if table.meta.get("format") == "gswlc":
            gswlc.append(table)
        elif specobj is None:
            specobj = table
        else:
            raise ValueError(f"{path}: only one specObj table can be joined at a time")
    props, _ = catalog_properties(gswlc=gswlc or None, specobj=specobj)
    return props


def join_catalog_files(out, gswlc=(), mpajhu=None, specobj=None) -> tuple[Table, JoinStats, list]:
    """Read catalogue files, join them (:func:`catalog_properties`) and write the properties table to ``out``
    (CLI ``galvae catalog --gswlc X2 M2 A2 --mpajhu INFO FIBOH --specobj F --out props.fits``).

    ``gswlc``: GSWLC-2 text tables in priority order; ``mpajhu``: the pair (gal_info, gal_fiboh) or None;
    ``specobj``: a specObj / spAll file or None. The table is written in the format of ``out``'s
    extension (FITS for ``.fits``), replacing a previous one; the same inputs give the same bytes.
    Returns ``(props, stats, skipped)``: ``skipped`` lists the unusable GSWLC lines as
    ``(source, line_number, reason)``.
    """
    gswlc_tables = [read_gswlc(p) for p in gswlc or ()]
    mpajhu_table = read_mpajhu(*mpajhu) if mpajhu else None
    specobj_table = read_specobj(specobj) if specobj else None
    skipped = [(t.meta.get("source", "gswlc"), line, reason) for t in gswlc_tables
               for line, reason in t.meta.get("rejects", [])]
    props, stats = catalog_properties(gswlc=gswlc_tables or None, mpajhu=mpajhu_table, specobj=specobj_table)
    props.meta.pop("catalog_stats", None)  # nested: not a FITS header card; the counts are returned
    from .._atomic import atomic_write

    atomic_write(out, lambda tmp: props.write(tmp, overwrite=True))  # the format follows out's extension
    return props, stats, skipped
