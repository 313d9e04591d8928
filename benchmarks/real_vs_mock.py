"""How far is the mock from real SDSS? Encode the real galaxies with a run's model and compare.

Prepares the galaxies of ``../shared/data/sdss`` with the run's prepare settings, encodes them with the
model that the run explained (same D1…Dd basis), and prints each galaxy's χ²/pixel and the percentile of
its ELBO among the mock's test spectra (a low percentile: the model finds it unlike the mock). The
comparison is added to the run's ``analysis/summary.json`` and the report is rewritten to show it.

    python benchmarks/real_vs_mock.py --run galvae-run [--dir ../shared/data/sdss]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sdss"


def main(argv=None):
    from galvae.explain import encode_external
    from galvae.prepare import PrepareConfig, prepare_dataset
    from galvae.report import write_report

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished `galvae run` folder")
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = ap.parse_args(argv)
    run = args.run
    config = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    p = config["prepare"]
    real = run / "real_sdss.zarr"
    result = prepare_dataset(args.dir, real, scheduler="sync", progress=False, config=PrepareConfig(
        zmax=p["zmax"], n_pix=p["n_pix"], wave_min=p["wave_min"], wave_max=p["wave_max"],
        max_bad_fraction=p["max_bad_fraction"], n_components=p["n_components"], n_iter=p["n_iter"]))
    print(result.summary())
    table = encode_external(summary["model_dir"], run / "analysis", real, name="real_sdss")
    chi2 = np.asarray(table["chi2_per_pixel"], float)
    pct = np.asarray(table["elbo_percentile"], float)
    print(f"\n{'id':<17}{'z':>7}{'chi2/pix':>10}{'ELBO pct':>10}")
    for row, c, q in zip(table, chi2, pct):
        print(f"{row['id']:<17}{float(row['z']):>7.3f}{c:>10.2f}{q:>9.1f}%")
    print(f"\nmedian χ²/pixel {np.nanmedian(chi2):.2f}; median ELBO percentile among the mock's test spectra "
          f"{np.nanmedian(pct):.1f}% ({np.sum(pct < 5)} of {len(pct)} below the 5th percentile)")
    ref = json.loads((run / "analysis" / "summary.json").read_text())
    write_report(run, run / "dataset.zarr", run / "analysis", select_dir=run / "select", config=config)
    print(f"report updated: {run / 'report' / 'index.html'} ({len(ref.get('external', {}))} external set)")


if __name__ == "__main__":
    main()
