"""A user's own spectrum files through a trained model: latents, fit quality and an outlier score.

Raw SDSS/BOSS spec files go through exactly what the training spectra went through in ``prepare``
(:func:`galvae.prepare.pipeline.rest_frame_batch`: the same cuts, bad pixels, rest frame, grid and
normalisation, with the dataset's recorded configuration), their gaps are filled with the training
dataset's own gappy-PCA basis, and the model encodes them (:func:`galvae.fit.encode_dataset`).

The outlier score is ``outlier_percentile``: the percentile of a spectrum's ELBO among the ELBOs of the
model's training spectra in the same S/N bin (SDSS ``SN_MEDIAN_ALL``; five bins at the training S/N
quintiles). The ELBO of a well-explained spectrum grows with its S/N, so a low-S/N spectrum is compared
with low-S/N training spectra only. 2 means 98 % of training spectra of that S/N are explained better.

What this needs besides the model is kept in the model folder, ``reference.npz`` (docs/formats.md),
written the first time from the training dataset and reused afterwards, so a model folder alone
encodes new spectra: the prepare configuration, the fill basis, and the training spectra's ELBO and
S/N. It is rebuilt when the weights change (a digest of the weights file is stored with it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

REFERENCE = "reference.npz"
ROTATION = "rotation.json"   # a copy of explain's rotation in the model folder: D1…Dd for new spectra
N_SN_BINS = 5


# ---------------------------------------------------------------------------------------------------
# the S/N-binned reference
# ---------------------------------------------------------------------------------------------------

def sn_bin_edges(sn, n_bins: int = N_SN_BINS) -> np.ndarray:
    """Bin edges at the quantiles of the finite ``sn`` values (outer edges ±inf), at most ``n_bins`` bins."""
    sn = np.asarray(sn, dtype=np.float64)
    sn = sn[np.isfinite(sn)]
    inner = np.unique(np.quantile(sn, np.linspace(0, 1, n_bins + 1)[1:-1])) if sn.size else np.array([])
    return np.concatenate([[-np.inf], inner, [np.inf]])


def sn_bin(sn, edges) -> np.ndarray:
    """Bin index of each S/N value; -1 where the S/N is not finite (compared with every training spectrum)."""
    sn = np.asarray(sn, dtype=np.float64)
    out = np.searchsorted(edges[1:-1], np.where(np.isfinite(sn), sn, 0.0), side="right")
    return np.where(np.isfinite(sn), out, -1)


def outlier_percentile(elbo, sn, train_elbo, train_sn, edges) -> tuple[np.ndarray, np.ndarray]:
    """(percentile 0–100 of each ELBO among the training ELBOs of its S/N bin, the bin). NaN ELBO → NaN."""
    from .catalog import percentile_of

    elbo = np.asarray(elbo, dtype=np.float64)
    bins, train_bins = sn_bin(sn, edges), sn_bin(train_sn, edges)
    out = np.full(elbo.shape, np.nan)
    for b in np.unique(bins):
        ref = train_elbo if b < 0 else np.asarray(train_elbo)[train_bins == b]
        at = bins == b
        out[at] = percentile_of(elbo[at], ref)
    return out, bins


@dataclass
class Reference:
    """What encoding raw files with a model needs besides the model (``reference.npz`` in its folder)."""

    prepare_config: dict        # the dataset's PrepareConfig, as recorded in its attributes
    fill_basis: np.ndarray      # (K, P) gappy-PCA eigenspectra of the dataset
    fill_mean: np.ndarray       # (P,)
    train_elbo: np.ndarray      # (N_train,) nats, the model's training spectra
    train_sn: np.ndarray        # (N_train,) their SN_MEDIAN_ALL
    sn_edges: np.ndarray        # (B + 1,)
    dataset_digest: str
    weights_digest: str

    def percentile(self, elbo, sn):
        return outlier_percentile(elbo, sn, self.train_elbo, self.train_sn, self.sn_edges)

    def save(self, path) -> Path:
        from .._atomic import atomic_write

        return atomic_write(Path(path), lambda tmp: np.savez(
            tmp, prepare_config=json.dumps(self.prepare_config), fill_basis=self.fill_basis,
            fill_mean=self.fill_mean, train_elbo=self.train_elbo, train_sn=self.train_sn,
            sn_edges=self.sn_edges, dataset_digest=self.dataset_digest, weights_digest=self.weights_digest))

    @classmethod
    def load(cls, path) -> Reference:
        with np.load(path, allow_pickle=False) as z:
            return cls(json.loads(str(z["prepare_config"])), z["fill_basis"], z["fill_mean"], z["train_elbo"],
                       z["train_sn"], z["sn_edges"], str(z["dataset_digest"]), str(z["weights_digest"]))


def weights_digest(model_dir) -> str:
    """SHA-1 of the model's weights file (a retrained model must not reuse an old reference)."""
    from ..models import weights_path

    h = hashlib.sha1()
    with open(weights_path(model_dir), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def fill_basis_of(dataset) -> tuple[np.ndarray, np.ndarray]:
    """The gappy-PCA (basis, mean) a dataset was filled with.

    Datasets written by galvae ≥ 0.1 keep it (group ``fill_basis``); for an older one it is fitted
    again on the training split's observed pixels with the dataset's recorded settings (close to, not
    bit-identical with, the one prepare used), and a warning says so.
    """
    import zarr

    from ..prepare.dataset import take_rows
    from ..prepare.gappy_pca import fit_fill_basis

    path = getattr(dataset, "path", "")
    if path:
        root = zarr.open_group(str(path), mode="r")
        if "fill_basis" in root:
            return root["fill_basis"]["basis"][...], root["fill_basis"]["mean"][...]
    cfg = dataset.attrs.get("config") or {}
    log.warning("%s keeps no fill basis (written by an older galvae): fitting one on its training split",
                path or "the dataset")
    rows = dataset.indices("train")[: int(cfg.get("basis_sample", 20000))]
    flux, filled = take_rows(dataset.flux, rows), take_rows(dataset.filled, rows).astype(bool)
    return fit_fill_basis(flux, ~filled, n_components=min(int(cfg.get("n_components", 10)), len(rows) - 1),
                          n_iter=int(cfg.get("n_iter", 10)), seed=int(cfg.get("seed", 0)))


def model_dataset(model_dir, data=None):
    """The dataset a model was trained on: ``data`` if given, else the path its config.json records.

    Raises ValueError naming both when the dataset cannot be found or is another one (digest).
    """
    from ..prepare import open_dataset

    config = json.loads((Path(model_dir) / "config.json").read_text())
    recorded = config.get("dataset_path") or ""
    if data is not None and hasattr(data, "flux"):
        dataset = data
    else:
        candidates = [Path(data)] if data is not None else [Path(recorded), Path(model_dir) / recorded]
        found = next((p for p in candidates if str(p) not in ("", ".") and p.exists()), None)
        if found is None:
            raise ValueError(f"{model_dir} has no {REFERENCE} yet and its training dataset "
                             f"({recorded or 'not recorded'}) is not there: give the dataset (--data)")
        dataset = open_dataset(found, load=False)
    digest = config.get("dataset_digest")
    if digest and dataset.attrs.get("inputs_digest") != digest:
        raise ValueError(f"{getattr(dataset, 'path', 'the dataset')} is not the dataset {model_dir} was trained "
                         f"on (digest {dataset.attrs.get('inputs_digest')} against {digest})")
    return dataset


def build_reference(model_dir, dataset, encoded=None, progress: bool = False) -> Reference:
    """The reference of a model on its training dataset; ``encoded``: that dataset's latent table if at hand
    (explain has it), else the dataset is encoded. Saved as ``model_dir/reference.npz``."""
    from ..fit import encode_dataset

    if encoded is None:
        encoded = encode_dataset(model_dir, dataset, None, progress=progress)
    train = dataset.indices("train")
    elbo = np.asarray(encoded["elbo"], dtype=np.float64)[train]
    sn = (np.asarray(dataset.props["sn_median"], dtype=np.float64)[train] if "sn_median" in dataset.props.colnames
          else np.full(len(train), np.nan))
    keep = np.isfinite(elbo)  # a CVAE's rows lacking conditions have no ELBO
    basis, mean = fill_basis_of(dataset)
    ref = Reference(dict(dataset.attrs.get("config") or {}), basis, mean, elbo[keep], sn[keep],
                    sn_bin_edges(sn[keep]), str(dataset.attrs.get("inputs_digest")), weights_digest(model_dir))
    ref.save(Path(model_dir) / REFERENCE)
    log.info("%s: reference of %d training spectra in %d S/N bins", Path(model_dir) / REFERENCE, keep.sum(),
             len(ref.sn_edges) - 1)
    return ref


def load_reference(model_dir, data=None, progress: bool = False) -> Reference:
    """``model_dir/reference.npz``, built first from the training dataset when missing or stale."""
    path = Path(model_dir) / REFERENCE
    if path.exists():
        ref = Reference.load(path)
        if ref.weights_digest == weights_digest(model_dir):
            return ref
        log.info("%s is from other weights: rebuilding it", path)
    return build_reference(model_dir, model_dataset(model_dir, data), progress=progress)


# ---------------------------------------------------------------------------------------------------
# raw files → an in-memory dataset on the model's grid
# ---------------------------------------------------------------------------------------------------

def _prepare_config(recorded: dict):
    """The PrepareConfig a dataset recorded (tuples back from JSON lists)."""
    from ..prepare import PrepareConfig

    known = {k: v for k, v in recorded.items() if k in PrepareConfig.__dataclass_fields__}
    cfg = replace(PrepareConfig(), **known)
    return replace(cfg, classes=tuple(cfg.classes), norm_window=tuple(cfg.norm_window),
                   split_fractions=tuple(cfg.split_fractions))


def spectra_dataset(paths, reference: Reference, workers: int | None = 1, progress: bool = False):
    """(Dataset in memory, rejects as (path, id, reason)) of raw spec files, prepared as the training set was.

    Every row is in the 'test' split (code 2): none of them trained the model.
    """
    from astropy.table import Table

    from ..prepare.dataset import Dataset
    from ..prepare.gappy_pca import fill_with_basis
    from ..prepare.pipeline import extend_into_unobserved, rest_frame_batch
    from ..prepare.resample import log_grid
    from ..sources.sdss import read_spectra

    cfg = _prepare_config(reference.prepare_config)
    spectra, read_rejects = read_spectra(paths, workers=workers, require_good_pixels=True, progress=progress)
    kept, flux, ivar, norm, rejects = rest_frame_batch(spectra, cfg)
    rejects = [(r.path, "", r.reason) for r in read_rejects] + rejects
    good = ivar > 0
    if kept:
        flux = extend_into_unobserved(fill_with_basis(flux, good, reference.fill_basis, reference.fill_mean))
    props = Table({"id": np.array([s.id for s in kept], dtype=str),
                   "z": np.array([s.z for s in kept], dtype=np.float64),
                   "sn_median": np.array([s.sn_median for s in kept], dtype=np.float64),
                   "path": np.array([s.path for s in kept], dtype=str)})
    dataset = Dataset(wave=log_grid(cfg.n_pix, cfg.wave_min, cfg.wave_max), flux=flux.astype(np.float32),
                      ivar=ivar, filled=~good, norm=norm, split=np.full(len(kept), 2, np.uint8), props=props,
                      attrs={"config": reference.prepare_config, "source": "user files"})
    return dataset, rejects


def find_rotation(model_dir, rotation=None):
    """A LatentRotation: ``rotation`` (an object, a rotation.json or an analysis folder), else the copy in
    the model folder that explain leaves; None when there is none."""
    from .rotation import LatentRotation

    if rotation is not None and not isinstance(rotation, (str, os.PathLike)):
        return rotation
    path = Path(rotation) if rotation is not None else Path(model_dir) / ROTATION
    if path.is_dir():
        path = path / ROTATION
    if not path.exists():
        if rotation is not None:
            raise FileNotFoundError(f"no rotation at {path} (explain writes analysis/{ROTATION})")
        return None
    return LatentRotation.load(path)


def encode_spectra(model_dir, paths, data=None, rotation=None, workers: int | None = 1, n_samples: int = 8,
                   device: str = "cpu", progress: bool = False):
    """Encode raw SDSS/BOSS spec files with a trained plain VAE.

    Parameters
    ----------
    model_dir : a plain VAE's model folder (a CVAE would need each galaxy's conditions).
    paths : spec files (``.fits`` / ``.fits.gz``) or folders, searched recursively.
    data : the training dataset, needed only the first time (when ``reference.npz`` is missing); by
        default the path recorded in the model's config.json.
    rotation : rotation.json or an analysis folder for D1…Dd; default the model folder's copy, if any.

    Returns ``(table, rejects)``, astropy Tables. ``table``: id, path, z, sn_median, D1…Dd (with a
    rotation), mu_j, sigma_j, chi2_per_pixel, ln_likelihood, elbo, n_good, sn_bin, outlier_percentile.
    ``rejects``: path, id, reason of every file left out.
    """
    from astropy.table import Table

    from ..fit import encode_dataset
    from ..sources.sdss import expand_spectrum_paths
    from .catalog import add_rotation

    if not (Path(model_dir) / "config.json").exists():
        raise FileNotFoundError(f"no model at {model_dir} (config.json missing)")
    config = json.loads((Path(model_dir) / "config.json").read_text())
    if config.get("kind") != "vae" or config.get("conditions"):
        raise ValueError(f"{model_dir} is not a plain VAE ({config.get('kind')}"
                         f"{', conditions ' + ','.join(c['name'] for c in config['conditions']) if config.get('conditions') else ''}): "
                         "encoding files needs a model that reads the spectrum alone")
    paths = expand_spectrum_paths(paths)
    reference = load_reference(model_dir, data, progress=progress)
    dataset, rejects = spectra_dataset(paths, reference, workers=workers, progress=progress)
    rejects = Table(rows=rejects or None, names=("path", "id", "reason"), dtype=(str, str, str))
    if len(dataset.props) == 0:
        raise ValueError(f"none of the {len(paths)} files gave a usable spectrum: "
                         + "; ".join(f"{Path(p).name}: {r}" for p, _, r in rejects[:5]))
    table = encode_dataset(model_dir, dataset, None, device=device, n_samples=n_samples, progress=progress)
    rot = find_rotation(model_dir, rotation)
    if rot is not None:
        add_rotation(table, rot)
    table.remove_column("split")
    table.add_column(dataset.props["path"], name="path", index=1)
    table.add_column(dataset.props["sn_median"], name="sn_median", index=3)
    pct, bins = reference.percentile(table["elbo"], dataset.props["sn_median"])
    table["sn_bin"] = bins
    table["outlier_percentile"] = pct
    table["outlier_percentile"].description = ("percentile of the ELBO among the model's training spectra in the "
                                               "same S/N bin; low = unusual")
    table.meta.update({"SNEDGES": ",".join(f"{e:.4g}" for e in reference.sn_edges[1:-1]),
                       "NREF": len(reference.train_elbo), "ROTATED": rot is not None})
    log.info("encoded %d of %d files with %s; %d rejected", len(table), len(paths), model_dir, len(rejects))
    return table, rejects
