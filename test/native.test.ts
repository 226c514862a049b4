/**
 * The native backend's set-up and checks: the install step never fails an install and says why in one line,
 * `doctor` reports each backend (and why the native one is missing), `setup-native` refuses bad input with a clear
 * message, and a process computes with the thread count it is given, logged once.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { resolveThreads } from '../shared/tf/native.js';
import { availableBackends } from './helpers/backends.js';
import { killAll, readJsonLines, runCli, tempDir } from './helpers/procs.js';

const INSTALL = fileURLToPath(new URL('../scripts/native-install.js', import.meta.url));
const HAS_NATIVE = (await availableBackends()).includes('tensorflow');

function run(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => resolve({ code, out }));
  });
}

describe('native backend set-up', { timeout: 180_000 }, () => {
  after(killAll);

  test('threads: the argument, else RINGTRAIN_THREADS, else TF_NUM_INTRAOP_THREADS, else every core', () => {
    assert.equal(resolveThreads(3, { RINGTRAIN_THREADS: '2' }), 3);
    assert.equal(resolveThreads(undefined, { RINGTRAIN_THREADS: '2', TF_NUM_INTRAOP_THREADS: '5' }), 2);
    assert.equal(resolveThreads(undefined, { TF_NUM_INTRAOP_THREADS: '5' }), 5);
    assert.equal(resolveThreads(0, { RINGTRAIN_THREADS: 'x' }) >= 1, true, 'bad values fall back to the cores');
    assert.equal(resolveThreads(undefined, {}), os.availableParallelism());
  });

  test('the install step cannot fail the install: without pip it says why in one line and exits 0', async () => {
    const dir = await tempDir('native-install');
    const env = {
      PATH: path.join(dir, 'empty-path'),
      HOME: dir,
      RINGTRAIN_NATIVE_CACHE: path.join(dir, 'cache'),
      RINGTRAIN_NATIVE_DIR: path.join(dir, 'install', 'tfjs-node'),
    };
    const { code, out } = await run([INSTALL], env);
    assert.equal(code, 0, out);
    const lines = out.trim().split('\n');
    assert.equal(lines.length, 1, out);
    assert.match(lines[0]!, /^ringtrain native backend: not set up \(no pip .*\); ringtrain runs on wasm/);
    const status = JSON.parse(await fs.readFile(path.join(dir, 'install', 'last-setup.json'), 'utf8'));
    assert.equal(status.ok, false);
    assert.match(status.reason, /no pip/);

    // doctor then names the backend missing, the reason the set-up gave, and what auto falls back to.
    const doctor = await run([fileURLToPath(new URL('../scripts/ringtrain.js', import.meta.url)), 'doctor', '--json'], {
      ...process.env,
      RINGTRAIN_NATIVE_DIR: env.RINGTRAIN_NATIVE_DIR,
    });
    assert.equal(doctor.code, 0, doctor.out);
    const report = JSON.parse(doctor.out);
    const byName = Object.fromEntries(report.backends.map((b: { backend: string }) => [b.backend, b]));
    assert.equal(byName.tensorflow.available, false);
    assert.match(byName.tensorflow.note, /not set up in .*the last set-up said: no pip/);
    assert.equal(byName.wasm.available, true);
    assert.equal(byName.cpu.available, true);
    assert.equal(report.auto, 'wasm');
  });

  test('RINGTRAIN_NATIVE=0 skips the step, in one line', async () => {
    const { code, out } = await run([INSTALL], { ...process.env, RINGTRAIN_NATIVE: '0' });
    assert.equal(code, 0);
    assert.equal(out, 'ringtrain native backend: skipped (RINGTRAIN_NATIVE=0); ringtrain runs on wasm\n');
  });

  test('setup-native refuses a file that is not a wheel, and --wheel with --libtensorflow', async () => {
    const dir = await tempDir('setup-native');
    const bogus = path.join(dir, 'tensorflow-0-py3-none-any.whl');
    await fs.writeFile(bogus, 'not a zip');
    const env = {
      RINGTRAIN_NATIVE_CACHE: path.join(dir, 'cache'),
      RINGTRAIN_NATIVE_DIR: path.join(dir, 'i', 'tfjs-node'),
    };
    const bad = runCli(['setup-native', '--wheel', bogus], env);
    assert.equal(await bad.exited(120_000), 1, bad.output());
    assert.match(bad.output(), /setup-native: (extracting the wheel failed|no pip)/);
    const both = runCli(['setup-native', '--wheel', bogus, '--libtensorflow', dir], env);
    assert.equal(await both.exited(60_000), 1);
    assert.match(both.output(), /give --wheel or --libtensorflow, not both/);
  });

  test('doctor reports the native backend with its version and threads', { skip: !HAS_NATIVE }, async () => {
    const p = runCli(['doctor', '--json', '--threads', '1']);
    assert.equal(await p.exited(120_000), 0, p.output());
    // libtensorflow's oneDNN notice reaches stderr, which this output shares: the report is the JSON object.
    const report = JSON.parse(p.output().slice(p.output().indexOf('{\n')));
    const tf = report.backends.find((b: { backend: string }) => b.backend === 'tensorflow');
    assert.equal(tf.available, true, tf.note);
    assert.match(tf.version, /^libtensorflow 2\.\d+\.\d+ \(tfjs-node 4\.22\.0/);
    assert.equal(tf.threads, 1);
    assert.equal(report.auto, 'tensorflow');
  });

  test(
    '--backend auto trains on tensorflow with the threads it is given, logged once',
    { skip: !HAS_NATIVE },
    async () => {
      const dir = await tempDir('native-train');
      const args = ['train', '--model', 'mlp', '--epochs', '1', '--train-limit', '256', '--test-limit', '100'];
      const p = runCli([...args, '--no-save', '--quiet', '--run-dir', dir], { RINGTRAIN_THREADS: '1' });
      assert.equal(await p.exited(120_000), 0, p.output());
      const lines = await readJsonLines<{ msg: string; backend?: string; threads?: number }>(
        path.join(dir, 'train.log.jsonl'),
      );
      const selected = lines.filter((l) => l.msg === 'tensorflow.js backend selected');
      assert.equal(selected.length, 1);
      assert.equal(selected[0]!.backend, 'tensorflow');
      assert.equal(selected[0]!.threads, 1);
    },
  );

  test(
    "step and ReLU's gradient on tensorflow (ringtrain's Step kernel) equal the cpu reference",
    { skip: !HAS_NATIVE },
    async () => {
      const values = [-3, -1e-30, -0, 0, 1e-30, 0.5, 7];
      const weights = [1, -2, 3, -4, 5, -6, 7];
      const on = async (backend: string) => {
        await tf.setBackend(backend);
        return tf.tidy(() => {
          const x = tf.tensor1d(values);
          const grad = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.relu(t), tf.tensor1d(weights))))(x);
          return [tf.step(x), tf.step(x, 0.25), grad].map((t) => Array.from(t.dataSync()));
        });
      };
      try {
        assert.deepEqual(await on('tensorflow'), await on('cpu'));
      } finally {
        await tf.setBackend('cpu');
      }
    },
  );
});
