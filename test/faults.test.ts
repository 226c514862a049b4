/**
 * Fault tolerance with real processes: workers killed, stopped and added mid-run, the coordinator killed and resumed
 * from its checkpoints (also when the newest one is corrupt).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { CheckpointStore } from '../coordinator/checkpoints.js';
import { validateTrainConfig } from '../shared/config.js';
import { killAll, readJsonLines, runCli, tempDir, waitForLines, waitUntil, type Proc } from './helpers/procs.js';

interface MetricLine {
  rank: number;
  gen: number;
  step: number;
  paramHash?: string;
}

const TRAIN = [
  '--model',
  'lenet5',
  '--train-limit',
  '6000',
  '--test-limit',
  '2000',
  '--batch-size',
  '32',
  '--backend',
  'wasm',
];
const FAST_LIVENESS = ['--heartbeat-ms', '300', '--heartbeat-misses', '5'];

async function coordinator(dir: string, extra: string[]): Promise<{ proc: Proc; port: number; summary: string }> {
  const summary = path.join(dir, 'summary.json');
  const proc = runCli([
    'coordinator',
    '--host',
    '127.0.0.1',
    '--port',
    '0',
    '--run-dir',
    dir,
    '--summary-json',
    summary,
    '--check-every',
    '1',
    '--report-every',
    '2',
    ...FAST_LIVENESS,
    ...TRAIN.filter((a) => a !== '--backend' && a !== 'wasm'),
    ...extra,
  ]);
  const [, port] = await proc.waitFor(/coordinator ws:\/\/[^:]+:(\d+)/);
  return { proc, port: Number(port), summary };
}

function worker(port: number, extra: string[] = []): Proc {
  return runCli([
    'worker',
    '--coordinator',
    `ws://127.0.0.1:${port}`,
    '--listen',
    '127.0.0.1:0',
    '--advertise',
    '127.0.0.1',
    '--backend',
    'wasm',
    ...FAST_LIVENESS,
    ...extra,
  ]);
}

/** Steps every rank of generation `gen` reported (the replicas of a generation all apply the same steps). */
function stepsByGen(lines: MetricLine[]): Map<number, Map<number, Set<number>>> {
  const out = new Map<number, Map<number, Set<number>>>();
  for (const l of lines) {
    const g = out.get(l.gen) ?? new Map<number, Set<number>>();
    const s = g.get(l.rank) ?? new Set<number>();
    s.add(l.step);
    g.set(l.rank, s);
    out.set(l.gen, g);
  }
  return out;
}

function assertIdenticalPerStep(lines: MetricLine[]): number {
  const byKey = new Map<string, Set<string>>();
  for (const l of lines) {
    if (!l.paramHash) continue;
    const key = `${l.gen}/${l.step}`;
    byKey.set(key, (byKey.get(key) ?? new Set()).add(l.paramHash));
  }
  for (const [key, hashes] of byKey) assert.equal(hashes.size, 1, `replicas differ at gen/step ${key}`);
  return byKey.size;
}

describe('faults (real processes)', { timeout: 600_000 }, () => {
  after(killAll);

  test('(a) 3 workers, one SIGKILLed mid-epoch: the survivors re-form the ring, lose no step and finish', async () => {
    const dir = await tempDir('kill');
    const c = await coordinator(dir, ['--min-workers', '2', '--epochs', '2']);
    const workers = [worker(c.port), worker(c.port), worker(c.port)];
    // Only start once all three are in: --min-workers 2 would start with two, so wait for the 3-worker generation.
    const metrics = path.join(dir, 'metrics.jsonl');
    const before = await waitForLines<MetricLine>(
      metrics,
      (ls) => ls.some((l) => l.rank === 2 && l.step >= 15),
      120_000,
    );
    const gen = Math.max(...before.map((l) => l.gen));
    workers[1]!.child.kill('SIGKILL');
    assert.equal(await c.proc.exited(240_000), 0, c.proc.output());
    const summary = JSON.parse(await fs.readFile(c.summary, 'utf8'));
    assert.equal(summary.outcome, 'finished');
    assert.equal(summary.workers, 2);
    assert.equal(summary.hashMismatches, 0);
    assert.ok(summary.testAccuracy >= 0.9, `accuracy ${summary.testAccuracy}`);

    const lines = await readJsonLines<MetricLine>(metrics);
    const hashed = assertIdenticalPerStep(lines);
    assert.ok(hashed > 50, `hash-checked steps: ${hashed}`);
    const gens = stepsByGen(lines);
    const old = gens.get(gen)!;
    // The last step both survivors (ranks 0 and 2) completed under the 3-worker ring...
    const completed = Math.max(...[...old.get(0)!].filter((s) => old.get(2)!.has(s)));
    const later = [...gens.keys()].filter((g) => g > gen).sort((a, b) => a - b);
    assert.ok(later.length >= 1, 'a new generation formed');
    const next = gens.get(later[0]!)!;
    assert.equal(next.size, 2, 'two workers in the new ring');
    const firstNew = Math.min(...[...next.values()].flatMap((s) => [...s]));
    // ...is never trained again: the new generation starts after it (no completed step lost).
    assert.ok(firstNew > completed, `new generation starts at step ${firstNew}, after completed step ${completed}`);
    // Every step of the run exists exactly as a contiguous sequence.
    const all = new Set(lines.map((l) => l.step));
    for (let s = 0; s < summary.steps; s++) assert.ok(all.has(s), `step ${s} trained`);
    for (const w of [workers[0]!, workers[2]!]) assert.equal(await w.exited(30_000), 0);
  });

  test('(b) a SIGSTOPped worker is evicted after the heartbeat timeout and the run goes on', async () => {
    const dir = await tempDir('stop');
    const c = await coordinator(dir, ['--min-workers', '2', '--epochs', '1']);
    const workers = [worker(c.port), worker(c.port), worker(c.port)];
    const metrics = path.join(dir, 'metrics.jsonl');
    await waitForLines<MetricLine>(metrics, (ls) => ls.some((l) => l.rank === 2 && l.step >= 10), 120_000);
    workers[2]!.child.kill('SIGSTOP');
    try {
      assert.equal(await c.proc.exited(240_000), 0, c.proc.output());
      const log = await fs.readFile(path.join(dir, 'coordinator.log.jsonl'), 'utf8');
      assert.match(log, /evicting worker/);
      const summary = JSON.parse(await fs.readFile(c.summary, 'utf8'));
      assert.equal(summary.workers, 2);
      assert.equal(summary.hashMismatches, 0);
    } finally {
      workers[2]!.child.kill('SIGKILL');
    }
  });

  test('(c) a worker added mid-run takes part in later steps', async () => {
    const dir = await tempDir('join');
    const c = await coordinator(dir, ['--min-workers', '2', '--max-workers', '3', '--epochs', '1']);
    const first = [worker(c.port), worker(c.port)];
    const metrics = path.join(dir, 'metrics.jsonl');
    await waitForLines<MetricLine>(metrics, (ls) => ls.some((l) => l.step >= 10), 120_000);
    const late = worker(c.port);
    assert.equal(await c.proc.exited(240_000), 0, c.proc.output());
    const lines = await readJsonLines<MetricLine>(metrics);
    const lateSteps = lines.filter((l) => l.rank === 2);
    assert.ok(lateSteps.length > 5, `the late worker trained ${lateSteps.length} steps`);
    assert.ok(Math.min(...lateSteps.map((l) => l.step)) >= 10);
    assertIdenticalPerStep(lines);
    const summary = JSON.parse(await fs.readFile(c.summary, 'utf8'));
    assert.equal(summary.workers, 3);
    for (const w of [...first, late]) assert.equal(await w.exited(30_000), 0);
  });

  /** Every (rank, step) is reported once: no step was trained twice under the same rank numbering. */
  function assertNoStepTwice(lines: MetricLine[]): void {
    const seen = new Set<string>();
    for (const l of lines) {
      const key = `${l.rank}/${l.step}`;
      assert.ok(!seen.has(key), `rank ${l.rank} trained step ${l.step} twice`);
      seen.add(key);
    }
  }

  async function logLines(dir: string): Promise<Array<Record<string, unknown> & { msg: string }>> {
    return readJsonLines(path.join(dir, 'coordinator.log.jsonl'));
  }

  function resumeCoordinator(dir: string, port: number, summary: string, extra: string[] = []): Proc {
    return runCli([
      'coordinator',
      '--host',
      '127.0.0.1',
      '--port',
      String(port),
      '--run-dir',
      dir,
      '--resume',
      '--summary-json',
      summary,
      ...FAST_LIVENESS,
      ...extra,
    ]);
  }

  const checkpointsOf = async (dir: string) =>
    (await fs.readdir(path.join(dir, 'checkpoints')).catch(() => [] as string[]))
      .filter((f) => f.endsWith('.rtckpt'))
      .sort();

  async function killAndResume(corruptNewest: boolean): Promise<void> {
    const dir = await tempDir(corruptNewest ? 'corrupt' : 'resume');
    const c = await coordinator(dir, ['--min-workers', '2', '--epochs', '1', '--checkpoint-every', '8']);
    const workers = [
      worker(c.port, ['--coordinator-retry-ms', '60000']),
      worker(c.port, ['--coordinator-retry-ms', '60000']),
    ];
    const ckptDir = path.join(dir, 'checkpoints');
    await waitUntil(async () => (await checkpointsOf(dir)).length >= 2, 'two checkpoints', 120_000);
    c.proc.child.kill('SIGKILL');
    await c.proc.exited(10_000);
    const files = await checkpointsOf(dir);
    const newest = files[files.length - 1]!;
    const previous = files[files.length - 2]!;
    if (corruptNewest) {
      const file = path.join(ckptDir, newest);
      const bytes = await fs.readFile(file);
      await fs.writeFile(file, bytes.subarray(0, bytes.length - 100));
    }
    const expected = Number((corruptNewest ? previous : newest).match(/(\d+)/)![1]);
    const trainedBefore = Math.max(
      ...(await readJsonLines<MetricLine>(path.join(dir, 'metrics.jsonl'))).map((l) => l.step),
    );
    const resumed = resumeCoordinator(dir, c.port, c.summary, ['--min-workers', '2']);
    assert.equal(await resumed.exited(240_000), 0, resumed.output());
    const log = await logLines(dir);
    const resumeLine = log.find((l) => l.msg === 'resuming from checkpoint');
    assert.ok(resumeLine, 'the resumed coordinator logged its checkpoint');
    assert.equal(resumeLine.step, expected, `resumed from step ${String(resumeLine.step)}`);
    if (corruptNewest) {
      const skipped = log.find((l) => l.msg === 'skipped a corrupt checkpoint');
      assert.ok(skipped && String(skipped.file).endsWith(newest), 'the corrupt checkpoint is reported by name');
    }
    // The workers outlived the coordinator with the state of a later step than the checkpoint: they restore it.
    const restored = log.slice(log.indexOf(resumeLine)).find((l) => /the most advanced survivor/.test(l.msg));
    assert.ok(restored, 'restored from a surviving worker, not rolled back to the checkpoint');
    assert.ok(Number(restored.step) >= Math.max(expected, trainedBefore), `restored at step ${String(restored.step)}`);
    const summary = JSON.parse(await fs.readFile(c.summary, 'utf8'));
    assert.equal(summary.outcome, 'finished');
    assert.equal(summary.epochs, 1);
    assert.equal(summary.hashMismatches, 0);
    assertNoStepTwice(await readJsonLines<MetricLine>(path.join(dir, 'metrics.jsonl')));
    for (const w of workers) assert.equal(await w.exited(30_000), 0, w.output());
  }

  test('(d) the coordinator killed and restarted with --resume adopts the survivors: nothing is trained twice', () =>
    killAndResume(false));
  test('(e) a corrupt newest checkpoint is reported and the previous one is used', () => killAndResume(true));

  test('(f) every worker lost: the next worker resumes from the last committed state, not from step 0', async () => {
    const dir = await tempDir('all-lost');
    const c = await coordinator(dir, ['--min-workers', '1', '--epochs', '1', '--checkpoint-every', '8']);
    const first = worker(c.port);
    const metrics = path.join(dir, 'metrics.jsonl');
    await waitUntil(async () => (await checkpointsOf(dir)).length >= 1, 'a checkpoint', 120_000);
    await waitForLines<MetricLine>(metrics, (ls) => ls.some((l) => l.step >= 10), 120_000);
    first.child.kill('SIGKILL');
    await first.exited(10_000);
    const seen = (await readJsonLines<MetricLine>(metrics)).length;
    const second = worker(c.port);
    assert.equal(await c.proc.exited(240_000), 0, c.proc.output());
    const log = await logLines(dir);
    const notice = log.find((l) => /no worker holds the run's state/.test(l.msg));
    assert.ok(notice, "the log says the run's state came from the coordinator");
    assert.ok(Number(notice.step) >= 8, `restored the committed step ${String(notice.step)}, not step 0`);
    const after = (await readJsonLines<MetricLine>(metrics)).slice(seen);
    assert.equal(
      Math.min(...after.map((l) => l.step)),
      Number(notice.step),
      'training went on from the committed step',
    );
    assert.equal(await second.exited(30_000), 0, second.output());
  });

  test('(g) an unwritable --summary-json is one error line; the coordinator still ends, without a stack trace', async () => {
    const dir = await tempDir('summary');
    await fs.writeFile(path.join(dir, 'a-file'), 'not a directory');
    const proc = runCli([
      'coordinator',
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--run-dir',
      dir,
      '--min-workers',
      '2',
      '--rendezvous-timeout',
      '500',
      '--summary-json',
      path.join(dir, 'a-file', 'summary.json'),
    ]);
    assert.equal(await proc.exited(60_000), 1, proc.output());
    assert.doesNotMatch(proc.output(), /^\s+at /m, 'no stack trace');
    const log = await logLines(dir);
    const line = log.find((l) => l.msg === 'could not write the summary');
    assert.ok(line, 'the failure is logged');
    assert.ok(['ENOTDIR', 'EEXIST'].includes(String(line.code)), String(line.code));
    assert.ok(log.some((l) => l.msg === 'run ended'));
  });

  test("(h) --resume refuses another run's checkpoint unless --resume-run names that run", async () => {
    const dir = await folderWithCheckpoint('other-run', 'their-run');
    await fs.writeFile(path.join(dir, 'run.json'), JSON.stringify({ runId: 'my-run' }));
    const refused = resumeCoordinator(dir, 0, path.join(dir, 's.json'));
    assert.notEqual(await refused.exited(60_000), 0);
    assert.match(refused.output(), /no valid checkpoint of run my-run.*1 belong to other runs/s);
    assert.doesNotMatch(refused.output(), /^\s+at /m, 'no stack trace');
    const accepted = resumeCoordinator(dir, 0, path.join(dir, 's.json'), [
      '--resume-run',
      'their-run',
      '--rendezvous-timeout',
      '500',
    ]);
    await accepted.waitFor(/coordinator ws:\/\/[^ ]+\s+run their-run/);
    await accepted.exited(60_000);
  });

  test('(i) --resume of a run that finished says so and exits 0 instead of waiting for workers', async () => {
    const dir = await folderWithCheckpoint('finished-run', 'done-run');
    const at = '2026-12-02T00:00:00.000Z';
    await fs.writeFile(path.join(dir, 'run.json'), JSON.stringify({ runId: 'done-run', finishedAt: at }));
    const p = resumeCoordinator(dir, 0, path.join(dir, 's.json'), ['--rendezvous-timeout', '60000']);
    assert.equal(await p.exited(60_000), 0, p.output());
    assert.match(p.output(), /run done-run already finished \(2026-12-02T00:00:00.000Z\); nothing to resume/);
  });
});

/** A run folder holding one checkpoint (step 4) of run `runId`. */
async function folderWithCheckpoint(name: string, runId: string): Promise<string> {
  const dir = await tempDir(name);
  const train = { ...validateTrainConfig({ model: 'mlp', trainLimit: 256, testLimit: 100, epochs: 1 }) };
  await new CheckpointStore(path.join(dir, 'checkpoints')).save(
    { runId, step: 4, epoch: 0, consumed: 128, generation: 1, config: { ...train } },
    new Float32Array(4),
    new Float32Array(0),
  );
  return dir;
}
