"""Device names from configs and options, checked before any work: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``.

A name torch cannot parse (checked when a config is read), or an accelerator this machine does not have (checked when
the work starts, before anything is written), is a :class:`~sslcore.errors.ConfigError` naming the key and value (one
line, exit 2 at the CLI) instead of a traceback when the first tensor moves.
"""

from __future__ import annotations

from typing import Any

from sslcore.errors import ConfigError

KINDS = ("cpu", "cuda", "mps")


def parse_device(name: str, key: str = "device", available: bool = True) -> Any:
    """The ``torch.device`` of ``name`` (``auto``: the first GPU when CUDA is available, else the CPU).

    ``available=False`` checks the name only: configs check it when they are read, and the machine that runs the work
    (which may not be the one that plans it, e.g. a Slurm login node) checks that it has the device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{key}={name!r}: not a device name (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type not in KINDS:
        raise ConfigError(f"{key}={name}: device type {device.type!r} is not supported (auto, cpu, cuda, cuda:N, mps)")
    if not available:
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}={name}: CUDA is not available on this machine (use auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{key}={name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key}={name}: MPS is not available on this machine (use auto or cpu)")
    return device
