"""How real does the mock look? Mock spectra next to real SDSS galaxies, and their statistics.

Writes ``docs/figures/mock_vs_sdss.png``, ``docs/figures/mock_bpt.png`` and ``docs/mock_realism.md``
(keeping its block written by ``benchmarks/real_vs_mock.py``):

- six mock spectra beside six real galaxies of ../shared/data/sdss (CLASS GALAXY, ZWARNING 0), each
  mock chosen with the nearest S/N among those of the same kind (passive or emission-line);
- the BPT diagrams ([N II]/Hα and [S II]/Hα against [O III]/Hβ), EW(Hα) and Hδ_A against D4000n,
  S/N against the fibre's g magnitude, mask fractions by bit;
- distributions, mock (all, and S/N-matched to the real set) vs real, of these statistics.

Every statistic is measured the same way on both samples, from the files, with galvae's reader.
Line fluxes: the flux above a straight-line continuum through the medians of two side bands, summed
over a fixed rest-frame window (no stellar-absorption correction: Balmer emission is underestimated
alike in both samples); its error from ivar. BPT points need S/N > 3 in all four lines.

    python benchmarks/mock_realism.py [--mock out/run5000/mock] [--n 5000] [--seed 0]
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import numpy as np

from galvae.sources.mock import make_mock_survey
from galvae.sources.mock.population import kauffmann03_n2, kewley01_n2, kewley01_s2, kewley06_seyfert_liner
from galvae.sources.sdss import read_spectrum

ROOT = Path(__file__).resolve().parents[1]
REAL_DIR = ROOT.parent / "shared" / "data" / "sdss"
FIGURE = ROOT / "docs" / "figures" / "mock_vs_sdss.png"
BPT_FIGURE = ROOT / "docs" / "figures" / "mock_bpt.png"
TABLE = ROOT / "docs" / "mock_realism.md"
# Blocks written elsewhere and kept on a rewrite: real_vs_mock.py's, timings and notes (by hand, with commands).
KEEP = re.compile(r"<!-- (real_vs_mock|timing|notes) -->.*?<!-- /\1 -->", re.S)

# Vacuum rest wavelengths (Å): line window, blue and red continuum side bands.
LINES = {
    "hbeta": ((4855.0, 4870.0), (4820.0, 4845.0), (4880.0, 4905.0)),
    "oiii": ((5001.0, 5016.0), (4978.0, 4998.0), (5030.0, 5050.0)),
    "halpha": ((6557.0, 6572.0), (6490.0, 6535.0), (6600.0, 6640.0)),
    "nii": ((6578.0, 6593.0), (6490.0, 6535.0), (6600.0, 6640.0)),
    "sii": ((6710.0, 6741.0), (6680.0, 6705.0), (6750.0, 6775.0)),
    "oii": ((3722.0, 3736.0), (3690.0, 3715.0), (3745.0, 3770.0)),
}
# Hδ_A (Worthey & Ottaviani 1997) and Lick Mg b (Trager et al. 1998): air wavelengths + 1.15 / 1.44 Å to vacuum.
HDELTA_A = ((4084.65, 4123.40), (4042.75, 4080.90), (4129.65, 4162.15))
MGB = ((5161.57, 5194.07), (5144.07, 5162.87), (5192.87, 5207.87))
FE5270 = ((5247.11, 5287.12), (5234.61, 5249.61), (5287.12, 5319.63))  # Lick Fe5270, air + 1.46 Å
NAD = ((5878.50, 5911.00), (5862.25, 5877.25), (5923.76, 5949.76))  # Lick Na D (Trager et al. 1998), air + 1.63 Å
D4000_BLUE, D4000_RED = (3850.0, 3950.0), (4000.0, 4100.0)  # Balogh et al. (1999), narrow definition
SKY_LINE_FLUX = 30.0  # 1e-17 cgs: pixels of bright sky lines in the shipped sky template
MATCH_K = 10  # mock spectra per real galaxy in the S/N-matched sample


# ------------------------------------------------------------------------------------------------
# Measurements (same code for mock and real)
# ------------------------------------------------------------------------------------------------


def _band(wave, values, good, lo, hi):
    sel = good & (wave >= lo) & (wave < hi)
    return values[sel] if sel.sum() >= 5 else None


def _continuum(wave, flux, good, windows, sel):
    line, blue, red = windows
    fb, fr = _band(wave, flux, good, *blue), _band(wave, flux, good, *red)
    if fb is None or fr is None:
        return None
    xb, xr = np.mean(blue), np.mean(red)
    return np.median(fb) + (np.median(fr) - np.median(fb)) * (wave[sel] - xb) / (xr - xb)


def line_flux(wave, flux, ivar, good, windows) -> tuple[float, float, float]:
    """(flux above the continuum, its 1σ error, rest-frame EW in Å: positive for emission) in the window."""
    line = windows[0]
    sel = good & (wave >= line[0]) & (wave < line[1])
    cont = _continuum(wave, flux, good, windows, sel) if sel.sum() >= 5 else None
    if cont is None:
        return np.nan, np.nan, np.nan
    dlam = np.gradient(wave)[sel]
    f = float(np.sum((flux[sel] - cont) * dlam))
    err = float(np.sqrt(np.sum(dlam ** 2 / ivar[sel])))
    ew = float(np.sum((flux[sel] - cont) / cont * dlam)) if np.all(cont > 0) else np.nan
    return f, err, ew


def hdelta_a(wave, flux, good, windows=HDELTA_A) -> float:
    """Hδ_A (or another index's ``windows``) absorption index, Å (positive for absorption)."""
    sel = good & (wave >= windows[0][0]) & (wave < windows[0][1])
    cont = _continuum(wave, flux, good, windows, sel) if sel.sum() >= 5 else None
    if cont is None or np.any(cont <= 0):
        return np.nan
    return float(np.sum((1.0 - flux[sel] / cont) * np.gradient(wave)[sel]))


def d4000n(wave, flux, good) -> float:
    """Ratio of mean f_ν in 4000–4100 Å to 3850–3950 Å (rest frame)."""
    fnu = flux * wave ** 2
    blue, red = _band(wave, fnu, good, *D4000_BLUE), _band(wave, fnu, good, *D4000_RED)
    if blue is None or red is None or np.mean(blue) <= 0:
        return np.nan
    return float(np.mean(red) / np.mean(blue))


def fiber_gmag(wave_obs, flux, good) -> float:
    """AB magnitude of the spectrum over observed 4200–5400 Å (the core of SDSS g)."""
    sel = good & (wave_obs > 4200.0) & (wave_obs < 5400.0)
    fnu = np.mean(flux[sel] * 1e-17 * wave_obs[sel] ** 2 / 2.99792458e18) if sel.any() else np.nan
    return float(-2.5 * np.log10(fnu) - 48.6) if fnu > 0 else np.nan


def _sn_g(wave_obs, flux, ivar, good) -> float:
    """Median S/N per pixel over observed 4000–5500 Å (SDSS g), as the survey's depth is specified."""
    sel = good & (wave_obs > 4000.0) & (wave_obs < 5500.0)
    return float(np.median(flux[sel] * np.sqrt(ivar[sel]))) if sel.sum() > 10 else np.nan


def sky_residual_fraction(path) -> tuple[float, float]:
    """(Σ (flux − model)² − expected noise at bright sky-line pixels, Σ sky_lines²) of one file: the
    pooled ratio of the two, square-rooted, is the rms sky-subtraction residual / sky-line flux."""
    from astropy.io import fits

    from galvae.sources.mock import observe

    with fits.open(path) as hdul:
        d = hdul["COADD"].data
        loglam, flux = d["loglam"].astype(float), d["flux"].astype(float)
        ivar, model = d["ivar"].astype(float), d["model"].astype(float)
    k = np.round((loglam - observe.LOGLAM0) / observe.DLOGLAM).astype(int)
    inside = (k >= 0) & (k < observe.N_MASTER)
    sky_lines = np.zeros(loglam.size)
    sky_lines[inside] = observe.load_instrument_templates().sky_lines[k[inside]]
    good = ivar > 0
    chi2 = (flux - model) ** 2 * np.where(good, ivar, 0.0)
    clean = np.median(chi2[good & (sky_lines < 3.0)]) / 0.455  # χ² level away from sky lines (median → mean)
    lit = good & (sky_lines > SKY_LINE_FLUX)
    excess = (flux - model)[lit] ** 2 - clean / ivar[lit]
    return float(np.sum(excess)), float(np.sum(sky_lines[lit] ** 2))


def measure(path) -> dict:
    """Statistics of one spectrum file, plus its rest-frame arrays for plotting."""
    s = read_spectrum(path)
    wave = s.wave / (1.0 + s.z)
    good = (s.ivar > 0) & np.isfinite(s.flux)
    am = np.asarray(s.and_mask, np.int64)
    out = {"id": s.id, "z": s.z, "sn": s.sn_median, "bad_frac": float(np.mean(~good)),
           "flagged_frac": float(np.mean(am != 0)), "d4000": d4000n(wave, s.flux, good),
           "hdelta_a": hdelta_a(wave, s.flux, good), "gmag": fiber_gmag(s.wave, s.flux, good),
           "sn_g": _sn_g(s.wave, s.flux, s.ivar, good), "mgb": hdelta_a(wave, s.flux, good, MGB),
           "fe5270": hdelta_a(wave, s.flux, good, FE5270), "nad": hdelta_a(wave, s.flux, good, NAD),
           "brightsky_frac": float(np.mean((am >> 23) & 1)),
           "other_flag_frac": float(np.mean((am & ~(1 << 23)) != 0)),
           "subclass": s.subclass, "wave": wave, "flux": s.flux, "good": good}
    for name, windows in LINES.items():
        out[f"f_{name}"], out[f"e_{name}"], out[f"ew_{name}"] = line_flux(wave, s.flux, s.ivar, good, windows)
    detected = all(out[f"f_{n}"] > 3.0 * out[f"e_{n}"] for n in ("hbeta", "oiii", "halpha", "nii"))
    with np.errstate(divide="ignore", invalid="ignore"):
        out["n2ha"] = float(np.log10(out["f_nii"] / out["f_halpha"])) if detected else np.nan
        out["o3hb"] = float(np.log10(out["f_oiii"] / out["f_hbeta"])) if detected else np.nan
        s2_ok = detected and out["f_sii"] > 3.0 * out["e_sii"]
        out["s2ha"] = float(np.log10(out["f_sii"] / out["f_halpha"])) if s2_ok else np.nan
    out["bpt"] = bpt_class(out["n2ha"], out["o3hb"])
    # Emission-line galaxies (EW(Hα) > 5 Å, Hα at S/N > 10): Balmer decrement and [O II]/Hα as measured.
    strong = out["ew_halpha"] > 5.0 and out["f_halpha"] > 10.0 * out["e_halpha"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["hahb"] = (float(np.log10(out["f_halpha"] / out["f_hbeta"]))
                       if strong and out["f_hbeta"] > 3.0 * out["e_hbeta"] else np.nan)
        out["oiiha"] = (float(np.log10(out["f_oii"] / out["f_halpha"]))
                        if strong and out["f_oii"] > 3.0 * out["e_oii"] else np.nan)
    out["sky_num"], out["sky_den"] = sky_residual_fraction(path)
    return out


def bpt_class(n2ha: float, o3hb: float) -> str:
    if not (np.isfinite(n2ha) and np.isfinite(o3hb)):
        return "weak"
    if o3hb > kewley01_n2(n2ha):
        return "AGN"
    return "composite" if o3hb > kauffmann03_n2(n2ha) else "star-forming"


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


def sn_matched(real: list[dict], mock: list[dict], k: int = MATCH_K) -> list[dict]:
    """For each real galaxy, the k mock spectra nearest in log S/N (none used twice)."""
    log_sn = np.log10(np.clip([m["sn"] for m in mock], 0.1, None))
    free = np.ones(len(mock), bool)
    out = []
    for r in sorted(real, key=lambda r: -r["sn"]):  # brightest first: the rarest in the mock
        d = np.abs(log_sn - np.log10(max(r["sn"], 0.1)))
        d[~free] = np.inf
        pick = np.argsort(d)[:k]
        free[pick] = False
        out += [mock[i] for i in pick]
    return out


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


def _bpt_axes(ax, kind: str) -> None:
    if kind == "n2":
        x = np.linspace(-1.5, 0.46, 200)
        ax.plot(x, kewley01_n2(x), "k-", lw=1, label="Kewley et al. 2001")
        x2 = np.linspace(-1.5, 0.04, 200)
        ax.plot(x2, kauffmann03_n2(x2), "k--", lw=1, label="Kauffmann et al. 2003")
        ax.set_xlabel("log [N II]6584/Hα", fontsize=8)
        ax.set_xlim(-1.5, 0.6)
    else:
        x = np.linspace(-1.2, 0.31, 200)
        ax.plot(x, kewley01_s2(x), "k-", lw=1)
        x2 = np.linspace(-0.31, 0.6, 50)
        ax.plot(x2, kewley06_seyfert_liner(x2), "k:", lw=1, label="Kewley et al. 2006 Sy/LINER")
        ax.set_xlabel("log [S II]6717,6731/Hα", fontsize=8)
        ax.set_xlim(-1.2, 0.6)
    ax.set_ylim(-1.3, 1.4)
    ax.set_ylabel("log [O III]5007/Hβ", fontsize=8)
    ax.tick_params(labelsize=7)


def make_bpt_figure(mock, real, agn_class: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 9.5))
    colours = {0: ("0.55", "no AGN"), 1: ("C3", "Seyfert (truth)"), 2: ("C1", "LINER-like (truth)")}
    cls = np.array([agn_class.get(m["id"], 0) for m in mock])

    def column(rows, key):
        return np.array([r[key] for r in rows], float)

    panels = [(axes[0, 0], "n2ha", "o3hb"), (axes[0, 1], "s2ha", "o3hb")]
    for ax, xk, yk in panels:
        _bpt_axes(ax, "n2" if xk == "n2ha" else "s2")
        for c, (colour, label) in colours.items():
            sel = cls == c
            ax.scatter(column(mock, xk)[sel], column(mock, yk)[sel], s=3, c=colour, alpha=0.5, label=label,
                       rasterized=True)
        ax.scatter(column(real, xk), column(real, yk), s=60, marker="*", c="C0", edgecolor="k", lw=0.5,
                   label="SDSS (../shared/data/sdss)", zorder=5)
        ax.legend(fontsize=6.5, markerscale=2, loc="lower left")
    for ax, yk, ylabel, log in ((axes[0, 2], "ew_halpha", "log EW(Hα) / Å (≤ 0.1 at −1)", True),
                                (axes[1, 0], "hdelta_a", "Hδ_A / Å", False)):
        for c, (colour, label) in colours.items():
            sel = cls == c
            y = column(mock, yk)[sel]
            ax.scatter(column(mock, "d4000")[sel], np.log10(np.clip(y, 0.1, None)) if log else y, s=3, c=colour,
                       alpha=0.5, label=label, rasterized=True)
        y = column(real, yk)
        ax.scatter(column(real, "d4000"), np.log10(np.clip(y, 0.1, None)) if log else y, s=60, marker="*", c="C0",
                   edgecolor="k", lw=0.5, zorder=5)
        ax.set_xlabel("D4000n", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_xlim(0.9, 2.4)
        if not log:
            ax.set_ylim(-8.0, 12.0)  # a few spectra with a bad pixel in the band would set the range
        ax.tick_params(labelsize=7)
    ax = axes[1, 1]
    ax.scatter(column(mock, "gmag"), column(mock, "sn_g"), s=3, c="0.5", alpha=0.5, label="mock", rasterized=True)
    ax.scatter(column(real, "gmag"), column(real, "sn_g"), s=60, marker="*", c="C0", edgecolor="k", lw=0.5,
               label="SDSS", zorder=5)
    ax.axvline(20.2, color="k", lw=0.8, ls=":")
    ax.axhline(np.sqrt(15.0), color="k", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("fibre g (AB, 4200–5400 Å of the spectrum)", fontsize=8)
    ax.set_ylabel("S/N per pixel, 4000–5500 Å (g)", fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    ax = axes[1, 2]
    bins = np.linspace(0, 60, 31)
    ax.hist(column(mock, "sn"), bins=bins, density=True, color="0.5", alpha=0.6, label=f"mock ({len(mock)})")
    ax.hist(column(real, "sn"), bins=bins, density=True, histtype="step", lw=1.5, color="C0",
            label=f"SDSS ({len(real)})")
    ax.set_xlabel("S/N per pixel (SN_MEDIAN_ALL)", fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    fig.suptitle("galvae mock (points; colour: true AGN class) vs real SDSS galaxies (stars): BPT diagrams "
                 "(all four lines S/N > 3), EW(Hα) and Hδ_A vs D4000n, S/N", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=70)
    plt.close(fig)


def _summary(values) -> str:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "–"
    p16, p50, p84 = np.percentile(v, [16, 50, 84])
    return f"{p50:.3g} [{p16:.3g}, {p84:.3g}]"


def _ks(a, b) -> str:
    from scipy.stats import ks_2samp

    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    return f"{ks_2samp(a, b).pvalue:.2g}" if a.size and b.size else "–"


def _sn_relation(rows) -> tuple[float, int]:
    """g-band S/N at fibre g = 20.2 from a straight-line fit of log S/N against g (and the number of spectra)."""
    g = np.array([r["gmag"] for r in rows], float)
    sn = np.array([r["sn_g"] for r in rows], float)
    ok = np.isfinite(g) & (sn > 0)
    slope, icpt = np.polyfit(g[ok], np.log10(sn[ok]), 1)
    return float(10.0 ** (slope * 20.2 + icpt)), int(ok.sum())


def _sky_fraction(rows) -> float:
    num, den = sum(r["sky_num"] for r in rows), sum(r["sky_den"] for r in rows)
    return float(np.sqrt(max(num, 0.0) / den)) if den > 0 else np.nan


def write_table(path: Path, mock, matched, real, truth, survey, command: str, run_name: str = "out/run5000") -> None:
    rows = [("S/N per pixel (SN_MEDIAN_ALL)", "sn"), ("S/N per pixel, g band (4000–5500 Å)", "sn_g"), ("fibre g, AB mag (4200–5400 Å)", "gmag"),
            ("fraction of pixels with ivar = 0", "bad_frac"),
            ("fraction of pixels with and_mask ≠ 0", "flagged_frac"),
            ("… with BRIGHTSKY", "brightsky_frac"), ("… with any other bit", "other_flag_frac"),
            ("EW(Hα), Å", "ew_halpha"), ("EW([O III] 5007), Å", "ew_oiii"), ("D4000n", "d4000"),
            ("Hδ_A, Å", "hdelta_a"), ("Mg b, Å", "mgb"), ("Na D (Lick; stars and interstellar gas), Å", "nad"), ("log [N II]/Hα (BPT, lines S/N > 3)", "n2ha"),
            ("log [S II]/Hα (BPT)", "s2ha"), ("log [O III]/Hβ (BPT)", "o3hb"),
            ("log Hα/Hβ (EW(Hα) > 5 Å; no stellar-absorption correction)", "hahb"),
            ("log [O II]3727/Hα (EW(Hα) > 5 Å)", "oiiha")]
    col = lambda rs, k: [r[k] for r in rs]  # noqa: E731
    n266 = sum(r["id"].startswith("0266-") for r in real)
    plates = sorted({r["id"].split("-")[0].lstrip("0") for r in real}, key=int)
    sn_real, n_real = _sn_relation(real)
    sn_mock, n_mock = _sn_relation(mock)
    lines = [
        "# Mock survey vs real SDSS spectra",
        "",
        f"Made by `{command}` (mock: {len(mock)} galaxies, seed {survey.config.seed}, config hash "
        f"`{survey.config_hash}`, the mock of `{run_name}`; real: the {len(real)} galaxies of "
        "`../shared/data/sdss` with CLASS GALAXY, ZWARNING 0 and z > 0). Figures: "
        "`docs/figures/mock_bpt.png` (BPT, EW(Hα)–D4000n, Hδ_A–D4000n, S/N), `docs/figures/mock_vs_sdss.png` "
        "(spectra side by side).",
        "",
        "## The real set and its selection",
        "",
        f"{len(real)} spectra, SDSS-I/II (RUN2D 26), from {len(plates)} plates ({', '.join(plates)}); {n266} of "
        f"them from plate 266. They are the example files of public spectral-fitting packages (the column "
        "`source` of `../shared/data/sdss/MANIFEST.csv`), not a random draw of the main galaxy sample: chosen "
        f"bright (median fibre g {np.median(col(real, 'gmag')):.2f} against the mock's "
        f"{np.median(col(mock, 'gmag')):.2f}), with AGN and broad-line objects over-represented (SUBCLASS AGN "
        f"or BROADLINE: {sum(('AGN' in r['subclass']) or ('BROADLINE' in r['subclass']) for r in real)} of "
        f"{len(real)}), and z up to {max(col(real, 'z')):.2f} while the mock stops at 0.1. Any mock–real "
        "difference below that a flux-limited sample would not show is suspect; hence the S/N-matched column: "
        f"for each real galaxy the {MATCH_K} mock spectra nearest in S/N.",
        "",
        "## Statistics",
        "",
        "Median [16th, 84th percentile]; KS p-value of S/N-matched mock against SDSS (with "
        f"{len(real)} real spectra, p > 0.05 means only that they cannot tell the samples apart).",
        "",
        "| statistic | mock, all | mock, S/N-matched | SDSS | KS p (matched) |",
        "|---|---|---|---|---|",
    ]
    for label, key in rows:
        lines.append(f"| {label} | {_summary(col(mock, key))} | {_summary(col(matched, key))} | "
                     f"{_summary(col(real, key))} | {_ks(col(matched, key), col(real, key))} |")
    old = lambda rs: [r for r in rs if r["d4000"] > 1.8]  # noqa: E731  old, passive populations
    for label, key in (("Mg b", "mgb"), ("Fe5270", "fe5270")):
        lines.append(f"| {label}, Å, where D4000n > 1.8 | {_summary(col(old(mock), key))} | "
                     f"{_summary(col(old(matched), key))} | {_summary(col(old(real), key))} | "
                     f"{_ks(col(old(matched), key), col(old(real), key))} |")
    sf = lambda rs: [r for r in rs if r["bpt"] == "star-forming"]  # noqa: E731
    lines.append(f"| log [S II]/Hα, BPT star-forming only | {_summary(col(sf(mock), 's2ha'))} | "
                 f"{_summary(col(sf(matched), 's2ha'))} | {_summary(col(sf(real), 's2ha'))} ({len(sf(real))} spectra) | |")
    frac = lambda xs, f: np.mean([f(x) for x in xs])  # noqa: E731
    for label, f in (("fraction with EW(Hα) > 3 Å", _emission),
                     ("fraction with any ivar = 0 pixel", lambda m: m["bad_frac"] > 0)):
        lines.append(f"| {label} | {frac(mock, f):.2f} | {frac(matched, f):.2f} | {frac(real, f):.2f} | |")
    for kind in ("star-forming", "composite", "AGN", "weak"):
        lines.append(f"| BPT class {kind} ([N II] diagram{'; a line S/N ≤ 3' if kind == 'weak' else ''}) | "
                     f"{frac(mock, lambda m: m['bpt'] == kind):.2f} | {frac(matched, lambda m: m['bpt'] == kind):.2f} | "
                     f"{frac(real, lambda m: m['bpt'] == kind):.2f} | |")
    lines += [
        f"| rms sky-subtraction residual / sky-line flux (pooled, pixels with sky lines > {SKY_LINE_FLUX:g}) | "
        f"{_sky_fraction(mock):.3f} | {_sky_fraction(matched):.3f} | {_sky_fraction(real):.3f} | |",
        f"| g-band S/N per pixel at fibre g = 20.2 (fit of log S/N on g; spectra used) | {sn_mock:.2f} ({n_mock}) | | "
        f"{sn_real:.2f} ({n_real}) | |",
        "",
    ]
    t = truth
    logm = np.asarray(t["logmstar"], float)
    cls = np.asarray(t["agn_class"], int)
    quiescent = np.asarray(t["logssfr"], float) < -11.0
    alpha_fe = np.asarray(t["alpha_fe"], float)
    sf_host = ~quiescent & (cls == 0)
    gas_minus_stars = np.asarray(t["metallicity"], float) - 8.69 - np.asarray(t["logzsol"], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.asarray(t["a_v_lines"], float) / np.asarray(t["a_v"], float)
    bins = [(8.5, 9.8), (9.8, 10.2), (10.2, 10.6), (10.6, 11.0), (11.0, 11.8)]
    wing = np.asarray(t["oiii_wing_frac"], float) if "oiii_wing_frac" in t.colnames else None  # generator ≥ 4
    lines += [
        "## The mock's nuclei, quiescent fraction and [α/Fe] (truth table)",
        "",
        f"AGN or LINER-like nucleus in {np.mean(cls > 0):.3f} of the mock (Seyfert {np.mean(cls == 1):.3f}, "
        f"LINER-like {np.mean(cls == 2):.3f}); Kauffmann et al. (2003): 22,623 of 122,808 SDSS galaxies, 0.184.",
        "",
        "| log M* | " + " | ".join(f"{a}–{b}" for a, b in bins) + " |",
        "|---|" + "---|" * len(bins),
        "| galaxies | " + " | ".join(str(int(np.sum((logm >= a) & (logm < b)))) for a, b in bins) + " |",
        "| AGN fraction | " + " | ".join(f"{np.mean(cls[(logm >= a) & (logm < b)] > 0):.3f}" for a, b in bins) + " |",
        "| quiescent fraction (log sSFR < −11) | "
        + " | ".join(f"{np.mean(quiescent[(logm >= a) & (logm < b)]):.3f}" for a, b in bins) + " |",
        "| median [α/Fe], quiescent | "
        + " | ".join(f"{np.median(alpha_fe[(logm >= a) & (logm < b) & quiescent]):.3f}" for a, b in bins) + " |",
        "| median log Z(gas) − log Z(stars), dex | "
        + " | ".join(f"{np.median(gas_minus_stars[(logm >= a) & (logm < b)]):.2f}" for a, b in bins) + " |",
        "| median A_V(lines) / A_V(stars) | "
        + " | ".join(f"{np.nanmedian(eta[(logm >= a) & (logm < b)]):.2f}" for a, b in bins) + " |",
        "",
        f"True BPT class of all lines (noiseless): star-forming {np.mean(np.asarray(t['bpt_class']) == 0):.2f}, "
        f"composite {np.mean(np.asarray(t['bpt_class']) == 1):.2f}, AGN {np.mean(np.asarray(t['bpt_class']) == 2):.2f}; "
        f"AGN hosts with L[O III] > 10^7 Lsun: {np.sum(np.asarray(t['agn_log_loiii'], float) > 7.0)}. "
        f"Calibration error rms {_summary(t['calib_rms'])}; sky residual {_summary(t['sky_resid_rms'])}."
        + (f" [O III] outflow wing in {np.mean(wing[cls == 1] > 0):.2f} of Seyferts and {np.mean(wing[cls == 2] > 0):.2f} "
           f"of LINERs (share of the [O III] flux {_summary(wing[wing > 0])})." if wing is not None else ""),
        "",
        f"Star-forming hosts without a nucleus (log sSFR > −11, no AGN; {int(np.sum(sf_host))} galaxies), "
        f"noiseless lines: log [N II]/Hα {_summary(t['bpt_n2ha'][sf_host])}, log [S II]/Hα "
        f"{_summary(t['bpt_s2ha'][sf_host])}, log [O III]/Hβ {_summary(t['bpt_o3hb'][sf_host])}; gas-phase "
        f"12 + log O/H {_summary(t['metallicity'][sf_host])}.",
        "",
    ]
    for name in ("logmstar", "logssfr", "logzsol", "metallicity", "mwage", "a_v", "vdisp", "alpha_fe", "logu", "fiber_frac", "agn_log_loiii",
                 "agn_oiii_frac", "ew_nad_ism"):
        if name in t.colnames:
            lines.append(f"- {name}: {_summary(t[name])}")
    lines.append("")
    previous = path.read_text() if path.exists() else ""
    kept = [m.group(0) for m in KEEP.finditer(previous)] or ["<!-- real_vs_mock -->\n(not run yet)\n<!-- /real_vs_mock -->"]
    text = "\n".join(lines) + PHYSICS + "\n" + "\n\n".join(kept) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


PHYSICS = """
## What the mock does, and the number behind each part

- **AGN and LINER-like emission** (`src/galvae/sources/mock/agn.py`, `population.draw_agn`). Fraction
  rising with stellar mass (logistic, half its 50 % maximum at 10^10.6) to an average of 18 % over the
  flux-limited population: Kauffmann et al. (2003) find 22,623 narrow-line AGN among 122,808 SDSS
  galaxies, "almost exclusively in massive galaxies". Seyferts make 60 % of the AGN of star-forming
  hosts and 25 % of those of quiescent hosts (Kauffmann et al. 2003: weak AGN live in hosts like normal
  early types, luminous ones in younger hosts); log L[O III]/Lsun ≈ 6.7 ± 0.45 at 10^10.5 for Seyferts,
  so that some exceed 10^7 Lsun (Kauffmann et al.'s strong AGN), 5.9 ± 0.35 for LINERs.
  Line ratios drawn per galaxy in the class's region: above Kewley et al. (2001) on both BPT
  diagrams, Seyferts above and LINERs below the Kewley et al. (2006) line y = 1.89x + 0.76; LINERs
  with [O II]/[O III] ≥ 1 and [O I]/[O III] ≥ 1/3 (Heckman 1980). Hα/Hβ = 3.1 before dust; line width
  σ* × 10^N(0, 0.1) (Nelson & Whittle 1996). The host's own lines are added, so composites fall
  between the Kauffmann and Kewley lines by themselves.
- **Star-forming hosts' lines**: bagpipes gives stars and gas one metallicity, but in SDSS galaxies
  the gas, enriched after most of the stars formed, is more metal-rich: the gas-phase mass–metallicity
  relation of Tremonti et al. (2004), on a photoionisation-model scale like that of bagpipes' Cloudy
  grid, lies 0.3–0.5 dex above the mock's stellar one (Gallazzi et al. 2005 shape; row "log Z(gas) −
  log Z(stars)" above). The nebular
  lines now come from gas at the stars' logzsol plus that offset at the galaxy's mass
  (`population.gas_metallicity_offset`; truth column `metallicity` is the gas's 12 + log O/H). With the
  gas at the stars' metallicity the star-forming hosts sat up and left of the SDSS star-forming
  sequence (too low [N II]/Hα, too high [O III]/Hβ) with [O II]3727 about as strong as Hα; their
  truth ratios now are in the line after the AGN table. Earlier changes kept: log U 0.25 dex lower (−3.35 at solar
  stellar metallicity) and the host's [N II] lines scaled by 10^−0.2, which put all star-forming hosts
  below the Kauffmann et al. (2003) line
  (`tests/test_mock_agn.py::test_star_forming_hosts_lie_below_the_kauffmann_line`). At that log U the
  grid gives log [S II]/Hα ≈ −0.2 to −0.3 ([S II] comes from the partly ionised zone, which grows as
  log U falls), against −0.4 to −0.5 for SDSS star-forming galaxies (Kewley et al. 2006, [S II]
  diagram): the host's [S II] 6717, 6731 lines are scaled by 10^−0.2 (`render.SII_SCALE_DEX`;
  `tests/test_mock_alpha.py::test_star_forming_hosts_have_sdss_sii_to_halpha`).
- **Dust on the lines**: the lines (and stars younger than 10 Myr) see eta × A_V; eta was a fixed 2
  (Calzetti 2000). It is now set by the mass, 2.0–2.7 above 10^9 Msun (up to 4 below;
  `population.nebular_eta`; row "A_V(lines) / A_V(stars)" above), so that a
  main-sequence galaxy of median A_V has the Hα attenuation Garn & Best (2010) measure from the Balmer
  decrements of SDSS star-forming galaxies at its mass (0.91 mag at 10^10 Msun, 1.7 at 10^11); with
  eta = 2 the mock's main-sequence lines were 0.1 mag (10^10 Msun) to 0.4 mag (10^11) less attenuated.
  Truth column `a_v_lines`.
- **Interstellar Na I D absorption** (generator version 4; `src/galvae/sources/mock/ism.py`, truth
  column `ew_nad_ism`). The stellar grids carry the stars' Na D but not the absorption of the cold gas in
  front of them, which comes with the dust. Poznanski, Prochaska & Bloom (2012, eq. 9) measure on
  nearly a million SDSS spectra log10 E(B−V) = 1.17 EW(D1 + D2) − 1.85 (± 0.08); the mock inverts it
  with the galaxy's own E(B−V) = A_V / 4.05 (Calzetti), 0 below A_V ≈ 0.05, and draws the doublet
  (D2 : D1 = 1.3, between optically thin 2 and saturated 1) as Gaussians of the gas dispersion on the
  broadened continuum (its EW over the population: row `ew_nad_ism` above). The relation is
  calibrated on Milky Way sight lines and its 0.15 mag scatter is left out (so the absorption adds no
  parameter beyond A_V): an approximation of what an integrated spectrum shows. Why: with the d = 8
  model of generator version 3, 12 % of the real galaxies' excess χ² over the mock's sat in the 15 Na D
  pixels, where the real spectra absorbed 4.7 % more than the model drew (10 of 11).
- **[O III] outflow wings of AGN** (generator version 4; `population.draw_outflow`,
  `agn.line_profiles`, truth column `oiii_wing_frac`). Woo et al. (2016) find in ~39,000 SDSS type 2 AGN
  that [O III] often needs a second, broader and usually blueshifted Gaussian, that the share of AGN
  with such non-gravitational kinematics rises with L[O III] (most luminous AGN have it) and that the
  two-Gaussian profiles have an overall dispersion 1.3–1.4 × σ*. The mock gives an AGN a wing with
  probability 0.5 + 0.3 (log L[O III] − 6.7), within 0.1–0.9 (shares in the truth-table line above),
  holding U(0.15, 0.45) of the [O III] flux with σ = U(1.5, 2.5) × the core's, shifted by
  N(−100, 100) km/s (overall σ ≈ 1.4 × the core's): rounded values matching those summaries, not a fit.
  Line totals, and so the BPT ratios, are unchanged. Why: the real Seyfert's excess χ² sat in the blue
  wing of its [O III] (4999–5002 Å).
- **Balmer absorption of young populations**: bagpipes' BC03 + MILES stellar spectra carry it: Hδ_A
  falls with D4000n from ~+5 Å to ~−3 Å along the same sequence as the real galaxies
  (`docs/figures/mock_bpt.png`, lower left; table above). No post-starburst (burst then quench)
  histories were added: delayed-τ only, so the strong-Hδ_A tail of SDSS post-starbursts is missing.
- **α-enhancement** (`src/galvae/sources/mock/alpha.py`, truth column `alpha_fe`). BC03 is
  solar-scaled; massive early types are α-enhanced. Quiescent galaxies get the [α/Fe]–σ relation of
  Thomas et al. (2005), −0.55 + 0.33 log σ, intrinsic scatter 0.05 dex; the star-forming main sequence
  0 (their low-mass galaxies with young populations have low [α/Fe]), a ramp in log sSFR between. An
  empirical approximation turns it into the spectrum: before the velocity broadening, the absorption
  depth (1 − F/C, C the Lick pseudo-continuum) in the central band of Mg b is multiplied by
  1.2^([α/Fe]/0.3), that of the MgH band of Mg1 by half as much (in dex), and those of the Fe indices
  (Fe4383 … Fe5406) divided by 1.2^([α/Fe]/0.3): roughly the size of the change of the Thomas, Maraston
  & Bender (2003) models between [α/Fe] = 0 and 0.3 for old populations (a rounded value, not read off
  their tables), with Mg and Fe responses that keep their α/Fe-independent [MgFe]' unchanged
  (`tests/test_mock_alpha.py`). Balmer lines, CN, Ca and the continuum shape stay solar-scaled.
- **Quiescent fraction**: rising with stellar mass (row "quiescent fraction" above, from the
  population's logistic in log M*: 6 % at 10^9, 72 % at 10^11); the real set's passive majority is its
  selection (below), not a deficit of massive quiescent galaxies in the mock.
- **Flux calibration**: a smooth factor 1 + Σ c_k P_k(log λ), k = 1–3, rms 3 % (×/÷ 1.6) per spectrum,
  on flux and model: the large-scale residual of SDSS spectrophotometry that Yan (2011) removes with
  stacks of red-sequence galaxies. Its amplitude is an assumption ("a few per cent"), not a measurement.
- **Sky-subtraction residuals** at the sky lines of the shipped sky template (5577, 5890/5896, 6300,
  6364 Å and the OH forest beyond 7200 Å, observed frame): per-camera scale error (2 %), sub-pixel
  wavelength offset (0.05 px), per-pixel scatter (1.5 %); sized so that the pooled rms residual / sky
  flux matches the real files (row above). No published number: measured.
- **S/N**: the instrument (throughput, sky, depth spread) is measured from the real files; the S/N at
  fibre g = 20.2 (row above) is close to the survey's requirement, (S/N)² > 15 per pixel at g = 20.2
  (S/N 3.9; Stoughton et al. 2002). The mock's S/N distribution is then that of the main galaxy sample's
  flux limit r < 17.77 (Strauss et al. 2002) over its population; the real set's higher S/N is its
  brighter selection (fibre g above).

References: Baldry et al. 2012, MNRAS 421, 621; Calzetti et al. 2000, ApJ 533, 682; Gallazzi et al.
2005, MNRAS 362, 41; Garn & Best 2010, MNRAS 409, 421; Heckman 1980, A&A 87, 152; Kauffmann et al.
2003, MNRAS 346, 1055; Kewley et al. 2001, ApJ 556, 121; Kewley et al. 2006, MNRAS 372, 961; Nelson &
Whittle 1996, ApJ 465, 96; Poznanski, Prochaska & Bloom 2012, MNRAS 426, 1465; Stoughton et al. 2002, AJ 123, 485; Strauss et al. 2002, AJ 124, 1810;
Thomas, Maraston & Bender 2003, MNRAS 339, 897; Thomas et al. 2005, ApJ 621, 673; Tremonti et al.
2004, ApJ 613, 898; Woo et al. 2016, ApJ 817, 108; Yan 2011, AJ 142, 153.
"""


def _relative(path: Path) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mock", type=Path, default=ROOT / "out" / "run5000" / "mock")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", type=Path, default=REAL_DIR)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if not args.real.is_dir():
        raise SystemExit(f"{args.real} not found: the real SDSS files are needed for this comparison")
    survey = make_mock_survey(args.mock, n=args.n, seed=args.seed, workers=args.workers)
    mock = [measure(p) for p in survey.paths]
    real = real_galaxies(args.real)
    matched = sn_matched(real, mock)
    pairs = pair_examples(real, mock)
    make_figure(pairs, mock, real, survey.truth, FIGURE)
    agn_class = dict(zip(np.asarray(survey.truth["id"]).astype(str), np.asarray(survey.truth["agn_class"], int)))
    make_bpt_figure(mock, real, agn_class, BPT_FIGURE)
    default_mock = args.mock.resolve() == (ROOT / "out" / "run5000" / "mock").resolve()
    mock_arg = "" if default_mock else f" --mock {_relative(args.mock)}"
    command = f"python benchmarks/mock_realism.py --n {args.n} --seed {args.seed}{mock_arg}"
    write_table(TABLE, mock, matched, real, survey.truth, survey, command, _relative(args.mock.parent))
    logging.info("wrote %s, %s and %s", FIGURE, BPT_FIGURE, TABLE)


if __name__ == "__main__":
    main()
