#!/usr/bin/env node
/**
 * Liveness during evaluation (issue 13, finding 7): evaluate a worker's share of the test set the old way (one
 * synchronous call, batches of 1000) and the worker's way (evaluateRangeYielding: batches of 100 with a turn of the
 * event loop between them), and report the longest event-loop block (perf_hooks.monitorEventLoopDelay) and the worst
 * gap between 1 s heartbeat ticks during each. A gap past the heartbeat window (5 s by default) gets a worker evicted.
 *
 *   node dist/bench/bench-eval-liveness.js [--model keras-cnn] [--backend wasm] [--samples 5000]
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Command } from 'commander';
import { loadMnist } from '../shared/data/mnist.js';
import { parseBackendChoice, selectBackend } from '../shared/tf/backend.js';
import { evaluateRange, evaluateRangeYielding } from '../shared/train/batches.js';
import { buildModel, parseModelName } from '../shared/train/models.js';
import { Replica } from '../shared/train/replica.js';

interface Liveness {
  ms: number;
  longestBlockMs: number;
  worstHeartbeatGapMs: number;
  accuracy: number;
}

async function measure(run: () => Promise<{ correct: number; total: number }>): Promise<Liveness> {
  const delay = monitorEventLoopDelay({ resolution: 10 });
  let last = performance.now();
  let worstGap = 0;
  const beat = setInterval(() => {
    const now = performance.now();
    worstGap = Math.max(worstGap, now - last);
    last = now;
  }, 1_000);
  delay.enable();
  const t0 = performance.now();
  const counts = await run();
  const ms = performance.now() - t0;
  await new Promise((resolve) => setImmediate(resolve));
  delay.disable();
  clearInterval(beat);
  worstGap = Math.max(worstGap, performance.now() - last);
  return {
    ms,
    longestBlockMs: delay.max / 1e6,
    worstHeartbeatGapMs: worstGap,
    accuracy: counts.correct / counts.total,
  };
}

async function main(): Promise<void> {
  const opts = new Command('bench-eval-liveness')
    .option('--model <name>', 'model', 'keras-cnn')
    .option('--backend <name>', 'backend', 'wasm')
    .option('--samples <n>', "test samples (a worker's share of the test set)", Number, 5000)
    .parse()
    .opts<{ model: string; backend: string; samples: number }>();
  const backend = await selectBackend(parseBackendChoice(opts.backend));
  const data = await loadMnist();
  const replica = new Replica(buildModel(parseModelName(opts.model), 42), { name: 'adam', lr: 1e-3 });
  const n = Math.min(opts.samples, data.test.count);
  evaluateRange(replica, data.test, 0, 100); // warm-up: kernels compiled, buffers allocated
  const before = await measure(() => Promise.resolve(evaluateRange(replica, data.test, 0, n)));
  const after = await measure(() => evaluateRangeYielding(replica, data.test, 0, n));
  console.log(JSON.stringify({ model: opts.model, backend, samples: n, before, after }, null, 2));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
