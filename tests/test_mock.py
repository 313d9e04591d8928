"""Tests for galvae.sources.mock: determinism, the `vary` option, the file formats, the cache.

Surveys here are tiny (6–12 galaxies). Building the bagpipes model costs ~2 s per process; the
two-worker survey pays it once per worker.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from galvae.sources.mock import observe, population, write
from galvae.sources.mock.population import DRIVEN_COLUMNS, GENERATING_PARAMETERS, TYPICAL_VALUES

bagpipes = pytest.importorskip("bagpipes")  # the mock's optional dependency (pip install galvae[mock])

from galvae.sources.mock import make_mock_survey  # noqa: E402
from galvae.sources.mock.render import air_to_vacuum  # noqa: E402

SEED = 5
N = 12


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """A 12-galaxy survey made by two worker processes."""
    return make_mock_survey(tmp_path_factory.mktemp("mock") / "a", n=N, seed=SEED, workers=2, progress=False)


@pytest.fixture(scope="module")
def survey_one_worker(tmp_path_factory):
    """The same survey made in this process."""
    return make_mock_survey(tmp_path_factory.mktemp("mock") / "b", n=N, seed=SEED, workers=1, progress=False)


# ---------------------------------------------------------------------------------------------
# Population (no bagpipes needed, but cheap enough to run with the rest)
# ---------------------------------------------------------------------------------------------


def test_population_draws_depend_only_on_seed_and_index():
    a = population.draw_galaxy(3, 17, {}, 0.01, 0.1)
    b = population.draw_galaxy(3, 17, {}, 0.01, 0.1)
    c = population.draw_galaxy(4, 17, {}, 0.01, 0.1)
    assert a == b
    assert a["logmstar"] != c["logmstar"]


def test_population_is_bimodal_and_within_ranges():
    draws = [population.draw_galaxy(0, i, {}, 0.01, 0.1) for i in range(400)]
    logm = np.array([d["logmstar"] for d in draws])
    ssfr = np.array([d["logssfr"] for d in draws])
    z = np.array([d["z"] for d in draws])
    assert logm.min() >= 8.5 and logm.max() <= 11.8
    assert z.min() > 0.01 and z.max() < 0.1
    quiescent = ssfr < -11.0
    assert 0.15 < quiescent.mean() < 0.6
    # Quiescent galaxies are more massive; the main sequence falls with mass.
    assert logm[quiescent].mean() > logm[~quiescent].mean()
    sf = ~quiescent
    assert np.polyfit(logm[sf], ssfr[sf], 1)[0] < 0


def test_vary_pins_the_other_parameters():
    fixed = population.typical_values(("logssfr", "a_v"))
    draws = [population.draw_galaxy(1, i, fixed, 0.01, 0.1) for i in range(50)]
    for name in GENERATING_PARAMETERS:
        values = {d[name] for d in draws}
        if name in ("logssfr", "a_v"):
            assert len(values) > 40
        else:
            assert values == {TYPICAL_VALUES[name]}


def test_pinned_z_outside_the_range_is_refused(tmp_path):
    fixed = population.typical_values(("logmstar", "logssfr"))  # z pinned to TYPICAL_VALUES["z"] = 0.06
    with pytest.raises(ValueError, match=r"z is pinned to 0.06 .* redshift range is \(0.15, 0.3\)"):
        population.draw_galaxy(0, 0, fixed, 0.15, 0.3)
    with pytest.raises(ValueError, match="z is pinned"):
        make_mock_survey(tmp_path / "mock", n=2, vary="logmstar,logssfr", zmin=0.01, zmax=0.05, workers=1,
                         progress=False)
    assert not (tmp_path / "mock").exists()  # refused before writing anything
    assert population.draw_galaxy(0, 0, fixed, 0.01, 0.1)["z"] == 0.06


def test_unknown_vary_name_is_rejected():
    with pytest.raises(ValueError, match="unknown generating parameter"):
        population.check_vary(["logmstar", "colour"])
    assert population.check_vary("a_v, logmstar") == ("logmstar", "a_v")


def test_air_to_vacuum_matches_known_lines():
    assert air_to_vacuum(6562.80) == pytest.approx(6564.61, abs=0.02)
    assert air_to_vacuum(5006.84) == pytest.approx(5008.24, abs=0.02)


def test_shipped_instrument_templates_are_small_and_sane():
    size = observe.TEMPLATE_FILE.stat().st_size
    assert size < 200_000
    t = observe.load_instrument_templates()
    wave = 10 ** observe.master_loglam()
    assert np.all(t.gain > 0) and np.all(t.wdisp > 0.5) and np.all(t.wdisp < 1.5)
    near_5577 = np.abs(wave - 5578.9) < 2
    assert t.sky_lines[near_5577].max() > 100  # the brightest sky line is there


def test_shipped_templates_are_what_the_real_files_give(sdss_dir):
    derived = observe.derive_instrument_templates(sorted(sdss_dir.glob("spec-*.fits")))
    shipped = observe.load_instrument_templates()
    np.testing.assert_allclose(shipped.gain, derived.gain, rtol=1e-5)
    np.testing.assert_allclose(shipped.sky_lines, derived.sky_lines, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Surveys
# ---------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_files_whatever_the_workers(survey, survey_one_worker):
    assert [p.name for p in survey.paths] == [p.name for p in survey_one_worker.paths]
    for a, b in zip(survey.paths, survey_one_worker.paths):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert survey.catalog_path.read_bytes() == survey_one_worker.catalog_path.read_bytes()
    for name in survey.truth.colnames:
        a, b = np.asarray(survey.truth[name]), np.asarray(survey_one_worker.truth[name])
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name  # agn_log_loiii is NaN without AGN


def test_files_are_read_by_the_sdss_reader_with_zero_rejects(survey):
    from galvae.sources.sdss import find_spectrum_files, read_spectra

    paths = find_spectrum_files(survey.out_dir / "spectra")  # the folder also holds its catalogues
    assert len(paths) == N
    spectra, rejects = read_spectra(paths)
    assert rejects == []
    by_id = {s.id: s for s in spectra}
    truth = survey.truth
    assert set(by_id) == set(truth["id"])
    for row in truth:
        s = by_id[row["id"]]
        assert s.spec_class == "GALAXY" and s.zwarning == 0 and s.run2d == "26"
        assert s.z == pytest.approx(row["z"], abs=5e-4)
        assert s.sn_median == pytest.approx(row["sn_median"], rel=1e-5)
        assert 3780 < s.wave[0] < 3832 and 9100 < s.wave[-1] < 9250
        assert np.allclose(np.diff(np.log10(s.wave)), 1e-4, atol=2e-7)
        assert s.n_good > 0.8 * s.flux.size


def test_files_have_the_layout_of_real_spec_lite_files(survey, sdss_dir):
    from astropy.io import fits

    with fits.open(sdss_dir / "spec-1045-52725-0628.fits") as real, fits.open(survey.paths[0]) as mock:
        mock.verify("exception")
        assert [h.name for h in mock] == ["PRIMARY", "COADD", "SPECOBJ"]
        assert mock["COADD"].columns.names == real["COADD"].columns.names
        assert mock["COADD"].columns.formats == real["COADD"].columns.formats
        real_formats = dict(zip(real["SPECOBJ"].columns.names, real["SPECOBJ"].columns.formats))
        for name, fmt in zip(mock["SPECOBJ"].columns.names, mock["SPECOBJ"].columns.formats):
            assert real_formats[name] == fmt, name
        for key in ("PLATE", "MJD", "FIBERID", "Z", "Z_ERR", "ZWARNING", "CLASS", "SUBCLASS", "VDISP",
                    "SN_MEDIAN_ALL", "SPECOBJID", "RUN2D", "SURVEY"):
            assert key in mock["SPECOBJ"].columns.names
        coadd = mock["COADD"].data
        dead = coadd["ivar"] == 0
        assert np.all(coadd["sky"][dead] == 0) and np.all(np.isfinite(coadd["flux"]))
        spec = mock["SPECOBJ"].data[0]
        sid = int(spec["SPECOBJID"])
        unpacked = (sid >> 50, (sid >> 38) & 0xFFF, ((sid >> 24) & 0x3FFF) + 50000)
        assert unpacked == (spec["PLATE"], spec["FIBERID"], spec["MJD"])


def test_gswlc_catalogue_joins_every_spectrum(survey):
    from galvae.sources.catalogs import catalog_properties, match_properties, read_catalog, read_gswlc

    table = read_gswlc(survey.catalog_path)
    assert table.meta["n_rejected"] == 0 and len(table) == N
    assert read_catalog(survey.catalog_path).meta.get("format") == "gswlc"
    props, _ = catalog_properties(gswlc=table)
    matched, stats = match_properties(list(survey.truth["id"]), props)
    assert stats.matched == N
    ok = table["flag_sed"] == 0
    residual = np.asarray(matched["logmstar"])[ok] - np.asarray(survey.truth["logmstar"])[ok]
    assert np.all(np.abs(residual) < 0.5)


def test_mpajhu_files_give_star_forming_galaxies_a_metallicity(survey, survey_one_worker):
    from astropy.io import fits

    from galvae.sources.catalogs import catalog_properties, read_gswlc, read_mpajhu

    assert [p.name for p in survey.mpajhu_paths] == ["gal_info-mock.fits", "gal_fiboh-mock.fits"]
    for a, b in zip(survey.mpajhu_paths, survey_one_worker.mpajhu_paths):
        assert a.read_bytes() == b.read_bytes(), a.name  # seeded per galaxy: the same whatever the workers
    with fits.open(survey.mpajhu_paths[0]) as info, fits.open(survey.mpajhu_paths[1]) as fiboh:
        info.verify("exception")
        fiboh.verify("exception")
        assert {"PLATEID", "MJD", "FIBERID", "Z", "V_DISP", "V_DISP_ERR"} <= set(info[1].columns.names)
        assert {"MEDIAN", "P16", "P84", "P2P5", "P97P5", "AVG", "MODE"} <= set(fiboh[1].columns.names)
        median = np.asarray(fiboh[1].data["MEDIAN"], dtype=float)
    truth = survey.truth
    star_forming = np.array([write.has_metallicity(r) for r in truth])
    assert star_forming.any() and not star_forming.all()  # the 12 galaxies of seed 5 hold both kinds
    assert np.allclose(median[~star_forming], write.MPAJHU_MISSING)  # the real catalogue's missing value

    t = read_mpajhu(*survey.mpajhu_paths)
    assert list(t["id"]) == list(truth["id"]) and t.meta["n_rejected"] == 0
    oh = np.asarray(t["metallicity"])
    assert np.array_equal(np.isfinite(oh), star_forming)  # -99.9 read as NaN
    residual = oh[star_forming] - np.asarray(truth["metallicity"])[star_forming]
    assert np.all(np.abs(residual) < 0.5) and np.all((t["e_metallicity"][star_forming] >= 0.03 - 1e-6)
                                                     & (t["e_metallicity"][star_forming] <= 0.1 + 1e-6))
    assert np.all(np.abs(t["z"] - truth["z"]) < 5e-3)
    assert np.isfinite(t["vdisp"]).sum() >= N // 2  # a dispersion measured at or below 0 is written 0: NaN
    props, stats = catalog_properties(gswlc=read_gswlc(survey.catalog_path), mpajhu=t)  # galvae catalog's join
    assert stats.keys == N and stats.overlap["gswlc&mpajhu"] == N
    assert np.array_equal(np.isfinite(props["metallicity"]), star_forming)


def test_truth_is_consistent(survey):
    t = survey.truth
    assert np.allclose(t["logssfr"], t["logsfr"] - t["logmstar"])
    gas = np.clip(t["logzsol"] + population.gas_metallicity_offset(t["logmstar"]), *population.LOGZ_GAS_RANGE)
    assert np.allclose(t["metallicity"], 8.69 + gas)
    assert np.all(t["a_b"] > t["a_v"] - 1e-12) and np.all(t["mwage"] < t["age"])
    assert np.all((t["fiber_frac"] > 0) & (t["fiber_frac"] < 1))
    # τ is solved so that the SFH has the drawn sSFR (reachable targets are hit to 1e-3 dex).
    for row in t:
        draw = population.draw_galaxy(SEED, int(row["index"]), {}, 0.01, 0.1)
        assert row["logmstar"] == draw["logmstar"]
        assert row["logssfr"] == pytest.approx(draw["logssfr"], abs=1e-3)


def test_vary_keeps_the_other_truth_columns_constant(tmp_path):
    vary = ("logssfr", "logzsol")
    s = make_mock_survey(tmp_path, n=8, seed=2, vary=vary, workers=1, progress=False)
    driven = {c for name in vary for c in DRIVEN_COLUMNS[name]}
    for name in GENERATING_PARAMETERS:
        for column in DRIVEN_COLUMNS[name]:
            values = np.asarray(s.truth[column], dtype=float)
            finite = values[np.isfinite(values)]  # agn_log_loiii is NaN without an AGN
            spread = np.ptp(finite) if finite.size else 0.0
            if column in driven:
                assert spread > 0, column
            else:
                assert spread < 1e-9, column


def test_rerun_is_a_cache_hit_and_a_new_config_replaces_the_files(tmp_path):
    first = make_mock_survey(tmp_path, n=6, seed=1, workers=1, progress=False)
    assert not first.from_cache
    stamp = first.paths[0].stat().st_mtime_ns
    again = make_mock_survey(tmp_path, n=6, seed=1, workers=1, progress=False)
    assert again.from_cache
    assert again.config_hash == first.config_hash and again.paths[0].stat().st_mtime_ns == stamp
    assert list(again.truth["id"]) == list(first.truth["id"])
    assert again.mpajhu_paths == first.mpajhu_paths and all(p.exists() for p in again.mpajhu_paths)
    fiboh = first.mpajhu_paths[1].read_bytes()
    first.mpajhu_paths[1].unlink()  # a cache missing one of its files is made again
    remade = make_mock_survey(tmp_path, n=6, seed=1, workers=1, progress=False)
    assert not remade.from_cache and remade.mpajhu_paths[1].read_bytes() == fiboh

    other = make_mock_survey(tmp_path, n=4, seed=2, workers=1, progress=False)
    assert not other.from_cache and other.config_hash != first.config_hash
    assert len(list((tmp_path / "spectra").glob("spec-*.fits"))) == 4
    assert json.loads((tmp_path / "mock.json").read_text())["config"]["seed"] == 2


def test_interrupted_run_resumes_with_the_same_result(tmp_path):
    full = make_mock_survey(tmp_path / "full", n=6, seed=3, workers=1, progress=False)
    out = tmp_path / "cut"
    make_mock_survey(out, n=6, seed=3, workers=1, progress=False)
    # Pretend the run stopped after four galaxies: journal them, drop the rest and the end products.
    manifest = json.loads((out / "mock.json").read_text())
    manifest["complete"] = False
    (out / "mock.json").write_text(json.dumps(manifest))
    rows = [{k: (v.item() if hasattr(v, "item") else v) for k, v in zip(full.truth.colnames, r)}
            for r in full.truth[:4]]
    (out / ".mock-journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in full.truth["filename"][4:]:
        (out / name).unlink()
    kept = (out / full.truth["filename"][0]).stat().st_mtime_ns
    (out / "truth.fits").unlink()
    resumed = make_mock_survey(out, n=6, seed=3, workers=1, progress=False)
    assert (out / full.truth["filename"][0]).stat().st_mtime_ns == kept
    for a, b in zip(full.paths, resumed.paths):
        assert a.read_bytes() == b.read_bytes()


def test_refuses_a_folder_with_foreign_spectra(tmp_path):
    (tmp_path / "spectra").mkdir()
    (tmp_path / "spectra" / "spec-0266-51602-0001.fits").write_bytes(b"")
    with pytest.raises(FileExistsError):
        make_mock_survey(tmp_path, n=2, seed=0, workers=1, progress=False)


def test_nothing_is_written_to_the_working_directory(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    make_mock_survey(tmp_path / "out", n=2, seed=0, workers=1, progress=False)
    assert os.listdir(cwd) == []


def test_lines_sit_at_vacuum_wavelengths(survey):
    from galvae.sources.mock import survey as survey_module

    survey_module._init_worker(0.01, 0.1)
    renderer = survey_module._WORKER["renderer"]
    templates = survey_module._WORKER["templates"]
    z = 0.05
    rest = renderer.render(z, 3.0, 5.0, 0.0, 0.3, -3.0)
    model, continuum = observe.observed_model(rest.wave, rest.flux * 1e17, rest.line_wave, rest.line_flux * 1e17,
                                              z, 80.0, 52.0, templates.wdisp)
    wave = 10 ** observe.master_loglam()
    near = np.abs(wave - 6564.61 * (1 + z)) < 8
    line = model[near] - continuum[near]
    assert np.sum(line * wave[near]) / np.sum(line) / (1 + z) == pytest.approx(6564.61, abs=0.05)


def test_write_ids_are_outside_the_real_ranges():
    plate, mjd, fiber = write.plate_mjd_fiber(0)
    assert plate >= 13000 and 51578 <= mjd <= 54663 and fiber == 1
    assert write.plate_mjd_fiber(640)[0] == plate + 1 and write.plate_mjd_fiber(639)[2] == 640
    assert write.spec_filename(plate, mjd, fiber) == f"spec-{plate}-{mjd:05d}-0001.fits"
