"""Training checkpoints: what ``<out>/checkpoint.pth`` holds and how ``--resume`` restores it exactly.

Layout (loads with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only)::

    {"format": "sslbench-train", "version": 2, "method": name in pretrain.methods.METHODS,
     "student": state dict (keys "backbone.<timm key>", "heads.<name>.<...>"),
     "teacher": state dict (same keys) or None (teacher-free),
     "method_state": the method's own state (e.g. DINO's "center", iBOT's "center2"),
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
from typing import Any

import numpy as np
import torch

from pretrain.dist import Distributed
from sslcore.errors import SSLBenchError
from sslcore.io import atomic_write_text

TRAIN_FORMAT = "sslbench-train"
TRAIN_VERSION = 2


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


def all_rng_states(dist: Distributed) -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order (a collective: all ranks call it)."""
    mine = rng_state()
    if not dist.enabled:
        return [mine]
    import torch.distributed as tdist

    states: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(states, mine)
    return states


def read_training_state(path: Path) -> dict[str, Any]:
    """Load ``<out>/checkpoint.pth`` (tensors and plain values only); one-line errors for foreign or broken files."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise SSLBenchError(f"{path}: cannot read the training checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != TRAIN_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise SSLBenchError(f"{path}: not an sslbench training checkpoint (format {found!r})")
    if state.get("version") != TRAIN_VERSION:
        raise SSLBenchError(
            f"{path}: training checkpoint version {state.get('version')} (this sslbench resumes version "
            f"{TRAIN_VERSION}); export its backbone with 'sslbench ckpt convert' instead"
        )
    return state


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
