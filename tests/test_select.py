"""The selection grid: parsing, the table, best-model choice, failures, kill-and-resume, figures."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import galvae.fit as fitmod
from galvae import likelihood as lk
from galvae.prepare.synthetic import synthetic_dataset
from galvae.select import comparable_view, parse_conditions, parse_latent, select_grid
from galvae.select.cells import Cell, all_condition_sets
from galvae.select.evaluate import active_dimensions, load_scores
from galvae.select.grid import TIMING_COLUMNS

N, P = 300, 96
GRID = {"latent": "1-2", "conditions": "none,logmstar", "seeds": 1, "epochs": 2, "scheduler": "sync",
        "progress": False, "batch_size": 64, "lr": 2e-3, "n_iwae": 8}


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(N, P, seed=3, nan_fraction=0.05)


def rows_of(table) -> list[tuple]:
    """The table without its timing column, for comparing two runs."""
    keep = [c for c in table.colnames if c not in TIMING_COLUMNS]
    return [tuple(r[c] for c in keep) for r in table]


# ---- parsing -----------------------------------------------------------------------------------------

def test_parse_latent_and_conditions():
    assert parse_latent("1-8") == list(range(1, 9))
    assert parse_latent("1-3,6") == [1, 2, 3, 6]
    assert parse_latent(range(2, 4)) == [2, 3]
    with pytest.raises(ValueError):
        parse_latent("0-2")
    assert len(parse_conditions("all")) == 16 and parse_conditions("all")[0] == ()
    assert parse_conditions("none,logmstar,logsfr+logmstar") == [(), ("logmstar",), ("logmstar", "logsfr")]
    assert parse_conditions([(), ("logsfr",)]) == [(), ("logsfr",)]
    with pytest.raises(ValueError, match="unknown condition"):
        parse_conditions("none,mass")
    assert len(set(all_condition_sets())) == 16
    cell = Cell(3, ("logmstar", "logsfr"), 1)
    assert cell.name == "d3_logmstar+logsfr_s1" and cell.k == 5
    assert Cell(2, (), 0).name == "d2_vae_s0"


def test_comparable_view_keeps_rows_with_every_condition(data):
    view = comparable_view(data)
    complete = np.all([np.isfinite(np.asarray(data.props[c], float))
                       for c in ("logmstar", "logsfr", "logssfr", "metallicity")], axis=0)
    assert len(view) == complete.sum() < len(data)
    assert np.array_equal(view.ids, data.ids[complete])
    assert np.array_equal(view.split, data.split[complete])  # same splits, fewer rows
    assert np.array_equal(view.flux, data.flux[complete])
    assert view.attrs["inputs_digest"] != data.attrs["inputs_digest"]
    assert comparable_view(view) is view  # nothing to drop: the dataset itself


def test_missing_conditions_are_counted_per_split_and_condition(data):
    from galvae.select import missing_conditions

    c = missing_conditions(data, ("logmstar", "metallicity"))
    view = comparable_view(data, ("logmstar", "metallicity"))
    for split in ("train", "val", "test"):
        rows = data.indices(split)
        assert c["split_rows"][split] == len(rows)
        assert c["split_kept"][split] == len(view.indices(split))
        assert c["split_dropped"][split] == len(rows) - len(view.indices(split))
        for name in ("logmstar", "metallicity"):
            assert c["dropped_by_condition"][name][split] == int(np.isnan(np.asarray(data.props[name])[rows]).sum())
    assert c["split_dropped"]["total"] == len(data) - len(view) > 0
    assert c["dropped_by_condition"]["metallicity"]["total"] == int(np.isnan(np.asarray(data.props["metallicity"])).sum())


def test_a_grid_whose_condition_no_spectrum_has_stops_before_its_first_cell(data, tmp_path):
    from dataclasses import replace

    from galvae.select import MissingConditionsError

    props = data.props.copy()
    props["metallicity"] = np.nan  # as a dataset prepared from GSWLC-2 alone
    no_oh = replace(data, props=props)
    with pytest.raises(MissingConditionsError) as err:  # a ValueError: the CLI prints it, exit status 2
        select_grid(no_oh, tmp_path / "g", **dict(GRID, conditions="none,metallicity"), needed=("metallicity",))
    text = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "metallicity is known for 0 of" in text and "MPA-JHU" in text and "--mpajhu" in text
    assert "logmstar is known" not in text and "missing_conditions.md" in text
    assert not (tmp_path / "g").exists()  # stopped before any cell or grid.json
    # without metallicity the grid uses every galaxy with the other conditions
    r = select_grid(no_oh, tmp_path / "g2", **dict(GRID, latent=1, conditions="none"), needed=("logmstar",))
    assert r.n_done == 1 and r.table.meta["dropped_by_condition"]["logmstar"]["total"] > 0


def test_a_misspelled_training_option_is_one_error_before_the_grid_starts(data, tmp_path):
    with pytest.raises(TypeError, match=r"\['pateince'\]") as err:
        select_grid(data, tmp_path / "g", **GRID, pateince=3)
    assert "patience" in str(err.value)  # the options it does take are listed
    with pytest.raises(TypeError, match="seed"):  # set per cell by the grid itself
        select_grid(data, tmp_path / "g", **GRID, seed=1)
    assert not (tmp_path / "g").exists()  # no cell was started, no grid.json written


def test_active_dimensions_counts_varying_latents():
    rng = np.random.default_rng(0)
    mu = np.column_stack([rng.normal(0, 1, 500), rng.normal(0, 0.01, 500), rng.normal(0, 0.5, 500)])
    assert active_dimensions(mu) == 2


# ---- the grid ----------------------------------------------------------------------------------------

def test_grid_table_best_model_and_figures(data, tmp_path):
    r = select_grid(data, tmp_path / "g", **dict(GRID, seeds=2))
    t = r.table
    assert len(t) == 8 and r.n_done == 8 and r.n_failed == 0
    assert list(t["d"]) == [1, 1, 2, 2] * 2 and list(t["seed"]) == [0, 1] * 4
    assert list(t["conditions"]) == ["vae"] * 4 + ["logmstar"] * 4
    assert list(t["k"]) == list(t["d"] + t["n_conditions"])
    assert len(set(t["n_test"])) == 1  # VAE and CVAE scored on the same spectra
    view = comparable_view(data)
    assert t["n_test"][0] == len(view.indices("test"))
    assert t.meta["n_spectra"] == len(view) and t.meta["n_dropped_missing_conditions"] == len(data) - len(view)
    assert t.meta["split_dropped"]["total"] == len(data) - len(view) and t.meta["split_kept"]["test"] == t["n_test"][0]
    from galvae.models import load_model

    for row in t:
        cell = tmp_path / "g" / "cells" / row["cell"]
        scores = load_scores(cell / "scores.npz")
        # ln L at the posterior mean, recomputed here from the saved model and the test spectra
        model = load_model(cell)
        test = view.indices("test")
        x, w = (torch.as_tensor(np.asarray(a)[test], dtype=torch.float32) for a in (view.flux, view.ivar))
        c = (torch.as_tensor(model.conditions.transform(model.conditions.raw_values(view.props, test)),
                             dtype=torch.float32) if model.condition_names else None)
        with torch.no_grad():
            own = lk.ln_likelihood(x, model.module.decode(model.module.encode(x, c)[0], c), w).numpy()
        assert np.allclose(np.sort(scores["ln_likelihood"]), np.sort(own), rtol=1e-5, atol=1e-3)
        assert row["ln_l_mean"] == pytest.approx(np.mean(own), rel=1e-6)
        # BIC at each spectrum's maximum-likelihood latent; the refinement never loses likelihood
        assert np.mean(lk.bic(scores["ln_likelihood_ml"], row["k"], scores["n_good"])) == pytest.approx(row["bic_mean"])
        assert np.mean(lk.bic(own, row["k"], scores["n_good"])) == pytest.approx(row["bic_amortized_mean"], rel=1e-6)
        assert np.all(scores["ln_likelihood_ml"] >= scores["ln_likelihood"])
        assert row["refine_gap"] > 0 and row["bic_mean"] < row["bic_amortized_mean"]
        assert row["iwae_mean"] >= row["elbo_mean"] - 5 * row["elbo_stderr"]  # IWAE bounds ln p(x) tighter
        assert row["n_active"] == active_dimensions(scores["mu"])
        assert np.all(np.isfinite([row["elbo_mean"], row["chi2_per_pixel"], row["bic_stderr"], row["score_seconds"]]))
        # select scores the test split itself: fit did not score it a first time
        assert json.loads((cell / "metrics.json").read_text())["scored"] is False

    # best: the lowest mean BIC over seeds, with the spread over seeds
    means = {}
    for row in t:
        means.setdefault((row["conditions"], row["d"]), []).append(row["bic_mean"])
    (label, d), values = min(means.items(), key=lambda kv: np.mean(kv[1]))
    best = json.loads((tmp_path / "g" / "best.json").read_text())
    assert (best["conditions_label"], best["d"]) == (label, d)
    assert best["split_dropped"] == t.meta["split_dropped"] and set(best["dropped_by_condition"]) == {
        "logmstar", "logsfr", "logssfr", "metallicity"}
    assert best["bic_mean"] == pytest.approx(np.mean(values))
    assert best["bic_seed_std"] == pytest.approx(np.std(values, ddof=1))
    # of its seeds, the one explained is told apart on val, not on the test BIC being reported
    rows = [row for row in t if (row["conditions"], row["d"]) == (label, d)]
    assert best["best_seed"] == min(rows, key=lambda row: row["val_loss"])["seed"]
    # IWAE bounds ln p(x) for a VAE but ln p(x|c) for a CVAE: ranked among the VAEs only
    iwae = best["other_criteria"]["iwae"]
    assert {e["conditions_label"] for e in iwae["ranking"]} == {"vae"} == {iwae["conditions_label"]}
    assert best["model_dir"].startswith("cells/") and "iwae" in best["other_criteria"]
    assert best["runner_up_paired_difference"]["stderr"] > 0
    # beside it: the seed with the best validation loss per model, and the IWAE bound
    restart = best["other_criteria"]["bic_best_restart"]
    picked = {}
    for row in t:
        key = (row["conditions"], row["d"])
        if key not in picked or row["val_loss"] < picked[key]["val_loss"]:
            picked[key] = row
    top = min(picked.values(), key=lambda row: row["bic_mean"])
    assert (restart["conditions_label"], restart["d"], restart["best_seed"]) == (top["conditions"], top["d"], top["seed"])
    assert restart["bic_mean"] == pytest.approx(top["bic_mean"])

    # the recommended choice: the one-standard-error rule on paired differences, drawn in Figure 2c
    one = best["one_se"]
    assert best["recommended"]["criterion"] == "bic_one_se" == one["criterion"]
    within = [e for e in one["compared"] if e["within_one_se"]]
    assert (one["conditions_label"], one["d"]) in {(e["conditions_label"], e["d"]) for e in within}
    assert one["k"] == min(e["k"] for e in within)
    assert {(r["d_from"], r["d_to"]) for r in best["paired"]["steps"] if r["conditions_label"] == "vae"} == {(1, 2)}
    for name in ("bic_grid.png", "bic_vs_d.png", "bic_one_se.png"):
        path = tmp_path / "g" / "figures" / name
        assert path.exists() and path.stat().st_size > 5000
    from astropy.table import Table

    assert rows_of(Table.read(tmp_path / "g" / "grid.ecsv").filled("")) == rows_of(t)


def test_failed_cell_is_recorded_and_retried(data, tmp_path, monkeypatch):
    real_fit = fitmod.fit

    def fit_failing_at_d2(dataset, out_dir, latent_dim, **kw):
        if latent_dim == 2:
            raise RuntimeError("boom at d=2")
        return real_fit(dataset, out_dir, latent_dim, **kw)

    monkeypatch.setattr(fitmod, "fit", fit_failing_at_d2)
    r = select_grid(data, tmp_path / "g", **dict(GRID, conditions="none"))
    status = dict(zip(r.table["d"], r.table["status"], strict=True))
    assert status == {1: "done", 2: "failed"}
    failed = r.table[r.table["d"] == 2][0]
    assert "boom at d=2" in failed["error"] and np.isnan(failed["bic_mean"])
    assert (tmp_path / "g" / "cells" / "d2_vae_s0" / "error.json").exists()
    assert r.best["d"] == 1

    monkeypatch.setattr(fitmod, "fit", real_fit)
    again = select_grid(data, tmp_path / "g", **dict(GRID, conditions="none"))
    assert list(again.table["status"]) == ["done", "done"]
    assert not (tmp_path / "g" / "cells" / "d2_vae_s0" / "error.json").exists()


def test_other_settings_in_the_same_folder_are_refused(data, tmp_path):
    select_grid(data, tmp_path / "g", **dict(GRID, latent=1, conditions="none"))
    with pytest.raises(ValueError, match="another output folder"):
        select_grid(data, tmp_path / "g", **dict(GRID, latent=1, conditions="none", epochs=3))
    with pytest.raises(ValueError, match="n_iwae"):  # IWAE bounds with other sample counts must not mix
        select_grid(data, tmp_path / "g", **dict(GRID, latent=1, conditions="none", n_iwae=GRID["n_iwae"] * 2))


# ---- kill and resume ---------------------------------------------------------------------------------

KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import galvae.fit as fitmod
    from galvae.prepare.synthetic import synthetic_dataset
    from galvae.select import select_grid

    real_fit, calls = fitmod.fit, []

    def fit_killed_in_second_cell(dataset, out_dir, latent_dim, **kw):
        calls.append(out_dir)
        if len(calls) == 2:  # one cell finished; die after epoch 2 of the second, its checkpoint written
            kw["callback"] = lambda epoch, row: epoch == 2 and os.kill(os.getpid(), signal.SIGKILL)
        return real_fit(dataset, out_dir, latent_dim, **kw)

    fitmod.fit = fit_killed_in_second_cell
    data = synthetic_dataset({n}, {p}, seed=3, nan_fraction=0.05)
    select_grid(data, sys.argv[1], **{grid})
""")


def test_grid_killed_midway_resumes_without_recomputing(data, tmp_path):
    grid = dict(GRID, latent="1-3", conditions="none", epochs=3)
    script = tmp_path / "grid.py"
    script.write_text(KILL_SCRIPT.format(n=N, p=P, grid=repr(grid)))
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, str(script), str(killed)], capture_output=True, text=True, check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]

    cells = killed / "cells"
    finished = sorted(p.parent.name for p in cells.glob("*/cell.json"))
    assert len(finished) == 1
    interrupted = [p.name for p in cells.iterdir() if (p / "checkpoint.pt").exists()]
    assert len(interrupted) == 1 and interrupted[0] not in finished
    stamps = {p: p.stat().st_mtime_ns for name in finished for p in (cells / name).iterdir()}

    resumed = select_grid(data, killed, **grid)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished cells untouched
    assert sorted(p.parent.name for p in cells.glob("*/cell.json")) == sorted(resumed.table["cell"])

    whole = select_grid(data, tmp_path / "whole", **grid)
    assert rows_of(resumed.table) == rows_of(whole.table)  # bit for bit, timing aside
    assert json.loads((killed / "best.json").read_text())["bic_mean"] == whole.best["bic_mean"]


# ---- a real Dask cluster on a prepared mock -------------------------------------------------------------

@pytest.mark.slow
def test_grid_on_a_local_cluster_from_a_dataset_path(small_mock, tmp_path):
    from galvae.prepare.pipeline import PrepareConfig, prepare_dataset

    path = tmp_path / "mock.zarr"
    prepare_dataset(small_mock.out_dir / "spectra", path, catalog=small_mock.truth,
                    config=PrepareConfig(n_pix=400), scheduler="sync", progress=False)
    r = select_grid(path, tmp_path / "g", latent="1-2", conditions="none,logsfr", seeds=1, epochs=2, workers=2,
                    progress=False, batch_size=16, n_iwae=4)
    assert r.n_done == 4 and r.n_failed == 0
    assert (tmp_path / "g" / "figures" / "bic_grid.png").exists()


def test_run_explains_the_seed_with_the_lowest_validation_loss(tmp_path):
    from astropy.table import Table

    from galvae.run import best_vae_cell, single_condition_cells

    t = Table(rows=[("done", 0, "vae", 2, 0, 10.0, 5.0, "d2_vae_s0"), ("done", 0, "vae", 2, 1, 9.0, 6.0, "d2_vae_s1"),
                    ("done", 0, "vae", 3, 0, 20.0, 1.0, "d3_vae_s0"),
                    ("done", 1, "logmstar", 1, 0, 4.0, 3.0, "d1_logmstar_s0"),
                    ("done", 1, "logmstar", 1, 1, 5.0, 2.0, "d1_logmstar_s1"),
                    ("done", 1, "logmstar", 2, 0, 1.0, 1.0, "d2_logmstar_s0")],
              names=("status", "n_conditions", "conditions", "d", "seed", "bic_mean", "val_loss", "cell"))
    # d = 2 has the lower mean BIC; of its seeds, s0 has the lower val loss (s1 the lower test BIC)
    assert best_vae_cell(t, tmp_path) == tmp_path / "d2_vae_s0"
    # a grid's own choice (best.json, the one-standard-error rule among plain VAEs) is the one explained
    chosen = {"one_se_plain_vae": {"model_dir": "cells/d3_vae_s0"}}
    assert best_vae_cell(t, tmp_path / "cells", chosen) == tmp_path / "cells" / "d3_vae_s0"
    assert single_condition_cells(t, tmp_path) == [tmp_path / "d1_logmstar_s1"]


def test_cells_spread_over_the_gpus_of_a_machine(monkeypatch):
    import types

    import distributed
    import torch

    from galvae.select import grid

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert grid._cell_device("auto") == "auto"  # not on a worker (scheduler='sync'): fit decides
    monkeypatch.setattr(distributed, "get_worker", lambda: types.SimpleNamespace(name=3))
    assert grid._cell_device("auto") == "cuda:1" and grid._cell_device("cpu") == "cpu"
    assert grid._default_workers(None, None, None, {}) == 2  # one worker per GPU
    assert grid._default_workers(5, None, None, {}) == 5
    assert grid._default_workers(None, "sync", None, {}) is None
    assert grid._default_workers(None, None, None, {"device": "cpu"}) is None


# ---- BIC at the maximum-likelihood latent, warm starts, the one-standard-error rule ----------------

class _LinearDecoder(torch.nn.Module):
    """decode(z) = z W + b: its maximum-likelihood z is a weighted least-squares solution."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = torch.nn.Parameter(w), torch.nn.Parameter(b)

    def decode(self, z, cond=None):
        return z @ self.w + self.b


def test_refined_latents_reach_the_weighted_least_squares_solution():
    from galvae.select.evaluate import refine_latents

    g = torch.Generator().manual_seed(0)
    n, d, p = 64, 3, 50
    w, b = torch.randn(d, p, generator=g), torch.randn(p, generator=g)
    truth = torch.randn(n, d, generator=g)
    ivar = torch.rand(n, p, generator=g) + 0.5
    ivar[:, :5] = 0  # masked pixels carry no weight
    flux = truth @ w + b + torch.randn(n, p, generator=g) / ivar.clamp_min(1e-3).sqrt()
    module = _LinearDecoder(w, b)
    start = torch.zeros(n, d)
    z, ll = refine_latents(module, flux, ivar, start, steps=600, lr=0.05)
    # each spectrum's own normal equations: (W diag(w) Wᵀ) z = W diag(w) (x − b)
    exact = torch.stack([torch.linalg.solve((w * ivar[i]) @ w.T, (w * ivar[i]) @ (flux[i] - b)) for i in range(n)])
    assert torch.allclose(z, exact, atol=2e-3)
    assert torch.allclose(ll, lk.ln_likelihood(flux, exact @ w + b, ivar), atol=1e-3)
    assert module.w.grad is None  # the decoder's weights are not touched
    # never worse than the start, whatever the budget
    _, ll0 = refine_latents(module, flux, ivar, start, steps=0)
    _, ll3 = refine_latents(module, flux, ivar, start, steps=3, lr=5.0)  # a rate far too large
    assert torch.all(ll3 >= ll0)


def test_warm_start_begins_as_the_smaller_model(data, tmp_path):
    from galvae.fit import fit, warm_start
    from galvae.models import load_model
    from galvae.models.vae import VAE, ModelConfig

    small = fit(data, tmp_path / "d1", latent_dim=1, conditions=("logmstar",), epochs=1, batch_size=64,
                progress=False, seed=0)
    old = load_model(small)
    cfg = ModelConfig(**{**old.module.cfg.to_dict(), "latent_dim": 3})
    big = VAE(cfg)
    warm_start(big, small)
    x = torch.as_tensor(np.asarray(data.flux[:20]), dtype=torch.float32)
    x = torch.nan_to_num(x)
    c = torch.randn(20, 1)
    mu_old, _ = old.module.encode(x, c)
    mu_new, _ = big.encode(x, c)
    assert torch.allclose(mu_new[:, :1], mu_old, atol=1e-5)
    z = torch.cat([mu_old, torch.randn(20, 2)], 1)  # the new dimensions are not used yet
    assert torch.allclose(big.decode(z, c), old.module.decode(mu_old, c), atol=1e-4)
    with pytest.raises(ValueError, match="cannot warm-start"):
        warm_start(VAE(ModelConfig(**{**cfg.to_dict(), "hidden": (16, 8)})), small)


def test_warm_started_grid_trains_each_d_from_the_previous(data, tmp_path):
    r = select_grid(data, tmp_path / "g", **dict(GRID, latent="1-3", conditions="none", seeds=2), warm_start=True)
    assert r.n_done == 6
    for row in r.table:
        config = json.loads((tmp_path / "g" / "cells" / row["cell"] / "config.json").read_text())
        expected = None if row["d"] == 1 else str(tmp_path / "g" / "cells" / f"d{row['d'] - 1}_vae_s{row['seed']}")
        assert config["init_from"] == expected
    # a rerun finds every cell done; the settings are part of the folder
    again = select_grid(data, tmp_path / "g", **dict(GRID, latent="1-3", conditions="none", seeds=2), warm_start=True)
    assert rows_of(again.table) == rows_of(r.table)
    with pytest.raises(ValueError, match="warm_start"):
        select_grid(data, tmp_path / "g", **dict(GRID, latent="1-3", conditions="none", seeds=2))


def _fake_grid(tmp_path, means_by_d: dict, noise: dict, n: int = 400, seeds=(0, 1)):
    """A grid table and scores.npz files whose per-spectrum BIC is mean_d + a scatter shared by every model
    + noise_d × (±1 alternating): exact means, and a paired error of noise/√n for each d against a d without."""
    from galvae.select.evaluate import save_scores
    from galvae.select.grid import COLUMNS, grid_table

    shared = np.random.default_rng(1).normal(0, 50, n)  # spectra differ a lot, models little: pairing matters
    alternating = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    rows = []
    for d, mean in means_by_d.items():
        for seed in seeds:
            name = f"d{d}_vae_s{seed}"
            bic = mean + shared + noise.get(d, 0.0) * alternating
            (tmp_path / name).mkdir(parents=True)
            save_scores(tmp_path / name / "scores.npz", {"ids": np.array([f"g{i}" for i in range(n)]), "bic": bic})
            row = {c: (np.nan if kind is float else (-1 if kind is int else "")) for c, kind, _ in COLUMNS}
            row.update(d=d, conditions="vae", n_conditions=0, k=d, seed=seed, cell=name, status="done",
                       bic_mean=float(bic.mean()), val_loss=float(seed))
            rows.append(row)
    return grid_table(rows)


def test_one_standard_error_rule_keeps_the_smallest_model_within_one_paired_error(tmp_path):
    from galvae.select.choice import one_se_choice, paired_steps

    # d = 3 is lower than d = 2 by 0.05, below the paired error (±5 per spectrum over 400: 0.25);
    # d = 2 beats d = 1 by 30, far above it
    table = _fake_grid(tmp_path, {1: 100.0, 2: 70.0, 3: 69.95}, noise={3: 5.0})
    one = one_se_choice(table, tmp_path)
    assert (one["d"], one["lowest"]["d"]) == (2, 3)
    steps = {(r["d_from"], r["d_to"]): r for r in paired_steps(table, tmp_path)["steps"]}
    assert steps[(1, 2)]["mean"] == pytest.approx(-30, abs=1) and steps[(1, 2)]["se"] < 1
    # the spectra's shared scatter (σ = 50) cancels in the pairing
    assert steps[(2, 3)]["se_spectra"] < 1 and abs(steps[(2, 3)]["mean"]) < steps[(2, 3)]["se"]
    # with no noise, the 0.05 is resolved and the lowest model is kept
    exact = _fake_grid(tmp_path / "exact", {1: 100.0, 2: 70.0, 3: 69.95}, noise={})
    assert one_se_choice(exact, tmp_path / "exact")["d"] == 3


def test_refinement_through_the_eigenspectra_equals_the_refinement_through_the_pixels(data, tmp_path):
    """A compact model with eigenspectra refines z in its K coefficients (a quadratic form per spectrum):
    the same ln L and the same z as decoding every pixel at every step."""
    from galvae.fit import fit
    from galvae.models import load_model
    from galvae.select.evaluate import _ln_l_of_z, refine_latents

    model = load_model(fit(data, tmp_path / "m", latent_dim=2, epochs=2, batch_size=64, progress=False, n_basis=8))
    module = model.module.eval()
    assert module.output_basis() is not None
    x = torch.nan_to_num(torch.as_tensor(np.asarray(data.flux[:40]), dtype=torch.float32))
    w = torch.as_tensor(np.asarray(data.ivar[:40]), dtype=torch.float32)
    const = lk.ln_likelihood_constant(w)
    mu, _ = module.encode(x)
    mu = mu.detach()
    z = mu + torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))
    quadratic = _ln_l_of_z(module, x, w, None, const, mu)(z)
    with torch.no_grad():
        pixels = lk.ln_likelihood(x, module.decode(z), w, constant=const)
    assert torch.allclose(quadratic, pixels, rtol=1e-5, atol=0.05)
    fast = refine_latents(module, x, w, mu, steps=30, constant=const)
    module.output_basis = lambda: None  # the generic path: decode every step
    slow = refine_latents(module, x, w, mu, steps=30, constant=const)
    assert torch.allclose(fast[1], slow[1], rtol=1e-5, atol=0.05) and torch.allclose(fast[0], slow[0], atol=1e-3)
    assert torch.all(fast[1] >= refine_latents(module, x, w, mu, steps=0, constant=const)[1])
