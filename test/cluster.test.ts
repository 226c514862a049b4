/**
 * The cluster with real processes: a coordinator and workers on loopback, ring allreduce over real WebSocket links.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { defaultMnistDir } from '../shared/data/mnist.js';
import { killAll, readJsonLines, runCli, tempDir } from './helpers/procs.js';
import { availableBackends } from './helpers/backends.js';

const BACKENDS = await availableBackends();

interface MetricLine {
  rank: number;
  step: number;
  epoch: number;
  paramHash?: string;
  loss: number;
}

const QUICK = [
  '--model',
  'mlp',
  '--train-limit',
  '1024',
  '--test-limit',
  '1000',
  '--batch-size',
  '32',
  '--epochs',
  '2',
  '--backend',
  'cpu',
];

/** The top-level keys of a JSON object text that occur more than once (JSON.parse would hide them). */
function repeatedKeys(json: string): string[] {
  const seen = new Set<string>();
  const repeated: string[] = [];
  let depth = 0;
  for (let i = 0; i < json.length; i++) {
    const ch = json[i];
    if (ch === '{' || ch === '[') depth++;
    else if (ch === '}' || ch === ']') depth--;
    else if (ch === '"') {
      let j = i + 1;
      while (json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      const isKey = depth === 1 && /^\s*:/.test(json.slice(j + 1, j + 3));
      if (isKey) {
        const key = json.slice(i + 1, j);
        if (seen.has(key)) repeated.push(key);
        seen.add(key);
      }
      i = j;
    }
  }
  return repeated;
}

describe('cluster (real processes)', { timeout: 240_000 }, () => {
  after(killAll);

  for (const backend of BACKENDS)
    test(`launch -np 2 on ${backend}: every step leaves both replicas bitwise identical`, async () => {
      const dir = await tempDir(`launch-${backend}`);
      const summaryFile = path.join(dir, 'summary.json');
      const launch = runCli([
        'launch',
        '-np',
        '2',
        ...QUICK,
        '--backend',
        backend,
        '--check-every',
        '1',
        '--report-every',
        '4',
        '--run-dir',
        dir,
        '--summary-json',
        summaryFile,
      ]);
      assert.equal(await launch.exited(180_000), 0, launch.output());
      const summary = JSON.parse(await fs.readFile(summaryFile, 'utf8'));
      assert.equal(summary.workers, 2);
      assert.equal(summary.epochs, 2);
      assert.equal(summary.steps, 32, '1024 samples / 2 workers / batch 32 = 16 steps per epoch');
      assert.equal(summary.hashMismatches, 0);
      assert.ok(summary.hashChecks >= 20, `hash checks: ${summary.hashChecks}`);
      assert.ok(summary.testAccuracy > 0.5, `accuracy ${summary.testAccuracy}`);
      for (const key of ['dataMs', 'computeMs', 'allreduceMs', 'applyMs'])
        assert.ok(summary.phaseMeanMs[key] >= 0, key);

      // Independently of the coordinator's own check: compare the hashes the workers reported, step by step.
      const lines = await readJsonLines<MetricLine>(path.join(dir, 'metrics.jsonl'));
      const byStep = new Map<number, Map<number, string>>();
      for (const l of lines) {
        assert.ok(l.paramHash, `step ${l.step} rank ${l.rank} has a hash`);
        if (!byStep.has(l.step)) byStep.set(l.step, new Map());
        byStep.get(l.step)!.set(l.rank, l.paramHash!);
      }
      assert.equal(byStep.size, 32);
      const hashesSeen = new Set<string>();
      for (const [step, ranks] of byStep) {
        assert.equal(ranks.size, 2, `step ${step}: both ranks reported`);
        assert.equal(ranks.get(0), ranks.get(1), `step ${step}: replicas identical`);
        hashesSeen.add(ranks.get(0)!);
      }
      assert.equal(hashesSeen.size, 32, 'parameters changed at every step');
      // One logger per membership, not a child of the last one: no field twice in a line (pid, gen, rank, runId).
      for (const f of ['coordinator.log.jsonl', 'worker-0.log.jsonl', 'worker-1.log.jsonl']) {
        const text = await fs.readFile(path.join(dir, f), 'utf8');
        for (const line of text.split('\n').filter(Boolean))
          assert.deepEqual(repeatedKeys(line), [], `${f}: a field repeated in ${line}`);
      }
    });

  test('a worker with its own data and one fed over the wire train identical replicas', async () => {
    const dir = await tempDir('mixed');
    const summaryFile = path.join(dir, 'summary.json');
    const coord = runCli([
      'coordinator',
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--min-workers',
      '2',
      ...QUICK.slice(0, -2),
      '--epochs',
      '1',
      '--check-every',
      '1',
      '--run-dir',
      dir,
      '--summary-json',
      summaryFile,
    ]);
    const [, port] = await coord.waitFor(/coordinator ws:\/\/[^:]+:(\d+)/);
    const common = [
      'worker',
      '--coordinator',
      `ws://127.0.0.1:${port}`,
      '--listen',
      '127.0.0.1:0',
      '--advertise',
      '127.0.0.1',
      '--backend',
      'cpu',
    ];
    const withData = runCli([...common, '--data-dir', defaultMnistDir()]);
    const withoutData = runCli(common);
    assert.equal(await coord.exited(), 0, coord.output());
    assert.equal(await withData.exited(), 0, withData.output());
    assert.equal(await withoutData.exited(), 0, withoutData.output());
    const summary = JSON.parse(await fs.readFile(summaryFile, 'utf8'));
    assert.equal(summary.hashMismatches, 0);
    assert.equal(summary.hashChecks, 16);
  });

  test('too few workers: the rendezvous times out with a clear message and a non-zero exit', async () => {
    const dir = await tempDir('rdzv');
    const coord = runCli([
      'coordinator',
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--min-workers',
      '2',
      '--rendezvous-timeout',
      // Long enough for one worker process to start and join on a loaded machine (tfjs loads in 1-3 s).
      '10000',
      '--run-dir',
      dir,
    ]);
    const [, port] = await coord.waitFor(/coordinator ws:\/\/[^:]+:(\d+)/);
    const worker = runCli([
      'worker',
      '--coordinator',
      `ws://127.0.0.1:${port}`,
      '--listen',
      '127.0.0.1:0',
      '--backend',
      'cpu',
    ]);
    assert.equal(await coord.exited(30_000), 1);
    assert.match(coord.output(), /only 1 of 2 workers joined within 10000 ms/);
    assert.notEqual(await worker.exited(30_000), 0);
  });

  test('bad options fail fast with the option named', async () => {
    const p = runCli(['train', '--epochs', '0']);
    assert.equal(await p.exited(30_000), 1);
    assert.match(p.output(), /epochs must be a positive integer/);
    const w = runCli(['worker', '--coordinator', 'http://x:1']);
    assert.equal(await w.exited(30_000), 1);
    assert.match(w.output(), /--coordinator must be a ws:\/\/ or wss:\/\/ URL/);
  });
});
