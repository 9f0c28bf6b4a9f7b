"""One shell for every protocol job of ``sslbench eval full``: load the checkpoint once, resolve the dataset, run,
write the records last.

:func:`run_job` runs one node of a :class:`~evaluate.orchestration.jobgraph.Graph`:

* a **feature job** loads the checkpoint once and fills the feature cache (:func:`evaluate.protocols.features.get_features`)
  for every image list its protocols read, marking each list done beside the cache
  (:func:`evaluate.orchestration.jobgraph.item_marker`) and the job's statistics in ``<out>/state/<key>.json``;
* a **protocol job** loads the checkpoint once (one :class:`~evaluate.protocols.evalrun.BackboneConfig`; the dense tasks convert
  it instead, fine-tuning loads it at its input size) and calls the protocol's own ``run``. The protocols append
  their records last, after their outputs, with the provenance, the wall time, the peak memory of this run alone
  (:func:`sslcore.io.start_meter`, restarted per job) and images/s; inside the shell every record also carries
  ``settings.job = {key, id, suite}`` (:func:`evaluate.reporting.records.job_context`), which is how a rerun knows the job is
  done.

Loading never joins a process group. Only a Slurm job with several tasks does (explicitly, in
:func:`run_job_from_graph`, through submitit's ``TorchDistributedEnvironment``), so the frozen protocols and
fine-tuning run data-parallel there as under ``torchrun``.

A job's log (the ``sslbench`` logger and, on failure, the traceback) goes to ``job.log``. ``python -m
evaluate.orchestration.jobshell GRAPH.json JOB_ID`` runs one job in its own process (the local executor with ``--jobs N``).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evaluate.orchestration.jobgraph import Graph, Job, item_marker, marker_path
from evaluate.orchestration.suite import FROZEN
from sslcore.config import from_dict
from sslcore.io import atomic_write_json

logger = logging.getLogger("sslbench")


@contextlib.contextmanager
def job_log(path: str | Path) -> Iterator[None]:
    """Copy the ``sslbench`` logger (INFO and up) into ``path`` while the job runs."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.setLevel(logging.INFO)
    previous = logger.level
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()


def load_checkpoint(ckpt: dict[str, Any], **kwargs: Any) -> Any:
    """The job's one load of its checkpoint (:func:`evaluate.checkpoints.load_backbone`), or the baseline its
    ``baseline:...`` spec names (:func:`evaluate.checkpoints.baselines.load_baseline`; ``kwargs`` do not apply to it)."""
    from evaluate.checkpoints import load_backbone
    from evaluate.checkpoints.baselines import is_baseline, load_baseline

    if is_baseline(ckpt["path"]):
        return load_baseline(ckpt["path"], name=ckpt["name"])
    return load_backbone(
        ckpt["path"], which=ckpt["which"], trust_pickle=ckpt["trust_pickle"], name=ckpt["name"], **kwargs
    )


def image_list(item: dict[str, Any]) -> Any:
    """The images of one feature item, loaded exactly as the protocols load them (:mod:`evaluate.protocols.evalrun`)."""
    from evaluate.datasets import apply_subset, read_subset_file, resolve_subset
    from evaluate.protocols.evalrun import DataConfig, data_plan

    data = from_dict(DataConfig, item["data"], "graph.json", resolved=True)
    plan = data_plan(data)
    role = item["role"]
    split = {"fit": plan.fit, "test": plan.test, "val": item.get("val") or plan.val}.get(role, plan.train)
    images = plan.load(split)
    if data.subset and role in ("fit", "train", "outside_subset"):
        path = resolve_subset(data.root, data.subset)
        subset = apply_subset(images, read_subset_file(path), str(path))
        if role == "outside_subset":
            from evaluate.protocols.logreg import outside_subset

            return outside_subset(images, subset, item["seed"])
        return subset
    return images


def run_features(graph: Graph, job: Job) -> None:
    from evaluate.protocols.features import FeatureConfig, cache_root, get_features
    from sslcore.io import sha256_json, start_meter

    started = time.time()
    meter = start_meter()
    loaded = load_checkpoint(job.spec["checkpoint"])
    files = []
    for item in job.spec["items"]:
        fcfg = from_dict(FeatureConfig, item["features"], "graph.json", resolved=True)
        images = image_list(item)
        fs = get_features(loaded.model, loaded.info, images, fcfg)
        files.append(str(cache_root() / f"{sha256_json(fs.key)}.pt"))
        atomic_write_json(item_marker(item["key"]), {"job": job.id, "cache_file": files[-1]})
        cached = " (cached)" if fs.from_cache else ""
        logger.info("%s: %s %s, %d x %d%s", job.id, item["role"], images.split, *fs.features.shape, cached)
    atomic_write_json(
        marker_path(graph, job),
        {
            "job": job.id,
            "cache_files": files,
            "seconds": round(time.time() - started, 3),
            "peak_memory": meter.peak_memory_mb(),
            "images_per_s": meter.images_per_s(),
        },
    )


def run_protocol(graph: Graph, job: Job) -> None:
    from evaluate.reporting.records import job_context

    protocol = job.kind
    tag = {"key": job.key, "id": job.entry, "suite": graph.suite}
    ckpt = next(c for c in graph.checkpoints if c.name == job.checkpoint)
    with job_context(tag):
        if protocol in FROZEN:
            module_name, cls_name = FROZEN[protocol]
            schema = getattr(importlib.import_module(module_name), cls_name)
            cfg = from_dict(schema, job.spec["config"], "graph.json", resolved=True)
            if protocol == "finetune":
                from evaluate.protocols.finetune.run import run

                run(cfg)  # loads the checkpoint once, at the recipe's input size
            else:
                module = importlib.import_module(module_name)  # the protocol module that defines the schema
                module.run(cfg, backbone=load_checkpoint(vars(ckpt)))
        elif protocol == "davis":
            from evaluate.protocols.davis.run import DavisConfig
            from evaluate.protocols.davis.run import run as run_davis

            cfg = from_dict(DavisConfig, job.spec["config"], "graph.json", resolved=True)
            loaded = load_checkpoint(vars(ckpt), pos_interp=cfg.pos_interp)
            run_davis(cfg, model=loaded.model, checkpoint_info=loaded.info)
        else:
            from evaluate.protocols.dense.runner import run_eval

            spec = dict(job.spec["dense"])
            run_eval(spec.pop("task"), spec.pop("checkpoint"), spec.pop("data_root"), spec.pop("out"), **spec)


def run_job(graph: Graph, job: Job) -> None:
    """Run one job in this process, logging into ``job.log``; exceptions propagate (after being logged)."""
    env = {k: v for k, v in graph.env.items() if not os.environ.get(k)}
    os.environ.update(env)
    with job_log(job.log):
        logger.info("job %s (%s) starts", job.id, job.kind)
        started = time.time()
        try:
            if job.kind == "features":
                run_features(graph, job)
            else:
                run_protocol(graph, job)
        except BaseException:
            logger.error("job %s failed:\n%s", job.id, traceback.format_exc())
            raise
        logger.info("job %s done in %.1f s", job.id, time.time() - started)


def run_job_from_graph(graph_path: str, job_id: str) -> str:
    """Entry point of a worker process or a Slurm job: run ``job_id`` of the graph file; returns the job id.

    Under ``torchrun`` or on a Slurm job with several tasks (submitit's ``TorchDistributedEnvironment``), a frozen
    protocol or fine-tune joins the process group first and runs data-parallel; only rank 0 writes records.
    """
    graph = Graph.load(graph_path)
    job = graph.job(job_id)
    if job.kind in FROZEN:
        from evaluate.protocols.evalrun import init_distributed

        if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "WORLD_SIZE" not in os.environ:
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export()
        init_distributed()  # a no-op unless WORLD_SIZE > 1 (torchrun, or the Slurm tasks above)
    run_job(graph, job)
    return job_id


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print("usage: python -m evaluate.orchestration.jobshell GRAPH.json JOB_ID", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        run_job_from_graph(argv[0], argv[1])
    except Exception as exc:  # noqa: BLE001 - the traceback is in the job's log
        print(f"job {argv[1]} failed: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
