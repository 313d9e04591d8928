"""The run configuration: presets, YAML overrides, and prepare's defaults read from PrepareConfig."""

from __future__ import annotations

import pytest

from galvae.config import PrepareSection, load_config
from galvae.prepare import PrepareConfig


def test_a_misspelled_select_setting_is_one_error_before_the_run(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("select:\n  epochs: 3\n  pateince: 2\n")
    with pytest.raises(ValueError, match=r"unknown select setting\(s\) \['pateince'\]"):
        load_config("demo", path)
    assert load_config("demo", None, select={"epochs": 3}).select.epochs == 3


def test_the_run_prepares_with_prepare_own_defaults():
    assert PrepareSection().to_config() == PrepareConfig()
    section = PrepareSection(zmax=0.05, n_pix=1000)
    assert section.to_config() == PrepareConfig(zmax=0.05, n_pix=1000)
