/**
 * The coordinator's side of the model: `--model` resolved once (a built-in, the user's module or model.json), the
 * static trainability check run before any worker is asked to train, the topology the workers build their replicas
 * from, the weights a model.json brought, and the saving of the trained model into `RUN_DIR/model/`.
 *
 * A worker builds its replica from the coordinator's topology (buildWorkerReplica) and proves with one dry-run step
 * that it trains on the worker's backend before it reports ready.
 *
 * The coordinator holds a replica of its own (never trained) only for the layout: to flatten starting weights the
 * way the workers do, and to turn rank 0's final flat weights back into a model to save.
 */
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import type { TrainConfig } from '../config.js';
import type { Dataset } from '../data/dataset.js';
import { PREPROCESSING, saveModel, type ModelMetadata } from './model-io.js';
import { buildFromTopology, resolveModel, topologyOf } from './model-spec.js';
import { buildModel, parseModelName, type BuiltModel, type ModelShape } from './models.js';
import { Replica, type ReplicaOptions } from './replica.js';
import { checkLayersStatic, dryRunStep } from './trainability.js';

/** What the coordinator needs of the model (see coordinator.ts). */
export interface CoordinatorModel {
  /** The logits model's topology (model JSON): the workers build their replicas from it. */
  topology: string;
  /** Trainable and state weights, for the dashboard's byte counters. */
  paramCount: number;
  /** Starting state (weights and a fresh optimizer's) when the model came with weights. */
  initial?: { weights: Float32Array; optimizer: Float32Array };
  /** Save the model with these final flat weights; resolves with the folder. */
  saveFinal(weights: Float32Array, testAccuracy?: number): Promise<string>;
}

export type ShapeSource = Pick<Dataset, 'shape' | 'numClasses' | 'classNames'>;

export function modelShapeOf(data: ShapeSource): ModelShape {
  return { inputShape: [...data.shape] as [number, number, number], numClasses: data.numClasses };
}

export function metadataOf(data: ShapeSource, testAccuracy?: number): ModelMetadata {
  return {
    classNames: [...data.classNames],
    inputShape: [...data.shape],
    preprocessing: PREPROCESSING,
    ...(testAccuracy !== undefined ? { testAccuracy } : {}),
  };
}

/** Where a run keeps its trained model. */
export function modelDir(runDir: string): string {
  return path.join(runDir, 'model');
}

/** A replica built exactly as a worker builds its own, from the topology alone (so the layouts agree). */
async function layoutReplica(built: BuiltModel, spec: string, train: TrainConfig): Promise<Replica> {
  const rebuilt = await buildFromTopology(topologyOf(built), spec);
  rebuilt.logitsModel.setWeights(built.logitsModel.getWeights());
  built.model.dispose();
  return new Replica(rebuilt, { name: train.optimizer, lr: train.lr, momentum: train.momentum });
}

/**
 * Resolve `train.model` for data of this shape. Throws ModelInvalidError (unusable file) or ModelUntrainableError
 * (a layer tfjs cannot differentiate, such as a dilated convolution) before any training starts.
 */
export async function prepareRunModel(
  train: TrainConfig,
  data: ShapeSource,
  runDir: string,
): Promise<CoordinatorModel> {
  await tf.ready(); // the process's active backend: the coordinator never trains, any backend serves the layout
  const { built, pretrained } = await resolveModel(train.model, modelShapeOf(data), train.seed);
  checkLayersStatic(built.logitsModel, 'any');
  const replica = await layoutReplica(built, train.model, train);
  const initial = pretrained
    ? { weights: replica.getWeights(), optimizer: await replica.getOptimizerState() }
    : undefined;
  return {
    topology: topologyOf(replica.built),
    paramCount: replica.layout.size,
    ...(initial ? { initial } : {}),
    async saveFinal(weights, testAccuracy) {
      replica.setWeights(weights);
      const dir = modelDir(runDir);
      await saveModel(replica.built.model, dir, metadataOf(data, testAccuracy));
      return dir;
    },
  };
}

/**
 * A worker's replica: built from the coordinator's topology (a built-in name when there is none), then one dry-run
 * step on `backend`; throws ModelUntrainableError naming the layer and kernel when the model cannot train there.
 */
export async function buildWorkerReplica(
  train: TrainConfig,
  topology: string | undefined,
  backend: string,
  options: ReplicaOptions = {},
): Promise<Replica> {
  const built = topology
    ? await buildFromTopology(topology, train.model)
    : buildModel(parseModelName(train.model), train.seed);
  const replica = new Replica(built, { name: train.optimizer, lr: train.lr, momentum: train.momentum }, options);
  try {
    dryRunStep(replica, backend);
  } catch (err) {
    replica.dispose();
    throw err;
  }
  return replica;
}
