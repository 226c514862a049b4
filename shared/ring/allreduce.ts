/**
 * Ring allreduce over an abstract pair of links (to the successor, from the predecessor), so the
 * worker's WebSocket transport and the tests' in-memory transport run the same algorithm.
 *
 * Tensor fusion: callers hand over one fused flat buffer (every gradient tensor of the model, see
 * shared/train/replica.ts), Horovod's fusion buffer with no threshold. For pipelining it is cut the other way:
 * each of the n ring chunks is split into segments of at most `segmentBytes`, and every segment travels the
 * 2(n-1) ring steps on its own. A rank forwards segment k of a step as soon as it has added (or copied) it, while
 * segment k+1 is still on the wire, so sending, receiving and adding overlap across the ring instead of
 * alternating in lockstep. Frames carry the block index c + k * n for segment k of ring chunk c.
 *
 * Bitwise-identical replicas: in reduce-scatter every chunk's sum is accumulated along the ring in
 * one fixed order and finished on exactly one rank (its owner); with `average` the owner divides it;
 * allgather then copies (never re-adds) that final value to every other rank. So every rank ends
 * with the very same bits, whatever floating-point rounding the sum had. With `compression: 'fp16'`
 * values travel as float16 (Horovod's hvd.Compression.fp16) and are widened to float32 before every
 * addition; the owner rounds its finished chunk to float16 in place too, so all ranks still agree bit for bit.
 *
 * The schedule is in `ring.ts`. Frames are identified by (generation, step, phase, block): within one
 * phase of one step a rank receives each block at most once, so no ring-step counter is needed.
 *
 * The hot path allocates no buffers: links that offer `prepare` hand out (reused) frame memory that results are
 * written into (float16 values straight from the add/average loops, float32 ones by a native copy).
 */
import { ProtocolError } from '../errors.js';
import { FLOAT16_TO_FLOAT32, FLOAT16_TO_FLOAT32_BITS, encodeFloat16, float32BitsToFloat16 } from '../wire/float16.js';
import { Phase, ValueEncoding, type ChunkHeader, type ChunkKey } from '../wire/chunk.js';
import { chunkRanges, ringSchedule, type ChunkRange, type RingTransfer } from './schedule.js';

export const COMPRESSIONS = ['none', 'fp16'] as const;
export type Compression = (typeof COMPRESSIONS)[number];

/** Default pipelining segment: big enough that per-frame costs vanish, small enough to keep a ring step busy. */
export const DEFAULT_SEGMENT_BYTES = 1024 * 1024;

/** Values as they travel: float32, or float16 bits. */
export type ChunkValues = Float32Array | Uint16Array;

/** Frame memory a link handed out through `prepare`: fill `values`, then `send()` exactly once. */
export interface OutgoingChunk {
  readonly values: ChunkValues;
  send(): void | Promise<void>;
}

export interface RingLinks {
  /**
   * Send a block to the successor. `data` is a view into the caller's buffer (Float32Array) or float16
   * bits (Uint16Array, with header.encoding float16); the link must copy it (or be done with it) before the
   * call returns or its promise resolves, because the caller overwrites that part of the buffer afterwards.
   */
  send(header: ChunkHeader, data: ChunkValues): void | Promise<void>;
  /**
   * Resolve with the block (from the predecessor) matching generation/step/phase/chunk. Frames of
   * later blocks or steps may arrive early and must be buffered by the link. The caller only reads
   * the returned array before its next call to the link.
   */
  receive(header: ChunkKey): Promise<ChunkValues>;
  /** Optional zero-copy path: memory for the values of a frame with this header, to fill in place and send. */
  prepare?(header: ChunkHeader): OutgoingChunk;
}

export interface AllreduceOptions {
  rank: number;
  worldSize: number;
  generation: number;
  step: number;
  links: RingLinks;
  /** Divide the sum by worldSize (gradient averaging). Default false. */
  average?: boolean;
  /** Wire encoding: 'fp16' halves the bytes at float16 precision. Default 'none' (float32). */
  compression?: Compression;
  /** Pipelining segment size in bytes of the float32 buffer (Infinity = whole chunks). Default DEFAULT_SEGMENT_BYTES. */
  segmentBytes?: number;
}

/** `reduceScatterMs`: until this rank's owned chunk was complete; `allgatherMs`: the rest (the phases overlap). */
export interface AllreduceTimings {
  reduceScatterMs: number;
  allgatherMs: number;
}

/**
 * The segments of every ring chunk: `chunkRanges` cut further into pieces of at most `segmentValues` values (as
 * even as possible; an empty chunk keeps one empty segment, so every ring step still exchanges a frame).
 */
export function segmentRanges(length: number, worldSize: number, segmentValues: number): ChunkRange[][] {
  if (!(segmentValues >= 1)) throw new RangeError(`segmentValues must be at least 1, got ${String(segmentValues)}`);
  return chunkRanges(length, worldSize).map(({ start, end }) => {
    const pieces = Math.max(1, Math.ceil((end - start) / segmentValues));
    return chunkRanges(end - start, pieces).map((r) => ({ start: start + r.start, end: start + r.end }));
  });
}

const planCache = new Map<string, ChunkRange[][]>();

function cachedSegments(length: number, worldSize: number, segmentValues: number): ChunkRange[][] {
  const key = `${length}/${worldSize}/${segmentValues}`;
  let plan = planCache.get(key);
  if (!plan) {
    if (planCache.size > 64) planCache.clear();
    plan = segmentRanges(length, worldSize, segmentValues);
    planCache.set(key, plan);
  }
  return plan;
}

function segmentValuesOf(segmentBytes: number | undefined): number {
  const bytes = segmentBytes ?? DEFAULT_SEGMENT_BYTES;
  if (!(bytes >= 4)) throw new RangeError(`segmentBytes must be at least 4, got ${String(segmentBytes)}`);
  return bytes === Infinity ? Number.MAX_SAFE_INTEGER : Math.floor(bytes / 4);
}

/** Sum `buffer` element-wise across all ranks of the ring, in place. worldSize 1 communicates nothing. */
export async function ringAllreduce(buffer: Float32Array, options: AllreduceOptions): Promise<AllreduceTimings> {
  if (!(buffer instanceof Float32Array)) throw new TypeError('ringAllreduce needs a Float32Array buffer');
  const schedule = ringSchedule(options.rank, options.worldSize);
  const compression = options.compression ?? 'none';
  if (!COMPRESSIONS.includes(compression))
    throw new RangeError(`compression must be one of ${COMPRESSIONS.join(', ')}, got ${String(compression)}`);
  const segments = cachedSegments(buffer.length, options.worldSize, segmentValuesOf(options.segmentBytes));
  if (options.worldSize === 1) return { reduceScatterMs: 0, allgatherMs: 0 };
  const run = new RingRun(
    buffer,
    options,
    compression === 'fp16' ? ValueEncoding.float16 : ValueEncoding.float32,
    segments,
    [...schedule.reduceScatter, ...schedule.allgather],
  );
  return run.execute();
}

/** One allreduce: the flattened 2(n-1)-step schedule, walked segment by segment. */
class RingRun {
  private readonly n: number;
  private readonly bits: Uint32Array;
  private readonly sends: Promise<void>[] = [];
  private sendError: unknown = undefined;
  /** Generic links only: a send still reading the caller's buffer, per block index. */
  private readonly reading = new Map<number, Promise<void>>();

  constructor(
    private readonly buffer: Float32Array,
    private readonly o: AllreduceOptions,
    private readonly encoding: ValueEncoding,
    private readonly segments: ChunkRange[][],
    private readonly transfers: RingTransfer[],
  ) {
    this.n = o.worldSize;
    this.bits = new Uint32Array(buffer.buffer, buffer.byteOffset, buffer.length);
  }

  async execute(): Promise<AllreduceTimings> {
    const started = performance.now();
    const lastReduceScatter = this.n - 2;
    let scattered = started;
    const first = this.transfers[0]!.send;
    this.segments[first]!.forEach((range, k) => this.sendCopy(0, first, k, range));
    for (let t = 0; t < this.transfers.length; t++) {
      const c = this.transfers[t]!.recv;
      const pieces = this.segments[c]!;
      for (let k = 0; k < pieces.length; k++) {
        const received = await this.receive(t, c, k, pieces[k]!);
        await this.combine(t, c, k, pieces[k]!, received);
      }
      if (t === lastReduceScatter) scattered = performance.now();
    }
    await Promise.all(this.sends);
    if (this.sendError !== undefined) throw this.sendError;
    return { reduceScatterMs: scattered - started, allgatherMs: performance.now() - scattered };
  }

  private header(t: number, c: number, k: number, count: number): ChunkHeader {
    const header: ChunkHeader = {
      generation: this.o.generation,
      step: this.o.step,
      phase: t < this.n - 1 ? Phase.reduceScatter : Phase.allgather,
      chunk: c + k * this.n,
      count,
    };
    if (this.encoding === ValueEncoding.float16) header.encoding = ValueEncoding.float16;
    return header;
  }

  private async receive(t: number, c: number, k: number, range: ChunkRange): Promise<ChunkValues> {
    const { count, ...key } = this.header(t, c, k, range.end - range.start);
    const received = await this.o.links.receive(key);
    const type = this.encoding === ValueEncoding.float16 ? Uint16Array : Float32Array;
    if (!(received instanceof type) || received.length !== count) {
      const got =
        received instanceof Float32Array || received instanceof Uint16Array
          ? `${received.length} ${received.constructor.name} values`
          : typeof received;
      throw new ProtocolError(
        `allreduce step ${key.step} phase ${key.phase} chunk ${key.chunk}: expected ${count} ${type.name} values, got ${got}`,
      );
    }
    return received;
  }

  /** Fold a received block into the buffer, then forward the result to the next ring step (if any). */
  private async combine(t: number, c: number, k: number, range: ChunkRange, received: ChunkValues): Promise<void> {
    const next = t + 1 < this.transfers.length ? t + 1 : -1;
    const block = c + k * this.n;
    const pending = this.reading.get(block);
    if (pending) {
      await pending;
      this.reading.delete(block);
    }
    const out =
      next >= 0 && this.o.links.prepare
        ? this.o.links.prepare(this.header(next, c, k, range.end - range.start))
        : undefined;
    const target = out ? out.values : null;
    const fp16 = this.encoding === ValueEncoding.float16;
    if (t < this.n - 2) {
      if (fp16) addFloat16(this.buffer, this.bits, range.start, received as Uint16Array, target as Uint16Array | null);
      else addFloat32(this.buffer, range.start, received as Float32Array);
    } else if (t === this.n - 2) {
      const divisor = this.o.average ? this.n : 1;
      if (fp16)
        finishFloat16(
          this.buffer,
          this.bits,
          range.start,
          received as Uint16Array,
          divisor,
          target as Uint16Array | null,
        );
      else finishFloat32(this.buffer, range.start, received as Float32Array, divisor);
    } else if (fp16) {
      copyFloat16(this.bits, range.start, received as Uint16Array, target as Uint16Array | null);
    } else {
      this.buffer.set(received as Float32Array, range.start);
    }
    if (!fp16 && target !== null) (target as Float32Array).set(this.buffer.subarray(range.start, range.end));
    if (out) this.track(out.send());
    else if (next >= 0) this.sendCopy(next, c, k, range);
  }

  /** Send a block straight from the buffer (into prepared frame memory when the link offers it). */
  private sendCopy(t: number, c: number, k: number, range: ChunkRange): void {
    const header = this.header(t, c, k, range.end - range.start);
    const source = this.buffer.subarray(range.start, range.end);
    const links = this.o.links;
    if (links.prepare) {
      const out = links.prepare(header);
      if (out.values instanceof Uint16Array) encodeFloat16(source, out.values);
      else out.values.set(source);
      this.track(out.send());
      return;
    }
    let data: ChunkValues = source;
    if (this.encoding === ValueEncoding.float16) {
      data = new Uint16Array(source.length);
      encodeFloat16(source, data);
    }
    const sent = this.track(links.send(header, data));
    if (sent && data === source) this.reading.set(header.chunk, sent);
  }

  /** Keep a send's promise, observed at once so a failure is never an unhandled rejection. */
  private track(result: void | Promise<void>): Promise<void> | undefined {
    if (!(result instanceof Promise)) return undefined;
    const observed = result.then(undefined, (err: unknown) => {
      this.sendError ??= err;
    });
    this.sends.push(observed);
    return observed;
  }
}

// The loops below are the allreduce's arithmetic, one monomorphic function per case so they stay fast. `out` is the
// outgoing frame's memory when the block is forwarded through a prepared frame, else null. Float32 results are copied
// into it by the caller with a native copy: measured, a second store in the JS loop costs more than memcpy does. The
// float32 loops touch no property but the received block's length: a copy-out branch inside them, taken on one rank
// and not another, left V8 without type feedback for it, and the optimised loop deoptimised on every call (a 1 ms
// interpreted loop per step on a 256 KB buffer).

function addFloat32(buffer: Float32Array, start: number, received: Float32Array): void {
  const n = received.length;
  for (let i = 0; i < n; i++) buffer[start + i] += received[i]!;
}

/** The owner's last addition: sum, average, and the chunk's final value. */
function finishFloat32(buffer: Float32Array, start: number, received: Float32Array, divisor: number): void {
  const n = received.length;
  // Round the sum to float32 before dividing, exactly as a sum stored and divided in a second pass would.
  for (let i = 0; i < n; i++) buffer[start + i] = Math.fround(buffer[start + i]! + received[i]!) / divisor;
}

function addFloat16(
  buffer: Float32Array,
  bits: Uint32Array,
  start: number,
  received: Uint16Array,
  out: Uint16Array | null,
): void {
  const n = received.length;
  if (out === null) {
    for (let i = 0; i < n; i++) buffer[start + i] += FLOAT16_TO_FLOAT32[received[i]!]!;
    return;
  }
  for (let i = 0; i < n; i++) {
    buffer[start + i] += FLOAT16_TO_FLOAT32[received[i]!]!;
    out[i] = float32BitsToFloat16(bits[start + i]!);
  }
}

/** As finishFloat32, then rounded to float16 in place: what every other rank will decode. */
function finishFloat16(
  buffer: Float32Array,
  bits: Uint32Array,
  start: number,
  received: Uint16Array,
  divisor: number,
  out: Uint16Array | null,
): void {
  const n = received.length;
  for (let i = 0; i < n; i++) {
    buffer[start + i] = Math.fround(buffer[start + i]! + FLOAT16_TO_FLOAT32[received[i]!]!) / divisor;
    const half = float32BitsToFloat16(bits[start + i]!);
    bits[start + i] = FLOAT16_TO_FLOAT32_BITS[half]!;
    if (out !== null) out[i] = half;
  }
}

function copyFloat16(bits: Uint32Array, start: number, received: Uint16Array, out: Uint16Array | null): void {
  const n = received.length;
  for (let i = 0; i < n; i++) bits[start + i] = FLOAT16_TO_FLOAT32_BITS[received[i]!]!;
  if (out !== null) out.set(received);
}
