"""``sslbench eval davis-score``: J&F of a folder of predicted DAVIS masks (the official semi-supervised metric)."""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--davis-root", required=True, help="DAVIS root with Annotations/480p and ImageSets/2017")
    parser.add_argument("--results", required=True, help="folder of <seq>/<frame>.png indexed masks")
    parser.add_argument("--split", default="val", help="ImageSets/2017/<split>.txt (default val)")
    parser.add_argument("--sequences", help="comma-separated subset of the split's sequences")
    parser.add_argument("--name", help="record checkpoint label (default: the results folder name)")
    parser.add_argument("--dataset", help="record dataset name (default: davis2017 or shapesworld-davis)")
    parser.add_argument("--no-record", action="store_true", help="write the CSVs only")


def run_cli(args: argparse.Namespace) -> int:
    from pathlib import Path

    from evaluate.protocols.davis.data import is_shapesworld
    from evaluate.protocols.davis.score import score_results
    from evaluate.reporting.records import append_records, make_records

    started = time.time()
    sequences = [s.strip() for s in args.sequences.split(",") if s.strip()] if args.sequences else None
    summary, rows = score_results(args.davis_root, args.results, args.split, sequences=sequences)
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value:.3f}")
    print(f"({len(rows)} objects; CSVs in {args.results})")
    if not args.no_record:
        dataset = args.dataset or ("shapesworld-davis" if is_shapesworld(args.davis_root) else "davis2017")
        settings = {
            "results": str(Path(args.results).resolve()),
            "split": args.split,
            "sequences": sequences,
            "scored_only": True,
        }
        checkpoint = {"name": args.name or Path(args.results).resolve().name}
        metrics = {key: 100.0 * value for key, value in summary.items()}
        append_records(
            make_records(
                "davis", dataset, args.split, metrics, checkpoint=checkpoint, settings=settings, started=started
            )
        )
    return 0
