/**
 * `ringtrain launch` watches its workers, with real processes and real SIGKILLs:
 * - not elastic (the default --min-workers = -np): a killed worker ends the run within seconds, exit code 1, the
 *   message naming the worker and its signal, and no process left behind;
 * - elastic (--min-workers below -np): a killed worker is restarted and rejoins the ring; once restarts are used up
 *   and fewer than --min-workers are left, the run ends with a clear error instead of waiting forever.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { killAll, readJsonLines, runCli, tempDir, waitForLines, waitUntil, type Proc } from './helpers/procs.js';

interface LogLine {
  msg: string;
  pid?: number;
  worldSize?: number;
  gen?: number;
}

/** A run that never ends by itself: the tests end it. */
const ENDLESS = ['--model', 'mlp', '--train-limit', '512', '--test-limit', '100', '--batch-size', '32'];
const ARGS = [...ENDLESS, '--epochs', '1000', '--backend', 'cpu', '--dashboard-port', '0', '--quiet'];

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The pids a run folder's logs name: the coordinator's and each worker log's newest. */
async function pidsOf(dir: string, logs: string[]): Promise<number[]> {
  const pids: number[] = [];
  for (const log of logs) {
    const lines = await readJsonLines<LogLine>(path.join(dir, `${log}.log.jsonl`));
    pids.push([...lines].reverse().find((l) => typeof l.pid === 'number')!.pid!);
  }
  return pids;
}

/** Wait until the coordinator has formed a ring of `size` workers `count` times. */
function ringsFormed(dir: string, size: number, count = 1): Promise<LogLine[]> {
  return waitForLines<LogLine>(
    path.join(dir, 'coordinator.log.jsonl'),
    (lines) => lines.filter((l) => l.msg === 'ring formed' && l.worldSize === size).length >= count,
    120_000,
  );
}

async function newestWorkerPid(dir: string, name: string, not: number): Promise<number> {
  let pid = not;
  await waitUntil(
    async () => {
      pid = (await pidsOf(dir, [name]).catch(() => [not]))[0]!;
      return pid !== not;
    },
    `a new ${name} process`,
    60_000,
  );
  return pid;
}

async function expectGone(pids: number[]): Promise<void> {
  await waitUntil(() => pids.every((p) => !alive(p)), `processes ${pids.join(', ')} ended`, 20_000);
}

describe('launch watches its workers', { timeout: 300_000 }, () => {
  after(killAll);

  test('not elastic: a SIGKILLed worker ends the run within seconds, exit 1, the worker named', async () => {
    const dir = await tempDir('launch-ff');
    const launch: Proc = runCli(['launch', '-np', '2', ...ARGS, '--run-dir', dir]);
    await ringsFormed(dir, 2);
    const [coordinator, w0, w1] = await pidsOf(dir, ['coordinator', 'worker-0', 'worker-1']);
    const killedAt = Date.now();
    process.kill(w1!, 'SIGKILL');
    assert.equal(await launch.exited(60_000), 1, launch.output());
    const tookMs = Date.now() - killedAt;
    assert.ok(tookMs < 30_000, `the run ended ${tookMs} ms after the kill`);
    assert.match(launch.output(), /worker localhost:1 failed \(killed by SIGKILL\)/);
    assert.match(launch.output(), /--min-workers 2 needs every worker; stopping the run/);
    await expectGone([coordinator!, w0!]);
  });

  test('elastic: a killed worker is restarted with backoff and rejoins the ring', async () => {
    const dir = await tempDir('launch-el');
    const launch = runCli(['launch', '-np', '2', '--min-workers', '1', ...ARGS, '--run-dir', dir]);
    await ringsFormed(dir, 2);
    const [coordinator, w0, w1] = await pidsOf(dir, ['coordinator', 'worker-0', 'worker-1']);
    process.kill(w0!, 'SIGKILL');
    await launch.waitFor(/restarting worker localhost:0 in 1000 ms \(restart 1 of 3\)/, 30_000);
    const again = await newestWorkerPid(dir, 'worker-0', w0!);
    await ringsFormed(dir, 2, 2); // the restarted worker is a member again
    assert.ok(alive(w1!), 'the other worker trained on');
    launch.child.kill('SIGTERM');
    const code = await launch.exited(60_000);
    assert.notEqual(code, 0, 'an interrupted run is not a success');
    await expectGone([coordinator!, w1!, again]);
  });

  test('elastic: once restarts are used up and fewer than --min-workers are left, the run ends with an error', async () => {
    const dir = await tempDir('launch-gone');
    const launch = runCli([
      'launch',
      '-np',
      '2',
      '--min-workers',
      '1',
      '--max-restarts',
      '0',
      ...ARGS,
      '--run-dir',
      dir,
    ]);
    await ringsFormed(dir, 2);
    const [coordinator, w0, w1] = await pidsOf(dir, ['coordinator', 'worker-0', 'worker-1']);
    process.kill(w0!, 'SIGKILL');
    await launch.waitFor(/giving up on worker localhost:0 after 0 restart\(s\) \(--max-restarts 0\)/, 30_000);
    await ringsFormed(dir, 1); // one worker is enough to go on
    process.kill(w1!, 'SIGKILL');
    assert.equal(await launch.exited(60_000), 1, launch.output());
    assert.match(launch.output(), /0 worker\(s\) left, fewer than --min-workers 1; stopping the run/);
    await expectGone([coordinator!]);
  });
});
