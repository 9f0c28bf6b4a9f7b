"""``sslbench data list`` (the registry) and ``sslbench data check NAME:ROOT`` (read every split, check the counts)."""

from __future__ import annotations

import argparse

from evaluate.datasets.registry import DATASETS, check_count, load_images, parse_data_arg, require_spec
from sslcore.errors import ConfigError, DataError


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "The datasets --data NAME:ROOT accepts, with their splits, roles, metric and counts."


def run_list(args: argparse.Namespace) -> int:
    print(f"{'name':<11} {'classes':>7}  {'metric':<14} {'train/val/test':<24} counts")
    for spec in DATASETS.values():
        roles = f"{spec.train}/{spec.val or '-'}/{spec.test}"
        counts = ", ".join(f"{k} {v}" for k, v in spec.counts.items())
        print(f"{spec.name:<11} {spec.num_classes:>7}  {spec.metric:<14} {roles:<24} {counts}")
    return 0


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Read every official split of a dataset as sslbench will (no image is decoded) and compare class and image "
        "counts with the official release. Exit 2 on a missing file or a wrong count."
    )
    parser.add_argument("data", metavar="NAME:ROOT", help="e.g. food101:/data/food-101 (see 'sslbench data list')")
    parser.add_argument("--partial", action="store_true", help="report count mismatches without failing")


def run_check(args: argparse.Namespace) -> int:
    name, root = parse_data_arg(args.data)
    if name is None:
        raise ConfigError(f"{args.data!r}: expected NAME:ROOT with NAME one of {', '.join(DATASETS)}")
    spec = require_spec(name)
    print(f"{spec.title} ({spec.name}) at {root}: reader {spec.reader}; metric {spec.metric}")
    print(f"roles: train {spec.train}, val {spec.val or '(held out of train)'}, test {spec.test}")
    mismatches = 0
    for split in spec.splits:
        images = load_images(spec, root, split, check_counts=False)
        try:
            check_count(spec, images, split)
            status = "ok"
        except DataError as exc:
            if not args.partial:
                raise
            mismatches += 1
            status = f"MISMATCH: {exc}"
        print(f"  {split:<9} {len(images):>8} images  {len(images.classes):>5} classes  {status}")
    return 0 if not mismatches or args.partial else 2
