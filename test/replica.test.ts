import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { LayoutMismatchError } from '../shared/errors.js';
import { loadModel, saveModel } from '../shared/train/model-io.js';
import { buildModel, type ModelName } from '../shared/train/models.js';
import { Replica, type Batch } from '../shared/train/replica.js';
import type { OptimizerOptions } from '../shared/train/optim.js';
import { availableBackends, type TestBackend } from './helpers/backends.js';

const BACKENDS = await availableBackends();

function randomBatch(n: number, seed: number): Batch {
  let s = seed;
  const next = () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
  const images = Float32Array.from({ length: n * 784 }, next);
  const labels = Int32Array.from({ length: n }, () => Math.floor(next() * 10));
  return { images, labels, n };
}

function replica(model: ModelName, opt: OptimizerOptions, seed = 7): Replica {
  return new Replica(buildModel(model, seed), opt);
}

for (const backend of BACKENDS) describeReplica(backend);

function describeReplica(backend: TestBackend): void {
  describe(`Replica (flat-buffer training step) on ${backend}`, () => {
    before(async () => {
      assert.ok(await tf.setBackend(backend));
    });

    test('the layout covers every trainable parameter once, in model order', () => {
      for (const name of ['lenet5', 'keras-cnn', 'mlp'] as const) {
        const r = replica(name, { name: 'adam', lr: 1e-3 });
        assert.equal(r.layout.size, r.built.logitsModel.countParams());
        let offset = 0;
        for (const e of r.layout.entries) {
          assert.equal(e.offset, offset);
          assert.equal(
            e.size,
            e.shape.reduce((a, b) => a * b, 1),
          );
          offset += e.size;
        }
        r.dispose();
      }
    });

    test('plain SGD applies exactly w - lr * g from the flat gradients', () => {
      const r = replica('mlp', { name: 'sgd', lr: 0.5, momentum: 0 });
      const before = r.getWeights();
      const { loss, gradients } = r.computeGradients(randomBatch(8, 1));
      assert.ok(Number.isFinite(loss) && loss > 0);
      assert.ok(gradients.some((g) => g !== 0));
      const g = gradients.slice();
      r.applyGradients(g);
      const after = r.getWeights();
      for (let i = 0; i < before.length; i += 997) {
        assert.ok(Math.abs(after[i]! - (before[i]! - 0.5 * g[i]!)) <= 1e-6, `parameter ${i}`);
      }
      r.dispose();
    });

    test('gradients of a conv model equal tf.grads of the same loss', () => {
      const r = replica('lenet5', { name: 'adam', lr: 1e-3 });
      const batch = randomBatch(4, 2);
      const flat = r.computeGradients(batch).gradients.slice();
      const vars = r.built.logitsModel.trainableWeights.map((w) => (w as unknown as { read(): tf.Variable }).read());
      const ref = tf.tidy(() => {
        const x = tf.tensor4d(batch.images, [4, 28, 28, 1]);
        const y = tf.oneHot(tf.tensor1d(batch.labels, 'int32'), 10);
        const { grads } = tf.variableGrads(
          () => tf.losses.softmaxCrossEntropy(y, r.built.logitsModel.apply(x) as tf.Tensor) as tf.Scalar,
          vars,
        );
        return vars.map((v) => grads[v.name]!.dataSync() as Float32Array);
      });
      r.layout.entries.forEach((e, i) => {
        assert.deepEqual(Array.from(flat.subarray(e.offset, e.offset + e.size)), Array.from(ref[i]!));
      });
      r.dispose();
    });

    test('weights round-trip through a flat buffer, and a wrong length is a typed error', () => {
      const a = replica('mlp', { name: 'adam', lr: 1e-3 }, 1);
      const b = replica('mlp', { name: 'adam', lr: 1e-3 }, 2);
      assert.notDeepEqual(a.getWeights().slice(0, 50), b.getWeights().slice(0, 50));
      b.setWeights(a.getWeights());
      assert.deepEqual(b.getWeights(), a.getWeights());
      assert.throws(() => b.setWeights(new Float32Array(3)), LayoutMismatchError);
      assert.throws(() => b.applyGradients(new Float32Array(3)), LayoutMismatchError);
      a.dispose();
      b.dispose();
    });

    for (const opt of [
      { name: 'adam', lr: 1e-3 },
      { name: 'sgd', lr: 0.05, momentum: 0.9 },
      { name: 'sgd', lr: 0.05, momentum: 0 },
      { name: 'adadelta', lr: 1.0 },
    ] as OptimizerOptions[]) {
      test(`${opt.name} (momentum ${opt.momentum ?? '-'}) state restores into a new replica that then trains identically`, async () => {
        const a = replica('mlp', opt);
        const fresh = await a.getOptimizerState();
        assert.equal(fresh.length, a.optimizerStateSize);
        assert.ok(
          fresh.every((v) => v === 0),
          'no step yet: all zeros',
        );
        for (let s = 0; s < 3; s++) a.applyGradients(a.computeGradients(randomBatch(8, 10 + s)).gradients);
        const state = await a.getOptimizerState();
        assert.equal(state[0], 3, 'iterations');
        const b = replica('mlp', opt, 99);
        b.setWeights(a.getWeights());
        await b.setOptimizerState(state);
        assert.deepEqual(await b.getOptimizerState(), state);
        const batch = randomBatch(8, 77);
        a.applyGradients(a.computeGradients(batch).gradients);
        b.applyGradients(b.computeGradients(batch).gradients);
        const wa = a.getWeights();
        const wb = b.getWeights();
        let maxDiff = 0;
        for (let i = 0; i < wa.length; i++) maxDiff = Math.max(maxDiff, Math.abs(wa[i]! - wb[i]!));
        assert.ok(maxDiff < 1e-6, `max difference ${maxDiff}`);
        a.dispose();
        b.dispose();
      });
    }

    test('tf.memory().numTensors stays flat over many steps (with evaluation and state reads)', async () => {
      const r = replica('lenet5', { name: 'adam', lr: 1e-3 });
      const batch = randomBatch(4, 3);
      const step = () => r.applyGradients(r.computeGradients(batch).gradients);
      step();
      await r.getOptimizerState();
      const baseline = tf.memory().numTensors;
      for (let i = 0; i < 25; i++) {
        step();
        r.evaluate(batch);
        r.setWeights(r.getWeights());
      }
      await r.setOptimizerState(await r.getOptimizerState());
      assert.equal(tf.memory().numTensors, baseline);
      r.dispose();
    });

    test('evaluate counts correct predictions and sums the loss', () => {
      const r = replica('mlp', { name: 'adam', lr: 1e-3 });
      const batch = randomBatch(16, 4);
      const counts = r.evaluate(batch);
      const probs = r.built.model.predict(tf.tensor4d(batch.images, [16, 28, 28, 1])) as tf.Tensor;
      const predicted = Array.from(probs.argMax(1).dataSync());
      const expected = predicted.filter((p, i) => p === batch.labels[i]).length;
      assert.equal(counts.correct, expected);
      assert.equal(counts.total, 16);
      assert.ok(counts.lossSum > 16 * 1.5 && counts.lossSum < 16 * 4, `loss sum ${counts.lossSum} near 16 * ln 10`);
      r.dispose();
    });

    test('a saved model loads back with tf.loadLayersModel and predicts the same', async () => {
      const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ringtrain-model-'));
      try {
        const r = replica('lenet5', { name: 'adam', lr: 1e-3 });
        await saveModel(r.built.model, dir);
        const json = JSON.parse(await fs.readFile(path.join(dir, 'model.json'), 'utf8'));
        assert.equal(json.format, 'layers-model');
        assert.deepEqual(json.weightsManifest[0].paths, ['./weights.bin']);
        const loaded = await loadModel(dir);
        const x = tf.tensor4d(randomBatch(3, 5).images, [3, 28, 28, 1]);
        const a = (r.built.model.predict(x) as tf.Tensor).dataSync();
        const b = (loaded.predict(x) as tf.Tensor).dataSync();
        assert.deepEqual(Array.from(b), Array.from(a));
        r.dispose();
        loaded.dispose();
      } finally {
        await fs.rm(dir, { recursive: true, force: true });
      }
    });
  });
}

/** Largest |a - b| relative to the largest |b| (at least 1). */
function relDiff(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 1;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return diff / scale;
}

/** Gradients of one batch and the weights after three Adam steps, on `backend` (models without dropout). */
async function lenetSteps(
  backend: TestBackend,
  model: ModelName,
): Promise<{ grads: Float32Array; w: Float32Array; moved: number }> {
  assert.ok(await tf.setBackend(backend));
  const r = replica(model, { name: 'adam', lr: 1e-3 }, 11);
  const w0 = r.getWeights();
  const grads = r.computeGradients(randomBatch(16, 21)).gradients.slice();
  for (let s = 0; s < 3; s++) r.applyGradients(r.computeGradients(randomBatch(16, 30 + s)).gradients);
  const w = r.getWeights();
  r.dispose();
  return { grads, w, moved: relDiff(w, w0) };
}

describe('every backend computes the cpu reference training step (to float rounding)', () => {
  for (const backend of BACKENDS.filter((b) => b !== 'cpu')) {
    for (const model of ['lenet5', 'mlp'] as const) {
      test(`${model} on ${backend}: gradients and three Adam steps match cpu`, async () => {
        const ref = await lenetSteps('cpu', model);
        const got = await lenetSteps(backend, model);
        assert.ok(relDiff(got.grads, ref.grads) < 1e-4, `gradients differ by ${relDiff(got.grads, ref.grads)}`);
        assert.ok(relDiff(got.w, ref.w) < 1e-4, `weights differ by ${relDiff(got.w, ref.w)}`);
        assert.ok(got.moved > 1e-4, `the steps moved the weights (${got.moved})`);
      });
    }
  }
});
