import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  batchIndices,
  epochPermutation,
  evalShard,
  shardForRank,
  shardLength,
  stepsPerEpoch,
} from '../shared/data/sampler.js';

function allShards(datasetSize: number, worldSize: number, seed: number, epoch: number, shuffle = true): Uint32Array[] {
  return Array.from({ length: worldSize }, (_, rank) =>
    shardForRank({ datasetSize, worldSize, rank, seed, epoch, shuffle }),
  );
}

/** PyTorch's DistributedSampler, written out the way its source does it, as the reference. */
function referenceShard(order: Uint32Array, worldSize: number, rank: number): number[] {
  const indices = Array.from(order);
  const total = Math.ceil(indices.length / worldSize) * worldSize;
  const padding = total - indices.length;
  if (indices.length > 0) {
    if (padding <= indices.length) indices.push(...indices.slice(0, padding));
    else {
      const repeated: number[] = [];
      while (repeated.length < padding) repeated.push(...indices);
      indices.push(...repeated.slice(0, padding));
    }
  }
  return indices.filter((_, i) => i % worldSize === rank);
}

test('exhaustive small cases: equal lengths, full coverage, wrap-around padding, PyTorch striding', () => {
  for (let datasetSize = 0; datasetSize <= 20; datasetSize++) {
    for (let worldSize = 1; worldSize <= 5; worldSize++) {
      for (const shuffle of [true, false]) {
        const order = epochPermutation(datasetSize, 11, 3, shuffle);
        const shards = allShards(datasetSize, worldSize, 11, 3, shuffle);
        const perRank = Math.ceil(datasetSize / worldSize);
        const counts = new Array<number>(datasetSize).fill(0);
        shards.forEach((shard, rank) => {
          const label = `size ${datasetSize} world ${worldSize} rank ${rank} shuffle ${shuffle}`;
          assert.equal(shard.length, perRank, label);
          assert.equal(shard.length, shardLength(datasetSize, worldSize), label);
          assert.deepEqual(Array.from(shard), referenceShard(order, worldSize, rank), label);
          for (const index of shard) counts[index]++;
        });
        // Every sample is used; the padded order is the epoch's order repeated (wrapped) up to
        // total = perRank * worldSize, so position p appears once per wrap that reaches it.
        const total = perRank * worldSize;
        for (let position = 0; position < datasetSize; position++) {
          const expected = Math.floor((total - 1 - position) / datasetSize) + 1;
          if (total - datasetSize <= datasetSize) assert.equal(expected, position < total - datasetSize ? 2 : 1);
          assert.equal(
            counts[order[position]],
            expected,
            `size ${datasetSize} world ${worldSize} position ${position}`,
          );
        }
      }
    }
  }
});

test('a concrete case: 10 samples on 4 ranks, unshuffled', () => {
  const shards = allShards(10, 4, 0, 0, false).map((s) => Array.from(s));
  // padded order 0..9,0,1; rank r takes r, r+4, r+8
  assert.deepEqual(shards, [
    [0, 4, 8],
    [1, 5, 9],
    [2, 6, 0],
    [3, 7, 1],
  ]);
});

test('every epoch shuffles differently; the same seed and epoch always give the same shards', () => {
  const epoch0 = allShards(1000, 3, 42, 0);
  const epoch1 = allShards(1000, 3, 42, 1);
  assert.deepEqual(allShards(1000, 3, 42, 0), epoch0);
  assert.notDeepEqual(epoch0, epoch1);
  assert.notDeepEqual(allShards(1000, 3, 43, 0), epoch0);
  assert.notDeepEqual(
    Array.from(epochPermutation(1000, 42, 0)),
    Array.from({ length: 1000 }, (_, i) => i),
  );
});

test('stepsPerEpoch and batchIndices: equal steps, views, short last batch', () => {
  assert.equal(stepsPerEpoch(0, 32), 0);
  assert.equal(stepsPerEpoch(32, 32), 1);
  assert.equal(stepsPerEpoch(33, 32), 2);
  assert.throws(() => stepsPerEpoch(10, 0), RangeError);

  const shard = shardForRank({ datasetSize: 103, worldSize: 2, rank: 1, seed: 1, epoch: 0 });
  assert.equal(shard.length, 52);
  const steps = stepsPerEpoch(shard.length, 10);
  assert.equal(steps, 6);
  const joined: number[] = [];
  for (let step = 0; step < steps; step++) {
    const batch = batchIndices(shard, step, 10);
    assert.equal(batch.buffer, shard.buffer, 'a view, not a copy');
    assert.equal(batch.length, step < steps - 1 ? 10 : 2);
    joined.push(...batch);
  }
  assert.deepEqual(joined, Array.from(shard));
  assert.throws(() => batchIndices(shard, steps, 10), RangeError);
  assert.throws(() => batchIndices(shard, -1, 10), RangeError);
});

test('evalShard partitions the test set exactly, contiguously and evenly', () => {
  for (let testSize = 0; testSize <= 20; testSize++) {
    for (let worldSize = 1; worldSize <= 5; worldSize++) {
      let next = 0;
      const sizes: number[] = [];
      for (let rank = 0; rank < worldSize; rank++) {
        const { start, end } = evalShard(testSize, worldSize, rank);
        assert.equal(start, next, `size ${testSize} world ${worldSize} rank ${rank} is contiguous`);
        assert.ok(end >= start);
        sizes.push(end - start);
        next = end;
      }
      assert.equal(next, testSize, 'covers every sample exactly once');
      assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, 'even');
    }
  }
  assert.deepEqual(evalShard(10_000, 3, 0), { start: 0, end: 3334 });
  assert.deepEqual(evalShard(10_000, 3, 2), { start: 6667, end: 10_000 });
});

test('invalid arguments are rejected', () => {
  assert.throws(() => shardForRank({ datasetSize: 10, worldSize: 2, rank: 2, seed: 0, epoch: 0 }), RangeError);
  assert.throws(() => shardForRank({ datasetSize: 10, worldSize: 0, rank: 0, seed: 0, epoch: 0 }), RangeError);
  assert.throws(() => shardForRank({ datasetSize: -1, worldSize: 1, rank: 0, seed: 0, epoch: 0 }), RangeError);
  assert.throws(() => evalShard(10, 2, -1), RangeError);
  assert.throws(() => epochPermutation(10, 0, 1.5), RangeError);
});
