"""Shared by the evaluation benchmarks: interleaved timing, a summary line, the peak memory a call adds.

Timings on a shared machine are noisy, so every benchmark runs its candidates *interleaved* (A, B, A, B, ...) in one
process, ``repeat`` times each, and reports the minimum (the least disturbed run) next to the median.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def synchronizer(device: str | torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


def interleaved(
    fns: dict[str, Callable[[], Any]], repeat: int, device: str | torch.device = "cpu"
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Run every function once per round, ``repeat`` rounds; (seconds per name, last output per name)."""
    sync = synchronizer(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    outputs: dict[str, Any] = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            outputs[name] = fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times, outputs


def line(name: str, seconds: list[float], width: int = 34) -> str:
    return f"  {name:<{width}} min {min(seconds):8.3f} s   median {statistics.median(seconds):8.3f} s"


def _kib(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return next(int(row.split()[1]) for row in text.splitlines() if row.startswith(key + ":"))


def peak_extra_mib(fn: Callable[[], Any]) -> float:
    """Peak resident memory of ``fn()`` above the resident memory before it, in MiB (Linux, CPU).

    Freed heap memory is first handed back to the OS (``malloc_trim``) and the kernel's peak counter reset
    (``/proc/self/clear_refs``), so the figure is what ``fn`` itself holds at its peak.
    """
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _kib("VmRSS")
    fn()
    return (_kib("VmHWM") - before) / 1024


def cuda_peak_extra_mib(fn: Callable[[], Any]) -> float:
    """Peak CUDA memory of ``fn()`` above the memory allocated before it, in MiB."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20
