"""How real does the mock look? Mock spectra next to real SDSS galaxies, and their statistics.

Writes ``docs/figures/mock_vs_sdss.png`` and ``docs/mock_realism.md``:

- six mock spectra beside six real galaxies of ../shared/data/sdss (CLASS GALAXY, ZWARNING 0), each
  mock chosen with the nearest S/N among those of the same kind (passive or emission-line);
- distributions, mock vs real, of S/N per pixel, the fraction of bad pixels (ivar = 0), the
  rest-frame equivalent widths of Hα and [O III] 5007 and the 4000 Å break D4000n;
- the mock's sSFR–M* and mass–metallicity planes, and D4000n and EW(Hα) against the true sSFR.

Every statistic is measured the same way on both samples, from the files, with galvae's reader.

    python benchmarks/mock_realism.py [--mock out/mock-realism] [--n 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from galvae.sources.mock import make_mock_survey
from galvae.sources.sdss import read_spectrum

ROOT = Path(__file__).resolve().parents[1]
REAL_DIR = ROOT.parent / "shared" / "data" / "sdss"
FIGURE = ROOT / "docs" / "figures" / "mock_vs_sdss.png"
TABLE = ROOT / "docs" / "mock_realism.md"

# Vacuum rest wavelengths (Å): line window and the two continuum side bands.
EW_WINDOWS = {
    "ew_halpha": ((6554.6, 6574.6), (6483.0, 6513.0), (6623.0, 6653.0)),
    "ew_oiii": ((5000.2, 5016.2), (4978.0, 4998.0), (5030.0, 5050.0)),
}
D4000_BLUE, D4000_RED = (3850.0, 3950.0), (4000.0, 4100.0)  # Balogh et al. (1999), narrow definition


# ------------------------------------------------------------------------------------------------
# Measurements (same code for mock and real)
# ------------------------------------------------------------------------------------------------


def _band(wave, values, good, lo, hi):
    sel = good & (wave >= lo) & (wave < hi)
    return values[sel] if sel.sum() >= 5 else None


def equivalent_width(wave, flux, good, windows) -> float:
    """Rest-frame emission EW (Å, positive for emission): ∫ (F − C)/C dλ over the line window,
    C a straight line through the side-band medians."""
    line, blue, red = windows
    fb, fr = _band(wave, flux, good, *blue), _band(wave, flux, good, *red)
    sel = good & (wave >= line[0]) & (wave < line[1])
    if fb is None or fr is None or sel.sum() < 5:
        return np.nan
    xb, xr = np.mean(blue), np.mean(red)
    cont = np.median(fb) + (np.median(fr) - np.median(fb)) * (wave[sel] - xb) / (xr - xb)
    if np.any(cont <= 0):
        return np.nan
    dlam = np.gradient(wave)[sel]
    return float(np.sum((flux[sel] - cont) / cont * dlam))


def d4000n(wave, flux, good) -> float:
    """Ratio of mean f_ν in 4000–4100 Å to 3850–3950 Å (rest frame)."""
    fnu = flux * wave ** 2
    blue, red = _band(wave, fnu, good, *D4000_BLUE), _band(wave, fnu, good, *D4000_RED)
    if blue is None or red is None or np.mean(blue) <= 0:
        return np.nan
    return float(np.mean(red) / np.mean(blue))


def measure(path) -> dict:
    """Statistics of one spectrum file, plus its rest-frame arrays for plotting."""
    s = read_spectrum(path)
    wave = s.wave / (1.0 + s.z)
    good = (s.ivar > 0) & np.isfinite(s.flux)
    out = {"id": s.id, "z": s.z, "sn": s.sn_median, "bad_frac": float(np.mean(~good)),
           "flagged_frac": float(np.mean(s.and_mask != 0)), "d4000": d4000n(wave, s.flux, good),
           "subclass": s.subclass, "wave": wave, "flux": s.flux, "good": good}
    for name, windows in EW_WINDOWS.items():
        out[name] = equivalent_width(wave, s.flux, good, windows)
    return out


def real_galaxies(folder: Path) -> list[dict]:
    """Measured real SDSS galaxies: CLASS GALAXY, ZWARNING 0, z > 0."""
    out = []
    for path in sorted(folder.glob("spec-*.fits")):
        try:
            s = read_spectrum(path)
        except ValueError:
            continue
        if s.spec_class == "GALAXY" and s.zwarning == 0 and s.z > 0:
            out.append(measure(path))
    return out


# ------------------------------------------------------------------------------------------------
# Figure and table
# ------------------------------------------------------------------------------------------------


def _emission(m: dict) -> bool:
    return bool(np.nan_to_num(m["ew_halpha"]) > 3.0)


def pair_examples(real: list[dict], mock: list[dict], k: int = 6) -> list[tuple[dict, dict]]:
    """k real galaxies spanning S/N and kind, each with the mock of the same kind and nearest S/N."""
    order = sorted((r for r in real if r["z"] < 0.2), key=lambda r: (_emission(r), r["sn"]))
    picks = [order[int(round(i))] for i in np.linspace(0, len(order) - 1, k)]
    used, pairs = set(), []
    for r in picks:
        same = [m for m in mock if _emission(m) == _emission(r) and m["id"] not in used]
        best = min(same, key=lambda m: abs(np.log(max(m["sn"], 0.1) / max(r["sn"], 0.1))))
        used.add(best["id"])
        pairs.append((best, r))
    return pairs


def _plot_spectrum(ax, m: dict, colour: str, label: str) -> None:
    wave, flux, good = m["wave"], m["flux"], m["good"]
    ax.plot(wave, np.where(good, flux, np.nan), lw=0.35, color=colour, rasterized=True)
    lo, hi = np.nanpercentile(flux[good], [0.5, 99.7])
    ax.set_ylim(lo - 0.15 * (hi - lo), hi + 0.25 * (hi - lo))
    ax.set_xlim(3500, 8800)
    text = (f"{label} {m['id']}  z={m['z']:.3f}  S/N={m['sn']:.1f}  D4000n={m['d4000']:.2f}  "
            f"EW(Hα)={m['ew_halpha']:.1f} Å")
    ax.set_title(text, fontsize=7.5, loc="left")
    ax.tick_params(labelsize=7)


def _hist(ax, key, mock, real, bins, xlabel, log=False):
    mv = np.array([m[key] for m in mock], float)
    rv = np.array([r[key] for r in real], float)
    mv, rv = mv[np.isfinite(mv)], rv[np.isfinite(rv)]
    if log:
        mv, rv = np.log10(np.clip(mv, 0.1, None)), np.log10(np.clip(rv, 0.1, None))
    ax.hist(mv, bins=bins, density=True, color="0.3", alpha=0.5, label=f"mock ({mv.size})")
    ax.hist(rv, bins=bins, density=True, histtype="step", lw=1.5, color="C0", label=f"SDSS ({rv.size})")
    ax.plot(rv, np.zeros_like(rv), "|", color="C0", ms=10)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)


def _scatter(ax, x, y, quiescent, xlabel, ylabel, legend=False) -> None:
    ax.scatter(x[~quiescent], y[~quiescent], s=3, c="C3", alpha=0.45, label="log sSFR ≥ −11", rasterized=True)
    ax.scatter(x[quiescent], y[quiescent], s=3, c="C1", alpha=0.45, label="log sSFR < −11", rasterized=True)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    if legend:
        ax.legend(fontsize=7, markerscale=3)


def make_figure(pairs, mock, real, truth, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(15, 22))
    grid = fig.add_gridspec(11, 20, hspace=1.0, wspace=2.5)
    for row, (m, r) in enumerate(pairs):
        _plot_spectrum(fig.add_subplot(grid[row, :10]), m, "k", "mock")
        _plot_spectrum(fig.add_subplot(grid[row, 10:]), r, "C0", "SDSS")

    specs = [("sn", np.linspace(0, 60, 25), "S/N per pixel (SN_MEDIAN_ALL)", False),
             ("bad_frac", np.linspace(0, 0.2, 21), "fraction of pixels with ivar = 0", False),
             ("ew_halpha", np.linspace(-1, 2.7, 25), "log10 EW(Hα) / Å (≤ 0.1 Å at −1)", True),
             ("ew_oiii", np.linspace(-1, 2.7, 25), "log10 EW([O III] 5007) / Å", True),
             ("d4000", np.linspace(0.9, 2.3, 25), "D4000n (Balogh et al. 1999)", False)]
    for k, (key, bins, label, log) in enumerate(specs):
        _hist(fig.add_subplot(grid[6:8, 4 * k:4 * k + 4]), key, mock, real, bins, label, log)

    q = np.asarray(truth["quiescent"], bool)
    logm, ssfr = np.asarray(truth["logmstar"], float), np.asarray(truth["logssfr"], float)
    by_id = {m["id"]: m for m in mock}
    d4 = np.array([by_id[i]["d4000"] for i in truth["id"]])
    ewha = np.log10(np.clip(np.array([by_id[i]["ew_halpha"] for i in truth["id"]]), 0.1, None))
    panels = [(logm, ssfr, "log M* / Msun", "log sSFR / yr⁻¹ (100 Myr)"),
              (logm, np.asarray(truth["logzsol"], float), "log M* / Msun", "log Z*/Zsun"),
              (ssfr, d4, "true log sSFR / yr⁻¹", "measured D4000n"),
              (ssfr, ewha, "true log sSFR / yr⁻¹", "measured log EW(Hα) / Å")]
    for k, (x, y, xl, yl) in enumerate(panels):
        _scatter(fig.add_subplot(grid[8:11, 5 * k:5 * k + 5]), x, y, q, xl, yl, legend=k == 0)
    fig.suptitle("galvae mock survey (left, black) vs real SDSS galaxies (right, blue); rest frame, "
                 "flux 1e-17 erg/s/cm²/Å, bad pixels omitted", y=0.905, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=62, bbox_inches="tight")
    plt.close(fig)


def _summary(values) -> str:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "–"
    p16, p50, p84 = np.percentile(v, [16, 50, 84])
    return f"{p50:.3g} [{p16:.3g}, {p84:.3g}]"


def write_table(path: Path, mock, real, truth, survey, command: str) -> None:
    from scipy.stats import ks_2samp

    rows = [("S/N per pixel (SN_MEDIAN_ALL)", "sn"), ("fraction of pixels with ivar = 0", "bad_frac"),
            ("fraction of pixels with and_mask ≠ 0", "flagged_frac"), ("EW(Hα), Å", "ew_halpha"),
            ("EW([O III] 5007), Å", "ew_oiii"), ("D4000n", "d4000")]
    lines = [
        "# Mock survey vs real SDSS spectra",
        "",
        f"Made by `{command}` (mock: {len(mock)} galaxies, seed {survey.config.seed}, config hash "
        f"`{survey.config_hash}`; real: the {len(real)} galaxies of `../shared/data/sdss` with CLASS GALAXY and "
        "ZWARNING 0). Figure: `docs/figures/mock_vs_sdss.png`.",
        "",
        "Median [16th, 84th percentile]; KS p-value of the two samples (small real sample: a p-value above "
        f"~0.05 means only that {len(real)} spectra cannot tell them apart).",
        "",
        "| statistic | mock | SDSS | KS p |",
        "|---|---|---|---|",
    ]
    for label, key in rows:
        mv = np.array([m[key] for m in mock], float)
        rv = np.array([r[key] for r in real], float)
        ok_m, ok_r = mv[np.isfinite(mv)], rv[np.isfinite(rv)]
        p = ks_2samp(ok_m, ok_r).pvalue if ok_m.size and ok_r.size else np.nan
        lines.append(f"| {label} | {_summary(mv)} | {_summary(rv)} | {p:.2g} |")
    frac = lambda xs, f: np.mean([f(x) for x in xs])  # noqa: E731
    lines += [
        f"| fraction with EW(Hα) > 3 Å | {frac(mock, _emission):.2f} | {frac(real, _emission):.2f} | |",
        f"| fraction with any ivar = 0 pixel | {frac(mock, lambda m: m['bad_frac'] > 0):.2f} | "
        f"{frac(real, lambda m: m['bad_frac'] > 0):.2f} | |",
        f"| redshift | {_summary([m['z'] for m in mock])} | {_summary([r['z'] for r in real])} | |",
        "",
        "Mock population (truth table):",
        "",
        "| quantity | median [16th, 84th] |",
        "|---|---|",
    ]
    for name in ("logmstar", "logssfr", "logzsol", "mwage", "a_v", "vdisp", "logu", "fiber_frac"):
        lines.append(f"| {name} | {_summary(truth[name])} |")
    lines += [
        f"| fraction with log sSFR < −11 | {np.mean(np.asarray(truth['quiescent'], bool)):.2f} |",
        "",
        f"Caveats: the real sample is small and bright ({sum(r['id'].startswith('0266-') for r in real)} of "
        f"{len(real)} from plate 266, median S/N {np.median([r['sn'] for r in real]):.0f}; z up to "
        f"{max(r['z'] for r in real):.2f}; AGN and broad-line galaxies included), whereas the mock follows the "
        "SDSS main-sample flux limit at z < 0.1. The mock has no AGN or LINER emission: its quiescent "
        "galaxies show no Hα or [O III], unlike many real ones.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mock", type=Path, default=ROOT / "out" / "mock-realism")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", type=Path, default=REAL_DIR)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    survey = make_mock_survey(args.mock, n=args.n, seed=args.seed, workers=args.workers)
    mock = [measure(p) for p in survey.paths]
    real = real_galaxies(args.real)
    pairs = pair_examples(real, mock)
    make_figure(pairs, mock, real, survey.truth, FIGURE)
    command = f"python benchmarks/mock_realism.py --n {args.n} --seed {args.seed}"
    write_table(TABLE, mock, real, survey.truth, survey, command)
    logging.info("wrote %s (%.0f kB) and %s", FIGURE, FIGURE.stat().st_size / 1e3, TABLE)


if __name__ == "__main__":
    main()
