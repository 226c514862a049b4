/**
 * Proof, before training starts, that a model trains on the active backend: a static check for what tfjs can never
 * differentiate (dilated convolutions), then one dry-run step on a synthetic batch. A failure names the layer and the
 * kernel (ModelUntrainableError) instead of surfacing mid-run as a bare tfjs message.
 */
import * as tf from '@tensorflow/tfjs';
import { ModelUntrainableError } from '../errors.js';
import type { Replica } from './replica.js';

const DILATED_KERNEL = 'Conv2DBackpropFilter (dilated)';

function hasDilation(config: Record<string, unknown>): boolean {
  const rate = config.dilationRate;
  if (rate === undefined || rate === null) return false;
  const rates = Array.isArray(rate) ? (rate as number[]) : [rate as number];
  return rates.some((r) => r !== 1);
}

/** Layers tfjs has no gradient for, whatever the backend. Throws for the first one. */
export function checkLayersStatic(model: tf.LayersModel, backend: string): void {
  for (const layer of model.layers) {
    const config = layer.getConfig() as Record<string, unknown>;
    if (hasDilation(config)) {
      throw new ModelUntrainableError(
        layer.name,
        layer.getClassName(),
        DILATED_KERNEL,
        backend,
        `dilation rate ${JSON.stringify(config.dilationRate)}: TensorFlow.js has no gradient for dilated convolutions`,
      );
    }
  }
}

/** The kernel a tfjs failure names, or a short description of what failed. */
function kernelOf(err: unknown): string {
  const message = String((err as Error)?.message ?? err);
  const missing = /Kernel '([^']+)' not registered/.exec(message);
  if (missing) return missing[1]!;
  if (/dilation/i.test(message)) return DILATED_KERNEL;
  const kernelError = /^(?:Error in )?([A-Z]\w+)(?::| )/.exec(message);
  return kernelError?.[1] ?? 'unknown kernel';
}

function singleInputShape(layer: tf.layers.Layer): number[] | undefined {
  try {
    const input = layer.input;
    if (Array.isArray(input)) return undefined;
    return input.shape.map((d, i) => (i === 0 ? 2 : (d ?? 1)));
  } catch {
    return undefined; // a layer with several inbound nodes
  }
}

/** Forward and backward through one layer alone (its weights and its input): the error it raises, if any. */
function probeLayer(layer: tf.layers.Layer): unknown {
  const shape = singleInputShape(layer);
  if (!shape) return undefined;
  try {
    tf.tidy(() => {
      const x = tf.variable(tf.randomUniform(shape, 0, 1, 'float32', 7), true);
      const vars = [x, ...layer.trainableWeights.map((w) => (w as unknown as { read(): tf.Variable }).read())];
      const { grads } = tf.variableGrads(() => tf.sum(layer.apply(x, { training: true }) as tf.Tensor), vars);
      for (const g of Object.values(grads)) g.dataSync();
      x.dispose();
    });
    return undefined;
  } catch (err) {
    return err;
  }
}

/** After a failed dry run: the first layer that fails on its own, and the kernel it needs. */
function culprit(model: tf.LayersModel, backend: string, cause: unknown): ModelUntrainableError {
  for (const layer of model.layers) {
    if (layer.getClassName() === 'InputLayer') continue;
    const err = probeLayer(layer);
    if (err !== undefined) {
      return new ModelUntrainableError(layer.name, layer.getClassName(), kernelOf(err), backend, firstLine(err), {
        cause: err,
      });
    }
  }
  return new ModelUntrainableError('(the model)', model.getClassName(), kernelOf(cause), backend, firstLine(cause), {
    cause,
  });
}

function firstLine(err: unknown): string {
  return String((err as Error)?.message ?? err).split('\n')[0]!;
}

/**
 * One forward and backward pass on a synthetic batch of two; the replica's weights, state and optimizer are left as
 * they were (computeGradients restores the layer state, and nothing is applied). Throws ModelUntrainableError.
 */
export function dryRunStep(replica: Replica, backend: string): void {
  const model = replica.built.logitsModel;
  checkLayersStatic(model, backend);
  const shape = model.inputs[0]!.shape.slice(1) as number[];
  const pixels = shape.reduce((a, b) => a * b, 1);
  const images = new Float32Array(2 * pixels);
  for (let i = 0; i < images.length; i++) images[i] = (i % 251) / 251;
  try {
    const { loss } = replica.computeGradients({ images, labels: Int32Array.from([0, 1 % replica.numClasses]), n: 2 });
    if (!Number.isFinite(loss)) throw new Error(`the loss of the dry-run step is ${loss}`);
  } catch (err) {
    throw culprit(model, backend, err);
  }
}
