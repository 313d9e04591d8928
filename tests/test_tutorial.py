"""docs/tutorial.py runs from top to bottom on a tiny mock survey, and gives what it promises."""

import os
import runpy
from pathlib import Path

import numpy as np
import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.py"


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    pytest.importorskip("bagpipes")
    work = tmp_path_factory.mktemp("tutorial")
    os.environ["GALVAE_TUTORIAL_DIR"] = str(work)
    try:
        return runpy.run_path(str(TUTORIAL), run_name="__main__"), work
    finally:
        del os.environ["GALVAE_TUTORIAL_DIR"]


def test_tutorial_returns_tables_and_arrays(tutorial):
    from astropy.table import Table

    ns, work = tutorial
    assert isinstance(ns["spectra"], Table) and len(ns["spectra"]) == 120 and len(ns["rejects"]) == 0
    assert isinstance(ns["first_flux"], np.ndarray) and ns["first_flux"].ndim == 1
    data, mu = ns["data"], ns["mu"]
    assert mu.shape == (len(data), 2) and np.isfinite(mu).all()
    assert ns["model_spectra"].shape == (2, 1000)
    assert isinstance(ns["grid"], Table) and sorted(ns["grid"]["d"]) == [1, 2]
    assert ns["best"]["d"] in (1, 2)
    assert isinstance(ns["result"].latents, Table) and "outlier_percentile" in ns["result"].latents.colnames
    assert (work / "report" / "index.html").exists()


def test_tutorial_estimator_has_sklearn_manners(tutorial):
    ns, work = tutorial
    vae = ns["vae"]
    assert vae.get_params()["latent_dim"] == 2 and vae.model_dir == work / "vae_d2"
    assert vae.model_dir_ == work / "vae_d2" and vae.n_features_in_ == 1000 and len(vae.history_) >= 1
    np.testing.assert_array_equal(vae.wave_, ns["data"].wave)
    assert np.isfinite(ns["vae"].score(ns["data"]))
    fresh = type(vae)(**vae.get_params())
    with pytest.raises(AttributeError, match="not fitted"):
        fresh.transform(ns["data"])
    again = type(vae).load(work / "vae_d2")
    np.testing.assert_allclose(again.transform(ns["data"]), ns["mu"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.wave_, vae.wave_)


def test_tutorial_own_spectra_are_scored_and_the_junk_rejected(tutorial):
    ns, work = tutorial
    table, rejected = ns["table"], ns["rejected"]
    assert len(table) + len(rejected) == 9
    assert [Path(p).name for p in rejected["path"]] == ["not a spectrum.fits"]
    assert "not a FITS file" in rejected["reason"][0]
    for name in ("D1", "D2", "chi2_per_pixel", "elbo", "outlier_percentile"):
        assert name in table.colnames, name
    pct = np.asarray(table["outlier_percentile"])
    assert np.all((pct >= 0) & (pct <= 100))
