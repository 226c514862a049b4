/**
 * The data plane: direct WebSocket links around the ring. Each worker listens for its predecessor and dials its
 * successor; gradient chunks flow successor-wards as binary frames (see shared/protocol.ts), never via the
 * coordinator. Implements RingLinks, so shared/allreduce.ts runs on it unchanged.
 *
 * Link setup per generation: the dialing predecessor's first message is `ringHello { gen, rank }`; a hello for a
 * generation this worker has not been assigned yet is held until the assignment arrives (assignments reach workers
 * at slightly different times), one for an older generation is refused.
 */
import http from 'node:http';
import WebSocket, { WebSocketServer } from 'ws';
import type { ChunkHeader, ChunkKey, RingLinks } from '../shared/allreduce.js';
import { ChunkMailbox } from '../shared/chunk-mailbox.js';
import { CLOSE_CODES, PeerLostError, ProtocolError, type RingtrainError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { decodeFrame, encodeChunkFrame, PROTOCOL_VERSION, type RingPeer } from '../shared/protocol.js';
import { closeWithError, noDelay, rawToBytes, sendMessage } from '../shared/ws-util.js';

export interface RingAssignment {
  gen: number;
  rank: number;
  worldSize: number;
  successor: RingPeer;
  predecessorRank: number;
}

export interface RingTransportOptions {
  host: string;
  port: number;
  maxPayloadBytes: number;
  /** How long to wait for both ring links of a new generation. */
  connectTimeoutMs: number;
  log: Logger;
}

interface PendingInbound { ws: WebSocket; gen: number; rank: number }

export class RingTransport implements RingLinks {
  private server?: http.Server;
  private wss?: WebSocketServer;
  private assignment?: RingAssignment;
  private outbound?: WebSocket;
  private inbound?: WebSocket;
  private pending: PendingInbound[] = [];
  private mailbox = new ChunkMailbox('this worker');
  private inboundWaiter?: () => void;
  private lostHandler: (err: RingtrainError) => void = () => {};

  constructor(private readonly opts: RingTransportOptions) {}

  /** Start the listener for the predecessor; returns the bound port. */
  async listen(): Promise<number> {
    this.server = http.createServer((_req, res) => res.writeHead(426).end());
    this.wss = new WebSocketServer({ server: this.server, maxPayload: this.opts.maxPayloadBytes, perMessageDeflate: false });
    this.wss.on('connection', (ws) => this.onInboundConnection(ws));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.opts.port, this.opts.host, () => resolve());
    });
    return (this.server.address() as { port: number }).port;
  }

  /** Called when a link of the current ring fails, once per failure. */
  onPeerLost(handler: (err: RingtrainError) => void): void { this.lostHandler = handler; }

  /** Set up both links of a new generation's ring; resolves when the successor link is open and the predecessor said hello. */
  async connect(a: RingAssignment): Promise<void> {
    this.dropLinks();
    this.assignment = a;
    this.mailbox = new ChunkMailbox(`rank ${a.rank}`);
    if (a.worldSize === 1) return;
    const inboundReady = new Promise<void>((resolve) => { this.inboundWaiter = resolve; });
    this.adoptPendingInbound();
    const timeout = new Promise<never>((_, reject) => {
      const t = setTimeout(() => reject(new PeerLostError(`ring neighbours of rank ${a.rank}: links not up within ${this.opts.connectTimeoutMs} ms`)), this.opts.connectTimeoutMs);
      t.unref();
    });
    await Promise.race([Promise.all([this.dialSuccessor(a), inboundReady]), timeout]);
  }

  private async dialSuccessor(a: RingAssignment): Promise<void> {
    const url = `ws://${formatHost(a.successor.host)}:${a.successor.port}/`;
    // Ring links go straight from worker to worker, never through proxies, which is what frame masking guards
    // against; an all-zero mask lets ws send gradient bytes without a masked copy.
    const ws = new WebSocket(url, { maxPayload: this.opts.maxPayloadBytes, perMessageDeflate: false, generateMask: (mask) => mask.fill(0) });
    this.outbound = ws;
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', (err) => reject(new PeerLostError(`successor rank ${a.successor.rank} at ${url}`, { cause: err })));
    });
    noDelay(ws);
    ws.on('close', (code) => this.linkLost(ws, `successor rank ${a.successor.rank}`, code));
    ws.on('error', (err) => this.opts.log.debug({ err }, 'successor link error'));
    ws.on('message', () => closeWithError(ws, new ProtocolError('the successor link carries nothing back')));
    sendMessage(ws, { type: 'ringHello', gen: a.gen, rank: a.rank, protocolVersion: PROTOCOL_VERSION });
    this.opts.log.debug({ gen: a.gen, successor: a.successor }, 'successor link open');
  }

  private onInboundConnection(ws: WebSocket): void {
    noDelay(ws);
    ws.once('message', (data) => {
      try {
        const frame = decodeFrame(rawToBytes(data));
        if (frame.kind !== 'control' || frame.message.type !== 'ringHello') throw new ProtocolError('a ring link must start with ringHello');
        this.pending.push({ ws, gen: frame.message.gen, rank: frame.message.rank });
        this.adoptPendingInbound();
      } catch (err) {
        this.opts.log.warn({ err }, 'refused a ring link');
        closeWithError(ws, err);
      }
    });
    ws.on('error', (err) => this.opts.log.debug({ err }, 'inbound ring link error'));
  }

  /** Attach the held inbound link that matches the current assignment; refuse stale ones. */
  private adoptPendingInbound(): void {
    const a = this.assignment;
    if (!a) return;
    const keep: PendingInbound[] = [];
    for (const p of this.pending) {
      if (p.gen < a.gen || (p.gen === a.gen && (p.rank !== a.predecessorRank || this.inbound))) {
        p.ws.close(CLOSE_CODES.staleGeneration, 'not this ring');
      } else if (p.gen === a.gen) {
        this.attachInbound(p.ws, a);
      } else {
        keep.push(p);
      }
    }
    this.pending = keep;
  }

  private attachInbound(ws: WebSocket, a: RingAssignment): void {
    this.inbound = ws;
    ws.on('message', (data) => this.onChunk(ws, rawToBytes(data), a.gen));
    ws.on('close', (code) => this.linkLost(ws, `predecessor rank ${a.predecessorRank}`, code));
    this.opts.log.debug({ gen: a.gen, predecessor: a.predecessorRank }, 'predecessor link open');
    this.inboundWaiter?.();
  }

  private onChunk(ws: WebSocket, bytes: Uint8Array, gen: number): void {
    try {
      const frame = decodeFrame(bytes);
      if (frame.kind !== 'chunk') throw new ProtocolError(`unexpected '${frame.message.type}' on a ring link`);
      if (frame.header.generation !== gen) return; // a frame of another ring: fenced off
      this.mailbox.deliver(frame.header, frame.data);
    } catch (err) {
      this.opts.log.warn({ err }, 'bad frame from predecessor, closing the link');
      closeWithError(ws, err);
    }
  }

  private linkLost(ws: WebSocket, peer: string, code: number): void {
    if (ws !== this.inbound && ws !== this.outbound) return; // a link of an older ring
    const err = new PeerLostError(`${peer} (close code ${code})`);
    this.mailbox.close(err);
    this.lostHandler(err);
  }

  send(header: ChunkHeader, data: Float32Array): void {
    const ws = this.outbound;
    if (!ws || ws.readyState !== WebSocket.OPEN) throw new PeerLostError('successor (link not open)');
    ws.send(encodeChunkFrame(header, data));
  }

  receive(key: ChunkKey): Promise<Float32Array> {
    return this.mailbox.take(key);
  }

  private dropLinks(): void {
    const old = [this.inbound, this.outbound];
    this.inbound = undefined;
    this.outbound = undefined;
    this.mailbox.close(new PeerLostError('ring re-formed'));
    for (const ws of old) ws?.close(CLOSE_CODES.normal, 'ring re-formed');
  }

  async close(): Promise<void> {
    this.dropLinks();
    for (const p of this.pending) p.ws.close(CLOSE_CODES.goingAway, 'worker closing');
    this.pending = [];
    for (const ws of this.wss?.clients ?? []) ws.terminate();
    await new Promise<void>((resolve) => (this.wss ? this.wss.close(() => resolve()) : resolve()));
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

function formatHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}
