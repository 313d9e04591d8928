"""Tests for the mock's interstellar Na I D absorption and the AGN's [O III] outflow wings."""

from __future__ import annotations

import numpy as np
import pytest

from galvae.sources.mock import agn, ism, observe, population
from galvae.sources.mock.population import AGN_NONE

Z = 0.05


def _flat_model(**kwargs):
    """A flat continuum (1e-17 cgs) observed at z = 0.05 with the median instrument, nothing else."""
    rest_wave = np.linspace(3000.0, 9500.0, 60000)
    wdisp = np.full(observe.N_MASTER, 0.9)
    return observe.observed_model(rest_wave, np.full(rest_wave.size, 10.0), np.zeros(0), np.zeros(0),
                                  Z, 100.0, 65.0, wdisp, **kwargs)


def test_nad_follows_poznanski_2012():
    """The EW inverts log10 E(B−V) = 1.17 EW(D1+D2) − 1.85 with E(B−V) = A_V / 4.05, 0 for dust-free galaxies."""
    a_v = np.array([0.1, 0.3, 0.6, 1.2])
    ew = ism.nad_ism_ew(a_v)
    assert np.log10(a_v / 4.05) == pytest.approx(1.17 * ew - 1.85, abs=1e-9)
    assert np.all(np.diff(ew) > 0)
    assert ism.nad_ism_ew(0.0) == 0.0 and ism.nad_ism_ew(0.04) == 0.0
    assert ism.nad_absorption(0.0, 60.0)[0].size == 0


def test_nad_absorption_has_its_equivalent_width_in_the_observed_spectrum():
    a_v = 0.8
    _, plain = _flat_model()
    model, continuum = _flat_model(absorption=ism.nad_absorption(a_v, 65.0))
    np.testing.assert_array_equal(model, continuum)  # no lines: the absorption sits in the continuum
    edges = observe.master_edges()
    wave = 10 ** observe.master_loglam()
    near = np.abs(wave / (1 + Z) - 5894.6) < 30
    ew_rest = np.sum((1.0 - continuum[near] / plain[near]) * np.diff(edges)[near]) / (1 + Z)
    assert ew_rest == pytest.approx(float(ism.nad_ism_ew(a_v)), rel=0.01)
    far = np.abs(wave / (1 + Z) - 5894.6) > 40
    np.testing.assert_allclose(continuum[far], plain[far])
    # D2 deeper than D1 by the doublet ratio
    d2 = np.abs(wave / (1 + Z) - 5891.58) < 2
    d1 = np.abs(wave / (1 + Z) - 5897.56) < 2
    assert (plain - continuum)[d2].sum() > (plain - continuum)[d1].sum()


def test_mock_dust_gives_the_real_galaxies_order_of_nad_absorption():
    """Across the population the median interstellar EW(D1+D2) is a few tenths of an Å to 1 Å, dustier
    galaxies absorbing more."""
    draws = [population.draw_galaxy(0, i, {}, 0.01, 0.1) for i in range(500)]
    a_v = np.array([p["a_v"] for p in draws])
    ew = ism.nad_ism_ew(a_v)
    assert 0.3 < np.median(ew) < 1.2
    assert np.median(ew[a_v > np.median(a_v)]) > np.median(ew[a_v <= np.median(a_v)])


def test_outflow_wings_are_more_common_in_luminous_agn():
    """Woo et al. (2016): most luminous AGN show non-gravitational [O III] kinematics; none without an AGN."""
    rng = np.random.default_rng(3)
    faint = np.mean([population.draw_outflow(rng, 1, 5.5, 150.0)["oiii_wing_frac"] > 0 for _ in range(400)])
    bright = np.mean([population.draw_outflow(rng, 1, 7.8, 150.0)["oiii_wing_frac"] > 0 for _ in range(400)])
    assert faint < 0.3 and bright > 0.7
    assert population.draw_outflow(rng, AGN_NONE, None, 0.0)["oiii_wing_frac"] == 0.0


def test_outflow_wing_keeps_the_line_flux_and_broadens_and_shifts_oiii():
    p = {"agn_class": 1, "agn_sigma": 150.0, "oiii_wing_frac": 0.4, "oiii_wing_sigma": 300.0, "oiii_wing_dv": -150.0}
    wave = np.array([agn.WAVE["hbeta"], agn.WAVE["oiii4959"], agn.WAVE["oiii5007"]])
    flux = np.array([10.0, 100.0 / 2.98, 100.0])
    w, f, s = agn.line_profiles(p, wave, flux)
    assert f.sum() == pytest.approx(flux.sum())
    assert w.size == 5 and f[0] == 10.0 and s[0] == 150.0  # Hβ untouched
    near_5007 = np.abs(w - agn.WAVE["oiii5007"]) < 5.0  # core and wing together
    assert f[near_5007].sum() == pytest.approx(100.0) and f[near_5007].min() == pytest.approx(40.0)

    def oiii_moments(profile):
        model, continuum = _flat_model(extra_lines=profile)
        x = 10 ** observe.master_loglam() / (1 + Z)
        near = np.abs(x - agn.WAVE["oiii5007"]) < 25
        line = (model - continuum)[near]
        mean = np.sum(line * x[near]) / line.sum()
        return mean, np.sqrt(np.sum(line * (x[near] - mean) ** 2) / line.sum())

    mean_wing, width_wing = oiii_moments((w, f, s))
    mean_core, width_core = oiii_moments(agn.line_profiles({**p, "oiii_wing_frac": 0.0}, wave, flux))
    shift_kms = (mean_wing - mean_core) / agn.WAVE["oiii5007"] * agn.C_KMS
    assert shift_kms == pytest.approx(0.4 * -150.0, abs=8.0)
    assert width_wing > 1.2 * width_core
