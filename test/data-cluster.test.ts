/**
 * Datasets other than MNIST's IDX files in a real cluster: 2 worker processes on MNIST digits written as PNG class
 * folders, and on a CIFAR-10-format dataset with one worker reading its own copy and one fed the 32x32x3 samples over
 * the wire; a worker whose own copy differs from the coordinator's is refused with the difference named.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { writeCifarBatch } from '../shared/data/cifar.js';
import { limitSplit, makeSplit, sampleBytes, type DataSplit } from '../shared/data/dataset.js';
import { encodeImage } from '../shared/data/image.js';
import { loadMnist } from '../shared/data/mnist.js';
import { killAll, readJsonLines, runCli, tempDir } from './helpers/procs.js';

interface MetricLine {
  rank: number;
  step: number;
  paramHash?: string;
}

interface Summary {
  workers: number;
  steps: number;
  hashChecks: number;
  hashMismatches: number;
  testAccuracy: number;
}

async function writePngFolders(dir: string, sub: string, split: DataSplit): Promise<void> {
  const n = sampleBytes(split.shape);
  for (let c = 0; c < 10; c++) await fs.mkdir(path.join(dir, sub, `digit-${c}`), { recursive: true });
  for (let i = 0; i < split.count; i++) {
    const pixels = split.images.subarray(i * n, (i + 1) * n);
    const file = path.join(dir, sub, `digit-${split.labels[i]}`, `${i}.png`);
    await fs.writeFile(file, await encodeImage(pixels, split.shape));
  }
}

function randomCifar(count: number, seed: number): DataSplit {
  let s = seed;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
  const images = Uint8Array.from({ length: count * 3072 }, () => next() >>> 24);
  const labels = Uint8Array.from({ length: count }, () => next() % 10);
  return makeSplit(images, labels, [32, 32, 3]);
}

/** Every step's hashes, per rank, from metrics.jsonl: each step reported by both ranks, with equal hashes. */
async function assertReplicasIdentical(runDir: string, steps: number): Promise<void> {
  const lines = await readJsonLines<MetricLine>(path.join(runDir, 'metrics.jsonl'));
  const byStep = new Map<number, Map<number, string | undefined>>();
  for (const l of lines) {
    if (!byStep.has(l.step)) byStep.set(l.step, new Map());
    byStep.get(l.step)!.set(l.rank, l.paramHash);
  }
  assert.equal(byStep.size, steps);
  for (const [step, ranks] of byStep) {
    assert.equal(ranks.size, 2, `step ${step}: both ranks reported`);
    assert.ok(ranks.get(0), `step ${step} has a hash`);
    assert.equal(ranks.get(0), ranks.get(1), `step ${step}: replicas identical`);
  }
}

const COMMON = ['--model', 'mlp', '--batch-size', '32', '--backend', 'cpu', '--check-every', '1'];
// The machine running the tests may be busy: a slow step must not look like a dead worker.
const PATIENT = ['--heartbeat-ms', '1000', '--heartbeat-misses', '60'];

describe('cluster on other datasets (real processes)', { timeout: 600_000 }, () => {
  let root = '';
  let pngDir = '';
  let cifarDir = '';

  before(async () => {
    root = await tempDir('data-cluster');
    const mnist = await loadMnist();
    pngDir = path.join(root, 'digits-png');
    await writePngFolders(pngDir, 'train', limitSplit(mnist.train, 1024));
    await writePngFolders(pngDir, 'test', limitSplit(mnist.test, 200));
    cifarDir = path.join(root, 'cifar');
    await fs.mkdir(cifarDir);
    await fs.writeFile(path.join(cifarDir, 'data_batch_1.bin'), writeCifarBatch(randomCifar(256, 1)));
    await fs.writeFile(path.join(cifarDir, 'test_batch.bin'), writeCifarBatch(randomCifar(64, 2)));
  });

  after(async () => {
    killAll();
    await fs.rm(root, { recursive: true, force: true });
  });

  test('launch -np 2 on PNG class folders, with augmentation: identical replicas, digits learned', async () => {
    const runDir = await tempDir('png-launch');
    const summaryFile = path.join(runDir, 'summary.json');
    const launch = runCli([
      'launch',
      '-np',
      '2',
      ...COMMON,
      ...PATIENT,
      '--epochs',
      '2',
      '--augment',
      'crop',
      '--data-dir',
      pngDir,
      '--run-dir',
      runDir,
      '--summary-json',
      summaryFile,
    ]);
    assert.equal(await launch.exited(400_000), 0, launch.output());
    const summary = JSON.parse(await fs.readFile(summaryFile, 'utf8')) as Summary;
    assert.equal(summary.workers, 2);
    assert.equal(summary.steps, 32, '1024 samples / 2 workers / batch 32 = 16 steps per epoch, 2 epochs');
    assert.equal(summary.hashMismatches, 0);
    assert.ok(summary.testAccuracy > 0.5, `accuracy ${summary.testAccuracy}`);
    await assertReplicasIdentical(runDir, 32);
    const log = await fs.readFile(path.join(runDir, 'coordinator.log.jsonl'), 'utf8');
    assert.match(log, /"format":"folders"/);
    assert.match(log, /"classNames":\["digit-0","digit-1",/);
  });

  test('CIFAR-10 format: a mismatched copy is refused; own copy and shipped 32x32x3 samples agree', async () => {
    const runDir = await tempDir('cifar-cluster');
    const summaryFile = path.join(runDir, 'summary.json');
    const coord = runCli([
      'coordinator',
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--min-workers',
      '2',
      ...COMMON.filter((a) => a !== 'cpu' && a !== '--backend'),
      ...PATIENT,
      '--epochs',
      '1',
      '--augment',
      'flip,crop',
      '--data-dir',
      cifarDir,
      '--run-dir',
      runDir,
      '--summary-json',
      summaryFile,
    ]);
    const [, port] = await coord.waitFor(/coordinator ws:\/\/[^:]+:(\d+)/);
    const worker = ['worker', '--coordinator', `ws://127.0.0.1:${port}`, '--listen', '127.0.0.1:0'];
    // wasm: 32x32x3 inputs make the mlp's first layer 4x larger than MNIST's, too slow on the pure-JS cpu backend.
    const workerArgs = [...worker, '--advertise', '127.0.0.1', '--backend', 'wasm', ...PATIENT];

    const wrong = runCli([...workerArgs, '--data-dir', pngDir]);
    assert.equal(await wrong.exited(), 1, wrong.output());
    assert.match(wrong.output(), /dataset mismatch: samples 28x28x1 here, 32x32x3 at the coordinator/);

    const withData = runCli([...workerArgs, '--data-dir', cifarDir]);
    const withoutData = runCli(workerArgs);
    assert.equal(await coord.exited(), 0, coord.output());
    assert.equal(await withData.exited(), 0, withData.output());
    assert.equal(await withoutData.exited(), 0, withoutData.output());
    const summary = JSON.parse(await fs.readFile(summaryFile, 'utf8')) as Summary;
    assert.equal(summary.hashMismatches, 0);
    assert.equal(summary.steps, 4, '256 samples / 2 workers / batch 32');
    await assertReplicasIdentical(runDir, 4);
  });
});
