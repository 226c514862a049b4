import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { allreduceBytesPerWorker, createMetrics } from '../coordinator/dashboard/metrics.js';
import type { RunEvent, RunObserver, WorkerView } from '../coordinator/events.js';
import type { StepRecord } from '../shared/wire/protocol.js';

const T0 = 1_700_000_000_000;
const PARAMS = 101_770;

function worker(rank: number, state: WorkerView['state'] = 'joined'): WorkerView {
  return { id: `w${rank}`, rank, host: `host-${rank}`, backend: 'cpu', state };
}

function records(from: number, count: number, computeMs: number): StepRecord[] {
  return Array.from({ length: count }, (_, i) => ({
    epoch: 0,
    step: from + i,
    loss: 0.5,
    samples: 32,
    dataMs: 2,
    computeMs,
    allreduceMs: 20,
    reduceScatterMs: 8,
    applyMs: 3,
    startedAt: T0 + (from + i) * 100,
  }));
}

/** Two workers, 10 steps each, one epoch, a lost worker, a re-formed ring and a notice. */
function feedRun(observe: RunObserver): void {
  const emit = (e: RunEvent): void => observe(e, T0);
  emit({ kind: 'runStarted', runId: 'run-7', model: 'mlp', epochs: 2, minWorkers: 2, batchSize: 32 });
  for (const r of [0, 1, 2]) emit({ kind: 'workerJoined', worker: worker(r) });
  emit({ kind: 'ringFormed', gen: 1, workers: [worker(0), worker(1), worker(2)] });
  emit({ kind: 'epochStarted', epoch: 0, epochs: 2, samples: 960 });
  emit({ kind: 'steps', gen: 1, rank: 0, records: records(0, 10, 40) });
  emit({ kind: 'steps', gen: 1, rank: 1, records: records(0, 10, 60) });
  emit({ kind: 'workerLeft', worker: worker(2, 'lost'), reason: 'close code 1006' });
  emit({ kind: 'ringFormed', gen: 2, workers: [worker(0), worker(1)] });
  emit({ kind: 'notice', level: 'info', message: 'checkpoint written', fields: { step: 9 } });
  emit({
    kind: 'epochFinished',
    outcome: { epoch: 1, testAccuracy: 0.93, testLoss: 0.25, trainLoss: 0.4, trainSeconds: 2, samples: 640 },
  });
}

/** The value of one sample line, e.g. `ringtrain_samples_total` or `ringtrain_train_loss{rank="0"}`. */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  assert.ok(line, `no sample ${series} in the output`);
  return Number(line.slice(series.length + 1));
}

function promtoolAvailable(): boolean {
  return spawnSync('promtool', ['--version'], { encoding: 'utf8' }).status === 0;
}

test('/metrics text passes promtool check metrics', async (t) => {
  if (!promtoolAvailable()) {
    t.skip('promtool not installed (Debian package `prometheus`); cannot lint the exposition format');
    return;
  }
  const metrics = createMetrics({ paramCount: PARAMS });
  feedRun(metrics.observe);
  const text = await metrics.registry.metrics();
  const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(lint.status, 0, `promtool found problems:\n${lint.stdout}${lint.stderr}`);
  assert.equal(`${lint.stdout}${lint.stderr}`.trim(), '');
  assert.match(text, /^ringtrain_process_cpu_user_seconds_total /m, 'process metrics carry the ringtrain_ prefix');
  assert.doesNotMatch(text, /^ringtrain_nodejs_active_handles_total/m, 'gauges named _total are left out');
});

test('the metrics count what the run did', async () => {
  const metrics = createMetrics({ paramCount: PARAMS, processMetrics: false });
  feedRun(metrics.observe);
  const text = await metrics.registry.metrics();
  assert.equal(sample(text, 'ringtrain_steps_total'), 10);
  assert.equal(sample(text, 'ringtrain_step'), 9);
  assert.equal(sample(text, 'ringtrain_samples_total'), 640);
  assert.equal(sample(text, 'ringtrain_generation'), 2);
  assert.equal(sample(text, 'ringtrain_world_size'), 2);
  assert.equal(sample(text, 'ringtrain_workers_alive'), 2);
  assert.equal(sample(text, 'ringtrain_worker_failures_total'), 1);
  assert.equal(sample(text, 'ringtrain_recoveries_total'), 1);
  assert.equal(sample(text, 'ringtrain_epoch'), 1);
  assert.equal(sample(text, 'ringtrain_epochs_completed_total'), 1);
  assert.equal(sample(text, 'ringtrain_test_accuracy_ratio'), 0.93);
  assert.equal(sample(text, 'ringtrain_test_loss'), 0.25);
  assert.equal(sample(text, 'ringtrain_train_loss{rank="1"}'), 0.5);
  assert.equal(sample(text, 'ringtrain_notices_total{level="info"}'), 1);
  assert.equal(sample(text, 'ringtrain_run_state{state="recovering"}'), 1, 'the ring re-formed after the loss');
  assert.equal(sample(text, 'ringtrain_run_state{state="training"}'), 0);
  assert.equal(sample(text, 'ringtrain_run_info{run_id="run-7",model="mlp"}'), 1);
  // Histograms per worker: 10 steps of 2 + 40 + 20 + 3 = 65 ms on rank 0, all within the 0.1 s bucket.
  assert.equal(sample(text, 'ringtrain_step_duration_seconds_count{rank="0"}'), 10);
  assert.ok(Math.abs(sample(text, 'ringtrain_step_duration_seconds_sum{rank="0"}') - 0.65) < 1e-9);
  assert.equal(sample(text, 'ringtrain_step_duration_seconds_bucket{le="0.05",rank="0"}'), 0);
  assert.equal(sample(text, 'ringtrain_step_duration_seconds_bucket{le="0.1",rank="0"}'), 10);
  assert.equal(sample(text, 'ringtrain_allreduce_duration_seconds_count{rank="1"}'), 10);
  assert.ok(Math.abs(sample(text, 'ringtrain_allreduce_duration_seconds_sum{rank="1"}') - 0.2) < 1e-9);
  assert.ok(Math.abs(sample(text, 'ringtrain_step_phase_seconds_total{rank="1",phase="compute"}') - 0.6) < 1e-9);
  // The steps were reported in a ring of three: 2 * 2/3 * 4 bytes * PARAMS per step.
  assert.equal(sample(text, 'ringtrain_allreduce_bytes_total{rank="0"}'), 10 * allreduceBytesPerWorker(PARAMS, 3));
  assert.equal(allreduceBytesPerWorker(PARAMS, 3), Math.round((4 / 3) * 4 * PARAMS));
  assert.equal(allreduceBytesPerWorker(PARAMS, 1), 0, 'a ring of one sends nothing');

  metrics.observe({ kind: 'epochStarted', epoch: 1, epochs: 2, samples: 960 }, T0);
  const training = await metrics.registry.metrics();
  assert.equal(sample(training, 'ringtrain_run_state{state="training"}'), 1);
  assert.equal(sample(training, 'ringtrain_run_state{state="recovering"}'), 0);
  assert.equal(sample(training, 'ringtrain_epoch'), 2);
  metrics.observe(
    {
      kind: 'runEnded',
      summary: {
        outcome: 'failed',
        epochs: 1,
        steps: 10,
        testAccuracy: 0.93,
        samplesPerSec: 320,
        wallSeconds: 3,
        workers: 2,
        error: 'x',
      },
    },
    T0,
  );
  const after = await metrics.registry.metrics();
  assert.equal(sample(after, 'ringtrain_run_state{state="failed"}'), 1);
  assert.equal(sample(after, 'ringtrain_run_state{state="training"}'), 0);
});

test('without a parameter count the bytes counter is exported but never incremented', async () => {
  const metrics = createMetrics({ processMetrics: false });
  feedRun(metrics.observe);
  const text = await metrics.registry.metrics();
  assert.match(text, /^# TYPE ringtrain_allreduce_bytes_total counter$/m);
  assert.doesNotMatch(text, /^ringtrain_allreduce_bytes_total\{/m);
  assert.throws(() => createMetrics({ paramCount: -1 }), { code: 'CONFIG_INVALID' });
});

test('each metrics object has its own registry', async () => {
  const a = createMetrics({ processMetrics: false });
  const b = createMetrics({ processMetrics: false });
  feedRun(a.observe);
  assert.equal(sample(await a.registry.metrics(), 'ringtrain_samples_total'), 640);
  assert.equal(sample(await b.registry.metrics(), 'ringtrain_samples_total'), 0);
});

test('who made the others wait: per-rank counters, shares and held ratios (promtool-clean)', async () => {
  const metrics = createMetrics({ processMetrics: false });
  const emit = (e: RunEvent): void => metrics.observe(e, T0);
  emit({ kind: 'runStarted', runId: 'run-w', model: 'mlp', epochs: 1, minWorkers: 2, batchSize: 32 });
  emit({ kind: 'ringFormed', gen: 1, workers: [worker(0), worker(1)] });
  // Rank 1's allreduce is 15 ms shorter in every step: it entered last, rank 0 waited 15 ms for it.
  emit({ kind: 'steps', gen: 1, rank: 0, records: records(0, 4, 40) });
  emit({ kind: 'steps', gen: 1, rank: 1, records: records(0, 4, 55).map((r) => ({ ...r, allreduceMs: 5 })) });
  const text = await metrics.registry.metrics();
  assert.equal(sample(text, 'ringtrain_allreduce_last_total{rank="1"}'), 4);
  assert.equal(sample(text, 'ringtrain_allreduce_last_total{rank="0"}'), 0, 'ranks never last are listed too');
  assert.ok(Math.abs(sample(text, 'ringtrain_wait_caused_seconds_total{rank="1"}') - 0.06) < 1e-9);
  assert.ok(Math.abs(sample(text, 'ringtrain_wait_held_seconds_total{rank="1"}') - 0.06) < 1e-9);
  assert.equal(sample(text, 'ringtrain_wait_share_ratio{rank="1"}'), 1);
  assert.equal(sample(text, 'ringtrain_wait_share_ratio{rank="0"}'), 0);
  // Step wall time: 2 + 40 + 20 + 3 = 2 + 55 + 5 + 3 = 65 ms on both ranks; rank 1 held the ring 15 of them.
  assert.ok(Math.abs(sample(text, 'ringtrain_wait_held_ratio{rank="1"}') - 15 / 65) < 1e-9);
  if (promtoolAvailable()) {
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(check.status, 0, `${check.stdout}${check.stderr}`);
  }
});
