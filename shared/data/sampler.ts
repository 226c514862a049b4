/**
 * DistributedSampler semantics, as in PyTorch's `torch.utils.data.DistributedSampler`:
 *
 * - each epoch has its own deterministic shuffle, seeded by (seed, epoch), identical on every rank;
 * - the shuffled order is padded by wrap-around (repeating its beginning) up to a multiple of the
 *   world size, so every rank gets exactly ceil(datasetSize / worldSize) indices and therefore the
 *   same number of steps (no rank waits in an allreduce the others never enter);
 * - rank r takes positions r, r + worldSize, r + 2 * worldSize, ... of the padded order.
 *
 * Evaluation is different: a padded sample would be counted twice and skew accuracy, so
 * `evalShard` splits the test set into contiguous, non-overlapping ranges whose sizes sum to
 * exactly the test set size.
 */
import { mixSeed, permutation } from '../rng.js';
import { evenRange, requireRank } from '../even-split.js';

export interface ShardOptions {
  datasetSize: number;
  worldSize: number;
  rank: number;
  seed: number;
  epoch: number;
  /** Shuffle per epoch (default true); false keeps dataset order, still strided and padded. */
  shuffle?: boolean;
  /** Skip the first `offset` samples of the epoch's order (default 0). */
  offset?: number;
}

export interface IndexRange {
  /** First index, inclusive. */
  start: number;
  /** Last index, exclusive. */
  end: number;
}

function requireCount(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${what} must be a non-negative integer, got ${String(value)}`);
  }
}

/** The epoch's sample order: a permutation seeded by mixSeed(seed, epoch), or 0..n-1 unshuffled. */
export function epochPermutation(datasetSize: number, seed: number, epoch: number, shuffle = true): Uint32Array {
  requireCount(datasetSize, 'datasetSize');
  requireCount(epoch, 'epoch');
  if (shuffle) return permutation(datasetSize, mixSeed(seed, epoch));
  const order = new Uint32Array(datasetSize);
  for (let i = 0; i < datasetSize; i++) order[i] = i;
  return order;
}

/** How many indices each rank gets per epoch: ceil(datasetSize / worldSize). */
export function shardLength(datasetSize: number, worldSize: number): number {
  requireCount(datasetSize, 'datasetSize');
  requireRank(0, worldSize);
  return Math.ceil(datasetSize / worldSize);
}

/**
 * The dataset indices rank `rank` trains on this epoch, in order. With `offset`, only the part of the epoch's order
 * from that position on is sharded (an elastic re-plan after a membership change: the first `offset` samples were
 * trained by an earlier generation). Positions past the end wrap around to the start of the sharded part.
 */
export function shardForRank(options: ShardOptions): Uint32Array {
  const { datasetSize, worldSize, rank, seed, epoch, shuffle = true, offset = 0 } = options;
  requireRank(rank, worldSize);
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > datasetSize) {
    throw new RangeError(`offset must be an integer in [0, ${datasetSize}], got ${String(offset)}`);
  }
  const rest = epochPermutation(datasetSize, seed, epoch, shuffle).subarray(offset);
  const perRank = shardLength(rest.length, worldSize);
  const shard = new Uint32Array(perRank);
  for (let k = 0; k < perRank; k++) shard[k] = rest[(rank + k * worldSize) % rest.length];
  return shard;
}

/** Steps per epoch for a shard: ceil(shardLength / batchSize); the last batch may be smaller. */
export function stepsPerEpoch(shardLength: number, batchSize: number): number {
  requireCount(shardLength, 'shardLength');
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`batchSize must be a positive integer, got ${String(batchSize)}`);
  }
  return Math.ceil(shardLength / batchSize);
}

/** The indices of batch `step` within a shard: a view (no copy), shorter for the last batch. */
export function batchIndices(shard: Uint32Array, step: number, batchSize: number): Uint32Array {
  const steps = stepsPerEpoch(shard.length, batchSize);
  if (!Number.isSafeInteger(step) || step < 0 || step >= steps) {
    throw new RangeError(`step must be an integer in [0, ${steps}), got ${String(step)}`);
  }
  const start = step * batchSize;
  return shard.subarray(start, Math.min(start + batchSize, shard.length));
}

/**
 * Rank `rank`'s contiguous slice of the test set 0..testSize-1. Slices are as even as possible
 * (the first testSize % worldSize ranks get one extra), never overlap and cover every sample once;
 * a slice is empty when testSize < worldSize and rank >= testSize.
 */
export function evalShard(testSize: number, worldSize: number, rank: number): IndexRange {
  requireCount(testSize, 'testSize');
  requireRank(rank, worldSize);
  return evenRange(testSize, worldSize, rank);
}
