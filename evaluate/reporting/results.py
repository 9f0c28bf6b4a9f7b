"""Query API over the results store, and ``sslbench results ls|show|export``.

:func:`records_frame` flattens the store's records (``evaluate.reporting.records.read_records``) into a pandas DataFrame with
one row per metric: :data:`COLUMNS`. :func:`deduplicate` keeps the latest run for each key in :data:`DEDUP_KEY`
(checkpoint sha256 x protocol x dataset x split x metric x settings hash): re-running a protocol with the same settings
supersedes the earlier number, while a run with different settings (another k, another lr grid) is kept beside it.
"Latest" is the ``created`` timestamp, ties broken by the order in the store (later line wins).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from evaluate.reporting.records import read_records
from sslcore.errors import SSLBenchError
from sslcore.io import atomic_write_text, sha256_json

COLUMNS = [
    "protocol",
    "dataset",
    "split",
    "metric",
    "value",
    "unit",
    "source",
    "checkpoint",
    "checkpoint_sha256",
    "checkpoint_format",
    "checkpoint_arch",
    "checkpoint_which",
    "checkpoint_path",
    "settings_summary",
    "settings_hash",
    "settings",
    "seed",
    "wall_time_s",
    "peak_rss_mb",
    "peak_cuda_mb",
    "images_per_s",
    "run_id",
    "created",
    "code_version",
]
DEDUP_KEY = ["checkpoint_key", "protocol", "dataset", "split", "metric", "settings_hash"]

# The settings that distinguish runs of a protocol (docs/records.md), shown in listings and table footnotes.
KEY_SETTINGS: dict[str, tuple[str, ...]] = {
    "knn": ("T", "taps", "transform"),
    "linear": ("variant", "taps", "lr", "bn_head", "epochs"),
    "logreg": ("C", "grid", "selection"),
    "cluster": ("num_classes", "instances"),
    "finetune": ("recipe", "epochs", "global_batch", "effective_lr"),
    "davis": ("n_last_frames", "topk", "size_mask_neighborhood", "pos_interp"),
    "coco": ("config", "overrides"),
    "ade20k": ("config", "overrides"),
}


# Named pooled (CNN/MetaFormer) architectures as the papers print them: (family, depths, widths, extra) -> label
_POOLED_NAMES = {
    ("resnet", (3, 4, 6, 3), (64, 128, 256, 512), "bottleneck"): "ResNet-50",
    ("metaformer", (3, 12, 18, 3), (96, 192, 384, 576), "gelu"): "CAFormer-M36",
    ("metaformer", (3, 12, 18, 3), (96, 192, 384, 576), "starrelu"): "CAFormer-M36 (StarReLU)",
}


def _pooled_label(arch: dict[str, Any]) -> str:
    """``ResNet-50`` / ``CAFormer-M36`` for the published shapes, else e.g. ``ResNet L4 d256`` (blocks, output width)
    or ``MetaFormer L4 d96``."""
    family = arch["family"]
    depths, widths = tuple(arch.get("depths", ())), tuple(arch.get("widths", ()))
    extra = arch.get("block", "bottleneck") if family == "resnet" else arch.get("act", "gelu")
    named = _POOLED_NAMES.get((family, depths, widths, extra))
    if named:
        return named
    out = widths[-1] * (4 if extra == "bottleneck" else 1) if family == "resnet" and widths else (widths or (0,))[-1]
    return f"{'ResNet' if family == 'resnet' else 'MetaFormer'} L{sum(depths)} d{out}"


def arch_label(arch: Any) -> str:
    """A short label of a ``ViTArch`` dict: ``"ViT-p8 d32 L2 h2"`` (patch, width, depth, heads); of a pooled
    (ResNet/MetaFormer) arch dict: ``"ResNet-50"``, ``"CAFormer-M36"`` or ``"ResNet L4 d256"`` (blocks, width)."""
    if not isinstance(arch, dict):
        return "" if arch is None else str(arch)
    if arch.get("family") in ("resnet", "metaformer"):
        return _pooled_label(arch)
    try:
        return f"ViT-p{arch['patch_size']} d{arch['embed_dim']} L{arch['depth']} h{arch['num_heads']}"
    except KeyError:
        return json.dumps(arch, sort_keys=True)


def settings_summary(protocol: str, settings: dict[str, Any]) -> str:
    keys = KEY_SETTINGS.get(protocol, ())
    return " ".join(f"{k}={json.dumps(settings[k], default=str)}" for k in keys if k in settings)


def _flatten(rec: dict[str, Any], order: int) -> dict[str, Any]:
    ckpt = rec.get("checkpoint") or {}
    settings = rec.get("settings") or {}
    mem = rec.get("peak_memory") or {}
    name = ckpt.get("name") or (Path(ckpt["path"]).stem if ckpt.get("path") else "")
    sha = ckpt.get("sha256") or ""
    return {
        "protocol": rec.get("protocol", ""),
        "dataset": rec.get("dataset", ""),
        "split": rec.get("split", ""),
        "metric": rec.get("metric", ""),
        "value": rec.get("value"),
        "unit": rec.get("unit", "%"),
        "source": rec.get("source", "measured"),
        "checkpoint": name,
        "checkpoint_sha256": sha,
        "checkpoint_format": ckpt.get("format", ""),
        "checkpoint_arch": arch_label(ckpt.get("arch")),
        "checkpoint_which": ckpt.get("which", ""),
        "checkpoint_path": ckpt.get("path", ""),
        "settings_summary": settings_summary(rec.get("protocol", ""), settings),
        "settings_hash": sha256_json(settings)[:12],
        "settings": settings,
        "seed": rec.get("seed"),
        "wall_time_s": rec.get("wall_time_s"),
        "peak_rss_mb": mem.get("cpu_rss_mb"),
        "peak_cuda_mb": mem.get("cuda_mb"),
        "images_per_s": rec.get("images_per_s"),
        "run_id": rec.get("run_id", ""),
        "created": rec.get("created", ""),
        "code_version": rec.get("code_version"),
        "checkpoint_key": sha or f"name:{name}",
        "_order": order,
    }


def records_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Flatten record dicts (as in the store) into a DataFrame with :data:`COLUMNS` (+ helper ``checkpoint_key``)."""
    rows = [_flatten(r, i) for i, r in enumerate(records)]
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "checkpoint_key", "_order"])
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    frame["created_ts"] = pd.to_datetime(frame["created"], utc=True, errors="coerce", format="ISO8601")
    return frame


def deduplicate(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep the latest record per :data:`DEDUP_KEY` (by ``created``, then store order)."""
    if frame.empty:
        return frame
    ordered = frame.sort_values(["created_ts", "_order"], na_position="first", kind="stable")
    return ordered.drop_duplicates(DEDUP_KEY, keep="last").sort_values("_order", kind="stable")


def _as_set(value: str | Iterable[str] | None) -> set[str] | None:
    if value is None:
        return None
    return {value} if isinstance(value, str) else set(value)


def filter_frame(
    frame: pd.DataFrame,
    *,
    protocol: str | Iterable[str] | None = None,
    dataset: str | Iterable[str] | None = None,
    metric: str | Iterable[str] | None = None,
    checkpoint: str | Iterable[str] | None = None,
    source: str | None = None,
    settings: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Rows matching every given filter; ``checkpoint`` matches the name or a sha256 prefix; ``settings`` matches
    top-level settings values exactly."""
    mask = pd.Series(True, index=frame.index)
    for column, wanted in (("protocol", protocol), ("dataset", dataset), ("metric", metric)):
        wanted = _as_set(wanted)
        if wanted is not None:
            mask &= frame[column].isin(wanted)
    names = _as_set(checkpoint)
    if names is not None:
        by_sha = frame["checkpoint_sha256"].map(lambda s: any(s and s.startswith(n) for n in names))
        mask &= frame["checkpoint"].isin(names) | by_sha
    if source is not None:
        mask &= frame["source"] == source
    if settings:
        mask &= frame["settings"].map(lambda s: all(s.get(k) == v for k, v in settings.items()))
    return frame[mask]


def query(
    store: str | Path | None = None,
    *,
    dedup: bool = True,
    include_published: bool = False,
    reference_dir: str | Path | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """The store as a DataFrame (latest run per key unless ``dedup=False``), filtered by :func:`filter_frame`.

    With ``include_published`` the published numbers of ``results/reference`` are appended as records.
    """
    records = read_records(store)
    if include_published:
        from evaluate.reporting.reference import published_records

        records += [json.loads(r.to_json()) for r in published_records(reference_dir)]
    frame = records_frame(records)
    if dedup:
        frame = deduplicate(frame)
    return filter_frame(frame, **filters)


def runs_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run id: protocol, dataset, split, checkpoint, created, wall time and ``metrics`` summary."""
    if frame.empty:
        return pd.DataFrame(columns=["run_id", "created", "protocol", "dataset", "split", "checkpoint", "metrics"])
    groups = frame.groupby("run_id", sort=False)
    out = groups.agg(
        created=("created", "first"),
        protocol=("protocol", "first"),
        dataset=("dataset", "first"),
        split=("split", "first"),
        checkpoint=("checkpoint", "first"),
        settings=("settings_summary", "first"),
        wall_time_s=("wall_time_s", "first"),
        _order=("_order", "min"),
    )
    out["metrics"] = groups.apply(
        lambda g: " ".join(f"{m}={v:.4g}" for m, v in zip(g["metric"], g["value"])), include_groups=False
    )
    return out.sort_values("_order").drop(columns="_order").reset_index()


def export(frame: pd.DataFrame, out: str | Path, fmt: str | None = None) -> Path:
    """Write the frame's :data:`COLUMNS` as CSV (settings as JSON) or JSONL, atomically."""
    out = Path(out)
    fmt = fmt or out.suffix.lstrip(".")
    data = frame[COLUMNS].copy()
    if fmt == "csv":
        data["settings"] = data["settings"].map(lambda s: json.dumps(s, sort_keys=True, default=str))
        return atomic_write_text(out, data.to_csv(index=False))
    if fmt == "jsonl":
        lines = [json.dumps(r, sort_keys=True, default=str) for r in data.to_dict(orient="records")]
        return atomic_write_text(out, "".join(line + "\n" for line in lines))
    raise SSLBenchError(f"{out}: unknown export format {fmt!r} (valid: csv, jsonl)")


# ----------------------------------------------------------------------------------------------------- CLI
def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=None,
        help="results store directory or .jsonl file (default: $SSLBENCH_RESULTS or results/records)",
    )


def _add_filters(parser: argparse.ArgumentParser) -> None:
    _add_store(parser)
    parser.add_argument("--protocol", action="append", help="keep this protocol (repeatable)")
    parser.add_argument("--dataset", action="append", help="keep this dataset (repeatable)")
    parser.add_argument("--checkpoint", action="append", help="keep this checkpoint name or sha256 prefix (repeatable)")
    parser.add_argument("--all", action="store_true", help="keep superseded runs (no de-duplication)")
    parser.add_argument("--published", action="store_true", help="include the published numbers (results/reference)")


def _frame_from_args(args: argparse.Namespace) -> pd.DataFrame:
    if args.store and not Path(args.store).exists():  # a mistyped --store would read as an empty store
        raise SSLBenchError(f"--store {args.store}: no results store there (a directory or a .jsonl file)")
    return query(
        args.store,
        dedup=not args.all,
        include_published=args.published,
        protocol=args.protocol,
        dataset=args.dataset,
        checkpoint=args.checkpoint,
    )


def add_ls_arguments(parser: argparse.ArgumentParser) -> None:
    _add_filters(parser)


def run_ls(args: argparse.Namespace) -> int:
    runs = runs_frame(_frame_from_args(args))
    for row in runs.itertuples():
        wall = "" if pd.isna(row.wall_time_s) else f"{row.wall_time_s:.1f}s"
        print(
            f"{row.run_id}  {row.created:<24}  {row.protocol:<8} {row.dataset:<20} {row.split:<6} "
            f"{row.checkpoint:<20} {wall:>8}  {row.metrics}  {row.settings}".rstrip()
        )
    if runs.empty:
        print("no records", file=sys.stderr)
    return 0


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    _add_store(parser)
    parser.add_argument("run_id", help="run id (or a unique prefix)")


def find_run(run_id: str, store: str | Path | None = None) -> list[dict[str, Any]]:
    """The full records of one run, by run id or unique prefix."""
    records = read_records(store)
    ids = sorted({r.get("run_id", "") for r in records if r.get("run_id", "").startswith(run_id)})
    if not ids:
        raise SSLBenchError(f"run id {run_id!r} not found in the results store")
    if len(ids) > 1:
        raise SSLBenchError(f"run id prefix {run_id!r} is ambiguous ({', '.join(ids[:5])})")
    return [r for r in records if r.get("run_id") == ids[0]]


def run_show(args: argparse.Namespace) -> int:
    print(json.dumps(find_run(args.run_id, args.store), indent=2, sort_keys=True))
    return 0


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    _add_filters(parser)
    parser.add_argument("--format", choices=("csv", "jsonl"), default=None, help="default: from OUT's suffix")
    parser.add_argument("out", help="output file")


def run_export(args: argparse.Namespace) -> int:
    from sslcore.io import check_writable

    check_writable(Path(args.out).absolute().parent, "--out")
    frame = _frame_from_args(args)
    if frame.empty:  # an existing file stays as it is
        raise SSLBenchError(f"{args.store or 'results store'}: no record matches; {args.out} not written")
    path = export(frame, args.out, args.format)
    print(f"{len(frame)} records -> {path}")
    return 0
