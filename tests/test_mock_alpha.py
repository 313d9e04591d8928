"""Tests for the mock's [α/Fe] (deeper Mg, weaker Fe features in old massive galaxies) and the star-forming
hosts' lines ([S II]/Hα, gas metallicity, line attenuation). Each checks a published number the mock is
built to follow (see docs/mock_realism.md)."""

from __future__ import annotations

import numpy as np
import pytest

from galvae.sources.mock import agn, alpha, population
from galvae.sources.mock.population import AGN_NONE


@pytest.fixture(scope="module")
def draws():
    return [population.draw_galaxy(0, i, {}, 0.01, 0.1) for i in range(2000)]


def test_alpha_fe_follows_velocity_dispersion_in_quiescent_galaxies(draws):
    """Thomas et al. (2005): [α/Fe] ≈ 0.2–0.3 in massive early types, rising with σ; ≈ 0 on the main sequence."""
    a = np.array([p["alpha_fe"] for p in draws])
    sigma = np.array([p["vdisp"] for p in draws])
    ssfr = np.array([p["logssfr"] for p in draws])
    quiescent, main_sequence = ssfr < -11.0, ssfr > -10.0
    assert abs(np.median(a[main_sequence])) < 0.03
    massive = quiescent & (sigma > 200)
    assert 0.17 < np.median(a[massive]) < 0.3
    assert np.corrcoef(np.log10(sigma[quiescent]), a[quiescent])[0, 1] > 0.5
    resid = a[quiescent] - population.median_alpha_fe(sigma[quiescent], ssfr[quiescent])
    assert 0.04 < np.std(resid) < 0.06  # the intrinsic scatter, 0.05 dex
    assert a.min() >= population.ALPHA_FE_RANGE[0] and a.max() <= population.ALPHA_FE_RANGE[1]


def test_alpha_fe_has_its_own_stream():
    """Adding [α/Fe] left every other draw unchanged: it comes from a stream of its own."""
    p = population.draw_galaxy(3, 17, {}, 0.01, 0.1)
    q = population.draw_galaxy(3, 17, {"alpha_fe": 0.0}, 0.01, 0.1)
    assert q["alpha_fe"] == 0.0
    assert {k: v for k, v in p.items() if k != "alpha_fe"} == {k: v for k, v in q.items() if k != "alpha_fe"}


def test_response_keeps_mgfe_prime_and_leaves_the_rest():
    """Mg b ×1.2 and Fe ÷1.2 per 0.3 dex: [MgFe]' (Thomas et al. 2003) unchanged; pixels outside the bands untouched."""
    wave = np.arange(4000.0, 5600.0, 0.5)
    centres = [np.mean(band[0]) for band in alpha.LICK_BANDS_AIR.values()]  # a line in each central band
    flux = 1.0 - 0.3 * np.exp(-0.5 * ((wave[:, None] - np.array(centres)) / 4.0) ** 2).sum(axis=1)
    response = alpha.AlphaResponse(wave)
    out = response.enhance(flux, 0.3)
    idx = {n: (alpha.lick_index(wave, flux, n), alpha.lick_index(wave, out, n)) for n in ("Mg_b", "Fe5270", "Fe5335")}
    assert idx["Mg_b"][1] / idx["Mg_b"][0] == pytest.approx(1.2, rel=0.05)

    def mgfe(k):
        return np.sqrt(idx["Mg_b"][k] * (0.72 * idx["Fe5270"][k] + 0.28 * idx["Fe5335"][k]))

    assert mgfe(1) == pytest.approx(mgfe(0), rel=0.03)
    far = (wave < 4300) | (wave > 5450)
    assert np.array_equal(out[far], flux[far])
    assert response.enhance(flux, 0.0) is not None and np.array_equal(response.enhance(flux, 0.0), flux)


def test_gas_follows_tremonti_and_lines_follow_garn_best(draws):
    """Star-forming galaxies: gas 12 + log O/H near Tremonti et al. (2004) at their mass (0.1 dex), and the
    lines' A_Hα near Garn & Best (2010) at their mass (median within 0.15 mag)."""
    logm = np.array([p["logmstar"] for p in draws])
    ssfr = np.array([p["logssfr"] for p in draws])
    oh = population.SOLAR_OH + np.array([p["logzgas"] for p in draws])
    a_halpha = np.array([p["a_v"] * p["eta"] for p in draws]) * population.A_HALPHA_PER_A_V
    main_sequence = np.abs(ssfr - population.main_sequence_logssfr(logm)) < 0.3
    for lo, hi in ((9.5, 10.0), (10.0, 10.5), (10.5, 11.0)):
        sel = main_sequence & (logm >= lo) & (logm < hi)
        assert sel.sum() > 40
        mid = np.median(logm[sel])
        assert np.median(oh[sel]) == pytest.approx(float(population.tremonti_oh(mid)), abs=0.1)
        assert np.median(a_halpha[sel]) == pytest.approx(float(population.garn_best_a_halpha(mid)), abs=0.15)


pytest.importorskip("bagpipes")


def _old_galaxy(alpha_fe):
    return {"logmstar": 11.0, "z": 0.03, "logssfr": -12.0, "age": 10.0, "logzsol": 0.1, "a_v": 0.2, "logu": -3.4,
            "vdisp": 200.0, "vdisp_gas": 130.0, "alpha_fe": alpha_fe, "agn_class": AGN_NONE, "fiber_frac": 0.3}


def test_mg_b_is_deeper_at_high_alpha_fe_in_a_generated_spectrum():
    """Through the whole generator (bagpipes, velocity broadening, instrument): Mg b of the observed
    noiseless continuum rises with [α/Fe], Fe5270 falls."""
    from galvae.sources.mock import observe
    from galvae.sources.mock.survey import _WORKER, _init_worker, _observe_galaxy

    _init_worker(0.01, 0.1)
    measured = {}
    for a in (0.0, 0.3):
        p = _old_galaxy(a)
        _, continuum, *_ = _observe_galaxy(p, observe.observation_stream(0, 0))
        rest = 10.0 ** observe.master_loglam() / (1.0 + p["z"])
        measured[a] = {n: alpha.lick_index(rest, continuum, n) for n in ("Mg_b", "Fe5270")}
    assert measured[0.0]["Mg_b"] > 2.5
    assert measured[0.3]["Mg_b"] > measured[0.0]["Mg_b"] * 1.12
    assert measured[0.3]["Fe5270"] < measured[0.0]["Fe5270"] * 0.92


def test_truth_has_the_alpha_fe_column(tmp_path):
    from galvae.sources.mock import make_mock_survey

    survey = make_mock_survey(tmp_path, n=4, seed=5, workers=1, progress=False)
    t = survey.truth
    assert "alpha_fe" in t.colnames
    for row in t:
        assert row["alpha_fe"] == population.draw_galaxy(5, int(row["index"]), {}, 0.01, 0.1)["alpha_fe"]


def test_star_forming_hosts_have_sdss_sii_to_halpha():
    """Kewley et al. (2006): SDSS star-forming galaxies have log [S II]/Hα near −0.4 to −0.5 (bagpipes' grid
    alone gives −0.1 to −0.3 at the mock's log U)."""
    from galvae.sources.mock.survey import _WORKER, _init_worker

    _init_worker(0.01, 0.1)
    renderer = _WORKER["renderer"]
    hosts = [p for p in (population.draw_galaxy(0, i, {}, 0.01, 0.1) for i in range(200))
             if p["logssfr"] > -11.0 and p["agn_class"] == AGN_NONE][:40]
    s2ha = []
    for p in hosts:
        tau = renderer.solve_tau(p["age"], p["logssfr"], p["logzsol"])
        rest = renderer.render(p["z"], p["age"], tau, p["logzsol"], p["a_v"], p["logu"], p["alpha_fe"], p["logzgas"])
        s2ha.append(agn.bpt_ratios(rest.line_wave, rest.line_flux)["s2ha"])
    s2ha = np.array(s2ha)
    assert -0.55 < np.median(s2ha) < -0.38, np.median(s2ha)
    assert np.all((s2ha > -1.1) & (s2ha < -0.15)), s2ha  # low-metallicity hosts reach −1 (Kewley et al. 2006)
