import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planFrom, positionAt, epochTrained } from '../coordinator/epoch-plan.js';
import { batchIndices, shardForRank } from '../shared/data/sampler.js';

test('a plan from the start of an epoch runs ceil(ceil(N/W)/B) steps and ends with the epoch consumed', () => {
  const plan = planFrom({ epoch: 2, consumed: 0, step: 100 }, 1000, 3, 64);
  assert.equal(plan.steps, Math.ceil(Math.ceil(1000 / 3) / 64));
  assert.deepEqual(positionAt(plan, 100), { epoch: 2, consumed: 0, step: 100 });
  assert.deepEqual(positionAt(plan, 102), { epoch: 2, consumed: 2 * 64 * 3, step: 102 });
  assert.deepEqual(positionAt(plan, 100 + plan.steps), { epoch: 2, consumed: 1000, step: 100 + plan.steps });
  assert.deepEqual(positionAt(plan, 10_000), positionAt(plan, 100 + plan.steps), 'clamped to the plan');
  assert.ok(epochTrained(positionAt(plan, 100 + plan.steps), 1000));
});

test('after k steps, exactly the first consumed samples of the epoch order were trained, for every world size', () => {
  for (const N of [1, 7, 50, 97]) {
    for (const W of [1, 2, 3, 5]) {
      for (const B of [1, 4, 8]) {
        const plan = planFrom({ epoch: 0, consumed: 0, step: 0 }, N, W, B);
        const order = shardForRank({ datasetSize: N, worldSize: 1, rank: 0, seed: 9, epoch: 0 });
        const shards = Array.from({ length: W }, (_, rank) =>
          shardForRank({ datasetSize: N, worldSize: W, rank, seed: 9, epoch: 0 }),
        );
        const seen = new Set<number>();
        for (let k = 1; k <= plan.steps; k++) {
          for (const s of shards) for (const i of batchIndices(s, k - 1, B)) seen.add(i);
          const { consumed } = positionAt(plan, k);
          const prefix = new Set(order.subarray(0, consumed));
          for (const i of prefix)
            assert.ok(seen.has(i), `N=${N} W=${W} B=${B} k=${k}: sample ${i} of the prefix was trained`);
        }
        assert.equal(seen.size, N, 'the whole epoch was trained');
      }
    }
  }
});

test('a re-plan after a membership change trains exactly the rest of the epoch', () => {
  const N = 101;
  const first = planFrom({ epoch: 1, consumed: 0, step: 40 }, N, 3, 5);
  const at = positionAt(first, 43); // 3 steps by 3 workers, then one of them died
  assert.equal(at.consumed, 45);
  const second = planFrom(at, N, 2, 5);
  assert.equal(second.firstStep, 43);
  const order = shardForRank({ datasetSize: N, worldSize: 1, rank: 0, seed: 4, epoch: 1 });
  const rest = new Set<number>();
  for (let rank = 0; rank < 2; rank++) {
    const shard = shardForRank({ datasetSize: N, worldSize: 2, rank, seed: 4, epoch: 1, offset: at.consumed });
    assert.equal(shard.length, Math.ceil((N - 45) / 2));
    for (const i of shard) rest.add(i);
  }
  assert.deepEqual(
    [...rest].sort((a, b) => a - b),
    [...order.subarray(45)].sort((a, b) => a - b),
  );
  assert.equal(positionAt(second, second.firstStep + second.steps).consumed, N);
});

test('a re-plan of a fully trained epoch has no steps', () => {
  const plan = planFrom({ epoch: 0, consumed: 60, step: 7 }, 60, 4, 8);
  assert.equal(plan.steps, 0);
  assert.deepEqual(positionAt(plan, 7), { epoch: 0, consumed: 60, step: 7 });
});
