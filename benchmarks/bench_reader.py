"""Reader throughput: galvae's direct reader against astropy ``fits.open`` and fitsio, same files.

Each reader extracts what an observed spectrum needs (COADD flux, loglam, ivar, and_mask; PLATE, MJD,
FIBERID, Z, CLASS, ZWARNING from SPECOBJ/SPALL). Arrays are checked identical before timing.

    python benchmarks/bench_reader.py [--dir ../shared/data/sdss] [--repeat 10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from galvae.sources.sdss import read_spectrum

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sdss"
META = ("PLATE", "MJD", "FIBERID", "Z", "CLASS", "ZWARNING")


def read_astropy(path):
    with fits.open(path, memmap=False) as hdul:
        coadd = hdul["COADD"].data
        meta = (hdul["SPECOBJ"] if "SPECOBJ" in hdul else hdul["SPALL"]).data
        out = {c: np.array(coadd[c]) for c in ("flux", "loglam", "ivar", "and_mask")}
        out.update({k: meta[k][0] for k in META})
    return out


def read_fitsio(path):
    import fitsio

    with fitsio.FITS(str(path)) as f:
        coadd = f["COADD"].read(columns=["flux", "loglam", "ivar", "and_mask"])
        meta_name = "SPECOBJ" if "SPECOBJ" in f else "SPALL"
        meta = f[meta_name].read(columns=list(META))
    out = {c: coadd[c] for c in ("flux", "loglam", "ivar", "and_mask")}
    out.update({k: meta[k][0] for k in META})
    return out


def read_galvae(path):
    s = read_spectrum(path)
    return {"flux": s.flux, "wave": s.wave, "ivar": s.ivar, "and_mask": s.and_mask, "z": s.z, "id": s.id}


def check_identical(paths):
    for p in paths:
        a, g = read_astropy(p), read_galvae(p)
        for c in ("flux", "ivar", "and_mask"):
            if not np.array_equal(a[c], g[c]):
                raise SystemExit(f"{p}: column {c} differs between astropy and galvae")
        if not np.array_equal(10.0 ** a["loglam"].astype(np.float64), g["wave"]) or a["Z"] != g["z"]:
            raise SystemExit(f"{p}: wavelength or z differs")
    return len(paths)


def time_reader(fn, paths, repeat):
    fn(paths[0])  # warm imports and the page cache
    t0 = time.perf_counter()
    for _ in range(repeat):
        for p in paths:
            fn(p)
    return (time.perf_counter() - t0) / (repeat * len(paths))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args(argv)
    paths = [str(p) for p in sorted(args.dir.glob("spec-*.fits"))]
    if not paths:
        raise SystemExit(f"no spec-*.fits files in {args.dir}")
    n = check_identical(paths)
    print(f"{n} files, arrays identical between astropy and galvae; {args.repeat} passes each")
    readers = {"astropy fits.open": read_astropy, "galvae": read_galvae}
    try:
        import fitsio  # noqa: F401
        readers["fitsio"] = read_fitsio
    except ImportError:
        print("(fitsio not installed: pip install fitsio to include it)")
    times = {name: time_reader(fn, paths, args.repeat) for name, fn in readers.items()}
    ref = times["astropy fits.open"]
    print(f"{'reader':<20}{'ms/file':>10}{'files/s':>10}{'speed-up vs astropy':>22}")
    for name, t in times.items():
        print(f"{name:<20}{1e3 * t:>10.2f}{1 / t:>10.0f}{ref / t:>21.1f}x")


if __name__ == "__main__":
    main()
