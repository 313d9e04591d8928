"""The selection grid: train every (d, conditions, seed) cell over Dask, resumably, and tabulate it.

Output folder::

    OUT/grid.json                     the grid's settings: dataset view, training options (checked on rerun)
    OUT/cells/d{d}_{conds}_s{seed}/   one model directory per cell (galvae.fit), plus
        scores.npz                    per-spectrum test scores (select.evaluate), for paired comparisons
        cell.json                     the cell's table row; written last, so it marks a finished cell
        error.json                    why the cell failed (removed when a rerun succeeds)
    OUT/grid.ecsv                     one row per cell
    OUT/best.json                     the best model by mean BIC over seeds, its seed spread, other criteria
    OUT/figures/bic_grid.png          the paper's Figure 2
    OUT/figures/bic_vs_d.png          BIC against d for the VAE, with seed error bars

A rerun skips every cell with ``cell.json``; a cell that was killed while training continues from its
checkpoint (``fit(resume=True)``); a failed cell is tried again; a cell scored by an older galvae (no
maximum-likelihood latents) is scored again, not retrained.

With ``warm_start``, the cells of one (conditions, seed) run as one task in increasing d, each starting
from the trained d − 1 (or smaller) model (:func:`galvae.fit.warm_start`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .._atomic import DiskFullError, atomic_write
from .._jsonio import read_json, to_jsonable, write_json as _write_json
from .. import _dask
from ..models.conditions import CONDITIONS, rows_with_conditions
from .cells import Cell, grid_cells, parse_conditions, parse_latent

log = logging.getLogger(__name__)

CELLS = "cells"
CELL_SUMMARY = "cell.json"
CELL_ERROR = "error.json"
SCORES = "scores.npz"
TIMING_COLUMNS = ("train_seconds", "score_seconds")  # the columns that differ between two runs of the same grid
#: cell.json of the current scoring (test numbers at the maximum-likelihood latent); older ones are re-scored
SCORES_VERSION = 2

COLUMNS = (  # name, dtype, unit/description
    ("d", int, "latent dimensions"),
    ("conditions", str, "'vae' or condition names joined by '+'"),
    ("n_conditions", int, ""),
    ("k", int, "d + n_conditions (the paper's number of parameters)"),
    ("seed", int, ""),
    ("n_test", int, "test spectra scored"),
    ("ln_l_mean", float, "nats per spectrum, at the posterior mean (the encoder's latent)"),
    ("ln_l_stderr", float, "nats"),
    ("ln_l_ml_mean", float, "nats per spectrum, at the maximum-likelihood latent (z refined per spectrum)"),
    ("ln_l_ml_stderr", float, "nats"),
    ("refine_gap", float, "ln_l_ml_mean - ln_l_mean: the likelihood the encoder leaves, nats per spectrum"),
    ("elbo_mean", float, "nats per spectrum"),
    ("elbo_stderr", float, "nats"),
    ("chi2_per_pixel", float, "mean over test spectra, at the posterior mean"),
    ("chi2_per_pixel_ml", float, "mean over test spectra, at the maximum-likelihood latent"),
    ("bic_mean", float, "k ln P_i - 2 ln L_i with L_i at the maximum-likelihood latent, mean over test spectra"),
    ("bic_stderr", float, ""),
    ("bic_amortized_mean", float, "the same with L_i at the posterior mean"),
    ("iwae_mean", float, "importance-weighted bound on ln p(x), nats per spectrum"),
    ("iwae_stderr", float, "nats"),
    ("kl_mean", float, "KL(q||N(0,I)), nats per spectrum"),
    ("n_active", int, "latent dims with Var_x(E_q[z_j]) > 0.01"),
    ("train_seconds", float, "s"),
    ("score_seconds", float, "s to score the test split, the latent refinement included"),
    ("epochs", int, "epochs run"),
    ("val_loss", float, "best validation loss (the training objective, nats per spectrum): picks the best restart"),
    ("fit_status", str, "done / early_stopped / time_limit / diverged"),
    ("status", str, "done / failed / pending"),
    ("error", str, ""),
    ("cell", str, "model directory under cells/"),
)


@dataclass
class GridResult:
    """What :func:`select_grid` returns."""

    out_dir: Path
    table: object            # astropy Table, one row per cell (grid.ecsv)
    best: dict | None        # best.json's content (None when no cell finished)
    figures: list[Path]
    seconds: float           # wall time of this call

    @property
    def n_failed(self) -> int:
        return int(np.sum(np.asarray(self.table["status"]) == "failed"))

    @property
    def n_done(self) -> int:
        return int(np.sum(np.asarray(self.table["status"]) == "done"))


# ---------------------------------------------------------------------------------------------------
# the dataset every cell sees
# ---------------------------------------------------------------------------------------------------

_DATASETS: dict = {}  # per worker process: the opened, restricted dataset of each path


def restriction(dataset, needed=CONDITIONS) -> tuple[np.ndarray, str]:
    """Rows with every ``needed`` property (bool mask), and the digest naming the restricted dataset."""
    keep = rows_with_conditions(dataset.props, tuple(needed))
    parent = dataset.attrs.get("inputs_digest")
    if keep.all():
        return keep, parent
    digest = hashlib.sha1(f"{parent}:{','.join(needed)}:{int(keep.sum())}".encode()).hexdigest()[:16]
    return keep, digest


def comparable_view(dataset, needed=CONDITIONS):
    """The dataset restricted to rows with every ``needed`` property (same splits), so that a VAE and
    every CVAE are trained and scored on the same spectra. Returns ``dataset`` itself when no row lacks
    one; the view's ``inputs_digest`` names the restriction."""
    keep, digest = restriction(dataset, needed)
    if keep.all():
        return dataset
    from ..prepare.dataset import RowView

    rows = np.flatnonzero(keep)
    attrs = dict(dataset.attrs, inputs_digest=digest,
                 select_restriction={"needed": list(needed), "rows_kept": int(rows.size),
                                     "rows_total": len(keep), "parent_digest": dataset.attrs.get("inputs_digest")})
    # views, not copies: the rows are read from the store only when a cell trains or scores them
    return replace(dataset, flux=RowView(dataset.flux, rows), ivar=RowView(dataset.ivar, rows),
                   filled=RowView(dataset.filled, rows), norm=np.asarray(dataset.norm)[rows],
                   split=np.asarray(dataset.split)[rows], props=dataset.props[rows], attrs=attrs)


def _store_stamp(path: Path) -> int:
    """Changes when the store is rewritten (its metadata file's mtime)."""
    for name in ("zarr.json", ".zattrs", ".zgroup"):
        if (path / name).exists():
            return (path / name).stat().st_mtime_ns
    return path.stat().st_mtime_ns


def _open(source):
    """An in-memory Dataset as is; a path opened lazily (Zarr arrays read row by row where used)."""
    if not isinstance(source, (str, os.PathLike)):
        return source
    from ..prepare import open_dataset

    return open_dataset(Path(source), load=False)


def cell_dataset(source, needed=CONDITIONS):
    """The restricted dataset for a task: opened from its path once per worker process, or given."""
    if not isinstance(source, (str, os.PathLike)):
        return comparable_view(source, needed)
    path = Path(source).resolve()
    key = (str(path), _store_stamp(path), tuple(needed))
    if key not in _DATASETS:
        _DATASETS.clear()  # one dataset per worker at a time: they are big
        _DATASETS[key] = comparable_view(_open(path), needed)
    return _DATASETS[key]


# ---------------------------------------------------------------------------------------------------
# one cell (a Dask task)
# ---------------------------------------------------------------------------------------------------





def _base_row(cell: Cell) -> dict:
    row = {name: (np.nan if kind is float else (-1 if kind is int else "")) for name, kind, _ in COLUMNS}
    row.update(d=cell.d, conditions=cell.label, n_conditions=len(cell.conditions), k=cell.k, seed=cell.seed,
               cell=cell.name)
    return row


def finished_row(cell: Cell, metrics: dict, extra: dict) -> dict:
    """A done cell's table row from fit's metrics.json (training) and select's test scores (``extra``:
    :func:`galvae.select.evaluate.summarise_scores`)."""
    test = extra["test"]
    row = _base_row(cell)
    row.update(
        n_test=int(test["n_test"]),
        ln_l_mean=test["ln_likelihood"]["mean"], ln_l_stderr=test["ln_likelihood"]["stderr"],
        ln_l_ml_mean=test["ln_likelihood_ml"]["mean"], ln_l_ml_stderr=test["ln_likelihood_ml"]["stderr"],
        refine_gap=test["ln_likelihood_ml"]["mean"] - test["ln_likelihood"]["mean"],
        elbo_mean=test["elbo"]["mean"], elbo_stderr=test["elbo"]["stderr"],
        chi2_per_pixel=test["chi2_per_pixel"]["mean"], chi2_per_pixel_ml=test["chi2_per_pixel_ml"]["mean"],
        bic_mean=test["bic"]["mean"], bic_stderr=test["bic"]["stderr"],
        bic_amortized_mean=test["bic_amortized"]["mean"],
        iwae_mean=extra["iwae_mean"], iwae_stderr=extra["iwae_stderr"], kl_mean=extra["kl_mean"],
        n_active=extra["n_active"], train_seconds=float(metrics.get("train_seconds", np.nan)),
        score_seconds=float(extra.get("score_seconds", np.nan)),
        epochs=int(metrics.get("epochs_run", -1)), val_loss=float(metrics.get("best_val_loss", np.nan)),
        fit_status=str(metrics.get("status", "")), status="done")
    return row


def failed_row(cell: Cell, error: str) -> dict:
    row = _base_row(cell)
    row.update(status="failed", error=error)
    return row


def _read_summary(path: Path) -> dict:
    # a damaged cell.json is moved aside, so that rerunning the grid scores the cell again
    return read_json(path, "Rerun `galvae select` with the same options: it scores this cell again from its "
                     "trained model", aside=True)


def _is_scored(cell_dir: Path) -> bool:
    """The cell has a cell.json of the current scoring."""
    path = cell_dir / CELL_SUMMARY
    return path.exists() and _read_summary(path).get("scores_version") == SCORES_VERSION


def run_chain(source, cells_dir: str, chain: list, needed: tuple, fit_kwargs: dict, torch_threads: int | None = None,
              n_iwae: int = 16, refine_steps: int | None = None, warm_start: bool = False) -> list[dict]:
    """Run cells one after another (one Dask task); with ``warm_start`` each cell (the chain sorted by d)
    starts from the last finished one before it. Returns their rows."""
    rows, previous = [], None
    for cell in chain:
        init = previous if warm_start and previous is not None and previous.d < cell.d else None
        row = run_cell(source, cells_dir, cell, needed, fit_kwargs, torch_threads, n_iwae, refine_steps,
                       init_from=None if init is None else str(Path(cells_dir) / init.name))
        if row["status"] == "done":
            previous = cell
        rows.append(row)
    return rows


def run_cell(source, cells_dir: str, cell: Cell, needed: tuple, fit_kwargs: dict,
             torch_threads: int | None = None, n_iwae: int = 16, refine_steps: int | None = None,
             init_from: str | None = None) -> dict:
    """Train (or resume) one cell, score its test split once, write ``cell.json``; return its table row.

    Never raises: a failure is written to ``error.json`` and returned as a 'failed' row.
    """
    from .evaluate import REFINE_STEPS, save_scores, score_test_split, summarise_scores

    cell_dir = Path(cells_dir) / cell.name
    summary = cell_dir / CELL_SUMMARY
    if _is_scored(cell_dir):
        return stored_row(Path(cells_dir), cell)
    try:
        import torch

        from ..fit import fit

        if torch_threads:
            torch.set_num_threads(torch_threads)  # one core per task when tasks share a machine
        data = cell_dataset(source, needed)
        device = _cell_device(fit_kwargs.get("device", "auto"))
        fit(data, cell_dir, latent_dim=cell.d, conditions=cell.conditions, seed=cell.seed, resume=True,
            progress=False, init_from=init_from, score_test=False, **dict(fit_kwargs, device=device))
        t0 = time.perf_counter()
        scores = score_test_split(cell_dir, data, n_iwae=n_iwae, seed=cell.seed,
                                  refine_steps=REFINE_STEPS if refine_steps is None else refine_steps)
        save_scores(cell_dir / SCORES, scores)
        extra = dict(summarise_scores(scores), score_seconds=time.perf_counter() - t0)
        metrics = json.loads((cell_dir / "metrics.json").read_text())
        row = finished_row(cell, metrics, extra)
        _write_json(summary, {"row": row, "extra": extra, "dataset_digest": data.attrs.get("inputs_digest"),
                              "scores_version": SCORES_VERSION})
        (cell_dir / CELL_ERROR).unlink(missing_ok=True)
        return row
    except DiskFullError:  # not this cell's fault: every cell after it would fail the same way
        raise
    except Exception as exc:  # noqa: BLE001 - a failed cell is recorded, never fatal to the grid
        error = f"{type(exc).__name__}: {exc}"
        log.warning("cell %s failed: %s", cell.name, error)
        cell_dir.mkdir(parents=True, exist_ok=True)
        _write_json(cell_dir / CELL_ERROR, {"error": error, "traceback": traceback.format_exc()})
        return failed_row(cell, error)


def _cell_device(requested: str) -> str:
    """The device a cell trains on: on a machine with several GPUs, worker i of a local Dask cluster
    takes cuda:(i mod the GPU count), so that the workers spread over the GPUs instead of all using cuda:0."""
    import torch

    if requested not in ("auto", "cuda") or not torch.cuda.is_available():
        return requested
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):  # not inside a Dask worker (scheduler='sync')
        return requested
    return f"cuda:{int(name) % torch.cuda.device_count()}" if str(name).isdigit() else requested


#: fit()'s parameters that the grid sets for each cell itself; a caller may pass any other one.
_SET_PER_CELL = frozenset({"dataset", "out_dir", "latent_dim", "conditions", "seed", "resume", "progress",
                           "init_from", "score_test"})


def check_fit_kwargs(fit_kwargs: dict) -> None:
    """Raise TypeError, before any cell starts, for a training option :func:`galvae.fit.fit` does not take
    (a misspelled one would otherwise fail every cell, each caught and recorded as a failed row)."""
    import inspect

    from ..fit import fit

    params = inspect.signature(fit).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # a wrapper taking **kwargs (as tests put in its place): nothing to check against
    allowed = set(params) - _SET_PER_CELL
    unknown = sorted(set(fit_kwargs) - allowed)
    if unknown:
        raise TypeError(f"select_grid got training option(s) {unknown} that galvae.fit.fit does not take "
                        f"or that the grid sets per cell; the options it passes on: {sorted(allowed)}")


def _default_workers(workers, scheduler, cluster, fit_kwargs) -> int | None:
    """On a GPU machine, one local worker per GPU unless told otherwise: a worker per core would put as
    many copies of the training split on each GPU and make them queue for it."""
    import torch

    local = scheduler is None and cluster in (None, "local")
    on_gpu = fit_kwargs.get("device", "auto") in ("auto", "cuda") and torch.cuda.is_available()
    if workers is None and local and on_gpu:
        log.info("select: one worker per GPU (%d); --workers overrides", torch.cuda.device_count())
        return torch.cuda.device_count()
    return workers


def stored_row(cells_dir: Path, cell: Cell) -> dict:
    """A cell's row from its files: done (cell.json), failed (error.json) or pending."""
    d = cells_dir / cell.name
    if _is_scored(d):  # rebuilt from the files, so that a newer table layout reads older cells
        metrics = read_json(d / "metrics.json", f"Delete {d} and rerun `galvae select` with the same options: "
                            "it trains this cell again")
        return finished_row(cell, metrics, _read_summary(d / CELL_SUMMARY)["extra"])
    if (d / CELL_ERROR).exists():
        return failed_row(cell, json.loads((d / CELL_ERROR).read_text())["error"])
    row = _base_row(cell)
    row["status"] = "pending"
    return row


# ---------------------------------------------------------------------------------------------------
# the grid
# ---------------------------------------------------------------------------------------------------

def grid_table(rows: list[dict]):
    """The grid table (astropy), in the cells' order, with each column's meaning in its description."""
    from astropy.table import Table

    t = Table(rows=[[r[name] for name, _, _ in COLUMNS] for r in rows] or None,
              names=[c[0] for c in COLUMNS], dtype=[c[1] for c in COLUMNS])
    for name, _, text in COLUMNS:
        t[name].description = text
    return t


def write_table(table, path: Path) -> None:
    atomic_write(path, lambda tmp: table.write(tmp, format="ascii.ecsv", overwrite=True))


def _grid_settings(view_digest, needed, arch, fit_kwargs, n_iwae, refine_steps, warm_start) -> dict:
    return {"dataset_digest": view_digest, "needed_conditions": list(needed), "arch": arch,
            "fit": json.loads(json.dumps(fit_kwargs, default=to_jsonable)), "n_iwae": int(n_iwae),
            "refine_steps": int(refine_steps), "warm_start": bool(warm_start)}


def check_grid_settings(out: Path, settings: dict) -> None:
    """Write ``grid.json``, or check that a previous run of this folder used the same settings."""
    path = out / "grid.json"
    if path.exists():
        old = json.loads(path.read_text())
        differ = [k for k in settings if k in old and old[k] != settings[k]]
        if differ:
            raise ValueError(f"{out} holds a grid with other {differ} ({ {k: old.get(k) for k in differ} }); "
                             "use another output folder")
        if any(k not in old for k in settings):  # a grid.json from before a setting was recorded: record it now
            _write_json(path, {**settings, **old})
        return
    out.mkdir(parents=True, exist_ok=True)
    _write_json(path, settings)


SPLITS = ("train", "val", "test")
#: The fewest spectra with every condition that let a model train (galvae.fit's own minimum).
MIN_ROWS = {"train": 2, "val": 1}
#: Where each condition comes from, for the message of a grid that cannot run.
CONDITION_SOURCES = {
    "logmstar": "GSWLC-2, read by galvae catalog --gswlc X2 M2 A2",
    "logsfr": "GSWLC-2, read by galvae catalog --gswlc X2 M2 A2",
    "logssfr": "GSWLC-2 (logsfr - logmstar), read by galvae catalog --gswlc X2 M2 A2",
    "metallicity": "MPA-JHU DR7 gal_fiboh with its gal_info, read by galvae catalog --mpajhu INFO FIBOH",
}
MISSING_CONDITIONS_DOC = "docs/missing_conditions.md"


class MissingConditionsError(ValueError):
    """The grid's conditions leave too few spectra to train on: raised before its first cell."""


def missing_conditions(dataset, needed) -> dict:
    """Which spectra lack a condition the grid uses, per split and per condition (properties and splits
    only, no spectra read). A condition the dataset has no column for is missing for every spectrum.

    Returns ``{"needed_conditions": [...], "split_rows": {split: n}, "split_kept": {split: n},
    "split_dropped": {split: n, "total": n}, "dropped_by_condition": {name: {split: n, "total": n}}}``;
    a spectrum lacking several conditions counts once in ``split_dropped`` and under each of them.
    """
    props = dataset.props
    names = props.colnames if hasattr(props, "colnames") else list(props.keys())
    n = len(props)
    rows = {split: np.asarray(dataset.indices(split)) for split in SPLITS}
    keep = np.ones(n, dtype=bool)
    by_condition = {}
    for name in needed:
        has = np.isfinite(np.asarray(props[name], dtype=np.float64)) if name in names else np.zeros(n, bool)
        keep &= has
        by_condition[name] = {split: int((~has[r]).sum()) for split, r in rows.items()}
        by_condition[name]["total"] = int((~has).sum())
    dropped = {split: int((~keep[r]).sum()) for split, r in rows.items()}
    dropped["total"] = int((~keep).sum())
    return {"needed_conditions": list(needed), "split_rows": {split: len(r) for split, r in rows.items()},
            "split_kept": {split: int(keep[r].sum()) for split, r in rows.items()},
            "split_dropped": dropped, "dropped_by_condition": by_condition}


def check_enough_rows(summary: dict) -> None:
    """Raise :class:`MissingConditionsError` when the spectra having every condition of the grid (from
    :func:`missing_conditions`) are too few to train a model, naming the conditions to blame and where
    they come from."""
    kept, total = summary["split_kept"], summary["split_rows"]
    if all(kept[split] >= least for split, least in MIN_ROWS.items()):
        return
    needed = summary["needed_conditions"]
    if any(total[split] < least for split, least in MIN_ROWS.items()):
        raise MissingConditionsError(
            f"the dataset has {total['train']} train and {total['val']} val spectra: too few to train a model "
            f"(at least {MIN_ROWS['train']} train and {MIN_ROWS['val']} val)")
    have = {name: {split: total[split] - summary["dropped_by_condition"][name][split] for split in SPLITS}
            for name in needed}
    rare = [name for name in needed if any(have[name][s] < least for s, least in MIN_ROWS.items())]
    blamed = rare or list(needed)  # none too rare alone: it is their combination
    details = "; ".join(
        f"{name} is known for {have[name]['train']} of {total['train']} train and {have[name]['val']} of "
        f"{total['val']} val spectra; it comes from {CONDITION_SOURCES.get(name, 'the catalogue given to prepare')}"
        for name in blamed)
    raise MissingConditionsError(
        f"the selection grid cannot run: every cell is fitted and scored on the same spectra, those having "
        f"every condition the grid uses ({', '.join(needed)}), so that their BIC values compare; only "
        f"{kept['train']} train and {kept['val']} val spectra have them all (training needs at least "
        f"{MIN_ROWS['train']} and {MIN_ROWS['val']}). {details}. Prepare the dataset with a catalogue that has "
        f"{' and '.join(blamed)} (e.g. galvae catalog --gswlc X2 M2 A2 --mpajhu gal_info_dr7_v5_2.fits "
        f"gal_fiboh_dr7_v5_2.fits --out props.fits, then --catalog props.fits), or leave "
        f"{' and '.join(blamed)} out of the grid's conditions (--conditions of galvae select, select: "
        f"conditions: of a galvae run config) to use every galaxy; see {MISSING_CONDITIONS_DOC}")


def _dataset_summary(source, needed) -> tuple[str, dict]:
    """The restricted dataset's digest and counts, from its properties and splits alone (no spectra read):
    how many spectra lack a condition of the grid, per split and per condition (:func:`missing_conditions`).
    Raises :class:`MissingConditionsError` when too few remain to train (:func:`check_enough_rows`)."""
    data = _open(source)
    summary = missing_conditions(data, needed)
    check_enough_rows(summary)
    keep, digest = restriction(data, needed)
    counts = {"n_spectra": int(keep.sum()), "n_test": int(keep[data.indices("test")].sum()),
              "n_dropped_missing_conditions": int((~keep).sum()), **summary}
    return digest, counts


def select_grid(dataset_path, out_dir, latent=range(1, 9), conditions="all", seeds=3, arch: str = "compact",
                epochs: int = 100, scheduler: str | None = None, cluster: str | None = None,
                workers: int | None = None, progress: bool = True, needed=CONDITIONS, n_iwae: int = 16,
                refine_steps: int | None = None, warm_start: bool = False, **fit_kwargs) -> GridResult:
    """Train the grid d × condition sets × seeds and select the best model (CLI ``galvae select``).

    ``galvae select --data dataset.zarr --latent 1-8 --conditions all --seeds 3 --out DIR [--arch compact]
    [--epochs N] [--workers W] [--scheduler ADDR] [--cluster slurm]``

    Parameters
    ----------
    dataset_path : a ``dataset.zarr`` (workers open it themselves), or an in-memory Dataset (tests).
    out_dir : grid folder (see the module docstring); rerunning it resumes.
    latent : latent sizes d ('1-8' or ints).
    conditions : 'all' (the 16 subsets of {logmstar, logsfr, logssfr, metallicity}), a string such as
        'none,logmstar,logmstar+logsfr', or a list of tuples; the empty set is the plain VAE.
    seeds : number of seeds per (d, conditions) (0..n−1), or a list of seeds.
    arch, epochs, **fit_kwargs : passed to :func:`galvae.fit.fit` (e.g. ``time_limit``, ``patience``,
        ``batch_size``, ``lr``, ``loss``, ``beta``, ``device``).
    scheduler : None: a local cluster of ``workers`` single-threaded processes; 'sync': in this process;
        an address: join that scheduler.
    cluster : 'slurm' starts workers with dask-jobqueue.
    needed : every cell uses only spectra with all these properties (default: the four conditions), so
        VAE and CVAEs are compared on the same spectra. The spectra dropped for lacking one are counted
        per split and per condition in grid.ecsv's meta and best.json; when too few remain to train, a
        :class:`MissingConditionsError` (a ValueError) is raised before the first cell
        (docs/missing_conditions.md).
    n_iwae : importance samples of the IWAE bound reported beside BIC.
    refine_steps : Adam steps of the per-spectrum latent refinement that gives BIC its maximised
        likelihood (None: :data:`galvae.select.evaluate.REFINE_STEPS`; 0: BIC at the posterior mean).
    warm_start : train each (conditions, seed) in increasing d, each model starting from the previous
        one (:func:`galvae.fit.warm_start`): fewer epochs per cell on a big survey (docs/scale.md).

    Returns a :class:`GridResult`; writes grid.ecsv, best.json and the figures.
    """
    from .evaluate import REFINE_STEPS
    from .figures import plot_bic_grid, plot_bic_vs_d, plot_one_se
    from .choice import best_model

    t0 = time.perf_counter()
    out = Path(out_dir)
    latent, condition_sets = parse_latent(latent), parse_conditions(conditions)
    needed = tuple(needed)
    fit_kwargs = dict(fit_kwargs, arch=arch, epochs=int(epochs))
    check_fit_kwargs(fit_kwargs)
    refine_steps = REFINE_STEPS if refine_steps is None else int(refine_steps)
    source = str(Path(dataset_path).resolve()) if isinstance(dataset_path, (str, os.PathLike)) else dataset_path
    digest, counts = _dataset_summary(source, needed)
    settings = _grid_settings(digest, needed, arch, fit_kwargs, n_iwae, refine_steps, warm_start)
    check_grid_settings(out, settings)
    cells_dir = out / CELLS
    cells_dir.mkdir(parents=True, exist_ok=True)
    cells = grid_cells(latent, condition_sets, seeds)
    todo = [c for c in cells if not _is_scored(cells_dir / c.name)]  # a damaged cell.json stops the grid here
    log.info("grid: %d cells (%d d × %d condition sets × seeds), %d to train, on %d spectra (%d test; %d dropped "
             "for missing conditions: %s, by condition %s)", len(cells), len(latent), len(condition_sets), len(todo),
             counts["n_spectra"], counts["n_test"], counts["n_dropped_missing_conditions"], counts["split_dropped"],
             {name: c["total"] for name, c in counts["dropped_by_condition"].items()})

    def rewrite_table(*_):
        write_table(grid_table([stored_row(cells_dir, c) for c in cells]), out / "grid.ecsv")

    if todo:
        client = _dask.make_client(scheduler, cluster, _default_workers(workers, scheduler, cluster, fit_kwargs))
        try:
            threads = _torch_threads(client, scheduler, cluster)
            args = [(source, str(cells_dir), chain, needed, fit_kwargs, threads, n_iwae, refine_steps, warm_start)
                    for chain in _chains(cells, todo, warm_start)]
            if client is not None and not isinstance(source, str):
                log.warning("an in-memory dataset is shipped to every task; pass a dataset path instead")
            _dask.run_tasks(client, run_chain, args, "select", progress, on_result=rewrite_table,
                            on_error=lambda a, exc: _record_lost_task(cells_dir, a[2], exc))
        finally:
            _dask.close_client(client)
    rows = [stored_row(cells_dir, c) for c in cells]
    table = grid_table(rows)
    table.meta.update(counts)
    table.meta["fit"] = settings["fit"]
    table.meta.update(refine_steps=refine_steps, warm_start=bool(warm_start), n_iwae=int(n_iwae))
    write_table(table, out / "grid.ecsv")
    best = best_model(table, cells_dir)
    if best is not None:
        best.update(counts)
        _write_json(out / "best.json", best)
    _DATASETS.clear()  # in-process ('sync') runs cached the dataset here
    figures = [p for p in (plot_bic_grid(table, out / "figures" / "bic_grid.png", best),
                           plot_bic_vs_d(table, out / "figures" / "bic_vs_d.png"),
                           plot_one_se(best, out / "figures" / "bic_one_se.png")) if p is not None]
    seconds = time.perf_counter() - t0
    n_failed = int(np.sum(np.asarray(table["status"]) == "failed"))
    log.info("grid done in %.0f s: %d cells done, %d failed", seconds,
             int(np.sum(np.asarray(table["status"]) == "done")), n_failed)
    if best is not None:
        one = best["one_se"]
        log.info("lowest mean BIC over seeds: %s d=%d (%.2f, seed std %.2f); recommended (one paired SE): "
                 "%s d=%d (%.2f)", best["conditions_label"], best["d"], best["bic_mean"], best["bic_seed_std"],
                 one["conditions_label"], one["d"], one["bic_mean"])
    return GridResult(out, table, best, figures, seconds)


def _chains(cells: list, todo: list, warm_start: bool) -> list[list]:
    """The tasks: with ``warm_start`` one per (conditions, seed) holding its cells in increasing d (the
    finished ones too, so that the next cell starts from them), else one per cell to do."""
    if not warm_start:
        return [[c] for c in todo]
    groups: dict = {}
    for c in cells:
        groups.setdefault((c.conditions, c.seed), []).append(c)
    pending = set(todo)
    return [sorted(g) for g in groups.values() if pending.intersection(g)]


def _torch_threads(client, scheduler=None, cluster=None) -> int | None:
    """Threads per task: None (torch's default) in-process; on a local cluster the machine's cores shared
    among its workers (one 2-thread worker trains faster than two 1-thread ones on 2 cores, docs/scale.md);
    1 on other clusters, whose workers are sized by their own jobs."""
    if client is None:
        return None
    if scheduler is None and cluster in (None, "local"):
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        return max(1, (os.cpu_count() or 1) // n_workers)
    return 1


def _record_lost_task(cells_dir: Path, chain: list, exc: Exception) -> list[dict]:
    """A task that died with its worker (out of memory, killed): record its unfinished cells as failed."""
    if isinstance(exc, DiskFullError):
        raise exc
    error = f"{type(exc).__name__}: {exc}"
    rows = []
    for cell in chain:
        d = cells_dir / cell.name
        if _is_scored(d):
            rows.append(stored_row(cells_dir, cell))
            continue
        d.mkdir(parents=True, exist_ok=True)
        _write_json(d / CELL_ERROR, {"error": error, "traceback": ""})
        rows.append(failed_row(cell, error))
    return rows
