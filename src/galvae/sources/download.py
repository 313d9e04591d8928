"""Fetch SDSS spec-lite files from the Science Archive Server (SAS).

Rules this module follows (the CLI's ``galvae download`` is a thin wrapper):

**Targets.** :func:`select_targets` keeps catalogue rows that are galaxies (``class == GALAXY`` when the
column exists), have ``0 < z < zmax`` and ``zwarning == 0`` (when the column exists), and a valid
(plate, mjd, fiber). Each row is counted under the first rule it fails; of rows that pass, the first
one per (plate, mjd, fiber) is kept and later ones are counted as duplicates.

**URL.** ``{base}/{release}/{survey}/spectro/redux/{run2d}/spectra/lite/{plate:04d}/{file}``.
A spectrum's era is decided by the catalogue's ``survey`` column when it names one
(sdss, segue1, segue2 → SDSS-I/II; boss, eboss, sequels → BOSS/eBOSS), else by the plate number:
plates below :data:`FIRST_BOSS_PLATE` (3500) are SDSS-I/II. SDSS-I/II files live under survey
``sdss`` with run2d ``run2d_sdss`` (DR17: ``26``), BOSS/eBOSS files under ``survey_boss``
(DR17: ``eboss``) with ``run2d_boss`` (DR17: ``v5_13_2``). A non-empty ``run2d`` in the catalogue
wins over the era's default (SEGUE plates, for instance, are reduced with run2d 103/104).

**Layout.** ``out_dir/{plate:04d}/spec-{plate:04d}-{mjd:05d}-{fiber:04d}.fits``, as on the SAS: a
survey is 10⁵–10⁶ files, and one folder per plate keeps folders at ≤ 1000 files.
:func:`galvae.sources.sdss.find_spectrum_files` finds them recursively.

**Writes.** Each file is streamed to ``name.fits.part-<random>`` in its final folder, checked (length
against ``Content-Length``, then read by :func:`~galvae.sources.sdss.read_spectrum`, which must give
the target's own plate-mjd-fiber), and only then renamed into place with :func:`os.replace`. The
temporary file is removed on every failure; leftovers of a killed run are removed when the next run
starts (so two runs must not share ``out_dir`` at the same time). A file already in place that reads
as the right spectrum is skipped (*already present*); one that does not read is fetched again.

**Retries.** Timeouts, refused / reset / dropped connections, a body shorter than its
``Content-Length``, HTTP 5xx and the two transient 4xx (408, 429) are retried up to ``retries`` times
with exponential backoff ``backoff · 2^k`` (k = 0, 1, …) times a random factor in [0.5, 1.5) (jitter, so
that workers do not retry in lockstep), capped at :data:`MAX_BACKOFF_S`. HTTP 404 is recorded as
*missing* at once. Any other 4xx is *failed* at once. A complete body that is not a valid SDSS file
(or holds another spectrum) is retried **once** (a proxy's error page or a truncation the server did
not announce can be transient; a file broken on the server is not, so more tries would only waste
time), then *failed* with the reader's reason.

**Exit status** (:meth:`DownloadTally.exit_status`, used by the CLI): 0 when nothing failed — every
target is downloaded, already present, or missing (a 404 means SDSS has no such file, which is not a
fault of the run); 1 when any target failed, or when there were targets and none of them ended on
disk (everything missing usually means a wrong ``--base-url``, ``--release`` or run2d); 1 also when
``strict`` and anything is missing. Bad arguments and unreadable catalogues raise :class:`ValueError`
(:class:`CatalogError` for the latter), which the CLI maps to 2.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import random
import secrets
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .. import __version__
from .sdss import SpectrumReadError, read_spectrum, spectrum_id

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://data.sdss.org/sas"
DEFAULT_RELEASE = "dr17"
DEFAULT_RUN2D_SDSS = "26"
DEFAULT_RUN2D_BOSS = "v5_13_2"
DEFAULT_SURVEY_SDSS = "sdss"
DEFAULT_SURVEY_BOSS = "eboss"
FIRST_BOSS_PLATE = 3500
SDSS_SURVEYS = frozenset({"sdss", "segue", "segue1", "segue2"})
BOSS_SURVEYS = frozenset({"boss", "eboss", "sequels"})
RETRYABLE_4XX = frozenset({408, 429})
MAX_BACKOFF_S = 60.0
PART_MARKER = ".part-"
CHUNK_BYTES = 1 << 16
USER_AGENT = f"galvae/{__version__} (+python urllib)"


class CatalogError(ValueError):
    """A catalogue could not be read or lacks a column target selection needs."""


# --------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """One spectrum to fetch. ``run2d`` and ``survey`` come from the catalogue ("" when unknown)."""

    plate: int
    mjd: int
    fiber: int
    run2d: str = ""
    survey: str = ""

    @property
    def id(self) -> str:
        """``PPPP-MMMMM-FFFF``."""
        return spectrum_id(self.plate, self.mjd, self.fiber)

    @property
    def file_name(self) -> str:
        """``spec-PPPP-MMMMM-FFFF.fits``, the SAS file name."""
        return f"spec-{self.id}.fits"

    @property
    def is_boss(self) -> bool:
        """True for a BOSS/eBOSS spectrum: by the catalogue's survey when it names one, else the plate."""
        survey = self.survey.strip().lower()
        if survey in BOSS_SURVEYS:
            return True
        if survey in SDSS_SURVEYS:
            return False
        return self.plate >= FIRST_BOSS_PLATE


class TargetList(list):
    """A list of :class:`Target` with ``counts``: how many catalogue rows were kept and why others were not."""

    def __init__(self, targets: Iterable[Target] = (), counts: dict[str, int] | None = None):
        super().__init__(targets)
        self.counts = dict(counts or {})


def _columns_by_lower_name(table) -> dict[str, str]:
    """Lowercase name → column name; a specObj table's FIBERID stands in for fiber."""
    names = {name.lower(): name for name in table.colnames}
    if "fiber" not in names and "fiberid" in names:
        names["fiber"] = names["fiberid"]
    return names


def _column_values(table, names: dict[str, str], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, missing) of a column looked up case-insensitively; None when there is no such column."""
    if key not in names:
        return None
    col = table[names[key]]
    return np.asarray(np.ma.getdata(col)), np.asarray(np.ma.getmaskarray(col))


def _as_text(values: np.ndarray) -> np.ndarray:
    """Stripped str values (FITS tables give bytes or padded strings)."""
    return np.array([v.decode("ascii", "replace").strip() if isinstance(v, bytes) else str(v).strip()
                     for v in values], dtype=object)


def _finite_positive(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        numeric = values.astype(np.float64)
    return ~missing & np.isfinite(numeric) & (numeric > 0)


def _rule(table, names: dict[str, str], key: str, passes) -> np.ndarray:
    """Rows whose value of column ``key`` is present and ``passes``; all rows when there is no such column."""
    col = _column_values(table, names, key)
    if col is None:
        return np.ones(len(table), dtype=bool)
    values, missing = col
    return ~missing & passes(values)


def _is_galaxy(table, names: dict[str, str]) -> np.ndarray:
    """Rows whose class is GALAXY (any case, padding ignored); all rows when there is no class column."""
    return _rule(table, names, "class", lambda v: np.array([c.upper() == "GALAXY" for c in _as_text(v)], dtype=bool))


def _zwarning_ok(table, names: dict[str, str]) -> np.ndarray:
    """Rows with zwarning == 0; all rows when there is no zwarning column."""
    return _rule(table, names, "zwarning", lambda v: np.nan_to_num(v.astype(np.float64), nan=1.0) == 0)


def _redshift_in_range(z: np.ndarray, missing: np.ndarray, zmax: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        zf = z.astype(np.float64)
        return ~missing & np.isfinite(zf) & (zf > 0) & (zf < zmax)


def _text_or_blank(table, names: dict[str, str], key: str) -> list[str]:
    """A text column's stripped values, "" where masked; all "" when there is no such column."""
    col = _column_values(table, names, key)
    if col is None:
        return [""] * len(table)
    return ["" if m else v for v, m in zip(_as_text(col[0]), col[1])]


def select_targets(table, zmax: float = 0.1) -> TargetList:
    """Spectra to fetch from a catalogue table, in catalogue order, one per (plate, mjd, fiber).

    ``table`` is an astropy Table with columns plate, mjd, fiber, z (any case) and optionally class,
    zwarning, run2d, survey. The result's ``counts`` holds ``rows``, ``bad_id``, ``not_galaxy``,
    ``bad_redshift``, ``zwarning``, ``duplicates`` and ``selected``; each rejected row is counted
    under the first rule it fails, in that order.
    """
    if not zmax > 0:
        raise ValueError(f"zmax must be positive, got {zmax}")
    names = _columns_by_lower_name(table)
    lacking = [c for c in ("plate", "mjd", "fiber", "z") if c not in names]
    if lacking:
        raise CatalogError(f"catalogue lacks column(s) {', '.join(lacking)} "
                           f"(has {', '.join(table.colnames)})")
    (plate, plate_na), (mjd, mjd_na), (fiber, fiber_na), (z, z_na) = (
        _column_values(table, names, c) for c in ("plate", "mjd", "fiber", "z"))

    rules = {
        "bad_id": _finite_positive(plate, plate_na) & _finite_positive(mjd, mjd_na)
        & _finite_positive(fiber, fiber_na),
        "not_galaxy": _is_galaxy(table, names),
        "bad_redshift": _redshift_in_range(z, z_na, zmax),
        "zwarning": _zwarning_ok(table, names),
    }
    counts = {"rows": len(table)}
    remaining = np.ones(len(table), dtype=bool)
    for reason, keep in rules.items():  # each dropped row counted under the first rule it fails
        counts[reason] = int(np.count_nonzero(remaining & ~keep))
        remaining &= keep

    run2d, survey = _text_or_blank(table, names, "run2d"), _text_or_blank(table, names, "survey")
    targets, seen = [], set()
    for i in np.flatnonzero(remaining):
        key = (int(plate[i]), int(mjd[i]), int(fiber[i]))
        if key not in seen:
            seen.add(key)
            targets.append(Target(*key, run2d=run2d[i], survey=survey[i]))
    counts["duplicates"] = int(np.count_nonzero(remaining)) - len(targets)
    counts["selected"] = len(targets)
    log.info("target selection (0 < z < %g): %s", zmax, ", ".join(f"{k} {v}" for k, v in counts.items()))
    return TargetList(targets, counts)


def targets_from_catalog(path: str | os.PathLike, zmax: float = 0.1) -> TargetList:
    """:func:`select_targets` on a catalogue file read by :func:`galvae.sources.catalogs.read_catalog`.

    Raises :class:`CatalogError` when the file cannot be read.
    """
    from .catalogs import read_catalog  # the catalogue readers are only needed on this path

    try:
        table = read_catalog(path)
    except CatalogError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise CatalogError(f"cannot read catalogue {path}: {exc}") from exc
    targets = select_targets(table, zmax=zmax)
    targets.counts["unreadable_rows"] = int(table.meta.get("n_rejected", 0))  # skipped by the reader
    return targets


# --------------------------------------------------------------------------------------------------
# Where a target lives
# --------------------------------------------------------------------------------------------------

def spectrum_url(
    target: Target,
    base_url: str = DEFAULT_BASE_URL,
    release: str = DEFAULT_RELEASE,
    run2d_sdss: str = DEFAULT_RUN2D_SDSS,
    run2d_boss: str = DEFAULT_RUN2D_BOSS,
    survey_boss: str = DEFAULT_SURVEY_BOSS,
) -> str:
    """The SAS URL of a target's spec-lite file (see the module docstring for the era rule)."""
    if target.is_boss:
        survey, run2d = survey_boss, run2d_boss
    else:
        survey, run2d = DEFAULT_SURVEY_SDSS, run2d_sdss
    run2d = target.run2d or run2d
    return (f"{base_url.rstrip('/')}/{release}/{survey}/spectro/redux/{run2d}/spectra/lite/"
            f"{target.plate:04d}/{target.file_name}")


def target_path(target: Target, out_dir: str | os.PathLike) -> Path:
    """Where a target's file is written: ``out_dir/PPPP/spec-PPPP-MMMMM-FFFF.fits``."""
    return Path(out_dir) / f"{target.plate:04d}" / target.file_name


# --------------------------------------------------------------------------------------------------
# The tally
# --------------------------------------------------------------------------------------------------

@dataclass
class DownloadTally:
    """What a download run did. ``missing`` and ``failed`` list ``(id, reason)``; ``elapsed`` is in s.

    ``selection`` holds the target-selection counts when the run started from a catalogue.
    """

    downloaded: int = 0
    already_present: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    retries: int = 0
    elapsed: float = 0.0
    selection: dict[str, int] = field(default_factory=dict)  # TargetList.counts, when from a catalogue

    @property
    def total(self) -> int:
        """Targets accounted for."""
        return self.downloaded + self.already_present + len(self.missing) + len(self.failed)

    def exit_status(self, strict: bool = False) -> int:
        """0 if nothing failed (404s alone are fine unless ``strict``), else 1; also 1 if nothing is on disk."""
        on_disk = self.downloaded + self.already_present
        if self.failed or (strict and self.missing) or (self.total > 0 and on_disk == 0):
            return 1
        return 0

    def summary(self) -> str:
        """One line for people."""
        return (f"{self.total} targets: {self.downloaded} downloaded, {self.already_present} already present, "
                f"{len(self.missing)} missing (404), {len(self.failed)} failed; "
                f"{self.retries} retries; {self.elapsed:.1f} s")

    __str__ = summary

    def as_dict(self) -> dict:
        """Counts, the (id, reason) lists and timing, JSON-ready."""
        return {
            "total": self.total,
            "downloaded": self.downloaded,
            "already_present": self.already_present,
            "missing": len(self.missing),
            "failed": len(self.failed),
            "retries": self.retries,
            "elapsed_s": round(self.elapsed, 3),
            "missing_ids": [{"id": i, "reason": r} for i, r in self.missing],
            "failed_ids": [{"id": i, "reason": r} for i, r in self.failed],
            "selection": dict(self.selection),
        }


# --------------------------------------------------------------------------------------------------
# Fetching one file
# --------------------------------------------------------------------------------------------------

class _Missing(Exception):
    """HTTP 404: the archive has no such file."""


class _Fatal(Exception):
    """Not worth retrying: a 4xx other than 404/408/429, or a local write error."""


class _Transient(Exception):
    """Worth retrying: timeouts, dropped connections, short bodies, 5xx."""


class _Invalid(Exception):
    """A complete body that is not the expected SDSS spectrum (retried once)."""


@dataclass
class _Outcome:
    target: Target
    status: str  # downloaded | already_present | missing | failed
    reason: str = ""
    attempts: int = 0


@dataclass(frozen=True)
class _Policy:
    retries: int
    backoff: float
    timeout: float


def _reads_as(path: Path, target: Target) -> str | None:
    """Why ``path`` is not a readable file of ``target``'s spectrum (None when it is)."""
    try:
        spec = read_spectrum(path)
    except SpectrumReadError as exc:
        return exc.reason
    if spec.id != target.id:
        return f"file holds spectrum {spec.id}, not {target.id}"
    return None


def _copy_body(resp, fh) -> int:
    """Stream a response body into ``fh``; returns bytes written. Local write errors are fatal."""
    n = 0
    while chunk := resp.read(CHUNK_BYTES):
        try:
            fh.write(chunk)
        except OSError as exc:
            raise _Fatal(f"cannot write {fh.name}: {exc}") from None
        n += len(chunk)
    return n


def _fetch_to(url: str, tmp: Path, timeout: float) -> None:
    """GET ``url`` into ``tmp``; raises _Missing / _Fatal / _Transient on failure."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            expected = resp.headers.get("Content-Length")
            try:
                fh = open(tmp, "xb")
            except OSError as exc:
                raise _Fatal(f"cannot create {tmp}: {exc}") from None
            with fh:
                n = _copy_body(resp, fh)
    except urllib.error.HTTPError as exc:
        code, reason = exc.code, exc.reason
        exc.close()
        if code == 404:
            raise _Missing(f"HTTP 404 {reason}") from None
        if code >= 500 or code in RETRYABLE_4XX:
            raise _Transient(f"HTTP {code} {reason}") from None
        raise _Fatal(f"HTTP {code} {reason}") from None
    except TimeoutError:
        raise _Transient(f"timed out after {timeout:g} s") from None
    except urllib.error.URLError as exc:  # raised while connecting or sending the request
        if isinstance(exc.reason, TimeoutError):
            raise _Transient(f"timed out connecting after {timeout:g} s") from None
        raise _Transient(f"connection failed: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # reset, refused, incomplete read, bad status line
        raise _Transient(f"connection dropped: {type(exc).__name__}: {exc}") from None
    # http.client does not raise when a body ends early if it is read in chunks, so check the length here.
    if expected is not None and expected.isdigit() and n != int(expected):
        raise _Transient(f"incomplete body: {n} of {expected} bytes")


def _temp_path(path: Path) -> Path:
    return path.with_name(f"{path.name}{PART_MARKER}{secrets.token_hex(6)}")


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove temporary file %s: %s", path, exc)


def _backoff_delay(policy: _Policy, retry_number: int) -> float:
    """Seconds to wait before retry ``retry_number`` (0-based): exponential, with jitter."""
    return min(MAX_BACKOFF_S, policy.backoff * 2 ** retry_number) * random.uniform(0.5, 1.5)


def _attempt(target: Target, url: str, path: Path, timeout: float) -> None:
    """One GET → temporary file → validation → rename. The temporary file never outlives it."""
    tmp = _temp_path(path)
    try:
        _fetch_to(url, tmp, timeout)
        problem = _reads_as(tmp, target)
        if problem:
            raise _Invalid(problem)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise _Fatal(f"cannot move file into place at {path}: {exc}") from None
    finally:
        _remove_quietly(tmp)


def _download_one(target: Target, url: str, path: Path, policy: _Policy) -> _Outcome:
    """Fetch one target with the retry policy; never raises."""
    try:
        if path.exists():
            problem = _reads_as(path, target)
            if problem is None:
                return _Outcome(target, "already_present")
            log.info("%s: existing file is unusable (%s); fetching it again", target.id, problem)
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _Outcome(target, "failed", f"cannot prepare {path}: {exc}")

    invalid_retried = False
    for attempt in range(policy.retries + 1):
        try:
            _attempt(target, url, path, policy.timeout)
            return _Outcome(target, "downloaded", attempts=attempt + 1)
        except _Missing as exc:
            return _Outcome(target, "missing", str(exc), attempt + 1)
        except _Fatal as exc:
            return _Outcome(target, "failed", str(exc), attempt + 1)
        except _Invalid as exc:
            reason = f"invalid file: {exc}"
            if invalid_retried:
                return _Outcome(target, "failed", reason, attempt + 1)
            invalid_retried = True
        except _Transient as exc:
            reason = str(exc)
        except Exception as exc:  # a bug must cost one target, not the run; the reason names it
            log.exception("%s: unexpected error", target.id)
            return _Outcome(target, "failed", f"unexpected error: {type(exc).__name__}: {exc}", attempt + 1)
        if attempt < policy.retries:
            delay = _backoff_delay(policy, attempt)
            log.info("%s: %s; retry %d/%d in %.2f s", target.id, reason, attempt + 1, policy.retries, delay)
            time.sleep(delay)
    return _Outcome(target, "failed", f"{reason} (gave up after {policy.retries + 1} attempts)",
                    policy.retries + 1)


# --------------------------------------------------------------------------------------------------
# Many files
# --------------------------------------------------------------------------------------------------

def remove_partial_files(out_dir: str | os.PathLike) -> int:
    """Delete ``*.part-*`` files a killed run left in ``out_dir`` and its plate folders; returns how many."""
    root = Path(out_dir)
    if not root.is_dir():
        return 0
    removed = 0
    for folder in [root, *(p for p in root.iterdir() if p.is_dir())]:
        for entry in os.scandir(folder):
            if PART_MARKER in entry.name and entry.is_file(follow_symlinks=False):
                _remove_quietly(Path(entry.path))
                removed += 1
    if removed:
        log.info("removed %d partial file(s) left by an earlier run under %s", removed, root)
    return removed


def _unique_targets(targets: Iterable[Target]) -> list[Target]:
    """Targets in order, without repeats of the same spectrum (two writers must not race on one file)."""
    seen, unique = set(), []
    for t in targets:
        if t.id not in seen:
            seen.add(t.id)
            unique.append(t)
    return unique


def _bounded_map(pool: ThreadPoolExecutor, fn: Callable, items: list, window: int) -> Iterator:
    """Results of ``fn(item)`` as they complete, with at most ``window`` submitted at a time."""
    pending: set[Future] = set()
    queue = iter(items)
    for item in queue:
        pending.add(pool.submit(fn, item))
        if len(pending) >= window:
            break
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            yield fut.result()
            item = next(queue, _END)
            if item is not _END:
                pending.add(pool.submit(fn, item))


_END = object()


def _check_arguments(base_url: str, workers: int, retries: int, backoff: float, timeout: float) -> None:
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base URL must start with http:// or https://, got {base_url!r}")
    if int(workers) < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    if int(retries) < 0:
        raise ValueError(f"retries must be ≥ 0, got {retries}")
    if not backoff >= 0:
        raise ValueError(f"backoff must be ≥ 0 s, got {backoff}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 s, got {timeout}")


def _record(tally: DownloadTally, outcome: _Outcome) -> None:
    tally.retries += max(0, outcome.attempts - 1)
    tid = outcome.target.id
    if outcome.status == "downloaded":
        tally.downloaded += 1
    elif outcome.status == "already_present":
        tally.already_present += 1
    elif outcome.status == "missing":
        tally.missing.append((tid, outcome.reason))
        log.warning("%s: missing on the server (%s)", tid, outcome.reason)
    else:
        tally.failed.append((tid, outcome.reason))
        log.warning("%s: failed: %s", tid, outcome.reason)


def download_spectra(
    targets: Iterable[Target],
    out_dir: str | os.PathLike,
    base_url: str = DEFAULT_BASE_URL,
    release: str = DEFAULT_RELEASE,
    run2d_sdss: str = DEFAULT_RUN2D_SDSS,
    run2d_boss: str = DEFAULT_RUN2D_BOSS,
    workers: int = 8,
    retries: int = 5,
    backoff: float = 0.5,
    timeout: float = 60.0,
    progress: bool = True,
    survey_boss: str = DEFAULT_SURVEY_BOSS,
) -> DownloadTally:
    """Fetch the targets' spec-lite files into ``out_dir/PPPP/``; resumable, atomic, concurrent.

    ``workers`` threads fetch at once; ``retries`` is the number of retries after the first attempt of
    a transient failure, ``backoff`` the first delay (s), ``timeout`` the socket timeout (s) for the
    connection and each read. Raises :class:`ValueError` for bad arguments; every per-file problem
    ends in the returned tally instead (see the module docstring for the rules).
    """
    from .._progress import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    _check_arguments(base_url, workers, retries, backoff, timeout)
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_partial_files(out)
    todo = _unique_targets(targets)
    policy = _Policy(int(retries), float(backoff), float(timeout))

    def work(target: Target) -> _Outcome:
        url = spectrum_url(target, base_url, release, run2d_sdss, run2d_boss, survey_boss)
        return _download_one(target, url, target_path(target, out), policy)

    tally = DownloadTally()
    pool = ThreadPoolExecutor(max_workers=int(workers), thread_name_prefix="galvae-download")
    bar = tqdm(total=len(todo), unit="file", desc="download", disable=not progress)
    try:
        # Log lines go through tqdm.write so that they do not tear the bar.
        with logging_redirect_tqdm() if progress else contextlib.nullcontext():
            for outcome in _bounded_map(pool, work, todo, window=4 * int(workers)):
                _record(tally, outcome)
                bar.update(1)
                bar.set_postfix(new=tally.downloaded, had=tally.already_present,
                                missing=len(tally.missing), failed=len(tally.failed), refresh=False)
    finally:
        # On Ctrl-C: drop what has not started; running fetches finish (each bounded by the timeout).
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    tally.elapsed = time.perf_counter() - started
    log.info("download: %s", tally.summary())
    return tally


def download_from_catalog(
    catalog_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    zmax: float = 0.1,
    limit: int | None = None,
    **download_kwargs,
) -> DownloadTally:
    """Select targets from a catalogue file and download them (the ``galvae download`` verb).

    ``limit`` keeps the first N selected targets in catalogue order. ``download_kwargs`` go to
    :func:`download_spectra`. Raises :class:`CatalogError` / :class:`ValueError` for a bad catalogue or
    arguments (CLI exit status 2).
    """
    if limit is not None and int(limit) < 0:
        raise ValueError(f"limit must be ≥ 0, got {limit}")
    targets = targets_from_catalog(catalog_path, zmax=zmax)
    counts = dict(targets.counts)
    if limit is not None:
        targets = targets[: int(limit)]
        counts["after_limit"] = len(targets)
    tally = download_spectra(targets, out_dir, **download_kwargs)
    tally.selection = counts
    return tally
