/**
 * `--model NAME|PATH` (shared/train/model-spec.ts): model modules and layers model.json files written by the test
 * itself, softmax heads made into logits (and back for saving), the shape checks, and the saved model's metadata.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { ModelInvalidError } from '../shared/errors.js';
import { dirSaveHandler, loadModel, modelMetadata, saveModel } from '../shared/train/model-io.js';
import { buildFromTopology, logitsTopology, resolveModel, topologyOf } from '../shared/train/model-spec.js';
import type { ModelShape } from '../shared/train/models.js';
import { tempDir } from './helpers/procs.js';

const SHAPE: ModelShape = { inputShape: [8, 8, 1], numClasses: 3 };

const MODULE_SOURCE = `
export default (tf, { inputShape, numClasses }) =>
  tf.sequential({
    layers: [
      tf.layers.conv2d({ inputShape, filters: 4, kernelSize: 3, padding: 'same', activation: 'relu' }),
      tf.layers.batchNormalization(),
      tf.layers.flatten(),
      tf.layers.dense({ units: numClasses, activation: 'softmax' }),
    ],
  });
`;

function input(seed = 3): tf.Tensor4D {
  return tf.randomUniform([2, 8, 8, 1], 0, 1, 'float32', seed) as tf.Tensor4D;
}

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
}

describe('model specs', () => {
  let dir: string;
  before(async () => {
    await tf.setBackend('cpu');
    dir = await tempDir('model-spec');
  });

  it('a built-in name builds for the data shape and class count', async () => {
    const { built, pretrained } = await resolveModel('mlp', { inputShape: [32, 32, 3], numClasses: 7 }, 1);
    assert.equal(pretrained, false);
    assert.deepEqual(built.logitsModel.inputs[0]!.shape, [null, 32, 32, 3]);
    assert.deepEqual(built.model.outputs[0]!.shape, [null, 7]);
    built.model.dispose();
  });

  it('a module is called with ringtrain tf and the shape; its softmax becomes logits, kept for saving', async () => {
    const file = path.join(dir, 'net.mjs');
    await fs.writeFile(file, MODULE_SOURCE);
    const { built, pretrained } = await resolveModel(file, SHAPE, 1);
    assert.equal(pretrained, false);
    const last = built.logitsModel.layers.at(-1)!.getConfig();
    assert.equal(last.activation, 'linear');
    tf.tidy(() => {
      const x = input();
      const logits = built.logitsModel.predict(x) as tf.Tensor;
      const probs = built.model.predict(x) as tf.Tensor;
      assert.ok(maxAbsDiff(tf.softmax(logits), probs) < 1e-6);
      assert.ok(maxAbsDiff(tf.sum(probs, 1), tf.ones([2])) < 1e-5);
    });
    assert.equal(built.logitsModel.nonTrainableWeights.length, 2, 'BatchNorm moving mean and variance');
    built.model.dispose();
  });

  it('the topology alone rebuilds the same layout (what a remote worker does)', async () => {
    const file = path.join(dir, 'net2.mjs');
    await fs.writeFile(file, MODULE_SOURCE);
    const { built } = await resolveModel(file, SHAPE, 1);
    const rebuilt = await buildFromTopology(topologyOf(built), file);
    const shapes = (m: tf.LayersModel) => m.weights.map((w) => `${w.trainable}:${w.shape.join('x')}`);
    assert.deepEqual(shapes(rebuilt.logitsModel), shapes(built.logitsModel));
    built.model.dispose();
    rebuilt.model.dispose();
  });

  it('a model.json saved by tfjs starts from its weights (fine-tuning) and keeps its predictions', async () => {
    const original = tf.sequential({
      layers: [
        tf.layers.flatten({ inputShape: [8, 8, 1] }),
        tf.layers.dense({ units: 5, activation: 'relu' }),
        tf.layers.dense({ units: 3 }),
        tf.layers.softmax(),
      ],
    });
    const saved = path.join(dir, 'pretrained');
    await original.save(dirSaveHandler(saved));
    const { built, pretrained } = await resolveModel(path.join(saved, 'model.json'), SHAPE, 1);
    assert.equal(pretrained, true);
    tf.tidy(() => {
      const x = input(5);
      assert.ok(maxAbsDiff(built.model.predict(x) as tf.Tensor, original.predict(x) as tf.Tensor) < 1e-6);
    });
    // A directory works too.
    const again = await resolveModel(saved, SHAPE, 1);
    assert.equal(again.pretrained, true);
    original.dispose();
    built.model.dispose();
    again.built.model.dispose();
  });

  it('a model.json without weights builds from its topology', async () => {
    const m = tf.sequential({ layers: [tf.layers.flatten({ inputShape: [8, 8, 1] }), tf.layers.dense({ units: 3 })] });
    const file = path.join(dir, 'topology-only.json');
    await fs.writeFile(file, JSON.stringify({ modelTopology: m.toJSON(null, false), format: 'layers-model' }));
    const { pretrained } = await resolveModel(file, SHAPE, 1);
    assert.equal(pretrained, false);
    m.dispose();
  });

  it('an Activation(softmax) output layer becomes linear; other activations are refused', () => {
    const topology = (activation: string) => ({
      class_name: 'Sequential',
      config: { name: 's', layers: [{ class_name: 'Dense', config: { name: 'd', units: 3, activation } }] },
    });
    assert.equal(logitsTopology(topology('softmax'), 'x').hadSoftmax, true);
    assert.equal(logitsTopology(topology('linear'), 'x').hadSoftmax, false);
    assert.throws(() => logitsTopology(topology('sigmoid'), 'x'), ModelInvalidError);
  });

  it('bad files and shapes get a ModelInvalidError naming the problem', async () => {
    const noDefault = path.join(dir, 'no-default.mjs');
    await fs.writeFile(noDefault, 'export const x = 1;\n');
    await assert.rejects(resolveModel(noDefault, SHAPE, 1), /default export must be a function/);
    const notModel = path.join(dir, 'not-model.mjs');
    await fs.writeFile(notModel, 'export default () => 42;\n');
    await assert.rejects(resolveModel(notModel, SHAPE, 1), /must return a tf.LayersModel/);
    const throws = path.join(dir, 'throws.mjs');
    await fs.writeFile(throws, "export default () => { throw new Error('boom'); };\n");
    await assert.rejects(resolveModel(throws, SHAPE, 1), /the model function threw: boom/);
    const file = path.join(dir, 'net3.mjs');
    await fs.writeFile(file, MODULE_SOURCE);
    // The module builds for whatever it is given; a model.json has a fixed shape.
    const saved = path.join(dir, 'wrong-shape');
    const m = tf.sequential({ layers: [tf.layers.flatten({ inputShape: [4, 4, 1] }), tf.layers.dense({ units: 3 })] });
    await m.save(dirSaveHandler(saved));
    await assert.rejects(resolveModel(saved, SHAPE, 1), /input shape \[4,4,1\] does not match the data's \[8,8,1\]/);
    await assert.rejects(
      resolveModel(saved, { inputShape: [4, 4, 1], numClasses: 10 }, 1),
      /does not match the data's 10 classes/,
    );
    await assert.rejects(resolveModel('no-such-model', SHAPE, 1), ModelInvalidError);
    const garbage = path.join(dir, 'garbage.json');
    await fs.writeFile(garbage, '{"hello": 1}');
    await assert.rejects(resolveModel(garbage, SHAPE, 1), /no modelTopology/);
    m.dispose();
  });

  it('a saved model carries class names, input shape and preprocessing', async () => {
    const { built } = await resolveModel('mlp', SHAPE, 1);
    const out = path.join(dir, 'saved');
    await saveModel(built.model, out, {
      classNames: ['cat', 'dog', 'eel'],
      inputShape: [8, 8, 1],
      preprocessing: 'pixel / 255',
      testAccuracy: 0.5,
    });
    const loaded = await loadModel(out);
    assert.deepEqual(modelMetadata(loaded), {
      classNames: ['cat', 'dog', 'eel'],
      inputShape: [8, 8, 1],
      preprocessing: 'pixel / 255',
      testAccuracy: 0.5,
    });
    built.model.dispose();
    loaded.dispose();
  });
});
