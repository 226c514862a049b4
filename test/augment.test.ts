/**
 * Seeded augmentation: pure transforms checked on small cases, determinism in (seed, epoch, sample id), and the same
 * batch whether the worker indexes its own copy or was shipped the shard's samples.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  createAugmenter,
  cropPadding,
  parseAugment,
  sampleTransform,
  transformSample,
  type SampleTransform,
} from '../shared/data/augment.js';
import { makeSplit, sliceSplit, toFloatImages, type SampleShape } from '../shared/data/dataset.js';
import { ConfigError } from '../shared/errors.js';
import { BatchLoader } from '../shared/train/batches.js';

function run(input: number[], shape: SampleShape, t: SampleTransform): number[] {
  const out = new Float32Array(input.length).fill(-1);
  transformSample(Float32Array.from(input), out, shape, t);
  return [...out];
}

describe('augmentation', () => {
  test('parseAugment: names in canonical order, none, unknown names rejected', () => {
    assert.deepEqual(parseAugment('crop,flip'), ['flip', 'crop']);
    assert.deepEqual(parseAugment(' flip , flip '), ['flip']);
    assert.deepEqual(parseAugment(''), []);
    assert.deepEqual(parseAugment('none'), []);
    assert.deepEqual(parseAugment(undefined), []);
    assert.deepEqual(parseAugment(['crop']), ['crop']);
    assert.throws(
      () => parseAugment('flip,rotate'),
      (e) => e instanceof ConfigError && /rotate/.test(e.message),
    );
  });

  test('transformSample: identity, flip, shifts with zero fill, channels kept together', () => {
    const row: SampleShape = [1, 3, 1];
    assert.deepEqual(run([1, 2, 3], row, { flip: false, dy: 0, dx: 0 }), [1, 2, 3]);
    assert.deepEqual(run([1, 2, 3], row, { flip: true, dy: 0, dx: 0 }), [3, 2, 1]);
    assert.deepEqual(run([1, 2, 3], row, { flip: false, dy: 0, dx: 1 }), [2, 3, 0]);
    assert.deepEqual(run([1, 2, 3], row, { flip: false, dy: 0, dx: -1 }), [0, 1, 2]);
    assert.deepEqual(run([1, 2, 3], row, { flip: true, dy: 0, dx: 1 }), [0, 3, 2]);
    const square: SampleShape = [2, 2, 1];
    assert.deepEqual(run([1, 2, 3, 4], square, { flip: false, dy: 1, dx: 0 }), [3, 4, 0, 0]);
    assert.deepEqual(run([1, 2, 3, 4], square, { flip: false, dy: -1, dx: -1 }), [0, 0, 0, 1]);
    assert.deepEqual(run([1, 2, 3, 4], square, { flip: false, dy: 2, dx: 0 }), [0, 0, 0, 0]);
    const rgb: SampleShape = [1, 2, 3];
    assert.deepEqual(run([1, 2, 3, 4, 5, 6], rgb, { flip: true, dy: 0, dx: 0 }), [4, 5, 6, 1, 2, 3]);
  });

  test('sampleTransform: a pure function of (seed, epoch, id), within the padding, both flips occur', () => {
    const shape: SampleShape = [32, 32, 3];
    assert.equal(cropPadding(shape), 4);
    assert.equal(cropPadding([28, 28, 1]), 4);
    assert.equal(cropPadding([4, 4, 1]), 1);
    const names = ['flip', 'crop'] as const;
    let flips = 0;
    const offsets = new Set<string>();
    for (let id = 0; id < 400; id++) {
      const t = sampleTransform(names, shape, 42, 3, id);
      assert.deepEqual(sampleTransform(names, shape, 42, 3, id), t);
      assert.ok(Math.abs(t.dy) <= 4 && Math.abs(t.dx) <= 4);
      if (t.flip) flips++;
      offsets.add(`${t.dy},${t.dx}`);
    }
    assert.ok(flips > 150 && flips < 250, `flips ${flips}`);
    assert.equal(offsets.size, 81, 'every offset in [-4, 4]^2 occurs');
    const differs = (f: (id: number) => SampleTransform) =>
      Array.from(
        { length: 50 },
        (_, id) => JSON.stringify(f(id)) !== JSON.stringify(sampleTransform(names, shape, 42, 3, id)),
      );
    assert.ok(differs((id) => sampleTransform(names, shape, 43, 3, id)).some(Boolean), 'seed matters');
    assert.ok(differs((id) => sampleTransform(names, shape, 42, 4, id)).some(Boolean), 'epoch matters');
    assert.deepEqual(sampleTransform(['flip'], shape, 42, 3, 7).dx, 0);
    assert.equal(sampleTransform(['crop'], shape, 42, 3, 7).flip, false);
  });

  test('no augmentation: no augmenter; batches of a local copy and of shipped samples augment alike', () => {
    assert.equal(createAugmenter({ names: [], shape: [2, 2, 1], seed: 1, epoch: 0 }), undefined);
    const shape: SampleShape = [6, 5, 3];
    const count = 20;
    const images = Uint8Array.from({ length: count * 90 }, (_, i) => (i * 37) % 256);
    const full = makeSplit(
      images,
      Uint8Array.from({ length: count }, (_, i) => i % 4),
      shape,
    );
    const shardIds = Uint32Array.of(17, 3, 8, 11);
    const shipped = sliceSplit(full, shardIds);
    const common = { names: ['flip', 'crop'] as const, shape, seed: 9, epoch: 2 };
    const local = new BatchLoader(full, 4, createAugmenter(common));
    const remote = new BatchLoader(shipped, 4, createAugmenter({ ...common, ids: shardIds }));
    const a = Float32Array.from(local.load(shardIds).images);
    const b = Float32Array.from(remote.load(Uint32Array.of(0, 1, 2, 3)).images);
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, toFloatImages(full, shardIds), 'something was augmented');
    // Same run, same seed: the same batch again.
    assert.deepEqual(Float32Array.from(new BatchLoader(full, 4, createAugmenter(common)).load(shardIds).images), a);
  });
});
