/**
 * Input from the network never crashes a ringtrain process. An in-process coordinator and a worker's ring listener
 * (RingTransport, the class startWorker listens with) are fed garbage binary and text frames before and after
 * authentication, truncated and oversized frames, broken WebSocket framing and non-HTTP bytes on raw TCP,
 * valid-looking messages of the wrong type, direction or time, and a flood of connections that never authenticate.
 * Each bad link is closed with the documented code (1008 before authentication, 1002 for a bad message after it,
 * 1009 past maxPayload); the process carries on. At the end a real worker process joins the battered coordinator and
 * a run finishes, and two ring listeners that took the same abuse still form a ring and exchange gradient chunks.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { COORDINATOR_DEFAULTS, startCoordinator, type CoordinatorHandle } from '../coordinator/start.js';
import { ADMISSION_DEFAULTS } from '../shared/admission.js';
import { authAnswer } from '../shared/auth.js';
import { validateTrainConfig } from '../shared/config.js';
import { CLOSE_CODES, type RingtrainError } from '../shared/errors.js';
import { createRootLogger } from '../shared/log.js';
import { createProgressView } from '../shared/cli/progress.js';
import {
  decodeMessage,
  encodeChunkFrame,
  encodeMessage,
  FrameKind,
  PROTOCOL_VERSION,
  type Message,
  type MessageOf,
  Phase,
} from '../shared/wire/protocol.js';
import { RingTransport } from '../worker/ring-transport.js';
import { challengeOf, controlFrame, probe, type Probe } from './helpers/probe.js';
import { killAll, readJsonLines, runCli, tempDir, TEST_TOKEN, waitUntil } from './helpers/procs.js';

/** Above the largest legitimate message of the tiny run (mlp weights + Adam slots, about 2.8 MB). */
const MAX_PAYLOAD = 8 * 1024 * 1024;
const RING_MAX_PAYLOAD = 1024 * 1024;
const MAX_PENDING = 32;
const AUTH_TIMEOUT_MS = 2_000;
const FLOOD = 200;

interface LogLine {
  level: number;
  msg: string;
  link?: string;
}

// ---------------------------------------------------------------------------------------------------------------
// Raw WebSocket clients

function typesOf(p: Probe): string[] {
  return p.received.map((bytes) => decodeMessage(bytes).type);
}

function hello(auth: Uint8Array, workerId = 'abuser'): MessageOf<'hello'> {
  return {
    type: 'hello',
    protocolVersion: PROTOCOL_VERSION,
    workerId,
    host: 'abuser-host',
    ringHost: '127.0.0.1',
    ringPort: 1,
    hasData: false,
    backend: 'cpu',
    pid: process.pid,
    auth,
  };
}

const chunk = (generation: number, values: number[]) =>
  encodeChunkFrame(
    { generation, step: 0, phase: Phase.reduceScatter, chunk: 0, count: values.length },
    new Float32Array(values),
  );

/** Frames that are not a handshake: each must get the link refused. */
function notHandshakes(): Array<[string, Uint8Array | string]> {
  const validHello = encodeMessage(hello(new Uint8Array(32)));
  return [
    ['random bytes', randomBytes(64)],
    ['an empty frame', new Uint8Array(0)],
    ['a single byte', Uint8Array.of(1)],
    ['a text frame', 'hello, is this the coordinator?'],
    ['a truncated hello', validHello.subarray(0, validHello.length >> 1)],
    ['a hello of protocol version 2', Uint8Array.from([FrameKind.control, 2, ...validHello.subarray(2)])],
    ['a hello with wrong field types', controlFrame({ ...hello(new Uint8Array(32)), ringPort: 'http', pid: -1.5 })],
    ['a gradient chunk', chunk(1, [1, 2, 3])],
    [
      "a 'ready' instead of the answer",
      encodeMessage({ type: 'ready', gen: 1, rank: 0, step: 0, hasState: false, epoch: 0, consumed: 0, lineage: '' }),
    ],
    [
      "a 'welcome' (the wrong direction)",
      encodeMessage({ type: 'welcome', protocolVersion: PROTOCOL_VERSION, workerId: 'x', runId: 'y' }),
    ],
    ['64 KiB of zeros (beyond the handshake limit)', new Uint8Array(ADMISSION_DEFAULTS.maxHandshakeBytes + 1)],
  ];
}

async function expectClose(p: Probe, code: number, label: string): Promise<{ code: number; reason: string }> {
  const closed = await p.closed;
  assert.equal(closed.code, code, `${label}: close code (reason '${closed.reason}')`);
  return closed;
}

// ---------------------------------------------------------------------------------------------------------------
// Raw TCP

interface ServerFrame {
  opcode: number;
  payload: Buffer;
}

/** A TCP client that parses what the server sends: the HTTP response head, then unmasked WebSocket frames. */
class RawClient {
  readonly socket: net.Socket;
  head = '';
  readonly frames: ServerFrame[] = [];
  readonly closed: Promise<void>;
  private buffer = Buffer.alloc(0);
  private wake = new Set<() => void>();

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('error', () => undefined);
    this.socket.on('data', (data) => {
      this.buffer = Buffer.concat([this.buffer, data]);
      this.parse();
    });
    this.closed = new Promise((resolve) =>
      this.socket.once('close', () => {
        resolve();
        this.notify();
      }),
    );
  }

  get bytesReceived(): number {
    return this.socket.bytesRead;
  }

  /** Complete a WebSocket upgrade by hand (nothing in `ws` to keep us from sending broken frames afterwards). */
  async upgrade(): Promise<void> {
    this.socket.write(
      [
        'GET / HTTP/1.1',
        'Host: 127.0.0.1',
        'Upgrade: websocket',
        'Connection: Upgrade',
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
        'Sec-WebSocket-Version: 13',
        '',
        '',
      ].join('\r\n'),
    );
    await this.until(() => this.frames.length > 0, 'the challenge');
    assert.match(this.head, /^HTTP\/1\.1 101 /);
    assert.equal(this.frames[0]!.opcode, 0x2, 'a binary challenge');
  }

  /** The close code of the server's close frame. */
  async closeCode(): Promise<number> {
    await this.until(() => this.frames.some((f) => f.opcode === 0x8), 'a close frame');
    return this.frames.find((f) => f.opcode === 0x8)!.payload.readUInt16BE(0);
  }

  until(done: () => boolean, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (done()) {
          this.wake.delete(check);
          resolve();
        } else if (this.socket.destroyed) {
          this.wake.delete(check);
          reject(new Error(`socket closed before ${what}`));
        }
      };
      this.wake.add(check);
      check();
    });
  }

  private notify(): void {
    for (const w of [...this.wake]) w();
  }

  private parse(): void {
    if (!this.head) {
      const end = this.buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      this.head = this.buffer.subarray(0, end).toString('latin1');
      this.buffer = this.buffer.subarray(end + 4);
    }
    for (;;) {
      if (this.buffer.length < 2) break;
      let length = this.buffer[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.buffer.length < 4) break;
        length = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.buffer.length < 10) break;
        length = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (this.buffer.length < offset + length) break;
      this.frames.push({ opcode: this.buffer[0]! & 0x0f, payload: this.buffer.subarray(offset, offset + length) });
      this.buffer = this.buffer.subarray(offset + length);
    }
    this.notify();
  }
}

/** A client-to-server frame header (+ masked payload); `announced` lets the header lie about the length. */
function clientFrame(opts: {
  opcode: number;
  payload: Buffer;
  fin?: boolean;
  masked?: boolean;
  announced?: number;
}): Buffer {
  const length = opts.announced ?? opts.payload.length;
  const first = ((opts.fin ?? true) ? 0x80 : 0) | opts.opcode;
  const maskBit = (opts.masked ?? true) ? 0x80 : 0;
  const head =
    length < 126
      ? Buffer.from([first, maskBit | length])
      : Buffer.from([first, maskBit | 126, length >> 8, length & 0xff]);
  if (!(opts.masked ?? true)) return Buffer.concat([head, opts.payload]);
  const mask = randomBytes(4);
  const body = Buffer.from(opts.payload.map((b, i) => b ^ mask[i % 4]!));
  return Buffer.concat([head, mask, body]);
}

// ---------------------------------------------------------------------------------------------------------------

describe('the coordinator under network abuse', { timeout: 90_000 }, () => {
  let dir: string;
  let logFile: string;
  let coordinator: CoordinatorHandle;
  let url: string;
  let refused = 0;

  before(async () => {
    dir = await tempDir('abuse');
    logFile = path.join(dir, 'coordinator.log.jsonl');
    coordinator = await startCoordinator({
      ...COORDINATOR_DEFAULTS,
      host: '127.0.0.1',
      port: 0,
      token: TEST_TOKEN,
      runDir: dir,
      minWorkers: 1,
      maxPayloadBytes: MAX_PAYLOAD,
      maxPendingAuth: MAX_PENDING,
      authTimeoutMs: AUTH_TIMEOUT_MS,
      train: validateTrainConfig({ model: 'mlp', epochs: 1, batchSize: 32, trainLimit: 256, testLimit: 100 }),
      log: createRootLogger({ runDir: dir, name: 'coordinator', consoleLevel: 'silent' }),
      progress: createProgressView({ quiet: true }),
    });
    url = `ws://127.0.0.1:${coordinator.port}/`;
  });

  after(async () => {
    killAll();
    await coordinator?.close('test over');
  });

  /** An admitted link: challenge answered, welcome and (minWorkers 1) the ring assignment received. */
  async function joined(): Promise<{ p: Probe; assign: MessageOf<'assign'> }> {
    const p = probe(url);
    const nonce = await challengeOf(p);
    p.ws.send(encodeMessage(hello(authAnswer(TEST_TOKEN, 'control', nonce))));
    assert.equal(decodeMessage(await p.message(1)).type, 'welcome');
    const assign = decodeMessage(await p.message(2));
    assert.equal(assign.type, 'assign');
    return { p, assign: assign as MessageOf<'assign'> };
  }

  test('anything but a handshake before authentication: refused with 1008, only the challenge sent', async () => {
    for (const [label, frame] of notHandshakes()) {
      const p = probe(url);
      await challengeOf(p);
      p.ws.send(frame);
      const closed = await expectClose(p, CLOSE_CODES.policyViolation, label);
      assert.ok(closed.reason.length > 0, `${label}: a reason`);
      assert.deepEqual(typesOf(p), ['challenge'], label);
      refused++;
    }
  });

  test('an oversized frame (beyond maxPayload) is cut off with 1009, before and after authentication', async () => {
    const early = probe(url);
    await challengeOf(early);
    early.ws.send(Buffer.alloc(MAX_PAYLOAD + 1));
    await expectClose(early, CLOSE_CODES.tooBig, 'before authentication');

    const { p } = await joined();
    p.ws.send(Buffer.alloc(MAX_PAYLOAD + 1, 0xab));
    await expectClose(p, CLOSE_CODES.tooBig, 'after authentication');
  });

  test('after authentication, garbage and wrong-type or wrong-direction messages close that link with 1002', async () => {
    const cases: Array<[string, (a: MessageOf<'assign'>) => Uint8Array | string]> = [
      ['random bytes', () => randomBytes(100)],
      ['a text frame', () => 'not a binary frame'],
      [
        'a truncated ready',
        (a) =>
          encodeMessage({
            type: 'ready',
            gen: a.gen,
            rank: a.rank,
            step: 0,
            hasState: false,
            epoch: 0,
            consumed: 0,
            lineage: '',
          }).subarray(0, 9),
      ],
      [
        'a ready with wrong field types',
        (a) => controlFrame({ type: 'ready', gen: String(a.gen), rank: [a.rank], step: null, hasState: 'yes' }),
      ],
      ['a gradient chunk', (a) => chunk(a.gen, [0.5])],
      ["'assign' sent by a worker", (a) => encodeMessage({ ...a })],
      [
        "'start' sent by a worker",
        (a) =>
          encodeMessage({
            type: 'start',
            gen: a.gen,
            epoch: 0,
            step: 0,
            consumed: 0,
            lineage: 'run:1',
            weights: new Uint8Array(0),
            optimizer: new Uint8Array(0),
          }),
      ],
      ["'requestWeights' sent by a worker", (a) => encodeMessage({ type: 'requestWeights', gen: a.gen })],
      [
        "'welcome' sent by a worker",
        () => encodeMessage({ type: 'welcome', protocolVersion: PROTOCOL_VERSION, workerId: 'x', runId: 'y' }),
      ],
      ["'stop' sent by a worker", () => encodeMessage({ type: 'stop', reason: 'you are done', exitCode: 0 })],
      [
        "'challenge' sent by a worker",
        () => encodeMessage({ type: 'challenge', protocolVersion: PROTOCOL_VERSION, nonce: new Uint8Array(32) }),
      ],
      [
        "'ringHello' on the control link",
        (a) =>
          encodeMessage({
            type: 'ringHello',
            gen: a.gen,
            rank: a.rank,
            protocolVersion: PROTOCOL_VERSION,
            auth: new Uint8Array(32),
          }),
      ],
      ['a second hello', () => encodeMessage(hello(new Uint8Array(32)))],
    ];
    for (const [label, frame] of cases) {
      const { p, assign } = await joined();
      p.ws.send(frame(assign));
      await expectClose(p, CLOSE_CODES.protocolError, label);
      assert.deepEqual(typesOf(p), ['challenge', 'welcome', 'assign'], `${label}: nothing else was sent`);
    }
  });

  test('messages out of order or of another generation are dropped without harm; the link stays up', async () => {
    const { p, assign: a } = await joined();
    // Epoch 9 never runs in this 1-epoch job, so none of this can leak into the real run's results below.
    const record = {
      epoch: 9,
      step: 3,
      loss: 1,
      samples: 0,
      dataMs: 0,
      computeMs: 0,
      allreduceMs: 0,
      applyMs: 0,
      reduceScatterMs: 0,
      startedAt: 0,
    };
    const sequence: Message[] = [
      { type: 'metrics', gen: a.gen, rank: a.rank, records: [record] }, // before 'ready'
      {
        type: 'weights',
        gen: a.gen,
        rank: a.rank,
        step: 99,
        epoch: 9,
        weights: new Uint8Array(8),
        optimizer: new Uint8Array(0),
      }, // never asked for
      { type: 'evalResult', gen: a.gen, rank: a.rank, epoch: 9, correct: 1, total: 2, lossSum: 1 }, // before any shard
      { type: 'epochDone', gen: a.gen, rank: a.rank, epoch: 9, steps: 1, trainMs: 0 },
      { type: 'stall', gen: a.gen, rank: a.rank, step: 1, waitingMs: 1e9, peerRank: 0 }, // while not training
      { type: 'ready', gen: a.gen + 7, rank: a.rank, step: 0, hasState: false, epoch: 0, consumed: 0, lineage: '' }, // a future generation
      { type: 'failed', gen: a.gen + 7, rank: a.rank, code: 'X', message: 'of another generation, so not fatal' },
      { type: 'ready', gen: a.gen, rank: a.rank + 1, step: 0, hasState: false, epoch: 0, consumed: 0, lineage: '' }, // someone else's rank
      { type: 'heartbeat', gen: 0, rank: -1, step: 0 },
      { type: 'ready', gen: a.gen, rank: a.rank, step: 0, hasState: false, epoch: 0, consumed: 0, lineage: '' },
      { type: 'ready', gen: a.gen, rank: a.rank, step: 0, hasState: false, epoch: 0, consumed: 0, lineage: '' }, // twice
    ];
    for (const m of sequence) p.ws.send(encodeMessage(m));
    // A bad message last: it is handled after all the above, so the link was up until here.
    p.ws.send(encodeMessage(hello(new Uint8Array(32))));
    const closed = await expectClose(p, CLOSE_CODES.protocolError, 'the final bad message');
    assert.equal(closed.reason, 'unexpected message');
    assert.deepEqual(
      typesOf(p),
      ['challenge', 'welcome', 'assign', 'requestWeights'],
      'the one ready of this generation asked for the weights',
    );
  });

  test('raw TCP: non-HTTP bytes are dropped; broken WebSocket framing closes only that link', async () => {
    const garbage = new RawClient(coordinator.port);
    garbage.socket.write(Buffer.concat([randomBytes(512), Buffer.from('\r\n\r\n')]));
    await garbage.closed;
    assert.equal(garbage.bytesReceived, 0, 'nothing is answered to non-HTTP bytes');

    const unmasked = new RawClient(coordinator.port);
    await unmasked.upgrade();
    unmasked.socket.write(clientFrame({ opcode: 0x2, payload: Buffer.from([1, 1, 0x80]), masked: false }));
    assert.equal(await unmasked.closeCode(), CLOSE_CODES.protocolError, 'an unmasked client frame');
    unmasked.socket.destroy();
    await unmasked.closed;

    const reserved = new RawClient(coordinator.port);
    await reserved.upgrade();
    reserved.socket.write(clientFrame({ opcode: 0x3, payload: Buffer.from('x') }));
    assert.equal(await reserved.closeCode(), CLOSE_CODES.protocolError, 'a reserved opcode');
    reserved.socket.destroy();
    await reserved.closed;

    // A frame header announcing 4 KiB followed by 10 bytes, then the connection ends: the link goes, nothing else.
    const truncated = new RawClient(coordinator.port);
    await truncated.upgrade();
    truncated.socket.end(clientFrame({ opcode: 0x2, payload: randomBytes(10), announced: 4096 }).subarray(0, 18));
    await truncated.closed;

    // A message fragment that is never finished, then the socket is dropped.
    const fragment = new RawClient(coordinator.port);
    await fragment.upgrade();
    fragment.socket.write(clientFrame({ opcode: 0x2, payload: Buffer.from([1, 1]), fin: false }));
    fragment.socket.destroy();
    await fragment.closed;

    const health = await fetch(`http://127.0.0.1:${coordinator.port}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(await health.text(), 'ok\n');
  });

  test(`a flood of ${FLOOD} connections that never authenticate: ${MAX_PENDING} are challenged, the rest refused at once`, async () => {
    const flood = Array.from({ length: FLOOD }, () => probe(url));
    const closes = await Promise.all(flood.map((p) => p.closed));
    assert.ok(
      closes.every((c) => c.code === CLOSE_CODES.policyViolation),
      'every flood link is refused with 1008',
    );
    const challenged = flood.filter((p) => p.received.length > 0);
    const turnedAway = flood.filter((p) => p.received.length === 0);
    assert.equal(challenged.length, MAX_PENDING, 'only maxPendingAuth links wait for an answer at a time');
    for (const p of challenged) assert.deepEqual(typesOf(p), ['challenge']);
    for (const p of turnedAway) assert.equal((await p.closed).reason, 'too many unauthenticated connections');
    refused += MAX_PENDING; // the challenged ones were refused by the auth timeout, with a log line each

    // The slots were all released: a new link is challenged and can still authenticate.
    const { p } = await joined();
    p.ws.close();
    await p.closed;

    const lines = await readJsonLines<LogLine>(logFile);
    const floodWarnings = lines.filter((l) => l.msg === 'too many unauthenticated links; refusing').length;
    assert.ok(
      floodWarnings >= 1 && floodWarnings <= Math.ceil((FLOOD - MAX_PENDING) / 100),
      `rate-limited flood warnings: ${floodWarnings}`,
    );
    assert.equal(
      lines.filter((l) => l.msg === 'refused a link' && l.link === 'control').length,
      refused,
      'one log line per refused link',
    );
  });

  test('after all that, a real worker process joins and the run finishes', async () => {
    const worker = runCli([
      'worker',
      '--coordinator',
      url,
      '--listen',
      '127.0.0.1:0',
      '--advertise',
      '127.0.0.1',
      '--backend',
      'cpu',
    ]);
    const summary = await coordinator.done;
    assert.equal(summary.outcome, 'finished', summary.error);
    assert.equal(summary.workers, 1);
    assert.equal(summary.epochs, 1);
    assert.equal(summary.steps, 8, '256 samples / batch 32 on one worker');
    assert.equal(summary.history[0]!.samples, 256, 'no sample counts leaked in from the abusive links');
    assert.ok(summary.testAccuracy > 0.2, `accuracy ${summary.testAccuracy}`);
    assert.equal(await worker.exited(30_000), 0, worker.output());
  });
});

describe("a worker's ring listener under network abuse", { timeout: 60_000 }, () => {
  let dir: string;
  let victim: RingTransport;
  let peer: RingTransport;
  let victimUrl: string;
  let peerPort: number;
  const lost: RingtrainError[] = [];

  const ring = (name: string) =>
    new RingTransport({
      host: '127.0.0.1',
      port: 0,
      token: TEST_TOKEN,
      maxPayloadBytes: RING_MAX_PAYLOAD,
      connectTimeoutMs: 10_000,
      heartbeatMs: 1_000,
      heartbeatMisses: 5,
      stallWarnMs: 60_000,
      log: createRootLogger({ runDir: dir, name, consoleLevel: 'silent' }),
    });

  before(async () => {
    dir = await tempDir('ring-abuse');
    victim = ring('victim');
    peer = ring('peer');
    victimUrl = `ws://127.0.0.1:${await victim.listen()}/`;
    peerPort = await peer.listen();
    victim.onPeerLost((err) => lost.push(err));
  });

  after(async () => {
    await victim?.close();
    await peer?.close();
  });

  /**
   * Give the victim generation `gen` (rank 1 of 2, the peer as successor) and dial it as its predecessor with a valid
   * ringHello: the raw client becomes the victim's authenticated inbound link.
   */
  async function adoptedPredecessor(gen: number): Promise<Probe> {
    const connected = victim.connect({
      gen,
      rank: 1,
      worldSize: 2,
      successor: { host: '127.0.0.1', port: peerPort, rank: 0 },
      predecessorRank: 0,
    });
    const p = probe(victimUrl);
    const nonce = await challengeOf(p);
    p.ws.send(
      encodeMessage({
        type: 'ringHello',
        gen,
        rank: 0,
        protocolVersion: PROTOCOL_VERSION,
        auth: authAnswer(TEST_TOKEN, 'ring', nonce),
      }),
    );
    await connected;
    return p;
  }

  test('anything but a ringHello with the right proof is refused with 1008; an oversized frame with 1009', async () => {
    const cases: Array<[string, (nonce: Uint8Array) => Uint8Array | string]> = [
      ...notHandshakes().map(([label, frame]): [string, () => Uint8Array | string] => [label, () => frame]),
      ['a control hello with the right proof', (nonce) => encodeMessage(hello(authAnswer(TEST_TOKEN, 'ring', nonce)))],
      [
        'a ringHello with a wrong token',
        (nonce) =>
          encodeMessage({
            type: 'ringHello',
            gen: 1,
            rank: 0,
            protocolVersion: 1,
            auth: authAnswer('not-the-token', 'ring', nonce),
          }),
      ],
    ];
    for (const [label, frame] of cases) {
      const p = probe(victimUrl);
      p.ws.send(frame(await challengeOf(p)));
      await expectClose(p, CLOSE_CODES.policyViolation, label);
      assert.deepEqual(typesOf(p), ['challenge'], label);
    }
    const big = probe(victimUrl);
    await challengeOf(big);
    big.ws.send(Buffer.alloc(RING_MAX_PAYLOAD + 1));
    await expectClose(big, CLOSE_CODES.tooBig, 'oversized before authentication');

    const refusals = (await readJsonLines<LogLine>(path.join(dir, 'victim.log.jsonl'))).filter(
      (l) => l.msg === 'refused a link',
    );
    assert.equal(refusals.length, cases.length, 'one log line per refused link');
  });

  test('on an authenticated predecessor link, bad frames close that link (1002, 4001, 1009) and report the peer lost', async () => {
    const cases: Array<[string, (gen: number) => Uint8Array | string, number]> = [
      [
        'a chunk header with phase 7',
        () => Uint8Array.from([FrameKind.chunk, PROTOCOL_VERSION, 7, 0, ...new Array<number>(16).fill(0)]),
        CLOSE_CODES.protocolError,
      ],
      ['a truncated chunk', (gen) => chunk(gen, [1, 2, 3]).subarray(0, 26), CLOSE_CODES.protocolError],
      [
        "a control message ('ready') on the ring",
        (gen) =>
          encodeMessage({ type: 'ready', gen, rank: 0, step: 0, hasState: false, epoch: 0, consumed: 0, lineage: '' }),
        CLOSE_CODES.protocolError,
      ],
      [
        'random bytes behind a valid prefix',
        () => Buffer.concat([Buffer.from([FrameKind.control, PROTOCOL_VERSION]), randomBytes(40)]),
        CLOSE_CODES.protocolError,
      ],
      ['a text frame (its first bytes read as another protocol version)', () => 'garbage', CLOSE_CODES.versionMismatch],
      ['an oversized frame', () => Buffer.alloc(RING_MAX_PAYLOAD + 1), CLOSE_CODES.tooBig],
    ];
    let gen = 1;
    for (const [label, frame, code] of cases) {
      gen++;
      const p = await adoptedPredecessor(gen);
      p.ws.send(frame(gen));
      await expectClose(p, code, label);
      assert.deepEqual(typesOf(p), ['challenge'], `${label}: the predecessor link carries nothing back`);
      // The victim's side of the close completes on its own schedule; the loss must be reported before the next ring.
      await waitUntil(() => lost.length === gen - 1, `${label}: the lost predecessor reported`, 10_000);
      assert.match(lost.at(-1)!.message, /predecessor rank 0/);
    }
    assert.equal(lost.length, cases.length, 'each lost predecessor link was reported once');

    // Fenced and duplicated frames: a frame of another generation is dropped, a duplicate is a protocol error.
    gen++;
    const p = await adoptedPredecessor(gen);
    p.ws.send(chunk(gen - 1, [1])); // an old generation's frame: ignored
    p.ws.send(chunk(gen, [2]));
    p.ws.send(chunk(gen, [2])); // the same key twice
    await expectClose(p, CLOSE_CODES.protocolError, 'a duplicate chunk');
    await waitUntil(() => lost.length === cases.length + 1, 'the lost predecessor reported', 10_000);
  });

  test(`a flood of ${FLOOD} unauthenticated connections: ${ADMISSION_DEFAULTS.maxPending} challenged, the rest refused at once; slots come back`, async () => {
    const flood = Array.from({ length: FLOOD }, () => probe(victimUrl));
    const challenged: Probe[] = [];
    await Promise.all(
      flood.map((p) =>
        p.message(0).then(
          () => challenged.push(p),
          () => undefined,
        ),
      ),
    );
    const turnedAway = flood.filter((p) => !challenged.includes(p));
    assert.equal(challenged.length, ADMISSION_DEFAULTS.maxPending);
    for (const p of turnedAway) assert.equal((await p.closed).code, CLOSE_CODES.policyViolation);
    // The flooder gives up: closing its links frees their slots without waiting for the auth timeout.
    for (const p of challenged) p.ws.close();
    await Promise.all(challenged.map((p) => p.closed));
    const next = probe(victimUrl);
    await challengeOf(next);
    next.ws.close();
    await next.closed;
  });

  test('after all that, the two listeners still form a ring and exchange gradient chunks', async () => {
    const gen = 100;
    await Promise.all([
      victim.connect({
        gen,
        rank: 1,
        worldSize: 2,
        successor: { host: '127.0.0.1', port: peerPort, rank: 0 },
        predecessorRank: 0,
      }),
      peer.connect({
        gen,
        rank: 0,
        worldSize: 2,
        successor: { host: '127.0.0.1', port: Number(new URL(victimUrl).port), rank: 1 },
        predecessorRank: 1,
      }),
    ]);
    const header = { generation: gen, step: 0, phase: Phase.reduceScatter, chunk: 0 } as const;
    peer.send({ ...header, count: 3 }, new Float32Array([1.5, -2, 3]));
    victim.send({ ...header, chunk: 1, count: 2 }, new Float32Array([7, 8]));
    assert.deepEqual(Array.from(await victim.receive(header)), [1.5, -2, 3]);
    assert.deepEqual(Array.from(await peer.receive({ ...header, chunk: 1 })), [7, 8]);
  });
});
