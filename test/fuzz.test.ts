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
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import {
  decodeChunkFrame,
  decodeFrame,
  decodeMessage,
  encodeChunkFrame,
  encodeMessage,
  FrameKind,
  MessageType,
  PROTOCOL_VERSION,
  type Message,
  Phase,
  type ChunkHeader,
} from '../shared/wire/protocol.js';
import { normalize, sampleMessages as samples } from './helpers/messages.js';

import {
  applyMutations,
  concat,
  mutationsArb,
  placed,
  PROTOCOL_ERRORS,
  runs,
  shiftArb,
  typedOutcome,
} from './helpers/fuzz.js';

// ---------------------------------------------------------------------------------------------------------------
// The protocol

const sampleFrames = samples.map((m) => encodeMessage(m));

// An independent statement of the field types, so an accepted message is checked by something other than the decoder.
const INT_FIELDS = new Set([
  'gen',
  'rank',
  'step',
  'attempts',
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
  'trainCount',
  'testCount',
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
  'during',
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
  'format',
  'fingerprint',
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
    else if (key === 'successor' || key === 'sampleShape' || key === 'dataset')
      assertWellTyped(v as Record<string, unknown>, where);
    else if (key === 'classNames')
      assert.ok(Array.isArray(v) && v.every((name) => typeof name === 'string'), `${where} is strings`);
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
