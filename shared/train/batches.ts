/**
 * Batches from a split, into buffers allocated once per loader: the hot path allocates nothing per step.
 */
import type { BatchAugmenter } from '../data/augment.js';
import { gatherLabels, sampleBytes, toFloatImages, type DataSplit } from '../data/dataset.js';
import type { Batch, EvalCounts, Replica } from './replica.js';

export class BatchLoader {
  private readonly images: Float32Array;
  private readonly labels: Int32Array;

  constructor(
    private readonly split: DataSplit,
    readonly batchSize: number,
    /** Training-time augmentation of every loaded batch (shared/data/augment.ts). */
    private readonly augment?: BatchAugmenter,
  ) {
    this.images = new Float32Array(batchSize * sampleBytes(split.shape));
    this.labels = new Int32Array(batchSize);
  }

  /** The batch of these sample indices (at most batchSize of them). The returned buffers are reused. */
  load(indices: ArrayLike<number>): Batch {
    toFloatImages(this.split, indices, this.images);
    gatherLabels(this.split, indices, this.labels);
    this.augment?.apply(this.images, indices, indices.length);
    return { images: this.images, labels: this.labels, n: indices.length };
  }
}

/** Evaluate samples [start, end) of a split; counts are additive, so shards can be summed across workers. */
export function evaluateRange(
  replica: Replica,
  split: DataSplit,
  start: number,
  end: number,
  batchSize = 1000,
): EvalCounts {
  const loader = new BatchLoader(split, batchSize);
  const totals: EvalCounts = { correct: 0, total: 0, lossSum: 0 };
  const indices = new Uint32Array(batchSize);
  for (let first = start; first < end; first += batchSize) {
    const n = Math.min(batchSize, end - first);
    for (let i = 0; i < n; i++) indices[i] = first + i;
    const counts = replica.evaluate(loader.load(indices.subarray(0, n)));
    totals.correct += counts.correct;
    totals.total += counts.total;
    totals.lossSum += counts.lossSum;
  }
  return totals;
}

/** Samples per evaluation batch between two yields: a few hundred milliseconds of keras-cnn on wasm at most. */
export const EVAL_YIELD_BATCH = 100;

/**
 * evaluateRange in small batches with a turn of the event loop between them, so a long evaluation (keras-cnn on
 * wasm over thousands of samples takes seconds) never blocks heartbeats, pongs and control messages for longer than
 * one batch. The counts are the same as evaluateRange's.
 */
export async function evaluateRangeYielding(
  replica: Replica,
  split: DataSplit,
  start: number,
  end: number,
  batchSize = EVAL_YIELD_BATCH,
): Promise<EvalCounts> {
  const totals: EvalCounts = { correct: 0, total: 0, lossSum: 0 };
  for (let first = start; first < end; first += batchSize) {
    await new Promise<void>((resolve) => setImmediate(resolve));
    const counts = evaluateRange(replica, split, first, Math.min(end, first + batchSize), batchSize);
    totals.correct += counts.correct;
    totals.total += counts.total;
    totals.lossSum += counts.lossSum;
  }
  return totals;
}
