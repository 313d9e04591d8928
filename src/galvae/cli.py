"""The ``galvae`` command line: one verb per pipeline stage (docs/design.md §1).

Each verb parses its options, calls the stage's plain Python function, prints a tally, and returns
an exit status: 0 success, 1 when nothing usable remains (or ``--strict`` and something was rejected),
2 for bad arguments or unreadable inputs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__

log = logging.getLogger("galvae")


def _cmd_inspect(args) -> int:
    """Read spectrum files and report what was read and what was rejected, with reasons."""
    from .sources.sdss import expand_spectrum_paths, read_spectra

    paths = expand_spectrum_paths(args.paths)
    if not paths:
        print("no spectrum files found", file=sys.stderr)
        return 2
    spectra, rejects = read_spectra(paths, workers=args.workers, progress=not args.quiet)
    if args.out:
        from astropy.table import Table

        rows = [(s.id, s.specobjid, s.z, s.z_err, s.zwarning, s.spec_class, s.subclass, s.vdisp,
                 s.sn_median, s.flux.size, s.n_good, s.path) for s in spectra]
        names = ("id", "specobjid", "z", "z_err", "zwarning", "class", "subclass", "vdisp", "sn_median",
                 "n_pix", "n_good", "path")
        Table(rows=rows, names=names).write(args.out, overwrite=True)
    for r in rejects:
        print(f"rejected {r.path}: {r.reason}")
    print(f"read {len(spectra)} spectra, rejected {len(rejects)} of {len(paths)} files")
    if not spectra or (args.strict and rejects):
        return 1
    return 0


def _cmd_catalog(args) -> int:
    """Join catalogues on (plate, mjd, fiber) into one properties table and print the tally."""
    from .sources import catalogs

    if not (args.gswlc or args.mpajhu or args.specobj):
        print("give at least one of --gswlc, --mpajhu, --specobj", file=sys.stderr)
        return 2
    props, stats, skipped = catalogs.join_catalog_files(args.out, gswlc=args.gswlc, mpajhu=args.mpajhu,
                                                        specobj=args.specobj)
    for source, line, reason in skipped:
        print(f"skipped {source} line {line}: {reason}")
    print(stats.summary())
    print(f"wrote {len(props)} rows to {args.out}")
    return 0 if len(props) else 1


def _cmd_download(args) -> int:
    """Select targets from a catalogue and fetch their spec-lite files; print the tally."""
    from .sources import download

    tally = download.download_from_catalog(
        args.catalog, args.out, zmax=args.zmax, limit=args.limit, base_url=args.base_url,
        release=args.release, run2d_sdss=args.run2d_sdss, run2d_boss=args.run2d_boss,
        workers=args.workers, retries=args.retries, timeout=args.timeout, progress=not args.quiet)
    for tid, reason in tally.failed:
        print(f"failed {tid}: {reason}")
    selection = ", ".join(f"{k} {v}" for k, v in tally.selection.items())
    print(f"catalogue: {selection}")
    print(tally.summary())
    return tally.exit_status(strict=args.strict)


def _cmd_mock(args) -> int:
    """Make (or find, cached by configuration) a bagpipes mock survey in SDSS formats."""
    from .sources.mock import make_mock_survey

    survey = make_mock_survey(
        args.out, n=args.n, seed=args.seed, vary=args.vary, workers=args.workers, zmin=args.zmin,
        zmax=args.zmax, flux_limit=None if args.no_flux_limit else args.flux_limit, progress=not args.quiet)
    state = "found (cached)" if survey.from_cache else "made"
    print(f"{state} {len(survey.paths)} mock spectra in {Path(args.out) / 'spectra'}")
    print(f"catalogue (GSWLC-2 format): {survey.catalog_path}\ntruth table: {survey.truth_path}")
    print(f"MPA-JHU DR7 format (metallicity; join with galvae catalog --mpajhu): "
          f"{' '.join(str(p) for p in survey.mpajhu_paths)}")
    return 0


def _cmd_prepare(args) -> int:
    """Spectrum files (+ catalogue) → dataset.zarr: rest frame, resample, masks, gappy-PCA fill."""
    from .prepare import PrepareConfig, prepare_dataset

    cfg = PrepareConfig(n_pix=args.n_pix, wave_min=args.wave_min, wave_max=args.wave_max, zmax=args.zmax,
                        min_sn=args.min_sn, max_bad_fraction=args.max_bad_fraction,
                        n_components=args.components, n_iter=args.iterations, seed=args.seed)
    from .sources.sdss import expand_spectrum_paths

    spectra = args.spectra[0] if len(args.spectra) == 1 else expand_spectrum_paths(args.spectra)
    try:
        result = prepare_dataset(spectra, args.out, catalog=args.catalog, config=cfg, scheduler=args.scheduler,
                                 cluster=args.cluster, workers=args.workers, progress=not args.quiet)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if "passed the selection" in str(exc) else 2
    print(result.summary())
    return 1 if args.strict and result.n_rejected else 0


# `galvae train` options that only a VAE uses: set with --arch pca/wpca, they are refused, not ignored
PCA_IGNORES = ("conditions", "n_basis", "fixed_offset", "loss", "beta", "epochs", "patience", "time_limit", "batch_size", "lr",
               "resume")


def _add_fixed_offset(p) -> None:
    p.add_argument("--fixed-offset", action="store_true",
                   help="compact: keep the decoder's per-pixel offset at the training mean; training then runs on "
                        "each spectrum's statistics in the eigenbasis, not its pixels (fast at survey size)")


def _cmd_train(args) -> int:
    """Train one VAE / CVAE (or a PCA baseline) on a prepared dataset."""
    from .fit import fit, fit_pca
    from .prepare import open_dataset

    if args.resume and args.overwrite:
        raise ValueError("--resume continues the model in --out and --overwrite replaces it: choose one")
    conditions = tuple(c for c in (args.conditions or "").split(",") if c)
    if args.arch in ("pca", "wpca"):
        vae_only = [f"--{k.replace('_', '-')}" for k in PCA_IGNORES if getattr(args, k) != args.parser.get_default(k)]
        if vae_only:
            raise ValueError(f"{' '.join(vae_only)} do not apply to --arch {args.arch} (a PCA baseline has no "
                             "conditions and no training loop)")
    data = open_dataset(args.data, load=False)  # spectra read from the store as training needs them
    if args.arch in ("pca", "wpca"):
        out = fit_pca(data, args.out, n_components=args.latent, weighted=args.arch == "wpca", overwrite=args.overwrite)
    else:
        out = fit(data, args.out, latent_dim=args.latent, conditions=conditions, arch=args.arch, loss=args.loss,
                  beta=args.beta, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                  patience=args.patience, device=args.device, resume=args.resume, progress=not args.quiet,
                  time_limit=args.time_limit, overwrite=args.overwrite, n_basis=args.n_basis,
                  train_offset=not args.fixed_offset)
    import json

    metrics = json.loads((Path(out) / "metrics.json").read_text())
    test = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    print(f"model written to {out}")
    print("test: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in test.items()))
    return 0


def _cmd_encode(args) -> int:
    """Encode a dataset, or your own spec files, with a trained model into a latent table."""
    if args.spectra:
        return _encode_files(args)
    if not args.data:
        raise ValueError("give --data dataset.zarr, or --spectra FILE/FOLDER … for spec files of your own")
    from .fit import encode_dataset
    from .prepare import open_dataset

    table = encode_dataset(args.model, open_dataset(args.data, load=False), args.out, device=args.device,
                           progress=not args.quiet)
    print(f"latent table of {len(table)} spectra written to {args.out}")
    return 0


def _encode_files(args) -> int:
    """`galvae encode --spectra`: raw spec files, prepared as the model's training set was."""
    import numpy as np

    from .explain.external import encode_spectra
    from .fit import _write_table

    try:
        table, rejects = encode_spectra(args.model, args.spectra, data=args.data, rotation=args.analysis,
                                        workers=1, device=args.device, progress=not args.quiet)
    except ValueError as exc:
        if "gave a usable spectrum" not in str(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _write_table(table, Path(args.out))
    for r in rejects:
        print(f"rejected {r['path']}: {r['reason']}")
    print(f"encoded {len(table)} of {len(table) + len(rejects)} files, rejected {len(rejects)}; "
          f"table written to {args.out}")
    order = np.argsort(np.nan_to_num(np.asarray(table["outlier_percentile"], float), nan=101.0))[:5]
    for i in order:
        print(f"  {table['id'][i]}  outlier percentile {table['outlier_percentile'][i]:5.1f}  "
              f"chi2/pixel {table['chi2_per_pixel'][i]:.3g}  {table['path'][i]}")
    return 1 if args.strict and len(rejects) else 0


def _cmd_run(args) -> int:
    """Every stage from one configuration: mock (or SDSS files) → prepare → select → explain → report."""
    from .config import load_config
    from .run import run

    cfg = load_config(args.preset, args.config, source=args.source, spectra=args.spectra, catalog=args.catalog,
                      dataset=args.data, workers=args.workers, scheduler=args.scheduler, cluster=args.cluster,
                      listen=args.listen)
    from . import _dask

    _dask.set_listen_address(cfg.listen)
    if cfg.source == "sdss" and not cfg.catalog and not cfg.dataset:
        log.warning("no --catalog: physical properties will be NaN, CVAEs and MI cannot run")
    report = run(args.out, cfg, progress=not args.quiet)
    print(f"report: {report}")
    return 0


def _cmd_select(args) -> int:
    """Train the grid d × condition subsets × seeds and pick the model by BIC."""
    from .select import conditions_needed, parse_conditions, parse_latent, select_grid

    condition_sets = parse_conditions(args.conditions)
    result = select_grid(args.data, args.out, latent=parse_latent(args.latent), conditions=condition_sets,
                         seeds=args.seeds, arch=args.arch, epochs=args.epochs,
                         needed=conditions_needed(condition_sets),
                         patience=args.patience, time_limit=args.time_limit, scheduler=args.scheduler,
                         cluster=None if args.cluster == "local" else args.cluster, workers=args.workers,
                         progress=not args.quiet, refine_steps=args.refine_steps, warm_start=args.warm_start,
                         n_iwae=args.n_iwae, **({"train_offset": False} if args.fixed_offset else {}))
    print(f"{result.n_done} cells done, {result.n_failed} failed, in {result.seconds:.0f} s; table: "
          f"{Path(args.out) / 'grid.ecsv'}")
    if result.best:
        b = result.best
        print(f"best by mean BIC: {b.get('conditions_label')} d={b.get('d')} (k={b.get('k')}), "
              f"BIC {b.get('bic_mean'):.1f} ± {b.get('bic_seed_std'):.1f} over seeds, model {b.get('model_dir')}")
        r = b.get("one_se")
        if r:
            print(f"recommended (one-standard-error rule on paired BIC differences): {r.get('conditions_label')} "
                  f"d={r.get('d')} (k={r.get('k')}), BIC {r.get('bic_mean'):.1f}, model {r.get('model_dir')}")
    return 0 if result.n_done else 1


def _cmd_explain(args) -> int:
    """Rotate a VAE's latents to D1…Dd and explain them: MI, maps, traversals, SHAP, latent catalogue."""
    from .explain import explain

    result = explain(args.model, args.data, args.out, truth=args.truth, cvae_dirs=args.cvae or (),
                     seed=args.seed, n_boot=args.n_boot, n_background=args.shap_background,
                     n_explain=args.shap_explain, progress=not args.quiet)
    ratios = ", ".join(f"D{j + 1} {100 * r:.0f}%" for j, r in enumerate(result.rotation.explained_variance_ratio_))
    print(f"analysis written to {result.analysis_dir}\nexplained variance: {ratios}")
    return 0


def _cmd_report(args) -> int:
    """Write the self-contained HTML report of a run folder (or of explicitly given artifacts)."""
    import json

    from .report import write_report

    run = Path(args.run) if args.run else None
    data = args.data or (run / "dataset.zarr" if run else None)
    analysis = args.analysis or (run / "analysis" if run else None)
    select = args.select or (run / "select" if run and (run / "select").exists() else None)
    out = args.out or run
    if not (data and analysis and out):
        print("give --run DIR, or --data, --analysis and --out", file=sys.stderr)
        return 2
    config = None
    if run and (run / "config.json").exists():
        config = json.loads((run / "config.json").read_text())
    path = write_report(out, data, analysis, select_dir=select, config=config)
    print(f"report: {path}")
    return 0


def _add_dask_options(p) -> None:
    """--workers / --scheduler / --cluster, the same for every stage that fans out on Dask."""
    p.add_argument("--workers", type=int, default=None, help="local Dask workers (default: one per core)")
    p.add_argument("--scheduler", default=None,
                   help="address of a running Dask scheduler to join, or 'sync' to run in this process")
    p.add_argument("--cluster", choices=["local", "slurm"], default=None,
                   help="start a local cluster (default) or SLURM workers via dask-jobqueue")
    p.add_argument("--listen", default=None, metavar="ADDRESS",
                   help="address the Dask scheduler, workers and dashboard bind (default 127.0.0.1: nothing "
                        "reachable from other machines; docs/cluster_safety.md)")


def _positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_training_length_options(p) -> None:
    """--epochs / --patience / --time-limit, the same for one training and for every cell of a grid."""
    p.add_argument("--epochs", type=_positive_int, default=100)
    p.add_argument("--patience", type=_positive_int, default=10, help="early stopping on val (epochs)")
    p.add_argument("--time-limit", type=float, default=None, help="seconds of training per model")


def build_parser() -> argparse.ArgumentParser:
    from .prepare.pipeline import PrepareConfig  # light: neither torch nor zarr
    from .sources import download as dl

    parser = argparse.ArgumentParser(
        prog="galvae",
        description="Informative latent variables of galaxy spectra: read, prepare, fit, select, explain.",
    )
    parser.add_argument("--version", action="version", version=f"galvae {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="the whole analysis from one command (default: the embedded mock survey)")
    p.add_argument("--out", default="galvae-run", help="run folder (default ./galvae-run); reruns resume")
    p.add_argument("--preset", default="demo", choices=["demo", "paper"],
                   help="demo: sized for a 2-core laptop (default); paper: the paper's full grid, for GPUs")
    p.add_argument("--config", help="YAML file overriding preset settings (sections mock/prepare/select/explain)")
    p.add_argument("--source", choices=["mock", "sdss"], default=None, help="mock (default) or sdss files")
    p.add_argument("--spectra", help="folder of SDSS spec files (with --source sdss)")
    p.add_argument("--catalog", help="GSWLC-2 or specObj catalogue (with --source sdss)")
    p.add_argument("--data", help="a dataset.zarr from `galvae prepare`: skip the source and prepare stages")
    _add_dask_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("inspect", help="read SDSS spectrum files; list what was read and what was rejected")
    p.add_argument("paths", nargs="+", help="SDSS spec files, or folders: every *.fits / *.fits.gz below is tried")
    p.add_argument("--out", help="write a table of the spectra read (FITS or ECSV, by extension)")
    p.add_argument("--workers", type=int, default=None, help="reader processes (default: one per core)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any file was rejected")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("catalog", help="join GSWLC-2 / MPA-JHU / specObj catalogues into a properties table")
    p.add_argument("--gswlc", nargs="+", metavar="FILE",
                   help="GSWLC-2 tables in priority order (X2 before M2 before A2)")
    p.add_argument("--mpajhu", nargs=2, metavar=("GAL_INFO", "GAL_FIBOH"), help="MPA-JHU gal_info and gal_fiboh")
    p.add_argument("--specobj", metavar="FILE", help="an SDSS specObj table")
    p.add_argument("--out", required=True, help="output table (FITS or ECSV, by extension)")
    p.set_defaults(func=_cmd_catalog)

    p = sub.add_parser("download", help="fetch SDSS spec-lite files for a catalogue's galaxies (resumable)")
    p.add_argument("--catalog", required=True, help="GSWLC-2 table or SDSS specObj FITS table")
    p.add_argument("--out", required=True, help="folder for the files (one sub-folder per plate)")
    p.add_argument("--zmax", type=float, default=0.1, help="keep 0 < z < ZMAX (default 0.1)")
    p.add_argument("--limit", type=int, default=None, help="fetch at most this many targets")
    p.add_argument("--base-url", default=dl.DEFAULT_BASE_URL, help="SAS base URL")
    p.add_argument("--release", default=dl.DEFAULT_RELEASE, help=f"data release folder (default {dl.DEFAULT_RELEASE})")
    p.add_argument("--run2d-sdss", default=dl.DEFAULT_RUN2D_SDSS,
                   help=f"run2d of SDSS-I/II plates (default {dl.DEFAULT_RUN2D_SDSS})")
    p.add_argument("--run2d-boss", default=dl.DEFAULT_RUN2D_BOSS,
                   help=f"run2d of BOSS/eBOSS plates (default {dl.DEFAULT_RUN2D_BOSS})")
    p.add_argument("--workers", type=int, default=8, help="concurrent downloads (default 8)")
    p.add_argument("--retries", type=int, default=5, help="retries of a transient failure (default 5)")
    p.add_argument("--timeout", type=float, default=60.0, help="socket timeout in s (default 60)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any file is missing (404)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("mock", help="make a bagpipes mock survey: SDSS spec-lite files, GSWLC-2 and MPA-JHU catalogues, truth")
    p.add_argument("--n", type=int, default=1000, help="number of galaxies (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--vary", default=None,
                   help="comma-separated generating parameters allowed to vary (others fixed): "
                        "logmstar,z,logssfr,age,logzsol,a_v,logu,vdisp,alpha_fe,agn; default: all")
    p.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    p.add_argument("--zmin", type=float, default=0.01)
    p.add_argument("--zmax", type=float, default=0.1)
    p.add_argument("--flux-limit", type=float, default=17.77, help="Petrosian r limit (default 17.77)")
    p.add_argument("--no-flux-limit", action="store_true", help="draw without a flux limit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_mock)

    pc = PrepareConfig()
    p = sub.add_parser("prepare", help="spectrum files (+ catalogue) → dataset.zarr (rest frame, masks, fill, splits)")
    p.add_argument("--spectra", nargs="+", required=True, help="a folder (every *.fits / *.fits.gz below it is tried), or files")
    p.add_argument("--catalog", help="GSWLC-2 or specObj catalogue with the galaxies' properties")
    p.add_argument("--out", required=True, help="the dataset, e.g. dataset.zarr")
    # every default is PrepareConfig's own (one home); the options name its fields
    p.add_argument("--zmax", type=float, default=pc.zmax, help=f"keep 0 < z < ZMAX (default {pc.zmax:g})")
    p.add_argument("--min-sn", type=float, default=pc.min_sn, help="floor on the median S/N per pixel")
    p.add_argument("--max-bad-fraction", type=float, default=pc.max_bad_fraction,
                   help=f"reject spectra with more bad rest-frame pixels than this (default {pc.max_bad_fraction:g})")
    p.add_argument("--n-pix", type=int, default=pc.n_pix, help=f"rest-frame pixels (default {pc.n_pix})")
    p.add_argument("--wave-min", type=float, default=pc.wave_min, help=f"Å (default {pc.wave_min:g})")
    p.add_argument("--wave-max", type=float, default=pc.wave_max, help=f"Å (default {pc.wave_max:g})")
    p.add_argument("--components", type=int, default=pc.n_components,
                   help=f"gappy-PCA eigenspectra (default {pc.n_components})")
    p.add_argument("--iterations", type=int, default=pc.n_iter, help=f"gappy-PCA iterations (default {pc.n_iter})")
    p.add_argument("--seed", type=int, default=pc.seed)
    _add_dask_options(p)
    p.add_argument("--strict", action="store_true", help="exit 1 if any spectrum was rejected")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("train", help="train one VAE / CVAE (or PCA baseline) on a dataset")
    p.add_argument("--data", required=True, help="dataset.zarr from `galvae prepare`")
    p.add_argument("--latent", type=_positive_int, required=True, help="latent dimension d (components for PCA)")
    p.add_argument("--conditions", default="", help="CVAE conditions, comma-separated: logmstar,logsfr,logssfr,metallicity")
    p.add_argument("--out", required=True, help="model directory")
    p.add_argument("--arch", default="compact", choices=["compact", "paper", "pca", "wpca"],
                   help="compact (fast MLP, default), paper (the authors' CNN), pca, wpca (ivar-weighted EM-PCA)")
    p.add_argument("--n-basis", type=int, default=32,
                   help="compact: eigenspectra of the training split the MLPs read and write through "
                        "(default 32; 0: an MLP on all pixels)")
    _add_fixed_offset(p)
    p.add_argument("--loss", default="gaussian", choices=["gaussian", "mse", "authors"],
                   help="gaussian ivar likelihood (default), the paper's plain MSE, or the authors' code's "
                        "objective, 1e3·MSE + 0.1·KL averaged over latent dimensions (with --beta 1)")
    p.add_argument("--beta", type=float, default=1.0, help="weight of the KL term (default 1)")
    _add_training_length_options(p)
    p.add_argument("--batch-size", type=_positive_int, default=None, help="default 128 on CPU, 2048 on GPU")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, …")
    p.add_argument("--resume", action="store_true", help="continue an interrupted training in --out")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a directory that holds a model")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train, parser=p)

    p = sub.add_parser("encode", help="encode a dataset, or your own spec files, with a trained model → latent table")
    p.add_argument("--model", required=True, help="model directory from `galvae train` (or a select cell)")
    p.add_argument("--data", help="dataset.zarr to encode; with --spectra: the model's training dataset, "
                                  "needed once when the model folder has no reference.npz yet")
    p.add_argument("--spectra", nargs="+", metavar="FILE",
                   help="raw SDSS/BOSS spec files or folders: prepared as the training set was, then encoded, "
                        "with an outlier score (ELBO percentile among training spectra of similar S/N)")
    p.add_argument("--analysis", help="with --spectra: explain's analysis folder, for D1…Dd "
                                      "(default: the model folder's rotation.json, if explain left one)")
    p.add_argument("--out", required=True, help="latent table (FITS or ECSV, by extension)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--strict", action="store_true", help="with --spectra: exit 1 if any file was rejected")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_encode)

    p = sub.add_parser("select", help="BIC grid: latent size × condition subsets × seeds, on Dask (resumable)")
    p.add_argument("--data", required=True, help="dataset.zarr")
    p.add_argument("--out", required=True, help="grid folder (rerun to resume)")
    p.add_argument("--latent", default="1-8", help="latent sizes, e.g. 1-8 or 2,4,6 (default 1-8)")
    p.add_argument("--conditions", default="all",
                   help="'all' (16 subsets of logmstar, logsfr, logssfr, metallicity) or e.g. none,logmstar,logmstar+logsfr")
    p.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3)")
    p.add_argument("--arch", default="compact", choices=["compact", "paper"])
    p.add_argument("--refine-steps", type=int, default=None,
                   help="Adam steps refining each test spectrum's latent to its maximum likelihood, for BIC "
                        "(default 40; 0: BIC at the encoder's posterior mean)")
    _add_fixed_offset(p)
    p.add_argument("--warm-start", action="store_true",
                   help="train each condition set and seed in increasing d, each model starting from the "
                        "previous one: fewer epochs per cell on a big survey")
    p.add_argument("--n-iwae", type=int, default=16, help="importance samples of the IWAE bound (default 16)")
    _add_training_length_options(p)
    _add_dask_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_select)

    p = sub.add_parser("explain", help="D1…Dd rotation, mutual information, maps, traversals, SHAP of a VAE")
    p.add_argument("--model", required=True, help="a plain VAE's model directory")
    p.add_argument("--data", required=True, help="the dataset.zarr it was trained on")
    p.add_argument("--out", required=True, help="folder; the analysis goes to OUT/analysis")
    p.add_argument("--truth", help="a mock's truth.fits: MI and Spearman ρ with every true parameter")
    p.add_argument("--cvae", nargs="*", help="CVAE model directories to decode along their conditions (Figure 5)")
    p.add_argument("--n-boot", type=int, default=30, help="resamplings for MI uncertainties (default 30)")
    p.add_argument("--shap-background", type=int, default=100, help="SHAP background spectra (default 100)")
    p.add_argument("--shap-explain", type=int, default=50, help="spectra explained by SHAP (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("report", help="self-contained HTML report of a run")
    p.add_argument("--run", help="a run folder (dataset.zarr, select/, analysis/ inside)")
    p.add_argument("--data", help="dataset.zarr (default RUN/dataset.zarr)")
    p.add_argument("--analysis", help="explain's analysis folder (default RUN/analysis)")
    p.add_argument("--select", help="select's folder (default RUN/select when present)")
    p.add_argument("--out", help="folder for report/index.html (default RUN)")
    p.set_defaults(func=_cmd_report)

    return parser


# commands that write into --out: each holds the folder's lock while it runs (galvae._lock)
WRITERS = ("prepare", "train", "select", "run")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    # Off a terminal the progress bars give way to one line per stage (galvae._progress): show those lines.
    logging.getLogger("galvae.progress").setLevel(logging.INFO)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if args.command in WRITERS:  # one writer per output folder: a second one stops here, at once
            from . import _dask
            from ._lock import folder_lock

            _dask.set_listen_address(getattr(args, "listen", None))
            with folder_lock(args.out, f"galvae {args.command}"):
                return args.func(args)
        return args.func(args)
    except (OSError, ValueError) as exc:  # bad arguments or unreadable inputs: say which, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
