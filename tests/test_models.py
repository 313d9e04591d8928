"""Models: VAE/CVAE shapes and sizes, the shared likelihood definitions, conditions, PCA baselines."""

from __future__ import annotations

import json
import math
from itertools import pairwise

import numpy as np
import pytest
import torch

from galvae import likelihood as lk
from galvae.models import PCA, load_model
from galvae.models.conditions import ConditionSet, PowerTransform, rows_with_conditions
from galvae.models.vae import (
    PAPER_CHANNELS,
    PAPER_FEATURES,
    VAE,
    ModelConfig,
    conv_length,
    conv_transpose_length,
    count_parameters,
    paper_decoder_length,
    paper_encoder_length,
    vae_loss,
)

# ---- architecture -----------------------------------------------------------------------------------

def expected_paper_parameters(n_pix: int, d: int, c: int = 0) -> int:
    """Parameter count of `paper`, layer by layer from the sizes in the issue (not from the module)."""
    conv = lambda cin, cout, k: cin * cout * k + cout
    bn = lambda ch: 2 * ch
    lin = lambda n_in, n_out: n_in * n_out + n_out
    ch = PAPER_CHANNELS
    n = n_pix
    for _ in range(4):
        n = conv_length(n, 5, 1, 1) // 2
    enc = sum(conv(a, b, 5) + bn(b) for a, b in pairwise(ch)) + lin(64 * n, 1024)
    heads = 2 * lin(1024 + c, d)
    n = n_pix // 16
    dec = lin(d + c, 1024) + lin(1024, 64 * n)
    for a, b in ((64, 32), (32, 16), (16, 8)):
        dec += conv(a, b, 5) + bn(b)
        n = conv_transpose_length(n, 5, 2, 1, 1)
    dec += conv(8, 8, 3) + bn(8) + conv(8, 1, 3)
    n = conv_transpose_length(n, 3, 2, 1, 1)
    dec += lin(n, n_pix)
    return enc + heads + dec


def test_paper_has_about_49_million_parameters_at_4000_pixels():
    model = VAE(ModelConfig(arch="paper", n_pix=4000, latent_dim=4))
    n = count_parameters(model)
    assert n == expected_paper_parameters(4000, 4)
    assert 48.5e6 < n < 49.5e6
    # the lengths that make up the big Linear layers follow from P
    assert paper_encoder_length(4000) == 248 and paper_decoder_length(4000) == 4028
    assert model.encoder.fc[0].in_features == 64 * 248
    assert model.decoder.fc[2].out_features == 64 * 250


@pytest.mark.parametrize("arch", ["paper", "compact"])
@pytest.mark.parametrize("n_pix", [256, 1000, 4001])
def test_shapes(arch, n_pix):
    torch.manual_seed(0)
    model = VAE(ModelConfig(arch=arch, n_pix=n_pix, latent_dim=3)).eval()
    x = torch.randn(5, n_pix)
    xhat, mu, logvar = model(x)
    assert xhat.shape == (5, n_pix) and mu.shape == (5, 3) and logvar.shape == (5, 3)
    assert model.decode(torch.zeros(2, 3)).shape == (2, n_pix)


@pytest.mark.parametrize("arch", ["paper", "compact"])
def test_cvae_concatenates_conditions_to_features_and_z(arch):
    cfg = ModelConfig(arch=arch, n_pix=256, latent_dim=3, n_conditions=2)
    model = VAE(cfg).eval()
    n_feat = PAPER_FEATURES if arch == "paper" else cfg.hidden[-1]
    assert model.mu_head.in_features == n_feat + 2
    assert model.logvar_head.in_features == n_feat + 2
    first_decoder_linear = next(m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear))
    assert first_decoder_linear.in_features == 3 + 2
    x, z = torch.randn(4, 256), torch.zeros(4, 3)
    c1, c2 = torch.zeros(4, 2), torch.ones(4, 2)
    assert not torch.allclose(model.encode(x, c1)[0], model.encode(x, c2)[0])
    assert not torch.allclose(model.decode(z, c1), model.decode(z, c2))
    with pytest.raises(ValueError, match="needs 2 conditions"):
        model.encode(x)


def test_compact_is_much_smaller_than_paper():
    paper = count_parameters(VAE(ModelConfig(arch="paper", n_pix=4000, latent_dim=4)))
    compact = count_parameters(VAE(ModelConfig(arch="compact", n_pix=4000, latent_dim=4)))
    assert compact < paper / 8


def test_compact_reads_and_writes_through_the_installed_eigenspectra():
    torch.manual_seed(0)
    p, k = 60, 3
    model = VAE(ModelConfig(arch="compact", n_pix=p, latent_dim=2, n_basis=k)).double()
    assert count_parameters(model) < count_parameters(VAE(ModelConfig(arch="compact", n_pix=p, latent_dim=2)))
    shift, scale = torch.randn(p, dtype=torch.float64), torch.rand(p, dtype=torch.float64) + 0.5
    model.set_data_scaling(shift, scale)
    components = torch.linalg.qr(torch.randn(p, k, dtype=torch.float64))[0].T  # orthonormal rows
    mean, std = torch.randn(p, dtype=torch.float64), torch.tensor([3.0, 1.0, 0.2], dtype=torch.float64)
    model.set_basis(mean, components, std)
    x = torch.randn(5, p, dtype=torch.float64)
    coeff = model.encoder.project((x - model.shift) / model.scale)
    torch.testing.assert_close(coeff, (x - mean) @ components.T / std)  # scaled projections
    u = torch.randn(5, k, dtype=torch.float64)
    spectra = model.shift + model.scale * model.decoder.expand(u)
    torch.testing.assert_close(spectra, mean + (u * std) @ components)
    frozen = {n for n, q in model.named_parameters() if not q.requires_grad}
    assert frozen == {"encoder.project.weight", "encoder.project.bias", "decoder.expand.weight"}
    with pytest.raises(ValueError, match="n_basis"):
        ModelConfig(arch="paper", n_pix=512, n_basis=4)
    with pytest.raises(ValueError, match="eigenspectra"):
        model.set_basis(mean, components[:2], std[:2])


def test_config_round_trips_through_json():
    cfg = ModelConfig(arch="paper", n_pix=512, latent_dim=6, n_conditions=2, dropout=0.1)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    cfg = ModelConfig(arch="compact", n_pix=512, n_basis=32)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    old = {k: v for k, v in cfg.to_dict().items() if k != "n_basis"}  # written before n_basis existed
    assert ModelConfig.from_dict(old).n_basis == 0
    with pytest.raises(ValueError, match="arch"):
        ModelConfig(arch="transformer")


# ---- the shared definitions -------------------------------------------------------------------------

def test_likelihood_definitions_by_hand():
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    m = np.array([[1.5, 2.0, 2.0, 0.0]])
    w = np.array([[4.0, 1.0, 0.5, 0.0]])  # last pixel bad
    chi2 = 4 * 0.25 + 0 + 0.5 * 1.0
    lnl = -0.5 * (chi2 - (math.log(4) + math.log(1) + math.log(0.5)) + 3 * math.log(2 * math.pi))
    assert lk.chi2(x, m, w)[0] == pytest.approx(chi2)
    assert lk.ln_likelihood(x, m, w)[0] == pytest.approx(lnl)
    assert lk.n_good(w)[0] == 3
    assert lk.chi2_per_pixel(x, m, w)[0] == pytest.approx(chi2 / 3)
    assert lk.mse(x, m)[0] == pytest.approx((0.25 + 0 + 1 + 16) / 4)
    assert lk.bic(np.array([lnl]), 5, np.array([3]))[0] == pytest.approx(5 * math.log(3) - 2 * lnl)
    mu, logvar = np.array([[0.5, -1.0]]), np.array([[0.0, math.log(0.25)]])
    kl = 0.5 * ((0.25 + 1 - 0 - 1) + (1.0 + 0.25 - math.log(0.25) - 1))
    assert lk.kl_divergence(mu, logvar)[0] == pytest.approx(kl)
    assert lk.elbo(lnl, kl, beta=2.0) == pytest.approx(lnl - 2 * kl)
    # the torch path gives the same numbers
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    assert lk.ln_likelihood(t(x), t(m), t(w)).item() == pytest.approx(lnl)
    loss = vae_loss(t(x), t(w), t(m), t(mu), t(logvar), "gaussian", beta=0.5)
    assert loss.item() == pytest.approx(-lnl + 0.5 * kl)
    assert vae_loss(t(x), t(w), t(m), t(mu), t(logvar), "mse", beta=1.0).item() == pytest.approx(17.25 / 4 + kl)


def test_mean_and_stderr():
    mean, err = lk.mean_and_stderr([1.0, 2.0, 3.0, np.nan])
    assert mean == 2.0 and err == pytest.approx(1.0 / math.sqrt(3))


# ---- conditions --------------------------------------------------------------------------------------

def test_yeo_johnson_transform_standardises_and_inverts():
    rng = np.random.default_rng(0)
    v = rng.lognormal(0, 0.7, 500) - 0.5
    t = PowerTransform.fit("logsfr", v)
    y = t.transform(v)
    assert abs(y.mean()) < 1e-8 and abs(y.std() - 1) < 1e-8
    assert np.allclose(t.inverse_transform(y), v)
    assert all(isinstance(x, float) for x in (t.lmbda, t.mean, t.std))
    assert np.isnan(t.transform(np.array([np.nan]))[0])


def test_condition_set_from_table_rows():
    from astropy.table import Table

    props = Table({"logmstar": [10.0, 10.5, np.nan, 11.0], "logsfr": [0.1, np.nan, 0.3, -0.5]})
    assert rows_with_conditions(props, ["logmstar"]).tolist() == [True, True, False, True]
    assert rows_with_conditions(props, ["logmstar", "logsfr"]).tolist() == [True, False, False, True]
    cs = ConditionSet.fit(props, ["logmstar"], np.array([0, 1, 3]))
    again = ConditionSet.from_list(json.loads(json.dumps(cs.to_list())))
    assert np.allclose(again.transform(cs.raw_values(props, [0, 1, 3])), cs.transform([[10.0], [10.5], [11.0]]))
    with pytest.raises(ValueError, match="unknown condition"):
        ConditionSet.fit(props, ["tau"], np.array([0]))


# ---- PCA baselines -----------------------------------------------------------------------------------

def low_rank_data(n=1500, p=300, k=3, seed=0):
    """Mean + k-dimensional signal + heteroscedastic noise, with garbage in 10 % bad pixels (ivar 0)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(p, k)))[0].T
    coef = rng.normal(size=(n, k)) * np.array([5.0, 3.0, 1.0][:k])
    ivar = rng.uniform(10, 1000, (n, p))
    ivar[rng.random((n, p)) < 0.1] = 0
    flux = 1 + coef @ basis + rng.normal(size=(n, p)) / np.sqrt(np.where(ivar > 0, ivar, 1))
    flux[ivar == 0] += rng.normal(0, 3, (ivar == 0).sum())
    return flux, ivar, basis


def subspace_cosines(a, b):
    """Cosines of the principal angles between the row spaces of two orthonormal bases."""
    return np.linalg.svd(a @ b.T, compute_uv=False)


def test_plain_pca_recovers_a_clean_low_rank_subspace():
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.normal(size=(200, 3)))[0].T
    flux = 2 + (rng.normal(size=(800, 3)) * [4, 2, 1]) @ basis + 0.01 * rng.normal(size=(800, 200))
    pca = PCA(3).fit(flux)
    assert subspace_cosines(pca.components_, basis).min() > 0.9999
    z = pca.transform(flux)
    assert np.abs(pca.inverse_transform(z) - flux).max() < 0.1
    assert pca.explained_variance_[0] > pca.explained_variance_[1] > pca.explained_variance_[2]


def test_weighted_em_pca_recovers_subspace_despite_bad_pixels():
    flux, ivar, basis = low_rank_data()
    plain = PCA(3).fit(flux)
    weighted = PCA(3, weighted=True, n_iter=30).fit(flux, ivar)
    assert subspace_cosines(weighted.components_, basis).min() > 0.999
    assert subspace_cosines(plain.components_, basis).min() < subspace_cosines(weighted.components_, basis).min()
    # orthonormal and ordered
    assert np.allclose(weighted.components_ @ weighted.components_.T, np.eye(3), atol=1e-10)
    assert np.all(np.diff(weighted.explained_variance_) < 0)
    # encoding with ivar fits the good pixels: χ²/pixel ≈ 1
    mu, sigma = weighted.encode(flux, ivar)
    assert np.all(sigma > 0)
    chi2 = lk.chi2_per_pixel(flux, weighted.decode(mu), ivar)
    assert 0.9 < np.median(chi2) < 1.1


def test_pca_model_directory_round_trip(tmp_path):
    flux, ivar, _ = low_rank_data(n=300, p=100)
    pca = PCA(3, weighted=True).fit(flux, ivar)
    pca.save(tmp_path / "pca")
    loaded = load_model(tmp_path / "pca")
    assert isinstance(loaded, PCA)
    for a, b in zip(loaded.encode(flux, ivar), pca.encode(flux, ivar)):
        assert np.array_equal(a, b)
    assert np.array_equal(loaded.decode(np.ones((2, 3))), pca.decode(np.ones((2, 3))))
    assert loaded.config["kind"] == "pca" and loaded.config["n_components"] == 3
