/**
 * Property-based fuzzing of the file decoders: checkpoint files (decodeCheckpoint) and IDX data files (parseIdx),
 * with random bytes, mutations of valid encodings and structure-aware edits (checkpoint headers with a JSON field
 * replaced, IDX headers built from boundary dimensions). The property: a result that is internally consistent, or
 * the decoder's typed error; any other exception is a failure. The wire decoders are fuzzed in fuzz.test.ts; scale
 * the run counts with RINGTRAIN_FUZZ_SCALE.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  checkpointFileName,
  decodeCheckpoint,
  encodeCheckpoint,
  type Checkpoint,
  type CheckpointMeta,
} from '../coordinator/checkpoints.js';
import { parseIdx, writeIdx, type IdxArray } from '../shared/data/idx.js';
import { CheckpointCorruptError, DataCorruptError } from '../shared/errors.js';
import { float32ToBytes } from '../shared/wire/protocol.js';
import {
  applyMutations,
  concat,
  INTERESTING_U32,
  mutationsArb,
  placed,
  runs,
  shiftArb,
  typedOutcome,
} from './helpers/fuzz.js';

// ---------------------------------------------------------------------------------------------------------------
// Checkpoints

const CHECKPOINT_ERRORS = [CheckpointCorruptError] as const;
const PREAMBLE = 12;

const metaArb: fc.Arbitrary<CheckpointMeta> = fc.record(
  {
    runId: fc.string({ maxLength: 12 }),
    step: fc.nat({ max: 1_000_000 }),
    epoch: fc.nat({ max: 100 }),
    consumed: fc.nat({ max: 60_000 }),
    generation: fc.nat({ max: 50 }),
    config: fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }),
    createdAt: fc.date({ min: new Date(0), max: new Date(4e12), noInvalidDate: true }).map((d) => d.toISOString()),
  },
  { requiredKeys: ['runId', 'step', 'epoch', 'consumed', 'generation', 'config', 'createdAt'] },
);

const checkpointArb = fc.record({
  meta: metaArb,
  weights: fc.float32Array({ maxLength: 12 }),
  optimizer: fc.float32Array({ maxLength: 12 }),
  naming: fc.constantFrom('own step', 'other step', 'free name'),
});
type CheckpointCase = typeof checkpointArb extends fc.Arbitrary<infer T> ? T : never;

function fileFor(c: CheckpointCase): string {
  if (c.naming === 'own step') return `/ckpt/${checkpointFileName(c.meta.step)}`;
  if (c.naming === 'other step') return `/ckpt/${checkpointFileName(c.meta.step + 1)}`;
  return '/ckpt/fuzzed.rtckpt';
}

function payloadOf(weights: Float32Array, optimizer: Float32Array): Uint8Array {
  return concat(float32ToBytes(weights), float32ToBytes(optimizer));
}

/** A decoded checkpoint holds the original payload and meta (the hashes leave no other way to be accepted). */
function assertSaneCheckpoint(decoded: Checkpoint, c: CheckpointCase, file: string): void {
  assert.equal(decoded.file, file);
  assert.deepEqual(payloadOf(decoded.weights, decoded.optimizer), payloadOf(c.weights, c.optimizer));
  assert.deepEqual(decoded.meta, JSON.parse(JSON.stringify(c.meta)));
  assert.notEqual(c.naming, 'other step', 'a file named for another step is refused');
}

/** A checkpoint file with `header` as its JSON header, framed correctly (length field, padding to 8 bytes). */
function frameCheckpoint(headerJson: string, payload: Uint8Array): Buffer {
  const json = Buffer.from(headerJson, 'utf8');
  const padding = (8 - ((PREAMBLE + json.length) % 8)) % 8;
  const head = Buffer.alloc(PREAMBLE + json.length + padding, 0x20);
  head.write('RTCKPT01', 0, 'ascii');
  head.writeUInt32LE(json.length + padding, 8);
  json.copy(head, PREAMBLE);
  return Buffer.concat([head, payload]);
}

function headerOf(encoded: Buffer): Record<string, unknown> {
  const length = encoded.readUInt32LE(8);
  return JSON.parse(encoded.subarray(PREAMBLE, PREAMBLE + length).toString('utf8')) as Record<string, unknown>;
}

const sha256Hex = (text: string): string => createHash('sha256').update(text, 'utf8').digest('hex');

const jsonEditArb = fc.record({
  inMeta: fc.boolean(),
  pick: fc.nat(),
  remove: fc.boolean(),
  value: fc.oneof(
    fc.jsonValue({ maxDepth: 2 }),
    fc.constantFrom<unknown>(
      -1,
      1.5,
      2 ** 53,
      1e300,
      '',
      '0',
      'not a date',
      null,
      [],
      {},
      '0'.repeat(64),
      'F'.repeat(64),
    ),
  ),
  rehashMeta: fc.boolean(),
});

describe('fuzz: checkpoint decoder', () => {
  test('random bytes, with and without a valid magic: CheckpointCorruptError', () => {
    const withMagic = fc.tuple(fc.nat({ max: 400 }), fc.uint8Array({ maxLength: 400 })).map(([length, rest]) => {
      const head = Buffer.alloc(PREAMBLE);
      head.write('RTCKPT01', 0, 'ascii');
      head.writeUInt32LE(length, 8);
      return Buffer.concat([head, rest]);
    });
    const bytesArb = fc.oneof(
      fc.uint8Array({ maxLength: 400 }).map((b) => Buffer.from(b)),
      withMagic,
    );
    fc.assert(
      fc.property(bytesArb, (bytes) => {
        assert.equal(
          typedOutcome(() => decodeCheckpoint('/ckpt/random.rtckpt', bytes), CHECKPOINT_ERRORS),
          undefined,
        );
      }),
      runs(1500),
    );
  });

  test('mutated valid checkpoints: the original contents or CheckpointCorruptError', () => {
    fc.assert(
      fc.property(checkpointArb, mutationsArb, shiftArb, (c, mutations, shift) => {
        const valid = Buffer.concat(encodeCheckpoint(c.meta, c.weights, c.optimizer));
        const file = fileFor(c);
        const original = typedOutcome(() => decodeCheckpoint(file, placed(valid, shift)), CHECKPOINT_ERRORS);
        assert.equal(original === undefined, c.naming === 'other step', 'an intact checkpoint decodes unless misnamed');
        const mutated = placed(applyMutations(valid, mutations), shift);
        const decoded = typedOutcome(() => decodeCheckpoint(file, mutated), CHECKPOINT_ERRORS);
        if (decoded) assertSaneCheckpoint(decoded, c, file);
      }),
      runs(800),
    );
  });

  test('a header field replaced by any JSON value, correctly framed: the original contents or CheckpointCorruptError', () => {
    fc.assert(
      fc.property(checkpointArb, jsonEditArb, (c, edit) => {
        const header = headerOf(Buffer.concat(encodeCheckpoint(c.meta, c.weights, c.optimizer)));
        const target = edit.inMeta ? (header.meta as Record<string, unknown>) : header;
        const keys = Object.keys(target);
        const key = keys[edit.pick % keys.length]!;
        if (edit.remove) delete target[key];
        else target[key] = edit.value;
        // Re-hashing the edited meta gets the edit past the meta checksum, to the checks behind it.
        if (edit.rehashMeta && header.meta !== undefined)
          header.metaSha256 = sha256Hex(JSON.stringify(header.meta) ?? '');
        const file = fileFor(c);
        const decoded = typedOutcome(
          () => decodeCheckpoint(file, frameCheckpoint(JSON.stringify(header), payloadOf(c.weights, c.optimizer))),
          CHECKPOINT_ERRORS,
        );
        if (decoded) assert.deepEqual(payloadOf(decoded.weights, decoded.optimizer), payloadOf(c.weights, c.optimizer));
      }),
      runs(1000),
    );
  });

  test('regression: a consistent header whose meta nests deeper than the stack is CheckpointCorruptError, not RangeError', () => {
    const weights = new Float32Array([1, 2]);
    const optimizer = new Float32Array([3]);
    const meta: CheckpointMeta = {
      runId: 'r',
      step: 1,
      epoch: 0,
      consumed: 0,
      generation: 1,
      config: {},
      createdAt: new Date(0).toISOString(),
    };
    const header = headerOf(Buffer.concat(encodeCheckpoint(meta, weights, optimizer)));
    const depth = 200_000; // 400 KB of brackets: inside the 1 MiB header limit, far beyond JSON.stringify's recursion
    const json = JSON.stringify(header).replace(
      '"config":{}',
      `"config":{"deep":${'['.repeat(depth)}${']'.repeat(depth)}}`,
    );
    const bytes = frameCheckpoint(json, payloadOf(weights, optimizer));
    assert.throws(() => decodeCheckpoint('/ckpt/deep.rtckpt', bytes), CheckpointCorruptError);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// IDX data files

const IDX_ERRORS = [DataCorruptError] as const;

/** An accepted IDX file is exactly header + product(dims) bytes long (checked in exact integer arithmetic). */
function assertSaneIdx(bytes: Uint8Array, idx: IdxArray): void {
  const elements = idx.dims.reduce((p, d) => p * BigInt(d), 1n);
  assert.equal(BigInt(idx.data.length), elements, `dims [${idx.dims.join(', ')}] hold ${elements} elements`);
  assert.equal(4 + 4 * idx.dims.length + idx.data.length, bytes.length, 'no bytes missing or left over');
  assert.deepEqual(Uint8Array.from(idx.data), Uint8Array.from(bytes.subarray(bytes.length - idx.data.length)));
}

function checkIdx(bytes: Uint8Array): void {
  const idx = typedOutcome(() => parseIdx(bytes, 'fuzzed-ubyte'), IDX_ERRORS);
  if (idx) assertSaneIdx(bytes, idx);
}

/** An IDX header with the given dimensions followed by `payload` (whatever its length). */
function idxWithDims(dims: number[], payload: Uint8Array): Uint8Array {
  const head = new Uint8Array(4 + 4 * dims.length);
  head[2] = 0x08;
  head[3] = dims.length;
  const view = new DataView(head.buffer);
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  return concat(head, payload);
}

/** 35 dimensions of 2^32 - 1 overflow the element count to Infinity; a following 0 turns it into NaN. */
const OVERFLOW_THEN_ZERO = [...new Array<number>(35).fill(0xffffffff), 0];

describe('fuzz: IDX decoder', () => {
  test('random bytes, with and without the ubyte magic: a consistent array or DataCorruptError', () => {
    const withMagic = fc
      .tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 200 }))
      .map(([ndims, rest]) => concat(Uint8Array.of(0, 0, 0x08, ndims), rest));
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 200 }), withMagic), shiftArb, (bytes, shift) =>
        checkIdx(placed(bytes, shift)),
      ),
      runs(1500),
    );
  });

  test('mutated valid files: a consistent array or DataCorruptError', () => {
    const valid = fc.array(fc.nat({ max: 5 }), { minLength: 1, maxLength: 4 }).chain((dims) => {
      const elements = dims.reduce((p, d) => p * d, 1);
      return fc.uint8Array({ minLength: elements, maxLength: elements }).map((data) => writeIdx(dims, data));
    });
    fc.assert(
      fc.property(valid, mutationsArb, shiftArb, (bytes, mutations, shift) => {
        checkIdx(placed(bytes, shift));
        checkIdx(placed(applyMutations(bytes, mutations), shift));
      }),
      runs(1000),
    );
  });

  test('headers of boundary dimensions and any payload length: a consistent array or DataCorruptError', () => {
    const dimsArb = fc.array(fc.oneof(fc.constantFrom(...INTERESTING_U32), fc.nat({ max: 8 })), {
      minLength: 1,
      maxLength: 60,
    });
    fc.assert(
      fc.property(dimsArb, fc.uint8Array({ maxLength: 64 }), (dims, payload) => checkIdx(idxWithDims(dims, payload))),
      {
        ...runs(1500),
        examples: [[OVERFLOW_THEN_ZERO, new Uint8Array(10)]],
      },
    );
  });

  test('regression: dimensions whose product overflows before a zero do not hide trailing bytes', () => {
    assert.throws(
      () => parseIdx(idxWithDims(OVERFLOW_THEN_ZERO, new Uint8Array(10)), 'overflow-ubyte'),
      DataCorruptError,
    );
    const empty = parseIdx(idxWithDims(OVERFLOW_THEN_ZERO, new Uint8Array(0)), 'overflow-ubyte');
    assert.equal(empty.data.length, 0);
    assert.deepEqual(empty.dims, OVERFLOW_THEN_ZERO);
  });
});
