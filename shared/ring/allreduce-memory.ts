/**
 * An in-memory ring transport for tests and single-process simulation: rank r's `send` delivers to
 * rank (r + 1) mod n's mailbox. Like a real socket it copies the data at send time (the sender goes
 * on mutating its buffer) and buffers frames that arrive before anyone asks for them, keyed by
 * (generation, step, phase, chunk). It offers `prepare` (frame memory the allreduce fills in place) like the
 * WebSocket transport, so both of the allreduce's send paths run in tests.
 */
import { ChunkMailbox } from './chunk-mailbox.js';
import { ProtocolError } from '../errors.js';
import { type ChunkValues, type OutgoingChunk, type RingLinks } from './allreduce.js';
import { ValueEncoding, type ChunkHeader, type ChunkKey } from '../wire/chunk.js';

export interface InMemoryRingLink extends RingLinks {
  prepare(header: ChunkHeader): OutgoingChunk;
  /** Frames delivered to this rank that nobody has asked for yet. */
  bufferedCount(): number;
  /** Receives currently waiting for a frame. */
  waitingCount(): number;
  /** Fail every pending and future receive on this link (simulates a lost predecessor). */
  close(reason?: unknown): void;
}

function checkValues(header: ChunkHeader, data: ChunkValues): void {
  const type = header.encoding === ValueEncoding.float16 ? Uint16Array : Float32Array;
  if (!(data instanceof type)) throw new ProtocolError(`chunk data must be a ${type.name} for this header`);
  if (header.count !== data.length) {
    throw new ProtocolError(`chunk header count ${header.count} does not match ${data.length} values`);
  }
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
      send(header: ChunkHeader, data: ChunkValues): void {
        checkValues(header, data);
        next.deliver({ ...header }, data.slice());
      },
      prepare(header: ChunkHeader): OutgoingChunk {
        const values =
          header.encoding === ValueEncoding.float16 ? new Uint16Array(header.count) : new Float32Array(header.count);
        let sent = false;
        return {
          values,
          send: () => {
            if (sent) throw new ProtocolError('a prepared chunk can be sent only once');
            sent = true;
            next.deliver({ ...header }, values);
          },
        };
      },
      receive: (header: ChunkKey) => own.take(header),
      bufferedCount: () => own.bufferedCount(),
      waitingCount: () => own.waitingCount(),
      close: (reason?: unknown) => own.close(reason),
    };
  });
}
