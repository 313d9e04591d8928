"""Blue-edge values of prepared datasets: constant or per spectrum? (docs/latent_information.md)

Usage: python benchmarks/fill_edge.py DATASET.zarr [DATASET.zarr ...]
"""
import sys
import numpy as np
from galvae.prepare import open_dataset

for path in sys.argv[1:]:
    d = open_dataset(path, load=False)
    flux = np.asarray(d.flux[:]); filled = np.asarray(d.filled[:])
    dead = filled.all(axis=0)
    first = int(np.argmax(~dead))                      # first column some spectrum observes
    edge = np.array([np.median(row[~f][:15]) for row, f in zip(flux, filled)])  # each spectrum's own 15 bluest observed values
    col0 = flux[:, 0]
    print(f"{path}: columns filled in every spectrum {dead.sum()} ({d.wave[0]:.0f}-{d.wave[first - 1]:.0f} A); "
          f"column 0: median {np.median(col0):.3f}, spread (std) {col0.std():.3f}, distinct {len(np.unique(col0))}; "
          f"median |col0 - own bluest observed median| {np.median(np.abs(col0 - edge)):.3f}; "
          f"corr {np.corrcoef(col0, edge)[0, 1]:.3f}; recorded unobserved {d.attrs.get('fill', {}).get('unobserved_wave')}")
    train = d.indices("train")
    coverage = (~filled[train]).mean(axis=0)
    print("  training spectra observing: " + ", ".join(
        f"{d.wave[c]:.0f} A {100 * coverage[c]:.1f}%" for c in (59, 70, 75, 80, 90, 100, 120, 200)))
