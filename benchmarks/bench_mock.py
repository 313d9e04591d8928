"""Mock-survey throughput: spectra per second for a whole survey, start-up and files included.

Also times one galaxy's stages in this process (bagpipes update, instrument, FITS bytes) and, for
reference, bagpipes' own path (``model_galaxy`` with ``spec_wavs``, which resamples with spectres on
every update) and astropy's FITS writer, which the mock replaces.

    python benchmarks/bench_mock.py --n 2000 [--workers W] [--out DIR]

The load average (``os.getloadavg``) is printed before and after: other jobs on the machine slow it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from galvae.sources.mock import make_mock_survey
from galvae.sources.mock import observe as ob
from galvae.sources.mock import survey as sv
from galvae.sources.mock import write as wr


def _per_call_ms(func, repeat: int) -> float:
    func()
    t0 = time.perf_counter()
    for _ in range(repeat):
        func()
    return (time.perf_counter() - t0) / repeat * 1e3


def stage_times(repeat: int = 50) -> dict:
    """Milliseconds per galaxy for each stage, in this process."""
    from astropy.io import fits

    sv._init_worker(0.01, 0.1)
    renderer, templates = sv._WORKER["renderer"], sv._WORKER["templates"]
    cfg = sv.MockConfig(n=1, seed=0, vary=None, zmin=0.01, zmax=0.1, flux_limit=17.77)
    record = sv._records(cfg, [0])[0]
    p = record["params"]
    tau = renderer.solve_tau(p["age"], p["logssfr"], p["logzsol"])
    rest = renderer.render(p["z"], p["age"], tau, p["logzsol"], p["a_v"], p["logu"])
    model, _ = ob.observed_model(rest.wave, rest.flux * 1e17, rest.line_wave, rest.line_flux * 1e17,
                                 p["z"], p["vdisp"], p["vdisp_gas"], templates.wdisp)
    obs = ob.observe(model, np.random.default_rng(0), templates, templates.wdisp)
    meta = {**record, "z_obs": p["z"], "z_err": 1e-5, "vdisp_obs": 100.0, "vdisp_err": 10.0, "rchi2": 1.0,
            "subclass": "", "objid": 1}

    def astropy_write():
        hdul = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(wr.coadd_table(obs), name="COADD"),
                             fits.BinTableHDU(wr.specobj_row(meta, obs), name="SPECOBJ")])
        hdul.writeto(os.devnull, overwrite=True)

    def observe_model():
        return ob.observed_model(rest.wave, rest.flux * 1e17, rest.line_wave, rest.line_flux * 1e17, p["z"],
                                 p["vdisp"], p["vdisp_gas"], templates.wdisp)

    times = {
        "population draw": _per_call_ms(lambda: sv._records(cfg, [0]), repeat),
        "tau solve (bagpipes SFH)": _per_call_ms(
            lambda: renderer.solve_tau(p["age"], p["logssfr"], p["logzsol"]), repeat),
        "bagpipes update": _per_call_ms(
            lambda: renderer.render(p["z"], p["age"], tau, p["logzsol"], p["a_v"], p["logu"]), repeat),
        "redshift, rebin, broaden, lines": _per_call_ms(observe_model, repeat),
        "noise, sky, masks": _per_call_ms(
            lambda: ob.observe(model, np.random.default_rng(0), templates, templates.wdisp), repeat),
        "FITS bytes (galvae writer)": _per_call_ms(lambda: wr.spec_lite_bytes(meta, obs), repeat),
        "FITS write (astropy, reference)": _per_call_ms(astropy_write, max(repeat // 5, 3)),
    }
    times["bagpipes update with spec_wavs (reference)"] = _bagpipes_spec_wavs_ms(p, tau, max(repeat // 5, 3))
    return times


def _bagpipes_spec_wavs_ms(p: dict, tau: float, repeat: int) -> float:
    """One update of a plain ``model_galaxy(..., spec_wavs=SDSS grid)`` at bagpipes' default sampling."""
    from galvae.sources.mock.render import components, import_bagpipes

    bagpipes = import_bagpipes()
    comps = components(p["z"], p["age"], tau, p["logzsol"], p["a_v"], p["logu"])
    comps["veldisp"] = p["vdisp"]
    model = bagpipes.model_galaxy(comps, spec_wavs=10 ** ob.master_loglam())
    return _per_call_ms(lambda: model.update(comps), repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="keep the survey here (default: a temporary folder)")
    parser.add_argument("--no-stages", action="store_true", help="skip the per-stage timings")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    out = args.out or Path(tempfile.mkdtemp(prefix="galvae-bench-mock-"))
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    survey = make_mock_survey(out, n=args.n, seed=args.seed, workers=args.workers, progress=True)
    elapsed = time.perf_counter() - t0
    load_after = os.getloadavg()
    workers = args.workers or os.cpu_count()
    print(f"mock survey: {args.n} spectra in {elapsed:.1f} s = {args.n / elapsed:.1f} spectra/s "
          f"({workers} workers on {os.cpu_count()} cores, process start-up and bagpipes set-up included)")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1-min)")
    t1 = time.perf_counter()
    again = make_mock_survey(out, n=args.n, seed=args.seed, workers=args.workers, progress=False)
    print(f"rerun (cache hit: {again.from_cache}): {time.perf_counter() - t1:.2f} s")
    size = sum(p.stat().st_size for p in survey.paths)
    print(f"files: {len(survey.paths)} spectra, {size / 1e6:.0f} MB")

    if not args.no_stages:
        print("\nper galaxy, one process (ms):")
        for name, ms in stage_times().items():
            print(f"  {name:<45s} {ms:7.2f}")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
