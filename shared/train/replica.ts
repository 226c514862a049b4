/**
 * A model replica seen as flat buffers: the training step as a library, independent of any transport.
 * - Parameters live in one fixed layout (the trainable variables in model order, each row-major), so gradients,
 *   weights and optimizer state each travel as one Float32Array. The cluster moves exactly these buffers.
 * - Optimizer state layout: [iterations, slot 0 of every parameter..., slot 1 of every parameter...], where the slots
 *   are those tfjs's optimizer keeps (Adam: first and second moments; momentum: accumulation; Adadelta: two).
 * Every tensor op runs inside tf.tidy, so tf.memory().numTensors stays flat across steps.
 */
import * as tf from '@tensorflow/tfjs';
import { LayoutMismatchError } from '../errors.js';
import type { BuiltModel } from './models.js';
import { createOptimizer, setLearningRate, slotsPerVariable, type OptimizerOptions } from './optim.js';

export interface ParamEntry {
  name: string;
  shape: number[];
  offset: number;
  size: number;
}
export interface ParamLayout {
  entries: ParamEntry[];
  size: number;
}

export interface Batch {
  /** n * height * width * channels pixels in [0,1]. */
  images: Float32Array;
  labels: Int32Array;
  n: number;
}

export interface EvalCounts {
  correct: number;
  total: number;
  lossSum: number;
}

function layoutOf(vars: readonly tf.Variable[]): ParamLayout {
  let offset = 0;
  const entries = vars.map((v) => {
    const entry = { name: v.name, shape: v.shape.slice(), offset, size: v.size };
    offset += v.size;
    return entry;
  });
  return { entries, size: offset };
}

export class Replica {
  readonly layout: ParamLayout;
  private readonly vars: tf.Variable[];
  private readonly gradients: Float32Array;
  private optimizer: tf.Optimizer;
  private lr: number;
  private readonly imageShape: number[];

  constructor(
    readonly built: BuiltModel,
    private readonly optimizerOptions: OptimizerOptions,
  ) {
    this.vars = built.logitsModel.trainableWeights.map((w) => (w as unknown as { read(): tf.Variable }).read());
    this.layout = layoutOf(this.vars);
    this.gradients = new Float32Array(this.layout.size);
    this.optimizer = createOptimizer(optimizerOptions);
    this.lr = optimizerOptions.lr;
    this.imageShape = built.logitsModel.inputs[0]!.shape.slice(1) as number[];
  }

  get optimizerStateSize(): number {
    return 1 + slotsPerVariable(this.optimizerOptions) * this.layout.size;
  }

  get learningRate(): number {
    return this.lr;
  }

  setLearningRate(lr: number): void {
    this.lr = lr;
    setLearningRate(this.optimizer, lr);
  }

  private inputs(batch: Batch): { x: tf.Tensor; y: tf.Tensor } {
    const pixels = this.imageShape.reduce((a, b) => a * b, 1);
    const x = tf.tensor(batch.images.subarray(0, batch.n * pixels), [batch.n, ...this.imageShape]);
    const y = tf.oneHot(tf.tensor1d(batch.labels.subarray(0, batch.n), 'int32'), 10);
    return { x, y };
  }

  /**
   * Forward and backward pass of one batch. Returns the mean loss and the flat gradients, in a buffer this replica
   * reuses: it is valid until the next call (copy it to keep it).
   */
  computeGradients(batch: Batch): { loss: number; gradients: Float32Array } {
    const loss = tf.tidy(() => {
      const { x, y } = this.inputs(batch);
      const { value, grads } = tf.variableGrads(
        () =>
          tf.losses.softmaxCrossEntropy(
            y,
            this.built.logitsModel.apply(x, { training: true }) as tf.Tensor,
          ) as tf.Scalar,
        this.vars,
      );
      for (const [i, entry] of this.layout.entries.entries()) {
        this.gradients.set(grads[this.vars[i]!.name]!.dataSync() as Float32Array, entry.offset);
      }
      return value.dataSync()[0]!;
    });
    return { loss, gradients: this.gradients };
  }

  /** Apply a flat gradient buffer (for example the ring-averaged one) with this replica's optimizer. */
  applyGradients(flat: Float32Array): void {
    this.checkLength('gradients', this.layout.size, flat.length);
    tf.tidy(() => {
      const named: tf.NamedTensorMap = {};
      for (const [i, e] of this.layout.entries.entries()) {
        named[this.vars[i]!.name] = tf.tensor(flat.subarray(e.offset, e.offset + e.size), e.shape);
      }
      this.optimizer.applyGradients(named);
    });
  }

  getWeights(out: Float32Array = new Float32Array(this.layout.size)): Float32Array {
    for (const [i, e] of this.layout.entries.entries()) out.set(this.vars[i]!.dataSync() as Float32Array, e.offset);
    return out;
  }

  setWeights(flat: Float32Array): void {
    this.checkLength('weights', this.layout.size, flat.length);
    tf.tidy(() => {
      for (const [i, e] of this.layout.entries.entries()) {
        this.vars[i]!.assign(tf.tensor(flat.subarray(e.offset, e.offset + e.size), e.shape));
      }
    });
  }

  async getOptimizerState(): Promise<Float32Array> {
    const out = new Float32Array(this.optimizerStateSize);
    if (!this.optimizer.iterations) return out; // no step yet: tfjs has not created its slots; all zeros is that state
    const [iterations, ...slots] = await this.optimizer.getWeights();
    out[0] = (await iterations!.tensor.data())[0]!;
    iterations!.tensor.dispose(); // saveIterations() makes a fresh scalar on every call; the slots are the optimizer's own
    const n = this.vars.length;
    for (const [j, slot] of slots.entries()) {
      const entry = this.layout.entries[j % n]!;
      const base = 1 + Math.floor(j / n) * this.layout.size;
      out.set((await slot.tensor.data()) as Float32Array, base + entry.offset);
    }
    return out;
  }

  /**
   * Replace the optimizer with one holding this state. A fresh optimizer is built because tfjs's setWeights leaks
   * the slots it replaces. (Adam recomputes its beta powers as pow(beta, t+1): equal to the running product only to
   * float rounding, so replicas that must stay bitwise identical should all restore from the same state.)
   */
  async setOptimizerState(flat: Float32Array): Promise<void> {
    this.checkLength('optimizer state', this.optimizerStateSize, flat.length);
    const fresh = createOptimizer({ ...this.optimizerOptions, lr: this.lr });
    setLearningRate(fresh, this.lr);
    const slotCount = slotsPerVariable(this.optimizerOptions);
    if (flat[0] !== 0 || slotCount === 0) {
      const named: Array<{ name: string; tensor: tf.Tensor }> = [
        { name: 'iter', tensor: tf.scalar(flat[0]!, 'int32') },
      ];
      for (let k = 0; k < slotCount; k++) {
        for (const [i, e] of this.layout.entries.entries()) {
          const start = 1 + k * this.layout.size + e.offset;
          named.push({
            name: `${this.vars[i]!.name}/slot${k}`,
            tensor: tf.tensor(flat.subarray(start, start + e.size), e.shape),
          });
        }
      }
      await fresh.setWeights(named);
      tf.dispose(named.map((t) => t.tensor));
    }
    this.optimizer.dispose();
    this.optimizer = fresh;
  }

  /** Count correct predictions and sum the cross-entropy over a batch (inference mode: no dropout). */
  evaluate(batch: Batch): EvalCounts {
    return tf.tidy(() => {
      const { x, y } = this.inputs(batch);
      const logits = this.built.logitsModel.apply(x, { training: false }) as tf.Tensor;
      const lossSum = tf.losses.softmaxCrossEntropy(y, logits, undefined, undefined, tf.Reduction.SUM).dataSync()[0]!;
      const correct = tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), tf.argMax(y, 1)), 'int32')).dataSync()[0]!;
      return { correct, total: batch.n, lossSum };
    });
  }

  dispose(): void {
    this.optimizer.dispose();
    this.built.model.dispose();
  }

  private checkLength(what: string, expected: number, actual: number): void {
    if (expected !== actual) throw new LayoutMismatchError(what, expected, actual);
  }
}
