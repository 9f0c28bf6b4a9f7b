#!/usr/bin/env bash
# Install the `dense` extra (mmcv 2.1.0 with ops, mmengine 0.10.7, mmdet 3.3.0, mmsegmentation 1.2.2) into .venv.
#   scripts/install_mm.sh              install (idempotent: a stamp in .venv skips work already done)
#   scripts/install_mm.sh --dry-run    print every command of the chosen path without running any
#   scripts/install_mm.sh --build      build mmcv from the PyPI sdist even if a prebuilt wheel is available
# Environment:
#   SSLBENCH_MMCV_WHEEL_DIR=DIR   search DIR recursively for mmcv-2.1.0-<pytag>-<pytag>-*.whl (CI: ../shared/wheels);
#                                 a wheel under a folder named torch-<this torch version> is preferred
#   SSLBENCH_MMCV_CUDA=auto|0|1   compile the CUDA ops (auto: a CUDA build of torch and a visible GPU; 1 builds them
#                                 on a machine without a GPU, e.g. to prepare the wheel a GPU machine installs)
#   TORCH_CUDA_ARCH_LIST=9.0      the GPU architectures to compile for (default: the visible GPU's, else 8.0;9.0;10.0)
#   SSLBENCH_VENV=.venv           the environment to install into
#   SSLBENCH_FIND_LINKS=DIR       no package index: every `pip install|download|wheel` gets --no-index --find-links DIR,
#                                 and requirements/constraints.txt loses the pins of what the environment already
#                                 holds (scripts/constraints_offline.py); used by a GPU bundle's install.sh
# mmcv has no binary wheels on PyPI. Building from the sdist today needs setuptools<82 without build isolation
# (its setup.py imports pkg_resources) and, for torch >= 2.13, -std=c++20 instead of the hard-coded -std=c++17
# (torch 2.14's headers refuse C++17). See docs/dense.md.
set -euo pipefail
cd "$(dirname "$0")/.."
dry=0
build=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry=1 ;;
    --build) build=1 ;;
    *) echo "install_mm.sh: unknown option '$arg' (valid: --dry-run, --build)" >&2; exit 2 ;;
  esac
done
venv=${SSLBENCH_VENV:-.venv}
PY=$venv/bin/python
[ -x "$PY" ] || { echo "install_mm.sh: $PY not found; run scripts/setup_env.sh first" >&2; exit 1; }
constraints=requirements/constraints-dense.txt
MMCV_VERSION=2.1.0

run() {  # print, and execute unless --dry-run (dropping pip's noise about unreachable local index folders)
  if [ -n "${SSLBENCH_FIND_LINKS:-}" ] && [ "${2:-}" = -m ] && [ "${3:-}" = pip ]; then
    set -- "$1" -m pip "$4" --no-index --find-links "$SSLBENCH_FIND_LINKS" "${@:5}"
  fi
  echo "+ $*"
  if [ "$dry" = 0 ]; then
    "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }
    return "${PIPESTATUS[0]}"
  fi
}

pytag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
torch_version=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
torch_cuda=$("$PY" -c 'import torch; print(torch.version.cuda or "")')
cuda=${SSLBENCH_MMCV_CUDA:-auto}
case "$cuda" in
  auto | 0 | 1) ;;
  *) echo "install_mm.sh: SSLBENCH_MMCV_CUDA=$cuda (valid: auto, 0, 1)" >&2; exit 2 ;;
esac
gpu_arch=$("$PY" -c 'import torch; c = torch.cuda.get_device_capability() if torch.cuda.is_available() else None; print(f"{c[0]}.{c[1]}" if c else "")' 2>/dev/null || true)
if [ "$cuda" = auto ]; then
  cuda=0
  if [ -n "$torch_cuda" ] && [ -n "$gpu_arch" ]; then cuda=1; fi
fi
if [ "$cuda" = 1 ] && [ -z "$torch_cuda" ]; then
  echo "install_mm.sh: SSLBENCH_MMCV_CUDA=1 needs a CUDA build of torch; $PY has torch $torch_version (CPU only)" >&2
  exit 2
fi
arch_list=${TORCH_CUDA_ARCH_LIST:-${gpu_arch:-8.0;9.0;10.0}}
wheel_sub=torch-$torch_version  # where a built wheel is kept, and the folder a prebuilt one is preferred from
if [ "$cuda" = 1 ]; then wheel_sub=torch-$torch_version/cuda; fi
key=$(cat "$constraints" "$0" | sha256sum | cut -c1-16)-torch$torch_version-$pytag-cuda$cuda
stamp=$venv/.sslbench-dense-$key
if [ -f "$stamp" ] && [ "$build" = 0 ] && [ "$dry" = 0 ]; then
  echo "install_mm.sh: dense extra already installed ($stamp)"
  exit 0
fi
start=$(date +%s)

# 1. Build/runtime helpers first: setuptools<82 must be in place before anything imports pkg_resources.
run "$PY" -m pip install -q -c "$constraints" "setuptools<82" wheel ninja

# 2. mmcv 2.1.0 with compiled ops: a prebuilt wheel for this Python (and torch), or a build from the sdist.
wheel=""
if [ "$build" = 0 ] && [ -n "${SSLBENCH_MMCV_WHEEL_DIR:-}" ]; then
  if [ ! -d "$SSLBENCH_MMCV_WHEEL_DIR" ]; then
    echo "install_mm.sh: SSLBENCH_MMCV_WHEEL_DIR=$SSLBENCH_MMCV_WHEEL_DIR is not a directory; building instead" >&2
  else
    candidates=$(find "$SSLBENCH_MMCV_WHEEL_DIR" -name "mmcv-$MMCV_VERSION-$pytag-$pytag-*.whl" | sort)
    wheel=$(printf '%s\n' "$candidates" | grep -F "/$wheel_sub/" | head -n1 || true)
    if [ -z "$wheel" ] && [ "$cuda" = 0 ]; then
      # a wheel not filed under torch-<version>/ is only used when no folder names another torch
      wheel=$(printf '%s\n' "$candidates" | grep -v '/torch-[0-9]' | head -n1 || true)
    fi
    if [ -z "$wheel" ]; then
      echo "install_mm.sh: no mmcv-$MMCV_VERSION wheel for $pytag / $wheel_sub under" \
        "$SSLBENCH_MMCV_WHEEL_DIR; building from the sdist" >&2
    fi
  fi
fi

if [ -z "$wheel" ]; then
  workdir=$venv/tmp/mmcv-build
  std=c++17
  if "$PY" -c 'import sys, torch; v = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 13))'; then
    std=c++20
  fi
  echo "install_mm.sh: building mmcv $MMCV_VERSION from the sdist (torch $torch_version, -std=$std, CUDA ops: $cuda)"
  run rm -rf "$workdir"
  run mkdir -p "$workdir"
  env_vars=(MMCV_WITH_OPS=1 "MAX_JOBS=$(nproc)" "CFLAGS=-g0" "CXXFLAGS=-g0")
  if [ "$cuda" = 1 ]; then
    # The CUDA compiler and the CCCL headers come from the package registry, in the version of torch's CUDA; the
    # registry's layout keeps compiler, headers and libraries under site-packages/nvidia/cu<major>/, which is then
    # CUDA_HOME. nvcc's front end (nvvm) and crt headers are separate packages that nvcc does not pin: a newer nvvm
    # emits PTX that this ptxas refuses ("Unsupported .version 9.5"), so all four are pinned to torch's CUDA.
    # The link step's -lcudart needs an unversioned libcudart.so, which that layout lacks.
    run "$PY" -m pip install -q "nvidia-cuda-nvcc==$torch_cuda.*" "nvidia-nvvm==$torch_cuda.*" \
      "nvidia-cuda-crt==$torch_cuda.*" "nvidia-cuda-cccl==$torch_cuda.*"
    cuda_home=$("$PY" -c "import os, sysconfig; print(os.path.join(sysconfig.get_paths()['purelib'], 'nvidia', 'cu${torch_cuda%%.*}'))")
    if [ "$dry" = 0 ] && [ ! -x "$cuda_home/bin/nvcc" ]; then
      echo "install_mm.sh: no nvcc at $cuda_home/bin/nvcc after installing nvidia-cuda-nvcc==$torch_cuda.*" >&2
      exit 1
    fi
    run mkdir -p "$workdir/cudalib"
    run ln -sf "$cuda_home/lib/libcudart.so.${torch_cuda%%.*}" "$workdir/cudalib/libcudart.so"
    env_vars+=(FORCE_CUDA=1 "CUDA_HOME=$cuda_home" "TORCH_CUDA_ARCH_LIST=$arch_list" "PATH=$cuda_home/bin:$PATH"
      "LDFLAGS=-L$(realpath -m "$workdir/cudalib")")
  fi
  run "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$workdir" "mmcv==$MMCV_VERSION"
  run tar -xzf "$workdir/mmcv-$MMCV_VERSION.tar.gz" -C "$workdir"
  src=$workdir/mmcv-$MMCV_VERSION
  if [ "$std" = c++20 ]; then
    run sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    if [ "$dry" = 0 ] && grep -q -- '-std=c++17' "$src/setup.py"; then
      echo "install_mm.sh: could not patch -std=c++17 in $src/setup.py" >&2
      exit 1
    fi
  fi
  run env "${env_vars[@]}" "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$workdir/dist" "$src"
  if [ "$dry" = 0 ]; then
    wheel=$(find "$workdir/dist" -name "mmcv-$MMCV_VERSION-*.whl" | head -n1)
    # keep the built wheel: a later re-install (or another venv with the same torch) reuses it via WHEEL_DIR
    mkdir -p "$venv/wheels/$wheel_sub"
    cp "$wheel" "$venv/wheels/$wheel_sub/"
  else
    wheel="$workdir/dist/mmcv-$MMCV_VERSION-$pytag-$pytag-linux_x86_64.whl"
  fi
fi
echo "install_mm.sh: mmcv from $wheel"
run "$PY" -m pip install -q --no-deps --force-reinstall "$wheel"

# 3. The mm packages without their declared dependencies (opencv-python would clobber the headless cv2/), then
#    their runtime dependencies as pinned in the constraints file.
run "$PY" -m pip install -q --no-deps -c "$constraints" mmengine mmdet mmsegmentation
core_constraints=requirements/constraints.txt
if [ -n "${SSLBENCH_FIND_LINKS:-}" ]; then
  core_constraints=$venv/tmp/constraints-core-offline.txt
  echo "+ $PY scripts/constraints_offline.py requirements/constraints.txt > $core_constraints"
  if [ "$dry" = 0 ]; then
    mkdir -p "$venv/tmp"
    "$PY" scripts/constraints_offline.py requirements/constraints.txt > "$core_constraints"
  fi
fi
runtime_deps=$(grep -vE '^(#|$|mmcv|mmengine|mmdet|mmsegmentation|wheel|ninja)' "$constraints" | cut -d= -f1)
# shellcheck disable=SC2086
run "$PY" -m pip install -q -c "$constraints" -c "$core_constraints" $runtime_deps

# 4. Check: the compiled ops run (with CUDA kernels when they were asked for, on the GPU when one is visible),
#    mmdet/mmseg import, one opencv distribution only.
if [ "$dry" = 0 ]; then
  SSLBENCH_CHECK_CUDA=$cuda "$PY" - <<'EOF'
import importlib.metadata as md
import os
import re

import torch
import mmcv, mmdet, mmengine, mmseg
from mmcv.ops import nms

boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
_, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
assert keep.tolist() == [0, 2], keep
if os.environ["SSLBENCH_CHECK_CUDA"] == "1":
    import mmcv._ext

    with open(mmcv._ext.__file__, "rb") as f:
        launchers = set(re.findall(rb"\d([A-Za-z][A-Za-z0-9]*CUDAKernelLauncher)", f.read()))  # mangled names
    assert b"NMSCUDAKernelLauncher" in launchers, f"{mmcv._ext.__file__} has no CUDA kernels"
    where = "no GPU visible"
    if torch.cuda.is_available():
        _, keep = nms(boxes.cuda(), torch.tensor([0.9, 0.8, 0.7]).cuda(), 0.5)
        assert keep.cpu().tolist() == [0, 2], keep
        where = f"nms ran on {torch.cuda.get_device_name()}"
    print(f"mmcv CUDA ops: {len(launchers)} kernel launchers in {os.path.basename(mmcv._ext.__file__)}; {where}")
gui = [d for d in ("opencv-python", "opencv-contrib-python") if list(md.distributions(name=d))]
assert not gui, f"GUI opencv installed next to the headless one: {gui}"
print(f"mm stack ready: mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, "
      f"mmseg {mmseg.__version__}")
EOF
  rm -f "$venv"/.sslbench-dense-*
  touch "$stamp"
  echo "install_mm.sh: done in $(( $(date +%s) - start )) s"
fi
