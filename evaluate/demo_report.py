"""The demo's one-page report, ``<report>/README.md``: what ran, the numbers, the figures, the time of each stage.

Every number in it comes from the result records (through :mod:`evaluate.tables`) or from the pretraining log; the
page is regenerated on every run of the demo.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from evaluate.reference import reference_tables
from evaluate.tables import LEGEND, full_protocol_markdown, full_protocol_table, regenerate, to_markdown
from sslcore.io import atomic_write_text, git_sha, versions

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
    ("total wall [s]", "eval wall [s]"),
)


def headline_markdown(frame: Any, checkpoints: list[str]) -> str:
    """The key metric of each protocol, one row per checkpoint (all values from the records)."""
    table = full_protocol_table(frame, checkpoints)
    columns = [(c, h) for c, h in HEADLINE if c in table.columns]
    lines = ["| checkpoint | " + " | ".join(h for _, h in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in table.iterrows():
        cells = ["n/m" if row[c] != row[c] else f"{row[c]:.1f}" for c, _ in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pretrain_summary(log: Path) -> list[str]:
    """Final loss, entropies and online k-NN from the pretraining log (JSONL, see docs/records.md)."""
    steps, epochs, meta = [], [], {}
    for line in log.read_text().splitlines():
        row = json.loads(line)
        {"step": steps, "epoch": epochs}.get(row.get("kind"), []).append(row)
        if row.get("kind") == "meta":
            meta = row
    if not steps:
        return ["(no pretraining steps logged)"]
    cfg = meta.get("config", {})
    first, last = steps[0], steps[-1]
    knn = [(e["epoch"], e["knn_top1"]) for e in epochs if e.get("knn_top1") is not None]
    out = [
        f"- Recipe: `{cfg.get('method', '?')}` on `{cfg.get('data', {}).get('root', '?')}`, "
        f"arch `{cfg.get('model', {}).get('arch', '?')}`, {cfg.get('train', {}).get('epochs', '?')} epochs, "
        f"batch {cfg.get('train', {}).get('batch_size', '?')}, {last['step']} steps.",
        f"- Loss {first['loss']:.3f} → {last['loss']:.3f}.",
    ]
    if "diag/source_entropy" in last:
        out.append(
            f"- Mean row entropy (nats), source {first['diag/source_entropy']:.2f} → {last['diag/source_entropy']:.2f}, "
            f"Sinkhorn target {first['diag/target_entropy']:.2f} → {last['diag/target_entropy']:.2f}."
        )
    if knn:
        out.append("- Online k-NN top-1 (teacher, by epoch): " + ", ".join(f"{e}: {v:.1f}" for e, v in knn) + ".")
    return out


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
    checkpoints: dict[str, Path],
    *,
    plan_name: str,
    total: float,
    out: Path,
) -> Path:
    frame = made["frame"]
    names = list(checkpoints)
    lines = [
        "# sslbench demo report",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by `sslbench demo`"
        + (" --quick" if plan_name == "quick" else "")
        + f" in {total / 60:.1f} min on {os.cpu_count()} CPU core(s) ({platform.machine()}); "
        f"code {git_sha() or 'unknown'}; "
        + ", ".join(f"{k} {v}" for k, v in versions().items() if k in ("torch", "timm", "sklearn")),
        "",
        "What ran: ShapesWorld data → BAM pretraining of a tiny ViT on ShapesWorld classification/train → a "
        "random-initialisation baseline (the same network at step 0, untrained) → every frozen-feature protocol on "
        "both → tables "
        f"and figures. Working files: `{out}`. All numbers below are read from the result records "
        f"(`sslbench results ls --store {out / 'records'}`).",
        "",
        "## Results: every protocol, both checkpoints",
        "",
        "Accuracies, NMI and J&F in %. ShapesWorld has 10 classes (chance 10 %); the transfer domain 8 (12.5 %).",
        "",
        headline_markdown(frame, names),
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
        *_pretrain_summary(out / "pretrain" / "bam" / "log.jsonl"),
        "",
        "## Figures",
        "",
    ]
    for key, paths in made["figures"].items():
        png = next(p for p in paths if p.suffix == ".png")
        rel = os.path.relpath(png, report)
        lines += [f"### {key}", "", f"![{key}]({rel}) ([PDF]({os.path.relpath(png.with_suffix('.pdf'), report)}))", ""]
    lines += [
        "## Paper tables with measured rows",
        "",
        "All regenerated tables: [tables/README.md](tables/README.md).",
        "",
    ]
    lines += _measured_tables(frame, names)
    lines += ["## Wall time of each stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in timer.seconds.items()]
    lines += [f"| {name} | {note} |" for name, note in timer.notes.items()]
    lines += [f"| **total** | {total:.1f} |", ""]
    return atomic_write_text(report / "README.md", "\n".join(lines) + "\n")
