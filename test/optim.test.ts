import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError } from '../shared/errors.js';
import { validateTrainConfig, TRAIN_DEFAULTS } from '../shared/config.js';
import { learningRateAt, parseOptimizerName } from '../shared/train/optim.js';

test('per-epoch decay multiplies the base rate by decay^epoch', () => {
  const o = { baseLr: 2e-3, decay: 0.7 };
  assert.equal(learningRateAt(o, 0), 2e-3);
  assert.ok(Math.abs(learningRateAt(o, 3) - 2e-3 * 0.343) < 1e-12);
});

test('world-size scaling ramps linearly over the warmup, then holds N x the decayed rate', () => {
  const o = { baseLr: 0.1, decay: 1, scaleByWorldSize: true, worldSize: 4, warmupEpochs: 2 };
  assert.equal(learningRateAt(o, 0, 0), 0.1);
  assert.ok(Math.abs(learningRateAt(o, 1, 0) - 0.25) < 1e-12);
  assert.ok(Math.abs(learningRateAt(o, 2, 0) - 0.4) < 1e-12);
  assert.ok(Math.abs(learningRateAt(o, 5, 0.5) - 0.4) < 1e-12);
  assert.equal(learningRateAt({ ...o, worldSize: 1 }, 0), 0.1);
  assert.equal(learningRateAt({ ...o, scaleByWorldSize: false }, 3), 0.1);
});

test('config validation names the bad option', () => {
  assert.deepEqual(validateTrainConfig({}), { ...TRAIN_DEFAULTS });
  assert.equal(validateTrainConfig({ optimizer: 'sgd' }).lr, 0.05, 'each optimizer has its own default rate');
  assert.equal(validateTrainConfig({ optimizer: 'sgd', lr: 0.3 }).lr, 0.3);
  assert.throws(
    () => validateTrainConfig({ epochs: 0 }),
    (e: unknown) => e instanceof ConfigError && /epochs/.test(e.message),
  );
  assert.throws(() => validateTrainConfig({ batchSize: 2.5 }), /batch-size/);
  assert.throws(() => validateTrainConfig({ targetAccuracy: 2 }), /target-accuracy/);
  assert.throws(() => validateTrainConfig({ model: 'resnet' }), /unknown model 'resnet'/);
  assert.throws(() => parseOptimizerName('rmsprop'), ConfigError);
  assert.throws(() => validateTrainConfig({ lr: 'abc' }), /lr/);
});
