/**
 * Depthwise convolution gradients for the TensorFlow.js wasm backend, which registers neither
 * `DepthwiseConv2dNativeBackpropInput` nor `DepthwiseConv2dNativeBackpropFilter` (so no DepthwiseConv2D or
 * SeparableConv2D layer can train on it). As for the regular convolution (wasm-conv-grads.ts), both are rewritten as
 * forward depthwise convolutions, which wasm runs with XNNPACK. For a filter [kh, kw, C, M] (M = depth multiplier):
 *
 * - dx[n,h,w,c] = sum over m of the full correlation of dy's channel c*M+m with filter[:,:,c,m] flipped in space: a
 *   depthwise convolution (multiplier 1) of the stride-spread, padded dy over the C*M channels, summed over M.
 * - dW[kh,kw,c,m] = sum over n,oh,ow of xPadded[n, oh*s+kh, ow*s+kw, c] * dy[n,oh,ow,c*M+m]: a depthwise
 *   convolution of one image whose C*N channels are x's (channel, image) pairs, by a filter that is dy as
 *   [Ho, Wo, C*N, M] dilated by the stride; its [1, kh, kw, C*N*M] output, summed over N, is dW.
 *
 * Only NHWC with dilation 1 is implemented (tfjs-core has no gradient for dilated depthwise convolutions).
 *
 * wasm's forward DepthwiseConv2dNative itself goes wrong when the two strides differ (a wrong output for [1, 2], a
 * heap overrun for [2, 1], in tfjs-backend-wasm 4.22), so that case is computed at stride 1 and subsampled.
 */
import * as tf from '@tensorflow/tfjs';
import { KernelUnsupportedError } from '../errors.js';
import { attrsOf, borrow, delegateToWasm, handOff, inputOf, padOrCrop, spreadByStride } from './wasm-kernel-util.js';

type Shape4D = [number, number, number, number];
type Conv2DInfo = tf.backend_util.Conv2DInfo;

/** The attributes tfjs-core passes to both depthwise gradient kernels. */
export interface DepthwiseGradOptions {
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dilations?: number | [number, number];
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

function geometry(kernel: string, xShape: Shape4D, filterShape: Shape4D, opts: DepthwiseGradOptions): Conv2DInfo {
  const dilations = opts.dilations ?? 1;
  const [dh, dw] = typeof dilations === 'number' ? [dilations, dilations] : dilations;
  if (dh !== 1 || dw !== 1)
    throw new KernelUnsupportedError(
      kernel,
      `dilations [${dh},${dw}] are not supported; only dilation 1 has a gradient`,
    );
  if (xShape.length !== 4 || filterShape.length !== 4)
    throw new KernelUnsupportedError(kernel, `expected rank-4 input and filter, got [${xShape}] and [${filterShape}]`);
  if (xShape[3] !== filterShape[2])
    throw new KernelUnsupportedError(kernel, `input depth ${xShape[3]} does not match filter depth ${filterShape[2]}`);
  return tf.backend_util.computeConv2DInfo(
    xShape,
    filterShape,
    opts.strides,
    1,
    opts.pad,
    opts.dimRoundingMode,
    true,
    'channelsLast',
  );
}

function checkDy(kernel: string, dy: tf.Tensor4D, info: Conv2DInfo): void {
  if (dy.shape.some((d, i) => d !== info.outShape[i]))
    throw new KernelUnsupportedError(
      kernel,
      `dy has shape [${dy.shape}] but the convolution outputs [${info.outShape}]`,
    );
}

/** dx of a depthwise convolution (see the file comment); pure tensor ops on the active backend. */
export function depthwiseBackpropInputViaConv(
  inputShape: Shape4D,
  dy: tf.Tensor4D,
  filter: tf.Tensor4D,
  opts: DepthwiseGradOptions,
): tf.Tensor4D {
  const info = geometry('DepthwiseConv2dNativeBackpropInput', inputShape, filter.shape, opts);
  checkDy('DepthwiseConv2dNativeBackpropInput', dy, info);
  const [kh, kw, c, m] = filter.shape;
  const [n, h, w] = inputShape;
  const [, ho, wo] = dy.shape;
  const { strideHeight: sh, strideWidth: sw } = info;
  const { top, left } = info.padInfo;
  return tf.tidy(() => {
    const spread = spreadByStride(dy, sh, sw);
    const rowsBefore = kh - 1 - top;
    const colsBefore = kw - 1 - left;
    const rowsAfter = h + kh - 1 - ho * sh - rowsBefore;
    const colsAfter = w + kw - 1 - wo * sw - colsBefore;
    const { input, pad } = padOrCrop(spread, [rowsBefore, rowsAfter], [colsBefore, colsAfter]);
    const flipped = tf.reshape(tf.reverse(filter, [0, 1]), [kh, kw, c * m, 1]) as tf.Tensor4D;
    const perChannel = tf.depthwiseConv2d(input, flipped, 1, pad); // [N, H, W, C*M]
    return m === 1 ? perChannel : (tf.sum(tf.reshape(perChannel, [n, h, w, c, m]), 4) as tf.Tensor4D);
  });
}

/** dW of a depthwise convolution (see the file comment); pure tensor ops on the active backend. */
export function depthwiseBackpropFilterViaConv(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  filterShape: Shape4D,
  opts: DepthwiseGradOptions,
): tf.Tensor4D {
  const info = geometry('DepthwiseConv2dNativeBackpropFilter', x.shape, filterShape, opts);
  checkDy('DepthwiseConv2dNativeBackpropFilter', dy, info);
  const [kh, kw, c, m] = filterShape;
  const [n, h, w] = x.shape;
  const [, ho, wo] = dy.shape;
  const { strideHeight: sh, strideWidth: sw } = info;
  const { top, left } = info.padInfo;
  return tf.tidy(() => {
    // x as one image of C*N channels, channel c*N + i holding image i's channel c.
    const xT = tf.reshape(tf.transpose(x, [1, 2, 3, 0]), [1, h, w, c * n]) as tf.Tensor4D;
    // dy as the filter: [Ho, Wo, C*N, M], pairing each (c, i) channel with image i's M outputs of channel c.
    const dyT = tf.reshape(tf.transpose(tf.reshape(dy, [n, ho, wo, c, m]), [1, 2, 3, 0, 4]), [ho, wo, c * n, m]);
    const rowsAfter = (ho - 1) * sh + kh - top - h;
    const colsAfter = (wo - 1) * sw + kw - left - w;
    const { input, pad } = padOrCrop(xT, [top, rowsAfter], [left, colsAfter]);
    const out = tf.depthwiseConv2d(input, dyT as tf.Tensor4D, 1, pad, 'NHWC', [sh, sw]); // [1, kh, kw, C*N*M]
    return tf.sum(tf.reshape(out, [kh, kw, c, n, m]), 3) as tf.Tensor4D;
  });
}

const backpropInputKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const kernelBackend = backend as tf.KernelBackend;
  const a = attrsOf<DepthwiseGradOptions & { inputShape: Shape4D }>(attrs);
  const dy = inputOf(tf.DepthwiseConv2dNativeBackpropInput, inputs, 'dy');
  const filter = inputOf(tf.DepthwiseConv2dNativeBackpropInput, inputs, 'filter');
  const result = tf.tidy(() =>
    depthwiseBackpropInputViaConv(
      a.inputShape,
      borrow<tf.Rank.R4>(dy, kernelBackend),
      borrow<tf.Rank.R4>(filter, kernelBackend),
      a,
    ),
  );
  return handOff(result, kernelBackend);
};

const backpropFilterKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const kernelBackend = backend as tf.KernelBackend;
  const a = attrsOf<DepthwiseGradOptions & { filterShape: Shape4D }>(attrs);
  const x = inputOf(tf.DepthwiseConv2dNativeBackpropFilter, inputs, 'x');
  const dy = inputOf(tf.DepthwiseConv2dNativeBackpropFilter, inputs, 'dy');
  const result = tf.tidy(() =>
    depthwiseBackpropFilterViaConv(
      borrow<tf.Rank.R4>(x, kernelBackend),
      borrow<tf.Rank.R4>(dy, kernelBackend),
      a.filterShape,
      a,
    ),
  );
  return handOff(result, kernelBackend);
};

const pair = (v: number | [number, number] | null | undefined): [number, number] =>
  v === undefined || v === null ? [1, 1] : typeof v === 'number' ? [v, v] : v;

/** A depthwise convolution with unequal strides, as a stride-1 one (same padding) subsampled by the strides. */
function depthwiseUnequalStrides(x: tf.Tensor4D, filter: tf.Tensor4D, opts: DepthwiseGradOptions): tf.Tensor4D {
  const info = tf.backend_util.computeConv2DInfo(
    x.shape,
    filter.shape as Shape4D,
    opts.strides,
    opts.dilations ?? 1,
    opts.pad,
    opts.dimRoundingMode,
    true,
  );
  const { top, bottom, left, right } = info.padInfo;
  const pad: tf.backend_util.ExplicitPadding = [
    [0, 0],
    [top, bottom],
    [left, right],
    [0, 0],
  ];
  return tf.tidy(() => {
    const full = tf.depthwiseConv2d(x, filter, 1, pad, 'NHWC', opts.dilations ?? 1);
    const [n, , , c] = full.shape;
    const end = [n, (info.outHeight - 1) * info.strideHeight + 1, (info.outWidth - 1) * info.strideWidth + 1, c];
    return tf.stridedSlice(full, [0, 0, 0, 0], end, [1, info.strideHeight, info.strideWidth, 1]) as tf.Tensor4D;
  });
}

const forwardKernel: tf.KernelFunc = (args) => {
  const { inputs, backend, attrs } = args;
  const a = attrsOf<DepthwiseGradOptions & { dataFormat?: string }>(attrs);
  const [sh, sw] = pair(a.strides);
  const [dh, dw] = pair(a.dilations);
  if (sh === sw || dh !== dw || (a.dataFormat ?? 'NHWC') !== 'NHWC')
    return delegateToWasm(tf.DepthwiseConv2dNative, args);
  const kernelBackend = backend as tf.KernelBackend;
  const x = inputOf(tf.DepthwiseConv2dNative, inputs, 'x');
  const filter = inputOf(tf.DepthwiseConv2dNative, inputs, 'filter');
  const result = tf.tidy(() =>
    depthwiseUnequalStrides(borrow<tf.Rank.R4>(x, kernelBackend), borrow<tf.Rank.R4>(filter, kernelBackend), a),
  );
  return handOff(result, kernelBackend);
};

export interface DepthwiseKernel {
  name: string;
  kernelFunc: tf.KernelFunc;
  /** Hands some cases to wasm's kernel of the same name. */
  wraps: boolean;
}

/** The kernels wasm lacks (both gradients) or gets wrong (unequal strides), for registerWasmConvGradients. */
export const DEPTHWISE_KERNELS: readonly DepthwiseKernel[] = [
  { name: tf.DepthwiseConv2dNativeBackpropInput, kernelFunc: backpropInputKernel, wraps: false },
  { name: tf.DepthwiseConv2dNativeBackpropFilter, kernelFunc: backpropFilterKernel, wraps: false },
  { name: tf.DepthwiseConv2dNative, kernelFunc: forwardKernel, wraps: true },
];
