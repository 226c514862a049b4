/**
 * `--model NAME|PATH`: a built-in name, an ES module, or a TensorFlow.js layers `model.json`, turned into the
 * BuiltModel ringtrain trains (a logits model, plus a softmax model over the same layers for saving).
 *
 * - A module's default export is `(tf, { inputShape, numClasses }) => tf.LayersModel` (or a promise of one). It is
 *   called with ringtrain's own tfjs namespace, so the file needs no tfjs of its own and cannot load a second copy.
 * - A `model.json` is read with its weights when its manifest lists any (fine-tuning starts from them).
 * - The last layer may end in a softmax (the Keras convention) or give plain logits: a softmax is replaced by a linear
 *   activation in the trained topology, since training uses a fused softmax cross-entropy on logits.
 *
 * The coordinator resolves the spec once and sends the logits topology (model JSON) to the workers, which build
 * their replicas from it (buildFromTopology): a worker on another host needs no copy of the user's file.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { ModelInvalidError } from '../errors.js';
import { fileLoadHandler } from './model-io.js';
import { buildModel, isModelName, withSoftmax, type BuiltModel, type ModelShape } from './models.js';

/** What a user's module exports as default. */
export type ModelFactory = (tfjs: typeof tf, shape: ModelShape) => tf.LayersModel | Promise<tf.LayersModel>;

export interface ResolvedModel {
  built: BuiltModel;
  /** The model came with weights (a model.json's): training starts from them rather than from rank 0's init. */
  pretrained: boolean;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The entry ({ class_name, config }) of a topology's output layer. */
function outputLayerEntry(topology: Json, source: string): Json {
  const config = topology.config;
  const layers = Array.isArray(config) ? config : isObject(config) ? config.layers : undefined;
  if (!Array.isArray(layers) || layers.length === 0) throw new ModelInvalidError(source, 'the topology has no layers');
  if (topology.class_name === 'Sequential') return layers[layers.length - 1] as Json;
  const outputs = isObject(config) ? config.output_layers : undefined;
  if (!Array.isArray(outputs) || outputs.length !== 1)
    throw new ModelInvalidError(source, 'a classifier needs exactly one output');
  const name = (outputs[0] as unknown[])[0];
  const entry = (layers as Json[]).find((l) => l.name === name || (isObject(l.config) && l.config.name === name));
  if (!entry) throw new ModelInvalidError(source, `output layer '${String(name)}' is not in the topology`);
  return entry;
}

/**
 * The topology with a final softmax made linear (so the model outputs logits); returns whether there was one. Any
 * activation other than softmax or linear on the output layer is refused: the loss is a softmax cross-entropy.
 */
export function logitsTopology(topology: Json, source: string): { topology: Json; hadSoftmax: boolean } {
  const copy = structuredClone(topology);
  const entry = outputLayerEntry(copy, source);
  const config = isObject(entry.config) ? entry.config : {};
  if (entry.class_name === 'Softmax') {
    entry.class_name = 'Activation';
    const { name, trainable, dtype } = config;
    entry.config = Object.fromEntries(
      Object.entries({ name, trainable, dtype, activation: 'linear' }).filter(([, v]) => v !== undefined),
    );
    return { topology: copy, hadSoftmax: true };
  }
  const activation = config.activation;
  if (activation === 'softmax') {
    config.activation = 'linear';
    return { topology: copy, hadSoftmax: true };
  }
  if (activation !== undefined && activation !== 'linear' && activation !== null) {
    throw new ModelInvalidError(
      source,
      `the output layer's activation is '${String(activation)}'; end with a softmax or a linear (logits) layer`,
    );
  }
  return { topology: copy, hadSoftmax: false };
}

/** Shape checks: one image input of the data's shape, one output of numClasses. */
function checkShape(model: tf.LayersModel, shape: ModelShape, source: string): void {
  if (model.inputs.length !== 1 || model.outputs.length !== 1)
    throw new ModelInvalidError(source, 'a classifier needs exactly one input and one output');
  const input = model.inputs[0]!.shape.slice(1);
  if (input.length !== 3 || input.some((d, i) => d !== null && d !== shape.inputShape[i]))
    throw new ModelInvalidError(
      source,
      `input shape [${input.join(',')}] does not match the data's [${shape.inputShape.join(',')}]`,
    );
  const output = model.outputs[0]!.shape;
  if (output.length !== 2 || output[1] !== shape.numClasses)
    throw new ModelInvalidError(
      source,
      `output shape [${output.slice(1).join(',')}] does not match the data's ${shape.numClasses} classes`,
    );
}

/** The serialised topology of a built model's logits model: what the coordinator sends to the workers. */
export function topologyOf(built: BuiltModel): string {
  return JSON.stringify(built.logitsModel.toJSON(null, false));
}

/** Build the replica's model from a logits topology (weights from its initialisers; the broadcast replaces them). */
export async function buildFromTopology(topology: string | Json, name: string): Promise<BuiltModel> {
  let json: Json;
  try {
    json = typeof topology === 'string' ? (JSON.parse(topology) as Json) : topology;
  } catch (err) {
    throw new ModelInvalidError(name, 'the model topology is not valid JSON', { cause: err });
  }
  let logitsModel: tf.LayersModel;
  try {
    logitsModel = await tf.models.modelFromJSON(json as tf.io.ModelJSON['modelTopology'] as never);
  } catch (err) {
    throw new ModelInvalidError(name, `the topology does not build: ${(err as Error).message}`, { cause: err });
  }
  return { name, logitsModel, model: withSoftmax(logitsModel, path.basename(name).replace(/\W+/g, '_')) };
}

/** A model's copy with its softmax made linear, holding the same weights; the original is disposed. */
async function toLogits(model: tf.LayersModel, shape: ModelShape, source: string): Promise<BuiltModel> {
  checkShape(model, shape, source);
  const { topology } = logitsTopology(model.toJSON(null, false) as Json, source);
  const built = await buildFromTopology(topology, source);
  built.logitsModel.setWeights(model.getWeights());
  model.dispose();
  return built;
}

async function fromModule(file: string, shape: ModelShape): Promise<BuiltModel> {
  let factory: unknown;
  try {
    factory = ((await import(pathToFileURL(file).href)) as { default?: unknown }).default;
  } catch (err) {
    throw new ModelInvalidError(file, `the module does not load: ${(err as Error).message}`, { cause: err });
  }
  if (typeof factory !== 'function')
    throw new ModelInvalidError(
      file,
      'the default export must be a function (tf, { inputShape, numClasses }) => model',
    );
  let model: unknown;
  try {
    model = await (factory as ModelFactory)(tf, { inputShape: [...shape.inputShape], numClasses: shape.numClasses });
  } catch (err) {
    throw new ModelInvalidError(file, `the model function threw: ${(err as Error).message}`, { cause: err });
  }
  if (!(model instanceof tf.LayersModel))
    throw new ModelInvalidError(file, 'the default export must return a tf.LayersModel (tf.sequential or tf.model)');
  return toLogits(model, shape, file);
}

async function fromModelJson(file: string, shape: ModelShape): Promise<ResolvedModel> {
  const handler = fileLoadHandler(file);
  const artifacts = await handler.load!();
  const pretrained = (artifacts.weightSpecs?.length ?? 0) > 0;
  let model: tf.LayersModel;
  try {
    model = pretrained
      ? await tf.loadLayersModel(tf.io.fromMemory(artifacts))
      : await tf.models.modelFromJSON({ modelTopology: artifacts.modelTopology as never } as never);
  } catch (err) {
    throw new ModelInvalidError(file, `not a TensorFlow.js layers model: ${(err as Error).message}`, { cause: err });
  }
  return { built: await toLogits(model, shape, file), pretrained };
}

/**
 * Resolve `--model`: a built-in name, a `.json` layers model, or a `.js`/`.mjs` module (paths relative to the
 * working directory). `seed` seeds the built-ins' initialisers.
 */
export async function resolveModel(spec: string, shape: ModelShape, seed: number): Promise<ResolvedModel> {
  if (isModelName(spec))
    return { built: buildModel(spec, seed, shape.inputShape, shape.numClasses), pretrained: false };
  const file = path.resolve(spec);
  const stat = await fs.stat(file).catch(() => undefined);
  if (!stat) throw new ModelInvalidError(spec, 'neither a built-in model name nor an existing file');
  const target = stat.isDirectory() ? path.join(file, 'model.json') : file;
  if (target.endsWith('.json')) return fromModelJson(target, shape);
  if (/\.[cm]?js$/.test(target)) return { built: await fromModule(target, shape), pretrained: false };
  throw new ModelInvalidError(spec, 'expected a built-in name, a model.json, or a .js/.mjs module');
}
