import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as nextTick } from 'node:timers/promises';
import {
  ringAllreduce,
  segmentRanges,
  type AllreduceOptions,
  type ChunkValues,
  type RingLinks,
} from '../shared/ring/allreduce.js';
import { Phase, ValueEncoding, type ChunkHeader, type ChunkKey } from '../shared/wire/protocol.js';
import {
  decodeFloat16,
  encodeFloat16,
  FLOAT16_TO_FLOAT32,
  FLOAT16_TO_FLOAT32_BITS,
  float32BitsToFloat16,
} from '../shared/wire/float16.js';
import { createInMemoryRing, type InMemoryRingLink } from '../shared/ring/allreduce-memory.js';
import { chunkRanges } from '../shared/ring/schedule.js';
import { createRng, type Rng } from '../shared/rng.js';
import { PeerLostError, ProtocolError } from '../shared/errors.js';

const WORLD_SIZES = [1, 2, 3, 4, 5];
const LENGTHS = [0, 1, 2, 3, 4, 7, 13, 1000, 1001];

/** Values spanning several magnitudes and both signs, so summation order visibly changes rounding. */
function randomBuffer(rng: Rng, length: number): Float32Array {
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = (rng.next() - 0.5) * 10 ** Math.floor(rng.next() * 6 - 3);
  return out;
}

/**
 * The exact float32 result the ring must produce: chunk c starts on rank c and travels the ring,
 * each rank adding its own value (own + incoming), finished (and averaged) on its owner.
 */
function ringOrderResult(inputs: Float32Array[], average: boolean): Float32Array {
  const n = inputs.length;
  const length = inputs[0].length;
  const out = new Float32Array(length);
  chunkRanges(length, n).forEach(({ start, end }, c) => {
    for (let i = start; i < end; i++) {
      let acc = inputs[c][i];
      for (let k = 1; k < n; k++) acc = Math.fround(inputs[(c + k) % n][i] + acc);
      out[i] = average ? Math.fround(acc / n) : acc;
    }
  });
  return out;
}

function assertBitwiseEqual(a: Float32Array, b: Float32Array, label: string): void {
  assert.deepEqual(
    new Uint32Array(a.buffer, a.byteOffset, a.length),
    new Uint32Array(b.buffer, b.byteOffset, b.length),
    label,
  );
}

type Extra = Pick<AllreduceOptions, 'compression' | 'segmentBytes'>;

async function runRing(
  inputs: Float32Array[],
  average: boolean,
  links: RingLinks[] = createInMemoryRing(inputs.length),
  extra: Extra = {},
): Promise<Float32Array[]> {
  const buffers = inputs.map((b) => b.slice());
  await Promise.all(
    buffers.map((buffer, rank) =>
      ringAllreduce(buffer, {
        rank,
        worldSize: inputs.length,
        generation: 1,
        step: 0,
        links: links[rank],
        average,
        ...extra,
      }),
    ),
  );
  return buffers;
}

/** The same links without `prepare`: the allreduce's generic send path (views of its buffer, copied by the link). */
function withoutPrepare(links: RingLinks[]): RingLinks[] {
  return links.map((l) => ({ send: (h, d) => l.send(h, d), receive: (k) => l.receive(k) }));
}

/** The send paths and segmentations every correctness check runs under. */
const VARIANTS: Array<[string, (n: number) => RingLinks[], Extra]> = [
  ['prepared frames, whole chunks', createInMemoryRing, { segmentBytes: Infinity }],
  ['prepared frames, 2-value segments', createInMemoryRing, { segmentBytes: 8 }],
  ['generic sends, 3-value segments', (n) => withoutPrepare(createInMemoryRing(n)), { segmentBytes: 12 }],
  ['generic sends, default segments', (n) => withoutPrepare(createInMemoryRing(n)), {}],
];

test('sum and average match a float64 reference; every rank ends bitwise identical', async () => {
  const rng = createRng(2024);
  for (const [variant, makeLinks, extra] of VARIANTS)
    for (const worldSize of WORLD_SIZES) {
      for (const length of LENGTHS) {
        const inputs = Array.from({ length: worldSize }, () => randomBuffer(rng, length));
        for (const average of [false, true]) {
          const label = `${variant}: world ${worldSize} length ${length} average ${average}`;
          const results = await runRing(inputs, average, makeLinks(worldSize), extra);
          for (let i = 0; i < length; i++) {
            let exact = 0;
            let magnitude = 0;
            for (const input of inputs) {
              exact += input[i];
              magnitude += Math.abs(input[i]);
            }
            if (average) {
              exact /= worldSize;
              magnitude /= worldSize;
            }
            const tolerance = 2 * worldSize * 2 ** -24 * magnitude + 1e-30;
            assert.ok(Math.abs(results[0][i] - exact) <= tolerance, `${label} [${i}]: ${results[0][i]} vs ${exact}`);
          }
          for (let rank = 1; rank < worldSize; rank++)
            assertBitwiseEqual(results[rank], results[0], `${label} rank ${rank}`);
          assertBitwiseEqual(results[0], ringOrderResult(inputs, average), `${label} follows the ring summation order`);
        }
      }
    }
});

test('world size 1 leaves the buffer untouched and communicates nothing', async () => {
  const buffer = new Float32Array([1.5, -2, 3]);
  const silent: RingLinks = {
    send: () => assert.fail('no send expected'),
    receive: () => assert.fail('no receive expected'),
  };
  await ringAllreduce(buffer, { rank: 0, worldSize: 1, generation: 1, step: 0, links: silent, average: true });
  assert.deepEqual(Array.from(buffer), [1.5, -2, 3]);
});

/**
 * Ranks run many consecutive steps at different, randomly varying speeds (yields before sends and
 * receives), so frames of step t + 1 reach a rank still busy with step t and must wait in its mailbox.
 */
test('consecutive steps at different speeds: early frames of later steps are buffered correctly', async () => {
  for (const worldSize of [2, 3, 5]) {
    const steps = 12;
    const length = 37;
    const rng = createRng(worldSize);
    const inputs = Array.from({ length: steps }, () =>
      Array.from({ length: worldSize }, () => randomBuffer(rng, length)),
    );
    const raw = createInMemoryRing(worldSize);
    const currentStep = new Array<number>(worldSize).fill(-1);
    let crossStepFrames = 0;
    let maxBuffered = 0;
    const links = raw.map((link, rank) =>
      jitteryLink(link, createRng(100 + rank), rank === worldSize - 1 ? 8 : 1, {
        onSend(header) {
          if (header.step > currentStep[(rank + 1) % worldSize]) crossStepFrames++;
        },
        onReceive() {
          maxBuffered = Math.max(maxBuffered, link.bufferedCount());
        },
      }),
    );
    const outputs = inputs.map(() => new Array<Float32Array>(worldSize));
    await Promise.all(
      Array.from({ length: worldSize }, async (_, rank) => {
        for (let step = 0; step < steps; step++) {
          currentStep[rank] = step;
          const buffer = inputs[step][rank].slice();
          await ringAllreduce(buffer, {
            rank,
            worldSize,
            generation: 3,
            step,
            links: links[rank],
            average: true,
            segmentBytes: 16,
          });
          outputs[step][rank] = buffer;
        }
        currentStep[rank] = steps;
      }),
    );
    for (let step = 0; step < steps; step++) {
      const expected = ringOrderResult(inputs[step], true);
      for (let rank = 0; rank < worldSize; rank++)
        assertBitwiseEqual(outputs[step][rank], expected, `world ${worldSize} step ${step} rank ${rank}`);
    }
    assert.ok(crossStepFrames > 0, `world ${worldSize}: some frames arrived a step early (${crossStepFrames})`);
    assert.ok(maxBuffered > 0, `world ${worldSize}: the mailbox buffered frames`);
    for (const link of raw) {
      assert.equal(link.bufferedCount(), 0, 'nothing left over');
      assert.equal(link.waitingCount(), 0, 'nobody left waiting');
    }
  }
});

interface LinkProbe {
  onSend(header: ChunkHeader): void;
  onReceive(): void;
}

/** A link that yields a random number of event-loop turns (up to maxYields) before each operation. */
function jitteryLink(inner: RingLinks, rng: Rng, maxYields: number, probe: LinkProbe): RingLinks {
  const jitter = async (): Promise<void> => {
    for (let i = rng.nextBelow(maxYields + 1); i > 0; i--) await nextTick();
  };
  return {
    async send(header: ChunkHeader, data: ChunkValues) {
      const copy = data.slice(); // a real socket serialises before the caller goes on
      await jitter();
      probe.onSend(header);
      await inner.send(header, copy);
    },
    async receive(key: ChunkKey) {
      await jitter();
      probe.onReceive();
      return inner.receive(key);
    },
  };
}

test('frames are keyed by generation: two generations on the same links do not mix', async () => {
  const worldSize = 3;
  const links = createInMemoryRing(worldSize);
  const rng = createRng(5);
  const old = Array.from({ length: worldSize }, () => randomBuffer(rng, 10));
  const fresh = Array.from({ length: worldSize }, () => randomBuffer(rng, 10));
  const oldOut = old.map((b) => b.slice());
  const freshOut = fresh.map((b) => b.slice());
  await Promise.all([
    ...oldOut.map((buffer, rank) =>
      ringAllreduce(buffer, { rank, worldSize, generation: 1, step: 7, links: links[rank] }),
    ),
    ...freshOut.map((buffer, rank) =>
      ringAllreduce(buffer, { rank, worldSize, generation: 2, step: 7, links: links[rank] }),
    ),
  ]);
  for (let rank = 0; rank < worldSize; rank++) {
    assertBitwiseEqual(oldOut[rank], ringOrderResult(old, false), `generation 1 rank ${rank}`);
    assertBitwiseEqual(freshOut[rank], ringOrderResult(fresh, false), `generation 2 rank ${rank}`);
  }
});

test('the in-memory link copies sent data and buffers early frames', async () => {
  const [a, b] = createInMemoryRing(2);
  const data = new Float32Array([1, 2, 3]);
  a.send({ generation: 1, step: 0, phase: Phase.reduceScatter, chunk: 0, count: 3 }, data);
  data.fill(9);
  assert.equal(b.bufferedCount(), 1);
  const got = await b.receive({ generation: 1, step: 0, phase: Phase.reduceScatter, chunk: 0 });
  assert.deepEqual(Array.from(got), [1, 2, 3]);
  assert.equal(b.bufferedCount(), 0);
  assert.throws(() => a.send({ generation: 1, step: 0, phase: 0, chunk: 1, count: 2 }, data), ProtocolError);
});

test('a lost predecessor fails the pending allreduce with PeerLostError', async () => {
  const links = createInMemoryRing(3);
  const buffers = [new Float32Array(6), new Float32Array(6)];
  // ranks 0 and 1 run, rank 2 never shows up; rank 0 waits for it, then its link closes
  const running = buffers.map((buffer, rank) =>
    ringAllreduce(buffer, { rank, worldSize: 3, generation: 1, step: 0, links: links[rank] }),
  );
  await nextTick();
  links[0].close(new Error('socket closed'));
  links[1].close(new Error('socket closed'));
  for (const result of running) await assert.rejects(result, PeerLostError);
});

test('a received chunk of the wrong length is a ProtocolError', async () => {
  const liar: RingLinks = {
    send: () => undefined,
    receive: async () => new Float32Array(1),
  };
  await assert.rejects(
    ringAllreduce(new Float32Array(10), { rank: 0, worldSize: 2, generation: 1, step: 0, links: liar }),
    (err: unknown) =>
      err instanceof ProtocolError && /expected 5 Float32Array values, got 1 Float32Array values/.test(err.message),
  );
});

test('a send that throws synchronously propagates without an unhandled rejection', async () => {
  const links = createInMemoryRing(2);
  const failing: RingLinks = {
    send: () => {
      throw new PeerLostError('rank 1');
    },
    receive: (key) => links[0].receive(key),
  };
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason);
  };
  process.on('unhandledRejection', onUnhandled);
  try {
    await assert.rejects(
      ringAllreduce(new Float32Array(4), { rank: 0, worldSize: 2, generation: 1, step: 0, links: failing }),
      PeerLostError,
    );
    links[0].close('test over');
    await nextTick();
    await nextTick();
    assert.deepEqual(unhandled, []);
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
});

test('invalid rank or world size is rejected before any communication', async () => {
  const links = createInMemoryRing(2);
  await assert.rejects(
    ringAllreduce(new Float32Array(4), { rank: 2, worldSize: 2, generation: 1, step: 0, links: links[0] }),
    RangeError,
  );
  await assert.rejects(
    ringAllreduce(new Float32Array(4), { rank: 0, worldSize: 0, generation: 1, step: 0, links: links[0] }),
    RangeError,
  );
  const links0 = links[0] as InMemoryRingLink;
  assert.equal(links0.waitingCount(), 0);
});

test('segmentRanges cuts every ring chunk into contiguous pieces of at most the segment size', () => {
  for (const worldSize of [1, 2, 3, 5]) {
    for (const length of [0, 1, 4, 13, 100, 1001]) {
      for (const segmentValues of [1, 2, 7, 64, Number.MAX_SAFE_INTEGER]) {
        const chunks = segmentRanges(length, worldSize, segmentValues);
        assert.equal(chunks.length, worldSize);
        let next = 0;
        for (const pieces of chunks) {
          assert.ok(pieces.length >= 1, 'every chunk has a segment, even an empty one');
          for (const { start, end } of pieces) {
            assert.equal(start, next);
            assert.ok(end - start <= segmentValues);
            next = end;
          }
          const sizes = pieces.map((p) => p.end - p.start);
          assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, 'segments of a chunk are as even as possible');
        }
        assert.equal(next, length);
      }
    }
  }
  assert.throws(() => segmentRanges(10, 2, 0), RangeError);
});

/** float16 bits of a float32 value. */
function half(value: number): number {
  return float32BitsToFloat16(new Uint32Array(new Float32Array([value]).buffer)[0]!);
}

test('float16: every half value widens exactly and narrows back to itself (NaN payloads too)', () => {
  const bits = new Uint16Array(65536).map((_, i) => i);
  const wide = new Float32Array(65536);
  decodeFloat16(bits, wide);
  const back = new Uint16Array(65536);
  encodeFloat16(wide, back);
  assert.deepEqual(back, bits);
  assert.deepEqual(
    [wide[0x3c00], wide[0xc000], wide[0x7bff], wide[0x0001], wide[0x0400], wide[0x7c00], wide[0xfc00]],
    [1, -2, 65504, 2 ** -24, 2 ** -14, Infinity, -Infinity],
  );
  assert.ok(Object.is(wide[0x8000], -0));
  assert.equal(FLOAT16_TO_FLOAT32_BITS[0x7e01], 0x7fc02000, 'a quiet NaN keeps its payload');
});

test('float16: narrowing rounds to nearest, ties to even; overflow to infinity, underflow to zero', () => {
  assert.equal(half(1 + 2 ** -11), 0x3c00, 'tie between 1 and 1+2^-10 goes to the even 1');
  assert.equal(half(1 + 3 * 2 ** -11), 0x3c02, 'tie goes to the even neighbour above');
  assert.equal(half(1 + 2 ** -11 + 2 ** -20), 0x3c01, 'just above the tie rounds up');
  assert.equal(half(65504), 0x7bff);
  assert.equal(half(65519.99), 0x7bff, 'below the rounding boundary of the largest half');
  assert.equal(half(65520), 0x7c00, 'the boundary rounds to infinity');
  assert.equal(half(1e30), 0x7c00);
  assert.equal(half(-1e30), 0xfc00);
  assert.equal(half(2 ** -25), 0x0000, 'half the smallest subnormal ties to even zero');
  assert.equal(half(2 ** -25 * 1.0001), 0x0001);
  assert.equal(half(3 * 2 ** -25), 0x0002, 'subnormal tie to even');
  assert.equal(half(-1e-30), 0x8000);
  assert.equal(half(Number.NaN) & 0x7c00, 0x7c00);
  assert.notEqual(half(Number.NaN) & 0x3ff, 0);
  // Random values: the result is a nearest half (ties to even).
  const rng = createRng(16);
  for (let i = 0; i < 20_000; i++) {
    const x = Math.fround((rng.next() - 0.5) * 2 ** Math.floor(rng.next() * 40 - 28));
    const h = half(x);
    const error = Math.abs(FLOAT16_TO_FLOAT32[h]! - x);
    for (const neighbour of [h - 1, h + 1]) {
      if (neighbour < 0 || neighbour > 0xffff || (neighbour & 0x7c00) === 0x7c00 || (neighbour ^ h) & 0x8000) continue;
      const other = Math.abs(FLOAT16_TO_FLOAT32[neighbour]! - x);
      assert.ok(
        error < other || (error === other && (h & 1) === 0),
        `${x}: ${h.toString(16)} vs ${neighbour.toString(16)}`,
      );
    }
  }
});

/**
 * The exact result of the float16 ring: partial sums travel as float16 (widened before each float32 addition),
 * the owner averages in float32 and rounds the result to float16, which every rank then holds.
 */
function ringOrderResultFp16(inputs: Float32Array[], average: boolean): Float32Array {
  const n = inputs.length;
  const out = new Float32Array(inputs[0].length);
  chunkRanges(out.length, n).forEach(({ start, end }, c) => {
    for (let i = start; i < end; i++) {
      let acc = inputs[c][i];
      for (let k = 1; k < n; k++) acc = Math.fround(inputs[(c + k) % n][i] + FLOAT16_TO_FLOAT32[half(acc)]!);
      out[i] = FLOAT16_TO_FLOAT32[half(average ? Math.fround(acc / n) : acc)]!;
    }
  });
  return out;
}

test('fp16 compression: float16 on the wire, the documented rounding, every rank bitwise identical', async () => {
  const rng = createRng(1616);
  for (const [variant, makeLinks, extra] of VARIANTS)
    for (const worldSize of [2, 3, 4]) {
      for (const length of [1, 7, 1001]) {
        const inputs = Array.from({ length: worldSize }, () => randomBuffer(rng, length).map((v) => v * 100));
        for (const average of [false, true]) {
          const label = `${variant}: fp16 world ${worldSize} length ${length} average ${average}`;
          const results = await runRing(inputs, average, makeLinks(worldSize), { ...extra, compression: 'fp16' });
          for (let rank = 1; rank < worldSize; rank++)
            assertBitwiseEqual(results[rank], results[0], `${label} rank ${rank}`);
          assertBitwiseEqual(results[0], ringOrderResultFp16(inputs, average), `${label} follows the float16 ring`);
          for (let i = 0; i < length; i++) {
            let exact = 0;
            let magnitude = 0;
            for (const input of inputs) {
              exact += input[i];
              magnitude += Math.abs(input[i]);
            }
            if (average) {
              exact /= worldSize;
              magnitude /= worldSize;
            }
            // Each of the n roundings to float16 errs by at most half a unit in the 11th bit (or half a subnormal step).
            const tolerance = 2 * worldSize * (2 ** -11 * magnitude + 2 ** -25);
            assert.ok(Math.abs(results[0][i] - exact) <= tolerance, `${label} [${i}]: ${results[0][i]} vs ${exact}`);
          }
        }
      }
    }
});

test('fp16 frames travel as Uint16Array with the float16 encoding in the header', async () => {
  const seen: ChunkHeader[] = [];
  const links = createInMemoryRing(2).map((l): RingLinks => ({
    send: (h, d) => {
      assert.ok(d instanceof Uint16Array);
      seen.push(h);
      return l.send(h, d);
    },
    receive: (k) => l.receive(k),
  }));
  await runRing([new Float32Array([1, 2, 3, 4]), new Float32Array([4, 3, 2, 1])], false, links, {
    compression: 'fp16',
  });
  assert.equal(seen.length, 4);
  assert.ok(seen.every((h) => h.encoding === ValueEncoding.float16));
});

test('segments are separate frames with block indices c + k * worldSize', async () => {
  const seen: string[] = [];
  const links = createInMemoryRing(2).map((l): RingLinks => ({
    send: (h, d) => {
      seen.push(`${h.phase}:${h.chunk}:${h.count}`);
      return l.send(h, d);
    },
    receive: (k) => l.receive(k),
  }));
  // 10 values: ring chunks of 5, cut into segments of at most 2 values: 3 segments (2, 2, 1) per chunk.
  await runRing([new Float32Array(10).fill(1), new Float32Array(10).fill(2)], false, links, { segmentBytes: 8 });
  assert.deepEqual(
    seen.sort(),
    ['0:0:2', '0:1:2', '0:2:2', '0:3:2', '0:4:1', '0:5:1', '1:0:2', '1:1:2', '1:2:2', '1:3:2', '1:4:1', '1:5:1'].sort(),
  );
});

test('a bad compression or segment size is rejected', async () => {
  const links = createInMemoryRing(2);
  await assert.rejects(
    ringAllreduce(new Float32Array(4), {
      rank: 0,
      worldSize: 2,
      generation: 1,
      step: 0,
      links: links[0],
      compression: 'zip' as 'fp16',
    }),
    RangeError,
  );
  await assert.rejects(
    ringAllreduce(new Float32Array(4), {
      rank: 0,
      worldSize: 2,
      generation: 1,
      step: 0,
      links: links[0],
      segmentBytes: 2,
    }),
    RangeError,
  );
});
