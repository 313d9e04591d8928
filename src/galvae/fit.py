"""Train one model on one dataset, evaluate it on ``test``, and encode datasets with it.

:func:`fit` trains a VAE/CVAE (docs/design.md §2 "Model"): AdamW with a warm-up + cosine learning rate,
early stopping on ``val``, the best weights kept, an atomic checkpoint every epoch that ``resume=True``
continues from exactly, and a NaN guard. Each split is a :class:`galvae.splits.Split`: one tensor on the
device when it fits (``resident_gb``), else streamed from the Zarr chunks with reads overlapped with
compute, with the same batches either way; on CUDA the forward pass runs under bf16 autocast.

:func:`fit_pca` writes a PCA baseline to a model directory of the same layout, and
:func:`encode_dataset` writes a latent catalogue for any model directory.

Files in a model directory while training: ``checkpoint.pt`` (full training state with the best weights so
far, written atomically each epoch: one file, so a crash cannot leave the two out of step); it is removed
when training ends and the best weights are written as ``model.safetensors`` / ``weights.pt``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._atomic import atomic_write
from ._jsonio import damaged, to_jsonable, write_json as _write_json
from . import __version__
from . import likelihood as lk
from .models import PCA, load_model, save_weights
from .models.conditions import ConditionSet, check_condition_names, rows_with_conditions
from .models.vae import LOSSES, VAE, ModelConfig, count_parameters, score_batches, vae_loss
from .prepare.dataset import split_rows, take_rows
from .splits import Split, n_batches as count_batches
from . import basis_split

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LEGACY_BEST = "best.pt"  # the best weights' own file before they moved into checkpoint.pt
FINISHED = ("done", "early_stopped", "time_limit", "diverged")
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_chi2_per_pixel", "lr", "seconds")
DEFINITIONS = {
    "ln_likelihood": "sum over good pixels (ivar>0) of -0.5*[ivar*(x-xhat)^2 - ln ivar + ln 2pi], xhat at the "
                     "posterior mean; nats per spectrum",
    "chi2_per_pixel": "sum ivar*(x-xhat)^2 over good pixels / number of good pixels, at the posterior mean",
    "elbo": "E_q[ln L] - KL(q||N(0,I)) with the Gaussian ivar likelihood, beta=1, Monte Carlo over samples",
    "bic": "k ln P_i - 2 ln L_i per spectrum, k = latent_dim + n_conditions, P_i good pixels",
    "stderr": "standard deviation over test spectra (ddof=1) / sqrt(n_test)",
}


# ---------------------------------------------------------------------------------------------------
# settings and state
# ---------------------------------------------------------------------------------------------------

@dataclass
class TrainSettings:
    """Training choices, stored in config.json; a resumed run must use the same ones."""

    loss: str = "gaussian"          # 'gaussian' (ivar likelihood), 'mse' (the paper's), 'authors' (their code's)
    beta: float = 1.0               # weight of the KL term
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3                # peak learning rate
    weight_decay: float = 1e-4      # AdamW
    seed: int = 0
    patience: int = 10              # epochs without a better val loss before a plateau is declared
    plateau_drops: int = 2          # on a plateau: reload the best weights, lr × plateau_factor; then stop
    plateau_factor: float = 0.2
    warmup_fraction: float = 0.05   # of all steps, linear warm-up before the cosine decay
    final_lr_fraction: float = 0.01  # the cosine ends at lr × this
    max_nan_retries: int = 2        # NaN guard: reload best at a 10× lower rate this many times
    window_blocks: int = 8          # store chunks shuffled together per window (galvae.splits)


@dataclass
class TrainState:
    """What changes during training (saved in checkpoint.pt with the model, optimizer and RNG states)."""

    epoch: int = 0                  # epochs completed
    step: int = 0                   # optimizer steps taken
    lr_scale: float = 1.0           # lowered by the NaN guard
    best_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    nan_retries: int = 0
    plateau_drops: int = 0
    history: list = field(default_factory=list)


class BestWeights:
    """The best weights so far, kept on the device and saved inside every checkpoint."""

    def __init__(self, model):
        self.keep(model)

    def keep(self, model) -> None:
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore(self, model) -> None:
        """Back to the best weights: after a plateau, a non-finite loss, or at the end."""
        model.load_state_dict(self.state)


def learning_rate(step: int, total_steps: int, s: TrainSettings) -> float:
    """Linear warm-up to ``s.lr``, then cosine decay to ``s.lr × final_lr_fraction``."""
    warm = max(1, int(s.warmup_fraction * total_steps))
    if step < warm:
        return s.lr * (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, total_steps - warm))
    low = s.lr * s.final_lr_fraction
    return low + 0.5 * (s.lr - low) * (1.0 + math.cos(math.pi * t))


def make_optimizer(model, s: TrainSettings) -> torch.optim.AdamW:
    """AdamW, fused into one kernel where torch has one (CPU and CUDA): ~7× faster steps on CPU for `paper`."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' → CUDA when available, else CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this PyTorch sees no CUDA GPU: use 'cpu' or 'auto'")
    return torch.device(device)


# ---------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------

def split_data(dataset, rows: np.ndarray, cset: ConditionSet, device: torch.device,
               resident_gb: float | None = None) -> Split:
    """The rows' spectra with their transformed conditions, resident on the device or streamed."""
    cond = cset.transform(cset.raw_values(dataset.props, rows)) if len(cset) else None
    budget = None if resident_gb is None else int(float(resident_gb) * 2**30)
    return Split(dataset, rows, cond, device, resident_bytes=budget)


def _statistics_splits(dataset, train_rows, val_rows, cset: ConditionSet, model: VAE, basis, dev,
                       resident_gb):
    """Train and val as :class:`galvae.basis_split.BasisSplit`: the data's scaling and the basis are set
    in ``model``, and the pixels are read once per process for a grid's cells (its cached statistics)."""
    def compute():
        train = split_data(dataset, train_rows, ConditionSet(()), dev, resident_gb)
        mean, std = train.mean_std()
        model.set_data_scaling(mean, std)
        model.set_basis(*(torch.from_numpy(a).to(dev) for a in basis))
        val = split_data(dataset, val_rows, ConditionSet(()), dev, resident_gb)
        return (mean, std, basis_split.compute_statistics(train, model), train.blocks,
                basis_split.compute_statistics(val, model), val.blocks)

    key = basis_split.cache_key(dataset, model.cfg.n_basis, train_rows, val_rows)
    if key is not None:
        key = (*key, str(dev))
    mean, std, train_stats, train_blocks, val_stats, val_blocks = basis_split.cached_statistics(key, compute)
    model.set_data_scaling(mean, std)
    model.set_basis(*(torch.from_numpy(a).to(dev) for a in basis))

    def cond(rows):
        return (torch.as_tensor(cset.transform(cset.raw_values(dataset.props, rows)), dtype=torch.float32,
                                device=dev) if len(cset) else None)

    return (basis_split.BasisSplit(train_stats, train_blocks, cond(train_rows)),
            basis_split.BasisSplit(val_stats, val_blocks, cond(val_rows)))


def _batches(split: Split, batch_size: int):
    """A split's scoring batches as (flux, ivar, cond, ln L constant) for :func:`score_batches`."""
    return ((b.flux, b.ivar, b.cond, b.ln_norm) for b in split.eval_batches(batch_size))


BASIS_SAMPLE = 10000   # training spectra used for the compact model's eigenspectra
_basis_cache: dict = {}


def training_basis(dataset, rows: np.ndarray, k: int):
    """Eigenspectra for a compact model: the ivar-weighted PCA of the training rows (a seeded sample of at
    most BASIS_SAMPLE, the same for every training seed: it describes the data). Returns (mean (P,), components (K, P), coefficient std (K,)), float32.

    Cached per process by (dataset digest, K, rows): every cell of a selection grid trains on the same
    split, so a Dask worker fits it once. BLAS runs on one thread here: a threaded BLAS sums in an order
    that depends on its thread count, and the same seed must give the same model in every process."""
    from threadpoolctl import threadpool_limits

    from .models.pca import PCA

    digest = dataset.attrs.get("inputs_digest")
    key = (digest, k, hashlib.sha1(np.ascontiguousarray(rows).tobytes()).hexdigest())
    if digest is None or key not in _basis_cache:
        sample = rows
        if len(rows) > BASIS_SAMPLE:
            sample = np.sort(np.random.default_rng(0).choice(rows, BASIS_SAMPLE, replace=False))
        flux = np.nan_to_num(take_rows(dataset.flux, sample).astype(np.float64))
        with threadpool_limits(limits=1, user_api="blas"):
            pca = PCA(k, weighted=True, n_iter=10).fit(flux, take_rows(dataset.ivar, sample))  # fit cleans ivar
            coeff = pca.transform(flux)  # the projections the encoder's frozen layer computes
        basis = tuple(a.astype(np.float32) for a in (pca.mean_, pca.components_, coeff.std(0)))
        if digest is None:
            return basis
        if len(_basis_cache) >= 8:  # a few splits (one per condition set), bounded on long-lived workers
            _basis_cache.pop(next(iter(_basis_cache)))
        _basis_cache[key] = basis
    return _basis_cache[key]


# ---------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------

def _atomic_torch_save(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))






def _write_history(path: Path, history: list[dict]) -> None:
    def write(tmp):
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=HISTORY_COLUMNS)
            w.writeheader()
            w.writerows(history)

    atomic_write(path, write)


def _rng_states() -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _save_checkpoint(out: Path, model, opt, state: TrainState, batch_gen: torch.Generator, best: BestWeights) -> None:
    _atomic_torch_save({"model": model.state_dict(), "best_model": best.state, "optimizer": opt.state_dict(),
                        "state": asdict(state), "batch_rng": batch_gen.get_state(), "rng": _rng_states()},
                       out / CHECKPOINT)


def _load_checkpoint(out: Path, model, opt, batch_gen: torch.Generator, device, best: BestWeights) -> TrainState:
    try:
        ck = torch.load(out / CHECKPOINT, map_location=device, weights_only=True)
    except Exception as exc:  # truncated or overwritten: resuming from it is impossible, and guessing is wrong
        raise damaged(out / CHECKPOINT, exc, "Rerun the same command (galvae train --resume, or galvae select "
                      "for a grid's cell): the model is trained again from the start", aside=True) from exc
    if "best_model" in ck:
        best.state = ck["best_model"]
    elif (out / LEGACY_BEST).exists():
        best.state = torch.load(out / LEGACY_BEST, map_location=device, weights_only=True)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    batch_gen.set_state(ck["batch_rng"].cpu())
    _set_rng_states({"torch": ck["rng"]["torch"].cpu(), "cuda": [s.cpu() for s in ck["rng"]["cuda"]]})
    return TrainState(**ck["state"])


def _settings_match(old: dict, new: dict) -> list[str]:
    """Names of config entries that differ between a stored run and the requested one."""
    keys = ("model", "conditions_requested", "training", "dataset_digest")
    if isinstance(old.get("model"), dict):  # model fields added since the run started take their defaults
        old = dict(old, model=ModelConfig.from_dict(old["model"]).to_dict())
    return [k for k in keys if json.loads(json.dumps(old.get(k), default=to_jsonable))
            != json.loads(json.dumps(new.get(k), default=to_jsonable))]


# ---------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------

def _train_one_epoch(model, opt, data: Split, s: TrainSettings, state: TrainState, total_steps: int,
                     batch_gen: torch.Generator, autocast_dtype, bar) -> float:
    """One pass over the training split in a seeded random order; returns the mean loss per spectrum."""
    model.train()
    windows = data.epoch_order(batch_gen, s.window_blocks)
    total = torch.zeros((), device=data.device)
    for i, batch in enumerate(data.train_batches(windows, count_batches(len(data), s.batch_size))):
        for group in opt.param_groups:
            group["lr"] = learning_rate(state.step, total_steps, s) * state.lr_scale
        loss = _batch_loss(model, batch, s, autocast_dtype)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state.step += 1
        total += loss.detach() * len(batch.positions)  # stays on the device: no sync per batch
        bar.update(1)
        if i % 25 == 0:
            bar.set_postfix(epoch=state.epoch + 1, loss=f"{loss.item():.4g}", refresh=False)
    return float(total) / max(len(data), 1)


def _batch_loss(model, batch, s: TrainSettings, autocast_dtype) -> torch.Tensor:
    """Mean training loss of one batch: from its pixels, or from its basis statistics."""
    if isinstance(batch, basis_split.StatBatch):
        return basis_split.batch_loss(model, batch, s.beta)[0].mean()
    x, w = batch.flux, batch.ivar
    with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        model_flux, mu, logvar = model(x, batch.cond)
    return vae_loss(x, w, model_flux.float(), mu.float(), logvar.float(), s.loss, s.beta, batch.ln_norm).mean()


def _validate(model, data: Split, s: TrainSettings, autocast_dtype) -> tuple[float, float]:
    """Mean validation loss (same objective as training, one fixed-seed sample) and mean χ²/pixel."""
    if isinstance(data, basis_split.BasisSplit):
        return basis_split.validate(model, data, s.beta, s.seed + 1, max(s.batch_size, 1024))
    r = score_batches(model, _batches(data, max(s.batch_size, 1024)), s.loss, s.beta, n_samples=1,
                      seed=s.seed + 1, autocast_dtype=autocast_dtype, n=len(data))
    chi2 = r["chi2_per_pixel"][np.isfinite(r["chi2_per_pixel"])]
    return float(np.mean(r["loss"])), float(chi2.mean()) if chi2.size else math.nan


def fit(dataset, out_dir, latent_dim: int, conditions=(), arch: str = "compact", loss: str = "gaussian",
        beta: float = 1.0, epochs: int = 100, batch_size: int | None = None, lr: float = 1e-3,
        weight_decay: float = 1e-4, seed: int = 0, patience: int = 10, device: str = "auto",
        resume: bool = False, progress: bool = True, dropout: float = 0.0, hidden=(512, 128), n_basis: int = 32,
        overwrite: bool = False, time_limit: float | None = None, resident_gb: float | None = None,
        window_blocks: int = 8, callback: Callable[[int, dict], None] | None = None,
        init_from=None, score_test: bool = True, train_offset: bool = True) -> Path:
    """Train a VAE (or a CVAE, with ``conditions``) on ``dataset``; returns the model directory.

    Parameters
    ----------
    dataset : a :class:`galvae.prepare.dataset.Dataset` (train/val/test splits are used as such).
    out_dir : model directory to write (config.json, weights, history.csv, metrics.json).
    latent_dim : d.
    conditions : subset of {logmstar, logsfr, logssfr, metallicity}; spectra lacking any are excluded.
    arch : 'compact' (fast MLP) or 'paper' (the authors' architecture).
    n_basis : compact only: K eigenspectra of the training split's weighted PCA that the MLPs read and
        write through (capped at the training spectra − 1); 0 for an MLP on the pixels.
    loss : 'gaussian' (ivar likelihood, default), 'mse' (the paper's fixed-σ loss) or 'authors' (the
        authors' code: 1e3 · MSE + 0.1 · KL averaged over latent dimensions; ``beta`` must be 1).
    batch_size : default 128 on CPU, 2048 on CUDA.
    resume : continue from ``out_dir``'s checkpoint; a finished model is returned as is.
    overwrite : allow starting afresh in a directory that already holds a model or checkpoint.
    time_limit : stop after the epoch during which this many seconds of training were reached (status
        'time_limit'); for CPU demos and equal-time comparisons.
    resident_gb : a split whose flux + ivar take more than this (GiB) is streamed from the store instead
        of held on the device (None: 0.5 on CPU, 40 % of a GPU's free memory; 0: always stream). The
        result does not depend on it (galvae.splits).
    window_blocks : store blocks (1000 rows each) whose rows are shuffled together: the shuffle buffer,
        and, when streaming, the rows read at a time. Part of the training settings: it sets the order.
    callback : called as ``callback(epoch, history_row)`` after each epoch's checkpoint is written.
    init_from : a finished model directory of the same architecture, conditions and dataset with a
        smaller d: its weights start this model (a warm start across d, :func:`warm_start`); the
        latent dimensions it lacks start unused. Recorded in config.json.
    score_test : score the test split into metrics.json (False when the caller scores it itself, as
        ``galvae select`` does, so that the test split is read once per cell).
    train_offset : compact with eigenspectra only: False keeps the decoder's per-pixel offset at the
        training mean. The model is then linear in the basis after its MLP, and training runs on each
        spectrum's basis statistics (:mod:`galvae.basis_split`) instead of its pixels: one pass over
        the pixels, then epochs that read nothing and cost O(K²) per spectrum (loss 'gaussian').
    """
    out = Path(out_dir)
    dev = resolve_device(device)
    conditions = tuple(conditions)
    check_condition_names(conditions)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if loss == "authors" and beta != 1.0:
        raise ValueError(f"loss='authors' fixes its own KL weight (0.1, averaged over dimensions); beta must be 1, got {beta}")
    if batch_size is None:
        batch_size = 2048 if dev.type == "cuda" else 128
    s = TrainSettings(loss=loss, beta=float(beta), epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                      weight_decay=float(weight_decay), seed=int(seed), patience=int(patience),
                      window_blocks=int(window_blocks))
    if _prepare_directory(out, resume, overwrite):
        _check_finished_run(out, dataset, arch, latent_dim, conditions, s, dropout, hidden, n_basis, train_offset)
        return out

    torch.manual_seed(s.seed)
    started = time.perf_counter()
    keep = rows_with_conditions(dataset.props, conditions)
    excluded = {name: int((~keep[dataset.indices(name)]).sum()) for name in ("train", "val", "test")}
    train_rows = split_rows(dataset, "train", keep)
    if len(train_rows) < 2 or len(split_rows(dataset, "val", keep)) < 1:
        raise ValueError(f"too few spectra to train: {len(train_rows)} train, "
                         f"{len(split_rows(dataset, 'val', keep))} val (excluded for missing conditions: {excluded})")
    cset = ConditionSet.fit(dataset.props, conditions, train_rows)
    n_pix = int(dataset.flux.shape[1])
    n_basis = min(int(n_basis), len(train_rows) - 1, n_pix) if arch == "compact" else 0
    basis = training_basis(dataset, train_rows, n_basis) if n_basis else None  # before the splits: its peak
    val_rows = split_rows(dataset, "val", keep)                                # memory is not added to theirs
    cfg = ModelConfig(arch=arch, n_pix=n_pix, latent_dim=int(latent_dim), n_conditions=len(cset),
                      dropout=float(dropout), hidden=tuple(hidden), n_basis=n_basis,
                      train_offset=bool(train_offset) or not n_basis)
    model = VAE(cfg).to(dev)
    if basis_split.uses_statistics(cfg, loss):
        train, val = _statistics_splits(dataset, train_rows, val_rows, cset, model, basis, dev, resident_gb)
    else:
        train = split_data(dataset, train_rows, cset, dev, resident_gb)
        val = split_data(dataset, val_rows, cset, dev, resident_gb)
        model.set_data_scaling(*train.mean_std())
        if n_basis:
            model.set_basis(*(torch.from_numpy(a).to(dev) for a in basis))
    if init_from is not None:
        warm_start(model, init_from)
    config = _config_dict(dataset, cfg, cset, conditions, s, excluded, train, val, dev, count_parameters(model),
                          time_limit)
    config["init_from"] = None if init_from is None else str(init_from)
    config["setup_seconds"] = time.perf_counter() - started  # basis, scaling (and statistics) before epoch 1
    opt = make_optimizer(model, s)
    batch_gen = torch.Generator().manual_seed(s.seed)
    autocast_dtype = torch.bfloat16 if dev.type == "cuda" else None

    best = BestWeights(model)  # the NaN guard's fallback before any epoch ends
    state = _start_or_resume(out, resume, config, model, opt, batch_gen, dev, best)
    total_steps = s.epochs * count_batches(len(train), s.batch_size)
    log.info("training %s VAE d=%d conditions=%s on %d spectra (%d val), %d parameters, %s; train %s, val %s",
             arch, cfg.latent_dim, list(conditions) or "none", len(train.rows), len(val.rows),
             config["n_parameters"], dev, *("in memory" if d.resident else "streamed" for d in (train, val)))

    status = "done"
    from ._progress import tqdm

    with tqdm(total=total_steps, initial=state.step, disable=not progress, unit="batch",
              desc=f"fit {arch} d={cfg.latent_dim}") as bar:
        while state.epoch < s.epochs:
            if state.bad_epochs >= s.patience and not _plateau(model, s, state, best):
                status = "early_stopped"
                break
            if time_limit is not None and sum(r["seconds"] for r in state.history) >= time_limit:
                status = "time_limit"
                break
            t0 = time.perf_counter()
            lr_now = learning_rate(state.step, total_steps, s) * state.lr_scale
            step_before = state.step
            train_loss = _train_one_epoch(model, opt, train, s, state, total_steps, batch_gen, autocast_dtype, bar)
            val_loss, val_chi2 = _validate(model, val, s, autocast_dtype)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                state.step = step_before  # the discarded epoch's steps must not move the schedule on
                if not _nan_guard(model, opt, s, state, best):
                    status = "diverged"
                    break
                continue
            row = {"epoch": state.epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                   "val_chi2_per_pixel": val_chi2, "lr": lr_now, "seconds": time.perf_counter() - t0}
            _end_epoch(out, model, opt, state, batch_gen, row, best)
            bar.set_postfix(epoch=row["epoch"], train=f"{train_loss:.4g}", val=f"{val_loss:.4g}")
            if callback is not None:
                callback(row["epoch"], row)
    if status == "done" and state.bad_epochs >= s.patience and state.plateau_drops >= s.plateau_drops:
        status = "early_stopped"  # the last epoch ended the final plateau: it would have stopped anyway
    best.restore(model)
    del train, val  # their memory is free before the test split is read
    return _finish(out, dataset, model, config, cset, keep, state, status, dev, autocast_dtype, score_test)


def warm_start(model: VAE, source_dir) -> None:
    """Start ``model`` (latent size d) from the finished model in ``source_dir`` (d' ≤ d, same
    architecture, conditions and training split): every weight is copied; the posterior heads' first d'
    rows and the decoder's inputs for z_1..z_d' and the conditions take the old values, the new latent
    dimensions' decoder inputs start at zero, so the new model starts as the old one with its extra
    dimensions unused, and training only has to find what they add."""
    from .models import load_weights, weights_path

    source_dir = Path(source_dir)
    old_cfg = json.loads((source_dir / "config.json").read_text())["model"]
    cfg = model.cfg
    d_old, d = int(old_cfg["latent_dim"]), cfg.latent_dim
    old_cfg = ModelConfig.from_dict(old_cfg).to_dict()  # fields older models lack take their defaults
    differ = {k: (old_cfg.get(k), getattr(cfg, k))
              for k in ("arch", "n_pix", "n_conditions", "hidden", "n_basis", "train_offset")
              if old_cfg.get(k) != json.loads(json.dumps(getattr(cfg, k), default=to_jsonable))}
    if differ or d_old > d:
        raise ValueError(f"cannot warm-start d={d} from {source_dir} (d={d_old}): differs in "
                         f"{differ or 'latent size (larger)'}")
    old = load_weights(weights_path(source_dir))
    first_decoder = next(name for name, p in model.named_parameters() if name.startswith("decoder.") and
                         p.ndim == 2 and p.shape[1] == d + cfg.n_conditions)
    new = model.state_dict()
    with torch.no_grad():
        for name, value in new.items():
            src = old[name].to(value.device, value.dtype)
            if src.shape == value.shape:
                value.copy_(src)
            elif name.startswith(("mu_head.", "logvar_head.")):
                value[:d_old] = src  # rows: one per latent dimension
            elif name == first_decoder:
                value.zero_()
                value[:, :d_old] = src[:, :d_old]
                value[:, d:] = src[:, d_old:]  # the conditions' columns follow z's
            else:
                raise ValueError(f"cannot warm-start {name}: {tuple(src.shape)} → {tuple(value.shape)}")


def _prepare_directory(out: Path, resume: bool, overwrite: bool) -> bool:
    """Make ``out``; True when it already holds a finished model and ``resume`` asks to keep it."""
    cfg = out / "config.json"
    if resume and cfg.exists() and json.loads(cfg.read_text()).get("status") in FINISHED:
        log.info("%s is already trained; nothing to do", out)
        return True
    busy = [p.name for p in (cfg, out / CHECKPOINT) if p.exists()]
    if busy and not resume and not overwrite:
        raise FileExistsError(f"{out} already holds {busy}: pass overwrite=True (--overwrite) to replace it, "
                              "or resume=True (--resume) to continue a VAE's training")
    if overwrite and not resume:
        for name in (CHECKPOINT, LEGACY_BEST, "metrics.json", "history.csv", "model.safetensors", "weights.pt"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return False


def _check_finished_run(out: Path, dataset, arch, latent_dim, conditions, s: TrainSettings, dropout, hidden,
                        n_basis, train_offset=True) -> None:
    """ValueError when a finished model that ``resume`` would return is not the one asked for."""
    old = json.loads((out / "config.json").read_text())
    model, n_train = old.get("model", {}), old.get("n_spectra", {}).get("train", 0)
    expected_basis = min(int(n_basis), n_train - 1, model.get("n_pix", 0)) if arch == "compact" else 0
    asked = {"arch": arch, "latent_dim": int(latent_dim), "dropout": float(dropout), "hidden": list(hidden),
             "n_basis": expected_basis, "train_offset": bool(train_offset) or not expected_basis,
             "conditions": list(conditions),
             "dataset": dataset.attrs.get("inputs_digest")}
    stored = {**{k: model.get(k) for k in ("arch", "latent_dim", "dropout", "hidden")},
              "n_basis": model.get("n_basis", 0), "train_offset": model.get("train_offset", True),
              "conditions": old.get("conditions_requested"),
              "dataset": old.get("dataset_digest")}
    training = old.get("training", {})
    differ = [k for k in asked if asked[k] != stored[k]]
    differ += [f"training.{k}" for k, v in asdict(s).items() if k in training and training[k] != v]
    if differ:
        raise ValueError(f"{out} holds a finished model trained with other {differ}: use another folder, or "
                         "overwrite=True (--overwrite) without resume to train afresh")


def _config_dict(dataset, cfg, cset, conditions, s, excluded, train, val, dev, n_params, time_limit) -> dict:
    return {
        "kind": "vae", "galvae_version": __version__, "status": "training",
        "model": cfg.to_dict(), "n_parameters": n_params,
        "conditions_requested": list(conditions), "conditions": cset.to_list(),
        "training": asdict(s), "device": str(dev),
        "dataset_digest": dataset.attrs.get("inputs_digest"), "dataset_path": str(getattr(dataset, "path", "")),
        "n_spectra": {"train": len(train.rows), "val": len(val.rows),
                      "test": int(len(dataset.indices("test")) - excluded["test"])},
        "n_excluded_missing_conditions": excluded,
        "time_limit": time_limit, "weights": None,
    }


def _start_or_resume(out: Path, resume: bool, config: dict, model, opt, batch_gen, dev, best) -> TrainState:
    """Load the checkpoint (and the best weights in it) when resuming; otherwise write config.json."""
    if resume and (out / CHECKPOINT).exists():
        old = json.loads((out / "config.json").read_text())
        differ = _settings_match(old, config)
        if differ:
            raise ValueError(f"cannot resume {out}: settings differ from the stored run in {differ}")
        state = _load_checkpoint(out, model, opt, batch_gen, dev, best)
        log.info("resuming %s after epoch %d (best val loss %.6g at epoch %d)", out, state.epoch,
                 state.best_loss, state.best_epoch)
        return state
    _write_json(out / "config.json", config)
    return TrainState()


def _end_epoch(out: Path, model, opt, state: TrainState, batch_gen, row: dict, best: BestWeights) -> None:
    """Record the epoch, keep the best weights, write the checkpoint and then history.csv."""
    state.history.append(row)
    state.epoch += 1
    if row["val_loss"] < state.best_loss:
        state.best_loss, state.best_epoch, state.bad_epochs = row["val_loss"], row["epoch"], 0
        best.keep(model)
    else:
        state.bad_epochs += 1
    _save_checkpoint(out, model, opt, state, batch_gen, best)
    _write_history(out / "history.csv", state.history)


def _plateau(model, s: TrainSettings, state: TrainState, best: BestWeights) -> bool:
    """No better val loss for ``patience`` epochs: go back to the best weights at a lower learning rate
    (the cosine schedule may still be near its peak); False once ``plateau_drops`` are spent."""
    if state.plateau_drops >= s.plateau_drops:
        return False
    state.plateau_drops += 1
    state.lr_scale *= s.plateau_factor
    state.bad_epochs = 0
    best.restore(model)
    log.info("val loss flat for %d epochs: back to epoch %d at %.3g × the learning rate (drop %d of %d)",
             s.patience, state.best_epoch, state.lr_scale, state.plateau_drops, s.plateau_drops)
    return True


def _nan_guard(model, opt, s: TrainSettings, state: TrainState, best: BestWeights) -> bool:
    """After a non-finite loss: reload the best weights and retry at a 10× lower rate; False to stop."""
    state.nan_retries += 1
    if state.nan_retries > s.max_nan_retries:
        log.error("training stopped at epoch %d: the loss is not finite even at %.3g × the learning rate; "
                  "keeping the best weights (epoch %d). Try a lower lr, a smaller beta, or check the data "
                  "for non-finite flux.", state.epoch + 1, state.lr_scale, state.best_epoch)
        return False
    state.lr_scale *= 0.1
    log.warning("non-finite loss in epoch %d: reloading the best weights (epoch %d) and lowering the "
                "learning rate to %.3g × (retry %d of %d)", state.epoch + 1, state.best_epoch, state.lr_scale,
                state.nan_retries, s.max_nan_retries)
    best.restore(model)
    opt.state.clear()  # Adam's moments may hold NaN too
    return True


def _finish(out: Path, dataset, model, config, cset, keep, state: TrainState, status, dev, autocast_dtype,
            score_test: bool = True) -> Path:
    """The model (at its best weights) → weights file; test metrics → metrics.json; remove the training files."""
    wpath = save_weights(out, model.state_dict())
    k = lk.n_parameters(config["model"]["latent_dim"], len(cset))
    if score_test:
        test = split_data(dataset, split_rows(dataset, "test", keep), cset, dev, resident_gb=0)  # streamed
        metrics = _test_metrics(model, test, k, config["training"]["seed"], autocast_dtype)
    else:
        metrics = {"split": "test", "n_test": int(config["n_spectra"]["test"]), "k": int(k), "scored": False}
    metrics.update({"status": status, "best_epoch": state.best_epoch, "best_val_loss": state.best_loss,
                    "epochs_run": state.epoch, "train_seconds": float(sum(r["seconds"] for r in state.history)),
                    "n_excluded_missing_conditions": config["n_excluded_missing_conditions"]})
    _write_json(out / "metrics.json", metrics)
    config.update(status=status, weights=wpath.name)
    _write_json(out / "config.json", config)
    _write_history(out / "history.csv", state.history)
    for name in (CHECKPOINT, LEGACY_BEST):
        (out / name).unlink(missing_ok=True)
    if score_test:
        log.info("%s: %s after %d epochs; test χ²/pixel %.4g, ln L %.6g", out, status, state.epoch,
                 metrics["chi2_per_pixel"]["mean"], metrics["ln_likelihood"]["mean"])
    return out


def _summary(per_spectrum: dict, k: int) -> dict:
    """Means and standard errors of the per-spectrum test numbers, with BIC."""
    bic = lk.bic(per_spectrum["ln_likelihood"], k, per_spectrum["n_good"])
    out = {"split": "test", "n_test": len(per_spectrum["ln_likelihood"]), "k": int(k), "definitions": DEFINITIONS}
    for name, values in (("ln_likelihood", per_spectrum["ln_likelihood"]), ("elbo", per_spectrum["elbo"]),
                         ("chi2_per_pixel", per_spectrum["chi2_per_pixel"]), ("bic", bic)):
        mean, err = lk.mean_and_stderr(values)
        out[name] = {"mean": mean, "stderr": err}
    return out


def _test_metrics(model, test: Split, k: int, seed: int, autocast_dtype, n_samples: int = 8) -> dict:
    if len(test) == 0:
        log.warning("no test spectra: metrics are empty")
        return _summary({"ln_likelihood": np.array([]), "elbo": np.array([]), "chi2_per_pixel": np.array([]),
                         "n_good": np.array([])}, k)
    r = score_batches(model, _batches(test, 1024), n_samples=n_samples, seed=seed + 2,
                      autocast_dtype=autocast_dtype, n=len(test))
    return _summary(r, k)


# ---------------------------------------------------------------------------------------------------
# PCA baselines
# ---------------------------------------------------------------------------------------------------

def fit_pca(dataset, out_dir, n_components: int, weighted: bool = False, n_iter: int = 20,
            overwrite: bool = False) -> Path:
    """Fit a PCA baseline on ``train`` and write a model directory with test metrics.json."""
    out = Path(out_dir)
    _prepare_directory(out, resume=False, overwrite=overwrite)  # also clears what a VAE left there
    t0 = time.perf_counter()
    rows = dataset.indices("train")
    if not 1 <= int(n_components) <= min(len(rows), dataset.wave.size):
        raise ValueError(f"n_components must be between 1 and min(train spectra, pixels) = "
                         f"{min(len(rows), dataset.wave.size)}, got {n_components}")
    pca = PCA(n_components, weighted=weighted, n_iter=n_iter).fit(
        take_rows(dataset.flux, rows), take_rows(dataset.ivar, rows) if weighted else None)
    seconds = time.perf_counter() - t0
    pca.save(out, {"dataset_digest": dataset.attrs.get("inputs_digest"), "galvae_version": __version__,
                   "status": "done", "n_spectra": {"train": len(rows)}})
    test = dataset.indices("test")
    metrics = _summary(pca.score(take_rows(dataset.flux, test), take_rows(dataset.ivar, test)), n_components)
    metrics.update(status="done", train_seconds=seconds)
    _write_json(out / "metrics.json", metrics)
    return out


# ---------------------------------------------------------------------------------------------------
# encoding a dataset
# ---------------------------------------------------------------------------------------------------

def encode_dataset(model_dir, dataset, out_path=None, device: str = "cpu", n_samples: int = 8,
                   batch_size: int = 1024, progress: bool = True):
    """Encode every spectrum of ``dataset`` and write a latent catalogue (FITS, ECSV, … by extension;
    ``out_path=None`` writes nothing).

    Columns: id, z, split, mu_1..d, sigma_1..d, chi2_per_pixel, ln_likelihood, elbo, n_good. Rows
    lacking a condition the model needs get NaN. Returns the astropy Table written.
    """
    from astropy.table import Table
    from ._progress import tqdm

    model = load_model(model_dir, device=device)
    names = model.condition_names
    keep = rows_with_conditions(dataset.props, names)
    n, d = len(dataset), model.latent_dim
    rows = np.flatnonzero(keep)
    cond = model.conditions.transform(model.conditions.raw_values(dataset.props, rows)) if names else None
    cols = {k: np.full(n, np.nan) for k in ("chi2_per_pixel", "ln_likelihood", "elbo", "n_good")}
    vae = hasattr(model, "module")
    stream = Split(dataset, rows, cond, model.device if vae else "cpu", resident_bytes=0)  # one pass, as it goes
    with tqdm(total=len(rows), disable=not progress, desc="encode", unit="spec") as bar:
        def batches():
            for b in stream.eval_batches(batch_size):
                yield b.flux, b.ivar, b.cond, b.ln_norm
                bar.update(len(b.flux))
        if vae:
            res = score_batches(model.module, batches(), n_samples=n_samples, seed=0, n=len(rows))
        else:  # PCA: NumPy in, per batch
            parts = [model.score(x.numpy(), w.numpy()) for x, w, _, _ in batches()]
            res = {k: np.concatenate([np.full(len(p["mu"]), p[k]) if np.ndim(p[k]) == 0 else p[k] for p in parts])
                   if parts else None for k in ("mu", "sigma", *cols)}
    mu, sigma = np.full((n, d), np.nan), np.full((n, d), np.nan)
    if len(rows):
        mu[rows], sigma[rows] = res["mu"], res["sigma"]
        for k, column in cols.items():
            column[rows] = res[k]
    table = Table()
    table["id"] = np.asarray(dataset.props["id"])
    table["z"] = np.asarray(dataset.props["z"], dtype=float) if "z" in dataset.props.colnames else np.nan
    table["split"] = np.asarray(["train", "val", "test"])[np.asarray(dataset.split, dtype=int)]
    for j in range(d):
        table[f"mu_{j + 1}"] = mu[:, j]
    for j in range(d):
        table[f"sigma_{j + 1}"] = sigma[:, j]
    for k, v in cols.items():
        table[k] = v
    table.meta.update({"MODELDIR": str(model_dir), "KIND": model.config.get("kind"), "LATDIM": d,
                       "CONDS": ",".join(names), "NOCOND": int((~keep).sum())})  # FITS-safe keys
    if out_path is not None:  # None: the caller (the Python API, explain) only wants the table
        _write_table(table, Path(out_path))
    log.info("encoded %d spectra (%d lacked conditions) → %s", len(rows), int((~keep).sum()), out_path or "a table")
    return table


def _write_table(table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".ecsv": "ascii.ecsv", ".csv": "ascii.csv"}.get(path.suffix.lower())
    atomic_write(path, lambda tmp: table.write(tmp, overwrite=True, format=fmt or "fits"))
