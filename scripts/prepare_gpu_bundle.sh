#!/usr/bin/env bash
# From nothing to the GPU machine's offline bundle, on a CPU machine with a package index (docs/dense.md, "Installing
# on a GPU machine without a package index"): a build venv on the GPU image's Python with its torch, mmcv's CUDA ops
# compiled there (scripts/install_mm.sh, SSLBENCH_MMCV_CUDA=1: about 37 minutes on 2 cores), then
# scripts/bundle_gpu.sh (about 3 minutes). Rerunnable: the venv and a built wheel are reused.
#   scripts/prepare_gpu_bundle.sh [--python PY] [--torch V] [--arch LIST] [--venv DIR] [--out FILE] [--dry-run]
# Options:
#   --python PY    the interpreter of the GPU image's Python version (default: python3.12)
#   --torch V      the image's torch (default 2.11.0; installed from the registry's default CUDA build, +cu130)
#   --arch LIST    TORCH_CUDA_ARCH_LIST for the ops (default 9.0: H100/H200)
#   --venv DIR     the build venv (default build/gpu-venv; ignored by git)
#   --out FILE     the bundle (default dist/sslbench-gpu-cp<XY>.tar.xz)
#   --dry-run      print the commands (and install_mm.sh's and bundle_gpu.sh's plans) without running them
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed -E 's/^# ?//'; }
die2() { echo "prepare_gpu_bundle.sh: $*" >&2; exit 2; }
python=python3.12
torch=2.11.0
arch=9.0
venv=build/gpu-venv
out=""
dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --dry-run) dry=1 ;;
    --python | --torch | --arch | --venv | --out)
      [ $# -ge 2 ] && [ -n "$2" ] || die2 "$1 needs a value (see --help)"
      case "$1" in
        --python) python=$2 ;; --torch) torch=$2 ;; --arch) arch=$2 ;; --venv) venv=$2 ;; --out) out=$2 ;;
      esac
      shift ;;
    *) die2 "unknown option '$1' (valid: --python, --torch, --arch, --venv, --out, --dry-run, --help)" ;;
  esac
  shift
done
command -v "$python" >/dev/null || die2 "--python $python: not found (the GPU image's Python version is needed here)"
pyver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
out=${out:-dist/sslbench-gpu-cp${pyver/./}.tar.xz}
run() {  # print, and execute unless --dry-run
  echo "+ $*"
  if [ "$dry" = 0 ]; then "$@"; fi
}
start=$(date +%s)
# 1. The build venv: the image's torch, and sslbench's core (install_mm.sh's closing check imports cv2, yaml, ...).
if [ ! -x "$venv/bin/python" ]; then run "$python" -m venv "$venv"; fi
run "$venv/bin/python" -m pip install -q "torch==$torch" torchvision
own=$venv/constraints-own-torch.txt
echo "+ grep -viE '^(torch|torchvision|triton|nvidia-|cuda-)' requirements/constraints.txt > $own"
if [ "$dry" = 0 ]; then grep -viE '^(torch|torchvision|triton|nvidia-|cuda-)' requirements/constraints.txt > "$own"; fi
run "$venv/bin/python" -m pip install -q -c "$own" -e .
# 2. mmcv with CUDA kernels (a wheel kept from an earlier build under <venv>/wheels/torch-<v>/cuda/ is reused).
dry_flag=()
if [ "$dry" = 1 ]; then dry_flag=(--dry-run); fi
echo "+ SSLBENCH_VENV=$venv SSLBENCH_MMCV_CUDA=1 TORCH_CUDA_ARCH_LIST=$arch SSLBENCH_MMCV_WHEEL_DIR=$venv/wheels" \
  "bash scripts/install_mm.sh ${dry_flag[*]}"
if [ "$dry" = 0 ] || [ -x "$venv/bin/python" ]; then
  SSLBENCH_VENV=$venv SSLBENCH_MMCV_CUDA=1 TORCH_CUDA_ARCH_LIST=$arch SSLBENCH_MMCV_WHEEL_DIR=$venv/wheels \
    bash scripts/install_mm.sh "${dry_flag[@]}"
fi
# 3. The bundle.
run bash scripts/bundle_gpu.sh --python "$pyver" --torch "$torch" --mmcv "$venv/wheels/torch-$torch/cuda" --out "$out"
if [ "$dry" = 0 ]; then echo "prepare_gpu_bundle.sh: $out ready in $(( $(date +%s) - start )) s"; fi
