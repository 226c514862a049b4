/**
 * Property-based fuzzing of every decoder that reads bytes from outside the process: the wire protocol
 * (decodeFrame, decodeMessage, decodeChunkFrame), checkpoint files (decodeCheckpoint) and IDX data files (parseIdx).
 *
 * Inputs are random bytes and mutations of valid encodings (bit flips, truncation, extension, byte and word
 * replacement, insertion, removal), plus structure-aware edits: msgpack bodies with a field replaced by a value of
 * any type or removed, checkpoint headers with a JSON field replaced, IDX headers built from boundary dimensions.
 * The property for each decoder: it returns a result that is internally consistent (and re-encodes to the same
 * thing), or throws its typed error; any other exception is a failure. Scale the run counts with
 * RINGTRAIN_FUZZ_SCALE (e.g. 20 for a longer local campaign).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import {
  checkpointFileName,
  decodeCheckpoint,
  encodeCheckpoint,
  type Checkpoint,
  type CheckpointMeta,
} from '../coordinator/checkpoints.js';
import { parseIdx, writeIdx, type IdxArray } from '../shared/data/idx.js';
import {
  CheckpointCorruptError,
  DataCorruptError,
  ProtocolError,
  ProtocolVersionError,
  RingtrainError,
} from '../shared/errors.js';
import {
  decodeChunkFrame,
  decodeFrame,
  decodeMessage,
  encodeChunkFrame,
  encodeMessage,
  float32ToBytes,
  FrameKind,
  MessageType,
  PROTOCOL_VERSION,
  type Message,
  Phase,
  type ChunkHeader,
} from '../shared/wire/protocol.js';
import { normalize, sampleMessages as samples } from './helpers/messages.js';

const SCALE = Math.max(1, Number(process.env.RINGTRAIN_FUZZ_SCALE ?? 1));
const runs = (n: number): { numRuns: number } => ({ numRuns: Math.round(n * SCALE) });

// ---------------------------------------------------------------------------------------------------------------
// Outcomes: a result, or one of the decoder's typed errors

type ErrorClass = abstract new (...args: never[]) => RingtrainError;

/** Run `decode`; a typed error yields undefined, any other exception fails the property with a description. */
function typedOutcome<T>(decode: () => T, allowed: readonly ErrorClass[]): T | undefined {
  try {
    return decode();
  } catch (err) {
    if (allowed.some((cls) => err instanceof cls)) {
      const typed = err as RingtrainError;
      assert.ok(typed.message.length > 0, 'a typed error explains itself');
      return undefined;
    }
    const e = err as Error;
    assert.fail(
      `expected ${allowed.map((c) => c.name).join(' or ')}, got ${e?.name ?? typeof err}: ${e?.message ?? String(err)}`,
    );
  }
}

const PROTOCOL_ERRORS = [ProtocolError, ProtocolVersionError] as const;

// ---------------------------------------------------------------------------------------------------------------
// Byte-level mutations

const INTERESTING_U32 = [
  0, 1, 2, 3, 4, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe,
  0xffffffff,
];

type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'extend'; bytes: Uint8Array }
  | { kind: 'replace'; at: number; value: number }
  | { kind: 'word'; at: number; value: number; littleEndian: boolean }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'remove'; at: number; length: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
  fc.record({
    kind: fc.constant('replace' as const),
    at: fc.nat(),
    value: fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0x00, 0x7f, 0x80, 0xc1, 0xff)),
  }),
  fc.record({
    kind: fc.constant('word' as const),
    at: fc.nat(),
    value: fc.oneof(fc.constantFrom(...INTERESTING_U32), fc.nat({ max: 0xffffffff })),
    littleEndian: fc.boolean(),
  }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
  }),
  fc.record({ kind: fc.constant('remove' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 8 }) }),
);
const mutationsArb = fc.array(mutationArb, { minLength: 1, maxLength: 4 });

function mutate(input: Uint8Array, m: Mutation): Uint8Array {
  const at = (n: number, span = 0) => (input.length > span ? n % (input.length - span) : 0);
  const out = Uint8Array.from(input);
  switch (m.kind) {
    case 'flip':
      if (out.length > 0) out[at(m.at)] ^= 1 << m.bit;
      return out;
    case 'truncate':
      return out.subarray(0, m.at % (input.length + 1));
    case 'extend':
      return concat(out, m.bytes);
    case 'replace':
      if (out.length > 0) out[at(m.at)] = m.value;
      return out;
    case 'word': {
      if (out.length < 4) return out;
      new DataView(out.buffer).setUint32(at(m.at, 3), m.value >>> 0, m.littleEndian);
      return out;
    }
    case 'insert': {
      const i = m.at % (input.length + 1);
      return concat(out.subarray(0, i), m.bytes, out.subarray(i));
    }
    case 'remove': {
      const i = at(m.at);
      return concat(out.subarray(0, i), out.subarray(i + m.length));
    }
  }
}

function applyMutations(input: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  return mutations.reduce<Uint8Array>((bytes, m) => mutate(bytes, m), input);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/**
 * The bytes as a Buffer starting `shift` bytes into its ArrayBuffer, like a frame `ws` hands over: decoders must not
 * assume an aligned or zero offset.
 */
function placed(bytes: Uint8Array, shift: number): Buffer {
  const backing = Buffer.alloc(bytes.length + shift + 3, 0xee);
  backing.set(bytes, shift);
  return backing.subarray(shift, shift + bytes.length);
}

const shiftArb = fc.integer({ min: 0, max: 3 });

// ---------------------------------------------------------------------------------------------------------------
// The protocol

const sampleFrames = samples.map((m) => encodeMessage(m));

// An independent statement of the field types, so an accepted message is checked by something other than the decoder.
const INT_FIELDS = new Set([
  'gen',
  'rank',
  'step',
  'epoch',
  'worldSize',
  'predecessorRank',
  'port',
  'ringPort',
  'pid',
  'protocolVersion',
  'correct',
  'total',
  'steps',
  'exitCode',
  'firstStep',
  'epochSamples',
  'offset',
  'consumed',
  'sentBytes',
  'testStart',
  'testEnd',
  'samples',
  'peerRank',
  'height',
  'width',
  'channels',
]);
const FINITE_FIELDS = new Set([
  'waitingMs',
  'trainMs',
  'dataMs',
  'computeMs',
  'allreduceMs',
  'applyMs',
  'reduceScatterMs',
  'startedAt',
]);
const NUMBER_FIELDS = new Set(['loss', 'lossSum']);
const BYTE_FIELDS = new Set([
  'auth',
  'nonce',
  'weights',
  'optimizer',
  'indices',
  'images',
  'labels',
  'testImages',
  'testLabels',
]);
const STRING_FIELDS = new Set([
  'type',
  'workerId',
  'host',
  'ringHost',
  'backend',
  'code',
  'message',
  'runId',
  'reason',
  'paramHash',
  'lineage',
]);
const BOOLEAN_FIELDS = new Set(['hasData', 'hasState', 'nonFinite']);

/** Every field of an accepted message has the type the application relies on (the free-form `config` excepted). */
function assertWellTyped(value: Record<string, unknown>, path: string): void {
  assert.ok(Object.getPrototypeOf(value) === Object.prototype, `${path} is a plain object`);
  for (const [key, v] of Object.entries(value)) {
    const where = `${path}.${key}`;
    if (key === 'config') assert.ok(v !== null && typeof v === 'object' && !Array.isArray(v), `${where} is a map`);
    else if (key === 'records')
      (v as Record<string, unknown>[]).forEach((r, i) => assertWellTyped(r, `${where}[${i}]`));
    else if (key === 'successor' || key === 'sampleShape') assertWellTyped(v as Record<string, unknown>, where);
    else if (INT_FIELDS.has(key))
      assert.ok(Number.isSafeInteger(v) && (v as number) >= -1, `${where} is an integer: ${String(v)}`);
    else if (FINITE_FIELDS.has(key))
      assert.ok(Number.isFinite(v) && (v as number) >= 0, `${where} is a finite duration: ${String(v)}`);
    else if (NUMBER_FIELDS.has(key)) assert.equal(typeof v, 'number', where);
    else if (BYTE_FIELDS.has(key)) assert.ok(v instanceof Uint8Array, `${where} is bytes`);
    else if (STRING_FIELDS.has(key)) assert.equal(typeof v, 'string', where);
    else if (BOOLEAN_FIELDS.has(key)) assert.equal(typeof v, 'boolean', where);
    else assert.fail(`${where}: an unknown field was passed through`);
  }
}

/**
 * An accepted control message is well typed and survives encode -> decode unchanged. The free-form `config` map is
 * left out of the round trip: its contents are its user's to validate (msgpack extension values in it, such as a
 * 2^64 BigInt, decode but are not re-encodable, and nothing re-encodes a received config).
 */
function assertSaneMessage(message: Message): void {
  assert.ok(Object.hasOwn(MessageType, message.type), `known type ${message.type}`);
  assertWellTyped(message as unknown as Record<string, unknown>, message.type);
  const comparable = message.type === 'assign' ? { ...message, config: {} } : message;
  assert.deepEqual(normalize(decodeMessage(encodeMessage(comparable))), normalize(comparable));
}

/** An accepted chunk frame re-encodes to exactly the bytes it came from. */
function assertSaneChunk(bytes: Uint8Array, chunk: { header: ChunkHeader; data: Float32Array }): void {
  assert.equal(chunk.data.length, chunk.header.count);
  assert.equal(bytes.byteLength, 20 + 4 * chunk.header.count);
  assert.ok(chunk.header.phase === Phase.reduceScatter || chunk.header.phase === Phase.allgather);
  assert.deepEqual(new Uint8Array(encodeChunkFrame(chunk.header, chunk.data)), Uint8Array.from(bytes));
}

/**
 * All three decoders on the same bytes: each returns a sane result or a protocol error, and decodeFrame agrees with
 * the specific decoders (it succeeds exactly when one of them does, with the same result).
 */
function checkProtocolDecoders(bytes: Uint8Array): void {
  const frame = typedOutcome(() => decodeFrame(bytes), PROTOCOL_ERRORS);
  const message = typedOutcome(() => decodeMessage(bytes), PROTOCOL_ERRORS);
  const chunk = typedOutcome(() => decodeChunkFrame(bytes), PROTOCOL_ERRORS);
  assert.ok(!(message && chunk), 'a frame is never both a message and a chunk');
  assert.equal(
    frame !== undefined,
    message !== undefined || chunk !== undefined,
    'decodeFrame agrees with the specific decoders',
  );
  if (message) {
    assertSaneMessage(message);
    assert.equal(frame?.kind, 'control');
    if (frame?.kind === 'control') assert.deepEqual(normalize(frame.message), normalize(message));
  }
  if (chunk) {
    assertSaneChunk(bytes, chunk);
    assert.equal(frame?.kind, 'chunk');
  }
}

// msgpack bodies with fields of the wrong type. (Only shared/protocol.ts touches msgpackr in production; the test
// uses it to produce bodies the encoder would refuse to write.)
const plainPackr = new Packr({ useRecords: false });
const recordPackr = new Packr({ useRecords: true, moreTypes: true, structuredClone: true });

const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.anything({
    maxDepth: 2,
    withBigInt: true,
    withDate: true,
    withMap: true,
    withSet: true,
    withTypedArray: true,
    withNullPrototype: true,
    withBoxedValues: true,
    withSparseArray: true,
    withObjectString: true,
  }),
  fc.constantFrom<unknown>(
    Number.NaN,
    Infinity,
    -Infinity,
    -1,
    -0,
    0.5,
    2 ** 31,
    2 ** 32,
    2 ** 53,
    -(2 ** 53),
    Number.MAX_VALUE,
    '',
    '1',
    'hello',
    true,
    false,
    null,
    undefined,
    new Uint8Array(0),
    new Uint8Array(3),
    new Uint8Array(4),
    new Float32Array(2),
    [],
    [1],
    {},
    { type: 'ready' },
    new Date(0),
    1n,
    2n ** 70n,
  ),
);

const KEY_NAMES = ['type', 'gen', 'rank', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'extra', ''];

type FieldEdit =
  | { op: 'replace'; pick: number; nested: boolean; value: unknown }
  | { op: 'delete'; pick: number; nested: boolean }
  | { op: 'add'; key: string; value: unknown }
  | { op: 'body'; value: unknown };

const fieldEditArb: fc.Arbitrary<FieldEdit> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant('replace' as const),
      pick: fc.nat(),
      nested: fc.boolean(),
      value: anyValue,
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('delete' as const), pick: fc.nat(), nested: fc.boolean() }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('add' as const),
      key: fc.oneof(fc.constantFrom(...KEY_NAMES), fc.string()),
      value: anyValue,
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('body' as const), value: anyValue }) },
);

/** The map an edit applies to: the message itself, or (when `nested` and there is one) its nested map. */
function editTarget(body: Record<string, unknown>, nested: boolean): Record<string, unknown> {
  if (!nested) return body;
  if (body.successor && typeof body.successor === 'object') return body.successor as Record<string, unknown>;
  if (Array.isArray(body.records) && body.records.length > 0) return body.records[0] as Record<string, unknown>;
  return body;
}

function applyFieldEdit(message: Message, edit: FieldEdit): unknown {
  if (edit.op === 'body') return edit.value;
  const body = structuredClone(message) as unknown as Record<string, unknown>;
  if (edit.op === 'add') {
    Object.defineProperty(body, edit.key, { value: edit.value, enumerable: true, writable: true, configurable: true });
    return body;
  }
  const target = editTarget(body, edit.nested);
  const keys = Object.keys(target);
  const key = keys[edit.pick % keys.length]!;
  if (edit.op === 'delete') delete target[key];
  else target[key] = edit.value;
  return body;
}

/** msgpack-encode a body as a control frame; undefined when msgpackr cannot represent the value (e.g. a huge BigInt). */
function controlFrameOf(body: unknown, packr: Packr): Uint8Array | undefined {
  let packed: Uint8Array;
  try {
    packed = packr.pack(body);
  } catch {
    return undefined;
  }
  return concat(Uint8Array.of(FrameKind.control, PROTOCOL_VERSION), packed);
}

const chunkArb = fc.record({
  phase: fc.constantFrom(Phase.reduceScatter, Phase.allgather),
  generation: fc.oneof(fc.constantFrom(0, 1, 0xffffffff), fc.nat({ max: 0xffffffff })),
  step: fc.nat({ max: 0xffffffff }),
  chunk: fc.nat({ max: 0xffffffff }),
  data: fc.float32Array({ maxLength: 24 }),
});

describe('fuzz: wire protocol decoders', () => {
  test('the samples cover every message type', () => {
    assert.deepEqual(new Set(samples.map((m) => m.type)), new Set(Object.values(MessageType)));
  });

  test('random bytes: a sane frame or a protocol error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), shiftArb, (bytes, shift) =>
        checkProtocolDecoders(placed(bytes, shift)),
      ),
      runs(1500),
    );
  });

  test('random bodies behind a valid prefix: a sane frame or a protocol error', () => {
    const prefixed = fc.tuple(
      fc.constantFrom<number>(FrameKind.control, FrameKind.chunk, 0, 3, 255),
      fc.uint8Array({ maxLength: 300 }),
    );
    fc.assert(
      fc.property(prefixed, shiftArb, ([kind, body], shift) => {
        checkProtocolDecoders(placed(concat(Uint8Array.of(kind, PROTOCOL_VERSION), body), shift));
      }),
      runs(1500),
    );
  });

  test('mutated valid control messages: a sane frame or a protocol error', () => {
    fc.assert(
      fc.property(fc.nat({ max: samples.length - 1 }), mutationsArb, shiftArb, (index, mutations, shift) => {
        const bytes = applyMutations(sampleFrames[index]!, mutations);
        checkProtocolDecoders(placed(bytes, shift));
      }),
      runs(2000),
    );
  });

  test('msgpack bodies with a field replaced, removed or added: a sane message or a protocol error', () => {
    fc.assert(
      fc.property(fc.nat({ max: samples.length - 1 }), fieldEditArb, fc.boolean(), (index, edit, records) => {
        const frame = controlFrameOf(applyFieldEdit(samples[index]!, edit), records ? recordPackr : plainPackr);
        if (frame) checkProtocolDecoders(frame);
      }),
      runs(1500),
    );
  });

  test('mutated valid chunk frames: a frame that re-encodes identically, or a protocol error', () => {
    fc.assert(
      fc.property(chunkArb, mutationsArb, shiftArb, (c, mutations, shift) => {
        const valid = encodeChunkFrame(
          { phase: c.phase, generation: c.generation, step: c.step, chunk: c.chunk, count: c.data.length },
          c.data,
        );
        checkProtocolDecoders(placed(valid, shift)); // the unmutated frame, at any offset
        checkProtocolDecoders(placed(applyMutations(valid, mutations), shift));
      }),
      runs(1200),
    );
  });
});

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
