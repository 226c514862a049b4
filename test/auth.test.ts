/**
 * Cluster authentication, end to end over real sockets: an in-process coordinator and a real worker's ring listener,
 * probed by raw `ws` clients. No answer, a wrong token, no token, the right token bound to the other link type, and a
 * handshake recorded on one connection and replayed on another are all refused with the policy-violation close code
 * (1008) and exactly one 'refused a link' log line per link; a refused client never receives anything but the
 * challenge. The correct answer is welcomed.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { COORDINATOR_DEFAULTS, startCoordinator, type CoordinatorHandle } from '../coordinator/start.js';
import { authAnswer, type LinkContext } from '../shared/auth.js';
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
import { startWorker, WORKER_DEFAULTS, type WorkerHandle } from '../worker/worker.js';
import { challengeOf, controlFrame, probe, type Probe } from './helpers/probe.js';
import { readJsonLines, tempDir, waitUntil } from './helpers/procs.js';

const TOKEN = 'correct-token-123';
const WRONG_TOKEN = 'wrong-token-456';
const AUTH_TIMEOUT_MS = 300;

interface LogLine {
  level: number;
  msg: string;
  link?: string;
  remote?: string;
  reason?: string;
  workerId?: string;
}

function hello(auth: Uint8Array, workerId = 'probe'): Message {
  return {
    type: 'hello',
    protocolVersion: PROTOCOL_VERSION,
    workerId,
    host: 'probe-host',
    ringHost: '127.0.0.1',
    ringPort: 1,
    hasData: false,
    backend: 'cpu',
    auth,
  };
}

function ringHello(auth: Uint8Array): Message {
  return { type: 'ringHello', gen: 1, rank: 0, protocolVersion: PROTOCOL_VERSION, auth };
}

/** A refused link: closed with 1008 after having received the challenge and nothing else. */
async function assertRefused(p: Probe, reason?: RegExp): Promise<{ code: number; reason: string; at: number }> {
  const closed = await p.closed;
  assert.equal(closed.code, CLOSE_CODES.policyViolation, `close code (reason '${closed.reason}')`);
  if (reason) assert.match(closed.reason, reason);
  assert.equal(p.received.length, 1, 'a refused client receives the challenge and nothing else');
  assert.equal(decodeMessage(p.received[0]!).type, 'challenge');
  return closed;
}

/** Dial, answer the challenge with `answer(nonce)`, and expect a refusal. */
async function refusedAnswer(
  url: string,
  answer: (nonce: Uint8Array) => Message | Uint8Array,
  reason?: RegExp,
): Promise<void> {
  const p = probe(url);
  const nonce = await challengeOf(p);
  const reply = answer(nonce);
  p.ws.send(reply instanceof Uint8Array ? reply : encodeMessage(reply));
  await assertRefused(p, reason);
}

async function refusedLines(file: string, link: LinkContext): Promise<LogLine[]> {
  return (await readJsonLines<LogLine>(file)).filter((l) => l.msg === 'refused a link' && l.link === link);
}

// ---------------------------------------------------------------------------------------------------------------

describe('authentication', { timeout: 60_000 }, () => {
  let dir: string;
  let coordinatorLog: string;
  let coordinator: CoordinatorHandle;
  let url: string;
  let refusedControl = 0;

  before(async () => {
    dir = await tempDir('auth');
    coordinatorLog = path.join(dir, 'coordinator.log.jsonl');
    coordinator = await startCoordinator({
      ...COORDINATOR_DEFAULTS,
      host: '127.0.0.1',
      port: 0,
      token: TOKEN,
      runDir: dir,
      authTimeoutMs: AUTH_TIMEOUT_MS,
      // Two links get admitted here (a probe and the real worker); 3 keeps the run in rendezvous throughout.
      minWorkers: 3,
      rendezvousTimeoutMs: 120_000,
      // No heartbeat eviction of the silent probe while the tests run.
      heartbeatMs: 60_000,
      train: validateTrainConfig({ model: 'mlp', epochs: 1, batchSize: 32, trainLimit: 256, testLimit: 100 }),
      log: createRootLogger({ runDir: dir, name: 'coordinator', consoleLevel: 'silent' }),
      progress: createProgressView({ quiet: true }),
    });
    url = `ws://127.0.0.1:${coordinator.port}/`;
  });

  after(async () => {
    await coordinator?.close('test over');
  });

  test('no answer at all: closed with 1008 once the auth timeout has passed', async () => {
    const dialedAt = performance.now(); // before the server's timer starts, so a lower bound holds under any load
    const p = probe(url);
    await challengeOf(p);
    const closed = await assertRefused(p, /no authenticated answer within 300 ms/);
    refusedControl++;
    assert.ok(
      closed.at - dialedAt >= AUTH_TIMEOUT_MS - 5,
      `closed ${(closed.at - dialedAt).toFixed(0)} ms after dialing`,
    );
  });

  test('a wrong token: refused with 1008 on the answer itself', async () => {
    // The reason tells this refusal from the timeout's ('no authenticated answer within ...').
    await refusedAnswer(url, (nonce) => hello(authAnswer(WRONG_TOKEN, 'control', nonce)), /^wrong cluster token$/);
    refusedControl++;
  });

  test('no token: an empty proof, a cut-short proof and a hello without one are refused with 1008', async () => {
    await refusedAnswer(url, () => hello(new Uint8Array(0)), /wrong cluster token/);
    await refusedAnswer(
      url,
      (nonce) => hello(authAnswer(TOKEN, 'control', nonce).subarray(0, 31)),
      /wrong cluster token/,
    );
    const { auth: _omitted, ...withoutAuth } = hello(new Uint8Array(32)) as MessageOf<'hello'>;
    await refusedAnswer(url, () => controlFrame(withoutAuth));
    refusedControl += 3;
  });

  test("the right token's proof for the other link type (ring) is refused with 1008", async () => {
    await refusedAnswer(url, (nonce) => hello(authAnswer(TOKEN, 'ring', nonce)), /wrong cluster token/);
    refusedControl++;
  });

  test('a correct handshake replayed verbatim on a new connection (new nonce) is refused with 1008; the original is welcomed', async () => {
    const original = probe(url);
    const firstNonce = await challengeOf(original);
    const recorded = encodeMessage(hello(authAnswer(TOKEN, 'control', firstNonce), 'probe-original'));
    original.ws.send(recorded);
    const welcome = decodeMessage(await original.message(1));
    assert.deepEqual(welcome, {
      type: 'welcome',
      protocolVersion: PROTOCOL_VERSION,
      workerId: 'probe-original',
      runId: coordinator.runId,
    });

    const replay = probe(url);
    const secondNonce = await challengeOf(replay);
    assert.notDeepEqual(secondNonce, firstNonce, 'every connection gets a fresh nonce');
    replay.ws.send(recorded);
    await assertRefused(replay, /wrong cluster token/);
    refusedControl++;

    assert.equal(original.ws.readyState, WebSocket.OPEN, 'the admitted link stays open');
    assert.equal(original.received.length, 2, 'in rendezvous the admitted worker gets the challenge and the welcome');
    original.ws.close();
    await original.closed;
  });

  test('a correct answer is welcomed', async () => {
    const p = probe(url);
    const nonce = await challengeOf(p);
    p.ws.send(encodeMessage(hello(authAnswer(TOKEN, 'control', nonce), 'probe-welcome')));
    const welcome = decodeMessage(await p.message(1));
    assert.equal(welcome.type, 'welcome');
    if (welcome.type === 'welcome') assert.equal(welcome.runId, coordinator.runId);
    p.ws.close();
    await p.closed;
  });

  test('the coordinator logged exactly one refusal line per refused link, and no other warning', async () => {
    const lines = await readJsonLines<LogLine>(coordinatorLog);
    const refusals = await refusedLines(coordinatorLog, 'control');
    assert.equal(refusals.length, refusedControl);
    for (const l of refusals) {
      assert.equal(l.level, 40, 'a refusal is a warning');
      assert.match(l.remote ?? '', /^(::ffff:)?127\.0\.0\.1:\d+$/);
      assert.ok(l.reason, 'the reason is logged');
    }
    const warnings = lines.filter((l) => l.level >= 40 && l.msg !== 'refused a link');
    assert.deepEqual(warnings, [], 'nothing else worth a warning happened');
  });

  describe("a worker's ring listener", () => {
    let worker: WorkerHandle;
    let workerLog: string;
    let ringUrl: string;

    before(async () => {
      workerLog = path.join(dir, 'worker.log.jsonl');
      worker = await startWorker({
        ...WORKER_DEFAULTS,
        coordinator: url,
        token: TOKEN,
        listenHost: '127.0.0.1',
        advertise: '127.0.0.1',
        backend: 'cpu',
        log: createRootLogger({ runDir: dir, name: 'worker', consoleLevel: 'silent' }),
      });
      ringUrl = `ws://127.0.0.1:${worker.port}/`;
      // The worker is a member of the cluster (so its listener is the one a real predecessor would dial).
      const realWorkerJoined = (lines: LogLine[]) =>
        lines.some((l) => l.msg === 'worker joined' && !l.workerId?.startsWith('probe'));
      await waitUntil(
        async () => realWorkerJoined(await readJsonLines<LogLine>(coordinatorLog)),
        'the worker joined',
        20_000,
      );
    });

    after(async () => {
      await worker?.close();
    });

    test('a wrong token, the control-link proof and a replayed ringHello are refused with 1008; a correct one is kept', async () => {
      // A correct predecessor handshake: admitted and held (no ring assignment yet), so the link stays open.
      const good = probe(ringUrl);
      const goodNonce = await challengeOf(good);
      const recorded = encodeMessage(ringHello(authAnswer(TOKEN, 'ring', goodNonce)));
      good.ws.send(recorded);

      await refusedAnswer(ringUrl, (nonce) => ringHello(authAnswer(WRONG_TOKEN, 'ring', nonce)), /wrong cluster token/);
      await refusedAnswer(ringUrl, (nonce) => ringHello(authAnswer(TOKEN, 'control', nonce)), /wrong cluster token/);
      await refusedAnswer(ringUrl, () => recorded, /wrong cluster token/);
      await refusedAnswer(ringUrl, (nonce) => hello(authAnswer(TOKEN, 'ring', nonce)), /expected 'ringHello' first/);

      assert.equal(good.ws.readyState, WebSocket.OPEN, 'the authenticated link was kept while the others were refused');
      assert.equal(good.received.length, 1, 'an admitted ring link gets only the challenge');
      good.ws.close();
      await good.closed;

      const refusals = await refusedLines(workerLog, 'ring');
      assert.equal(refusals.length, 4, 'one log line per refused ring link');
      const done = await Promise.race([
        worker.done.then(() => 'ended'),
        new Promise((resolve) => setImmediate(() => resolve('running'))),
      ]);
      assert.equal(done, 'running', 'the worker is still running');
    });
  });
});
