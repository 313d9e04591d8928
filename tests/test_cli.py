"""The command line: each verb on real files, a real local server, and bad input."""

import json
import subprocess
import sys

import pytest

from galvae import __version__
from galvae.cli import main
from galvae.prepare import open_dataset

from sdss_server import FaultyServer, make_spec_bytes, sas_path


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "galvae.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"galvae {__version__}"
    out = subprocess.run([sys.executable, "-m", "galvae.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for verb in ("inspect", "catalog", "download"):
        assert verb in out.stdout


def test_inspect_real_files(sdss_dir, tmp_path, capsys):
    from astropy.table import Table

    rc = main(["inspect", str(sdss_dir), "--quiet", "--workers", "1", "--out", str(tmp_path / "t.ecsv")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "read 29 spectra, rejected 1 of 30 files" in out
    assert "spec-0269-51581-0003.fits: no good pixel" in out
    table = Table.read(tmp_path / "t.ecsv")
    assert len(table) == 29 and "0266-51602-0001" in table["id"]
    assert main(["inspect", str(sdss_dir), "--quiet", "--strict"]) == 1


def test_inspect_nothing_readable_is_exit_one(tmp_path, capsys):
    (tmp_path / "spec-0001-00001-0001.fits").write_text("not fits")
    assert main(["inspect", str(tmp_path), "--quiet"]) == 1
    assert "not a FITS file" in capsys.readouterr().out


def _gswlc_line(i, plate, mjd, fiber, z, flag_sed=0):
    cols = [1237648720693755918 + i, 1000 + i, plate, mjd, fiber, 150.0, 2.0, z, 1.1, 10.5, 0.05, 0.3, 0.1,
            1.2, 0.2, 0.6, 0.1, 0.5, 0.1, flag_sed, 1, 1, 5, 1]
    return " ".join(str(c) for c in cols)


def test_catalog_join(tmp_path, capsys):
    from astropy.table import Table

    x2 = tmp_path / "GSWLC-X2.dat"
    m2 = tmp_path / "GSWLC-M2.dat"
    x2.write_text("\n".join([_gswlc_line(0, 266, 51602, 1, 0.02), _gswlc_line(1, 266, 51602, 2, 0.03, 1)]) + "\n")
    m2.write_text("\n".join([_gswlc_line(2, 266, 51602, 2, 0.03), _gswlc_line(3, 266, 51602, 3, 0.04),
                             "this line is broken"]) + "\n")
    rc = main(["catalog", "--gswlc", str(x2), str(m2), "--out", str(tmp_path / "props.fits")])
    out = capsys.readouterr().out
    assert rc == 0
    props = Table.read(tmp_path / "props.fits")
    assert list(props["id"]) == ["0266-51602-0001", "0266-51602-0002", "0266-51602-0003"]
    # key 2 failed in X2 but fitted in M2: the successful fit wins
    assert props["logmstar"][1] == pytest.approx(10.5)
    assert "1 duplicates dropped" in out and "line 3" in out


def test_catalog_needs_an_input(capsys, tmp_path):
    assert main(["catalog", "--out", str(tmp_path / "p.fits")]) == 2


def test_download_verb_against_local_server(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    good = {sas_path(266, 51602, f): make_spec_bytes(266, 51602, f) for f in (1, 2)}
    catalog = tmp_path / "GSWLC-X2.dat"
    catalog.write_text("\n".join(_gswlc_line(f, 266, 51602, f, 0.05) for f in (1, 2, 3)) + "\n")
    with FaultyServer(good, {sas_path(266, 51602, 1): ["500"]}) as server:
        rc = main(["download", "--catalog", str(catalog), "--out", str(tmp_path / "out"), "--quiet",
                   "--base-url", server.base_url, "--retries", "2", "--timeout", "2"])
    out = capsys.readouterr().out
    assert rc == 0  # a 404 alone is not a failure
    assert "2 downloaded" in out and "1 missing" in out
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == [
        "spec-0266-51602-0001.fits", "spec-0266-51602-0002.fits"]
    assert main(["download", "--catalog", str(tmp_path / "nope.dat"), "--out", str(tmp_path / "o2")]) == 2


def test_prepare_train_encode_on_real_files(sdss_dir, tmp_path, capsys):
    from astropy.table import Table

    data = tmp_path / "real.zarr"
    assert main(["prepare", "--spectra", str(sdss_dir), "--out", str(data), "--scheduler", "sync", "--quiet"]) == 0
    assert "prepared 11 of 30 spectra" in capsys.readouterr().out
    assert main(["train", "--data", str(data), "--latent", "2", "--out", str(tmp_path / "m"), "--epochs", "2",
                 "--quiet"]) == 0
    assert "model written to" in capsys.readouterr().out
    n_train = len(open_dataset(data).indices("train"))
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model"]["n_basis"] == min(32, n_train - 1)
    assert main(["train", "--data", str(data), "--latent", "2", "--out", str(tmp_path / "px"), "--epochs", "2",
                 "--n-basis", "0", "--quiet"]) == 0
    assert json.loads((tmp_path / "px" / "config.json").read_text())["model"]["n_basis"] == 0
    assert main(["train", "--data", str(data), "--latent", "2", "--out", str(tmp_path / "fo"), "--epochs", "2",
                 "--fixed-offset", "--quiet"]) == 0
    assert json.loads((tmp_path / "fo" / "config.json").read_text())["model"]["train_offset"] is False
    assert main(["encode", "--model", str(tmp_path / "m"), "--data", str(data), "--out", str(tmp_path / "l.fits")]) == 0
    latents = Table.read(tmp_path / "l.fits")
    assert len(latents) == 11 and {"mu_1", "mu_2", "sigma_1", "chi2_per_pixel", "elbo"} <= set(latents.colnames)
    assert main(["train", "--data", str(tmp_path / "missing.zarr"), "--latent", "2", "--out", str(tmp_path / "x")]) == 2
    # options a PCA baseline cannot honour are refused, not dropped; so is a model directory in the way
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--latent", "2", "--out", str(tmp_path / "p"), "--arch", "wpca",
                 "--conditions", "logmstar", "--epochs", "9", "--fixed-offset"]) == 2
    assert "--conditions --fixed-offset --epochs do not apply to --arch wpca" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--latent", "2", "--out", str(tmp_path / "m"), "--arch", "pca"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--latent", "2", "--out", str(tmp_path / "m"), "--resume",
                 "--overwrite"]) == 2
    assert "choose one" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--data", str(data), "--latent", "0", "--out", str(tmp_path / "z")])
    assert "must be a positive integer" in capsys.readouterr().err


def test_select_explain_report_chain(small_mock, tmp_path, capsys):
    data = tmp_path / "mock.zarr"
    assert main(["prepare", "--spectra", str(small_mock.out_dir / "spectra"), "--catalog", str(small_mock.catalog_path),
                 "--out", str(data), "--scheduler", "sync", "--quiet"]) == 0
    # the GSWLC-2 catalogue alone has no metallicity: a grid using it stops before its first cell, saying why
    capsys.readouterr()
    assert main(["select", "--data", str(data), "--out", str(tmp_path / "oh"), "--latent", "1", "--conditions",
                 "none,metallicity", "--seeds", "1", "--epochs", "1", "--scheduler", "sync", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the selection grid cannot run") and "metallicity is known for 0 of" in err
    assert "MPA-JHU" in err and not (tmp_path / "oh").exists()
    assert main(["select", "--data", str(data), "--out", str(tmp_path / "sel"), "--latent", "1-2", "--conditions",
                 "none,logmstar", "--seeds", "1", "--epochs", "2", "--scheduler", "sync", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "4 cells done, 0 failed" in out and "best by mean BIC" in out and "recommended (one-standard-error rule" in out
    model = next((tmp_path / "sel" / "cells").glob("d2_vae_s0"))
    assert main(["explain", "--model", str(model), "--data", str(data), "--out", str(tmp_path),
                 "--truth", str(small_mock.truth_path), "--n-boot", "3", "--shap-background", "16",
                 "--shap-explain", "8", "--quiet"]) == 0
    assert "explained variance: D1" in capsys.readouterr().out
    assert main(["report", "--data", str(data), "--analysis", str(tmp_path / "analysis"), "--select",
                 str(tmp_path / "sel"), "--out", str(tmp_path)]) == 0
    html = (tmp_path / "report" / "index.html").read_text()
    assert "data:image/png;base64," in html and "BIC" in html


def test_mock_verb(tmp_path, capsys):
    pytest.importorskip("bagpipes")
    assert main(["mock", "--n", "4", "--seed", "2", "--out", str(tmp_path / "m"), "--workers", "1", "--quiet"]) == 0
    assert "made 4 mock spectra" in capsys.readouterr().out
    assert main(["mock", "--n", "4", "--seed", "2", "--out", str(tmp_path / "m"), "--workers", "1", "--quiet"]) == 0
    assert "found (cached) 4 mock spectra" in capsys.readouterr().out
    assert len(list((tmp_path / "m" / "spectra").glob("spec-*.fits"))) == 4


def test_run_end_to_end_on_a_tiny_mock(tmp_path, capsys):
    """`galvae run` chains every stage; a rerun skips them all."""
    pytest.importorskip("bagpipes")
    config = tmp_path / "tiny.yaml"
    config.write_text("mock: {n: 60, seed: 4}\n"
                      "select: {latent: '1-2', conditions: 'none,logmstar', seeds: 1, epochs: 2, time_limit: null}\n"
                      "explain: {n_boot: 3, shap_background: 16, shap_explain: 8}\n")
    args = ["run", "--out", str(tmp_path / "run"), "--config", str(config), "--scheduler", "sync", "--workers", "1",
            "--quiet"]
    assert main(args) == 0
    run = tmp_path / "run"
    assert "report:" in capsys.readouterr().out
    for artifact in ("config.json", "timings.json", "dataset.zarr", "select/grid.ecsv", "select/best.json",
                     "analysis/latents.fits", "analysis/summary.json", "report/index.html"):
        assert (run / artifact).exists(), artifact
    html = (run / "report" / "index.html").read_text()
    assert "http://" not in html and "https://" not in html.replace("https://www.sdss.org", "")
    def stamps():
        files = [run / "dataset.zarr" / "zarr.json", run / "mock" / "truth.fits",
                 *sorted((run / "select" / "cells").glob("*/cell.json"))]
        return {str(f): f.stat().st_mtime_ns for f in files}

    before = stamps()
    assert len(before) == 2 + 4  # 4 finished cells
    assert main(args) == 0  # rerun: mock, dataset and every cell are found, not redone
    assert stamps() == before

    # a dataset prepared elsewhere: the stages start from it, nothing is made or prepared again
    again = tmp_path / "again"
    assert main(["run", "--out", str(again), "--config", str(config), "--data", str(run / "dataset.zarr"),
                 "--scheduler", "sync", "--workers", "1", "--quiet"]) == 0
    assert not (again / "dataset.zarr").exists() and not (again / "mock").exists()
    assert (again / "report" / "index.html").exists()
    assert (again / "select" / "best.json").read_text() == (run / "select" / "best.json").read_text()
    capsys.readouterr()
    assert main(["run", "--out", str(tmp_path / "x"), "--data", str(tmp_path / "nope.zarr"), "--quiet"]) == 2
    assert "no dataset at" in capsys.readouterr().err
