/**
 * Ring allreduce over an abstract pair of links (to the successor, from the predecessor), so the
 * worker's WebSocket transport and the tests' in-memory transport run the same algorithm.
 *
 * Bitwise-identical replicas: in reduce-scatter every chunk's sum is accumulated along the ring in
 * one fixed order and finished on exactly one rank (its owner); with `average` the owner divides it;
 * allgather then copies (never re-adds) that final value to every other rank. So every rank ends
 * with the very same bits, whatever floating-point rounding the sum had.
 *
 * The schedule is in `ring.ts`. Frames are identified by (generation, step, phase, chunk): within one
 * phase of one step a rank receives each chunk index at most once, so no ring-step counter is needed.
 */
import { ProtocolError } from './errors.js';
import { chunkRanges, ownedChunk, ringSchedule, type ChunkRange, type RingTransfer } from './ring.js';

export const Phase = { reduceScatter: 0, allgather: 1 } as const;
export type Phase = (typeof Phase)[keyof typeof Phase];

export interface ChunkHeader {
  /** Membership generation; frames of another generation belong to a ring that no longer exists. */
  generation: number;
  /** Training step the allreduce belongs to. */
  step: number;
  phase: Phase;
  /** Chunk index in [0, worldSize). */
  chunk: number;
  /** Number of float32 values in the chunk. */
  count: number;
}

export type ChunkKey = Omit<ChunkHeader, 'count'>;

export interface RingLinks {
  /**
   * Send a chunk of the buffer to the successor. `data` is a view into the caller's buffer; the
   * link must copy it (or be done with it) before the call returns or its promise resolves, because
   * the caller overwrites that part of the buffer afterwards.
   */
  send(header: ChunkHeader, data: Float32Array): void | Promise<void>;
  /**
   * Resolve with the chunk (from the predecessor) matching generation/step/phase/chunk. Frames of
   * later chunks or steps may arrive early and must be buffered by the link. The caller only reads
   * the returned array before its next call to the link.
   */
  receive(header: ChunkKey): Promise<Float32Array>;
}

export interface AllreduceOptions {
  rank: number;
  worldSize: number;
  generation: number;
  step: number;
  links: RingLinks;
  /** Divide the sum by worldSize (gradient averaging). Default false. */
  average?: boolean;
}

export interface AllreduceTimings { reduceScatterMs: number; allgatherMs: number }

/** Sum `buffer` element-wise across all ranks of the ring, in place. worldSize 1 communicates nothing. */
export async function ringAllreduce(buffer: Float32Array, options: AllreduceOptions): Promise<AllreduceTimings> {
  const { rank, worldSize, generation, step, links, average = false } = options;
  if (!(buffer instanceof Float32Array)) throw new TypeError('ringAllreduce needs a Float32Array buffer');
  const schedule = ringSchedule(rank, worldSize);
  if (worldSize === 1) return { reduceScatterMs: 0, allgatherMs: 0 };
  const started = performance.now();
  const ranges = chunkRanges(buffer.length, worldSize);
  const exchange = { buffer, ranges, links, generation, step };

  for (const transfer of schedule.reduceScatter) {
    const received = await exchangeChunk(exchange, Phase.reduceScatter, transfer);
    const { start } = ranges[transfer.recv];
    for (let i = 0; i < received.length; i++) buffer[start + i] += received[i];
  }
  if (average) {
    const { start, end } = ranges[ownedChunk(rank, worldSize)];
    for (let i = start; i < end; i++) buffer[i] /= worldSize;
  }
  const scattered = performance.now();
  for (const transfer of schedule.allgather) {
    const received = await exchangeChunk(exchange, Phase.allgather, transfer);
    buffer.set(received, ranges[transfer.recv].start);
  }
  return { reduceScatterMs: scattered - started, allgatherMs: performance.now() - scattered };
}

interface Exchange {
  buffer: Float32Array;
  ranges: ChunkRange[];
  links: RingLinks;
  generation: number;
  step: number;
}

/**
 * One ring step: send one chunk and receive another, concurrently (the receive is registered before
 * the send so a link that delivers synchronously never finds nobody waiting). Returns the received
 * chunk after checking it has the expected length.
 */
async function exchangeChunk(exchange: Exchange, phase: Phase, transfer: RingTransfer): Promise<Float32Array> {
  const { buffer, ranges, links, generation, step } = exchange;
  const outgoing = ranges[transfer.send];
  const expected = ranges[transfer.recv];
  const incoming = links.receive({ generation, step, phase, chunk: transfer.recv });
  let sent: void | Promise<void>;
  try {
    const data = buffer.subarray(outgoing.start, outgoing.end);
    sent = links.send({ generation, step, phase, chunk: transfer.send, count: data.length }, data);
  } catch (err) {
    incoming.catch(() => undefined); // the failure is reported through the rethrow below
    throw err;
  }
  // Promise.all observes both, so a rejection of either never goes unhandled.
  const [, received] = await Promise.all([sent, incoming]);
  const expectedCount = expected.end - expected.start;
  if (!(received instanceof Float32Array) || received.length !== expectedCount) {
    const got = received instanceof Float32Array ? `${received.length} values` : typeof received;
    throw new ProtocolError(
      `allreduce step ${step} phase ${phase} chunk ${transfer.recv}: expected ${expectedCount} values, got ${got}`,
    );
  }
  return received;
}
