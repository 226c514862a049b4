/**
 * Training kernels for the TensorFlow.js wasm backend.
 *
 * tfjs-backend-wasm 4.22 registers no `Conv2DBackpropFilter` (so no conv net can train on it) and its
 * `Conv2DBackpropInput` is a naive loop, up to 10x slower than the forward pass. Its forward `Conv2D` is XNNPACK with
 * SIMD, so both gradients are rewritten here as forward convolutions of rearranged tensors:
 *
 * - dW[kh,kw,ci,co] = sum over n,oh,ow of xPadded[n, oh*s+kh, ow*s+kw, ci] * dy[n,oh,ow,co]. That is a forward
 *   convolution whose batch is Ci, whose channels are the N images, whose input is x as [Ci,H,W,N] and whose filter
 *   is dy as [Ho,Wo,N,Co] dilated by the stride; its output [Ci,kh,kw,Co] is transposed to [kh,kw,Ci,Co].
 * - dx is the forward convolution of dy (zero-inserted between rows and columns when the stride is > 1, padded by
 *   kernel-1-pad) with the filter flipped in space and with its in/out channels swapped.
 *
 * On the shapes ringtrain trains (bench/bench-conv-grads.ts) this beat the alternatives measured: an im2col matMul
 * (wasm's matMul with a transposed operand is a scalar loop), swapping the roles of x and dy in the filter-gradient
 * convolution, and splitting it into row bands. Only NHWC with dilation 1 is implemented (tfjs-core has no gradient
 * for dilated convolutions); anything else throws KernelUnsupportedError.
 *
 * The depthwise convolution gradients, which wasm lacks as well, are in wasm-depthwise-grads.ts.
 *
 * Profiling whole training steps showed two more wasm kernels dominating once the convolutions were fast, so they are
 * wrapped here as well: BatchMatMul with a transposed operand (every dense-layer gradient) and MaxPoolGrad.
 */
import * as tf from '@tensorflow/tfjs';
// Imported first so that the wasm backend's own kernel registrations happen before ours replace them.
import '@tensorflow/tfjs-backend-wasm';
import { KernelUnsupportedError } from '../errors.js';
import { DEPTHWISE_KERNELS } from './wasm-depthwise-grads.js';
import {
  attrsOf,
  borrow,
  handOff,
  inputOf,
  padOrCrop,
  spreadByStride,
  delegateToWasm,
  type ExplicitPadding,
  wasmKernels,
} from './wasm-kernel-util.js';

type Shape4D = [number, number, number, number];
type Conv2DInfo = tf.backend_util.Conv2DInfo;

/** The attributes tfjs-core passes to both gradient kernels (plus `dilations`, which some callers add). */
export interface ConvGradOptions {
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | ExplicitPadding;
  dataFormat?: 'NHWC' | 'NCHW';
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  dilations?: number | [number, number];
}

const BACKEND = 'wasm';

/** Throws KernelUnsupportedError for what these kernels do not implement, then computes the forward conv geometry. */
function forwardGeometry(kernel: string, xShape: Shape4D, filterShape: Shape4D, opts: ConvGradOptions): Conv2DInfo {
  const dataFormat = opts.dataFormat ?? 'NHWC';
  if (dataFormat !== 'NHWC') {
    throw new KernelUnsupportedError(kernel, `dataFormat '${dataFormat}' is not supported on wasm; use NHWC`);
  }
  const dilations = opts.dilations ?? 1;
  const [dh, dw] = typeof dilations === 'number' ? [dilations, dilations] : dilations;
  if (dh !== 1 || dw !== 1) {
    throw new KernelUnsupportedError(
      kernel,
      `dilations [${dh},${dw}] are not supported; only dilation 1 has a gradient`,
    );
  }
  if (xShape.length !== 4 || filterShape.length !== 4) {
    throw new KernelUnsupportedError(kernel, `expected rank-4 input and filter, got [${xShape}] and [${filterShape}]`);
  }
  if (xShape[3] !== filterShape[2]) {
    throw new KernelUnsupportedError(kernel, `input depth ${xShape[3]} does not match filter depth ${filterShape[2]}`);
  }
  return tf.backend_util.computeConv2DInfo(
    xShape,
    filterShape,
    opts.strides,
    1,
    opts.pad,
    opts.dimRoundingMode,
    false,
    'channelsLast',
  );
}

function checkDyShape(kernel: string, dy: tf.Tensor4D, info: Conv2DInfo): void {
  const [n, h, w, c] = info.outShape;
  const [dn, dh, dw, dc] = dy.shape;
  if (dn !== n || dh !== h || dw !== w || dc !== c) {
    throw new KernelUnsupportedError(
      kernel,
      `dy has shape [${dy.shape}] but the convolution outputs [${info.outShape}]`,
    );
  }
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/**
 * wasm's naive 2D transpose loop (which its Conv2D also runs on every new filter, [K, Co] -> [Co, K]) writes `count`
 * output rows `stride` floats apart per pass. When 4*stride bytes is a multiple of a large power of two, those rows
 * all land in the same few L1 sets and the copy runs ~20x slower (26 ms instead of 1.3 ms for the Keras CNN's
 * [24*24*64, 64] dy). Assuming a common L1 (4 KiB per way, so 64 sets of 64-byte lines, and at least 8 ways), this
 * tells whether such a copy would thrash.
 */
function stridedCopyThrashes(stride: number, count: number): boolean {
  const l1WayBytes = 4096;
  const ways = 8;
  const distinctSets = l1WayBytes / gcd(4 * stride, l1WayBytes);
  return count > distinctSets * ways;
}

/**
 * dW of a 2D convolution as one forward convolution (see the file comment). Pure tensor ops on the active backend, so
 * tests can run it on `cpu` as well. Returns [kh, kw, Ci, Co].
 */
export function conv2dBackpropFilterViaConv(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  filterShape: Shape4D,
  opts: ConvGradOptions,
): tf.Tensor4D {
  const info = forwardGeometry('Conv2DBackpropFilter', x.shape, filterShape, opts);
  checkDyShape('Conv2DBackpropFilter', dy, info);
  const [kh, kw, , co] = filterShape;
  const [n, ho, wo] = dy.shape;
  const { strideHeight: sh, strideWidth: sw } = info;
  const { top, left } = info.padInfo;
  return tf.tidy(() => {
    let xT = tf.transpose(x, [3, 1, 2, 0]); // [Ci, H, W, N]: the images become the channels summed over.
    let dyT = tf.transpose(dy, [1, 2, 0, 3]); // [Ho, Wo, N, Co]: dy becomes the filter.
    if (stridedCopyThrashes(ho * wo * n, co)) {
      // One zero image makes the filter's row length odd-ish, which keeps wasm's filter copy out of cache thrashing.
      xT = tf.pad(xT, [
        [0, 0],
        [0, 0],
        [0, 0],
        [0, 1],
      ]);
      dyT = tf.pad(dyT, [
        [0, 0],
        [0, 0],
        [0, 1],
        [0, 0],
      ]);
    }
    // The padded input must span exactly (Ho-1)*s + k rows so the output is k rows; the rest is cropped.
    const rowsAfter = (ho - 1) * sh + kh - top - x.shape[1];
    const colsAfter = (wo - 1) * sw + kw - left - x.shape[2];
    const { input, pad } = padOrCrop(xT, [top, rowsAfter], [left, colsAfter]);
    const dWT = tf.conv2d(input, dyT, 1, pad, 'NHWC', [sh, sw]); // [Ci, kh, kw, Co]
    return tf.transpose(dWT, [1, 2, 0, 3]);
  });
}

/**
 * dx of a 2D convolution as one forward convolution (see the file comment). Pure tensor ops on the active backend, so
 * tests can run it on `cpu` as well. Returns a tensor of `inputShape`.
 */
export function conv2dBackpropInputViaConv(
  inputShape: Shape4D,
  dy: tf.Tensor4D,
  filter: tf.Tensor4D,
  opts: ConvGradOptions,
): tf.Tensor4D {
  const info = forwardGeometry('Conv2DBackpropInput', inputShape, filter.shape, opts);
  checkDyShape('Conv2DBackpropInput', dy, info);
  const [kh, kw] = filter.shape;
  const [, h, w] = inputShape;
  const [, ho, wo] = dy.shape;
  const { strideHeight: sh, strideWidth: sw } = info;
  const { top, left } = info.padInfo;
  return tf.tidy(() => {
    const spread = spreadByStride(dy, sh, sw);
    // A full correlation needs k-1-pad rows before dy and enough after to produce h output rows; either can come
    // out negative (a crop) when the forward padding is wider than the kernel reaches.
    const rowsBefore = kh - 1 - top;
    const colsBefore = kw - 1 - left;
    const rowsAfter = h + kh - 1 - ho * sh - rowsBefore;
    const colsAfter = w + kw - 1 - wo * sw - colsBefore;
    const { input, pad } = padOrCrop(spread, [rowsBefore, rowsAfter], [colsBefore, colsAfter]);
    const flipped = tf.transpose(tf.reverse(filter, [0, 1]), [0, 1, 3, 2]); // [kh, kw, Co, Ci]
    return tf.conv2d(input, flipped, 1, pad);
  });
}

const backpropFilterKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const kernelBackend = backend as tf.KernelBackend;
  const a = attrsOf<tf.Conv2DBackpropFilterAttrs & { dilations?: number | [number, number] }>(attrs);
  const x = inputOf(tf.Conv2DBackpropFilter, inputs, 'x');
  const dy = inputOf(tf.Conv2DBackpropFilter, inputs, 'dy');
  const result = tf.tidy(() =>
    conv2dBackpropFilterViaConv(
      borrow<tf.Rank.R4>(x, kernelBackend),
      borrow<tf.Rank.R4>(dy, kernelBackend),
      a.filterShape,
      a,
    ),
  );
  return handOff(result, kernelBackend);
};

const backpropInputKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const kernelBackend = backend as tf.KernelBackend;
  const a = attrsOf<tf.Conv2DBackpropInputAttrs & { dilations?: number | [number, number] }>(attrs);
  const dy = inputOf(tf.Conv2DBackpropInput, inputs, 'dy');
  const filter = inputOf(tf.Conv2DBackpropInput, inputs, 'filter');
  const result = tf.tidy(() =>
    conv2dBackpropInputViaConv(
      a.inputShape,
      borrow<tf.Rank.R4>(dy, kernelBackend),
      borrow<tf.Rank.R4>(filter, kernelBackend),
      a,
    ),
  );
  return handOff(result, kernelBackend);
};

/**
 * [rows, cols] -> [cols, rows]. When wasm's 2D transpose loop would thrash (see stridedCopyThrashes), the same
 * permutation is run as a 3D transpose of [2, rows/2, cols], which wasm walks in output order instead.
 */
function transposeMatrix(t: tf.Tensor2D): tf.Tensor2D {
  const [rows, cols] = t.shape;
  if (rows % 2 !== 0 || !stridedCopyThrashes(rows, cols)) return tf.transpose(t);
  return tf.reshape(tf.transpose(tf.reshape(t, [2, rows / 2, cols]), [2, 0, 1]), [cols, rows]);
}

/**
 * op(a)·op(b) for matrices, with every transpose made explicit so that wasm's XNNPACK path runs. XNNPACK packs the
 * right-hand operand afresh for every new tensor, so the product is oriented to make that operand the smaller one:
 * either op(a)·op(b) directly, or (op(b)ᵀ·op(a)ᵀ)ᵀ, where a transposed operand's transpose is free.
 */
function matMulUntransposed(a: tf.Tensor2D, b: tf.Tensor2D, transposeA: boolean, transposeB: boolean): tf.Tensor2D {
  const m = transposeA ? a.shape[1] : a.shape[0];
  const n = transposeB ? b.shape[0] : b.shape[1];
  if (m >= n) {
    return tf.matMul(transposeA ? transposeMatrix(a) : a, transposeB ? transposeMatrix(b) : b);
  }
  const bT = transposeB ? b : transposeMatrix(b);
  const aT = transposeA ? a : transposeMatrix(a);
  return transposeMatrix(tf.matMul(bT, aT));
}

function isMatrixInBatchOfOne(t: tf.TensorInfo): boolean {
  return t.shape.length >= 2 && t.shape.slice(0, -2).every((d) => d === 1);
}

/**
 * wasm's BatchMatMul uses XNNPACK only when neither operand is transposed; with a transpose it falls back to a scalar
 * loop, 10-35x slower. Dense-layer gradients are exactly such products (dy·Wᵀ and xᵀ·dy), so single-matrix
 * products with a transpose are rewritten; everything else goes to wasm's kernel unchanged.
 */
const batchMatMulKernel: tf.KernelFunc = (args) => {
  const { inputs, backend, attrs } = args;
  const a = inputOf(tf.BatchMatMul, inputs, 'a');
  const b = inputOf(tf.BatchMatMul, inputs, 'b');
  const { transposeA, transposeB } = attrsOf<tf.BatchMatMulAttrs>(attrs);
  const rewrite =
    (transposeA || transposeB) &&
    a.dtype === 'float32' &&
    b.dtype === 'float32' &&
    isMatrixInBatchOfOne(a) &&
    isMatrixInBatchOfOne(b);
  if (!rewrite) return delegateToWasm(tf.BatchMatMul, args);
  const kernelBackend = backend as tf.KernelBackend;
  const batchDims = (a.shape.length >= b.shape.length ? a.shape : b.shape).slice(0, -2);
  const result = tf.tidy(() => {
    const a2 = tf.reshape(borrow(a, kernelBackend), a.shape.slice(-2) as [number, number]) as tf.Tensor2D;
    const b2 = tf.reshape(borrow(b, kernelBackend), b.shape.slice(-2) as [number, number]) as tf.Tensor2D;
    const product = matMulUntransposed(a2, b2, transposeA, transposeB);
    return tf.reshape(product, [...batchDims, ...product.shape]);
  });
  return handOff(result, kernelBackend);
};

/**
 * Max-pool gradient for non-overlapping windows (filter == stride, no padding: every max-pooling layer of ringtrain's
 * models), as elementwise ops on free reshapes of x viewed as [N*Ho, kh, Wo, kw, C]. Each window's first maximum in
 * row-major order gets dy, as on tfjs's cpu backend; rows and columns past the last whole window get 0. Each window
 * position carries a priority (kh*kw for the first, down to 1 for the last); a max-pool over the priorities of the
 * positions equal to the window's max picks the first. Pure tensor ops on the active backend.
 */
export function maxPoolGradNonOverlapping(
  dy: tf.Tensor4D,
  x: tf.Tensor4D,
  y: tf.Tensor4D,
  filterSize: [number, number],
): tf.Tensor4D {
  const [kh, kw] = filterSize;
  const [n, h, w, c] = x.shape;
  const [, ho, wo] = y.shape;
  return tf.tidy(() => {
    const whole = ho * kh === h && wo * kw === w ? x : tf.slice(x, [0, 0, 0, 0], [n, ho * kh, wo * kw, c]);
    const windows = tf.reshape(whole, [n * ho, kh, wo, kw, c]);
    const perWindow = (t: tf.Tensor4D): tf.Tensor => tf.reshape(t, [n * ho, 1, wo, 1, c]);
    const priority = tf.tensor(
      Array.from({ length: kh * kw }, (_, i) => kh * kw - i),
      [1, kh, 1, kw, 1],
    );
    // y >= x everywhere, so step(y - x) is 0 exactly where x is its window's max and 1 elsewhere.
    const belowMax = tf.step(tf.sub(perWindow(y), windows));
    const score = tf.sub(priority, tf.mul(priority, belowMax));
    const best = tf.maxPool(
      tf.reshape(score, [n, ho * kh, wo * kw, c]) as tf.Tensor4D,
      filterSize,
      filterSize,
      'valid',
    );
    const isFirstMax = tf.sub(1, tf.step(tf.sub(perWindow(best), score)));
    const dx = tf.reshape(tf.mul(isFirstMax, perWindow(dy)), [n, ho * kh, wo * kw, c]) as tf.Tensor4D;
    return dx.shape[1] === h && dx.shape[2] === w
      ? dx
      : tf.pad(dx, [
          [0, 0],
          [0, h - ho * kh],
          [0, w - wo * kw],
          [0, 0],
        ]);
  });
}

/**
 * wasm's MaxPoolGrad walks NHWC tensors channel-outermost (4x slower than the ops above on the Keras CNN's
 * [64,24,24,64]) and starts each window's max at FLT_MIN, so windows of values <= 0 lose their gradient. Windows that
 * do not overlap and need no padding go through maxPoolGradNonOverlapping; anything else to wasm's kernel.
 */
const maxPoolGradKernel: tf.KernelFunc = (args) => {
  const { inputs, backend, attrs } = args;
  const dy = inputOf(tf.MaxPoolGrad, inputs, 'dy');
  const x = inputOf(tf.MaxPoolGrad, inputs, 'input');
  const y = inputOf(tf.MaxPoolGrad, inputs, 'output');
  const a = attrsOf<tf.MaxPoolGradAttrs>(attrs);
  if (x.shape.length !== 4 || x.dtype !== 'float32') return delegateToWasm(tf.MaxPoolGrad, args);
  const info = tf.backend_util.computePool2DInfo(
    x.shape as Shape4D,
    a.filterSize,
    a.strides,
    1,
    a.pad,
    a.dimRoundingMode,
  );
  const { top, bottom, left, right } = info.padInfo;
  const nonOverlapping = info.filterHeight === info.strideHeight && info.filterWidth === info.strideWidth;
  // A rounding mode of 'ceil' can make the last window run past the input even without padding.
  const windowsInside =
    info.outHeight * info.filterHeight <= x.shape[1] && info.outWidth * info.filterWidth <= x.shape[2];
  if (!nonOverlapping || !windowsInside || top + bottom + left + right !== 0)
    return delegateToWasm(tf.MaxPoolGrad, args);
  const kernelBackend = backend as tf.KernelBackend;
  const result = tf.tidy(() =>
    maxPoolGradNonOverlapping(
      borrow<tf.Rank.R4>(dy, kernelBackend),
      borrow<tf.Rank.R4>(x, kernelBackend),
      borrow<tf.Rank.R4>(y, kernelBackend),
      [info.filterHeight, info.filterWidth],
    ),
  );
  return handOff(result, kernelBackend);
};

interface OwnKernel {
  kernelFunc: tf.KernelFunc;
  /** Whether it hands some cases to wasm's kernel of the same name (so it is only registered where that exists). */
  wraps: boolean;
}

const OWN_KERNELS: ReadonlyMap<string, OwnKernel> = new Map([
  [tf.Conv2DBackpropFilter, { kernelFunc: backpropFilterKernel, wraps: false }],
  [tf.Conv2DBackpropInput, { kernelFunc: backpropInputKernel, wraps: false }],
  [tf.BatchMatMul, { kernelFunc: batchMatMulKernel, wraps: true }],
  [tf.MaxPoolGrad, { kernelFunc: maxPoolGradKernel, wraps: true }],
  ...DEPTHWISE_KERNELS.map(({ name, kernelFunc, wraps }): [string, OwnKernel] => [name, { kernelFunc, wraps }]),
]);

/**
 * Registers ringtrain's wasm training kernels: Conv2DBackpropFilter and both depthwise gradients (wasm has none),
 * Conv2DBackpropInput (replacing wasm's slow one), plus BatchMatMul and MaxPoolGrad, which wrap wasm's own and speed up the cases that
 * training hits. Call it after importing the wasm backend, before or after `tf.setBackend('wasm')`. Idempotent:
 * kernels already registered by this function are left alone.
 */
export function registerWasmConvGradients(): void {
  for (const [kernelName, { kernelFunc, wraps }] of OWN_KERNELS) {
    const current = tf.getKernel(kernelName, BACKEND);
    if (current?.kernelFunc === kernelFunc) continue;
    if (wraps) {
      if (current === undefined) continue; // Never stand in for a kernel there is nothing to delegate to.
      wasmKernels.set(kernelName, current.kernelFunc);
    }
    if (current) tf.unregisterKernel(kernelName, BACKEND);
    // A wrapping kernel keeps wasm's setup (binding its C++ entry point), which runs when the backend initialises.
    tf.registerKernel({ ...(wraps ? current : {}), kernelName, backendName: BACKEND, kernelFunc });
  }
}
