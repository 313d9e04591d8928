"""End-to-end `galvae prepare` on a mock survey: spectra per second and peak memory.

Makes (or reuses, cached by configuration) a mock survey of ``--n`` galaxies, then times
``prepare_dataset`` from files to a finished ``dataset.zarr`` with ``--workers`` local Dask workers,
cluster start-up included. Peak memory is the largest summed RSS of this process and all its
children (scheduler, nannies, workers), sampled every 50 ms.

    python benchmarks/bench_prepare.py [--n 2000] [--workers 2] [--mock-dir out/bench-mock-2000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil


class PeakMemory:
    """Samples the summed RSS of this process tree in a background thread."""

    def __init__(self, interval=0.05):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main(argv=None):
    from galvae.prepare import PrepareConfig, open_dataset, prepare_dataset
    from galvae.sources.mock import make_mock_survey

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mock-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    mock_dir = args.mock_dir or Path("out") / f"bench-mock-{args.n}-{args.seed}"
    survey = make_mock_survey(mock_dir, n=args.n, seed=args.seed, progress=True)
    out = Path(tempfile.mkdtemp(prefix="galvae-bench-")) / "dataset.zarr"
    try:
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            result = prepare_dataset(survey.paths, out, catalog=survey.catalog_path, workers=args.workers,
                                     config=PrepareConfig(), progress=False)
            seconds = time.perf_counter() - t0
        d = open_dataset(out, load=False)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(f"galvae prepare: {args.n} mock spec-lite files -> {len(d)} spectra x {d.wave.size} pixels, "
              f"{args.workers} workers")
        print(f"  wall time        {seconds:8.2f} s (Dask cluster start-up included)")
        print(f"  throughput       {args.n / seconds:8.0f} spectra/s   (target >= 300)")
        print(f"  peak memory      {mem.peak / 2**20:8.0f} MiB (driver + scheduler + workers)")
        print(f"  dataset on disk  {size / 2**20:8.0f} MiB")
        print(result.summary())
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
