"""What the per-spectrum latent refinement buys and costs: ln L and BIC against the Adam budget.

BIC is defined with the maximised likelihood; galvae's grid takes ln L at each test spectrum's
maximum-likelihood latent, found by ``galvae.select.evaluate.refine_latents`` (Adam on z under the
trained decoder, from the encoder's mean). For a trained model and its dataset's test split this prints,
for each budget: the mean gain in ln L over the encoder's mean (nats per spectrum, = half the BIC gain),
the χ²/pixel, and the seconds per 1000 spectra (one process, the machine's threads; on ``--device cuda``
timed between ``torch.cuda.synchronize`` calls).

    python benchmarks/bench_refine.py --model out/paper-converge/compact_d4 --data out/select-demo/dataset.zarr \
        --steps 0 10 20 40 80 300 --out out/bench-refine.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from galvae import likelihood as lk
from galvae.models import load_model
from galvae.models.conditions import rows_with_conditions
from galvae.prepare import open_dataset
from galvae.select.evaluate import REFINE_LR, refine_latents
from galvae.splits import Split


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--steps", type=int, nargs="+", default=[0, 10, 20, 40, 80, 300])
    ap.add_argument("--lr", type=float, default=REFINE_LR)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the model and batches are moved there)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports torch._dynamo: not timed

    model = load_model(args.model, device=args.device)
    sync = torch.cuda.synchronize if str(args.device).startswith("cuda") else (lambda: None)
    module = model.module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    data = open_dataset(args.data, load=False)
    test = data.indices("test")
    rows = test[rows_with_conditions(data.props, model.condition_names)[test]]
    cond = model.conditions.transform(model.conditions.raw_values(data.props, rows)) if model.condition_names else None
    batches = list(Split(data, rows, cond, model.device, resident_bytes=0).eval_batches(args.batch_size))
    n = sum(len(b.flux) for b in batches)
    results = []
    base = None
    for steps in args.steps:
        lls, chi2s, seconds = [], [], 0.0
        for b in batches:
            with torch.no_grad():
                mu, _ = module.encode(b.flux, b.cond)
            sync()
            t0 = time.perf_counter()
            z, ll = refine_latents(module, b.flux, b.ivar, mu, b.cond, steps=steps, lr=args.lr, constant=b.ln_norm)
            sync()
            seconds += time.perf_counter() - t0
            with torch.no_grad():
                chi2s.append(lk.chi2_per_pixel(b.flux, module.decode(z, b.cond), b.ivar).double().cpu().numpy())
            lls.append(ll.double().cpu().numpy())
        ll, chi2 = np.concatenate(lls), np.concatenate(chi2s)
        base = ll if base is None else base
        gain = ll - base
        row = {"steps": steps, "ln_l_gain_mean": float(gain.mean()),
               "ln_l_gain_stderr": float(gain.std(ddof=1) / np.sqrt(n)), "bic_gain_mean": float(2 * gain.mean()),
               "chi2_per_pixel": float(chi2.mean()), "seconds_per_1000": 1000 * seconds / n, "n_test": n}
        results.append(row)
        print(f"steps {steps:4d}: ln L gain {row['ln_l_gain_mean']:8.2f} ± {row['ln_l_gain_stderr']:.2f} nats "
              f"(BIC −{row['bic_gain_mean']:.1f}), χ²/pixel {row['chi2_per_pixel']:.4f}, "
              f"{row['seconds_per_1000']:.2f} s per 1000 spectra", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": str(args.model), "data": str(args.data), "lr": args.lr,
                                        "threads": torch.get_num_threads(), "device": str(args.device),
                                        "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
