"""The explain driver: :func:`explain` runs every part of the analysis on one model and dataset and
writes ``OUT/analysis/`` (the package docstring lists the files); :func:`encode_external` puts another
dataset in the same basis. Rerunning skips the expensive parts whose inputs and settings are unchanged
(``stamps.json``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from .._jsonio import write_json as _write_json
from ..prepare.dataset import take_rows
from .rotation import LatentRotation

log = logging.getLogger(__name__)

ANALYSIS = "analysis"


@dataclass
class ExplainResult:
    """What :func:`explain` wrote and found."""

    analysis_dir: Path
    rotation: LatentRotation
    latents: object                 # astropy Table (latents.fits)
    mi: object                      # astropy Table (mi.ecsv), catalogue and truth properties
    spearman: object                # astropy Table (spearman.ecsv)
    summary: dict
    figures: dict = field(default_factory=dict)  # name → PNG path


# ---------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------

def _open(dataset):
    """A Dataset from a path, or the Dataset itself, with plain NumPy strings in its props."""
    from .catalog import with_plain_ids

    if hasattr(dataset, "flux"):
        return with_plain_ids(dataset)
    from ..prepare import open_dataset

    return with_plain_ids(open_dataset(dataset, load=False))  # spectra read in blocks where used


def load_truth(truth):
    """The truth table (astropy) from a path to truth.fits, a Table, or None."""
    if truth is None or hasattr(truth, "colnames"):
        return truth
    from astropy.table import Table

    return Table.read(truth, mask_invalid=False)


def align_truth(truth, ids) -> dict:
    """Truth's numeric columns aligned with ``ids`` (NaN where an id has no truth row), as a dict."""
    from .mutual_info import numeric_columns

    pos = {str(k): i for i, k in enumerate(np.asarray(truth["id"]).astype(str))}
    index = np.array([pos.get(str(i), -1) for i in ids])
    have = index >= 0
    out = {}
    for name in numeric_columns(truth):
        col = np.asarray(truth[name], dtype=np.float64)
        v = np.full(len(ids), np.nan)
        v[have] = col[index[have]]
        out[name] = v
    return out


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _model_digest(model_dir) -> str:
    d = Path(model_dir)
    cfg = (d / "config.json").read_text()
    weights = [p for p in (d / "model.safetensors", d / "weights.pt") if p.exists()]
    stat = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in weights]
    return _digest(cfg, stat)


def _truth_digest(truth) -> str | None:
    if truth is None:
        return None
    return _digest(list(truth.colnames), len(truth), [str(x) for x in np.asarray(truth["id"])[:50]])


class _Stamps:
    """``stamps.json``: the key of the inputs each finished part was computed from."""

    def __init__(self, path: Path, force: bool):
        self.path, self.force = path, force
        self.data = json.loads(path.read_text()) if path.exists() and not force else {}

    def fresh(self, part: str, key: str, *files: Path) -> bool:
        return not self.force and self.data.get(part) == key and all(Path(f).exists() for f in files)

    def done(self, part: str, key: str) -> None:
        self.data[part] = key
        _write_json(self.path, self.data)






def _write_ecsv(table, path: Path) -> None:
    atomic_write(path, lambda tmp: table.write(tmp, format="ascii.ecsv", overwrite=True))


def _savez(path: Path, arrays: dict) -> None:
    atomic_write(path, lambda tmp: np.savez_compressed(tmp, **arrays))


# ---------------------------------------------------------------------------------------------------
# the parts
# ---------------------------------------------------------------------------------------------------

def _mi_rows(split: np.ndarray, mi_split: str, min_rows: int) -> tuple[np.ndarray, str]:
    """Rows MI is computed on: ``mi_split`` ('test', 'train', 'all'), or all rows if it holds < min_rows."""
    if mi_split == "all":
        return np.arange(len(split)), "all"
    rows = np.flatnonzero(split == mi_split)
    if len(rows) < min_rows:
        log.warning("only %d %s spectra: mutual information uses all %d spectra", len(rows), mi_split, len(split))
        return np.arange(len(split)), f"all ({mi_split} has only {len(rows)})"
    return rows, mi_split


def _columns(props, rows, names=None) -> dict:
    names = names or (props.colnames if hasattr(props, "colnames") else list(props))
    return {n: np.asarray(props[n], dtype=np.float64)[rows] for n in names
            if np.asarray(props[n]).dtype.kind in "biuf"}


def _information_tables(D, names, props, truth_cols, rows, properties, n_boot, seed, progress):
    """MI and Spearman tables for catalogue properties and, when given, every truth column."""
    from astropy.table import vstack

    from .mutual_info import mi_table, spearman_table

    cat = _columns(props, rows)
    mi = [mi_table(D[rows], cat, properties, names, n_boot=n_boot, max_samples=None, seed=seed,
                   source="catalog", progress=progress)]
    rho = [spearman_table(D[rows], cat, properties, names, source="catalog")]
    if truth_cols:
        tr = {k: v[rows] for k, v in truth_cols.items()}
        mi.append(mi_table(D[rows], tr, list(tr), names, n_boot=n_boot, max_samples=None, seed=seed,
                           source="truth", progress=progress))
        rho.append(spearman_table(D[rows], tr, list(tr), names, source="truth"))
    meta = dict(mi[0].meta)
    mi, rho = vstack(mi, metadata_conflicts="silent"), vstack(rho, metadata_conflicts="silent")
    mi.meta.update(meta)
    return mi, rho


def _shap_sets(dataset, n_background: int, n_explain: int, seed: int):
    from .attribution import stratified_rows

    logm = np.asarray(dataset.props["logmstar"], dtype=np.float64) if "logmstar" in dataset.props.colnames \
        else np.full(len(dataset), np.nan)
    pool = dataset.indices("test")
    if len(pool) < 5:  # tiny datasets: explain validation spectra too
        pool = np.concatenate([pool, dataset.indices("val")])
    bg = stratified_rows(dataset.indices("train"), logm, n_background, seed=seed)
    ex = stratified_rows(pool, logm, n_explain, seed=seed + 1)
    return bg, ex


def _cvae_traversals(cvae_dirs, dataset, progress):
    from .._progress import tqdm

    from ..models import load_model
    from ..models.conditions import rows_with_conditions
    from .traversal import condition_traversals

    out = []
    for d in tqdm(list(cvae_dirs), desc="CVAE traversals", disable=not progress, unit="model"):
        model = load_model(d)
        if not getattr(model, "condition_names", ()):
            log.warning("%s has no conditions: skipped for the CVAE traversals", d)
            continue
        train = dataset.indices("train")
        train = train[rows_with_conditions(dataset.props, model.condition_names)[train]]
        out += condition_traversals(model, dataset.props, train, label=f"{Path(d).name}")
    return out


# ---------------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------------

def explain(model_dir, dataset_path, out_dir, truth=None, cvae_dirs=(), seed: int = 0, progress: bool = True,
            properties=None, n_boot: int = 30, max_mi_samples: int | None = 5000, mi_split: str = "test",
            min_mi_rows: int = 50, map_bins: int | None = None, min_count: int = 5, n_background: int = 100,
            n_explain: int = 50, shap_method: str = "deep", shap_dtype: str = "float64", figures: bool = True,
            force: bool = False, predictive: bool = True) -> ExplainResult:
    """Explain a trained VAE's latents on a dataset; writes ``out_dir/analysis/`` and returns what it found.

    Parameters
    ----------
    model_dir : a plain VAE's model directory (galvae.fit.fit).
    dataset_path : the dataset.zarr it was trained on (or a Dataset).
    out_dir : run directory; results go to ``out_dir/analysis``.
    truth : mock truth (truth.fits path or Table, joined on ``id``): MI and ρ for every truth column too.
    cvae_dirs : CVAE model directories, each decoded along its conditions (Figure 5).
    properties : catalogue properties for MI, ρ and maps (default: mutual_info.PROPERTIES).
    n_boot : half-samples for the MI uncertainties. max_mi_samples : cap on rows for MI (speed).
    mi_split : 'test' (docs/design.md §3: reported numbers use test), 'train' or 'all'; all rows are used when
        the split has fewer than ``min_mi_rows`` spectra (recorded in summary.json).
    map_bins, min_count : Figure 1's bins per axis (default: from the number of spectra, ≤ 20) and its
        minimum galaxies per bin.
    n_background, n_explain : SHAP background (train) and explained (test) spectra, stratified by log M*.
    shap_method : 'deep' (shap DeepExplainer) or 'integrated_gradients'.
    shap_dtype : 'float64' (default: additivity to round-off, ~1e-13) or 'float32' (≈2.5× faster on CPU,
        additivity to ~1e-5; the tolerance stated becomes 1e-4).
    force : recompute every part even when stamps.json says it is done.
    predictive : R² of properties from the latents of this VAE, the CVAEs and PCA-d / weighted PCA-d
        fitted on train, on the test split (``r2.ecsv``, :mod:`.predictive`).
    """
    from .maps import latent_maps, maps_to_npz
    from .mutual_info import PROPERTIES, capped_rows, tracking_summary
    from .traversal import latent_traversals, traversals_to_npz

    t_start = time.perf_counter()
    timings = {}
    out = Path(out_dir) / ANALYSIS
    (out / "figures").mkdir(parents=True, exist_ok=True)
    dataset = _open(dataset_path)
    truth = load_truth(truth)
    properties = tuple(properties or PROPERTIES)
    stamps = _Stamps(out / "stamps.json", force)
    base = _digest(_model_digest(model_dir), dataset.attrs.get("inputs_digest"), len(dataset))

    from ..models import load_model
    model = load_model(model_dir)
    if getattr(model, "condition_names", ()):
        raise ValueError(f"{model_dir} is a CVAE: explain a plain VAE (pass CVAEs as cvae_dirs)")

    # 1. latent catalogue + rotation
    t = time.perf_counter()
    from astropy.table import Table

    from .catalog import latent_catalog, read_latents, rotated_latents
    if stamps.fresh("latents", base, out / "latents.fits", out / "rotation.json"):
        log.info("latents.fits is up to date")
        latents, rotation = read_latents(out / "latents.fits"), LatentRotation.load(out / "rotation.json")
    else:
        latents, rotation = latent_catalog(model_dir, dataset, out / "latents.fits", progress=progress)
        rotation.save(out / "rotation.json")
        stamps.done("latents", base)
    D, names = rotated_latents(latents), rotation.names
    _keep_with_model(model_dir, dataset, latents, rotation)
    timings["latents"] = time.perf_counter() - t

    # 1b. the most unusual test spectra beside their reconstructions (cheap: a few spectra)
    from .unusual import unusual_arrays, unusual_rows
    unusual = unusual_arrays(model, dataset, latents, unusual_rows(latents)) if "outlier_percentile" in \
        latents.colnames else None
    if unusual is not None:
        _savez(out / "unusual.npz", unusual)

    # 2. mutual information and Spearman ρ
    t = time.perf_counter()
    split = np.asarray(latents["split"]).astype(str)
    rows, mi_split_used = _mi_rows(split, mi_split, min_mi_rows)
    rows = rows[capped_rows(len(rows), max_mi_samples, seed)]  # MI and Spearman on the same (capped) rows
    truth_cols = align_truth(truth, np.asarray(dataset.props["id"])) if truth is not None else None
    key = _digest(base, properties, n_boot, max_mi_samples, mi_split_used, seed, _truth_digest(truth))
    if stamps.fresh("mi", key, out / "mi.ecsv", out / "spearman.ecsv"):
        mi, rho = Table.read(out / "mi.ecsv"), Table.read(out / "spearman.ecsv")
    else:
        mi, rho = _information_tables(D, names, dataset.props, truth_cols, rows, properties, n_boot,
                                      seed, progress)
        mi.meta["split"] = rho.meta["split"] = mi_split_used
        _write_ecsv(mi, out / "mi.ecsv")
        _write_ecsv(rho, out / "spearman.ecsv")
        stamps.done("mi", key)
    timings["mutual_information"] = time.perf_counter() - t

    # 3. maps (cheap: always recomputed), on every spectrum
    t = time.perf_counter()
    map_props = _columns(dataset.props, slice(None))  # catalogue values: a mock's truth must not pose as them
    maps = latent_maps(D, map_props, [p for p in properties if p in map_props], bins=map_bins,
                       min_count=min_count)
    _savez(out / "maps.npz", maps_to_npz(maps))
    timings["maps"] = time.perf_counter() - t

    # 4. traversals (cheap), and the CVAEs'
    t = time.perf_counter()
    travs = latent_traversals(model, rotation)
    _savez(out / "traversals.npz", traversals_to_npz(travs, dataset.wave, dataset.unobserved))
    cvae_travs = []
    if cvae_dirs:
        cvae_travs = _cvae_traversals(cvae_dirs, dataset, progress)
        _savez(out / "cvae_traversals.npz", traversals_to_npz(cvae_travs, dataset.wave, dataset.unobserved))
    timings["traversals"] = time.perf_counter() - t

    # 5. SHAP
    t = time.perf_counter()
    from .attribution import explain_latents, load_shap, save_shap
    bg, ex = _shap_sets(dataset, n_background, n_explain, seed)
    key = _digest(base, bg.tolist(), ex.tolist(), shap_method, shap_dtype, "filled-mask")
    old = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    if stamps.fresh("shap", key, out / "shap.npz") and "fidelity" in old.get("shap", {}):
        shap_result = load_shap(out / "shap.npz")[0]
        shap_result.fidelity = old["shap"]["fidelity"]
    else:
        shap_result = explain_latents(model, rotation, dataset.flux, bg, ex, method=shap_method, dtype=shap_dtype)
        save_shap(shap_result, out / "shap.npz", dataset.wave, np.asarray(dataset.props["id"])[ex],
                  take_rows(dataset.flux, ex), take_rows(dataset.filled, ex), dataset.unobserved)
        stamps.done("shap", key)
    timings["shap"] = time.perf_counter() - t

    # 6. what the latents know: R² of properties, against PCA of the same d
    t = time.perf_counter()
    r2 = _latent_information(out, stamps, base, latents, split, dataset, truth, truth_cols, cvae_dirs, seed) \
        if predictive else None
    timings["latent_information"] = time.perf_counter() - t

    summary = _summary(model_dir, dataset, rotation, latents, mi, rho, names, mi_split_used, rows, shap_result,
                       cvae_dirs, cvae_travs, truth is not None, min_count, tracking_summary)
    if r2 is not None:
        from .predictive import verdict
        summary["latent_information"] = {"table": "r2.ecsv", "protocol": r2.meta["protocol"],
                                         "models": r2.meta.get("models", {}), "vae_vs_pca": verdict(r2),
                                         "vae_r2": {str(r["property"]): float(r["r2"]) for r in r2
                                                    if r["model"] == "vae" and r["method"] == "knn"
                                                    and r["source"] == "catalog"}}
    summary["shap"]["filled_share"] = shap_result.filled_share()  # of Σ|SHAP|: what Figure 6 greys
    summary["seconds"] = timings
    _write_json(out / "summary.json", summary)
    figs = {}
    if figures:
        t = time.perf_counter()
        from .figures import draw_figures

        figs = draw_figures(out)
        timings["figures"] = time.perf_counter() - t
        summary["figures"] = {k: str(Path(v).relative_to(out)) for k, v in figs.items()}
    summary["seconds"]["total"] = time.perf_counter() - t_start
    _write_json(out / "summary.json", summary)
    log.info("explain: %s written in %.1f s", out, summary["seconds"]["total"])
    return ExplainResult(out, rotation, latents, mi, rho, summary, figs)


def _latent_information(out, stamps, base, latents, split, dataset, truth, truth_cols, cvae_dirs, seed):
    """``r2.ecsv`` (:mod:`.predictive`), recomputed only when the models, data or truth changed."""
    from astropy.table import Table

    from ..models import load_model
    from .catalog import raw_latents
    from .predictive import PROTOCOL, latent_information

    # the protocol's text is in the key: a changed probe must not reuse an old table
    key = _digest(base, [_model_digest(d) for d in cvae_dirs], _truth_digest(truth), seed, PROTOCOL)
    if stamps.fresh("r2", key, out / "r2.ecsv"):
        return Table.read(out / "r2.ecsv")
    test = np.flatnonzero(split == "test")
    cvaes = {}
    for d in cvae_dirs:
        model = load_model(d)
        name = "cvae(" + ",".join(model.condition_names) + ")"
        cvaes[name if name not in cvaes else f"{name} {Path(d).name}"] = model
    table = latent_information(raw_latents(latents)[test], dataset, test, truth_cols, cvaes, seed)
    _write_ecsv(table, out / "r2.ecsv")
    stamps.done("r2", key)
    return table


def _keep_with_model(model_dir, dataset, latents, rotation) -> None:
    """Leave in the model folder what encoding new spectra needs: the rotation (D1…Dd) and the outlier
    reference (:mod:`.external`), when this is the dataset the model was trained on."""
    from .external import REFERENCE, ROTATION, Reference, build_reference, weights_digest

    config = json.loads((Path(model_dir) / "config.json").read_text())
    if config.get("dataset_digest") != dataset.attrs.get("inputs_digest"):
        return
    rotation.save(Path(model_dir) / ROTATION)
    ref = Path(model_dir) / REFERENCE
    if "elbo" in latents.colnames and not (ref.exists() and Reference.load(ref).weights_digest == weights_digest(model_dir)):
        build_reference(model_dir, dataset, encoded=latents)


def _summary(model_dir, dataset, rotation, latents, mi, rho, names, mi_split, rows, shap_result, cvae_dirs,
             cvae_travs, has_truth, min_count, tracking_summary) -> dict:
    from .attribution import showcase_dims, showcase_index

    dims = showcase_dims(rotation.n_components)
    k = showcase_index(shap_result, dims)
    cat_mi, cat_rho = mi[mi["source"] == "catalog"], rho[rho["source"] == "catalog"]
    out = {
        "model_dir": str(model_dir), "dataset": str(getattr(dataset, "path", "")),
        "dataset_digest": dataset.attrs.get("inputs_digest"), "n_spectra": len(latents),
        "latent_dim": rotation.n_components, "latent_names": names,
        "explained_variance_ratio": rotation.explained_variance_ratio_.tolist(),
        "mutual_information": {"split": mi_split, "n_rows": len(rows), "units": "nats",
                               "estimator": mi.meta.get("estimator"), "uncertainty": mi.meta.get("uncertainty"),
                               "tracks": tracking_summary(cat_mi, cat_rho, names)},
        "maps": {"min_count": min_count, "rows": "all spectra"},
        "shap": {"method": shap_result.method, "n_background": len(shap_result.background_rows),
                 "n_explained": len(shap_result.rows), "stratified_by": "logmstar quantile bins",
                 "showcase_dims": [names[j] for j in dims],
                 "showcase_id": str(np.asarray(dataset.props["id"])[shap_result.rows[k]]),
                 "showcase_index": k, "fidelity": shap_result.fidelity},
        "cvae": {"models": [str(d) for d in cvae_dirs],
                 "conditions": [f"{t.label}:{t.name}" for t in cvae_travs]},
        "outliers": _outliers(latents),
        "unusual": _unusual(latents),
    }
    if has_truth:
        out["truth"] = {"tracks": tracking_summary(mi[mi["source"] == "truth"], rho[rho["source"] == "truth"], names)}
    return out


def _unusual(latents) -> list[dict]:
    """The most unusual test spectra (lowest outlier percentile): unusual.npz's rows."""
    from .unusual import unusual_rows

    if "outlier_percentile" not in latents.colnames:
        return []
    return [{"id": str(latents["id"][i]), "outlier_percentile": float(latents["outlier_percentile"][i]),
             "sn_median": float(latents["sn_median"][i]), "elbo": float(latents["elbo"][i]),
             "chi2_per_pixel": float(latents["chi2_per_pixel"][i])} for i in unusual_rows(latents)]


def _outliers(latents, n: int = 10) -> list[dict]:
    """The ``n`` spectra with the lowest ELBO (the worst explained)."""
    elbo = np.asarray(latents["elbo"], dtype=np.float64)
    order = np.argsort(np.where(np.isfinite(elbo), elbo, np.inf))[:n]
    return [{"id": str(latents["id"][i]), "split": str(latents["split"][i]), "elbo": float(elbo[i]),
             "chi2_per_pixel": float(latents["chi2_per_pixel"][i])} for i in order if np.isfinite(elbo[i])]


# ---------------------------------------------------------------------------------------------------
# another dataset in the same basis
# ---------------------------------------------------------------------------------------------------

def encode_external(model_dir, analysis_dir, dataset_path, out_path=None, name: str = "external",
                    max_rows: int = 200):
    """Encode another dataset (e.g. real SDSS galaxies) with the model, in the analysis' D basis, with each
    ELBO as a percentile among the analysed dataset's test spectra; writes ``analysis/{name}_latents.fits``
    and an entry in summary.json (at most ``max_rows`` rows listed there). Returns the table."""
    from .catalog import encode_with, read_latents, write_fits

    a = Path(analysis_dir)
    rotation = LatentRotation.load(a / "rotation.json")
    ref = read_latents(a / "latents.fits")
    test_elbo = np.asarray(ref["elbo"], dtype=np.float64)[np.asarray(ref["split"]).astype(str) == "test"]
    table = encode_with(model_dir, _open(dataset_path), rotation, reference=test_elbo)
    path = Path(out_path) if out_path else a / f"{name}_latents.fits"
    write_fits(table, path)
    summary_path = a / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    chi2, pct = np.asarray(table["chi2_per_pixel"], float), np.asarray(table["elbo_percentile"], float)
    summary.setdefault("external", {})[name] = {
        "path": str(path.relative_to(a)) if path.is_relative_to(a) else str(path), "n": len(table),
        "chi2_per_pixel_median": float(np.nanmedian(chi2)) if np.isfinite(chi2).any() else None,
        "elbo_percentile_median": float(np.nanmedian(pct)) if np.isfinite(pct).any() else None,
        "reference": "ELBO percentile among the analysed dataset's test spectra",
        "rows": [{"id": str(i), "chi2_per_pixel": float(c), "elbo": float(e), "elbo_percentile": float(p)}
                 for i, c, e, p in list(zip(table["id"], chi2, table["elbo"], pct))[:max_rows]],
    }
    _write_json(summary_path, summary)
    return table
