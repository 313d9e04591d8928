"""The Dask plumbing every fanned-out stage shares (docs/design.md §5): make a client, run tasks on it.

``scheduler='sync'`` runs tasks in this process (no Dask, for tests and debugging); an address joins a
running scheduler; ``cluster='slurm'`` starts workers through dask-jobqueue; otherwise a local cluster
of single-threaded worker processes is started.

Every server galvae starts listens on the loopback interface unless told otherwise
(:func:`set_listen_address`, ``--listen`` on the command line, ``listen:`` in a run config): on a shared
login node nobody else may connect to the scheduler or read task names and paths off the dashboard.
With ``--cluster slurm`` the scheduler has to be reachable from the compute nodes, so it binds one
interface of this machine; the dashboard stays on the listen address (docs/cluster_safety.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_listen = LOOPBACK  # where the scheduler, workers and dashboards of clusters started from now on bind


def set_listen_address(host: str | None) -> None:
    """Bind the Dask servers galvae starts to ``host`` (an address or an interface's address); None:
    back to the loopback default. '0.0.0.0' opens them to every machine that can reach this one."""
    global _listen
    host = (host or LOOPBACK).strip()
    if not host or "/" in host or " " in host:
        raise ValueError(f"--listen takes a host address such as 127.0.0.1 or 10.0.0.5, got {host!r}")
    _listen = host


def listen_address() -> str:
    """The address set by :func:`set_listen_address` (127.0.0.1 unless changed)."""
    return _listen


def _bracketed(host: str) -> str:
    """An address ready to take ':port' (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def quiet_distributed() -> None:
    """Silence distributed's INFO chatter, which drowns the progress bar."""
    logging.getLogger("distributed").setLevel(logging.WARNING)
    logging.getLogger("distributed.nanny").setLevel(logging.ERROR)  # "still alive after 4 s, killing" at close


def make_client(scheduler: str | None = None, cluster: str | None = None, workers: int | None = None,
                slurm_memory: str = "4GB"):
    """A ``distributed.Client``, or None for ``scheduler='sync'``.

    ``workers``: local worker processes (default: one per core) or SLURM jobs (default 4).
    ``slurm_memory``: memory per SLURM job unless dask's ``jobqueue.slurm.memory`` config sets it.
    """
    if scheduler == "sync":
        return None
    from distributed import Client, LocalCluster

    quiet_distributed()
    if scheduler:
        return Client(scheduler)
    if cluster == "slurm":
        client = Client(_slurm_cluster(workers or 4, slurm_memory))
        log.info("Dask scheduler %s, dashboard %s", client.scheduler.address, client.dashboard_link)
        return client
    if cluster not in (None, "local"):
        raise ValueError(f"cluster must be None, 'local' or 'slurm', got {cluster!r}")
    n = workers or os.cpu_count() or 1
    # host binds the scheduler, the nannies and the workers; port 0 is any free port (with None,
    # distributed still takes 8787 and warns when another cluster holds it), on the same address
    client = Client(LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host=_listen,
                                 dashboard_address=f"{_bracketed(_listen)}:0", silence_logs=logging.WARNING))
    log.info("Dask dashboard: %s", client.dashboard_link)
    return client


def _slurm_cluster(jobs: int, memory: str):
    """``jobs`` SLURM jobs; queue, account, walltime etc. come from dask's ``jobqueue.slurm`` config.

    galvae's defaults (one single-threaded worker per core, ``memory`` per job) only fill what that
    config leaves unset: a keyword passed to SLURMCluster would override the user's config.
    """
    import dask

    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as exc:
        raise ImportError('--cluster slurm needs dask-jobqueue: pip install "galvae[cluster]"') from exc
    conf = dask.config.get("jobqueue.slurm", default={}) or {}
    cores = conf.get("cores") or 1
    defaults = {"cores": cores, "memory": memory, "processes": cores}  # single-threaded workers, as locally
    kwargs = {k: v for k, v in defaults.items() if conf.get(k) is None}
    extra = list(conf.get("worker-extra-args") or [])
    if not any("dashboard" in str(a) for a in extra):  # a node's worker dashboard listens on all its interfaces
        extra.append("--no-dashboard")
    slurm = SLURMCluster(scheduler_options=slurm_scheduler_options(conf), worker_extra_args=extra, **kwargs)
    slurm.scale(jobs=jobs)
    return slurm


def slurm_scheduler_options(conf: dict) -> dict:
    """Where the scheduler of a SLURM cluster listens: reachable from the nodes, its dashboard not.

    The nodes' workers connect to the scheduler, so it cannot stay on loopback: it binds the host or
    interface that dask's ``jobqueue.slurm`` config names, else a non-loopback ``--listen`` address, else
    the address this machine's name resolves to (one interface, never all of them). The dashboard binds
    the listen address (loopback by default: reach it with ``ssh -L``); a config that gives it only a
    port (':8787') gets that port on the listen address, one that names a host keeps it.
    """
    options = dict(conf.get("scheduler-options") or {})
    if "host" not in options and "interface" not in options and not conf.get("interface"):
        options["host"] = _listen if not _is_loopback(_listen) else _this_machine_address()
    dashboard = str(options.get("dashboard_address", ":0"))
    if dashboard.startswith(":") or dashboard.isdigit():  # a port alone: put it on the listen address
        options["dashboard_address"] = f"{_bracketed(_listen)}:{dashboard.lstrip(':')}"
    return options


def _is_loopback(host: str) -> bool:
    return host.startswith("127.") or host in ("localhost", "::1", "[::1]")


def _this_machine_address() -> str:
    """The address other machines reach this one by: its name's, else the one its default route leaves from."""
    import socket

    try:
        address = socket.gethostbyname(socket.getfqdn())
    except OSError:
        address = LOOPBACK
    if _is_loopback(address):  # a name mapped to 127.0.1.1 (Debian's /etc/hosts)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect(("10.255.255.255", 1))  # UDP: picks a route, sends nothing
                address = s.getsockname()[0]
            except OSError:
                pass
    if _is_loopback(address):
        raise ValueError("--cluster slurm: cannot tell which address the compute nodes reach this machine by; "
                         "give it with --listen ADDRESS (or jobqueue.slurm.interface in dask's config)")
    return address


def close_client(client) -> None:
    """Close a client and the cluster it started (if it started one)."""
    if client is None:
        return
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def run_tasks(client, fn: Callable, args_list: Iterable[tuple], desc: str, progress: bool,
              on_result: Callable | None = None, on_error: Callable | None = None) -> list:
    """Run ``fn(*args)`` for each args tuple; results in completion order.

    ``on_result(args, result)`` is called as each task finishes (in this process). With ``on_error``
    a task that raises (or whose worker dies) gives ``on_error(args, exc)``'s value instead of
    stopping the run.
    """
    from ._progress import tqdm

    args_list = list(args_list)
    results = []

    def handle(args, call):
        try:
            value = call()
        except Exception as exc:
            if on_error is None:
                raise
            value = on_error(args, exc)
        if on_result is not None:
            on_result(args, value)
        results.append(value)

    with tqdm(total=len(args_list), desc=desc, unit="task", disable=not progress) as bar:
        if client is None:
            for args in args_list:
                handle(args, lambda a=args: fn(*a))
                bar.update()
        else:
            from distributed import as_completed

            futures = {client.submit(fn, *args, pure=False): args for args in args_list}
            for fut in as_completed(futures):
                handle(futures[fut], fut.result)
                bar.update()
    return results
