#!/usr/bin/env bash
# The GPU check: the torch and JAX test suites on the GPU (float32 and float64), a float32 compare
# of torch and JAX on the GPU against the CPU float64 oracle, and the GPU benchmark.
#
#   bash benchmarks/gpu_check.sh [OUT]        # from the repository root; OUT defaults to gpu-check/
#
# Written for a GPU machine with python3 (3.12) and its preinstalled PyTorch and JAX with CUDA,
# Flax, pytest, hypothesis, NumPy 2 and matplotlib: no TensorFlow, no MXNet, no package index, no
# network (the corpus is the embedded default; JAX's x64 flag is set by the backend). Each part has
# its own time limit (together 470 s), a failing part is logged and the script goes on, so the
# whole run stays under 8 minutes. Everything goes to OUT/gpu_check.log (and each part's own log), the compare report to
# OUT/compare/, the benchmark's JSON to OUT/bench/; a summary is printed at the end.

set -u
OUT="${1:-gpu-check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu_check.log"
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
PY="${PYTHON:-python3}"
: > "$LOG"
SUMMARY=()
START=$(date +%s)

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

# part NAME SECONDS COMMAND...: run with a time limit, log its output, record its outcome.
part() {
    local name="$1" limit="$2"
    shift 2
    log "== $name (limit ${limit}s): $*"
    local t0 rc
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    tail -n 25 "$OUT/$name.log" >> "$LOG"
    local took=$(( $(date +%s) - t0 ))
    case $rc in
        0) SUMMARY+=("PASS     $name (${took}s)") ;;
        124|137) SUMMARY+=("TIMEOUT  $name (after ${limit}s; see $name.log)") ;;
        *) SUMMARY+=("FAIL     $name (exit $rc, ${took}s; see $name.log)") ;;
    esac
    log "== $name: exit $rc after ${took}s"
}

log "machine: $(uname -n); $("$PY" --version 2>&1)"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader >> "$LOG" 2>&1
part devices 30 "$PY" -m rnn_backends info --devices

# The shared suites on the GPU: every float32 result against the CPU float64 oracle with the
# rounding bound, every float64 result to 1e-10; plus two of the injected bugs per framework
# (a skipped clip, a frozen layer), which the compare job must fail on the GPU too.
TESTS=(tests/test_backends.py tests/test_cells.py tests/test_devices.py)
BUGS=(tests/test_verdict.py -k "not oracle_side and not correct and (skipped or frozen)")
for fw in torch jax; do
    part "tests-$fw" 90 "$PY" -m pytest -q -p no:cacheprovider -x --backend "$fw" --device gpu \
        "${TESTS[@]}"
    part "bugs-$fw" 40 "$PY" -m pytest -q -p no:cacheprovider --backend "$fw" --device gpu \
        "${BUGS[@]}"
done

# A float32 compare on the GPU (5 epochs of the quick preset: 200 steps), judged against the
# float64 oracle on the CPU; the report (with the deviation plot) lands in OUT/compare.
part compare 120 "$PY" -m rnn_backends compare --frameworks torch,jax --device gpu \
    --dtype float32 --epochs 5 --out "$OUT/compare"

# The benchmark on the GPU, every framework here in this interpreter (no --python needed).
part bench 60 "$PY" -m rnn_backends bench --frameworks torch,jax --device gpu --threads 0 \
    --steps 20 --out "$OUT/bench"

log "== summary (total $(( $(date +%s) - START ))s)"
for line in "${SUMMARY[@]}"; do log "$line"; done
if [ -f "$OUT/compare/report.md" ]; then
    grep -E "^\*\*(PASS|FAIL)\*\*|^\| (PyTorch|JAX|NumPy)" "$OUT/compare/report.md" | tee -a "$LOG"
fi
echo "log: $LOG"
