"""Safe on a shared machine: loopback-only servers, one writer per folder, damage caught, full disks
and lost workers survived. Real processes, real files; the full disk is an injected ENOSPC."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from galvae import _dask, cli
from galvae._atomic import TMP_PREFIX, DiskFullError
from galvae._jsonio import DamagedFileError
from galvae.prepare import PrepareConfig, open_dataset, prepare_dataset
from galvae.prepare.dataset import DamagedStoreError, take_rows
from galvae.select.grid import TIMING_COLUMNS

from conftest import write_spec_file

TINY = PrepareConfig(n_pix=300, wave_min=3700, wave_max=7000, n_components=2, n_iter=2, rows_per_chunk=40)


def survey(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(1, n + 1):
        write_spec_file(folder / f"spec-1234-56789-{f:04d}.fits", fiber=f, z=0.02 + 0.0005 * f, seed=f)
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A real dataset.zarr of 120 spectra (3 chunks of 40 rows), prepared in this process."""
    root = tmp_path_factory.mktemp("safety")
    path = root / "dataset.zarr"
    prepare_dataset(survey(root / "in", 120), path, config=TINY, scheduler="sync", progress=False)
    return path


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(TMP_PREFIX)]


def galvae(*args, timeout=120) -> subprocess.CompletedProcess:
    """The real command line in its own process."""
    return subprocess.run([sys.executable, "-m", "galvae.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)


# ---- 1. loopback ------------------------------------------------------------------------------------

def listening(pids) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket of these processes."""
    psutil = pytest.importorskip("psutil")
    found = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found += [(pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


def test_a_local_cluster_listens_on_loopback_only():
    psutil = pytest.importorskip("psutil")
    client = _dask.make_client(workers=2)
    try:
        client.wait_for_workers(2, timeout=60)
        me = psutil.Process()
        sockets = listening([me.pid] + [p.pid for p in me.children(recursive=True)])
        info = client.scheduler_info()
        dashboard = client.cluster.scheduler.http_server.port
    finally:
        _dask.close_client(client)
    ports = {port for _, _, port in sockets}
    worker_ports = {int(a.rsplit(":", 1)[1]) for a in info["workers"]}
    # the scheduler, its dashboard, both workers (and their nannies) are among what was listed
    assert int(info["address"].rsplit(":", 1)[1]) in ports and dashboard in ports and worker_ports <= ports
    assert len(sockets) >= 6, sockets
    assert [s for s in sockets if s[1] not in ("127.0.0.1", "::1")] == []


def test_slurm_scheduler_is_reachable_by_the_nodes_and_its_dashboard_is_not():
    conf = {"scheduler-options": {"dashboard_address": ":8787"}}
    options = _dask.slurm_scheduler_options(conf)
    assert not options["host"].startswith("127.")  # one interface of this machine, which the nodes reach
    assert options["dashboard_address"] == "127.0.0.1:8787"  # a port alone goes on the listen address
    assert _dask.slurm_scheduler_options({})["dashboard_address"] == "127.0.0.1:0"
    # what dask's jobqueue config names wins: an interface, a host, a dashboard with its own host
    assert "host" not in _dask.slurm_scheduler_options({"interface": "ib0"})
    named = {"scheduler-options": {"host": "10.1.2.3", "dashboard_address": "0.0.0.0:8787"}}
    assert _dask.slurm_scheduler_options(named) == named["scheduler-options"]
    try:
        _dask.set_listen_address("10.9.8.7")
        assert _dask.slurm_scheduler_options({}) == {"host": "10.9.8.7", "dashboard_address": "10.9.8.7:0"}
    finally:
        _dask.set_listen_address(None)
    assert _dask.listen_address() == "127.0.0.1"


# ---- 2. one writer per folder --------------------------------------------------------------------

HOLD = """
import sys, time
from galvae._lock import acquire
acquire(sys.argv[1], "galvae select --out " + sys.argv[1])
print("held", flush=True)
time.sleep(300)
"""


def test_a_second_writer_stops_at_once_and_a_killed_writers_lock_is_taken_over(tmp_path):
    spectra = survey(tmp_path / "in", 3)
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        attempts = {
            "prepare": ("prepare", "--spectra", spectra, "--out", out, "--scheduler", "sync", "-q"),
            "train": ("train", "--data", tmp_path / "none.zarr", "--latent", 2, "--out", out),
            "select": ("select", "--data", tmp_path / "none.zarr", "--out", out),
            "run": ("run", "--data", tmp_path / "none.zarr", "--out", out),
            "inside": ("select", "--data", tmp_path / "none.zarr", "--out", out / "select"),
        }
        for name, args in attempts.items():
            t0 = time.perf_counter()
            proc = galvae(*args, timeout=60)
            assert proc.returncode == 2, (name, proc.stderr)
            assert time.perf_counter() - t0 < 20, name  # at once: before any work
            assert "in use by another galvae process" in proc.stderr, (name, proc.stderr)
            assert f"PID {holder.pid} on host {socket.gethostname()}, started 20" in proc.stderr, proc.stderr
        assert not out.exists()  # nobody wrote a thing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = tmp_path / ".out.galvae-lock"
    assert json.loads(lock.read_text())["pid"] == holder.pid  # the killed run's lock is still there

    proc = galvae("prepare", "--spectra", spectra, "--out", out, "--scheduler", "sync", "-q")
    assert proc.returncode == 0, proc.stderr
    assert f"taking over the lock of {out} left by PID {holder.pid}" in proc.stderr
    assert open_dataset(out).attrs["complete"] and not lock.exists()  # released when done


# ---- 3. damage caught ------------------------------------------------------------------------------

def flip_byte(path: Path, offset: int = 20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def silent_flip(chunk: Path) -> int:
    """An offset where a flipped byte still decompresses, to other numbers: damage only a checksum sees."""
    from numcodecs import Zstd

    body = chunk.read_bytes()[:-4]  # the CRC32C is a chunk's last 4 bytes
    good = bytes(Zstd().decode(body))
    for i in range(len(body) // 2, len(body)):
        flipped = bytearray(body)
        flipped[i] ^= 0xFF
        try:
            if bytes(Zstd().decode(bytes(flipped))) != good:
                return i
        except Exception:  # noqa: BLE001 - this flip breaks the compressed stream: try the next byte
            continue
    pytest.fail(f"no byte of {chunk} flips silently")


def test_a_flipped_byte_in_a_chunk_names_the_file_and_the_repair(dataset, tmp_path):
    import shutil

    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(dataset, damaged)
    chunk = damaged / "flux" / "c" / "1" / "0"  # rows 40-79
    flip_byte(chunk, silent_flip(chunk))
    data = open_dataset(damaged, load=False)
    assert take_rows(data.flux, np.arange(0, 40)).shape == (40, 300)  # the other chunks still read
    with pytest.raises(DamagedStoreError, match="galvae prepare") as err:
        take_rows(data.flux, np.arange(30, 60))
    assert str(chunk) in str(err.value) and "delete" in str(err.value)
    with pytest.raises(DamagedStoreError, match=str(chunk)):
        open_dataset(damaged, load=True)
    flip_byte(damaged / "norm" / "c" / "0")
    with pytest.raises(DamagedStoreError, match=str(damaged / "norm" / "c" / "0")):
        open_dataset(damaged, load=False)


def test_stores_written_without_checksums_still_read(dataset, tmp_path, monkeypatch):
    import zarr

    from galvae.prepare import dataset as ds

    assert any(c["name"] == "crc32c" for c in json.loads((dataset / "flux" / "zarr.json").read_text())["codecs"])
    monkeypatch.setattr(ds, "checksummed", lambda: {})  # as galvae wrote stores before checksums
    old = tmp_path / "old.zarr"
    prepare_dataset(survey(tmp_path / "in", 30), old, config=TINY, scheduler="sync", progress=False)
    assert all(c["name"] != "crc32c" for c in json.loads((old / "flux" / "zarr.json").read_text())["codecs"])
    monkeypatch.undo()
    a = open_dataset(old, load=False)
    assert np.array_equal(take_rows(a.flux, np.arange(len(a))), zarr.open_array(old / "flux")[...])


def test_a_truncated_checkpoint_names_the_file_and_a_rerun_trains_afresh(tmp_path):
    import torch

    from galvae.fit import CHECKPOINT, fit
    from galvae.models import load_weights, weights_path
    from galvae.prepare.synthetic import synthetic_dataset

    data = synthetic_dataset(300, 96, seed=3)
    fast = dict(latent_dim=2, epochs=4, batch_size=64, progress=False, seed=1)

    def stop(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(data, tmp_path / "m", callback=stop, **fast)
    ck = tmp_path / "m" / CHECKPOINT
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    with pytest.raises(DamagedFileError, match="Rerun the same command") as err:
        fit(data, tmp_path / "m", resume=True, **fast)
    assert str(ck) in str(err.value)
    fit(data, tmp_path / "m", resume=True, **fast)  # the rerun: trained from the start
    whole = fit(data, tmp_path / "whole", **fast)
    a, b = load_weights(weights_path(whole)), load_weights(weights_path(tmp_path / "m"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_damaged_cell_json_names_the_file_and_a_rerun_rescores_the_cell(dataset, tmp_path):
    from galvae.select import select_grid

    grid = dict(latent="1", conditions="none", seeds=1, epochs=2, scheduler="sync", progress=False, batch_size=32,
                needed=(), n_iwae=4)
    first = select_grid(dataset, tmp_path / "g", **grid)
    cell_json = tmp_path / "g" / "cells" / "d1_vae_s0" / "cell.json"
    cell_json.write_text(cell_json.read_text()[:40])
    with pytest.raises(DamagedFileError, match="Rerun `galvae select`") as err:
        select_grid(dataset, tmp_path / "g", **grid)
    assert str(cell_json) in str(err.value)
    again = select_grid(dataset, tmp_path / "g", **grid)
    keep = [c for c in first.table.colnames if c not in TIMING_COLUMNS]
    assert [tuple(r[c] for c in keep) for r in again.table] == [tuple(r[c] for c in keep) for r in first.table]


# ---- 4. full disk --------------------------------------------------------------------------------

def enospc_on_call(real, n: int, target: int = 0):
    """``real`` that writes part of its file (argument ``target``) and fails with ENOSPC on its n-th call,
    as a full disk does."""
    calls = {"n": 0}

    def writer(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            Path(args[target]).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[target]))
        return real(*args, **kwargs)
    return writer


def test_prepare_on_a_full_disk_stops_clearly_and_finishes_on_rerun(tmp_path, monkeypatch, capsys):
    out = tmp_path / "d.zarr"
    args = ["prepare", "--spectra", str(tmp_path / "in"), "--out", str(out), "--scheduler", "sync", "-q",
            "--n-pix", "300", "--wave-min", "3700", "--wave-max", "7000", "--components", "2", "--iterations", "2"]
    survey(tmp_path / "in", 40)
    monkeypatch.setattr(np, "savez", enospc_on_call(np.savez, 1))  # the first staged chunk
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "no space left on the device" in err and "chunk-00000.npz" in err and "rerun the same command" in err
    assert temp_files(tmp_path) == [] and not (out / ".staging" / "chunk-00000.npz").exists()
    with pytest.raises(ValueError, match="unfinished dataset"):
        open_dataset(out)
    monkeypatch.undo()  # space is back
    assert cli.main(args) == 0
    assert open_dataset(out).attrs["complete"] and temp_files(tmp_path) == []


def test_training_on_a_full_disk_stops_clearly_and_resumes_to_the_same_model(tmp_path, monkeypatch):
    import torch

    from galvae.fit import fit
    from galvae.models import load_weights, weights_path
    from galvae.prepare.synthetic import synthetic_dataset

    data = synthetic_dataset(300, 96, seed=3)
    fast = dict(latent_dim=2, epochs=4, batch_size=64, progress=False, seed=1)
    whole = fit(data, tmp_path / "whole", **fast)
    monkeypatch.setattr(torch, "save", enospc_on_call(torch.save, 3, target=1))  # the third epoch's checkpoint
    with pytest.raises(DiskFullError, match="no space left on the device") as err:
        fit(data, tmp_path / "m", **fast)
    assert "checkpoint.pt" in str(err.value)
    m = tmp_path / "m"
    assert temp_files(m) == [] and not (m / "metrics.json").exists()
    assert json.loads((m / "config.json").read_text())["status"] not in ("done", "early_stopped")
    monkeypatch.undo()
    fit(data, m, resume=True, **fast)
    a, b = load_weights(weights_path(whole)), load_weights(weights_path(m))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- 5. lost workers ------------------------------------------------------------------------------

@pytest.mark.slow  # two grids on a local cluster of 2 workers
def test_a_grid_survives_a_worker_killed_mid_cell(dataset, tmp_path):
    psutil = pytest.importorskip("psutil")
    from galvae.select import select_grid

    grid = dict(latent="1-2", conditions="none", seeds=2, epochs=12, patience=50, workers=2, progress=False,
                batch_size=16, needed=(), n_iwae=4)
    killed: list = []

    def kill_a_worker(cells: Path, stop: threading.Event):
        """At the first checkpoint (a cell mid-training), SIGKILL one worker process."""
        while not stop.is_set():
            training = [p.parent.name for p in cells.glob("*/checkpoint.pt")] if cells.exists() else []
            if training:
                # LocalCluster's nannies live in this process; each spawns its worker as a child
                workers = [w for w in psutil.Process().children() if "spawn_main" in " ".join(w.cmdline())]
                if workers:
                    os.kill(workers[0].pid, signal.SIGKILL)
                    killed.append((workers[0].pid, training))
                    return
            time.sleep(0.005)

    stop = threading.Event()
    killer = threading.Thread(target=kill_a_worker, args=(tmp_path / "hit" / "cells", stop), daemon=True)
    killer.start()
    try:
        hit = select_grid(dataset, tmp_path / "hit", **grid)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was killed mid-cell"
    assert not psutil.pid_exists(killed[0][0])
    undisturbed = select_grid(dataset, tmp_path / "calm", **grid)
    assert hit.n_done == 4 and hit.n_failed == 0
    keep = [c for c in hit.table.colnames if c not in TIMING_COLUMNS]
    assert [tuple(r[c] for c in keep) for r in hit.table] == [tuple(r[c] for c in keep) for r in undisturbed.table]
