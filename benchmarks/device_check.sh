#!/usr/bin/env bash
# Device check, to run unchanged on a machine with a GPU or TPU (docs/benchmarks.md, "Device check"):
#   bash benchmarks/device_check.sh [--cpu-smoke] [--out FILE]   (default benchmarks/results/device_check.json)
# 1. prints the JAX backend and devices; 2. runs the parity tests (test_model_parity.py, test_edits.py)
#    with JAX_DEFAULT_MATMUL_PRECISION=highest, and test_pinned.py as information only (its bit
#    identity is pinned on the project's CPU); 3. runs bench_forward, bench_patching, bench_probes (and
#    bench_memory if present; BENCH_MEMORY_ARGS replaces its options) at reduced sizes, float32, and
#    bfloat16 too where a benchmark has --dtype, their outputs in a temporary folder; 4. writes ONE JSON
#    file: the device, each step's exit status, wall time and the benchmarks' results.
# With no accelerator (or --cpu-smoke) it runs the smoke subset: a few fast parity tests, no pinned
# test, the smallest sizes.
# Every step runs even after a failure; exits non-zero if a required step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/results/device_check.json
SMOKE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-smoke) SMOKE=1 ;;
    --out) OUT=${2:?--out needs a file}; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
TMP=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")
STEPS=$TMP/steps.tsv
: > "$STEPS"
export PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
FAILED=0
STEP_LIMIT=300

# step NAME required|informational RESULT NOTE -- COMMAND...: runs COMMAND under a time limit,
# stdout/stderr to $TMP/NAME.out/.err, and records it (RESULT: a JSON file, "stdout" or "-").
step() {
  local name=$1 kind=$2 result=$3 note=$4 start rc wall
  shift 5
  echo "== $name: $*"
  start=$(date +%s.%N)
  timeout -k 10 "$STEP_LIMIT" "$@" > "$TMP/$name.out" 2> "$TMP/$name.err"
  rc=$?
  wall=$(awk "BEGIN { printf \"%.2f\", $(date +%s.%N) - $start }")
  tail -n 2 "$TMP/$name.out" | sed 's/^/   /'
  if [ "$rc" -ne 0 ]; then
    tail -n 5 "$TMP/$name.err" | sed 's/^/   /'
    echo "   -> exit status $rc ($kind)"
    [ "$kind" = required ] && FAILED=1
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$kind" "$rc" "$wall" "$result" "$TMP/$name" "$*" "$note" >> "$STEPS"
  echo "   ($wall s)"
}
skip() {  # skip NAME WHY: recorded as skipped, not a failure
  echo "== $1: skipped ($2)"
  printf '%s\t-\tskip\t0\t-\t-\t-\t%s\n' "$1" "$2" >> "$STEPS"
}
declare -A NOTE=(
  [bench_forward]="PyTorch's side on the host CPU (1 and 2 threads)"
  [bench_patching]="PyTorch's side on the host CPU"
  [bench_probes]="scikit-learn on the host CPU"
  [bench_memory]="it compiles float32 and bfloat16 per analysis itself; an estimate from the CPU compiler whatever the accelerator (its child sets JAX_PLATFORMS=cpu)"
)

# bench NAME ARGS...: benchmarks/NAME.py once, or in float32 and bfloat16 where it has --dtype; its
# result file goes to $TMP where it has --out, else the JSON it prints is read back from stdout.
bench() {
  local name=$1 script=benchmarks/$1.py dtypes=(-) note="no --dtype option: run once at its own dtype (bfloat16 not asked for); ${NOTE[$1]:-}"
  shift
  [ -f "$script" ] || { skip "$name" "$script not present"; return; }
  grep -q -- '"--dtype"' "$script" && { dtypes=(float32 bfloat16); note=${NOTE[$name]:-}; }
  for dt in "${dtypes[@]}"; do
    local id=$name args=("$@") result=stdout
    [ "$dt" = - ] || { id=${name}_$dt; args+=(--dtype "$dt"); }
    grep -q -- '"--out"' "$script" && { result=$TMP/$id.json; args+=(--out "$result"); }
    step "$id" required "$result" "$note" -- python "$script" "${args[@]}"
  done
}

# 1. backend and devices
step device required - "" -- python benchmarks/device_check_json.py device "$TMP/device.json"
cat "$TMP/device.out"
BACKEND=$(sed -n 's/^backend: //p' "$TMP/device.out")
if [ "$SMOKE" = 0 ] && { [ -z "$BACKEND" ] || [ "$BACKEND" = cpu ]; }; then
  echo "no accelerator: running the smoke subset"
  SMOKE=1
fi
if [ "$SMOKE" = 1 ]; then
  MODE=cpu-smoke
  PARITY_K=(-k "(base-like and (every_site or kv_cache)) or alpha_zero or single_head_patch")
  FORWARD=(--batch 1 --repeats 1)
  PATCHING=(--clips 1 --torch-clips 1 --sample-a 1)
  PROBES=(--sample 1)
else
  MODE=full
  STEP_LIMIT=420
  PARITY_K=()
  FORWARD=(--batch 4 --repeats 2)                   # PyTorch's side runs on the host CPU
  PATCHING=(--clips 16 --torch-clips 1 --sample-a 2) # PyTorch timed on 1 clip, scaled
  PROBES=(--sample 4)                                # large-v3 scale; scikit-learn on 6 pairs
fi

# 2. parity tests at precision "highest" (their tolerances are fixed in the files; no env var)
HIGHEST=(env JAX_DEFAULT_MATMUL_PRECISION=highest)
step parity_tests required - "JAX_DEFAULT_MATMUL_PRECISION=highest" -- \
  "${HIGHEST[@]}" python -m pytest -q -p no:cacheprovider tests/test_model_parity.py tests/test_edits.py "${PARITY_K[@]}"
if [ "$SMOKE" = 1 ]; then
  skip pinned_tests "smoke mode: the pinned tests take minutes of CPU (tiny.en alone ~2 min)"
else
  step pinned_tests informational - "informational: the pins are bit-exact on the project's CPU; other devices may differ" -- \
    "${HIGHEST[@]}" python -m pytest -q -p no:cacheprovider tests/test_pinned.py
fi

# 3. benchmarks
bench bench_forward "${FORWARD[@]}"
bench bench_patching "${PATCHING[@]}"
bench bench_probes "${PROBES[@]}"
MEMORY=(--devices 1 --only head_sweep)  # ~70 s of CPU compiling, the same on any machine
[ -n "${BENCH_MEMORY_ARGS:-}" ] && read -ra MEMORY <<< "$BENCH_MEMORY_ARGS"
bench bench_memory "${MEMORY[@]}"

# 4. one JSON file
echo "== writing $OUT"
python benchmarks/device_check_json.py assemble "$OUT" "$TMP/device.json" "$STEPS" "$MODE" || FAILED=1
echo "logs: $TMP"
if [ "$FAILED" = 0 ]; then echo "device check ($MODE): passed"; else echo "device check ($MODE): FAILED (see $OUT)"; fi
exit "$FAILED"
