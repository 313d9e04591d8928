"""Figures of the analysis, drawn with matplotlib (Agg) from plain arrays: the paper's Figures 1 and 3–6.

Every function returns a :class:`matplotlib.figure.Figure`; :func:`save` writes it as PNG. Wavelengths
are rest-frame vacuum Å; emission lines and the D4000 windows are marked on every spectral panel.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from .mutual_info import PROPERTY_LABELS
from .traversal import D4000_BANDS, LINE_LABELS

STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 110,
    "savefig.dpi": 110, "savefig.bbox": "tight", "axes.grid": False, "font.family": "DejaVu Sans",
}
PANEL = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@contextmanager
def _style():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    with plt.rc_context(STYLE):
        yield plt


def label(name: str) -> str:
    """Axis label of a property or latent."""
    return PROPERTY_LABELS.get(name, name)


def save(fig, path) -> Path:
    """Write ``fig`` as PNG atomically and close it; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path


def mark_lines(ax, wave_range=None, labels: bool = True) -> None:
    """Dotted verticals at the emission lines, shaded D4000 windows, labels along the top (staggered)."""
    lo, hi = wave_range if wave_range is not None else ax.get_xlim()
    for a, b in D4000_BANDS:
        ax.axvspan(a, b, color="0.85", alpha=0.5, lw=0, zorder=0)
    trans = ax.get_xaxis_transform()
    marks = [("D4000", np.mean([D4000_BANDS[0][1], D4000_BANDS[1][0]]), False)]
    marks += [(name, w, True) for name, w in LINE_LABELS.items()]
    marks.sort(key=lambda m: m[1])
    for k, (name, w, is_line) in enumerate(marks):
        if not lo <= w <= hi:
            continue
        if is_line:
            ax.axvline(w, color="0.55", ls=":", lw=0.7, zorder=0)
        if labels:
            ax.text(w, 1.01 + 0.07 * (k % 2), name, transform=trans, ha="center", va="bottom", fontsize=7,
                    color="0.3" if is_line else "0.5")


def running_mean(y, width: int) -> np.ndarray:
    """Centred running mean over ``width`` pixels (shorter windows at the ends), of the finite values:
    NaN (no observed pixel there) neither spreads nor counts, and stays NaN where the window has none."""
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y)
    kernel = np.ones(min(width, len(y)))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.convolve(np.where(ok, y, 0.0), kernel, "same") / np.convolve(ok.astype(float), kernel, "same")
    return np.where(ok, mean, np.nan)


UNOBSERVED_GID = "unobserved"


def shade_unobserved(ax, wave, unobserved, label: bool = False) -> None:
    """Hatch the columns no spectrum observed: what is drawn there is each spectrum's own edge value
    carried across by prepare, not data."""
    if unobserved is None or not np.any(unobserved):
        return
    mask = np.asarray(unobserved, bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.view(np.int8), [0]])))
    for a, b in zip(edges[::2], edges[1::2]):
        ax.axvspan(wave[a], wave[b - 1], facecolor="0.88", edgecolor="0.6", hatch="///", lw=0, zorder=0.5,
                   gid=UNOBSERVED_GID)
        if label:
            ax.text(wave[a], 0.02, " not observed", transform=ax.get_xaxis_transform(), fontsize=6,
                    color="0.4", rotation=90, va="bottom", ha="left")


def latent_maps_figure(maps, title: str = ""):
    """Figure 1: one panel per property, the median in bins of two latents (empty below the minimum count)."""
    with _style() as plt:
        n = len(maps)
        cols = min(n, 4) or 1
        rows = int(np.ceil(n / cols)) or 1
        fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.7 * rows), squeeze=False,
                                 constrained_layout=True)
        for ax, m in zip(axes.flat, maps):
            finite = m.median[np.isfinite(m.median)]
            vmin, vmax = (np.percentile(finite, [2, 98]) if finite.size else (0, 1))
            im = ax.pcolormesh(m.x_edges, m.y_edges, m.median.T, cmap="viridis", vmin=vmin, vmax=vmax,
                               shading="flat")
            ax.set_xlabel(m.x_name)
            ax.set_ylabel(m.y_name)
            ax.set_title(f"median {label(m.prop)}")
            fig.colorbar(im, ax=ax, shrink=0.85)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        if maps:
            fig.suptitle(title or f"Properties in the ({maps[0].x_name}, {maps[0].y_name}) plane; bins with "
                         f"fewer than {maps[0].min_count} galaxies left empty", fontsize=10)
        return fig


def traversals_figure(wave, traversals, title: str = "", with_model: bool = False, unobserved=None):
    """Figure 3 (and 5): one panel per traversal, the decoded spectra coloured by the varied value;
    ``with_model`` adds each traversal's label (the CVAE's name) to its panel; ``unobserved`` (P,) bool
    columns are hatched."""
    import matplotlib as mpl

    with _style() as plt:
        n = len(traversals)
        fig, axes = plt.subplots(n, 1, figsize=(9.0, 2.3 * n + 0.4), sharex=True, squeeze=False,
                                 constrained_layout=True)
        cmap = mpl.colormaps["coolwarm"]
        for k, (ax, t) in enumerate(zip(axes[:, 0], traversals)):
            vals = np.asarray(t.values, dtype=float)
            norm = mpl.colors.Normalize(vals.min(), vals.max() if vals.max() > vals.min() else vals.min() + 1)
            for v, spec in zip(vals, t.spectra):
                ax.plot(wave, spec, color=cmap(norm(v)), lw=0.8)
            mark_lines(ax, (wave[0], wave[-1]), labels=(k == 0))
            shade_unobserved(ax, wave, unobserved, label=(k == 0))
            ax.set_ylabel("normalised flux")
            suffix = f"  ({t.label})" if with_model and t.label else ""
            ax.text(0.005, 0.95, f"{PANEL[k]}  {label(t.name)}{suffix}", transform=ax.transAxes, va="top",
                    fontweight="bold")
            sm = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
            fig.colorbar(sm, ax=ax, pad=0.01, aspect=12).set_label(label(t.name), fontsize=8)
        axes[-1, 0].set_xlabel("rest-frame wavelength (Å, vacuum)")
        axes[0, 0].set_xlim(wave[0], wave[-1])
        if title:
            fig.suptitle(title, fontsize=10)
        return fig


def mutual_information_figure(mi, properties=None, source: str | None = None, title: str = ""):
    """Figure 4: one bar panel per property, MI (nats) with each D_j, half-sample error bars."""
    if source is not None:
        mi = mi[mi["source"] == source]
    props = [p for p in (properties or dict.fromkeys(mi["property"])) if np.any(mi["property"] == p)]
    latents = list(dict.fromkeys(mi["latent"]))
    with _style() as plt:
        cols = min(len(props), 4) or 1
        rows = int(np.ceil(len(props) / cols)) or 1
        fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.1 * rows), squeeze=False, sharey=True,
                                 constrained_layout=True)
        top = np.nanmax(np.asarray(mi["mi"]) + np.nan_to_num(np.asarray(mi["mi_err"]))) if len(mi) else 1.0
        for ax, p in zip(axes.flat, props):
            sub = mi[mi["property"] == p]
            order = [latents.index(str(name)) for name in sub["latent"]]
            ax.bar(order, sub["mi"], yerr=np.nan_to_num(sub["mi_err"]), color="#4C72B0", capsize=2,
                   error_kw={"lw": 0.8})
            ax.set_xticks(range(len(latents)), latents)
            ax.set_title(label(p))
            ax.set_ylim(0, 1.1 * top if np.isfinite(top) and top > 0 else 1)
        for ax in axes[:, 0]:
            ax.set_ylabel("MI (nats)")
        for ax in axes.flat[len(props):]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title, fontsize=10)
        return fig


FILLED_COLOR = "0.72"


def shap_figure(wave, values, spectrum, dims, mean_abs, galaxy: str = "", latent_names=None, filled=None,
                unobserved=None):
    """Figure 6: one galaxy's SHAP values for two latents (A, B) over its spectrum, and the mean |SHAP|
    per wavelength of every latent on a log scale (C). ``filled`` (P,) bool: the galaxy's filled pixels,
    whose SHAP values are drawn grey (A, B); ``mean_abs`` should leave them out (C); ``unobserved``
    columns are hatched."""
    names = latent_names or [f"D{j + 1}" for j in range(mean_abs.shape[1])]
    filled = np.zeros(len(wave), bool) if filled is None else np.asarray(filled, bool)
    with _style() as plt:
        fig, axes = plt.subplots(3, 1, figsize=(9.0, 7.8), sharex=True, constrained_layout=True)
        for k, (ax, j) in enumerate(zip(axes[:2], dims)):
            v = values[:, j]
            ax.fill_between(wave, 0, v, where=(v >= 0) & ~filled, color="#C44E52", lw=0, step="mid")
            ax.fill_between(wave, 0, v, where=(v < 0) & ~filled, color="#4C72B0", lw=0, step="mid")
            if filled.any():  # attributions to filled pixels: the encoder's, not the galaxy's
                ax.fill_between(wave, 0, v, where=filled, color=FILLED_COLOR, lw=0, step="mid", gid="filled",
                                label="filled pixels")
            shade_unobserved(ax, wave, unobserved)
            ax.axhline(0, color="0.3", lw=0.5)
            ax.set_ylabel(f"SHAP for {names[j]}")
            if spectrum is not None:
                twin = ax.twinx()
                twin.plot(wave, spectrum, color="0.6", lw=0.5, zorder=0)
                twin.set_ylabel("normalised flux", color="0.5")
                twin.spines["right"].set_visible(True)
            mark_lines(ax, (wave[0], wave[-1]), labels=(k == 0))
            ax.text(0.005, 0.95, f"{PANEL[k]}  {names[j]}, {galaxy}", transform=ax.transAxes, va="top",
                    fontweight="bold")
        ax = axes[2]
        positive = mean_abs[mean_abs > 0]
        floor = np.percentile(positive, 1) / 2 if positive.size else 1e-12
        colors = [f"C{j % 10}" for j in range(mean_abs.shape[1])]
        for j in range(mean_abs.shape[1]):  # raw per pixel, faint; a 25-pixel running mean on top
            ax.plot(wave, np.clip(mean_abs[:, j], floor, None), lw=0.4, color=colors[j], alpha=0.25)
        for j in range(mean_abs.shape[1]):
            ax.plot(wave, np.clip(running_mean(mean_abs[:, j], 25), floor, None), lw=1.1, color=colors[j],
                    label=names[j])
        ax.set_yscale("log")
        if positive.size:
            ax.set_ylim(floor, positive.max() * 3)
        ax.set_ylabel("mean |SHAP|")
        ax.legend(ncol=min(mean_abs.shape[1], 8), loc="lower right", frameon=False)
        mark_lines(ax, (wave[0], wave[-1]), labels=False)
        shade_unobserved(ax, wave, unobserved)
        ax.text(0.005, 0.95, "C  mean |SHAP| over the explained spectra at observed pixels "
                "(line: 25-pixel running mean)",
                transform=ax.transAxes, va="top",
                fontweight="bold")
        ax.set_xlabel("rest-frame wavelength (Å, vacuum)")
        ax.set_xlim(wave[0], wave[-1])
        return fig


def explained_variance_figure(ratios, latent_names=None):
    """Bar chart of the fraction of the latent variance carried by each D_j."""
    names = latent_names or [f"D{j + 1}" for j in range(len(ratios))]
    with _style() as plt:
        fig, ax = plt.subplots(figsize=(3.2, 2.2), constrained_layout=True)
        ax.bar(names, 100 * np.asarray(ratios), color="#55A868")
        ax.set_ylabel("explained variance (%)")
        return fig


MODEL_COLORS = {"vae": "#C44E52", "pca": "#4C72B0", "wpca": "#55A868"}


def r2_figure(table, sources=("catalog", "truth")):
    """What the latents know: R² per property (rows) for each latent set (bars), k-NN and linear side by
    side, with bootstrap errors; one row of panels per source (catalogue, a mock's truth)."""
    sources = [s for s in sources if np.any(table["source"] == s)]
    models = list(dict.fromkeys(str(m) for m in table["model"]))
    with _style() as plt:
        heights = [len(set(table["property"][table["source"] == s])) for s in sources] or [1]
        fig, axes = plt.subplots(len(sources) or 1, 2, figsize=(8.0, 0.9 + 0.32 * sum(heights) * len(models) / 2),
                                 squeeze=False, constrained_layout=True, sharex=True,
                                 gridspec_kw={"height_ratios": heights})
        width = 0.8 / max(len(models), 1)
        for r, source in enumerate(sources):
            sub = table[table["source"] == source]
            props = list(dict.fromkeys(str(p) for p in sub["property"]))
            for c, method in enumerate(("knn", "linear")):
                ax = axes[r, c]
                for m, model in enumerate(models):
                    pick = sub[(sub["method"] == method) & (sub["model"] == model)]
                    at = {str(p): i for i, p in enumerate(pick["property"])}
                    y = [props.index(p) + (m - (len(models) - 1) / 2) * width for p in at]
                    ax.barh(y, [pick["r2"][i] for i in at.values()], height=width,
                            xerr=[pick["r2_err"][i] for i in at.values()],
                            color=MODEL_COLORS.get(model, f"C{(m + 3) % 10}"), label=f"{model}",
                            error_kw={"lw": 0.7}, capsize=1.5)
                ax.set_yticks(range(len(props)), [label(p) for p in props])
                ax.invert_yaxis()
                ax.axvline(0, color="0.3", lw=0.5)
                ax.set_xlim(min(0.0, float(np.nanmin(table["r2"])) - 0.05) if len(table) else 0, 1.0)
                ax.set_title(f"{'k-NN (k = 16)' if method == 'knn' else 'linear'}: {source}")
        axes[-1, 0].set_xlabel("R² on the test split (cross-validated)")
        axes[-1, 1].set_xlabel("R² on the test split (cross-validated)")
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, names, frameon=False, fontsize=8, loc="outside upper center", ncol=len(models))
        return fig


# ---------------------------------------------------------------------------------------------------
# figures from the stored arrays
# ---------------------------------------------------------------------------------------------------

def _load_traversals(path):
    """(wave, traversals, unobserved columns or None) stored by the driver in a traversals .npz."""
    from .traversal import traversals_from_npz

    with np.load(path) as f:
        wave, travs = traversals_from_npz(f)
        return wave, travs, (f["unobserved"] if "unobserved" in f.files else None)


def draw_figures(analysis_dir) -> dict:
    """(Re)draw every figure of an analysis directory from its stored arrays; returns name → path.

    Names: fig1_maps_D1_D2 (and the other pairs), fig3_traversals, fig4_mutual_information,
    fig4_truth_mutual_information (mocks), fig5_cvae_traversals (with CVAEs), fig6_shap,
    latent_information (with r2.ecsv), explained_variance. Columns no spectrum observed are shaded.
    """
    import json

    from astropy.table import Table

    from .attribution import load_shap, showcase_dims
    from .maps import maps_from_npz
    from .mutual_info import PROPERTIES
    from .rotation import LatentRotation

    a = Path(analysis_dir)
    fig_dir = a / "figures"
    summary = json.loads((a / "summary.json").read_text()) if (a / "summary.json").exists() else {}
    rotation = LatentRotation.load(a / "rotation.json")
    names = rotation.names
    out = {}

    with np.load(a / "maps.npz") as f:
        maps = maps_from_npz(f)
    for pair in dict.fromkeys((m.x_name, m.y_name) for m in maps):
        sub = [m for m in maps if (m.x_name, m.y_name) == pair]
        out[f"fig1_maps_{pair[0]}_{pair[1]}"] = save(latent_maps_figure(sub), fig_dir / f"fig1_maps_{pair[0]}_{pair[1]}.png")

    wave, travs, unobserved = _load_traversals(a / "traversals.npz")
    out["fig3_traversals"] = save(traversals_figure(
        wave, travs, "Decoded spectra along each D_j (others at 0), steps of its standard deviation",
        unobserved=unobserved),
        fig_dir / "fig3_traversals.png")

    mi = Table.read(a / "mi.ecsv")
    order = [p for p in PROPERTIES if np.any((mi["property"] == p) & (mi["source"] == "catalog"))]
    out["fig4_mutual_information"] = save(mutual_information_figure(
        mi, order, "catalog", "Mutual information between catalogue properties and D_j"),
        fig_dir / "fig4_mutual_information.png")
    if np.any(mi["source"] == "truth"):
        out["fig4_truth_mutual_information"] = save(mutual_information_figure(
            mi, None, "truth", "Mutual information between the mock's true parameters and D_j"),
            fig_dir / "fig4_truth_mutual_information.png")

    if (a / "cvae_traversals.npz").exists() and summary.get("cvae", {}).get("models"):
        cwave, ctravs, cunobserved = _load_traversals(a / "cvae_traversals.npz")
        out["fig5_cvae_traversals"] = save(traversals_figure(
            cwave, ctravs, "CVAE spectra with z = 0, one condition at the 5–95th training percentiles",
            with_model=True, unobserved=cunobserved),
            fig_dir / "fig5_cvae_traversals.png")

    result, swave, ids, flux = load_shap(a / "shap.npz")
    dims = showcase_dims(rotation.n_components)
    k = int(summary.get("shap", {}).get("showcase_index", 0))
    spectrum = flux[k] if len(flux) > k else None
    filled = result.filled[k] if result.filled is not None else None
    out["fig6_shap"] = save(shap_figure(swave, result.values[k], spectrum, dims, result.mean_abs(),
                                            galaxy=str(ids[k]), latent_names=names, filled=filled,
                                            unobserved=result.unobserved), fig_dir / "fig6_shap.png")
    if (a / "unusual.npz").exists():
        from .unusual import unusual_figure

        with np.load(a / "unusual.npz") as f:
            arrays = {k: f[k] for k in f.files}
        if len(arrays["id"]):
            out["unusual_spectra"] = save(unusual_figure(arrays), fig_dir / "unusual_spectra.png")
    r2 = Table.read(a / "r2.ecsv") if (a / "r2.ecsv").exists() else []
    if len(r2):
        out["latent_information"] = save(r2_figure(r2), fig_dir / "latent_information.png")
    out["explained_variance"] = save(explained_variance_figure(rotation.explained_variance_ratio_, names),
                                       fig_dir / "explained_variance.png")
    drawn = {Path(v).name for v in out.values()}
    for stale in fig_dir.glob("*.png"):  # from an earlier analysis in this folder (another model, other pairs)
        if stale.name not in drawn:
            stale.unlink()
    return {k: Path(v) for k, v in out.items()}
