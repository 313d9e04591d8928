"""explain: rotation, mutual information, maps, traversals, SHAP fidelity, the latent catalogue, the driver.

A tiny compact VAE (and a one-condition CVAE) is trained for a few epochs on the 60-galaxy mock survey;
the unit tests of the estimators use data whose answer is known.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
import pytest

from galvae.explain import encode_external, explain
from galvae.explain.attribution import (
    FIDELITY_TOLERANCE,
    explain_latents,
    fidelity,
    showcase_dims,
    stratified_rows,
)
from galvae.explain.catalog import (
    percentile_of,
    raw_latents,
    read_latents,
    rotated_latents,
)
from galvae.explain.maps import binned_median, bins_for, latent_maps
from galvae.explain.mutual_info import (
    mi_table,
    mutual_information_with_errors,
    spearman_table,
)
from galvae.explain.rotation import LatentRotation
from galvae.explain.traversal import (
    EMISSION_LINES,
    condition_traversals,
    latent_traversals,
)

TINY = {"hidden": (64, 32), "epochs": 3, "batch_size": 16, "lr": 2e-3, "progress": False, "patience": 50}
FAST_EXPLAIN = {"n_boot": 5, "n_background": 20, "n_explain": 8, "progress": False}


def build_run(small_mock, root, cvae: bool = True):
    """Prepare the small mock, train a d=4 VAE (and a logmstar CVAE), run explain; returns a dict of paths."""
    from galvae.fit import fit
    from galvae.prepare import PrepareConfig, open_dataset, prepare_dataset

    data = root / "mock.zarr"
    prepare_dataset(small_mock.paths, data, catalog=small_mock.catalog_path, scheduler="sync", progress=False,
                    config=PrepareConfig(files_per_task=7, rows_per_chunk=16), keep_staging=False)
    dataset = open_dataset(data)
    vae = fit(dataset, root / "vae", latent_dim=4, seed=1, **TINY)
    cvaes = (fit(dataset, root / "cvae", latent_dim=2, conditions=("logmstar",), seed=1, **dict(TINY, epochs=2)),) \
        if cvae else ()
    result = explain(vae, data, root / "run", truth=small_mock.truth_path, cvae_dirs=cvaes, **FAST_EXPLAIN)
    return {"dataset": data, "vae": vae, "cvaes": cvaes, "run": root / "run", "result": result}


@pytest.fixture(scope="module")
def run(small_mock, tmp_path_factory):
    return build_run(small_mock, tmp_path_factory.mktemp("explain"))


@pytest.fixture(scope="module")
def model(run):
    from galvae.models import load_model

    return load_model(run["vae"])


@pytest.fixture(scope="module")
def dataset(run):
    from galvae.prepare import open_dataset

    return open_dataset(run["dataset"])


# ---- rotation --------------------------------------------------------------------------------------

def test_rotation_orders_variance_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    scales = np.array([0.5, 3.0, 1.0])  # the biggest spread sits on the second raw axis
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    mu = (rng.normal(size=(4000, 3)) * scales) @ q.T + np.array([1.0, -2.0, 0.5])
    rot = LatentRotation().fit(mu)
    np.testing.assert_allclose(rot.explained_variance_, np.sort(scales**2)[::-1], rtol=0.08)
    assert np.all(np.diff(rot.explained_variance_) < 0)
    assert rot.explained_variance_ratio_.sum() == pytest.approx(1.0)
    d = rot.transform(mu)
    cov = np.cov(d, rowvar=False)
    np.testing.assert_allclose(cov, np.diag(rot.explained_variance_), atol=1e-8)  # decorrelated, ordered
    np.testing.assert_allclose(rot.inverse_transform(d), mu, atol=1e-10)
    np.testing.assert_allclose(rot.components_ @ rot.components_.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rot.inverse_transform(np.zeros((1, 3)))[0], mu.mean(0))  # D = 0 is the mean
    back = LatentRotation.load(rot.save(tmp_path / "rotation.json"))
    np.testing.assert_array_equal(back.transform(mu), d)
    assert json.loads((tmp_path / "rotation.json").read_text())["explained_variance_ratio"][0] > 0.8
    # the sign convention makes refits on a permuted sample agree
    np.testing.assert_allclose(LatentRotation().fit(mu[::-1]).components_, rot.components_, atol=1e-12)


def test_rotation_needs_fitting_and_data():
    with pytest.raises(RuntimeError):
        LatentRotation().transform(np.zeros((2, 2)))
    with pytest.raises(ValueError):
        LatentRotation().fit(np.full((5, 2), np.nan))


# ---- mutual information ------------------------------------------------------------------------------

def test_mutual_information_finds_the_latent_a_property_depends_on():
    rng = np.random.default_rng(1)
    d = rng.normal(size=(600, 3))
    props = {"f_of_d1": np.sin(2 * d[:, 0]) + d[:, 0] ** 3, "noise": rng.normal(size=600),
             "monotone": np.exp(d[:, 1])}
    props["f_of_d1"][:20] = np.nan  # unknown values are dropped, not imputed
    mi = mi_table(d, props, ["f_of_d1", "noise", "monotone", "absent"], n_boot=8, seed=0)
    get = {(r["property"], r["latent"]): (r["mi"], r["mi_err"], r["n"]) for r in mi}
    assert get[("f_of_d1", "D1")][0] > 1.0
    assert get[("f_of_d1", "D2")][0] < 0.1 and get[("f_of_d1", "D3")][0] < 0.1
    assert max(get[("noise", f"D{j}")][0] for j in (1, 2, 3)) < 0.1
    assert get[("monotone", "D2")][0] > 1.5 and get[("monotone", "D1")][0] < 0.1
    assert get[("f_of_d1", "D1")][2] == 580 and get[("noise", "D1")][2] == 600
    assert all(0 < get[k][1] < 0.3 for k in get)  # half-sample errors: finite, positive, modest
    assert not any(p == "absent" for p in mi["property"])
    rho = spearman_table(d, props, ["f_of_d1", "monotone"])
    by = {(r["property"], r["latent"]): r["rho"] for r in rho}
    assert by[("monotone", "D2")] == pytest.approx(1.0)  # exp is monotone: ranks agree exactly
    assert abs(by[("monotone", "D1")]) < 0.15


def test_mutual_information_is_seeded():
    rng = np.random.default_rng(2)
    d, y = rng.normal(size=(300, 2)), rng.normal(size=300)
    a = mutual_information_with_errors(d, y + d[:, 0], n_boot=4, seed=5)
    b = mutual_information_with_errors(d, y + d[:, 0], n_boot=4, seed=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


# ---- maps --------------------------------------------------------------------------------------------

def test_mutual_information_of_unrelated_tiny_samples_is_zero_with_nan_errors():
    rng = np.random.default_rng(0)
    latents, y = rng.normal(size=(8, 2)), rng.normal(size=8)  # sklearn clips both MIs to integer 0 here
    mi, err, n = mutual_information_with_errors(latents, y, n_boot=2)
    assert mi.dtype == np.float64 and np.array_equal(mi, [0.0, 0.0]) and n == 8
    assert np.isnan(err).all()  # 4 rows per half-sample are too few: unknown, not -9.2e18


def test_binned_median_respects_the_minimum_count():
    # 6 points in cell (0, 0) with values 0..5, 3 points in cell (1, 1)
    x = np.r_[np.full(6, 0.25), np.full(3, 0.75)]
    y = x.copy()
    v = np.r_[np.arange(6.0), 10.0, 11.0, 12.0]
    med, count = binned_median(x, y, v, [0, 0.5, 1], [0, 0.5, 1], min_count=5)
    assert count[0, 0] == 6 and count[1, 1] == 3
    assert med[0, 0] == pytest.approx(2.5)
    assert np.isnan(med[1, 1]) and np.isnan(med[0, 1])
    med3, _ = binned_median(x, y, v, [0, 0.5, 1], [0, 0.5, 1], min_count=3)
    assert med3[1, 1] == pytest.approx(11.0)
    assert bins_for(60, 5) == 3 and bins_for(300_000, 5) == 20


def test_latent_maps_on_the_mock(run):
    latents = run["result"].latents
    D = rotated_latents(latents)
    props = {n: np.asarray(run["result"].latents["z"]) for n in ("z",)}
    maps = latent_maps(D, props, ["z"], min_count=4)
    assert [(m.x_name, m.y_name) for m in maps] == [("D1", "D2"), ("D1", "D3"), ("D1", "D4")]
    for m, j in zip(maps, (1, 2, 3)):
        inside = ((D[:, 0] >= m.x_edges[0]) & (D[:, 0] <= m.x_edges[-1]) & (D[:, j] >= m.y_edges[0])
                  & (D[:, j] <= m.y_edges[-1]))
        assert m.count.sum() == inside.sum() >= 0.8 * len(latents)  # only the 1% tails fall outside
        filled = np.isfinite(m.median)
        assert filled.any() and np.all(m.count[filled] >= 4) and not np.any(np.isfinite(m.median[m.count < 4]))


# ---- traversals --------------------------------------------------------------------------------------

def test_latent_traversals_change_the_spectrum_monotonically(run, model):
    rotation = run["result"].rotation
    travs = latent_traversals(model, rotation, steps=np.linspace(-2, 2, 7))
    assert [t.name for t in travs] == ["D1", "D2", "D3", "D4"]
    mean_spectrum = model.decode(rotation.mean_[None].astype(np.float32))[0]
    for j, t in enumerate(travs):
        assert t.spectra.shape == (7, model.n_pix)
        np.testing.assert_allclose(t.values, np.linspace(-2, 2, 7) * np.sqrt(rotation.explained_variance_[j]))
        np.testing.assert_allclose(t.spectra[3], mean_spectrum, rtol=1e-5, atol=1e-5)  # step 0: D = 0
        direction = t.spectra[-1] - t.spectra[0]
        assert np.abs(direction).max() > 1e-3  # moving along D_j does change the spectrum
        # the spectrum moves along one direction as D_j grows: monotone up to a wobble at the ±2σ ends,
        # where a non-linear decoder may bend (rank correlation of the projection with the step)
        proj = (t.spectra - t.spectra[0]) @ direction
        assert spearmanr(np.arange(len(proj)), proj).statistic > 0.9
    # the leading direction changes the spectrum the most
    spans = [np.abs(t.spectra[-1] - t.spectra[0]).mean() for t in travs]
    assert spans[0] == max(spans)
    assert set(EMISSION_LINES) >= {"Hα", "Hβ", "[O III] 5007", "[O II] 3727", "[N II] 6584", "[S II] 6717"}


def test_condition_traversals_follow_the_training_percentiles(run, dataset):
    from galvae.models import load_model

    cvae = load_model(run["cvaes"][0])
    train = dataset.indices("train")
    travs = condition_traversals(cvae, dataset.props, train, percentiles=(10, 50, 90))
    assert len(travs) == 1 and travs[0].name == "logmstar"
    logm = np.asarray(dataset.props["logmstar"])[train]
    np.testing.assert_allclose(travs[0].values, np.nanpercentile(logm, [10, 50, 90]))
    assert travs[0].spectra.shape == (3, cvae.n_pix)
    assert np.abs(travs[0].spectra[2] - travs[0].spectra[0]).max() > 1e-4
    with pytest.raises(ValueError):
        latent_traversals(cvae, run["result"].rotation)


# ---- attribution -------------------------------------------------------------------------------------

def test_stratified_rows_cover_the_mass_range():
    rng = np.random.default_rng(3)
    logm = np.r_[rng.normal(10.5, 0.2, 900), rng.normal(8.5, 0.2, 100)]  # 10% low-mass galaxies
    rows = np.arange(1000)
    picked = stratified_rows(rows, logm, 50, n_bins=5, seed=0)
    assert len(picked) == 50 and len(np.unique(picked)) == 50
    edges = np.quantile(logm, np.linspace(0, 1, 6))[1:-1]
    assert np.all(np.bincount(np.searchsorted(edges, logm[picked], side="right"), minlength=5) == 10)
    np.testing.assert_array_equal(stratified_rows(rows[:10], logm, 50), rows[:10])


def test_shap_values_add_up_to_the_latents(run, model, dataset):
    rotation = run["result"].rotation
    bg, ex = dataset.indices("train")[:15], dataset.indices("test")[:4]
    r = explain_latents(model, rotation, dataset.flux, bg, ex, method="deep")
    assert r.values.shape == (4, model.n_pix, 4)
    # outputs are the rotated posterior means of the explained spectra
    mu, _ = model.encode(dataset.flux[ex])
    np.testing.assert_allclose(r.outputs, rotation.transform(mu), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(r.values.sum(axis=1), r.outputs - r.expected, rtol=1e-5, atol=1e-6)
    assert r.fidelity["passed"] and r.fidelity["max_relative_error"] <= FIDELITY_TOLERANCE
    assert np.abs(r.values).max() > 0
    # pixels that equal the background in every spectrum (filled blue edge) carry no attribution
    same = np.all(dataset.flux[bg] == dataset.flux[ex][0], axis=0)
    if same.any():
        assert np.abs(r.values[0][same]).max() < 1e-12
    # float32 is faster and still adds up within its own stated tolerance
    r32 = explain_latents(model, rotation, dataset.flux, bg, ex, method="deep", dtype="float32")
    assert r32.fidelity["passed"] and r32.fidelity["tolerance"] == 1e-4
    np.testing.assert_allclose(r32.values, r.values, rtol=1e-2, atol=1e-4 * np.abs(r.values).max())
    # the fidelity measure does flag values that do not add up
    broken = fidelity(r.values * 1.1, r.outputs, r.expected, r.outputs.std(0) + 1)
    assert not broken["passed"] and broken["max_relative_error"] > 0.05


def test_integrated_gradients_fallback_is_nearly_complete(run, model, dataset):
    r = explain_latents(model, run["result"].rotation, dataset.flux, dataset.indices("train")[:3],
                        dataset.indices("test")[:2], method="integrated_gradients", ig_steps=256)
    assert r.method == "integrated_gradients"
    assert r.fidelity["median_relative_error"] < 0.02


def test_showcase_dims():
    assert showcase_dims(4) == (2, 3) and showcase_dims(6) == (2, 3)
    assert showcase_dims(3) == (1, 2) and showcase_dims(2) == (0, 1)


# ---- catalogue ---------------------------------------------------------------------------------------

def test_latent_catalogue_columns_and_values(run, dataset, model):
    from galvae import likelihood as lk

    t = read_latents(run["run"] / "analysis" / "latents.fits")
    expected = ["id", "z", "sn_median", "split", "D1", "D2", "D3", "D4", *(f"mu_{j}" for j in range(1, 5)),
                *(f"sigma_{j}" for j in range(1, 5)), "chi2_per_pixel", "ln_likelihood", "elbo", "n_good",
                "elbo_percentile", "sn_bin", "outlier_percentile"]
    assert t.colnames == expected
    assert len(t) == len(dataset) and list(t["id"]) == [str(i) for i in dataset.props["id"]]
    rotation = run["result"].rotation
    np.testing.assert_allclose(rotated_latents(t), rotation.transform(raw_latents(t)), atol=1e-10)
    train = np.asarray(t["split"]) == "train"
    np.testing.assert_allclose(rotated_latents(t)[train].mean(0), 0, atol=1e-8)
    np.testing.assert_allclose(rotated_latents(t)[train].var(0, ddof=1), rotation.explained_variance_, rtol=1e-8)
    assert np.all(np.asarray(t["sigma_1"]) > 0) and np.all(np.isfinite(t["chi2_per_pixel"]))
    # χ²/pixel at the posterior mean, by galvae.likelihood's definition; the ELBO as the model scores it
    mu = raw_latents(t).astype(np.float32)
    chi2 = lk.chi2_per_pixel(dataset.flux.astype(np.float64), model.decode(mu), dataset.ivar.astype(np.float64))
    np.testing.assert_allclose(t["chi2_per_pixel"], chi2, rtol=1e-4)
    np.testing.assert_allclose(t["elbo"], model.score(dataset.flux, dataset.ivar, n_samples=8, seed=0)["elbo"],
                               rtol=1e-5)
    test = ~train & (np.asarray(t["split"]) == "test")
    assert np.nanmax(t["elbo_percentile"][test]) == pytest.approx(100.0)
    np.testing.assert_allclose(percentile_of([0.5, 3, np.nan], [1, 2, 3, 4]), [0, 75, np.nan])


# ---- the driver --------------------------------------------------------------------------------------

def test_explain_writes_the_analysis(run):
    a = run["run"] / "analysis"
    for name in ("rotation.json", "latents.fits", "mi.ecsv", "spearman.ecsv", "maps.npz", "traversals.npz",
                 "cvae_traversals.npz", "shap.npz", "summary.json"):
        assert (a / name).exists(), name
    summary = json.loads((a / "summary.json").read_text())
    assert summary["latent_dim"] == 4 and len(summary["explained_variance_ratio"]) == 4
    assert summary["shap"]["fidelity"]["passed"]
    assert summary["shap"]["showcase_dims"] == ["D3", "D4"]
    assert summary["mutual_information"]["split"].startswith("all")  # 8 test spectra are too few
    assert [t["latent"] for t in summary["truth"]["tracks"]] == ["D1", "D2", "D3", "D4"]
    figures = {p.stem for p in (a / "figures").glob("*.png")}
    assert {"fig1_maps_D1_D2", "fig3_traversals", "fig4_mutual_information", "fig4_truth_mutual_information",
            "fig5_cvae_traversals", "fig6_shap", "explained_variance"} <= figures
    for p in (a / "figures").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from astropy.table import Table

    mi = Table.read(a / "mi.ecsv")
    assert set(mi["source"]) == {"catalog", "truth"}
    assert {"logmstar", "logsfr", "a_v"} <= set(mi["property"][mi["source"] == "catalog"])
    assert {"tau", "mwage", "logu", "logmstar"} <= set(mi["property"][mi["source"] == "truth"])
    assert np.all(np.asarray(mi["mi"]) >= 0)
    # R² of properties: computed on the test split, which holds too few spectra here: an empty table
    assert "vae" not in set(Table.read(a / "r2.ecsv")["model"]) and "latent_information" in summary
    assert 0 <= summary["shap"]["filled_share"] < 1


def test_explain_hands_the_fill_masks_to_the_figures(run, dataset):
    from galvae.explain.attribution import load_shap

    a = run["run"] / "analysis"
    assert dataset.unobserved.any()
    with np.load(a / "traversals.npz") as f:
        np.testing.assert_array_equal(f["unobserved"], dataset.unobserved)
    result = load_shap(a / "shap.npz")[0]
    np.testing.assert_array_equal(result.filled, dataset.filled[result.rows])
    np.testing.assert_array_equal(result.unobserved, dataset.unobserved)


def test_mean_abs_shap_leaves_out_filled_pixels():
    from galvae.explain.attribution import ShapResult

    values = np.array([[[1.0], [2.0], [4.0]], [[3.0], [-6.0], [8.0]]])  # (2 spectra, 3 pixels, 1 latent)
    filled = np.array([[False, True, True], [False, False, True]])
    r = ShapResult(values, np.zeros(1), np.zeros((2, 1)), np.arange(2), np.arange(2), "deep", filled=filled)
    np.testing.assert_array_equal(r.mean_abs()[:, 0], [2.0, 6.0, np.nan])  # pixel 1: only spectrum 1's
    assert r.filled_share() == pytest.approx((2 + 4 + 8) / 24)


def test_figures_hatch_unobserved_columns_and_grey_shap_at_filled_pixels():
    import matplotlib.pyplot as plt

    from galvae.explain import figures as F
    from galvae.explain.traversal import Traversal

    wave = np.linspace(3400, 8400, 200)
    unobserved = np.zeros(200, bool)
    unobserved[:6] = True
    trav = [Traversal("D1", np.array([-1.0, 1.0]), np.ones((2, 200)))]

    def gids(fig):
        return [a.get_gid() for ax in fig.axes for a in (*ax.patches, *ax.collections)]

    fig = F.traversals_figure(wave, trav, unobserved=unobserved)
    (span,) = [p for ax in fig.axes for p in ax.patches if p.get_gid() == F.UNOBSERVED_GID]
    assert span.get_x() == wave[0] and span.get_x() + span.get_width() == pytest.approx(wave[5])
    assert F.UNOBSERVED_GID not in gids(F.traversals_figure(wave, trav))
    plt.close("all")
    values = np.random.default_rng(0).standard_normal((200, 4))
    filled = ~unobserved.copy()
    filled[:] = False
    filled[50:60] = True
    fig = F.shap_figure(wave, values, np.ones(200), (2, 3), np.abs(values), filled=filled, unobserved=unobserved)
    assert gids(fig).count("filled") == 2 and gids(fig).count(F.UNOBSERVED_GID) == 3
    plt.close("all")


def test_mi_rows_maps_and_figures_follow_this_analysis(run, dataset, tmp_path):
    from astropy.table import Table

    from galvae.explain.maps import maps_from_npz

    # a "truth" column named like a catalogue one, far from it: Figure 1 must map the catalogue's values
    ids = np.asarray(dataset.props["id"]).astype(str)
    truth = Table({"id": ids, "logmstar": np.asarray(dataset.props["logmstar"], dtype=float) + 100.0})
    kw = dict(FAST_EXPLAIN, mi_split="all", max_mi_samples=20, properties=("logmstar", "logsfr"))
    first = explain(run["vae"], run["dataset"], tmp_path, truth=truth, cvae_dirs=run["cvaes"], **kw)
    a = tmp_path / "analysis"
    assert first.summary["mutual_information"]["n_rows"] == 20
    mi, rho = Table.read(a / "mi.ecsv"), Table.read(a / "spearman.ecsv")
    for source, prop, latent in zip(mi["source"], mi["property"], mi["latent"]):
        same = (rho["source"] == source) & (rho["property"] == prop) & (rho["latent"] == latent)
        assert rho["n"][same][0] == mi["n"][(mi["source"] == source) & (mi["property"] == prop)
                                            & (mi["latent"] == latent)][0] <= 20
    with np.load(a / "maps.npz") as f:
        logm_map = next(m for m in maps_from_npz(f) if m.prop == "logmstar")
    assert np.nanmax(logm_map.median) <= np.nanmax(dataset.props["logmstar"])
    assert (a / "figures" / "fig5_cvae_traversals.png").exists()
    # explained again without CVAEs: the earlier Figure 5 must not linger for the report to pick up
    second = explain(run["vae"], run["dataset"], tmp_path, truth=truth, cvae_dirs=(), **kw)
    assert "fig5_cvae_traversals" not in second.figures
    assert not (a / "figures" / "fig5_cvae_traversals.png").exists()
    assert {p.stem for p in (a / "figures").glob("*.png")} == set(second.figures)


def own_copy(run, tmp_path) -> Path:
    """A copy of the shared run's folder (file times kept) for a test that writes into it: the
    module-scoped ``run`` stays as ``build_run`` left it, whatever order the tests run in."""
    import shutil

    return Path(shutil.copytree(run["run"], tmp_path / "run"))


def test_encode_external_uses_the_same_basis(run, tmp_path):
    a = own_copy(run, tmp_path) / "analysis"
    ref = read_latents(a / "latents.fits")
    ext = encode_external(run["vae"], a, run["dataset"], out_path=tmp_path / "ext.fits", name="again")
    np.testing.assert_allclose(rotated_latents(ext), rotated_latents(ref), atol=1e-10)
    np.testing.assert_allclose(ext["chi2_per_pixel"], ref["chi2_per_pixel"])
    np.testing.assert_allclose(ext["elbo_percentile"], ref["elbo_percentile"])
    entry = json.loads((a / "summary.json").read_text())["external"]["again"]
    assert entry["n"] == len(ref) and len(entry["rows"]) == len(ref)
    assert entry["chi2_per_pixel_median"] == pytest.approx(np.median(ref["chi2_per_pixel"]))


def test_explain_rerun_skips_finished_parts(run, tmp_path):
    out = own_copy(run, tmp_path)
    a = out / "analysis"
    before = {n: (a / n).stat().st_mtime_ns for n in ("latents.fits", "mi.ecsv", "shap.npz")}
    again = explain(run["vae"], run["dataset"], out, truth=None, cvae_dirs=(), figures=False, **FAST_EXPLAIN)
    after = {n: (a / n).stat().st_mtime_ns for n in ("latents.fits", "shap.npz")}
    assert after == {k: before[k] for k in after}  # encoding and SHAP were not redone
    assert (a / "mi.ecsv").stat().st_mtime_ns != before["mi.ecsv"]  # no truth now: MI recomputed
    assert "truth" not in again.summary
    from astropy.table import Table

    assert set(Table.read(a / "mi.ecsv")["source"]) == {"catalog"}
    # the shared run was not touched: its MI still has the truth's rows
    assert "truth" in set(Table.read(run["run"] / "analysis" / "mi.ecsv")["source"])
