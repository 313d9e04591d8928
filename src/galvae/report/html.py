"""The report: one self-contained HTML page (``report/index.html``) that reads offline.

Figures are embedded as base64 PNG, the CSS is inline, and nothing is fetched from elsewhere: the page
can be mailed, archived or opened on a laptop without a network. Every section is optional, drawn only
from what exists: the dataset's provenance and tally, the model-selection grid (``select``), and the
analysis (``explain``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
from pathlib import Path

import numpy as np

from .._atomic import write_text

log = logging.getLogger(__name__)

CSS = """
:root { --ink:#1f2430; --muted:#5b6475; --line:#d9dee7; --accent:#2b5d9b; --bg:#fbfbfd; --hl:#eef4fb; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 15px/1.55 "Source Sans Pro","Segoe UI","Helvetica Neue",Arial,sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 28px 36px 60px; background:#fff;
       border-left:1px solid var(--line); border-right:1px solid var(--line); min-height:100vh; }
header { border-bottom: 3px solid var(--accent); margin-bottom: 18px; padding-bottom: 10px; }
h1 { font: 600 28px/1.2 Georgia,"Times New Roman",serif; margin: 0 0 4px; }
h2 { font: 600 21px/1.3 Georgia,"Times New Roman",serif; margin: 38px 0 10px; padding-top: 6px;
     border-top: 1px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 6px; color: var(--accent); }
p.sub, .muted { color: var(--muted); }
nav { background: var(--hl); padding: 10px 16px; border-radius: 6px; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; white-space: nowrap; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #f2f4f8; font-weight: 600; }
td.num, th.num { text-align: right; }
tr:nth-child(even) td { background: #fafbfc; }
td.best { font-weight: 700; color: var(--accent); }
figure { margin: 14px 0 22px; }
figure img { max-width: 100%; border: 1px solid var(--line); border-radius: 4px; background:#fff; }
figcaption { font-size: 13.5px; color: var(--muted); margin-top: 4px; }
figcaption b { color: var(--ink); }
.kv td:first-child { color: var(--muted); white-space: nowrap; }
.defn { background: var(--hl); border-left: 4px solid var(--accent); padding: 8px 14px; margin: 10px 0;
        font: 13.5px/1.6 "DejaVu Sans Mono",Menlo,Consolas,monospace; white-space: pre-wrap; }
pre.cfg { background:#f6f7f9; border:1px solid var(--line); padding:10px; font-size:12.5px; overflow-x:auto; }
details summary { cursor: pointer; color: var(--accent); margin: 6px 0; }
.pill { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12.5px; font-weight:600; }
.ok { background:#e3f4e8; color:#1d6b34; } .bad { background:#fbe5e5; color:#9b1c1c; }
.grid2 { display:grid; grid-template-columns: 1fr 1fr; gap: 14px; }
footer { margin-top: 40px; font-size: 12.5px; color: var(--muted); border-top:1px solid var(--line); padding-top:8px; }
"""

FIGURE_CAPTIONS = {
    "fig1_maps": ("Figure 1", ("Median of each property in bins of two rotated latents. Bins with fewer than "
                  "{min_count} galaxies are left empty.")),
    "fig2_bic": ("Figure 2", "BIC of every (latent size, conditions) model; lower is better."),
    "fig3_traversals": ("Figure 3", ("Spectra decoded along one D_j at a time, the other D at 0 (the training "
                        "mean), in steps of D_j's standard deviation. Dotted lines: emission lines; grey: "
                        "the D4000 windows; hatched: columns no spectrum observed (prepare carries each "
                        "spectrum's own edge value there).")),
    "fig4_mutual_information": ("Figure 4", ("Mutual information (KSG, nats) between each catalogue property "
                                "and each D_j; error bars from half-samples.")),
    "fig4_truth_mutual_information": ("Figure 4b", ("Mutual information between the mock's true generating "
                                      "parameters and each D_j.")),
    "fig5_cvae_traversals": ("Figure 5", ("CVAE spectra decoded with z = 0 while one condition runs over the "
                             "5th–95th percentiles of its training distribution (others at their medians). Hatched: "
                             "columns no spectrum observed.")),
    "fig6_shap": ("Figure 6", ("SHAP values per wavelength. A, B: one galaxy's SHAP values for two latents "
                  "(red: pushes D_j up; blue: down; light grey: at its filled pixels, which carry no data), its "
                  "spectrum in grey. C: mean |SHAP| over the explained spectra at their observed pixels, log "
                  "scale. Hatched: columns no spectrum observed.")),
    "explained_variance": ("", "Share of the latent variance carried by each D_j."),
    "unusual_spectra": ("Figure 7", "The most unusual test spectra beside their reconstructions."),
    "latent_information": ("Figure 8", ("R² of each property predicted from d latents on the test split "
                           "(5-fold cross-validated; left: 16 nearest neighbours, inverse-distance weighted, on "
                           "standardised latents; right: linear), for the VAE, the CVAEs and PCA / weighted PCA "
                           "of the same d fitted on the training split; error bars: bootstrap over test rows.")),
}


# ---------------------------------------------------------------------------------------------------
# small HTML builders
# ---------------------------------------------------------------------------------------------------

def esc(x) -> str:
    return html.escape(str(x), quote=True)


def fmt(v, digits: int = 4) -> str:
    """A number for a table: 4 significant digits, ints as ints, NaN as an en dash."""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return esc(v)
    if not np.isfinite(f):
        return "–"
    if f == int(f) and abs(f) < 1e9:
        return f"{int(f):,}" if abs(f) >= 1000 else f"{f:g}"
    return f"{f:.{digits}g}"


def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def table_html(header, rows, num_cols=None, best=None, cls: str = "") -> str:
    """An HTML table; ``best`` is a set of (row, col) cells to highlight."""
    best = best or set()
    num_cols = set(num_cols or ())
    head = "".join(f'<th class="num">{esc(h)}</th>' if i in num_cols else f"<th>{esc(h)}</th>"
                   for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, v in enumerate(row):
            classes = " ".join(k for k, on in (("num", c in num_cols), ("best", (r, c) in best)) if on)
            text = v if isinstance(v, _Raw) else (fmt(v) if _is_num(v) else esc(v))
            cells.append(f'<td class="{classes}">{text}</td>' if classes else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def kv_table(items) -> str:
    """A two-column key/value table without a header row."""
    rows = []
    for k, v in items:
        v = json.dumps(v) if isinstance(v, (dict, list)) else v
        rows.append(f"<tr><td>{esc(k)}</td><td>"
                    f'{fmt(v) if _is_num(v) else esc(v)}</td></tr>')
    return f'<table class="kv"><tbody>{"".join(rows)}</tbody></table>'


def png_data_uri(path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figure_html(path, number: str, caption: str, alt: str = "") -> str:
    lead = f"<b>{esc(number)}.</b> " if number else ""
    return (f'<figure><img src="{png_data_uri(path)}" alt="{esc(alt or number or Path(path).stem)}">'
            f"<figcaption>{lead}{esc(caption)}</figcaption></figure>")


def captioned_figure(a: Path, key: str) -> str:
    """The analysis figure ``key`` with its :data:`FIGURE_CAPTIONS` entry; "" when it was not drawn."""
    p = a / "figures" / f"{key}.png"
    return figure_html(p, *FIGURE_CAPTIONS[key]) if p.exists() else ""


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


# ---------------------------------------------------------------------------------------------------
# definitions, reused from galvae.likelihood (one source for every stage)
# ---------------------------------------------------------------------------------------------------

def likelihood_definitions() -> str:
    """The definitions of :data:`galvae.likelihood.DEFINITIONS` the report shows (ln L, χ²/pixel, KL, ELBO, BIC)."""
    from .. import likelihood

    return "\n".join(likelihood.definition_lines(("χ²_i", "ln L_i", "χ²/pixel", "KL_i", "ELBO_i", "BIC_i")))


def bic_definition() -> str:
    from .. import likelihood

    return "\n".join(likelihood.definition_lines(("ln L_i", "BIC_i")))


# ---------------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------------

def _read_json(path) -> dict:
    p = Path(path)
    return json.loads(p.read_text()) if p.exists() else {}


def _dataset_attrs(dataset_path):
    """(attrs, rejects table or None) of a dataset path or Dataset."""
    if dataset_path is None:
        return {}, None
    if hasattr(dataset_path, "attrs"):
        return dict(dataset_path.attrs), None
    from ..prepare import open_dataset, read_rejects

    d = open_dataset(dataset_path, load=False)
    try:
        rejects = read_rejects(dataset_path)
    except Exception:  # noqa: BLE001 — older or synthetic datasets have no rejects group
        rejects = None
    return dict(d.attrs), rejects


def provenance_section(attrs: dict, config, summary: dict, model_cfg: dict, metrics: dict) -> str:
    parts = []
    from .. import __version__

    items = [("galvae", __version__), ("report written", _dt.datetime.now().strftime("%Y-%m-%d %H:%M")),
             ("data source", attrs.get("source", "–")), ("dataset", summary.get("dataset", "–")),
             ("dataset digest", attrs.get("inputs_digest", "–")), ("catalogue", attrs.get("catalog", "–"))]
    if attrs.get("versions"):
        items.append(("package versions", ", ".join(f"{k} {v}" for k, v in attrs["versions"].items())))
    parts.append(kv_table(items))
    if model_cfg:
        m = model_cfg.get("model", {})
        tr = model_cfg.get("training", {})
        model_items = [("model", summary.get("model_dir", "–")), ("architecture", m.get("arch")),
                       ("latent size d", m.get("latent_dim")), ("pixels", m.get("n_pix")),
                       ("conditions", ", ".join(c["name"] for c in model_cfg.get("conditions", [])) or "none (VAE)"),
                       ("parameters", model_cfg.get("n_parameters")), ("loss", tr.get("loss")),
                       ("epochs / batch / lr", f"{tr.get('epochs')} / {tr.get('batch_size')} / {tr.get('lr')}"),
                       ("training status", model_cfg.get("status"))]
        if metrics:
            for key in ("chi2_per_pixel", "ln_likelihood", "elbo", "bic"):
                if key in metrics:
                    model_items.append((f"test {key} (mean ± s.e.)",
                                        f"{fmt(metrics[key]['mean'])} ± {fmt(metrics[key]['stderr'])}"))
            if "n_test" in metrics:
                model_items.append(("test spectra", metrics["n_test"]))
        parts.append("<h3>Model</h3>" + kv_table(model_items))
    if attrs.get("config"):
        parts.append("<details><summary>prepare configuration</summary>"
                     f'<pre class="cfg">{esc(json.dumps(attrs["config"], indent=2, default=str))}</pre></details>')
    if config:
        parts.append("<details open><summary>run configuration</summary>"
                     f'<pre class="cfg">{esc(json.dumps(config, indent=2, default=str))}</pre></details>')
    return section("provenance", "Configuration and provenance", "".join(parts))


def tally_section(attrs: dict, rejects) -> str:
    counts = attrs.get("counts") or {}
    if not counts:
        return section("dataset", "The dataset", '<p class="muted">No tally recorded for this dataset.</p>')
    rows = [("spectra read", counts.get("files", "–")), ("kept", counts.get("kept", "–")),
            ("rejected", counts.get("rejected", "–"))]
    split = counts.get("split") or {}
    body = '<div class="grid2"><div>' + table_html(("", "spectra"), rows, num_cols={1})
    if split:
        body += table_html(("split", "spectra"), list(split.items()), num_cols={1})
    body += "</div><div>"
    reasons = counts.get("rejects_by_reason") or {}
    if reasons:
        body += "<h3>Rejected, by reason</h3>" + table_html(
            ("reason", "spectra"), sorted(reasons.items(), key=lambda kv: -kv[1]), num_cols={1})
    else:
        body += '<p class="muted">Nothing was rejected.</p>'
    body += "</div></div>"
    match = attrs.get("catalog_match")
    if match:
        body += '<p class="muted">Catalogue match: ' + ", ".join(f"{esc(k)} {fmt(v)}" for k, v in match.items()) + "</p>"
    if rejects is not None and len(rejects):
        rows = [(str(r["id"]) or Path(str(r["path"])).name, str(r["reason"])) for r in rejects[:200]]
        body += (f"<details><summary>every rejected spectrum ({len(rejects)})</summary>"
                 + table_html(("id or file", "reason"), rows) + "</details>")
    return section("dataset", "The dataset", body)


def _cell(value):
    """A table value as a plain Python object; masked (e.g. an empty ECSV string) becomes ''."""
    if value is np.ma.masked or np.ma.is_masked(value):
        return ""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode()
    return value.item() if hasattr(value, "item") else value


def _bic_table(grid, best: dict) -> str:
    """The select grid, every column, the best cell's row highlighted."""
    cols = list(grid.colnames)
    rows = [[_cell(grid[c][i]) for c in cols] for i in range(len(grid))]
    num = {k for k, c in enumerate(cols) if np.asarray(grid[c]).dtype.kind in "biuf"}
    hl = set()
    want = {"d": best.get("d"), "conditions": best.get("conditions_label"), "seed": best.get("best_seed")}
    keys = [k for k, v in want.items() if k in cols and v is not None]
    if keys:
        for i, row in enumerate(rows):
            if all(str(row[cols.index(k)]) == str(want[k]) for k in keys):
                hl |= {(i, c) for c in range(len(cols))}
    return table_html(cols, rows, num_cols=num, best=hl)


def _splits_text(counts: dict) -> str:
    return ", ".join(f"{split} {counts.get(split, 0)}" for split in ("train", "val", "test"))


def missing_conditions_sentence(counts: dict) -> str:
    """The grid's rule for spectra lacking a condition, with its numbers (select's counts: grid.ecsv meta,
    best.json); '' when the counts are not there (a grid from an older galvae)."""
    needed, kept = counts.get("needed_conditions"), counts.get("split_kept")
    dropped, by_condition = counts.get("split_dropped"), counts.get("dropped_by_condition")
    if needed is None or kept is None or dropped is None or by_condition is None:
        return ""
    n_kept = sum(int(kept.get(split, 0)) for split in ("train", "val", "test"))
    if not needed:
        return f"<p>The grid uses no condition: every cell was fitted and scored on all {n_kept} spectra.</p>"
    names = ", ".join(needed)
    if not dropped.get("total"):
        return (f"<p>Every spectrum has the conditions the grid uses ({esc(names)}): every cell was fitted and "
                f"scored on all {n_kept} spectra ({_splits_text(kept)}).</p>")
    by = "; ".join(f"{esc(name)} missing for {c.get('total', 0)} ({_splits_text(c)})"
                   for name, c in by_condition.items() if c.get("total"))
    return (f"<p><b>Spectra left out for missing conditions.</b> Every cell of the grid is fitted and scored on the "
            f"same spectra, those having every condition the grid uses ({esc(names)}), so that their BIC values "
            f"compare. {dropped['total']} of {n_kept + int(dropped['total'])} spectra lack at least one and were left "
            f"out ({_splits_text(dropped)}); {n_kept} remain ({_splits_text(kept)}). By condition (a spectrum may "
            f"lack several): {by}. A grid without those conditions uses every galaxy "
            f"(<code>docs/missing_conditions.md</code>).</p>")


def selection_section(select_dir) -> str:
    if select_dir is None:
        return ""
    from astropy.table import Table

    s = Path(select_dir)
    body = [("<p>Which model explains the spectra best for its number of parameters. The definitions, "
             "shared by every stage (<code>galvae.likelihood</code>):</p>"),
            f'<div class="defn">{esc(bic_definition())}</div>',
            ("<p>Each model's BIC is the mean of BIC_i over the test spectra, with its standard error; "
             "the spread over seeds shows in the grid.</p>")]
    best = _read_json(s / "best.json")
    counts = best or (dict(Table.read(s / "grid.ecsv").meta) if (s / "grid.ecsv").exists() else {})
    body.append(missing_conditions_sentence(counts))
    captions = {"bic_grid": FIGURE_CAPTIONS["fig2_bic"][1], "bic_vs_d": "Test-set BIC against the latent size d.",
                "bic_one_se": "Plain VAEs: each model's BIC minus the lowest, paired over the same test spectra, "
                              "with its standard error (test spectra and seeds); the one-standard-error rule keeps "
                              "the fewest parameters among the filled points."}
    for name, number in (("bic_grid", "Figure 2"), ("bic_vs_d", "Figure 2b"), ("bic_one_se", "Figure 2c")):
        p = s / "figures" / f"{name}.png"
        if p.exists():
            body.append(figure_html(p, number, captions[name]))
    one = (best or {}).get("one_se")
    if one:
        lowest = one["lowest"]
        body.append(
            f"<p><b>Recommended: {esc(one['conditions_label'])}, d = {one['d']}</b> (k = {one['k']}, mean BIC "
            f"{one['bic_mean']:.1f}). Rule: {esc(one['definition'])}. The lowest mean BIC is "
            f"{esc(lowest['conditions_label'])}, d = {lowest['d']} ({lowest['bic_mean']:.1f}). BIC uses ln L at each "
            f"test spectrum's maximum-likelihood latent.</p>")
        steps = [r for r in (best.get("paired") or {}).get("steps", []) if r["conditions_label"] == "vae"]
        if steps:
            body.append("<h3>Plain VAE: each step in d, paired over the test spectra</h3>" + table_html(
                ["step", "ΔBIC", "SE (spectra)", "SE (seeds)", "SE", "ΔBIC / SE"],
                [[f"d {r['d_from']} → {r['d_to']}", f"{r['mean']:.2f}", f"{r['se_spectra']:.2f}",
                  f"{r['se_seeds']:.2f}", f"{r['se']:.2f}", f"{r['mean'] / r['se']:.1f}" if r["se"] else ""]
                 for r in steps], num_cols={1, 2, 3, 4, 5}))
    if best:
        body.append("<h3>Best model (the paper's rule: lowest mean BIC over seeds)</h3>"
                    + kv_table((k, v) for k, v in best.items() if not isinstance(v, (dict, list))))
        others = best.get("other_criteria") or {}
        if others:
            shown = ("conditions_label", "d", "k", "bic_mean", "iwae_mean", "bic_seed_std", "best_seed")
            rows = [(name, ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                     for k, v in choice.items() if k in shown)
                     if isinstance(choice, dict) else choice) for name, choice in others.items()]
            body.append("<h3>Other criteria</h3>" + kv_table(rows))
        if best.get("recommended"):
            rec = best["recommended"]
            text = f"{rec.get('criterion')}: {rec.get('why', '')}" if isinstance(rec, dict) else str(rec)
            body.append(f"<p><b>Recommended criterion</b> — {esc(text)}</p>")
    if (s / "grid.ecsv").exists():
        grid = Table.read(s / "grid.ecsv")
        body.append(f"<h3>The grid ({len(grid)} cells)</h3>" + _bic_table(grid, best))
    return section("selection", "How many latent variables: BIC", "".join(body))


def _wide(table, value: str, err: str | None, latents, properties, best_by: str = "max") -> tuple[list, set]:
    """Rows property × latents of 'value ± err' with the best latent per property highlighted."""
    rows, hl = [], set()
    for r, p in enumerate(properties):
        sub = table[table["property"] == p]
        vals = {str(row["latent"]): row for row in sub}
        cells, scores = [p], []
        for lname in latents:
            row = vals.get(lname)
            if row is None:
                cells.append("–")
                scores.append(np.nan)
                continue
            v = float(row[value])
            text = fmt(v, 3) + (f" ± {fmt(float(row[err]), 2)}" if err and np.isfinite(row[err]) else "")
            cells.append(text)
            scores.append(abs(v) if best_by == "abs" else v)
        if np.isfinite(scores).any():
            hl.add((r, 1 + int(np.nanargmax(scores))))
        rows.append(cells)
    return rows, hl


def _wide_table(table, value: str, err: str | None, latents, properties, first: str, best_by: str = "max") -> str:
    """:func:`_wide` as an HTML table, ``first`` heading the property column."""
    rows, hl = _wide(table, value, err, latents, properties, best_by)
    return table_html([first, *latents], rows, num_cols=set(range(1, len(latents) + 1)), best=hl)


def latent_section(a: Path, summary: dict, rotation: dict) -> str:
    body = []
    ratios = rotation.get("explained_variance_ratio", [])
    names = [f"D{j + 1}" for j in range(len(ratios))]
    cum = np.cumsum(ratios) if ratios else []
    rows = [(n, v, 100 * r, 100 * c) for n, v, r, c in zip(names, rotation.get("explained_variance", []), ratios, cum)]
    body.append("<p>D1…Dd are the principal axes of the training spectra's posterior means (an orthogonal "
                "rotation of the VAE's latent space: no information is lost), ordered by the variance they "
                "carry.</p>")
    body.append('<div class="grid2"><div>' + table_html(("latent", "variance", "share (%)", "cumulative (%)"),
                                                        rows, num_cols={1, 2, 3}) + "</div><div>")
    ev = a / "figures" / "explained_variance.png"
    if ev.exists():
        body.append(figure_html(ev, "", FIGURE_CAPTIONS["explained_variance"][1]))
    body.append("</div></div>")
    min_count = summary.get("maps", {}).get("min_count", 5)
    maps = sorted(a.glob("figures/fig1_maps_*.png"))
    for k, p in enumerate(maps):
        pair = p.stem.replace("fig1_maps_", "").replace("_", ", ")
        body.append(figure_html(p, "Figure 1" + ("" if k == 0 else f"{'abcdefgh'[k]}"),
                                f"({pair}) plane. " + FIGURE_CAPTIONS["fig1_maps"][1].format(min_count=min_count)))
    return section("latents", "The latent space", "".join(body))


def traversal_section(a: Path) -> str:
    body = [f for f in (captioned_figure(a, key) for key in ("fig3_traversals", "fig5_cvae_traversals")) if f]
    return section("traversals", "What each latent does to a spectrum", "".join(body)) if body else ""


def information_section(a: Path, summary: dict) -> str:
    from astropy.table import Table

    if not (a / "mi.ecsv").exists():
        return ""
    mi, rho = Table.read(a / "mi.ecsv"), Table.read(a / "spearman.ecsv")
    latents = summary.get("latent_names") or list(dict.fromkeys(mi["latent"]))
    info = summary.get("mutual_information", {})
    body = [(f"<p>Mutual information by the KSG estimator (k = 3, nats), on {fmt(info.get('n_rows', len(mi)))} "
             f"spectra (split: <b>{esc(info.get('split', '?'))}</b>); ± is the {esc(info.get('uncertainty', ''))} "
             "(the half-sample spread estimates the full-sample standard error). Spearman ρ on the same rows. "
             "Bold: the latent that carries the most about each property.</p>")]
    body.append(captioned_figure(a, "fig4_mutual_information"))
    cat = mi[mi["source"] == "catalog"]
    props = list(dict.fromkeys(cat["property"]))
    if props:
        body.append("<h3>Mutual information (nats), catalogue properties</h3>"
                    + _wide_table(cat, "mi", "mi_err", latents, props, "property"))
        crho = rho[rho["source"] == "catalog"]
        body.append("<h3>Spearman ρ, catalogue properties</h3>"
                    + _wide_table(crho, "rho", None, latents, props, "property", best_by="abs"))
    tracks = info.get("tracks") or []
    if tracks:
        body.append("<h3>What each latent tracks (catalogue)</h3>" + _tracks_table(tracks))
    return section("information", "What the latents know: mutual information", "".join(body))


def _pm(value, err) -> str:
    return f"{fmt(value, 3)} ± {fmt(err, 2)}" if np.isfinite(err) else fmt(value, 3)


def _r2_table(table, method: str, anchor: bool) -> str:
    from ..explain.predictive import ASTROCLIP_SPECTRUM_R2

    sub = table[table["method"] == method]
    models = list(dict.fromkeys(str(m) for m in sub["model"]))
    baselines = [m for m in ("pca", "wpca") if m in models]
    header = ["property", "n", *[f"{m} (d = {int(sub['d'][sub['model'] == m][0])})" for m in models],
              *[f"VAE − {m}" for m in baselines]] + (["AstroCLIP (DESI)"] if anchor else [])
    rows, best = [], set()
    for r, prop in enumerate(dict.fromkeys(str(p) for p in sub["property"])):
        at = {str(x["model"]): x for x in sub[sub["property"] == prop]}
        vae = at.get("vae")
        cells = [prop, int(vae["n"]) if vae is not None else "–"]
        cells += [_Raw(_pm(at[m]["r2"], at[m]["r2_err"])) if m in at else "–" for m in models]
        for m in baselines:
            if m in at:
                diff, err = float(at[m]["vae_minus"]), float(at[m]["vae_minus_err"])
                mark = "" if diff >= 0 else ' <span class="pill bad">VAE lower</span>'
                cells.append(_Raw(_pm(diff, err) + mark))
            else:
                cells.append("–")
        if anchor:
            cells.append(ASTROCLIP_SPECTRUM_R2.get(prop, "–"))
        values = [float(at[m]["r2"]) if m in at else -np.inf for m in models]
        best.add((r, 2 + int(np.argmax(values))))
        rows.append(cells)
    return table_html(header, rows, num_cols=set(range(1, len(header))), best=best)


def r2_section(a: Path, summary: dict) -> str:
    """What the latents know, measured: cross-validated R² of properties, VAE against PCA of the same d."""
    from astropy.table import Table

    if not (a / "r2.ecsv").exists():
        return ""
    table = Table.read(a / "r2.ecsv")
    if not len(table):
        return section("prediction", "What the latents know: R² of properties",
                       "<p>Too few test spectra with any property to cross-validate a regression.</p>")
    info = summary.get("latent_information", {})
    verdicts = [v for v in info.get("vae_vs_pca", []) if v["source"] == "catalog"]
    met = sum(v["vae_at_least"] for v in verdicts)
    body = [("<p>How much of each property the d latents hold, measured as the R² of predicting it from "
             "them on the test split: "
             f"{esc(table.meta.get('protocol', ''))}. PCA and weighted PCA have the VAE's d and were "
             "fitted on the training split. A CVAE's latents are trained to leave out what its conditions "
             "say, so it is expected to score low on them. AstroCLIP's spectrum embeddings on DESI "
             "(Parker et al. 2024, k-NN) are quoted as a published reference, on other data.</p>")]
    if verdicts:
        body.append(f"<p>VAE ≥ baseline (k-NN, catalogue) in <b>{met} of {len(verdicts)}</b> "
                    "(property, baseline) pairs; the differences are paired over the same bootstrap draws.</p>")
    body.append(captioned_figure(a, "latent_information"))
    cat = table[table["source"] == "catalog"]
    if len(cat):
        body.append("<h3>k-NN (k = 16), catalogue properties</h3>" + _r2_table(cat, "knn", anchor=True))
        body.append("<h3>Linear, catalogue properties</h3>" + _r2_table(cat, "linear", anchor=False))
    truth = table[table["source"] == "truth"]
    if len(truth):
        body.append("<details><summary>every true parameter of the mock: k-NN R²</summary>"
                    + _r2_table(truth, "knn", anchor=False) + "</details>")
        body.append("<details><summary>every true parameter of the mock: linear R²</summary>"
                    + _r2_table(truth, "linear", anchor=False) + "</details>")
    return section("prediction", "What the latents know: R² of properties", "".join(body))


def _tracks_table(tracks) -> str:
    rows = [(t["latent"], t.get("property") or "–", t.get("mi", np.nan), t.get("mi_err", np.nan),
             t.get("rho", np.nan)) for t in tracks]
    return table_html(("latent", "tracks", "MI (nats)", "± (nats)", "Spearman ρ"), rows, num_cols={2, 3, 4})


AGN_TRUTH = ("agn_oiii_frac", "agn_log_loiii", "agn_class", "bpt_o3hb")  # mock truth columns of the AGN


def truth_section(a: Path, summary: dict) -> str:
    from astropy.table import Table

    truth = summary.get("truth")
    if not truth:
        return ""
    body = [("<p>On a mock survey the true generating parameters of every galaxy are known. For each latent, "
             "the true parameter it shares the most information with:</p>"), _tracks_table(truth["tracks"])]
    body.append(captioned_figure(a, "fig4_truth_mutual_information"))
    mi, rho = Table.read(a / "mi.ecsv"), Table.read(a / "spearman.ecsv")
    mi, rho = mi[mi["source"] == "truth"], rho[rho["source"] == "truth"]
    latents = summary.get("latent_names") or list(dict.fromkeys(mi["latent"]))
    props = list(dict.fromkeys(mi["property"]))
    agn = [p for p in AGN_TRUTH if p in props]
    if agn:  # the paper reads its D3 as AGN strength: shown, not folded away, when the mock has AGN
        body.append("<h3>AGN strength</h3><p>The paper reads D3 as AGN strength. Mock truth: agn_oiii_frac, the "
                    "AGN's share of [O III]5007; agn_log_loiii, its L[O III] (AGN hosts only); agn_class, 0 none, "
                    "1 Seyfert, 2 LINER-like; bpt_o3hb, log [O III]/Hβ of all lines.</p>"
                    + _wide_table(mi[np.isin(mi["property"], agn)], "mi", "mi_err", latents, agn, "MI (nats)")
                    + _wide_table(rho[np.isin(rho["property"], agn)], "rho", None, latents, agn, "Spearman ρ",
                                  best_by="abs"))
    body.append("<details><summary>every true parameter: MI (nats)</summary>"
                + _wide_table(mi, "mi", "mi_err", latents, props, "parameter") + "</details>")
    body.append("<details><summary>every true parameter: Spearman ρ</summary>"
                + _wide_table(rho, "rho", None, latents, props, "parameter", best_by="abs") + "</details>")
    return section("truth", "Against the truth (mock)", "".join(body))


def attribution_section(a: Path, summary: dict) -> str:
    shap = summary.get("shap")
    if not shap:
        return ""
    fid = shap.get("fidelity", {})
    ok = fid.get("passed")
    pill = f'<span class="pill {"ok" if ok else "bad"}">{"within tolerance" if ok else "outside tolerance"}</span>'
    method = {"deep": "shap's DeepExplainer (DeepLIFT rescale rule, averaged over the background)",
              "integrated_gradients": "integrated gradients from each background spectrum"}.get(shap.get("method"),
                                                                                           shap.get("method"))
    dims = " and ".join(shap.get("showcase_dims", []))
    body = [(f"<p>Attributions of the encoder's posterior mean, rotated to D, to each input pixel: {esc(method)}. "
             f"Background: {fmt(shap.get('n_background'))} training spectra; explained: "
             f"{fmt(shap.get('n_explained'))} test spectra; both drawn in bins of stellar mass. Panels A and B "
             f"show {esc(dims)} for galaxy {esc(shap.get('showcase_id', '?'))} "
             "(the explained galaxy furthest from the background mean in those latents).</p>")]
    body.append(captioned_figure(a, "fig6_shap"))
    body.append("<h3>Fidelity " + pill + "</h3>"
                "<p>The SHAP values of a spectrum must add up to its D_j minus the background's mean D_j.</p>"
                + kv_table([("measured max relative error", fmt(fid.get("max_relative_error"), 3)),
                            ("median relative error", fmt(fid.get("median_relative_error"), 3)),
                            ("max absolute error (latent units)", fmt(fid.get("max_abs_error"), 3)),
                            ("stated tolerance", fmt(fid.get("tolerance"), 3)),
                            ("definition", fid.get("definition", "–"))]))
    return section("attribution", "Which wavelengths matter: SHAP", "".join(body))


def catalog_section(a: Path, summary: dict) -> str:
    body = [("<p><code>analysis/latents.fits</code> holds every spectrum's id, z, split, D1…Dd, the raw "
             "posterior means and standard deviations, χ²/pixel, ln L and the ELBO (low ELBO: the model "
             "explains the spectrum poorly, an outlier score).</p>")]
    unusual = summary.get("unusual") or []
    if unusual:
        body.append("<h3>The most unusual test spectra</h3><p>Ranked by the outlier score: the percentile of "
                    "each spectrum's ELBO among the training spectra of similar S/N (<code>outlier_percentile"
                    "</code>; 5 means 95 % of training spectra of that S/N are explained better). The same score "
                    "ranks spectra of your own: <code>galvae encode --model DIR --spectra FILES…</code>.</p>")
        fig = a / "figures" / "unusual_spectra.png"
        if fig.exists():
            body.append(figure_html(fig, "Figure 7", "The most unusual test spectra (black; grey where a pixel was "
                                    "bad and filled, not scored) and the model's reconstruction (red)."))
        body.append(table_html(("id", "outlier percentile", "S/N", "χ²/pixel", "ELBO (nats)"),
                               [(u["id"], u["outlier_percentile"], u["sn_median"], u["chi2_per_pixel"], u["elbo"])
                                for u in unusual], num_cols={1, 2, 3, 4}))
    out = summary.get("outliers") or []
    if out:
        body.append("<h3>The worst-explained spectra (lowest ELBO)</h3>" + table_html(
            ("id", "split", "ELBO (nats)", "χ²/pixel"),
            [(o["id"], o["split"], o["elbo"], o["chi2_per_pixel"]) for o in out], num_cols={2, 3}))
    for name, ext in (summary.get("external") or {}).items():
        body.append(f"<h3>{esc(name)}: {fmt(ext.get('n'))} spectra encoded with this model</h3>"
                    f"<p>Median χ²/pixel {fmt(ext.get('chi2_per_pixel_median'))}; median ELBO percentile "
                    f"{fmt(ext.get('elbo_percentile_median'))} ({esc(ext.get('reference', ''))}).</p>")
        rows = [(r["id"], r["chi2_per_pixel"], r["elbo"], r["elbo_percentile"]) for r in ext.get("rows", [])[:100]]
        if rows:
            body.append(table_html(("id", "χ²/pixel", "ELBO (nats)", "ELBO percentile"), rows, num_cols={1, 2, 3}))
    return section("catalogue", "The latent catalogue", "".join(body))


def _amount(v, digits: int = 2) -> str:
    """A number for a sentence: whole numbers from 100 up (12,345, not 1.2e+04), else ``digits`` digits."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return esc(v)
    return f"{f:,.0f}" if np.isfinite(f) and abs(f) >= 100 else fmt(f, digits)


def _strength(track: dict) -> str:
    """How a latent relates to its best property, in words: from the MI's significance and |Spearman ρ|."""
    mi, err, rho = (float(track.get(k, np.nan)) for k in ("mi", "mi_err", "rho"))
    if not (np.isfinite(mi) and mi > 2 * (err if np.isfinite(err) else 0.0)):
        return "weakly at best"
    r = abs(rho) if np.isfinite(rho) else 0.0
    return "closely" if r >= 0.7 else "moderately" if r >= 0.4 else "weakly"


def _tracks_sentence(tracks, ratios, what: str) -> str:
    parts = []
    for j, t in enumerate(tracks):
        share = f" ({100 * ratios[j]:.0f}% of the latent variance)" if j < len(ratios) else ""
        if not t.get("property"):
            parts.append(f"{esc(t['latent'])}{share} follows no {what} clearly")
            continue
        sign = "rises" if float(t.get("rho", 0) or 0) >= 0 else "falls"
        parts.append(f"{esc(t['latent'])}{share} {sign} with {esc(t['property'])}, {_strength(t)} "
                     f"(MI {fmt(t['mi'], 2)} ± {fmt(t.get('mi_err'), 1)} nats, Spearman ρ {fmt(t.get('rho'), 2)})")
    return "; ".join(parts) + "."


def _model_words(entry: dict) -> str:
    label = entry.get("conditions_label") or "vae"
    return "a plain VAE" if label == "vae" else f"a CVAE conditioned on {esc(label.replace('+', ', '))}"


def _sure(mean, se) -> str:
    """A paired BIC difference in words: its size against its standard error."""
    z = float(mean) / float(se)
    words = ("clearly" if z >= 3 else "probably, not decisively" if z >= 1 else "within the noise")
    return f"{_amount(mean, 3)} ± {_amount(se)} per test spectrum, {z:.1f} standard errors: {words}"


def _one_se_sentences(one: dict, n_models: int, seeds: int) -> list[str]:
    """select's recommended choice: the one-standard-error rule on paired BIC differences."""
    lowest, compared = one.get("lowest") or {}, one.get("compared") or []
    within = [c for c in compared if c.get("within_one_se")]
    same = (lowest.get("d"), lowest.get("conditions_label")) == (one.get("d"), one.get("conditions_label"))
    out = [f"The BIC chose <b>d = {one['d']} latent variables</b> ({_model_words(one)}) by the one-standard-error "
           f"rule: of {n_models} models compared ({seeds} seed{'s' if seeds != 1 else ''} each), {len(within)} "
           f"{'is' if len(within) == 1 else 'are'} within one paired standard error of the lowest mean BIC, and this "
           "one has the fewest parameters" + (" and the lowest BIC too." if same else
                                               f"; the lowest mean BIC is at d = {lowest.get('d')}.")]
    smaller = [c for c in compared if c.get("conditions_label") == one.get("conditions_label")
               and c.get("d") is not None and c["d"] < one["d"] and c.get("se")]
    if smaller:
        c = max(smaller, key=lambda c: c["d"])
        out.append(f"Fewer latents fit worse: d = {c['d']} has a higher BIC than the lowest by "
                   f"{_sure(c['difference_to_lowest'], c['se'])}.")
    if not same:
        c = next((c for c in compared if (c.get("d"), c.get("conditions_label")) ==
                  (one.get("d"), one.get("conditions_label")) and c.get("se")), None)
        if c is not None:
            out.append(f"The lowest-BIC model, d = {lowest.get('d')}, is better than the chosen one by only "
                       f"{_sure(c['difference_to_lowest'], c['se'])}.")
    return out


def _selection_sentences(best: dict) -> list[str]:
    """How many latents the BIC chose, among what, and how sure (paired differences on the test spectra)."""
    if not best or best.get("d") is None:
        return []
    ranking = best.get("ranking") or []
    seeds = len(best.get("bic_by_seed") or {})
    one = best.get("one_se_plain_vae") or best.get("one_se")
    if one and one.get("d") is not None:
        out = _one_se_sentences(one, len(one.get("compared") or ranking), seeds)
    else:
        out = [f"The BIC chose <b>d = {best['d']} latent variables</b> ({_model_words(best)}), the lowest mean test "
               f"BIC of {len(ranking) or 'the'} models compared"
               + (f" ({seeds} seed{'s' if seeds != 1 else ''} each)." if seeds else ".")]
        diff = best.get("runner_up_paired_difference") or {}
        se = diff.get("se") or diff.get("stderr")
        if len(ranking) > 1 and se:
            r = ranking[1]
            runner = f"d = {r.get('d')}" + ("" if r.get("conditions_label") == "vae"
                                            else f" with {esc(r.get('conditions_label'))}")
            n = diff.get("n_spectra", diff.get("n"))
            out.append(f"The runner-up, {runner}, has a higher BIC by {_sure(diff['mean'], se)} "
                       f"(paired over {fmt(n)} test spectra).")
    std = best.get("bic_seed_std")
    if isinstance(std, (int, float)) and np.isfinite(std) and seeds > 1:
        out.append(f"Over seeds, the lowest-BIC model's BIC spreads by {_amount(std, 3)} (standard deviation).")
    return out


def _prediction_sentence(summary: dict) -> str:
    """How well the latents predict each property, when the analysis measured it (R² per property)."""
    info = summary.get("latent_information") or {}
    scores = info.get("vae_r2") or {}
    rows = [(k, float(v)) for k, v in scores.items() if k and isinstance(v, (int, float)) and np.isfinite(v)]
    if not rows:
        return ""
    rows.sort(key=lambda kv: -kv[1])
    text = ("From the latents alone (k-nearest neighbours, cross-validated on the test spectra), "
            + ", ".join(f"{esc(k)} is predicted with R² = {v:.2f}" for k, v in rows) + ".")
    verdicts = [v for v in info.get("vae_vs_pca", []) if v.get("source") == "catalog"]
    if verdicts:
        met = sum(bool(v["vae_at_least"]) for v in verdicts)
        text += (f" The VAE's latents predict at least as well as PCA or weighted PCA of the same size in {met} of "
                 f"{len(verdicts)} comparisons.")
    return text


def glance_section(summary: dict, rotation: dict, select_dir, model_cfg: dict | None = None,
                   metrics: dict | None = None, attrs: dict | None = None) -> str:
    """The findings in a few sentences with their numbers: the data, how many latents and how sure, the
    model, what each D tracks, how well the latents predict the properties, the most unusual spectra."""
    if not summary:
        return ""
    model_cfg, metrics, attrs = model_cfg or {}, metrics or {}, attrs or {}
    items = []
    counts = attrs.get("counts") or {}
    if counts.get("files"):
        split = counts.get("split") or {}
        items.append(f"{fmt(counts.get('kept'))} spectra of {fmt(counts['files'])} files were kept "
                     f"({fmt(split.get('train', 0))} to train, {fmt(split.get('val', 0))} to stop training, "
                     f"{fmt(split.get('test', 0))} to score); {fmt(counts.get('rejected', 0))} were rejected, each "
                     "with its reason (below).")
    best = _read_json(Path(select_dir) / "best.json") if select_dir else {}
    items += _selection_sentences(best)
    m = model_cfg.get("model") or {}
    if m:
        status = {"done": "all its epochs", "early_stopped": "early stopping", "time_limit": "its time limit",
                  "diverged": "a diverging loss"}.get(model_cfg.get("status"), model_cfg.get("status") or "?")
        text = (f"The model analysed here is a {esc(m.get('arch'))} VAE with d = {m.get('latent_dim')} "
                f"(<code>{esc(Path(str(summary.get('model_dir', ''))).name)}</code>), trained until {esc(status)}")
        chi2 = (metrics.get("chi2_per_pixel") or {}).get("mean")
        if chi2 is not None:
            text += (f"; on {fmt(metrics.get('n_test'))} test spectra its reconstructions reach χ²/pixel "
                     f"{fmt(chi2, 3)} (1 would be the noise alone)")
        items.append(text + ".")
    ratios = rotation.get("explained_variance_ratio", [])
    tracks = (summary.get("mutual_information") or {}).get("tracks") or []
    if tracks:
        items.append("Of the catalogue's properties, " + _tracks_sentence(tracks, ratios, "catalogue property"))
    elif ratios:
        items.append("The latent variance splits " + ", ".join(f"D{j + 1} {100 * r:.0f}%" for j, r in enumerate(ratios))
                     + ".")
    truth = (summary.get("truth") or {}).get("tracks") or []
    if truth:
        items.append("Against the mock's true parameters, " + _tracks_sentence(truth, [], "true parameter"))
    prediction = _prediction_sentence(summary)
    if prediction:
        items.append(prediction)
    unusual = summary.get("unusual") or []
    if unusual:
        u = unusual[0]
        worse = 100 - float(u["outlier_percentile"])
        share = "every training spectrum" if worse >= 100 else f"{worse:.{1 if worse > 99 else 0}f}% of training spectra"
        items.append(f"The most unusual test spectrum, {esc(u['id'])}, is explained worse than {share} "
                     f"of similar S/N "
                     f"(χ²/pixel {fmt(u['chi2_per_pixel'], 3)}); it and the next {len(unusual) - 1} are drawn beside "
                     "their reconstructions in the latent catalogue section.")
    fid = (summary.get("shap") or {}).get("fidelity") or {}
    if fid.get("max_relative_error") is not None:
        items.append(f"The SHAP attributions add up to the latents within a relative error of "
                     f"{fmt(fid.get('max_relative_error'), 2)} (tolerance {fmt(fid.get('tolerance'), 2)}).")
    if not items:
        return ""
    return section("glance", "At a glance", "".join(f"<p>{i}</p>" for i in items))


# ---------------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------------

def write_report(out_dir, dataset_path, analysis_dir, select_dir=None, config=None, title: str | None = None) -> Path:
    """Write ``out_dir/report/index.html`` (self-contained: figures inlined, no external resources).

    dataset_path : the dataset.zarr (or a Dataset) — provenance and the kept/rejected tally.
    analysis_dir : explain's ``analysis/`` directory.
    select_dir : select's directory (grid.ecsv, best.json, figures/bic_*.png), optional.
    config : the run's configuration (a dict), shown as given.
    """
    a = Path(analysis_dir)
    summary = _read_json(a / "summary.json")
    rotation = _read_json(a / "rotation.json")
    attrs, rejects = _dataset_attrs(dataset_path)
    model_dir = summary.get("model_dir")
    model_cfg = _read_json(Path(model_dir) / "config.json") if model_dir else {}
    metrics = _read_json(Path(model_dir) / "metrics.json") if model_dir else {}

    sections = [
        glance_section(summary, rotation, select_dir, model_cfg, metrics, attrs),
        provenance_section(attrs, config, summary, model_cfg, metrics),
        tally_section(attrs, rejects),
        selection_section(select_dir),
        latent_section(a, summary, rotation) if rotation else "",
        traversal_section(a),
        information_section(a, summary),
        r2_section(a, summary),
        truth_section(a, summary),
        attribution_section(a, summary),
        catalog_section(a, summary) if summary else "",
    ]
    sections = [s for s in sections if s]
    toc = " ".join(f'<a href="#{anchor}">{esc(name)}</a>' for anchor, name in _toc(sections))
    d = summary.get("latent_dim")
    headline = (f"{fmt(summary.get('n_spectra'))} spectra, {d} latent variables" if d else "")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title or "galvae report")}</title>
<style>{CSS}</style></head>
<body><main>
<header><h1>{esc(title or "galvae report")}</h1>
<p class="sub">Latent representation of galaxy spectra with a variational autoencoder. {esc(headline)}</p></header>
<nav>{toc}</nav>
{"".join(sections)}
<footer>Written by galvae. Self-contained: every figure is embedded in this file; nothing is fetched from
the network. Analysis: {esc(a)}.</footer>
</main></body></html>
"""
    out = Path(out_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    write_text(path, page)
    log.info("report: %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def _toc(sections) -> list[tuple[str, str]]:
    import re

    out = []
    for s in sections:
        m = re.match(r'<section id="([^"]+)"><h2>(.*?)</h2>', s)
        if m:
            out.append((m.group(1), html.unescape(m.group(2))))
    return out
