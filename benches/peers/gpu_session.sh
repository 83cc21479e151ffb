#!/bin/bash
# One call on a lent GPU machine (the tool library's `device`): GPU test
# binaries, then `lstm-wgpu bench` (pipelined, --sync, --profile) beside the
# PyTorch script on CUDA. Prepare on the build machine, from the repo root:
#
#   T="gpu_reference kernel_gemm kernel_persistent pytorch_parity trainer links
#      gpu_norm_reference errors"
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
# and run `bash benches/peers/gpu_session.sh` with carry [".gl", ".dev"].
# Output: the log and JSON rows under $OUT (or /tmp/gpu_session).
set -u
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log") 2>&1
for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" / >/dev/null; done
ldconfig 2>/dev/null
B=$PWD/.dev/bin
# Test binaries find their fixtures through the build machine's path.
mkdir -p /work && [ -e /work/main ] || ln -sfn "$PWD" /work/main
mkdir -p target/release && cp "$B/lstm-wgpu" target/release/
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())"
for t in "$B"/*; do
  name=$(basename "$t")
  [ "$name" = lstm-wgpu ] && continue
  # Few test threads: several devices created at once on a freshly started
  # machine once hung the first run.
  echo "== test $name"
  (cd /work/main && timeout 120 "$t" --test-threads 2 2>&1 | grep -E "test result|panicked")
done
echo "== lstm-wgpu bench (pipelined)"
timeout 300 "$B/lstm-wgpu" bench --workload all --json --steps 30 --warmup 5 2>/dev/null | tee "$OUT/ours.json"
echo "== PyTorch on CUDA"
timeout 300 python3 benches/peers/bench_torch.py --device cuda --workload all --json --steps 30 --warmup 5 2>/dev/null | tee "$OUT/torch.json"
echo "== f16-mixed: lstm-wgpu and PyTorch (autocast + GradScaler)"
timeout 300 "$B/lstm-wgpu" bench --workload all --json --steps 30 --warmup 5 --precision f16-mixed 2>/dev/null | tee "$OUT/ours_f16.json"
timeout 300 python3 benches/peers/bench_torch.py --device cuda --workload all --json --steps 30 --warmup 5 --precision f16-mixed 2>/dev/null | tee "$OUT/torch_f16.json"
echo "== lstm-wgpu bench, layer by layer (the wavefront's baseline)"
for w in char big deep; do
  LSTM_WGPU_CELL_PATH=per-step timeout 300 "$B/lstm-wgpu" bench --workload $w --json --steps 30 --warmup 5 2>/dev/null | tee -a "$OUT/ours_layer_by_layer.json"
done
echo "== lstm-wgpu bench --sync"
timeout 300 "$B/lstm-wgpu" bench --workload all --json --steps 30 --warmup 5 --sync 2>/dev/null | tee "$OUT/ours_sync.json"
echo "== lstm-wgpu bench --profile"
timeout 300 "$B/lstm-wgpu" bench --workload all --steps 6 --warmup 2 --profile 2>&1 | grep -v " step [0-9]"
