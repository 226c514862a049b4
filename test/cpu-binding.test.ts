/**
 * Pinning workers to their share of the host's CPUs: the share itself (pure), and the worker script really running
 * a stand-in worker under taskset, or unpinned with a warning where taskset is missing.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { cpuShare, resolveCpuBinding } from '../launcher/cpu-binding.js';
import { RemoteWorker, renderLauncherCommand, shellQuote, workerScript } from '../launcher/remote.js';
import { allowedCpus } from '../shared/cpus.js';

describe('cpuShare', () => {
  test('an even contiguous slice per worker, in list syntax', () => {
    assert.equal(cpuShare('0-1', 0, 2), '0');
    assert.equal(cpuShare('0-1', 1, 2), '1');
    assert.equal(cpuShare('0-7', 1, 2), '4-7');
    assert.equal(cpuShare('0-3,8-11', 1, 2), '8-11');
    assert.equal(cpuShare('0-3,8-11', 1, 4), '2-3');
    assert.equal(cpuShare('0-3,8-11', 2, 3), '8-9');
    assert.equal(cpuShare('3,5,7', 0, 1), '3,5,7');
    assert.equal(cpuShare('0-4', 1, 2), '2-3', 'the odd CPU is left to the scheduler');
  });

  test('no pinning when the workers outnumber the CPUs, for a slot past the count, or for text it cannot read', () => {
    assert.equal(cpuShare('0-1', 2, 4), '');
    assert.equal(cpuShare('0', 0, 2), '');
    assert.equal(cpuShare('0-3', 4, 4), '');
    assert.equal(cpuShare('0-3\n', 0, 2), '0-1');
    assert.equal(cpuShare('ff', 0, 1), '');
    assert.equal(cpuShare('', 0, 1), '');
  });
});

test('--cpu-binding auto pins workers unless they run on wasm or cpu; cpus and none are taken as given', () => {
  assert.equal(resolveCpuBinding('auto', 'tensorflow'), 'cpus');
  assert.equal(resolveCpuBinding('auto', 'auto'), 'cpus');
  assert.equal(resolveCpuBinding('auto', 'wasm'), 'none');
  assert.equal(resolveCpuBinding('auto', 'cpu'), 'none');
  assert.equal(resolveCpuBinding('cpus', 'wasm'), 'cpus');
  assert.equal(resolveCpuBinding('none', 'tensorflow'), 'none');
});

const ownCpus = (): string => allowedCpus()!;

/** A stand-in for `ringtrain`, run by `node`: prints the CPUs it may run on. */
const cpusWorker = (node: string) =>
  `${node} -e ${shellQuote('console.log(/Cpus_allowed_list:\\s*(\\S+)/.exec(require("fs").readFileSync("/proc/self/status","utf8"))[1])')}`;
const CPUS_WORKER = cpusWorker('node');

async function runPinned(
  index: number,
  count: number,
  env: NodeJS.ProcessEnv,
  template = '{command}',
  spec: { ringtrain?: string; node?: string } = {},
) {
  let out = '';
  let err = '';
  const script = workerScript({
    ringtrain: CPUS_WORKER,
    ...spec,
    args: [],
    advertise: 'x',
    cpuShare: { index, count },
  });
  const worker = new RemoteWorker({
    slot: { host: 'h', slot: index },
    commandLine: renderLauncherCommand(template, { host: 'h', slot: index, script }),
    token: 'token',
    env,
    stdout: (t) => {
      out += t;
    },
    stderr: (t) => {
      err += t;
    },
  });
  const code = await worker.exited;
  return { code, cpus: out.trim().replace(/^\[h:\d+\] /, ''), err };
}

const linux = process.platform === 'linux';

describe('the worker script pins the worker', { skip: !linux && 'CPU affinity is read from /proc (Linux)' }, () => {
  // `sh -c {shell_command}` does what ssh does: the script as one string, split again by the shell on the host.
  for (const template of ['{command}', 'sh -c {shell_command}']) {
    test(`to its share of the CPUs this process may use: ${template}`, async (t) => {
      if (os.availableParallelism() < 2) return t.skip('needs 2 CPUs');
      const r = await runPinned(1, 2, { PATH: process.env.PATH }, template);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.cpus, cpuShare(ownCpus(), 1, 2));
      assert.notEqual(r.cpus, ownCpus());
    });
  }

  test('runs the worker unpinned, and says so, where taskset is missing', async () => {
    const bin = mkdtempSync(path.join(os.tmpdir(), 'ringtrain-nobin-'));
    try {
      symlinkSync(process.execPath, path.join(bin, 'node')); // the stand-in worker's
      symlinkSync('/bin/sh', path.join(bin, 'sh'));
      const r = await runPinned(0, 1, { PATH: bin });
      assert.equal(r.code, 0, r.err);
      assert.equal(r.cpus, ownCpus());
      assert.match(r.err, /worker not pinned to CPUs: taskset \(util-linux\) is not installed/);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  test('the share is computed with the node it is given (launch gives local workers its own)', async (t) => {
    if (os.availableParallelism() < 2) return t.skip('needs 2 CPUs');
    const bin = mkdtempSync(path.join(os.tmpdir(), 'ringtrain-nonode-'));
    try {
      symlinkSync('/bin/sh', path.join(bin, 'sh'));
      // `true` is a shell builtin: taskset runs the program, found on PATH, to check the list.
      for (const tool of ['taskset', 'true'])
        symlinkSync(execFileSync('which', [tool]).toString().trim(), path.join(bin, tool));
      const r = await runPinned(1, 2, { PATH: bin }, '{command}', {
        ringtrain: cpusWorker(shellQuote(process.execPath)),
        node: shellQuote(process.execPath),
      });
      assert.equal(r.code, 0, r.err);
      assert.equal(r.cpus, cpuShare(ownCpus(), 1, 2), r.err);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  test('more workers than CPUs: no pinning, no warning', async () => {
    const r = await runPinned(0, os.availableParallelism() + 1, { PATH: process.env.PATH });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.cpus, ownCpus());
    assert.doesNotMatch(r.err, /not pinned/);
  });
});
