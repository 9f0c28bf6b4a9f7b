"""``sslbench ckpt inspect|convert|init``: look into, convert, or create backbone checkpoints.

* ``inspect PATH``: format, architecture (and where each field came from), key counts, what will be dropped,
  positional-embedding handling; exits 2 with one line if the checkpoint does not load strictly.
* ``convert PATH --to timm|mmdet|mmseg OUT``: a tensor-only file those libraries load. ``timm``: ``.safetensors``
  (plain timm keys, metadata strings) or a torch file ``{"state_dict", "meta"}``; ``mmdet``/``mmseg``: a torch file
  ``{"state_dict": timm keys, "meta": {"arch", "pos_interp", "source_sha256", "format"}}``. All values are tensors
  or plain str/int/float/bool/list/dict, so ``torch.load(weights_only=True)`` reads them.
* ``init --arch NAME OUT``: a randomly initialised sslbench export (the "random init" baseline).

``evaluate/cli.py`` registers them as ``evaluate.checkpoints.cli:<command>``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from evaluate.checkpoints.formats import CHECKPOINT_FORMATS
from pretrain.pooled import PooledArch
from sslcore.errors import SSLBenchError

CONVERT_TARGETS = ("timm", "mmdet", "mmseg")


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="checkpoint file (.pth/.pt/.ckpt or .safetensors)")
    parser.add_argument(
        "--format", choices=sorted(CHECKPOINT_FORMATS), help="force the source format (default: detect)"
    )
    parser.add_argument("--which", choices=("teacher", "student"), default=None, help="network (default: teacher)")
    parser.add_argument("--num-heads", type=int, default=None, help="head count (default: stored or format default)")
    parser.add_argument("--img-size", type=int, default=None, help="input size; resamples the positional table")
    parser.add_argument("--pos-interp", choices=("dino", "timm"), default=None, help="resampling rule")
    parser.add_argument(
        "--trust-pickle", action="store_true", help="allow pickled objects outside the allow-list (unsafe)"
    )


def _load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        format=args.format,
        which=args.which or "teacher",
        num_heads=args.num_heads,
        img_size=args.img_size,
        pos_interp=args.pos_interp,
    )


def _short(keys: list[str], limit: int = 6) -> str:
    if not keys:
        return "-"
    return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


# -------------------------------------------------------------------------------------------------------- inspect
def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    add_load_arguments(parser)


def inspect_lines(args: argparse.Namespace) -> tuple[list[str], Any]:
    """The report lines of ``ckpt inspect`` and the resolved checkpoint (see :func:`loader.resolve`; None for a
    ResNet / MetaFormer checkpoint, which :mod:`.pooled` reads)."""
    from evaluate.checkpoints.loader import resolve
    from evaluate.checkpoints.pooled import is_pooled_checkpoint
    from evaluate.checkpoints.reading import read_checkpoint, sha256_cached

    path = Path(args.path)
    checkpoint, pickled = read_checkpoint(path, trust_pickle=args.trust_pickle)
    if is_pooled_checkpoint(checkpoint):
        return _pooled_lines(path, checkpoint, pickled, args), None
    try:
        res = resolve(checkpoint, **_load_kwargs(args))
    except SSLBenchError as exc:
        raise SSLBenchError(f"{path}: {exc}") from None
    arch = res.arch.to_dict()
    params = sum(v.numel() for v in res.state.values())
    grid = res.arch.img_size // res.arch.patch_size
    lines = [
        f"file:        {path} ({path.stat().st_size / 2**20:.1f} MiB, sha256 {sha256_cached(path)[:16]}...)",
        f"format:      {res.format} ({'forced' if args.format else 'detected'}): {CHECKPOINT_FORMATS[res.format].description}",
        f"network:     {res.which or 'single network'}",
        f"top-level:   {_short(res.top_level)}",
        f"unpickled:   {', '.join(pickled) if pickled else 'nothing (tensor-only file)'}",
        "architecture:",
        *(f"  {k:<11} {v!s:<9} from {res.sources.get(k, '?')}" for k, v in arch.items()),
        f"keys:        {len(res.state)} backbone tensors ({params / 1e6:.2f}M values), {len(res.report.dropped)} dropped, "
        f"{len(res.report.missing)} missing, {len(res.report.unexpected)} unexpected, "
        f"{len(res.report.mismatched)} wrong shape",
        f"dropped:     {_short(res.report.dropped)}",
        f"pos_embed:   {arch['pos_embed']} table, {grid}x{grid} grid at {res.arch.img_size}px; "
        f"run-time resampling {res.pos_interp!r} ({res.sources['pos_interp']})",
    ]
    if res.report.reshaped:
        lines.append(f"reshaped:    {_short(res.report.reshaped)}")
    for label, keys in (
        ("missing", res.report.missing),
        ("unexpected", res.report.unexpected),
        ("wrong shape", res.report.mismatched),
        ("non-finite", res.report.nonfinite),
    ):
        if keys:
            lines.append(f"{label + ':':<12} {_short(keys)}")
    lines.append("status:      " + ("loads strictly" if res.report.ok else "does NOT load strictly"))
    return lines, res


def _pooled_lines(path: Path, checkpoint: Any, pickled: list[str], args: argparse.Namespace) -> list[str]:
    """``ckpt inspect`` of a ResNet / MetaFormer checkpoint (:mod:`.pooled`); raises one line when it does not load
    strictly."""
    from evaluate.checkpoints.pooled import load_pooled
    from evaluate.checkpoints.reading import sha256_cached

    kwargs = _load_kwargs(args)
    model, info, dropped = load_pooled(checkpoint, path, sha256=sha256_cached(path), **kwargs)
    params = sum(v.numel() for v in model.state_dict().values())
    return [
        f"file:        {path} ({path.stat().st_size / 2**20:.1f} MiB, sha256 {info['sha256'][:16]}...)",
        f"format:      {info['format']} ({'forced' if args.format else 'detected'}): {info['arch']['family']} backbone",
        f"network:     {info['which'] or 'single network'}",
        f"unpickled:   {', '.join(pickled) if pickled else 'nothing (tensor-only file)'}",
        "architecture:",
        *(f"  {k:<11} {v!s}" for k, v in PooledArch.from_dict(info["arch"]).described().items()),
        f"keys:        {len(model.state_dict())} backbone tensors ({params / 1e6:.2f}M values), {len(dropped)} dropped",
        f"dropped:     {_short(dropped)}",
        "status:      loads strictly",
    ]


def run_inspect(args: argparse.Namespace) -> int:
    from evaluate.checkpoints.loader import check

    lines, res = inspect_lines(args)
    print("\n".join(lines))
    if res is not None:
        check(res, args.path)
    return 0


# -------------------------------------------------------------------------------------------------------- convert
def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    add_load_arguments(parser)
    parser.add_argument("--to", required=True, choices=CONVERT_TARGETS, help="target library")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.add_argument("out", help="output file (.safetensors or .pth for timm; .pth for mmdet/mmseg)")


def converted_payload(loaded: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state_dict, meta)`` of a loaded backbone: contiguous CPU tensors in timm keys, plain-valued meta."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in loaded.model.state_dict().items()}
    meta = {
        "arch": dict(loaded.info["arch"]),
        "pos_interp": loaded.info["pos_interp"],
        "source_sha256": loaded.info["sha256"],
        "format": loaded.info["format"],
    }
    return state, meta


def check_output_file(out: str, source: str | None = None, force: bool = False) -> Path:
    """The output file of ``ckpt convert|init``: a file name (not empty, not a directory) other than the source, and
    not an existing file unless ``force``."""
    if not out.strip():
        raise SSLBenchError("output: the path is empty")
    path = Path(out)
    if path.is_dir():
        raise SSLBenchError(f"{path}: is a directory; name the output file")
    if source is not None and path.exists() and path.resolve() == Path(source).resolve():
        raise SSLBenchError(f"{path}: is the source checkpoint; converting in place would overwrite it")
    if path.exists() and not force:
        raise SSLBenchError(f"{path}: exists; pass --force to replace it")
    return path


def run_convert(args: argparse.Namespace) -> int:
    from evaluate.checkpoints.loader import load_backbone
    from sslcore.io import atomic_torch_save, atomic_write_bytes, check_writable

    out = check_output_file(args.out, args.path, args.force)
    if args.to != "timm" and out.suffix == ".safetensors":
        raise SSLBenchError(f"{out}: {args.to} loads torch files; use a .pth name")
    check_writable(out.absolute().parent, "output")
    loaded = load_backbone(args.path, trust_pickle=args.trust_pickle, **_load_kwargs(args))
    if args.to != "timm":
        from evaluate.checkpoints.pooled import require_vit

        require_vit(loaded.model, f"--to {args.to} (the dense-task ViT backbone)", args.path)
    state, meta = converted_payload(loaded)
    if out.suffix == ".safetensors":
        from safetensors.torch import save

        text_meta = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in meta.items()}
        atomic_write_bytes(out, save(state, metadata=text_meta))
    else:
        atomic_torch_save({"state_dict": state, "meta": meta}, out)
    print(json.dumps({"out": str(out), "to": args.to, "tensors": len(state), **meta}, sort_keys=True))
    return 0


# ----------------------------------------------------------------------------------------------------------- init
def add_init_arguments(parser: argparse.ArgumentParser) -> None:
    from pretrain.vit import ARCHS

    parser.add_argument("--arch", required=True, choices=sorted(ARCHS), help="architecture name")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--pos-interp", choices=("dino", "timm"), default="dino", help="recorded resampling rule")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.add_argument("out", help="output .pth file")


def run_init(args: argparse.Namespace) -> int:
    import torch

    from pretrain.vit import build_vit, export_backbone
    from sslcore.io import atomic_torch_save, check_writable

    if args.seed < 0:
        raise SSLBenchError(f"--seed {args.seed}: must be >= 0")
    out = check_output_file(args.out, force=args.force)
    if out.suffix == ".safetensors":
        raise SSLBenchError(f"{out}: ckpt init writes a torch file (an sslbench export); use a .pth name")
    check_writable(out.absolute().parent, "output")
    torch.manual_seed(args.seed)
    model = build_vit(args.arch, pos_interp=args.pos_interp)
    atomic_torch_save(export_backbone(model, {"init": "random", "seed": args.seed, "arch_name": args.arch}), args.out)
    print(json.dumps({"out": args.out, "arch": args.arch, "seed": args.seed}))
    return 0
