#!/usr/bin/env node
/**
 * Liveness during evaluation (issue 13, finding 7): evaluate a worker's share of the test set the old way (one
 * synchronous call, batches of 1000) and the worker's way (evaluateRangeYielding: batches of 100 with a turn of the
 * event loop between them), and report the longest event-loop block (a 10 ms ticker's worst gap, and
 * perf_hooks.monitorEventLoopDelay's maximum) and the worst gap between 1 s heartbeat ticks during each. A gap past
 * the heartbeat window (5 s by default) gets a worker evicted.
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

/** Run `run` while a 10 ms ticker and a 1 s "heartbeat" timer measure how long the event loop was blocked. */
async function measure(run: () => Promise<{ correct: number; total: number }>): Promise<Liveness> {
  const delay = monitorEventLoopDelay({ resolution: 10 });
  const gaps = (everyMs: number) => {
    let last = performance.now();
    let worst = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      worst = Math.max(worst, now - last);
      last = now;
    }, everyMs);
    return () => {
      clearInterval(timer);
      return Math.max(worst, performance.now() - last);
    };
  };
  const ticker = gaps(10);
  const heartbeat = gaps(1_000);
  delay.enable();
  const t0 = performance.now();
  const counts = await run();
  const ms = performance.now() - t0;
  await new Promise((resolve) => setTimeout(resolve, 50));
  delay.disable();
  return {
    ms,
    longestBlockMs: Math.max(ticker() - 10, delay.max / 1e6),
    worstHeartbeatGapMs: heartbeat(),
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
