"""Label palettes for indexed ("P" mode) PNG masks.

DAVIS annotations and propagated masks are indexed PNGs; scoring reads indices, never colours, so the palette only
matters for viewing. :func:`voc_palette` generates the PASCAL VOC colour map (entry i spreads the bits of i over the
high bits of R, G and B); ShapesWorld uses it so that its files are byte-identical on every machine. The palette
DINO's evaluation writes with (UVC's ``palette.txt``, a slightly different table) is an asset fetched and verified by
checksum: :func:`davis_palette` returns it when available and the VOC map otherwise.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger("sslbench")


def voc_palette(num: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map as uint8 (num, 3)."""
    out = np.zeros((num, 3), np.uint8)
    for index in range(num):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        out[index] = (r, g, b)
    return out


def parse_palette_text(text: str) -> np.ndarray:
    """Parse the official "R G B" per line palette file into uint8 (256, 3)."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    arr = np.asarray(rows, dtype=np.int64)
    if arr.shape != (256, 3) or arr.min() < 0 or arr.max() > 255:
        raise ValueError(f"palette: expected 256 rows of 3 values in 0..255, got shape {arr.shape}")
    return arr.astype(np.uint8)


def davis_palette(allow_download: bool = False) -> np.ndarray:
    """DINO's DAVIS palette (verified by sha256) if it is available locally (or downloadable), else the VOC map."""
    from evaluate.datasets.assets import AssetError, fetch

    try:
        return parse_palette_text(fetch("davis_palette", allow_download=allow_download).read_text())
    except AssetError as exc:
        logger.info("using the generated VOC palette (%s)", exc)
        return voc_palette()
