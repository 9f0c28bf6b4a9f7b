"""Training checkpoints: what ``<out>/checkpoint.pth`` holds and how ``--resume`` restores it exactly.

Layout (loads with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only)::

    {"format": "sslbench-train", "version": 1,
     "student": state dict (keys "backbone.<timm key>", "head.<...>"),
     "teacher": state dict (same keys) or None (teacher-free),
     "optimizer": AdamW state, "scaler": GradScaler state,
     "epoch": epoch of the next step, "step": global index of the next step,
     "sampler": {"epoch", "batch", "seed", "world_size"}  (next batch within that epoch),
     "rng": one per rank: [{"torch": uint8 tensor, "cuda": [uint8 tensors], "numpy": {...}, "python": {...}}],
     "crop_boxes": (N, 4) float tensor or None, "config": resolved config dict,
     "epoch_stats": {"loss_sum", "count"}, "skipped_images": int, "log_lines": int}

What makes a resumed run bit-identical to an uninterrupted one (on the same hardware and thread count): schedules
are tables indexed by ``step``; the EMA momentum is read from the same table; augmentations are seeded per (seed,
epoch, image) and the sampler's permutation per (seed, epoch), so no worker RNG needs saving; the data loaders own
their generator; the global RNGs (dropout/drop-path, anything a method draws) are restored; and the JSONL log is cut
back to the ``log_lines`` it had when the checkpoint was written, so steps logged after it are not duplicated.
"""

from __future__ import annotations

import random
import resource
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sslcore.config import to_dict
from sslcore.errors import SSLBenchError
from sslcore.io import atomic_write_text

if TYPE_CHECKING:
    from pretrain.engine import Trainer

TRAIN_FORMAT = "sslbench-train"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def all_rng_states(trainer: Trainer) -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order (a collective: all ranks call it)."""
    mine = rng_state()
    if not trainer.dist.enabled:
        return [mine]
    import torch.distributed as dist

    states: list[Any] = [None] * trainer.dist.world_size
    dist.all_gather_object(states, mine)
    return states


def training_state(trainer: Trainer) -> dict[str, Any]:
    ipe = trainer.iters_per_epoch
    method = trainer.method
    return {
        "format": TRAIN_FORMAT,
        "version": 1,
        "student": method.student.state_dict(),
        "teacher": method.teacher.state_dict() if method.teacher is not None else None,
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "epoch": trainer.step // ipe,
        "step": trainer.step,
        "sampler": {
            "epoch": trainer.step // ipe,
            "batch": trainer.step % ipe,
            "seed": trainer.cfg.train.seed,
            "world_size": trainer.dist.world_size,
        },
        "rng": all_rng_states(trainer),
        "crop_boxes": trainer.crop_boxes,
        "config": to_dict(trainer.cfg),
        "epoch_stats": dict(trainer.epoch_stats),
        "skipped_images": trainer.skipped_images,
        "log_lines": trainer.log_lines,
    }


def load_training_state(trainer: Trainer, path: Path) -> None:
    """Restore everything :func:`training_state` saved into a freshly built trainer."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise SSLBenchError(f"{path}: cannot read the training checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != TRAIN_FORMAT:
        raise SSLBenchError(f"{path}: not an sslbench training checkpoint (format {state.get('format')!r})")
    world = state["sampler"]["world_size"]
    if world != trainer.dist.world_size:
        raise SSLBenchError(f"{path}: saved with world size {world}, resuming with {trainer.dist.world_size}")
    method = trainer.method
    method.student.load_state_dict(state["student"])
    if method.teacher is not None:
        if state["teacher"] is None:
            raise SSLBenchError(f"{path}: checkpoint has no teacher but ema.enabled is true")
        method.teacher.load_state_dict(state["teacher"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.step = int(state["step"])
    trainer.crop_boxes = state["crop_boxes"]
    trainer.epoch_stats = dict(state["epoch_stats"])
    trainer.skipped_images = int(state["skipped_images"])
    trainer.log_lines = int(state["log_lines"])
    set_rng_state(state["rng"][trainer.dist.rank])


def truncate_log(path: Path, lines: int) -> None:
    """Keep the first ``lines`` lines of the JSONL log (those written before the checkpoint)."""
    if not path.is_file():
        return
    kept = path.read_text().splitlines(keepends=True)[:lines]
    atomic_write_text(path, "".join(kept))


def memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
