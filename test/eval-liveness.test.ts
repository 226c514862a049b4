/**
 * Evaluation never starves the event loop (issue 13, finding 7): the worker evaluates with evaluateRangeYielding,
 * batches of EVAL_YIELD_BATCH with a turn of the event loop between them, so heartbeats, pongs and control messages
 * go on during a long evaluation. The counts equal those of the one-block evaluateRange.
 */
import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { test } from 'node:test';
import { loadMnist } from '../shared/data/mnist.js';
import { selectBackend } from '../shared/tf/backend.js';
import { EVAL_YIELD_BATCH, evaluateRange, evaluateRangeYielding } from '../shared/train/batches.js';
import { buildModel } from '../shared/train/models.js';
import { Replica } from '../shared/train/replica.js';

test('a long evaluation yields between batches and counts the same as one block', { timeout: 120_000 }, async () => {
  await selectBackend('cpu');
  const data = await loadMnist();
  const replica = new Replica(buildModel('mlp', 7), { name: 'sgd', lr: 0.1 });
  const n = 3_000;
  const whole = evaluateRange(replica, data.test, 0, n);

  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const delay = monitorEventLoopDelay({ resolution: 5 });
  delay.enable();
  const t0 = performance.now();
  const yielded = await evaluateRangeYielding(replica, data.test, 0, n);
  const ms = performance.now() - t0;
  delay.disable();
  clearInterval(timer);

  assert.equal(yielded.correct, whole.correct);
  assert.equal(yielded.total, n);
  assert.ok(Math.abs(yielded.lossSum - whole.lossSum) <= 1e-3 * Math.abs(whole.lossSum), 'the same loss sum');
  const batches = n / EVAL_YIELD_BATCH;
  assert.ok(ticks >= batches / 2, `timers ran during the evaluation: ${ticks} ticks over ${batches} batches`);
  assert.ok(
    delay.max / 1e6 < Math.max(50, ms / 4),
    `longest block ${(delay.max / 1e6).toFixed(0)} ms of an evaluation of ${ms.toFixed(0)} ms`,
  );
});
