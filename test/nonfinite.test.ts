/**
 * A NaN in one worker's gradients poisons the averaged gradients of every worker alike, so all replicas skip that
 * update together (or abort, by option) and stay identical.
 */
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { createInMemoryRing } from '../shared/ring/allreduce-memory.js';
import type { DataSplit } from '../shared/data/dataset.js';
import { BatchLoader } from '../shared/train/batches.js';
import { buildModel } from '../shared/train/models.js';
import { Replica } from '../shared/train/replica.js';
import { NonFiniteGradientError, trainStep } from '../worker/epoch-runner.js';

before(async () => {
  await tf.setBackend('cpu');
});

function split(n: number, seed: number): DataSplit {
  let s = seed;
  const next = () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
  return {
    images: Uint8Array.from({ length: n * 784 }, () => Math.floor(next() * 256)),
    labels: Uint8Array.from({ length: n }, () => Math.floor(next() * 10)),
    count: n,
    shape: [28, 28, 1],
  };
}

/** A loader whose batches hold a NaN pixel: that replica's loss and gradients become NaN. */
class PoisonedLoader extends BatchLoader {
  override load(indices: ArrayLike<number>) {
    const batch = super.load(indices);
    batch.images[0] = Number.NaN;
    return batch;
  }
}

function twoWorkers() {
  const links = createInMemoryRing(2);
  return [0, 1].map((rank) => ({
    replica: new Replica(buildModel('mlp', 5), { name: 'sgd', lr: 0.1, momentum: 0 }),
    ring: { rank, worldSize: 2, gen: 1, links: links[rank]! },
    data: split(8, 10 + rank),
  }));
}

test('skip: every replica skips the poisoned step together and stays identical; the next clean step applies', async () => {
  const workers = twoWorkers();
  const start = workers[0]!.replica.getWeights();
  const loaders = [new PoisonedLoader(workers[0]!.data, 8), new BatchLoader(workers[1]!.data, 8)];
  const idx = Uint32Array.from({ length: 8 }, (_, i) => i);
  const records = await Promise.all(
    workers.map((w, i) => trainStep(w.replica, loaders[i]!, idx, w.ring, 0, 0, 'skip')),
  );
  assert.ok(
    records.every((r) => r.nonFinite === true),
    'both workers flag the step',
  );
  for (const w of workers) assert.deepEqual(w.replica.getWeights(), start, 'no update applied');
  const clean = workers.map((w) => new BatchLoader(w.data, 8));
  const next = await Promise.all(workers.map((w, i) => trainStep(w.replica, clean[i]!, idx, w.ring, 1, 0, 'skip')));
  assert.ok(next.every((r) => r.nonFinite === undefined));
  assert.deepEqual(workers[0]!.replica.getWeights(), workers[1]!.replica.getWeights());
  assert.notDeepEqual(workers[0]!.replica.getWeights(), start);
});

test('abort: every replica stops with a typed error', async () => {
  const workers = twoWorkers();
  const loaders = [new BatchLoader(workers[0]!.data, 8), new PoisonedLoader(workers[1]!.data, 8)];
  const idx = Uint32Array.from({ length: 8 }, (_, i) => i);
  const results = await Promise.allSettled(
    workers.map((w, i) => trainStep(w.replica, loaders[i]!, idx, w.ring, 0, 0, 'abort')),
  );
  for (const r of results) {
    assert.equal(r.status, 'rejected');
    assert.ok((r as PromiseRejectedResult).reason instanceof NonFiniteGradientError);
  }
});
