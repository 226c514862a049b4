/**
 * Layer state in the flat-buffer replica (shared/train/replica.ts): BatchNormalization's moving statistics are part
 * of the weights (so of the hash, checkpoints and broadcasts), a step's update carries their change, the replica
 * changes only when an update is applied, and replicas that average their updates keep identical state. Plus the
 * dry-run trainability check (shared/train/trainability.ts) naming the layer and the kernel.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import { ModelUntrainableError } from '../shared/errors.js';
import { registerWasmConvGradients } from '../shared/tf/wasm-conv-grads.js';
import { withSoftmax, type BuiltModel } from '../shared/train/models.js';
import { Replica, type Batch } from '../shared/train/replica.js';
import { dryRunStep } from '../shared/train/trainability.js';
import { paramHash } from '../worker/epoch-runner.js';

function bnModel(seed = 1): BuiltModel {
  const input = tf.input({ shape: [8, 8, 2] });
  let x = tf.layers
    .separableConv2d({
      filters: 4,
      kernelSize: 3,
      padding: 'same',
      depthwiseInitializer: tf.initializers.glorotUniform({ seed }),
      pointwiseInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }),
    })
    .apply(input) as tf.SymbolicTensor;
  x = tf.layers.batchNormalization().apply(x) as tf.SymbolicTensor;
  x = tf.layers.flatten().apply(x) as tf.SymbolicTensor;
  const logits = tf.layers
    .dense({ units: 3, kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 2 }) })
    .apply(x) as tf.SymbolicTensor;
  const logitsModel = tf.model({ inputs: input, outputs: logits });
  return { name: 'bn', logitsModel, model: withSoftmax(logitsModel, 'bn') };
}

function batch(seed: number, n = 4): Batch {
  const images = new Float32Array(n * 8 * 8 * 2);
  let s = seed;
  for (let i = 0; i < images.length; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    images[i] = s / 2147483648;
  }
  return { images, labels: Int32Array.from({ length: n }, (_, i) => (i + seed) % 3), n };
}

const sgd = { name: 'sgd' as const, lr: 0.05, momentum: 0 };

describe('Replica with layer state (BatchNormalization)', () => {
  before(async () => {
    await tf.setBackend('cpu');
  });

  it('the layout holds the trainable weights, then the moving mean and variance', () => {
    const r = new Replica(bnModel(), sgd);
    const state = r.layout.entries.filter((e) => !e.trainable);
    assert.equal(state.length, 2);
    assert.equal(r.stateSize, 8);
    assert.equal(r.layout.size, r.built.logitsModel.countParams());
    assert.equal(r.layout.trainableSize + r.stateSize, r.layout.size);
    assert.ok(
      r.layout.entries.slice(0, -2).every((e) => e.trainable),
      'state comes last',
    );
    assert.equal(r.getWeights().length, r.layout.size);
    r.dispose();
  });

  it('computeGradients leaves the replica as it was; applying moves the moving statistics', () => {
    const r = new Replica(bnModel(), sgd);
    const before = r.getWeights().slice();
    const { gradients } = r.computeGradients(batch(1));
    assert.deepEqual(r.getWeights(), before, 'no weight (state included) changes before an update is applied');
    const stateDelta = gradients.subarray(r.layout.trainableSize);
    assert.ok(
      stateDelta.some((v) => v !== 0),
      'the update carries how the forward pass moved the statistics',
    );
    r.applyGradients(gradients);
    const after = r.getWeights();
    for (let i = r.layout.trainableSize; i < r.layout.size; i++) {
      assert.ok(Math.abs(after[i]! - (before[i]! + stateDelta[i - r.layout.trainableSize]!)) < 1e-6);
    }
    r.dispose();
  });

  it('two replicas averaging their updates stay bitwise identical, state and hash included', () => {
    const a = new Replica(bnModel(1), sgd);
    const b = new Replica(bnModel(9), sgd); // other initial weights: the broadcast makes them equal
    b.setWeights(a.getWeights());
    assert.equal(paramHash(a), paramHash(b));
    const hashes = new Set<string>();
    for (let step = 0; step < 4; step++) {
      const ga = a.computeGradients(batch(10 + step)).gradients.slice();
      const gb = b.computeGradients(batch(20 + step)).gradients;
      const avg = ga.map((v, i) => (v + gb[i]!) / 2);
      a.applyGradients(avg);
      b.applyGradients(avg);
      assert.deepEqual(a.getWeights(), b.getWeights(), `step ${step}`);
      assert.equal(paramHash(a), paramHash(b));
      hashes.add(paramHash(a));
    }
    assert.equal(hashes.size, 4);
    a.dispose();
    b.dispose();
  });

  it('the hash sees the moving statistics', () => {
    const r = new Replica(bnModel(), sgd);
    const w = r.getWeights();
    const h = paramHash(r);
    w[w.length - 1] = w[w.length - 1]! + 1; // the last moving-variance value
    r.setWeights(w);
    assert.notEqual(paramHash(r), h);
    r.dispose();
  });

  it('a step allocates no tensors', () => {
    const r = new Replica(bnModel(), sgd);
    r.applyGradients(r.computeGradients(batch(1)).gradients);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) r.applyGradients(r.computeGradients(batch(2 + i)).gradients);
    assert.equal(tf.memory().numTensors, before);
    r.dispose();
  });
});

describe('dry-run trainability check', () => {
  it('a dilated convolution fails before training with the layer named', async () => {
    await tf.setBackend('cpu');
    const model = tf.sequential({
      layers: [
        tf.layers.conv2d({ inputShape: [8, 8, 1], filters: 2, kernelSize: 3, dilationRate: 2, name: 'atrous' }),
        tf.layers.flatten(),
        tf.layers.dense({ units: 2 }),
      ],
    });
    const r = new Replica({ name: 'dilated', logitsModel: model, model: withSoftmax(model, 'd') }, sgd);
    assert.throws(
      () => dryRunStep(r, 'cpu'),
      (err: unknown) =>
        err instanceof ModelUntrainableError && err.layer === 'atrous' && /dilated convolutions/.test(err.message),
    );
    r.dispose();
  });

  it('a kernel missing on the backend is named with its layer (wasm without the depthwise gradient)', async () => {
    await tf.setBackend('wasm');
    await tf.ready();
    registerWasmConvGradients();
    const r = new Replica(bnModel(), sgd);
    dryRunStep(r, 'wasm'); // trains with ringtrain's kernels
    const kernel = tf.getKernel(tf.DepthwiseConv2dNativeBackpropFilter, 'wasm')!;
    tf.unregisterKernel(tf.DepthwiseConv2dNativeBackpropFilter, 'wasm');
    try {
      assert.throws(
        () => dryRunStep(r, 'wasm'),
        (err: unknown) =>
          err instanceof ModelUntrainableError &&
          err.layerClass === 'SeparableConv2D' &&
          err.kernel === 'DepthwiseConv2dNativeBackpropFilter' &&
          err.backend === 'wasm',
      );
    } finally {
      tf.registerKernel(kernel);
      r.dispose();
      await tf.setBackend('cpu');
    }
  });
});
