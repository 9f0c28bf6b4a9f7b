"""Published numbers of the reference papers (``results/reference/*.yaml``): schema, loader, records.

One YAML file per paper (``bam``, ``adclr``, ``sere``) plus ``readme`` (numbers from the official READMEs). Layout::

    schema: sslbench-reference/v1
    paper: bam                      # file-level key
    title, citation, code, caveat   # citation is copied into every record's settings
    tables:
      - id: bam.table2_linear       # <paper>.table<N>_<slug> or <repo>.readme_<slug>
        paper: bam | null           # null for READMEs of related repositories
        paper_table: "2" | null     # number as referenced in the paper's text
        kind: main | ablation | analysis | readme
        title, source, protocol     # protocol: the evaluation settings of the table (free key -> value)
        columns: [{key, header, kind: metric | setting | attr, unit?}]
        rows: [{method, arch, pretrain_epochs, batch, values: {metric key -> cell}, settings?, attrs?,
                group?, marker?, source?, position_uncertain?, printed_numbers_in_order?}]

A cell is a number (as printed, percent unless the column has a ``unit``), ``null`` (printed in the paper but lost in
the text extraction: unknown), ``"-"`` (the paper prints a dash) or another printed string (e.g. ``"collapse"``). A
metric key missing from a row means the source does not report it. The numbers were transcribed from the papers'
texts (see ``scripts/make_reference.py``); nothing was filled in from memory.

:func:`published_records` turns every numeric cell into a :class:`~evaluate.reporting.records.Record` with ``source:
"published"``, ``checkpoint.name: "<method> <arch>"`` and ``settings.citation`` / ``settings.table``.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import yaml

from evaluate.reporting.records import Record
from sslcore.errors import SSLBenchError
from sslcore.io import REPO_ROOT

REFERENCE_DIR = REPO_ROOT / "results" / "reference"
SCHEMA = "sslbench-reference/v1"
PAPER_FILES = ("bam", "adclr", "sere", "readme")
TABLE_KINDS = ("main", "ablation", "analysis", "readme")
COLUMN_KINDS = ("metric", "setting", "attr")
Cell = float | int | str | None


@dataclasses.dataclass(frozen=True)
class RefColumn:
    key: str
    header: str
    kind: str
    unit: str | None = None


@dataclasses.dataclass(frozen=True)
class RefRow:
    method: str
    arch: str | None
    pretrain_epochs: int | None
    batch: int | None
    values: dict[str, Cell]
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    group: str | None = None
    marker: str | None = None
    source: str | None = None
    position_uncertain: bool = False
    printed_numbers_in_order: list[float] | None = None

    @property
    def label(self) -> str:
        """The row's name in tables and records: ``"<method> <arch>"``."""
        return f"{self.method} {self.arch}" if self.arch else self.method


@dataclasses.dataclass(frozen=True)
class RefTable:
    id: str
    paper: str | None
    paper_table: str | None
    kind: str
    title: str
    source: dict[str, Any]
    protocol: dict[str, Any]
    columns: list[RefColumn]
    rows: list[RefRow]
    citation: str = ""

    def metric_columns(self) -> list[RefColumn]:
        return [c for c in self.columns if c.kind == "metric"]


@dataclasses.dataclass(frozen=True)
class RefPaper:
    paper: str
    title: str
    citation: str
    tables: list[RefTable]
    code: str | None = None
    caveat: str | None = None


def _fields(cls: type, data: Any, where: str) -> dict[str, Any]:
    """Check ``data`` is a mapping with the dataclass's required keys and no unknown ones."""
    if not isinstance(data, dict):
        raise SSLBenchError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SSLBenchError(f"{where}: unknown key {unknown[0]!r} (valid: {', '.join(fields)})")
    missing = [
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and n not in data
    ]
    if missing and not (cls is RefTable and missing == ["citation"]):
        raise SSLBenchError(f"{where}: missing key {missing[0]!r}")
    return dict(data)


def _check_cell(value: Any, where: str) -> None:
    if isinstance(value, bool) or (value is not None and not isinstance(value, int | float | str)):
        raise SSLBenchError(f"{where}: a cell must be a number, null or a printed string, got {value!r}")


def _parse_table(data: Any, where: str, citation: str) -> RefTable:
    raw = _fields(RefTable, data, where)
    where = f"{where} ({raw['id']})"
    if raw["kind"] not in TABLE_KINDS:
        raise SSLBenchError(f"{where}: kind {raw['kind']!r} not in {TABLE_KINDS}")
    columns = []
    for i, col in enumerate(raw["columns"]):
        col = RefColumn(**_fields(RefColumn, col, f"{where}: columns[{i}]"))
        if col.kind not in COLUMN_KINDS:
            raise SSLBenchError(f"{where}: column {col.key!r} kind {col.kind!r} not in {COLUMN_KINDS}")
        columns.append(col)
    keys = [c.key for c in columns]
    if len(set(keys)) != len(keys):
        raise SSLBenchError(f"{where}: duplicate column keys")
    metric_keys = {c.key for c in columns if c.kind == "metric"}
    rows = []
    for i, row in enumerate(raw["rows"]):
        rwhere = f"{where}: rows[{i}]"
        row = RefRow(**_fields(RefRow, row, rwhere))
        if not isinstance(row.values, dict) or not row.values:
            raise SSLBenchError(f"{rwhere}: 'values' must be a non-empty mapping")
        extra = sorted(set(row.values) - metric_keys)
        if extra:
            raise SSLBenchError(f"{rwhere}: value key {extra[0]!r} is not a metric column")
        for key, value in row.values.items():
            _check_cell(value, f"{rwhere}.values.{key}")
        rows.append(row)
    if not rows:
        raise SSLBenchError(f"{where}: no rows")
    raw.update(columns=columns, rows=rows, citation=citation)
    return RefTable(**raw)


def load_paper(path: str | Path) -> RefPaper:
    """Parse and validate one reference file.

    Raises:
        SSLBenchError: naming the file, the table and the key at fault.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SSLBenchError(f"{path}: cannot read reference file ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise SSLBenchError(f"{path}: 'schema' must be {SCHEMA!r}")
    for key in ("paper", "title", "citation", "tables"):
        if key not in data:
            raise SSLBenchError(f"{path}: missing key {key!r}")
    unknown = sorted(set(data) - {"schema", "paper", "title", "citation", "code", "caveat", "tables"})
    if unknown:
        raise SSLBenchError(f"{path}: unknown key {unknown[0]!r}")
    tables = [_parse_table(t, f"{path}: tables[{i}]", data["citation"]) for i, t in enumerate(data["tables"])]
    ids = [t.id for t in tables]
    if len(set(ids)) != len(ids):
        raise SSLBenchError(f"{path}: duplicate table ids")
    return RefPaper(
        paper=data["paper"],
        title=data["title"],
        citation=data["citation"],
        tables=tables,
        code=data.get("code"),
        caveat=data.get("caveat"),
    )


@functools.lru_cache(maxsize=4)
def _load_all(directory: str) -> dict[str, RefPaper]:
    out = {}
    for name in PAPER_FILES:
        path = Path(directory) / f"{name}.yaml"
        if path.is_file():
            out[name] = load_paper(path)
    if not out:
        raise SSLBenchError(f"{directory}: no reference files ({', '.join(PAPER_FILES)}.yaml)")
    return out


def load_reference(directory: str | Path | None = None) -> dict[str, RefPaper]:
    """All reference files of ``directory`` (default ``results/reference``), keyed by file stem."""
    return _load_all(str(Path(directory) if directory else REFERENCE_DIR))


def reference_tables(paper: str = "all", directory: str | Path | None = None) -> list[RefTable]:
    """The tables of one file (``bam``, ``adclr``, ``sere``, ``readme``) or of all of them."""
    papers = load_reference(directory)
    if paper != "all" and paper not in papers:
        raise SSLBenchError(f"unknown reference paper {paper!r} (valid: all, {', '.join(papers)})")
    names = list(papers) if paper == "all" else [paper]
    return [t for name in names for t in papers[name].tables]


def is_number(cell: Cell) -> bool:
    return isinstance(cell, int | float) and not isinstance(cell, bool)


def published_records(directory: str | Path | None = None) -> list[Record]:
    """Every numeric published cell as a Record.

    A column that sslbench measures (:data:`evaluate.reporting.table_specs.COLUMN_SOURCES`) gets that protocol, the paper's
    dataset and sslbench's metric name, so published and measured numbers line up in queries; any other column
    keeps the table's evaluation name as protocol, the table id as dataset and the column key as metric.
    """
    from evaluate.reporting.table_specs import COLUMN_SOURCES

    out = []
    for table in reference_tables("all", directory):
        evaluation = table.protocol.get("evaluation", "")
        evaluation = evaluation if isinstance(evaluation, str) else "+".join(evaluation)
        units = {c.key: c.unit or "%" for c in table.columns}
        mapped = COLUMN_SOURCES.get(table.id, {})
        for i, row in enumerate(table.rows):
            for key, value in row.values.items():
                if not is_number(value):
                    continue
                if key in mapped:
                    protocol, dataset, metric = (
                        mapped[key][0].protocol,
                        mapped[key][0].datasets[0],
                        mapped[key][0].metric,
                    )
                else:
                    protocol, dataset, metric = evaluation, table.id, key
                settings = {
                    "citation": table.citation,
                    "table": table.id,
                    "paper_table": table.paper_table,
                    "column": key,
                    "row": i,
                    "pretrain_epochs": row.pretrain_epochs,
                    "batch": row.batch,
                    **{f"row.{k}": v for k, v in row.settings.items()},
                }
                out.append(
                    Record(
                        protocol=protocol,
                        dataset=dataset,
                        split="published",
                        metric=metric,
                        value=float(value),
                        checkpoint={"name": row.label},
                        settings=settings,
                        source="published",
                        unit=units[key],
                        run_id=f"{table.id}#{i}",
                    )
                )
    return out
