"""Memory and time of every stage against the survey's size: 25k, 100k, 320k spectra.

Builds datasets of N spectra by tiling a prepared dataset (each copy gets fresh Gaussian noise at the
spectrum's own ivar — so ivar is halved — a new PLATE-MJD-FIBER id and so its own hash split), then runs
each stage as its own process, as a user would, and samples the RSS of that process and of every
process it starts (Dask workers) every 0.2 s:

    train    galvae train --latent 4 --epochs 2 (compact; seconds per epoch from history.csv)
    train_paper  the same, 1 epoch of the paper architecture (only when named in --stages)
    encode   galvae encode of every spectrum
    select   galvae select --latent 2 --conditions none,logmstar --seeds 1 --epochs 1 --workers 2 (2 cells)
    explain  galvae explain of the train stage's model
    report   galvae report

and, with ``--prepare-files N``, ``galvae prepare`` on N spec-lite files made by copying the base
mock's files under new ids (the SPECOBJ table's PLATE, MJD, FIBERID patched in place).

    python benchmarks/bench_scale.py --base out/select-demo/dataset.zarr --sizes 25000 100000 320000
    python benchmarks/bench_scale.py --base out/select-demo/dataset.zarr --mock out/select-demo/mock \
        --prepare-files 100000 --sizes
    python benchmarks/bench_scale.py --plot-only      # table and figure from the results file

Results go to ``--work``/results.json (one entry per size and stage; a rerun skips what is there), the
table to stdout and ``docs/figures/scale.png``. Disk: ≈ 36 kB per spectrum (320k: ≈ 11.5 GB).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

STAGES = ("train", "encode", "select", "explain", "report")


# ---------------------------------------------------------------------------------------------------
# measuring a command
# ---------------------------------------------------------------------------------------------------

def run_measured(cmd: list[str], log_path: Path) -> dict:
    """Run ``cmd``; wall time, exit code, the largest RSS of any one process of its tree, and the
    largest summed RSS of the tree, sampled every 0.2 s."""
    peaks: dict[int, int] = {}
    peak_total = 0
    stop = threading.Event()
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)

        def sample():
            nonlocal peak_total
            while not stop.is_set():
                total = 0
                try:
                    tree = [root, *root.children(recursive=True)]
                except psutil.Error:
                    tree = []
                for p in tree:
                    try:
                        rss = p.memory_info().rss
                    except psutil.Error:
                        continue
                    peaks[p.pid] = max(peaks.get(p.pid, 0), rss)
                    total += rss
                peak_total = max(peak_total, total)
                stop.wait(0.2)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        rc = proc.wait()
        seconds = time.perf_counter() - t0
        stop.set()
        thread.join()
    return {"cmd": " ".join(cmd), "rc": rc, "seconds": round(seconds, 1),
            "peak_rss_process_gb": round(max(peaks.values(), default=0) / 2**30, 3),
            "peak_rss_tree_gb": round(peak_total / 2**30, 3), "n_processes": len(peaks)}


# ---------------------------------------------------------------------------------------------------
# datasets of N spectra
# ---------------------------------------------------------------------------------------------------

def tile_dataset(base_path: Path, out: Path, n: int, seed: int = 0) -> Path:
    """A dataset of ``n`` spectra made from the base dataset's rows, repeated, each copy with fresh noise."""
    import zarr

    from galvae.prepare import open_dataset
    from galvae.prepare.dataset import SPLIT_CODES, split_of
    from galvae.prepare.pipeline import _write_column

    if out.exists():
        try:
            if zarr.open_group(str(out), mode="r").attrs.get("complete"):
                return out
        except Exception:  # noqa: BLE001 - an unfinished store from a killed run: rebuild it
            pass
        shutil.rmtree(out)
    base = open_dataset(base_path, load=False)
    m, n_pix = len(base), base.wave.size
    source = np.arange(n) % m                     # base row of each new row
    copy = np.arange(n) // m                      # which copy it is
    ids = np.asarray(base.props["id"]).astype(str)
    parts = np.array([i.split("-") for i in ids]).astype(int)
    new_ids = np.array([f"{parts[s, 0] + 100 * (c + 1):05d}-{parts[s, 1]:05d}-{parts[s, 2]:04d}"
                        for s, c in zip(source, copy)])
    if len(set(new_ids)) != n:
        raise ValueError("tiled ids collide: the base dataset has too many plates for this scheme")
    root = zarr.open_group(str(out), mode="w")
    root.create_array("wave", data=base.wave)
    rows_per_chunk = 1000
    arrays = {name: root.create_array(name, shape=(n, n_pix), chunks=(rows_per_chunk, n_pix), dtype=dtype)
              for name, dtype in (("flux", "float32"), ("ivar", "float32"), ("filled", "bool"))}
    base_flux, base_ivar, base_filled = (np.asarray(a[...]) for a in (base.flux, base.ivar, base.filled))
    rng = np.random.default_rng(seed)
    for start in range(0, n, rows_per_chunk):
        src = source[start:start + rows_per_chunk]
        ivar = base_ivar[src]
        sigma = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), 0.0).astype(np.float32)
        arrays["flux"][start:start + len(src)] = base_flux[src] + sigma * rng.standard_normal(sigma.shape, np.float32)
        arrays["ivar"][start:start + len(src)] = ivar / 2
        arrays["filled"][start:start + len(src)] = base_filled[src]
    root.create_array("norm", data=np.asarray(base.norm)[source])
    split = split_of(new_ids)
    root.create_array("split", data=split).attrs["codes"] = list(SPLIT_CODES)
    g = root.require_group("props")
    for name in base.props.colnames:
        values = np.asarray(base.props[name])
        _write_column(g, name, new_ids if name == "id" else values[source])
    r = root.require_group("rejects")
    for name in ("path", "id", "reason"):
        _write_column(r, name, np.array([], dtype=str))
    digest = hashlib.sha1(f"{base.attrs.get('inputs_digest')}:tiled:{n}:{seed}".encode()).hexdigest()[:16]
    attrs = dict(base.attrs)
    attrs.update(inputs_digest=digest, source=f"tiled benchmark dataset: {base_path} x {n / m:.1f}",
                 counts={"files": n, "kept": n, "rejected": 0, "rejects_by_reason": {},
                         "split": {c: int((split == k).sum()) for k, c in enumerate(SPLIT_CODES)}},
                 complete=True)
    root.attrs.update(attrs)
    return out


def tile_spec_files(mock_dir: Path, out_dir: Path, n: int) -> list[Path]:
    """``n`` spec-lite files: the mock's files copied under new ids (SPECOBJ PLATE/MJD/FIBERID patched)."""
    from galvae.sources import fitsbin

    templates = sorted((mock_dir / "spectra").glob("spec-*.fits"))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    patched = {}
    for k in range(n):
        t = templates[k % len(templates)]
        copy = k // len(templates)
        if t not in patched:
            data = t.read_bytes()
            with open(t, "rb") as fh:
                hdu = next(h for h in fitsbin.scan_hdus(fh) if h.name == "SPECOBJ")
            dtype = fitsbin.table_dtype(hdu.header)
            row = np.frombuffer(data, dtype=dtype, count=1, offset=hdu.data_offset)
            patched[t] = (data, hdu.data_offset, dtype, {c: int(row[c][0]) for c in ("PLATE", "MJD", "FIBERID")})
        data, offset, dtype, ids = patched[t]
        plate, mjd, fiber = ids["PLATE"] + 100 * (copy + 1), ids["MJD"], ids["FIBERID"]
        path = out_dir / f"spec-{plate:05d}-{mjd:05d}-{fiber:04d}.fits"
        if not path.exists():
            buf = bytearray(data)
            row = np.frombuffer(buf, dtype=dtype, count=1, offset=offset)
            row["PLATE"] = plate
            path.write_bytes(bytes(buf))
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------------
# the stages
# ---------------------------------------------------------------------------------------------------

def galvae(*args) -> list[str]:
    return [shutil.which("galvae") or "galvae", *map(str, args)]


def stage_command(stage: str, data: Path, work: Path) -> list[str]:
    model, select, run = work / "model", work / "select", work / "run"
    return {
        "train": galvae("train", "--data", data, "--latent", 4, "--epochs", 2, "--arch", "compact", "--device", "cpu",
                        "--out", model, "--overwrite", "-q"),
        "train_paper": galvae("train", "--data", data, "--latent", 4, "--epochs", 1, "--arch", "paper",
                              "--device", "cpu", "--out", work / "model_paper", "--overwrite", "-q"),
        "encode": galvae("encode", "--model", model, "--data", data, "--out", work / "latents.fits"),
        "select": galvae("select", "--data", data, "--latent", "2", "--conditions", "none,logmstar", "--seeds", 1,
                         "--epochs", 1, "--workers", 2, "--out", select),
        "explain": galvae("explain", "--model", model, "--data", data, "--out", run),
        "report": galvae("report", "--run", run, "--data", data, "--select", select),
    }[stage]


def epoch_seconds(model_dir: Path) -> list[float]:
    import csv

    path = model_dir / "history.csv"
    if not path.exists():
        return []
    with open(path) as fh:
        return [round(float(r["seconds"]), 2) for r in csv.DictReader(fh)]


def n_train(data: Path) -> int:
    from galvae.prepare import open_dataset

    return int(len(open_dataset(data, load=False).indices("train")))


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def save_results(path: Path, results: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------------
# table and figure
# ---------------------------------------------------------------------------------------------------

def table(results: dict) -> str:
    lines = ["| N spectra | stage | wall s | peak RSS, largest process (GB) | peak RSS, all processes (GB) | notes |",
             "|---|---|---|---|---|---|"]
    for key in sorted(results, key=lambda k: (int(k.split(":")[0]), k)):
        n, stage = key.split(":")
        r = results[key]
        note = ""
        if stage in ("train", "train_paper") and r.get("epoch_seconds"):
            note = "s per epoch: " + ", ".join(f"{s:.1f}" for s in r["epoch_seconds"])
            if r.get("n_train"):
                note += f" ({1000 * r['epoch_seconds'][-1] / r['n_train']:.2f} s per 1000 training spectra)"
        if stage == "build":
            note = "tiled dataset written"
        if stage == "prepare":
            note = f"{r.get('spectra_per_s', 0):.0f} spectra/s, 2 workers"
        if r.get("rc"):
            note += f" FAILED rc={r['rc']}"
        lines.append(f"| {int(n):,} | {stage} | {r['seconds']:.0f} | {r['peak_rss_process_gb']:.2f} | "
                     f"{r['peak_rss_tree_gb']:.2f} | {note} |")
    return "\n".join(lines)


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage in (*STAGES, "train_paper", "prepare"):
        keys = sorted((k for k in results if k.endswith(":" + stage) and not results[k].get("rc")),
                      key=lambda k: int(k.split(":")[0]))
        if not keys:
            continue
        n = [int(k.split(":")[0]) for k in keys]
        a.plot(n, [results[k]["peak_rss_process_gb"] for k in keys], "o-", label=stage)
        b.plot(n, [results[k]["seconds"] for k in keys], "o-", label=stage)
    a.axhline(3.0, color="k", ls=":", lw=1)
    a.text(a.get_xlim()[0], 3.05, " 3 GB target", fontsize=9, va="bottom")
    a.set(xlabel="spectra in the dataset", ylabel="peak RSS of the largest process (GB)",
          title="Memory per process")
    b.set(xlabel="spectra in the dataset", ylabel="wall time (s)", title="Wall time per stage (2 CPU cores)",
          xscale="log", yscale="log")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, default=Path("out/select-demo/dataset.zarr"), help="a prepared dataset")
    ap.add_argument("--mock", type=Path, default=None, help="the base mock's folder (for --prepare-files)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[25000, 100000, 320000])
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--prepare-files", type=int, default=0, help="also time prepare on this many spec files")
    ap.add_argument("--work", type=Path, default=Path("out/scale"))
    ap.add_argument("--figure", type=Path, default=Path("docs/figures/scale.png"))
    ap.add_argument("--keep", action="store_true", help="keep each size's dataset after its stages")
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.json"
    results = load_results(results_path)

    if not args.plot_only:
        for n in args.sizes:
            work = args.work / f"n{n}"
            work.mkdir(parents=True, exist_ok=True)
            data = work / "dataset.zarr"
            stages = [s for s in args.stages.split(",") if f"{n}:{s}" not in results]
            if not stages:
                continue
            if f"{n}:build" not in results or not data.exists():
                t0 = time.perf_counter()
                tile_dataset(args.base, data, n)
                results[f"{n}:build"] = {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_process_gb": 0.0,
                                         "peak_rss_tree_gb": 0.0, "rc": 0,
                                         "disk_gb": round(sum(f.stat().st_size for f in data.rglob("*")
                                                              if f.is_file()) / 2**30, 2)}
                save_results(results_path, results)
            for stage in stages:
                print(f"[N={n}] {stage} …", flush=True)
                r = run_measured(stage_command(stage, data, work), work / f"{stage}.log")
                if stage in ("train", "train_paper"):
                    r["epoch_seconds"] = epoch_seconds(work / ("model" if stage == "train" else "model_paper"))
                    r["n_train"] = n_train(data)
                results[f"{n}:{stage}"] = r
                save_results(results_path, results)
                print(f"[N={n}] {stage}: {r['seconds']} s, peak {r['peak_rss_process_gb']} GB "
                      f"(tree {r['peak_rss_tree_gb']} GB), rc {r['rc']}", flush=True)
            if not args.keep:
                shutil.rmtree(data, ignore_errors=True)
        if args.prepare_files and f"{args.prepare_files}:prepare" not in results:
            if args.mock is None:
                ap.error("--prepare-files needs --mock (the base mock's folder)")
            files_dir = args.work / f"files{args.prepare_files}"
            t0 = time.perf_counter()
            tile_spec_files(args.mock, files_dir, args.prepare_files)
            print(f"{args.prepare_files} spec files ready in {time.perf_counter() - t0:.0f} s", flush=True)
            out = args.work / f"prepared{args.prepare_files}.zarr"
            shutil.rmtree(out, ignore_errors=True)
            r = run_measured(galvae("prepare", "--spectra", files_dir, "--catalog", args.mock / "truth.fits",
                                    "--out", out, "--workers", 2), args.work / "prepare.log")
            r["spectra_per_s"] = round(args.prepare_files / r["seconds"], 1)
            results[f"{args.prepare_files}:prepare"] = r
            save_results(results_path, results)
            print(f"prepare: {r}", flush=True)
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
    print(table(results))
    figure(results, args.figure)
    print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
