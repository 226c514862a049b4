/**
 * Input from the network never crashes the coordinator. An in-process coordinator is fed garbage binary and text
 * frames before and after authentication, truncated and oversized frames, broken WebSocket framing and non-HTTP bytes
 * on raw TCP, valid-looking messages of the wrong type, direction or time, and a flood of connections that never
 * authenticate. Each bad link is closed with the documented code (1008 refused before authentication, 1013 beyond the
 * unauthenticated slots, 1009 past 64 KB before authentication or past maxPayload after it, 1002 for a bad message
 * after it); the process carries on. At the end a real worker process joins the battered
 * coordinator and a run finishes. The worker's ring listener gets the same treatment in network-abuse-ring.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { COORDINATOR_DEFAULTS, startCoordinator, type CoordinatorHandle } from '../coordinator/start.js';
import { authAnswer } from '../shared/auth.js';
import { validateTrainConfig } from '../shared/config.js';
import { CLOSE_CODES } from '../shared/errors.js';
import { createRootLogger } from '../shared/log.js';
import { createProgressView } from '../shared/cli/progress.js';
import {
  decodeMessage,
  encodeMessage,
  PROTOCOL_VERSION,
  type Message,
  type MessageOf,
} from '../shared/wire/protocol.js';
import {
  chunk,
  expectClose,
  hello,
  justPastHandshakeLimit,
  notHandshakes,
  typesOf,
  type LogLine,
} from './helpers/abuse.js';
import { challengeOf, controlFrame, probe, type Probe } from './helpers/probe.js';
import { killAll, readJsonLines, runCli, tempDir, TEST_TOKEN } from './helpers/procs.js';
import { clientFrame, RawClient } from './helpers/raw-ws.js';

/** Above the largest legitimate message of the tiny run (mlp weights + Adam slots, about 2.8 MB). */
const MAX_PAYLOAD = 8 * 1024 * 1024;
const MAX_PENDING = 32;
// Long enough that a flood of FLOOD connections is accepted before the first ones time out, on a loaded machine.
const AUTH_TIMEOUT_MS = 4_000;
const FLOOD = 200;

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
    for (const bytes of [justPastHandshakeLimit(), Buffer.alloc(MAX_PAYLOAD + 1)]) {
      const early = probe(url);
      await challengeOf(early);
      early.ws.send(bytes);
      await expectClose(early, CLOSE_CODES.tooBig, `${bytes.byteLength} bytes before authentication`);
      refused++;
    }

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
            lineage: '',
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
    refused++;
    unmasked.socket.destroy();
    await unmasked.closed;

    const reserved = new RawClient(coordinator.port);
    await reserved.upgrade();
    reserved.socket.write(clientFrame({ opcode: 0x3, payload: Buffer.from('x') }));
    assert.equal(await reserved.closeCode(), CLOSE_CODES.protocolError, 'a reserved opcode');
    refused++;
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
    await Promise.all(flood.map((p) => p.closed));
    const challenged = flood.filter((p) => p.received.length > 0);
    const turnedAway = flood.filter((p) => p.received.length === 0);
    assert.equal(challenged.length, MAX_PENDING, 'only maxPendingAuth links wait for an answer at a time');
    for (const p of challenged) {
      assert.deepEqual(typesOf(p), ['challenge']);
      assert.equal((await p.closed).code, CLOSE_CODES.policyViolation, 'silent past the auth timeout: refused');
    }
    for (const p of turnedAway) {
      const closed = await p.closed;
      assert.equal(closed.code, CLOSE_CODES.tryAgainLater, 'beyond the slots: busy (1013), to be retried');
      assert.match(closed.reason, /too many unauthenticated links/);
    }
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
