"""Prepare the real SDSS galaxies of ../shared/data/sdss and plot their rest-frame spectra.

Writes ``docs/figures/real_prepared.png``: every kept galaxy on the 4000-pixel rest-frame grid, offset
for clarity, with the pixels filled by gappy PCA drawn in red; prints the prepare tally.

    python benchmarks/real_prepared_figure.py [--dir ../shared/data/sdss] [--out docs/figures/real_prepared.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sdss"
LINES = {"[O II]": 3728.5, "Hβ": 4862.7, "[O III]": 5008.2, "Mg b": 5176.7, "Na D": 5895.6, "Hα": 6564.6,
         "[S II]": 6725.0}


def main(argv=None):
    from galvae.prepare import open_dataset, prepare_dataset, read_rejects

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--out", type=Path, default=Path("docs/figures/real_prepared.png"))
    args = ap.parse_args(argv)
    path = Path(tempfile.mkdtemp(prefix="galvae-real-")) / "real.zarr"
    result = prepare_dataset(args.dir, path, scheduler="sync", progress=False)
    print(result.summary())
    for row in read_rejects(path):
        print(f"  {Path(row['path']).name}: {row['reason']}")
    d = open_dataset(path)
    order = np.argsort(d.props["z"])
    fig, ax = plt.subplots(figsize=(11, 1.0 + 0.85 * len(d)))
    for k, i in enumerate(order):
        offset = 1.6 * k
        good = ~d.filled[i]
        ax.plot(d.wave, np.where(good, d.flux[i], np.nan) + offset, lw=0.5, color="0.15")
        ax.plot(d.wave, np.where(good, np.nan, d.flux[i]) + offset, lw=0.9, color="tab:red")
        ax.text(8420, offset + 0.9, f"{d.ids[i]}  z={d.props['z'][i]:.3f}  "
                f"filled {100 * d.filled[i].mean():.1f}%", fontsize=7, va="center")
    for name, lam in LINES.items():
        ax.axvline(lam, color="tab:blue", lw=0.4, alpha=0.5)
        ax.text(lam, 1.6 * len(d) + 0.6, name, fontsize=7, ha="center", color="tab:blue")
    ax.plot([], [], color="tab:red", label="filled by gappy PCA (ivar = 0)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_xlim(3350, 9900)
    ax.set_ylim(-0.5, 1.6 * len(d) + 1.2)
    ax.set_xlabel("rest-frame wavelength (Å, vacuum)")
    ax.set_ylabel("normalised flux + offset")
    ax.set_title(f"{len(d)} SDSS galaxies of ../shared/data/sdss after `galvae prepare` "
                 f"({result.n_files} files read, {result.n_rejected} rejected)", fontsize=10)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
