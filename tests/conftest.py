"""Shared test fixtures: where the real SDSS files live, and small spec files written from scratch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

SHARED_SDSS = Path(__file__).resolve().parents[2] / "shared" / "data" / "sdss"


@pytest.fixture(scope="session")
def sdss_dir() -> Path:
    """The 30 real SDSS files (../shared/data/sdss); tests using it skip when it is absent."""
    if not (SHARED_SDSS / "MANIFEST.csv").exists():
        pytest.skip("real SDSS files not available (../shared/data/sdss)")
    return SHARED_SDSS


def write_spec_file(path, plate=1234, mjd=56789, fiber=42, z=0.05, n_pix=3800, meta_hdu="SPECOBJ",
                    spec_class="GALAXY", zwarning=0, seed=0) -> Path:
    """Write a small spec-lite-like file in the SDSS layout (COADD + metadata HDU)."""
    rng = np.random.default_rng(seed)
    loglam = (3.58 + 1e-4 * np.arange(n_pix)).astype(np.float32)
    flux = (10 + rng.normal(0, 1, n_pix)).astype(np.float32)
    ivar = np.full(n_pix, 1.0, np.float32)
    zeros_j = np.zeros(n_pix, np.int32)
    coadd = fits.BinTableHDU.from_columns([
        fits.Column("flux", "E", array=flux), fits.Column("loglam", "E", array=loglam),
        fits.Column("ivar", "E", array=ivar), fits.Column("and_mask", "J", array=zeros_j),
        fits.Column("or_mask", "J", array=zeros_j), fits.Column("wdisp", "E", array=np.ones(n_pix, np.float32)),
        fits.Column("sky", "E", array=np.ones(n_pix, np.float32)), fits.Column("model", "E", array=flux),
    ], name="COADD")
    meta = fits.BinTableHDU.from_columns([
        fits.Column("PLATE", "J", array=[plate]), fits.Column("MJD", "J", array=[mjd]),
        fits.Column("FIBERID", "J", array=[fiber]), fits.Column("Z", "E", array=[z]),
        fits.Column("Z_ERR", "E", array=[1e-5]), fits.Column("ZWARNING", "J", array=[zwarning]),
        fits.Column("CLASS", "6A", array=[spec_class]), fits.Column("SUBCLASS", "21A", array=[""]),
        fits.Column("VDISP", "E", array=[150.0]), fits.Column("SN_MEDIAN_ALL", "E", array=[10.0]),
        fits.Column("SPECOBJID", "22A", array=[str(1000 + fiber)]), fits.Column("RUN2D", "3A", array=["26"]),
    ], name=meta_hdu)
    fits.HDUList([fits.PrimaryHDU(), coadd, meta]).writeto(path, overwrite=True)
    return Path(path)


@pytest.fixture(scope="session")
def small_mock(tmp_path_factory):
    """A 60-galaxy mock survey (spec-lite files, GSWLC-format catalogue, truth), shared by the tests."""
    pytest.importorskip("bagpipes")
    from galvae.sources.mock import make_mock_survey

    return make_mock_survey(tmp_path_factory.mktemp("small_mock"), n=60, seed=11, workers=1, progress=False)
