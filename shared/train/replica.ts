/**
 * A model replica seen as flat buffers: the training step as a library, independent of any transport.
 * - Weights live in one fixed layout: the trainable variables in model order, then the non-trainable ones (the
 *   state a layer updates itself, such as BatchNormalization's moving mean and variance), each row-major. Weights,
 *   updates and optimizer state each travel as one Float32Array; the cluster moves exactly these buffers.
 * - A step's update buffer has the same layout: the gradients, then how the forward pass changed each state variable.
 *   computeGradients puts the state back as it was, so a replica changes only in applyGradients; averaging the
 *   update across replicas (the same fused allreduce as the gradients) keeps the state identical on all of them.
 * - The optimizer runs on the flat buffers in JavaScript (flat-optim.ts), the same code on every backend; the replica
 *   keeps the weights as one buffer and writes them into its variables after each update. Optimizer state layout:
 *   [iterations, slot 0 of every parameter..., slot 1 of every parameter...] (Adam: first and second moments;
 *   momentum: accumulation; Adadelta: two).
 * Every tensor op runs inside tf.tidy, so tf.memory().numTensors stays flat across steps.
 */
import * as tf from '@tensorflow/tfjs';
import type { Logger } from 'pino';
import { LayoutMismatchError } from '../errors.js';
import type { BuiltModel } from './models.js';
import { FlatOptimizer } from './flat-optim.js';
import type { OptimizerOptions } from './optim.js';
import { activeNativeBackend } from '../tf/native-binding.js';
import { StepCompiler, type CompileOutcome, type StepTensors } from './step-compiler.js';

export interface ReplicaOptions {
  /**
   * On the tensorflow backend, compute gradients with one compiled graph per batch size (step-compiler.ts) where
   * the model allows it; default true.
   */
  compileStep?: boolean;
  /** Told once per batch size whether its step was compiled, and why not. */
  onCompile?: (outcome: CompileOutcome) => void;
}

/** The replica options of `--step-graph`, logging each batch size's outcome once. */
export function replicaOptions(stepGraph: 'auto' | 'off' | undefined, log: Logger): ReplicaOptions {
  return {
    compileStep: stepGraph !== 'off',
    onCompile: (o) => {
      if (o.compiled)
        log.info({ batchSize: o.batchSize, ops: o.ops }, 'training step compiled into one TensorFlow graph');
      else log.info({ batchSize: o.batchSize, reason: o.reason }, 'training step runs op by op');
    },
  };
}

export interface ParamEntry {
  name: string;
  shape: number[];
  offset: number;
  size: number;
  /** False for state a layer updates itself (moving statistics), which the optimizer never touches. */
  trainable: boolean;
}
export interface ParamLayout {
  /** Trainable entries first, then the state. */
  entries: ParamEntry[];
  /** Every weight: the length of the weights and update buffers. */
  size: number;
  /** The trainable prefix: what the optimizer's slots cover. */
  trainableSize: number;
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

function layoutOf(vars: readonly tf.Variable[], state: readonly tf.Variable[]): ParamLayout {
  let offset = 0;
  let trainableSize = 0;
  const entries = [...vars, ...state].map((v, i) => {
    const entry = { name: v.name, shape: v.shape.slice(), offset, size: v.size, trainable: i < vars.length };
    offset += v.size;
    if (entry.trainable) trainableSize = offset;
    return entry;
  });
  return { entries, size: offset, trainableSize };
}

function variablesOf(weights: readonly tf.LayerVariable[]): tf.Variable[] {
  return weights.map((w) => (w as unknown as { read(): tf.Variable }).read());
}

export class Replica {
  readonly layout: ParamLayout;
  private readonly model: BuiltModel;
  /** Trainable variables, in layout order. */
  private readonly vars: tf.Variable[];
  /** Non-trainable variables (layer state), in layout order after the trainable ones. */
  private readonly stateVars: tf.Variable[];
  private readonly gradients: Float32Array;
  /** Every weight in layout order: what the variables hold (they change only through this replica). */
  private readonly weights: Float32Array;
  private readonly optimizer: FlatOptimizer;
  private lr: number;
  private readonly imageShape: number[];
  readonly numClasses: number;
  private readonly compiler: StepCompiler | undefined;
  /** The weights buffer changed since the variables were last written (a compiled step reads the buffer itself). */
  private variablesStale = false;

  constructor(built: BuiltModel, optimizerOptions: OptimizerOptions, options: ReplicaOptions = {}) {
    this.model = built;
    this.vars = variablesOf(built.logitsModel.trainableWeights);
    this.stateVars = variablesOf(built.logitsModel.nonTrainableWeights);
    this.layout = layoutOf(this.vars, this.stateVars);
    this.gradients = new Float32Array(this.layout.size);
    this.weights = new Float32Array(this.layout.size);
    for (const [i, v] of this.allVars().entries()) this.weights.set(v.dataSync() as Float32Array, this.entry(i).offset);
    this.optimizer = new FlatOptimizer(optimizerOptions, this.layout.trainableSize);
    this.lr = optimizerOptions.lr;
    this.imageShape = built.logitsModel.inputs[0]!.shape.slice(1) as number[];
    this.numClasses = built.logitsModel.outputs[0]!.shape[1] as number;
    this.compiler = this.compilerFor(options);
  }

  private compilerFor(options: ReplicaOptions): StepCompiler | undefined {
    const backend = activeNativeBackend();
    if (!backend || options.compileStep === false) return undefined;
    return new StepCompiler(backend, this.layout.entries, this.imageShape, options.onCompile);
  }

  /** The model, its variables holding the replica's weights. */
  get built(): BuiltModel {
    this.syncVariables();
    return this.model;
  }

  get optimizerStateSize(): number {
    return this.optimizer.state.length;
  }

  /** Number of weights of layer state (BatchNormalization statistics) at the end of the layout. */
  get stateSize(): number {
    return this.layout.size - this.layout.trainableSize;
  }

  private entry(i: number): ParamEntry {
    return this.layout.entries[i]!;
  }

  get learningRate(): number {
    return this.lr;
  }

  setLearningRate(lr: number): void {
    this.lr = lr;
  }

  private inputs(batch: Batch): { x: tf.Tensor; labels: tf.Tensor; y: tf.Tensor } {
    const pixels = this.imageShape.reduce((a, b) => a * b, 1);
    const x = tf.tensor(batch.images.subarray(0, batch.n * pixels), [batch.n, ...this.imageShape]);
    const labels = tf.tensor1d(batch.labels.subarray(0, batch.n), 'int32');
    return { x, labels, y: tf.oneHot(labels, this.numClasses) };
  }

  /** The eager step's tensors: forward pass, loss and gradients, and the layer state before and after. */
  private stepTensors(batch: Batch): StepTensors {
    const stateBefore = this.stateVars.map((v) => v.clone()); // the same data: the values the step reads
    const { x, labels, y } = this.inputs(batch);
    const { value, grads } = tf.variableGrads(
      () =>
        tf.losses.softmaxCrossEntropy(y, this.model.logitsModel.apply(x, { training: true }) as tf.Tensor) as tf.Scalar,
      this.vars,
    );
    return {
      images: x,
      labels,
      weights: [...this.vars, ...stateBefore],
      loss: value,
      gradients: this.vars.map((v) => grads[v.name]!),
      stateAfter: this.stateVars.map((v) => v.clone()),
    };
  }

  /**
   * Forward and backward pass of one batch. Returns the mean loss and the flat update (gradients, then the change
   * of every state variable), in a buffer this replica reuses: it is valid until the next call (copy it to keep it).
   */
  computeGradients(batch: Batch): { loss: number; gradients: Float32Array } {
    const compiled = this.compiler?.compiled(batch.n);
    if (compiled) {
      try {
        return {
          loss: compiled.run(batch.images, batch.labels, this.weights, this.gradients),
          gradients: this.gradients,
        };
      } catch (err) {
        // The weights are untouched: this step, and every later one of this size, runs op by op instead.
        this.compiler!.demote(batch.n, `the compiled step failed: ${(err as Error).message}`);
      }
    }
    this.syncVariables();
    const loss = this.eagerGradients(batch);
    this.compiler?.settle(batch.n, batch, this.weights, this.gradients);
    return { loss, gradients: this.gradients };
  }

  private eagerGradients(batch: Batch): number {
    return tf.tidy(() => {
      const step = this.compiler
        ? this.compiler.eager(batch.n, () => this.stepTensors(batch))
        : this.stepTensors(batch);
      for (const [i, g] of step.gradients.entries()) {
        this.gradients.set(g.dataSync() as Float32Array, this.entry(i).offset);
      }
      const n = this.vars.length;
      for (const [j, v] of this.stateVars.entries()) {
        const before = step.weights[n + j]!;
        this.gradients.set(tf.sub(step.stateAfter[j]!, before).dataSync() as Float32Array, this.entry(n + j).offset);
        v.assign(before); // the forward pass updated it in place; the averaged update is applied instead
      }
      return step.loss.dataSync()[0]!;
    });
  }

  /**
   * Apply a flat update buffer (for example the ring-averaged one): the gradients with this replica's optimizer, the
   * state changes by adding them (a float32 add, as the variables' own would be).
   */
  applyGradients(flat: Float32Array): void {
    this.checkLength('gradients', this.layout.size, flat.length);
    const trainable = this.layout.trainableSize;
    this.optimizer.step(this.weights, flat, this.lr);
    for (let i = trainable; i < this.layout.size; i++) this.weights[i] = this.weights[i]! + flat[i]!;
    if (this.compiler) this.variablesStale = true;
    else this.writeVariables();
  }

  private syncVariables(): void {
    if (this.variablesStale) this.writeVariables();
  }

  /** Copy the weights buffer into the variables. */
  private writeVariables(): void {
    this.variablesStale = false;
    tf.tidy(() => {
      for (const [i, v] of this.allVars().entries()) v.assign(this.slice(this.weights, i));
    });
  }

  private slice(flat: Float32Array, i: number): tf.Tensor {
    const e = this.entry(i);
    return tf.tensor(flat.subarray(e.offset, e.offset + e.size), e.shape);
  }

  private allVars(): tf.Variable[] {
    return [...this.vars, ...this.stateVars];
  }

  /** Every weight, trainable and state, in layout order. */
  getWeights(out: Float32Array = new Float32Array(this.layout.size)): Float32Array {
    out.set(this.weights);
    return out;
  }

  setWeights(flat: Float32Array): void {
    this.checkLength('weights', this.layout.size, flat.length);
    this.weights.set(flat);
    this.writeVariables();
  }

  /** A copy of the optimizer state ([iterations, slots...]); async for the callers that once awaited tfjs. */
  async getOptimizerState(): Promise<Float32Array> {
    return this.optimizer.state.slice();
  }

  async setOptimizerState(flat: Float32Array): Promise<void> {
    this.checkLength('optimizer state', this.optimizerStateSize, flat.length);
    this.optimizer.state.set(flat);
  }

  /** Count correct predictions and sum the cross-entropy over a batch (inference mode: no dropout). */
  evaluate(batch: Batch): EvalCounts {
    this.syncVariables();
    return tf.tidy(() => {
      const { x, y } = this.inputs(batch);
      const logits = this.model.logitsModel.apply(x, { training: false }) as tf.Tensor;
      const lossSum = tf.losses.softmaxCrossEntropy(y, logits, undefined, undefined, tf.Reduction.SUM).dataSync()[0]!;
      const correct = tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), tf.argMax(y, 1)), 'int32')).dataSync()[0]!;
      return { correct, total: batch.n, lossSum };
    });
  }

  dispose(): void {
    this.compiler?.dispose();
    this.model.model.dispose();
  }

  private checkLength(what: string, expected: number, actual: number): void {
    if (expected !== actual) throw new LayoutMismatchError(what, expected, actual);
  }
}
