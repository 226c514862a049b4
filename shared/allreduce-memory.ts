/**
 * An in-memory ring transport for tests and single-process simulation: rank r's `send` delivers to
 * rank (r + 1) mod n's mailbox. Like a real socket it copies the data at send time (the sender goes
 * on mutating its buffer) and buffers frames that arrive before anyone asks for them, keyed by
 * (generation, step, phase, chunk).
 */
import { ChunkMailbox } from './chunk-mailbox.js';
import { ProtocolError } from './errors.js';
import type { ChunkHeader, ChunkKey, RingLinks } from './allreduce.js';

export interface InMemoryRingLink extends RingLinks {
  /** Frames delivered to this rank that nobody has asked for yet. */
  bufferedCount(): number;
  /** Receives currently waiting for a frame. */
  waitingCount(): number;
  /** Fail every pending and future receive on this link (simulates a lost predecessor). */
  close(reason?: unknown): void;
}

/** Links for ranks 0..worldSize-1 of one ring; `links[r]` is what rank r passes to ringAllreduce. */
export function createInMemoryRing(worldSize: number): InMemoryRingLink[] {
  if (!Number.isSafeInteger(worldSize) || worldSize < 1) {
    throw new RangeError(`worldSize must be a positive integer, got ${String(worldSize)}`);
  }
  const mailboxes = Array.from({ length: worldSize }, (_, rank) => new ChunkMailbox(`rank ${rank}`));
  return mailboxes.map((own, rank): InMemoryRingLink => {
    const next = mailboxes[(rank + 1) % worldSize];
    return {
      send(header: ChunkHeader, data: Float32Array): void {
        if (header.count !== data.length) {
          throw new ProtocolError(`chunk header count ${header.count} does not match ${data.length} values`);
        }
        next.deliver({ ...header }, data.slice());
      },
      receive: (header: ChunkKey) => own.take(header),
      bufferedCount: () => own.bufferedCount(),
      waitingCount: () => own.waitingCount(),
      close: (reason?: unknown) => own.close(reason),
    };
  });
}
