"""Small I/O helpers shared by every module: atomic writes, content hashes and provenance.

Every file sslbench writes (checkpoints, caches, configs, tables) goes through a temporary file in the same
directory followed by :func:`os.replace`, so an interrupted run never leaves a half-written file in place of a good
one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path``.

    On an exception the temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; the result gets the mode open() would give
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def stale_temporaries(directory: str | Path, names: list[str] | None = None) -> list[Path]:
    """Temporary files :func:`atomic_open` left in ``directory`` when a process was killed mid-write.

    They are named ``.<target>.<random>.tmp``; ``names`` restricts the targets (e.g. ``["checkpoint.pth"]``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for tmp in directory.glob(".*.tmp"):
        target = tmp.name[1:].rsplit(".", 2)[0]
        if names is None or target in names:
            found.append(tmp)
    return sorted(found)


def remove_stale_temporaries(directory: str | Path, names: list[str] | None = None) -> list[Path]:
    """Remove :func:`stale_temporaries` at the start of a run that owns ``directory`` (one writer per output
    directory); returns what was removed. Files being written by another live process would be removed too, so call
    it only where the run holds the directory."""
    removed = []
    for tmp in stale_temporaries(directory, names):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def check_writable(path: str | Path, what: str) -> Path:
    """Raise :class:`~sslcore.errors.SSLBenchError` naming ``what`` and the path unless files can be created there.

    ``path`` is a directory that must accept new files; when it does not exist yet, its nearest existing ancestor
    must be a writable directory (nothing is created: a probe file is made and removed in that ancestor). Called
    before any work starts, so an unwritable output directory, results store or cache fails in one line instead of
    after the computation.
    """
    from sslcore.errors import SSLBenchError

    path = Path(path).absolute()
    probe_dir = path
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise SSLBenchError(f"{what} {path}: not writable ({probe_dir} is not a directory)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".sslbench-write-probe.", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SSLBenchError(f"{what} {path}: not writable ({exc.strerror or type(exc).__name__})") from None
    return path


def load_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` on CPU with every failure turned into one SSLBenchError line naming the file
    (a damaged ``checkpoint.pth`` on ``--resume``, a text file, a truncated download)."""
    import pickle
    import zipfile

    import torch

    from sslcore.errors import SSLBenchError

    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
        if not head:
            raise SSLBenchError(f"{path}: empty file, not a {what}")
        return torch.load(path, map_location="cpu", weights_only=True)
    except SSLBenchError:
        raise
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        IndexError,
        zipfile.BadZipFile,
    ) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise SSLBenchError(f"{path}: cannot read {what} (damaged, truncated or not a torch file?): {reason}") from None


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through a temporary file and a rename."""
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
    return Path(path)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """A stable hash of a JSON-serialisable object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def git_sha(root: Path = REPO_ROOT) -> str | None:
    """The current commit of the sslbench checkout (with '-dirty' if modified), or None outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def versions() -> dict[str, str]:
    """Versions of the interpreter and the libraries that change numbers."""
    out = {"python": platform.python_version(), "platform": sys.platform}
    for name in ("torch", "torchvision", "timm", "numpy", "sklearn", "mmdet", "mmseg", "mmcv", "mmengine"):
        module = sys.modules.get(name)
        if module is None and name in ("torch", "timm", "numpy"):
            with contextlib.suppress(ImportError):
                module = __import__(name)
        if module is not None:
            out[name] = getattr(module, "__version__", "?")
    return out


def _rss_mb() -> float:
    """The current resident set size of this process in MiB (``/proc/self/statm``; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class ResourceMeter:
    """Peak memory and throughput of one piece of work (one protocol run), not of the whole process.

    On :meth:`start` the CUDA peak counters are reset and a daemon thread samples the resident set size every
    ``interval`` seconds (the high-water mark of *this* run: the process-lifetime ``ru_maxrss`` would give every run
    of a long process the same number). Code that pushes images through a network calls :meth:`add_images`. Code that
    resets torch's CUDA peak counter during the run (mmengine does at every log line) hands each reading to
    :meth:`note_cuda_peak` first, or in a child process's stead (a torchrun run), so the run's peak is kept.
    """

    def __init__(self, interval: float = 0.05) -> None:
        import threading

        self.interval, self.images, self.started = interval, 0, time_now()
        self.skipped: set[str] = set()
        self._peak_rss = _rss_mb()
        self._cuda_noted_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="sslbench-rss")

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak_rss = max(self._peak_rss, _rss_mb())

    def start(self) -> ResourceMeter:
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def add_images(self, count: int) -> None:
        self.images += int(count)

    def note_cuda_peak(self, mb: float) -> None:
        """A CUDA peak (MiB) read before a reset of torch's counter, or measured in another process of this run."""
        self._cuda_noted_mb = max(self._cuda_noted_mb, float(mb))

    def peak_memory_mb(self) -> dict[str, float]:
        """{"cpu_rss_mb": high-water RSS since start, "cuda_mb": peak CUDA allocation since start (if used): torch's
        counter or the largest :meth:`note_cuda_peak`, whichever is larger}."""
        self._peak_rss = max(self._peak_rss, _rss_mb())
        out = {"cpu_rss_mb": round(self._peak_rss, 1)}
        cuda = self._cuda_noted_mb or None  # None: no CUDA in this run
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            cuda = max(cuda or 0.0, torch.cuda.max_memory_allocated() / 2**20)
        if cuda is not None:
            out["cuda_mb"] = round(cuda, 1)
        return out

    def images_per_s(self) -> float | None:
        elapsed = time_now() - self.started
        return round(self.images / elapsed, 2) if self.images and elapsed > 0 else None


def time_now() -> float:
    import time

    return time.perf_counter()


_METER: list[ResourceMeter] = []


def start_meter() -> ResourceMeter:
    """Start measuring a new run (stopping the previous one); :func:`current_meter` returns it."""
    for meter in _METER:
        meter.stop()
    _METER[:] = [ResourceMeter().start()]
    return _METER[0]


def current_meter() -> ResourceMeter | None:
    return _METER[0] if _METER else None


def count_images(count: int) -> None:
    """Add ``count`` processed images to the current run's meter (no-op when none is running)."""
    if _METER:
        _METER[0].add_images(count)


def count_skipped(paths: Any) -> None:
    """Note files a run left out (empty or unreadable images) in the current run's meter; records report the count."""
    if _METER:
        _METER[0].skipped.update(str(p) for p in paths)


def peak_memory_mb() -> dict[str, float]:
    """Peak resident memory of the current run (:func:`start_meter`), else of the process, and peak CUDA memory if
    CUDA was used, in MiB."""
    if _METER:
        return _METER[0].peak_memory_mb()
    import resource

    out = {"cpu_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out
