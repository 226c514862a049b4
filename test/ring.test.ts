import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chunkRanges, ownedChunk, predecessor, ringSchedule, successor } from '../shared/ring/schedule.js';

test('chunkRanges covers the buffer exactly, contiguously and evenly (lengths 0..30 x world 1..6)', () => {
  for (let length = 0; length <= 30; length++) {
    for (let worldSize = 1; worldSize <= 6; worldSize++) {
      const ranges = chunkRanges(length, worldSize);
      const label = `length ${length} world ${worldSize}`;
      assert.equal(ranges.length, worldSize, label);
      let next = 0;
      ranges.forEach(({ start, end }, i) => {
        assert.equal(start, next, `${label} chunk ${i} starts where the previous ended`);
        const expectedSize = Math.floor(length / worldSize) + (i < length % worldSize ? 1 : 0);
        assert.equal(end - start, expectedSize, `${label} chunk ${i} size`);
        next = end;
      });
      assert.equal(next, length, label);
    }
  }
  assert.deepEqual(chunkRanges(2, 4), [
    { start: 0, end: 1 },
    { start: 1, end: 2 },
    { start: 2, end: 2 },
    { start: 2, end: 2 },
  ]);
  assert.throws(() => chunkRanges(-1, 2), RangeError);
  assert.throws(() => chunkRanges(3, 0), RangeError);
});

test('successor and predecessor close the ring', () => {
  for (let n = 1; n <= 6; n++) {
    for (let r = 0; r < n; r++) {
      assert.equal(predecessor(successor(r, n), n), r);
      assert.equal(successor(r, n), (r + 1) % n);
    }
  }
  assert.equal(predecessor(0, 4), 3);
  assert.throws(() => successor(4, 4), RangeError);
});

test("the schedule matches its definition and a send always pairs with the successor's receive", () => {
  for (let n = 1; n <= 8; n++) {
    const schedules = Array.from({ length: n }, (_, r) => ringSchedule(r, n));
    for (let r = 0; r < n; r++) {
      const { reduceScatter, allgather } = schedules[r];
      assert.equal(reduceScatter.length, n - 1);
      assert.equal(allgather.length, n - 1);
      const next = schedules[(r + 1) % n];
      for (let s = 0; s < n - 1; s++) {
        assert.equal(reduceScatter[s].send, (((r - s) % n) + n) % n);
        assert.equal(reduceScatter[s].recv, (((r - s - 1) % n) + n) % n);
        assert.equal(allgather[s].send, (((r + 1 - s) % n) + n) % n);
        assert.equal(allgather[s].recv, (((r - s) % n) + n) % n);
        assert.equal(next.reduceScatter[s].recv, reduceScatter[s].send);
        assert.equal(next.allgather[s].recv, allgather[s].send);
      }
    }
  }
});

/**
 * Simulate the schedule symbolically: each rank's copy of each chunk is the set of ranks whose
 * contribution it contains. Steps run in lock step, sends read the state before the step.
 */
test('simulation: after reduce-scatter each rank owns one complete chunk, after allgather every rank has all', () => {
  for (let n = 1; n <= 9; n++) {
    const state = Array.from({ length: n }, (_, r) => Array.from({ length: n }, () => new Set([r])));
    const schedules = Array.from({ length: n }, (_, r) => ringSchedule(r, n));
    for (let s = 0; s < n - 1; s++) {
      const inFlight = schedules.map((sch, r) => new Set(state[r][sch.reduceScatter[s].send]));
      for (let r = 0; r < n; r++) {
        const from = (r + n - 1) % n;
        const { recv } = schedules[r].reduceScatter[s];
        assert.equal(schedules[from].reduceScatter[s].send, recv);
        for (const contributor of inFlight[from]) {
          assert.ok(!state[r][recv].has(contributor), `n ${n}: rank ${r} would add rank ${contributor} twice`);
          state[r][recv].add(contributor);
        }
      }
    }
    for (let r = 0; r < n; r++) {
      assert.equal(ownedChunk(r, n), (r + 1) % n);
      assert.equal(state[r][ownedChunk(r, n)].size, n, `n ${n}: rank ${r} owns a complete chunk`);
    }
    for (let s = 0; s < n - 1; s++) {
      const inFlight = schedules.map((sch, r) => new Set(state[r][sch.allgather[s].send]));
      for (let r = 0; r < n; r++) {
        const from = (r + n - 1) % n;
        const { recv } = schedules[r].allgather[s];
        assert.equal(inFlight[from].size, n, `n ${n}: allgather only forwards complete chunks`);
        state[r][recv] = inFlight[from];
      }
    }
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < n; c++) assert.equal(state[r][c].size, n, `n ${n}: rank ${r} chunk ${c} complete`);
    }
  }
});
