"""galvae.sources.download against a fault-injecting HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import logging

import json
import random
from pathlib import Path

import numpy as np
import pytest
from astropy.table import MaskedColumn, Table

from galvae.sources import download as dl
from galvae.sources.download import (CatalogError, DownloadTally, Target, download_from_catalog,
                                     download_spectra, select_targets, spectrum_url, target_path)
from galvae.sources.sdss import read_spectrum
from sdss_server import FaultyServer, make_spec_bytes, sas_path

SHARED_SDSS = Path(__file__).resolve().parents[2] / "shared" / "data" / "sdss"
if not SHARED_SDSS.is_dir():
    SHARED_SDSS = Path("/work/shared/data/sdss")

FAST = dict(retries=2, backoff=0.01, timeout=1.0, workers=6, progress=False)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """urllib honours *_proxy variables; requests to 127.0.0.1 must go straight to the test server."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _target_of(name: str) -> Target:
    plate, mjd, fiber = (int(x) for x in name[len("spec-"):-len(".fits")].split("-"))
    return Target(plate, mjd, fiber)


def _server_path(t: Target) -> str:
    """Where the default DR17 rules put a target on the server (written out, not computed by galvae)."""
    if t.plate >= 3500:
        return sas_path(t.plate, t.mjd, t.fiber, survey="eboss", run2d="v5_13_2")
    return sas_path(t.plate, t.mjd, t.fiber)


def _real_spectra() -> dict[Target, bytes]:
    if not SHARED_SDSS.is_dir():
        pytest.skip(f"{SHARED_SDSS} is absent")
    return {_target_of(p.name): p.read_bytes() for p in sorted(SHARED_SDSS.glob("spec-*.fits"))}


def _generated_spectra() -> dict[Target, bytes]:
    keys = [(266, 51602, f) for f in (1, 3, 5, 7, 9, 11, 13, 15, 17, 19)] + [
        (1045, 52725, 628), (3586, 55181, 3), (7338, 56660, 733), (7338, 56660, 734)]
    return {Target(*k): make_spec_bytes(*k, seed=i) for i, k in enumerate(keys)}


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------------
# The fault-injection run
# --------------------------------------------------------------------------------------------------

ROLES = ["500", "drop", "drop-tail", "reset", "slow", "404", "notfits", "500-always", "403", "wrong-file",
         "present", "corrupt-on-disk"]


def _scenario(spectra: dict[Target, bytes], out: Path):
    """Server files, fault scripts and expectations: the first len(ROLES) targets get one fault each."""
    targets = list(spectra)
    role = dict(zip(targets, ROLES))  # the remaining targets are served plainly
    files, faults = {}, {}
    for t in targets:
        path = _server_path(t)
        if role.get(t) != "404":
            files[path] = spectra[t]
        # drop-tail cuts the last 100 bytes: the reader cannot tell, only the length check can.
        scripts = {"500": ["500"], "drop": ["drop"], "drop-tail": ["drop:100"], "reset": ["reset"], "slow": ["slow:5"],
                   "notfits": ["notfits*"], "500-always": ["500*"], "403": ["403"]}
        if role.get(t) in scripts:
            faults[path] = scripts[role[t]]
    wrong = next(t for t in targets if t not in role)
    files[_server_path(next(t for t in targets if role.get(t) == "wrong-file"))] = spectra[wrong]

    present = next(t for t in targets if role.get(t) == "present")
    target_path(present, out).parent.mkdir(parents=True)
    target_path(present, out).write_bytes(spectra[present])
    corrupt = next(t for t in targets if role.get(t) == "corrupt-on-disk")
    target_path(corrupt, out).parent.mkdir(parents=True, exist_ok=True)
    target_path(corrupt, out).write_bytes(spectra[corrupt][:1000])  # an old, cut-off copy
    stale = target_path(targets[0], out).with_name(targets[0].file_name + ".part-deadbeef")
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"left by a killed run")
    return targets, role, files, faults


EXPECTED_REQUESTS = {"500": 2, "drop": 2, "drop-tail": 2, "reset": 2, "slow": 2, "404": 1, "notfits": 2,
                     "500-always": 3, "403": 1, "wrong-file": 2, "present": 0, "corrupt-on-disk": 1}
FAILED_ROLES = ("notfits", "500-always", "403", "wrong-file")


@pytest.fixture(params=["real", "generated"])
def spectra(request) -> dict[Target, bytes]:
    return _real_spectra() if request.param == "real" else _generated_spectra()


def test_fault_injection_run_then_resume(spectra, tmp_path):
    out = tmp_path / "spectra"
    targets, role, files, faults = _scenario(spectra, out)
    good = [t for t in targets if role.get(t) not in ("404", *FAILED_ROLES)]

    with FaultyServer(files, faults) as server:
        tally = download_spectra(targets, out, base_url=server.base_url, **FAST)
        first_requests = {t: server.requests[_server_path(t)] for t in targets}

        # The tally, outcome by outcome.
        assert tally.already_present == 1
        assert tally.downloaded == len(good) - 1
        assert tally.missing == [(next(t.id for t in targets if role.get(t) == "404"), "HTTP 404 Not Found")]
        reasons = dict(tally.failed)
        assert sorted(reasons) == sorted(t.id for t in targets if role.get(t) in FAILED_ROLES)
        by_role = {role[t]: reasons[t.id] for t in targets if role.get(t) in FAILED_ROLES}
        assert by_role["notfits"].startswith("invalid file: not a FITS file")
        assert by_role["500-always"] == "HTTP 500 Internal Server Error (gave up after 3 attempts)"
        assert by_role["403"] == "HTTP 403 Forbidden"
        assert "holds spectrum" in by_role["wrong-file"]
        assert tally.retries == 1 + 1 + 1 + 1 + 1 + 1 + 2 + 1  # 500, 2 drops, reset, slow, notfits, 500×2, wrong
        assert tally.total == len(targets)
        assert tally.exit_status() == 1

        # Requests per path: retried for 5xx, drops and timeouts; not for 404 or 403; none for the file we had.
        expected = {t: EXPECTED_REQUESTS.get(role.get(t), 1) for t in targets}
        assert first_requests == expected

        # Nothing partial anywhere; every good file in place, byte-identical and readable.
        assert [p for p in _files_under(out) if ".part" in p.name] == []
        for t in good:
            path = target_path(t, out)
            assert path.read_bytes() == spectra[t], t.id
            assert read_spectrum(path).id == t.id
        for t in targets:
            if t not in good:
                assert not target_path(t, out).exists(), t.id
        assert len(_files_under(out)) == len(good)

        # Second run: the good files are already present and are not fetched again.
        server.set_faults(faults)
        again = download_spectra(targets, out, base_url=server.base_url, **FAST)
        assert (again.downloaded, again.already_present) == (0, len(good))
        assert len(again.missing) == 1 and sorted(dict(again.failed)) == sorted(reasons)
        assert all(server.requests[_server_path(t)] == 0 for t in good)
        assert server.requests[_server_path(next(t for t in targets if role.get(t) == "403"))] == 1
        assert [p for p in _files_under(out) if ".part" in p.name] == []


def test_clean_run_is_concurrent_shows_progress_and_exits_zero(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="galvae.progress")
    spectra = _generated_spectra()
    files = {_server_path(t): b for t, b in spectra.items()}
    with FaultyServer(files, {p: ["delay:0.2"] for p in files}) as server:
        tally = download_spectra(list(spectra), tmp_path, base_url=server.base_url,
                                 **{**FAST, "workers": 4, "progress": True})
        assert 2 <= server.max_in_flight <= 4
    assert (tally.downloaded, tally.failed, tally.missing, tally.retries) == (len(spectra), [], [], 0)
    assert tally.exit_status() == 0
    # off a terminal (as here) the progress is one line when the stage ends, not a redrawn bar
    lines = [r.getMessage() for r in caplog.records if r.name == "galvae.progress"]
    assert len(lines) == 1 and f"{len(spectra)}/{len(spectra)}" in lines[0] and "download" in lines[0]
    # BOSS plates (≥ 3500) went to the eboss/v5_13_2 tree: they were served only there.
    assert target_path(Target(7338, 56660, 733), tmp_path).is_file()


def test_one_worker_fetches_one_at_a_time(tmp_path):
    spectra = dict(list(_generated_spectra().items())[:4])
    files = {_server_path(t): b for t, b in spectra.items()}
    with FaultyServer(files, {p: ["delay:0.05"] for p in files}) as server:
        tally = download_spectra(list(spectra), tmp_path, base_url=server.base_url, **{**FAST, "workers": 1})
        assert server.max_in_flight == 1
    assert tally.downloaded == 4


def test_only_404s_is_exit_one_but_some_404s_is_exit_zero(tmp_path):
    spectra = dict(list(_generated_spectra().items())[:3])
    targets = list(spectra)
    with FaultyServer({}) as server:
        nothing = download_spectra(targets, tmp_path / "a", base_url=server.base_url, **FAST)
    assert [r for _, r in nothing.missing] == ["HTTP 404 Not Found"] * 3
    assert nothing.exit_status() == 1  # everything 404: a wrong base URL or release, not a success
    with FaultyServer({_server_path(targets[0]): spectra[targets[0]]}) as server:
        some = download_spectra(targets, tmp_path / "b", base_url=server.base_url, **FAST)
        assert server.requests[_server_path(targets[1])] == 1  # a 404 is never retried
    assert (some.downloaded, len(some.missing), some.exit_status(), some.exit_status(strict=True)) == (1, 2, 0, 1)


def test_duplicate_targets_are_fetched_once(tmp_path):
    t, data = next(iter(_generated_spectra().items()))
    with FaultyServer({_server_path(t): data}) as server:
        tally = download_spectra([t, t, t], tmp_path, base_url=server.base_url, **FAST)
        assert server.requests[_server_path(t)] == 1
    assert tally.total == 1 and tally.downloaded == 1


def test_unreachable_server_fails_after_retries(tmp_path):
    with FaultyServer({}) as server:
        base = server.base_url  # the port is closed once the server has stopped
    tally = download_spectra([Target(266, 51602, 1)], tmp_path, base_url=base, **{**FAST, "retries": 1})
    [(tid, reason)] = tally.failed
    assert tid == "0266-51602-0001"
    assert reason.startswith("connection failed") and reason.endswith("(gave up after 2 attempts)")
    assert tally.retries == 1 and _files_under(tmp_path) == []


@pytest.mark.parametrize("kwargs", [dict(workers=0), dict(retries=-1), dict(timeout=0),
                                    dict(base_url="ftp://example.org/sas"), dict(backoff=-1)])
def test_bad_arguments_raise_value_error(tmp_path, kwargs):
    with pytest.raises(ValueError):
        download_spectra([Target(266, 51602, 1)], tmp_path, **{**FAST, **kwargs})


# --------------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------------

def test_urls_follow_the_dr17_layout_and_era_rule():
    base = "https://data.sdss.org/sas"
    assert spectrum_url(Target(266, 51602, 1)) == (
        f"{base}/dr17/sdss/spectro/redux/26/spectra/lite/0266/spec-0266-51602-0001.fits")
    assert spectrum_url(Target(3499, 55000, 1)).startswith(f"{base}/dr17/sdss/spectro/redux/26/")
    assert spectrum_url(Target(3500, 55181, 3)) == (
        f"{base}/dr17/eboss/spectro/redux/v5_13_2/spectra/lite/3500/spec-3500-55181-0003.fits")


def test_catalogue_survey_and_run2d_win_and_overrides_apply():
    segue = Target(2887, 54521, 1, run2d="104", survey="segue2")
    assert "/dr17/sdss/spectro/redux/104/spectra/lite/2887/" in spectrum_url(segue)
    assert "/eboss/spectro/redux/v5_13_2/" in spectrum_url(Target(1000, 52000, 1, survey="eboss"))
    assert "/sdss/spectro/redux/26/" in spectrum_url(Target(3600, 55000, 1, survey="SDSS"))
    assert spectrum_url(Target(266, 51602, 1), base_url="http://mirror/sas/", release="dr16",
                        run2d_sdss="26b") == (
        "http://mirror/sas/dr16/sdss/spectro/redux/26b/spectra/lite/0266/spec-0266-51602-0001.fits")
    assert "/dr12/boss/spectro/redux/v5_7_0/" in spectrum_url(
        Target(4000, 55500, 1), release="dr12", run2d_boss="v5_7_0", survey_boss="boss")
    assert target_path(Target(266, 51602, 1), "/x") == Path("/x/0266/spec-0266-51602-0001.fits")


# --------------------------------------------------------------------------------------------------
# Target selection
# --------------------------------------------------------------------------------------------------

def _specobj_like_table() -> Table:
    rows = [  # plate, mjd, fiber, z, class, zwarning, run2d, survey
        (266, 51602, 1, 0.05, "GALAXY", 0, "26", "sdss"),     # kept
        (266, 51602, 2, 0.05, "QSO", 0, "26", "sdss"),        # not a galaxy
        (266, 51602, 3, 0.20, "GALAXY", 0, "26", "sdss"),     # z ≥ zmax
        (266, 51602, 4, 0.00, "GALAXY", 0, "26", "sdss"),     # z = 0
        (266, 51602, 5, np.nan, "GALAXY", 0, "26", "sdss"),   # no z
        (266, 51602, 6, 0.05, "GALAXY", 4, "26", "sdss"),     # zwarning
        (266, 51602, 1, 0.05, "GALAXY", 0, "26", "sdss"),     # duplicate of the first
        (266, 51602, 7, 0.05, "galaxy ", 0, "", ""),          # kept: case and padding do not matter
        (7338, 56660, 733, 0.09, "GALAXY", 0, "v5_13_2", "eboss"),  # kept
        (266, 51602, 8, 0.05, "GALAXY", 4, "26", "sdss"),     # zwarning …
        (266, 51602, 8, 0.05, "GALAXY", 0, "26", "sdss"),     # … but this row of the same spectrum is kept
        (0, 51602, 9, 0.05, "GALAXY", 0, "26", "sdss"),       # plate 0
    ]
    return Table(rows=rows, names=("PLATE", "MJD", "FIBERID", "Z", "CLASS", "ZWARNING", "RUN2D", "SURVEY"))


def test_select_targets_filters_counts_and_keeps_catalogue_order():
    targets = select_targets(_specobj_like_table(), zmax=0.1)
    assert [t.id for t in targets] == ["0266-51602-0001", "0266-51602-0007", "7338-56660-0733",
                                       "0266-51602-0008"]
    assert targets[2] == Target(7338, 56660, 733, run2d="v5_13_2", survey="eboss")
    assert targets[1].run2d == "" and targets[1].survey == ""
    assert targets.counts == {"rows": 12, "bad_id": 1, "not_galaxy": 1, "bad_redshift": 3, "zwarning": 2,
                              "duplicates": 1, "selected": 4}
    assert targets[0].file_name == "spec-0266-51602-0001.fits"


def test_select_targets_handles_masked_values_and_missing_optional_columns():
    t = Table({"plate": MaskedColumn([266, 266, 266], mask=[False, True, False]),
               "mjd": [51602, 51602, 51602], "fiber": [1, 2, 3],
               "z": MaskedColumn([0.05, 0.05, 0.05], mask=[False, False, True])})
    targets = select_targets(t, zmax=0.1)
    assert [x.id for x in targets] == ["0266-51602-0001"]
    assert targets.counts["bad_id"] == 1 and targets.counts["bad_redshift"] == 1
    assert targets.counts["not_galaxy"] == 0 and targets.counts["zwarning"] == 0


def test_select_targets_rejects_a_table_without_keys():
    with pytest.raises(CatalogError, match="fiber"):
        select_targets(Table({"plate": [266], "mjd": [51602], "z": [0.05]}))
    with pytest.raises(ValueError):
        select_targets(_specobj_like_table(), zmax=0)


# --------------------------------------------------------------------------------------------------
# From a catalogue file (needs galvae.sources.catalogs.read_catalog)
# --------------------------------------------------------------------------------------------------

def _write_gswlc(path: Path, rows: list[tuple[int, int, int, float]]) -> Path:
    """A GSWLC-2 table: 24 whitespace-separated columns, −99 for missing."""
    lines = []
    for i, (plate, mjd, fiber, z) in enumerate(rows):
        cols = [1237648720693755918 + i, 1000 + i, plate, mjd, fiber, 150.1 + i, 2.2, z, 1.1,
                10.5, 0.05, 0.3, 0.1, 1.2, 0.2, 0.6, 0.1, 0.5, 0.1, 0, 1, 1, 5, 1]
        lines.append(" ".join(str(c) for c in cols))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_download_from_catalog_end_to_end(tmp_path):
    spectra = _generated_spectra()
    keys = list(spectra)[:4]
    catalog = _write_gswlc(tmp_path / "GSWLC-X2.dat", [(t.plate, t.mjd, t.fiber, 0.05) for t in keys]
                           + [(266, 51602, 99, 0.25)])  # beyond zmax: never requested
    files = {_server_path(t): spectra[t] for t in keys}
    with FaultyServer(files) as server:
        tally = download_from_catalog(catalog, tmp_path / "out", zmax=0.1, limit=3,
                                      base_url=server.base_url, **FAST)
        assert sum(server.requests.values()) == 3
    assert tally.downloaded == 3 and tally.exit_status() == 0
    assert tally.selection["rows"] == 5 and tally.selection["bad_redshift"] == 1
    assert tally.selection["selected"] == 4 and tally.selection["after_limit"] == 3
    assert sorted(p.name for p in _files_under(tmp_path / "out")) == sorted(t.file_name for t in keys[:3])


def test_unreadable_catalogue_is_a_catalog_error(tmp_path):
    with pytest.raises(CatalogError):
        download_from_catalog(tmp_path / "no-such-file.dat", tmp_path / "out")
    with pytest.raises(ValueError):
        download_from_catalog(tmp_path / "no-such-file.dat", tmp_path / "out", limit=-1)


# --------------------------------------------------------------------------------------------------
# The tally and the backoff
# --------------------------------------------------------------------------------------------------

def test_tally_summary_dict_and_exit_status():
    tally = DownloadTally(downloaded=3, already_present=2, missing=[("0266-51602-0004", "HTTP 404 Not Found")],
                          failed=[], retries=4, elapsed=1.234)
    assert tally.summary() == ("6 targets: 3 downloaded, 2 already present, 1 missing (404), 0 failed; "
                               "4 retries; 1.2 s")
    assert str(tally) == tally.summary()
    d = json.loads(json.dumps(tally.as_dict()))
    assert d["downloaded"] == 3 and d["missing"] == 1 and d["failed"] == 0 and d["elapsed_s"] == 1.234
    assert d["missing_ids"] == [{"id": "0266-51602-0004", "reason": "HTTP 404 Not Found"}]
    assert tally.exit_status() == 0 and tally.exit_status(strict=True) == 1
    tally.failed.append(("0266-51602-0005", "HTTP 403 Forbidden"))
    assert tally.exit_status() == 1
    assert DownloadTally().exit_status() == 0  # nothing to do is not a failure


def test_backoff_grows_exponentially_with_bounded_jitter():
    random.seed(1)
    policy = dl._Policy(retries=10, backoff=0.5, timeout=1)
    for k in range(10):
        base = min(dl.MAX_BACKOFF_S, 0.5 * 2 ** k)
        delays = [dl._backoff_delay(policy, k) for _ in range(50)]
        assert all(0.5 * base <= d < 1.5 * base for d in delays)
        assert max(delays) - min(delays) > 0.1 * base  # jitter is really there
