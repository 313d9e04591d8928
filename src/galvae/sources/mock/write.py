"""Files of the mock survey, in the formats of the real products.

- one ``spec-PPPPP-MMMMM-FFFF.fits`` per galaxy, laid out like an SDSS DR8+ spec-lite file of
  SDSS-I/II: PRIMARY (header only), ``COADD`` (flux, loglam, ivar, and_mask, or_mask, wdisp, sky,
  model) and ``SPECOBJ`` (one row, real column names and formats, a subset of the 126);
- a GSWLC-2-format catalogue (24 whitespace-separated columns, −99 where missing);
- an MPA-JHU DR7-format pair ``gal_info`` + ``gal_fiboh`` (row-aligned FITS tables; gas-phase
  metallicity for star-forming galaxies, −99.9 for the others);
- the truth table, ``truth.fits``.

Identifiers. Galaxy *i* sits on plate 13000 + i // 640, fibre i % 640 + 1 (1–640 per plate, as
SDSS), with a plate MJD spread over the SDSS-I/II years (51578–54663). Plates ≥ 13000 are above every
SDSS-I–IV plate, so mock ids never collide with real ones (two mocks share ids: the id encodes the
index, not the seed). ``SPECOBJID`` packs plate, fibre, MJD and RUN2D exactly as SDSS does
(plate << 50 | fiber << 38 | (mjd − 50000) << 24 | run2d << 10); with plate ≥ 8192 it exceeds 2⁶³,
like real eBOSS ids, so it is kept as a string. Photometric ``objid`` (1237000000000000000 + i) and
GALEX ``glxid`` (6000000000000000000 + i) are below the real ranges.

Every file is written to a temporary name and renamed, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ... import _atomic
from ..catalogs import GSWLC_COLUMNS, GSWLC_INT_COLUMNS

FIBERS_PER_PLATE = 640
FIRST_PLATE = 13000
MJD_RANGE = (51578, 54663)  # SDSS-I/II spectroscopic nights
RUN2D = "26"
OBJID_BASE = 1237000000000000000
GLXID_BASE = 6000000000000000000
MISSING = -99

COADD_COLUMNS = ("flux", "loglam", "ivar", "and_mask", "or_mask", "wdisp", "sky", "model")
_COADD_DTYPE = np.dtype([
    ("flux", ">f4"), ("loglam", ">f4"), ("ivar", ">f4"), ("and_mask", ">i4"), ("or_mask", ">i4"),
    ("wdisp", ">f4"), ("sky", ">f4"), ("model", ">f4"),
])  # fmt: skip
_SPECOBJ_DTYPE = np.dtype([
    ("SURVEY", "S6"), ("INSTRUMENT", "S4"), ("CHUNK", "S16"), ("PROGRAMNAME", "S23"), ("PLATEQUALITY", "S8"),
    ("SPECPRIMARY", "u1"), ("SPECOBJID", "S22"), ("BESTOBJID", "S19"), ("RUN2D", "S3"), ("RUN1D", "S1"),
    ("SOURCETYPE", "S19"), ("TARGETTYPE", "S8"), ("PRIMTARGET", ">i4"), ("SPECTROGRAPHID", ">i2"),
    ("PLATE", ">i4"), ("TILE", ">i4"), ("MJD", ">i4"), ("FIBERID", ">i4"), ("PLUG_RA", ">f8"), ("PLUG_DEC", ">f8"),
    ("CLASS", "S6"), ("SUBCLASS", "S21"), ("Z", ">f4"), ("Z_ERR", ">f4"), ("RCHI2", ">f4"), ("DOF", ">i4"),
    ("VDISP", ">f4"), ("VDISP_ERR", ">f4"), ("WAVEMIN", ">f4"), ("WAVEMAX", ">f4"), ("WCOVERAGE", ">f4"),
    ("ZWARNING", ">i4"), ("SN_MEDIAN_ALL", ">f4"), ("SN_MEDIAN", ">f4", (5,)), ("ANYANDMASK", ">i4"),
    ("ANYORMASK", ">i4"),
])  # fmt: skip
# ugriz windows (Å) for SN_MEDIAN; u and z are partly outside the spectrum, as in real files.
_BAND_WINDOWS = ((3000.0, 4000.0), (4000.0, 5500.0), (5500.0, 6900.0), (6900.0, 8400.0), (8400.0, 9300.0))


def plate_mjd_fiber(index: int) -> tuple[int, int, int]:
    """(plate, mjd, fiber) of galaxy ``index``."""
    plate_number = index // FIBERS_PER_PLATE
    plate = FIRST_PLATE + plate_number
    mjd = MJD_RANGE[0] + (plate_number * 211) % (MJD_RANGE[1] - MJD_RANGE[0] + 1)
    return plate, mjd, index % FIBERS_PER_PLATE + 1


def spec_filename(plate: int, mjd: int, fiber: int) -> str:
    """SDSS file name ``spec-PLATE-MJD-FIBER.fits`` (plate at least 4 digits, fibre 4)."""
    return f"spec-{plate:04d}-{mjd:05d}-{fiber:04d}.fits"


def specobjid(plate: int, mjd: int, fiber: int, run2d: int = int(RUN2D)) -> int:
    """SDSS DR8+ specObjID of a spectrum (bit-packed plate, fibre, MJD, RUN2D)."""
    return (plate << 50) | (fiber << 38) | ((mjd - 50000) << 24) | (run2d << 10)


def plate_centre(plate: int) -> tuple[float, float]:
    """(ra, dec) of a mock plate in degrees: uniform over an SDSS-Legacy-like cap (RA 110–260°, Dec −5–65°)."""
    rng = np.random.default_rng([plate, 7])
    ra = rng.uniform(110.0, 260.0)
    sin_dec = rng.uniform(math.sin(math.radians(-5.0)), math.sin(math.radians(65.0)))
    return ra, math.degrees(math.asin(sin_dec))


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and rename the result to ``path`` (galvae._atomic; no fsync: the survey
    is a cache, checked against its manifest when read)."""
    _atomic.atomic_write(path, write, durable=False)


def _band_sn(loglam, flux, ivar) -> np.ndarray:
    wave = 10.0 ** loglam
    out = np.zeros(5, np.float32)
    for b, (lo, hi) in enumerate(_BAND_WINDOWS):
        sel = (wave >= lo) & (wave < hi) & (ivar > 0)
        if sel.sum() > 10:
            out[b] = np.median(flux[sel] * np.sqrt(ivar[sel]))
    return out


def coadd_table(obs) -> np.ndarray:
    """The COADD rows of an :class:`~.observe.ObservedArrays`."""
    table = np.zeros(obs.loglam.size, _COADD_DTYPE)
    for name in COADD_COLUMNS:
        table[name] = getattr(obs, name)
    return table


def specobj_row(meta: dict, obs) -> np.ndarray:
    """The one-row SPECOBJ table; ``meta`` holds plate, mjd, fiber, ra, dec, z_obs, z_err, vdisp_obs,
    vdisp_err, subclass, objid, rchi2."""
    row = np.zeros(1, _SPECOBJ_DTYPE)
    good = obs.ivar > 0
    loglam_good = obs.loglam[good] if good.any() else obs.loglam
    values = {
        "SURVEY": "sdss", "INSTRUMENT": "SDSS", "CHUNK": "galvae-mock", "PROGRAMNAME": "legacy",
        "PLATEQUALITY": "good", "SPECPRIMARY": 1,
        "SPECOBJID": f"{specobjid(meta['plate'], meta['mjd'], meta['fiber']):>22d}",
        "BESTOBJID": str(meta["objid"]), "RUN2D": RUN2D, "RUN1D": "", "SOURCETYPE": "GALAXY",
        "TARGETTYPE": "SCIENCE", "PRIMTARGET": 64, "SPECTROGRAPHID": 1 if meta["fiber"] <= 320 else 2,
        "PLATE": meta["plate"], "TILE": meta["plate"], "MJD": meta["mjd"], "FIBERID": meta["fiber"],
        "PLUG_RA": meta["ra"], "PLUG_DEC": meta["dec"], "CLASS": "GALAXY", "SUBCLASS": meta["subclass"],
        "Z": meta["z_obs"], "Z_ERR": meta["z_err"], "RCHI2": meta["rchi2"], "DOF": int(good.sum()) - 10,
        "VDISP": meta["vdisp_obs"], "VDISP_ERR": meta["vdisp_err"],
        "WAVEMIN": 10.0 ** obs.loglam[0], "WAVEMAX": 10.0 ** obs.loglam[-1],
        "WCOVERAGE": float(loglam_good[-1] - loglam_good[0]), "ZWARNING": 0, "SN_MEDIAN_ALL": obs.sn_median,
        "SN_MEDIAN": _band_sn(obs.loglam, obs.flux, obs.ivar),
        "ANYANDMASK": int(np.bitwise_or.reduce(obs.and_mask)), "ANYORMASK": int(np.bitwise_or.reduce(obs.or_mask)),
    }
    for name, value in values.items():
        row[name] = value
    return row


# ------------------------------------------------------------------------------------------------
# A minimal FITS writer: astropy spends ~45 ms building column objects per file, this ~1 ms
# ------------------------------------------------------------------------------------------------

FITS_BLOCK = 2880
_TFORM_CODES = {"u1": "B", "i2": "I", "i4": "J", "i8": "K", "f4": "E", "f8": "D"}


def _card(key: str, value=None, comment: str = "") -> str:
    """One 80-character header card (fixed format for numbers and logicals)."""
    if key in ("COMMENT", "HISTORY"):
        return f"{key:<8}{value}"[:80].ljust(80)
    if isinstance(value, bool):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, (int, np.integer)):
        text = f"{int(value):>20d}"
    elif isinstance(value, (float, np.floating)):
        text = f"{repr(float(value)).upper():>20}"
    else:
        quoted = "'" + f"{str(value).replace(chr(39), chr(39) * 2):<8}" + "'"
        text = f"{quoted:<20}"
    card = f"{key:<8}= {text}"
    if comment:
        card += f" / {comment}"
    if len(card) > 80 and len(f"{key:<8}= {text}") > 80:
        raise ValueError(f"FITS card {key} is too long")
    return card[:80].ljust(80)


def _header_bytes(cards: list[str]) -> bytes:
    text = "".join(cards) + "END".ljust(80)
    text += " " * (-len(text) % FITS_BLOCK)
    return text.encode("ascii")


def _tform(dtype) -> str:
    base, shape = (dtype.subdtype if dtype.subdtype else (dtype, ()))
    count = int(np.prod(shape)) if shape else 1
    if base.kind == "S":
        return f"{base.itemsize * count}A"
    code = _TFORM_CODES[f"{base.kind}{base.itemsize}"]
    return f"{count}{code}" if count != 1 else code


def _bintable_bytes(table: np.ndarray, name: str, comments=()) -> bytes:
    """A BINTABLE extension (header + big-endian rows + padding) from a structured array."""
    cards = [_card("XTENSION", "BINTABLE", "binary table extension"), _card("BITPIX", 8, "array data type"),
             _card("NAXIS", 2, "number of array dimensions"),
             _card("NAXIS1", table.dtype.itemsize, "length of dimension 1"),
             _card("NAXIS2", table.size, "length of dimension 2"), _card("PCOUNT", 0, "number of group parameters"),
             _card("GCOUNT", 1, "number of groups"),
             _card("TFIELDS", len(table.dtype.names), "number of table fields")]
    for k, field in enumerate(table.dtype.names, start=1):
        cards += [_card(f"TTYPE{k}", field), _card(f"TFORM{k}", _tform(table.dtype.fields[field][0]))]
    cards.append(_card("EXTNAME", name))
    cards += [_card("COMMENT", c) for c in comments]
    data = table.tobytes()
    return _header_bytes(cards) + data + b"\0" * (-len(data) % FITS_BLOCK)


def _primary_bytes(meta: dict, obs) -> bytes:
    """PRIMARY HDU (header only) with the keywords a reader of SDSS files may look for."""
    sid = f"{specobjid(meta['plate'], meta['mjd'], meta['fiber']):>22d}"
    cards = [
        _card("SIMPLE", True, "conforms to FITS standard"), _card("BITPIX", 8, "array data type"),
        _card("NAXIS", 0, "number of array dimensions"), _card("EXTEND", True),
        _card("TELESCOP", "SDSS 2.5-M", "Sloan Digital Sky Survey"),
        _card("ORIGIN", "galvae.sources.mock", "synthetic spectrum (bagpipes), not SDSS data"),
        _card("MJD", meta["mjd"], "MJD of observation"), _card("PLATEID", meta["plate"], "Plate Id"),
        _card("FIBERID", meta["fiber"], "Fiber number (1-640)"),
        _card("RADEG", round(meta["ra"], 6), "Right Ascension (degrees)"),
        _card("DECDEG", round(meta["dec"], 6), "Declination (degrees)"),
        _card("PLUG_RA", round(meta["ra"], 6), "RA of object [deg]"),
        _card("PLUG_DEC", round(meta["dec"], 6), "dec of object [deg]"),
        _card("EXPTIME", 2700.0, "Minimum of exposure times for all cameras"),
        _card("RUN2D", RUN2D, "Spectroscopic 2D reduction (extraction) name"),
        _card("VACUUM", True, "Wavelengths are in vacuum"),
        _card("COEFF0", round(float(obs.loglam[0]), 4), "Central wavelength (log10) of first pixel"),
        _card("COEFF1", 1e-4, "Log10 dispersion per pixel"), _card("BUNIT", "1E-17 erg/cm^2/s/Ang"),
        _card("SPEC_ID", sid, "Unique object identifier"),
        _card("COMMENT", "Mock galaxy spectrum made by galvae.sources.mock (bagpipes + SDSS-like"),
        _card("COMMENT", "instrument); its true properties are in the survey's truth.fits."),
    ]
    return _header_bytes(cards)


def spec_lite_bytes(meta: dict, obs) -> bytes:
    """The bytes of one spec-lite file: PRIMARY, COADD, SPECOBJ."""
    return (_primary_bytes(meta, obs) + _bintable_bytes(coadd_table(obs), "COADD", ["Coadded spectrum"])
            + _bintable_bytes(specobj_row(meta, obs), "SPECOBJ"))


def write_spec_lite(path: Path, meta: dict, obs) -> None:
    """Write one spec-lite file (PRIMARY, COADD, SPECOBJ) atomically."""
    data = spec_lite_bytes(meta, obs)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


# ------------------------------------------------------------------------------------------------
# GSWLC-2-like catalogue
# ------------------------------------------------------------------------------------------------

# The columns and their order are the reader's (sources.catalogs), so the mock writes what it reads;
# the digits are the real .dat files': integers whole, positions and z to 1e-6, χ² to 0.01, the rest 0.001.
_GSWLC_DIGITS = {"ra": ".6f", "dec": ".6f", "z": ".6f", "chi2": ".2f"}


def catalogue_stream(seed: int, index: int) -> np.random.Generator:
    """The random stream of galaxy ``index``'s catalogue errors."""
    return np.random.default_rng([int(seed), int(index), 2])


def gswlc_row(seed: int, row: dict) -> dict:
    """One GSWLC-2 row: the truth seen through an SED fit's errors.

    Stellar mass: truth + N(0, e), e ~ 0.03–0.1 dex. SFR: truth + N(0, e) with e 0.05–0.2 dex on the
    main sequence, 0.3–0.7 dex for quiescent galaxies, whose UV+IR SFRs cannot fall much below
    sSFR ≈ 10^−12.3 (a floor with 0.25 dex scatter, as in GSWLC). Attenuations: truth + N(0, e).
    0.5 % of rows have a failed fit (flag_sed = 2, χ² > 30); 15 % have no UV detection (glxid −99).
    """
    rng = catalogue_stream(seed, row["index"])
    e_m = rng.uniform(0.03, 0.1)
    quiescent = row["logssfr"] < -11.0
    e_sfr = rng.uniform(0.3, 0.7) if quiescent else rng.uniform(0.05, 0.2)
    logm = row["logmstar"] + rng.normal(0.0, e_m)
    logsfr = row["logsfr"] + rng.normal(0.0, e_sfr)
    logsfr = max(logsfr, logm - 12.3 + rng.normal(0.0, 0.25))
    e_av = rng.uniform(0.05, 0.2)
    a_v = max(row["a_v"] + rng.normal(0.0, e_av), 0.0)
    a_b = max(row["a_b"] + rng.normal(0.0, 1.25 * e_av), 0.0)
    a_fuv = max(row["a_fuv"] + rng.normal(0.0, 2.0 * e_av), 0.0)
    flag_uv = int(rng.choice([0, 1, 2, 3], p=[0.15, 0.02, 0.23, 0.60]))
    flag_sed = 2 if rng.random() < 0.005 else 0
    return {
        "objid": OBJID_BASE + row["index"],
        "glxid": GLXID_BASE + row["index"] if flag_uv else MISSING,
        "plate": row["plate"], "mjd": row["mjd"], "fiber": row["fiber"], "ra": row["ra"], "dec": row["dec"],
        "z": row["z"],
        "chi2": float(10.0 ** rng.normal(0.0, 0.25)) if not flag_sed else 30.0 + rng.exponential(20.0),
        "logmstar": logm, "e_logmstar": e_m, "logsfr": logsfr, "e_logsfr": e_sfr,
        "a_fuv": a_fuv, "e_a_fuv": 2.0 * e_av, "a_b": a_b, "e_a_b": 1.25 * e_av, "a_v": a_v, "e_a_v": e_av,
        "flag_sed": flag_sed, "uv_survey": int(rng.choice([1, 2, 3], p=[0.3, 0.6, 0.1])),
        "flag_uv": flag_uv, "flag_midir": int(rng.choice([0, 1, 2], p=[0.3, 0.6, 0.1])), "flag_mgs": 1,
    }


def gswlc_line(r: dict) -> str:
    """One text line of the catalogue, its fields in :data:`galvae.sources.catalogs.GSWLC_COLUMNS` order."""
    return " ".join(format(r[name], "d" if name in GSWLC_INT_COLUMNS else _GSWLC_DIGITS.get(name, ".3f"))
                    for name in GSWLC_COLUMNS)


def write_gswlc(path: Path, lines: list[str]) -> None:
    """Write GSWLC-2 lines (see :func:`gswlc_line`) without a header, as the real .dat files."""
    text = "\n".join(lines) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


# ------------------------------------------------------------------------------------------------
# MPA-JHU DR7-like catalogue: gal_info + gal_fiboh (gas-phase metallicity)
# ------------------------------------------------------------------------------------------------

#: gal_fiboh's value where no metallicity was measured (read_mpajhu turns it into NaN).
MPAJHU_MISSING = -99.9
#: A subset of the columns of gal_info_dr7_v5_2.fits, with their real formats.
_GAL_INFO_DTYPE = np.dtype([
    ("PLATEID", ">i2"), ("MJD", ">i4"), ("FIBERID", ">i2"), ("RA", ">f4"), ("DEC", ">f4"),
    ("PRIMTARGET", ">i4"), ("SECTARGET", ">i4"), ("TARGETTYPE", "S19"), ("SPECTROTYPE", "S6"),
    ("SUBCLASS", "S21"), ("Z", ">f4"), ("Z_ERR", ">f4"), ("Z_WARNING", ">i4"), ("V_DISP", ">f4"),
    ("V_DISP_ERR", ">f4"), ("SN_MEDIAN", ">f4"), ("RELEASE", "S8"),
])  # fmt: skip
#: The columns of gal_fiboh_dr7_v5_2.fits (percentiles of the 12 + log O/H likelihood), row-aligned with gal_info.
_GAL_FIBOH_DTYPE = np.dtype([(name, ">f4") for name in
                             ("AVG", "ENTROPY", "P2P5", "P16", "MEDIAN", "P84", "P97P5", "MODE")])


def redshift_error(sn: float) -> float:
    """1σ redshift error of a spectrum of median S/N ``sn`` (≥ 1), as the SDSS pipeline reports it."""
    return 8e-6 + 1.5e-4 / sn


def vdisp_error(vdisp: float, sn: float) -> float:
    """1σ error (km/s) of a measured stellar velocity dispersion ``vdisp`` at median S/N ``sn`` (≥ 1)."""
    return 5.0 + 0.04 * vdisp + 300.0 / sn


def mpajhu_stream(seed: int, index: int) -> np.random.Generator:
    """The random stream of galaxy ``index``'s MPA-JHU measurements (independent of the GSWLC one)."""
    return np.random.default_rng([int(seed), int(index), 3])


def has_metallicity(row: dict) -> bool:
    """Whether MPA-JHU would give the galaxy a gas-phase metallicity: star-forming, with clear emission
    lines (true EW(Hα) > 3 Å and sSFR > 10⁻¹¹ /yr) and line ratios below the Kauffmann et al. (2003)
    line. As in the real catalogue (Tremonti et al. 2004, Brinchmann et al. 2004), galaxies whose lines
    do not allow a strong-line estimate (AGN and composites included) have none."""
    return bool(row["ew_halpha"] > 3.0 and row["logssfr"] > -11.0 and row.get("bpt_class", 0) == 0)


class MpajhuColumns:
    """The gal_info and gal_fiboh tables of a mock filled row by row (``row['index']`` places them).

    gal_info: the truth's position, SUBCLASS, and a redshift and velocity dispersion measured again
    (errors as the SDSS pipeline's, :func:`redshift_error`, :func:`vdisp_error`). gal_fiboh: for a
    galaxy with :func:`has_metallicity`, the truth's ``metallicity`` (12 + log O/H) + N(0, e) with
    e ~ U(0.03, 0.1) dex, its likelihood a Gaussian of width e (P16/P84 at ∓e, P2P5/P97P5 at ∓2e);
    for the others every column is −99.9, the real catalogue's missing value. Draws come from
    :func:`mpajhu_stream`, so the rows depend on (seed, index) alone.
    """

    def __init__(self, n: int):
        self.info = np.zeros(n, _GAL_INFO_DTYPE)
        self.fiboh = np.full(n, MPAJHU_MISSING, _GAL_FIBOH_DTYPE)

    def add(self, seed: int, row: dict) -> None:
        i = int(row["index"])
        rng = mpajhu_stream(seed, i)
        sn = max(float(row["sn_median"]), 1.0)
        z_err, v_err = redshift_error(sn), vdisp_error(row["vdisp"], sn)
        values = {
            "PLATEID": row["plate"], "MJD": row["mjd"], "FIBERID": row["fiber"], "RA": row["ra"], "DEC": row["dec"],
            "PRIMTARGET": 64, "SECTARGET": 0, "TARGETTYPE": "GALAXY", "SPECTROTYPE": "GALAXY",
            "SUBCLASS": row["subclass"], "Z": row["z"] + rng.normal(0.0, z_err), "Z_ERR": z_err, "Z_WARNING": 0,
            "V_DISP": max(row["vdisp"] + rng.normal(0.0, v_err), 0.0), "V_DISP_ERR": v_err,
            "SN_MEDIAN": row["sn_median"], "RELEASE": "dr7",
        }
        for name, value in values.items():
            self.info[name][i] = value
        if has_metallicity(row):
            e = rng.uniform(0.03, 0.1)
            oh = row["metallicity"] + rng.normal(0.0, e)
            entropy = 0.5 * math.log(2.0 * math.pi * math.e * e * e)  # of the Gaussian likelihood, nats
            for name, value in (("AVG", oh), ("ENTROPY", entropy), ("P2P5", oh - 2 * e), ("P16", oh - e),
                                ("MEDIAN", oh), ("P84", oh + e), ("P97P5", oh + 2 * e), ("MODE", oh)):
                self.fiboh[name][i] = value

    @property
    def n_metallicity(self) -> int:
        """Galaxies with a measured metallicity."""
        return int(np.count_nonzero(self.fiboh["MEDIAN"] > 0))

    def write(self, info_path: Path, fiboh_path: Path) -> None:
        """Write ``gal_info`` and ``gal_fiboh`` (PRIMARY + one BINTABLE each), atomically."""
        note = "Mock MPA-JHU DR7 table made by galvae.sources.mock (not SDSS data)."
        for path, table, name in ((info_path, self.info, "GAL_INFO"), (fiboh_path, self.fiboh, "GAL_FIBOH")):
            primary = _header_bytes([_card("SIMPLE", True, "conforms to FITS standard"), _card("BITPIX", 8),
                                     _card("NAXIS", 0), _card("EXTEND", True), _card("COMMENT", note)])
            data = primary + _bintable_bytes(table, name)
            atomic_write(path, lambda tmp, data=data: tmp.write_bytes(data))


# ------------------------------------------------------------------------------------------------
# Truth table
# ------------------------------------------------------------------------------------------------

#: Truth columns: name -> (unit, description).
TRUTH_COLUMNS = {
    "id": ("", "spectrum id PLATE-MJD-FIBER"),
    "index": ("", "galaxy index in the mock (its random streams are seeded by (seed, index))"),
    "plate": ("", "mock plate"), "mjd": ("", "mock MJD"), "fiber": ("", "fibre 1-640"),
    "specobjid": ("", "SDSS-style specObjID (string: exceeds int64)"),
    "filename": ("", "spectrum file, relative to the survey folder"),
    "ra": ("deg", "right ascension"), "dec": ("deg", "declination"),
    "z": ("", "true redshift (SPECOBJ Z adds the measurement error Z_ERR)"),
    "logmstar": ("", "log10 surviving stellar mass / Msun (whole galaxy)"),
    "logmformed": ("", "log10 stellar mass ever formed / Msun"),
    "logsfr": ("", "log10 SFR / (Msun/yr), averaged over the last 100 Myr"),
    "logssfr": ("", "log10 specific SFR / (1/yr) = logsfr - logmstar"),
    "logzsol": ("", "log10 Z/Zsun of the stars"),
    "metallicity": ("", "gas-phase 12 + log10(O/H) = 8.69 (Asplund et al. 2009 solar) + log10 Zgas/Zsun, the gas of "
                        "the nebular lines: logzsol + the Tremonti et al. (2004) gas-star offset at this mass"),
    "mwage": ("Gyr", "mass-weighted stellar age"),
    "age": ("Gyr", "time since star formation began (delayed-tau SFH)"),
    "tau": ("Gyr", "delayed-tau SFH timescale, SFR(t) ~ t exp(-t/tau)"),
    "a_v": ("mag", "Calzetti V-band attenuation of stars older than 10 Myr"),
    "a_v_lines": ("mag", "Calzetti V-band attenuation of the nebular lines and of stars younger than 10 Myr"),
    "a_b": ("mag", "Calzetti B-band (4400 A) attenuation of stars older than 10 Myr"),
    "a_fuv": ("mag", "Calzetti FUV (1528 A) attenuation of stars older than 10 Myr"),
    "vdisp": ("km/s", "stellar velocity dispersion"),
    "vdisp_gas": ("km/s", "velocity dispersion of the emission lines"),
    "alpha_fe": ("", "[alpha/Fe] of the stars (Lick Mg features deepened, Fe features weakened)"),
    "logu": ("", "log10 ionisation parameter"),
    "quiescent": ("", "drawn from the quiescent population"),
    "fiber_frac": ("", "fraction of the galaxy's light inside the 3 arcsec fibre"),
    "sn_median": ("", "median S/N per pixel over good pixels (SN_MEDIAN_ALL)"),
    "depth": ("", "noise depth factor of the observation (variance multiplier)"),
    "ew_halpha": ("Angstrom", "true rest-frame H-alpha emission equivalent width (host + AGN)"),
    "ew_oiii": ("Angstrom", "true rest-frame [O III]5007 emission equivalent width (host + AGN)"),
    "agn_class": ("", "nucleus: 0 none, 1 Seyfert (AGN), 2 LINER-like"),
    "agn_log_loiii": ("", "log10 L[O III]5007 / Lsun of the AGN in the fibre, observed (NaN without AGN)"),
    "agn_oiii_frac": ("", "AGN share of the [O III]5007 flux, 0-1 (AGN strength relative to star formation)"),
    "oiii_wing_frac": ("", "share of the AGN's [O III] flux in a broad, shifted outflow wing (0 without)"),
    "ew_nad_ism": ("Angstrom", "rest-frame EW(D1+D2) of interstellar Na I D absorption, from A_V (Poznanski+2012)"),
    "bpt_n2ha": ("", "log10 [N II]6584/H-alpha of all lines (host + AGN), noiseless"),
    "bpt_s2ha": ("", "log10 [S II]6717,6731/H-alpha of all lines, noiseless"),
    "bpt_o3hb": ("", "log10 [O III]5007/H-beta of all lines, noiseless"),
    "bpt_class": ("", "BPT [N II] class of all lines: 0 star-forming, 1 composite, 2 AGN, -1 undefined"),
    "calib_rms": ("", "rms of the smooth flux-calibration error over the spectrum (fraction)"),
    "sky_resid_rms": ("", "rms sky-subtraction residual / sky-line flux at bright sky lines"),
    "fiber_gmag": ("mag", "AB magnitude of the fibre spectrum over 4200-5400 A (SDSS g core), noiseless"),
    "subclass": ("", "SDSS-style SUBCLASS written in SPECOBJ"),
}


_STRING_COLUMNS = ("id", "specobjid", "filename", "subclass")


class TruthColumns:
    """The truth table filled row by row (rows may come in any order; ``row['index']`` places them)."""

    def __init__(self, n: int):
        self.n = n
        self.columns: dict[str, np.ndarray] = {}
        self.filled = np.zeros(n, bool)

    def add(self, row: dict) -> None:
        i = int(row["index"])
        for name in TRUTH_COLUMNS:
            value = row[name]
            if name not in self.columns:
                dtype = object if name in _STRING_COLUMNS else type(value)
                self.columns[name] = np.zeros(self.n, dtype=dtype)
            self.columns[name][i] = value
        self.filled[i] = True

    def table(self, meta: dict):
        """An astropy Table with units and descriptions (ValueError if a row is missing)."""
        from astropy.table import Table

        if not self.filled.all():
            raise ValueError(f"truth rows missing for {int((~self.filled).sum())} galaxies")
        table = Table()
        for name, (unit, description) in TRUTH_COLUMNS.items():
            values = self.columns[name]
            table[name] = values.astype(str) if name in _STRING_COLUMNS else values
            table[name].description = description
            if unit:
                table[name].unit = unit
        table.meta.update(meta)
        return table


def write_truth(path: Path, table) -> None:
    """Write the truth table as FITS (atomically)."""
    atomic_write(path, lambda tmp: table.write(tmp, format="fits"))
