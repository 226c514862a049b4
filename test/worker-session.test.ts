/**
 * The worker's session logic over an in-memory control link (no coordinator process, no control socket): the test
 * plays the coordinator. A world of 1 keeps the ring trivial (RingTransport.connect opens no link for worldSize 1, and
 * its listener is never started). Covers the phase sequence welcome -> assign -> start -> shard with ready, weights,
 * step metrics and epochDone; messages refused in the wrong phase or fenced off by generation; a bad assign.config;
 * and a new assign while training abandoning the step and re-entering the assigned phases.
 */
import assert from 'node:assert/strict';
import { describe, test, before } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { createLinkPair, type ControlLink } from '../shared/control-link.js';
import { makeSplit, type Dataset } from '../shared/data/dataset.js';
import { silentLogger } from '../shared/log.js';
import { uint32ToBytes, type Message, type MessageOf } from '../shared/wire/protocol.js';
import { RingTransport } from '../worker/ring-transport.js';
import type { WorkerPhase } from '../worker/phases.js';
import { WORKER_DEFAULTS, WorkerSession, type WorkerConfig } from '../worker/worker.js';

const CONFIG = { model: 'mlp', batchSize: 4, epochs: 1, reportEvery: 1 };

function tinyData(train: number, test: number): Dataset {
  const shape = [28, 28, 1] as const;
  const split = (count: number) =>
    makeSplit(
      Uint8Array.from({ length: count * 784 }, (_, i) => (i * 31) % 256),
      Uint8Array.from({ length: count }, (_, i) => i % 10),
      shape,
    );
  const classNames = Array.from({ length: 10 }, (_, i) => String(i));
  return { train: split(train), test: split(test), shape, numClasses: 10, classNames, format: 'idx', source: 'memory' };
}

interface Harness {
  session: WorkerSession;
  /** The coordinator's end of the link. */
  link: ControlLink;
  /** Every message the worker sent, in order. */
  got: Message[];
  /** Every phase the worker entered, in order. */
  phases: WorkerPhase[];
  phase(): WorkerPhase;
  next<T extends Message['type']>(type: T, match?: (m: MessageOf<T>) => boolean): Promise<MessageOf<T>>;
  all<T extends Message['type']>(type: T): Array<MessageOf<T>>;
  close(): Promise<void>;
}

function harness(debugDelayMs = 0, trainCount = 8): Harness {
  const log = silentLogger();
  const cfg: WorkerConfig = {
    ...WORKER_DEFAULTS,
    coordinator: 'ws://unused.invalid:1', // never dialed: the session is attached to the in-memory link
    token: 't',
    backend: 'cpu',
    heartbeatMs: 60_000,
    debugDelayMs,
    log,
  };
  const ring = new RingTransport({
    host: '127.0.0.1',
    port: 0,
    token: 't',
    maxPayloadBytes: cfg.maxPayloadBytes,
    connectTimeoutMs: 1_000,
    heartbeatMs: 60_000,
    heartbeatMisses: 5,
    stallWarnMs: 10_000,
    log,
  });
  const session = new WorkerSession(cfg, 'cpu', tinyData(trainCount, 4), ring, 0);
  const machine = session['phase'];
  const phases: WorkerPhase[] = [];
  const to = machine.to.bind(machine);
  machine.to = (p: WorkerPhase) => {
    to(p);
    phases.push(p);
  };
  const [link, workerSide] = createLinkPair();
  const got: Message[] = [];
  link.messages((m) => got.push(m));
  session.attachControl(workerSide);
  const all = <T extends Message['type']>(type: T) => got.filter((m): m is MessageOf<T> => m.type === type);
  return {
    session,
    link,
    got,
    phases,
    phase: () => machine.phase,
    all,
    async next(type, match) {
      let found: MessageOf<typeof type> | undefined;
      await until(`'${type}' from the worker`, () => {
        found = all(type).find((m) => !match || match(m));
        return found !== undefined;
      });
      return found!;
    },
    async close() {
      session.end(0);
      await ring.close();
    },
  };
}

async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const welcome: Message = { type: 'welcome', protocolVersion: 1, workerId: 'w', runId: 'run-1' };

function assign(gen: number, config: Record<string, unknown> = CONFIG): Message {
  return {
    type: 'assign',
    gen,
    rank: 0,
    worldSize: 1,
    successor: { host: 'self.invalid', port: 1, rank: 0 },
    predecessorRank: 0,
    config,
  };
}

function shard(gen: number, count: number, firstStep = 0): Message {
  return {
    type: 'shard',
    gen,
    epoch: 0,
    indices: uint32ToBytes(Uint32Array.from({ length: count }, (_, i) => i)),
    testStart: 0,
    testEnd: 4,
    firstStep,
    epochSamples: count,
    offset: 0,
  };
}

/** The replica state to start from, as the coordinator sends it (here, the weights the worker itself reported). */
function start(gen: number, lineage: string, state: { weights: Uint8Array; optimizer: Uint8Array }, step = 0): Message {
  return {
    type: 'start',
    gen,
    epoch: 0,
    step,
    consumed: 0,
    lineage,
    weights: state.weights,
    optimizer: state.optimizer,
  };
}

/** welcome, assign (gen 1), then the replica state the worker itself reports (as rank 0 seeds the others). */
async function upToSynced(h: Harness): Promise<void> {
  h.link.send(welcome);
  h.link.send(assign(1));
  await h.next('ready', (m) => m.gen === 1);
  h.link.send({ type: 'requestWeights', gen: 1 });
  const w = await h.next('weights', (m) => m.gen === 1);
  h.link.send(start(1, 'run-1:L', w));
}

describe('worker session over an in-memory link', () => {
  before(async () => {
    assert.ok(await tf.setBackend('cpu'));
  });

  test('welcome -> assign -> start -> shard: ready, weights, one metrics record per step, eval and epochDone', async () => {
    const h = harness();
    try {
      h.link.send(welcome);
      h.link.send(assign(1));
      const ready = await h.next('ready');
      assert.deepEqual(
        [ready.gen, ready.rank, ready.step, ready.hasState, ready.lineage],
        [1, 0, 0, false, ''],
        'a fresh replica has no state to offer',
      );
      assert.deepEqual(h.phases, ['joined', 'forming', 'ready']);
      h.link.send({ type: 'requestWeights', gen: 1 });
      const w = await h.next('weights');
      assert.equal(w.step, 0);
      assert.ok(w.weights.byteLength > 0, 'the replica reports its weights');
      h.link.send(start(1, 'run-1:L', w));
      h.link.send(shard(1, 8));
      const done = await h.next('epochDone');
      assert.deepEqual([done.gen, done.epoch, done.steps], [1, 0, 2], '8 samples / batch 4 / world 1 = 2 steps');
      const steps = h.all('metrics').flatMap((m) => m.records.map((r) => r.step));
      assert.deepEqual(steps, [0, 1]);
      const evalResult = h.all('evalResult')[0];
      assert.ok(evalResult, 'the shard is evaluated');
      assert.deepEqual(h.phases, ['joined', 'forming', 'ready', 'synced', 'training', 'idle']);
      assert.equal(h.all('failed').length, 0);
      // A new membership after the epoch reports the steps applied and the state's lineage.
      h.link.send(assign(2));
      const again = await h.next('ready', (m) => m.gen === 2);
      assert.deepEqual([again.step, again.consumed, again.hasState, again.lineage], [2, 8, true, 'run-1:L']);
    } finally {
      await h.close();
    }
  });

  test('a message not accepted in the current phase fails the worker with PROTOCOL_INVALID, without throwing', async () => {
    const h = harness();
    try {
      h.link.send(welcome);
      await until('joined', () => h.phase() === 'joined');
      h.link.send(start(1, 'x', { weights: new Uint8Array(0), optimizer: new Uint8Array(0) }));
      const failed = await h.next('failed');
      assert.equal(failed.code, 'PROTOCOL_INVALID');
      assert.match(failed.message, /'start' is not expected in phase 'joined'/);
      assert.equal(await h.session.done, 1);
      assert.equal(h.phase(), 'stopped');
    } finally {
      await h.close();
    }
  });

  test('a second welcome, or a worker-side message type, is refused the same way', async () => {
    for (const bad of [welcome, { type: 'heartbeat', gen: 0, rank: 0, step: 0 } as Message]) {
      const h = harness();
      try {
        h.link.send(welcome);
        await until('joined', () => h.phase() === 'joined');
        h.link.send(bad);
        const failed = await h.next('failed');
        assert.equal(failed.code, 'PROTOCOL_INVALID', bad.type);
        assert.equal(await h.session.done, 1);
      } finally {
        await h.close();
      }
    }
  });

  test('a message of an older generation is dropped (fenced), and the session carries on', async () => {
    const h = harness();
    try {
      h.link.send(welcome);
      h.link.send(assign(3));
      await h.next('ready', (m) => m.gen === 3);
      // 'start' is legal in 'ready', but gen 2 belongs to an older membership: it must not move the phase.
      h.link.send({ type: 'requestWeights', gen: 3 });
      const w = await h.next('weights');
      h.link.send(start(2, 'old', w, 5));
      h.link.send({ type: 'requestWeights', gen: 3 }); // a round trip: the fenced start was handled before it
      await until('second weights', () => h.all('weights').length === 2);
      assert.equal(h.phase(), 'ready');
      assert.equal(h.all('failed').length, 0);
      h.link.send(start(3, 'new', w));
      await until('synced', () => h.phase() === 'synced');
    } finally {
      await h.close();
    }
  });

  test('a bad assign.config fails the worker with a ConfigError naming assign.config.batchSize', async () => {
    const h = harness();
    try {
      h.link.send(welcome);
      h.link.send(assign(1, { ...CONFIG, batchSize: 0 }));
      const failed = await h.next('failed');
      assert.equal(failed.code, 'CONFIG_INVALID');
      assert.match(failed.message, /assign\.config\.batchSize/);
      assert.equal(await h.session.done, 1);
      assert.equal(h.all('ready').length, 0);
    } finally {
      await h.close();
    }
  });

  test('a new assign while training abandons the step and re-enters forming -> ready with the steps applied', async () => {
    const h = harness(40, 40); // 10 steps of >= 40 ms: the assign lands mid-shard
    try {
      await upToSynced(h);
      h.link.send(shard(1, 40));
      await h.next('metrics');
      assert.equal(h.phase(), 'training');
      h.link.send(assign(2));
      const ready = await h.next('ready', (m) => m.gen === 2);
      assert.ok(ready.step >= 1 && ready.step < 10, `abandoned mid-shard (step ${ready.step})`);
      assert.equal(ready.hasState, true);
      assert.equal(ready.consumed, ready.step * 4, 'the position is the steps applied');
      const applied = h.all('metrics').flatMap((m) => m.records.map((r) => r.step));
      assert.equal(Math.max(...applied) + 1, ready.step, 'ready reports every step it recorded');
      assert.equal(h.all('epochDone').length, 0, 'the abandoned shard is not reported done');
      assert.equal(h.all('failed').length, 0);
      assert.deepEqual(h.phases.slice(-3), ['training', 'forming', 'ready']);
      assert.equal(h.phase(), 'ready');
      await new Promise((resolve) => setTimeout(resolve, 100)); // the old shard's loop has ended: no further steps
      assert.equal(h.all('metrics').flatMap((m) => m.records).length, applied.length);
    } finally {
      await h.close();
    }
  });
});
