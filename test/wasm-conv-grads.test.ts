/**
 * ringtrain's wasm training kernels (shared/tf/wasm-conv-grads.ts) against tfjs's pure-JS cpu backend: convolution
 * gradients (dx and dW through tf.grads), matMul with transposes, max-pool gradients; plus unsupported
 * configurations, memory (no tensor or backend buffer leaks) and a small conv model training on wasm. The numeric
 * comparisons also run on the native tensorflow backend where it is set up (its kernels are libtensorflow's own).
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import { KernelUnsupportedError } from '../shared/errors.js';
import {
  conv2dBackpropFilterViaConv,
  conv2dBackpropInputViaConv,
  maxPoolGradNonOverlapping,
  registerWasmConvGradients,
} from '../shared/tf/wasm-conv-grads.js';
import { nonReferenceBackends } from './helpers/backends.js';

/** Backends whose kernels are compared with the cpu reference: wasm, and tensorflow where available. */
const COMPARED = await nonReferenceBackends();

/** tfjs-node's convolutions take only 'valid' and 'same' padding (numeric and explicit ones are wasm's own). */
function supportsPad(backend: string, pad: Pad): boolean {
  return backend !== 'tensorflow' || pad === 'valid' || pad === 'same';
}

type Shape4D = [number, number, number, number];
type Pad = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;

/** Deterministic values in [-1, 1) (mulberry32), so both backends see the same inputs. */
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

function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function assertClose(actual: Float32Array, expected: Float32Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let maxDiff = 0;
  let maxAbs = 0;
  for (let i = 0; i < expected.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(actual[i] - expected[i]));
    maxAbs = Math.max(maxAbs, Math.abs(expected[i]));
  }
  assert.ok(Number.isFinite(maxDiff), `${what}: non-finite values`);
  assert.ok(maxDiff <= 1e-4 * Math.max(1, maxAbs), `${what}: max |diff| ${maxDiff} (max |expected| ${maxAbs})`);
}

interface ConvCase {
  x: Shape4D;
  filter: Shape4D;
  strides: number | [number, number];
  pad: Pad;
}

function describeCase(c: ConvCase): string {
  return `x=[${c.x}] f=[${c.filter}] strides=${JSON.stringify(c.strides)} pad=${JSON.stringify(c.pad)}`;
}

/** dx and dW of sum(conv2d(x, f) * weights) on one backend, computed through tf.grads (the path training takes). */
async function convGrads(backend: string, c: ConvCase): Promise<{ dx: Float32Array; dW: Float32Array }> {
  await tf.setBackend(backend);
  return tf.tidy(() => {
    const x = tf.tensor4d(values(size(c.x), 1), c.x);
    const f = tf.tensor4d(values(size(c.filter), 2), c.filter);
    const outShape = tf.conv2d(x, f, c.strides, c.pad).shape;
    const weights = tf.tensor(values(size(outShape), 3), outShape);
    const loss = (xs: tf.Tensor, fs: tf.Tensor): tf.Scalar =>
      tf.sum(tf.mul(tf.conv2d(xs as tf.Tensor4D, fs as tf.Tensor4D, c.strides, c.pad), weights));
    const [dx, dW] = tf.grads(loss)([x, f]);
    return { dx: dx.dataSync() as Float32Array, dW: dW.dataSync() as Float32Array };
  });
}

/**
 * A spread of shapes: every in/out channel pairing with both paddings and strides; kernel size, batch and height
 * cycle with periods chosen so that every (padding, stride, kernel, batch) and (padding, stride, kernel, odd/even
 * height) combination occurs, and every channel pairing meets both kernel sizes.
 */
function convCases(): ConvCase[] {
  const cases: ConvCase[] = [];
  let i = 0;
  for (const ci of [1, 3, 6]) {
    for (const co of [1, 4, 16]) {
      for (const pad of ['same', 'valid'] as const) {
        for (const stride of [1, 2]) {
          const k = Math.floor(i / 3) % 2 === 0 ? 3 : 5;
          const batch = Math.floor(i / 4) % 2 === 0 ? 1 : 3;
          const h = 7 + (Math.floor(i / 7) % 3); // 7, 8, 9
          const w = h + 1 + (i % 2);
          cases.push({ x: [batch, h, w, ci], filter: [k, k, ci, co], strides: stride, pad });
          i++;
        }
      }
    }
  }
  return cases;
}

const EXTRA_CASES: ConvCase[] = [
  // Ho*Wo*N = 1024 and 16 output channels: the filter gradient takes its path that pads N against cache thrashing.
  { x: [4, 18, 18, 2], filter: [3, 3, 2, 16], strides: 1, pad: 'valid' },
  { x: [2, 9, 8, 3], filter: [3, 3, 3, 4], strides: 1, pad: 1 },
  {
    x: [2, 9, 8, 3],
    filter: [3, 3, 3, 4],
    strides: [2, 1],
    pad: [
      [0, 0],
      [0, 2],
      [1, 0],
      [0, 0],
    ],
  },
  // Padding wider than the kernel reach: the gradient convolutions must crop instead of pad.
  {
    x: [1, 6, 7, 2],
    filter: [3, 3, 2, 3],
    strides: 2,
    pad: [
      [0, 0],
      [3, 1],
      [0, 4],
      [0, 0],
    ],
  },
  { x: [2, 10, 11, 2], filter: [2, 4, 2, 5], strides: [3, 2], pad: 'same' },
];

before(async () => {
  tf.enableProdMode(); // Skips tfjs's per-op debug checks; kernels behave the same.
  assert.ok(await tf.setBackend('wasm'), 'wasm backend must start');
  registerWasmConvGradients();
});

describe('convolution gradients on wasm (and tensorflow) match the cpu backend', () => {
  it('for every channel pairing, padding, stride and kernel size', async () => {
    for (const c of convCases()) {
      const cpu = await convGrads('cpu', c);
      for (const backend of COMPARED.filter((b) => supportsPad(b, c.pad))) {
        const got = await convGrads(backend, c);
        assertClose(got.dx, cpu.dx, `${backend} dx ${describeCase(c)}`);
        assertClose(got.dW, cpu.dW, `${backend} dW ${describeCase(c)}`);
      }
    }
  });

  it('for explicit numeric and per-side paddings, non-square strides and kernels, and a cache-thrash shape', async () => {
    for (const c of EXTRA_CASES) {
      const cpu = await convGrads('cpu', c);
      for (const backend of COMPARED.filter((b) => supportsPad(b, c.pad))) {
        const got = await convGrads(backend, c);
        assertClose(got.dx, cpu.dx, `${backend} dx ${describeCase(c)}`);
        assertClose(got.dW, cpu.dW, `${backend} dW ${describeCase(c)}`);
      }
    }
  });

  it('the pure-tensor helpers also run on the cpu backend and agree with its kernels', async () => {
    await tf.setBackend('cpu');
    try {
      for (const c of [...convCases().slice(0, 8), ...EXTRA_CASES]) {
        tf.tidy(() => {
          const x = tf.tensor4d(values(size(c.x), 4), c.x);
          const f = tf.tensor4d(values(size(c.filter), 5), c.filter);
          const dyShape = tf.conv2d(x, f, c.strides, c.pad).shape;
          const dy = tf.tensor4d(values(size(dyShape), 6), dyShape);
          const attrs = { strides: c.strides, pad: c.pad, dataFormat: 'NHWC' as const };
          const dW = tf.engine().runKernel(tf.Conv2DBackpropFilter, { x, dy }, { ...attrs, filterShape: c.filter });
          const dx = tf.engine().runKernel(tf.Conv2DBackpropInput, { dy, filter: f }, { ...attrs, inputShape: c.x });
          assertClose(
            conv2dBackpropFilterViaConv(x, dy, c.filter, attrs).dataSync() as Float32Array,
            (dW as tf.Tensor).dataSync() as Float32Array,
            `helper dW ${describeCase(c)}`,
          );
          assertClose(
            conv2dBackpropInputViaConv(c.x, dy, f, attrs).dataSync() as Float32Array,
            (dx as tf.Tensor).dataSync() as Float32Array,
            `helper dx ${describeCase(c)}`,
          );
        });
      }
    } finally {
      await tf.setBackend('wasm');
    }
  });
});

describe('unsupported configurations throw KernelUnsupportedError', () => {
  it('NCHW data format and dilations, on the registered wasm kernels', async () => {
    await tf.setBackend('wasm');
    const x = tf.zeros([1, 2, 5, 5]);
    const dy = tf.zeros([1, 3, 3, 3]);
    const filter = tf.zeros([3, 3, 2, 3]);
    const dyOfDilated = tf.zeros([1, 1, 1, 3]);
    const rejects =
      (pattern: RegExp) =>
      (err: unknown): boolean =>
        err instanceof KernelUnsupportedError && err.code === 'KERNEL_UNSUPPORTED' && pattern.test(err.message);
    assert.throws(
      () =>
        tf
          .engine()
          .runKernel(
            tf.Conv2DBackpropFilter,
            { x, dy },
            { strides: 1, pad: 'valid', dataFormat: 'NCHW', filterShape: [3, 3, 2, 3] },
          ),
      rejects(/NCHW/),
    );
    assert.throws(
      () =>
        tf
          .engine()
          .runKernel(
            tf.Conv2DBackpropInput,
            { dy, filter },
            { strides: 1, pad: 'valid', dataFormat: 'NCHW', inputShape: [1, 2, 5, 5] },
          ),
      rejects(/NCHW/),
    );
    assert.throws(
      () =>
        tf
          .engine()
          .runKernel(
            tf.Conv2DBackpropInput,
            { dy: dyOfDilated, filter },
            { strides: 1, pad: 'valid', dataFormat: 'NHWC', inputShape: [1, 5, 5, 2], dilations: 2 },
          ),
      rejects(/dilations/),
    );
    tf.dispose([x, dy, filter, dyOfDilated]);
  });

  it('dilations greater than 1', () => {
    const x = tf.zeros([1, 7, 7, 1]) as tf.Tensor4D;
    const dy = tf.zeros([1, 3, 3, 2]) as tf.Tensor4D;
    const f = tf.zeros([3, 3, 1, 2]) as tf.Tensor4D;
    const opts = { strides: 1, pad: 'valid' as const, dilations: 2 };
    assert.throws(() => conv2dBackpropFilterViaConv(x, dy, [3, 3, 1, 2], opts), KernelUnsupportedError);
    assert.throws(() => conv2dBackpropInputViaConv([1, 7, 7, 1], dy, f, opts), KernelUnsupportedError);
    tf.dispose([x, dy, f]);
  });
});

async function matMulOn(
  backend: string,
  aShape: number[],
  bShape: number[],
  ta: boolean,
  tb: boolean,
): Promise<Float32Array> {
  await tf.setBackend(backend);
  return tf.tidy(
    () =>
      tf
        .matMul(tf.tensor(values(size(aShape), 7), aShape), tf.tensor(values(size(bShape), 8), bShape), ta, tb)
        .dataSync() as Float32Array,
  );
}

describe('matMul with transposed operands on wasm (and tensorflow) matches the cpu backend', () => {
  it('for matrices, a batch of one, a batch of many, and a shape on the thrash-avoiding transpose path', async () => {
    const shapes: Array<[number[], number[]]> = [
      [
        [5, 7],
        [7, 3],
      ],
      [
        [64, 30],
        [30, 9],
      ],
      [
        [3, 2048],
        [2048, 16],
      ],
      [
        [1, 6, 4],
        [1, 4, 5],
      ],
      [
        [3, 6, 4],
        [3, 4, 5],
      ],
    ];
    for (const [aBase, bBase] of shapes) {
      for (const [ta, tb] of [
        [false, false],
        [true, false],
        [false, true],
        [true, true],
      ]) {
        const swapLast = (s: number[]): number[] => [...s.slice(0, -2), s[s.length - 1], s[s.length - 2]];
        const aShape = ta ? swapLast(aBase) : aBase;
        const bShape = tb ? swapLast(bBase) : bBase;
        const what = `matMul [${aShape}]${ta ? 'ᵀ' : ''} x [${bShape}]${tb ? 'ᵀ' : ''}`;
        const cpu = await matMulOn('cpu', aShape, bShape, ta, tb);
        for (const backend of COMPARED)
          assertClose(await matMulOn(backend, aShape, bShape, ta, tb), cpu, `${backend} ${what}`);
      }
    }
  });
});

/** Gradient of sum(maxPool(x) * weights) with respect to x. */
async function maxPoolGrad(
  backend: string,
  x: Float32Array,
  shape: Shape4D,
  k: number,
  s: number,
): Promise<Float32Array> {
  await tf.setBackend(backend);
  return tf.tidy(() => {
    const xs = tf.tensor4d(x, shape);
    const outShape = tf.maxPool(xs, k, s, 'valid').shape;
    const weights = tf.tensor(values(size(outShape), 9), outShape);
    const grad = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(t as tf.Tensor4D, k, s, 'valid'), weights)));
    return grad(xs).dataSync() as Float32Array;
  });
}

describe('max-pool gradient on wasm (and tensorflow) matches the cpu backend', () => {
  it('for non-overlapping windows, with ties, negative values and partial windows', async () => {
    const cases: Array<{ shape: Shape4D; k: number; ties: boolean }> = [
      { shape: [2, 8, 8, 3], k: 2, ties: false },
      { shape: [2, 9, 7, 4], k: 2, ties: true },
      { shape: [1, 9, 10, 2], k: 3, ties: true },
      { shape: [3, 6, 6, 1], k: 2, ties: true },
    ];
    for (const { shape, k, ties } of cases) {
      // Ties: a few small integers (negative ones too), so most windows hold their max more than once.
      const x = values(size(shape), 10).map((v) => (ties ? Math.round(v * 2) : v));
      const cpu = await maxPoolGrad('cpu', x, shape, k, k);
      for (const backend of COMPARED) {
        const got = await maxPoolGrad(backend, x, shape, k, k);
        assertClose(got, cpu, `${backend} maxPool grad [${shape}] k=${k} ties=${ties}`);
      }
    }
  });

  it('the pure-tensor helper also runs on the cpu backend and agrees with its kernel', async () => {
    await tf.setBackend('cpu');
    try {
      tf.tidy(() => {
        const shape: Shape4D = [2, 9, 7, 3];
        const x = tf.tensor4d(
          values(size(shape), 14).map((v) => Math.round(v * 2)),
          shape,
        );
        const y = tf.maxPool(x, 2, 2, 'valid');
        const dy = tf.tensor4d(values(size(y.shape), 15), y.shape);
        const expected = tf
          .engine()
          .runKernel(
            tf.MaxPoolGrad,
            { dy, input: x, output: y },
            { filterSize: 2, strides: 2, pad: 'valid' },
          ) as tf.Tensor;
        assertClose(
          maxPoolGradNonOverlapping(dy, x, y, [2, 2]).dataSync() as Float32Array,
          expected.dataSync() as Float32Array,
          'helper maxPool grad',
        );
      });
    } finally {
      await tf.setBackend('wasm');
    }
  });

  it('for overlapping windows (left to wasm own kernel), on distinct positive values', async () => {
    const shape: Shape4D = [2, 9, 9, 3];
    const x = values(size(shape), 11).map((v, i) => 1 + Math.abs(v) + i * 1e-4);
    const cpu = await maxPoolGrad('cpu', x, shape, 3, 2);
    for (const backend of COMPARED)
      assertClose(await maxPoolGrad(backend, x, shape, 3, 2), cpu, `${backend} overlapping`);
  });
});

describe('wasm kernel registration and memory', () => {
  it('registers both convolution gradients for wasm, idempotently', () => {
    const filterKernel = tf.getKernel(tf.Conv2DBackpropFilter, 'wasm');
    const inputKernel = tf.getKernel(tf.Conv2DBackpropInput, 'wasm');
    assert.ok(filterKernel && inputKernel);
    registerWasmConvGradients();
    assert.equal(tf.getKernel(tf.Conv2DBackpropFilter, 'wasm').kernelFunc, filterKernel.kernelFunc);
    assert.equal(tf.getKernel(tf.Conv2DBackpropInput, 'wasm').kernelFunc, inputKernel.kernelFunc);
  });

  it('leaks neither tensors nor backend buffers over repeated gradient calls', async () => {
    await tf.setBackend('wasm');
    const x = tf.tensor4d(values(3 * 9 * 9 * 3, 12), [3, 9, 9, 3]);
    const f = tf.variable(tf.tensor4d(values(3 * 3 * 3 * 4, 13), [3, 3, 3, 4]));
    const loss = (xs: tf.Tensor, fs: tf.Tensor): tf.Scalar =>
      tf.sum(tf.maxPool(tf.conv2d(xs as tf.Tensor4D, fs as tf.Tensor4D, 2, 'same'), 2, 2, 'valid'));
    const measure = (): [number, number] => [tf.memory().numTensors, tf.engine().backend.numDataIds()];
    tf.dispose(tf.grads(loss)([x, f]));
    const start = measure();
    for (let i = 0; i < 25; i++) tf.dispose(tf.grads(loss)([x, f]));
    assert.deepEqual(measure(), start);
    tf.dispose([x, f]);
  });
});

describe('a small conv model trains on wasm', () => {
  it('optimizer.minimize lowers the loss, with a flat tensor count', async () => {
    await tf.setBackend('wasm');
    const init = (seed: number) => ({ kernelInitializer: tf.initializers.glorotUniform({ seed }) });
    const model = tf.sequential({
      layers: [
        tf.layers.conv2d({
          inputShape: [8, 8, 1],
          filters: 4,
          kernelSize: 3,
          padding: 'same',
          activation: 'relu',
          ...init(1),
        }),
        tf.layers.maxPooling2d({ poolSize: 2 }),
        tf.layers.conv2d({ filters: 6, kernelSize: 3, activation: 'relu', ...init(2) }),
        tf.layers.flatten(),
        tf.layers.dense({ units: 2, activation: 'softmax', ...init(3) }),
      ],
    });
    // Class 1 images are bright in the top half, class 0 in the bottom half.
    const n = 16;
    const labels = Array.from({ length: n }, (_, i) => i % 2);
    const images = new Float32Array(n * 64).map((_, j) => {
      const image = Math.floor(j / 64);
      const row = Math.floor((j % 64) / 8);
      return row < 4 === (labels[image] === 1) ? 1 : 0.1;
    });
    const xs = tf.tensor4d(images, [n, 8, 8, 1]);
    const ys = tf.oneHot(tf.tensor1d(labels, 'int32'), 2);
    const optimizer = tf.train.adam(0.02);
    const lossFn = (): tf.Scalar => tf.mean(tf.metrics.categoricalCrossentropy(ys, model.apply(xs) as tf.Tensor));
    const losses: number[] = [];
    let tensorsAfterFirst = 0;
    for (let step = 0; step < 30; step++) {
      const loss = optimizer.minimize(lossFn, true);
      assert.ok(loss);
      losses.push(loss.dataSync()[0]);
      loss.dispose();
      if (step === 0) tensorsAfterFirst = tf.memory().numTensors;
    }
    assert.equal(tf.memory().numTensors, tensorsAfterFirst, 'tensor count must stay flat across steps');
    assert.ok(losses.every(Number.isFinite), `finite losses: ${losses}`);
    assert.ok(losses[losses.length - 1] < 0.5 * losses[0], `loss should fall: ${losses[0]} -> ${losses.at(-1)}`);
    tf.dispose([xs, ys]);
    optimizer.dispose();
    model.dispose();
  });
});
