"""Make a mock survey: population → bagpipes spectra → SDSS-like observation → files.

Output folder::

    DIR/spectra/spec-PPPPP-MMMMM-FFFF.fits   one SDSS spec-lite file per galaxy
    DIR/GSWLC-mock.dat                        GSWLC-2-format catalogue (noisy properties)
    DIR/gal_info-mock.fits                    MPA-JHU DR7-format gal_info (redshift, velocity dispersion)
    DIR/gal_fiboh-mock.fits                   MPA-JHU DR7-format gal_fiboh, row-aligned: gas-phase metallicity
                                              (star-forming galaxies; −99.9 for the others)
    DIR/truth.fits                            true properties (see write.TRUTH_COLUMNS)
    DIR/mock.json                             configuration, its hash, counts, timings

A rerun with the same configuration finds ``mock.json`` and returns at once; with another
configuration the previous mock's files are removed and a new one is made. An interrupted run
resumes: finished galaxies are kept (their truth rows are journalled as they finish).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import agn as agn_mod
from . import ism
from . import observe as obs_mod
from . import population as pop
from . import write as wr
from .render import ETA_BIRTH_CLOUD, MASSFORMED

log = logging.getLogger(__name__)

#: Bump when the same configuration would give different files.
GENERATOR_VERSION = 4  # 2: AGN/LINER lines, flux-calibration error, sky residuals measured on real files;
#                        3: [α/Fe] of the stars, host [S II] scaled, gas metallicity above the stars'
#                        (Tremonti et al. 2004), line attenuation after Garn & Best (2010);
#                        4: interstellar Na I D absorption from the dust (Poznanski et al. 2012),
#                        [O III] outflow wings of AGN (Woo et al. 2016)
SPECTRA_DIR = "spectra"
CATALOG_NAME = "GSWLC-mock.dat"
MPAJHU_NAMES = ("gal_info-mock.fits", "gal_fiboh-mock.fits")  # read together: read_mpajhu(*survey.mpajhu_paths)
TRUTH_NAME = "truth.fits"
MANIFEST_NAME = "mock.json"
JOURNAL_NAME = ".mock-journal.jsonl"
SOLAR_OH = pop.SOLAR_OH


def _source_hash() -> str:
    """Hash of this package's code: a changed generator never reuses an old cache."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class MockConfig:
    """Everything that decides the mock's content (not how fast it is made)."""

    n: int
    seed: int
    vary: tuple | None
    zmin: float
    zmax: float
    flux_limit: float | None

    def fingerprint(self) -> dict:
        """The configuration plus the versions of what generates it."""
        import importlib.metadata as md

        return {
            **asdict(self), "vary": list(self.vary) if self.vary is not None else None,
            "generator_version": GENERATOR_VERSION, "generator_source": _source_hash(),
            "bagpipes": md.version("bagpipes"),
            "instrument_templates": hashlib.sha256(obs_mod.TEMPLATE_FILE.read_bytes()).hexdigest()[:16],
        }

    def digest(self) -> str:
        """Short hash of :meth:`fingerprint` (names the cache)."""
        text = json.dumps(self.fingerprint(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class MockSurvey:
    """A mock survey on disk: its spectrum files (in galaxy order), truth table and catalogues
    (``catalog_path`` GSWLC-2; ``mpajhu_paths`` the MPA-JHU gal_info and gal_fiboh files)."""

    out_dir: Path
    paths: list
    truth: object  # astropy Table
    truth_path: Path
    catalog_path: Path
    config: MockConfig
    config_hash: str
    from_cache: bool = False
    mpajhu_paths: tuple = ()

    def __len__(self) -> int:
        return len(self.paths)


# ------------------------------------------------------------------------------------------------
# Worker side: one bagpipes model per process
# ------------------------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(zmin: float, zmax: float) -> None:
    """Build this process's bagpipes model and load the instrument (once per process and zmax)."""
    if _WORKER.get("key") == (zmin, zmax):
        return
    from .render import Renderer

    edges = obs_mod.master_edges()
    renderer = Renderer((edges[0], edges[-1]), zmax)
    _WORKER.update(key=(zmin, zmax), renderer=renderer, templates=obs_mod.load_instrument_templates(),
                   cosmo=pop.cosmo_table(zmin, zmax))


def bpt_class(ratios: dict) -> int:
    """BPT class of line ratios on the [N II] diagram: 0 star-forming (below Kauffmann et al. 2003),
    1 composite (between), 2 AGN (above Kewley et al. 2001); −1 when a ratio is undefined."""
    x, y = ratios["n2ha"], ratios["o3hb"]
    if not (np.isfinite(x) and np.isfinite(y)):
        return -1
    if y > float(pop.kewley01_n2(x)):
        return 2
    return 1 if y > float(pop.kauffmann03_n2(x)) else 0


def _subclass(ew_halpha: float, logssfr: float, bpt: int) -> str:
    """SDSS-like SUBCLASS: AGN above the Kewley (2001) line with clear Hα, STARBURST for EW(Hα) > 50 Å,
    STARFORMING for clear Hα emission."""
    if bpt == 2 and ew_halpha > 3.0:
        return "AGN"
    if ew_halpha > 50.0:
        return "STARBURST"
    if ew_halpha > 3.0 and logssfr > -11.0:
        return "STARFORMING"
    return ""


def _measurements(rng, z: float, vdisp: float, sn: float) -> dict:
    """What the SDSS pipeline would report: redshift and dispersion with errors, reduced χ²."""
    sn = max(sn, 1.0)
    z_err = wr.redshift_error(sn)
    vdisp_err = wr.vdisp_error(vdisp, sn)
    return {
        "z_obs": z + rng.normal(0.0, z_err), "z_err": z_err,
        "vdisp_obs": max(vdisp + rng.normal(0.0, vdisp_err), 0.0), "vdisp_err": vdisp_err,
        "rchi2": 1.0 + abs(rng.normal(0.0, 0.1)),
    }


def _observe_galaxy(p: dict, rng):
    """(observed arrays, noiseless continuum on the master grid, bagpipes spectrum, τ, flux scale)."""
    renderer, templates = _WORKER["renderer"], _WORKER["templates"]
    z = p["z"]
    tau = renderer.solve_tau(p["age"], p["logssfr"], p["logzsol"])
    eta = p.get("eta", ETA_BIRTH_CLOUD)
    rest = renderer.render(z, p["age"], tau, p["logzsol"], p["a_v"], p["logu"], p.get("alpha_fe", 0.0),
                           p.get("logzgas"), eta)
    d_l = float(_WORKER["cosmo"].luminosity_distance(z))
    # bagpipes made 10^MASSFORMED Msun of stars; we want logmstar surviving, seen through the fibre.
    scale = (10.0 ** (p["logmstar"] - rest.logmstar) * renderer.luminosity_distance_correction(z, d_l)
             * p["fiber_frac"] * 1e17)
    wdisp = templates.wdisp * (1.0 + rng.normal(0.0, templates.wdisp_sigma))
    # The AGN's L[O III] is the fibre's (as measured in SDSS), so no fibre-aperture factor.
    agn_wave, agn_flux = agn_mod.agn_lines(p, d_l, p["a_v"] * eta)
    extra = agn_mod.line_profiles(p, agn_wave, agn_flux)
    nad = ism.nad_absorption(p["a_v"], p["vdisp_gas"])
    model, continuum = obs_mod.observed_model(rest.wave, rest.flux * scale, rest.line_wave, rest.line_flux * scale,
                                              z, p["vdisp"], p["vdisp_gas"], wdisp, extra_lines=extra,
                                              absorption=nad)
    lines = (np.concatenate([rest.line_wave, agn_wave]), np.concatenate([rest.line_flux * scale, agn_flux]))
    return obs_mod.observe(model, rng, templates, wdisp), continuum, rest, tau, scale, lines


def _fiber_gmag(continuum) -> float:
    """AB magnitude of the noiseless continuum in the fibre over 4200–5400 Å (the core of SDSS g)."""
    wave = 10.0 ** obs_mod.master_loglam()
    sel = (wave > 4200.0) & (wave < 5400.0)
    fnu = np.mean(continuum[sel] * 1e-17 * wave[sel] ** 2 / 2.99792458e18)
    return float(-2.5 * np.log10(max(fnu, 1e-40)) - 48.6)


def _ew(lines, name: str, continuum, z: float) -> float:
    """True rest-frame EW (Å) of a line (host + AGN) against the noiseless continuum."""
    wave, flux = lines
    centre = agn_mod.WAVE[name]
    total = float(flux[np.abs(wave - centre) < 1.0].sum())
    cont = float(np.interp(centre * (1.0 + z), 10.0 ** obs_mod.master_loglam(), continuum))
    return total / max(cont, 1e-30) / (1.0 + z)


def _agn_truth(p: dict, lines) -> dict:
    """AGN truth columns: class, L[O III], the AGN's share of [O III]5007, BPT ratios and class of all lines."""
    wave, flux = lines
    o3 = np.abs(wave - agn_mod.WAVE["oiii5007"]) < 1.0
    host_o3 = float(flux[o3][0]) if o3.any() else 0.0  # the host's line comes first (bagpipes' list)
    total_o3 = float(flux[o3].sum())
    ratios = agn_mod.bpt_ratios(wave, flux)
    return {"agn_class": int(p.get("agn_class", pop.AGN_NONE)), "agn_log_loiii": np.nan if p.get("agn_log_loiii") is None else float(p["agn_log_loiii"]),
            "agn_oiii_frac": (total_o3 - host_o3) / total_o3 if total_o3 > 0 else 0.0,
            "bpt_n2ha": ratios["n2ha"], "bpt_s2ha": ratios["s2ha"], "bpt_o3hb": ratios["o3hb"],
            "bpt_class": bpt_class(ratios)}


def _truth_row(record: dict, p: dict, rest, tau: float, observed, continuum, lines) -> dict:
    renderer = _WORKER["renderer"]
    plate, mjd, fiber = record["plate"], record["mjd"], record["fiber"]
    logsfr = float(np.log10(max(rest.sfr, 1e-300))) + p["logmstar"] - rest.logmstar
    ew_halpha = _ew(lines, "halpha", continuum, p["z"])
    agn = _agn_truth(p, lines)
    return {
        "index": record["index"], "plate": plate, "mjd": mjd, "fiber": fiber,
        "id": f"{plate:04d}-{mjd:05d}-{fiber:04d}", "specobjid": str(wr.specobjid(plate, mjd, fiber)),
        "filename": f"{SPECTRA_DIR}/{record['filename']}", "ra": record["ra"], "dec": record["dec"],
        "z": p["z"], "logmstar": p["logmstar"], "logmformed": p["logmstar"] - rest.logmstar + MASSFORMED,
        "logsfr": logsfr, "logssfr": logsfr - p["logmstar"], "logzsol": p["logzsol"],
        "metallicity": SOLAR_OH + p["logzgas"], "mwage": rest.mwage, "age": p["age"], "tau": tau,
        "a_v": p["a_v"], "a_v_lines": p["a_v"] * p.get("eta", ETA_BIRTH_CLOUD),
        "a_b": p["a_v"] * renderer.a_b_per_a_v, "a_fuv": p["a_v"] * renderer.a_fuv_per_a_v,
        "vdisp": p["vdisp"], "vdisp_gas": p["vdisp_gas"], "alpha_fe": p["alpha_fe"], "logu": p["logu"],
        "quiescent": p["quiescent"],
        "fiber_frac": p["fiber_frac"], "sn_median": observed.sn_median, "depth": observed.depth,
        "ew_halpha": ew_halpha, "ew_oiii": _ew(lines, "oiii5007", continuum, p["z"]), **agn,
        "oiii_wing_frac": p.get("oiii_wing_frac", 0.0), "ew_nad_ism": float(ism.nad_ism_ew(p["a_v"])),
        "calib_rms": observed.calib_rms, "sky_resid_rms": observed.sky_resid_rms,
        "fiber_gmag": _fiber_gmag(continuum),
        "subclass": _subclass(ew_halpha, logsfr - p["logmstar"], agn["bpt_class"]),
    }


def make_galaxy(record: dict, spectra_dir: str) -> dict:
    """Render, observe and write one galaxy; returns its truth row. Needs :func:`_init_worker` first."""
    p = record["params"]
    rng = obs_mod.observation_stream(record["seed"], record["index"])
    observed, continuum, rest, tau, scale, lines = _observe_galaxy(p, rng)
    measured = _measurements(rng, p["z"], p["vdisp"], observed.sn_median)
    row = _truth_row(record, p, rest, tau, observed, continuum, lines)
    meta = {**record, **measured, "subclass": row["subclass"], "objid": wr.OBJID_BASE + record["index"]}
    wr.write_spec_lite(Path(spectra_dir) / record["filename"], meta, observed)
    return row


def _make_chunk(indices: list, cfg: "MockConfig", spectra_dir: str) -> list:
    """Truth rows of the galaxies ``indices``, whose files this call writes (runs in a worker)."""
    _init_worker(cfg.zmin, cfg.zmax)
    return [make_galaxy(r, spectra_dir) for r in _records(cfg, indices)]


# ------------------------------------------------------------------------------------------------
# Main process
# ------------------------------------------------------------------------------------------------


def _records(cfg: MockConfig, indices) -> list:
    """Population draws and identifiers of the galaxies ``indices``."""
    fixed = pop.typical_values(cfg.vary)
    out = []
    for i in indices:
        p = pop.draw_galaxy(cfg.seed, i, fixed, cfg.zmin, cfg.zmax, cfg.flux_limit)
        plate, mjd, fiber = wr.plate_mjd_fiber(i)
        ra0, dec0 = wr.plate_centre(plate)
        dec = dec0 + p["ddec"]
        ra = (ra0 + p["dra"] / max(math.cos(math.radians(dec)), 0.1)) % 360.0
        out.append({"index": i, "seed": cfg.seed, "params": p, "plate": plate, "mjd": mjd, "fiber": fiber,
                    "ra": ra, "dec": dec, "filename": wr.spec_filename(plate, mjd, fiber)})
    return out


def _read_manifest(out_dir: Path) -> dict | None:
    path = out_dir / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("%s is unreadable; the mock will be made again", path)
        return {}


def _write_manifest(out_dir: Path, manifest: dict) -> None:
    path = out_dir / MANIFEST_NAME
    wr.atomic_write(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True)))


def _remove_previous(out_dir: Path, manifest: dict) -> None:
    """Delete the files of a previous mock in ``out_dir`` (only those it made)."""
    removed = 0
    for name in manifest.get("files", []) + [TRUTH_NAME, CATALOG_NAME, *MPAJHU_NAMES, JOURNAL_NAME, MANIFEST_NAME]:
        path = out_dir / name
        if path.is_file():
            path.unlink()
            removed += 1
    spectra = out_dir / SPECTRA_DIR
    for path in spectra.glob("spec-*.fits") if spectra.is_dir() else []:
        path.unlink()  # a journalled run stopped before its manifest listed its files
        removed += 1
    log.info("removed %d files of the previous mock in %s", removed, out_dir)


def _journal(out_dir: Path):
    """Truth rows journalled so far (by finished chunks of this or an interrupted run), in file order."""
    path = out_dir / JOURNAL_NAME
    if not path.exists():
        return
    with open(path) as fh:
        for line in fh:
            try:
                yield json.loads(line)
            except ValueError:
                continue  # a line cut by an interruption


def _cached_survey(out_dir: Path, cfg: MockConfig, digest: str, manifest: dict) -> MockSurvey | None:
    from astropy.table import Table

    paths = [out_dir / f for f in manifest.get("files", [])]
    truth_path, catalog_path = out_dir / TRUTH_NAME, out_dir / CATALOG_NAME
    mpajhu_paths = tuple(out_dir / name for name in MPAJHU_NAMES)
    present = all(p.exists() for p in (truth_path, catalog_path, *mpajhu_paths, *paths))
    if not (manifest.get("complete") and present):
        return None
    truth = Table.read(truth_path, mask_invalid=False)  # keep empty SUBCLASS strings as ''
    return MockSurvey(out_dir, paths, truth, truth_path, catalog_path, cfg, digest, from_cache=True,
                      mpajhu_paths=mpajhu_paths)


def _run_pool(chunks: list, spectra_dir: Path, cfg: MockConfig, workers: int, on_rows) -> None:
    """Make the chunks of galaxy indices, in this process or in ``workers`` processes."""
    if workers == 1:
        for chunk in chunks:
            on_rows(_make_chunk(chunk, cfg, str(spectra_dir)))
        return
    # spawn: a clean interpreter per worker (safe when the parent has threads, e.g. torch loaded).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(cfg.zmin, cfg.zmax)) as pool:
        futures = [pool.submit(_make_chunk, chunk, cfg, str(spectra_dir)) for chunk in chunks]
        for future in as_completed(futures):
            on_rows(future.result())


def _finish(out_dir: Path, cfg: MockConfig, digest: str, workers: int, seconds: float) -> MockSurvey:
    """Catalogues, truth table and manifest from the journal; the journal is then removed."""
    columns = wr.TruthColumns(cfg.n)
    mpajhu = wr.MpajhuColumns(cfg.n)
    catalogue = [""] * cfg.n
    for row in _journal(out_dir):  # streamed: a large survey's rows never sit in memory as dicts
        if row["index"] < cfg.n:
            columns.add(row)
            catalogue[row["index"]] = wr.gswlc_line(wr.gswlc_row(cfg.seed, row))
            mpajhu.add(cfg.seed, row)
    wr.write_gswlc(out_dir / CATALOG_NAME, catalogue)
    mpajhu_paths = tuple(out_dir / name for name in MPAJHU_NAMES)
    mpajhu.write(*mpajhu_paths)
    meta = {"MOCKHASH": digest, "SEED": cfg.seed, "NGAL": cfg.n, "ZMIN": cfg.zmin, "ZMAX": cfg.zmax,
            "VARY": ",".join(cfg.vary) if cfg.vary is not None else "ALL", "GENVER": GENERATOR_VERSION}
    truth = columns.table(meta)
    wr.write_truth(out_dir / TRUTH_NAME, truth)
    files = list(truth["filename"])
    _write_manifest(out_dir, {"hash": digest, "config": cfg.fingerprint(), "complete": True, "files": files,
                              "n": cfg.n, "n_metallicity": mpajhu.n_metallicity, "seconds": round(seconds, 2),
                              "workers": workers})
    (out_dir / JOURNAL_NAME).unlink(missing_ok=True)
    return MockSurvey(out_dir, [out_dir / f for f in files], truth, out_dir / TRUTH_NAME, out_dir / CATALOG_NAME,
                      cfg, digest, from_cache=False, mpajhu_paths=mpajhu_paths)


def make_mock_survey(out_dir, n: int = 1000, seed: int = 0, vary=None, workers: int | None = None,
                     zmin: float = 0.01, zmax: float = 0.1, flux_limit: float | None = pop.R_LIMIT,
                     progress: bool = True, chunk_size: int | None = None) -> MockSurvey:
    """Make (or find) a mock SDSS × GSWLC survey of ``n`` galaxies in ``out_dir``.

    Parameters (CLI: ``galvae mock --n N --seed S --out DIR [--vary NAMES] [--workers W]
    [--zmin Z] [--zmax Z] [--flux-limit R | --no-flux-limit] [--no-progress]``):

    out_dir
        Folder for ``spectra/``, ``GSWLC-mock.dat``, ``gal_info-mock.fits`` + ``gal_fiboh-mock.fits``
        (MPA-JHU DR7 layout: join them with ``galvae catalog``), ``truth.fits`` and ``mock.json``.
    n, seed
        Number of galaxies; the seed of everything (galaxy i uses streams seeded by (seed, i), so the
        result does not depend on ``workers`` and the first k galaxies do not depend on ``n``).
    vary
        ``None``: every generating parameter follows the population. Otherwise the names (sequence or
        comma-separated string) of the parameters allowed to vary, among ``logmstar, z, logssfr, age,
        logzsol, a_v, logu, vdisp, alpha_fe, agn`` (see :mod:`.population`); the others are pinned to
        :data:`~.population.TYPICAL_VALUES`, so the spectra span a known number of dimensions (plus
        noise, sky, fibre aperture and masks, which always vary).
    workers
        Processes (``None``: one per core; 1: in this process). Workers are *spawned* (fresh
        interpreters), so a script calling this with workers > 1 needs the usual
        ``if __name__ == "__main__":`` guard; each builds its bagpipes model once (~3 s).
    zmin, zmax
        Redshift range (0 < zmin < zmax ≤ 0.3).
    flux_limit
        SDSS main-sample limit (Petrosian r) applied when drawing mass and redshift; ``None``: none.
    progress
        Show a tqdm progress bar.

    Returns a :class:`MockSurvey`. Rerunning with the same configuration returns the files already
    there at once (``from_cache=True``); another configuration replaces them.
    """
    from ..._progress import tqdm

    n, seed = int(n), int(seed)
    if n < 1:
        raise ValueError("n must be at least 1")
    if not 0.0 < zmin < zmax <= 0.3:
        raise ValueError(f"need 0 < zmin < zmax <= 0.3, got zmin={zmin}, zmax={zmax}")
    cfg = MockConfig(n=n, seed=seed, vary=pop.check_vary(vary), zmin=float(zmin), zmax=float(zmax),
                     flux_limit=None if flux_limit is None else float(flux_limit))
    pop.check_pinned_z(pop.typical_values(cfg.vary), cfg.zmin, cfg.zmax)  # before any file is written
    digest = cfg.digest()
    out_dir = Path(out_dir)
    spectra_dir = out_dir / SPECTRA_DIR

    manifest = _read_manifest(out_dir)
    if manifest is not None and manifest.get("hash") == digest:
        cached = _cached_survey(out_dir, cfg, digest, manifest)
        if cached is not None:
            log.info("mock survey %s already in %s (%d spectra)", digest, out_dir, len(cached))
            return cached
    elif manifest is not None:
        log.warning("%s holds a mock with another configuration: replacing it", out_dir)
        _remove_previous(out_dir, manifest)
    elif spectra_dir.is_dir() and any(spectra_dir.glob("spec-*.fits")):
        raise FileExistsError(f"{spectra_dir} holds spectra that galvae mock did not make; choose another folder")

    t0 = time.perf_counter()
    spectra_dir.mkdir(parents=True, exist_ok=True)
    _write_manifest(out_dir, {"hash": digest, "config": cfg.fingerprint(), "complete": False})
    done = {r["index"] for r in _journal(out_dir) if r["index"] < n and (out_dir / r["filename"]).exists()}
    pending = [i for i in range(n) if i not in done]
    if done:
        log.info("resuming: %d of %d galaxies already made", len(done), n)

    workers = max(1, min(int(workers or os.cpu_count() or 1), max(len(pending), 1)))
    chunk_size = int(chunk_size or max(1, min(32, math.ceil(len(pending) / (workers * 8)))))
    chunks = [pending[i:i + chunk_size] for i in range(0, len(pending), chunk_size)]
    bar = tqdm(total=n, initial=len(done), unit="spec", desc="mock", disable=not progress)
    with open(out_dir / JOURNAL_NAME, "a") as journal:
        def on_rows(rows):
            journal.write("".join(json.dumps(row) + "\n" for row in rows))
            journal.flush()
            bar.update(len(rows))

        _run_pool(chunks, spectra_dir, cfg, workers, on_rows)
    bar.close()
    elapsed = time.perf_counter() - t0
    survey = _finish(out_dir, cfg, digest, workers, elapsed)
    log.info("mock survey %s: %d spectra made in %.1f s (%.1f /s, %d workers) in %s",
             digest, len(pending), elapsed, len(pending) / max(elapsed, 1e-9), workers, out_dir)
    return survey
