#!/usr/bin/env bash
# The one-command GPU check of fused_act's CUDA kernels.
#
#   bench/gpu_check.sh OUTDIR            on a machine with a GPU and a CUDA build of torch
#   bench/gpu_check.sh --dry-run OUTDIR  anywhere with nvcc: build and plan, no kernels
#
# Uses the Python (and torch, 2.11 or newer) already on PATH: no network, no new virtual
# environment.  Steps, each logged to OUTDIR and timed, each with its own time limit so
# that the whole check stays under 8 minutes on a 16-core machine with one H100/H200:
#   1. build in place for the local GPU's architecture only (TORCH_CUDA_ARCH_LIST=X.Y),
#   2. the CUDA tests: tests/test_cuda.py and the CUDA cases of the device-generic tests,
#      in parallel with pytest-xdist when it is installed,
#   3. compute-sanitizer memcheck and racecheck on a small subset of tests/test_cuda.py,
#   4. python bench/run.py --device cuda --quick (JSON, CSV, PNG under OUTDIR/bench),
# then OUTDIR/summary.json (per step: command, exit status, seconds) and
# OUTDIR/summary.txt.  The exit status is 0 only when every step passed.
# The dry run builds (for TORCH_CUDA_ARCH_LIST, default 9.0; or uses fused_act as it is
# when it is already built with CUDA kernels, as in CI), imports the library, collects
# the CUDA tests and writes the plan (OUTDIR/plan.txt) without touching a GPU.
set -uo pipefail

DRY=0
OUT=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $arg" >&2; exit 2 ;;
    *) OUT="$arg" ;;
  esac
done
if [[ -z "$OUT" ]]; then
  echo "usage: bench/gpu_check.sh [--dry-run] OUTDIR" >&2
  exit 2
fi

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$ROOT"
PY="${PYTHON:-python}"
JOBS="$(nproc 2>/dev/null || echo 4)"
BUDGET=470            # seconds for the whole check (8 minutes, less a margin)
START=$SECONDS
STEPS_TSV="$OUT/steps.tsv"
: > "$STEPS_TSV"
FAILED=0

# run NAME LIMIT_SECONDS COMMAND...: logs to OUT/NAME.log, records status and time.
run() {
  local name="$1" limit="$2"
  shift 2
  local left=$((BUDGET - (SECONDS - START)))
  (( limit > left )) && limit=$left
  if (( limit < 10 )); then
    echo "[gpu_check] $name: skipped (time budget spent)"
    printf '%s\t%s\t%s\t%s\n' "$name" "skipped" 0 "$*" >> "$STEPS_TSV"
    FAILED=1
    return 1
  fi
  echo "[gpu_check] $name (limit ${limit}s): $*"
  local t0=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  local dt=$((SECONDS - t0))
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$dt" "$*" >> "$STEPS_TSV"
  if (( rc != 0 )); then
    FAILED=1
    echo "[gpu_check] $name: FAILED (exit $rc, ${dt}s); last lines of $OUT/$name.log:"
    tail -n 15 "$OUT/$name.log" | sed 's/^/    /'
  else
    echo "[gpu_check] $name: ok (${dt}s)"
  fi
  return $rc
}

# ---- the machine ----------------------------------------------------------------------
"$PY" - > "$OUT/environment.json" <<'EOF'
import json, os, platform, shutil, subprocess
import torch
info = {"python": platform.python_version(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "cpus": os.cpu_count(), "nvcc": shutil.which("nvcc")}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                memory_gib=round(p.total_memory / 2**30, 1), devices=torch.cuda.device_count())
try:
    info["nvcc_version"] = subprocess.run(["nvcc", "--version"], capture_output=True,
                                          text=True).stdout.strip().splitlines()[-1]
except Exception:
    pass
print(json.dumps(info, indent=1))
EOF
cat "$OUT/environment.json"
HAVE_GPU="$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')"
if [[ "$DRY" == 0 && "$HAVE_GPU" != 1 ]]; then
  echo "gpu_check.sh: torch sees no GPU here; use --dry-run to build and plan only" >&2
  exit 2
fi
if [[ "$HAVE_GPU" == 1 ]]; then
  ARCH="$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
  command -v nvidia-smi > /dev/null && nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
else
  ARCH="${TORCH_CUDA_ARCH_LIST:-9.0}"
fi

XDIST=()
if "$PY" -c 'import xdist' 2> /dev/null; then
  # a few processes per GPU: the tests are short and mostly launch-bound
  XDIST=(-n "$(( JOBS < 8 ? JOBS : 8 ))")
fi
SANITIZER="$(command -v compute-sanitizer || true)"
if [[ -z "$SANITIZER" ]]; then
  for d in "${CUDA_HOME:-}" /usr/local/cuda; do
    if [[ -n "$d" && -x "$d/bin/compute-sanitizer" ]]; then SANITIZER="$d/bin/compute-sanitizer"; break; fi
    if [[ -n "$d" && -x "$d/compute-sanitizer/compute-sanitizer" ]]; then
      SANITIZER="$d/compute-sanitizer/compute-sanitizer"; break
    fi
  done
fi

# The sanitizer's subset: every kernel family once, small sizes (the tools slow kernels
# down 10-100x): block softmax with peeled heads and tails, partly cached rows, the
# middle-dim kernels, vector and scalar elementwise kernels, weighted kernels with
# shared-memory totals.
SAN_TESTS="tests/test_cuda.py"
SAN_K="(test_softmax_odd_rows_and_storage_offsets and 1025 and float32) or (test_softmax_tier_boundaries and float16 and not True) or (test_softmax_along_a_middle_dim and float32 and not True) or (test_storage_offsets_and_mixed_alignment and float32 and (sigmoid or prelu-per_channel)) or (test_weighted_channel_index_and_weight_gradient and float32 and prelu) or test_softmax_gradient_out_of_phase"
RACE_K="(test_softmax_odd_rows_and_storage_offsets and 4097 and float32 and False) or (test_weighted_channel_index_and_weight_gradient and float32 and prelu) or (test_softmax_along_a_middle_dim and float32 and False)"

BUILD=(env FUSED_ACT_CUDA=1 "TORCH_CUDA_ARCH_LIST=$ARCH" "MAX_JOBS=$JOBS" "$PY" setup.py build_ext --inplace)
if (( ${#XDIST[@]} )); then
  TESTS=("$PY" -m pytest -q -p no:cacheprovider "${XDIST[@]}" tests/test_cuda.py
         tests/test_activations.py tests/test_softmax.py tests/test_integration.py -k "cuda or test_cuda")
else
  # No pytest-xdist: one pytest process per file, in parallel, each with its own log.
  cat > "$OUT/parallel_tests.sh" <<EOS
#!/usr/bin/env bash
pids=()
for f in test_cuda test_activations test_softmax test_integration; do
  "$PY" -m pytest -q -p no:cacheprovider "tests/\$f.py" -k "cuda or test_cuda" > "$OUT/tests_\$f.log" 2>&1 &
  pids+=(\$!)
done
rc=0
for p in "\${pids[@]}"; do wait "\$p" || rc=1; done
tail -n 3 "$OUT"/tests_*.log
exit \$rc
EOS
  TESTS=(bash "$OUT/parallel_tests.sh")
fi
MEMCHECK=(env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck --error-exitcode 9
          --target-processes all "$PY" -m pytest -q -p no:cacheprovider -x "$SAN_TESTS" -k "$SAN_K")
RACECHECK=("$SANITIZER" --tool racecheck --error-exitcode 9 --target-processes all
           "$PY" -m pytest -q -p no:cacheprovider -x "$SAN_TESTS" -k "$RACE_K")
BENCH=("$PY" bench/run.py --device cuda --quick --out "$OUT/bench")

{
  echo "fused_act GPU check plan ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo "architecture: $ARCH   CPU jobs: $JOBS   xdist: ${XDIST[*]:-none}   sanitizer: ${SANITIZER:-none}"
  echo "1 build (240 s):     ${BUILD[*]}"
  echo "2 tests (150 s):     ${TESTS[*]}"
  echo "3a memcheck (75 s):  ${MEMCHECK[*]}"
  echo "3b racecheck (60 s): ${RACECHECK[*]}"
  echo "4 bench (150 s):     ${BENCH[*]}"
  echo "total budget: ${BUDGET} s"
} | tee "$OUT/plan.txt"

if [[ "$DRY" == 1 ]] && "$PY" -c 'import fused_act, sys; sys.exit(0 if fused_act.built_with_cuda() else 1)' 2> /dev/null; then
  # A dry run where fused_act is already built with its CUDA kernels (CI builds it just
  # before): that build is the one checked, not a second one.
  echo "[gpu_check] build: using the existing CUDA build of fused_act"
  printf '%s\t%s\t%s\t%s\n' build existing 0 "(already built)" >> "$STEPS_TSV"
  BUILD_RC=0
else
  run build 240 "${BUILD[@]}"
  BUILD_RC=$?
fi
if (( BUILD_RC == 0 )); then
  run import 30 "$PY" -c 'import fused_act, json; b = fused_act.backends(); print(json.dumps(b)); assert fused_act.built_with_cuda(), "no CUDA kernels in the build"'
fi

if [[ "$DRY" == 1 ]]; then
  # No kernels: the CUDA tests are collected (they import and parametrize) but not run.
  run collect 60 "$PY" -m pytest -q --collect-only -p no:cacheprovider tests/test_cuda.py
  [[ -z "$SANITIZER" ]] && echo "[gpu_check] note: compute-sanitizer not found here (needed on the GPU machine)"
else
  if (( BUILD_RC == 0 )); then
    run tests 150 "${TESTS[@]}"
    if [[ -n "$SANITIZER" ]]; then
      run memcheck 75 "${MEMCHECK[@]}"
      run racecheck 60 "${RACECHECK[@]}"
    else
      echo "[gpu_check] compute-sanitizer not found: memcheck and racecheck not run"
      printf '%s\t%s\t%s\t%s\n' sanitizer missing 0 compute-sanitizer >> "$STEPS_TSV"
      FAILED=1
    fi
    run bench 150 "${BENCH[@]}"
  fi
fi

"$PY" - "$OUT" "$DRY" "$FAILED" "$((SECONDS - START))" <<'EOF'
import json, sys
out, dry, failed, total = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1", int(sys.argv[4])
steps = []
for line in open(f"{out}/steps.tsv"):
    name, rc, secs, cmd = line.rstrip("\n").split("\t", 3)
    steps.append({"step": name, "exit": rc, "seconds": int(secs), "command": cmd,
                  "log": f"{name}.log"})
env = json.load(open(f"{out}/environment.json"))
summary = {"dry_run": dry, "passed": not failed, "seconds": total, "environment": env,
           "steps": steps}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
with open(f"{out}/summary.txt", "w") as f:
    for s in steps:
        f.write(f"{s['step']:10s} exit {s['exit']:>7s} {s['seconds']:4d} s   {s['command']}\n")
    f.write(f"{'PASSED' if not failed else 'FAILED'} in {total} s ({'dry run' if dry else 'GPU'})\n")
print(open(f"{out}/summary.txt").read(), end="")
EOF
exit "$FAILED"
