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
        ...(artifacts.userDefinedMetadata ? { userDefinedMetadata: artifacts.userDefinedMetadata } : {}),
        weightsManifest: [{ paths: [`./${WEIGHTS_FILE}`], weights: artifacts.weightSpecs ?? [] }],
      };
      await fs.writeFile(path.join(dir, WEIGHTS_FILE), Buffer.from(weights));
      await fs.writeFile(path.join(dir, 'model.json'), JSON.stringify(modelJson));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    },
  };
}

/** An IOHandler that reads what dirSaveHandler wrote (or any layers model in `dir/model.json`). */
export function dirLoadHandler(dir: string): tf.io.IOHandler {
  return fileLoadHandler(path.join(dir, 'model.json'));
}

/** An IOHandler for a layers `model.json` and the weight files its manifest names (relative to it). */
export function fileLoadHandler(jsonPath: string): tf.io.IOHandler {
  const dir = path.dirname(jsonPath);
  return {
    async load(): Promise<tf.io.ModelArtifacts> {
      const json = await fs.readFile(jsonPath, 'utf8').catch((err: unknown) => {
        throw new DataNotFoundError(jsonPath, { cause: err });
      });
      let modelJson: tf.io.ModelJSON;
      try {
        modelJson = JSON.parse(json) as tf.io.ModelJSON;
      } catch (err) {
        throw new DataCorruptError(jsonPath, 'not valid JSON', { cause: err });
      }
      if (!isObject(modelJson) || !isObject(modelJson.modelTopology))
        throw new DataCorruptError(jsonPath, 'no modelTopology: not a TensorFlow.js layers model.json');
      const groups = Array.isArray(modelJson.weightsManifest) ? modelJson.weightsManifest : [];
      const buffers = await Promise.all(
        groups.flatMap((g) =>
          g.paths.map((p) =>
            fs.readFile(path.join(dir, p)).catch((err: unknown) => {
              throw new DataNotFoundError(path.join(dir, p), { cause: err });
            }),
          ),
        ),
      );
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

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** What a saved model carries besides its layers (model.json's `userDefinedMetadata.ringtrain`). */
export interface ModelMetadata {
  classNames: string[];
  /** [height, width, channels] of one input image. */
  inputShape: number[];
  /** How pixels become inputs. */
  preprocessing: string;
  /** The run's final test accuracy, when known. */
  testAccuracy?: number;
}

export const PREPROCESSING = 'pixel / 255 (values in [0, 1]), NHWC';

/** Save a (probabilities) model with its metadata. */
export async function saveModel(model: tf.LayersModel, dir: string, meta?: ModelMetadata): Promise<void> {
  if (meta) model.setUserDefinedMetadata({ ringtrain: meta } as unknown as object);
  await model.save(dirSaveHandler(dir));
}

/** The ringtrain metadata of a loaded model (class names default to "0".."n-1"). */
export function modelMetadata(model: tf.LayersModel): ModelMetadata {
  const all = model.getUserDefinedMetadata() as { ringtrain?: Partial<ModelMetadata> } | undefined;
  const meta = all?.ringtrain ?? {};
  const numClasses = (model.outputs[0]?.shape[1] as number | null) ?? 0;
  const classNames =
    Array.isArray(meta.classNames) && meta.classNames.length === numClasses
      ? meta.classNames.map(String)
      : Array.from({ length: numClasses }, (_, i) => String(i));
  return {
    classNames,
    inputShape: Array.isArray(meta.inputShape) ? meta.inputShape : (model.inputs[0]!.shape.slice(1) as number[]),
    preprocessing: typeof meta.preprocessing === 'string' ? meta.preprocessing : PREPROCESSING,
    ...(typeof meta.testAccuracy === 'number' ? { testAccuracy: meta.testAccuracy } : {}),
  };
}

export async function loadModel(dir: string): Promise<tf.LayersModel> {
  return tf.loadLayersModel(dirLoadHandler(dir));
}
