"""Training a fixed-offset compact model on basis statistics: the same χ², the same training, read once."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from galvae import basis_split
from galvae import likelihood as lk
from galvae.fit import fit, split_data, training_basis
from galvae.models import load_model
from galvae.models.conditions import ConditionSet, rows_with_conditions
from galvae.models.vae import VAE, ModelConfig
from galvae.prepare.dataset import split_rows
from galvae.prepare.synthetic import synthetic_dataset

N, P, K = 600, 256, 12
FAST = {"epochs": 4, "batch_size": 64, "lr": 2e-3, "progress": False, "patience": 50, "n_basis": K}


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(N, P, seed=11)


def history(model_dir) -> list[dict]:
    with open(model_dir / "history.csv") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def fixed_offset_model(data) -> tuple[VAE, object]:
    """A fixed-offset compact model with the training split's scaling and a random basis."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(n_pix=P, latent_dim=3, n_basis=K, train_offset=False))
    split = split_data(data, data.indices("train"), ConditionSet(()), torch.device("cpu"))
    model.set_data_scaling(*split.mean_std())
    q, _ = torch.linalg.qr(torch.randn(P, K))
    model.set_basis(split.mean_std()[0], q.T.contiguous(), torch.rand(K) + 0.5)
    return model, split


def test_the_quadratic_form_is_the_pixels_chi2(data):
    model, split = fixed_offset_model(data)
    stats = basis_split.compute_statistics(split, model)
    coefficients, basis, offset = model.output_basis()
    x, w = (torch.from_numpy(np.nan_to_num(a[data.indices("train")].astype(np.float32))) for a in (data.flux, data.ivar))
    w = torch.where(torch.isfinite(w) & (w > 0), w, torch.zeros_like(w))
    u = torch.randn(len(x), K)
    pixels = lk.chi2(x, offset + u @ basis, w)
    np.testing.assert_allclose(basis_split.chi2(u, stats).numpy(), pixels.numpy(), rtol=2e-4)
    # the encoder's projections: encode() on the pixels equals encode_projections() on the statistics
    with torch.no_grad():
        np.testing.assert_allclose(model.encode(x)[0].numpy(), model.encode_projections(stats.p)[0].numpy(),
                                   rtol=1e-4, atol=1e-5)
    assert stats.a.shape == (len(x), K * (K + 1) // 2)


def test_streamed_and_resident_splits_give_the_same_statistics(data):
    model, resident = fixed_offset_model(data)
    streamed = split_data(data, data.indices("train"), ConditionSet(()), torch.device("cpu"), resident_gb=0)
    assert resident.resident and not streamed.resident
    a, b = (basis_split.compute_statistics(s, model) for s in (resident, streamed))
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_training_on_statistics_equals_training_on_pixels(data, tmp_path, monkeypatch):
    stats_dir = fit(data, tmp_path / "stats", latent_dim=3, conditions=("logmstar",), train_offset=False, **FAST)
    monkeypatch.setattr(basis_split, "uses_statistics", lambda cfg, loss: False)  # the same model on pixels
    pixel_dir = fit(data, tmp_path / "pixels", latent_dim=3, conditions=("logmstar",), train_offset=False, **FAST)
    a, b = history(stats_dir), history(pixel_dir)
    assert len(a) == len(b) == FAST["epochs"]
    for ra, rb in zip(a, b):
        for k in ("train_loss", "val_loss", "val_chi2_per_pixel", "lr"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-4), k
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (stats_dir, pixel_dir))
    assert ma["chi2_per_pixel"] == pytest.approx(mb["chi2_per_pixel"], rel=1e-3)
    cfg = json.loads((stats_dir / "config.json").read_text())["model"]
    assert cfg["train_offset"] is False
    model = load_model(stats_dir).module
    assert not model.decoder.expand.bias.requires_grad
    # the offset stayed the mean of the training split's weighted PCA
    keep = rows_with_conditions(data.props, ("logmstar",))
    pca_mean = training_basis(data, split_rows(data, "train", keep), K)[0]
    np.testing.assert_allclose(model.output_basis()[2].detach().numpy(), pca_mean, rtol=1e-5, atol=1e-5)


def test_a_grid_reads_the_pixels_once_per_process(data, tmp_path, monkeypatch):
    calls = []
    compute = basis_split.compute_statistics
    monkeypatch.setattr(basis_split, "compute_statistics", lambda split, model: calls.append(len(split)) or
                        compute(split, model))
    basis_split._cache.clear()
    data.attrs["inputs_digest"] = "test-basis-split"
    for d in (1, 2):
        fit(data, tmp_path / f"d{d}", latent_dim=d, train_offset=False, **dict(FAST, epochs=1))
    assert len(calls) == 2  # train and val, once for both cells


def test_the_offset_option_is_checked(data, tmp_path):
    with pytest.raises(ValueError, match="fixed offset"):
        ModelConfig(arch="paper", n_pix=P, train_offset=False)
    first = fit(data, tmp_path / "d1", latent_dim=1, **dict(FAST, epochs=1))
    with pytest.raises(ValueError, match="train_offset"):
        fit(data, tmp_path / "d2", latent_dim=2, train_offset=False, init_from=first, **dict(FAST, epochs=1))


def test_scoring_a_fixed_offset_model_from_statistics_equals_scoring_its_pixels(data, tmp_path, monkeypatch):
    from galvae.select.evaluate import score_test_split

    model_dir = fit(data, tmp_path / "m", latent_dim=2, conditions=("logmstar",), train_offset=False, **FAST)
    basis_split._cache.clear()
    fast = score_test_split(model_dir, data, n_iwae=4, n_elbo=3, seed=5, batch_size=50, refine_steps=10)
    monkeypatch.setattr(basis_split, "uses_statistics", lambda cfg, loss: False)
    slow = score_test_split(model_dir, data, n_iwae=4, n_elbo=3, seed=5, batch_size=50, refine_steps=10)
    assert fast.keys() == slow.keys()
    np.testing.assert_array_equal(fast["ids"], slow["ids"])
    for k in ("ln_likelihood", "bic_amortized", "elbo", "iwae", "kl", "mu"):
        np.testing.assert_allclose(fast[k], slow[k], rtol=1e-4, atol=1e-3, err_msg=k)
    # the refined latent is 10 float32 Adam steps away: summation order moves it by ~1e-4 relative
    for k in ("ln_likelihood_ml", "bic"):
        np.testing.assert_allclose(fast[k], slow[k], rtol=1e-3, atol=1e-2, err_msg=k)
    np.testing.assert_allclose(fast["chi2_per_pixel"], slow["chi2_per_pixel"], rtol=1e-4)
    assert (fast["ln_likelihood_ml"] >= fast["ln_likelihood"] - 1e-3).all()
    assert (fast["ln_likelihood_ml"] > fast["ln_likelihood"] + 1e-3).any()  # the refinement moved z


def test_a_fixed_offset_grid_trains_and_scores_every_cell_on_statistics(tmp_path, monkeypatch):
    from galvae.select import select_grid

    data = synthetic_dataset(300, 96, seed=3, nan_fraction=0.05)
    calls = []
    compute = basis_split.compute_statistics
    monkeypatch.setattr(basis_split, "compute_statistics", lambda split, model: calls.append(len(split)) or
                        compute(split, model))
    basis_split._cache.clear()
    r = select_grid(data, tmp_path / "g", latent="1-2", conditions="none,logmstar", seeds=1, epochs=2,
                    scheduler="sync", progress=False, batch_size=64, n_iwae=4, n_basis=8, train_offset=False)
    assert r.n_done == 4 and np.isfinite(np.asarray(r.table["bic_mean"], float)).all()
    for row in r.table:
        config = json.loads((tmp_path / "g" / "cells" / row["cell"] / "config.json").read_text())
        assert config["model"]["train_offset"] is False
    assert len(calls) == 3  # train, val and test statistics, once for the four cells
