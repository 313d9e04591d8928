"""What the latents know: cross-validated R² of properties from latents, VAE against PCA of the same d."""

from __future__ import annotations

import numpy as np
import pytest

from galvae.explain.predictive import (
    MIN_ROWS,
    compare,
    encode_rows,
    fit_baselines,
    latent_information,
    out_of_fold,
    r2_score,
    verdict,
)
from galvae.prepare.synthetic import synthetic_dataset


def test_knn_reads_a_curved_property_that_a_linear_fit_misses():
    rng = np.random.default_rng(0)
    z = rng.uniform(-1, 1, (600, 2))
    y = np.cos(3 * z[:, 0]) + 0.05 * rng.standard_normal(600)  # even in z: no straight line through it
    knn, linear = (float(r2_score(y, out_of_fold(z, y, m))) for m in ("knn", "linear"))
    assert knn > 0.95 and linear < 0.1
    noise = rng.standard_normal((600, 2))
    assert all(float(r2_score(y, out_of_fold(noise, y, m))) < 0.05 for m in ("knn", "linear"))


def test_a_few_far_encodings_do_not_wreck_the_linear_probe():
    # a handful of spectra unlike the rest (luminous AGN) encoded 100 sigma out: plain least squares is
    # levered by them and extrapolates; the probe clips latents to the training folds' 1-99 % range
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold, cross_val_predict

    rng = np.random.default_rng(2)
    z = rng.standard_normal((500, 3))
    y = z @ [1.0, 0.5, 0.0] + 0.3 * rng.standard_normal(500)
    z[:4] = rng.choice([-100.0, 100.0], size=(4, 3))
    plain = cross_val_predict(LinearRegression(), z, y, cv=KFold(5, shuffle=True, random_state=0))
    assert float(r2_score(y, plain)) < 0.5
    assert float(r2_score(y, out_of_fold(z, y, "linear"))) > 0.8


def test_knn_is_blind_to_the_scale_of_a_latent():
    # standardised latents: a latent in huge units must not drown the one that carries the property
    rng = np.random.default_rng(1)
    z = rng.uniform(-1, 1, (500, 2))
    y = z[:, 0] ** 2
    scaled = z * [1.0, 1e4]
    assert float(r2_score(y, out_of_fold(scaled, y, "knn"))) > 0.9


def test_compare_pairs_the_models_and_skips_what_it_cannot_measure():
    rng = np.random.default_rng(2)
    n = 300
    z = rng.standard_normal((n, 3))
    y = z[:, 0] + 0.5 * z[:, 1] ** 2 + 0.1 * rng.standard_normal(n)
    few = np.full(n, np.nan)
    few[:MIN_ROWS - 1] = rng.standard_normal(MIN_ROWS - 1)
    sets = {"vae": (z, np.ones(n, bool)), "pca": (z[:, 2:] + 0.0 * z[:, :1], np.ones(n, bool))}
    targets = [("catalog", "good", y), ("catalog", "pinned", np.ones(n)), ("catalog", "rare", few)]
    table = compare(sets, targets, n_boot=100)
    assert set(table["property"]) == {"good"}  # a constant and a too-rare property give no R²
    assert sorted(table["model"][table["method"] == "knn"]) == ["pca", "vae"]
    pca = table[(table["model"] == "pca") & (table["method"] == "knn")][0]
    vae = table[(table["model"] == "vae") & (table["method"] == "knn")][0]
    assert vae["r2"] > 0.75 and pca["r2"] < 0.1
    assert pca["vae_minus"] == pytest.approx(vae["r2"] - pca["r2"])
    assert 0 < pca["vae_minus_err"] < 0.1 and 0 < vae["r2_err"] < 0.1
    (v,) = verdict(table)
    assert v["vae_at_least"] and v["significance"] > 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from galvae.fit import fit
    from galvae.models import load_model

    data = synthetic_dataset(900, 200, seed=3)
    out = fit(data, tmp_path_factory.mktemp("vae") / "m", latent_dim=3, epochs=8, batch_size=64, lr=2e-3,
              progress=False, patience=50, n_basis=16)
    return data, load_model(out)


def test_baselines_are_fitted_on_the_training_split(trained):
    data, _ = trained
    models = fit_baselines(data, 3)
    train = data.indices("train")
    np.testing.assert_allclose(models["pca"].mean_, data.flux[train].astype(float).mean(axis=0), rtol=1e-9)
    assert models["pca"].latent_dim == models["wpca"].latent_dim == 3
    small = fit_baselines(data, 3, max_rows=100)  # a seeded sample of the training rows
    assert not np.allclose(small["pca"].mean_, models["pca"].mean_)


def test_latent_information_on_a_trained_vae(trained):
    data, vae = trained
    test = data.indices("test")
    mu = vae.encode(data.flux[test])[0]
    table = latent_information(mu, data, test, truth_cols={"sf": np.asarray(data.props["sf"], float)}, n_boot=50)
    assert set(table["model"]) == {"vae", "pca", "wpca"} and set(table["d"]) == {3}
    assert {"logmstar", "logsfr", "logssfr", "metallicity"} <= set(table["property"][table["source"] == "catalog"])
    assert set(table["property"][table["source"] == "truth"]) == {"sf"}
    assert np.isfinite(table["r2"]).all() and (table["r2_err"] > 0).all()
    # the latents of a trained model know the line strength: far better than chance
    sf = table[(table["property"] == "sf") & (table["model"] == "vae") & (table["method"] == "knn")][0]
    assert sf["r2"] > 0.25  # (unrelated latents score at or below 0)


def test_a_cvae_is_scored_on_the_rows_with_its_conditions(trained, tmp_path):
    from galvae.fit import fit
    from galvae.models import load_model

    data, vae = trained
    cvae = load_model(fit(data, tmp_path / "c", latent_dim=2, conditions=("logmstar",), epochs=2, batch_size=64,
                          progress=False, patience=50, n_basis=16))
    test = data.indices("test")
    sets = encode_rows({"cvae": cvae}, data, test, block=40)  # blocks smaller than the split: rows stay aligned
    z, usable = sets["cvae"]
    has = np.isfinite(np.asarray(data.props["logmstar"], float))[test]
    np.testing.assert_array_equal(usable, has)
    assert np.isnan(z[~usable]).all() and np.isfinite(z[usable]).all()
    np.testing.assert_allclose(z[usable], cvae.encode(data.flux[test][usable], None, data.props[test[usable]])[0],
                               rtol=1e-5, atol=1e-6)


def test_report_shows_the_r2_table_with_paired_differences(tmp_path):
    from galvae.report.html import r2_section

    rng = np.random.default_rng(4)
    n = 200
    z = rng.standard_normal((n, 2))
    y = z[:, 0] ** 2 + 0.1 * rng.standard_normal(n)
    table = compare({"vae": (z, np.ones(n, bool)), "pca": (rng.standard_normal((n, 2)), np.ones(n, bool))},
                    [("catalog", "logmstar", y), ("truth", "tau", z[:, 1])], n_boot=50)
    (tmp_path / "figures").mkdir()
    table.write(tmp_path / "r2.ecsv", format="ascii.ecsv")
    page = r2_section(tmp_path, {"latent_information": {"vae_vs_pca": verdict(table)}})
    assert 'id="prediction"' in page and "VAE − pca" in page and "AstroCLIP" in page
    knn = table[(table["method"] == "knn") & (table["property"] == "logmstar")]
    vae, pca = knn[knn["model"] == "vae"][0], knn[knn["model"] == "pca"][0]
    assert f"{vae['r2']:.3g} ± " in page and f"{pca['vae_minus']:.3g} ± " in page
    assert "0.88" in page  # the published anchor beside log M*
    assert "every true parameter of the mock" in page and "1 of 1" in page
