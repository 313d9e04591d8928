"""Progress bars only on a terminal; off one (a batch job's log) one line per stage instead."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from galvae import _progress
from galvae.sources.sdss import read_spectra

from conftest import write_spec_file


@pytest.fixture
def files(tmp_path):
    return [write_spec_file(tmp_path / f"spec-1234-56789-{f:04d}.fits", fiber=f, seed=f) for f in range(1, 6)]


def test_off_a_terminal_no_bar_and_one_log_line(files, capfd, caplog):
    assert not _progress.interactive()  # pytest captures stderr: not a terminal
    with caplog.at_level(logging.INFO, logger="galvae.progress"):
        spectra, _ = read_spectra(files, progress=True)
    assert len(spectra) == 5
    assert capfd.readouterr().err == ""
    lines = [r.getMessage() for r in caplog.records if r.name == "galvae.progress"]
    assert len(lines) == 1 and lines[0].startswith("read: 5/5 file in ")


def test_on_a_terminal_the_bar_draws_and_nothing_is_logged(files, capfd, caplog, monkeypatch):
    monkeypatch.setattr(_progress, "interactive", lambda: True)
    with caplog.at_level(logging.INFO, logger="galvae.progress"):
        read_spectra(files, progress=True)
    assert "5/5" in capfd.readouterr().err
    assert not [r for r in caplog.records if r.name == "galvae.progress"]


def test_no_progress_asked_no_line(files, caplog):
    with caplog.at_level(logging.INFO, logger="galvae.progress"):
        read_spectra(files, progress=False)
    assert not [r for r in caplog.records if r.name == "galvae.progress"]


def test_iterating_counts_items(caplog):
    with caplog.at_level(logging.INFO, logger="galvae.progress"):
        assert sum(_progress.tqdm(range(7), desc="loop", unit="step")) == 21
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["loop: 7 step"]


def test_cli_in_a_batch_log_writes_one_line_per_stage(files, tmp_path):
    """`galvae prepare` with stderr to a file: a line per pass, no bar redraws (carriage returns)."""
    log_file = tmp_path / "job.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    with open(log_file, "w") as err:
        proc = subprocess.run([sys.executable, "-m", "galvae.cli", "prepare", "--spectra", *map(str, files),
                               "--out", str(tmp_path / "d.zarr"), "--scheduler", "sync", "--n-pix", "300",
                               "--wave-min", "3700", "--wave-max", "7000"],
                              stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=300)
    assert proc.returncode == 0, log_file.read_text()
    text = log_file.read_text()
    assert "\r" not in text
    stages = [ln for ln in text.splitlines() if "galvae.progress" in ln]
    assert [ln.split(": ")[1] for ln in stages] == ["prepare", "prepare", "prepare"], text
    assert len(text.splitlines()) == len(stages), text
