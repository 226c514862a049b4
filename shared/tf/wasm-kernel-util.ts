/**
 * Helpers shared by ringtrain's wasm training kernels (wasm-conv-grads.ts, wasm-depthwise-grads.ts): the padding
 * arithmetic of convolutions rewritten as other convolutions, and the reference juggling of a kernel that computes
 * its output with tensor ops.
 */
import * as tf from '@tensorflow/tfjs';
import { KernelUnsupportedError } from '../errors.js';

export type ExplicitPadding = tf.backend_util.ExplicitPadding;

/** Rows (or columns) to add before and after one spatial axis; a negative amount crops instead. */
export type Margins = [before: number, after: number];

/**
 * Prepares `t` ([B,H,W,C]) for a convolution that needs `rows`/`cols` extra pixels around it: positive margins become
 * the convolution's own explicit padding (XNNPACK pads for free, no copy), negative ones crop `t` with a slice.
 */
export function padOrCrop(t: tf.Tensor4D, rows: Margins, cols: Margins): { input: tf.Tensor4D; pad: ExplicitPadding } {
  const cropTop = Math.max(0, -rows[0]);
  const cropBottom = Math.max(0, -rows[1]);
  const cropLeft = Math.max(0, -cols[0]);
  const cropRight = Math.max(0, -cols[1]);
  let input = t;
  if (cropTop + cropBottom + cropLeft + cropRight > 0) {
    const [b, h, w, c] = t.shape;
    input = tf.slice(t, [0, cropTop, cropLeft, 0], [b, h - cropTop - cropBottom, w - cropLeft - cropRight, c]);
  }
  const pad: ExplicitPadding = [
    [0, 0],
    [Math.max(0, rows[0]), Math.max(0, rows[1])],
    [Math.max(0, cols[0]), Math.max(0, cols[1])],
    [0, 0],
  ];
  return { input, pad };
}

/**
 * Spreads dy's pixels `stride` apart ([N, (Ho-1)*sh + sh, (Wo-1)*sw + sw, C], zeros between and after them): the
 * transposed convolution of a strided one is a stride-1 convolution over this. The sh-1 / sw-1 trailing zero rows and
 * columns are left for the caller to fold into its crop.
 */
export function spreadByStride(dy: tf.Tensor4D, sh: number, sw: number): tf.Tensor4D {
  if (sh === 1 && sw === 1) return dy;
  const [n, ho, wo, c] = dy.shape;
  const spaced = tf.pad(tf.reshape(dy, [n, ho, 1, wo, 1, c]), [
    [0, 0],
    [0, 0],
    [0, sh - 1],
    [0, 0],
    [0, sw - 1],
    [0, 0],
  ]);
  return tf.reshape(spaced, [n, ho * sh, wo * sw, c]);
}

/** Wraps a kernel input as a Tensor that owns one extra backend reference, so disposing it leaves the input intact. */
export function borrow<R extends tf.Rank>(info: tf.TensorInfo, backend: tf.KernelBackend): tf.Tensor<R> {
  backend.incRef(info.dataId);
  return tf.engine().makeTensorFromTensorInfo(info) as tf.Tensor<R>;
}

/**
 * Hands a tensor computed inside a kernel to the engine as the kernel's output: the engine wraps the returned
 * TensorInfo in its own Tensor, so ours is disposed and its backend reference passed on.
 */
export function handOff(result: tf.Tensor, backend: tf.KernelBackend): tf.TensorInfo {
  backend.incRef(result.dataId);
  const out: tf.TensorInfo = { dataId: result.dataId, shape: result.shape, dtype: result.dtype };
  result.dispose();
  return out;
}

export function inputOf(kernel: string, inputs: tf.NamedTensorInfoMap, name: string): tf.TensorInfo {
  const info = inputs[name];
  if (info === undefined) throw new KernelUnsupportedError(kernel, `called without its '${name}' input`);
  return info;
}

export function attrsOf<T>(attrs: tf.NamedAttrMap | undefined): T {
  return (attrs ?? {}) as unknown as T;
}

/** wasm's own kernels that ours wrap, captured at registration; ours hand them the cases they leave alone. */
export const wasmKernels = new Map<string, tf.KernelFunc>();

export function delegateToWasm(
  kernelName: string,
  args: Parameters<tf.KernelFunc>[0],
): tf.TensorInfo | tf.TensorInfo[] {
  const original = wasmKernels.get(kernelName);
  if (original === undefined)
    throw new KernelUnsupportedError(kernelName, 'wasm has no kernel of its own to fall back to');
  return original(args);
}
