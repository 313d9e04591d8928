"""Tests for galvae.sources.catalogs: small files in the published formats, read back and joined."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galvae.sources import catalogs
from galvae.sources.catalogs import (
    catalog_properties,
    format_ids,
    match_properties,
    parse_ids,
    read_catalog,
    read_gswlc,
    read_mpajhu,
    read_specobj,
)

# --------------------------------------------------------------------------------------------------
# Writers of the published formats
# --------------------------------------------------------------------------------------------------

BIG_OBJID = 1237648720693755918  # > 2**53: exact only if kept as int64


def gswlc_line(plate, mjd, fiber, *, objid=BIG_OBJID, glxid=3183024797052567880, z="0.07807",
               logmstar="10.540", e_logmstar="0.040", logsfr="-0.317", e_logsfr="0.230",
               a_fuv="1.286", e_a_fuv="0.364", a_b="0.587", e_a_b="0.196", a_v="0.473", e_a_v="0.159",
               flag_sed=0, uv_survey=2, flag_uv=1, flag_midir=5, flag_mgs=1) -> str:  # fmt: skip
    """One line of a GSWLC-2 .dat file: 24 whitespace-separated fields, no header."""
    return (
        f"{objid} {glxid} {plate:5d} {mjd:5d} {fiber:4d}  195.0040417  -0.6628384 {z:>8} {'1.33':>6} "
        f"{logmstar:>7} {e_logmstar:>6} {logsfr:>7} {e_logsfr:>6} {a_fuv:>6} {e_a_fuv:>6} {a_b:>6} {e_a_b:>6} "
        f"{a_v:>6} {e_a_v:>6} {flag_sed} {uv_survey} {flag_uv} {flag_midir} {flag_mgs}"
    )


def write_text(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def write_fits_table(path, columns):
    """A FITS file with an empty primary HDU and one binary table; columns: (name, format, values)."""
    hdu = fits.BinTableHDU.from_columns([fits.Column(name=n, format=f, array=np.asarray(a)) for n, f, a in columns])
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    return path


def space_pad_strings(path, values, width):
    """Rewrite NUL-padded strings in a FITS data section as blank-padded, as SDSS's files are."""
    raw = path.read_bytes()
    for v in values:
        raw = raw.replace(v.encode().ljust(width, b"\0"), v.encode().ljust(width, b" "))
    path.write_bytes(raw)


# Keys used across the tests
K_A, K_B, K_C, K_D = (269, 51910, 145), (270, 51909, 10), (271, 51883, 300), (272, 51941, 5)


@pytest.fixture
def x2_path(tmp_path):
    """GSWLC-X2-like file: good row, missing UV (−99), failed fit, malformed lines, −99.9/−99.0 sentinels."""
    return write_text(
        tmp_path / "GSWLC-X2.dat",
        [
            gswlc_line(*K_A),  # 1
            gswlc_line(*K_B, a_fuv="-99", e_a_fuv="-99", uv_survey=-99, glxid=-99),  # 2
            gswlc_line(*K_C, flag_sed=1, logmstar="11.20", logsfr="1.50"),  # 3 failed SED fit
            " ".join(gswlc_line(273, 51942, 6).split()[:23]),  # 4 malformed: 23 fields
            "",  # 5 blank: ignored, not a reject
            gswlc_line(274, 51943, 7, z="abc"),  # 6 non-numeric
            gswlc_line(*K_D, logsfr="-99.9", e_logsfr="-99.0", z="-99"),  # 7 sentinels
            gswlc_line(-99, 51944, 8),  # 8 missing plate
        ],
    )


@pytest.fixture
def mpajhu_paths(tmp_path):
    """gal_info + gal_fiboh pair (5 rows) with MPA-JHU sentinels in MEDIAN and V_DISP."""
    info = write_fits_table(
        tmp_path / "gal_info_dr7_v5_2.fits",
        [
            ("PLATEID", "I", np.array([269, 270, 500, 501, 601], np.int16)),
            ("MJD", "J", np.array([51910, 51909, 51990, 51991, 52001], np.int32)),
            ("FIBERID", "I", np.array([145, 10, 20, 21, 31], np.int16)),
            ("RA", "E", np.full(5, 10.0, np.float32)),
            ("DEC", "E", np.full(5, -1.0, np.float32)),
            ("Z", "E", np.array([0.0781, 0.1001, 0.03, 0.04, 0.05], np.float32)),
            ("V_DISP", "E", np.array([150.0, 0.0, -1.0, 80.0, 150.0], np.float32)),
            ("SPECTROTYPE", "6A", np.array(["GALAXY"] * 5)),
        ],
    )
    fiboh = write_fits_table(
        tmp_path / "gal_fiboh_dr7_v5_2.fits",
        [
            (name, "E", np.asarray(values, np.float32))
            for name, values in {
                "AVG": [8.9, -99.9, -9999, 9.0, 8.7],
                "MEDIAN": [8.9, -99.9, -9999, np.nan, 0.0],
                "P2P5": [8.7, -99.9, -9999, 8.8, 8.5],
                "P16": [8.8, -99.9, -9999, 8.9, 8.6],
                "P84": [9.0, -99.9, -9999, 9.1, 8.8],
                "P97P5": [9.1, -99.9, -9999, 9.2, 8.9],
                "MODE": [8.9, -99.9, -9999, 9.0, 8.7],
                "ENTROPY": [1.0, -99.9, -9999, 1.0, 1.0],
            }.items()
        ],
    )
    return info, fiboh


@pytest.fixture
def specobj_path(tmp_path):
    """specObj-like table with blank-padded strings, a VDISP of 0 and a 5-digit plate."""
    path = write_fits_table(
        tmp_path / "specObj-dr17.fits",
        [
            ("PLATE", "J", np.array([269, 600, 601, 10000, 269], np.int32)),
            ("MJD", "J", np.array([51910, 52000, 52001, 58000, 51910], np.int32)),
            ("FIBERID", "J", np.array([145, 30, 31, 1, 145], np.int32)),
            ("SPECOBJID", "21A", np.array(["302888963143837696", "675522431573182464", "675522706451089408",
                                           "11259185018214322176", "999"])),  # fmt: skip
            ("CLASS", "6A", np.array(["GALAXY", "GALAXY", "GALAXY", "QSO", "STAR"])),
            ("SUBCLASS", "21A", np.array(["STARFORMING", "", "AGN", "BROADLINE", ""])),
            ("Z", "E", np.array([0.07805, 0.12, 0.05, 1.5, 0.5], np.float32)),
            ("Z_ERR", "E", np.full(5, 1e-5, np.float32)),
            ("ZWARNING", "J", np.array([0, 0, 0, 4, 0], np.int32)),
            ("VDISP", "E", np.array([0.0, 210.5, 190.0, 0.0, 99.0], np.float32)),
            ("RUN2D", "7A", np.array(["26", "26", "26", "v5_13_2", "26"])),
            ("SURVEY", "6A", np.array(["sdss", "sdss", "sdss", "eboss", "sdss"])),
            ("SN_MEDIAN_ALL", "E", np.full(5, 12.0, np.float32)),
        ],
    )
    for values, width in ((["GALAXY", "QSO", "STAR"], 6), (["STARFORMING", "AGN", "BROADLINE"], 21),
                          (["26", "v5_13_2"], 7), (["sdss", "eboss"], 6), (["999"], 21)):  # fmt: skip
        space_pad_strings(path, values, width)
    return path


# --------------------------------------------------------------------------------------------------
# GSWLC-2
# --------------------------------------------------------------------------------------------------


def test_read_gswlc_values_sentinels_and_flags(x2_path):
    t = read_gswlc(x2_path)
    assert list(t["id"]) == ["0269-51910-0145", "0270-51909-0010", "0271-51883-0300", "0272-51941-0005"]
    assert t["objid"].dtype == np.int64 and t["objid"][0] == BIG_OBJID
    assert t["glxid"][0] == 3183024797052567880 and t["glxid"][1] == -99  # raw ints kept as written
    assert t["logmstar"][0] == 10.54 and t["logsfr"][0] == -0.317
    assert t["logssfr"][0] == pytest.approx(-0.317 - 10.540, abs=1e-12)
    # row 2: no UV -> a_fuv and its error NaN, the rest of the fit kept
    assert np.isnan(t["a_fuv"][1]) and np.isnan(t["e_a_fuv"][1]) and t["a_b"][1] == 0.587
    # row 3: failed SED fit -> every fit column NaN, row kept with z
    for name in catalogs._GSWLC_FIT_COLUMNS + ("logssfr",):
        assert np.isnan(t[name][2]), name
    assert t["z"][2] == 0.07807 and t["flag_sed"][2] == 1
    # row 4: −99.9 and −99.0 and −99 are all the sentinel
    assert np.isnan(t["logsfr"][3]) and np.isnan(t["e_logsfr"][3]) and np.isnan(t["z"][3])
    assert np.isnan(t["logssfr"][3]) and t["logmstar"][3] == 10.54
    # NaN exactly where expected in the property block
    nan_logssfr = np.isnan(t["logssfr"])
    assert nan_logssfr.tolist() == [False, False, True, True]
    assert t.meta["n_flagged"] == 1 and t.meta["n_rows"] == 4


def test_read_gswlc_reports_rejects_with_line_numbers(x2_path):
    t = read_gswlc(x2_path)
    assert t.meta["n_rejected"] == 3
    lines = [n for n, _ in t.meta["rejects"]]
    reasons = [r for _, r in t.meta["rejects"]]
    assert lines == [4, 6, 8]
    assert "expected 24 fields, found 23" in reasons[0]
    assert "column z" in reasons[1] and "'abc'" in reasons[1]
    assert "plate" in reasons[2]


def test_read_gswlc_clean_file_has_no_rejects_and_same_values(tmp_path, x2_path):
    clean = write_text(tmp_path / "clean.dat", [gswlc_line(*K_A), gswlc_line(*K_C, flag_sed=1)])
    t = read_gswlc(clean)
    assert t.meta["rejects"] == [] and len(t) == 2
    reference = read_gswlc(x2_path)  # goes through the slow path
    for name in ("objid", "logmstar", "logssfr", "a_v", "flag_mgs"):
        np.testing.assert_array_equal(t[name][:1], reference[name][:1])
    assert np.isnan(t["logmstar"][1])


def test_read_gswlc_chunked_fallback_keeps_good_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(catalogs, "_GSWLC_CHUNK_LINES", 3)
    lines = [gswlc_line(300 + i, 52000, i + 1) for i in range(10)]
    lines[6] = lines[6].replace("0.07807", "0.07.807")  # line 7 bad, in the 3rd chunk
    lines.insert(2, "# a comment line")  # shifts the bad line to line 8
    t = read_gswlc(write_text(tmp_path / "chunks.dat", lines))
    assert len(t) == 9 and t.meta["rejects"][0][0] == 8
    assert list(t["plate"]) == [300, 301, 302, 303, 304, 305, 307, 308, 309]


def test_read_gswlc_gzip_and_all_bad(tmp_path):
    gz = tmp_path / "GSWLC-M2.dat.gz"
    gz.write_bytes(gzip.compress((gswlc_line(*K_B) + "\n").encode()))
    assert list(read_gswlc(gz)["id"]) == ["0270-51909-0010"]
    with pytest.raises(ValueError, match="no usable GSWLC-2 row"):
        read_gswlc(write_text(tmp_path / "bad.dat", ["1 2 3", "4 5 6"]))


# --------------------------------------------------------------------------------------------------
# MPA-JHU
# --------------------------------------------------------------------------------------------------


def test_read_mpajhu_metallicity_and_vdisp(mpajhu_paths):
    t = read_mpajhu(*mpajhu_paths)
    assert list(t["id"]) == ["0269-51910-0145", "0270-51909-0010", "0500-51990-0020", "0501-51991-0021",
                             "0601-52001-0031"]  # fmt: skip
    assert t["plate"].dtype.kind == "i" and t["metallicity"].dtype == np.float64
    assert np.isnan(t["metallicity"]).tolist() == [False, True, True, True, True]  # −99.9, −9999, NaN, 0
    assert t["metallicity"][0] == pytest.approx(8.9, abs=1e-6)
    assert t["e_metallicity"][0] == pytest.approx(0.1, abs=1e-6)
    assert np.isnan(t["vdisp"]).tolist() == [False, True, True, False, False]  # 0 and −1 invalid
    assert t["vdisp"][3] == 80.0 and t["z"][1] == pytest.approx(0.1001, rel=1e-6)


def test_read_mpajhu_row_count_mismatch_names_both_files(tmp_path, mpajhu_paths):
    info, _ = mpajhu_paths
    short = write_fits_table(tmp_path / "gal_fiboh_short.fits", [("MEDIAN", "E", np.full(4, 9.0, np.float32))])
    with pytest.raises(ValueError) as err:
        read_mpajhu(info, short)
    assert str(info) in str(err.value) and str(short) in str(err.value)
    assert "5 rows" in str(err.value) and "4" in str(err.value)


# --------------------------------------------------------------------------------------------------
# specObj
# --------------------------------------------------------------------------------------------------


def test_read_specobj_strips_padding_and_converts(specobj_path):
    assert b"QSO   " in specobj_path.read_bytes()  # the file really is blank-padded
    t = read_specobj(specobj_path)
    assert list(t["class"]) == ["GALAXY", "GALAXY", "GALAXY", "QSO", "STAR"]
    assert list(t["subclass"]) == ["STARFORMING", "", "AGN", "BROADLINE", ""]
    assert list(t["run2d"]) == ["26", "26", "26", "v5_13_2", "26"]
    assert list(t["survey"])[3] == "eboss"
    assert t["specobjid"][3] == "11259185018214322176" and t["specobjid"][4] == "999"
    assert t["id"][3] == "10000-58000-0001"
    assert t["zwarning"].dtype.kind == "i" and t["zwarning"][3] == 4
    assert np.isnan(t["vdisp"]).tolist() == [True, False, False, True, False]
    assert t["z"][1] == pytest.approx(0.12, rel=1e-6)


# --------------------------------------------------------------------------------------------------
# read_catalog
# --------------------------------------------------------------------------------------------------


def test_read_catalog_detects_formats(x2_path, specobj_path):
    g = read_catalog(x2_path)
    assert g.meta["format"] == "gswlc" and len(g) == 4 and "z" in g.colnames
    s = read_catalog(specobj_path)
    assert s.meta["format"] == "specobj"
    assert {"plate", "mjd", "fiber", "z", "class", "zwarning", "run2d", "survey"} <= set(s.colnames)


def test_read_catalog_refuses_gal_info_alone(mpajhu_paths):
    with pytest.raises(ValueError, match="gal_fiboh"):
        read_catalog(mpajhu_paths[0])


@pytest.mark.parametrize("kind", ["csv", "fits_table", "fits_image", "empty"])
def test_read_catalog_rejects_unrelated_files(tmp_path, kind):
    path = tmp_path / f"other.{kind}"
    if kind == "csv":
        write_text(path, ["plate,mjd,fiber", "269,51910,145"])
    elif kind == "fits_table":
        write_fits_table(path, [("FLUX", "E", np.ones(3, np.float32))])
    elif kind == "fits_image":
        fits.PrimaryHDU(np.zeros((2, 2))).writeto(path)
    else:
        path.write_bytes(b"")
    with pytest.raises(ValueError) as err:
        read_catalog(path)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------------------------------
# The join
# --------------------------------------------------------------------------------------------------


def test_duplicate_rule_across_and_within_gswlc_tables(tmp_path):
    k1, k2, k3, k4, k5 = [(400 + i, 52100, 10 + i) for i in range(5)]
    x2 = read_gswlc(write_text(tmp_path / "GSWLC-X2.dat", [
        gswlc_line(*k1, flag_sed=1),              # failed in X2 …
        gswlc_line(*k2, logmstar="10.10"),        # good in X2 and in M2 -> X2 wins
        gswlc_line(*k3, logmstar="9.50"),         # twice in X2, both good -> first wins
        gswlc_line(*k3, logmstar="9.70"),
        gswlc_line(*k4, flag_sed=2),              # twice in X2: failed then good -> good wins
        gswlc_line(*k4, logmstar="11.40"),
    ]))  # fmt: skip
    m2 = read_gswlc(write_text(tmp_path / "GSWLC-M2.dat", [
        gswlc_line(*k1, logmstar="10.90"),        # … good in M2 -> M2 wins over the earlier table
        gswlc_line(*k2, logmstar="10.90"),
        gswlc_line(*k5, flag_sed=1),              # only a failed fit anywhere -> kept, flagged
    ]))  # fmt: skip
    props, stats = catalog_properties(gswlc=[x2, m2])
    by_plate = {int(p): i for i, p in enumerate(props["plate"])}
    assert props["logmstar"][by_plate[400]] == 10.90
    assert props["logmstar"][by_plate[401]] == 10.10
    assert props["logmstar"][by_plate[402]] == 9.50
    assert props["logmstar"][by_plate[403]] == 11.40
    assert np.isnan(props["logmstar"][by_plate[404]])
    assert len(props) == 5 and stats.keys == 5
    assert stats.rows_read == {"gswlc": 9} and stats.gswlc_rows_per_table == [6, 3]
    assert stats.duplicates_dropped == {"gswlc": 4}
    assert stats.flagged_rows == 3 and stats.flagged_keys == 1
    # the order of the list is the priority: M2 first makes M2 win for k2
    props_m2_first, _ = catalog_properties(gswlc=[m2, x2])
    assert props_m2_first["logmstar"][by_plate[401]] == 10.90


def test_join_preferences_nans_and_match_counts(x2_path, mpajhu_paths, specobj_path):
    gswlc, mpajhu, specobj = read_gswlc(x2_path), read_mpajhu(*mpajhu_paths), read_specobj(specobj_path)
    props, stats = catalog_properties(gswlc=gswlc, mpajhu=mpajhu, specobj=specobj)
    row = {i: n for n, i in enumerate(props["id"])}
    a, b, c = row["0269-51910-0145"], row["0270-51909-0010"], row["0271-51883-0300"]
    m_only, s_only = row["0500-51990-0020"], row["0600-52000-0030"]
    s_and_m, qso = row["0601-52001-0031"], row["10000-58000-0001"]
    assert list(props["plate"]) == sorted(props["plate"])  # sorted by key
    # z: specObj > GSWLC > MPA-JHU
    assert props["z"][a] == pytest.approx(0.07805, rel=1e-6)
    assert props["z"][b] == 0.07807
    assert props["z"][m_only] == pytest.approx(0.03, rel=1e-6)
    # vdisp: specObj when valid, else MPA-JHU
    assert props["vdisp"][a] == 150.0  # specObj VDISP = 0 -> MPA-JHU
    assert props["vdisp"][s_and_m] == 190.0  # both valid -> specObj
    assert props["vdisp"][s_only] == 210.5
    assert np.isnan(props["vdisp"][b]) and np.isnan(props["vdisp"][qso])
    # GSWLC and MPA-JHU properties, NaN where a catalogue has no row or a failed fit
    assert props["logssfr"][a] == pytest.approx(-10.857) and props["metallicity"][a] == pytest.approx(8.9, abs=1e-6)
    assert np.isnan(props["metallicity"][b]) and np.isnan(props["logmstar"][c]) and np.isnan(props["logmstar"][m_only])
    assert np.isfinite(props["logmstar"]).sum() == 3  # K_A, K_B, K_D
    # counts: gswlc 4 keys, mpajhu 5, specobj 4 unique (one duplicate of K_A dropped: the first is kept)
    assert stats.rows_read == {"gswlc": 4, "mpajhu": 5, "specobj": 5}
    assert stats.duplicates_dropped == {"gswlc": 0, "mpajhu": 0, "specobj": 1}
    assert stats.matched == {"gswlc": 2, "mpajhu": 3, "specobj": 2}
    assert stats.unmatched == {"gswlc": 2, "mpajhu": 2, "specobj": 2}
    assert stats.overlap == {"gswlc&mpajhu": 2, "gswlc&specobj": 1, "mpajhu&specobj": 2}
    assert stats.keys == len(props) == 9
    assert stats.flagged_keys == 1


def test_catalog_properties_needs_a_catalogue():
    with pytest.raises(ValueError):
        catalog_properties()


# --------------------------------------------------------------------------------------------------
# Spectra <-> properties
# --------------------------------------------------------------------------------------------------


def test_match_properties_order_nans_and_counts(x2_path, mpajhu_paths, specobj_path):
    props, _ = catalog_properties(gswlc=read_gswlc(x2_path), mpajhu=read_mpajhu(*mpajhu_paths),
                                  specobj=read_specobj(specobj_path))  # fmt: skip
    ids = ["0600-52000-0030", "not-an-id", "0269-51910-0145", "9999-59999-0999", "269-51910-145",
           "10000-58000-0001"]  # fmt: skip
    t, stats = match_properties(ids, props)
    assert list(t["id"]) == ids
    assert t["matched"].tolist() == [True, False, True, False, True, True]
    assert (stats.n_ids, stats.matched, stats.unmatched, stats.invalid) == (6, 4, 2, 1)
    assert t["vdisp"][0] == 210.5 and t["logmstar"][2] == 10.54 and t["logmstar"][4] == 10.54
    assert np.isnan(t["z"][1]) and np.isnan(t["z"][3]) and np.isfinite(t["z"][5])
    assert t["plate"].tolist() == [600, -1, 269, 9999, 269, 10000]


def test_match_properties_many_ids_vectorised():
    rng = np.random.default_rng(1)
    n = 200_000
    plate, mjd, fiber = rng.integers(266, 12000, n), rng.integers(51000, 59000, n), rng.integers(1, 1001, n)
    keys = np.unique(catalogs._key_codes(plate, mjd, fiber))
    p, m, f = catalogs._keys_to_parts(keys)
    props = Table({"id": format_ids(p, m, f), "plate": p, "mjd": m, "fiber": f, "z": np.arange(len(p), dtype=float)})
    take = rng.permutation(len(p))[:100_000]
    t, stats = match_properties(props["id"][take], props)
    assert stats.matched == 100_000
    np.testing.assert_array_equal(t["z"], take.astype(float))


def test_format_and_parse_ids_round_trip():
    ids = format_ids([269, 10000, 1], [51910, 58000, 1], [145, 1, 1000])
    assert ids.tolist() == ["0269-51910-0145", "10000-58000-0001", "0001-00001-1000"]
    assert [f"{p:04d}-{m:05d}-{f:04d}" for p, m, f in [(269, 51910, 145)]] == [ids[0]]
    plate, mjd, fiber = parse_ids(list(ids) + ["", "0269-5191X-0145", " 0269-51910-0145 "])
    assert plate.tolist() == [269, 10000, 1, -1, -1, 269]
    assert mjd.tolist() == [51910, 58000, 1, -1, -1, 51910]
    assert fiber.tolist() == [145, 1, 1000, -1, -1, 145]


def test_a_properties_table_is_read_as_it_is(tmp_path):
    from astropy.table import Table

    from galvae.sources.catalogs import load_properties

    t = Table({"id": ["0266-51602-0001", "0266-51602-0013"], "logmstar": [10.1, 9.2], "metallicity": [8.9, np.nan]})
    t.write(tmp_path / "truth.fits")
    props = load_properties(tmp_path / "truth.fits")
    assert props.meta["format"] == "properties"
    matched, stats = match_properties(["0266-51602-0013", "0266-51602-0002"], props)
    assert (stats.matched, stats.unmatched) == (1, 1)
    assert matched["logmstar"][0] == pytest.approx(9.2) and np.isnan(matched["logmstar"][1])


def test_match_properties_keeps_the_mask_of_a_masked_input_column():
    from astropy.table import MaskedColumn

    props = Table({"id": ["0266-51602-0001", "0266-51602-0002"],
                   "flag": MaskedColumn([7, 8], mask=[False, True]),
                   "mass": MaskedColumn([10.0, 11.0], mask=[False, True])})
    t, _ = match_properties(["0266-51602-0002", "0266-51602-0001", "0266-51602-0003"], props)
    assert t["flag"].mask.tolist() == [True, False, True] and t["flag"][1] == 7
    np.testing.assert_array_equal(t["mass"], [np.nan, 10.0, np.nan])
