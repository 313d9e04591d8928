"""galvae from Python: the pipeline in a few lines, astropy Tables and NumPy arrays out.

::

    import galvae

    spectra, rejects = galvae.read_spectra("my spectra/")            # Tables: one row per file
    data = galvae.prepare_spectra("my spectra/", "my.zarr", catalog="props.fits")
    vae = galvae.SpectrumVAE(latent_dim=4, epochs=30).fit(data)      # scikit-learn manners
    mu = vae.transform(data)                                         # (N, d) posterior means
    vae.score(data)                                                  # mean test ELBO, nats per spectrum
    table, rejects = vae.encode_spectra(["NGC 4030.fits"])           # your own files, with outlier scores
    grid = galvae.select_latents(data, "select/", latent=[2, 4, 6])  # the BIC grid; grid.meta["best"]
    result = galvae.explain_latents(vae, data, "run/")               # D1…Dd, MI, SHAP; result.latents, .mi
    galvae.write_report("run/", data, "run/analysis", select_dir="select/")

Each function wraps the stage that the command line runs (``galvae prepare``, ``train``, ``encode``,
``select``, ``explain``, ``report``) and writes the same artifacts, so a notebook and a batch job can
share them. Stages that fan out over Dask take ``scheduler``: None starts a local cluster (one process
per core), ``"sync"`` runs in the notebook's own process.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["SpectrumVAE", "encode_spectra", "explain_latents", "prepare_spectra", "read_spectra",
           "select_latents", "write_report"]


def read_spectra(source, workers: int | None = 1, progress: bool = False):
    """Read SDSS/BOSS spec files (a file, a folder searched recursively, or a list) as they are observed.

    Returns ``(spectra, rejects)``, astropy Tables. ``spectra`` has one row per spectrum read: id, z,
    z_err, zwarning, class, subclass, vdisp (km/s), sn_median, n_good, path, and the arrays wave (Å,
    vacuum, observed frame), flux (1e-17 erg s⁻¹ cm⁻² Å⁻¹), ivar and and_mask, one NumPy array per row
    (``spectra["flux"][0]``). ``rejects``: path and reason of every file that gave no usable spectrum.
    """
    from astropy.table import Table

    from .sources.sdss import expand_spectrum_paths
    from .sources.sdss import read_spectra as _read

    paths = expand_spectrum_paths(source)
    spectra, rejects = _read(paths, workers=workers, progress=progress)
    table = Table()
    for name, get in (("id", lambda s: s.id), ("z", lambda s: s.z), ("z_err", lambda s: s.z_err),
                      ("zwarning", lambda s: s.zwarning), ("class", lambda s: s.spec_class),
                      ("subclass", lambda s: s.subclass), ("vdisp", lambda s: s.vdisp),
                      ("sn_median", lambda s: s.sn_median), ("n_good", lambda s: s.n_good),
                      ("path", lambda s: s.path)):
        table[name] = [get(s) for s in spectra] if spectra else np.array([], dtype=str)
    for name in ("wave", "flux", "ivar", "and_mask"):  # ragged: files differ in length
        column = np.empty(len(spectra), dtype=object)
        column[:] = [getattr(s, name) for s in spectra]
        table[name] = column
    if spectra:
        table["wave"].unit, table["vdisp"].unit = "Angstrom", "km/s"
        table["flux"].unit = "1e-17 erg / (s cm2 Angstrom)"
    rejected = Table(rows=[(r.path, r.reason) for r in rejects] or None, names=("path", "reason"), dtype=(str, str))
    return table, rejected


def prepare_spectra(spectra, out, catalog=None, *, scheduler: str | None = None, workers: int | None = None,
                    progress: bool = False, **config):
    """``galvae prepare``: spectrum files (a folder or a list) → ``out`` (a dataset.zarr); returns it opened.

    ``catalog``: properties (a ``galvae catalog`` output, a GSWLC-2 table, or a Table keyed by ``id``).
    ``config``: any field of :class:`galvae.prepare.PrepareConfig` (``n_pix=2000``, ``zmax=0.2``, …).
    The returned :class:`galvae.prepare.dataset.Dataset` reads its spectra lazily; the tally is in
    ``dataset.attrs["counts"]`` and every reject with its reason in ``galvae.prepare.read_rejects(out)``.
    A rerun with the same inputs returns the finished dataset without redoing it.
    """
    from .prepare import PrepareConfig, open_dataset, prepare_dataset

    prepare_dataset(spectra, out, catalog=catalog, config=PrepareConfig(**config), scheduler=scheduler,
                    workers=workers, progress=progress)
    return open_dataset(out, load=False)


def _dataset(data):
    """A Dataset from a Dataset or a dataset.zarr path."""
    if hasattr(data, "flux"):
        return data
    from .prepare import open_dataset

    return open_dataset(Path(data).resolve(), load=False)


class SpectrumVAE:
    """A VAE (or CVAE) on prepared spectra, with scikit-learn's manners.

    Parameters are stored as given; :meth:`fit` trains (:func:`galvae.fit.fit`) and sets the fitted
    attributes, which end in an underscore:

    - ``model_dir_``: the model folder (``model_dir``, or a new temporary folder when None)
    - ``model_``: the loaded :class:`galvae.models.TrainedVAE` (NumPy in and out)
    - ``metrics_``: test-split numbers (metrics.json: ln L, ELBO, χ²/pixel, BIC with standard errors)
    - ``history_``: one row per epoch (astropy Table)
    - ``n_features_in_``: pixels per spectrum; ``wave_``: their rest-frame wavelengths (Å)

    Parameters
    ----------
    latent_dim : d, the number of latent variables.
    conditions : CVAE conditions, a subset of (logmstar, logsfr, logssfr, metallicity); () for a VAE.
    arch : 'compact' (fast MLP) or 'paper' (the authors' architecture).
    epochs, patience, time_limit, batch_size, lr, beta, loss, seed, device : training settings
        (:func:`galvae.fit.fit`).
    model_dir : where the model folder goes; an existing finished model with the same settings is reused.
    progress : show a progress bar (on a terminal).
    """

    def __init__(self, latent_dim: int = 4, *, conditions=(), arch: str = "compact", epochs: int = 100,
                 patience: int = 10, time_limit: float | None = None, batch_size: int | None = None,
                 lr: float = 1e-3, beta: float = 1.0, loss: str = "gaussian", seed: int = 0, device: str = "auto",
                 model_dir=None, progress: bool = False):
        self.latent_dim = latent_dim
        self.conditions = conditions
        self.arch = arch
        self.epochs = epochs
        self.patience = patience
        self.time_limit = time_limit
        self.batch_size = batch_size
        self.lr = lr
        self.beta = beta
        self.loss = loss
        self.seed = seed
        self.device = device
        self.model_dir = model_dir
        self.progress = progress

    # ---- scikit-learn's parameter protocol (what clone and grid searches use) ------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        import inspect

        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> SpectrumVAE:
        unknown = set(params) - set(self._param_names())
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}; known: {self._param_names()}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = SpectrumVAE().get_params()
        changed = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if v != defaults[k])
        return f"SpectrumVAE({changed})"

    # ---- fit / transform / score ----------------------------------------------------------------------

    def fit(self, X, y=None) -> SpectrumVAE:
        """Train on ``X`` (a Dataset or a dataset.zarr path): its train split, early stopping on val.

        ``y`` is ignored (the conditions, if any, come from the dataset's properties).
        """
        from .fit import fit as _fit
        from .models import load_model

        dataset = _dataset(X)
        out = Path(self.model_dir) if self.model_dir is not None else Path(tempfile.mkdtemp(prefix="galvae-model-"))
        _fit(dataset, out, latent_dim=self.latent_dim, conditions=tuple(self.conditions), arch=self.arch,
             loss=self.loss, beta=self.beta, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
             seed=self.seed, patience=self.patience, device=self.device, resume=True,
             progress=self.progress, time_limit=self.time_limit)
        return self._set_fitted(out, load_model, dataset.wave)

    def _set_fitted(self, out: Path, load_model, wave=None) -> SpectrumVAE:
        from astropy.table import Table

        self.model_dir_ = out
        self.model_ = load_model(out)
        self.metrics_ = json.loads((out / "metrics.json").read_text())
        self.history_ = Table.read(out / "history.csv", format="ascii.csv") if (out / "history.csv").exists() else None
        self.n_features_in_ = self.model_.n_pix
        self.wave_ = None if wave is None else np.asarray(wave)
        return self

    @classmethod
    def load(cls, model_dir) -> SpectrumVAE:
        """A fitted SpectrumVAE from a model folder (``galvae train``, a select cell, or ``model_dir_``)."""
        from .models import load_model

        config = json.loads((Path(model_dir) / "config.json").read_text())
        if config.get("kind") != "vae":
            raise ValueError(f"{model_dir} holds a {config.get('kind')} model, not a VAE")
        training, model = config.get("training", {}), config.get("model", {})
        est = cls(model["latent_dim"], conditions=tuple(config.get("conditions_requested", ())), arch=model["arch"],
                  **{k: training[k] for k in ("epochs", "patience", "batch_size", "lr", "beta", "loss", "seed")
                     if k in training}, model_dir=Path(model_dir))
        return est._set_fitted(Path(model_dir), load_model, _model_grid(Path(model_dir), config))

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise AttributeError("this SpectrumVAE is not fitted yet: call fit(dataset) or SpectrumVAE.load(dir)")

    def encode(self, X):
        """The latent table of a Dataset (or dataset.zarr): id, z, split, mu_j, sigma_j, χ²/pixel, ln L, ELBO."""
        from .fit import encode_dataset

        self._check_fitted()
        return encode_dataset(self.model_dir_, _dataset(X), None, progress=self.progress)

    def transform(self, X, conditions=None) -> np.ndarray:
        """Posterior means (N, d): of every spectrum of a Dataset, or of flux (N, P) on the model's grid."""
        self._check_fitted()
        if hasattr(X, "flux") or isinstance(X, (str, Path)):
            table = self.encode(X)
            return np.stack([np.asarray(table[f"mu_{j + 1}"]) for j in range(self.model_.latent_dim)], axis=1)
        return self.model_.encode(X, conditions=conditions)[0]

    def inverse_transform(self, Z, conditions=None) -> np.ndarray:
        """Model spectra (N, P) from latents (N, d)."""
        self._check_fitted()
        return self.model_.decode(Z, conditions=conditions)

    def score(self, X, y=None) -> float:
        """Mean ELBO per test spectrum (nats; higher is better) of a Dataset's test split."""
        table = self.encode(X)
        elbo = np.asarray(table["elbo"], dtype=np.float64)[np.asarray(table["split"]).astype(str) == "test"]
        elbo = elbo[np.isfinite(elbo)]
        if not elbo.size:
            raise ValueError("no test spectrum to score (every test row lacks a condition, or the split is empty)")
        return float(elbo.mean())

    def encode_spectra(self, paths, data=None, rotation=None):
        """Your own spec files through the model: see :func:`encode_spectra`."""
        self._check_fitted()
        return encode_spectra(self.model_dir_, paths, data=data, rotation=rotation, progress=self.progress)


def _model_grid(model_dir: Path, config: dict):
    """The rest-frame grid (Å) a model reads: from its reference.npz, else its recorded dataset; None if neither."""
    from .explain.external import REFERENCE, Reference
    from .prepare.resample import log_grid

    if (model_dir / REFERENCE).exists():
        c = Reference.load(model_dir / REFERENCE).prepare_config
        return log_grid(c["n_pix"], c["wave_min"], c["wave_max"])
    recorded = Path(config.get("dataset_path") or "")
    if str(recorded) not in ("", ".") and recorded.exists():
        from .prepare import open_dataset

        return open_dataset(recorded, load=False).wave
    return None


def encode_spectra(model, paths, data=None, rotation=None, progress: bool = False):
    """``galvae encode --spectra``: raw SDSS/BOSS spec files through a trained plain VAE.

    ``model``: a model folder or a fitted :class:`SpectrumVAE`; ``paths``: files or folders.
    Returns ``(table, rejects)``: per spectrum id, path, z, sn_median, D1…Dd (when explain left a
    rotation in the model folder, or ``rotation`` names one), mu_j, sigma_j, chi2_per_pixel,
    ln_likelihood, elbo, n_good, sn_bin and outlier_percentile (the ELBO's percentile among the training
    spectra of similar S/N; low = unusual); and path, id, reason of every file left out.
    See :mod:`galvae.explain.external`.
    """
    from .explain.external import encode_spectra as _encode

    model_dir = getattr(model, "model_dir_", model)
    return _encode(model_dir, paths, data=data, rotation=rotation, progress=progress)


def select_latents(data, out, latent=(1, 2, 3, 4), conditions="none", seeds: int = 1, *, arch: str = "compact",
                   epochs: int = 100, scheduler: str | None = None, workers: int | None = None,
                   progress: bool = False, **fit_kwargs):
    """``galvae select``: the BIC grid latent size × conditions × seeds in ``out``; returns grid.ecsv's Table.

    ``table.meta["best"]`` holds best.json (the chosen model's ``model_dir``, d, BIC, other criteria).
    ``conditions``: 'none' (plain VAEs only), 'all', or e.g. 'none,logmstar'. Reruns resume.
    """
    from .select import conditions_needed, parse_conditions, select_grid

    sets = parse_conditions(conditions) if isinstance(conditions, str) else conditions
    source = getattr(data, "path", "") or data  # workers of a local cluster open the store themselves
    result = select_grid(source, out, latent=list(latent),
                         conditions=sets, seeds=seeds, arch=arch, epochs=epochs, needed=conditions_needed(sets),
                         scheduler=scheduler, workers=workers, progress=progress, **fit_kwargs)
    table = result.table
    table.meta["best"] = result.best
    return table


def explain_latents(model, data, out, truth=None, **options):
    """``galvae explain``: D1…Dd, mutual information, maps, traversals, SHAP and the most unusual spectra.

    ``model``: a plain VAE's folder or a fitted :class:`SpectrumVAE`; writes ``out/analysis``. Returns a
    :class:`galvae.explain.ExplainResult` whose ``latents``, ``mi`` and ``spearman`` are astropy Tables
    and ``rotation`` a fitted LatentRotation (``transform`` maps mu to D). ``options``: see
    :func:`galvae.explain.explain` (``n_boot``, ``n_background``, ``n_explain``, ``progress``, …).
    """
    from .explain import explain

    options.setdefault("progress", False)
    return explain(getattr(model, "model_dir_", model), data, out, truth=truth, **options)


def write_report(out, data, analysis_dir, select_dir=None, config=None) -> Path:
    """``galvae report``: ``out/report/index.html``, self-contained; returns its path."""
    from .report import write_report as _write

    return _write(out, data, analysis_dir, select_dir=select_dir, config=config)
