import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import type { RunEvent, WorkerView } from '../coordinator/events.js';
import {
  COORDINATOR_PID,
  createTimelineWriter,
  stepSpans,
  workerPid,
  type TraceEvent,
} from '../coordinator/timeline.js';
import type { StepRecord } from '../shared/wire/protocol.js';

const T0 = 1_700_000_000_000;
const PHASES = ['step', 'data', 'compute', 'allreduce', 'allreduce:reduce-scatter', 'allreduce:allgather', 'apply'];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringtrain-timeline-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function worker(rank: number): WorkerView {
  return { id: `w${rank}`, rank, host: `host-${rank}`, backend: 'cpu', state: 'joined' };
}

/** Awkward fractional durations on purpose, so rounding to microseconds is exercised. */
function record(rank: number, step: number): StepRecord {
  return {
    epoch: 0,
    step,
    loss: 1 / (step + 1),
    samples: 32,
    dataMs: 0.3337 + rank,
    computeMs: 41.23456,
    allreduceMs: 17.77777,
    reduceScatterMs: 8.123456,
    applyMs: 2.0001,
    startedAt: T0 + step * 70 + rank,
  };
}

function readTrace(file: string): TraceEvent[] {
  const parsed: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
  assert.ok(Array.isArray(parsed), 'the JSON array form of the trace event format');
  return parsed as TraceEvent[];
}

test('the timeline is valid trace-event JSON with every phase of every step of every worker', async () => {
  const file = path.join(dir, 'nested', 'timeline.json');
  const timeline = createTimelineWriter(file);
  const emit = (e: RunEvent, at = T0): void => timeline.observe(e, at);
  const ranks = [0, 1, 2];
  emit({ kind: 'runStarted', runId: 'r', model: 'mlp', epochs: 1, minWorkers: 3, batchSize: 32 });
  emit({ kind: 'ringFormed', gen: 1, workers: ranks.map(worker) });
  emit({ kind: 'epochStarted', epoch: 0, epochs: 1, samples: 960 });
  for (let step = 0; step < 10; step += 5) {
    for (const rank of ranks)
      emit({ kind: 'steps', gen: 1, rank, records: [0, 1, 2, 3, 4].map((i) => record(rank, step + i)) });
  }
  emit({ kind: 'notice', level: 'warn', message: 'slow step', fields: {} });
  emit({
    kind: 'runEnded',
    summary: {
      outcome: 'finished',
      epochs: 1,
      steps: 10,
      testAccuracy: 0.9,
      samplesPerSec: 1,
      wallSeconds: 1,
      workers: 3,
    },
  });
  await timeline.close();
  await timeline.close(); // idempotent

  const events = readTrace(file);
  for (const rank of ranks) {
    const pid = workerPid(rank);
    assert.ok(pid > 0, 'pid 0 is the idle task to Perfetto');
    const names = events
      .filter((e) => e.ph === 'M' && e.pid === pid && e.name === 'process_name')
      .map((e) => e.args?.name);
    assert.deepEqual(names, [`worker ${rank}`]);
    const spans = events.filter((e) => e.ph === 'X' && e.pid === pid);
    for (const phase of PHASES) assert.equal(spans.filter((e) => e.name === phase).length, 10, `rank ${rank} ${phase}`);
    const labels = events.find((e) => e.ph === 'M' && e.pid === pid && e.name === 'process_labels');
    assert.equal(labels?.args?.labels, `host-${rank}`);
  }
  const coordinator = events.filter((e) => e.pid === COORDINATOR_PID && e.ph === 'i').map((e) => e.name);
  assert.deepEqual(coordinator, [
    'run started',
    'ring formed (generation 1)',
    'epoch 1 started',
    'slow step',
    'run finished',
  ]);
  for (const e of events.filter((x) => x.ph === 'X')) {
    assert.ok(Number.isInteger(e.ts) && Number.isInteger(e.dur) && e.dur! >= 0, 'whole microseconds');
  }
});

test('spans nest exactly and add up to the step, in microseconds from startedAt', () => {
  const r = record(1, 3);
  const spans = new Map(stepSpans(1, 4, r).map((e) => [e.name, e]));
  const get = (name: string): { ts: number; end: number; dur: number } => {
    const e = spans.get(name)!;
    return { ts: e.ts!, dur: e.dur!, end: e.ts! + e.dur! };
  };
  const step = get('step');
  assert.equal(step.ts, (T0 + 3 * 70 + 1) * 1000);
  const total = r.dataMs + r.computeMs + r.allreduceMs + r.applyMs;
  assert.ok(Math.abs(step.dur - total * 1000) <= 1, `step ${step.dur} us vs ${total} ms`);
  // The children tile the step without gaps or overlaps.
  const order = ['data', 'compute', 'allreduce', 'apply'].map(get);
  assert.equal(order[0]!.ts, step.ts);
  for (let i = 1; i < order.length; i++) assert.equal(order[i]!.ts, order[i - 1]!.end);
  assert.equal(order.at(-1)!.end, step.end);
  const allreduce = get('allreduce');
  const scatter = get('allreduce:reduce-scatter');
  const gather = get('allreduce:allgather');
  assert.equal(scatter.ts, allreduce.ts);
  assert.equal(gather.ts, scatter.end);
  assert.equal(gather.end, allreduce.end);
  assert.ok(Math.abs(scatter.dur - r.reduceScatterMs * 1000) <= 1);
  assert.ok(Math.abs(get('compute').dur - r.computeMs * 1000) <= 1);
  const args = spans.get('step')!.args!;
  assert.deepEqual([args.step, args.epoch, args.gen, args.samples], [3, 0, 4, 32]);
  assert.equal(spans.get('step')!.pid, workerPid(1));
});

test('odd timings never make a negative or escaping span; a NaN loss is written as text', () => {
  const spans = stepSpans(0, 1, { ...record(0, 0), reduceScatterMs: 999, dataMs: -1, loss: Number.NaN });
  for (const e of spans) assert.ok(e.dur! >= 0);
  const byName = new Map(spans.map((e) => [e.name, e]));
  assert.equal(byName.get('allreduce:allgather')!.dur, 0, 'reduce-scatter is clamped to the allreduce');
  assert.equal(byName.get('step')!.args!.loss, 'NaN');
});

test('a run cut short leaves a file the viewers open: the array form without its closing bracket', async () => {
  const file = path.join(dir, 'partial.json');
  const timeline = createTimelineWriter(file);
  timeline.observe({ kind: 'steps', gen: 1, rank: 0, records: [record(0, 0)] }, T0);
  await timeline.close();
  const text = fs.readFileSync(file, 'utf8');
  assert.ok(text.startsWith('[\n'));
  assert.ok(text.endsWith('\n]\n'));
  // What a crash before close() leaves: everything but the closing bracket; trace viewers accept that form.
  const cut = text.slice(0, text.lastIndexOf('\n]'));
  assert.equal((JSON.parse(`${cut}]`) as unknown[]).length, readTrace(file).length);
});

test('an unwritable path fails at once with a config error', () => {
  const blocker = path.join(dir, 'a-file');
  fs.writeFileSync(blocker, 'x');
  assert.throws(() => createTimelineWriter(path.join(blocker, 'timeline.json')), { code: 'CONFIG_INVALID' });
});
