/**
 * Save and load models in the standard TensorFlow.js layers format (model.json + one weights file), the format
 * `tf.loadLayersModel` reads in the browser and in tfjs-node. The `file://` handler only exists in tfjs-node, so
 * ringtrain brings its own small IOHandler pair.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { DataCorruptError, DataNotFoundError } from '../errors.js';

const WEIGHTS_FILE = 'weights.bin';

function toArrayBuffer(data: tf.io.WeightData): ArrayBuffer {
  return Array.isArray(data) ? tf.io.concatenateArrayBuffers(data) : data;
}

/** An IOHandler that writes `model.json` and `weights.bin` into `dir` (created if needed). */
export function dirSaveHandler(dir: string): tf.io.IOHandler {
  return {
    async save(artifacts: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> {
      await fs.mkdir(dir, { recursive: true });
      const weights = artifacts.weightData ? toArrayBuffer(artifacts.weightData) : new ArrayBuffer(0);
      const modelJson = {
        modelTopology: artifacts.modelTopology,
        format: artifacts.format ?? 'layers-model',
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy ?? null,
        trainingConfig: artifacts.trainingConfig,
        weightsManifest: [{ paths: [`./${WEIGHTS_FILE}`], weights: artifacts.weightSpecs ?? [] }],
      };
      await fs.writeFile(path.join(dir, WEIGHTS_FILE), Buffer.from(weights));
      await fs.writeFile(path.join(dir, 'model.json'), JSON.stringify(modelJson));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    },
  };
}

/** An IOHandler that reads what dirSaveHandler wrote (or any single-shard layers model). */
export function dirLoadHandler(dir: string): tf.io.IOHandler {
  return {
    async load(): Promise<tf.io.ModelArtifacts> {
      const jsonPath = path.join(dir, 'model.json');
      const json = await fs.readFile(jsonPath, 'utf8').catch((err: unknown) => {
        throw new DataNotFoundError(jsonPath, { cause: err });
      });
      let modelJson: tf.io.ModelJSON;
      try {
        modelJson = JSON.parse(json) as tf.io.ModelJSON;
      } catch (err) {
        throw new DataCorruptError(jsonPath, 'not valid JSON', { cause: err });
      }
      const groups = modelJson.weightsManifest ?? [];
      const buffers = await Promise.all(groups.flatMap((g) => g.paths.map((p) => fs.readFile(path.join(dir, p)))));
      const weightData = tf.io.concatenateArrayBuffers(
        buffers.map((b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)),
      );
      return tf.io.getModelArtifactsForJSONSync(
        modelJson,
        groups.flatMap((g) => g.weights),
        weightData,
      );
    },
  };
}

export async function saveModel(model: tf.LayersModel, dir: string): Promise<void> {
  await model.save(dirSaveHandler(dir));
}

export async function loadModel(dir: string): Promise<tf.LayersModel> {
  return tf.loadLayersModel(dirLoadHandler(dir));
}
