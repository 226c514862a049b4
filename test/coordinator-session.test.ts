/**
 * The coordinator's session logic over in-memory control links (no sockets, no processes, no TensorFlow.js):
 * membership and ring assignment, re-forming, weight sync from the most advanced survivor, checkpoint requests,
 * stall eviction, evicting members that never get ready, the all-workers-lost path, resuming without rolling back,
 * and an end of run that no observer can break.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Coordinator } from '../coordinator/coordinator.js';
import type { RunEvent } from '../coordinator/events.js';
import type { CoordinatorOptions, ResumeState } from '../coordinator/run-types.js';
import { validateTrainConfig } from '../shared/config.js';
import { makeSplit, type Dataset } from '../shared/data/dataset.js';
import { CLOSE_CODES, IllegalTransitionError } from '../shared/errors.js';
import { silentLogger } from '../shared/log.js';
import { PhaseMachine } from '../shared/phases.js';
import { bytesToFloat32 } from '../shared/wire/protocol.js';
import { FakeWorker } from './helpers/fake-worker.js';

const OPTS: CoordinatorOptions = {
  minWorkers: 1,
  maxWorkers: 0,
  rendezvousTimeoutMs: 60_000,
  checkEvery: 0,
  reportEvery: 1,
  heartbeatMs: 60_000,
  heartbeatMisses: 5,
  stallAbortMs: 1_000,
  stallGraceMs: 30,
  ringFormTimeoutMs: 60_000,
  checkpointEvery: 0,
  lingerMs: 5_000,
  nonFinite: 'skip',
};

function tinyData(train: number, test: number): Dataset {
  const shape = [28, 28, 1] as const;
  const split = (count: number) => makeSplit(new Uint8Array(count * 28 * 28), new Uint8Array(count), shape);
  const classNames = Array.from({ length: 10 }, (_, i) => String(i));
  return { train: split(train), test: split(test), shape, numClasses: 10, classNames, format: 'idx', source: 'memory' };
}

interface Harness {
  coord: Coordinator;
  events: RunEvent[];
  saved: Array<{ step: number; lineage: unknown; weights: Float32Array }>;
  notices(level?: string): string[];
  worker(id: string, opts?: ConstructorParameters<typeof FakeWorker>[2]): FakeWorker;
}

function harness(
  opts: Partial<CoordinatorOptions> = {},
  extra: { epochs?: number; resume?: ResumeState } = {},
): Harness {
  const events: RunEvent[] = [];
  const saved: Harness['saved'] = [];
  const coord = new Coordinator({
    runId: 'run-1',
    train: validateTrainConfig({ epochs: extra.epochs ?? 3, batchSize: 4, model: 'mlp' }),
    opts: { ...OPTS, ...opts },
    data: tinyData(32, 8),
    dataInfo: {
      format: 'idx',
      height: 28,
      width: 28,
      channels: 1,
      classNames: [],
      trainCount: 32,
      testCount: 8,
      fingerprint: 'x',
    },
    checkpoints: {
      async save(meta, weights) {
        saved.push({ step: meta.step, lineage: meta.extra?.lineage, weights });
        return `ckpt-${meta.step}`;
      },
    },
    ...(extra.resume ? { resume: extra.resume } : {}),
    log: silentLogger(),
    observers: [(e) => events.push(e)],
  });
  coord.begin();
  return {
    coord,
    events,
    saved,
    notices: (level) =>
      events.flatMap((e) => (e.kind === 'notice' && (!level || e.level === level) ? [e.message] : [])),
    worker: (id, o) => new FakeWorker(coord, id, o),
  };
}

/** Until every one of `workers` has its shard of generation `gen` (the ring is formed and training). */
function trainingIn(workers: FakeWorker[], gen: number): Promise<void> {
  return until(`training in generation ${gen}`, () =>
    workers.every((w) => w.gen === gen && w.all('shard').some((s) => s.gen === gen)),
  );
}

async function until(what: string, check: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** `p`, or a failure after `ms`; the timer also keeps the event loop alive while the coordinator's are unref'd. */
async function within<T>(p: Promise<T>, ms = 5_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`not settled within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

describe('phases', () => {
  test('a transition that is not listed is a typed error, and the phase stays', () => {
    const m = new PhaseMachine<'a' | 'b' | 'c'>('test', 'a', { a: ['b'], b: ['c', 'a'], c: [] });
    m.to('b');
    assert.throws(() => m.to('b'), IllegalTransitionError);
    m.to('c');
    assert.throws(
      () => m.to('a'),
      (err: IllegalTransitionError) => err.code === 'PHASE_INVALID' && /'c' to 'a'/.test(err.message),
    );
    assert.equal(m.phase, 'c');
  });
});

describe('coordinator session over in-memory links', () => {
  test('membership: ranks, ring neighbours, rank 0 seeds the replicas, then start and shards', async () => {
    const h = harness({ minWorkers: 2 });
    const a = h.worker('a', { weightValue: 7 });
    const b = h.worker('b', { weightValue: 9 });
    const [assignA, assignB] = [await a.next('assign'), await b.next('assign')];
    assert.deepEqual([assignA.rank, assignB.rank, assignA.worldSize, assignA.gen], [0, 1, 2, 1]);
    assert.equal(assignA.successor.host, 'ring-b');
    assert.equal(assignB.successor.host, 'ring-a');
    assert.equal(assignB.predecessorRank, 0);
    const start = await b.next('start');
    assert.equal(a.all('requestWeights').length, 1, 'rank 0 is asked for the initial weights');
    assert.equal(b.all('requestWeights').length, 0);
    assert.deepEqual(Array.from(bytesToFloat32(start.weights)), [7, 7, 7, 7]);
    assert.equal(start.step, 0);
    assert.match(start.lineage, /^run-1:/);
    await b.next('shard');
    assert.equal(h.coord.status().phase, 'training');
  });

  test('re-forming: a lost member re-forms the ring and the most advanced survivor restores every replica', async () => {
    const h = harness({ minWorkers: 1 });
    const ws = ['a', 'b', 'c'].map((id, i) => h.worker(id, { weightValue: i + 1 }));
    await trainingIn(ws, 3);
    ws[0]!.steps(0, 3);
    ws[2]!.steps(0, 5); // rank 2 got further before rank 1 vanished
    ws[1]!.link.close(1006);
    const [a, c] = [ws[0]!, ws[2]!];
    await until('new generation', () => a.gen === 4 && c.gen === 4);
    assert.equal(a.worldSize, 2);
    const start = await a.next('start', (s) => s.gen === 4);
    assert.equal(start.step, 5, 'restored at the most advanced step');
    assert.deepEqual(Array.from(bytesToFloat32(start.weights)), [3, 3, 3, 3], "the survivor's weights");
    assert.ok(h.notices().some((n) => /most advanced survivor/.test(n)));
  });

  test('checkpoint requests: every --checkpoint-every steps rank 0 is asked, and the state is saved', async () => {
    const h = harness({ checkpointEvery: 2 });
    const a = h.worker('a', { weightValue: 4 });
    await a.next('shard');
    a.steps(0, 2);
    await until('a checkpoint request', () => a.all('requestWeights').length === 2);
    await until('a saved checkpoint', () => h.saved.length === 1);
    assert.equal(h.saved[0]!.step, 2);
    assert.match(String(h.saved[0]!.lineage), /^run-1:/);
    assert.deepEqual(Array.from(h.saved[0]!.weights), [4, 4, 4, 4]);
  });

  test('stall eviction follows the waits to the rank holding the ring up, across different steps', async () => {
    const h = harness({ stallAbortMs: 1_000 });
    const ws = ['a', 'b', 'c'].map((id) => h.worker(id));
    await trainingIn(ws, 3);
    const [r0, r1, r2] = ws as [FakeWorker, FakeWorker, FakeWorker];
    // Rank 0 is slow: rank 1 waits on it at step 5 (rank 2, a step ahead, waits at step 6 and has not said so yet).
    // Grouping reports by step would blame everyone who did not report step 5: rank 0 and the healthy rank 2.
    r1.stall(5, 1_200, 0);
    assert.equal(await r0.gone(), CLOSE_CODES.evicted);
    await until('re-formed without rank 0', () => r1.gen === 4 && r2.gen === 4);
    assert.equal(r1.closed || r2.closed, false, 'no healthy rank was evicted');
  });

  test('a stall report is over once the rank moves on (heartbeat), so it blames nobody later', async () => {
    const h = harness({ stallAbortMs: 1_000 });
    const ws = ['a', 'b'].map((id) => h.worker(id));
    await trainingIn(ws, 2);
    const [r0, r1] = ws as [FakeWorker, FakeWorker];
    r1.stall(3, 500, 0);
    r1.state.step = 4;
    r1.heartbeat();
    r0.stall(4, 1_500, 1); // rank 0 waits on rank 1, which is not stalled any more: rank 1 is the culprit
    assert.equal(await r1.gone(), CLOSE_CODES.evicted);
    assert.equal(r0.closed, false);
  });

  test('when every rank stalls, the ring is re-formed; when it stalls again without progress, the run fails', async () => {
    const h = harness({ stallAbortMs: 1_000 });
    const ws = ['a', 'b'].map((id) => h.worker(id));
    await trainingIn(ws, 2);
    const [r0, r1] = ws as [FakeWorker, FakeWorker];
    r0.stall(3, 1_500, 1);
    r1.stall(3, 1_500, 0);
    await until('re-formed', () => r0.gen === 3 && r1.gen === 3);
    await r0.next('shard', (s) => s.gen === 3);
    r0.stall(3, 1_500, 1);
    r1.stall(3, 1_500, 0);
    const summary = await within(h.coord.done);
    assert.equal(summary.outcome, 'failed');
    assert.match(summary.error ?? '', /every rank stalled/);
  });

  test('a joiner that never gets ready is evicted, and the healthy members go on', async () => {
    const h = harness({ ringFormTimeoutMs: 100 });
    const a = h.worker('a');
    const b = h.worker('b');
    await trainingIn([a, b], 2);
    // The joiner's ring address cannot be reached: it never gets ready, and neither does rank 1, which dials it.
    b.autoReady = false;
    const j = h.worker('joiner');
    j.autoReady = false;
    await until('assigned', () => j.gen === 3);
    assert.equal(await j.gone(), CLOSE_CODES.evicted);
    b.autoReady = true;
    const start = await a.next('start', (s) => s.gen === 4);
    assert.equal(start.gen, 4);
    assert.equal(b.closed, false);
    assert.notEqual(h.coord.status().phase, 'ended');
  });

  test('in a first ring, the member a failed dial was aimed at is evicted, not its predecessor', async () => {
    const h = harness({ minWorkers: 3, ringFormTimeoutMs: 100 });
    const ws = ['a', 'b', 'c'].map((id) => h.worker(id));
    ws[1]!.autoReady = false; // rank 1 cannot dial rank 2 ...
    ws[2]!.autoReady = false; // ... and rank 2 waits for rank 1's link
    assert.equal(await ws[2]!.gone(), CLOSE_CODES.evicted);
    await until('paused for a third worker', () => h.coord.status().phase === 'waiting');
    assert.equal(ws[1]!.closed, false);
    ws[1]!.autoReady = true;
    h.worker('d');
    await until('re-formed', () => ws[0]!.gen === 3 && ws[1]!.gen === 3);
  });

  test('all workers lost: the next worker resumes from the last committed state, and the run says so', async () => {
    const h = harness({ checkpointEvery: 4 });
    const a = h.worker('a', { weightValue: 5 });
    await a.next('shard');
    a.steps(0, 4);
    await until('checkpoint', () => h.saved.length === 1);
    a.steps(4, 6);
    a.link.close(1006);
    await until('waiting', () => h.coord.status().phase === 'waiting');
    const b = h.worker('b', { weightValue: 0 });
    const start = await b.next('start');
    assert.equal(start.step, 4, 'not step 0');
    assert.deepEqual(Array.from(bytesToFloat32(start.weights)), [5, 5, 5, 5]);
    assert.ok(
      h.notices('warn').some((n) => /committed at step 4/.test(n)),
      h.notices().join('\n'),
    );
  });

  test('all workers lost before any checkpoint: the initial state is restored, loudly, never silently', async () => {
    const h = harness();
    const a = h.worker('a', { weightValue: 5 });
    await a.next('shard');
    a.steps(0, 3);
    a.link.close(1006);
    await until('waiting', () => h.coord.status().phase === 'waiting');
    const b = h.worker('b', { weightValue: 0 });
    const start = await b.next('start');
    assert.equal(start.step, 0);
    assert.deepEqual(Array.from(bytesToFloat32(start.weights)), [5, 5, 5, 5], "the run's own initial weights");
    assert.ok(h.notices('warn').some((n) => /committed at step 0/.test(n)));
  });

  const resumeAt = (step: number, lineage: string): ResumeState => ({
    runId: 'run-1',
    position: { epoch: 0, consumed: step * 4, step },
    weights: new Float32Array(4).fill(2),
    optimizer: new Float32Array(0),
    lineage,
    history: [],
    totalSamples: 0,
  });

  test('--resume adopts a survivor of the same lineage that is further than the checkpoint', async () => {
    const h = harness({}, { resume: resumeAt(3, 'run-1:L') });
    const a = h.worker('a', { weightValue: 8, state: { hasState: true, step: 6, consumed: 24, lineage: 'run-1:L' } });
    const start = await a.next('start');
    assert.equal(start.step, 6, 'nothing committed is trained twice');
    assert.equal(start.consumed, 24);
    assert.deepEqual(Array.from(bytesToFloat32(start.weights)), [8, 8, 8, 8]);
  });

  test('--resume falls back to the checkpoint when no survivor shares its lineage', async () => {
    const h = harness({}, { resume: resumeAt(3, 'run-1:L') });
    const a = h.worker('a', { weightValue: 8, state: { hasState: true, step: 6, lineage: 'run-1:OTHER' } });
    const start = await a.next('start');
    assert.equal(start.step, 3);
    assert.deepEqual(Array.from(bytesToFloat32(start.weights)), [2, 2, 2, 2]);
    assert.notEqual(start.lineage, 'run-1:L', 'a restore from the checkpoint branches the history');
  });

  test('the end of a run survives a throwing observer, and later messages are ignored', async () => {
    const h = harness({}, { epochs: 1 });
    let ended = 0;
    h.coord['events'].add((e) => {
      if (e.kind === 'runEnded') {
        ended++;
        throw new Error('disk full');
      }
    });
    const a = h.worker('a');
    a.train = true;
    const summary = await within(h.coord.done);
    assert.equal(summary.outcome, 'finished');
    assert.equal(ended, 1);
    const before = h.events.length;
    a.steps(100, 102);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(h.events.length, before, 'no event after the end');
  });

  test('a ring link lost between live members re-forms the ring (nobody waits forever)', async () => {
    const h = harness({ heartbeatMs: 30, heartbeatMisses: 1_000 }); // the re-form waits one heartbeat interval
    const ws = ['a', 'b'].map((id) => h.worker(id));
    await trainingIn(ws, 2);
    const [r0, r1] = ws as [FakeWorker, FakeWorker];
    r0.steps(0, 3);
    r1.steps(0, 3);
    const down = { during: 'training', attempts: 1, reason: 'connection reset' } as const;
    r0.link.send({ type: 'ringLinkDown', gen: 2, rank: 0, peerRank: 1, ...down });
    r1.link.send({ type: 'ringLinkDown', gen: 2, rank: 1, peerRank: 0, ...down });
    const start = await r1.next('start', (m) => m.gen === 3);
    assert.equal(start.step, 3, 'restored where the ring broke');
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(r0.gen, 3, 'the second report, of the old generation, is fenced off');
  });

  test('a member that stops talking is evicted by the heartbeat check', async () => {
    const h = harness({ heartbeatMs: 20, heartbeatMisses: 2 });
    const a = h.worker('a');
    assert.equal(await a.gone(), CLOSE_CODES.evicted);
    assert.ok(h.notices('warn').some((n) => /no heartbeat/.test(n)));
  });

  test('after the end it lingers until an evicted worker dials back, tells it the run ended, then shuts down', async () => {
    const h = harness({}, { epochs: 1 });
    const a = h.worker('a');
    await a.next('start');
    const record = [...h.coord['workers']].find((w) => w.id === 'a')!;
    h.coord['evict'](record, 'stopped by the test');
    assert.equal(await a.gone(), CLOSE_CODES.evicted);
    const b = h.worker('b');
    b.train = true;
    assert.equal((await within(h.coord.done)).outcome, 'finished');
    await b.next('stop');
    b.link.close();
    let lingered = true;
    const shutDown = h.coord.lingerAfterEnd().then(() => (lingered = false));
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(lingered, 'still waiting for the evicted worker');
    const back = h.worker('a');
    assert.equal(await back.gone(), CLOSE_CODES.runEnded);
    await within(shutDown, 1_000);
  });

  test('the linger ends at --linger-ms when an evicted worker never comes back, and at once when cut', async () => {
    const h = harness({ lingerMs: 100 }, { epochs: 1 });
    const a = h.worker('a');
    await a.next('start');
    h.coord['evict']([...h.coord['workers']][0]!, 'gone for good');
    const b = h.worker('b');
    b.train = true;
    await within(h.coord.done);
    await b.next('stop');
    b.link.close();
    const t0 = Date.now();
    await within(h.coord.lingerAfterEnd(), 2_000);
    assert.ok(Date.now() - t0 >= 90, 'waited for the evicted worker');
    await within(h.coord.lingerAfterEnd(true), 50);
  });

  test("a replaced generation's late step report is kept for the steps before the next one's start", async () => {
    const h = harness({ minWorkers: 2 });
    const [a, b] = [h.worker('a'), h.worker('b')];
    await until('training', () => [a, b].every((w) => w.all('shard').length > 0));
    a.steps(0, 3);
    b.steps(0, 1);
    await until('step 0', () => h.events.some((e) => e.kind === 'steps' && e.rank === 1));
    const c = h.worker('c');
    await c.next('assign');
    b.report(1, 1, 1, 2); // crosses the new assign: held until the new generation's start is known
    const start = await c.next('start');
    assert.equal(start.step, 3, 'restored from the most advanced survivor');
    b.report(1, 1, 2, 5); // steps 3 and 4 are past the start: never committed
    b.report(1, 0, 2, 3); // not b's place in generation 1
    await until('late steps', () => lateSteps(h).length >= 2);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(lateSteps(h), [1, 2]);
  });
});

/** Steps rank 1 reported under generation 1 after generation 2 was assigned. */
function lateSteps(h: Harness): number[] {
  const assigned = h.events.findIndex((e) => e.kind === 'ringFormed' && e.gen === 2);
  return h.events
    .slice(assigned)
    .flatMap((e) => (e.kind === 'steps' && e.gen === 1 && e.rank === 1 ? e.records.map((r) => r.step) : []));
}
