"""Render a galvae report in headless Chromium and keep a screenshot (docs/figures/report_screenshot.png).

    python benchmarks/report_screenshot.py --run RUN_DIR        # a run whose report/index.html exists
    python benchmarks/report_screenshot.py                      # build a small mock run first (~2 min)

Chromium is the Debian package (``apt-get install -y chromium``); it runs with networking, GPU, sync and
component updates off, in a throw-away profile, so the screenshot also shows the page renders offline.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("report_screenshot")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PNG = ROOT / "docs" / "figures" / "report_screenshot.png"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html_path, png_path, width: int = 1280, height: int = 3000, chromium: str | None = None,
               timeout: float = 120.0) -> Path:
    """Render ``html_path`` in headless Chromium at ``width`` × ``height`` px and write ``png_path``."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium found (apt-get install -y chromium)")
    html_path, png_path = Path(html_path).resolve(), Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="galvae-chromium-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png_path}",
               f"--window-size={width},{height}", html_path.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0 or not png_path.exists():
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return png_path


def build_demo_run(out: Path, n: int = 300, seed: int = 0, time_limit: float = 60.0) -> Path:
    """mock → prepare → select (VAEs, d = 2–4, 2 seeds) → a log M* CVAE → explain the chosen VAE → report,
    in ``out``; returns the report."""
    from galvae.explain import explain
    from galvae.fit import fit
    from galvae.prepare import open_dataset, prepare_dataset
    from galvae.report import write_report
    from galvae.select import select_grid
    from galvae.sources.mock import make_mock_survey

    mock = make_mock_survey(out / "mock", n=n, seed=seed, progress=True)
    data = out / "dataset.zarr"
    if not data.exists():
        prepare_dataset(mock.paths, data, catalog=mock.catalog_path, progress=True)
    grid = select_grid(data, out / "select", latent=[2, 3, 4], conditions="none", seeds=2, epochs=60,
                       needed=(), time_limit=time_limit / 3, scheduler="sync", progress=True)
    vae = out / "select" / grid.best["model_dir"]
    cvae = fit(open_dataset(data), out / "models" / "cvae_logmstar", latent_dim=3, conditions=("logmstar",),
               epochs=30, time_limit=time_limit / 2, resume=True)
    explain(vae, data, out, truth=mock.truth_path, cvae_dirs=(cvae,), seed=seed)
    return write_report(out, data, out / "analysis", select_dir=out / "select",
                        config={"benchmark": "report_screenshot", "n": n, "seed": seed, "time_limit": time_limit})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="run directory holding report/index.html")
    p.add_argument("--work", type=Path, default=Path("out/report_screenshot"), help="where to build a demo run")
    p.add_argument("--n", type=int, default=300, help="galaxies in the demo mock")
    p.add_argument("--png", type=Path, default=DEFAULT_PNG)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=3000)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    t0 = time.perf_counter()
    html = args.run / "report" / "index.html" if args.run else build_demo_run(args.work, n=args.n)
    t1 = time.perf_counter()
    png = screenshot(html, args.png, args.width, args.height)
    t2 = time.perf_counter()
    log.info("report %s (%.1f MB, built in %.0f s) → %s (rendered in %.1f s)", html, html.stat().st_size / 1e6,
             t1 - t0, png, t2 - t1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
