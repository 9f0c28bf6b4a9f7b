#!/usr/bin/env bash
# install.sh of a bundle made by scripts/bundle_gpu.sh: install sslbench with its `dense` extra on a machine that
# reaches no package index, from the wheels next to this script.
#   bash install.sh [CHECKOUT]            CHECKOUT: the sslbench checkout (default: the current directory)
#   bash install.sh --dry-run [CHECKOUT]  print the commands (and setup_env.sh --dry-run's) without running them
#   bash install.sh --help
# Environment:
#   PYTHON=python3   the image's interpreter; it must hold the bundle's Python and torch (bundle.env), torchvision,
#                    timm, scikit-learn, pandas, matplotlib, tqdm and PyYAML (what the bundle leaves out)
# In CHECKOUT it runs:
#   $PYTHON -m venv --without-pip --system-site-packages .venv, then pip from the bundle's pip wheel
#                    (unless .venv exists; the image's torch is used as it is; when $PYTHON is itself a venv, a .pth
#                    file adds its site-packages)
#   SSLBENCH_OWN_TORCH=1 SSLBENCH_FIND_LINKS=<bundle>/wheels SSLBENCH_MMCV_WHEEL_DIR=<bundle>/wheels \
#     SSLBENCH_MMCV_CUDA=1 PIP_NO_INDEX=1 bash scripts/setup_env.sh --dense
# so every pip call is `--no-index --find-links <bundle>/wheels`, the pins of what the image holds are dropped, the
# prebuilt mmcv (wheels/torch-<v>/cuda/) is installed and checked for its CUDA kernels, and nothing is compiled.
# A bundle made with --no-mmcv installs the core only (setup_env.sh without --dense) and says so.
set -euo pipefail
usage() { sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed -E 's/^# ?//'; }
dry=0
checkout=.
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --dry-run) dry=1 ;;
    -*) echo "install.sh: unknown option '$arg' (valid: --dry-run, --help)" >&2; exit 2 ;;
    *) checkout=$arg ;;
  esac
done
bundle=$(cd "$(dirname "$0")" && pwd)
[ -f "$bundle/bundle.env" ] || { echo "install.sh: $bundle/bundle.env missing: not an unpacked bundle" >&2; exit 1; }
# shellcheck disable=SC1091
. "$bundle/bundle.env"
PYTHON=${PYTHON:-python3}
cd "$checkout"
[ -f scripts/setup_env.sh ] || { echo "install.sh: $(pwd) is not an sslbench checkout (no scripts/setup_env.sh)" >&2; exit 1; }
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1

run() {  # print, and execute unless --dry-run
  echo "+ $*"
  if [ "$dry" = 0 ]; then "$@"; fi
}

# 1. The venv over the image's packages.
pyv=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if [ "$pyv" != "$BUNDLE_PYTHON" ]; then
  echo "install.sh: $PYTHON is Python $pyv; this bundle's wheels are for Python $BUNDLE_PYTHON" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  # without pip (an image's python may lack ensurepip, e.g. Debian's without python3-venv): pip comes from the bundle
  run "$PYTHON" -m venv --without-pip --system-site-packages .venv
  pip_wheel=$(find "$bundle/wheels" -maxdepth 1 -name 'pip-*.whl' | head -n1)
  run .venv/bin/python "$pip_wheel/pip" install -q --no-index --find-links "$bundle/wheels" --ignore-installed pip
  if [ "$("$PYTHON" -c 'import sys; print(int(sys.prefix != sys.base_prefix))')" = 1 ]; then
    # --system-site-packages reaches the base interpreter's packages, not a venv's: name the image venv's own
    site_dir=.venv/lib/python$pyv/site-packages
    echo "+ $PYTHON -c 'import site; print(*site.getsitepackages(), sep=\"\\n\")' > $site_dir/_sslbench_image.pth"
    if [ "$dry" = 0 ]; then
      "$PYTHON" -c 'import site; print(*site.getsitepackages(), sep="\n")' > "$site_dir/_sslbench_image.pth"
    fi
  fi
fi
if [ "$dry" = 0 ]; then
  torch_v=$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null) || {
    echo "install.sh: .venv/bin/python cannot import torch: the image's torch must be visible (.venv made with" \
      "--system-site-packages over $PYTHON); remove .venv and rerun" >&2
    exit 1
  }
  if [ -n "$BUNDLE_MMCV" ] && [ "$torch_v" != "$BUNDLE_TORCH" ]; then
    echo "install.sh: the image has torch $torch_v; this bundle's mmcv ops were built against torch $BUNDLE_TORCH" >&2
    exit 1
  fi
fi

# 2. sslbench (and the dense extra) from the bundle's wheels only.
setup_args=()
if [ -n "$BUNDLE_MMCV" ]; then setup_args+=(--dense); fi
if [ "$dry" = 1 ]; then setup_args+=(--dry-run); fi
echo "+ SSLBENCH_OWN_TORCH=1 SSLBENCH_FIND_LINKS=$bundle/wheels SSLBENCH_MMCV_WHEEL_DIR=$bundle/wheels" \
  "SSLBENCH_MMCV_CUDA=1 bash scripts/setup_env.sh ${setup_args[*]}"
SSLBENCH_OWN_TORCH=1 SSLBENCH_FIND_LINKS=$bundle/wheels SSLBENCH_MMCV_WHEEL_DIR=$bundle/wheels SSLBENCH_MMCV_CUDA=1 \
  bash scripts/setup_env.sh "${setup_args[@]}"
if [ -z "$BUNDLE_MMCV" ]; then
  echo "install.sh: this bundle has no mmcv wheel (made with --no-mmcv): the dense extra was not installed" >&2
fi
