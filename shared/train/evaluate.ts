/**
 * Evaluation of a saved model (`ringtrain evaluate`): test accuracy, mean cross-entropy, per-class accuracy and the
 * confusion matrix, computed batch by batch on the model's probabilities.
 */
import * as tf from '@tensorflow/tfjs';
import { formatShape, type DataSplit } from '../data/dataset.js';
import { ModelInvalidError } from '../errors.js';
import { BatchLoader } from './batches.js';

export interface ClassResult {
  index: number;
  name: string;
  /** Test samples of this class. */
  count: number;
  /** Of those, predicted correctly. */
  correct: number;
  accuracy: number;
}

export interface EvaluationSummary {
  testAccuracy: number;
  /** Mean cross-entropy of the predicted probabilities (clipped at 1e-7). */
  testLoss: number;
  samples: number;
  perClass: ClassResult[];
  /** confusion[actual][predicted] = samples. */
  confusion: number[][];
}

/** Throws ModelInvalidError when the model does not take this split's samples or has other classes. */
export function checkModelFits(model: tf.LayersModel, split: DataSplit, numClasses: number, source: string): void {
  const input = model.inputs[0]!.shape.slice(1);
  if (input.some((d, i) => d !== null && d !== split.shape[i]))
    throw new ModelInvalidError(
      source,
      `takes ${input.join('x')} inputs but the data's samples are ${formatShape(split.shape)}`,
    );
  const classes = model.outputs[0]!.shape[1];
  if (classes !== numClasses)
    throw new ModelInvalidError(source, `predicts ${classes} classes but the data has ${numClasses}`);
}

function summarise(confusion: number[][], lossSum: number, classNames: string[]): EvaluationSummary {
  const perClass = confusion.map((row, index) => {
    const count = row.reduce((a, b) => a + b, 0);
    const correct = row[index]!;
    return { index, name: classNames[index] ?? String(index), count, correct, accuracy: count ? correct / count : 0 };
  });
  const samples = perClass.reduce((a, c) => a + c.count, 0);
  const correct = perClass.reduce((a, c) => a + c.correct, 0);
  return {
    testAccuracy: samples ? correct / samples : 0,
    testLoss: samples ? lossSum / samples : 0,
    samples,
    perClass,
    confusion,
  };
}

/** Evaluate a probabilities model on every sample of `split`. */
export function evaluateModel(
  model: tf.LayersModel,
  split: DataSplit,
  classNames: string[],
  batchSize = 500,
): EvaluationSummary {
  const numClasses = model.outputs[0]!.shape[1] as number;
  const confusion = Array.from({ length: numClasses }, () => new Array<number>(numClasses).fill(0));
  const loader = new BatchLoader(split, batchSize);
  const indices = new Uint32Array(batchSize);
  let lossSum = 0;
  for (let first = 0; first < split.count; first += batchSize) {
    const n = Math.min(batchSize, split.count - first);
    for (let i = 0; i < n; i++) indices[i] = first + i;
    const batch = loader.load(indices.subarray(0, n));
    const { predicted, loss } = tf.tidy(() => {
      const x = tf.tensor(batch.images.subarray(0, n * (batch.images.length / batchSize)), [n, ...split.shape]);
      const probs = model.predict(x) as tf.Tensor2D;
      const y = tf.oneHot(tf.tensor1d(batch.labels.subarray(0, n), 'int32'), numClasses);
      const nll = tf.neg(tf.sum(tf.mul(y, tf.log(tf.clipByValue(probs, 1e-7, 1))), 1));
      return { predicted: tf.argMax(probs, 1).dataSync(), loss: tf.sum(nll).dataSync()[0]! };
    });
    lossSum += loss;
    for (let i = 0; i < n; i++) confusion[batch.labels[i]!]![predicted[i]!]!++;
  }
  return summarise(confusion, lossSum, classNames);
}
