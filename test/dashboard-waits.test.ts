/** Who made the others wait: the pure tracker, and the routes that serve runs, models and the timeline. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { createMetrics } from '../coordinator/dashboard/metrics.js';
import { parseEventLine, runModelSource } from '../coordinator/dashboard/run-files.js';
import { startDashboard } from '../coordinator/dashboard/server.js';
import { DashboardState } from '../coordinator/dashboard/state.js';
import { stepWait, WaitTracker } from '../coordinator/dashboard/waits.js';
import { TimelineBuffer } from '../coordinator/timeline.js';
import type { StepRecord } from '../shared/wire/protocol.js';
import { silentLogger } from '../shared/log.js';

function rec(step: number, allreduceMs: number, computeMs = 10): StepRecord {
  const base = { epoch: 0, step, loss: 1, samples: 32, dataMs: 0, computeMs, applyMs: 1, reduceScatterMs: 0 };
  return { ...base, allreduceMs, startedAt: 1000 + step };
}

test('the rank with the shortest allreduce entered last; the others waited the difference', () => {
  const w = stepWait(
    1,
    7,
    new Map([
      [0, rec(7, 30)],
      [1, rec(7, 5)],
      [2, rec(7, 12)],
    ]),
  )!;
  assert.equal(w.lastRank, 1);
  assert.equal(w.lateMs, 7, 'its lead over the second-to-last rank');
  assert.equal(w.waitMs, 25 + 0 + 7, "everyone's waiting");
  assert.equal(w.stepMs, 10 + 30 + 1);
  assert.equal(stepWait(1, 7, new Map([[0, rec(7, 3)]])), undefined, 'a ring of one waits for nobody');
});

test('shares add up to 1 and go to the rank that was last; incomplete and stale steps do not count', () => {
  const t = new WaitTracker({ recent: 3 });
  t.ring(1, 2);
  for (let s = 0; s < 10; s++) {
    assert.equal(t.add(1, 0, rec(s, s < 8 ? 2 : 20)), undefined, 'half a step');
    const done = t.add(1, 1, rec(s, s < 8 ? 22 : 2))!;
    assert.equal(done.lastRank, s < 8 ? 0 : 1);
  }
  t.add(1, 0, rec(10, 1)); // never completed
  t.ring(2, 2);
  assert.equal(t.add(1, 1, rec(10, 1)), undefined, 'a step of an old ring can no longer complete');
  const v = t.view();
  assert.equal(v.steps, 10);
  assert.deepEqual(
    v.workers.map((w) => [w.rank, w.lastSteps, w.causedMs]),
    [
      [0, 8, 160],
      [1, 2, 36],
    ],
  );
  assert.ok(Math.abs(v.workers[0]!.share + v.workers[1]!.share - 1) < 1e-12);
  assert.ok(v.workers[0]!.share > 0.8);
  assert.ok(Math.abs(v.workers[0]!.heldFraction - 160 / v.totalStepMs) < 1e-12);
  assert.deepEqual(
    v.recent.map((s) => s.step),
    [7, 8, 9],
  );
});

test('the pending steps stay bounded when a rank never reports', () => {
  const t = new WaitTracker({ pendingMax: 16 });
  t.ring(1, 2);
  for (let s = 0; s < 1000; s++) t.add(1, 0, rec(s, 1));
  assert.equal(t.view().steps, 0);
  assert.equal((t as unknown as { pending: Map<string, unknown> }).pending.size, 16);
});

test('events.jsonl lines: valid events come back (null loss as NaN), anything else is refused', () => {
  const ok = parseEventLine(
    JSON.stringify({ at: 5, event: { kind: 'steps', gen: 1, rank: 0, records: [{ ...rec(0, 1), loss: null }] } }),
  )!;
  assert.equal(ok.at, 5);
  assert.ok(ok.event.kind === 'steps' && Number.isNaN(ok.event.records[0]!.loss));
  for (const bad of [
    'not json',
    '[]',
    '{"at":1}',
    '{"at":1,"event":{"kind":"nope"}}',
    '{"at":1,"event":{"kind":"steps","gen":1,"rank":0,"records":[{"step":"x"}]}}',
    '{"at":1,"event":{"kind":"ringFormed","gen":1,"workers":[{}]}}',
    '{"at":"1","event":{"kind":"notice","level":"info","message":"m"}}',
    '{"at":1,"event":{"kind":"notice","level":"loud","message":"m"}}',
  ]) {
    assert.equal(parseEventLine(bad), undefined, bad);
  }
});

test('the timeline buffer keeps the latest steps of every rank and stays valid JSON', () => {
  const b = new TimelineBuffer({ maxSteps: 10, maxInstants: 5 });
  for (let s = 0; s < 100; s++) {
    for (const rank of [0, 1]) b.add({ kind: 'steps', gen: 1, rank, records: [rec(s, 1)] }, 0);
    b.add({ kind: 'notice', level: 'info', message: `n${s}` }, 0);
  }
  const trace = JSON.parse(b.json()) as { name: string; pid: number; ph: string; args?: { step?: number } }[];
  for (const pid of [1, 2]) {
    const steps = trace.filter((e) => e.name === 'step' && e.pid === pid).map((e) => e.args!.step);
    assert.deepEqual(steps, [90, 91, 92, 93, 94, 95, 96, 97, 98, 99]);
  }
  assert.equal(trace.filter((e) => e.ph === 'i').length, 5);
  assert.equal(trace.filter((e) => e.name === 'process_name').length, 3, 'coordinator + 2 workers, once each');
});

test('runs, timeline and model routes: unknown runs and odd file names are 404, never a file outside', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringtrain-routes-'));
  fs.mkdirSync(path.join(dir, 'model'));
  fs.writeFileSync(path.join(dir, 'model', 'model.json'), '{"modelTopology":{}}');
  fs.writeFileSync(path.join(dir, 'secret.txt'), 'secret');
  const a = new DashboardState();
  const b = new DashboardState();
  a.observe({ kind: 'runStarted', runId: 'A', model: 'mlp', epochs: 1, minWorkers: 1, batchSize: 8 }, 1);
  b.observe({ kind: 'runStarted', runId: 'B', model: 'lenet5', epochs: 1, minWorkers: 1, batchSize: 8 }, 1);
  const dash = await startDashboard({
    host: '127.0.0.1',
    port: 0,
    runs: [
      { name: 'a', state: a, timeline: () => '[]', model: runModelSource(dir) },
      { name: 'b', state: b },
    ],
    metrics: createMetrics({ processMetrics: false }),
    log: silentLogger(),
  });
  const get = async (p: string) => {
    const r = await fetch(`${dash.url}${p.slice(1)}`);
    return { status: r.status, body: await r.text(), type: r.headers.get('content-type') };
  };
  try {
    assert.equal(JSON.parse((await get('/api/status')).body).run.id, 'A', 'the first run by default');
    assert.equal(JSON.parse((await get('/api/status?run=b')).body).run.id, 'B');
    assert.equal((await get('/api/status?run=zzz')).status, 404);
    const runs = JSON.parse((await get('/api/runs')).body) as { runs: { name: string; run: { model: string } }[] };
    assert.deepEqual(
      runs.runs.map((r) => [r.name, r.run.model]),
      [
        ['a', 'mlp'],
        ['b', 'lenet5'],
      ],
    );
    assert.deepEqual(JSON.parse((await get('/api/files')).body), { timeline: true, model: true });
    assert.deepEqual(JSON.parse((await get('/api/files?run=b')).body), { timeline: false, model: false });
    assert.equal((await get('/timeline.json')).body, '[]');
    assert.equal((await get('/timeline.json?run=b')).status, 404);
    assert.equal((await get('/model/model.json')).status, 200);
    for (const bad of ['/model/../secret.txt', '/model/..%2Fsecret.txt', '/model/%2e%2e%2fsecret.txt', '/model/']) {
      const r = await get(bad);
      assert.ok(r.status === 404 && !r.body.includes('secret'), bad);
    }
    assert.equal((await get('/vendor/tf.min.js')).status, 200);
  } finally {
    await dash.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
