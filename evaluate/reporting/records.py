"""Result records: one JSON line per evaluation (or published) number.

A :class:`Record` carries the measured value together with everything needed to reproduce or audit it: the
checkpoint (path, sha256, detected format and architecture), the protocol and dataset, the full resolved settings,
the seed, the code version and the cost (wall time, peak memory). Tables and figures are built from records only.

The store is a directory of ``*.jsonl`` files (default ``results/records/``, or ``$SSLBENCH_RESULTS``). Appends take
an exclusive ``flock`` and write the line with one ``write`` on an ``O_APPEND`` descriptor, so concurrent writers
(several protocols, several ranks) never interleave or truncate lines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sslcore.errors import SSLBenchError
from sslcore.io import REPO_ROOT, current_meter, git_sha, peak_memory_mb, versions

SCHEMA_VERSION = 1
logger = logging.getLogger("sslbench")
_JOB: list[dict[str, Any]] = []


@contextlib.contextmanager
def job_context(job: dict[str, Any]) -> Iterator[None]:
    """Records made inside carry ``settings["job"] = job`` (the job graph of ``sslbench eval full`` marks the records
    of each graph node with its key, so a rerun can tell which nodes are done)."""
    _JOB.append(dict(job))
    try:
        yield
    finally:
        _JOB.pop()


def default_store() -> Path:
    """The results store directory: ``$SSLBENCH_RESULTS`` or ``<repo>/results/records``."""
    return Path(os.environ.get("SSLBENCH_RESULTS") or REPO_ROOT / "results" / "records")


@dataclasses.dataclass
class Record:
    """One measured (or published) number with its provenance.

    Attributes:
        protocol: e.g. "knn", "linear", "logreg", "cluster", "davis", "coco", "ade20k".
        dataset: dataset name, e.g. "shapesworld", "imagenet", "davis2017".
        split: the split the metric is computed on ("val", "test", ...).
        metric: metric name, e.g. "top1", "top1@k20", "J&F-Mean", "bbox_mAP".
        value: the number, in the unit the papers print (percent for accuracies and AP, unless stated).
        checkpoint: {"path", "sha256", "format", "arch", "which"} of the evaluated weights (empty for published).
        settings: the fully resolved protocol configuration.
        seed: the random seed, if any.
        source: "measured" or "published" (with the citation in ``settings``).
    """

    protocol: str
    dataset: str
    split: str
    metric: str
    value: float
    checkpoint: dict[str, Any] = dataclasses.field(default_factory=dict)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int | None = None
    source: str = "measured"
    unit: str = "%"
    wall_time_s: float | None = None
    peak_memory: dict[str, float] = dataclasses.field(default_factory=dict)  # of this run (sslcore.io.start_meter)
    images_per_s: float | None = None  # images through the backbone per second of this run
    skipped_images: int = 0  # empty or unreadable dataset files this run left out (evaluate.datasets)
    code_version: str | None = None
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    run_id: str = ""
    created: str = ""
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)


def make_records(
    protocol: str,
    dataset: str,
    split: str,
    metrics: dict[str, float],
    *,
    checkpoint: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    seed: int | None = None,
    started: float | None = None,
    unit: str = "%",
) -> list[Record]:
    """Records for several metrics of one run, sharing one run id and the provenance fields."""
    run_id = uuid.uuid4().hex[:12]
    if _JOB:
        settings = {**(settings or {}), "job": _JOB[-1]}
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    common = dict(
        checkpoint=checkpoint or {},
        settings=settings or {},
        seed=seed,
        unit=unit,
        wall_time_s=None if started is None else round(time.time() - started, 3),
        peak_memory=peak_memory_mb(),
        images_per_s=meter.images_per_s() if (meter := current_meter()) else None,
        skipped_images=len(meter.skipped) if meter else 0,
        code_version=git_sha(),
        versions=versions(),
        run_id=run_id,
        created=created,
    )
    return [
        Record(protocol=protocol, dataset=dataset, split=split, metric=k, value=float(v), **common)
        for k, v in metrics.items()
    ]


def append_records(records: Iterable[Record], store: str | Path | None = None, name: str = "records") -> Path:
    """Append records to ``<store>/<name>.jsonl`` atomically (one locked write)."""
    store = Path(store) if store else default_store()
    store.mkdir(parents=True, exist_ok=True)
    path = store / f"{name}.jsonl"
    payload = "".join(r.to_json() + "\n" for r in records).encode("utf-8")
    if not payload:
        return path
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return path


def read_records(store: str | Path | None = None) -> list[dict[str, Any]]:
    """All records of a store directory (or one ``.jsonl`` file), in file order.

    A malformed line (not UTF-8, not JSON, or a JSON value that is not an object) is skipped with a warning naming
    the file and line: one damaged line must not hide every other result.

    Raises:
        SSLBenchError: when the store cannot be read (a directory without permission, a file that is not a file).
    """
    store = Path(store) if store else default_store()
    try:
        files = [store] if store.is_file() else sorted(store.glob("*.jsonl"))
        out: list[dict[str, Any]] = []
        for path in files:
            with open(path, "rb") as handle:
                for lineno, raw in enumerate(handle, 1):
                    record = _parse_line(raw, path, lineno)
                    if record is not None:
                        out.append(record)
    except OSError as exc:
        raise SSLBenchError(f"{exc.filename or store}: cannot read the results store ({exc.strerror})") from None
    return out


def _parse_line(raw: bytes, path: Path, lineno: int) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        problem = "not UTF-8"
    except json.JSONDecodeError as exc:
        problem = f"not JSON: {exc.msg}"
    else:
        if isinstance(value, dict):
            return value
        problem = f"a JSON {type(value).__name__}, not an object"
    logger.warning("%s:%d: skipping a malformed record (%s)", path, lineno, problem)
    return None
