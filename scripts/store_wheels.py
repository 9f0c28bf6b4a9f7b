"""Re-zip wheels with ZIP_STORED for the GPU bundle (scripts/bundle_gpu.sh) and list them in its manifest.

    python scripts/store_wheels.py SRC_DIR DST_DIR MANIFEST              every *.whl of SRC_DIR; writes MANIFEST
    python scripts/store_wheels.py --mmcv WHEEL DST_DIR MANIFEST BASE    one mmcv wheel, which must hold CUDA kernels;
                                                                          appends to MANIFEST (named relative to BASE)

A wheel's RECORD hashes its files, not the zip, so the same members (names, dates, modes) stored uncompressed are a
valid wheel, which xz then compresses far better than it can compress deflate's output. Every member's CRC is
compared with the original's. Manifest rows: downloaded bytes, stored bytes, sha256 of the downloaded wheel, name.
"""

import glob
import hashlib
import os
import re
import sys
import zipfile

HEADER = "# downloaded_bytes stored_bytes sha256_of_the_downloaded_wheel name\n"


def store(path: str, dst: str) -> tuple[int, int, str]:
    """Write ``dst/<name>`` with every member of ``path`` stored; (downloaded bytes, stored bytes, sha256)."""
    target = os.path.join(dst, os.path.basename(path))
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            info.compress_type = zipfile.ZIP_STORED
            zout.writestr(info, data)
    with zipfile.ZipFile(path) as a, zipfile.ZipFile(target) as b:
        assert [(i.filename, i.CRC) for i in a.infolist()] == [(i.filename, i.CRC) for i in b.infolist()], target
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return os.path.getsize(path), os.path.getsize(target), digest


def store_all(src: str, dst: str, manifest: str) -> None:
    rows = [(*store(path, dst), os.path.basename(path)) for path in sorted(glob.glob(os.path.join(src, "*.whl")))]
    with open(manifest, "w") as f:
        f.write(HEADER)
        f.writelines(f"{a} {b} {c} {d}\n" for a, b, c, d in rows)
    print(f"{len(rows)} wheels: {sum(r[0] for r in rows)} bytes downloaded, {sum(r[1] for r in rows)} bytes stored")


def store_mmcv(path: str, dst: str, manifest: str, base: str) -> None:
    with zipfile.ZipFile(path) as zin:
        ext = [i for i in zin.infolist() if re.fullmatch(r"mmcv/_ext[^/]*\.so", i.filename)]
        if not ext or b"NMSCUDAKernelLauncher" not in zin.read(ext[0]):
            sys.exit(f"bundle_gpu.sh: {path} has no CUDA kernels (no NMSCUDAKernelLauncher in mmcv/_ext*.so)")
    downloaded, stored, digest = store(path, dst)
    name = os.path.relpath(os.path.join(dst, os.path.basename(path)), base)
    with open(manifest, "a") as f:
        f.write(f"{downloaded} {stored} {digest} {name}\n")
    print(f"mmcv: {os.path.basename(path)}, {ext[0].file_size} bytes of {ext[0].filename}, CUDA kernels present")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--mmcv":
        store_mmcv(*sys.argv[2:])
    elif len(sys.argv) == 4:
        store_all(*sys.argv[1:])
    else:
        sys.exit(__doc__.split("\n\n")[1])
