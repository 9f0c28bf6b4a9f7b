"""Reading checkpoint files safely, and hashing them once.

Policy (torch >= 2.6 loads with ``weights_only=True`` by default):

1. ``.safetensors`` files are read with ``safetensors`` (tensors only, nothing to unpickle).
2. Other files are read with ``torch.load(weights_only=True)``: tensors, containers and plain values only.
3. If the file holds pickled objects, the ones the official DINO/iBOT/BAM/SERE/PQCL checkpoints store (an
   ``argparse.Namespace`` under ``args``, numpy scalars/arrays and their dtype reconstructors) are allowed through
   :data:`PICKLE_ALLOW_LIST` with ``torch.serialization.safe_globals``; the restricted unpickler still refuses
   anything else. The classes actually used are logged and returned.
4. Anything outside that list stops with a one-line error naming the file and the classes, unless the caller passes
   ``trust_pickle=True`` (CLI ``--trust-pickle``), which uses ``weights_only=False``. Never silently.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslcore.errors import SSLBenchError
from sslcore.io import atomic_write_json, sha256_file, sha256_json

log = logging.getLogger("sslbench")


def _numpy_core(name: str) -> Any:
    core = getattr(np, "_core", None) or np.core  # numpy 2 moved numpy.core to numpy._core
    return getattr(core.multiarray, name)


# Pickle GLOBAL name -> object. Files written under numpy 1 name numpy.core.*, under numpy 2 numpy._core.*.
PICKLE_ALLOW_LIST: dict[str, Any] = {
    "argparse.Namespace": argparse.Namespace,
    "numpy.dtype": np.dtype,
    "numpy.ndarray": np.ndarray,
    "numpy.core.multiarray.scalar": _numpy_core("scalar"),
    "numpy._core.multiarray.scalar": _numpy_core("scalar"),
    "numpy.core.multiarray._reconstruct": _numpy_core("_reconstruct"),
    "numpy._core.multiarray._reconstruct": _numpy_core("_reconstruct"),
}
# numpy >= 1.25 may pickle dtypes by their class (numpy.dtypes.Float64DType, ...)
PICKLE_ALLOW_LIST.update(
    {f"numpy.dtypes.{n}": getattr(np.dtypes, n) for n in dir(getattr(np, "dtypes", None)) if n.endswith("DType")}
)


def _corrupt(path: Path, exc: BaseException) -> SSLBenchError:
    reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
    return SSLBenchError(f"{path}: cannot read checkpoint (truncated or corrupt file?): {reason}")


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception as exc:  # not a zip checkpoint, or a damaged one
        raise _corrupt(path, exc) from None


def _read_safetensors(path: Path) -> dict[str, Any]:
    """Tensors of a ``.safetensors`` file; wrapped as ``{"state_dict", "meta"}`` when ``ckpt convert`` wrote it.

    ``ckpt convert`` stores the architecture as JSON strings in the file's metadata (``arch``, ``pos_interp``, ...).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = handle.metadata() or {}
            state = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except (SafetensorError, OSError, ValueError) as exc:
        raise _corrupt(path, exc) from None
    if "arch" not in meta:
        hf_config = _transformers_config(path)
        return {"state_dict": state, "hf_config": hf_config} if hf_config else state
    try:
        parsed = {k: json.loads(v) if k == "arch" else v for k, v in meta.items()}
    except ValueError:
        raise SSLBenchError(f"{path}: metadata 'arch' is not valid JSON") from None
    return {"state_dict": state, "meta": parsed}


def _transformers_config(path: Path) -> dict[str, Any] | None:
    """The Hugging Face ``config.json`` of a ViT (``model_type`` vit/dino) stored beside ``path``, if any."""
    config = path.parent / "config.json"
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("model_type") in ("vit", "dino") else None


def _check_torch_file(path: Path) -> None:
    """Refuse a file that is neither a zip (torch >= 1.6) nor a legacy pickle (protocol 2+) torch file."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise SSLBenchError(f"{path}: cannot read checkpoint ({exc.strerror})") from None
    if not head:
        raise SSLBenchError(f"{path}: empty file, not a checkpoint")
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):
        raise SSLBenchError(f"{path}: not a PyTorch checkpoint (starts with {head!r}; .pth/.pt files or .safetensors)")


def _read_legacy(path: Path, trust_pickle: bool) -> tuple[Any, list[str]]:
    """A legacy (pre-1.6, non-zip) torch file holding pickled objects: the allow-list, else ``trust_pickle``."""
    allowed = [(obj, name) for name, obj in PICKLE_ALLOW_LIST.items()]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True), ["(legacy file: allow-listed objects)"]
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise _corrupt(path, exc) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        raise _corrupt(path, exc) from None
    if not trust_pickle:
        raise SSLBenchError(
            f"{path}: a legacy (non-zip) torch file with pickled objects outside the safe allow-list; "
            "pass --trust-pickle (trust_pickle=True) only if you trust the file's source"
        )
    log.warning("%s: loading a legacy torch file with weights_only=False (trusted by the caller)", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False), ["(legacy file: trusted pickle)"]
    except Exception as exc:  # noqa: BLE001 - anything the full unpickler raises is a damaged file
        raise _corrupt(path, exc) from None


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> tuple[Any, list[str]]:
    """Load a checkpoint file on CPU under the safe-loading policy of this module.

    Returns:
        ``(object, pickled)``: the loaded object and the names of the allow-listed (or, with ``trust_pickle``,
        trusted) pickled classes the file used (empty for tensor-only files).

    Raises:
        SSLBenchError: missing, truncated or corrupt file; pickled classes outside the allow-list without
        ``trust_pickle``.
    """
    path = Path(path)
    if not path.is_file():
        raise SSLBenchError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        return _read_safetensors(path), []
    _check_torch_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True), []
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise _corrupt(path, exc) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
        raise _corrupt(path, exc) from None
    if not zipfile.is_zipfile(path):
        return _read_legacy(path, trust_pickle)
    needed = _unsafe_globals(path)
    outside = [g for g in needed if g not in PICKLE_ALLOW_LIST]
    if outside and not trust_pickle:
        listed = ", ".join(outside[:5]) + (f" (+{len(outside) - 5} more)" if len(outside) > 5 else "")
        raise SSLBenchError(
            f"{path}: holds pickled objects outside the safe allow-list ({listed}); "
            "pass --trust-pickle (trust_pickle=True) only if you trust the file's source"
        )
    try:
        if outside:
            log.warning("%s: loading with weights_only=False (trusted by the caller): %s", path, ", ".join(outside))
            obj = torch.load(path, map_location="cpu", weights_only=False)
        else:
            log.info("%s: unpickling allow-listed objects: %s", path, ", ".join(needed))
            # the whole list: numpy dtype instances are checked by class (Float64DType...) without a GLOBAL opcode
            allowed = [(obj, name) for name, obj in PICKLE_ALLOW_LIST.items()]
            with torch.serialization.safe_globals(allowed):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise _corrupt(path, exc) from None
    return obj, needed


def _cache_dir() -> Path:
    return Path(os.environ.get("SSLBENCH_CACHE") or Path.home() / ".cache" / "sslbench") / "sha256"


def sha256_cached(path: str | Path) -> str:
    """SHA-256 of a file, cached under ``$SSLBENCH_CACHE/sha256/`` keyed by (absolute path, size, mtime, inode,
    ctime).

    Feature caches key on this value. A replaced file gets a new inode (rename, ``cp`` to a new name) or a new ctime
    (any in-place write or ``touch``; ctime cannot be set back by the user), so a checkpoint replaced by one with the
    same size and a copied mtime is hashed again instead of reporting the old model's sha256 and numbers.
    """
    path = Path(path).resolve()
    try:
        stat = path.stat()
    except OSError as exc:
        raise SSLBenchError(f"{path}: cannot stat checkpoint ({exc.strerror})") from None
    key = {
        "path": str(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "inode": stat.st_ino,
        "ctime_ns": stat.st_ctime_ns,
    }
    entry = _cache_dir() / f"{sha256_json(key)[:32]}.json"
    try:
        cached = json.loads(entry.read_text())
        if {k: cached.get(k) for k in key} == key and isinstance(cached.get("sha256"), str):
            return cached["sha256"]
    except (OSError, ValueError):
        pass
    digest = sha256_file(path)
    try:
        atomic_write_json(entry, {**key, "sha256": digest})
    except OSError as exc:  # a read-only cache must not stop an evaluation
        log.debug("sha256 cache not written (%s)", exc)
    return digest
