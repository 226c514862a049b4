/** The top classes of single images under a saved model (`ringtrain predict`). */
import * as tf from '@tensorflow/tfjs';

export interface ClassScore {
  index: number;
  name: string;
  probability: number;
}

/** `pixels`: one uint8 HWC image of the model's input shape; returns the `k` most likely classes, best first. */
export function topClasses(
  model: tf.LayersModel,
  pixels: Uint8Array,
  shape: readonly number[],
  classNames: readonly string[],
  k = 3,
): ClassScore[] {
  const probs = tf.tidy(() => {
    const x = tf.div(tf.tensor(pixels, [1, ...shape], 'float32'), 255);
    return (model.predict(x) as tf.Tensor).dataSync() as Float32Array;
  });
  return Array.from(probs, (probability, index) => ({ index, name: classNames[index] ?? String(index), probability }))
    .sort((a, b) => b.probability - a.probability)
    .slice(0, Math.max(1, k));
}
