/**
 * Data-parallel equivalence: 2 workers at batch B, averaging gradients with the ring allreduce, end with the same
 * parameters as one process at batch 2B on the same samples (SGD, to float tolerance). Runs the worker's own step
 * function over an in-memory ring, on every available backend (the pure-JS cpu backend is the numeric reference;
 * wasm and the native tensorflow backend must agree with it to float rounding).
 */
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { createInMemoryRing } from '../shared/ring/allreduce-memory.js';
import { limitSplit, type DataSplit } from '../shared/data/dataset.js';
import { loadMnist } from '../shared/data/mnist.js';
import { batchIndices, shardForRank } from '../shared/data/sampler.js';
import { BatchLoader } from '../shared/train/batches.js';
import { buildModel } from '../shared/train/models.js';
import { Replica } from '../shared/train/replica.js';
import { trainStep } from '../worker/epoch-runner.js';
import { availableBackends } from './helpers/backends.js';

const B = 16;
const K = 6;
const SEED = 3;

let train: DataSplit;

const BACKENDS = await availableBackends();

before(async () => {
  tf.enableProdMode();
  train = limitSplit((await loadMnist()).train, 400);
});

function sgdReplica(): Replica {
  return new Replica(buildModel('lenet5', SEED), { name: 'sgd', lr: 0.1, momentum: 0 });
}

for (const backend of BACKENDS)
  test(`${backend}: 2 workers at batch ${B} for ${K} SGD steps == 1 process at batch ${2 * B}`, async () => {
    assert.ok(await tf.setBackend(backend));
    // Reference: one process, batch 2B, world size 1.
    const single = sgdReplica();
    const singleShard = shardForRank({
      datasetSize: train.count,
      worldSize: 1,
      rank: 0,
      seed: SEED,
      epoch: 0,
      shuffle: true,
    });
    const soloRing = { rank: 0, worldSize: 1, gen: 1, links: createInMemoryRing(1)[0]! };
    const singleLoader = new BatchLoader(train, 2 * B);
    for (let s = 0; s < K; s++)
      await trainStep(single, singleLoader, batchIndices(singleShard, s, 2 * B), soloRing, s, 0);

    // Cluster: two replicas from the same start, each on its DistributedSampler shard at batch B.
    const links = createInMemoryRing(2);
    const workers = [0, 1].map((rank) => ({
      rank,
      replica: sgdReplica(),
      loader: new BatchLoader(train, B),
      shard: shardForRank({ datasetSize: train.count, worldSize: 2, rank, seed: SEED, epoch: 0, shuffle: true }),
      ring: { rank, worldSize: 2, gen: 1, links: links[rank]! },
    }));
    for (let s = 0; s < K; s++) {
      await Promise.all(workers.map((w) => trainStep(w.replica, w.loader, batchIndices(w.shard, s, B), w.ring, s, 0)));
    }

    const expected = single.getWeights();
    const [a, b] = workers.map((w) => w.replica.getWeights());
    assert.deepEqual(a, b, 'the two replicas are bitwise identical');
    let maxDiff = 0;
    let maxAbs = 0;
    for (let i = 0; i < expected.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(a![i]! - expected[i]!));
      maxAbs = Math.max(maxAbs, Math.abs(expected[i]!));
    }
    assert.ok(maxDiff <= 1e-5 * Math.max(1, maxAbs), `max |cluster - single| = ${maxDiff}`);
    // And the steps did move the weights (so equality is not trivially true).
    const start = sgdReplica().getWeights();
    let moved = 0;
    for (let i = 0; i < start.length; i++) moved = Math.max(moved, Math.abs(start[i]! - expected[i]!));
    assert.ok(moved > 1e-3, `weights moved by ${moved}`);
  });

test("the union of the two workers' batches is exactly the single process's batch", () => {
  const single = shardForRank({ datasetSize: train.count, worldSize: 1, rank: 0, seed: SEED, epoch: 0, shuffle: true });
  const shards = [0, 1].map((rank) =>
    shardForRank({ datasetSize: train.count, worldSize: 2, rank, seed: SEED, epoch: 0, shuffle: true }),
  );
  for (let s = 0; s < K; s++) {
    const union = [...batchIndices(shards[0]!, s, B), ...batchIndices(shards[1]!, s, B)].sort((x, y) => x - y);
    const ref = [...batchIndices(single, s, 2 * B)].sort((x, y) => x - y);
    assert.deepEqual(union, ref);
  }
});
