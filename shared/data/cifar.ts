/**
 * CIFAR-10's binary version (https://www.cs.toronto.edu/~kriz/cifar.html, `cifar-10-binary.tar.gz`):
 *
 *   data_batch_1.bin ... data_batch_5.bin, test_batch.bin   records of 3073 bytes: 1 label byte (0..9), then
 *                                                           1024 red, 1024 green, 1024 blue bytes (32x32, row-major)
 *   batches.meta.txt                                        the class names, one a line (optional)
 *
 * in DIR itself or in DIR/cifar-10-batches-bin (where the archive unpacks). Planar channels become HWC samples of
 * [32, 32, 3]. Data batches are read from 1 up while they exist (a subset such as data_batch_1.bin alone works).
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DataCorruptError, DataNotFoundError } from '../errors.js';
import { makeSplit, numberedClassNames, type DataSplit, type Dataset, type SampleShape } from './dataset.js';

export const CIFAR_SHAPE: SampleShape = [32, 32, 3];
export const CIFAR_CLASSES = 10;
const PLANE = 32 * 32;
const RECORD = 1 + 3 * PLANE;
const MAX_BATCHES = 5;

export const CIFAR_TEST_FILE = 'test_batch.bin';
export const cifarTrainFile = (n: number) => `data_batch_${n}.bin`;

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The folder holding the batches (DIR or DIR/cifar-10-batches-bin), or undefined when neither does. */
export async function findCifarDir(dir: string): Promise<string | undefined> {
  for (const candidate of [dir, join(dir, 'cifar-10-batches-bin')]) {
    if ((await exists(join(candidate, CIFAR_TEST_FILE))) || (await exists(join(candidate, cifarTrainFile(1))))) {
      return candidate;
    }
  }
  return undefined;
}

/** Decode one batch file's records into HWC samples; DataCorruptError naming the file for a bad length or label. */
export function parseCifarBatch(bytes: Uint8Array, file: string): DataSplit {
  if (bytes.length === 0 || bytes.length % RECORD !== 0) {
    throw new DataCorruptError(
      file,
      `${bytes.length} bytes is not a whole number of ${RECORD}-byte CIFAR-10 records (1 label + 32x32x3 pixels)`,
    );
  }
  const count = bytes.length / RECORD;
  const images = new Uint8Array(count * 3 * PLANE);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const record = i * RECORD;
    const label = bytes[record];
    if (label >= CIFAR_CLASSES) {
      throw new DataCorruptError(file, `record ${i}: label ${label} is out of range 0..${CIFAR_CLASSES - 1}`);
    }
    labels[i] = label;
    const out = i * 3 * PLANE;
    for (let p = 0; p < PLANE; p++) {
      images[out + 3 * p] = bytes[record + 1 + p];
      images[out + 3 * p + 1] = bytes[record + 1 + PLANE + p];
      images[out + 3 * p + 2] = bytes[record + 1 + 2 * PLANE + p];
    }
  }
  return makeSplit(images, labels, CIFAR_SHAPE);
}

/** Encode HWC [32, 32, 3] samples as a CIFAR-10 batch file (tests, fixtures). */
export function writeCifarBatch(split: DataSplit): Uint8Array {
  const out = new Uint8Array(split.count * RECORD);
  for (let i = 0; i < split.count; i++) {
    const record = i * RECORD;
    out[record] = split.labels[i];
    const source = i * 3 * PLANE;
    for (let p = 0; p < PLANE; p++) {
      for (let c = 0; c < 3; c++) out[record + 1 + c * PLANE + p] = split.images[source + 3 * p + c];
    }
  }
  return out;
}

async function readBatch(file: string): Promise<DataSplit> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new DataNotFoundError(file, { cause: err });
  }
  return parseCifarBatch(bytes, file);
}

function concat(splits: DataSplit[]): DataSplit {
  const images = new Uint8Array(splits.reduce((n, s) => n + s.images.length, 0));
  const labels = new Uint8Array(splits.reduce((n, s) => n + s.count, 0));
  let offset = 0;
  let count = 0;
  for (const s of splits) {
    images.set(s.images, offset);
    labels.set(s.labels, count);
    offset += s.images.length;
    count += s.count;
  }
  return makeSplit(images, labels, CIFAR_SHAPE);
}

async function readClassNames(dir: string): Promise<string[]> {
  const file = join(dir, 'batches.meta.txt');
  if (!(await exists(file))) return numberedClassNames(CIFAR_CLASSES);
  const names = (await readFile(file, 'utf8'))
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '');
  if (names.length !== CIFAR_CLASSES) {
    throw new DataCorruptError(file, `expected ${CIFAR_CLASSES} class names, one a line, got ${names.length}`);
  }
  return names;
}

/** Load CIFAR-10 binary batches from `dir` (or its cifar-10-batches-bin/). */
export async function loadCifar10(dir: string): Promise<Dataset> {
  const root = (await findCifarDir(dir)) ?? dir;
  const trainFiles: string[] = [];
  for (let n = 1; n <= MAX_BATCHES && (await exists(join(root, cifarTrainFile(n)))); n++) {
    trainFiles.push(join(root, cifarTrainFile(n)));
  }
  if (trainFiles.length === 0) throw new DataNotFoundError(join(root, cifarTrainFile(1)));
  const [test, classNames, ...train] = await Promise.all([
    readBatch(join(root, CIFAR_TEST_FILE)),
    readClassNames(root),
    ...trainFiles.map(readBatch),
  ]);
  return {
    train: concat(train as DataSplit[]),
    test: test as DataSplit,
    shape: CIFAR_SHAPE,
    numClasses: CIFAR_CLASSES,
    classNames: classNames as string[],
    format: 'cifar10',
    source: root,
  };
}
