#!/usr/bin/env bash
# convtvm on an NVIDIA GPU machine (Python 3.12 + torch preinstalled, no network).
#
#   bash tools/gpu_session.sh [setup] [test] [tune] [bench] [all]      (default: all = setup test tune bench)
#
# setup  installs what tools/pack_tvm_for_gpu.sh packed under build/gpu/ (any subset present: the call that
#        carries it installs it) into a venv build/gpu-env (system site-packages: torch, numpy, scipy), and
#        checks that TVM sees the GPU; idempotent, so later calls skip what is installed
# test   tests/test_cuda.py (every variant against torch on the GPU, export/load round trip) and
#        `convtvm check --target cuda`
# tune   `convtvm tune --suite all --target cuda --trials $TRIALS --log $LOG`, stopped cleanly after
#        $TUNE_SECONDS (every measured batch is already in the log; a later call continues it)
# bench  convtvm bench --target cuda: tuned and untuned convtvm vs torch (cuDNN), CUDA events -> results JSON
#
# Environment: OUT (results folder; the device tool's $OUT, else results/gpu-session), CUDA_ARCH (default: the
# GPU's), TRIALS (default 2000), TRIALS_PER_ITER (16), TUNE_SECONDS (default: what is left of BUDGET),
# BUDGET (seconds for `all`, default 560: under a 10-minute command limit), LOG (default tuning_logs/cuda-smXX).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$(date +%s)
GPU_HOME=${CONVTVM_GPU_HOME:-$ROOT/build/gpu-env}
PACK=${CONVTVM_GPU_PACK:-$ROOT/build/gpu}
OUTDIR=${OUT:-$ROOT/results/gpu-session}
BUDGET=${BUDGET:-560}
TRIALS=${TRIALS:-2000}
TRIALS_PER_ITER=${TRIALS_PER_ITER:-16}
mkdir -p "$OUTDIR" "$GPU_HOME"
exec > >(tee -a "$OUTDIR/session.log") 2>&1
say() { echo "[gpu_session $(( $(date +%s) - START ))s] $*"; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

base_python() {
  local p
  for p in "${PYTHON:-}" python3.12 python3 python; do
    [ -n "$p" ] && command -v "$p" >/dev/null && "$p" -c 'import torch' 2>/dev/null && { command -v "$p"; return; }
  done
  echo "no python with torch found (set PYTHON=...)" >&2; return 1
}

write_env() {  # build/gpu-env/env.sh: what every later phase sources
  local site=$1
  {
    echo "export PATH=\"$GPU_HOME/bin:\$PATH\""
    echo "export PYTHONPATH=\"$ROOT\${PYTHONPATH:+:\$PYTHONPATH}\""
    if [ -x "$GPU_HOME/cuda-nvcc/bin/nvcc" ]; then
      # the packed CUDA 13 nvcc: what the TVM wheel was built with; also for TVM's own callback in
      # MetaSchedule's worker processes (nvcc on PATH, CUDA_PATH for headers)
      echo "export CONVTVM_NVCC=\"$GPU_HOME/cuda-nvcc/bin/nvcc\""
      echo "export PATH=\"$GPU_HOME/cuda-nvcc/bin:\$PATH\""
      echo "export CUDA_PATH=\"$GPU_HOME/cuda-nvcc\" CUDA_HOME=\"$GPU_HOME/cuda-nvcc\""
      # libcudart.so.13 for the TVM wheel's CUDA runtime (torch may bring only CUDA 12's)
      echo "export LD_LIBRARY_PATH=\"$GPU_HOME/cuda-nvcc/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
    fi
    echo "export TVM_CUDA_COMPILE_MODE=nvcc CONVTVM_CUDA_COMPILER=\${CONVTVM_CUDA_COMPILER:-auto}"
    echo "export PYTHONUNBUFFERED=1 TVM_SITE=\"$site\""
  } > "$GPU_HOME/env.sh"
}

install_wheel() {  # install_wheel SITE WHEEL: pip when there is one, else unzip (all are plain wheels)
  if "$BASE" -m pip --version >/dev/null 2>&1; then
    "$BASE" -m pip install -q --no-index --no-deps --upgrade --target "$1" "$2"
  else
    "$BASE" -m zipfile -e "$2" "$1"
  fi
}

setup() {
  BASE=$(base_python) || return 1
  say "python: $BASE ($("$BASE" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))'))"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv 2>&1 | sed 's/^/  /'
  else
    say "WARNING: no nvidia-smi"
  fi
  local drv
  drv=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 | cut -d. -f1)
  if [ -n "$drv" ] && [ "$drv" -lt 580 ]; then
    say "WARNING: driver $drv < 580: the TVM 0.27 wheel's CUDA runtime is built with CUDA 13, which needs driver >= 580"
  fi
  command -v g++ >/dev/null || command -v gcc >/dev/null || say "WARNING: no gcc/g++: exporting modules and MetaSchedule's runner (which links .so files) need one"
  [ -x "$GPU_HOME/bin/python" ] || "$BASE" -m venv --system-site-packages --without-pip "$GPU_HOME" || return 1
  local site
  site=$("$GPU_HOME/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # wheels: apache-tvm-ffi (always ours: TVM 0.27 needs 0.1.14.post1), the others only when missing
  if [ -d "$PACK/wheels" ]; then
    local w mod
    for w in "$PACK"/wheels/*.whl; do
      [ -e "$w" ] || continue
      mod=$(basename "$w" | cut -d- -f1 | tr '[:upper:]' '[:lower:]')
      case "$mod" in apache_tvm_ffi) mod=tvm_ffi ;; xgboost_cpu) mod=xgboost ;; esac
      if [ -e "$GPU_HOME/.installed-$(basename "$w")" ]; then continue; fi
      if [ "$mod" != tvm_ffi ] && "$GPU_HOME/bin/python" -c "import $mod" 2>/dev/null; then
        say "have $mod already; skipping $(basename "$w")"
      else
        say "installing $(basename "$w")"
        install_wheel "$site" "$w" || return 1
      fi
      touch "$GPU_HOME/.installed-$(basename "$w")"
    done
  fi
  local t
  for t in "$PACK"/tvm-*.tar.xz; do
    [ -e "$t" ] || continue
    if [ -e "$GPU_HOME/.installed-$(basename "$t")" ]; then continue; fi
    say "unpacking $(basename "$t") into $site"
    rm -rf "$site/tvm" "$site"/apache_tvm-*.dist-info
    tar -xJf "$t" -C "$site" || return 1
    touch "$GPU_HOME/.installed-$(basename "$t")"
  done
  for t in "$PACK"/cuda-nvcc-*.tar.xz; do
    [ -e "$t" ] || continue
    if [ -e "$GPU_HOME/.installed-$(basename "$t")" ]; then continue; fi
    say "unpacking $(basename "$t") into $GPU_HOME/cuda-nvcc"
    rm -rf "$GPU_HOME/cuda-nvcc"
    tar -xJf "$t" -C "$GPU_HOME" || return 1
    touch "$GPU_HOME/.installed-$(basename "$t")"
  done
  write_env "$site"
  # shellcheck disable=SC1091
  . "$GPU_HOME/env.sh"
  say "check:"
  python - <<'PY'
import importlib.util, sys
missing = [m for m in ("tvm_ffi", "tvm", "xgboost", "scipy", "numpy", "ml_dtypes", "psutil", "cloudpickle")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"  missing: {', '.join(missing)}: carry build/gpu (tools/pack_tvm_for_gpu.sh; --with-scipy for scipy)")
import tvm, tvm_ffi
from convtvm.backends import cuda_tools as cuda
print("  tvm", tvm.__version__, "tvm_ffi", tvm_ffi.__version__, "from", tvm.__file__)
print("  compiler:", cuda.compiler(), "nvcc", cuda.find_nvcc())
arch = cuda.device_arch()
print("  TVM sees GPU:", arch)
if arch is None:
    import os, subprocess
    lib = os.path.join(os.path.dirname(tvm.__file__), "lib", "libtvm_runtime_cuda.so")
    print(subprocess.run(["ldd", lib], capture_output=True, text=True).stdout)
    sys.exit("  TVM's CUDA runtime did not load or sees no GPU: libcudart.so.13 / libcuda.so.1 above, driver >= 580?")
PY
}

env_or_die() {
  [ -f "$GPU_HOME/env.sh" ] || { echo "run setup first (bash tools/gpu_session.sh setup)" >&2; return 1; }
  # shellcheck disable=SC1091
  . "$GPU_HOME/env.sh"
  ARCH=${CUDA_ARCH:-$(python -c 'from convtvm.backends import cuda_tools; print(cuda_tools.device_arch() or "sm_90")')}
  LOG=${LOG:-tuning_logs/cuda-${ARCH/_/}}
}

run_tests() {
  env_or_die || return 1
  say "tests/test_cuda.py on the GPU"
  CONVTVM_SLOW=1 python -m pytest -q -p no:cacheprovider tests/test_cuda.py --junitxml="$OUTDIR/test_cuda.xml" -rs \
    2>&1 | tee "$OUTDIR/test_cuda.txt" | tail -40
  say "convtvm check --target cuda --cuda-arch $ARCH"
  python -m convtvm.cli check --target cuda --cuda-arch "$ARCH" 2>&1 | tee "$OUTDIR/check-cuda.txt"
}

tune() {
  env_or_die || return 1
  local secs=${TUNE_SECONDS:-$(( $(left) - BENCH_RESERVE ))}
  [ "$secs" -gt 30 ] || { say "no time left for tuning ($secs s)"; return 0; }
  mkdir -p "$(dirname "$LOG")"
  if [ ! -e "$LOG/database_tuning_record.json" ] && [ -e "$GPU_HOME/state/$(basename "$LOG")" ]; then
    cp -r "$GPU_HOME/state/$(basename "$LOG")" "$LOG"  # continue the log of an earlier call
  fi
  say "tuning the Ansor suite (+ extras) for $ARCH: $TRIALS trials, at most $secs s, log $LOG"
  timeout -s INT -k 60 "$secs" python -m convtvm.cli tune --suite all --target cuda --cuda-arch "$ARCH" \
    --trials "$TRIALS" --trials-per-iter "$TRIALS_PER_ITER" --log "$LOG" 2>&1 | tee "$OUTDIR/tune.txt" | \
    grep -v '^  \[' | tail -20
  save_log
}

save_log() {
  [ -e "$LOG" ] || return 0
  mkdir -p "$GPU_HOME/state" "$OUTDIR/tuning_logs"
  rm -rf "$GPU_HOME/state/$(basename "$LOG")" "$OUTDIR/tuning_logs/$(basename "$LOG")"
  cp -r "$LOG" "$GPU_HOME/state/"
  cp -r "$LOG" "$OUTDIR/tuning_logs/"
  say "tuning log: $(wc -l < "$LOG/database_tuning_record.json" 2>/dev/null || echo 0) records -> $OUTDIR/tuning_logs/"
}

bench() {
  env_or_die || return 1
  if [ ! -e "$LOG/database_tuning_record.json" ] && [ -e "$GPU_HOME/state/$(basename "$LOG")" ]; then
    mkdir -p "$(dirname "$LOG")"; cp -r "$GPU_HOME/state/$(basename "$LOG")" "$LOG"
  fi
  say "bench: convtvm (tuned, untuned) vs torch on $ARCH"
  convtvm bench --suite all --target cuda --cuda-arch "$ARCH" --log "$LOG" \
    --out "$OUTDIR/results/cuda-${ARCH/_/}-all.json" 2>&1 | tee "$OUTDIR/bench.txt" | tail -50
}

[ $# -gt 0 ] || set -- all
case " $* " in *" all "*|*" bench "*) BENCH_RESERVE=${BENCH_RESERVE:-200} ;; *) BENCH_RESERVE=${BENCH_RESERVE:-20} ;; esac
rc=0
for phase in "$@"; do
  case "$phase" in
    setup) setup || { rc=1; break; } ;;              # nothing else can run without it
    test) run_tests || rc=1 ;;                       # a failing test does not stop tuning / bench
    tune) tune || rc=1 ;;
    bench) bench || rc=1 ;;
    all) setup || { rc=1; break; }; run_tests || rc=1; tune || rc=1; bench || rc=1 ;;
    *) echo "unknown phase $phase (setup, test, tune, bench, all)" >&2; rc=2; break ;;
  esac
done
say "done (exit $rc); results in $OUTDIR"
exit $rc
