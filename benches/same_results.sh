#!/bin/bash
# Usage: benches/same_results.sh OLD NEW: whether two lstm-wgpu binaries
# compute the same results, bit for bit: train final lines (timings and
# health counts left out) on every cell path and variant, f16-mixed and
# the norm variants, and grad output files on every PyTorch fixture. For
# refactors that must not change results (docs/testing.md).
OLD=$1; NEW=$2; FIX=$(cd "$(dirname "$0")/../tests/fixtures" && pwd); W=$(mktemp -d); fail=0; n=0
run_pair() { # env-string, args...
  local envs="$1"; shift
  a=$(env $envs $OLD "$@" 2>&1 | tail -1 | sed -E 's/ time [^ ]+ tokens\/s [^ ]+//; s/ explosions [0-9]+ vanishing [0-9]+//'); b=$(env $envs $NEW "$@" 2>&1 | tail -1 | sed -E 's/ time [^ ]+ tokens\/s [^ ]+//; s/ explosions [0-9]+ vanishing [0-9]+//')
  n=$((n+1))
  if [ "$a" != "$b" ]; then echo "DIFF [$envs] $*"; echo "  old: $a"; echo "  new: $b"; fail=$((fail+1)); fi
}
for path in per-step persistent wavefront; do for cell in direct tiled; do for sg in on off; do
  E="LSTM_WGPU_CELL_PATH=$path LSTM_WGPU_CELL=$cell LSTM_WGPU_SUBGROUPS=$sg"
  run_pair "$E" train --steps 4 --val-every 2 --no-progress --batch 40
  run_pair "$E" train --steps 4 --val-every 2 --no-progress --hidden 6 --layers 3
  run_pair "$E" train --task series --steps 4 --val-every 2 --no-progress --precision f16-mixed
done; done; done
for norm in layer-cell recurrent-batch layer batch step-batch; do
  run_pair "" train --task series --steps 4 --val-every 2 --no-progress --norm $norm
done
for f in $FIX/*.weights.safetensors; do nm=$(basename $f .weights.safetensors)
  bf=""; case $nm in bf_*|nobias3_bf) bf=--batch-first;; esac
  for path in per-step persistent wavefront; do for cell in direct tiled; do
    E="LSTM_WGPU_CELL_PATH=$path LSTM_WGPU_CELL=$cell"
    env $E $OLD grad --weights $f --inputs $FIX/$nm.inputs.safetensors --out $W/o.st $bf >/dev/null 2>&1
    env $E $NEW grad --weights $f --inputs $FIX/$nm.inputs.safetensors --out $W/n.st $bf >/dev/null 2>&1
    if [ ! -s $W/o.st ]; then echo "skip grad $nm [$E]: old binary wrote nothing"; [ -s $W/n.st ] && { echo "  but new did"; fail=$((fail+1)); }; else
    n=$((n+1)); cmp -s $W/o.st $W/n.st || { echo "DIFF grad $nm [$E]"; fail=$((fail+1)); }; fi
    rm -f $W/o.st $W/n.st
  done; done
done
for nm in lncell_bi2_len_nobias lncell_uni1 rbn_bi2_len_eval rbn_bi2_len_train rbn_uni1_train; do
  case $nm in lncell*) nf="--norm layer-cell";; *) nf="--norm recurrent-batch";; esac
  case $nm in *_eval) nf="$nf --eval";; esac
  $OLD grad --weights $FIX/norm/$nm.weights.safetensors --inputs $FIX/norm/$nm.inputs.safetensors --out $W/o.st $nf >/dev/null 2>&1
  $NEW grad --weights $FIX/norm/$nm.weights.safetensors --inputs $FIX/norm/$nm.inputs.safetensors --out $W/n.st $nf >/dev/null 2>&1
  if [ ! -s $W/o.st ]; then echo "skip grad $nm: old wrote nothing"; else
  n=$((n+1)); cmp -s $W/o.st $W/n.st || { echo "DIFF grad $nm"; fail=$((fail+1)); }; fi
  rm -f $W/o.st $W/n.st
done
rm -rf $W
echo "compared $n, differing $fail"
[ "$fail" -eq 0 ]
