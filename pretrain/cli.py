"""``sslbench pretrain --config pretrain/configs/<recipe>.yaml [key=value ...] [--out DIR] [--resume]``.

Single process: run it directly. Several GPUs / nodes: launch the same module with torchrun, e.g.
``torchrun --nproc_per_node=8 -m sslbench_entry pretrain --config ...``; the engine reads torchrun's environment.
With ``--resume`` the run continues from ``<out>/checkpoint.pth``; the resolved configuration must equal the one
stored in the checkpoint except for keys that do not change the numbers (:data:`RESUME_FREE_KEYS`).
``--probe-views N`` trains nothing: it prints what the recipe's global views of one image share for its network at
step 0, or with ``--resume`` at the run's checkpoint (:meth:`pretrain.engine.Trainer.probe_views`), and exits.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sslcore.config import load_config, to_dict
from sslcore.errors import ConfigError, SSLBenchError
from sslcore.io import check_writable
from sslcore.plugins import check_plugin_dirs

if TYPE_CHECKING:
    from pretrain.config import PretrainConfig

logger = logging.getLogger("sslbench")

RESUME_FREE_KEYS = (
    "data.root",
    "data.num_workers",
    "data.on_bad_image",
    "train.out",
    "train.device",
    "train.log_every",
    "train.checkpoint_every_steps",
    "train.keep_every_epochs",
    "train.export_every_epoch",
    "knn.",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="YAML recipe (pretrain/configs/*.yaml); without it, schema defaults + overrides"
    )
    parser.add_argument("--out", help="output directory (overrides train.out)")
    parser.add_argument("--resume", action="store_true", help="continue exactly from <out>/checkpoint.pth")
    parser.add_argument(
        "--probe-views",
        type=int,
        metavar="N",
        help="print what the recipe's global views of one image share for the network at step 0 (with --resume: "
        "at the run's checkpoint) over N batches (pretrain.diagnostics.view_agreement), then exit; writes nothing",
    )
    parser.add_argument(
        "--plugin", action="append", default=[], metavar="DIR", help="directory a 'method: module:Class' may come from"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=1e-3")


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_resume_config(cfg_dict: dict, saved: dict, path: Path) -> None:
    """Raise ConfigError naming the first key whose value differs from the checkpoint's (free keys excepted).

    A key the checkpoint's configuration does not have at all is a setting added to the schema after it was written
    (e.g. the section of a method registered later); its default is what the older code did, so it does not count.
    """
    now, before = _flatten(cfg_dict), _flatten(saved)
    for key in sorted(set(now) | set(before)):
        if key.startswith(RESUME_FREE_KEYS) or now.get(key) == before.get(key) or key not in before:
            continue
        raise ConfigError(
            f"--resume: {key}={now.get(key)!r} differs from {before.get(key)!r} stored in {path}; "
            "an exact resume needs the same configuration"
        )


def run_cli(args: argparse.Namespace) -> int:
    from pretrain.checkpoint import read_training_state
    from pretrain.config import PretrainConfig
    from pretrain.engine import Trainer  # torch and the engine load only when the command runs

    check_plugin_dirs(args.plugin)  # before any work, whether or not the config names a plugin method
    overrides = list(args.overrides or [])
    if args.out:
        overrides.append(f"train.out={args.out}")
    config_path = args.config
    if not config_path and args.resume and args.out and (Path(args.out) / "config.yaml").is_file():
        config_path = str(Path(args.out) / "config.yaml")  # --resume --out DIR reuses the run's resolved config
    cfg = load_config(PretrainConfig, config_path, overrides)
    ckpt_path = Path(cfg.train.out) / "checkpoint.pth"
    state = None
    if args.resume and ckpt_path.is_file():
        state = read_training_state(ckpt_path)  # a damaged file: one line, before any work; read once
        if args.probe_views is None:  # a probe may look at the run's networks under other augmentations
            check_resume_config(to_dict(cfg), state.get("config", {}), ckpt_path)
    if args.probe_views is not None:
        return probe_views(cfg, args.probe_views, args.plugin, state)
    if not args.resume and ckpt_path.is_file():  # starting over would replace the run's config and log at once
        raise SSLBenchError(
            f"train.out={cfg.train.out} already holds a run ({ckpt_path.name}); --resume continues it, or choose "
            "another train.out (or delete that directory) to start over"
        )
    knn_fn = None
    if cfg.knn.every_epochs > 0:  # the CLI layer wires the protocol's k-NN vote into the training monitor
        from evaluate.protocols.knn import knn_accuracy as knn_fn
    check_writable(cfg.train.out, "train.out")
    trainer = Trainer(cfg, knn_fn=knn_fn, plugin_dirs=args.plugin)
    backbone = trainer.fit(resume=args.resume, state=state)
    if trainer.dist.is_main:
        print(f"backbone: {backbone}")
    return 0


def probe_views(cfg: PretrainConfig, num_batches: int, plugin_dirs: list[str], state: dict | None = None) -> int:
    """``--probe-views N``: the view agreement of the recipe's network as one JSON line on stdout (main process), at
    step 0, or with ``--resume`` at the run's checkpoint (``state``: its networks only; the config may change the
    augmentations, not the networks)."""
    import json

    from pretrain.engine import Trainer

    if num_batches < 1:
        raise ConfigError(f"--probe-views: {num_batches} batches; give >= 1")
    if cfg.data.global_crops < 2:
        raise ConfigError(f"--probe-views: data.global_crops={cfg.data.global_crops}; the probe needs >= 2")
    cfg.knn.every_epochs = 0  # the monitor is not used
    trainer = Trainer(cfg, plugin_dirs=plugin_dirs)
    step = 0
    if state is not None:
        try:
            trainer.load_networks(state)
        except RuntimeError as exc:  # load_state_dict: missing/unexpected keys or other shapes
            why = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])[:240]
            raise ConfigError(f"--probe-views: the checkpoint's networks do not fit the config ({why})") from None
        step = int(state["step"])
    result = trainer.probe_views(num_batches)
    if trainer.dist.is_main:
        print(json.dumps({"method": cfg.method, "step": step, **{k: round(v, 4) for k, v in result.items()}}))
    return 0
