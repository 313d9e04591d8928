"""The HTML report: self-contained (no external resource), every figure embedded, the tables present,
and it renders in headless Chromium (skipped when chromium is not installed)."""

from __future__ import annotations

import base64
import html
import importlib.util
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from test_explain import build_run

from galvae.report import write_report
from galvae.report.html import bic_definition, fmt

ROOT = Path(__file__).resolve().parents[1]


def fake_select(root: Path) -> Path:
    """A select directory as the select stage writes it: grid.ecsv, best.json, figures/bic_*.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.table import Table

    s = root / "select"
    (s / "figures").mkdir(parents=True)
    # the columns and keys the select stage writes (galvae.select.grid.COLUMNS, select.choice.describe)
    grid = Table({"d": [2, 3, 4, 4, 4], "conditions": ["vae", "vae", "vae", "vae", "logmstar"],
                  "seed": [0, 0, 0, 1, 0], "k": [2, 3, 4, 4, 5],
                  "bic_mean": [1012.25, 987.5, 951.125, 953.5, 960.75],
                  "bic_stderr": [3.5, 3.25, 3.0, 3.0625, 3.125], "status": ["done"] * 5})
    grid.write(s / "grid.ecsv", format="ascii.ecsv")
    (s / "best.json").write_text(json.dumps({"criterion": "bic", "conditions_label": "vae", "conditions": [],
                                             "d": 4, "k": 4, "bic_mean": 952.3125, "best_seed": 0,
                                             "model_dir": "cells/d4_vae_s0"}))
    for name in ("bic_grid", "bic_vs_d"):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot(grid["d"], grid["bic_mean"], "o")
        fig.savefig(s / "figures" / f"{name}.png")
        plt.close(fig)
    return s


@pytest.fixture(scope="module")
def report(small_mock, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    run = build_run(small_mock, root)
    select = fake_select(root)
    path = write_report(run["run"], run["dataset"], run["run"] / "analysis", select_dir=select,
                        config={"preset": "test", "seed": 0})
    return {**run, "select": select, "html": path, "text": path.read_text(encoding="utf-8")}


class Resources(HTMLParser):
    """Every tag and every attribute that can load something."""

    def __init__(self):
        super().__init__()
        self.tags, self.loads = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action", "background") and value is not None:
                self.loads.append((tag, name, value))
            if name == "style" and value and "url(" in value:
                self.loads.append((tag, name, value))


def test_report_is_self_contained(report):
    text = report["text"]
    assert report["html"] == report["run"] / "report" / "index.html"
    parser = Resources()
    parser.feed(text)
    for tag, name, value in parser.loads:
        if tag == "img" and name == "src":
            assert value.startswith("data:image/png;base64,"), value[:80]
        elif tag == "a" and name == "href":
            assert value.startswith("#"), value  # in-page links only
        else:
            pytest.fail(f"external resource {tag} {name}={value[:80]}")
    assert not {"link", "script", "iframe", "object", "embed"} & set(parser.tags)
    style = "".join(re.findall(r"<style>(.*?)</style>", text, re.DOTALL))
    assert style and "url(" not in style and "@import" not in style
    assert not re.search(r'(src|href)\s*=\s*"(https?:|//|file:)', text)
    # every in-page link has its target
    for target in re.findall(r'href="#([^"]+)"', text):
        assert f'id="{target}"' in text
    assert text.count("<section") == text.count("</section>") and text.count("<table") == text.count("</table>")


def test_report_embeds_every_figure(report):
    text = report["text"]
    figures = sorted((report["run"] / "analysis" / "figures").glob("*.png"))
    figures += sorted((report["select"] / "figures").glob("*.png"))
    assert len(figures) >= 9
    for p in figures:
        assert base64.b64encode(p.read_bytes()).decode() in text, p.name
    assert text.count("<img ") == len(figures)
    for number in ("Figure 1.", "Figure 2.", "Figure 3.", "Figure 4.", "Figure 5.", "Figure 6."):
        assert number in text


def test_report_has_the_tables(report):
    from astropy.table import Table

    text, a = report["text"], report["run"] / "analysis"
    summary = json.loads((a / "summary.json").read_text())
    # explained variance
    for ratio in summary["explained_variance_ratio"]:
        assert f">{fmt(100 * ratio)}<" in text
    # mutual information and Spearman ρ, catalogue and truth
    mi, rho = Table.read(a / "mi.ecsv"), Table.read(a / "spearman.ecsv")
    for row in mi[(mi["property"] == "logmstar")]:
        assert f"{fmt(row['mi'], 3)} ± {fmt(row['mi_err'], 2)}" in text
    for row in rho[(rho["property"] == "logsfr") & (rho["source"] == "catalog")]:
        assert f">{fmt(row['rho'], 3)}<" in text
    assert "Against the truth (mock)" in text
    for t in summary["truth"]["tracks"]:
        assert f"<td>{t['property']}</td>" in text
    # the dataset's tally, kept and rejected by reason
    assert "too many bad pixels" in text and ">57<" in text
    # BIC: the shared definition, the grid, the best row highlighted
    assert "BIC_i           = k ln P_i − 2 ln L_i" in bic_definition()
    assert "BIC_i" in text and "k ln P_i − 2 ln L_i" in text
    for value in ("1012", "987.5", "951.1", "960.8"):
        assert f">{value}<" in text
    best_rows = re.findall(r"<tr>(?:<td class=\"[^\"]*best[^\"]*\">[^<]*</td>)+</tr>", text)
    assert len(best_rows) == 1 and ">951.1<" in best_rows[0]  # d = 4, the VAE, seed 0: not its seed 1 or the CVAE
    # SHAP fidelity, as measured
    fid = summary["shap"]["fidelity"]
    assert fmt(fid["max_relative_error"], 3) in text and "within tolerance" in text
    # provenance
    assert '"preset": "test"' in html.unescape(text) and "<td>compact</td>" in text


def test_report_without_select_or_truth(report, tmp_path):
    a = report["run"] / "analysis"
    summary = json.loads((a / "summary.json").read_text())
    summary.pop("truth")
    b = tmp_path / "analysis"
    (b / "figures").mkdir(parents=True)
    for p in a.iterdir():
        if p.is_file():
            (b / p.name).write_bytes(p.read_bytes())
    (b / "summary.json").write_text(json.dumps(summary))
    for p in (a / "figures").glob("*.png"):
        if "truth" not in p.name:
            (b / "figures" / p.name).write_bytes(p.read_bytes())
    text = write_report(tmp_path, report["dataset"], b).read_text()
    assert 'id="selection"' not in text and 'id="truth"' not in text and "Against the truth" not in text
    assert "Figure 3." in text and "Mutual information (nats), catalogue properties" in text


def _screenshot_module():
    spec = importlib.util.spec_from_file_location("report_screenshot", ROOT / "benchmarks" / "report_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_renders_in_headless_chromium(report, tmp_path):
    shot = _screenshot_module()
    if shot.find_chromium() is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    import matplotlib.image as mpimg

    png = shot.screenshot(report["html"], tmp_path / "report.png", width=1280, height=3000)
    image = mpimg.imread(png)
    assert image.shape[:2] == (3000, 1280)
    gray = image[..., :3].mean(axis=2)
    assert gray.std() > 0.05  # text, tables and figures, not a blank page
    rows_with_ink = np.mean(gray.min(axis=1) < 0.5)
    assert rows_with_ink > 0.3  # content runs down the page
