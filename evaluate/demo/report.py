"""The demo's one-page report, ``<report>/README.md``: what ran, the numbers, the figures, the time of each stage.

Every number in it comes from the records of the demo's ``sslbench eval full`` run (through :mod:`evaluate.reporting.tables`)
or from the pretraining logs; the page is regenerated on every run of the demo and links the eval-full report
(``<report>/full``) for the comparison and cost tables and the papers' tables.
"""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path
from typing import Any

from evaluate.reporting.reference import reference_tables
from evaluate.reporting.tables import LEGEND, full_protocol_markdown, full_protocol_table, regenerate, to_markdown
from sslcore.io import atomic_write_text, git_sha, versions

# the demo's learning targets (issue: each method >= raw pixels + 10 and >= its own step 0 + 15 k-NN points)
PIXEL_MARGIN = 10.0
STEP0_MARGIN = 15.0
ENTROPY_TARGET = 0.9

# (column of the full-protocol table, header) of the headline table
HEADLINE = (
    ("knn/shapesworld/top1@k20", "k-NN top-1 (k=20)"),
    ("linear/shapesworld/top1", "linear top-1 (paper selection)"),
    ("linear/shapesworld/top1_heldout", "linear top-1 (held-out selection)"),
    ("logreg/shapesworld-1pct/top1", "semi-sup. 1 % logreg"),
    ("logreg/shapesworld-10pct/top1", "semi-sup. 10 % logreg"),
    ("logreg/shapesworld-transfer/top1", "transfer logreg"),
    ("cluster/shapesworld/nmi", "k-means NMI (C=10)"),
    ("cluster/shapesworld/acc", "k-means acc. (C=10)"),
    ("davis/shapesworld-davis/J&F-Mean", "DAVIS J&F"),
    ("coco/shapesworld-coco/bbox_mAP", "COCO box AP"),
    ("coco/shapesworld-coco/segm_mAP", "COCO mask AP"),
    ("ade20k/shapesworld-ade20k/mIoU", "ADE20K mIoU"),
    ("total wall [s]", "eval wall [s]"),
)


def headline_markdown(frame: Any, checkpoints: list[str], not_applicable: set[tuple[str, str]] | None = None) -> str:
    """The key metric of each protocol, one row per checkpoint (all values from the records); ``not_applicable``:
    (checkpoint, protocol) pairs without a job, shown as ``n/a`` (no record otherwise: ``n/m``)."""
    table = full_protocol_table(frame, checkpoints)
    columns = [(c, h) for c, h in HEADLINE if c in table.columns]
    na = not_applicable or set()
    lines = ["| checkpoint | " + " | ".join(h for _, h in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in table.iterrows():
        cells = [
            f"{row[c]:.1f}" if row[c] == row[c] else "n/a" if (name, c.split("/")[0]) in na else "n/m"
            for c, _ in columns
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _read_jsonl(log: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(meta, step records, epoch records) of a pretraining log through :func:`evaluate.reporting.figures.read_log` (lines a
    resumed run logged twice count once); each record holds only the keys its line had."""
    from evaluate.reporting.figures import read_log

    meta, steps, epochs = read_log(log)

    def records(frame: Any) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if v == v} for row in frame.to_dict("records")]  # v != v: NaN

    return meta, records(steps), records(epochs)


def _pretrain_summary(method: str, log: Path) -> list[str]:
    """Final loss, diagnostics and online k-NN from one pretraining log (JSONL, see docs/records.md)."""
    if not log.is_file():
        return [f"- `{method}`: no pretraining log at `{log}`."]
    meta, steps, epochs = _read_jsonl(log)
    if not steps:
        return [f"- `{method}`: no pretraining steps logged."]
    cfg = meta.get("config", {})
    first, last = steps[0], steps[-1]
    seconds = sum(e.get("seconds", 0.0) for e in epochs)
    knn = [(e["epoch"] + 1, e["knn_top1"]) for e in epochs if e.get("knn_top1") is not None]
    out = [
        f"- **{method}**: `{cfg.get('method', '?')}` on `{cfg.get('data', {}).get('root', '?')}`, "
        f"arch `{cfg.get('model', {}).get('arch', '?')}`, {cfg.get('train', {}).get('epochs', '?')} epochs, "
        f"batch {cfg.get('train', {}).get('batch_size', '?')}, {last['step'] + 1} steps, {seconds:.0f} s of training. "
        f"Loss {first['loss']:.3f} → {last['loss']:.3f}."
    ]
    if "diag/source_entropy" in last:
        uniform = last.get("diag/uniform_entropy")
        out.append(
            f"  Mean row entropy (nats), source {first['diag/source_entropy']:.2f} → {last['diag/source_entropy']:.2f}"
            + (f" (uniform ln(K-P) = {uniform:.2f})" if uniform else "")
            + f", Sinkhorn target {first['diag/target_entropy']:.2f} → {last['diag/target_entropy']:.2f}."
        )
    if "teacher_entropy" in last:
        out.append(
            f"  Teacher entropy {first['teacher_entropy']:.2f} → {last['teacher_entropy']:.2f} nats "
            f"(ln K = {math.log(last.get('teacher_num_outputs') or 1):.2f}), KL(batch mean ‖ uniform) "
            f"{last.get('teacher_kl_uniform', float('nan')):.2f}."
        )
    if knn:
        out.append("  Online k-NN top-1 (by epochs done): " + ", ".join(f"{e}: {v:.1f}" for e, v in knn) + ".")
    return out


def _value(table: Any, name: str, column: str) -> float:
    if name not in table.index or column not in table.columns:
        return float("nan")
    return float(table.loc[name, column])


def learning_check(frame: Any, logs: dict[str, Path], step0_of: dict[str, str], pixels: str) -> list[str]:
    """Each method's k-NN against raw pixels and its own step 0 (the targets of docs/demo.md), with the collapse
    diagnostics of its log (:func:`pretrain.diagnostics.collapse_findings`)."""
    from pretrain.diagnostics import collapse_findings

    names = [*logs, *dict.fromkeys(step0_of.values()), pixels]
    table = full_protocol_table(frame, names)
    if table.empty:
        return ["(no k-NN records)"]
    if "checkpoint" in table.columns:
        table = table.set_index("checkpoint")
    col = "knn/shapesworld/top1@k20"
    px = _value(table, pixels, col)
    lines = [
        f"k-NN top-1 (k = 20) on ShapesWorld val. Targets: at least {PIXEL_MARGIN:g} points above raw pixels and "
        f"{STEP0_MARGIN:g} above the method's own step 0; final source entropy below {100 * ENTROPY_TARGET:.0f} % of "
        "uniform (BAM); negative-pair projector cosine clearly below the positive one.",
        "",
        "| method | k-NN | raw pixels | Δ | own step 0 | Δ | targets met | diagnostics at the end |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, log in logs.items():
        knn, base = _value(table, method, col), _value(table, step0_of.get(method, ""), col)
        _meta, steps, epochs = _read_jsonl(log) if log.is_file() else ({}, [], [])
        records = [*steps, *epochs]
        last = steps[-1] if steps else {}
        diag = []
        if "diag/source_entropy" in last and last.get("diag/uniform_entropy"):
            diag.append(
                f"source entropy {100 * last['diag/source_entropy'] / last['diag/uniform_entropy']:.0f} % of uniform"
            )
        if "positive_cosine" in last:
            diag.append(f"cosine pos {last['positive_cosine']:.2f} / neg {last['negative_cosine']:.2f}")
        if last.get("teacher_num_outputs"):
            diag.append(
                f"teacher entropy {100 * last['teacher_entropy'] / math.log(last['teacher_num_outputs']):.0f} % of ln K"
            )
        rank = next((e["knn_eff_rank"] for e in reversed(epochs) if e.get("knn_eff_rank") is not None), None)
        if rank is not None:
            diag.append(f"eff. rank {rank:.1f}")
        shared = next((e["knn_mean_cosine"] for e in reversed(epochs) if e.get("knn_mean_cosine") is not None), None)
        if shared is not None:
            diag.append(f"feature cosine {shared:.2f}")
        findings = collapse_findings(records)
        diag += [f"**collapse**: {f}" for f in findings]
        met = (
            knn >= px + PIXEL_MARGIN
            and knn >= base + STEP0_MARGIN
            and not findings
            and (
                "diag/source_entropy" not in last
                or last["diag/source_entropy"] < ENTROPY_TARGET * last.get("diag/uniform_entropy", float("inf"))
            )
        )
        lines.append(
            f"| {method} | {knn:.1f} | {px:.1f} | {knn - px:+.1f} | {base:.1f} ({step0_of.get(method, '?')}) | "
            f"{knn - base:+.1f} | {'yes' if met else '**no**'} | {'; '.join(diag) or '—'} |"
        )
    return lines


def _measured_tables(frame: Any, checkpoints: list[str]) -> list[str]:
    """Markdown of every paper table that received at least one measured cell."""
    out = []
    for table in reference_tables("all"):
        view = regenerate(table, frame, checkpoints)
        if view.refs:
            out.append(to_markdown(view, table.protocol, table.citation))
    return out


def write_report(
    report: Path,
    made: dict[str, Any],
    timer: Any,
    result: Any,
    logs: dict[str, Path],
    step0_of: dict[str, str],
    *,
    plan_name: str,
    total: float,
    out: Path,
) -> Path:
    """``made``: ``frame`` (the eval-full run's records) and ``figures`` ({title: png}); ``result``: the
    :class:`evaluate.orchestration.full.FullResult` of the demo's eval stage."""
    from evaluate.checkpoints.baselines import is_baseline

    frame = made["frame"]
    names = [c.name for c in result.graph.checkpoints]
    pixels = next(c.name for c in result.graph.checkpoints if is_baseline(c.path))
    suite = Path(result.graph.suite_path)
    lines = [
        "# sslbench demo report",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by `sslbench demo`"
        + (" --quick" if plan_name == "quick" else "")
        + f" in {total / 60:.1f} min on {os.cpu_count()} CPU core(s) ({platform.machine()}); "
        f"code {git_sha() or 'unknown'}; "
        + ", ".join(f"{k} {v}" for k, v in versions().items() if k in ("torch", "timm", "sklearn")),
        "",
        "What ran: ShapesWorld data → pretraining of a tiny ViT on ShapesWorld classification/train with "
        + ", ".join(f"`{m}`" for m in logs)
        + " → two baselines: each method's own network at step 0 (untrained) and the raw pixels → "
        f"`sslbench eval full` with the `{suite.stem}` suite on all of them "
        f"([its report](full/README.md): comparison, cost per job, the papers' tables) → this page. Working files: "
        f"`{out}`. All numbers below are read from the result records "
        f"(`sslbench results ls --store {out / 'records'}`).",
        "",
    ]
    if result.failed:
        lines += ["## Failed evaluation jobs", ""]
        lines += [f"- {result.outcome[j.id]}: `{j.id}` (log: `{j.log}`)" for j in result.failed]
        lines.append("")
    lines += [
        "## Learning check: each method against its baselines",
        "",
        *learning_check(frame, logs, step0_of, pixels),
        "",
        "## Results: every protocol, every checkpoint",
        "",
        "Accuracies, NMI, J&F, AP and mIoU in %. ShapesWorld has 10 classes (chance 10 %); the transfer domain 8 "
        "(12.5 %). COCO / ADE20K are the tiny dense runs (6 iterations on two images: a check that the pipeline "
        "runs, not a measure of the features). "
        "`n/a`: not applicable to raw pixels: "
        + (
            "; ".join(f"{s['entry']} ({s['reason']})" for s in result.graph.skipped if s["checkpoint"] == pixels)
            or "nothing"
        )
        + ".",
        "",
        headline_markdown(frame, names, {(s["checkpoint"], s["protocol"]) for s in result.graph.skipped}),
        "",
        "<details><summary>Every measured metric (full-protocol table)</summary>",
        "",
        full_protocol_markdown(frame, names),
        "",
        LEGEND,
        "",
        "</details>",
        "",
        "## Pretraining",
        "",
        *[line for method, log in logs.items() for line in _pretrain_summary(method, log)],
        "",
        "## Figures",
        "",
    ]
    for key, png in made["figures"].items():
        rel = os.path.relpath(png, report)
        lines += [f"### {key}", "", f"![{key}]({rel}) ([PDF]({os.path.relpath(png.with_suffix('.pdf'), report)}))", ""]
    lines += [
        "## Paper tables with measured rows",
        "",
        "All regenerated tables: [full/tables/papers/README.md](full/tables/papers/README.md).",
        "",
    ]
    lines += _measured_tables(frame, names)
    lines += ["## Wall time of each stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in timer.seconds.items()]
    lines += [f"| {name} | {note} |" for name, note in timer.notes.items()]
    lines += [f"| **total** | {total:.1f} |", ""]
    return atomic_write_text(report / "README.md", "\n".join(lines) + "\n")
