"""--cluster slurm end to end, on a fake SLURM: sbatch/scancel/squeue scripts that run each job locally.

dask-jobqueue writes a job script and calls ``sbatch <script>``; the fake sbatch starts it with bash in
its own session (so its process group holds the nanny and the worker) and prints the job id. The
workers are real dask workers that connect to the scheduler SLURMCluster starts in this process.
"""

import os
import signal
import sys
import time
from pathlib import Path

import dask
import numpy as np
import pytest

from galvae import _dask

SBATCH = """#!{python}
import os, shutil, subprocess, sys
state = {state!r}
n = 1
while True:  # dask-jobqueue submits jobs concurrently: claim an id atomically
    try:
        os.close(os.open(os.path.join(state, f"{{n}}.id"), os.O_CREAT | os.O_EXCL))
        break
    except FileExistsError:
        n += 1
job = os.path.join(state, str(n))
shutil.copy(sys.argv[-1] if len(sys.argv) > 1 else "/dev/stdin", job + ".sh")  # dask-jobqueue deletes its copy
with open(job + ".log", "w") as log:
    # No pipe inherited: dask-jobqueue waits for sbatch's stdout to close.
    proc = subprocess.Popen(["bash", job + ".sh"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True, env=dict(os.environ, SLURM_JOB_ID=str(n)))
with open(job + ".tmp", "w") as f:
    f.write(str(proc.pid))
os.replace(job + ".tmp", job + ".pid")  # the test's teardown reads only whole pid files
print(f"Submitted batch job {{n}}")
"""

SCANCEL = """#!{python}
import os, signal, sys
state = {state!r}
for job_id in sys.argv[1:]:
    try:
        os.killpg(int(open(os.path.join(state, job_id + ".pid")).read()), signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError):
        pass
"""

# dask-jobqueue 0.9 never calls squeue; this one lists the fake jobs for whoever looks.
SQUEUE = """#!{python}
import os
state = {state!r}
print("JOBID STATE")
for f in sorted(os.listdir(state)):
    if f.endswith(".pid"):
        print(f[:-4], "RUNNING")
"""


def _live_members(pgid: int) -> list[int]:
    """Processes of a process group that are not zombies (an unreaped zombie still answers kill 0)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


class FakeSlurm:
    def __init__(self, state: Path):
        self.state = state

    def jobs(self) -> dict[str, int]:
        """Job id -> process group of every job submitted so far."""
        return {p.stem: int(p.read_text()) for p in self.state.glob("*.pid")}

    def scripts(self) -> list[str]:
        return [p.read_text() for p in sorted(self.state.glob("*.sh"))]

    def logs(self) -> str:
        return "\n".join(f"--- job {p.stem}\n{p.read_text()}" for p in sorted(self.state.glob("*.log")))

    def kill_all(self) -> list[int]:
        """Kill every job's process group; the pids that survived a SIGKILL (should be none)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pgid in self.jobs().values():
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    pass
            for _ in range(100):  # a worker asked to stop takes a few seconds to close
                if not any(_live_members(g) for g in self.jobs().values()):
                    return []
                time.sleep(0.1)
        return [p for g in self.jobs().values() for p in _live_members(g)]


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    pytest.importorskip("dask_jobqueue")
    if not Path("/proc/self/stat").exists():
        pytest.skip("the fake SLURM tracks its jobs through /proc")
    state, bin_dir = tmp_path / "slurm", tmp_path / "bin"
    state.mkdir()
    bin_dir.mkdir()
    for name, text in (("sbatch", SBATCH), ("scancel", SCANCEL), ("squeue", SQUEUE)):
        exe = bin_dir / name
        exe.write_text(text.format(python=sys.executable, state=str(state)))
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    slurm = FakeSlurm(state)
    # Whatever ~/.config/dask/jobqueue.yaml says on this machine, galvae's defaults apply here.
    unset = {f"jobqueue.slurm.{k}": None for k in ("cores", "memory", "processes", "job-mem", "job-cpu",
                                                   "python", "log-directory", "queue", "account")}
    with dask.config.set({**unset, "jobqueue.slurm.job-extra-directives": [],
                          "jobqueue.slurm.scheduler-options": {"dashboard_address": ":0"}}):
        yield slurm
    assert slurm.kill_all() == [], "fake SLURM jobs survived SIGKILL"


def _slurm_client(slurm: FakeSlurm, jobs: int, n_workers: int | None = None):
    """make_client(cluster='slurm'), once its workers have joined (the timeout only guards against a hang)."""
    client = _dask.make_client(cluster="slurm", workers=jobs)
    try:
        client.wait_for_workers(n_workers or jobs, timeout=120)
    except TimeoutError:
        _dask.close_client(client)
        pytest.fail(f"the fake SLURM workers did not join:\n{slurm.logs()}")
    return client


def test_run_tasks_on_slurm_workers(fake_slurm):
    def work(i, scale):
        return i, float(np.sum(np.arange(i + 1) * scale)), os.getpgid(0)

    args = [(i, 0.5) for i in range(12)]
    client = _slurm_client(fake_slurm, 2)
    try:
        on_slurm = _dask.run_tasks(client, work, args, "slurm", progress=False)
    finally:
        _dask.close_client(client)
    in_process = _dask.run_tasks(None, work, args, "sync", progress=False)

    assert sorted(r[:2] for r in on_slurm) == sorted(r[:2] for r in in_process)
    jobs = fake_slurm.jobs()
    assert len(jobs) == 2
    assert {r[2] for r in on_slurm} <= set(jobs.values())  # every task ran inside a fake SLURM job
    for script in fake_slurm.scripts():
        assert "#SBATCH --cpus-per-task=1" in script
        assert "#SBATCH --mem=4G" in script  # make_client's slurm_memory="4GB", in SLURM's units
        assert "--nthreads 1" in script and "--nworkers 1" not in script  # one single-threaded worker a job
        assert "--no-dashboard" in script  # a worker's dashboard would listen on every interface of its node


def test_slurm_scheduler_listens_where_the_nodes_reach_it_and_its_dashboard_on_loopback(fake_slurm):
    psutil = pytest.importorskip("psutil")
    client = _slurm_client(fake_slurm, 1)
    try:
        scheduler = client.cluster.scheduler
        ports = {c.laddr.port: c.laddr.ip for c in psutil.Process().net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN}
        host = _dask.slurm_scheduler_options({})["host"]
        assert ports[scheduler.port] == host and not host.startswith("127.")
        assert ports[scheduler.http_server.port] == "127.0.0.1"
    finally:
        _dask.close_client(client)


def test_prepare_on_slurm_gives_the_same_dataset(fake_slurm, small_mock, tmp_path):
    from galvae.prepare import PrepareConfig, open_dataset, prepare_dataset

    cfg = PrepareConfig(n_pix=400, files_per_task=7, rows_per_chunk=16)  # several tasks in every pass
    prepare_dataset(small_mock.paths, tmp_path / "sync.zarr", catalog=small_mock.catalog_path, config=cfg,
                    scheduler="sync", progress=False)
    prepare_dataset(small_mock.paths, tmp_path / "slurm.zarr", catalog=small_mock.catalog_path, config=cfg,
                    cluster="slurm", workers=2, progress=False)

    assert len(fake_slurm.jobs()) == 2, fake_slurm.logs()
    a, b = open_dataset(tmp_path / "sync.zarr"), open_dataset(tmp_path / "slurm.zarr")
    assert list(a.ids) == list(b.ids)
    for k in ("wave", "flux", "ivar", "filled", "norm", "split"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)


def test_jobqueue_config_wins_over_galvae_defaults(fake_slurm):
    settings = {"jobqueue.slurm.queue": "debug", "jobqueue.slurm.account": "astro42",
                "jobqueue.slurm.walltime": "02:00:00", "jobqueue.slurm.memory": "2GB", "jobqueue.slurm.cores": 2,
                "jobqueue.slurm.job-extra-directives": ["--constraint=cpu"]}
    with dask.config.set(settings):  # read again as each job is built: keep the whole run inside
        client = _slurm_client(fake_slurm, 1, n_workers=2)
        nthreads = client.nthreads()
        _dask.close_client(client)
    assert sorted(nthreads.values()) == [1, 1]  # one job of 2 cores: two single-threaded workers
    (script,) = fake_slurm.scripts()
    for line in ("-p debug", "-A astro42", "-t 02:00:00", "--mem=2G", "--cpus-per-task=2", "--constraint=cpu"):
        assert f"#SBATCH {line}\n" in script


def test_missing_dask_jobqueue_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with pytest.raises(ImportError, match=r'pip install "galvae\[cluster\]"'):
        _dask.make_client(cluster="slurm", workers=1)
