#!/usr/bin/env bash
# The whole GPU-machine session in one command: unpack the offline bundle (scripts/prepare_gpu_bundle.sh), install
# sslbench + dense from it (no index, nothing compiled), run the acceptance script, keep everything under OUT.
#   benchmarks/gpu/device_run.sh BUNDLE.tar.xz OUT [acceptance.sh options...]
# e.g. on a lent device, carrying dist/sslbench-gpu-cp312.tar.xz (55 MiB):
#   bash benchmarks/gpu/device_run.sh dist/sslbench-gpu-cp312.tar.xz "$OUT"
# and, as a rehearsal on a CPU machine (PYTHON = a Python 3.12 with torch 2.11.0, as the image):
#   PYTHON=<image python> bash benchmarks/gpu/device_run.sh dist/sslbench-gpu-cp312.tar.xz /tmp/out --dry-run
# OUT gets install.log, acceptance.log, acceptance.json (the table) and records/benchmark.jsonl: five files, as few
# as a lent device sends back; the work folder (dense data and runs, exported backbones) stays in a temporary folder.
# Environment: PYTHON (default python3: the image's), SSLBENCH_ACCEPTANCE_TIMEOUT (acceptance.sh's; default here 480 s,
# since the install took 88-96 s on the H200 and a lent device's command stops at 600 s).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -lt 2 ] || [ ! -f "$1" ]; then
  echo "device_run.sh: usage: device_run.sh BUNDLE.tar.xz OUT [acceptance options] (bundle: '${1:-}' not a file)" >&2
  exit 2
fi
bundle=$(realpath "$1")
out=$2
shift 2
mkdir -p "$out"
out=$(realpath "$out")
start=$(date +%s)
unpacked=$(mktemp -d)
tar -xJf "$bundle" -C "$unpacked"
if ! PYTHON=${PYTHON:-python3} bash "$unpacked/sslbench-gpu-bundle/install.sh" . >"$out/install.log" 2>&1; then
  tail -20 "$out/install.log" >&2
  echo "device_run.sh: the install failed; $out/install.log has all of it" >&2
  exit 1
fi
grep -E "mmcv CUDA ops|mm stack ready|environment ready" "$out/install.log" || true
echo "device_run.sh: installed in $(( $(date +%s) - start )) s"
set +e  # the table lines on the terminal (mm's logs are long), everything in acceptance.log
SSLBENCH_ACCEPTANCE_TIMEOUT=${SSLBENCH_ACCEPTANCE_TIMEOUT:-480} SSLBENCH_PYTHON=.venv/bin/python PYTHONUNBUFFERED=1 \
  bash benchmarks/gpu/acceptance.sh \
  --out "$unpacked/acceptance" --results "$out/records" "$@" 2>&1 | tee "$out/acceptance.log" \
  | grep --line-buffered -E '^\||^acceptance|^records|^  \[|Error'
statuses=("${PIPESTATUS[@]}")
set -e
if [ -f "$unpacked/acceptance/acceptance.json" ]; then cp "$unpacked/acceptance/acceptance.json" "$out/"; fi
code=${statuses[0]}
echo "device_run.sh: acceptance exit $code after $(( $(date +%s) - start )) s in all"
exit "$code"
