/**
 * Where gradient chunks from the ring predecessor wait for the allreduce that asks for them. A predecessor may run up
 * to a step ahead, so frames are buffered by (generation, step, phase, chunk) until taken; a receive that comes first
 * waits for its frame. Used by the WebSocket ring transport and the in-memory test ring alike.
 */
import type { ChunkValues } from './allreduce.js';
import { type ChunkHeader, type ChunkKey } from '../wire/chunk.js';
import { PeerLostError, ProtocolError } from '../errors.js';

interface Waiter {
  resolve(data: ChunkValues): void;
  reject(err: unknown): void;
}

function chunkKeyOf(header: ChunkKey): string {
  return `${header.generation}/${header.step}/${header.phase}/${header.chunk}`;
}

export class ChunkMailbox {
  private readonly early = new Map<string, ChunkValues>();
  private readonly waiters = new Map<string, Waiter>();
  private closedWith: unknown = undefined;
  private closed = false;

  constructor(private readonly owner: string) {}

  /** A frame arrived. A duplicate is a protocol error (the sender's schedule sends each key once). */
  deliver(header: ChunkHeader, data: ChunkValues): void {
    if (this.closed) throw new PeerLostError(this.owner, { cause: this.closedWith });
    const key = chunkKeyOf(header);
    const waiter = this.waiters.get(key);
    if (waiter) {
      this.waiters.delete(key);
      waiter.resolve(data);
      return;
    }
    if (this.early.has(key)) throw new ProtocolError(`${this.owner} got frame ${key} twice`);
    this.early.set(key, data);
  }

  take(header: ChunkKey): Promise<ChunkValues> {
    if (this.closed)
      return Promise.reject(new PeerLostError(`predecessor of ${this.owner}`, { cause: this.closedWith }));
    const key = chunkKeyOf(header);
    const data = this.early.get(key);
    if (data) {
      this.early.delete(key);
      return Promise.resolve(data);
    }
    if (this.waiters.has(key)) return Promise.reject(new ProtocolError(`${this.owner} waits for frame ${key} twice`));
    return new Promise((resolve, reject) => this.waiters.set(key, { resolve, reject }));
  }

  /** Whether the frame for `header` is already here (a take would not wait). */
  has(header: ChunkKey): boolean {
    return this.early.has(chunkKeyOf(header));
  }

  /** Fail every pending and future receive. */
  close(reason: unknown): void {
    if (this.closed) return;
    this.closed = true;
    this.closedWith = reason;
    const err = new PeerLostError(`predecessor of ${this.owner}`, { cause: reason });
    for (const waiter of this.waiters.values()) waiter.reject(err);
    this.waiters.clear();
    this.early.clear();
  }

  bufferedCount(): number {
    return this.early.size;
  }
  waitingCount(): number {
    return this.waiters.size;
  }
}
