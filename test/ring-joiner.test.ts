/**
 * A joiner whose ring address cannot be reached never sinks a run (issue 13, finding 5, the ring part): the worker
 * that should dial it retries with backoff, then reports it (`ringLinkDown`); the coordinator evicts the joiner,
 * turns its address away when it comes back (close code 4004, the joiner exits 1 with a clear message), and the rest
 * of the cluster trains on to the end. Before, the ring never formed and the run failed after the form timeout.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, test } from 'node:test';
import { killAll, readJsonLines, runCli, tempDir, waitUntil } from './helpers/procs.js';

after(killAll);

const RING_TIMEOUT = ['--ring-timeout', '5000'];

test('a joiner with an unreachable ring address is evicted and the run finishes', { timeout: 240_000 }, async () => {
  const dir = await tempDir('joiner');
  const summary = path.join(dir, 'summary.json');
  const coord = runCli([
    'coordinator',
    '--host',
    '127.0.0.1',
    '--port',
    '0',
    '--dashboard-port',
    '0',
    '--min-workers',
    '2',
    '--model',
    'mlp',
    '--train-limit',
    '3000',
    '--test-limit',
    '200',
    '--epochs',
    '2',
    '--batch-size',
    '32',
    '--run-dir',
    dir,
    '--summary-json',
    summary,
  ]);
  const [, port] = await coord.waitFor(/coordinator ws:\/\/[^:]+:(\d+)/);
  const url = `ws://127.0.0.1:${port}`;
  const worker = (listen: string, name: string) =>
    runCli([
      'worker',
      '--coordinator',
      url,
      '--listen',
      listen,
      '--advertise',
      '127.0.0.1',
      '--backend',
      'cpu',
      '--run-dir',
      dir,
      '--name',
      name,
      ...RING_TIMEOUT,
    ]);
  const a = worker('127.0.0.1:0', 'worker-a');
  const b = worker('127.0.0.1:0', 'worker-b');
  await waitUntil(
    async () => (await fs.readFile(path.join(dir, 'metrics.jsonl'), 'utf8').catch(() => '')).length > 0,
    'training started',
    120_000,
  );
  // Listens on 127.0.0.2 only but tells its peers 127.0.0.1: every dial to it is refused.
  const joiner = worker('127.0.0.2:0', 'worker-joiner');
  assert.equal(await joiner.exited(120_000), 1, joiner.output());
  assert.match(joiner.output(), /unreachable/);
  assert.equal(await coord.exited(180_000), 0, coord.output());
  assert.equal(await a.exited(30_000), 0, a.output());
  assert.equal(await b.exited(30_000), 0, b.output());
  assert.equal(JSON.parse(await fs.readFile(summary, 'utf8')).outcome, 'finished');
  const log = await readJsonLines<{ msg: string; during?: string }>(path.join(dir, 'coordinator.log.jsonl'));
  assert.ok(log.some((l) => l.msg === 'ring link down' && l.during === 'forming'));
  assert.ok(
    log.some((l) => /^evicting worker .*unreachable/.test(l.msg)),
    'the eviction names the reason',
  );
});
