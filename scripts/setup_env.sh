#!/usr/bin/env bash
# Create (or update) the repo-local environment .venv/ from requirements/constraints.txt.
#   scripts/setup_env.sh            core + dev extras
#   scripts/setup_env.sh --dense    also the mm stack (mmcv/mmdet/mmseg) via scripts/install_mm.sh
# Idempotent: a stamp keyed by the constraints, pyproject and options skips work already done.
# Environment:
#   PYTHON=python3.11               interpreter used to create .venv (default: python3)
#   SSLBENCH_OWN_TORCH=1            keep the torch/torchvision already in .venv (do not apply the torch pins)
set -euo pipefail
cd "$(dirname "$0")/.."
dense=0
for arg in "$@"; do
  case "$arg" in
    --dense) dense=1 ;;
    *) echo "setup_env.sh: unknown option '$arg' (valid: --dense)" >&2; exit 2 ;;
  esac
done
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 required"'
  "$PYTHON" -m venv .venv
fi
constraints=requirements/constraints.txt
if [ "${SSLBENCH_OWN_TORCH:-0}" = "1" ]; then
  mkdir -p .venv/tmp
  grep -viE '^(torch|torchvision|triton|nvidia-|cuda-)' "$constraints" > .venv/tmp/constraints-own-torch.txt
  constraints=.venv/tmp/constraints-own-torch.txt
fi
key=$(cat "$constraints" pyproject.toml | sha256sum | cut -c1-16)-own${SSLBENCH_OWN_TORCH:-0}
stamp=.venv/.sslbench-core-$key
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade "pip>=24" 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install -q -c "$constraints" -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import torch, torchvision, timm, evaluate, pretrain' \
    || { echo "setup_env.sh: the core environment failed to import" >&2; exit 1; }
  rm -f .venv/.sslbench-core-*
  touch "$stamp"
fi
if [ "$dense" = 1 ]; then
  bash scripts/install_mm.sh
fi
echo "sslbench environment ready: $(.venv/bin/python -c 'import torch, timm; print(f"torch {torch.__version__}, timm {timm.__version__}")')"
