"""A folder of spectra as a user keeps it: any names, sub-folders, gzip, and files that are not spectra.

`prepare --spectra DIR` and `inspect DIR` must try every ``*.fits`` / ``*.fits.gz`` file below DIR, turn
whatever is not a usable spectrum into a reject with its reason, and count every file in the tally.
"""

import gzip
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galvae.prepare import PrepareConfig, open_dataset, prepare_dataset, read_rejects
from galvae.sources.sdss import find_spectrum_files, read_spectrum

SMALL = PrepareConfig(n_pix=500, wave_min=3700, wave_max=7000, files_per_task=4, rows_per_chunk=16)

# real SDSS files (../shared/data/sdss/MANIFEST.csv) copied under other names
GALAXIES = {"spec-0266-51602-0001.fits": "NGC 1 nucleus.fits",          # z 0.021
            "spec-0266-51602-0166.fits": "deep/field A/galaxy B.FITS",  # z 0.022, upper-case suffix
            "spec-0266-51602-0614.fits": "deep/galaxy C.fits.gz",       # z 0.062, gzipped
            "spec-1045-52725-0628.fits": "deep/field A/starburst.fits"}  # z 0.032
OTHERS = {"spec-0853-52374-0240.fits": ("quasar.fits", "not a galaxy"),
          "spec-0269-51581-0003.fits": ("empty fibre.fits", "no good pixel"),
          "spec-0266-51602-0573.fits": ("far away.fits.gz", "redshift out of range")}


@pytest.fixture
def user_folder(sdss_dir, tmp_path):
    """A folder of 4 usable galaxies, 3 real spectra that prepare's cuts reject, and 6 junk files."""
    folder = tmp_path / "my spectra"
    for source, name in {**GALAXIES, **{k: v[0] for k, v in OTHERS.items()}}.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        raw = (sdss_dir / source).read_bytes()
        target.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    junk = {
        "notes.fits": (b"observing notes, not FITS\n", "not a FITS file"),
        "empty.fits": (b"", "not a FITS file"),
        "cut short.fits": ((sdss_dir / "spec-0266-51602-0162.fits").read_bytes()[:100_000], "truncated"),
        "broken.fits.gz": (b"\x1f\x8b\x08\x00" + b"\x00" * 40, "corrupt gzip file"),
    }
    for name, (data, _) in junk.items():
        (folder / name).write_bytes(data)
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(folder / "deep" / "image.fits")
    Table({"plate": [266], "mjd": [51602], "fiber": [1]}).write(folder / "deep" / "catalogue.fits")
    (folder / "README.txt").write_text("not a FITS name: never tried")
    expected = {**{v[0]: v[1] for v in OTHERS.values()}, **{k: v[1] for k, v in junk.items()},
                "deep/image.fits": "no COADD HDU", "deep/catalogue.fits": "no COADD HDU"}
    return folder, expected


def test_every_fits_file_below_a_folder_is_found(user_folder):
    folder, expected = user_folder
    found = {str(Path(p).relative_to(folder)) for p in find_spectrum_files(folder)}
    assert found == set(GALAXIES.values()) | set(expected)
    assert len(found) == 4 + 3 + 6


def test_gzipped_spectrum_reads_as_the_original(user_folder, sdss_dir):
    folder, _ = user_folder
    a = read_spectrum(folder / "deep" / "galaxy C.fits.gz")
    b = read_spectrum(sdss_dir / "spec-0266-51602-0614.fits")
    assert a.id == b.id == "0266-51602-0614"
    np.testing.assert_array_equal(a.flux, b.flux)
    np.testing.assert_array_equal(a.wave, b.wave)


def test_prepare_tries_every_file_and_rejects_with_reasons(user_folder, tmp_path):
    folder, expected = user_folder
    result = prepare_dataset(folder, tmp_path / "d.zarr", scheduler="sync", progress=False, config=SMALL)
    assert (result.n_files, result.n_kept, result.n_rejected) == (13, 4, 9)
    d = open_dataset(tmp_path / "d.zarr")
    assert sorted(d.ids) == sorted(Path(s).stem[5:] for s in GALAXIES)
    rejects = read_rejects(tmp_path / "d.zarr")
    reasons = {str(Path(p).relative_to(folder)): str(r) for p, r in zip(rejects["path"], rejects["reason"])}
    assert set(reasons) == set(expected)
    for name, start in expected.items():
        assert reasons[name].startswith(start), (name, reasons[name])
    assert d.attrs["counts"]["files"] == 13


def test_cli_inspect_counts_every_file(user_folder, capsys):
    from galvae.cli import main

    folder, expected = user_folder
    assert main(["inspect", str(folder), "--workers", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "read 6 spectra, rejected 7 of 13 files" in out  # the cuts are prepare's: quasar, z 0.26 read fine
    assert f"rejected {folder / 'notes.fits'}: not a FITS file" in out
