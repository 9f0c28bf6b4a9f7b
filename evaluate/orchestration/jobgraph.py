"""The job graph of ``sslbench eval full``: a suite x checkpoints -> feature and protocol jobs with dependencies.

**Nodes.** For every checkpoint and every selected suite entry, one *protocol job* (``<ckpt>/<entry id>``). The
frozen-feature protocols (k-NN, linear, logistic regression, clustering) with the feature cache on also get *feature
jobs*: one per (checkpoint, dataset, transform, taps) (``<ckpt>/features/<dataset>-<taps><n>-<crop>``), which
extracts every image list those protocols read (the fit / train / val / test splits, a label subset) once into the
disk cache of :mod:`evaluate.protocols.features`; each protocol job depends on its feature job and reads the cache. Fine-tuning,
DAVIS (its own per-sequence cache) and the dense tasks have no feature job.

**Baselines.** A checkpoint may be a pseudo-checkpoint spec instead of a file (``baseline:raw-pixels:16@64``,
:mod:`evaluate.checkpoints.baselines`): it gets the jobs of the protocols its one token supports (linear probing on
``taps=cls n_last=1``); every other (checkpoint, entry) pair is listed in ``Graph.skipped`` with the reason, shown
by the plan view and the report. A CNN / MetaFormer checkpoint (ResNet, CAFormer) is treated the same way: the
frozen-feature protocols run on its pooled feature, DAVIS, the dense tasks and fine-tuning are skipped (ViT-only).

**Keys and state.** Each job has a key: the sha256 of everything its result depends on (checkpoint sha256 and
teacher/student, the resolved protocol config without output paths and progress bars, the dataset root; for the
dense tasks also the text of the mm config file and its ``_base_`` files). A protocol
job is *done* when the results store holds ``expected_runs`` runs whose records carry ``settings.job.key`` equal to
its key (:func:`evaluate.reporting.records.job_context`); a feature job when every image list it extracts has its marker
``$SSLBENCH_CACHE/feature-items/<key>.json`` and the cache file the marker names is present (so another run
directory, or another suite, reuses them). A killed run therefore resumes at the first job without its records; a job's
records are appended last (after its outputs), so a half-run job has none and runs again.

**Cost.** Each suite entry may carry ``hours`` (estimated wall hours per checkpoint on the suite's ``machine``) and
``gpus``; the plan view shows both and their totals (:func:`plan_text`).

The graph is written to ``<out>/graph.json`` (JSON, every job's full spec), from which a worker process or a Slurm
job runs one node (:func:`evaluate.orchestration.jobshell.run_job_from_graph`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from evaluate.orchestration.suite import FROZEN, Suite, SuiteProtocol, base_config
from sslcore.config import to_dict
from sslcore.errors import ConfigError
from sslcore.io import atomic_write_json, sha256_json

logger = logging.getLogger("sslbench")
GRAPH_VERSION = 1
# keys of a resolved protocol config that do not change its result: anywhere, and those naming the checkpoint file
# (its sha256 is in the key instead) at the top (DAVIS) or in the backbone section
VOLATILE = ("out", "progress", "resume", "num_workers")
CHECKPOINT_KEYS = ("path", "name", "trust_pickle", "checkpoint")


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint to evaluate: its label, file and identity (read once when the graph is planned)."""

    name: str
    path: str
    sha256: str
    arch: dict[str, Any]
    which: str = "teacher"
    trust_pickle: bool = False


@dataclasses.dataclass
class Job:
    """One node. ``kind`` is ``features`` or the protocol; ``spec`` is everything :mod:`evaluate.orchestration.jobshell` needs."""

    id: str
    kind: str
    checkpoint: str
    entry: str | None
    key: str
    deps: list[str]
    spec: dict[str, Any]
    gpus: int = 1
    hours: float | None = None
    expected_runs: int = 1
    log: str = ""


@dataclasses.dataclass
class Graph:
    suite: str
    suite_path: str
    machine: str
    out: str
    checkpoints: list[Checkpoint]
    jobs: list[Job]
    env: dict[str, str]
    version: int = GRAPH_VERSION
    # (checkpoint, entry) pairs without a job: {"checkpoint", "entry", "protocol", "reason"} (baselines, CNNs)
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def job(self, job_id: str) -> Job:
        for job in self.jobs:
            if job.id == job_id:
                return job
        raise ConfigError(f"{self.out}/graph.json: no job {job_id!r}")

    def save(self, path: str | Path | None = None) -> Path:
        return atomic_write_json(Path(path or Path(self.out) / "graph.json"), dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> Graph:
        data = json.loads(Path(path).read_text())
        data["checkpoints"] = [Checkpoint(**c) for c in data["checkpoints"]]
        data["jobs"] = [Job(**j) for j in data["jobs"]]
        return cls(**data)


# --------------------------------------------------------------------------------------------- checkpoints
def read_checkpoints(items: Iterable[str], which: str = "teacher", trust_pickle: bool = False) -> list[Checkpoint]:
    """``PATH`` or ``NAME=PATH`` per checkpoint; each file is read once (sha256, architecture). Names are unique.
    A ``baseline:...`` spec (:func:`evaluate.checkpoints.baselines.parse_baseline`) stands for a baseline instead of a file."""
    from evaluate.checkpoints import load_backbone
    from evaluate.checkpoints.baselines import is_baseline, load_baseline

    out: list[Checkpoint] = []
    for item in items:
        name, sep, path = str(item).partition("=")
        if not sep or Path(item).is_file():
            name, path = "", str(item)
        if is_baseline(path):
            loaded = load_baseline(path, name=name or None)
            path = loaded.info["path"]  # the canonical spec
        elif not Path(path).is_file():
            raise ConfigError(f"{path}: checkpoint file not found")
        else:
            loaded = load_backbone(path, which=which, trust_pickle=trust_pickle, name=name or None)
        info = loaded.info
        label = name or info.get("name") or Path(path).stem
        if any(c.name == label for c in out):
            raise ConfigError(f"{path}: checkpoint name {label!r} is used twice (give NAME=PATH)")
        twin = next((c for c in out if c.sha256 == info["sha256"]), None)
        if twin is not None:
            raise ConfigError(f"{path}: the same weights as {twin.path} (sha256 {info['sha256'][:12]}), given twice")
        where = path if is_baseline(path) else str(Path(path).resolve())
        out.append(Checkpoint(label, where, info["sha256"], info.get("arch") or {}, which, trust_pickle))
    if not out:
        raise ConfigError("no checkpoint given")
    return out


# --------------------------------------------------------------------------------------------- configs
def _strip(tree: Any, top: bool = True) -> Any:
    """The settings that define a job's result (see :data:`VOLATILE`, :data:`CHECKPOINT_KEYS`)."""
    if not isinstance(tree, dict):
        return tree
    out = {}
    for key, value in tree.items():
        if key in VOLATILE or (top and key in CHECKPOINT_KEYS):
            continue
        if top and key == "backbone" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in CHECKPOINT_KEYS}
        out[key] = _strip(value, top=False)
    return out


def protocol_config(entry: SuiteProtocol, suite: Suite, root: str, ckpt: Checkpoint, run_dir: Path) -> Any:
    """The resolved config of one protocol job (frozen protocols, finetune, DAVIS) or the dense spec dict."""
    from evaluate.protocols.evalrun import BackboneConfig

    where = f"{suite.path}: protocols.{entry.id}"
    cfg = base_config(entry, where, ckpt.arch.get("family"))  # a ViT's arch has no family
    ds = suite.datasets[entry.dataset]
    if entry.protocol in FROZEN:
        cfg.backbone = BackboneConfig(path=ckpt.path, which=ckpt.which, trust_pickle=ckpt.trust_pickle, name=ckpt.name)
        cfg.data.root = root
        cfg.data.name = None if ds.kind == "imagefolder" else ds.kind
        if ds.kind == "imagefolder" and ds.name:
            cfg.data.name = ds.name
        cfg.data.check_counts = ds.check_counts
        cfg.out = str(run_dir)
        if entry.protocol == "finetune":
            cfg.progress = False
        else:
            cfg.features.progress = False
        return cfg
    if entry.protocol == "davis":
        cfg.checkpoint, cfg.which, cfg.name, cfg.trust_pickle = ckpt.path, ckpt.which, ckpt.name, ckpt.trust_pickle
        cfg.davis_root, cfg.out = root, str(run_dir)
        return cfg
    return {
        "task": entry.protocol,
        "checkpoint": ckpt.path,
        "data_root": root,
        "out": str(run_dir),
        "config": cfg.config,
        "options": dict(cfg.cfg_options),
        "nproc": entry.gpus,
        "amp": cfg.amp,
        "which": ckpt.which,
        "name": ckpt.name,
    }


def expected_runs(entry: SuiteProtocol, cfg: Any) -> int:
    """How many runs (record groups) a job appends: one per C for clustering, one per swept setting for DAVIS."""
    if entry.protocol == "cluster":
        return len(cfg.num_classes)
    if entry.protocol == "davis":
        return len(cfg.n_last_frames) * len(cfg.topk) * len(cfg.size_mask_neighborhood)
    return 1


# --------------------------------------------------------------------------------------------- features
def feature_needs(protocol: str, cfg: Any, arch: dict[str, Any]) -> list[tuple[str, Any]]:
    """[(role, FeatureConfig)] of the image lists a frozen protocol reads through the feature cache; roles:
    ``fit`` (train, + val where official, + subset), ``train`` (+ subset), ``val``, ``test``, ``outside_subset``
    (logistic regression's selection images outside a label subset). Mirrors the protocols' ``run`` (see knn,
    linear, logreg, cluster)."""
    if protocol == "finetune" or not cfg.features.cache:
        return []
    if protocol == "knn":
        return [("fit", cfg.features), ("test", cfg.features)]
    if protocol == "cluster":
        return [("test", cfg.features)]
    if protocol == "linear":
        from evaluate.protocols.linear import bank_taps

        taps, n_last = bank_taps(cfg, int(arch.get("embed_dim", 0)), int(arch.get("depth", 1)))
        fcfg = dataclasses.replace(cfg.features, taps=taps, n_last=n_last)
        roles = ["fit"] if cfg.mode == "cached" or cfg.heldout_fraction > 0 else []
        return [(r, fcfg) for r in [*roles, "test"]]
    if protocol == "logreg":
        from evaluate.protocols.evalrun import data_plan
        from evaluate.protocols.logreg import resolve_selection

        plan = data_plan(cfg.data)
        val = cfg.val or plan.val
        rule = resolve_selection(cfg, has_val=val is not None)
        roles = ["train", *({"val": ["val"], "outside_subset": ["outside_subset"]}.get(rule, [])), "test"]
        return [(r, cfg.features) for r in roles]
    return []


def _transform(fcfg: Any, arch: dict[str, Any]) -> tuple[int, int, str]:
    crop = fcfg.crop or int(arch.get("img_size") or 224)
    return fcfg.resize or int(round(crop * fcfg.resize_ratio)), crop, fcfg.interpolation


def feature_item(role: str, data: Any, fcfg: Any, val: str | None, seed: int | None) -> dict[str, Any]:
    """A JSON spec of one image list + its feature settings (the subset applies to fit/train only)."""
    data_dict = to_dict(data)
    if role in ("val", "test"):
        data_dict["subset"] = None
    return {
        "role": role,
        "val": val if role == "val" else None,
        "seed": seed if role == "outside_subset" else None,
        "data": data_dict,
        "features": to_dict(fcfg),
    }


def item_key(ckpt: Checkpoint, item: dict[str, Any]) -> str:
    """The key of one image list's features: checkpoint, image list and the feature settings that matter."""
    settings = {k: v for k, v in item["features"].items() if k not in ("progress", "batch_size", "num_workers")}
    return sha256_json({"sha256": ckpt.sha256, "which": ckpt.which, **{**item, "features": settings}})


# --------------------------------------------------------------------------------------------- planning
def build_graph(
    suite: Suite,
    entries: list[SuiteProtocol],
    roots: dict[str, str],
    checkpoints: list[Checkpoint],
    out: str | Path,
) -> Graph:
    """Every job of ``entries`` x ``checkpoints`` (see the module docstring); configs are checked here."""
    from evaluate.checkpoints.baselines import adapt_config, is_baseline
    from evaluate.protocols.evalrun import check_outputs
    from pretrain.pooled import is_pooled_arch

    out = Path(out).resolve()
    jobs: list[Job] = []
    skipped: list[dict[str, str]] = []
    for ckpt in checkpoints:
        features: dict[str, Job] = {}
        mine: list[Job] = []
        baseline = is_baseline(ckpt.path)
        # a CNN / MetaFormer checkpoint (evaluate.checkpoints.pooled) has one feature, as a baseline has one token
        pooled = f"a {ckpt.arch['family']} checkpoint has one pooled feature" if is_pooled_arch(ckpt.arch) else None
        for entry in entries:
            root = roots[entry.dataset]
            run_dir = out / "runs" / ckpt.name / entry.id
            cfg = protocol_config(entry, suite, root, ckpt, run_dir)
            reason = adapt_config(entry.protocol, cfg, pooled) if baseline or pooled else None
            if reason:
                skipped.append(
                    {"checkpoint": ckpt.name, "entry": entry.id, "protocol": entry.protocol, "reason": reason}
                )
                logger.info("%s/%s: not applicable (%s)", ckpt.name, entry.id, reason)
                continue
            if entry.protocol == "finetune":
                from evaluate.datasets import resolve_subset
                from evaluate.protocols.finetune.run import check_dataset_label

                check_dataset_label(cfg)
                if cfg.data.subset:
                    resolve_subset(cfg.data.root, cfg.data.subset)
            elif entry.protocol in FROZEN:
                check_outputs(cfg, checkpoint=not baseline)
            if isinstance(cfg, dict):
                from evaluate.protocols.dense.runner import check_options, config_digest, load_mm_config, resolve_config

                spec = {"protocol": entry.protocol, "dense": cfg}
                material = {k: v for k, v in cfg.items() if k not in ("out", "name", "checkpoint")}
                config_file = resolve_config(cfg["task"], cfg["config"], ckpt.arch, Path(cfg["data_root"]))
                if cfg["options"]:  # a cfg_options typo fails the plan, not the job hours later
                    check_options(load_mm_config(config_file), cfg["options"], config_file)
                material["config_sha256"] = config_digest(config_file)  # an edited config (or base) reruns
            else:
                spec = {"protocol": entry.protocol, "config": to_dict(cfg)}
                material = _strip(to_dict(cfg))
            key = sha256_json(
                {"protocol": entry.protocol, "config": material, "sha256": ckpt.sha256, "which": ckpt.which}
            )
            deps: list[str] = []
            if entry.protocol in FROZEN:
                val = getattr(cfg, "val", None)
                for role, fcfg in feature_needs(entry.protocol, cfg, ckpt.arch):
                    resize, crop, interp = _transform(fcfg, ckpt.arch)
                    group = {
                        "dataset": entry.dataset,
                        "transform": [resize, crop, interp],
                        "taps": [fcfg.taps, fcfg.n_last, fcfg.interleave],
                        "precision": fcfg.precision,
                        "device": fcfg.device,
                    }
                    gkey = sha256_json(group)
                    if gkey not in features:
                        fid = f"{ckpt.name}/features/{entry.dataset}-{fcfg.taps}{fcfg.n_last}-{crop}-{gkey[:6]}"
                        features[gkey] = Job(
                            fid,
                            "features",
                            ckpt.name,
                            None,
                            "",
                            [],
                            {"checkpoint": dataclasses.asdict(ckpt), "items": []},
                        )
                    fjob = features[gkey]
                    item = feature_item(role, cfg.data, fcfg, val, getattr(cfg, "seed", None))
                    comparable = {k: v for k, v in item.items() if k != "features"}
                    if comparable not in [{k: v for k, v in i.items() if k != "features"} for i in fjob.spec["items"]]:
                        fjob.spec["items"].append(item)
                    if fjob.id not in deps:
                        deps.append(fjob.id)
            mine.append(
                Job(
                    f"{ckpt.name}/{entry.id}",
                    entry.protocol,
                    ckpt.name,
                    entry.id,
                    key,
                    deps,
                    spec,
                    entry.gpus,
                    entry.hours,
                    expected_runs(entry, cfg) if not isinstance(cfg, dict) else 1,
                )
            )
        for fjob in features.values():
            for item in fjob.spec["items"]:
                item["key"] = item_key(ckpt, item)
            fjob.key = sha256_json({"sha256": ckpt.sha256, "which": ckpt.which, "items": fjob.spec["items"]})
            fjob.gpus = 1  # one process extracts (a Slurm job of one task on one GPU)
        jobs += _insert_features(mine, list(features.values()))
    for job in jobs:
        job.log = str(out / "logs" / (job.id.replace("/", "__") + ".log"))
    env = {k: os.environ[k] for k in ("SSLBENCH_RESULTS", "SSLBENCH_CACHE") if os.environ.get(k)}
    return Graph(suite.name, suite.path, suite.machine, str(out), checkpoints, jobs, env, skipped=skipped)


def _insert_features(jobs: list[Job], features: list[Job]) -> list[Job]:
    """Feature jobs placed right before their first dependent (a topological order that runs each checkpoint's
    features just in time)."""
    out: list[Job] = []
    placed: set[str] = set()
    for job in jobs:
        for fjob in features:
            if fjob.id in job.deps and fjob.id not in placed:
                out.append(fjob)
                placed.add(fjob.id)
        out.append(job)
    return out


# --------------------------------------------------------------------------------------------- state
def marker_path(graph: Graph, job: Job) -> Path:
    """A feature job's run statistics (wall time, memory, images/s) in this run's directory (for the report)."""
    return Path(graph.out) / "state" / f"{job.key}.json"


def item_marker(key: str) -> Path:
    """The marker of one extracted image list, beside the feature cache it describes (shared by every run)."""
    from evaluate.protocols.features import cache_root

    return cache_root().parent / "feature-items" / f"{key}.json"


def features_done(graph: Graph, job: Job) -> bool:
    """Every image list of the job has its marker and the cache file the marker names."""
    for item in job.spec["items"]:
        path = item_marker(item["key"])
        try:
            cache_file = json.loads(path.read_text())["cache_file"]
        except (OSError, KeyError, json.JSONDecodeError):
            return False
        if not Path(cache_file).is_file():
            return False
    return True


def recorded_runs(records: Iterable[dict[str, Any]]) -> dict[str, set[str]]:
    """job key -> run ids of the measured records that carry it."""
    out: dict[str, set[str]] = {}
    for rec in records:
        job = (rec.get("settings") or {}).get("job")
        if isinstance(job, dict) and job.get("key") and rec.get("source", "measured") == "measured":
            out.setdefault(job["key"], set()).add(rec.get("run_id", ""))
    return out


def job_states(graph: Graph, records: Iterable[dict[str, Any]] | None = None) -> dict[str, str]:
    """job id -> ``done`` or ``todo``, from the results store (protocols) and the markers (features)."""
    from evaluate.reporting.records import default_store, read_records

    if records is None:
        store = default_store()
        records = read_records(store) if store.exists() else []
    runs = recorded_runs(records)
    return {
        job.id: (
            "done"
            if (
                features_done(graph, job) if job.kind == "features" else len(runs.get(job.key, ())) >= job.expected_runs
            )
            else "todo"
        )
        for job in graph.jobs
    }


def plan_text(graph: Graph, states: dict[str, str], force: bool = False) -> str:
    """The ``--dry-run`` view: one line per job (state, GPUs, estimated hours, dependencies) and the totals."""
    rows = [("job", "state", "gpus", "est. h", "depends on")]
    todo_hours = gpu_hours = 0.0
    for job in graph.jobs:
        state = states.get(job.id, "todo")
        if force and job.kind != "features":
            state = "todo (forced)" if state == "done" else state
        hours = "-" if job.hours is None else f"{job.hours:g}"
        if state.startswith("todo") and job.hours:
            todo_hours += job.hours
            gpu_hours += job.hours * job.gpus
        rows.append((job.id, state, str(job.gpus), hours, ", ".join(d.split("/", 1)[1] for d in job.deps) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines += [f"{s['checkpoint']}/{s['entry']}: not applicable ({s['reason']})" for s in graph.skipped]
    n_todo = sum(1 for j in graph.jobs if states.get(j.id) != "done" or (force and j.kind != "features"))
    lines.append(
        f"{len(graph.jobs)} jobs ({n_todo} to run) for {len(graph.checkpoints)} checkpoint(s) of suite "
        f"{graph.suite}; estimated {todo_hours:g} h wall one after another, {gpu_hours:g} device-h (x GPUs asked)"
        + (f" on {graph.machine}" if graph.machine else "")
        + " (estimates from the suite's `hours`; feature jobs are inside their protocols' estimates)"
    )
    return "\n".join(lines)


__all__ = ["Checkpoint", "Graph", "Job", "build_graph", "job_states", "plan_text", "read_checkpoints"]
