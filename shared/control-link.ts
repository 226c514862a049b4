/**
 * The control link between the coordinator and one worker, as an interface (nats.js's Transport, ws's duplex pair):
 * the coordinator and the worker session see decoded, validated messages and nothing of sockets. Two
 * implementations: a WebSocket (the product) and an in-memory pair (unit tests of membership, re-forming, weight
 * sync, checkpoints and stall eviction that run in milliseconds, with no socket or process).
 *
 * Both sides encode and decode every message, so the in-memory pair validates exactly what the wire would. A frame
 * that fails to decode closes the link with a protocol-error code and never reaches the handler.
 */
import WebSocket from 'ws';
import { CLOSE_CODES, ProtocolError } from './errors.js';
import type { Logger } from './log.js';
import { decodeFrame, decodeMessage, encodeMessage, type Message } from './wire/protocol.js';
import { rawToBytes } from './ws-util.js';

export interface LinkClosed {
  code: number;
  reason: string;
}

export interface ControlLink {
  /** Send a message; false (and dropped) when the link is closing or closed. Throws ProtocolError for an invalid one. */
  send(message: Message): boolean;
  /** The handler of every message from the peer, in order; messages that arrive before it is set wait for it. */
  messages(handler: (message: Message) => void): void;
  /** Close the link (idempotent). The peer is cut off even if it does not answer the close handshake. */
  close(code?: number, reason?: string): void;
  /** Resolves once the link is closed, by either side or the network. */
  readonly closed: Promise<LinkClosed>;
}

/** Messages that arrived before anyone asked for them wait here. */
class Inbox {
  private handler?: (message: Message) => void;
  private queued: Message[] = [];

  set(handler: (message: Message) => void): void {
    this.handler = handler;
    const queued = this.queued;
    this.queued = [];
    for (const m of queued) handler(m);
  }

  deliver(message: Message): void {
    if (this.handler) this.handler(message);
    else this.queued.push(message);
  }
}

/** How long a closing WebSocket may take for the close handshake before it is cut (a stopped peer never answers). */
const CLOSE_GRACE_MS = 1_000;

/** A ControlLink over an open, authenticated WebSocket. */
export class WebSocketControlLink implements ControlLink {
  readonly closed: Promise<LinkClosed>;
  private readonly inbox = new Inbox();

  constructor(
    private readonly ws: WebSocket,
    private readonly log: Logger,
  ) {
    this.closed = new Promise((resolve) =>
      ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    ws.on('error', (err) => log.debug({ err: err.message }, 'control link error')); // the close follows
    ws.on('message', (data) => this.onFrame(rawToBytes(data)));
  }

  private onFrame(bytes: Uint8Array): void {
    let message: Message;
    try {
      const frame = decodeFrame(bytes);
      if (frame.kind !== 'control') throw new ProtocolError('a gradient chunk on the control link');
      message = frame.message;
    } catch (err) {
      this.log.warn({ err: (err as Error).message, code: (err as ProtocolError).code }, 'bad control message');
      this.close(CLOSE_CODES.protocolError, 'bad message');
      return;
    }
    this.inbox.deliver(message);
  }

  send(message: Message): boolean {
    if (this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(encodeMessage(message));
    return true;
  }

  messages(handler: (message: Message) => void): void {
    this.inbox.set(handler);
  }

  close(code: number = CLOSE_CODES.normal, reason = ''): void {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    if (this.ws.readyState !== WebSocket.CLOSING) this.ws.close(code, reason);
    const cut = setTimeout(() => this.ws.terminate(), CLOSE_GRACE_MS);
    cut.unref();
    void this.closed.then(() => clearTimeout(cut));
  }
}

class MemoryLink implements ControlLink {
  peer!: MemoryLink;
  readonly closed: Promise<LinkClosed>;
  private resolveClosed!: (c: LinkClosed) => void;
  private isClosed = false;
  private readonly inbox = new Inbox();

  constructor() {
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
  }

  send(message: Message): boolean {
    const bytes = encodeMessage(message); // validates, as the socket path does
    if (this.isClosed) return false;
    const peer = this.peer;
    // Asynchronous like a socket: a handler never runs inside the sender's call.
    setImmediate(() => {
      if (!peer.isClosed) peer.inbox.deliver(decodeMessage(bytes));
    });
    return true;
  }

  messages(handler: (message: Message) => void): void {
    this.inbox.set(handler);
  }

  close(code: number = CLOSE_CODES.normal, reason = ''): void {
    if (this.isClosed) return;
    const closed = { code, reason };
    this.shut(closed);
    setImmediate(() => this.peer.shut(closed));
  }

  private shut(closed: LinkClosed): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.resolveClosed(closed);
  }
}

/** Two connected in-memory links: what one sends, the other receives (encoded and decoded on the way). */
export function createLinkPair(): [ControlLink, ControlLink] {
  const a = new MemoryLink();
  const b = new MemoryLink();
  a.peer = b;
  b.peer = a;
  return [a, b];
}
