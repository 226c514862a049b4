import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { FlatOptimizer, slotCount } from '../shared/train/flat-optim.js';
import { ConfigError } from '../shared/errors.js';
import { validateTrainConfig, TRAIN_DEFAULTS } from '../shared/config.js';
import { learningRateAt, parseOptimizerName } from '../shared/train/optim.js';

test('per-epoch decay multiplies the base rate by decay^epoch', () => {
  const o = { baseLr: 2e-3, decay: 0.7 };
  assert.equal(learningRateAt(o, 0), 2e-3);
  assert.ok(Math.abs(learningRateAt(o, 3) - 2e-3 * 0.343) < 1e-12);
});

test('world-size scaling ramps linearly over the warmup, then holds N x the decayed rate', () => {
  const o = { baseLr: 0.1, decay: 1, scaleByWorldSize: true, worldSize: 4, warmupEpochs: 2 };
  assert.equal(learningRateAt(o, 0, 0), 0.1);
  assert.ok(Math.abs(learningRateAt(o, 1, 0) - 0.25) < 1e-12);
  assert.ok(Math.abs(learningRateAt(o, 2, 0) - 0.4) < 1e-12);
  assert.ok(Math.abs(learningRateAt(o, 5, 0.5) - 0.4) < 1e-12);
  assert.equal(learningRateAt({ ...o, worldSize: 1 }, 0), 0.1);
  assert.equal(learningRateAt({ ...o, scaleByWorldSize: false }, 3), 0.1);
});

test('config validation names the bad option', () => {
  assert.deepEqual(validateTrainConfig({}), { ...TRAIN_DEFAULTS });
  assert.equal(validateTrainConfig({ optimizer: 'sgd' }).lr, 0.05, 'each optimizer has its own default rate');
  assert.equal(validateTrainConfig({ optimizer: 'sgd', lr: 0.3 }).lr, 0.3);
  assert.throws(
    () => validateTrainConfig({ epochs: 0 }),
    (e: unknown) => e instanceof ConfigError && /epochs/.test(e.message),
  );
  assert.throws(() => validateTrainConfig({ batchSize: 2.5 }), /batch-size/);
  assert.throws(() => validateTrainConfig({ targetAccuracy: 2 }), /target-accuracy/);
  assert.throws(() => validateTrainConfig({ model: 'resnet' }), /unknown model 'resnet'/);
  assert.throws(() => parseOptimizerName('rmsprop'), ConfigError);
  assert.throws(() => validateTrainConfig({ lr: 'abc' }), /lr/);
});

/** tfjs's own optimizer on the cpu backend, `steps` updates of one variable, and its slots after them. */
async function tfjsReference(
  make: () => tf.Optimizer,
  start: Float32Array,
  grads: Float32Array[],
): Promise<{ weights: Float32Array; slots: Float32Array[] }> {
  await tf.setBackend('cpu');
  const v = tf.variable(tf.tensor1d(start), true, 'w');
  const optimizer = make();
  for (const g of grads) optimizer.applyGradients({ w: tf.tensor1d(g) });
  const [, ...slots] = await optimizer.getWeights();
  const out = { weights: v.dataSync() as Float32Array, slots: slots.map((s) => s.tensor.dataSync() as Float32Array) };
  optimizer.dispose();
  v.dispose();
  return out;
}

test('the flat optimizers follow tfjs formulas: Adam, momentum, plain SGD and Adadelta, slots in its layout', async () => {
  const rng = (seed: number) => () => ((seed = (seed * 16807) % 2147483647) / 2147483647) * 2 - 1;
  const r = rng(7);
  const n = 50;
  const start = Float32Array.from({ length: n }, r);
  const grads = Array.from({ length: 20 }, () => Float32Array.from({ length: n }, () => r() * 3));
  const cases = [
    { opts: { name: 'adam' as const }, lr: 0.01, make: () => tf.train.adam(0.01) },
    { opts: { name: 'sgd' as const, momentum: 0.9 }, lr: 0.05, make: () => tf.train.momentum(0.05, 0.9) },
    { opts: { name: 'sgd' as const, momentum: 0 }, lr: 0.05, make: () => tf.train.sgd(0.05) },
    { opts: { name: 'adadelta' as const }, lr: 1, make: () => tf.train.adadelta(1) },
  ];
  for (const c of cases) {
    const ref = await tfjsReference(c.make, start, grads);
    const flat = new FlatOptimizer(c.opts, n);
    assert.equal(flat.state.length, 1 + slotCount(c.opts) * n);
    const w = start.slice();
    for (const g of grads) flat.step(w, g, c.lr);
    assert.equal(flat.iterations, grads.length);
    const close = (a: Float32Array, b: Float32Array, what: string) =>
      a.forEach((x, i) => assert.ok(Math.abs(x - b[i]!) <= 1e-5 * Math.max(1, Math.abs(b[i]!)), `${what}[${i}]`));
    close(w, ref.weights, `${c.opts.name} weights`);
    ref.slots.forEach((slot, k) => close(flat.state.subarray(1 + k * n, 1 + (k + 1) * n), slot, `slot ${k}`));
  }
});
