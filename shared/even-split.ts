/**
 * The one even split of ringtrain, pure: n items into `parts` contiguous ranges, the first `n % parts` one item
 * longer. The ring's chunks (ring/schedule.ts) and the evaluation shards (data/sampler.ts) both use it.
 */

export interface EvenRange {
  /** First index, inclusive. */
  start: number;
  /** Last index, exclusive. */
  end: number;
}

export function requireWorldSize(worldSize: number): void {
  if (!Number.isSafeInteger(worldSize) || worldSize < 1) {
    throw new RangeError(`worldSize must be a positive integer, got ${String(worldSize)}`);
  }
}

export function requireRank(rank: number, worldSize: number): void {
  requireWorldSize(worldSize);
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= worldSize) {
    throw new RangeError(`rank must be an integer in [0, ${worldSize}), got ${String(rank)}`);
  }
}

/** Range `index` of `length` items split into `parts` (empty when length < parts and index >= length). */
export function evenRange(length: number, parts: number, index: number): EvenRange {
  const base = Math.floor(length / parts);
  const extra = length % parts;
  const start = index * base + Math.min(index, extra);
  return { start, end: start + base + (index < extra ? 1 : 0) };
}
