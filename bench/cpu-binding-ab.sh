#!/bin/bash
# Usage: bench/cpu-binding-ab.sh ROUNDS BACKEND SAMPLES   (after npm ci), e.g. bench/cpu-binding-ab.sh 5 tensorflow 51200
# Interleaved, one run: a 2-worker launch pinned (--cpu-binding cpus) and unpinned (none), then the ceiling (two
# unconnected trainers side by side, half the samples each). LeNet-5, batch 64, Adam; samples/s of training time.
cd "$(dirname "$0")/.."; CLI="node dist/scripts/ringtrain.js"; D=${TMPDIR:-/tmp}/ringtrain-cpu-binding-ab; mkdir -p $D
sps() { node -e "const s=require(process.argv[1]); console.log((s.samplesPerSec||0).toFixed(0))" "$1"; }
for r in $(seq 1 $1); do
  for b in cpus none; do
    rm -rf $D/$b-$r; $CLI launch -np 2 --backend $2 --cpu-binding $b --epochs 1 --train-limit $3 --test-limit 500 --check-every 0 --quiet --run-dir $D/$b-$r --summary-json $D/$b-$r.json >/dev/null 2>&1
    echo "$2 round $r $b $(sps $D/$b-$r.json)"
  done
  rm -rf $D/c-$r; mkdir -p $D/c-$r
  $CLI train --backend $2 --threads 1 --epochs 1 --train-limit $(($3/2)) --test-limit 500 --no-save --quiet --run-dir $D/c-$r/a --summary-json $D/c-$r/a.json >/dev/null 2>&1 &
  $CLI train --backend $2 --threads 1 --epochs 1 --train-limit $(($3/2)) --test-limit 500 --no-save --quiet --run-dir $D/c-$r/b --summary-json $D/c-$r/b.json >/dev/null 2>&1 &
  wait; echo "$2 round $r ceiling $(( $(sps $D/c-$r/a.json) + $(sps $D/c-$r/b.json) ))"
done
