#!/usr/bin/env bash
# The GPU acceptance run (issue #20): every hot path checked and measured, one table (stage, figure, value, ratio,
# pass/fail), the figures appended as records of protocol `benchmark`. See benchmarks/gpu/acceptance.py.
#   benchmarks/gpu/acceptance.sh --dry-run        every stage on the CPU at toy sizes (< 3 minutes): run it first
#   benchmarks/gpu/acceptance.sh                  the GPU run (planned to take < 8 minutes on an H200/H100)
#   benchmarks/gpu/acceptance.sh --stages numerics,dense   a subset (e.g. a rerun of what failed)
# Other options (--out, --results, --peak-tflops, --no-records): acceptance.py --help.
# Environment: SSLBENCH_PYTHON (default .venv/bin/python, else python3); SSLBENCH_ACCEPTANCE_TIMEOUT (seconds,
# default 540; the run is stopped past it, and <out>/acceptance.json keeps the rows it had). Installs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${SSLBENCH_PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
timeout_s=${SSLBENCH_ACCEPTANCE_TIMEOUT:-540}
case "$timeout_s" in
  '' | *[!0-9]*) echo "acceptance.sh: SSLBENCH_ACCEPTANCE_TIMEOUT=$timeout_s is not a number of seconds" >&2; exit 2 ;;
esac
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --signal=INT --kill-after=30 "$timeout_s" "$PY" benchmarks/gpu/acceptance.py "$@"
