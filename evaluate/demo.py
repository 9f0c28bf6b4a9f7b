"""``sslbench demo``: the end-to-end demonstration on the embedded ShapesWorld data.

Stages (each reuses its previous output unless ``--fresh``):
    1. data: generate ShapesWorld in every official format.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from evaluate.shapesworld.generate import PRESETS, generate

logger = logging.getLogger("sslbench")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="working directory for data, checkpoints and caches")
    parser.add_argument("--quick", action="store_true", help="tiny data and short runs (about 2 minutes; for tests)")
    parser.add_argument("--fresh", action="store_true", help="redo every stage instead of reusing earlier output")
    parser.add_argument("--seed", type=int, default=0)


def run_cli(args: argparse.Namespace) -> int:
    out = Path(args.out)
    timings: dict[str, float] = {}
    start = time.time()
    spec = PRESETS["tiny" if args.quick else "demo"]
    manifest = generate(out / "data" / "shapesworld", spec, seed=args.seed, force=args.fresh)
    timings["data"] = round(time.time() - start, 2)
    summary = {"data": str(out / "data" / "shapesworld"), "counts": manifest["counts"], "stage_seconds": timings}
    print(json.dumps(summary, indent=2))
    return 0
