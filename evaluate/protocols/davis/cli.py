"""``sslbench eval davis``: DAVIS-2017 label propagation from a checkpoint's frozen patch features, scored by J&F."""

from __future__ import annotations

import argparse
import json

from sslcore.config import load_config
from sslcore.errors import ConfigError


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="ViT checkpoint (any format the checkpoint adapter reads)")
    parser.add_argument("--davis-root", help="DAVIS root with JPEGImages/480p, Annotations/480p, ImageSets/2017")
    parser.add_argument("--split", help="ImageSets/2017/<split>.txt (default val)")
    parser.add_argument("--sequences", help="comma-separated subset of the split's sequences")
    parser.add_argument("--out", help="output directory (default results/davis)")
    parser.add_argument("--n-last-frames", type=_int_list, help="context frames besides the first; list sweeps (7)")
    parser.add_argument("--topk", type=_int_list, help="affinities kept per target patch; list sweeps (5)")
    parser.add_argument("--size-mask-neighborhood", type=_int_list, help="window radius in patches; list sweeps (12)")
    parser.add_argument("--short-side", type=int, help="resized frame short side in pixels (480)")
    parser.add_argument("--normalize", choices=["imagenet", "dino"], help="std 0.229 (imagenet, default) or 0.228")
    parser.add_argument(
        "--pos-interp",
        choices=["dino", "timm"],
        help="positional-embedding resampling (default: the checkpoint format's rule)",
    )
    parser.add_argument("--which", choices=["teacher", "student"], help="network inside an SSL checkpoint (teacher)")
    parser.add_argument("--format", help="checkpoint format (default: detected)")
    parser.add_argument("--name", help="checkpoint label in records and tables (default: the file stem)")
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, help="frames per forward pass (8)")
    parser.add_argument("--no-cache", action="store_true", help="recompute features instead of using the cache")
    parser.add_argument("--dataset", help="record dataset name (default: davis2017 or shapesworld-davis)")
    parser.add_argument("--trust-pickle", action="store_true", help="allow full pickle loading of the checkpoint")
    parser.add_argument("--config", help="YAML file with DavisConfig keys (flags and --set win)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. topk=[1,5]")


_FLAGS = (
    "checkpoint",
    "davis_root",
    "split",
    "out",
    "n_last_frames",
    "topk",
    "size_mask_neighborhood",
    "short_side",
    "normalize",
    "pos_interp",
    "which",
    "format",
    "name",
    "device",
    "batch_size",
    "dataset",
)


def build_config(args: argparse.Namespace):
    from evaluate.protocols.davis.run import DavisConfig

    overrides = [f"{key}={json.dumps(getattr(args, key))}" for key in _FLAGS if getattr(args, key) is not None]
    if args.sequences:
        overrides.append(f"sequences={json.dumps([s.strip() for s in args.sequences.split(',') if s.strip()])}")
    if args.no_cache:
        overrides.append("cache=false")
    if args.trust_pickle:
        overrides.append("trust_pickle=true")
    overrides += list(args.set or [])
    try:
        return load_config(DavisConfig, args.config, overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def run_cli(args: argparse.Namespace) -> int:
    from evaluate.protocols.davis.run import run

    cfg = build_config(args)
    for result in run(cfg):
        m = result["metrics"]
        print(
            f"{result['tag']}: J&F-Mean {m['J&F-Mean']:.1f}  J-Mean {m['J-Mean']:.1f}  F-Mean {m['F-Mean']:.1f}  "
            f"-> {result['dir']}"
        )
    return 0
