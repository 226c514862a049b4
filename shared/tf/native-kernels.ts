/**
 * tfjs-node kernels that ringtrain replaces on the `tensorflow` backend because they cost a training step dearly,
 * with the same values.
 *
 * Step: ReLU's gradient is dy * step(x), and tfjs-node builds step from six full-size ops (isNaN, greater, ones, fill,
 * where, select): in a LeNet-5 step on one thread that was the largest kernel, more than either convolution. For
 * alpha 0 (the only alpha tfjs's own gradients use) step(x) is sign(relu(x)) here: two ops, 1 where x > 0 and 0
 * elsewhere, as before. Other alphas and dtypes keep tfjs-node's kernel.
 */
import * as tf from '@tensorflow/tfjs';
import type { NativeBackend } from './native-binding.js';

/** tfjs-node's helper for an op's dtype attribute. */
export type TypeAttr = (attrName: string, dtype: tf.DataType) => unknown;

let registered = false;

export function registerNativeKernels(typeAttr: TypeAttr): void {
  const original = tf.getKernel('Step', 'tensorflow');
  if (registered || !original) return;
  registered = true;
  tf.unregisterKernel('Step', 'tensorflow');
  tf.registerKernel({
    kernelName: 'Step',
    backendName: 'tensorflow',
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      if ((args.attrs as { alpha?: number }).alpha !== 0 || x.dtype !== 'float32') return original.kernelFunc(args);
      const backend = args.backend as unknown as NativeBackend;
      const attrs = [typeAttr('T', x.dtype)];
      return tf.tidy(() =>
        backend.executeSingleOutput('Sign', attrs, [backend.executeSingleOutput('Relu', attrs, [x])]),
      );
    },
  });
}
