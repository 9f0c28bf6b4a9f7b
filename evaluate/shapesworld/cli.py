"""``sslbench data shapes``: generate ShapesWorld in the official dataset formats."""

from __future__ import annotations

import argparse
import dataclasses
import json

from evaluate.shapesworld.formats import PARTS
from evaluate.shapesworld.generate import PRESETS, generate
from sslcore.errors import DataError
from sslcore.io import check_writable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--size", default="demo", choices=sorted(PRESETS), help="amount of data (default: demo)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical bytes")
    parser.add_argument("--image-size", type=int, default=None, help="classification/transfer image side in pixels")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--force", action="store_true", help="replace an existing tree with other settings")


def run_cli(args: argparse.Namespace) -> int:
    spec = PRESETS[args.size]
    if args.seed < 0:
        raise DataError(f"--seed {args.seed}: must be >= 0")
    if args.workers < 1:
        raise DataError(f"--workers {args.workers}: must be >= 1")
    check_writable(args.out, "--out")
    if args.image_size is not None:
        if args.image_size < 16:
            raise DataError(f"--image-size {args.image_size}: must be at least 16 pixels")
        spec = dataclasses.replace(spec, cls_size=args.image_size, transfer_size=args.image_size)
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    if not parts:
        raise DataError(f"--parts {args.parts!r}: name one or more of {','.join(PARTS)}")
    manifest = generate(args.out, spec, seed=args.seed, parts=parts, force=args.force, workers=args.workers)
    print(json.dumps({"out": args.out, "seed": manifest["seed"], "counts": manifest["counts"]}, indent=2))
    return 0
