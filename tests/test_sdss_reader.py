import csv

import numpy as np
import pytest
from astropy.io import fits

from galvae.sources.sdss import ObservedSpectrum, SpectrumReadError, read_spectra, read_spectrum

from conftest import write_spec_file


def _astropy_reference(path):
    """What astropy reads from the same file: the reference the fast reader must match exactly."""
    with fits.open(path) as hdul:
        coadd = hdul["COADD"].data
        meta_name = "SPECOBJ" if "SPECOBJ" in hdul else "SPALL"
        meta = hdul[meta_name].data[0]
        return {
            "flux": np.array(coadd["flux"]), "loglam": np.array(coadd["loglam"]),
            "ivar": np.array(coadd["ivar"]), "and_mask": np.array(coadd["and_mask"]),
            "plate": int(meta["PLATE"]), "mjd": int(meta["MJD"]), "fiber": int(meta["FIBERID"]),
            "z": float(meta["Z"]), "class": str(meta["CLASS"]).strip(), "zwarning": int(meta["ZWARNING"]),
            "specobjid": str(meta["SPECOBJID"]).strip(), "meta_hdu": meta_name,
        }


def test_real_files_match_astropy_and_manifest(sdss_dir):
    with open(sdss_dir / "MANIFEST.csv") as fh:
        manifest = {row["file"]: row for row in csv.DictReader(fh)}
    assert len(manifest) == 30
    for name, row in manifest.items():
        spec = read_spectrum(sdss_dir / name)
        ref = _astropy_reference(sdss_dir / name)
        np.testing.assert_array_equal(spec.flux, ref["flux"])
        np.testing.assert_array_equal(spec.ivar, ref["ivar"])
        np.testing.assert_array_equal(spec.and_mask, ref["and_mask"])
        np.testing.assert_array_equal(spec.wave, 10.0 ** ref["loglam"].astype(np.float64))
        assert spec.id == f"{ref['plate']:04d}-{ref['mjd']:05d}-{ref['fiber']:04d}"
        assert name == f"spec-{spec.id}.fits"
        assert spec.z == pytest.approx(float(row["z"]), abs=1e-5)
        assert spec.z == ref["z"]
        assert spec.spec_class == row["cls"] == ref["class"]
        assert spec.zwarning == int(row["zwarning"])
        assert spec.specobjid == ref["specobjid"]
        assert spec.meta_hdu == row["meta_hdu"]
        assert spec.flux.size == int(row["npix"])
        assert spec.run2d == row["run2d"]


def test_batch_on_real_files_rejects_only_the_empty_one(sdss_dir):
    paths = sorted(sdss_dir.glob("spec-*.fits"))
    spectra, rejects = read_spectra(paths)
    assert len(spectra) == 29
    assert [r.path.rsplit("/", 1)[-1] for r in rejects] == ["spec-0269-51581-0003.fits"]
    assert "no good pixel" in rejects[0].reason
    # Read without the usability check the file itself is fine: flagged, not broken.
    spectra_all, rejects_all = read_spectra(paths, require_good_pixels=False)
    assert len(spectra_all) == 30 and rejects_all == []


def test_parallel_batch_matches_serial(sdss_dir):
    paths = sorted(sdss_dir.glob("spec-*.fits"))
    serial, rej_s = read_spectra(paths, workers=1)
    parallel, rej_p = read_spectra(paths, workers=2, chunk_size=4)
    assert [s.id for s in serial] == [s.id for s in parallel]
    assert rej_s == rej_p
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a.flux, b.flux)


def test_boss_unsigned_specobjid(sdss_dir):
    # BOSS stores SPECOBJID as K with TZERO = 2**63 (unsigned 64-bit); the value must not overflow.
    spec = read_spectrum(sdss_dir / "spec-7338-56660-0733.fits")
    assert spec.meta_hdu == "SPALL"
    assert spec.specobjid == "8262055113654556672"


def test_written_file_roundtrip(tmp_path):
    path = write_spec_file(tmp_path / "spec-1234-56789-0042.fits", z=0.07)
    spec = read_spectrum(path)
    assert isinstance(spec, ObservedSpectrum)
    assert spec.id == "1234-56789-0042" and spec.specobjid == "1042"
    assert spec.z == pytest.approx(0.07) and spec.vdisp == pytest.approx(150.0)
    assert spec.wave[0] == pytest.approx(10 ** 3.58, rel=1e-6)


def _bad_files(tmp_path):
    good = write_spec_file(tmp_path / "good.fits")
    raw = good.read_bytes()
    files = {}
    files["text"] = tmp_path / "notes.fits"
    files["text"].write_text("this is not a FITS file\n" * 200)
    files["truncated"] = tmp_path / "truncated.fits"
    files["truncated"].write_bytes(raw[: len(raw) // 2])
    files["empty"] = tmp_path / "empty.fits"
    files["empty"].write_bytes(b"")
    corrupt = bytearray(raw)
    corrupt[2880 + 80 * 3: 2880 + 80 * 3 + 20] = b"\xff" * 20  # garbage in the COADD header
    files["corrupt"] = tmp_path / "corrupt.fits"
    files["corrupt"].write_bytes(bytes(corrupt))
    files["image"] = tmp_path / "image.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((10, 10)))]).writeto(files["image"])
    files["no_meta"] = tmp_path / "no_meta.fits"
    with fits.open(good) as hdul:
        fits.HDUList([hdul[0].copy(), hdul[1].copy()]).writeto(files["no_meta"])
        cols = [c for c in hdul[1].columns if c.name != "ivar"]
        fits.HDUList([hdul[0].copy(), fits.BinTableHDU.from_columns(cols, name="COADD"),
                      hdul[2].copy()]).writeto(tmp_path / "no_ivar.fits")
        meta_cols = [c for c in hdul[2].columns if c.name != "Z"]
        fits.HDUList([hdul[0].copy(), hdul[1].copy(),
                      fits.BinTableHDU.from_columns(meta_cols, name="SPECOBJ")]).writeto(tmp_path / "no_z.fits")
        for kind, pixel, value in (("nan_loglam", 2000, np.nan), ("repeated_loglam", 2000, hdul[1].data["loglam"][1999])):
            coadd = hdul[1].copy()
            coadd.data["loglam"][pixel] = value
            fits.HDUList([hdul[0].copy(), coadd, hdul[2].copy()]).writeto(tmp_path / f"{kind}.fits")
            files[kind] = tmp_path / f"{kind}.fits"
    files["no_ivar"] = tmp_path / "no_ivar.fits"
    files["no_z"] = tmp_path / "no_z.fits"
    files["missing"] = tmp_path / "does_not_exist.fits"
    return good, files


EXPECTED_REASON = {
    "text": "not a FITS file",
    "truncated": "truncated",
    "empty": "not a FITS file",
    "corrupt": "corrupt header",
    "image": "no COADD HDU",
    "no_meta": "no SPECOBJ or SPALL",
    "no_ivar": "missing column ivar in COADD",
    "no_z": "missing column Z in SPECOBJ",
    "missing": "cannot read file",
    "nan_loglam": "non-finite wavelength: loglam is NaN or infinite at 1 of 3800 pixels (first at pixel 2000)",
    "repeated_loglam": "wavelengths not increasing: loglam does not increase at 1 of 3800 pixels (first at pixel 2000)",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED_REASON))
def test_bad_file_gets_clear_reason(tmp_path, kind):
    _, files = _bad_files(tmp_path)
    with pytest.raises(SpectrumReadError) as info:
        read_spectrum(files[kind])
    assert EXPECTED_REASON[kind] in str(info.value)
    assert info.value.path == str(files[kind])


def test_bad_files_never_stop_a_batch(tmp_path):
    good, files = _bad_files(tmp_path)
    paths = [files[k] for k in sorted(files)]
    paths.insert(3, good)
    spectra, rejects = read_spectra(paths, workers=2, chunk_size=3)
    assert [s.path for s in spectra] == [str(good)]
    assert len(rejects) == len(files)
    by_path = {r.path: r.reason for r in rejects}
    for kind, path in files.items():
        assert EXPECTED_REASON[kind] in by_path[str(path)], (kind, by_path[str(path)])


def test_a_damaged_exposure_tail_does_not_reject_a_full_spec_file(sdss_dir, tmp_path):
    from galvae.sources import fitsbin
    from galvae.sources.sdss import METADATA_HDUS

    with open(sdss_dir / "MANIFEST.csv") as fh:
        full = sdss_dir / next(r["file"] for r in csv.DictReader(fh) if r["kind"] == "spec-full")
    with open(full, "rb") as fh:
        every = fitsbin.scan_hdus(fh)
        needed = fitsbin.scan_hdus(fh, wanted=("COADD", frozenset(METADATA_HDUS)))
    assert len(every) > 4 and [h.name for h in needed] == ["PRIMARY", "COADD", "SPECOBJ"]
    # cut in the middle of the last per-exposure HDU: COADD and SPECOBJ stay intact
    cut = tmp_path / full.name
    cut.write_bytes(full.read_bytes()[: every[-1].data_offset + every[-1].data_size // 2])
    whole, damaged = read_spectrum(full), read_spectrum(cut)
    assert damaged.id == whole.id and damaged.z == whole.z
    np.testing.assert_array_equal(damaged.flux, whole.flux)
    np.testing.assert_array_equal(damaged.wave, whole.wave)
