#!/bin/bash
# One call on a lent GPU machine (the tool library's `device`, 15 minutes of
# device time in all, start included): `lstm-wgpu bench` (pipelined, --sync,
# f16-mixed, by path, --profile) beside the PyTorch script on CUDA, with the
# GPU test binaries (gpu_reference and links after the first bench rows, the
# rest at the end). Each item has a timeout and none starts after DEADLINE
# seconds (default 300), so the call ends within about 6 minutes.
# Prepare on the build machine, from the repo root:
#
#   T="gpu_reference links kernel_gemm pytorch_parity trainer
#      kernel_lstm_persistent gpu_norm_reference errors"
#   cargo build --release && cargo test --release --no-run \
#     $(printf -- '--test %s ' $T) 2>&1 | tee /tmp/b
#   rm -rf .dev/bin && mkdir -p .dev/bin && cp target/release/lstm-wgpu .dev/bin/
#   grep -o 'target/release/deps/[a-z_]*-[0-9a-f]*' /tmp/b | while read f; do
#     cp "$f" ".dev/bin/$(basename "${f%-*}")"; done; strip .dev/bin/*
#
# (about 56 MiB stripped: the working tree that travels is capped at 64 MiB)
#   (plus the Vulkan loader debs in .gl, as the device README shows;
#    .dev and .gl listed in .git/info/exclude)
#
# and run `bash benches/peers/gpu_session.sh` with carry [".gl", ".dev"] and
# timeout_s 420. Output: the log and JSON rows under $OUT (or
# /tmp/gpu_session).
set -u
OUT=${OUT:-/tmp/gpu_session}
DEADLINE=${DEADLINE:-300}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log") 2>&1
for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" / >/dev/null; done
ldconfig 2>/dev/null
B=$PWD/.dev/bin
# Test binaries find their fixtures through the build machine's path.
mkdir -p /work && [ -e /work/main ] || ln -sfn "$PWD" /work/main
mkdir -p target/release && cp "$B/lstm-wgpu" target/release/
# item LABEL SECONDS CMD...: runs CMD with a timeout unless past DEADLINE.
item() {
  local label=$1 secs=$2
  shift 2
  if [ "$SECONDS" -ge "$DEADLINE" ]; then
    echo "== $label: skipped (past ${DEADLINE} s)" >&2
    return
  fi
  echo "== $label (t=${SECONDS}s)" >&2
  timeout "$secs" "$@"
}
# Step lines on stderr are left out of the log; the rest (errors) stays.
quiet() { grep -v ": step [0-9]\|trailing untimed" >&2; }
OURS="$B/lstm-wgpu bench --json --steps 30 --warmup 5"
TORCH="python3 benches/peers/bench_torch.py --device cuda --json --steps 30 --warmup 5"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())"
# tests NAME...: the GPU test binaries, one at a time.
tests() {
  for t in "$@"; do
    [ -x "$B/$t" ] || continue
    # 4 test threads, not the default 16: several devices created at once
    # on a freshly started machine once hung the first run.
    (cd /work/main && item "test $t" 60 "$B/$t" --test-threads 4 2>&1 |
      grep -E "^== |test result|panicked|FAILED|failed")
  done
}
item "lstm-wgpu bench (pipelined)" 90 $OURS --workload all 2> >(quiet) | tee "$OUT/ours.json"
item "PyTorch on CUDA" 90 $TORCH --workload all 2> >(quiet) | tee "$OUT/torch.json"
tests gpu_reference links
item "lstm-wgpu bench --sync" 60 $OURS --workload all --sync 2> >(quiet) | tee "$OUT/ours_sync.json"
item "PyTorch on CUDA, second run" 90 $TORCH --workload all 2> >(quiet) | tee -a "$OUT/torch.json"
for p in per-step wavefront persistent; do
  item "lstm-wgpu bench, path $p" 60 env LSTM_WGPU_CELL_PATH=$p $OURS --workload all 2> >(quiet) | tee -a "$OUT/paths.json"
done
item "f16-mixed: lstm-wgpu" 60 $OURS --workload all --precision f16-mixed 2> >(quiet) | tee "$OUT/ours_f16.json"
item "f16-mixed: PyTorch (autocast + GradScaler)" 90 $TORCH --workload all --precision f16-mixed 2> >(quiet) | tee "$OUT/torch_f16.json"
item "lstm-wgpu bench --profile" 60 "$B/lstm-wgpu" bench --workload all --steps 6 --warmup 2 --profile 2>&1 | grep -v ": step [0-9]"
tests kernel_gemm pytorch_parity trainer kernel_lstm_persistent gpu_norm_reference errors
echo "== done at t=${SECONDS}s"
