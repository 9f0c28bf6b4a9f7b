#!/usr/bin/env bash
# Pack, on a machine with a package index, one file that installs sslbench with its `dense` extra on a GPU machine
# that reaches no index (docs/dense.md, "Installing on a GPU machine without a package index").
#   scripts/bundle_gpu.sh [--mmcv PATH|DIR] [--out FILE]    download, re-zip, pack, check the size
#   scripts/bundle_gpu.sh --dry-run ...                     print every command without running any
#   scripts/bundle_gpu.sh --help
# Options:
#   --python X.Y       the GPU image's Python (default 3.12; wheels are chosen for cpXY, manylinux, x86_64)
#   --torch V          the torch the mmcv wheel was built against, = the image's torch (default 2.11.0); the wheel
#                      is filed in the bundle under wheels/torch-V/cuda/, where install_mm.sh looks for it
#   --mmcv PATH|DIR    the mmcv 2.1.0 wheel with CUDA kernels, or a folder searched for mmcv-2.1.0-cpXY-cpXY-*.whl
#                      (default: .venv/wheels/torch-V/cuda/, where `SSLBENCH_MMCV_CUDA=1 install_mm.sh --build`
#                      keeps the wheel it built); it must contain the CUDA launchers (NMSCUDAKernelLauncher)
#   --no-mmcv          leave mmcv out (for testing the packing and the core install before the CUDA wheel exists:
#                      the bundle's install.sh then installs the core only and says so) and report the headroom
#                      left for it
#   --out FILE         the bundle (default dist/sslbench-gpu-cpXY.tar.xz)
#   --platform TAG     a platform tag pip may take wheels for; repeatable (default: manylinux_2_28_x86_64,
#                      manylinux_2_17_x86_64, manylinux2014_x86_64: glibc >= 2.28, which torch 2.11's own wheels
#                      already need)
#   --max-bytes N      the size limit (default 67108864 = 64 MiB); a bigger bundle is still written, its size and
#                      members are printed, and the script exits 1
# Environment:
#   PYTHON=.venv/bin/python   the interpreter whose pip downloads and which re-zips (default: .venv/bin/python, else
#                             python3); it needs no relation to the target Python
# On the GPU machine:   tar -xJf sslbench-gpu-cp312.tar.xz && bash sslbench-gpu-bundle/install.sh CHECKOUT
# (install.sh is scripts/bundle_gpu_install.sh: a venv with --system-site-packages on the image's python, then
# SSLBENCH_OWN_TORCH=1 SSLBENCH_FIND_LINKS=<bundle>/wheels scripts/setup_env.sh --dense: every pip call --no-index).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed -E 's/^# ?//'; }
die2() { echo "bundle_gpu.sh: $*" >&2; exit 2; }

pyver=3.12
torch=2.11.0
mmcv_arg=""
no_mmcv=0
out=""
platforms=()
max_bytes=$((64 * 1024 * 1024))
dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --dry-run) dry=1 ;;
    --no-mmcv) no_mmcv=1 ;;
    --python | --torch | --mmcv | --out | --platform | --max-bytes)
      [ $# -ge 2 ] && [ -n "$2" ] || die2 "$1 needs a value (see --help)"
      case "$1" in
        --python) pyver=$2 ;;
        --torch) torch=$2 ;;
        --mmcv) mmcv_arg=$2 ;;
        --out) out=$2 ;;
        --platform) platforms+=("$2") ;;
        --max-bytes) max_bytes=$2 ;;
      esac
      shift ;;
    *) die2 "unknown option '$1' (valid: --python, --torch, --mmcv, --no-mmcv, --out, --platform, --max-bytes, --dry-run, --help)" ;;
  esac
  shift
done
[[ "$pyver" =~ ^3\.[0-9]+$ ]] || die2 "--python $pyver: expected X.Y, e.g. 3.12"
[[ "$max_bytes" =~ ^[0-9]+$ ]] || die2 "--max-bytes $max_bytes: expected a number of bytes"
[ "$no_mmcv" = 0 ] || [ -z "$mmcv_arg" ] || die2 "--mmcv and --no-mmcv exclude each other"
pytag=cp${pyver/./}
out=${out:-dist/sslbench-gpu-$pytag.tar.xz}
case "$out" in *.tar.xz) ;; *) die2 "--out $out: the bundle is a .tar.xz" ;; esac
[ ${#platforms[@]} -gt 0 ] || platforms=(manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || command -v "$PY" >/dev/null || PY=python3

# What the bundle brings: every wheel that sslbench (core + the `dev` extra, which scripts/setup_env.sh always
# installs) and its `dense` extra need and the GPU image lacks. Decided from real metadata: a simulated image (a
# fresh CPython 3.12 venv with torch==2.11.0 torchvision timm scikit-learn pandas matplotlib tqdm PyYAML) and
# `pip install --dry-run --report` of `-e .[dev]` and of the dense runtime dependencies in a --system-site-packages
# venv over it (2026-11-29). Versions: requirements/constraints-dense.txt, then requirements/constraints.txt.
# The image already holds, and the bundle does not bring: torch/torchvision/triton/nvidia-*, numpy and pillow
# (torchvision), scipy, joblib, threadpoolctl (scikit-learn), safetensors, huggingface_hub, PyYAML (timm), pandas,
# python-dateutil, tzdata, matplotlib, packaging, pyparsing, contourpy, fonttools, kiwisolver, cycler, tqdm,
# typing_extensions, filelock, setuptools (torch needs it on Python >= 3.12). Such packages keep the image's
# versions: offline, setup_env.sh / install_mm.sh drop their pins (scripts/constraints_offline.py).
wheels=(
  # core dependencies (pyproject.toml) missing from the image
  opencv-python-headless # cv2 for the crops/datasets and mmcv's image io; ~61 MB as a wheel: the largest member
  # the `dev` extra, installed by setup_env.sh's `pip install -e .[dev]`
  pytest pluggy iniconfig # pytest and its dependencies
  Pygments                # pytest's and rich's dependency
  ruff                    # the linter (~11 MB wheel)
  submitit                # `--executor slurm`
  cloudpickle             # submitit's dependency (joblib >= 1.6 brings it too; an older image joblib does not)
  pycocotools             # `dev` and `dense` (mmdet's COCO metric); compiled, abi3
  # the `dense` extra: the mm packages, installed --no-deps by install_mm.sh (mmcv comes from --mmcv)
  mmengine mmdet mmsegmentation
  # their runtime dependencies, as listed in requirements/constraints-dense.txt (install_mm.sh installs them by name
  # with those pins, so all of them travel even where the image might hold another version)
  addict rich markdown-it-py mdurl termcolor yapf platformdirs # mmengine
  shapely six terminaltables                                   # mmdet (shapely compiled, cp312)
  prettytable wcwidth ftfy regex                               # mmsegmentation (ftfy/regex imported, not declared)
  # installers and build backend
  setuptools # the dense pin setuptools==81 (pkg_resources at run time) and the build backend of `pip install -e .`
  wheel      # the build backend's second requirement (pyproject.toml [build-system])
  packaging  # wheel's dependency, needed inside pip's isolated build environment, which does not see the image
  ninja      # install_mm.sh's first step installs it with setuptools and wheel (only a from-source build uses it)
  "pip>=24"  # install.sh makes the venv --without-pip (an image's python may lack ensurepip) and installs this one;
             # setup_env.sh wants pip >= 24 (Python 3.12.1's ensurepip would give 23.2.1); constraints.txt pins which
)

run() {  # print, and execute unless --dry-run (dropping pip's noise about unreachable local index folders)
  echo "+ $*"
  if [ "$dry" = 0 ]; then
    "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }
    return "${PIPESTATUS[0]}"
  fi
}

# 1. The mmcv wheel with CUDA kernels.
mmcv=""
if [ "$no_mmcv" = 0 ]; then
  mmcv_arg=${mmcv_arg:-.venv/wheels/torch-$torch/cuda}
  if [ -d "$mmcv_arg" ]; then
    mmcv=$(find "$mmcv_arg" -name "mmcv-2.1.0-$pytag-$pytag-*.whl" | sort | head -n1)
    [ -n "$mmcv" ] || { echo "bundle_gpu.sh: no mmcv-2.1.0-$pytag-$pytag-*.whl under $mmcv_arg (or pass --no-mmcv)" >&2; exit 1; }
  elif [ -f "$mmcv_arg" ]; then
    mmcv=$mmcv_arg
    case "$(basename "$mmcv")" in
      "mmcv-2.1.0-$pytag-$pytag-"*.whl) ;;
      *) echo "bundle_gpu.sh: $mmcv is not an mmcv-2.1.0-$pytag-$pytag-*.whl" >&2; exit 1 ;;
    esac
  else
    echo "bundle_gpu.sh: --mmcv $mmcv_arg: no such file or folder (the CUDA wheel: SSLBENCH_MMCV_CUDA=1" \
      "scripts/install_mm.sh --build; or pass --no-mmcv)" >&2
    exit 1
  fi
fi

work=$(dirname "$out")/.bundle-gpu-work
stage=$work/sslbench-gpu-bundle
if [ "$dry" = 0 ]; then
  mkdir -p "$(dirname "$out")"
  trap 'rm -rf "$work"' EXIT
fi
run rm -rf "$work"
run mkdir -p "$work/download" "$stage/wheels"

# 2. Download: binary wheels only, for the target Python and platform, no dependency resolution (the list above is
#    the closure), pinned by the constraints files.
plat_args=()
for p in "${platforms[@]}"; do plat_args+=(--platform "$p"); done
run "$PY" -m pip download -q --only-binary=:all: --python-version "$pyver" --implementation cp "${plat_args[@]}" \
  --no-deps -d "$work/download" -c requirements/constraints-dense.txt -c requirements/constraints.txt "${wheels[@]}"

# 3. Re-zip every wheel with ZIP_STORED (same members, names, dates and modes; RECORD hashes the files, not the zip,
#    so the wheel stays valid) and let xz compress the whole. Measured on this list without mmcv (2026-11-29):
#      the downloaded wheels as they are          87,124,444 bytes; tar | xz -9e: 85,647,036 (deflate does not
#                                                 compress again): over 64 MiB (67,108,864) already
#      re-zipped ZIP_STORED                       235,092,372 bytes; tar | xz -9e: 56,393,912
#      the same with xz's x86 filter (--x86)      55,348,004 (52.78 MiB): the shared objects (opencv's 74 MB cv2
#                                                 and its 39 MB OpenBLAS, ruff) are x86 code; ~3 min on one core
#      with the CUDA mmcv (cp312/torch 2.11.0/sm_90: 6.5 MB wheel, 33.4 MB stored)   58,060,808 (55.37 MiB)
#    so: stored wheels, one tar, xz --x86 --lzma2=preset=9e. One solid stream, single-threaded (-T1): more threads
#    cut the stream into blocks and lose ratio. ruff alone is ~7.0 MB of it (the first thing to drop if mmcv does
#    not fit: it is the `dev` extra's linter).
run "$PY" scripts/store_wheels.py "$work/download" "$stage/wheels" "$work/MANIFEST.txt"

# 4. mmcv, stored too, under the folder install_mm.sh prefers (SSLBENCH_MMCV_WHEEL_DIR=<bundle>/wheels); pip's
#    --find-links does not descend into it, so only install_mm.sh installs it (by path, --no-deps).
mmcv_dir=$stage/wheels/torch-$torch/cuda
if [ -n "$mmcv" ]; then
  run mkdir -p "$mmcv_dir"
  run "$PY" scripts/store_wheels.py --mmcv "$mmcv" "$mmcv_dir" "$work/MANIFEST.txt" "$stage"
fi

# 5. install.sh, what it needs to know about the bundle, and the manifest.
run cp scripts/bundle_gpu_install.sh "$stage/install.sh"
run chmod +x "$stage/install.sh"
mmcv_rel=""
if [ -n "$mmcv" ]; then mmcv_rel=wheels/torch-$torch/cuda/$(basename "$mmcv"); fi
echo "+ write $stage/bundle.env (BUNDLE_PYTHON=$pyver BUNDLE_TORCH=$torch BUNDLE_MMCV=$mmcv_rel)"
if [ "$dry" = 0 ]; then
  printf 'BUNDLE_PYTHON=%s\nBUNDLE_TORCH=%s\nBUNDLE_MMCV=%s\nBUNDLE_COMMIT=%s\n' "$pyver" "$torch" "$mmcv_rel" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" > "$stage/bundle.env"
fi
run mv "$work/MANIFEST.txt" "$stage/MANIFEST.txt"

# 6. One file: a reproducible tar (sorted, numeric owner 0, fixed dates) through xz.
echo "+ tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - -C $work sslbench-gpu-bundle" \
  "| xz --x86 --lzma2=preset=9e -T1 > $out"
if [ "$dry" = 0 ]; then
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - -C "$work" sslbench-gpu-bundle \
    | xz --x86 --lzma2=preset=9e -T1 > "$out.partial"
  mv "$out.partial" "$out"
fi

# 7. The size check.
echo "+ check: the size of $out <= $max_bytes bytes ($((max_bytes / 1048576)) MiB)"
[ "$dry" = 0 ] || exit 0
size=$(stat -c %s "$out")
echo "members (downloaded bytes, stored bytes, name):"
grep -v '^#' "$stage/MANIFEST.txt" | awk '{printf "  %10d %10d  %s\n", $1, $2, $4}'
awk '!/^#/ {d += $1; s += $2} END {printf "  %10d %10d  total\n", d, s}' "$stage/MANIFEST.txt"
mib=$(awk -v b="$size" 'BEGIN {printf "%.2f", b / 1048576}')
if [ "$size" -gt "$max_bytes" ]; then
  echo "bundle_gpu.sh: $out is $size bytes ($mib MiB), OVER the limit of $max_bytes bytes by $((size - max_bytes))" >&2
  exit 1
fi
echo "bundle_gpu.sh: $out: $size bytes ($mib MiB), within $max_bytes bytes ($((max_bytes - size)) to spare)"
if [ -z "$mmcv" ]; then
  echo "bundle_gpu.sh: no mmcv in this bundle (--no-mmcv); the mmcv wheel has $((max_bytes - size)) bytes" \
    "($(awk -v b="$((max_bytes - size))" 'BEGIN {printf "%.2f", b / 1048576}') MiB) of the limit left, compressed"
fi
