"""The selection grid: parsing, the table, best-model choice, failures, kill-and-resume, figures."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import galvae.fit as fitmod
from galvae import likelihood as lk
from galvae.models.synthetic import synthetic_dataset
from galvae.select import comparable_view, parse_conditions, parse_latent, select_grid
from galvae.select.cells import Cell, all_condition_sets
from galvae.select.evaluate import active_dimensions, load_scores

N, P = 300, 96
GRID = {"latent": "1-2", "conditions": "none,logmstar", "seeds": 1, "epochs": 2, "scheduler": "sync",
        "progress": False, "batch_size": 64, "lr": 2e-3, "n_iwae": 8}


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(N, P, seed=3, nan_fraction=0.05)


def rows_of(table) -> list[tuple]:
    """The table without its timing column, for comparing two runs."""
    keep = [c for c in table.colnames if c != "train_seconds"]
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
    for row in t:
        metrics = json.loads((tmp_path / "g" / "cells" / row["cell"] / "metrics.json").read_text())
        assert row["bic_mean"] == pytest.approx(metrics["bic"]["mean"])
        assert row["ln_l_mean"] == pytest.approx(metrics["ln_likelihood"]["mean"])
        scores = load_scores(tmp_path / "g" / "cells" / row["cell"] / "scores.npz")
        assert np.mean(lk.bic(scores["ln_likelihood"], row["k"], scores["n_good"])) == pytest.approx(row["bic_mean"])
        assert row["iwae_mean"] >= row["elbo_mean"] - 5 * row["elbo_stderr"]  # IWAE bounds ln p(x) tighter
        assert 0 <= row["n_active"] <= row["d"]
        assert np.all(np.isfinite([row["elbo_mean"], row["chi2_per_pixel"], row["bic_stderr"]]))

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

    for name in ("bic_grid.png", "bic_vs_d.png"):
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
    from galvae.models.synthetic import synthetic_dataset
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
