/**
 * --data-dir format detection and the three formats, on real files the tests write: MNIST digits as PNG class
 * folders (written with sharp, the library that reads them), CIFAR-10 binary batches, raw and gzipped IDX; and the
 * corrupt and mismatched files that must fail with a typed error naming the file.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { readDataOptions } from '../shared/cli/options.js';
import { parseImageSize } from '../shared/data/image-options.js';
import { CIFAR_SHAPE, parseCifarBatch, writeCifarBatch } from '../shared/data/cifar.js';
import { limitSplit, makeSplit, sampleBytes, type DataSplit, type Dataset } from '../shared/data/dataset.js';
import { holdOut } from '../shared/data/folders.js';
import { writeIdx } from '../shared/data/idx.js';
import { decodeImageFile, encodeImage } from '../shared/data/image.js';
import { datasetDifference, describeDataset } from '../shared/data/info.js';
import { detectFormat, loadDataset } from '../shared/data/load.js';
import { loadMnist } from '../shared/data/mnist.js';
import { ConfigError, DataCorruptError, DataMismatchError, DataNotFoundError } from '../shared/errors.js';

let root = '';
let mnist: Dataset;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'ringtrain-datasets-'));
  mnist = await loadMnist();
});
after(() => rm(root, { recursive: true, force: true }));

let dirCount = 0;
async function freshDir(name: string): Promise<string> {
  const dir = join(root, `${name}-${dirCount++}`);
  await mkdir(dir, { recursive: true });
  return dir;
}

function sample(split: DataSplit, i: number): Uint8Array {
  const n = sampleBytes(split.shape);
  return split.images.subarray(i * n, (i + 1) * n);
}

/** Write `split` as class folders DIR/<sub>/<class>/<i>.png, returning the file of each sample. */
async function writeClassFolders(
  dir: string,
  sub: string,
  split: DataSplit,
  classNames: readonly string[],
  format: 'png' | 'jpeg' = 'png',
): Promise<string[]> {
  const files: string[] = [];
  for (const name of classNames) await mkdir(join(dir, sub, name), { recursive: true });
  for (let i = 0; i < split.count; i++) {
    const file = join(dir, sub, classNames[split.labels[i]], `${String(i).padStart(5, '0')}.${format}`);
    await writeFile(file, await encodeImage(sample(split, i), split.shape, format));
    files.push(file);
  }
  return files;
}

const DIGITS = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];

/** A split of synthetic RGB samples whose bytes encode (sample, pixel, channel). */
function rgbSplit(count: number, shape: readonly [number, number, number], seed: number, classes: number): DataSplit {
  const n = sampleBytes(shape);
  const images = Uint8Array.from({ length: count * n }, (_, i) => (seed * 31 + i * 7 + Math.floor(i / n) * 13) % 256);
  const labels = Uint8Array.from({ length: count }, (_, i) => (i * 3 + seed) % classes);
  return makeSplit(images, labels, shape);
}

function assertRejectsWith(err: unknown, type: new (...a: never[]) => Error, file: string, pattern: RegExp): boolean {
  assert.ok(err instanceof type, `expected ${type.name}, got ${String(err)}`);
  assert.equal((err as { file?: string }).file, file);
  assert.match((err as Error).message, pattern);
  return true;
}

describe('single image files', () => {
  test('PNG round trips exactly, grayscale and RGB; decodeImageFile reports the shape', async () => {
    const dir = await freshDir('png');
    const gray = sample(mnist.train, 0);
    await writeFile(join(dir, 'gray.png'), await encodeImage(gray, [28, 28, 1]));
    const decoded = await decodeImageFile(join(dir, 'gray.png'));
    assert.deepEqual(decoded.shape, [28, 28, 1]);
    assert.deepEqual(decoded.pixels, gray);

    const rgb = rgbSplit(1, [5, 7, 3], 3, 2);
    await writeFile(join(dir, 'rgb.png'), await encodeImage(rgb.images, rgb.shape));
    const colour = await decodeImageFile(join(dir, 'rgb.png'));
    assert.deepEqual(colour.shape, [5, 7, 3]);
    assert.deepEqual(colour.pixels, rgb.images);
  });

  test('decodeImageFile converts to a requested shape (what a model expects)', async () => {
    const dir = await freshDir('convert');
    await writeFile(join(dir, 'digit.png'), await encodeImage(sample(mnist.train, 1), [28, 28, 1]));
    const rgb = await decodeImageFile(join(dir, 'digit.png'), { shape: [32, 32, 3] });
    assert.deepEqual(rgb.shape, [32, 32, 3]);
    assert.equal(rgb.pixels.length, 32 * 32 * 3);
    // Gray to RGB repeats the value in all three channels.
    for (let p = 0; p < 32 * 32; p++) {
      assert.equal(rgb.pixels[3 * p], rgb.pixels[3 * p + 1]);
      assert.equal(rgb.pixels[3 * p], rgb.pixels[3 * p + 2]);
    }
    const small = await decodeImageFile(join(dir, 'digit.png'), { shape: [14, 14, 1] });
    assert.equal(small.pixels.length, 14 * 14);
  });

  test('a missing file and a file that is not an image fail with typed errors naming them', async () => {
    const dir = await freshDir('bad-image');
    await assert.rejects(decodeImageFile(join(dir, 'none.png')), (e) =>
      assertRejectsWith(e, DataNotFoundError, join(dir, 'none.png'), /not found/),
    );
    await writeFile(join(dir, 'text.png'), 'this is not a PNG');
    await assert.rejects(decodeImageFile(join(dir, 'text.png')), (e) =>
      assertRejectsWith(e, DataCorruptError, join(dir, 'text.png'), /not a readable image/),
    );
    const png = await encodeImage(sample(mnist.train, 2), [28, 28, 1]);
    await writeFile(join(dir, 'cut.png'), png.subarray(0, png.length / 2));
    await assert.rejects(decodeImageFile(join(dir, 'cut.png')), (e) =>
      assertRejectsWith(e, DataCorruptError, join(dir, 'cut.png'), /cannot decode|not a readable/),
    );
  });
});

describe('class folders', () => {
  const TRAIN_N = 40;
  const TEST_N = 15;
  let dir = '';

  before(async () => {
    dir = await freshDir('mnist-png');
    await writeClassFolders(dir, 'train', limitSplit(mnist.train, TRAIN_N), DIGITS);
    await writeClassFolders(dir, 'test', limitSplit(mnist.test, TEST_N), DIGITS);
  });

  test('MNIST digits written as PNG class folders load back as exactly those samples', async () => {
    assert.equal(await detectFormat(dir), 'folders');
    const data = await loadDataset(dir);
    assert.equal(data.format, 'folders');
    assert.deepEqual(data.shape, [28, 28, 1]);
    assert.deepEqual(data.classNames, DIGITS);
    assert.equal(data.numClasses, 10);
    assert.equal(data.train.count, TRAIN_N);
    assert.equal(data.test.count, TEST_N);
    // Files are read class by class, each class in file-name order: rebuild that order from the originals.
    for (const [loaded, original] of [
      [data.train, limitSplit(mnist.train, TRAIN_N)],
      [data.test, limitSplit(mnist.test, TEST_N)],
    ] as const) {
      const order = Array.from({ length: original.count }, (_, i) => i).sort(
        (a, b) => original.labels[a] - original.labels[b] || a - b,
      );
      order.forEach((orig, i) => {
        assert.equal(loaded.labels[i], original.labels[orig]);
        assert.deepEqual(sample(loaded, i), sample(original, orig), `sample ${i}`);
      });
    }
  });

  test('class names are the sorted folder names, in DIR/<class> too, and test/ may lack a class', async () => {
    const d = await freshDir('animals');
    const names = ['zebra', 'cat', 'dog'];
    const split = rgbSplit(9, [6, 5, 3], 1, 3);
    await writeClassFolders(d, 'train', split, names);
    await writeClassFolders(d, 'test', rgbSplit(2, [6, 5, 3], 2, 1), names);
    const data = await loadDataset(d);
    assert.deepEqual(data.classNames, ['cat', 'dog', 'zebra']);
    assert.deepEqual(data.shape, [6, 5, 3]);
    // 'zebra' (original label 0) is label 2 now.
    assert.equal(data.train.labels.filter((l) => l === 2).length, split.labels.filter((l) => l === 0).length);
    assert.ok(data.test.labels.every((l) => l === 2));

    const flat = await freshDir('flat');
    await writeClassFolders(flat, '.', split, names);
    const flatData = await loadDataset(flat, { validationSplit: 0.25 });
    assert.deepEqual(flatData.classNames, ['cat', 'dog', 'zebra']);
    assert.equal(flatData.train.count + flatData.test.count, 9);
  });

  test('RGB JPEG folders decode (lossy, so close to the originals)', async () => {
    const d = await freshDir('jpeg');
    const split = makeSplit(new Uint8Array(4 * 16 * 16 * 3).fill(200), Uint8Array.of(0, 1, 0, 1), [16, 16, 3]);
    await writeClassFolders(d, 'train', split, ['a', 'b'], 'jpeg');
    const data = await loadDataset(d, { validationSplit: 0.5 });
    assert.deepEqual(data.shape, [16, 16, 3]);
    assert.ok(data.train.images.every((v) => Math.abs(v - 200) <= 3));
  });

  test('without test/, --validation-split holds out a seeded fraction, the same every time', async () => {
    const d = await freshDir('holdout');
    await writeClassFolders(d, 'train', limitSplit(mnist.train, 30), DIGITS);
    await assert.rejects(loadDataset(d), (e) => e instanceof ConfigError && /--validation-split/.test(e.message));
    const a = await loadDataset(d, { validationSplit: 0.2 });
    const b = await loadDataset(d, { validationSplit: 0.2 });
    assert.equal(a.test.count, 6);
    assert.equal(a.train.count, 24);
    assert.deepEqual(a.test.images, b.test.images);
    assert.deepEqual(a.train.labels, b.train.labels);
    await assert.rejects(loadDataset(dir, { validationSplit: 0.2 }), ConfigError, 'test/ exists already');
    await assert.rejects(loadDataset(d, { validationSplit: 0.01 }), /holds out none/);
  });

  test('holdOut: disjoint, complete, floor(F * n) held out, seed-dependent', () => {
    for (const n of [1, 2, 7, 100]) {
      for (const f of [0, 0.1, 0.5, 0.99]) {
        const { train, test: held } = holdOut(n, f, 3);
        assert.equal(held.length, Math.floor(f * n));
        assert.deepEqual(
          [...train, ...held].sort((x, y) => x - y),
          Array.from({ length: n }, (_, i) => i),
        );
      }
    }
    assert.notDeepEqual(holdOut(100, 0.2, 1).test, holdOut(100, 0.2, 2).test);
    assert.deepEqual(holdOut(100, 0.2, 1).test, holdOut(100, 0.2, 1).test);
  });

  test('--image-size resizes (stretch, crop, pad) and --color-mode converts', async () => {
    const data = await loadDataset(dir, { imageSize: [32, 20] });
    assert.deepEqual(data.shape, [32, 20, 1]);
    assert.equal(data.train.images.length, TRAIN_N * 32 * 20);
    const padded = await loadDataset(dir, { imageSize: [28, 56], fit: 'pad' });
    // Padding to twice the width keeps the digit in the middle half: the outer quarters are black.
    const first = sample(padded.train, 0);
    for (let y = 0; y < 28; y++) for (let x = 0; x < 14; x++) assert.equal(first[y * 56 + x], 0);
    const cropped = await loadDataset(dir, { imageSize: [10, 20], fit: 'crop' });
    assert.deepEqual(cropped.shape, [10, 20, 1]);
    const rgb = await loadDataset(dir, { colorMode: 'rgb' });
    assert.deepEqual(rgb.shape, [28, 28, 3]);
  });

  test('an image of another size or channel count is an error naming it, unless the options convert it', async () => {
    const d = await freshDir('mixed');
    await writeClassFolders(d, 'train', limitSplit(mnist.train, 4), DIGITS);
    await writeClassFolders(d, 'test', limitSplit(mnist.test, 2), DIGITS);
    const big = join(d, 'train', '0', 'zz-big.png');
    await writeFile(big, await encodeImage(new Uint8Array(30 * 30), [30, 30, 1]));
    await assert.rejects(loadDataset(d), (e) =>
      assertRejectsWith(e, DataMismatchError, big, /is 30x30 but .* is 28x28; pass --image-size/),
    );
    assert.equal((await loadDataset(d, { imageSize: [28, 28] })).train.count, 5);
    await rm(big);

    const colour = join(d, 'test', '1', 'zz-colour.png');
    await writeFile(colour, await encodeImage(new Uint8Array(28 * 28 * 3), [28, 28, 3]));
    await assert.rejects(loadDataset(d), (e) =>
      assertRejectsWith(e, DataMismatchError, colour, /has 3 channel\(s\) but .* has 1; pass --color-mode/),
    );
    assert.deepEqual((await loadDataset(d, { colorMode: 'grayscale' })).shape, [28, 28, 1]);
    await rm(colour);

    const broken = join(d, 'train', '3', 'broken.png');
    await writeFile(broken, Buffer.from('\x89PNG\r\n\x1a\n garbage'));
    await assert.rejects(loadDataset(d), (e) => assertRejectsWith(e, DataCorruptError, broken, /image/));
    await rm(broken);

    await mkdir(join(d, 'test', 'eleven'));
    await assert.rejects(loadDataset(d), (e) =>
      assertRejectsWith(e, DataMismatchError, join(d, 'test', 'eleven'), /class 'eleven' has no folder/),
    );
  });

  test('class folders without any image are no dataset', async () => {
    const d = await freshDir('empty-classes');
    await mkdir(join(d, 'train', 'a'), { recursive: true });
    await writeFile(join(d, 'train', 'a', 'notes.txt'), 'no images here');
    await assert.rejects(loadDataset(d), (e) =>
      assertRejectsWith(e, DataNotFoundError, join(d, 'train'), /no .* images/),
    );
  });
});

describe('CIFAR-10 binary batches', () => {
  test('records become HWC samples; batches.meta.txt names the classes; subfolder found', async () => {
    const train1 = rgbSplit(7, CIFAR_SHAPE, 1, 10);
    const train2 = rgbSplit(5, CIFAR_SHAPE, 2, 10);
    const testSplit = rgbSplit(4, CIFAR_SHAPE, 3, 10);
    const d = await freshDir('cifar');
    const bin = join(d, 'cifar-10-batches-bin');
    await mkdir(bin);
    await writeFile(join(bin, 'data_batch_1.bin'), writeCifarBatch(train1));
    await writeFile(join(bin, 'data_batch_2.bin'), writeCifarBatch(train2));
    await writeFile(join(bin, 'test_batch.bin'), writeCifarBatch(testSplit));
    const names = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
    await writeFile(join(bin, 'batches.meta.txt'), `${names.join('\n')}\n\n`);
    assert.equal(await detectFormat(d), 'cifar10');
    const data = await loadDataset(d);
    assert.equal(data.format, 'cifar10');
    assert.deepEqual(data.shape, [32, 32, 3]);
    assert.deepEqual(data.classNames, names);
    assert.equal(data.train.count, 12);
    assert.deepEqual(data.train.images, Uint8Array.of(...train1.images, ...train2.images));
    assert.deepEqual(data.train.labels, Uint8Array.of(...train1.labels, ...train2.labels));
    assert.deepEqual(data.test.images, testSplit.images);
  });

  test('the record layout is 1 label byte, then the red, green and blue planes', () => {
    const record = new Uint8Array(3073);
    record[0] = 7;
    record[1 + 33] = 10; // red, row 1 col 1
    record[1 + 1024 + 33] = 20; // green
    record[1 + 2048 + 33] = 30; // blue
    const split = parseCifarBatch(record, 'one.bin');
    assert.equal(split.labels[0], 7);
    assert.deepEqual([...split.images.subarray(33 * 3, 33 * 3 + 3)], [10, 20, 30]);
  });

  test('a truncated batch, a bad label, a missing test batch: typed errors naming the file', async () => {
    const d = await freshDir('cifar-bad');
    const good = writeCifarBatch(rgbSplit(2, CIFAR_SHAPE, 1, 10));
    await writeFile(join(d, 'data_batch_1.bin'), good.subarray(0, good.length - 1));
    await writeFile(join(d, 'test_batch.bin'), good);
    await assert.rejects(loadDataset(d), (e) =>
      assertRejectsWith(e, DataCorruptError, join(d, 'data_batch_1.bin'), /not a whole number of 3073-byte/),
    );
    const badLabel = Uint8Array.from(good);
    badLabel[3073] = 10;
    await writeFile(join(d, 'data_batch_1.bin'), badLabel);
    await assert.rejects(loadDataset(d), (e) =>
      assertRejectsWith(e, DataCorruptError, join(d, 'data_batch_1.bin'), /record 1: label 10/),
    );
    await writeFile(join(d, 'data_batch_1.bin'), good);
    await rm(join(d, 'test_batch.bin'));
    await assert.rejects(loadDataset(d), (e) =>
      assertRejectsWith(e, DataNotFoundError, join(d, 'test_batch.bin'), /not found/),
    );
  });
});

describe('format detection', () => {
  test('raw and gzipped IDX files are found; an empty folder names what was looked for', async () => {
    const train = limitSplit(mnist.train, 20);
    const testSplit = limitSplit(mnist.test, 10);
    for (const gzip of [false, true]) {
      const d = await freshDir(gzip ? 'idx-gz' : 'idx');
      const write = (name: string, bytes: Uint8Array) =>
        writeFile(join(d, name + (gzip ? '.gz' : '')), gzip ? gzipSync(bytes) : bytes);
      await write('train-images-idx3-ubyte', writeIdx([20, 28, 28], train.images));
      await write('train-labels-idx1-ubyte', writeIdx([20], train.labels));
      await write('t10k-images-idx3-ubyte', writeIdx([10, 28, 28], testSplit.images));
      await write('t10k-labels-idx1-ubyte', writeIdx([10], testSplit.labels));
      assert.equal(await detectFormat(d), 'idx');
      const data = await loadDataset(d);
      assert.equal(data.format, 'idx');
      assert.deepEqual(data.train.images, train.images);
      assert.deepEqual(data.test.labels, testSplit.labels);
    }
    const empty = await freshDir('empty');
    await assert.rejects(loadDataset(empty), (e) =>
      assertRejectsWith(e, DataNotFoundError, empty, /no dataset found: expected the four MNIST IDX files/),
    );
    await assert.rejects(loadDataset(join(empty, 'missing')), DataNotFoundError);
  });
});

describe('dataset identity (a worker with its own copy)', () => {
  test('same data: same description; any difference is named in a short close reason', () => {
    const a = describeDataset(mnist);
    assert.deepEqual(describeDataset(mnist), a);
    assert.equal(datasetDifference(a, a), undefined);
    const cases: [Partial<typeof a>, RegExp][] = [
      [{ height: 32, width: 32, channels: 3 }, /samples 32x32x3 here, 28x28x1 at the coordinator/],
      [{ classNames: ['cat', 'dog'] }, /2 classes \(cat, dog\) here, 10 classes/],
      [{ trainCount: 100 }, /100 train \/ 10000 test samples here, 60000 \/ 10000/],
      [{ fingerprint: 'ffff' }, /other samples/],
    ];
    for (const [change, pattern] of cases) {
      const reason = datasetDifference({ ...a, ...change }, a);
      assert.match(reason ?? '', pattern);
      assert.ok(Buffer.byteLength(reason!) <= 123, 'fits a WebSocket close reason');
    }
    const longNames = Array.from({ length: 200 }, (_, i) => `a-rather-long-class-name-${i}`);
    assert.ok(Buffer.byteLength(datasetDifference({ ...a, classNames: longNames }, a)!) <= 123);
    const changed = { ...mnist, train: { ...mnist.train, images: Uint8Array.from(mnist.train.images) } };
    changed.train.images[12345] ^= 1;
    assert.notEqual(describeDataset(changed).fingerprint, a.fingerprint);
  });
});

describe('data options', () => {
  test('--image-size and --validation-split are checked', () => {
    assert.deepEqual(parseImageSize('32x24'), [32, 24]);
    assert.deepEqual(parseImageSize('64'), [64, 64]);
    for (const bad of ['0x3', '32x', 'axb', '5000x5000', '-1']) assert.throws(() => parseImageSize(bad), ConfigError);
    assert.deepEqual(readDataOptions({ imageSize: '8x9', validationSplit: 0.5 }, 'worker'), {
      imageSize: [8, 9],
      colorMode: 'auto',
      fit: 'stretch',
      validationSplit: 0.5,
    });
    assert.deepEqual(readDataOptions({}, 'coordinator'), { colorMode: 'auto', fit: 'stretch', validationSplit: 0 });
  });
});
