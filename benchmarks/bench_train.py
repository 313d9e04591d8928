"""Training throughput: `paper` vs `compact`, and the authors' training loop vs galvae's, same run.

Throughput is spectra per second of forward + backward + optimizer step, on synthetic spectra of
P pixels, after an untimed warm-up epoch. Each loop runs whole epochs of ``--batches`` batches for at
least ``--min-seconds``; measurements are repeated, interleaved so that background load hits every loop
alike, and the best repeat is kept.

"Authors' loop" rebuilds the published training code's shape: a torch DataLoader over a TensorDataset
(per-item indexing and collation), ``torch.manual_seed`` reset and the Adam optimizer rebuilt at the
start of every epoch, the plain MSE + KL loss. "galvae" is :func:`galvae.fit._train_one_epoch`, the
trainer's own step on the split :func:`galvae.fit.split_data` builds (resident on the device), fused AdamW
with the scheduled rate, the ivar-weighted Gaussian loss (bf16 autocast on CUDA).

``--batch-size`` takes several values (one row per architecture × batch size), ``--archs`` and
``--loops`` choose what is timed (``--loops galvae`` skips the authors' loop, e.g. on a GPU, where it
runs in float32 through a CPU DataLoader). An epoch is ``max(batch sizes) × --batches`` spectra for every
batch size. Synthetic spectra are slow to make (~3 ms each), so at most ``--n-unique`` distinct ones are
made and repeated to fill an epoch: the cost of a step does not depend on the values. On CUDA each
timing ends with ``torch.cuda.synchronize``; "step GB" is the GPU memory a loop's steps take on top of
what was allocated before it (activations, optimizer state on its first run), ``*_peak_gpu_gb`` in the
JSON the process's peak while it ran (every loop's resident data and models included).

With ``--quality SECONDS`` it also trains both architectures for the same wall-clock budget on the
same synthetic dataset and reports the held-out (test) log-likelihood and χ²/pixel each reached.

    python benchmarks/bench_train.py [--n-pix 4000] [--batch-size 128] [--min-seconds 6] [--repeat 3]
    python benchmarks/bench_train.py --quality 120 --n-spectra 3000   # + likelihood per training time
    python benchmarks/bench_train.py --device cuda --batch-size 2048 4096 --batches 8 --loops galvae \\
        --min-seconds 3 --repeat 2 --json bench.json                  # on a GPU, bf16 autocast
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from galvae.fit import (
    TrainSettings,
    TrainState,
    _train_one_epoch,
    fit,
    make_optimizer,
    resolve_device,
    split_data,
)
from galvae.models.conditions import ConditionSet
from galvae.prepare.synthetic import synthetic_dataset
from galvae.models.vae import VAE, ModelConfig, count_parameters, vae_loss

log = logging.getLogger("bench_train")


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, *a, **k):
        pass


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def make_model(arch: str, n_pix: int, device, seed: int = 0) -> VAE:
    """A fresh model as :func:`galvae.fit.fit` builds it (compact: through 32 eigenspectra, whose values
    do not change the cost)."""
    torch.manual_seed(seed)
    n_basis = 32 if arch == "compact" else 0
    return VAE(ModelConfig(arch=arch, n_pix=n_pix, latent_dim=4, n_basis=n_basis)).to(device)


def timed(run_epoch, spectra_per_epoch: int, min_seconds: float, device) -> float:
    """Spectra/s: repeat ``run_epoch`` until at least ``min_seconds`` have passed (one untimed first)."""
    run_epoch()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while True:
        run_epoch()
        _sync(device)
        n += spectra_per_epoch
        if time.perf_counter() - t0 >= min_seconds:
            return n / (time.perf_counter() - t0)


def galvae_epoch_fn(model, dataset, batch_size: int, autocast_dtype, device):
    """The trainer's own epoch function over every row of ``dataset`` (a whole number of batches): the
    split built by :func:`galvae.fit.split_data`, as :func:`galvae.fit.fit` builds it."""
    s = TrainSettings(batch_size=batch_size, epochs=1, lr=1e-4)
    opt = make_optimizer(model, s)
    data = split_data(dataset, np.arange(len(dataset.flux)), ConditionSet(), device)
    n_batches = len(dataset.flux) // batch_size
    gen = torch.Generator().manual_seed(0)

    def run():
        _train_one_epoch(model, opt, data, s, TrainState(), n_batches, gen, autocast_dtype, _NoBar())
    return run


def authors_epoch(model, flux_cpu, batch_size: int, device, lr=1e-4, seed=42) -> None:
    """One epoch the way the authors' code runs it (DataLoader, seed reset, optimizer rebuilt, MSE)."""
    torch.manual_seed(seed)                                     # reset every epoch
    loader = DataLoader(TensorDataset(flux_cpu), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)     # rebuilt every epoch: moments lost
    model.train()
    for (xb,) in loader:
        xb = xb.to(device)
        recon, mu, logvar = model(xb)
        loss = vae_loss(xb, None, recon, mu, logvar, kind="mse").mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def epoch_dataset(n: int, n_pix: int, n_unique: int):
    """``n`` synthetic spectra as a dataset-like object (flux, ivar, props): ``min(n, n_unique)`` distinct
    ones, repeated."""
    base = synthetic_dataset(min(n, n_unique), n_pix, seed=0)
    reps = -(-n // len(base.flux))
    flux = np.ascontiguousarray(np.tile(base.flux, (reps, 1))[:n])
    ivar = np.ascontiguousarray(np.tile(base.ivar, (reps, 1))[:n])
    return SimpleNamespace(flux=flux, ivar=ivar, props=base.props)


def _gpu_gb(device, peak: bool) -> float | None:
    if device.type != "cuda":
        return None
    return (torch.cuda.max_memory_allocated(device) if peak else torch.cuda.memory_allocated(device)) / 2**30


def throughput_table(args, device) -> list[dict]:
    batch_sizes, archs, kinds = args.batch_size, args.archs, args.loops
    n = max(batch_sizes) * args.batches
    t0 = time.perf_counter()
    data = epoch_dataset(n, args.n_pix, args.n_unique)
    log.info("made %d synthetic spectra of %d pixels (%d distinct) in %.1f s", n, args.n_pix,
             min(n, args.n_unique), time.perf_counter() - t0)
    flux_cpu = torch.from_numpy(data.flux)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    models = {a: make_model(a, args.n_pix, device) for a in archs}
    loops = {}
    for a in archs:
        for b in batch_sizes:
            if "galvae" in kinds:
                loops[(a, b, "galvae")] = galvae_epoch_fn(models[a], data, b, autocast, device)
            if "authors" in kinds:
                loops[(a, b, "authors")] = lambda m=models[a], b=b: authors_epoch(m, flux_cpu, b, device)
    best: dict = {}
    peak: dict = {}
    extra: dict = {}
    for rep in range(args.repeat):  # interleaved, so that load from other users hits every loop alike
        for key, run in loops.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            before = _gpu_gb(device, peak=False)
            best[key] = max(best.get(key, 0.0), timed(run, n, args.min_seconds, device))
            peak[key] = _gpu_gb(device, peak=True)  # every loop's data and models included
            extra[key] = None if before is None else peak[key] - before  # this loop's steps on top
        log.info("repeat %d: %s", rep, ", ".join(f"{a}/{b}/{k} {v:.0f}" for (a, b, k), v in best.items()))
    rows = []
    for arch in archs:
        for b in batch_sizes:
            row = {"arch": arch, "n_parameters": count_parameters(models[arch]), "batch_size": b,
                   "epoch_spectra": n, "autocast": "bf16" if autocast is not None else "none"}
            for k in kinds:
                row[f"{k}_spectra_per_s"] = best[(arch, b, k)]
                row[f"{k}_peak_gpu_gb"] = peak[(arch, b, k)]
                row[f"{k}_step_gpu_gb"] = extra[(arch, b, k)]
            if len(kinds) == 2:
                row["ratio_galvae_over_authors"] = row["galvae_spectra_per_s"] / row["authors_spectra_per_s"]
            rows.append(row)
    return rows


def print_table(rows: list[dict], kinds: list[str]) -> None:
    head = f"{'arch':8s} {'batch':>6s} {'params':>11s}"
    for k in kinds:
        head += f" {k + ' sp/s':>13s} {'step GB':>8s}"
    if len(kinds) == 2:
        head += f" {'galvae/authors':>15s}"
    print(head)
    for r in rows:
        line = f"{r['arch']:8s} {r['batch_size']:6d} {r['n_parameters']:11,d}"
        for k in kinds:
            gb = r[f"{k}_step_gpu_gb"]
            line += f" {r[f'{k}_spectra_per_s']:13.1f} {'-' if gb is None else f'{gb:.2f}':>8s}"
        if len(kinds) == 2:
            line += f" {r['ratio_galvae_over_authors']:15.2f}"
        print(line)


def device_info(device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), capability=f"{p.major}.{p.minor}")
    return info


def quality_per_time(args, device) -> list[dict]:
    """Train paper and compact for the same wall-clock budget; held-out ln L and χ²/pixel reached."""
    data = synthetic_dataset(args.n_spectra, args.n_pix, seed=1)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        for arch in ("paper", "compact"):
            out = fit(data, tmp / arch, latent_dim=4, arch=arch, epochs=1000, batch_size=args.batch_size,
                      lr=args.lr, patience=1000, device=str(device), progress=False, time_limit=args.quality)
            m = json.loads((out / "metrics.json").read_text())
            rows.append({"arch": arch, "train_seconds": m["train_seconds"], "epochs": m["epochs_run"],
                         "test_ln_likelihood": m["ln_likelihood"]["mean"],
                         "test_ln_likelihood_stderr": m["ln_likelihood"]["stderr"],
                         "test_chi2_per_pixel": m["chi2_per_pixel"]["mean"], "n_test": m["n_test"]})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _names(text: str, allowed: tuple) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in allowed]
    if bad or not names:
        raise SystemExit(f"choose among {', '.join(allowed)}, got {text!r}")
    return names


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-pix", type=int, default=4000)
    p.add_argument("--batch-size", type=int, nargs="+", default=[128],
                   help="one or more batch sizes (e.g. --batch-size 2048 4096)")
    p.add_argument("--batches", type=int, default=4,
                   help="batches per epoch at the largest batch size (epoch = max batch × this)")
    p.add_argument("--archs", default="paper,compact", help="comma-separated: paper,compact")
    p.add_argument("--loops", default="galvae,authors", help="comma-separated: galvae,authors")
    p.add_argument("--n-unique", type=int, default=2048, help="distinct synthetic spectra, repeated to fill an epoch")
    p.add_argument("--min-seconds", type=float, default=6.0, help="time each loop at least this long")
    p.add_argument("--repeat", type=int, default=3, help="interleaved repeats; the best is kept")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (bf16 autocast on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quality", type=float, default=0.0, help="seconds of training per architecture (0: skip)")
    p.add_argument("--n-spectra", type=int, default=3000, help="dataset size for --quality")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate for --quality")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    args.archs = _names(args.archs, ("paper", "compact"))
    args.loops = _names(args.loops, ("galvae", "authors"))
    if any(b < 1 for b in args.batch_size) or args.batches < 1:
        raise SystemExit("batch sizes and --batches must be ≥ 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    info = device_info(device)
    gpu = f", {info['gpu']} (CUDA {info['cuda']})" if device.type == "cuda" else ""
    print(f"# bench_train: torch {torch.__version__}, {device}{gpu}, {torch.get_num_threads()} threads, "
          f"{info['processor']}, load average {load_average()}", flush=True)
    rows = throughput_table(args, device)
    print(f"\n## training throughput, P = {args.n_pix}, epochs of {rows[0]['epoch_spectra']} spectra, "
          f"{'bf16 autocast' if device.type == 'cuda' else 'float32'}, best of {args.repeat} repeats of "
          f"≥ {args.min_seconds:g} s after a warm-up epoch")
    print_table(rows, args.loops)
    result = {"throughput": rows, **info, "load_average_start": load_average(),
              "settings": {k: getattr(args, k) for k in ("n_pix", "batch_size", "batches", "archs", "loops",
                                                         "n_unique", "min_seconds", "repeat")}}
    if set(args.archs) == {"paper", "compact"}:
        speedup = {}
        for b in args.batch_size:
            by = {r["arch"]: r[f"{args.loops[0]}_spectra_per_s"] for r in rows if r["batch_size"] == b}
            speedup[str(b)] = by["compact"] / by["paper"]
        print(f"compact / paper ({args.loops[0]} loop): "
              + ", ".join(f"{v:.1f}× at batch {b}" for b, v in speedup.items()))
        result["compact_over_paper"] = speedup
    if args.quality > 0:
        args.batch_size = args.batch_size[0]
        q = quality_per_time(args, device)
        print(f"\n## held-out fit after {args.quality:.0f} s of training each, {args.n_spectra} synthetic spectra, d = 4")
        print(f"{'arch':8s} {'seconds':>8s} {'epochs':>7s} {'test ln L':>14s} {'test chi2/pix':>14s}")
        for r in q:
            print(f"{r['arch']:8s} {r['train_seconds']:8.1f} {r['epochs']:7d} "
                  f"{r['test_ln_likelihood']:9.1f} ± {r['test_ln_likelihood_stderr']:4.1f} {r['test_chi2_per_pixel']:14.3f}")
        result["quality"] = q
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\nload average at the end {load_average()}; {time.perf_counter() - t0:.0f} s in all")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
