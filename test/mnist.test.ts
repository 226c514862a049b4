import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { writeIdx } from '../shared/data/idx.js';
import {
  gatherLabels,
  limitSplit,
  makeSplit,
  sliceSplit,
  toFloatImages,
  type DataSplit,
  type Dataset,
} from '../shared/data/dataset.js';
import { defaultMnistDir, loadMnist } from '../shared/data/mnist.js';
import { DataCorruptError, DataNotFoundError, LayoutMismatchError } from '../shared/errors.js';

const OFFICIAL_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];
const OFFICIAL_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009];

function classCounts(labels: Uint8Array): number[] {
  const counts = new Array<number>(10).fill(0);
  for (const label of labels) counts[label]++;
  return counts;
}

/** A synthetic split whose pixel bytes encode (sample, pixel) so layout mistakes show. */
function syntheticSplit(count: number, rows: number, cols: number, seed: number): DataSplit {
  const pixels = rows * cols;
  const images = Uint8Array.from(
    { length: count * pixels },
    (_, i) => (seed + Math.floor(i / pixels) * 16 + (i % pixels)) % 256,
  );
  const labels = Uint8Array.from({ length: count }, (_, i) => (i + seed) % 10);
  return { images, labels, count, shape: [rows, cols, 1] };
}

interface FixtureFiles {
  trainImages: Uint8Array;
  trainLabels: Uint8Array;
  testImages: Uint8Array;
  testLabels: Uint8Array;
}

const TRAIN = syntheticSplit(12, 4, 3, 1);
const TEST = syntheticSplit(5, 4, 3, 7);

function fixtureFiles(): FixtureFiles {
  return {
    trainImages: writeIdx([TRAIN.count, TRAIN.shape[0], TRAIN.shape[1]], TRAIN.images),
    trainLabels: writeIdx([TRAIN.count], TRAIN.labels),
    testImages: writeIdx([TEST.count, TEST.shape[0], TEST.shape[1]], TEST.images),
    testLabels: writeIdx([TEST.count], TEST.labels),
  };
}

type Spelling = 'dash' | 'dot';

/** Write the four files into a fresh subdirectory of `root`, with the chosen spelling and compression. */
async function writeDataDir(
  root: string,
  name: string,
  opts: { spelling?: Spelling; gzip?: boolean; files?: Partial<FixtureFiles>; omit?: keyof FixtureFiles } = {},
): Promise<string> {
  const dir = join(root, name);
  await mkdir(dir);
  const files = { ...fixtureFiles(), ...opts.files };
  const sep = opts.spelling === 'dot' ? '.' : '-';
  const names: Record<keyof FixtureFiles, string> = {
    trainImages: `train-images${sep}idx3-ubyte`,
    trainLabels: `train-labels${sep}idx1-ubyte`,
    testImages: `t10k-images${sep}idx3-ubyte`,
    testLabels: `t10k-labels${sep}idx1-ubyte`,
  };
  for (const key of Object.keys(names) as (keyof FixtureFiles)[]) {
    if (key === opts.omit) continue;
    const bytes = opts.gzip ? gzipSync(files[key]) : files[key];
    await writeFile(join(dir, names[key] + (opts.gzip ? '.gz' : '')), bytes);
  }
  return dir;
}

function assertSameSplit(actual: DataSplit, expected: DataSplit): void {
  assert.equal(actual.count, expected.count);
  assert.deepEqual(actual.shape, expected.shape);
  assert.deepEqual([...actual.images], [...expected.images]);
  assert.deepEqual([...actual.labels], [...expected.labels]);
}

describe('embedded MNIST', () => {
  let data: Dataset;
  let loadMs = 0;

  before(async () => {
    const start = performance.now();
    data = await loadMnist();
    loadMs = performance.now() - start;
  });

  test('loads 60,000 train and 10,000 test 28x28 samples quickly', (t) => {
    t.diagnostic(`embedded MNIST loaded in ${loadMs.toFixed(1)} ms`);
    assert.equal(data.source, defaultMnistDir());
    assert.ok(existsSync(join(data.source, 'train-images-idx3-ubyte')));
    for (const [split, count] of [
      [data.train, 60000],
      [data.test, 10000],
    ] as const) {
      assert.equal(split.count, count);
      assert.deepEqual(split.shape, [28, 28, 1]);
      assert.equal(split.images.length, count * 28 * 28);
      assert.equal(split.labels.length, count);
    }
    assert.deepEqual(data.shape, [28, 28, 1]);
    assert.equal(data.numClasses, 10);
    assert.deepEqual(data.classNames, ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    assert.equal(data.format, 'idx');
    // Generous bound for a loaded CI box; the measured time is reported above.
    assert.ok(loadMs < 5000, `loading took ${loadMs} ms`);
  });

  test('has the official per-class label counts', () => {
    assert.deepEqual(classCounts(data.train.labels), OFFICIAL_TRAIN_COUNTS);
    assert.deepEqual(classCounts(data.test.labels), OFFICIAL_TEST_COUNTS);
  });

  test('pixels look like digits: a dark border and some ink in the middle', () => {
    const first = toFloatImages(data.train, [0]);
    assert.equal(first.length, 784);
    assert.equal(first[0], 0);
    let ink = 0;
    for (const value of first) ink += value;
    assert.ok(ink > 50 && ink < 300, `ink ${ink}`);
    assert.equal(Math.max(...first), 1);
  });
});

describe('loadMnist from a directory', () => {
  let root = '';
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ringtrain-mnist-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test('loads raw files with the standard names', async () => {
    const dir = await writeDataDir(root, 'raw');
    const data = await loadMnist(dir);
    assert.equal(data.source, dir);
    assertSameSplit(data.train, TRAIN);
    assertSameSplit(data.test, TEST);
  });

  test('loads gzipped files (the Fashion-MNIST distribution names)', async () => {
    const dir = await writeDataDir(root, 'fashion', { gzip: true });
    const data = await loadMnist(dir);
    assertSameSplit(data.train, TRAIN);
    assertSameSplit(data.test, TEST);
  });

  test('loads the dotted spelling, raw and gzipped', async () => {
    for (const gzip of [false, true]) {
      const dir = await writeDataDir(root, `dotted-${gzip}`, { spelling: 'dot', gzip });
      const data = await loadMnist(dir);
      assertSameSplit(data.train, TRAIN);
      assertSameSplit(data.test, TEST);
    }
  });

  test('a missing file is DataNotFoundError listing the names tried', async () => {
    const dir = await writeDataDir(root, 'missing', { omit: 'testLabels' });
    await assert.rejects(loadMnist(dir), (err: unknown) => {
      assert.ok(err instanceof DataNotFoundError, String(err));
      for (const name of [
        't10k-labels-idx1-ubyte',
        't10k-labels-idx1-ubyte.gz',
        't10k-labels.idx1-ubyte',
        't10k-labels.idx1-ubyte.gz',
      ]) {
        assert.ok(err.message.includes(name), err.message);
      }
      assert.ok(err.message.startsWith(dir), err.message);
      return true;
    });
    await assert.rejects(loadMnist(join(root, 'no-such-dir')), DataNotFoundError);
  });

  /** Load a directory with one file replaced and expect a DataCorruptError naming that file. */
  async function expectCorrupt(
    name: string,
    files: Partial<FixtureFiles>,
    fileName: string,
    detail: RegExp,
    gzip = false,
  ): Promise<void> {
    const dir = await writeDataDir(root, name, { files, gzip });
    await assert.rejects(loadMnist(dir), (err: unknown) => {
      assert.ok(err instanceof DataCorruptError, String(err));
      assert.equal(err.file, join(dir, fileName));
      assert.match(err.message, detail);
      return true;
    });
  }

  test('a truncated file names the file and the sizes', async () => {
    const full = fixtureFiles().trainImages;
    await expectCorrupt(
      'truncated',
      { trainImages: full.subarray(0, full.length - 4) },
      'train-images-idx3-ubyte',
      new RegExp(`truncated: expected ${full.length} bytes, got ${full.length - 4}`),
    );
  });

  test('trailing bytes, wrong magic and wrong type code', async () => {
    const labels = fixtureFiles().testLabels;
    const longer = new Uint8Array(labels.length + 2);
    longer.set(labels);
    await expectCorrupt('trailing', { testLabels: longer }, 't10k-labels-idx1-ubyte', /trailing bytes/);
    const badMagic = labels.slice();
    badMagic[0] = 0x08;
    await expectCorrupt('magic', { testLabels: badMagic }, 't10k-labels-idx1-ubyte', /bad magic number/);
    const int32 = labels.slice();
    int32[2] = 0x0c;
    await expectCorrupt('type', { testLabels: int32 }, 't10k-labels-idx1-ubyte', /type code 0x0c/);
  });

  test('a corrupt gzip names the file', async () => {
    const gz = gzipSync(fixtureFiles().trainLabels);
    const dir = await writeDataDir(root, 'badgzip', { gzip: true });
    await writeFile(join(dir, 'train-labels-idx1-ubyte.gz'), gz.subarray(0, gz.length - 10));
    await assert.rejects(loadMnist(dir), (err: unknown) => {
      assert.ok(err instanceof DataCorruptError, String(err));
      assert.equal(err.file, join(dir, 'train-labels-idx1-ubyte.gz'));
      assert.match(err.message, /corrupt gzip/);
      return true;
    });
  });

  test('mismatched image and label counts', async () => {
    await expectCorrupt(
      'counts',
      { trainLabels: writeIdx([11], TRAIN.labels.subarray(0, 11)) },
      'train-labels-idx1-ubyte',
      /holds 11 labels but .*train-images-idx3-ubyte holds 12 images/,
    );
  });

  test('a label of 10 or more', async () => {
    const labels = TEST.labels.slice();
    labels[3] = 10;
    await expectCorrupt(
      'label',
      { testLabels: writeIdx([TEST.count], labels) },
      't10k-labels-idx1-ubyte',
      /label 10 at index 3 is out of range 0\.\.9/,
    );
  });

  test('images that are not 3-D, labels that are not 1-D, and train/test shape mismatch', async () => {
    await expectCorrupt(
      'images2d',
      { trainImages: writeIdx([12, 12], TRAIN.images) },
      'train-images-idx3-ubyte',
      /expected 3 dimensions/,
    );
    await expectCorrupt(
      'labels2d',
      { trainLabels: writeIdx([12, 1], TRAIN.labels) },
      'train-labels-idx1-ubyte',
      /expected 1 dimension/,
    );
    await expectCorrupt(
      'shape',
      { testImages: writeIdx([TEST.count, 3, 4], TEST.images) },
      't10k-images-idx3-ubyte',
      /test images are 3x4 but training images are 4x3/,
    );
  });
});

describe('sample helpers', () => {
  const split = TRAIN;
  const pixels = split.shape[0] * split.shape[1];

  test('toFloatImages scales to [0, 1] in [n, height, width, channels] order', () => {
    const indices = [3, 0, 11];
    const floats = toFloatImages(split, indices);
    assert.equal(floats.length, indices.length * pixels);
    indices.forEach((sample, i) => {
      for (let p = 0; p < pixels; p++) {
        const expected = split.images[sample * pixels + p] / 255;
        assert.ok(Math.abs(floats[i * pixels + p] - expected) < 1e-7);
        assert.ok(floats[i * pixels + p] >= 0 && floats[i * pixels + p] <= 1);
      }
    });
    const extremes = makeSplit(Uint8Array.of(0, 255, 128, 0, 255, 1), Uint8Array.of(0), [1, 2, 3]);
    assert.deepEqual([...toFloatImages(extremes, [0])], [0, 1, 128 / 255, 0, 1, 1 / 255].map(Math.fround));
  });

  test('toFloatImages and gatherLabels reuse the output buffer', () => {
    const out = new Float32Array(2 * pixels).fill(-1);
    const result = toFloatImages(split, Int32Array.of(5, 6), out);
    assert.equal(result, out);
    assert.ok(out.every((v) => v >= 0 && v <= 1));
    const longer = new Float32Array(3 * pixels);
    const view = toFloatImages(split, [1], longer);
    assert.equal(view.buffer, longer.buffer);
    assert.equal(view.length, pixels);
    assert.throws(() => toFloatImages(split, [1, 2], new Float32Array(pixels)), LayoutMismatchError);

    const labelsOut = new Int32Array(3);
    assert.equal(gatherLabels(split, [9, 0, 4], labelsOut), labelsOut);
    assert.deepEqual([...labelsOut], [split.labels[9], split.labels[0], split.labels[4]]);
    assert.throws(() => gatherLabels(split, [1, 2], new Int32Array(1)), LayoutMismatchError);
  });

  test('indices outside the split are rejected', () => {
    assert.throws(() => toFloatImages(split, [12]), RangeError);
    assert.throws(() => toFloatImages(split, [-1]), RangeError);
    assert.throws(() => gatherLabels(split, [1.5]), RangeError);
    assert.throws(() => sliceSplit(split, [0, 99]), RangeError);
  });

  test('sliceSplit copies the chosen samples in order', () => {
    const shard = sliceSplit(split, [7, 2]);
    assert.equal(shard.count, 2);
    assert.deepEqual(shard.shape, split.shape);
    assert.deepEqual(
      [...shard.images],
      [...split.images.subarray(7 * pixels, 8 * pixels), ...split.images.subarray(2 * pixels, 3 * pixels)],
    );
    assert.deepEqual([...shard.labels], [split.labels[7], split.labels[2]]);
    assert.notEqual(shard.images.buffer, split.images.buffer);
    assert.equal(
      shard.images.byteLength,
      shard.images.buffer.byteLength,
      'a shard owns its whole buffer, so it can be transferred',
    );
  });

  test('limitSplit keeps the first n samples and clamps to the count', () => {
    const head = limitSplit(split, 4);
    assert.equal(head.count, 4);
    assert.deepEqual([...head.images], [...split.images.subarray(0, 4 * pixels)]);
    assert.deepEqual([...head.labels], [...split.labels.subarray(0, 4)]);
    assert.equal(limitSplit(split, 1000).count, split.count);
    assert.equal(limitSplit(split, 0).images.length, 0);
    assert.throws(() => limitSplit(split, -1), RangeError);
  });

  test('makeSplit checks the bytes against shape and labels', () => {
    const rgb = makeSplit(new Uint8Array(2 * 4 * 3 * 3), new Uint8Array(2), [4, 3, 3]);
    assert.equal(rgb.count, 2);
    assert.deepEqual([...sliceSplit(rgb, [1]).shape], [4, 3, 3]);
    assert.throws(() => makeSplit(new Uint8Array(10), new Uint8Array(2), [4, 3, 3]), LayoutMismatchError);
  });
});
