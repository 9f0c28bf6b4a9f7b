"""``sslbench eval coco|ade20k|voc|imagenet-s``: fine-tune a checkpoint with mmdet/mmseg and record the metrics.

Examples::

    sslbench eval coco ckpt.pth --data-root data/coco                     # iBOT Cascade Mask R-CNN 1x
    sslbench eval ade20k ckpt.pth --data-root data/ade/ADEChallengeData2016 --nproc 8
    sslbench eval coco ckpt.pth --data-root runs/shapes/coco              # tiny ShapesWorld config, CPU
    sslbench eval ade20k ckpt.pth --data-root D --cfg-options train_dataloader.batch_size=2 --resume
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from sslcore.errors import SSLBenchError


def parse_cfg_options(items: list[str] | None) -> dict:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a.b": 1, "c": [1, 2]}`` (dotted keys for mmengine's ``merge_from_dict``)."""
    out = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SSLBenchError(f"--cfg-options {item!r}: expected key=value (e.g. train_dataloader.batch_size=2)")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads "1e-4" as a string
            except ValueError:
                pass
        out[key.strip()] = value
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="any checkpoint evaluate.checkpoints loads, or a converted backbone file")
    parser.add_argument("--data-root", required=True, help="dataset root in the official layout (or ShapesWorld's)")
    parser.add_argument("--out", help="run directory (default runs/dense/<task>-<checkpoint stem>)")
    parser.add_argument(
        "--config", help="config name under downstream_configs/ (e.g. coco/mask_rcnn_vit_small_coco_1x) or path"
    )
    parser.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE", help="mm config overrides (recorded)")
    parser.add_argument("--nproc", type=int, default=1, help="processes per node; > 1 launches torchrun")
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--node-rank", type=int, default=0)
    parser.add_argument("--master-addr", default="127.0.0.1")
    parser.add_argument("--master-port", type=int, default=29500)
    parser.add_argument("--resume", action="store_true", help="continue from the last mm checkpoint of the run")
    parser.add_argument("--amp", action="store_true", help="mixed precision (the papers used apex fp16)")
    parser.add_argument("--which", choices=["teacher", "student"], help="network of a pretraining checkpoint")
    parser.add_argument("--name", help="row label in tables (default: checkpoint file stem)")


def run_cli(args: argparse.Namespace) -> int:
    from evaluate.protocols.dense.runner import run_eval

    task = args.subcommand
    out = Path(args.out or Path("runs") / "dense" / f"{task}-{Path(args.checkpoint).stem}")
    torchrun_args = None
    if args.nnodes > 1:
        torchrun_args = [
            f"--nnodes={args.nnodes}",
            f"--node_rank={args.node_rank}",
            f"--master_addr={args.master_addr}",
            f"--master_port={args.master_port}",
        ]
    records = run_eval(
        task,
        args.checkpoint,
        args.data_root,
        out,
        config=args.config,
        options=parse_cfg_options(args.cfg_options),
        nproc=args.nproc,
        torchrun_args=torchrun_args,
        resume=args.resume,
        amp=args.amp,
        which=args.which,
        name=args.name,
    )
    for record in records:
        print(f"{task} {record.dataset} {record.metric} = {record.value:.2f}")
    return 0
