"""Small reference files the protocols need, fetched once and verified by sha256.

Each asset has a file name, its official URL and its sha256. :func:`fetch` looks, in order, in the cache directory
(``$SSLBENCH_CACHE``, default ``~/.cache/sslbench/assets``), in the directories listed in ``$SSLBENCH_ASSET_DIRS``
(``os.pathsep``-separated, searched recursively by file name; CI points it at a local mirror), and finally downloads
from the URL when allowed. A file whose checksum does not match is never used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import urllib.request
from pathlib import Path

from sslcore.errors import SSLBenchError
from sslcore.io import atomic_write_bytes


class AssetError(SSLBenchError):
    """An asset is unavailable or fails its checksum."""


@dataclasses.dataclass(frozen=True)
class Asset:
    filename: str
    url: str
    sha256: str
    description: str


ASSETS: dict[str, Asset] = {
    "imagenet_1percent": Asset(
        "1percent.txt",
        "https://raw.githubusercontent.com/google-research/simclr/master/imagenet_subsets/1percent.txt",
        "71e82a48ba78252683ae334c4d019ebd5c6e855b9599c1389fbe83eb9549cf17",
        "SimCLR ImageNet 1% label split (12,811 train file names)",
    ),
    "imagenet_10percent": Asset(
        "10percent.txt",
        "https://raw.githubusercontent.com/google-research/simclr/master/imagenet_subsets/10percent.txt",
        "6d09de11e7bdaf5b1f3b1f249b6183695f97310cdd20f0c03e7235b6b9392091",
        "SimCLR ImageNet 10% label split (128,116 train file names)",
    ),
    "davis_palette": Asset(
        "davis_palette.txt",
        "https://raw.githubusercontent.com/Liusifei/UVC/master/libs/data/palette.txt",
        "9223d8f5ad4ebd34d09edbd0d5a686fcb544c768bd215efd81ba5d88c78e82b8",
        "the 256-entry palette DINO's DAVIS evaluation writes masks with",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("SSLBENCH_CACHE") or Path.home() / ".cache" / "sslbench") / "assets"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _candidates(filename: str) -> list[Path]:
    found = []
    for root in filter(None, os.environ.get("SSLBENCH_ASSET_DIRS", "").split(os.pathsep)):
        root_path = Path(root)
        if root_path.is_dir():
            found.extend(sorted(root_path.rglob(filename)))
    return found


def fetch(name: str, allow_download: bool = True, timeout: float = 30.0) -> Path:
    """Path to a verified local copy of asset ``name``.

    Raises:
        AssetError: unknown name, or no copy with the right checksum could be found or downloaded.
    """
    if name not in ASSETS:
        raise AssetError(f"unknown asset {name!r} (known: {', '.join(sorted(ASSETS))})")
    asset = ASSETS[name]
    target = cache_dir() / asset.filename
    if target.is_file() and _sha256(target.read_bytes()) == asset.sha256:
        return target
    for candidate in _candidates(asset.filename):
        data = candidate.read_bytes()
        if _sha256(data) == asset.sha256:
            return atomic_write_bytes(target, data)
    if not allow_download:
        raise AssetError(f"asset {name} ({asset.filename}) not found with sha256 {asset.sha256[:12]}...")
    try:
        with urllib.request.urlopen(asset.url, timeout=timeout) as response:  # noqa: S310 (fixed https URLs)
            data = response.read()
    except OSError as exc:
        raise AssetError(f"asset {name}: download from {asset.url} failed ({exc})") from None
    if _sha256(data) != asset.sha256:
        raise AssetError(
            f"asset {name}: {asset.url} has sha256 {_sha256(data)[:12]}..., expected {asset.sha256[:12]}..."
        )
    return atomic_write_bytes(target, data)
