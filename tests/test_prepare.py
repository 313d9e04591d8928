"""galvae prepare end to end: real SDSS files, a mock survey, bad inputs, interruption and resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from astropy.io import fits
import numpy as np
import pytest

from galvae.prepare import PrepareConfig, open_dataset, prepare_dataset, read_rejects
from galvae.prepare.dataset import split_of

from conftest import write_spec_file

SMALL = dict(files_per_task=7, rows_per_chunk=16)


def _arrays(path):
    d = open_dataset(path)
    return d, {k: getattr(d, k) for k in ("wave", "flux", "ivar", "filled", "norm", "split")}


def test_real_files(sdss_dir, tmp_path):
    result = prepare_dataset(sdss_dir, tmp_path / "real.zarr", scheduler="sync", progress=False)
    assert result.n_files == 30 and result.n_kept == 11
    d = open_dataset(tmp_path / "real.zarr")
    assert d.flux.shape == (11, 4000) and d.wave[0] == pytest.approx(3400) and d.wave[-1] == pytest.approx(8400)
    assert np.isfinite(d.flux).all() and np.isfinite(d.ivar).all()
    # filled pixels never carry weight; every good pixel does
    assert not (d.ivar[d.filled] != 0).any() and (d.ivar[~d.filled] > 0).all()
    # 3400–3455 Å is never observed by SDSS-I/II at z < 0.1: filled in every spectrum
    assert d.filled[:, d.wave < 3440].all()
    # normalised: median of good pixels in 5300–5800 Å is 1
    win = (d.wave >= 5300) & (d.wave <= 5800)
    med = [np.median(f[win][~m[win]]) for f, m in zip(d.flux, d.filled)]
    np.testing.assert_allclose(med, 1.0, rtol=1e-5)
    rejects = read_rejects(tmp_path / "real.zarr")
    reasons = dict(zip([Path(p).name for p in rejects["path"]], rejects["reason"]))
    assert len(reasons) == 19
    assert reasons["spec-0269-51581-0003.fits"].startswith("no good pixel")
    assert reasons["spec-3586-55181-0003.fits"].startswith("redshift flagged")
    assert reasons["spec-0853-52374-0240.fits"].startswith("not a galaxy")
    assert reasons["spec-0266-51630-0174.fits"].startswith("too many bad pixels")
    counts = d.attrs["counts"]
    assert counts["kept"] == 11 and counts["rejected"] == 19
    assert counts["rejects_by_reason"] == {"not a galaxy": 9, "redshift out of range": 7, "no good pixel": 1,
                                           "redshift flagged": 1, "too many bad pixels": 1}


def test_bad_inputs_are_rejected_and_nothing_else_is_lost(tmp_path, sdss_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    good = [write_spec_file(folder / f"spec-1234-56789-{f:04d}.fits", fiber=f, z=0.02 + 0.001 * f, seed=f)
            for f in range(1, 9)]
    (folder / "spec-0001-00001-0001.fits").write_text("not fits")
    raw = good[0].read_bytes()
    (folder / "spec-0001-00001-0002.fits").write_bytes(raw[: len(raw) // 3])
    write_spec_file(folder / "spec-1234-56789-0100.fits", fiber=100, z=float("nan"))
    (folder / "spec-0269-51581-0003.fits").write_bytes((sdss_dir / "spec-0269-51581-0003.fits").read_bytes())
    # a corrupt wavelength once stopped the whole chunk in the rebinning
    with fits.open(good[1]) as hdul:
        hdul["COADD"].data["loglam"][2000] = np.nan
        hdul["SPECOBJ"].data["FIBERID"][0] = 101
        hdul.writeto(folder / "spec-1234-56789-0101.fits")
    result = prepare_dataset(folder, tmp_path / "d.zarr", scheduler="sync", progress=False,
                             config=PrepareConfig(n_pix=500, wave_min=3700, wave_max=7000, **SMALL))
    assert result.n_kept == 8
    d = open_dataset(tmp_path / "d.zarr")
    assert sorted(d.ids) == sorted(f"1234-56789-{f:04d}" for f in range(1, 9))
    assert result.rejects_by_reason == {"not a FITS file": 1, "truncated": 1, "no redshift": 1, "no good pixel": 1,
                                        "non-finite wavelength": 1}


@pytest.fixture(scope="module")
def mock_dataset(small_mock, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "mock.zarr"
    prepare_dataset(small_mock.paths, out, catalog=small_mock.catalog_path, scheduler="sync", progress=False,
                    config=PrepareConfig(**SMALL), keep_staging=False)
    return out


def test_mock_dataset_matches_its_catalogue(small_mock, mock_dataset):
    d = open_dataset(mock_dataset)
    assert d.attrs["catalog_match"]["matched"] == len(d) and d.attrs["catalog_match"]["unmatched"] == 0
    truth = {row["id"]: row for row in small_mock.truth}
    for row in d.props[:10]:
        assert row["z"] == pytest.approx(truth[row["id"]]["z"], abs=1e-4)
    assert np.isfinite(d.props["logmstar"]).mean() > 0.9
    assert np.allclose(d.props["logssfr"], d.props["logsfr"] - d.props["logmstar"], equal_nan=True)


def test_local_dask_cluster_gives_the_same_dataset(small_mock, mock_dataset, tmp_path):
    out = tmp_path / "dask.zarr"
    prepare_dataset(small_mock.paths, out, catalog=small_mock.catalog_path, workers=2, progress=False,
                    config=PrepareConfig(**SMALL))
    _, a = _arrays(mock_dataset)
    _, b = _arrays(out)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_rerun_finds_the_dataset_and_rewrites_nothing(small_mock, mock_dataset):
    files = [f for f in Path(mock_dataset).rglob("*") if f.is_file()]
    before = {f: f.stat().st_mtime_ns for f in files}
    result = prepare_dataset(small_mock.paths, mock_dataset, catalog=small_mock.catalog_path, scheduler="sync",
                             progress=False, config=PrepareConfig(**SMALL))
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert not (Path(mock_dataset) / ".staging").exists()
    assert result.n_kept == len(open_dataset(mock_dataset))


_SLOW_RUN = """
import sys, time
from galvae.prepare import pipeline, PrepareConfig
slow = getattr(pipeline, sys.argv[1])
def slowed(*args):
    out = slow(*args)
    time.sleep(0.4)  # room for the test to kill this process between two tasks' writes
    return out
setattr(pipeline, sys.argv[1], slowed)
paths = sys.argv[4:]
pipeline.prepare_dataset(paths, sys.argv[2], catalog=sys.argv[3], scheduler="sync", progress=False,
                         config=PrepareConfig(files_per_task=7, rows_per_chunk=16))
"""


@pytest.mark.parametrize("stage, marker", [("stage_chunk", "chunk-*.npz"), ("fill_block", "block-*.done")])
def test_killed_run_resumes_to_the_same_dataset(small_mock, mock_dataset, tmp_path, stage, marker):
    out = tmp_path / "killed.zarr"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_RUN, stage, str(out), str(small_mock.catalog_path),
                             *map(str, small_mock.paths)])
    staging = out / ".staging"
    deadline = time.time() + 60
    while len(list(staging.glob(marker))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in staging.glob(marker)}
    assert 2 <= len(done_before) < (9 if stage == "stage_chunk" else 4)
    assert not (out / "zarr.json").exists() or "complete" not in (out / "zarr.json").read_text()
    with pytest.raises(ValueError, match="unfinished"):
        open_dataset(out)
    prepare_dataset(small_mock.paths, out, catalog=small_mock.catalog_path, scheduler="sync", progress=False,
                    config=PrepareConfig(**SMALL), keep_staging=True)
    # finished tasks were not redone: their files are the ones the killed run wrote, untouched since
    assert {name: (staging / name).stat().st_mtime_ns for name in done_before} == done_before
    _, a = _arrays(mock_dataset)
    _, b = _arrays(out)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_split_is_stable_when_the_survey_grows():
    ids = [f"{p:04d}-55555-{f:04d}" for p in range(300, 320) for f in range(1, 101)]
    full = split_of(ids)
    part = split_of(ids[::3])
    np.testing.assert_array_equal(full[::3], part)
    frac = np.bincount(full, minlength=3) / len(ids)
    np.testing.assert_allclose(frac, [0.8, 0.1, 0.1], atol=0.02)
    with pytest.raises(ValueError):
        split_of(ids, (0.5, 0.5, 0.5))


# ------------------------------------------------------------------ regressions (review of prepare)

TINY = {"n_pix": 500, "wave_min": 3700, "wave_max": 7000, "n_components": 2, "n_iter": 2}


def _tiny_survey(folder, fibers=(1, 2, 3)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_spec_file(folder / f"spec-1234-56789-{f:04d}.fits", fiber=f, z=0.02 + 0.001 * f, seed=f)
            for f in fibers]


def test_out_is_replaced_only_when_it_is_a_galvae_dataset(tmp_path):
    inputs = _tiny_survey(tmp_path / "in")
    cfg = PrepareConfig(**TINY)
    foreign = tmp_path / "results"
    (foreign / "model").mkdir(parents=True)
    (foreign / "notes.txt").write_text("months of work")
    with pytest.raises(ValueError, match=r"results: the folder is not empty and is not a galvae dataset"):
        prepare_dataset(tmp_path / "in", foreign, config=cfg, scheduler="sync", progress=False)
    assert (foreign / "notes.txt").read_text() == "months of work" and (foreign / "model").is_dir()
    # an output folder that is, or holds, the inputs: refused, inputs untouched
    for out in (tmp_path / "in", tmp_path):
        with pytest.raises(ValueError, match="holds input spectra"):
            prepare_dataset(tmp_path / "in", out, config=cfg, scheduler="sync", progress=False)
    with pytest.raises(ValueError, match="one of the input spectra"):
        prepare_dataset(inputs, inputs[0], config=cfg, scheduler="sync", progress=False)
    assert all(p.exists() for p in inputs)
    # an empty folder is used; our own dataset is replaced when the configuration changes
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    assert prepare_dataset(tmp_path / "in", empty, config=cfg, scheduler="sync", progress=False).n_kept == 3
    other = PrepareConfig(**{**TINY, "n_pix": 400})
    prepare_dataset(tmp_path / "in", empty, config=other, scheduler="sync", progress=False)
    assert open_dataset(empty).flux.shape == (3, 400)


def test_a_changed_catalogue_makes_the_dataset_stale(tmp_path):
    from astropy.table import Table

    _tiny_survey(tmp_path / "in")
    cfg = PrepareConfig(**TINY)
    ids = ["1234-56789-0001", "1234-56789-0002", "1234-56789-0003"]
    out = tmp_path / "table.zarr"
    for logm in ([9.0, 9.5, 10.0], [11.0, 11.5, 12.0]):
        prepare_dataset(tmp_path / "in", out, catalog=Table({"id": ids, "logmstar": logm}), config=cfg,
                        scheduler="sync", progress=False)
        assert list(open_dataset(out).props["logmstar"]) == logm
    # a catalogue file edited in place, same path
    cat, out = tmp_path / "cat.fits", tmp_path / "file.zarr"
    for logm in ([9.0, 9.5, 10.0], [11.0, 11.5, 12.0]):
        Table({"id": ids, "logmstar": logm}).write(cat, overwrite=True)
        prepare_dataset(tmp_path / "in", out, catalog=str(cat), config=cfg, scheduler="sync", progress=False)
        assert list(open_dataset(out).props["logmstar"]) == logm
    # the same content again: up to date, nothing rewritten
    stamp = (out / "zarr.json").stat().st_mtime_ns
    prepare_dataset(tmp_path / "in", out, catalog=str(cat), config=cfg, scheduler="sync", progress=False)
    assert (out / "zarr.json").stat().st_mtime_ns == stamp


def test_catalogue_integers_stay_exact_and_unknown_where_unmatched(tmp_path):
    from galvae.sources.catalogs import read_gswlc

    _tiny_survey(tmp_path / "in")
    big = 1237648720693755918  # > 2**53: float64 would make it ...904
    line = "{objid} -99 1234 56789 {fiber} 146.7 -0.76 0.02 1.2 10.1 0.05 -0.5 0.1 1.0 0.2 0.5 0.1 0.4 0.1 {flag} 1 3 1 1"
    (tmp_path / "gswlc.dat").write_text(line.format(objid=big, fiber=1, flag=2) + "\n"
                                        + line.format(objid=big + 1, fiber=2, flag=0) + "\n")  # fiber 3: no row
    out = tmp_path / "d.zarr"
    prepare_dataset(tmp_path / "in", out, catalog=read_gswlc(tmp_path / "gswlc.dat"), config=PrepareConfig(**TINY),
                    scheduler="sync", progress=False)
    props = open_dataset(out).props
    assert list(props["id"]) == ["1234-56789-0001", "1234-56789-0002", "1234-56789-0003"]
    assert list(props["objid"]) == [str(big), str(big + 1), ""]
    assert list(props["glxid"]) == ["-99", "-99", ""]
    np.testing.assert_array_equal(props["flag_sed"], [2.0, 0.0, np.nan])
    np.testing.assert_array_equal(props["flag_uv"], [3.0, 3.0, np.nan])


def test_duplicate_ids_keep_the_first_path_and_reject_the_rest(tmp_path):
    first = _tiny_survey(tmp_path / "in" / "a", fibers=(1, 2))
    copy = tmp_path / "in" / "b" / first[0].name
    copy.parent.mkdir()
    copy.write_bytes(first[0].read_bytes())
    _tiny_survey(tmp_path / "in" / "c", fibers=(3, 4))
    out = tmp_path / "d.zarr"
    # two files per task: the copy sits in another chunk than the file it repeats
    result = prepare_dataset(tmp_path / "in", out, config=PrepareConfig(**TINY, files_per_task=2),
                             scheduler="sync", progress=False)
    assert result.n_kept == 4 and result.rejects_by_reason == {"duplicate id": 1}
    d = open_dataset(out)
    assert sorted(d.ids) == [f"1234-56789-{f:04d}" for f in (1, 2, 3, 4)]
    rejects = read_rejects(out)
    assert list(rejects["path"]) == [str(copy)] and list(rejects["id"]) == ["1234-56789-0001"]
    assert list(rejects["reason"]) == [f"duplicate id (first: {first[0]})"]


def test_a_single_usable_spectrum_is_a_clear_error(tmp_path):
    _tiny_survey(tmp_path / "in", fibers=(1,))
    write_spec_file(tmp_path / "in" / "spec-1234-56789-0002.fits", fiber=2, spec_class="QSO")
    with pytest.raises(ValueError, match="only 1 spectrum of 2 passed the selection.*at least 2 spectra"):
        prepare_dataset(tmp_path / "in", tmp_path / "d.zarr", config=PrepareConfig(**TINY), scheduler="sync",
                        progress=False)


# --- the fill: basis from the training split, unobserved columns from each spectrum itself --------------

def _stage(staging, ids, flux, ivar):
    from galvae.prepare.pipeline import chunk_path

    staging.mkdir(parents=True, exist_ok=True)
    np.savez(chunk_path(staging, 0), id=np.asarray(ids), flux=flux.astype(np.float32), ivar=ivar.astype(np.float32))


def test_fill_basis_sees_only_training_spectra(tmp_path):
    from galvae.prepare.pipeline import fit_basis

    ids = np.array([f"g{i}" for i in range(400)])
    split = split_of(ids)
    rng = np.random.default_rng(0)
    flux = 1.0 + 0.1 * rng.standard_normal((400, 60))
    flux[split != 0] += 50.0  # validation and test spectra: far from the training ones
    _stage(tmp_path, ids, flux, np.ones_like(flux))
    fit_basis(tmp_path, [400], PrepareConfig(n_pix=60, n_components=3, n_iter=2))
    with np.load(tmp_path / "basis.npz") as z:
        assert str(z["fitted_on"]) == "train" and int(z["n_spectra"]) == (split == 0).sum()
        # no pixel is bad, so the mean is that of the rows it was fitted on: the training ones
        np.testing.assert_allclose(z["mean"], flux[split == 0].mean(axis=0), rtol=1e-5)


def test_rarely_observed_columns_leave_the_basis_and_each_spectrum_keeps_its_own_edge(tmp_path):
    from galvae.prepare.gappy_pca import fill_with_basis
    from galvae.prepare.pipeline import extend_into_unobserved, fit_basis, unobserved_ranges

    n, p = 300, 80
    ids = np.array([f"g{i}" for i in range(n)])
    rng = np.random.default_rng(1)
    level = rng.uniform(0.5, 2.0, n)                       # each spectrum its own continuum level
    flux = level[:, None] * (1.0 + 0.01 * rng.standard_normal((n, p)))
    ivar = np.ones_like(flux)
    ivar[:, :10] = 0.0                                     # columns 0–9: observed by no spectrum
    ivar[:, 10:14] = 0.0
    ivar[np.flatnonzero(split_of(ids) == 0)[:1], 10:14] = 1.0  # 10–13: by one training spectrum (< 1 %)
    _stage(tmp_path, ids, flux, ivar)
    fit_basis(tmp_path, [n], PrepareConfig(n_pix=p, n_components=3, n_iter=3))
    with np.load(tmp_path / "basis.npz") as z:
        basis, mean = z["basis"], z["mean"]
    assert unobserved_ranges(basis, mean) == [[0, 14]]
    good = ivar > 0
    filled = extend_into_unobserved(fill_with_basis(flux, good, basis, mean))
    assert np.isfinite(filled).all()
    edge = np.median(filled[:, 14:29], axis=1)             # each row's 15 described values next to the gap
    others = ~good[:, 10]                                  # (the observer's gap ends at column 10)
    np.testing.assert_allclose(filled[others, 0], edge[others])
    assert np.corrcoef(filled[:, 0], level)[0, 1] > 0.99   # derived from the spectrum, not one constant
    observer = good[:, 10]
    np.testing.assert_array_equal(filled[observer, 10:14], flux[observer, 10:14])  # its own data stay


def test_extend_fills_a_gap_inside_a_row_from_both_sides():
    from galvae.prepare.pipeline import extend_into_unobserved

    row = np.array([[1.0, 1.0, np.nan, np.nan, np.nan, np.nan, 3.0, 3.0], [np.nan] * 8])
    out = extend_into_unobserved(row, edge_pixels=2)
    np.testing.assert_array_equal(out[0], [1, 1, 1, 1, 3, 3, 3, 3])
    np.testing.assert_array_equal(out[1], np.zeros(8))


def test_dataset_records_the_unobserved_columns(mock_dataset):
    d = open_dataset(mock_dataset)
    fill = d.attrs["fill"]
    assert fill["basis_fitted_on"].startswith(("train", "all"))
    mask = d.unobserved
    assert mask[0] and fill["unobserved_columns"][0][0] == 0  # the blue end: no z < 0.1 spectrum reaches 3400 Å
    first = fill["unobserved_columns"][0][1]
    assert d.filled[:, 0].all()
    # each spectrum holds its own level there: as many distinct values as spectra, not one constant
    assert len(np.unique(np.round(d.flux[:, 0], 6))) > 0.9 * len(d)
    whole = d.filled[:, :first].all(axis=1)
    np.testing.assert_allclose(d.flux[whole, 0], np.median(d.flux[whole, first:first + 15], axis=1), rtol=1e-6)
