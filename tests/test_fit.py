"""The trainer: learning, determinism, kill-and-resume, the NaN guard, model directories, encoding."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import galvae.fit as fitmod
from galvae import likelihood as lk
from galvae.fit import encode_dataset, fit, fit_pca
from galvae.models import PCA, TrainedVAE, load_model, load_weights, weights_path
from galvae.prepare.synthetic import synthetic_dataset

N, P = 600, 256
FAST = {"epochs": 6, "batch_size": 64, "lr": 2e-3, "progress": False, "patience": 50}


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(N, P, seed=7)


def history(model_dir):
    with open(model_dir / "history.csv") as fh:
        return list(csv.DictReader(fh))


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def zarr_copies(dataset, rows_per_chunk: int) -> dict:
    """The dataset's flux and ivar as in-memory Zarr arrays (what open_dataset(load=False) hands out)."""
    zarr = pytest.importorskip("zarr")
    out = {}
    for name in ("flux", "ivar"):
        a = getattr(dataset, name)
        out[name] = zarr.create_array(store={}, shape=a.shape, chunks=(rows_per_chunk, a.shape[1]), dtype=a.dtype)
        out[name][:] = a
    return out


# ---- learning ----------------------------------------------------------------------------------------

def test_training_lowers_val_loss_and_beats_the_mean_spectrum(data, tmp_path):
    out = fit(data, tmp_path / "m", latent_dim=3, **dict(FAST, epochs=10))
    rows = history(out)
    assert [r["epoch"] for r in rows] == [str(i) for i in range(1, 11)]
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    metrics = json.loads((out / "metrics.json").read_text())
    test = data.indices("test")
    mean_spectrum = data.flux[data.indices("train")].mean(0)
    chi2_mean = np.mean(lk.chi2_per_pixel(data.flux[test], mean_spectrum[None], data.ivar[test]))
    assert metrics["chi2_per_pixel"]["mean"] < 0.5 * chi2_mean
    assert metrics["n_test"] == len(test) and metrics["k"] == 3
    for key in ("ln_likelihood", "elbo", "chi2_per_pixel", "bic"):
        assert np.isfinite(metrics[key]["mean"]) and metrics[key]["stderr"] > 0
    assert metrics["elbo"]["mean"] < metrics["ln_likelihood"]["mean"]  # the ELBO pays the KL
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "done" and config["dataset_digest"] == data.attrs["inputs_digest"]
    assert not (out / "checkpoint.pt").exists() and not (out / "best.pt").exists()


@pytest.mark.parametrize("arch,loss", [("paper", "gaussian"), ("compact", "mse"), ("compact", "authors")])
def test_other_architecture_and_loss_train(data, tmp_path, arch, loss):
    out = fit(data, tmp_path / "m", latent_dim=2, arch=arch, loss=loss, **dict(FAST, epochs=2))
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["arch"] == arch and config["training"]["loss"] == loss
    assert np.isfinite(json.loads((out / "metrics.json").read_text())["chi2_per_pixel"]["mean"])


def test_the_authors_objective_is_their_codes_weighting(data, tmp_path):
    from galvae.models.vae import vae_loss

    g = torch.Generator().manual_seed(0)
    x, xhat = torch.randn(5, 40, generator=g), torch.randn(5, 40, generator=g)
    mu, logvar = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    ivar = torch.rand(5, 40, generator=g)
    kl_per_dim = 0.5 * (mu**2 + logvar.exp() - logvar - 1)
    by_hand = 1e3 * ((x - xhat) ** 2).mean(-1) + 0.1 * kl_per_dim.mean(-1)  # MSE over pixels, KL over dims
    torch.testing.assert_close(vae_loss(x, ivar, xhat, mu, logvar, kind="authors"), by_hand)
    with pytest.raises(ValueError, match="beta must be 1"):
        fit(data, tmp_path / "m", latent_dim=2, loss="authors", beta=0.5, **FAST)


def test_compact_eigenspectra_come_from_the_training_split_and_stay_fixed(data, tmp_path):
    out = fit(data, tmp_path / "m", latent_dim=3, n_basis=8, **FAST)
    module = load_model(out).module
    assert module.cfg.n_basis == 8
    mean, components, std = fitmod.training_basis(data, data.indices("train"), 8)
    expected = torch.from_numpy(components) * module.scale / torch.from_numpy(std)[:, None]
    torch.testing.assert_close(module.encoder.project.weight, expected)  # untouched by 6 epochs of AdamW
    pixels = fit(data, tmp_path / "p", latent_dim=3, n_basis=0, **FAST)
    assert load_model(pixels).module.cfg.n_basis == 0
    test = data.indices("test")
    mean_spectrum = data.flux[data.indices("train")].mean(0)
    chi2_mean = np.mean(lk.chi2_per_pixel(data.flux[test], mean_spectrum[None], data.ivar[test]))
    for d in (out, pixels):  # both learn: well below the mean spectrum's χ²
        assert json.loads((d / "metrics.json").read_text())["chi2_per_pixel"]["mean"] < 0.5 * chi2_mean


def test_same_seed_gives_identical_weights(data, tmp_path):
    a = fit(data, tmp_path / "a", latent_dim=2, seed=3, **dict(FAST, epochs=3))
    b = fit(data, tmp_path / "b", latent_dim=2, seed=3, **dict(FAST, epochs=3))
    c = fit(data, tmp_path / "c", latent_dim=2, seed=4, **dict(FAST, epochs=3))
    wa, wb, wc = (load_weights(weights_path(d)) for d in (a, b, c))
    assert state_dicts_equal(wa, wb)
    assert not state_dicts_equal(wa, wc)


# ---- kill and resume ---------------------------------------------------------------------------------

KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from galvae.fit import fit
    from galvae.prepare.synthetic import synthetic_dataset

    def crash(epoch, row):
        if epoch == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: a power cut after the checkpoint

    data = synthetic_dataset({n}, {p}, seed=7)
    fit(data, sys.argv[1], latent_dim=2, seed=5, callback=crash, epochs=6, batch_size=64, lr=2e-3,
        progress=False, patience=50, resume=sys.argv[3:] == ["resume"])
""").format(n=N, p=P)


def test_killed_training_resumes_to_the_same_result(data, tmp_path):
    """Kill -9 after epoch 3 of 6, resume: the best validation loss and the weights equal an
    uninterrupted run's exactly (bit for bit on this CPU)."""
    script = tmp_path / "train.py"
    script.write_text(KILL_SCRIPT)
    # the uninterrupted run in a fresh process too: torch's thread pool in this long-lived test process may
    # have been resized by earlier tests, and another thread count sums in another order
    whole = tmp_path / "whole"
    subprocess.run([sys.executable, str(script), str(whole), "-1"], capture_output=True, text=True, check=True)

    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, str(script), str(killed), "3"], capture_output=True, text=True, check=False)
    assert proc.returncode == -9, proc.stderr
    assert (killed / "checkpoint.pt").exists() and not (killed / "metrics.json").exists()
    assert len(history(killed)) == 3

    subprocess.run([sys.executable, str(script), str(killed), "-1", "resume"], capture_output=True, text=True,
                   check=True)
    resumed = killed
    m_whole = json.loads((whole / "metrics.json").read_text())
    m_resumed = json.loads((resumed / "metrics.json").read_text())
    assert m_resumed["best_val_loss"] == m_whole["best_val_loss"]
    assert m_resumed["best_epoch"] == m_whole["best_epoch"]
    assert state_dicts_equal(load_weights(weights_path(whole)), load_weights(weights_path(resumed)))
    assert [r["val_loss"] for r in history(resumed)] == [r["val_loss"] for r in history(whole)]


def test_resume_after_an_exception_and_of_a_finished_model(data, tmp_path):
    def fail_after_2(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    whole = fit(data, tmp_path / "whole", latent_dim=2, seed=1, **dict(FAST, epochs=4))
    with pytest.raises(KeyboardInterrupt):
        fit(data, tmp_path / "r", latent_dim=2, seed=1, callback=fail_after_2, **dict(FAST, epochs=4))
    out = fit(data, tmp_path / "r", latent_dim=2, seed=1, resume=True, **dict(FAST, epochs=4))
    assert json.loads((out / "metrics.json").read_text())["best_val_loss"] == \
        json.loads((whole / "metrics.json").read_text())["best_val_loss"]
    before = (out / "metrics.json").stat().st_mtime_ns
    fit(data, out, latent_dim=2, seed=1, resume=True, **dict(FAST, epochs=4))  # finished: nothing to do
    assert (out / "metrics.json").stat().st_mtime_ns == before
    # ... but not another model than the one asked for
    for other in ({"latent_dim": 3}, {"latent_dim": 2, "conditions": ("logmstar",)}, {"latent_dim": 2, "arch": "paper"},
                  {"latent_dim": 2, "epochs": 5}):
        with pytest.raises(ValueError, match="finished model trained with other"):
            fit(data, out, seed=1, resume=True, **{**FAST, "epochs": 4, **other})


def test_a_crash_between_checkpoint_and_history_resumes_exactly(data, tmp_path, monkeypatch):
    # val flat in epoch 5, better in 6: epoch 6 starts with a plateau drop back to epoch 4's weights, and
    # a resumed epoch 6 must go back to those too, not to the weights of the epoch 6 that crashed
    val_by_epoch = {1: 10.0, 2: 9.0, 3: 8.0, 4: 7.0, 5: 7.5, 6: 6.0, 7: 5.0, 8: 4.0}
    epoch = {"next": 1}

    def scripted_validate(*args):
        value = val_by_epoch[epoch["next"]]
        epoch["next"] += 1
        return value, 1.0

    monkeypatch.setattr(fitmod, "_validate", scripted_validate)
    kw = dict(FAST, epochs=8, patience=1)
    whole = fit(data, tmp_path / "whole", latent_dim=2, seed=1, **kw)
    real_write = fitmod._write_history

    def power_cut_in_epoch_6(path, rows):
        if len(rows) == 6:
            raise KeyboardInterrupt
        real_write(path, rows)

    epoch["next"] = 1
    monkeypatch.setattr(fitmod, "_write_history", power_cut_in_epoch_6)
    with pytest.raises(KeyboardInterrupt):
        fit(data, tmp_path / "cut", latent_dim=2, seed=1, **kw)
    monkeypatch.setattr(fitmod, "_write_history", real_write)
    checkpoint = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    epoch["next"] = checkpoint["state"]["epoch"] + 1
    resumed = fit(data, tmp_path / "cut", latent_dim=2, seed=1, resume=True, **kw)
    assert state_dicts_equal(load_weights(weights_path(whole)), load_weights(weights_path(resumed)))
    assert [r["lr"] for r in history(resumed)] == [r["lr"] for r in history(whole)]


def test_directory_guards(data, tmp_path):
    def stop(epoch, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(data, tmp_path / "m", latent_dim=2, callback=stop, **FAST)
    with pytest.raises(FileExistsError, match="resume=True"):
        fit(data, tmp_path / "m", latent_dim=2, **FAST)
    with pytest.raises(ValueError, match="settings differ"):
        fit(data, tmp_path / "m", latent_dim=3, resume=True, **FAST)


# ---- NaN guard ---------------------------------------------------------------------------------------

def test_nan_guard_reloads_lowers_rate_then_stops(data, tmp_path, monkeypatch, caplog):
    real = fitmod.vae_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 2 * 10 else loss  # finite for 2 epochs of 10 batches

    monkeypatch.setattr(fitmod, "vae_loss", poisoned)
    out = fit(data, tmp_path / "m", latent_dim=2, **dict(FAST, epochs=8, batch_size=48))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "diverged"
    assert metrics["best_epoch"] == 2 and np.isfinite(metrics["chi2_per_pixel"]["mean"])
    assert "lowering the learning rate" in caplog.text and "training stopped" in caplog.text
    assert len(history(out)) == 2


def test_nan_guard_retries_the_epoch_where_the_schedule_stood(data, tmp_path, monkeypatch):
    real = fitmod.vae_loss
    n_batches = int(np.ceil(len(data.indices("train")) / 64))
    calls = {"n": 0}

    def one_bad_batch(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == n_batches + 1 else loss  # the first batch of epoch 2

    monkeypatch.setattr(fitmod, "vae_loss", one_bad_batch)
    out = fit(data, tmp_path / "m", latent_dim=2, **FAST)
    s = fitmod.TrainSettings(epochs=FAST["epochs"], batch_size=64, lr=FAST["lr"])
    expected = [fitmod.learning_rate(e * n_batches, FAST["epochs"] * n_batches, s) * (1.0 if e == 0 else 0.1)
                for e in range(FAST["epochs"])]
    np.testing.assert_allclose([float(r["lr"]) for r in history(out)], expected, rtol=1e-9)


def test_plateau_goes_back_to_the_best_weights_at_a_lower_rate_then_stops(data, tmp_path, monkeypatch):
    val_losses = iter([10.0, 5.0] + [6.0 + i for i in range(20)])  # best at epoch 2, never better after
    monkeypatch.setattr(fitmod, "_validate", lambda *a: (next(val_losses), 1.0))
    real_epoch = fitmod._train_one_epoch
    weights_in, weights_out = [], []

    def recording_epoch(model, *args):
        weights_in.append({k: v.clone() for k, v in model.state_dict().items()})
        loss = real_epoch(model, *args)
        weights_out.append({k: v.clone() for k, v in model.state_dict().items()})
        return loss

    monkeypatch.setattr(fitmod, "_train_one_epoch", recording_epoch)
    out = fit(data, tmp_path / "m", latent_dim=2, **dict(FAST, epochs=20, patience=2))
    rows = history(out)
    # epochs 3-4 flat → drop 1; 5-6 flat → drop 2; 7-8 flat → stop
    assert len(rows) == 8 and json.loads((out / "metrics.json").read_text())["status"] == "early_stopped"
    s = fitmod.TrainSettings(epochs=20, batch_size=64, lr=2e-3)
    n_batches = int(np.ceil(len(data.indices("train")) / 64))
    scale = [float(r["lr"]) / fitmod.learning_rate(i * n_batches, 20 * n_batches, s) for i, r in enumerate(rows)]
    np.testing.assert_allclose(scale, [1, 1, 1, 1, 0.2, 0.2, 0.04, 0.04], rtol=1e-9)

    assert state_dicts_equal(weights_in[4], weights_out[1]) and state_dicts_equal(weights_in[6], weights_out[1])
    assert not state_dicts_equal(weights_in[4], weights_out[3])


@pytest.mark.parametrize("epochs, status", [(4, "done"), (8, "early_stopped")])
def test_a_budget_ending_on_a_plateau_is_done_unless_no_drops_were_left(data, tmp_path, monkeypatch, epochs, status):
    val_losses = iter([10.0, 5.0] + [6.0 + i for i in range(20)])  # best at epoch 2, never better after
    monkeypatch.setattr(fitmod, "_validate", lambda *a: (next(val_losses), 1.0))
    out = fit(data, tmp_path / "m", latent_dim=2, **dict(FAST, epochs=epochs, patience=2))
    # epoch 4 ends the first plateau with two rate drops left; epoch 8 ends the last one
    assert len(history(out)) == epochs
    assert json.loads((out / "metrics.json").read_text())["status"] == status


# ---- conditions, loading, encoding -------------------------------------------------------------------

def test_cvae_excludes_spectra_without_conditions_and_stores_transforms(data, tmp_path):
    names = ("logmstar", "logsfr")
    out = fit(data, tmp_path / "cvae", latent_dim=2, conditions=names, **dict(FAST, epochs=2))
    config = json.loads((out / "config.json").read_text())
    missing = ~np.isfinite(np.asarray(data.props["logmstar"])) | ~np.isfinite(np.asarray(data.props["logsfr"]))
    for name in ("train", "val", "test"):
        assert config["n_excluded_missing_conditions"][name] == int(missing[data.indices(name)].sum())
    assert [c["name"] for c in config["conditions"]] == list(names)
    assert all(isinstance(c[k], float) for c in config["conditions"] for k in ("lmbda", "mean", "std"))
    assert json.loads((out / "metrics.json").read_text())["k"] == 4

    model = load_model(out)
    rows = np.flatnonzero(~missing)[:5]
    with pytest.raises(ValueError, match="needs conditions"):
        model.encode(data.flux[rows])
    mu_table, _ = model.encode(data.flux[rows], conditions=data.props[rows])
    mu_array, _ = model.encode(data.flux[rows], conditions=model.conditions.raw_values(data.props, rows))
    assert np.array_equal(mu_table, mu_array)

    table = encode_dataset(out, data, tmp_path / "latents.fits", progress=False)
    assert np.isnan(table["mu_1"][missing]).all() and np.isfinite(table["mu_1"][~missing]).all()



def test_load_model_round_trip_and_encode_dataset(data, tmp_path):
    out = fit(data, tmp_path / "m", latent_dim=3, **dict(FAST, epochs=2))
    a, b = load_model(out), load_model(out)
    assert isinstance(a, TrainedVAE) and a.latent_dim == 3 and a.config["kind"] == "vae"
    mu_a, sigma_a = a.encode(data.flux[:50])
    mu_b, sigma_b = b.encode(data.flux[:50])
    assert np.array_equal(mu_a, mu_b) and np.array_equal(sigma_a, sigma_b)
    assert a.decode(mu_a).shape == (50, P)
    assert np.all(sigma_a > 0)

    from astropy.table import Table

    encode_dataset(out, data, tmp_path / "lat.fits", progress=False)
    t = Table.read(tmp_path / "lat.fits")
    assert len(t) == N
    assert {"id", "z", "split", "mu_1", "mu_3", "sigma_3", "chi2_per_pixel", "elbo"} <= set(t.colnames)
    assert np.allclose(np.array([t["mu_1"], t["mu_2"], t["mu_3"]]).T[:50], mu_a, rtol=1e-5, atol=1e-6)

    # a NaN at a pixel without data reads as 0 with no weight, as in training: the scores stay finite,
    # and weighted PCA, which only looks at pixels with data, gives the same numbers as before
    flux, ivar = np.array(data.flux[:5]), np.array(data.ivar[:5])
    ivar[:, 10:20] = 0.0
    spoiled = flux.copy()
    spoiled[:, 10:20] = np.nan
    assert all(np.isfinite(a.score(spoiled, ivar)[k]).all() for k in ("mu", "ln_likelihood", "elbo"))
    pca = load_model(fit_pca(data, tmp_path / "wpca", 3, weighted=True))
    np.testing.assert_allclose(pca.score(spoiled, ivar)["ln_likelihood"], pca.score(flux, ivar)["ln_likelihood"],
                               rtol=1e-9)
    with pytest.raises(ValueError, match="pixels; this PCA expects"):
        pca.encode(flux[:, :-1])


def test_weights_are_never_unpickled(data, tmp_path):
    out = fit(data, tmp_path / "m", latent_dim=2, **dict(FAST, epochs=1))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = weights_path(out)
    if path.suffix == ".safetensors":
        pytest.skip("safetensors files hold no pickles")
    torch.save({"evil": Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl"):
        load_model(out)
    assert not marker.exists()


def test_pca_baselines_write_model_directories(data, tmp_path):
    for weighted in (False, True):
        out = fit_pca(data, tmp_path / f"pca{weighted}", 3, weighted=weighted)
        m = json.loads((out / "metrics.json").read_text())
        assert m["k"] == 3 and m["n_test"] == len(data.indices("test"))
        table = encode_dataset(out, data, tmp_path / f"pca{weighted}.ecsv", progress=False)
        assert np.isfinite(table["mu_3"]).all() and np.isnan(table["elbo"]).all()
    # like a VAE's, a model directory is replaced only when asked
    vae = fit(data, tmp_path / "vae", latent_dim=2, **dict(FAST, epochs=1))
    with pytest.raises(FileExistsError, match="overwrite"):
        fit_pca(data, vae, 3)
    fit_pca(data, vae, 3, overwrite=True)
    assert isinstance(load_model(vae), PCA) and not list(vae.glob("weights.*")) + list(vae.glob("model.*"))
    for bad in (0, -2, 10**6):
        with pytest.raises(ValueError, match="n_components must be"):
            fit_pca(data, tmp_path / f"bad{bad}", bad)


def test_bad_model_settings_and_missing_condition_columns_are_clear_errors(data, tmp_path):
    with pytest.raises(ValueError, match="latent_dim must be"):
        fit(data, tmp_path / "d0", latent_dim=0, **FAST)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            fit(data, tmp_path / "cuda", latent_dim=2, device="cuda", **FAST)
    import dataclasses

    no_catalogue = dataclasses.replace(data, props=data.props[["id", "z"]])
    with pytest.raises(ValueError, match="no 'logmstar' column.*--catalog"):
        fit(no_catalogue, tmp_path / "cvae", latent_dim=2, conditions=("logmstar",), **FAST)


def test_fit_reads_lazy_zarr_arrays(data, tmp_path):
    """open_dataset(load=False) leaves flux and ivar as Zarr arrays: training and encoding take rows from them."""
    import dataclasses

    lazy = zarr_copies(data, rows_per_chunk=100)
    lazy_data = dataclasses.replace(data, **lazy)
    a = fit(lazy_data, tmp_path / "lazy", latent_dim=2, **dict(FAST, epochs=1))
    b = fit(data, tmp_path / "eager", latent_dim=2, **dict(FAST, epochs=1))
    assert state_dicts_equal(load_weights(weights_path(a)), load_weights(weights_path(b)))
    table = encode_dataset(a, lazy_data, tmp_path / "lat.ecsv", progress=False)
    assert np.isfinite(table["mu_2"]).all()


def test_streamed_training_equals_resident_training(tmp_path):
    """A split streamed from the store a window at a time (resident_gb=0) gives the same model, metrics
    and encoding as the split held in memory, through a restricted view (RowView), CVAE conditions,
    several windows and batches that straddle two windows."""
    import dataclasses

    from galvae.prepare.dataset import RowView
    from galvae.splits import Split

    big = synthetic_dataset(3300, 64, seed=3)
    lazy = zarr_copies(big, rows_per_chunk=500)
    keep = np.flatnonzero(np.arange(len(big)) % 7 != 3)  # a restricted view, as select makes
    view = dataclasses.replace(big, flux=RowView(lazy["flux"], keep), ivar=RowView(lazy["ivar"], keep),
                               filled=big.filled[keep], norm=big.norm[keep], split=big.split[keep],
                               props=big.props[keep])
    settings = dict(FAST, epochs=2, batch_size=100, window_blocks=1, conditions=("logmstar",))
    streamed = fit(view, tmp_path / "streamed", latent_dim=2, resident_gb=0, **settings)
    resident = fit(view, tmp_path / "resident", latent_dim=2, **settings)
    train = Split(view, view.indices("train"), None, "cpu", resident_bytes=0)
    assert not train.resident and len(train.blocks) == 4  # 4 stored blocks of 1000 rows: 4 windows
    assert state_dicts_equal(load_weights(weights_path(streamed)), load_weights(weights_path(resident)))
    for name in ("metrics.json",):
        a, b = (json.loads((d / name).read_text()) for d in (streamed, resident))
        assert a["chi2_per_pixel"] == b["chi2_per_pixel"] and a["best_val_loss"] == b["best_val_loss"]
    lat = encode_dataset(streamed, view, tmp_path / "lat.ecsv", progress=False)
    in_memory = dataclasses.replace(view, flux=RowView(big.flux, keep), ivar=RowView(big.ivar, keep))
    lat_eager = encode_dataset(streamed, in_memory, tmp_path / "lat_eager.ecsv", progress=False)
    assert np.array_equal(np.asarray(lat["mu_1"]), np.asarray(lat_eager["mu_1"]), equal_nan=True)
    assert np.array_equal(np.asarray(lat["elbo"]), np.asarray(lat_eager["elbo"]), equal_nan=True)


def test_split_streams_every_row_once_per_epoch():
    """Each epoch's batches cover every training row exactly once, in windows of whole blocks."""
    from galvae.splits import Split

    data = synthetic_dataset(2600, 64, seed=1)
    split = Split(data, data.indices("train"), None, "cpu", resident_bytes=0)
    gen = torch.Generator().manual_seed(0)
    windows = split.epoch_order(gen, window_blocks=2)
    assert len(windows) == 2 and sorted(np.concatenate(windows).tolist()) == list(range(len(split)))
    seen = np.concatenate([b.positions.numpy() for b in split.train_batches(windows, 9)])
    assert np.array_equal(seen, np.concatenate(windows))
    batch = next(split.train_batches(windows, 9))
    rows = split.rows[batch.positions.numpy()]
    assert np.array_equal(batch.flux.numpy(), data.flux[rows])
