/**
 * The models ringtrain trains. Each is built as a functional model whose last layer is a softmax (the model a user
 * saves and serves), plus a second model sharing the same layers that stops at the logits: training uses the logits
 * with a fused softmax cross-entropy, which is both faster and numerically safer than log(softmax).
 * User models (model-spec.ts) take the same shape: their topology is the logits model's, softmax added for saving.
 */
import * as tf from '@tensorflow/tfjs';
import { type ModelName } from './names.js';

export { MODEL_NAMES, isModelName, parseModelName, type ModelName } from './names.js';

/** What a model is built for: one image's [height, width, channels] and the number of classes. */
export interface ModelShape {
  inputShape: [number, number, number];
  numClasses: number;
}

export interface BuiltModel {
  /** A built-in name or the user's file. */
  name: string;
  /** Outputs class probabilities; what gets saved. */
  model: tf.LayersModel;
  /** Same layers, outputs logits; what gets trained. */
  logitsModel: tf.LayersModel;
}

type LayerStack = (input: tf.SymbolicTensor, init: InitFactory, numClasses: number) => tf.SymbolicTensor;
type InitFactory = () => { kernelInitializer: ReturnType<typeof tf.initializers.glorotUniform> };

function apply(layer: tf.layers.Layer, x: tf.SymbolicTensor): tf.SymbolicTensor {
  return layer.apply(x) as tf.SymbolicTensor;
}

/** LeNet-5 as in most modern tutorials: two conv+pool stages (relu, max-pool), then 120-84-10 dense layers. */
const lenet5: LayerStack = (input, init, numClasses) => {
  let x = apply(tf.layers.conv2d({ filters: 6, kernelSize: 5, padding: 'same', activation: 'relu', ...init() }), input);
  x = apply(tf.layers.maxPooling2d({ poolSize: 2 }), x);
  x = apply(tf.layers.conv2d({ filters: 16, kernelSize: 5, padding: 'valid', activation: 'relu', ...init() }), x);
  x = apply(tf.layers.maxPooling2d({ poolSize: 2 }), x);
  x = apply(tf.layers.flatten(), x);
  x = apply(tf.layers.dense({ units: 120, activation: 'relu', ...init() }), x);
  x = apply(tf.layers.dense({ units: 84, activation: 'relu', ...init() }), x);
  return apply(tf.layers.dense({ units: numClasses, ...init() }), x);
};

/** The Keras MNIST CNN example (the model Databricks' HorovodRunner notebook trains). */
const kerasCnn: LayerStack = (input, init, numClasses) => {
  let x = apply(tf.layers.conv2d({ filters: 32, kernelSize: 3, activation: 'relu', ...init() }), input);
  x = apply(tf.layers.conv2d({ filters: 64, kernelSize: 3, activation: 'relu', ...init() }), x);
  x = apply(tf.layers.maxPooling2d({ poolSize: 2 }), x);
  x = apply(tf.layers.dropout({ rate: 0.25 }), x);
  x = apply(tf.layers.flatten(), x);
  x = apply(tf.layers.dense({ units: 128, activation: 'relu', ...init() }), x);
  x = apply(tf.layers.dropout({ rate: 0.5 }), x);
  return apply(tf.layers.dense({ units: numClasses, ...init() }), x);
};

/** A two-hidden-layer perceptron: the quick baseline. */
const mlp: LayerStack = (input, init, numClasses) => {
  let x = apply(tf.layers.flatten(), input);
  x = apply(tf.layers.dense({ units: 256, activation: 'relu', ...init() }), x);
  x = apply(tf.layers.dense({ units: 128, activation: 'relu', ...init() }), x);
  return apply(tf.layers.dense({ units: numClasses, ...init() }), x);
};

const STACKS: Record<ModelName, LayerStack> = { lenet5, 'keras-cnn': kerasCnn, mlp };

/** A probabilities model over the logits model's layers (shared, not copied): what gets saved and served. */
export function withSoftmax(logitsModel: tf.LayersModel, name: string): tf.LayersModel {
  const probs = apply(tf.layers.activation({ activation: 'softmax' }), logitsModel.outputs[0]!);
  return tf.model({ inputs: logitsModel.inputs, outputs: probs, name });
}

/**
 * Build a built-in model (default: 28x28x1 images, 10 classes). `seed` makes the initial weights reproducible (each
 * layer gets seed + i); replicas still get their start weights by broadcast, never by trusting identical seeds.
 */
export function buildModel(
  name: ModelName,
  seed = 1,
  imageShape: [number, number, number] = [28, 28, 1],
  numClasses = 10,
): BuiltModel {
  let layerIndex = 0;
  const init: InitFactory = () => ({ kernelInitializer: tf.initializers.glorotUniform({ seed: seed + layerIndex++ }) });
  const input = tf.input({ shape: imageShape });
  const logits = STACKS[name](input, init, numClasses);
  const logitsModel = tf.model({ inputs: input, outputs: logits, name: `${name}-logits` });
  return { name, model: withSoftmax(logitsModel, name), logitsModel };
}
