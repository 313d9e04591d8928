"""Tests for the mock's AGN and LINER-like emission, flux-calibration error and sky residuals.

Each checks a published or measured number the mock is built to follow (see docs/mock_realism.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from galvae.sources.mock import agn, observe, population
from galvae.sources.mock.population import AGN_LINER, AGN_NONE, AGN_SEYFERT


@pytest.fixture(scope="module")
def draws():
    return [population.draw_galaxy(0, i, {}, 0.01, 0.1) for i in range(3000)]


def test_agn_line_ratios_land_in_their_bpt_regions(draws):
    """AGN lines alone, after dust: Seyferts and LINERs above Kewley (2001) on both diagrams, Seyferts above
    and LINERs below the Kewley (2006) line on the [S II] one."""
    seen = set()
    for p in draws:
        if p["agn_class"] == AGN_NONE:
            continue
        wave, flux = agn.agn_lines(p, 300.0, 2.0 * p["a_v"])
        r = agn.bpt_ratios(wave, flux)
        assert r["o3hb"] > population.kewley01_n2(r["n2ha"]), p
        assert r["o3hb"] > population.kewley01_s2(r["s2ha"]), p
        seyfert_side = r["o3hb"] > population.kewley06_seyfert_liner(r["s2ha"])
        assert seyfert_side == (p["agn_class"] == AGN_SEYFERT), p
        # dust hardly moves the BPT ratios: the fluxes give back the drawn ones
        for key in ("n2ha", "s2ha", "o3hb"):
            assert r[key] == pytest.approx(p["agn_ratios"][key], abs=0.02)
        seen.add(p["agn_class"])
    assert seen == {AGN_SEYFERT, AGN_LINER}


def test_liners_follow_heckman_1980():
    """LINERs: [O II]3727/[O III]5007 ≥ 1 and [O I]6300/[O III]5007 ≥ 1/3 (intrinsic, before dust)."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        p = population.draw_agn(rng, 11.0, -12.0, 200.0)
        if p["agn_class"] != AGN_LINER:
            continue
        wave, flux = agn.agn_lines(p, 300.0, 0.0)
        f = {n: flux[np.abs(wave - w) < 1].sum() for n, w in agn.WAVE.items()}
        assert (f["oii3726"] + f["oii3729"]) / f["oiii5007"] >= 1.0
        assert f["oi6300"] / f["oiii5007"] >= 1.0 / 3.0 - 1e-9


def test_agn_fraction_rises_with_mass_to_the_sdss_average(draws):
    """Kauffmann et al. (2003): 18 % of SDSS galaxies are AGN, almost all of them massive."""
    logm = np.array([p["logmstar"] for p in draws])
    has = np.array([p["agn_class"] != AGN_NONE for p in draws])
    low, mid, high = has[logm < 9.8].mean(), has[(logm > 10.2) & (logm < 10.6)].mean(), has[logm > 10.9].mean()
    assert low < 0.03 < mid < high
    assert high > 0.3
    assert 0.15 < has.mean() < 0.21
    # Seyferts prefer star-forming hosts, LINERs quiescent ones
    q = np.array([p["quiescent"] for p in draws])
    cls = np.array([p["agn_class"] for p in draws])
    assert np.mean(cls[has & q] == AGN_LINER) > np.mean(cls[has & ~q] == AGN_LINER)


def test_luminous_agn_reach_kauffmann_strong_agn():
    """Some Seyferts have L[O III] > 10^7 Lsun (Kauffmann et al. 2003's strong AGN), LINERs stay weaker."""
    rng = np.random.default_rng(2)
    out = [population.draw_agn(rng, 11.0, -10.5, 150.0) for _ in range(400)]
    sey = np.array([p["agn_log_loiii"] for p in out if p["agn_class"] == AGN_SEYFERT])
    lin = np.array([p["agn_log_loiii"] for p in out if p["agn_class"] == AGN_LINER])
    assert 0.1 < np.mean(sey > 7.0) < 0.8
    assert np.median(lin) < np.median(sey) - 0.5


def test_vary_without_agn_pins_it_off():
    fixed = population.typical_values(("logmstar", "logssfr"))
    assert fixed["agn"] == AGN_NONE
    assert all(population.draw_galaxy(0, i, fixed, 0.01, 0.1)["agn_class"] == AGN_NONE for i in range(300))


def test_calibration_residual_has_the_configured_amplitude():
    templates = observe.load_instrument_templates()
    model = np.full(observe.N_MASTER, 50.0)
    for target in (0.0, 0.02, 0.05):
        obs = observe.observe(model, np.random.default_rng(3), templates, templates.wdisp, calib_rms=target)
        ratio = obs.model / 50.0
        assert np.sqrt(np.mean((ratio - ratio.mean()) ** 2)) == pytest.approx(target, abs=1e-6)
        assert obs.calib_rms == target
    drawn = [observe.observe(model, np.random.default_rng(s), templates, templates.wdisp).calib_rms for s in range(200)]
    assert np.median(drawn) == pytest.approx(observe.CALIB_RMS, rel=0.1)


def test_sky_residual_sits_on_the_sky_lines_at_the_measured_level():
    """rms residual 3–4.5 % of the sky-line flux (3.8 % measured on the real files), none away from them."""
    templates = observe.load_instrument_templates()
    wave = 10.0 ** observe.master_loglam()
    lit = templates.sky_lines > 30.0
    # pixels two or more pixels away from any sky line brighter than 0.5 (1e-17 cgs)
    far = np.convolve(templates.sky_lines > 0.5, np.ones(5), mode="same") == 0
    assert far.sum() > 100
    rms, dark = [], []
    for s in range(100):
        r = observe.sky_residual(np.random.default_rng(s), wave, templates.sky_lines)
        rms.append(np.sqrt(np.sum(r[lit] ** 2) / np.sum(templates.sky_lines[lit] ** 2)))
        dark.append(np.abs(r[far]).max() / np.sqrt(np.mean(r[lit] ** 2)))
    assert 0.03 < np.sqrt(np.mean(np.square(rms))) < 0.045
    assert max(dark) < 0.05  # away from the lines: under 5 % of the residual's rms on them
    near = lambda centre: np.abs(wave - centre) < 3  # noqa: E731  the real sky lines, observed frame
    for centre in (5578.9, 5891.6, 6302.0, 6365.5):
        assert templates.sky_lines[near(centre)].max() > 10.0, centre
    assert templates.sky_lines[wave > 7200].max() > 50.0  # the OH forest


pytest.importorskip("bagpipes")


def test_truth_has_the_agn_and_instrument_columns(tmp_path):
    from galvae.sources.mock import make_mock_survey

    seed = next(s for s in range(100)
                if any(population.draw_galaxy(s, i, {}, 0.01, 0.1)["agn_class"] == AGN_SEYFERT for i in range(6)))
    survey = make_mock_survey(tmp_path, n=6, seed=seed, workers=1, progress=False)
    t = survey.truth
    for name in ("agn_class", "agn_log_loiii", "agn_oiii_frac", "bpt_n2ha", "bpt_s2ha", "bpt_o3hb", "bpt_class",
                 "calib_rms", "sky_resid_rms", "fiber_gmag", "ew_oiii"):
        assert name in t.colnames, name
    cls = np.asarray(t["agn_class"])
    loiii = np.asarray(t["agn_log_loiii"], float)
    assert np.all(np.isnan(loiii[cls == AGN_NONE])) and np.all(np.isfinite(loiii[cls != AGN_NONE]))
    frac = np.asarray(t["agn_oiii_frac"], float)
    assert np.all(frac[cls == AGN_NONE] == 0) and np.all(frac[cls == AGN_SEYFERT] > 0.3)
    assert np.all(np.asarray(t["calib_rms"]) > 0)


def test_star_forming_hosts_lie_below_the_kauffmann_line():
    """Without an AGN, the lines of star-forming hosts sit where SDSS star-forming galaxies do."""
    from galvae.sources.mock.survey import _WORKER, _init_worker, bpt_class

    _init_worker(0.01, 0.1)
    renderer = _WORKER["renderer"]
    hosts = [p for p in (population.draw_galaxy(0, i, {}, 0.01, 0.1) for i in range(200))
             if p["logssfr"] > -11.0 and p["agn_class"] == AGN_NONE][:40]
    assert len(hosts) == 40
    for p in hosts:
        tau = renderer.solve_tau(p["age"], p["logssfr"], p["logzsol"])
        rest = renderer.render(p["z"], p["age"], tau, p["logzsol"], p["a_v"], p["logu"], p["alpha_fe"], p["logzgas"])
        assert bpt_class(agn.bpt_ratios(rest.line_wave, rest.line_flux)) == 0, p
