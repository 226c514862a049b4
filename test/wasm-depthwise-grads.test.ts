/**
 * The wasm depthwise convolution gradients (shared/tf/wasm-depthwise-grads.ts) against tfjs's pure-JS cpu backend:
 * dx and dW through tf.grads for strides, paddings, depth multipliers and batch sizes; memory; and DepthwiseConv2D /
 * SeparableConv2D layers training on wasm.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import { KernelUnsupportedError } from '../shared/errors.js';
import { registerWasmConvGradients } from '../shared/tf/wasm-conv-grads.js';
import { depthwiseBackpropFilterViaConv, depthwiseBackpropInputViaConv } from '../shared/tf/wasm-depthwise-grads.js';

type Shape4D = [number, number, number, number];
type Pad = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;

function values(count: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    out[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  }
  return out;
}

const size = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

function assertClose(actual: Float32Array, expected: Float32Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let maxDiff = 0;
  let maxAbs = 0;
  for (let i = 0; i < expected.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(actual[i]! - expected[i]!));
    maxAbs = Math.max(maxAbs, Math.abs(expected[i]!));
  }
  assert.ok(Number.isFinite(maxDiff), `${what}: non-finite values`);
  assert.ok(maxDiff <= 1e-4 * Math.max(1, maxAbs), `${what}: max |diff| ${maxDiff} (max |expected| ${maxAbs})`);
}

interface Case {
  x: Shape4D;
  filter: Shape4D;
  strides: number | [number, number];
  pad: Pad;
}

const label = (c: Case): string =>
  `x=[${c.x}] f=[${c.filter}] strides=${JSON.stringify(c.strides)} pad=${JSON.stringify(c.pad)}`;

async function grads(backend: string, c: Case): Promise<{ dx: Float32Array; dW: Float32Array }> {
  await tf.setBackend(backend);
  return tf.tidy(() => {
    const x = tf.tensor4d(values(size(c.x), 1), c.x);
    const f = tf.tensor4d(values(size(c.filter), 2), c.filter);
    const outShape = tf.depthwiseConv2d(x, f, c.strides, c.pad).shape;
    const weights = tf.tensor(values(size(outShape), 3), outShape);
    const loss = (xs: tf.Tensor, fs: tf.Tensor): tf.Scalar =>
      tf.sum(tf.mul(tf.depthwiseConv2d(xs as tf.Tensor4D, fs as tf.Tensor4D, c.strides, c.pad), weights));
    const [dx, dW] = tf.grads(loss)([x, f]);
    return { dx: dx!.dataSync() as Float32Array, dW: dW!.dataSync() as Float32Array };
  });
}

function cases(): Case[] {
  const out: Case[] = [];
  let i = 0;
  for (const c of [1, 3, 8]) {
    for (const m of [1, 2]) {
      for (const pad of ['same', 'valid'] as const) {
        for (const stride of [1, 2]) {
          const k = i % 2 === 0 ? 3 : 5;
          const batch = Math.floor(i / 2) % 2 === 0 ? 1 : 3;
          const h = 7 + (Math.floor(i / 3) % 3);
          out.push({ x: [batch, h, h + 1 + (i % 2), c], filter: [k, k, c, m], strides: stride, pad });
          i++;
        }
      }
    }
  }
  // Unequal strides: wasm's own forward kernel gets these wrong; ringtrain's wrapper computes them.
  out.push({ x: [2, 9, 8, 3], filter: [3, 3, 3, 2], strides: [2, 1], pad: 'same' });
  out.push({ x: [2, 9, 8, 3], filter: [3, 3, 3, 1], strides: [1, 2], pad: 'valid' });
  out.push({
    x: [1, 6, 7, 2],
    filter: [3, 3, 2, 1],
    strides: 1,
    pad: [
      [0, 0],
      [3, 3],
      [0, 4],
      [0, 0],
    ],
  });
  return out;
}

describe('wasm depthwise convolution gradients', () => {
  before(async () => {
    await tf.setBackend('wasm');
    await tf.ready();
    registerWasmConvGradients();
  });

  for (const c of cases()) {
    it(`match cpu: ${label(c)}`, async () => {
      const expected = await grads('cpu', c);
      const actual = await grads('wasm', c);
      assertClose(actual.dx, expected.dx, 'dx');
      assertClose(actual.dW, expected.dW, 'dW');
    });
  }

  it('the forward pass with unequal strides matches cpu', async () => {
    for (const strides of [
      [2, 1],
      [1, 3],
    ] as [number, number][]) {
      const run = async (backend: string) => {
        await tf.setBackend(backend);
        return tf.tidy(() => {
          const x = tf.tensor4d(values(2 * 9 * 10 * 3, 4), [2, 9, 10, 3]);
          const f = tf.tensor4d(values(3 * 3 * 3 * 2, 5), [3, 3, 3, 2]);
          const y = tf.depthwiseConv2d(x, f, strides, 'same');
          return { shape: y.shape, data: y.dataSync() as Float32Array };
        });
      };
      const expected = await run('cpu');
      const actual = await run('wasm');
      assert.deepEqual(actual.shape, expected.shape);
      assertClose(actual.data, expected.data, `strides ${strides}`);
    }
  });

  it('the tensor-op formulation matches cpu on cpu itself', async () => {
    const c: Case = { x: [2, 8, 9, 3], filter: [3, 3, 3, 2], strides: 2, pad: 'same' };
    const expected = await grads('cpu', c);
    const [dx, dW] = tf.tidy(() => {
      const x = tf.tensor4d(values(size(c.x), 1), c.x);
      const f = tf.tensor4d(values(size(c.filter), 2), c.filter);
      const outShape = tf.depthwiseConv2d(x, f, c.strides, c.pad).shape as Shape4D;
      const dy = tf.tensor4d(values(size(outShape), 3), outShape);
      return [
        depthwiseBackpropInputViaConv(c.x, dy, f, c).dataSync() as Float32Array,
        depthwiseBackpropFilterViaConv(x, dy, c.filter, c).dataSync() as Float32Array,
      ];
    });
    assertClose(dx!, expected.dx, 'dx');
    assertClose(dW!, expected.dW, 'dW');
  });

  it('refuses dilated depthwise gradients with a typed error', async () => {
    await tf.setBackend('cpu');
    tf.tidy(() => {
      const x = tf.zeros([1, 8, 8, 2]) as tf.Tensor4D;
      const dy = tf.zeros([1, 8, 8, 2]) as tf.Tensor4D;
      assert.throws(
        () => depthwiseBackpropFilterViaConv(x, dy, [3, 3, 2, 1], { strides: 1, pad: 'same', dilations: 2 }),
        KernelUnsupportedError,
      );
    });
  });

  it('leaks no tensors and no wasm buffers across gradient calls', async () => {
    await tf.setBackend('wasm');
    const c: Case = { x: [2, 8, 8, 4], filter: [3, 3, 4, 2], strides: 2, pad: 'same' };
    await grads('wasm', c);
    const before = tf.memory();
    for (let i = 0; i < 3; i++) await grads('wasm', c);
    const after = tf.memory();
    assert.equal(after.numTensors, before.numTensors);
    assert.equal(after.numBytes, before.numBytes);
  });

  it('DepthwiseConv2D and SeparableConv2D layers train on wasm: the loss falls', async () => {
    await tf.setBackend('wasm');
    const model = tf.sequential({
      layers: [
        tf.layers.depthwiseConv2d({ inputShape: [8, 8, 2], kernelSize: 3, depthMultiplier: 2, padding: 'same' }),
        tf.layers.separableConv2d({ filters: 4, kernelSize: 3, strides: 2, padding: 'same', activation: 'relu' }),
        tf.layers.flatten(),
        tf.layers.dense({ units: 2 }),
      ],
    });
    const optimizer = tf.train.adam(0.01);
    const x = tf.tensor4d(values(4 * 8 * 8 * 2, 9), [4, 8, 8, 2]);
    const y = tf.oneHot(tf.tensor1d([0, 1, 0, 1], 'int32'), 2);
    const losses: number[] = [];
    for (let step = 0; step < 30; step++) {
      const loss = optimizer.minimize(
        () => tf.losses.softmaxCrossEntropy(y, model.apply(x, { training: true }) as tf.Tensor) as tf.Scalar,
        true,
      );
      losses.push(loss!.dataSync()[0]!);
      loss!.dispose();
    }
    assert.ok(losses[29]! < losses[0]! * 0.5, `loss ${losses[0]} -> ${losses[29]}`);
    tf.dispose([x, y]);
    optimizer.dispose();
    model.dispose();
  });
});
