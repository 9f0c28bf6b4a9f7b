"""Per-rank entry point of distributed dense runs: ``torchrun ... -m evaluate.protocols.dense.train CONFIG --launcher pytorch``."""

from __future__ import annotations

import argparse

from evaluate.protocols.dense.runner import run_mm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", help="the final config.py written by `sslbench eval <task>`")
    parser.add_argument("--launcher", default="pytorch", choices=["none", "pytorch", "slurm", "mpi"])
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    run_mm(args.config, args.launcher, args.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
