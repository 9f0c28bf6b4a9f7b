"""Executors of the job graph: ``local`` (one job at a time in this process, or N worker processes) and ``slurm``
through ``submitit`` (one Slurm job per graph node, dependencies passed to Slurm).

Every executor takes the jobs in graph order and returns ``{job id: outcome}`` with outcome ``skipped`` (already
done), ``ran``, ``failed`` (its log path is ``job.log``) or ``blocked`` (a job it depends on failed). A failed job
never stops the jobs that do not depend on it.

* ``local``, ``workers=1``: one after another (features of a checkpoint just before the protocols that read them),
  in this process; a frozen protocol or fine-tune asking for G > 1 GPUs runs under ``torchrun`` on min(G, GPUs
  here) processes, the dense tasks start their own ``torchrun``. ``workers=N``: N processes (``python -m
  evaluate.orchestration.jobshell``), each job started once its dependencies ran; with N or more GPUs each process sees one
  (``CUDA_VISIBLE_DEVICES``) and runs single-GPU. Each process gets its share of the CPU cores as
  ``OMP_NUM_THREADS`` (:func:`worker_threads`; unless the caller set it): N processes with torch's default of every
  core each oversubscribe them, and two ShapesWorld UperNet runs on 2 cores took 15-20x longer per iteration that way.
* ``slurm``: ``submitit.AutoExecutor``; each job asks for its ``gpus`` on one node. Frozen protocols and fine-tuning
  run one task per GPU (data-parallel, :func:`evaluate.orchestration.jobshell.run_job_from_graph` joins the process group), dense
  tasks one task that launches ``torchrun`` over the GPUs, feature jobs and DAVIS one task on one GPU. On a real
  Slurm cluster every job is submitted at once with ``--dependency=afterok:<ids>`` and ``kill_on_invalid_dep``; with
  submitit's ``local`` or ``debug`` executors (tests, a workstation) a job is submitted once its dependencies
  finished. ``slurm_params`` go to ``update_parameters`` (``slurm_partition``, ``timeout_min``, ...). The Slurm id of
  each submitted job is kept in ``<out>/state/slurm/``: a rerun (after ``--no-wait``) waits for a job that is still
  queued or running instead of submitting it again (:func:`queued_job`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evaluate.orchestration.jobgraph import Graph, Job
from evaluate.orchestration.suite import FROZEN
from sslcore.errors import ConfigError
from sslcore.io import atomic_write_json

logger = logging.getLogger("sslbench")
FAILED = ("failed", "blocked")


def _to_run(job: Job, states: dict[str, str], force: bool) -> bool:
    return states.get(job.id) != "done" or (force and job.kind != "features")


def _blocked(job: Job, outcome: dict[str, str]) -> bool:
    return any(outcome.get(d) in FAILED for d in job.deps)


def _report(job: Job, result: str, seconds: float | None = None) -> None:
    if result == "failed":
        logger.error("FAILED %s (log: %s)", job.id, job.log)
    elif result == "blocked":
        logger.warning("blocked %s: a job it depends on failed", job.id)
    elif result == "ran":
        logger.info("done %s in %.1f s", job.id, seconds or 0.0)


def run_local(graph: Graph, states: dict[str, str], force: bool = False, workers: int = 1) -> dict[str, str]:
    """Run the graph on this machine (see the module docstring)."""
    if workers > 1:
        return _run_processes(graph, states, force, workers)
    from evaluate.orchestration.jobshell import run_job

    outcome: dict[str, str] = {}
    for job in graph.jobs:
        if not _to_run(job, states, force):
            outcome[job.id] = "skipped"
            continue
        if _blocked(job, outcome):
            outcome[job.id] = "blocked"
            _report(job, "blocked")
            continue
        started = time.time()
        nproc = _local_ranks(job)
        if nproc > 1:
            outcome[job.id] = "ran" if _torchrun(graph, job, nproc) == 0 else "failed"
        else:
            try:
                run_job(graph, job)
            except Exception:  # noqa: BLE001 - logged with its traceback into job.log; independent jobs go on
                outcome[job.id] = "failed"
            else:
                outcome[job.id] = "ran"
        _report(job, outcome[job.id], time.time() - started)
    return outcome


def _local_ranks(job: Job) -> int:
    """Processes for a job of the sequential local executor: a frozen protocol or a fine-tune asking for G > 1 GPUs
    runs as ``torchrun --nproc_per_node min(G, GPUs here)``; everything else in this process (the dense runner
    starts its own ``torchrun``)."""
    if job.kind not in FROZEN or job.gpus < 2:
        return 1
    return max(1, min(job.gpus, _gpu_count()))


def _worker_env(graph: Graph) -> dict[str, str]:
    env = {**os.environ, **graph.env}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_repo_root()), os.environ.get("PYTHONPATH")]))
    return env


def _torchrun(graph: Graph, job: Job, nproc: int) -> int:
    """Run one job on ``nproc`` local GPUs through ``torchrun`` (:mod:`evaluate.orchestration.jobshell` joins the group)."""
    graph_path = graph.save()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "evaluate.orchestration.jobshell", str(graph_path), job.id]
    logger.info("launching %s", " ".join(cmd))
    os.makedirs(os.path.dirname(job.log), exist_ok=True)
    with open(job.log + ".stderr", "ab") as err:
        return subprocess.run(cmd, env=_worker_env(graph), stdout=subprocess.DEVNULL, stderr=err).returncode


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


def worker_threads(workers: int, env: dict[str, str]) -> str:
    """``OMP_NUM_THREADS`` for each of ``workers`` processes: the caller's value when ``env`` has one, else the cores
    this process may run on divided among the workers (at least 1)."""
    if env.get("OMP_NUM_THREADS"):
        return env["OMP_NUM_THREADS"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return str(max(1, cores // max(1, workers)))


def _run_processes(graph: Graph, states: dict[str, str], force: bool, workers: int) -> dict[str, str]:
    graph_path = graph.save()
    outcome: dict[str, str] = {j.id: "skipped" for j in graph.jobs if not _to_run(j, states, force)}
    pending = [j for j in graph.jobs if j.id not in outcome]
    running: dict[int, tuple[Job, subprocess.Popen, float]] = {}
    gpus = _gpu_count()
    env = _worker_env(graph)
    env["OMP_NUM_THREADS"] = worker_threads(workers, env)
    while pending or running:
        for job in [j for j in pending if _blocked(j, outcome)]:
            outcome[job.id] = "blocked"
            _report(job, "blocked")
            pending.remove(job)
        free = [s for s in range(workers) if s not in running]
        ready = [j for j in pending if all(outcome.get(d) in ("ran", "skipped") for d in j.deps)]
        for slot, job in zip(free, ready):
            slot_env = dict(env)
            if gpus >= workers:
                slot_env["CUDA_VISIBLE_DEVICES"] = str(slot)
            os.makedirs(os.path.dirname(job.log), exist_ok=True)
            with open(job.log + ".stderr", "ab") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "evaluate.orchestration.jobshell", str(graph_path), job.id],
                    env=slot_env,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            running[slot] = (job, proc, time.time())
            pending.remove(job)
        for slot, (job, proc, started) in list(running.items()):
            if proc.poll() is not None:
                outcome[job.id] = "ran" if proc.returncode == 0 else "failed"
                _report(job, outcome[job.id], time.time() - started)
                del running[slot]
        if running:
            time.sleep(0.2)
        elif pending and not any(all(outcome.get(d) in ("ran", "skipped") for d in j.deps) for j in pending):
            for job in pending:  # unreachable (a cycle cannot happen: the graph lists dependencies first)
                outcome[job.id] = "blocked"
            pending = []
    return outcome


def _repo_root() -> Any:
    from sslcore.io import REPO_ROOT

    return REPO_ROOT


ACTIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")


def _slurm_marker(graph: Graph, job: Job) -> Path:
    return Path(graph.out) / "state" / "slurm" / f"{job.key}.json"


def queued_job(graph: Graph, job: Job, handle: Callable[[str], Any]) -> Any:
    """The Slurm job an earlier invocation submitted for ``job`` when it is still queued or running (so a rerun
    after ``--no-wait`` waits for it instead of submitting it twice), else None. ``handle``: Slurm job id -> a
    submitit job (its ``state`` asks ``sacct``)."""
    marker = _slurm_marker(graph, job)
    try:
        job_id = json.loads(marker.read_text())["slurm_job_id"]
    except (OSError, KeyError, json.JSONDecodeError):
        return None
    previous = handle(str(job_id))
    try:
        state = str(previous.state).split()[0].upper()
    except Exception:  # noqa: BLE001 - sacct unavailable: submit again rather than wait on an unknown job
        return None
    return previous if state in ACTIVE else None


def _tasks(job: Job) -> int:
    """Slurm tasks of a job: one per GPU for the data-parallel frozen protocols and fine-tuning, else one."""
    return job.gpus if job.kind in FROZEN else 1


def run_submitit(
    graph: Graph,
    states: dict[str, str],
    force: bool = False,
    cluster: str | None = "slurm",
    params: dict[str, Any] | None = None,
    wait: bool = True,
) -> dict[str, str]:
    """Run the graph through submitit (see the module docstring); ``cluster``: ``slurm``, ``local`` or ``debug``."""
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            "--executor slurm needs submitit (pip install 'sslbench[slurm]' or pip install submitit)"
        ) from None
    from evaluate.orchestration.jobshell import run_job_from_graph

    graph_path = str(graph.save())
    folder = os.path.join(graph.out, "submitit", "%j")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    slurm = executor.cluster == "slurm"
    outcome: dict[str, str] = {j.id: "skipped" for j in graph.jobs if not _to_run(j, states, force)}
    submitted: dict[str, Any] = {}

    def submit(job: Job, after: list[str]) -> None:
        extra = {"kill_on_invalid_dep": "yes"}
        if after:
            extra["dependency"] = "afterok:" + ":".join(after)
        tasks = _tasks(job)
        gpus = 1 if job.kind in ("features", "davis") else job.gpus
        executor.update_parameters(
            name=f"sslbench-{job.id}",
            nodes=1,
            tasks_per_node=tasks,
            gpus_per_node=gpus if slurm else 0,
            slurm_additional_parameters=extra,
            **(params or {}),
        )
        submitted[job.id] = executor.submit(run_job_from_graph, graph_path, job.id)
        logger.info("submitted %s as %s", job.id, submitted[job.id].job_id)

    def collect(job: Job) -> None:
        started = time.time()
        try:
            submitted[job.id].result()
        except Exception:  # noqa: BLE001 - the job's traceback is in job.log and in the submitit folder
            outcome[job.id] = "failed"
        else:
            outcome[job.id] = "ran"
        _report(job, outcome[job.id], time.time() - started)

    todo = [j for j in graph.jobs if j.id not in outcome]
    if slurm:
        for job in todo:
            previous = queued_job(graph, job, lambda job_id: submitit.SlurmJob(folder, job_id))
            if previous is not None:  # still queued or running from an earlier invocation (--no-wait)
                submitted[job.id] = previous
                logger.info("%s is already Slurm job %s (%s)", job.id, previous.job_id, previous.state)
                continue
            submit(job, [submitted[d].job_id for d in job.deps if d in submitted])
            atomic_write_json(_slurm_marker(graph, job), {"job": job.id, "slurm_job_id": submitted[job.id].job_id})
        if not wait:
            return {**outcome, **{j.id: "submitted" for j in todo}}
        for job in todo:
            if _blocked(job, outcome):
                outcome[job.id] = "blocked"  # Slurm cancels it (kill_on_invalid_dep)
                _report(job, "blocked")
                continue
            collect(job)
        return outcome
    for job in todo:  # submitit's local / debug executors: no Slurm dependencies, so submit in order
        if _blocked(job, outcome):
            outcome[job.id] = "blocked"
            _report(job, "blocked")
            continue
        submit(job, [])
        collect(job)
    return outcome
