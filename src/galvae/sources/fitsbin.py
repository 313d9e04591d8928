"""A minimal, strict reader for FITS binary tables.

SDSS spectrum files are small (0.2–2 MB) and a survey holds 10^5–10^6 of them, so per-file overhead
dominates: astropy's ``fits.open`` spends tens of milliseconds building header and column objects we
never use. This module parses only what a spectrum needs: header cards as a dict, and a binary table
as one NumPy structured array read straight from the file (big-endian, no copy, no scaling objects).

Scope, on purpose: BINTABLE extensions with fixed-width columns (codes L X B I J K A E D C M), TZERO /
TSCAL applied on request per column, variable-length (P/Q) columns exposed as raw descriptors.
Anything else raises :class:`FitsFormatError` with a reason a person can act on.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

BLOCK = 2880
CARD = 80

_TFORM = re.compile(r"^\s*(\d*)([LXBIJKAEDCMPQ])(.*)$")
_CODE_DTYPES = {
    "L": "S1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8",
    "E": ">f4", "D": ">f8", "C": ">c8", "M": ">c16",
}
# Stored value + TZERO equals the stored bits with the sign bit flipped, read in the other signedness.
_SIGN_FLIP = {("B", -128): "i1", ("I", 32768): "u2", ("J", 2147483648): "u4", ("K", 9223372036854775808): "u8"}


class FitsFormatError(ValueError):
    """The bytes are not a FITS file this reader understands; the message says why."""


@dataclass
class HDU:
    """One header-data unit: its header cards and where its data lie in the file."""

    index: int
    header: dict
    data_offset: int
    data_size: int

    @property
    def name(self) -> str:
        return str(self.header.get("EXTNAME", "PRIMARY" if self.index == 0 else "")).strip().upper()


def _parse_value(text: str):
    text = text.strip()
    if text.startswith("'"):
        # String: '' is an escaped quote; the value ends at the first lone quote.
        out, i = [], 1
        while i < len(text):
            if text[i] == "'":
                if i + 1 < len(text) and text[i + 1] == "'":
                    out.append("'")
                    i += 2
                    continue
                break
            out.append(text[i])
            i += 1
        return "".join(out).rstrip()
    value = text.split("/", 1)[0].strip()
    if value == "T":
        return True
    if value == "F":
        return False
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value.replace("D", "E"))
    except ValueError:
        return value  # complex or unusual values: kept as text, never needed here


def _read_header(fh: BinaryIO, offset: int, file_size: int) -> tuple[dict, int]:
    """Parse the header starting at ``offset``; return (cards, offset of the data)."""
    header: dict = {}
    pos = offset
    while True:
        block = fh.read(BLOCK)
        if len(block) < BLOCK:
            raise FitsFormatError(f"truncated: header at byte {offset} has no END card before the file ends ({file_size} bytes)")
        pos += BLOCK
        try:
            cards, ended = _parse_block(block)
        except UnicodeDecodeError as exc:
            raise FitsFormatError(f"corrupt header: non-ASCII bytes in the header at byte {offset}") from exc
        for key, value in cards.items():
            header.setdefault(key, value)
        if ended:
            return header, pos


@functools.lru_cache(maxsize=256)
def _parse_block(block: bytes) -> tuple[dict, bool]:
    """Cards of one 2880-byte header block, and whether it holds END.

    Cached: the metadata headers of a survey's files are identical block for block, so a batch parses
    each distinct block once. Callers must not modify the returned dict.
    """
    text = block.decode("ascii")
    cards: dict = {}
    for i in range(0, BLOCK, CARD):
        card = text[i:i + CARD]
        key = card[:8].rstrip()
        if key == "END":
            return cards, True
        if card[8:10] == "= " and key and key not in cards:
            cards[key] = _parse_value(card[10:])
    return cards, False


def _data_size(header: dict, index: int) -> int:
    try:
        bitpix = int(header["BITPIX"])
        naxis = int(header["NAXIS"])
        dims = [int(header[f"NAXIS{k}"]) for k in range(1, naxis + 1)]
    except (KeyError, TypeError, ValueError) as exc:
        raise FitsFormatError(f"corrupt header: HDU {index} has a missing or invalid BITPIX/NAXIS ({exc})") from exc
    if naxis == 0:
        return 0
    n = int(np.prod(dims, dtype=np.int64))
    if index > 0:
        n = int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + n)
    return abs(bitpix) // 8 * n


def scan_hdus(fh: BinaryIO, wanted: Iterable[str | AbstractSet[str]] | None = None) -> list[HDU]:
    """Walk the file's HDUs, reading headers only.

    ``wanted`` lists what the caller needs, each entry an HDU name (upper case) or a set of
    alternative names of which any one will do. The walk stops once every entry has been seen, so the
    per-exposure HDUs of full spec files are never touched (nor their damage). Without ``wanted``
    every HDU is walked. Raises :class:`FitsFormatError` for non-FITS or damaged files.
    """
    fh.seek(0, os.SEEK_END)
    file_size = fh.tell()
    fh.seek(0)
    first = fh.read(CARD)
    if len(first) < CARD or not first.startswith(b"SIMPLE  =") or first[29:30] != b"T":
        raise FitsFormatError("not a FITS file (no 'SIMPLE = T' card at the start)")
    hdus: list[HDU] = []
    offset = 0
    missing = [{w} if isinstance(w, str) else set(w) for w in wanted] if wanted else None
    while offset < file_size:
        fh.seek(offset)
        header, data_offset = _read_header(fh, offset, file_size)
        index = len(hdus)
        size = _data_size(header, index)
        hdu = HDU(index, header, data_offset, size)
        if data_offset + size > file_size:
            raise FitsFormatError(
                f"truncated: HDU {index} ({hdu.name or 'unnamed'}) needs bytes up to {data_offset + size}, "
                f"file has {file_size}")
        hdus.append(hdu)
        if missing is not None:
            missing = [names for names in missing if hdu.name not in names]
            if not missing:
                break
        offset = data_offset + -(-size // BLOCK) * BLOCK
        if offset < file_size and file_size - offset < BLOCK:
            break  # trailing bytes shorter than a block: tolerated, as astropy does
    return hdus


def _column_dtype(tform: str, name: str) -> tuple[str, tuple]:
    m = _TFORM.match(tform)
    if not m:
        raise FitsFormatError(f"column {name!r}: unsupported TFORM {tform!r}")
    repeat = int(m.group(1)) if m.group(1) else 1
    code = m.group(2)
    if code == "A":
        return f"S{max(repeat, 1)}", ()
    if code == "X":
        return "u1", ((repeat + 7) // 8,)
    if code in "PQ":
        return (">i4" if code == "P" else ">i8"), (2,)
    shape = () if repeat == 1 else (repeat,)
    return _CODE_DTYPES[code], shape


def table_dtype(header: dict) -> np.dtype:
    """The structured dtype of a BINTABLE's rows, with original column names."""
    if str(header.get("XTENSION", "")).strip() != "BINTABLE":
        raise FitsFormatError(f"HDU {header.get('EXTNAME', '?')!r} is not a binary table")
    nfields = int(header.get("TFIELDS", 0))
    names, formats, offsets = [], [], []
    pos = 0
    for k in range(1, nfields + 1):
        name = str(header.get(f"TTYPE{k}", f"col{k}")).strip()
        tform = str(header.get(f"TFORM{k}", ""))
        base, shape = _column_dtype(tform, name)
        dt = np.dtype((base, shape)) if shape else np.dtype(base)
        names.append(name)
        formats.append(dt)
        offsets.append(pos)
        pos += dt.itemsize
    row = int(header["NAXIS1"])
    if pos != row:
        raise FitsFormatError(f"corrupt table header: columns add up to {pos} bytes but NAXIS1 = {row}")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": row})


def read_table(fh: BinaryIO, hdu: HDU) -> np.ndarray:
    """The rows of a BINTABLE HDU as a big-endian structured array (raw stored values)."""
    dtype = table_dtype(hdu.header)
    nrows = int(hdu.header["NAXIS2"])
    fh.seek(hdu.data_offset)
    buf = fh.read(dtype.itemsize * nrows)
    if len(buf) < dtype.itemsize * nrows:
        raise FitsFormatError(f"truncated: table {hdu.name} has fewer bytes than its {nrows} rows")
    return np.frombuffer(buf, dtype=dtype, count=nrows)


def column(table: np.ndarray, header: dict, name: str) -> np.ndarray:
    """One column by case-insensitive name, native byte order, TZERO/TSCAL applied as FITS defines."""
    lookup = {n.lower(): (k, n) for k, n in enumerate(table.dtype.names, start=1)}
    if name.lower() not in lookup:
        raise KeyError(name)
    k, real = lookup[name.lower()]
    raw = table[real]
    zero = header.get(f"TZERO{k}", 0) or 0
    scale = header.get(f"TSCAL{k}", 1) or 1
    code = _TFORM.match(str(header.get(f"TFORM{k}", ""))).group(2)
    if raw.dtype.kind == "S":
        return np.char.rstrip(np.char.decode(raw, "ascii", errors="replace"))
    if scale == 1 and (code, zero) in _SIGN_FLIP:
        width = raw.dtype.itemsize
        bits = raw.view(f">u{width}").astype(f"u{width}") ^ np.array(1 << (8 * width - 1), dtype=f"u{width}")
        return bits.view(_SIGN_FLIP[(code, zero)])
    out = raw.astype(raw.dtype.newbyteorder("="))
    if zero != 0 or scale != 1:
        out = out * scale + zero
    return out
