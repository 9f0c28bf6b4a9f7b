"""The report of one ``sslbench eval full`` run: ``<report>/README.md``, ``tables/`` (md, tex, csv), ``figures/``.

* **comparison** (``tables/comparison.*``): one row per evaluated checkpoint, one column per suite entry and headline
  metric (:data:`HEADLINE`; clustering one column per number of classes), from the records this run's jobs wrote
  (``settings.job.key``; the latest run per job). Beneath them, the **published** rows: every paper row of
  ``results/reference`` (:func:`evaluate.reporting.reference.published_records`) with a number in one of these columns
  (same protocol, dataset and metric) and the architecture of one of the checkpoints (ViT-S/16, ViT-B/16, ...),
  labelled ``<method> <arch> (<table>)``. ShapesWorld columns have no published row. A (baseline, entry) pair
  without a job (``Graph.skipped``, e.g. DAVIS on raw pixels) reads ``n/a``; its reason is under **jobs**.
* **cost** (``tables/cost.*``): per job, wall time, device-hours (wall x GPUs asked for; CPU-h on a CPU run), peak
  resident and CUDA memory of that run alone, images/s, from the records; feature jobs from their markers.
* **jobs**: every job's outcome in this invocation, with the log path of each failed or blocked one, and every
  (checkpoint, entry) pair that has no job, with the reason.
* **papers' tables** (``tables/papers/``): :func:`evaluate.reporting.tables.build_tables` over this run's records.
* **figures**: last-block attention maps of each checkpoint on an image of the first classification dataset, the
  training curves of the fine-tunes (loss and top-1 per epoch, every checkpoint in one figure per suite entry), and
  the entropy, training-curve and collapse-diagnostic figures of the pretraining logs given (``--pretrain-log``;
  entropy from the logs that have it). A figure that cannot be made is named in the README with the reason, never
  silently dropped.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from evaluate.orchestration.jobgraph import Graph, marker_path
from evaluate.reporting.tables import TableView, to_frame, to_latex, to_markdown
from sslcore.io import atomic_write_text

logger = logging.getLogger("sslbench")

HEADLINE: dict[str, tuple[str, ...]] = {
    "knn": ("top1@k20", "mean_per_class@k20"),
    "linear": ("top1", "mean_per_class", "top1_heldout", "mean_per_class_heldout"),
    "logreg": ("top1", "mean_per_class"),
    "cluster": ("nmi", "ari", "acc"),
    "finetune": ("top1",),
    "davis": ("J&F-Mean", "J-Mean", "F-Mean"),
    "coco": ("bbox_mAP", "segm_mAP"),
    "ade20k": ("mIoU", "mAcc"),
    "voc": ("mIoU",),
    "imagenet-s": ("mIoU",),
}
ARCH_NAMES = {192: "Ti", 384: "S", 768: "B", 1024: "L"}


def paper_arch(arch: dict[str, Any] | None) -> str | None:
    """``ViT-S/16`` etc. for the papers' architectures (width and depth as in the papers), else None."""
    if not isinstance(arch, dict):
        return None
    width, depth, patch = arch.get("embed_dim"), arch.get("depth"), arch.get("patch_size")
    name = ARCH_NAMES.get(width)
    if name is None or depth != (24 if name == "L" else 12):
        return None
    return f"ViT-{name}/{patch}"


def run_records(graph: Graph, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The measured records of this graph's protocol jobs, the latest run per job (all its run ids for jobs with
    several, e.g. one per C of clustering), each labelled with its job's checkpoint name (a record made under another
    label for the same weights and settings is this run's result: copies carry this run's label)."""
    keys = {j.key: j for j in graph.jobs if j.kind != "features"}
    by_job: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        job = (rec.get("settings") or {}).get("job") or {}
        if rec.get("source", "measured") == "measured" and job.get("key") in keys:
            by_job.setdefault(job["key"], []).append(rec)
    out = []
    for key, recs in by_job.items():
        runs: dict[str, str] = {}
        for rec in recs:
            runs[rec.get("run_id", "")] = max(runs.get(rec.get("run_id", ""), ""), rec.get("created", ""))
        keep = set(sorted(runs, key=lambda r: runs[r])[-keys[key].expected_runs :])
        label = keys[key].checkpoint
        for rec in recs:
            if rec.get("run_id", "") in keep:
                out.append({**rec, "checkpoint": {**(rec.get("checkpoint") or {}), "name": label}})
    return out


def run_frame(graph: Graph, records: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """:func:`run_records` as a de-duplicated :func:`evaluate.reporting.results.records_frame` (what the tables read);
    ``records`` default to the results store's."""
    from evaluate.reporting.records import default_store, read_records
    from evaluate.reporting.results import deduplicate, records_frame

    if records is None:
        store = default_store()
        records = read_records(store) if store.exists() else []
    return deduplicate(records_frame(run_records(graph, records)))


def _column(entry: str, rec: dict[str, Any], sweep: bool) -> str:
    """``<entry>: <metric>``; clustering adds ``C=<classes>``, a DAVIS sweep its setting."""
    settings = rec.get("settings") or {}
    variant = ""
    if rec["protocol"] == "cluster" and settings.get("num_classes") is not None:
        variant = f" C={settings['num_classes']}"
    elif rec["protocol"] == "davis" and sweep:
        keys = ("n_last_frames", "topk", "size_mask_neighborhood")
        variant = " " + "/".join(str(settings.get(k)) for k in keys)
    return f"{entry}{variant}: {rec['metric']}"


def comparison(graph: Graph, records: list[dict[str, Any]]) -> tuple[pd.DataFrame, dict[str, tuple[str, str, str]]]:
    """(table: checkpoint x column of values, column -> (protocol, dataset, metric))."""
    entries = list(dict.fromkeys(j.entry for j in graph.jobs if j.entry))
    sweeps = {j.key for j in graph.jobs if j.expected_runs > 1}
    # the row is the job's checkpoint (a record made under another label for the same file and settings counts)
    owners = {j.key: j.checkpoint for j in graph.jobs}  # (run_records labels them so; records given directly too)
    columns: dict[str, tuple[str, str, str]] = {}
    values: dict[tuple[str, str], float] = {}
    for rec in records:
        headline = HEADLINE.get(rec["protocol"])
        if headline and rec["metric"] not in headline:
            continue
        entry = rec["settings"]["job"]["id"]
        col = _column(entry, rec, rec["settings"]["job"]["key"] in sweeps)
        columns.setdefault(col, (rec["protocol"], rec["dataset"], rec["metric"]))
        values[(owners[rec["settings"]["job"]["key"]], col)] = float(rec["value"])
    order = {e: i for i, e in enumerate(entries)}

    def sort_key(col: str) -> tuple:
        entry = col.split(":")[0].split(" C=")[0]
        protocol, _, metric = columns[col]
        rank = HEADLINE.get(protocol, (metric,))
        return (order.get(entry, len(order)), col.split(":")[0], rank.index(metric) if metric in rank else 99)

    cols = sorted(columns, key=sort_key)
    table = pd.DataFrame(
        [[values.get((c.name, col), math.nan) for col in cols] for c in graph.checkpoints],
        index=[c.name for c in graph.checkpoints],
        columns=cols,
    )
    return table, columns


def published_rows(graph: Graph, columns: dict[str, tuple[str, str, str]]) -> pd.DataFrame:
    """Published paper rows (of the checkpoints' architectures) with a number in one of ``columns``."""
    from evaluate.reporting.reference import published_records

    archs = {a for a in (paper_arch(c.arch) for c in graph.checkpoints) if a}
    wanted: dict[tuple[str, str, str], list[str]] = {}
    for col, key in columns.items():
        wanted.setdefault(key, []).append(col)
    rows: dict[str, dict[str, float]] = {}
    for rec in published_records():
        key = (rec.protocol, rec.dataset, rec.metric)
        label = rec.checkpoint.get("name", "")
        if key not in wanted or not any(label.endswith(f" {a}") for a in archs):
            continue
        row = rows.setdefault(f"{label} ({rec.settings.get('table')})", {})
        for col in wanted[key]:
            row.setdefault(col, rec.value)
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(columns)) if rows else pd.DataFrame()


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float | int) else str(value)


def comparison_view(
    table: pd.DataFrame, published: pd.DataFrame, not_applicable: set[tuple[str, str]] | None = None
) -> TableView:
    """``not_applicable``: (checkpoint, entry id) pairs without a job (``n/a`` instead of ``n/m``)."""
    headers = ["Checkpoint", *table.columns]
    na = not_applicable or set()

    def cell(name: str, col: str, value: float) -> str:
        if not math.isnan(value):
            return _fmt(value)
        return "n/a" if (name, col.split(":")[0].split(" ")[0]) in na else "n/m"

    rows = [[name, *[cell(name, c, v) for c, v in values.items()]] for name, values in table.iterrows()]
    for name, values in published.iterrows():
        rows.append([f"published: {name}", *[_fmt(values.get(c)) for c in table.columns]])
    notes = [
        "measured rows: the latest run of each job of this suite run; `n/m`: no record (the job failed, was blocked "
        "or was not selected); `n/a`: the protocol does not apply to that checkpoint (a baseline without patch "
        "tokens; the reason is in the report's job list). Published rows: the papers' numbers for the same protocol, dataset and metric and "
        "the checkpoints' architecture (results/reference); blank: that paper row does not report the column."
    ]
    return TableView("comparison", "Every protocol, every checkpoint", headers, rows, [], {}, notes)


def cost_table(graph: Graph, records: list[dict[str, Any]]) -> TableView:
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in records:
        job = rec["settings"]["job"]
        row = runs.setdefault(job["key"], {"runs": {}})
        row["runs"][rec.get("run_id")] = rec
    headers = ["Checkpoint", "Job", "wall [s]", "device-h", "peak RSS [MiB]", "peak CUDA [MiB]", "images/s"]
    rows = []
    gpus = {j.id: j.gpus for j in graph.jobs}
    for job in graph.jobs:
        if job.kind == "features":
            marker = marker_path(graph, job)
            info = json.loads(marker.read_text()) if marker.is_file() else {}
            wall = info.get("seconds")
            rows.append(
                [
                    job.checkpoint,
                    job.id.split("/", 1)[1],
                    _fmt(wall, 1),
                    _fmt(wall and wall / 3600, 4),
                    _fmt(info.get("peak_memory", {}).get("cpu_rss_mb"), 0),
                    _fmt(info.get("peak_memory", {}).get("cuda_mb"), 0),
                    _fmt(info.get("images_per_s"), 1),
                ]
            )
            continue
        found = runs.get(job.key)
        if not found:
            rows.append([job.checkpoint, job.entry or "", "", "", "", "", ""])
            continue
        recs = list(found["runs"].values())
        wall = max((r.get("wall_time_s") or 0.0) for r in recs)  # runs of one job share its start (cluster, DAVIS)
        rss = max((r.get("peak_memory") or {}).get("cpu_rss_mb") or 0.0 for r in recs)
        cuda = [(r.get("peak_memory") or {}).get("cuda_mb") for r in recs]
        cuda = max((c for c in cuda if c is not None), default=None)
        ips = [r.get("images_per_s") for r in recs if r.get("images_per_s")]
        device_h = wall * (gpus.get(job.id, 1) if cuda is not None else 1) / 3600
        rows.append(
            [
                job.checkpoint,
                job.entry or "",
                _fmt(wall, 1),
                _fmt(device_h, 4),
                _fmt(rss, 0),
                _fmt(cuda, 0),
                _fmt(max(ips) if ips else None, 1),
            ]
        )
    notes = [
        "per job of this suite run; device-h = wall x GPUs asked for (wall x 1 on CPU: CPU-h of one process); peak "
        "memory and images/s are those of the job's own run (sslcore.io.start_meter)."
    ]
    return TableView("cost", "Cost of each job", headers, rows, [], {}, notes)


def write_view(view: TableView, out_dir: Path) -> list[Path]:
    return [
        atomic_write_text(out_dir / f"{view.id}.md", to_markdown(view)),
        atomic_write_text(out_dir / f"{view.id}.tex", to_latex(view)),
        atomic_write_text(out_dir / f"{view.id}.csv", to_frame(view).drop(columns="records").to_csv(index=False)),
    ]


def finetune_curves(graph: Graph, figures: Path) -> list[Path]:
    """One figure per fine-tuning entry: training loss and evaluated top-1 over epochs, one line per checkpoint
    (from each run's ``log.jsonl``, :mod:`evaluate.protocols.finetune.engine`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from evaluate.reporting.figures import read_log

    made: list[Path] = []
    entries = dict.fromkeys(j.entry for j in graph.jobs if j.kind == "finetune")
    for entry in entries:
        runs = []
        for job in graph.jobs:
            log = Path(job.spec.get("config", {}).get("out") or "") / "log.jsonl"
            if job.entry == entry and log.is_file():
                runs.append((job.checkpoint, read_log(log)[2]))
        if not runs:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for name, epochs in runs:
            x = epochs["epoch"] + 1
            if "loss" in epochs:
                axes[0].plot(x, epochs["loss"], label=name)
            if "top1" in epochs:
                rows = epochs.dropna(subset=["top1"])
                axes[1].plot(rows["epoch"] + 1, rows["top1"], marker="o", label=name)
        axes[0].set(title=f"{entry}: training loss", xlabel="epoch")
        axes[1].set(title=f"{entry}: top-1 (%)", xlabel="epoch")
        for ax in axes:
            ax.legend(fontsize=8)
        fig.tight_layout()
        figures.mkdir(parents=True, exist_ok=True)
        path = figures / f"finetune-{entry}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        made.append(path)
    return made


def _figures(graph: Graph, report: Path, pretrain_logs: list[str]) -> tuple[list[Path], list[str]]:
    made: list[Path] = []
    missing: list[str] = []
    figures = report / "figures"
    sample = None
    for job in graph.jobs:
        if job.kind in ("knn", "linear", "logreg", "cluster", "finetune") and sample is None:
            root = Path(job.spec["config"]["data"]["root"])
            sample = next(
                iter(sorted(p for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))), None
            )
    if sample is None:
        missing.append("attention maps: no image found in a classification dataset of the suite")
    else:
        from evaluate.checkpoints.baselines import is_baseline
        from evaluate.orchestration.jobshell import load_checkpoint
        from evaluate.reporting.figures import plot_attention

        for ckpt in graph.checkpoints:
            if is_baseline(ckpt.path):
                missing.append(f"attention map of {ckpt.name}: a baseline, not a network (no attention)")
                continue
            try:
                loaded = load_checkpoint(vars(ckpt))
                size = int(loaded.model.arch.img_size)
                made += plot_attention(
                    loaded,
                    sample,
                    figures,
                    image_size=size,
                    name=f"attention-{ckpt.name}",
                    title=f"{ckpt.name}: {sample.name}",
                )
            except Exception as exc:  # noqa: BLE001 - a figure never hides the tables
                missing.append(f"attention map of {ckpt.name}: {type(exc).__name__}: {exc}".splitlines()[0])
    curves = finetune_curves(graph, figures)
    made += curves
    if not curves and any(j.kind == "finetune" for j in graph.jobs):
        missing.append("fine-tuning curves: no fine-tuning log (log.jsonl) in the run directories")
    if pretrain_logs:
        from evaluate.reporting.figures import ENTROPY_KEYS, plot_collapse, plot_curves, plot_entropy, read_log

        logs = [Path(p) for p in pretrain_logs]
        with_entropy = []
        for log in logs:
            try:
                if ENTROPY_KEYS[0] in read_log(log)[1].columns:
                    with_entropy.append(log)
            except Exception:  # noqa: BLE001 - the curves below name the unreadable log
                pass
        for name, fn, paths in (
            ("entropy", plot_entropy, with_entropy),
            ("curves", plot_curves, logs),
            ("collapse", plot_collapse, logs),
        ):
            if not paths:
                missing.append(f"{name}: no pretraining log with {ENTROPY_KEYS[0]!r}")
                continue
            try:
                made += fn(paths, figures)
            except Exception as exc:  # noqa: BLE001
                missing.append(f"{name}: {type(exc).__name__}: {exc}".splitlines()[0])
    else:
        missing.append("entropy diagnostics and training curves: no pretraining log given (--pretrain-log)")
    return made, missing


def write_report(
    graph: Graph,
    outcome: dict[str, str],
    report: str | Path,
    records: list[dict[str, Any]] | None = None,
    figures: bool = True,
    pretrain_logs: list[str] | None = None,
) -> Path:
    """Write the report of ``graph`` (see the module docstring); returns the README path."""
    from evaluate.reporting.records import default_store, read_records
    from evaluate.reporting.tables import build_tables

    report = Path(report)
    if records is None:
        store = default_store()
        records = read_records(store) if store.exists() else []
    mine = run_records(graph, records)
    table, columns = comparison(graph, mine)
    published = published_rows(graph, columns)
    tables = report / "tables"
    na = {(s["checkpoint"], s["entry"]) for s in graph.skipped}
    views = [comparison_view(table, published, na), cost_table(graph, mine)]
    for view in views:
        write_view(view, tables)
    if mine:
        frame = run_frame(graph, records)  # this run's records only
        build_tables(frame, tables / "papers", which="all")  # every checkpoint of this run's records
    made, missing = _figures(graph, report, pretrain_logs or []) if figures else ([], ["figures: disabled"])
    lines = [
        f"# `sslbench eval full` — suite {graph.suite}",
        "",
        f"Suite: `{graph.suite_path}`" + (f"; cost estimates for {graph.machine}" if graph.machine else "") + ".",
        "Checkpoints: " + ", ".join(f"`{c.name}` ({c.path}, sha256 {c.sha256[:12]})" for c in graph.checkpoints) + ".",
        "",
        "## Comparison",
        "",
        to_markdown(views[0]).split("\n", 2)[2],
        "## Cost per job",
        "",
        to_markdown(views[1]).split("\n", 2)[2],
        "## Jobs of this invocation",
        "",
        "| Job | Outcome | Log |",
        "|---|---|---|",
    ]
    for job in graph.jobs:
        state = outcome.get(job.id, "not run")
        lines.append(f"| {job.id} | {state} | {job.log if state in ('failed', 'blocked') else ''} |")
    lines += [f"| {s['checkpoint']}/{s['entry']} | not applicable: {s['reason']} | |" for s in graph.skipped]
    lines += ["", "## Figures", ""]
    lines += [f"![{p.stem}](figures/{p.name})" for p in made if p.suffix == ".png"]
    lines += [f"- not made: {m}" for m in missing]
    lines += [
        "",
        "Tables: [comparison](tables/comparison.md) ([tex](tables/comparison.tex), [csv](tables/comparison.csv)), "
        "[cost](tables/cost.md), [the papers' tables](tables/papers/README.md).",
        "",
    ]
    return atomic_write_text(report / "README.md", "\n".join(lines))
