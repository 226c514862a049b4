/**
 * The data plane: direct WebSocket links around the ring. Each worker listens for its predecessor and dials its
 * successor; gradient chunks flow successor-wards as binary frames (see shared/protocol.ts), never via the
 * coordinator. Implements RingLinks, so shared/allreduce.ts runs on it unchanged.
 *
 * Link setup per generation: the listener challenges, the dialing predecessor answers with an authenticated
 * `ringHello { gen, rank }`. A hello for a generation this worker has not been assigned yet is held until the
 * assignment arrives (assignments reach workers at slightly different times); one for an older generation is refused.
 * Both links are pinged; a silent peer is declared lost after the configured misses. A receive that waits longer than
 * the stall threshold is reported (and again at every further threshold), Horovod-style.
 *
 * Data path: outgoing frames are written in place into reused buffers (`prepare`, see shared/allreduce.ts), handed to
 * ws unmasked (no masking copy; bufferutil does the rest of ws's byte work) on a socket with Nagle off, and returned
 * to the pool when ws has written them. Received values are zero-copy views into the frame ws delivered.
 */
import http from 'node:http';
import https from 'node:https';
import WebSocket, { type WebSocketServer } from 'ws';
import { Admission, ADMISSION_DEFAULTS, dialAuthenticated } from '../shared/admission.js';
import { type ChunkValues, type OutgoingChunk, type RingLinks } from '../shared/ring/allreduce.js';
import { ChunkMailbox } from '../shared/ring/chunk-mailbox.js';
import {
  AuthError,
  CLOSE_CODES,
  PeerLostError,
  ProtocolError,
  StepAbortedError,
  type RingtrainError,
} from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { bracketHost } from '../shared/net.js';
import {
  CHUNK_HEADER_BYTES,
  chunkFrameBytes,
  decodeChunkValues,
  decodeFrame,
  encodeChunkFrame,
  FrameKind,
  HOST_IS_LITTLE_ENDIAN,
  PROTOCOL_VERSION,
  writeChunkHeader,
  type RingPeer,
  ValueEncoding,
  type ChunkHeader,
  type ChunkKey,
} from '../shared/wire/protocol.js';
import { closeWithError, keepAlive, rawToBytes } from '../shared/ws-util.js';

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
  token: string;
  maxPayloadBytes: number;
  /** How long to wait for both ring links of a new generation. */
  connectTimeoutMs: number;
  heartbeatMs: number;
  heartbeatMisses: number;
  stallWarnMs: number;
  /**
   * TLS for ring links (PEM texts): the listener serves wss:// with cert/key, successors are dialed over wss:// and
   * trusted through `ca` (the same CA as the control link's; without it, the system's CAs).
   */
  tls?: { cert: string; key: string; ca?: string };
  log: Logger;
}

export interface LinkDown {
  peerRank: number;
  during: 'forming' | 'training';
  /** Dials made (forming); 0 for a lost open link. */
  attempts: number;
  reason: string;
}

/** Successor dials: first retry after about DIAL_BACKOFF_MS, doubling up to DIAL_BACKOFF_MAX_MS, jittered ±25%. */
const DIAL_BACKOFF_MS = 100;
const DIAL_BACKOFF_MAX_MS = 2_000;
const DIAL_ATTEMPT_TIMEOUT_MS = 5_000;

export interface StallReport {
  step: number;
  waitingMs: number;
  peerRank: number;
}

interface PendingInbound {
  ws: WebSocket;
  gen: number;
  rank: number;
}

/** An outgoing frame buffer and typed views of its values, reused across steps. */
interface PooledFrame {
  bytes: Buffer;
  float32?: Float32Array;
  float16?: Uint16Array;
}

/**
 * Frame buffers by size: every step sends the same sizes, so after the first step no frame memory is allocated. A
 * frame goes back once ws has written it. Buffers are allocated outside Node's shared slab, so the values after the
 * 20-byte header are 4-byte aligned.
 */
class FramePool {
  private readonly free = new Map<number, PooledFrame[]>();
  private static readonly MAX_PER_SIZE = 64;

  take(size: number): PooledFrame {
    return this.free.get(size)?.pop() ?? { bytes: Buffer.allocUnsafeSlow(size) };
  }

  give(frame: PooledFrame): void {
    const list = this.free.get(frame.bytes.byteLength) ?? [];
    if (list.length < FramePool.MAX_PER_SIZE) list.push(frame);
    this.free.set(frame.bytes.byteLength, list);
  }

  clear(): void {
    this.free.clear();
  }
}

function valuesOf(frame: PooledFrame, header: ChunkHeader): ChunkValues {
  const offset = frame.bytes.byteOffset + CHUNK_HEADER_BYTES;
  if (header.encoding === ValueEncoding.float16)
    return (frame.float16 ??= new Uint16Array(frame.bytes.buffer, offset, header.count));
  return (frame.float32 ??= new Float32Array(frame.bytes.buffer, offset, header.count));
}

export class RingTransport implements RingLinks {
  private server?: http.Server;
  private wss?: WebSocketServer;
  private assignment?: RingAssignment;
  private outbound?: WebSocket;
  private inbound?: WebSocket;
  private pending: PendingInbound[] = [];
  private mailbox = new ChunkMailbox('this worker');
  private readonly frames = new FramePool();
  /** Receives waiting for a frame, and since when the oldest waits (stall detection without a timer per receive). */
  private waiting = 0;
  private waitingSince = 0;
  private waitingStep = 0;
  private stallReports = 0;
  private sent = 0;
  private stallTimer?: NodeJS.Timeout;
  private inboundWaiter?: () => void;
  /** Fails the connect() in progress when a newer assignment supersedes it. */
  private abortConnect?: (err: Error) => void;
  private lostHandler: (err: RingtrainError) => void = () => {};
  private linkDownHandler: (d: LinkDown) => void = () => {};
  private stallHandler: (s: StallReport) => void = () => {};
  private readonly admission: Admission<'ring'>;

  constructor(private readonly opts: RingTransportOptions) {
    this.admission = new Admission({
      ...ADMISSION_DEFAULTS,
      token: opts.token,
      context: 'ring',
      maxPayloadBytes: opts.maxPayloadBytes,
      log: opts.log,
    });
  }

  /** Start the listener for the predecessor; returns the bound port. */
  async listen(): Promise<number> {
    const upgradeOnly = (_req: http.IncomingMessage, res: http.ServerResponse) => res.writeHead(426).end();
    this.server = this.opts.tls
      ? https.createServer({ cert: this.opts.tls.cert, key: this.opts.tls.key }, upgradeOnly)
      : http.createServer(upgradeOnly);
    this.wss = this.admission.listen(this.server, (link, hello) => {
      this.pending.push({ ws: link, gen: hello.gen, rank: hello.rank });
      link.once('close', () => {
        this.pending = this.pending.filter((p) => p.ws !== link);
      });
      this.adoptPendingInbound();
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.opts.port, this.opts.host, () => resolve());
    });
    return (this.server.address() as { port: number }).port;
  }

  /** Called when a link of the current ring fails, once per failure. */
  onPeerLost(handler: (err: RingtrainError) => void): void {
    this.lostHandler = handler;
  }

  /**
   * Called once per link of the current ring that went down: the successor could not be dialed while forming, or an
   * open link was lost. The worker reports it so the coordinator re-forms the ring (and evicts an unreachable peer).
   */
  onLinkDown(handler: (d: LinkDown) => void): void {
    this.linkDownHandler = handler;
  }

  /** Called when a receive has waited past the stall threshold. */
  onStall(handler: (s: StallReport) => void): void {
    this.stallHandler = handler;
  }

  /**
   * Abandon the current ring: pending receives fail, links close, and the assignment is forgotten, so a predecessor's
   * hello that arrives before the next connect() is held for it instead of being adopted into the dead ring. (A
   * restarted coordinator numbers its generations afresh, so the next ring can carry the abandoned one's number.)
   */
  abandon(reason: string): void {
    this.abortConnect?.(new StepAbortedError(-1, reason));
    this.abortConnect = undefined;
    this.assignment = undefined;
    const old = [this.inbound, this.outbound];
    this.inbound = undefined;
    this.outbound = undefined;
    this.mailbox.close(new StepAbortedError(-1, reason));
    for (const ws of old) ws?.close(CLOSE_CODES.normal, reason);
    clearInterval(this.stallTimer);
    this.stallTimer = undefined;
  }

  /** Set up both links of a new generation's ring; resolves when the successor link is open and the predecessor said hello. */
  async connect(a: RingAssignment): Promise<void> {
    this.abandon('ring re-formed');
    this.assignment = a;
    this.mailbox = new ChunkMailbox(`rank ${a.rank}`);
    this.waiting = 0;
    if (a.worldSize === 1) return;
    this.watchStalls();
    const inboundReady = new Promise<void>((resolve) => {
      this.inboundWaiter = resolve;
    });
    this.adoptPendingInbound();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new PeerLostError(
              `ring neighbours of rank ${a.rank}: links not up within ${this.opts.connectTimeoutMs} ms`,
            ),
          ),
        this.opts.connectTimeoutMs,
      );
      this.abortConnect = reject;
    });
    try {
      await Promise.race([Promise.all([this.dialSuccessor(a), inboundReady]), timeout]);
    } finally {
      clearTimeout(timer);
      if (this.assignment === a) this.abortConnect = undefined;
    }
  }

  /**
   * Dial the successor, retrying with backoff (a joiner's listener may not be up yet, a link may be refused as busy)
   * until shortly before the form timeout; then report the successor unreachable, so the coordinator can evict it.
   */
  private async dialSuccessor(a: RingAssignment): Promise<void> {
    const scheme = this.opts.tls ? 'wss' : 'ws';
    const url = `${scheme}://${bracketHost(a.successor.host)}:${a.successor.port}/`;
    const deadline = Date.now() + Math.max(this.opts.connectTimeoutMs / 2, this.opts.connectTimeoutMs - 1_000);
    for (let attempt = 1; ; attempt++) {
      try {
        return this.attachOutbound(await this.dialOnce(url, a, deadline), a);
      } catch (err) {
        if (err instanceof AuthError || this.assignment !== a) throw err;
        const delay = Math.min(DIAL_BACKOFF_MAX_MS, DIAL_BACKOFF_MS * 2 ** (attempt - 1)) * (0.75 + Math.random() / 2);
        if (Date.now() + delay >= deadline) {
          const reason = (err as Error).message;
          this.opts.log.warn(
            { gen: a.gen, successor: a.successor, attempts: attempt, reason },
            'successor unreachable',
          );
          this.linkDownHandler({ peerRank: a.successor.rank, during: 'forming', attempts: attempt, reason });
          throw new PeerLostError(`successor rank ${a.successor.rank} at ${url}, ${attempt} dials`, { cause: err });
        }
        this.opts.log.debug({ attempt, delay, reason: (err as Error).message }, 'successor dial failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  private dialOnce(url: string, a: RingAssignment, deadline: number): Promise<WebSocket> {
    return dialAuthenticated(url, {
      token: this.opts.token,
      context: 'ring',
      timeoutMs: Math.max(100, Math.min(DIAL_ATTEMPT_TIMEOUT_MS, deadline - Date.now())),
      // Ring links go straight from worker to worker, never through proxies, which is what frame masking guards
      // against; an all-zero mask lets ws send gradient bytes without a masked copy.
      ws: {
        maxPayload: this.opts.maxPayloadBytes,
        generateMask: (mask) => mask.fill(0),
        ...(this.opts.tls?.ca ? { ca: this.opts.tls.ca } : {}),
      },
      answer: (auth) => ({ type: 'ringHello', gen: a.gen, rank: a.rank, protocolVersion: PROTOCOL_VERSION, auth }),
    });
  }

  private attachOutbound(ws: WebSocket, a: RingAssignment): void {
    if (this.assignment !== a) {
      ws.close(CLOSE_CODES.normal, 'ring re-formed');
      return;
    }
    this.outbound = ws;
    ws.on('close', (code) => this.linkLost(ws, `successor rank ${a.successor.rank}`, code, a.successor.rank));
    ws.on('error', (err) => this.opts.log.debug({ err }, 'successor link error'));
    ws.on('message', () => closeWithError(ws, new ProtocolError('the successor link carries nothing back')));
    keepAlive(ws, this.opts.heartbeatMs, this.opts.heartbeatMisses, () =>
      this.opts.log.warn({ successor: a.successor }, 'successor stopped answering pings'),
    );
    this.opts.log.debug({ gen: a.gen, successor: a.successor }, 'successor link open');
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
    ws.on('close', (code) => this.linkLost(ws, `predecessor rank ${a.predecessorRank}`, code, a.predecessorRank));
    keepAlive(ws, this.opts.heartbeatMs, this.opts.heartbeatMisses, () =>
      this.opts.log.warn({ predecessor: a.predecessorRank }, 'predecessor stopped answering pings'),
    );
    this.opts.log.debug({ gen: a.gen, predecessor: a.predecessorRank }, 'predecessor link open');
    this.inboundWaiter?.();
  }

  private onChunk(ws: WebSocket, bytes: Uint8Array, gen: number): void {
    try {
      if (bytes[0] !== FrameKind.chunk) {
        const frame = decodeFrame(bytes); // throws for anything malformed
        throw new ProtocolError(
          `unexpected '${frame.kind === 'control' ? frame.message.type : frame.kind}' on a ring link`,
        );
      }
      const { header, values } = decodeChunkValues(bytes);
      if (header.generation !== gen) return; // a frame of another ring: fenced off
      this.mailbox.deliver(header, values);
    } catch (err) {
      this.opts.log.warn({ err }, 'bad frame from predecessor, closing the link');
      closeWithError(ws, err);
    }
  }

  private linkLost(ws: WebSocket, peer: string, code: number, peerRank: number): void {
    if (ws !== this.inbound && ws !== this.outbound) return; // a link of an older ring
    if (ws === this.inbound) this.inbound = undefined;
    else this.outbound = undefined;
    const err = new PeerLostError(`${peer} (close code ${code})`);
    this.mailbox.close(err);
    this.lostHandler(err);
    this.linkDownHandler({ peerRank, during: 'training', attempts: 0, reason: err.message });
  }

  private successorLink(header: ChunkHeader): WebSocket {
    const ws = this.outbound;
    if (header.generation !== this.assignment?.gen) throw new StepAbortedError(header.step, 'the ring was re-formed');
    if (!ws || ws.readyState !== WebSocket.OPEN) throw new PeerLostError('successor (link not open)');
    return ws;
  }

  /**
   * Write a frame; resolves once ws has handed it to the socket (the buffer is then reusable). It never rejects: a
   * failed write means a failed link, reported through onPeerLost and the receives it fails.
   */
  /** Bytes of every gradient frame sent to the successor so far (headers included), for the step records. */
  get sentBytes(): number {
    return this.sent;
  }

  private write(ws: WebSocket, bytes: Buffer, pooled?: PooledFrame): Promise<void> {
    this.sent += bytes.byteLength;
    return new Promise((resolve) => {
      ws.send(bytes, { binary: true }, () => {
        if (pooled) this.frames.give(pooled);
        resolve();
      });
    });
  }

  /** Send a copy of `data` (a view into the caller's buffer, or float16 bits). */
  send(header: ChunkHeader, data: ChunkValues): Promise<void> {
    const ws = this.successorLink(header);
    return this.write(ws, encodeChunkFrame(header, data));
  }

  /** Frame memory for `header`'s values, to fill in place and send without another copy. */
  prepare(header: ChunkHeader): OutgoingChunk {
    const ws = this.successorLink(header);
    if (!HOST_IS_LITTLE_ENDIAN) {
      const values =
        header.encoding === ValueEncoding.float16 ? new Uint16Array(header.count) : new Float32Array(header.count);
      return { values, send: () => this.write(ws, encodeChunkFrame(header, values)) };
    }
    const frame = this.frames.take(chunkFrameBytes(header));
    writeChunkHeader(frame.bytes, header);
    let sent = false;
    return {
      values: valuesOf(frame, header),
      send: () => {
        if (sent) throw new ProtocolError('a prepared chunk can be sent only once');
        sent = true;
        return this.write(ws, frame.bytes, frame);
      },
    };
  }

  receive(key: ChunkKey): Promise<ChunkValues> {
    if (key.generation !== this.assignment?.gen)
      return Promise.reject(new StepAbortedError(key.step, 'the ring was re-formed'));
    if (this.mailbox.has(key)) return this.mailbox.take(key);
    if (this.waiting++ === 0) {
      this.waitingSince = Date.now();
      this.waitingStep = key.step;
      this.stallReports = 0;
    }
    const result = this.mailbox.take(key);
    const done = () => {
      this.waiting = Math.max(0, this.waiting - 1);
    };
    void result.then(done, done);
    return result;
  }

  /** One timer per ring: report a receive that has waited past every multiple of the stall threshold. */
  private watchStalls(): void {
    clearInterval(this.stallTimer);
    const every = this.opts.stallWarnMs;
    this.stallTimer = setInterval(
      () => {
        if (this.waiting === 0) return;
        const waitingMs = Date.now() - this.waitingSince;
        if (waitingMs < every * (this.stallReports + 1)) return;
        this.stallReports++;
        this.stallHandler({ step: this.waitingStep, waitingMs, peerRank: this.assignment?.predecessorRank ?? -1 });
      },
      Math.max(10, Math.min(1000, every / 4)),
    );
    this.stallTimer.unref();
  }

  async close(): Promise<void> {
    this.abandon('worker closing');
    for (const p of this.pending) p.ws.close(CLOSE_CODES.goingAway, 'worker closing');
    this.pending = [];
    this.frames.clear();
    for (const ws of this.wss?.clients ?? []) ws.terminate();
    await new Promise<void>((resolve) => (this.wss ? this.wss.close(() => resolve()) : resolve()));
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
