"""The paper preset at CPU size (examples/paper-tiny.yaml): all 16 condition subsets on a small mock whose
metallicities come from its MPA-JHU files, through `galvae catalog`'s join, as a real user's do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from galvae.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "paper-tiny.yaml"


def test_paper_preset_runs_on_a_tiny_mock_and_reports_the_spectra_it_left_out(tmp_path, capsys):
    pytest.importorskip("bagpipes")
    from astropy.table import Table

    from galvae.prepare import open_dataset

    run = tmp_path / "run"
    assert main(["run", "--preset", "paper", "--config", str(EXAMPLE), "--out", str(run), "--scheduler", "sync",
                 "--workers", "1", "--quiet"]) == 0
    assert "report:" in capsys.readouterr().out
    assert (run / "report" / "index.html").exists()
    assert json.loads((run / "config.json").read_text())["preset"] == "paper"

    grid = Table.read(run / "select" / "grid.ecsv")
    assert len(set(grid["conditions"])) == 16 and set(grid["status"]) == {"done"}
    # metallicity reached the dataset through the mock's MPA-JHU files: star-forming galaxies only
    oh = np.asarray(open_dataset(run / "dataset.zarr", load=False).props["metallicity"], dtype=float)
    assert np.isfinite(oh).any() and np.isnan(oh).any()
    assert (run / "mock" / "props.fits").exists() and (run / "mock" / "gal_fiboh-mock.fits").exists()

    best = json.loads((run / "select" / "best.json").read_text())
    dropped, kept = best["split_dropped"], best["split_kept"]
    assert dropped["total"] == int(np.isnan(oh).sum()) > 0  # GSWLC has every mock galaxy's fit
    assert best["dropped_by_condition"]["metallicity"]["total"] == dropped["total"]
    assert grid.meta["split_dropped"] == dropped
    assert set(grid["n_test"]) == {kept["test"]}  # every cell scored on the same spectra
    html = (run / "report" / "index.html").read_text()
    n_total = sum(kept.values()) + dropped["total"]
    assert f"{dropped['total']} of {n_total} spectra lack at least one and were left out" in html
    assert (f"metallicity missing for {dropped['total']} (train {dropped['train']}, val {dropped['val']}, "
            f"test {dropped['test']})") in html
