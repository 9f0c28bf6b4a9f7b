#!/usr/bin/env bash
# Create (or update) the repo-local environment .venv/ from requirements/constraints.txt.
#   scripts/setup_env.sh            core + dev extras
#   scripts/setup_env.sh --dense    also the mm stack (mmcv/mmdet/mmseg) via scripts/install_mm.sh
#   scripts/setup_env.sh --dry-run  print the commands (pip, and install_mm.sh --dry-run) without running them
# Idempotent: a stamp keyed by the constraints, pyproject and options skips work already done.
# Environment:
#   PYTHON=python3.11               interpreter used to create .venv (default: python3)
#   SSLBENCH_OWN_TORCH=1            keep the torch/torchvision already in .venv (do not apply the torch pins)
#   SSLBENCH_FIND_LINKS=DIR         no package index: every pip call gets --no-index --find-links DIR (also passed on
#                                   to install_mm.sh), and the pins of what the environment already holds are dropped
#                                   (scripts/constraints_offline.py); a GPU bundle's install.sh sets it (docs/dense.md)
set -euo pipefail
cd "$(dirname "$0")/.."
dense=0
dry=0
for arg in "$@"; do
  case "$arg" in
    --dense) dense=1 ;;
    --dry-run) dry=1 ;;
    *) echo "setup_env.sh: unknown option '$arg' (valid: --dense, --dry-run)" >&2; exit 2 ;;
  esac
done
pip_opts=()
if [ -n "${SSLBENCH_FIND_LINKS:-}" ]; then
  if [ ! -d "$SSLBENCH_FIND_LINKS" ]; then
    echo "setup_env.sh: SSLBENCH_FIND_LINKS=$SSLBENCH_FIND_LINKS is not a directory" >&2
    exit 2
  fi
  pip_opts=(--no-index --find-links "$(realpath "$SSLBENCH_FIND_LINKS")")
fi
pip_quiet() {  # run pip, dropping its noise about unreachable local index folders; failures surface in the import check
  if [ "$dry" = 1 ]; then echo "+ $*"; return 0; fi
  "$@" 2>&1 | grep -v '^WARNING: Location' || true
}
PYTHON=${PYTHON:-python3}
if [ "$dry" = 1 ]; then
  [ -x .venv/bin/python ] || echo "+ $PYTHON -m venv .venv"
elif [ ! -x .venv/bin/python ]; then
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 required"'
  "$PYTHON" -m venv .venv
fi
constraints=requirements/constraints.txt
if [ "${SSLBENCH_OWN_TORCH:-0}" = "1" ]; then
  if [ "$dry" = 1 ]; then
    echo "+ grep -viE '^(torch|torchvision|triton|nvidia-|cuda-)' $constraints > .venv/tmp/constraints-own-torch.txt"
  else
    mkdir -p .venv/tmp
    grep -viE '^(torch|torchvision|triton|nvidia-|cuda-)' "$constraints" > .venv/tmp/constraints-own-torch.txt
  fi
  constraints=.venv/tmp/constraints-own-torch.txt
fi
if [ -n "${SSLBENCH_FIND_LINKS:-}" ]; then
  if [ "$dry" = 1 ]; then
    echo "+ .venv/bin/python scripts/constraints_offline.py $constraints > .venv/tmp/constraints-offline.txt"
  else
    mkdir -p .venv/tmp
    .venv/bin/python scripts/constraints_offline.py "$constraints" > .venv/tmp/constraints-offline.txt.new
    mv .venv/tmp/constraints-offline.txt.new .venv/tmp/constraints-offline.txt
  fi
  constraints=.venv/tmp/constraints-offline.txt
fi
if [ "$dry" = 1 ]; then
  key=dry-run
else
  key=$(cat "$constraints" pyproject.toml | sha256sum | cut -c1-16)-own${SSLBENCH_OWN_TORCH:-0}
fi
stamp=.venv/.sslbench-core-$key
if [ "$dry" = 1 ] || [ ! -f "$stamp" ]; then
  pip_quiet .venv/bin/python -m pip install -q "${pip_opts[@]}" -c "$constraints" --upgrade "pip>=24"
  pip_quiet .venv/bin/python -m pip install -q "${pip_opts[@]}" -c "$constraints" -e ".[dev]"
  if [ "$dry" = 0 ]; then
    .venv/bin/python -c 'import torch, torchvision, timm, evaluate, pretrain' \
      || { echo "setup_env.sh: the core environment failed to import" >&2; exit 1; }
    rm -f .venv/.sslbench-core-*
    touch "$stamp"
  fi
fi
if [ "$dense" = 1 ]; then
  if [ "$dry" = 0 ]; then
    bash scripts/install_mm.sh
  elif [ -x .venv/bin/python ]; then
    bash scripts/install_mm.sh --dry-run
  else
    echo "+ bash scripts/install_mm.sh"
  fi
fi
if [ "$dry" = 0 ]; then
  echo "sslbench environment ready: $(.venv/bin/python -c 'import torch, timm; print(f"torch {torch.__version__}, timm {timm.__version__}")')"
fi
