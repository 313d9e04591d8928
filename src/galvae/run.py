"""``galvae run``: mock (or SDSS files) → prepare → select → explain → report, from one configuration.

Every stage writes its artifact under the run folder and resumes on its own, so rerunning the same
command skips what is finished::

    RUN/config.json         the configuration used (preset + overrides)
    RUN/mock/               the mock survey (source 'mock'); mock/props.fits its GSWLC-2 and MPA-JHU
                            catalogues joined as `galvae catalog` joins them: prepare's --catalog
    RUN/dataset.zarr        prepare
    RUN/select/             the BIC grid, best.json, figures
    RUN/analysis/           rotation, mutual information, maps, traversals, SHAP, latents.fits
    RUN/report/index.html   the report
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from ._atomic import write_text
from .config import RunConfig
from .select.choice import lowest_val_loss

log = logging.getLogger(__name__)

MOCK_PROPERTIES = "props.fits"  # RUN/mock/props.fits: the mock's catalogues joined as `galvae catalog` joins them


def _stage(name: str, timings: dict):
    """Context manager logging a stage's wall time into ``timings``."""
    from contextlib import contextmanager

    @contextmanager
    def timed():
        t0 = time.perf_counter()
        log.info("stage %s …", name)
        yield
        timings[name] = round(time.perf_counter() - t0, 1)
        log.info("stage %s done in %.1f s", name, timings[name])

    return timed()


def source_inputs(cfg: RunConfig, out: Path, progress: bool):
    """(spectrum paths or folder, catalogue, truth table or None) for the configured source.

    A mock's catalogue is what a real user gives prepare: its GSWLC-2 table joined with its MPA-JHU
    gal_info + gal_fiboh files (metallicity) by the code of ``galvae catalog``, written to
    RUN/mock/props.fits (the same bytes on a rerun, so prepare's resume still finds its dataset).
    """
    if cfg.source == "mock":
        from .sources.catalogs import join_catalog_files
        from .sources.mock import make_mock_survey

        survey = make_mock_survey(out / "mock", n=cfg.mock.n, seed=cfg.mock.seed, vary=cfg.mock.vary,
                                  workers=cfg.workers, progress=progress)
        props_path = out / "mock" / MOCK_PROPERTIES
        _, stats, _ = join_catalog_files(props_path, gswlc=[survey.catalog_path], mpajhu=survey.mpajhu_paths)
        log.info("mock catalogue (galvae catalog --gswlc %s --mpajhu %s --out %s):\n%s", survey.catalog_path.name,
                 " ".join(p.name for p in survey.mpajhu_paths), props_path, stats.summary())
        return survey.paths, props_path, survey.truth
    if cfg.source == "sdss":
        if not cfg.spectra:
            raise ValueError("--source sdss needs --spectra DIR (and usually --catalog FILE)")
        return cfg.spectra, cfg.catalog, None
    raise ValueError(f"unknown source {cfg.source!r}: 'mock' or 'sdss'")


def best_vae_cell(table, cells_dir: Path, best: dict | None = None) -> Path:
    """The plain VAE that select chose (best.json's ``one_se_plain_vae``: the one-standard-error rule among
    plain VAEs); without it (an older grid), the lowest mean BIC over seeds. Of its seeds, the one with the
    lowest validation loss."""
    rows = [r for r in table if r["status"] == "done" and int(r["n_conditions"]) == 0]
    if not rows:
        raise ValueError("no plain-VAE cell of the grid finished: nothing to explain")
    chosen = (best or {}).get("one_se_plain_vae")
    if chosen:
        return cells_dir.parent / chosen["model_dir"]
    by_d: dict = {}
    for r in rows:
        by_d.setdefault(int(r["d"]), []).append(r)
    d_best = min(by_d, key=lambda d: np.mean([float(r["bic_mean"]) for r in by_d[d]]))
    return cells_dir / str(lowest_val_loss(by_d[d_best])["cell"])


def single_condition_cells(table, cells_dir: Path) -> list[Path]:
    """For Figure 5: per single condition, its CVAE of smallest d (the seed with the lowest validation loss)."""
    by_condition: dict = {}
    for r in table:
        if r["status"] == "done" and int(r["n_conditions"]) == 1:
            by_condition.setdefault(str(r["conditions"]), []).append(r)
    chosen = []
    for _, rows in sorted(by_condition.items()):
        d_min = min(int(r["d"]) for r in rows)
        chosen.append(lowest_val_loss([r for r in rows if int(r["d"]) == d_min]))
    return [cells_dir / str(r["cell"]) for r in chosen]


def run(out_dir, cfg: RunConfig, progress: bool = True) -> Path:
    """Run every stage into ``out_dir``; return the report's path."""
    from .explain import explain
    from .prepare import open_dataset, prepare_dataset
    from .report.html import write_report
    from .select import conditions_needed, parse_conditions, parse_latent, select_grid

    out = Path(out_dir).resolve()  # artifacts refer to each other by path: make them cwd-independent
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.json", cfg.to_json())
    timings: dict = {}
    dask = dict(scheduler=cfg.scheduler, cluster=cfg.cluster,
                workers=cfg.workers)

    if cfg.dataset:  # prepared already (e.g. hours of SDSS files): the stages start from it
        data, truth = Path(cfg.dataset).resolve(), None
        open_dataset(data, load=False)  # a clear error now rather than inside every grid cell
    else:
        data = out / "dataset.zarr"
        with _stage("source", timings):
            spectra, catalog, truth = source_inputs(cfg, out, progress)
        with _stage("prepare", timings):
            prepared = prepare_dataset(spectra, data, catalog=catalog, progress=progress, **dask,
                                       config=cfg.prepare.to_config())
            log.info("%s", prepared.summary())
    with _stage("select", timings):
        s = cfg.select
        condition_sets = parse_conditions(s.conditions)
        grid = select_grid(data, out / "select", latent=parse_latent(s.latent),
                           conditions=condition_sets, seeds=s.seeds, arch=s.arch, epochs=s.epochs,
                           needed=conditions_needed(condition_sets),
                           patience=s.patience, time_limit=s.time_limit, refine_steps=s.refine_steps,
                           warm_start=s.warm_start, progress=progress, **dask,
                           **({"train_offset": False} if s.fixed_offset else {}))
    with _stage("explain", timings):
        cells = out / "select" / "cells"
        explain(best_vae_cell(grid.table, cells, grid.best), data, out, truth=truth,
                cvae_dirs=single_condition_cells(grid.table, cells), n_boot=cfg.explain.n_boot,
                n_background=cfg.explain.shap_background, n_explain=cfg.explain.shap_explain,
                progress=progress)
    with _stage("report", timings):
        report = write_report(out, data, out / "analysis", select_dir=out / "select",
                              config={**cfg.to_dict(), "stage_seconds": timings})
    write_text(out / "timings.json", json.dumps(timings, indent=2))
    return Path(report)
