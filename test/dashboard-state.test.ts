import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RunEvent, WorkerView } from '../coordinator/events.js';
import { DashboardState, Series } from '../coordinator/dashboard/state.js';
import type { StepRecord } from '../shared/wire/protocol.js';

const T0 = 1_700_000_000_000;

function worker(rank: number, host = `host-${rank}`): WorkerView {
  return { id: `w${rank}`, rank, host, backend: 'cpu', state: 'joined' };
}

interface RecordOptions {
  epoch?: number;
  loss?: number;
  computeMs?: number;
  stepMs?: number;
  samples?: number;
}

/** Consecutive step records starting at `from`, one every `stepMs` of wall time. */
function records(from: number, count: number, o: RecordOptions = {}): StepRecord[] {
  const stepMs = o.stepMs ?? 100;
  return Array.from({ length: count }, (_, i) => ({
    epoch: o.epoch ?? 0,
    step: from + i,
    loss: o.loss ?? 2 - 0.01 * (from + i),
    samples: o.samples ?? 32,
    dataMs: 1,
    computeMs: o.computeMs ?? 50,
    allreduceMs: 30,
    reduceScatterMs: 12,
    applyMs: 9,
    startedAt: T0 + (from + i) * stepMs,
  }));
}

/** A state driven by a fake clock, with a run of `n` workers formed and epoch 0 started. */
function startedRun(n: number, opts: ConstructorParameters<typeof DashboardState>[0] = {}) {
  let now = T0;
  const state = new DashboardState({ now: () => now, ...opts });
  const emit = (event: RunEvent, at = now): void => state.observe(event, at);
  emit({ kind: 'runStarted', runId: 'run-1', model: 'mlp', epochs: 2, minWorkers: n, batchSize: 32 });
  const views = Array.from({ length: n }, (_, r) => ({ ...worker(r), rank: -1 }));
  for (const v of views) emit({ kind: 'workerJoined', worker: v });
  emit({ kind: 'ringFormed', gen: 1, workers: views.map((v, r) => ({ ...v, rank: r })) });
  emit({ kind: 'epochStarted', epoch: 0, epochs: 2, samples: 32 * 10 * n });
  return {
    state,
    emit,
    setNow: (t: number) => {
      now = t;
    },
  };
}

test('the snapshot follows a run: phase, generation, step, workers, loss per step, progress and ETA', () => {
  const { state, emit, setNow } = startedRun(2);
  emit({ kind: 'steps', gen: 1, rank: 0, records: records(0, 5, { loss: 1.0 }) }, T0 + 500);
  let snap = state.snapshot();
  assert.equal(snap.run.phase, 'training');
  assert.equal(snap.series.loss.x.length, 0, 'a step is plotted once every rank reported it');
  emit({ kind: 'steps', gen: 1, rank: 1, records: records(0, 5, { loss: 3.0 }) }, T0 + 1000);
  setNow(T0 + 1000);
  snap = state.snapshot();
  assert.equal(snap.run.id, 'run-1');
  assert.equal(snap.generation, 1);
  assert.equal(snap.epoch, 1);
  assert.equal(snap.step, 4);
  assert.equal(snap.worldSize, 2);
  assert.deepEqual(snap.series.loss.x, [0, 1, 2, 3, 4]);
  assert.deepEqual(snap.series.loss.y, [2, 2, 2, 2, 2], 'loss of a step is the mean over ranks');
  assert.equal(snap.latest.loss, 2);
  assert.deepEqual(
    snap.workers.map((w) => [w.rank, w.host, w.state, w.steps, w.lastStep]),
    [
      [0, 'host-0', 'training', 5, 4],
      [1, 'host-1', 'training', 5, 4],
    ],
  );
  const w0 = snap.workers[0]!;
  assert.equal(w0.samplesPerSec, 320, '32 samples every 100 ms');
  assert.deepEqual(w0.timingsMs, {
    data: 1,
    compute: 50,
    allreduce: 30,
    reduceScatter: 12,
    allgather: 18,
    apply: 9,
    step: 90,
  });
  assert.equal(w0.lastSeen, T0 + 500);
  assert.equal(snap.workers[1]!.lastSeen, T0 + 1000);
  assert.equal(snap.latest.samplesPerSec, 640);
  assert.equal(snap.latest.workersAlive, 2);
  assert.equal(snap.progress.samplesDone, 320);
  assert.equal(snap.progress.samplesTotal, 640);
  assert.equal(snap.progress.fraction, 0.5);
  // 320 samples in 1 s: 320 left in this epoch take 1 s, the next epoch 2 s more.
  assert.equal(snap.progress.etaSeconds, 1);
  assert.equal(snap.progress.runEtaSeconds, 3);
  assert.deepEqual(
    snap.events.map((e) => e.kind),
    ['runStarted', 'workerJoined', 'workerJoined', 'ringFormed', 'epochStarted'],
  );
  assert.equal(snap.events[3]!.message, 'ring formed: ring of 2 worker(s), generation 1');
});

test('epochs, the end of the run and the final state', () => {
  const { state, emit } = startedRun(2);
  for (const rank of [0, 1]) emit({ kind: 'steps', gen: 1, rank, records: records(0, 10) });
  assert.equal(state.snapshot().run.phase, 'evaluating', 'every sample of the epoch trained');
  const outcome = { epoch: 1, testAccuracy: 0.91, testLoss: 0.3, trainLoss: 0.5, trainSeconds: 2, samples: 640 };
  emit({ kind: 'epochFinished', outcome });
  const summary = {
    outcome: 'finished' as const,
    epochs: 1,
    steps: 10,
    testAccuracy: 0.91,
    samplesPerSec: 320,
    wallSeconds: 3,
    workers: 2,
  };
  emit({ kind: 'runEnded', summary }, T0 + 5000);
  for (const rank of [0, 1])
    emit({ kind: 'workerLeft', worker: { ...worker(rank), state: 'stopped' }, reason: 'run finished' });
  const snap = state.snapshot();
  assert.equal(snap.run.phase, 'finished');
  assert.equal(snap.run.endedAt, T0 + 5000);
  assert.deepEqual(snap.summary, summary);
  assert.deepEqual(snap.history, [outcome]);
  assert.deepEqual(snap.series.accuracy, { reset: true, x: [1], y: [0.91] });
  assert.equal(snap.latest.testAccuracy, 0.91);
  assert.equal(snap.latest.samplesPerSec, 320, 'the summary rate once the run ended');
  assert.equal(snap.latest.workersAlive, 0);
  assert.equal(snap.latest.failures, 0);
  assert.equal(snap.progress.etaSeconds, 0);
  assert.deepEqual(
    snap.workers.map((w) => w.state),
    ['stopped', 'stopped'],
  );
  assert.match(snap.events.at(-3)!.message, /run finished: 1 epoch\(s\), 10 steps, test accuracy 91\.00%/);
});

test('a worker whose compute time is well above the median is a straggler, only with two or more workers', () => {
  const computeOf = (ms: number[]): boolean[] => {
    const { state, emit } = startedRun(ms.length);
    ms.forEach((computeMs, rank) => emit({ kind: 'steps', gen: 1, rank, records: records(0, 3, { computeMs }) }));
    return state.snapshot().workers.map((w) => w.straggler);
  };
  assert.deepEqual(computeOf([10, 11, 40]), [false, false, true]);
  assert.deepEqual(computeOf([10, 40]), [false, true], 'median 25: 40 > 37.5');
  assert.deepEqual(computeOf([10, 20]), [false, false], 'median 15: 20 < 22.5');
  assert.deepEqual(computeOf([500]), [false], 'a single worker is never a straggler');
  assert.deepEqual(computeOf([30, 30, 30, 30]), [false, false, false, false]);
});

test('a lost worker: failure counted, no straggler flag, waiting below min-workers, recovery when the ring re-forms', () => {
  const { state, emit } = startedRun(3);
  [10, 11, 40].forEach((computeMs, rank) =>
    emit({ kind: 'steps', gen: 1, rank, records: records(0, 3, { computeMs }) }),
  );
  emit({ kind: 'workerLeft', worker: { ...worker(2), state: 'lost' }, reason: 'close code 1006' });
  assert.equal(state.snapshot().run.phase, 'waiting', '2 workers left of the 3 the run needs');
  emit({ kind: 'workerJoined', worker: { ...worker(3), rank: -1 } });
  emit({ kind: 'ringFormed', gen: 2, workers: [worker(0), worker(1), { ...worker(3), rank: 2 }] });
  let snap = state.snapshot();
  assert.equal(snap.run.phase, 'recovering');
  assert.equal(snap.generation, 2);
  assert.equal(snap.worldSize, 3);
  assert.equal(snap.latest.failures, 1);
  assert.equal(snap.latest.recoveries, 1);
  assert.equal(snap.latest.workersAlive, 3);
  assert.deepEqual(
    snap.workers.map((w) => [w.id, w.rank, w.state, w.straggler]),
    [
      ['w0', 0, 'joined', false],
      ['w1', 1, 'joined', false],
      ['w3', 2, 'joined', false],
      ['w2', 2, 'lost', false],
    ],
  );
  const log = snap.events.slice(-3);
  assert.deepEqual(
    log.map((e) => [e.kind, e.level]),
    [
      ['workerLeft', 'error'],
      ['workerJoined', 'info'],
      ['ringFormed', 'warn'],
    ],
  );
  assert.match(log[0]!.message, /rank 2 \(host-2\) lost: close code 1006/);
  assert.equal(log[2]!.message, 'recovered: ring of 3 worker(s), generation 2');
  // The coordinator re-plans the rest of the epoch: 960 samples in all, 288 trained, 672 left.
  emit({ kind: 'epochStarted', epoch: 0, epochs: 2, samples: 672 });
  snap = state.snapshot();
  assert.equal(snap.run.phase, 'training');
  assert.deepEqual([snap.progress.samplesDone, snap.progress.samplesTotal], [288, 960]);
  assert.match(snap.events.at(-1)!.message, /epoch 1\/2 continues: 672 samples left/);
  // A ring re-formed because a worker joined is no recovery.
  emit({ kind: 'workerJoined', worker: { ...worker(4), rank: -1 } });
  emit({
    kind: 'ringFormed',
    gen: 3,
    workers: [0, 1, 2, 3].map((r) => ({ ...worker(r), id: ['w0', 'w1', 'w3', 'w4'][r]! })),
  });
  snap = state.snapshot();
  assert.equal(snap.latest.recoveries, 1);
  assert.equal(snap.events.at(-1)!.message, 'ring re-formed: ring of 4 worker(s), generation 3');
});

test('series stay within their cap and keep covering the whole run', () => {
  const s = new Series(100);
  for (let i = 0; i < 10_000; i++) s.push(i, i % 2);
  const all = s.all();
  assert.ok(all.x.length <= 100 && all.x.length >= 50, `length ${all.x.length}`);
  assert.ok(all.x[0]! < 100, 'the start of the run is still there');
  assert.ok(all.x.at(-1)! > 9_800, 'and so is its end');
  for (let i = 1; i < all.x.length; i++) assert.ok(all.x[i]! > all.x[i - 1]!, 'x stays increasing');
  for (const y of all.y) assert.equal(y, 0.5, 'compaction averages neighbours');

  const { state, emit } = startedRun(1, { seriesCap: 50 });
  for (let step = 0; step < 2000; step += 10) emit({ kind: 'steps', gen: 1, rank: 0, records: records(step, 10) });
  const loss = state.snapshot().series.loss;
  assert.ok(loss.x.length <= 50, `loss points ${loss.x.length}`);
  assert.ok(loss.x[0]! < 50 && loss.x.at(-1)! > 1900);
});

test('the event log keeps the latest entries; notices never carry credentials', () => {
  const { state, emit } = startedRun(1, { eventLogSize: 20 });
  for (let i = 0; i < 100; i++)
    emit({
      kind: 'notice',
      level: 'info',
      message: `checkpoint ${i}`,
      fields: { step: i, token: 'hunter2', authHeader: 'x' },
    });
  const snap = state.snapshot();
  assert.equal(snap.events.length, 20);
  assert.equal(snap.events.at(-1)!.message, 'checkpoint 99');
  assert.equal(snap.events[0]!.message, 'checkpoint 80');
  assert.deepEqual(snap.events.at(-1)!.fields, { step: 99 });
  assert.ok(!JSON.stringify(snap).includes('hunter2'));
});

test('changesSince returns only what is new, and the whole series after a compaction', () => {
  const { state, emit } = startedRun(1, { seriesCap: 8 });
  emit({ kind: 'steps', gen: 1, rank: 0, records: records(0, 4) });
  const cursor = state.cursor();
  let update = state.changesSince(cursor);
  assert.deepEqual(update.series.loss, { reset: false, x: [], y: [] });
  assert.deepEqual(update.events, []);
  emit({ kind: 'steps', gen: 1, rank: 0, records: records(4, 2) });
  emit({ kind: 'notice', level: 'warn', message: 'slow step' });
  update = state.changesSince(cursor);
  assert.deepEqual(update.series.loss.x, [4, 5]);
  assert.equal(update.series.loss.reset, false);
  assert.deepEqual(
    update.events.map((e) => e.message),
    ['slow step'],
  );
  update = state.changesSince(update.cursor);
  assert.deepEqual(update.series.loss.x, []);
  emit({ kind: 'steps', gen: 1, rank: 0, records: records(6, 10) });
  update = state.changesSince(update.cursor);
  assert.equal(update.series.loss.reset, true, 'compacted in between: the reader gets it all again');
  assert.deepEqual(update.series.loss, state.snapshot().series.loss);
});

test('a diverging loss is carried as null in JSON; a second run starts from scratch', () => {
  const { state, emit } = startedRun(1);
  emit({ kind: 'steps', gen: 1, rank: 0, records: records(0, 2, { loss: Number.NaN }) });
  const json = JSON.parse(JSON.stringify(state.snapshot())) as {
    series: { loss: { y: unknown[] } };
    latest: { loss: unknown };
  };
  assert.deepEqual(json.series.loss.y, [null, null]);
  assert.equal(json.latest.loss, null);
  const before = state.cursor();
  emit({ kind: 'runStarted', runId: 'run-2', model: 'lenet5', epochs: 1, minWorkers: 1, batchSize: 64 });
  const snap = state.snapshot();
  assert.equal(snap.run.id, 'run-2');
  assert.equal(snap.run.phase, 'waiting');
  assert.deepEqual(snap.workers, []);
  assert.equal(snap.step, -1);
  assert.deepEqual(
    state.changesSince(before).series.loss,
    { reset: true, x: [], y: [] },
    "readers drop the old run's points",
  );
});

test('subscribers hear about every event; steps from an unannounced rank still show', () => {
  const state = new DashboardState();
  let calls = 0;
  const off = state.subscribe(() => {
    calls++;
  });
  state.observe({ kind: 'steps', gen: 1, rank: 3, records: records(0, 2) }, T0);
  off();
  state.observe({ kind: 'notice', level: 'info', message: 'x' }, T0);
  assert.equal(calls, 1);
  const [w] = state.snapshot().workers;
  assert.equal(w!.rank, 3);
  assert.equal(w!.state, 'training');
  assert.equal(state.snapshot().series.loss.x.length, 2);
});
