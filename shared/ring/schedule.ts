/**
 * Pure ring-allreduce math: how a fused buffer is cut into chunks and which chunk each rank sends
 * and receives at each step. No I/O here; `allreduce.ts` runs this schedule over a transport.
 *
 * Ranks form a ring 0 -> 1 -> ... -> n-1 -> 0; every rank only ever sends to its successor and
 * receives from its predecessor. The buffer is cut into n chunks.
 *
 * Reduce-scatter, steps s = 0..n-2: rank r sends chunk (r - s) mod n and receives chunk
 * (r - s - 1) mod n, which it adds into its own copy. The chunk a rank receives at step s is the
 * one it sends at step s + 1, so partial sums travel around the ring; after n - 1 steps rank r
 * holds the sum over all ranks of chunk (r + 1) mod n (the chunk it "owns").
 *
 * Allgather, steps s = 0..n-2: rank r sends chunk (r + 1 - s) mod n (first its owned chunk, then
 * what it just received) and receives chunk (r - s) mod n, which overwrites its own copy. After
 * n - 1 steps every rank holds every fully reduced chunk.
 */
import { evenRange, requireRank, requireWorldSize } from '../even-split.js';

export interface ChunkRange {
  /** First element, inclusive. */
  start: number;
  /** Last element, exclusive. */
  end: number;
}

export interface RingTransfer {
  /** Chunk index this rank sends to its successor. */
  send: number;
  /** Chunk index this rank receives from its predecessor. */
  recv: number;
}

export interface RingSchedule {
  /** n - 1 steps; the received chunk is added into the local buffer. */
  reduceScatter: RingTransfer[];
  /** n - 1 steps; the received chunk overwrites the local buffer. */
  allgather: RingTransfer[];
}

/** (value mod n) in [0, n), also for negative values. */
function modulo(value: number, n: number): number {
  return ((value % n) + n) % n;
}

/**
 * Split `length` elements into `worldSize` contiguous chunks, as even as possible: the first
 * `length % worldSize` chunks get one extra element. Chunks are empty when length < worldSize.
 */
export function chunkRanges(length: number, worldSize: number): ChunkRange[] {
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new RangeError(`length must be a non-negative integer, got ${String(length)}`);
  }
  requireWorldSize(worldSize);
  return Array.from({ length: worldSize }, (_, i) => evenRange(length, worldSize, i));
}

/** The rank this rank sends to. */
export function successor(rank: number, worldSize: number): number {
  requireRank(rank, worldSize);
  return (rank + 1) % worldSize;
}

/** The rank this rank receives from. */
export function predecessor(rank: number, worldSize: number): number {
  requireRank(rank, worldSize);
  return (rank + worldSize - 1) % worldSize;
}

/** The chunk rank `rank` holds fully reduced after reduce-scatter. */
export function ownedChunk(rank: number, worldSize: number): number {
  requireRank(rank, worldSize);
  return (rank + 1) % worldSize;
}

/** Rank `rank`'s send/receive chunk indices for every step of both phases. Empty when worldSize is 1. */
export function ringSchedule(rank: number, worldSize: number): RingSchedule {
  requireRank(rank, worldSize);
  const reduceScatter: RingTransfer[] = [];
  const allgather: RingTransfer[] = [];
  for (let s = 0; s < worldSize - 1; s++) {
    reduceScatter.push({ send: modulo(rank - s, worldSize), recv: modulo(rank - s - 1, worldSize) });
    allgather.push({ send: modulo(rank + 1 - s, worldSize), recv: modulo(rank - s, worldSize) });
  }
  return { reduceScatter, allgather };
}
