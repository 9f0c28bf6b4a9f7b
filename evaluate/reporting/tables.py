"""``sslbench tables``: the papers' tables regenerated from records, plus the full-protocol table.

For every table of ``results/reference`` (:mod:`evaluate.reporting.reference`) the layout is rebuilt with the published rows
as printed, then one row per checkpoint of the results store, filled through the column mapping of
:mod:`evaluate.reporting.table_specs`. A measured cell carries a numbered reference to its record (run id, protocol, dataset,
metric, key settings); a cell without a record reads ``n/m``; a column sslbench has no protocol for reads ``n/a``.
No number is ever filled in otherwise. Each table is written as Markdown, LaTeX (booktabs) and CSV.

:func:`full_protocol_table` is the "after ``sslbench eval all``" view: one row per checkpoint, one column per
protocol / dataset / metric in the store, and the cost columns (wall time per protocol and in total, peak memory).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from evaluate.reporting.reference import RefRow, RefTable, reference_tables
from evaluate.reporting.table_specs import EXTRA_COLUMNS, Source, sources_for
from sslcore.errors import SSLBenchError
from sslcore.io import atomic_write_text

logger = logging.getLogger("sslbench")

NOT_MEASURED = "n/m"
NO_PROTOCOL = "n/a"
LOST = "?"
LEGEND = (
    "Cells: a number as printed in the paper; `?` printed but lost in the text extraction of the paper; `-` a dash "
    "printed in the paper; blank: not reported by that source; `n/m` not measured here (no record in the store); "
    "`n/a` sslbench has no protocol for this column; `[k]` measured here, see record k below "
    "(`sslbench results show RUN_ID`)."
)
PROTOCOL_ORDER = ("knn", "linear", "logreg", "cluster", "finetune", "davis", "coco", "ade20k")
MARKERS = {"dagger": "†", "double dagger": "‡", "dagger, double dagger": "†‡"}


@dataclasses.dataclass
class Ref:
    """A measured cell's record."""

    number: int
    run_id: str
    text: str


@dataclasses.dataclass
class TableView:
    """A rendered table: headers, rows of cell texts, references of measured cells, notes."""

    id: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    refs: list[Ref]
    cell_refs: dict[tuple[int, int], int]  # (row, column) -> reference number
    notes: list[str]


# ----------------------------------------------------------------------------------------------- cell logic
def format_published(cell: object) -> str:
    if cell is None:
        return LOST
    if isinstance(cell, bool):
        return "✓" if cell else "✗"
    return str(cell)


def format_measured(value: float, unit: str) -> str:
    return f"{value:.1f}" if unit == "%" else f"{value:.3g}"


def lookup(frame: pd.DataFrame, checkpoint_key: str, sources: Iterable[Source]) -> tuple[pd.Series, Source] | None:
    """The latest measured record of ``checkpoint_key`` for the first source alternative (and dataset) that has one."""
    mine = frame[frame["checkpoint_key"] == checkpoint_key]
    for source in sources:
        for dataset in source.datasets:
            hits = mine[(mine["protocol"] == source.protocol) & (mine["dataset"] == dataset)]
            hits = hits[(hits["metric"] == source.metric) & hits["settings"].map(source.matches)]
            if not hits.empty:
                hits = hits.sort_values(["created_ts", "_order"], na_position="first", kind="stable")
                return hits.iloc[-1], source
    return None


def _describe(rec: pd.Series, source: Source) -> str:
    text = f"run `{rec['run_id']}`: {rec['protocol']} on {rec['dataset']}"
    if rec["dataset"] != source.datasets[0]:
        text += f" (stand-in for {source.datasets[0]})"
    text += f", split {rec['split']}, metric {rec['metric']}"
    if rec["settings_summary"]:
        text += f"; {rec['settings_summary']}"
    if rec["checkpoint_sha256"]:
        text += f"; checkpoint sha256 {rec['checkpoint_sha256'][:12]}"
    return text


def measured_checkpoints(frame: pd.DataFrame, names: Iterable[str] | None = None) -> list[tuple[str, str, str]]:
    """(checkpoint_key, row label, arch label) of the measured checkpoints, in store order, optionally filtered."""
    measured = frame[frame["source"] == "measured"]
    firsts = measured.drop_duplicates("checkpoint_key")
    wanted = None if names is None else list(names)
    out = []
    counts = firsts["checkpoint"].value_counts()
    for rec in firsts.itertuples():
        if wanted is not None and rec.checkpoint not in wanted:
            continue
        label = rec.checkpoint if counts[rec.checkpoint] == 1 else f"{rec.checkpoint} ({rec.checkpoint_sha256[:8]})"
        out.append((rec.checkpoint_key, label, rec.checkpoint_arch))
    if wanted is not None:
        missing = sorted(set(wanted) - {c for c in firsts["checkpoint"]})
        if missing:
            raise SSLBenchError(f"checkpoint {missing[0]!r} has no measured record in the results store")
    return out


# ------------------------------------------------------------------------------------------------ layout
def regenerate(table: RefTable, frame: pd.DataFrame, checkpoints: Iterable[str] | None = None) -> TableView:
    """The table's layout with the published rows, then one row per measured checkpoint of ``frame``."""
    settings = [c for c in table.columns if c.kind == "setting"]
    attrs = [c for c in table.columns if c.kind == "attr"]
    metrics = table.metric_columns()
    extras = EXTRA_COLUMNS.get(table.id, [])
    has_group = any(r.group for r in table.rows)
    headers = (["Group"] if has_group else []) + ["Method", "Arch", "Ep.", "Batch"]
    headers += [c.header for c in settings + attrs + metrics] + [h for _k, h, _s in extras]
    sources = sources_for(table.id)

    def base(row: RefRow) -> list[str]:
        method = row.method + MARKERS.get(row.marker or "", "")
        cells = ([row.group or ""] if has_group else []) + [method, row.arch or ""]
        return cells + ["" if v is None else str(v) for v in (row.pretrain_epochs, row.batch)]

    rows, notes = [], []
    for row in table.rows:
        cells = base(row)
        cells += [format_published(row.settings.get(c.key)) if c.key in row.settings else "" for c in settings]
        cells += [format_published(row.attrs.get(c.key)) if c.key in row.attrs else "" for c in attrs]
        cells += [format_published(row.values[c.key]) if c.key in row.values else "" for c in metrics]
        cells += [""] * len(extras)
        rows.append(cells)
        if row.position_uncertain:
            printed = ", ".join(str(v) for v in row.printed_numbers_in_order or [])
            notes.append(f"{row.label}: numbers that survived extraction, column unknown: {printed}.")

    refs: list[Ref] = []
    cell_refs: dict[tuple[int, int], int] = {}
    measured = frame[frame["source"] == "measured"] if not frame.empty else frame
    ckpts = measured_checkpoints(measured, checkpoints) if sources and not measured.empty else []
    if not sources:
        notes.append("sslbench has no protocol for this table's columns; published rows only.")
    first_metric = len(headers) - len(metrics) - len(extras)
    for key, label, arch in ckpts:
        cells = ([""] if has_group else []) + [label, arch, "", ""] + [""] * (len(settings) + len(attrs))
        keys = [c.key for c in metrics] + [k for k, _h, _s in extras]
        units = {c.key: c.unit or "%" for c in metrics}
        for j, col_key in enumerate(keys):
            if col_key not in sources:
                cells.append(NO_PROTOCOL)
                continue
            hit = lookup(measured, key, sources[col_key])
            if hit is None:
                cells.append(NOT_MEASURED)
                continue
            rec, source = hit
            refs.append(Ref(len(refs) + 1, rec["run_id"], _describe(rec, source)))
            cell_refs[(len(rows), first_metric + j)] = refs[-1].number
            cells.append(format_measured(float(rec["value"]), units.get(col_key, rec["unit"])))
        rows.append(cells)
    title = f"{table.id}: {table.title}"
    if table.paper_table:
        title += f" ({(table.paper or '').upper()} Table {table.paper_table})".replace("( ", "(")
    return TableView(table.id, title, headers, rows, refs, cell_refs, notes)


# -------------------------------------------------------------------------------------------- renderers
def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _setting_text(value: object) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def to_markdown(view: TableView, settings: dict | None = None, citation: str = "") -> str:
    lines = [f"### {view.title}", ""]
    if citation:
        lines += [f"Source: {citation}.", ""]
    if settings:
        lines += [
            "Protocol: " + "; ".join(f"{k}: {_setting_text(v)}" for k, v in settings.items() if v is not None) + ".",
            "",
        ]
    lines.append("| " + " | ".join(_md_escape(h) for h in view.headers) + " |")
    lines.append("|" + "|".join("---" for _ in view.headers) + "|")
    for i, row in enumerate(view.rows):
        cells = []
        for j, cell in enumerate(row):
            ref = view.cell_refs.get((i, j))
            cells.append(_md_escape(cell) + (f" [[{ref}]](#{view.id}-r{ref})" if ref else ""))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for note in view.notes:
        lines += [f"Note: {note}", ""]
    if view.refs:
        lines += ["Records:", ""]
        lines += [f'- <a id="{view.id}-r{r.number}"></a>[{r.number}] {r.text}' for r in view.refs]
        lines.append("")
    return "\n".join(lines)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}"}
_TEX.update({"~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "✓": r"$\checkmark$", "✗": r"$\times$"})
_TEX.update({"†": r"$^\dagger$", "‡": r"$^\ddagger$"})


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def to_latex(view: TableView, citation: str = "") -> str:
    n_text = sum(1 for h in view.headers if h in ("Group", "Method", "Arch"))
    spec = "l" * n_text + "r" * (len(view.headers) - n_text)
    lines = [
        r"\begin{table}[t]",
        r"\centering\small",
        rf"\caption{{{tex_escape(view.title)}{'. ' + tex_escape(citation) if citation else ''}}}",
        rf"\label{{tab:{view.id.replace('_', '-')}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(tex_escape(h) for h in view.headers) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(view.rows):
        cells = []
        for j, cell in enumerate(row):
            ref = view.cell_refs.get((i, j))
            cells.append(tex_escape(cell) + (rf"\textsuperscript{{{ref}}}" if ref else ""))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = [tex_escape(n) for n in view.notes] + [
        f"{r.number}: {tex_escape(r.text.replace('`', ''))}" for r in view.refs
    ]
    if notes:
        lines.append(r"\par\footnotesize " + r" \\ ".join(notes))
    lines += [r"\end{table}", ""]
    return "\n".join(lines)


def to_frame(view: TableView) -> pd.DataFrame:
    """The table as a DataFrame (cell texts) with a ``records`` column: ``header=run_id`` of measured cells."""
    frame = pd.DataFrame(view.rows, columns=view.headers)
    by_number = {r.number: r.run_id for r in view.refs}
    frame["records"] = [
        "; ".join(f"{view.headers[j]}={by_number[n]}" for (r, j), n in sorted(view.cell_refs.items()) if r == i)
        for i in range(len(view.rows))
    ]
    return frame


# ------------------------------------------------------------------------------------ full-protocol table
def natural_key(text: str) -> tuple:
    """Sort key with digit runs compared as numbers: ``top1@k10 < top1@k20 < top1@k100``."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text)))


def full_protocol_table(records_df: pd.DataFrame, checkpoints: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per measured checkpoint, one column per ``protocol/dataset/metric`` (latest record), cost columns.

    Cost columns: ``<protocol> wall [s]`` (sum over that checkpoint's distinct runs), ``total wall [s]``,
    ``peak RSS [MiB]`` and, when recorded, ``peak CUDA [MiB]`` (maxima over runs).
    """
    measured = records_df[records_df["source"] == "measured"] if not records_df.empty else records_df
    ckpts = measured_checkpoints(measured, checkpoints) if not measured.empty else []
    if not ckpts:
        return pd.DataFrame()
    rank = {p: i for i, p in enumerate(PROTOCOL_ORDER)}
    combos = measured[["protocol", "dataset", "split", "metric"]].drop_duplicates()
    splits = combos.groupby(["protocol", "dataset", "metric"])["split"].nunique()
    combos = combos.assign(_rank=combos["protocol"].map(lambda p: rank.get(p, len(rank))))
    combos = combos.assign(_metric=combos["metric"].map(natural_key))
    combos = combos.sort_values(["_rank", "protocol", "dataset", "_metric", "split"])
    protocols = list(dict.fromkeys(combos["protocol"]))
    rows = []
    for key, label, arch in ckpts:
        mine = measured[measured["checkpoint_key"] == key].sort_values(["created_ts", "_order"], kind="stable")
        row: dict[str, object] = {"checkpoint": label, "arch": arch}
        for c in combos.itertuples():
            name = f"{c.protocol}/{c.dataset}/{c.metric}"
            if splits[(c.protocol, c.dataset, c.metric)] > 1:
                name += f" [{c.split}]"
            hits = mine[
                (mine["protocol"] == c.protocol)
                & (mine["dataset"] == c.dataset)
                & (mine["split"] == c.split)
                & (mine["metric"] == c.metric)
            ]
            row[name] = hits["value"].iloc[-1] if not hits.empty else float("nan")
        runs = mine.drop_duplicates("run_id")
        for protocol in protocols:
            wall = runs.loc[runs["protocol"] == protocol, "wall_time_s"].dropna()
            row[f"{protocol} wall [s]"] = wall.sum() if not wall.empty else float("nan")
        row["total wall [s]"] = (
            runs["wall_time_s"].dropna().sum() if runs["wall_time_s"].notna().any() else float("nan")
        )
        row["peak RSS [MiB]"] = runs["peak_rss_mb"].max()
        if runs["peak_cuda_mb"].notna().any():
            row["peak CUDA [MiB]"] = runs["peak_cuda_mb"].max()
        rows.append(row)
    return pd.DataFrame(rows).set_index("checkpoint")


def full_table_view(table: pd.DataFrame) -> TableView:
    headers = ["Checkpoint", *[str(c) for c in table.columns]]
    rows = []
    for label, values in table.iterrows():
        cells = [str(label)]
        for col, value in values.items():
            if isinstance(value, str):
                cells.append(value)
            elif pd.isna(value):
                cells.append(NOT_MEASURED if "/" in str(col) else "")
            else:
                cells.append(f"{value:.1f}" if col.endswith(("[s]", "[MiB]")) else f"{value:.2f}")
        rows.append(cells)
    notes = ["latest run per checkpoint and column; `n/m` = no record; wall time summed over distinct runs."]
    return TableView(
        "full_protocol", "Full protocol: every measured metric per checkpoint", headers, rows, [], {}, notes
    )


def full_protocol_markdown(records_df: pd.DataFrame, checkpoints: Iterable[str] | None = None) -> str:
    """The full-protocol table as Markdown (for reports that inline it); empty string without measured records."""
    full = full_protocol_table(records_df, checkpoints)
    return "" if full.empty else to_markdown(full_table_view(full))


# ------------------------------------------------------------------------------------------------- writer
def _write_view(view: TableView, out_dir: Path, settings: dict | None = None, citation: str = "") -> list[Path]:
    paths = [
        atomic_write_text(out_dir / f"{view.id}.md", to_markdown(view, settings, citation) + "\n" + LEGEND + "\n"),
        atomic_write_text(out_dir / f"{view.id}.tex", to_latex(view, citation)),
        atomic_write_text(out_dir / f"{view.id}.csv", to_frame(view).to_csv(index=False)),
    ]
    return paths


def build_tables(
    records_df: pd.DataFrame,
    out_dir: str | Path,
    which: str = "all",
    checkpoints: Iterable[str] | None = None,
    reference_dir: str | Path | None = None,
) -> list[Path]:
    """Write the paper tables of ``which`` (bam, adclr, sere, readme, all) and, for ``all`` or ``full``, the
    full-protocol table, as ``<id>.md/.tex/.csv`` in ``out_dir``, plus an index ``README.md``. Returns the paths.

    ``records_df`` is a :func:`evaluate.reporting.results.query` frame (de-duplicated); ``checkpoints`` restricts the
    measured rows to these names.
    """
    out_dir = Path(out_dir)
    checkpoints = list(checkpoints) if checkpoints is not None else None
    tables = [] if which == "full" else reference_tables(which, reference_dir)
    paths: list[Path] = []
    index = ["# Regenerated tables", "", LEGEND, ""]
    for table in tables:
        view = regenerate(table, records_df, checkpoints)
        paths += _write_view(view, out_dir, table.protocol, table.citation)
        index.append(f"- [{view.title}]({view.id}.md) ({len(view.refs)} measured cells)")
    if which in ("all", "full"):
        full = full_protocol_table(records_df, checkpoints)
        if full.empty:
            logger.warning("no measured records: the full-protocol table is not written")
        else:
            view = full_table_view(full)
            paths += _write_view(view, out_dir)
            index.insert(4, f"- [{view.title}]({view.id}.md) ({len(full)} checkpoints)")
    paths.append(atomic_write_text(out_dir / "README.md", "\n".join(index) + "\n"))
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=None, help="results store (default: $SSLBENCH_RESULTS or results/records)")
    parser.add_argument("--out", default="reports/tables", help="output directory")
    parser.add_argument("--paper", default="all", choices=("all", "bam", "adclr", "sere", "readme", "full"))
    parser.add_argument("--checkpoints", default=None, help="comma-separated checkpoint names for the measured rows")


def run_cli(args: argparse.Namespace) -> int:
    from evaluate.reporting.results import query
    from sslcore.io import check_writable

    check_writable(args.out, "--out")
    frame = query(args.store)
    names = [n.strip() for n in args.checkpoints.split(",") if n.strip()] if args.checkpoints else None
    paths = build_tables(frame, args.out, which=args.paper, checkpoints=names)
    print(f"{len(paths)} files in {args.out} ({len(frame)} measured records)")
    return 0


__all__ = ["build_tables", "full_protocol_markdown", "full_protocol_table", "regenerate", "to_latex", "to_markdown"]
