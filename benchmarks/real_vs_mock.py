"""How far is the mock from real SDSS? Encode the real galaxies with a run's model and compare.

Prepares the galaxies of ``../shared/data/sdss`` with the run's prepare settings, encodes them with the
model that the run explained (same D1…Dd basis), and gives each galaxy's χ²/pixel and the percentile of
its ELBO among the mock's test spectra: all of them, and the ``--match`` test spectra nearest in S/N
(the ELBO of a spectrum grows with its S/N, and the real set is brighter than the mock; a low
percentile: the model finds the galaxy unlike mock galaxies observed as well). The comparison is added
to the run's ``analysis/summary.json``, the report is rewritten to show it, and with ``--doc`` the
result is written into ``docs/mock_realism.md`` (between its ``real_vs_mock`` markers).

    python benchmarks/real_vs_mock.py --run out/run5000 [--dir ../shared/data/sdss] [--match 50] [--doc]

``--explained FOLDER`` scores another model of the same run instead (the ``--out`` of its ``galvae explain``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT.parent / "shared" / "data" / "sdss"
DOC = ROOT / "docs" / "mock_realism.md"
TARGET_MEDIAN, TARGET_LOW_FRACTION = 30.0, 0.1  # target: median percentile ≥ 30 %, ≤ 1 in 10 below the 5th


def _relative(path) -> str:
    p = Path(path)
    return str(p.relative_to(ROOT)) if p.is_absolute() and p.is_relative_to(ROOT) else str(path)


def matched_percentiles(real_sn, real_values, ref_sn, ref_values, k: int) -> np.ndarray:
    """Percentile (0–100) of each real value among the k reference values nearest in log S/N."""
    ref_log = np.log10(np.clip(ref_sn, 0.1, None))
    out = np.full(len(real_values), np.nan)
    for i, (sn, v) in enumerate(zip(real_sn, real_values)):
        if not (np.isfinite(sn) and np.isfinite(v)):
            continue
        near = np.argsort(np.abs(ref_log - np.log10(max(sn, 0.1))))[:k]
        ref = np.asarray(ref_values)[near]
        out[i] = 100.0 * (np.sum(ref < v) + 0.5 * np.sum(ref == v)) / len(ref)
    return out


REGIONS = ((3400, 3700), (3700, 4000), (4000, 4400), (4400, 4800), (4800, 5300), (5300, 5800), (5800, 6400),
           (6400, 6700), (6700, 7500), (7500, 8400))  # rest-frame Å

#: narrow windows on the features a model of galaxy spectra must draw (rest-frame Å, vacuum as the grid)
FEATURES = {"[O II] 3727": (3722, 3735), "Ca II H+K": (3928, 3975), "Hδ": (4097, 4108), "G band": (4290, 4320),
            "Hγ": (4336, 4347), "Hβ": (4857, 4868), "[O III] 4959+5007": ((4955, 4965), (5003, 5013)),
            "Mg b": (5160, 5195), "Na D": (5885, 5905), "[O I] 6300": (6297, 6308),
            "Hα + [N II]": (6544, 6592), "[S II] 6717+31": (6713, 6738), "Na I 8183+95": (8180, 8205)}


def _in(wave, window) -> np.ndarray:
    windows = window if isinstance(window[0], tuple) else (window,)
    return np.any([(wave >= lo) & (wave < hi) for lo, hi in windows], axis=0)


def residuals(model_dir, dataset_path, rows=None) -> dict:
    """Per-pixel χ² of the model's reconstruction (posterior mean), the good-pixel mask, flux, model and
    wavelengths of ``rows`` of a dataset."""
    from galvae.models import load_vae
    from galvae.prepare.dataset import open_dataset

    model, ds = load_vae(model_dir), open_dataset(dataset_path)
    rows = np.arange(len(ds)) if rows is None else np.asarray(rows)
    flux, ivar = np.asarray(ds.flux)[rows], np.asarray(ds.ivar)[rows]
    recon = model.reconstruct(flux, ivar)
    return {"chi2": (flux - recon) ** 2 * ivar, "good": ivar > 0, "flux": flux, "model": recon,
            "wave": np.asarray(ds.wave)}


def region_chi2(res: dict, windows) -> np.ndarray:
    """χ²/pixel of each spectrum in each window (N, len(windows))."""
    out = []
    for window in windows:
        sel = _in(res["wave"], window)
        out.append(np.sum(res["chi2"][:, sel] * res["good"][:, sel], axis=1)
                   / np.maximum(np.sum(res["good"][:, sel], axis=1), 1))
    return np.array(out).T


def feature_rows(real: dict, mock: dict) -> list[str]:
    """Markdown rows, one per :data:`FEATURES` window: pooled χ²/pixel of the real galaxies and of the mock
    spectra as bright; the window's share of the real galaxies' whole excess χ² (their χ² above the mock's
    χ²/pixel, taken window by window, and over the spectrum in 50-pixel blocks for the whole); the median
    over real galaxies of their mean (data − model) / model in the window."""
    def pooled(res, sel):
        return float(np.sum(res["chi2"][:, sel] * res["good"][:, sel]) / max(np.sum(res["good"][:, sel]), 1))

    wave = real["wave"]
    total = sum(np.sum(real["chi2"][:, s] * real["good"][:, s]) - pooled(mock, s) * np.sum(real["good"][:, s])
                for s in (np.arange(len(wave)) // 50 == b for b in range(len(wave) // 50 + 1)) if s.any())
    rows = []
    for name, window in FEATURES.items():
        sel = _in(wave, window)
        excess = np.sum(real["chi2"][:, sel] * real["good"][:, sel]) - pooled(mock, sel) * np.sum(real["good"][:, sel])
        frac = np.where(real["good"][:, sel], (real["flux"] - real["model"])[:, sel]
                        / np.maximum(np.abs(real["model"][:, sel]), 1e-3), np.nan)
        per_galaxy = np.nanmean(frac, axis=1)
        rows.append(f"| {name} | {int(sel.sum())} | {pooled(real, sel):.2f} | {pooled(mock, sel):.2f} | "
                    f"{100 * excess / total:.1f} % | {100 * np.nanmedian(per_galaxy):+.1f} % "
                    f"({int(np.sum(per_galaxy < 0))} of {int(np.isfinite(per_galaxy).sum())} below) |")
    return rows


def feature_excess(real: dict, mock: dict) -> tuple[np.ndarray, list[str]]:
    """Each real galaxy's χ² above the mock's pooled χ²/pixel in all :data:`FEATURES` windows together (≥ 0
    per window), and the window holding most of it."""
    per = []
    for window in FEATURES.values():
        sel = _in(real["wave"], window)
        mock_level = np.sum(mock["chi2"][:, sel] * mock["good"][:, sel]) / max(np.sum(mock["good"][:, sel]), 1)
        per.append(np.clip(np.sum(real["chi2"][:, sel] * real["good"][:, sel], axis=1)
                           - mock_level * np.sum(real["good"][:, sel], axis=1), 0, None))
    per = np.array(per).T
    return per.sum(axis=1), [list(FEATURES)[k] for k in np.argmax(per, axis=1)]


def main(argv=None):
    from astropy.table import Table

    from galvae.explain import encode_external
    from galvae.prepare import PrepareConfig, prepare_dataset
    from galvae.report import write_report
    from galvae.sources.sdss import read_spectrum

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished `galvae run` folder (on a mock)")
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--match", type=int, default=50, help="mock test spectra per real galaxy, nearest in S/N")
    ap.add_argument("--explained", type=Path, help="another model of this run, explained: the --out of `galvae explain "
                    "--model M --data RUN/dataset.zarr --truth RUN/mock/truth.fits`; default: the run's own model")
    ap.add_argument("--doc", action="store_true", help="write the result into docs/mock_realism.md")
    args = ap.parse_args(argv)
    if not args.dir.is_dir():
        raise SystemExit(f"{args.dir} not found: the real SDSS files are needed for this comparison")
    run = args.run
    config = json.loads((run / "config.json").read_text())
    analysis = args.explained / "analysis" if args.explained else run / "analysis"
    summary = json.loads((analysis / "summary.json").read_text())
    p = config["prepare"]
    real = run / "real_sdss.zarr"
    result = prepare_dataset(args.dir, real, scheduler="sync", progress=False, config=PrepareConfig(
        zmax=p["zmax"], n_pix=p["n_pix"], wave_min=p["wave_min"], wave_max=p["wave_max"],
        max_bad_fraction=p["max_bad_fraction"], n_components=p["n_components"], n_iter=p["n_iter"]))
    print(result.summary())
    table = encode_external(summary["model_dir"], analysis, real, name="real_sdss")

    # S/N of the real galaxies (their files) and of the mock's test spectra (truth table).
    info = {}
    for path in sorted(args.dir.glob("spec-*.fits")):
        try:
            s = read_spectrum(path)
        except ValueError:
            continue
        info[s.id] = (s.sn_median, s.subclass)
    ref = Table.read(analysis / "latents.fits")
    ref = ref[np.asarray(ref["split"]).astype(str) == "test"]
    truth = Table.read(run / "mock" / "truth.fits", mask_invalid=False)
    sn_by_id = dict(zip(np.asarray(truth["id"]).astype(str), np.asarray(truth["sn_median"], float)))
    ref_sn = np.array([sn_by_id.get(str(i), np.nan) for i in ref["id"]])
    ref_elbo, ref_chi2 = np.asarray(ref["elbo"], float), np.asarray(ref["chi2_per_pixel"], float)

    ids = [str(i) for i in table["id"]]
    sn = np.array([info.get(i, (np.nan, ""))[0] for i in ids])
    chi2 = np.asarray(table["chi2_per_pixel"], float)
    pct_all = np.asarray(table["elbo_percentile"], float)
    pct = matched_percentiles(sn, np.asarray(table["elbo"], float), ref_sn, ref_elbo, args.match)
    chi2_ref = np.array([np.median(ref_chi2[np.argsort(np.abs(np.log10(np.clip(ref_sn, 0.1, None))
                                                                  - np.log10(max(v, 0.1))))[:args.match]])
                         for v in sn])
    rows = [f"| {i} | {info.get(i, (0, ''))[1] or '–'} | {float(z):.3f} | {s:.1f} | {c:.2f} | {cr:.2f} | {a:.1f} | {m:.1f} |"
            for i, z, s, c, cr, a, m in zip(ids, table["z"], sn, chi2, chi2_ref, pct_all, pct)]
    n, low = int(np.isfinite(pct).sum()), int(np.sum(pct < 5.0))
    med = float(np.nanmedian(pct))
    met = med >= TARGET_MEDIAN and low <= TARGET_LOW_FRACTION * n
    ref_snr = ref_sn[np.isfinite(ref_sn)]
    lines = [
        "<!-- real_vs_mock -->",
        "## Can the model tell them apart?",
        "",
        f"Made by `python benchmarks/real_vs_mock.py --run {run.relative_to(ROOT) if run.is_relative_to(ROOT) else run} "
        f"--match {args.match}{f' --explained {_relative(args.explained)}' if args.explained else ''} --doc` on the model "
        f"`{_relative(summary.get('model_dir', '?'))}` "
        f"(`galvae run --out {_relative(run)} --workers 1 --config` a YAML file holding `mock: {{n: {config['mock']['n']}, "
        f"seed: {config['mock']['seed']}}}` and `select: {{latent: \"{config['select']['latent']}\", conditions: "
        f"{config['select']['conditions']}, seeds: {config['select']['seeds']}, epochs: {config['select']['epochs']}, "
        f"patience: {config['select']['patience']}}}`, the {config['preset']} preset otherwise: "
        f"{config['select']['arch']} architecture; {len(truth)} galaxies; "
        f"{len(ref)} test spectra, S/N {np.median(ref_snr):.1f} [{np.percentile(ref_snr, 16):.1f}, "
        f"{np.percentile(ref_snr, 84):.1f}]). Real galaxies: the {len(table)} of `../shared/data/sdss` that pass "
        "prepare (z < 0.1, CLASS GALAXY, ZWARNING 0, ≤ 30 % bad pixels).",
        "",
        f"ELBO percentile among the {args.match} mock test spectra nearest in S/N: median **{med:.1f} %**, "
        f"**{low} of {n}** below the 5th percentile (target: median ≥ {TARGET_MEDIAN:.0f} %, at most one in ten "
        f"below the 5th): **{'met' if met else 'not met'}**. Among all test spectra, unmatched: median "
        f"{np.nanmedian(pct_all):.1f} %, {int(np.sum(pct_all < 5))} of {n} below the 5th. χ²/pixel median "
        f"{np.nanmedian(chi2):.2f} ({np.nanmin(chi2):.2f}–{np.nanmax(chi2):.2f}); the S/N-matched mock's median "
        f"{np.nanmedian(chi2_ref):.2f}.",
        "",
        "| id | SUBCLASS | z | S/N | χ²/pixel | χ²/pixel, matched mock median | ELBO pct, all test | ELBO pct, S/N-matched |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "<!-- /real_vs_mock -->",
    ]
    # Where the reconstructions differ: χ²/pixel by rest-frame region, real against mock test spectra as bright.
    from galvae.prepare.dataset import open_dataset

    real_res = residuals(summary["model_dir"], real)
    mock_ds = open_dataset(run / "dataset.zarr", load=False)
    mock_ids = np.asarray(mock_ds.props["id"]).astype(str)
    bright = [k for k in mock_ds.indices("test") if sn_by_id.get(mock_ids[k], 0.0) >= np.nanmin(sn)]
    mock_res = residuals(summary["model_dir"], run / "dataset.zarr", bright)
    real_chi, mock_chi = region_chi2(real_res, REGIONS), region_chi2(mock_res, REGIONS)
    head = " | ".join(f"{lo}–{hi}" for lo, hi in REGIONS)
    lines[-1:-1] = [
        "",
        f"χ²/pixel by rest-frame region (Å), median: the real galaxies against the {len(bright)} mock test spectra "
        f"with S/N ≥ {np.nanmin(sn):.1f} (the faintest real one).",
        "",
        f"| sample | {head} |",
        "|---|" + "---|" * len(REGIONS),
        "| SDSS | " + " | ".join(f"{v:.2f}" for v in np.median(real_chi, axis=0)) + " |",
        "| mock | " + " | ".join(f"{v:.2f}" for v in np.median(mock_chi, axis=0)) + " |",
        "",
        "Where the real galaxies' excess χ² lies, feature by feature: χ²/pixel pooled over the real galaxies and "
        "over the same mock spectra; the window's share of the real galaxies' whole excess (their χ² above the "
        "mock's χ²/pixel, window by window, summed over the spectrum in 50-pixel blocks); and the median over "
        "the real galaxies of the mean (data − model) / model in the window (negative: the galaxy absorbs more, "
        "or emits less, than the model draws).",
        "",
        "| feature (rest Å) | pixels | χ²/pixel, SDSS | χ²/pixel, mock | share of the excess | (data − model) / model, SDSS |",
        "|---|---|---|---|---|---|",
        *feature_rows(real_res, mock_res),
    ]
    # Would drawing those features right be enough? Each galaxy's ELBO with its feature-window excess
    # given back (ΔELBO = Δχ²/2, the model assumed to fit them as it fits the mock's), percentile again.
    real_ids = [str(i) for i in np.asarray(open_dataset(real, load=False).props["id"])]
    if real_ids == ids:
        excess, worst = feature_excess(real_res, mock_res)
        good = real_res["good"].sum(axis=1)
        pct_fixed = matched_percentiles(sn, np.asarray(table["elbo"], float) + 0.5 * excess, ref_sn, ref_elbo,
                                        args.match)
        lines[-1:-1] = [
            "",
            "If the model drew every feature above as well as it draws the mock's (each galaxy's χ² in those "
            f"{sum(int(_in(real_res['wave'], w).sum()) for w in FEATURES.values())} pixels brought down to the "
            "mock's χ²/pixel, ELBO + Δχ²/2): S/N-matched median "
            f"{np.nanmedian(pct_fixed):.1f} %, {int(np.sum(pct_fixed < 5))} of {n} below the 5th.",
            "",
            "| id | χ² above the mock's level in the feature windows (of all pixels) | largest window | "
            "ELBO pct, S/N-matched | same, features drawn right |",
            "|---|---|---|---|---|",
            *[f"| {i} | {e:.0f} ({e / max(float(c) * g, 1):.0%} of χ²) | {wname} | {a:.1f} | {b:.1f} |"
              for i, e, c, g, wname, a, b in zip(ids, excess, chi2, good, worst, pct, pct_fixed)],
        ]
    # The paper's D3 reading, tested on the mock: each latent's MI and Spearman ρ with the AGN truth columns.
    mi_t, rho_t = Table.read(analysis / "mi.ecsv"), Table.read(analysis / "spearman.ecsv")
    agn_cols = [c for c in ("agn_oiii_frac", "agn_log_loiii", "agn_class") if c in set(mi_t["property"])]
    if agn_cols:
        latents = list(dict.fromkeys(str(x) for x in mi_t["latent"]))
        agn_rows = []
        for c in agn_cols:
            cells = []
            for lat in latents:
                m = mi_t[(mi_t["property"] == c) & (mi_t["latent"] == lat) & (mi_t["source"] == "truth")]
                r = rho_t[(rho_t["property"] == c) & (rho_t["latent"] == lat) & (rho_t["source"] == "truth")]
                cells.append(f"{float(m['mi'][0]):.3f} ± {float(m['mi_err'][0]):.3f}, ρ {float(r['rho'][0]):+.2f}"
                             if len(m) and len(r) else "–")
            agn_rows.append(f"| {c} (n = {int(r['n'][0]) if len(r) else 0}) | " + " | ".join(cells) + " |")
        tracks = {t["latent"]: t["property"] for t in summary.get("truth", {}).get("tracks", [])}
        lines[-1:-1] = [
            "",
            "### The paper's D3 reading (AGN strength), on this mock",
            "",
            "MI (nats, ± half-sample error) and Spearman ρ of each latent with the AGN truth columns, test split "
            "(the report's truth section shows the same under “AGN strength”). The property each latent shares "
            "most information with: " + ", ".join(f"{k} {v}" for k, v in tracks.items()) + ".",
            "",
            "| truth column | " + " | ".join(latents) + " |",
            "|---|" + "---|" * len(latents),
            *agn_rows,
        ]
    block = "\n".join(lines)
    print(block)
    summary_path = analysis / "summary.json"
    s = json.loads(summary_path.read_text())
    s.setdefault("external", {}).setdefault("real_sdss", {}).update(
        {"elbo_percentile_sn_matched_median": med, "below_5th_sn_matched": low, "sn_match_k": args.match})
    summary_path.write_text(json.dumps(s, indent=1))
    if analysis == run / "analysis":
        write_report(run, run / "dataset.zarr", analysis, select_dir=run / "select", config=config)
        print(f"report updated: {run / 'report' / 'index.html'}")
    if args.doc:
        text = DOC.read_text() if DOC.exists() else ""
        pattern = re.compile(r"<!-- real_vs_mock -->.*?<!-- /real_vs_mock -->", re.S)
        DOC.write_text(pattern.sub(lambda _: block, text) if pattern.search(text) else text + "\n" + block + "\n")
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
