"""Score a folder of predicted DAVIS masks against the ground truth and write the official CSVs.

``<results>/<seq>/<frame>.png`` (indexed PNGs named like the GT) are compared with
``<davis_root>/Annotations/480p/<seq>/*.png`` under the semi-supervised rule of :mod:`evaluate.protocols.davis.metrics`.
The first and last frames are not read. ``global_results-<split>.csv`` and ``per-sequence_results-<split>.csv``
(fractions, 3 decimals, the official column names) are recomputed and rewritten atomically on every call; unlike
the official tool, existing CSVs are never read back.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from evaluate.protocols.davis.data import load_sequence, read_label, read_split
from evaluate.protocols.davis.metrics import BOUND_TH, GLOBAL_COLUMNS, SEQUENCE_COLUMNS, evaluate_sequence, summarize
from sslcore.errors import DataError
from sslcore.io import atomic_write_text

logger = logging.getLogger("sslbench")


def _stack(paths: list[Path], name: str) -> np.ndarray:
    maps = [read_label(p) for p in paths]
    shapes = {m.shape for m in maps}
    if len(shapes) != 1:
        raise DataError(f"{name}: masks differ in size ({sorted(shapes)})")
    return np.stack(maps)


def score_sequence(
    davis_root: str | Path, results: str | Path, name: str, bound_th: float = BOUND_TH
) -> tuple[np.ndarray, np.ndarray]:
    """J and F, each (K, T - 2), of one sequence's predictions."""
    seq = load_sequence(davis_root, name, annotations="all")
    gt_paths = [Path(davis_root) / "Annotations" / "480p" / name / f"{f.stem}.png" for f in seq.frames]
    if len(gt_paths) < 3:
        raise DataError(f"{name}: {len(gt_paths)} frames; the semi-supervised rule needs at least 3")
    gt = _stack(gt_paths, f"{davis_root}/Annotations/480p/{name}")
    pred_dir = Path(results) / name
    pred = _stack([pred_dir / p.name for p in gt_paths[1:-1]], str(pred_dir))
    if pred.shape[1:] != gt.shape[1:]:
        raise DataError(f"{pred_dir}: masks are {pred.shape[2]}x{pred.shape[1]}, GT is {gt.shape[2]}x{gt.shape[1]}")
    return evaluate_sequence(gt, pred, name=name, bound_th=bound_th)


def write_csvs(out_dir: str | Path, split: str, summary: dict[str, float], rows: list[dict]) -> tuple[Path, Path]:
    """Write the two official CSVs (fractions, 3 decimals) atomically."""
    out_dir = Path(out_dir)
    global_csv = out_dir / f"global_results-{split}.csv"
    seq_csv = out_dir / f"per-sequence_results-{split}.csv"
    for path, frame in (
        (global_csv, pd.DataFrame([[summary[c] for c in GLOBAL_COLUMNS]], columns=list(GLOBAL_COLUMNS))),
        (seq_csv, pd.DataFrame(rows, columns=list(SEQUENCE_COLUMNS))),
    ):
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False, float_format="%.3f")
        atomic_write_text(path, buffer.getvalue())
    return global_csv, seq_csv


def score_results(
    davis_root: str | Path,
    results: str | Path,
    split: str = "val",
    sequences: list[str] | None = None,
    bound_th: float = BOUND_TH,
    write: bool = True,
) -> tuple[dict[str, float], list[dict]]:
    """Score every sequence of ``split`` (or ``sequences``) and write the CSVs into ``results``.

    Returns:
        (global metrics as fractions keyed by the official column names, per-object rows).
    """
    results = Path(results)
    if not results.is_dir():
        raise DataError(f"{results}: results directory not found")
    names = sequences or read_split(davis_root, split)
    per_sequence = {
        name: score_sequence(davis_root, results, name, bound_th)
        for name in tqdm(names, desc="J&F", unit="seq", leave=False, disable=len(names) < 2)
    }
    summary, rows = summarize(per_sequence)
    if write:
        paths = write_csvs(results, split, summary, rows)
        logger.info("wrote %s and %s", *paths)
    return summary, rows
