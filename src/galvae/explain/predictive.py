"""What the latents know: how well d latents predict physical properties (R², on the test split).

For each property and each set of d latents (the VAE's posterior means; each CVAE's; PCA-d and
ivar-weighted PCA-d fitted on the training split), two regressions are cross-validated over the test
spectra that have the property:

- ``knn``: k = 16 nearest neighbours, weighted by inverse distance, on latents standardised with the
  training folds' mean and standard deviation (the probe AstroCLIP used for its spectrum embeddings);
- ``linear``: ordinary least squares on the same latents, each clipped to the training folds' 1st–99th
  percentile range first: a few spectra unlike the rest (luminous AGN on the mock) are encoded tens of
  standard deviations from the bulk, and unclipped they lever the fit and are extrapolated to absurd
  values (R² of −5 seen); k-NN, bounded by its neighbours' values, needs no such guard.

Every test spectrum is predicted once, by the model fitted on the other folds (5-fold, shuffled with a
fixed seed), and R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)² over those out-of-fold predictions. Its uncertainty is
the standard deviation over bootstrap resamples of the test rows (the predictions are kept, the rows
drawn with replacement: the error of evaluating on a finite test set). The same draws serve every latent
set, so ``vae_minus`` = R²(VAE) − R²(model) comes with a paired error.

A CVAE is compared on the rows that have its conditions (the VAE recomputed on those same rows). Its
latents are trained to carry what the conditions do not, so a low R² for a conditioning property is the
intended result, not a failure.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

K_NEIGHBOURS = 16
N_FOLDS = 5
N_BOOT = 200
MIN_ROWS = 40            # fewer test spectra with a property: no R² for it (the k-NN folds would be too small)
MAX_FIT_ROWS = 20000     # training spectra the PCA baselines are fitted on (a seeded sample above that)
METHODS = ("knn", "linear")
CATALOG_PROPERTIES = ("logmstar", "logsfr", "logssfr", "metallicity", "age", "a_v")
# AstroCLIP's spectrum embeddings on DESI, k-NN R² (Parker et al. 2024): the published anchor.
ASTROCLIP_SPECTRUM_R2 = {"logmstar": 0.88, "logssfr": 0.64, "metallicity": 0.59, "age": 0.44}
CLIP_QUANTILES = (0.01, 0.99)  # the linear probe's latents are clipped to this range of the training folds
PROTOCOL = (f"R^2 of out-of-fold predictions, {N_FOLDS}-fold CV on the test split; knn: k={K_NEIGHBOURS}, "
            "inverse-distance weights, latents standardised on the training folds; linear: least squares on "
            f"latents clipped to the training folds' {CLIP_QUANTILES[0]:.0%}-{CLIP_QUANTILES[1]:.0%} range; "
            f"error: std over {N_BOOT} bootstrap resamples of the test rows (paired across models)")


class _ClipToQuantiles:
    """Clip each column to the quantile range it has in the rows it is fitted on (a scikit-learn transformer)."""

    def __init__(self, low: float = CLIP_QUANTILES[0], high: float = CLIP_QUANTILES[1]):
        self.low, self.high = low, high

    def get_params(self, deep=True):
        return {"low": self.low, "high": self.high}

    def set_params(self, **params):
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def fit(self, x, y=None):
        self.lo_, self.hi_ = np.quantile(x, [self.low, self.high], axis=0)
        return self

    def transform(self, x):
        return np.clip(x, self.lo_, self.hi_)


def out_of_fold(latents: np.ndarray, y: np.ndarray, method: str, seed: int = 0, folds: int = N_FOLDS,
                k: int = K_NEIGHBOURS) -> np.ndarray:
    """(n,) predictions of ``y`` from (n, d) ``latents``, each by a model fitted on the other folds."""
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if method == "knn":
        estimator = make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=k, weights="distance"))
    elif method == "linear":
        estimator = make_pipeline(_ClipToQuantiles(), LinearRegression())
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return cross_val_predict(estimator, latents, y, cv=KFold(folds, shuffle=True, random_state=seed))


def r2_score(y: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """R² along the last axis: 1 − Σ(y − ŷ)² / Σ(y − ȳ)² (works on (n,) or (B, n) arrays)."""
    resid = ((y - prediction) ** 2).sum(-1)
    total = ((y - y.mean(-1, keepdims=True)) ** 2).sum(-1)
    return 1.0 - resid / total


def bootstrap_r2(y: np.ndarray, predictions: dict, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """name → (n_boot,) R² over resamples of the rows, the same resamples for every prediction."""
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    yb = y[idx]
    return {name: r2_score(yb, p[idx]) for name, p in predictions.items()}


def _target_columns(props, truth_cols, rows) -> list[tuple[str, str, np.ndarray]]:
    """(source, name, values on ``rows``) for the catalogue properties present and every truth column."""
    out = []
    names = props.colnames if hasattr(props, "colnames") else list(props)
    for name in CATALOG_PROPERTIES:
        if name in names and np.asarray(props[name]).dtype.kind in "biuf":
            out.append(("catalog", name, np.asarray(props[name], dtype=np.float64)[rows]))
    for name, values in (truth_cols or {}).items():
        out.append(("truth", name, np.asarray(values, dtype=np.float64)[rows]))
    return out


def compare(latent_sets: dict, targets, n_boot: int = N_BOOT, seed: int = 0, reference: str = "vae"):
    """The R² table for ``latent_sets`` (name → (latents (n, d), usable (n,) bool)) and ``targets``
    [(source, property, y (n,))], all on the same n rows. ``reference`` is the latent set the others
    are compared with (``vae_minus``). Returns an astropy Table."""
    from astropy.table import Table

    rows = []
    for source, prop, y in targets:
        finite = np.isfinite(y)
        if finite.sum() < MIN_ROWS or np.std(y[finite]) == 0:
            continue  # a pinned parameter, or too few spectra with the property
        for name, (z, usable) in latent_sets.items():
            # the reference recomputed on each model's rows, so that every difference is paired
            sel = finite & usable & latent_sets[reference][1]
            if sel.sum() < MIN_ROWS:
                continue
            preds = {}
            for method in METHODS:
                preds[(name, method)] = out_of_fold(z[sel], y[sel], method, seed)
                if name != reference:
                    preds[(reference, method)] = out_of_fold(latent_sets[reference][0][sel], y[sel], method, seed)
            boot = bootstrap_r2(y[sel], {k: v for k, v in preds.items()}, n_boot, seed)
            for method in METHODS:
                r2 = float(r2_score(y[sel], preds[(name, method)]))
                row = {"source": source, "property": prop, "model": name, "d": z.shape[1], "method": method,
                       "n": int(sel.sum()), "r2": r2, "r2_err": float(np.std(boot[(name, method)], ddof=1)),
                       "vae_minus": np.nan, "vae_minus_err": np.nan}
                if name != reference:
                    ref = float(r2_score(y[sel], preds[(reference, method)]))
                    diff = boot[(reference, method)] - boot[(name, method)]
                    row.update(vae_minus=ref - r2, vae_minus_err=float(np.std(diff, ddof=1)))
                rows.append(row)
    names = ("source", "property", "model", "d", "method", "n", "r2", "r2_err", "vae_minus", "vae_minus_err")
    table = Table(rows=[[r[k] for k in names] for r in rows], names=names,
                  dtype=(str, str, str, int, str, int, float, float, float, float)) if rows else \
        Table(names=names, dtype=(str, str, str, int, str, int, float, float, float, float))
    table["vae_minus"].description = f"R^2({reference}) - R^2(model) on the same rows, paired bootstrap error"
    table.meta.update({"protocol": PROTOCOL, "split": "test", "k": K_NEIGHBOURS, "folds": N_FOLDS,
                       "n_boot": n_boot, "seed": seed})
    return table


# ---------------------------------------------------------------------------------------------------
# the latent sets of an analysis
# ---------------------------------------------------------------------------------------------------

def fit_baselines(dataset, d: int, seed: int = 0, max_rows: int = MAX_FIT_ROWS) -> dict:
    """PCA-d and ivar-weighted PCA-d fitted on (a seeded sample of at most ``max_rows``) training spectra."""
    from ..models.pca import PCA
    from ..prepare.dataset import take_rows

    train = dataset.indices("train")
    if len(train) > max_rows:
        train = np.sort(np.random.default_rng(seed).choice(train, max_rows, replace=False))
    if len(train) <= d:
        raise ValueError(f"{len(train)} training spectra cannot fit a {d}-component PCA baseline")
    flux, ivar = take_rows(dataset.flux, train), take_rows(dataset.ivar, train)
    return {"pca": PCA(d).fit(flux), "wpca": PCA(d, weighted=True).fit(flux, ivar)}


def encode_rows(models: dict, dataset, rows: np.ndarray, block: int = 4096) -> dict:
    """name → ((n, d) latents, (n,) usable) of ``rows`` for PCA models and VAEs/CVAEs, read in blocks.

    A CVAE's latents need its conditions: rows lacking one are not usable (NaN latents)."""
    from ..models.conditions import rows_with_conditions
    from ..prepare.dataset import take_rows

    out = {}
    for name, model in models.items():
        conds = tuple(getattr(model, "condition_names", ()))
        usable = rows_with_conditions(dataset.props, conds)[rows] if conds else np.ones(len(rows), bool)
        out[name] = (np.full((len(rows), model.latent_dim), np.nan), usable)
    for lo in range(0, len(rows), block):
        part = rows[lo:lo + block]
        flux, ivar = take_rows(dataset.flux, part), take_rows(dataset.ivar, part)
        for name, model in models.items():
            z, usable = out[name]
            ok = usable[lo:lo + block]
            if not ok.any():
                continue
            if getattr(model, "condition_names", ()):
                z[lo:lo + block][ok] = model.encode(flux[ok], None, dataset.props[part[ok]])[0]
            else:
                z[lo:lo + block][ok] = model.encode(flux[ok], ivar[ok])[0]
    return out


def latent_information(vae_latents: np.ndarray, dataset, rows: np.ndarray, truth_cols=None, cvae_models=None,
                       seed: int = 0, n_boot: int = N_BOOT):
    """The R² table for the VAE (its ``vae_latents`` of ``rows``), the CVAEs (name → loaded model), and
    PCA-d and weighted PCA-d of the VAE's d, on ``rows`` (the test split)."""
    d = vae_latents.shape[1]
    models = dict(fit_baselines(dataset, d, seed))
    models.update(cvae_models or {})
    sets = {"vae": (vae_latents, np.isfinite(vae_latents).all(axis=1))}
    sets.update(encode_rows(models, dataset, rows))
    targets = _target_columns(dataset.props, {k: v for k, v in (truth_cols or {}).items()}, rows)
    table = compare(sets, targets, n_boot, seed)
    table.meta["models"] = {name: ("cvae(" + ",".join(m.condition_names) + ")" if name.startswith("cvae")
                                   else name) for name, m in models.items()}
    return table


def verdict(table, method: str = "knn") -> list[dict]:
    """Per (source, property) and baseline: is R²(VAE) ≥ R²(baseline), and by how many paired errors."""
    out = []
    for r in table:
        if r["model"] in ("pca", "wpca") and r["method"] == method:
            diff, err = float(r["vae_minus"]), float(r["vae_minus_err"])
            out.append({"source": str(r["source"]), "property": str(r["property"]), "baseline": str(r["model"]),
                        "vae_minus": diff, "err": err, "vae_at_least": bool(diff >= 0),
                        "significance": diff / err if err > 0 else float("nan")})
    return out
