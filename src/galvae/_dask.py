"""The Dask plumbing every fanned-out stage shares (docs/design.md §5): make a client, run tasks on it.

``scheduler='sync'`` runs tasks in this process (no Dask, for tests and debugging); an address joins a
running scheduler; ``cluster='slurm'`` starts workers through dask-jobqueue; otherwise a local cluster
of single-threaded worker processes is started.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)


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
        return Client(_slurm_cluster(workers or 4, slurm_memory))
    if cluster not in (None, "local"):
        raise ValueError(f"cluster must be None, 'local' or 'slurm', got {cluster!r}")
    n = workers or os.cpu_count() or 1
    # ":0" binds any free port: with None, distributed still takes 8787 and warns when another cluster holds it
    return Client(LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.WARNING))


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
    slurm = SLURMCluster(**{k: v for k, v in defaults.items() if conf.get(k) is None})
    slurm.scale(jobs=jobs)
    return slurm


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
