"""Training throughput: `paper` vs `compact`, and the authors' training loop vs galvae's, same run.

Throughput is spectra per second of forward + backward + optimizer step, on synthetic spectra of
P pixels, after an untimed warm-up epoch. Each loop runs whole epochs of ``--batches`` batches for at
least ``--min-seconds``; measurements are repeated, interleaved so that background load hits every loop
alike, and the best repeat is kept.

"Authors' loop" rebuilds the published training code's shape: a torch DataLoader over a TensorDataset
(per-item indexing and collation), ``torch.manual_seed`` reset and the Adam optimizer rebuilt at the
start of every epoch, the plain MSE + KL loss. "galvae" is :func:`galvae.fit._train_one_epoch`, the
trainer's own step: the split as one tensor, batches by index from a seeded permutation, fused AdamW
with the scheduled rate, the ivar-weighted Gaussian loss (bf16 autocast on CUDA).

With ``--quality SECONDS`` it also trains both architectures for the same wall-clock budget on the
same synthetic dataset and reports the held-out (test) log-likelihood and χ²/pixel each reached.

    python benchmarks/bench_train.py [--n-pix 4000] [--batch-size 128] [--min-seconds 6] [--repeat 3]
    python benchmarks/bench_train.py --quality 120 --n-spectra 3000   # + likelihood per training time
    python benchmarks/bench_train.py --device cuda --batch-size 4096 --batches 16   # on a GPU
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

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from galvae.fit import (
    SplitData,
    TrainSettings,
    TrainState,
    _train_one_epoch,
    fit,
    make_optimizer,
    resolve_device,
)
from galvae.likelihood import ln_likelihood_constant
from galvae.models.synthetic import synthetic_dataset
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


def galvae_epoch_fn(model, flux, ivar, batch_size: int, autocast_dtype):
    """The trainer's own epoch function over ``flux`` (a whole number of batches)."""
    s = TrainSettings(batch_size=batch_size, epochs=1, lr=1e-4)
    opt = make_optimizer(model, s)
    data = SplitData(np.arange(len(flux)), flux, ivar, ln_likelihood_constant(ivar), None)
    n_batches = len(flux) // batch_size
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


def throughput_table(args, device) -> list[dict]:
    n = args.batch_size * args.batches
    log.info("making %d synthetic spectra of %d pixels", n, args.n_pix)
    data = synthetic_dataset(n, args.n_pix, seed=0)
    flux_cpu = torch.from_numpy(data.flux)
    flux, ivar = flux_cpu.to(device), torch.from_numpy(data.ivar).to(device)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    archs = ["paper", "compact"]
    models = {a: make_model(a, args.n_pix, device) for a in archs}
    loops = {}
    for a in archs:
        loops[(a, "galvae")] = galvae_epoch_fn(models[a], flux, ivar, args.batch_size, autocast)
        loops[(a, "authors")] = lambda m=models[a]: authors_epoch(m, flux_cpu, args.batch_size, device)
    best: dict = {}
    for rep in range(args.repeat):  # interleaved, so that load from other users hits every loop alike
        for key, run in loops.items():
            best[key] = max(best.get(key, 0.0), timed(run, n, args.min_seconds, device))
        log.info("repeat %d: %s", rep, ", ".join(f"{a}/{b} {v:.0f}" for (a, b), v in best.items()))
    rows = []
    for arch in archs:
        rows.append({"arch": arch, "n_parameters": count_parameters(models[arch]), "batch_size": args.batch_size,
                     "galvae_spectra_per_s": best[(arch, "galvae")],
                     "authors_spectra_per_s": best[(arch, "authors")],
                     "ratio_galvae_over_authors": best[(arch, "galvae")] / best[(arch, "authors")]})
    return rows


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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-pix", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=4, help="batches per epoch of the timed loops")
    p.add_argument("--min-seconds", type=float, default=6.0, help="time each loop at least this long")
    p.add_argument("--repeat", type=int, default=3, help="interleaved repeats; the best is kept")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quality", type=float, default=0.0, help="seconds of training per architecture (0: skip)")
    p.add_argument("--n-spectra", type=int, default=3000, help="dataset size for --quality")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate for --quality")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    print(f"# bench_train: torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, load average {load_average()}")
    rows = throughput_table(args, device)
    print(f"\n## training throughput, P = {args.n_pix}, batch {args.batch_size}, "
          f"{'bf16 autocast' if device.type == 'cuda' else 'float32'}, best of {args.repeat} repeats of ≥ {args.min_seconds:g} s")
    print(f"{'arch':8s} {'params':>11s} {'galvae sp/s':>12s} {'authors sp/s':>13s} {'galvae/authors':>15s}")
    for r in rows:
        print(f"{r['arch']:8s} {r['n_parameters']:11,d} {r['galvae_spectra_per_s']:12.1f} "
              f"{r['authors_spectra_per_s']:13.1f} {r['ratio_galvae_over_authors']:15.2f}")
    speedup = rows[1]["galvae_spectra_per_s"] / rows[0]["galvae_spectra_per_s"]
    print(f"compact / paper (galvae loop): {speedup:.1f}×")
    result = {"throughput": rows, "compact_over_paper": speedup, "device": str(device),
              "threads": torch.get_num_threads(), "load_average_start": load_average()}
    if args.quality > 0:
        q = quality_per_time(args, device)
        print(f"\n## held-out fit after {args.quality:.0f} s of training each, {args.n_spectra} synthetic spectra, d = 4")
        print(f"{'arch':8s} {'seconds':>8s} {'epochs':>7s} {'test ln L':>14s} {'test chi2/pix':>14s}")
        for r in q:
            print(f"{r['arch']:8s} {r['train_seconds']:8.1f} {r['epochs']:7d} "
                  f"{r['test_ln_likelihood']:9.1f} ± {r['test_ln_likelihood_stderr']:4.1f} {r['test_chi2_per_pixel']:14.3f}")
        result["quality"] = q
    print(f"\nload average at the end {load_average()}; {time.perf_counter() - t0:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
