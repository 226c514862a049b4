/**
 * A user's model module in a real cluster: `launch -np 2 --model net.mjs` with BatchNormalization and a separable
 * convolution, trained by two worker processes on wasm (ringtrain's depthwise gradient kernels). Every replica's hash,
 * moving statistics included, must match at every step; the run must save its model, which reloads with
 * tf.loadLayersModel and gives the run's test accuracy, as `ringtrain evaluate` does; `ringtrain predict` agrees.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { limitSplit, toFloatImages } from '../shared/data/dataset.js';
import { encodeImage } from '../shared/data/image.js';
import { loadDataset } from '../shared/data/load.js';
import { registerWasmConvGradients } from '../shared/tf/wasm-conv-grads.js';
import { dirLoadHandler, modelMetadata } from '../shared/train/model-io.js';
import { killAll, readJsonLines, runCli, tempDir } from './helpers/procs.js';

const MODULE_SOURCE = `
// A small MobileNet-style block; the default export gets ringtrain's own tf namespace.
export default (tf, { inputShape, numClasses }) =>
  tf.sequential({
    layers: [
      tf.layers.conv2d({ inputShape, filters: 8, kernelSize: 3, strides: 2, padding: 'same', useBias: false }),
      tf.layers.batchNormalization(),
      tf.layers.reLU(),
      tf.layers.separableConv2d({ filters: 16, kernelSize: 3, padding: 'same', activation: 'relu' }),
      tf.layers.batchNormalization(),
      tf.layers.globalAveragePooling2d({}),
      tf.layers.dropout({ rate: 0.1 }),
      tf.layers.dense({ units: numClasses, activation: 'softmax' }),
    ],
  });
`;

interface MetricLine {
  rank: number;
  step: number;
  paramHash?: string;
}

const TEST_LIMIT = 500;

describe('a model module trained by a real cluster', { timeout: 420_000 }, () => {
  after(killAll);

  test('BatchNorm + SeparableConv2D: replicas identical at every step; the saved model reloads', async () => {
    const dir = await tempDir('cluster-model');
    const moduleFile = path.join(dir, 'net.mjs');
    await fs.writeFile(moduleFile, MODULE_SOURCE);
    const runDir = path.join(dir, 'run');
    const summaryFile = path.join(dir, 'summary.json');
    const launch = runCli([
      'launch',
      '-np',
      '2',
      '--model',
      moduleFile,
      '--train-limit',
      '768',
      '--test-limit',
      String(TEST_LIMIT),
      '--batch-size',
      '32',
      '--epochs',
      '1',
      '--backend',
      'wasm',
      '--check-every',
      '1',
      '--heartbeat-ms',
      '2000',
      '--heartbeat-misses',
      '30',
      '--run-dir',
      runDir,
      '--summary-json',
      summaryFile,
    ]);
    assert.equal(await launch.exited(360_000), 0, launch.output());
    const summary = JSON.parse(await fs.readFile(summaryFile, 'utf8'));
    assert.equal(summary.workers, 2);
    assert.equal(summary.steps, 12, '768 samples / 2 workers / batch 32');
    assert.equal(summary.hashMismatches, 0);
    assert.equal(summary.hashChecks, 12);

    const lines = await readJsonLines<MetricLine>(path.join(runDir, 'metrics.jsonl'));
    const byStep = new Map<number, Map<number, string>>();
    for (const l of lines) {
      assert.ok(l.paramHash, `step ${l.step} rank ${l.rank} has a hash`);
      if (!byStep.has(l.step)) byStep.set(l.step, new Map());
      byStep.get(l.step)!.set(l.rank, l.paramHash!);
    }
    assert.equal(byStep.size, 12);
    for (const [step, ranks] of byStep) assert.equal(ranks.get(0), ranks.get(1), `step ${step}: replicas identical`);

    await tf.setBackend('wasm');
    await tf.ready();
    registerWasmConvGradients();
    const model = await tf.loadLayersModel(dirLoadHandler(path.join(runDir, 'model')));
    const meta = modelMetadata(model);
    assert.deepEqual(meta.classNames, ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    assert.deepEqual(meta.inputShape, [28, 28, 1]);
    assert.equal(meta.testAccuracy, summary.testAccuracy);
    assert.equal(model.layers.at(-1)!.getConfig().activation, 'softmax', 'the saved model outputs probabilities');
    const movingVariance = model.weights.find((w) => w.name.includes('moving_variance'))!;
    assert.ok(
      tf.tidy(() => tf.any(tf.notEqual(movingVariance.read(), 1)).dataSync()[0]),
      'the trained moving variance is saved',
    );

    const test = limitSplit((await loadDataset(undefined)).test, TEST_LIMIT);
    const indices = Uint32Array.from({ length: test.count }, (_, i) => i);
    const predictedFirst: number[] = [];
    const correct = tf.tidy(() => {
      const x = tf.tensor4d(toFloatImages(test, indices), [test.count, 28, 28, 1]);
      const predicted = tf.argMax(model.predict(x) as tf.Tensor, 1).dataSync();
      predictedFirst.push(...Array.from(predicted.subarray(0, 3)));
      return Array.from(predicted).reduce((n: number, p: number, i: number) => n + (p === test.labels[i] ? 1 : 0), 0);
    });
    // The run evaluated on the same backend; allow one borderline sample of float difference.
    assert.ok(
      Math.abs(correct / test.count - summary.testAccuracy) <= 1 / test.count + 1e-9,
      `reloaded accuracy ${correct / test.count} vs the run's ${summary.testAccuracy}`,
    );
    model.dispose();

    // `ringtrain evaluate` on the same folder reports the same accuracy, per class and as a confusion matrix.
    const evalFile = path.join(dir, 'evaluate.json');
    const evaluate = runCli([
      'evaluate',
      '--model-dir',
      path.join(runDir, 'model'),
      '--test-limit',
      String(TEST_LIMIT),
      '--backend',
      'wasm',
      '--summary-json',
      evalFile,
    ]);
    assert.equal(await evaluate.exited(120_000), 0, evaluate.output());
    assert.match(evaluate.output(), /test accuracy \d+\.\d\d%/);
    const evaluated = JSON.parse(await fs.readFile(evalFile, 'utf8'));
    assert.equal(evaluated.samples, TEST_LIMIT);
    assert.equal(evaluated.testAccuracy, correct / test.count);
    assert.equal(evaluated.perClass.length, 10);
    assert.equal(
      evaluated.confusion.flat().reduce((a: number, b: number) => a + b, 0),
      TEST_LIMIT,
      'every sample is in the confusion matrix once',
    );

    // `ringtrain predict` on PNG files of test samples: the top class is the model's own prediction.
    const files: string[] = [];
    for (let i = 0; i < 3; i++) {
      const file = path.join(dir, `sample-${i}.png`);
      await fs.writeFile(file, await encodeImage(test.images.subarray(i * 784, (i + 1) * 784), [28, 28, 1]));
      files.push(file);
    }
    const predict = runCli([
      'predict',
      '--model-dir',
      path.join(runDir, 'model'),
      '--json',
      '--backend',
      'wasm',
      ...files,
    ]);
    assert.equal(await predict.exited(120_000), 0, predict.output());
    const answers = predict
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { file: string; top: { index: number; probability: number }[] });
    assert.equal(answers.length, 3);
    for (const [i, a] of answers.entries()) {
      assert.equal(a.file, files[i]);
      assert.equal(a.top.length, 3);
      assert.equal(a.top[0]!.index, predictedFirst[i], `sample ${i}`);
    }
  });
});
