"""``sslbench eval full CKPT [CKPT ...] --suite SUITE``: every protocol of a suite on every checkpoint, as a resumable
job graph, ending in one comparison report.

Examples::

    sslbench eval full bam.pth dino.pth --suite papers --data-root /datasets              # local, one job at a time
    sslbench eval full bam.pth --suite frozen --data-root /datasets --root imagenet=/fast/imagenet --jobs 8
    sslbench eval full bam.pth --suite papers --data-root /datasets --executor slurm --slurm slurm_partition=gpu
    sslbench eval full a.pth b.pth --suite shapesworld --data-root runs/demo/data/shapesworld --dry-run
    sslbench eval full a.pth baseline:raw-pixels:16@64 --suite shapesworld --data-root runs/demo/data/shapesworld

Stages: the suite is read and checked (:mod:`evaluate.orchestration.suite`), the checkpoints are read once (sha256, architecture),
the graph is planned (:mod:`evaluate.orchestration.jobgraph`) and every protocol config and dataset root checked — a bad input
fails here with one line, before any job runs. ``--dry-run`` prints the plan (jobs, state, estimated cost) and stops.
Otherwise the executor runs the jobs that are not done (:mod:`evaluate.orchestration.executors`), then the report is written
(:mod:`evaluate.orchestration.full_report`): ``<report>/README.md`` and ``tables/`` (default ``reports/<suite name>``). A job that
fails is reported with its log path; the jobs that do not depend on it still run; the exit status is then 1.

A checkpoint may be a baseline's spec instead of a file (``baseline:raw-pixels:16@64``, :mod:`evaluate.checkpoints.baselines`):
the protocols that need patch tokens are listed as not applicable for it, with the reason. From Python (the demo):
:func:`run_full`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evaluate.orchestration import jobgraph
from evaluate.orchestration import suite as suites
from sslcore.errors import ConfigError

logger = logging.getLogger("sslbench")
EXECUTORS = ("local", "slurm")


@dataclasses.dataclass
class FullResult:
    graph: jobgraph.Graph
    states: dict[str, str]  # before running: done / todo
    outcome: dict[str, str]  # skipped / ran / failed / blocked (empty for a dry run)
    plan: str
    report: Path | None  # None: a dry run, or Slurm jobs submitted without waiting

    @property
    def failed(self) -> list[jobgraph.Job]:
        return [j for j in self.graph.jobs if self.outcome.get(j.id) in ("failed", "blocked")]


def plan_full(
    checkpoints: list[str] | dict[str, str | Path],
    suite: str | Path,
    out: str | Path,
    *,
    data_root: str | Path | None = None,
    roots: dict[str, str] | None = None,
    only: list[str] | None = None,
    skip: list[str] | None = None,
    which: str = "teacher",
    trust_pickle: bool = False,
    settings: dict[str, dict[str, Any]] | list[str] | None = None,
) -> jobgraph.Graph:
    """Read and check everything, and plan the graph (no job runs). ``checkpoints``: paths, ``NAME=PATH`` strings or
    ``{name: path}``; ``settings``: per-entry changes (:func:`evaluate.orchestration.suite.apply_settings`)."""
    from evaluate.reporting.records import default_store
    from sslcore.io import check_writable

    spec = suites.apply_settings(suites.load_suite(suite), settings)
    entries = suites.select(spec, only, skip)
    if not entries:
        raise ConfigError(f"{spec.path}: no protocol selected (--only/--skip)")
    resolved = suites.resolve_roots(spec, entries, None if data_root is None else str(data_root), roots)
    items = [f"{k}={v}" for k, v in checkpoints.items()] if isinstance(checkpoints, dict) else list(checkpoints)
    ckpts = jobgraph.read_checkpoints(items, which=which, trust_pickle=trust_pickle)
    check_writable(out, "--out")
    check_writable(default_store(), "results store")
    return jobgraph.build_graph(spec, entries, resolved, ckpts, out)


def run_full(
    checkpoints: list[str] | dict[str, str | Path],
    suite: str | Path,
    out: str | Path,
    *,
    report: str | Path | None = None,
    data_root: str | Path | None = None,
    roots: dict[str, str] | None = None,
    only: list[str] | None = None,
    skip: list[str] | None = None,
    executor: str = "local",
    workers: int = 1,
    force: bool = False,
    dry_run: bool = False,
    which: str = "teacher",
    trust_pickle: bool = False,
    cluster: str | None = "slurm",
    slurm_params: dict[str, Any] | None = None,
    wait: bool = True,
    pretrain_logs: list[str] | None = None,
    figures: bool = True,
    settings: dict[str, dict[str, Any]] | list[str] | None = None,
) -> FullResult:
    """Plan, run what is not done, write the report (see the module docstring). ``cluster`` (executor ``slurm``):
    ``slurm``, or submitit's ``local`` / ``debug`` executors. Records go to the results store
    (``$SSLBENCH_RESULTS``); ``report`` defaults to ``reports/<suite name>``."""
    from evaluate.orchestration import executors

    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor}: expected one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ConfigError(f"--jobs {workers}: must be >= 1")
    for log in pretrain_logs or []:
        if not Path(log).is_file():
            raise ConfigError(f"--pretrain-log {log}: file not found")
    graph = plan_full(
        checkpoints,
        suite,
        out,
        data_root=data_root,
        roots=roots,
        only=only,
        skip=skip,
        which=which,
        trust_pickle=trust_pickle,
        settings=settings,
    )
    report = Path(report) if report else Path("reports") / graph.suite
    if not dry_run:
        from sslcore.io import check_writable

        check_writable(report, "--report")
    states = jobgraph.job_states(graph)
    plan = jobgraph.plan_text(graph, states, force)
    if dry_run:
        return FullResult(graph, states, {}, plan, None)
    with _exclusive(Path(graph.out)):
        states = jobgraph.job_states(graph)  # again: another run may have finished jobs while we waited to plan
        graph.save()
        if executor == "local":
            outcome = executors.run_local(graph, states, force, workers)
        else:
            outcome = executors.run_submitit(graph, states, force, cluster, slurm_params, wait)
        from evaluate.orchestration.full_report import write_report

        readme = None  # --no-wait: the jobs are still queued; a rerun waits for them and writes the report
        if wait or executor == "local":
            readme = write_report(graph, outcome, report, figures=figures, pretrain_logs=pretrain_logs)
    return FullResult(graph, states, outcome, plan, readme)


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One ``eval full`` at a time per working directory (an advisory ``flock`` on ``<out>/.lock``, released when
    the process ends, also when it is killed)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"--out {out}: another `sslbench eval full` is running in this directory") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------------- CLI
def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _pairs(items: list[str] | None, flag: str) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value) if flag == "--slurm" else value
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "%(prog)s CKPT [CKPT ...] --suite SUITE [--data-root DIR] [--only/--skip P,...] [options]"
    parser.add_argument(
        "checkpoints",
        nargs="+",
        metavar="CKPT",
        help="checkpoint files (NAME=PATH to label one), or baselines: baseline:raw-pixels[:SIDE][@INPUT]",
    )
    parser.add_argument("--suite", required=True, help="suite YAML, or a shipped one: papers, frozen, shapesworld")
    parser.add_argument("--data-root", help="directory the suite's relative dataset roots are under")
    parser.add_argument("--root", action="append", metavar="KEY=PATH", help="the root of one dataset of the suite")
    parser.add_argument(
        "--only",
        type=_csv,
        help="comma-separated protocols (their default entries) or ids (an opt-in by its id) to run",
    )
    parser.add_argument("--skip", type=_csv, help="comma-separated protocols or ids to leave out")
    parser.add_argument(
        "--set",
        action="append",
        metavar="ID.KEY=VALUE",
        help="change one setting of a suite entry (id or protocol), e.g. linear.epochs=10 davis.short_side=48",
    )
    parser.add_argument("--executor", choices=EXECUTORS, default="local")
    parser.add_argument("--jobs", type=int, default=1, help="local executor: parallel worker processes (1 GPU each)")
    parser.add_argument(
        "--slurm",
        action="append",
        metavar="KEY=VALUE",
        help="submitit parameters for --executor slurm (slurm_partition=gpu, timeout_min=1440, slurm_account=...)",
    )
    parser.add_argument(
        "--slurm-cluster",
        choices=("slurm", "local", "debug"),
        default="slurm",
        help="submitit executor behind --executor slurm (local/debug: tests and workstations)",
    )
    parser.add_argument("--no-wait", action="store_true", help="--executor slurm: submit and exit (no report)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (jobs, state, estimated cost) and stop")
    parser.add_argument("--force", action="store_true", help="rerun protocol jobs whose records exist")
    parser.add_argument("--out", help="working directory: graph, run outputs, logs (default runs/full/<suite name>)")
    parser.add_argument("--report", help="report directory (default reports/<suite name>)")
    parser.add_argument("--which", choices=("teacher", "student"), default="teacher")
    parser.add_argument("--trust-pickle", action="store_true", help="allow pickled objects (only files you trust)")
    parser.add_argument("--pretrain-log", action="append", help="pretraining log.jsonl for the report's figures")
    parser.add_argument("--no-figures", action="store_true", help="tables only")


def run_cli(args: argparse.Namespace) -> int:
    name = suites.load_suite(args.suite).name
    result = run_full(
        args.checkpoints,
        args.suite,
        args.out or Path("runs") / "full" / name,
        report=args.report,
        data_root=args.data_root,
        roots=_pairs(args.root, "--root"),
        only=args.only,
        skip=args.skip,
        executor=args.executor,
        workers=args.jobs,
        force=args.force,
        dry_run=args.dry_run,
        which=args.which,
        trust_pickle=args.trust_pickle,
        cluster=args.slurm_cluster,
        slurm_params=_pairs(args.slurm, "--slurm"),
        wait=not args.no_wait,
        pretrain_logs=args.pretrain_log,
        figures=not args.no_figures,
        settings=args.set,
    )
    if args.dry_run:
        print(result.plan)
        return 0
    kinds = ("ran", "skipped", "failed", "blocked", "submitted")
    counts = {k: sum(1 for v in result.outcome.values() if v == k) for k in kinds}
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v or k != "submitted")
    print(summary + (f"; report: {result.report}" if result.report else "; run the command again for the report"))
    for job in result.failed:
        print(f"{result.outcome[job.id]}: {job.id} (log: {job.log})")
    return 1 if result.failed else 0
