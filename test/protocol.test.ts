import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CHUNK_HEADER_BYTES,
  FrameKind,
  MessageType,
  PROTOCOL_VERSION,
  bytesToFloat32,
  bytesToUint32,
  chunkFrameBytes,
  decodeChunkFrame,
  decodeChunkValues,
  decodeFrame,
  decodeMessage,
  encodeChunkFrame,
  encodeMessage,
  float32ToBytes,
  uint32ToBytes,
  writeChunkHeader,
  type Message,
  Phase,
  ValueEncoding,
  type ChunkHeader,
} from '../shared/wire/protocol.js';
import { ProtocolError, ProtocolVersionError } from '../shared/errors.js';
import { createRng } from '../shared/rng.js';
import { normalize, sampleMessages as samples } from './helpers/messages.js';

// ---- a minimal, independent msgpack writer, to craft bodies the encoder would refuse to produce ----
type Plain = null | boolean | number | string | Uint8Array | Plain[] | { [key: string]: Plain };

function mp(value: Plain): number[] {
  const out: number[] = [];
  const u = (bytes: number, n: number): void => {
    for (let i = bytes - 1; i >= 0; i--) out.push(Math.floor(n / 2 ** (8 * i)) & 0xff);
  };
  const write = (v: Plain): void => {
    if (v === null) out.push(0xc0);
    else if (typeof v === 'boolean') out.push(v ? 0xc3 : 0xc2);
    else if (typeof v === 'number') {
      if (Number.isInteger(v) && v >= 0 && v < 128) out.push(v);
      else if (Number.isInteger(v) && v >= 0 && v <= 0xffffffff) {
        out.push(0xce);
        u(4, v);
      } else if (Number.isInteger(v) && v < 0 && v >= -32) out.push(0x100 + v);
      else {
        out.push(0xcb);
        const b = Buffer.alloc(8);
        b.writeDoubleBE(v);
        out.push(...b);
      }
    } else if (typeof v === 'string') {
      const b = Buffer.from(v, 'utf8');
      if (b.length < 32) out.push(0xa0 | b.length);
      else {
        out.push(0xda);
        u(2, b.length);
      }
      out.push(...b);
    } else if (v instanceof Uint8Array) {
      out.push(0xc6);
      u(4, v.length);
      out.push(...v);
    } else if (Array.isArray(v)) {
      out.push(0xdc);
      u(2, v.length);
      v.forEach(write);
    } else {
      const entries = Object.entries(v);
      out.push(0xde);
      u(2, entries.length);
      for (const [k, x] of entries) {
        write(k);
        write(x);
      }
    }
  };
  write(value);
  return out;
}

const controlFrame = (body: Plain, version = PROTOCOL_VERSION): Buffer =>
  Buffer.from([FrameKind.control, version, ...mp(body)]);

function isProtocolFailure(err: unknown): boolean {
  return err instanceof ProtocolError || err instanceof ProtocolVersionError;
}

test('every message type round-trips, and the samples cover every type', () => {
  assert.deepEqual(new Set(samples.map((m) => m.type)), new Set(Object.values(MessageType)));
  for (const message of samples) {
    const frame = encodeMessage(message);
    assert.equal(frame[0], FrameKind.control);
    assert.equal(frame[1], PROTOCOL_VERSION);
    const decoded = decodeMessage(frame);
    assert.deepEqual(normalize(decoded), normalize(message), message.type);
    const generic = decodeFrame(frame);
    assert.equal(generic.kind, 'control');
    if (generic.kind === 'control') assert.deepEqual(normalize(generic.message), normalize(message));
  }
});

test('bodies written by an independent msgpack writer decode; byte fields come back as bytes', () => {
  const decoded = decodeMessage(
    controlFrame({
      type: 'start',
      gen: 2,
      epoch: 1,
      step: 9,
      consumed: 0,
      lineage: 'run:1',
      weights: new Uint8Array([0, 0, 128, 63]),
      optimizer: new Uint8Array(0),
    }),
  );
  assert.equal(decoded.type, 'start');
  if (decoded.type !== 'start') return;
  assert.ok(decoded.weights instanceof Uint8Array);
  assert.deepEqual(Array.from(bytesToFloat32(decoded.weights)), [1]);
  // unknown extra fields are dropped
  assert.deepEqual(
    decodeMessage(
      controlFrame({
        type: 'ready',
        gen: 1,
        rank: 0,
        step: 0,
        hasState: false,
        epoch: 0,
        consumed: 0,
        lineage: '',
        extra: 'ignored',
      }),
    ),
    { type: 'ready', gen: 1, rank: 0, step: 0, hasState: false, epoch: 0, consumed: 0, lineage: '' },
  );
});

test('encodeMessage refuses invalid messages', () => {
  assert.throws(
    () =>
      encodeMessage({ type: 'ready', gen: 0, rank: 1, step: 0, hasState: false, epoch: 0, consumed: 0, lineage: '' }),
    ProtocolError,
  );
  assert.throws(
    () =>
      encodeMessage({ type: 'ready', gen: 1, rank: 1.5, step: 0, hasState: false, epoch: 0, consumed: 0, lineage: '' }),
    ProtocolError,
  );
  assert.throws(() => encodeMessage({ type: 'nope' } as unknown as Message), ProtocolError);
  const floats = {
    type: 'weights',
    gen: 1,
    rank: 0,
    step: 0,
    weights: new Float32Array(2),
    optimizer: new Uint8Array(0),
  };
  assert.throws(() => encodeMessage(floats as unknown as Message), /weights\.weights: expected bytes/);
  assert.throws(() => encodeMessage({ ...samples[0], protocolVersion: 2 } as Message), ProtocolVersionError);
});

test('chunk frames round-trip with the documented layout and a zero-copy payload', () => {
  const data = new Float32Array([1, -2.5, Math.PI, -0, Number.MAX_VALUE, 1e-45]);
  const header: ChunkHeader = { generation: 7, step: 123_456, phase: Phase.allgather, chunk: 2, count: data.length };
  const frame = encodeChunkFrame(header, data);
  assert.equal(frame.length, CHUNK_HEADER_BYTES + 4 * data.length);
  assert.deepEqual([...frame.subarray(0, 4)], [FrameKind.chunk, PROTOCOL_VERSION, 1, 0]);
  assert.equal(frame.readUInt32LE(4), 7);
  assert.equal(frame.readUInt32LE(8), 123_456);
  assert.equal(frame.readUInt32LE(12), 2);
  assert.equal(frame.readUInt32LE(16), data.length);
  assert.equal(frame.readFloatLE(CHUNK_HEADER_BYTES + 8), Math.fround(Math.PI));

  data[0] = 99; // the frame owns a copy
  assert.equal(frame.readFloatLE(CHUNK_HEADER_BYTES), 1);

  assert.equal(frame.byteOffset % 4, 0);
  const decoded = decodeChunkFrame(frame);
  assert.deepEqual(decoded.header, header);
  assert.deepEqual(Array.from(decoded.data), [
    1,
    -2.5,
    Math.fround(Math.PI),
    -0,
    Math.fround(Number.MAX_VALUE),
    Math.fround(1e-45),
  ]);
  assert.equal(decoded.data.buffer, frame.buffer, 'aligned payload is a view');
  assert.equal(decoded.data.byteOffset, frame.byteOffset + CHUNK_HEADER_BYTES);

  const shifted = new Uint8Array(frame.length + 1);
  shifted.set(frame, 1);
  const copied = decodeChunkFrame(shifted.subarray(1));
  assert.notEqual(copied.data.buffer, shifted.buffer, 'unaligned payload is copied');
  assert.deepEqual(copied.data, decoded.data);

  const generic = decodeFrame(encodeChunkFrame({ ...header, count: 0 }, new Float32Array(0)));
  assert.equal(generic.kind, 'chunk');
  if (generic.kind === 'chunk') assert.equal(generic.data.length, 0);
});

test('encodeChunkFrame checks its header', () => {
  const data = new Float32Array(3);
  const header: ChunkHeader = { generation: 1, step: 0, phase: Phase.reduceScatter, chunk: 0, count: 3 };
  assert.throws(() => encodeChunkFrame({ ...header, count: 2 }, data), ProtocolError);
  assert.throws(() => encodeChunkFrame({ ...header, phase: 2 as Phase }, data), ProtocolError);
  assert.throws(() => encodeChunkFrame({ ...header, step: 2 ** 32 }, data), ProtocolError);
  assert.throws(() => encodeChunkFrame({ ...header, generation: -1 }, data), ProtocolError);
});

test('float16 chunk frames: 2 bytes per value, decoded by decodeChunkValues only', () => {
  const bits = new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x7e01, 0x8000]); // 1, -2, 65504, 2^-24, a NaN, -0
  const header: ChunkHeader = {
    generation: 2,
    step: 9,
    phase: Phase.reduceScatter,
    chunk: 5,
    count: bits.length,
    encoding: ValueEncoding.float16,
  };
  const frame = encodeChunkFrame(header, bits);
  assert.equal(frame.length, CHUNK_HEADER_BYTES + 2 * bits.length);
  assert.equal(chunkFrameBytes(header), frame.length);
  assert.deepEqual([...frame.subarray(0, 4)], [FrameKind.chunk, PROTOCOL_VERSION, 0, 1]);
  assert.equal(frame.readUInt16LE(CHUNK_HEADER_BYTES), 0x3c00);
  const raw = decodeChunkValues(frame);
  assert.deepEqual(raw.header, header);
  assert.ok(raw.values instanceof Uint16Array);
  assert.deepEqual(Array.from(raw.values), Array.from(bits));
  assert.equal(raw.values.buffer, frame.buffer, 'aligned values are a view');
  assert.deepEqual(
    new Uint8Array(encodeChunkFrame(raw.header, raw.values)),
    new Uint8Array(frame),
    're-encodes identically',
  );
  // The general decoders hold every accepted chunk to 4 bytes per value; float16 is the ring transport's business.
  assert.throws(() => decodeChunkFrame(frame), /only decodeChunkValues/);
  assert.throws(() => decodeFrame(frame), ProtocolError);
  const unaligned = Buffer.alloc(frame.length + 1);
  frame.copy(unaligned, 1);
  const copied = decodeChunkValues(unaligned.subarray(1));
  assert.deepEqual(Array.from(copied.values), Array.from(bits), 'an unaligned float16 payload is copied');
  assert.throws(() => encodeChunkFrame(header, new Float32Array(bits.length)), /must be a Uint16Array/);
  assert.throws(() => encodeChunkFrame({ ...header, encoding: undefined }, bits), /must be a Float32Array/);
  assert.throws(() => encodeChunkFrame({ ...header, encoding: 2 as ValueEncoding }, bits), ProtocolError);
});

test('writeChunkHeader fills a caller-owned frame; the values go after it', () => {
  const header: ChunkHeader = { generation: 1, step: 3, phase: Phase.allgather, chunk: 4, count: 2 };
  const frame = Buffer.alloc(chunkFrameBytes(header));
  writeChunkHeader(frame, header);
  new Float32Array(frame.buffer, frame.byteOffset + CHUNK_HEADER_BYTES, 2).set([0.5, -8]);
  assert.deepEqual(decodeChunkFrame(frame), { header, data: new Float32Array([0.5, -8]) });
  assert.throws(() => writeChunkHeader(Buffer.alloc(27), header), /needs 28 bytes, got 27/);
  assert.throws(() => writeChunkHeader(frame, { ...header, phase: 3 as Phase }), ProtocolError);
});

test('float32/uint32 byte helpers: views when aligned, copies otherwise, length checked', () => {
  const floats = new Float32Array([1.5, -2]);
  const bytes = float32ToBytes(floats);
  assert.equal(bytes.buffer, floats.buffer);
  assert.deepEqual([...bytes], [0, 0, 0xc0, 0x3f, 0, 0, 0, 0xc0]);
  assert.equal(bytesToFloat32(bytes).buffer, floats.buffer);
  const unaligned = new Uint8Array(9);
  unaligned.set(bytes, 1);
  assert.deepEqual(Array.from(bytesToFloat32(unaligned.subarray(1))), [1.5, -2]);
  assert.deepEqual(Array.from(bytesToUint32(uint32ToBytes(new Uint32Array([0, 1, 0xffffffff])))), [0, 1, 0xffffffff]);
  assert.throws(() => bytesToFloat32(new Uint8Array(3)), ProtocolError);
  assert.throws(() => bytesToUint32(new Uint8Array(5)), ProtocolError);
});

test('bad input is rejected with ProtocolError or ProtocolVersionError and a clear message', () => {
  const valid = [
    ...encodeMessage({ type: 'ready', gen: 1, rank: 0, step: 0, hasState: false, epoch: 0, consumed: 0, lineage: '' }),
  ];
  const protocolError: Array<[string, unknown, RegExp?]> = [
    ['empty', new Uint8Array(0), /shorter than the 2-byte prefix/],
    ['one byte', new Uint8Array([1]), /shorter/],
    ['not bytes', 'hello', /must be bytes/],
    ['null', null, /must be bytes/],
    ['unknown kind', Uint8Array.from([9, 1, ...valid.slice(2)]), /unknown frame kind 9/],
    ['kind 0', Uint8Array.from([0, 1]), /unknown frame kind 0/],
    ['reserved msgpack byte', Uint8Array.from([1, 1, 0xc1]), /expected a map, got a C1Type/],
    ['garbage msgpack', Uint8Array.from([1, 1, 0x82, 0xa1, 0x61, 0xdf, 0xff, 0xff]), /not valid msgpack/],
    ['truncated msgpack', Uint8Array.from(valid.slice(0, -1)), /not valid msgpack/],
    ['trailing bytes', Uint8Array.from([...valid, 0]), /not valid msgpack/],
    ['no body', Uint8Array.from([1, 1]), /not valid msgpack/],
    ['body is a number', controlFrame(5), /expected a map/],
    ['body is an array', controlFrame([1, 2]), /expected a map/],
    ['body is bytes', controlFrame(new Uint8Array(4)), /expected a map/],
    ['unknown type', controlFrame({ type: 'launchMissiles', gen: 1 }), /message\.type/],
    ['inherited type name', controlFrame({ type: 'constructor' }), /message\.type/],
    ['__proto__ type', controlFrame({ type: '__proto__' }), /message\.type/],
    ['type not a string', controlFrame({ type: 1 }), /message\.type/],
    ['missing field', controlFrame({ type: 'ready', gen: 1 }), /ready\.rank: expected an integer.*got nothing/],
    ['wrong field type', controlFrame({ type: 'ready', gen: 1, rank: '1' }), /ready\.rank/],
    ['NaN integer', controlFrame({ type: 'ready', gen: 1, rank: Number.NaN }), /ready\.rank: .*got NaN/],
    ['fractional integer', controlFrame({ type: 'ready', gen: 1.5, rank: 0 }), /ready\.gen/],
    ['generation 0', controlFrame({ type: 'ready', gen: 0, rank: 0 }), /ready\.gen/],
    ['negative rank', controlFrame({ type: 'ready', gen: 1, rank: -1 }), /ready\.rank/],
    [
      'infinite duration',
      controlFrame({
        type: 'metrics',
        gen: 1,
        rank: 0,
        records: [
          { epoch: 0, step: 0, loss: 1, samples: 1, dataMs: Infinity, computeMs: 0, allreduceMs: 0, applyMs: 0 },
        ],
      }),
      /records\[0\]\.dataMs/,
    ],
    ['records not an array', controlFrame({ type: 'metrics', gen: 1, rank: 0, records: {} }), /metrics\.records/],
    ['record not a map', controlFrame({ type: 'metrics', gen: 1, rank: 0, records: [3] }), /metrics\.records\[0\]/],
    [
      'boolean as number',
      controlFrame({ ...(samples[0] as unknown as Record<string, Plain>), hasData: 1 }),
      /hello\.hasData/,
    ],
    [
      'bytes as string',
      controlFrame({
        type: 'start',
        gen: 1,
        epoch: 0,
        step: 0,
        consumed: 0,
        lineage: '',
        weights: 'abcd',
        optimizer: new Uint8Array(0),
      }),
      /start\.weights/,
    ],
    [
      'float bytes not a multiple of 4',
      controlFrame({
        type: 'start',
        gen: 1,
        epoch: 0,
        step: 0,
        consumed: 0,
        lineage: '',
        weights: new Uint8Array(3),
        optimizer: new Uint8Array(0),
      }),
      /start\.weights/,
    ],
    [
      'nested not a map',
      controlFrame({ type: 'assign', gen: 1, rank: 0, worldSize: 2, successor: 'x', predecessorRank: 1, config: {} }),
      /assign\.successor/,
    ],
    [
      'rank beyond world',
      controlFrame({
        type: 'assign',
        gen: 1,
        rank: 2,
        worldSize: 2,
        successor: { host: 'h', port: 1, rank: 0 },
        predecessorRank: 1,
        config: {},
      }),
      /assign\.rank/,
    ],
    [
      'port out of range',
      controlFrame({
        type: 'assign',
        gen: 1,
        rank: 0,
        worldSize: 2,
        successor: { host: 'h', port: 70000, rank: 1 },
        predecessorRank: 1,
        config: {},
      }),
      /successor\.port/,
    ],
    [
      'config not a map',
      controlFrame({
        type: 'assign',
        gen: 1,
        rank: 0,
        worldSize: 2,
        successor: { host: 'h', port: 1, rank: 1 },
        predecessorRank: 1,
        config: [1],
      }),
      /assign\.config/,
    ],
    [
      'null optional',
      controlFrame({
        type: 'shard',
        gen: 1,
        epoch: 0,
        indices: new Uint8Array(0),
        testStart: 0,
        testEnd: 0,
        firstStep: 0,
        epochSamples: 0,
        offset: 0,
        images: null,
      }),
      /shard\.images/,
    ],
    [
      'shipped samples without their shape',
      controlFrame({
        type: 'shard',
        gen: 1,
        epoch: 0,
        indices: new Uint8Array(4),
        testStart: 0,
        testEnd: 0,
        firstStep: 0,
        epochSamples: 1,
        offset: 0,
        images: new Uint8Array(784),
        labels: new Uint8Array(1),
      }),
      /shard\.sampleShape/,
    ],
    [
      'shipped samples of another size than their shape',
      controlFrame({
        type: 'shard',
        gen: 1,
        epoch: 0,
        indices: new Uint8Array(4),
        testStart: 0,
        testEnd: 0,
        firstStep: 0,
        epochSamples: 1,
        offset: 0,
        images: new Uint8Array(784),
        labels: new Uint8Array(1),
        sampleShape: { height: 32, width: 32, channels: 3 },
      }),
      /shard\.images: 784 bytes for 1 labels of 3072 bytes/,
    ],
    [
      'test range reversed',
      controlFrame({ type: 'shard', gen: 1, epoch: 0, indices: new Uint8Array(0), testStart: 5, testEnd: 4 }),
      /testEnd/,
    ],
    [
      'correct > total',
      controlFrame({ type: 'evalResult', gen: 1, rank: 0, epoch: 0, correct: 6, total: 5, lossSum: 1 }),
      /exceeds total/,
    ],
    ['exit code out of range', controlFrame({ type: 'stop', reason: 'x', exitCode: 256 }), /stop\.exitCode/],
    ['deep nesting', Uint8Array.from([1, 1, ...new Array<number>(200_000).fill(0x91), 0xc0]), /./],
    [
      'chunk frame to decodeMessage',
      encodeChunkFrame({ generation: 1, step: 0, phase: 0, chunk: 0, count: 0 }, new Float32Array(0)),
      /got a gradient chunk/,
    ],
  ];
  for (const [label, input, pattern] of protocolError) {
    assert.throws(
      () => decodeMessage(input as Uint8Array),
      (err: unknown) => {
        assert.ok(err instanceof ProtocolError, `${label}: got ${String(err)}`);
        if (pattern) assert.match(err.message, pattern, label);
        return true;
      },
      label,
    );
    if (label !== 'chunk frame to decodeMessage')
      assert.throws(() => decodeFrame(input as Uint8Array), ProtocolError, label);
  }

  const versionErrors: Array<[string, Uint8Array]> = [
    ['wrong version byte', Uint8Array.from([1, 2, ...valid.slice(2)])],
    ['wrong version byte on a chunk', Uint8Array.from([2, 0, ...new Array<number>(18).fill(0)])],
    [
      'hello speaking version 2',
      controlFrame({ ...(samples[0] as unknown as Record<string, Plain>), protocolVersion: 2 }),
    ],
    ['ringHello speaking version 0', controlFrame({ type: 'ringHello', gen: 1, rank: 0, protocolVersion: 0 })],
  ];
  for (const [label, input] of versionErrors) {
    assert.throws(
      () => decodeFrame(input),
      (err: unknown) => err instanceof ProtocolVersionError && err.code === 'PROTOCOL_VERSION',
      label,
    );
  }
});

test('bad chunk frames are rejected', () => {
  const good = encodeChunkFrame({ generation: 1, step: 2, phase: 0, chunk: 1, count: 2 }, new Float32Array([1, 2]));
  const patched = (offset: number, value: number): Uint8Array => {
    const b = Uint8Array.from(good);
    b[offset] = value;
    return b;
  };
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ['one byte too long', Uint8Array.from([...good, 0]), /must be 28 bytes, got 29/],
    ['one byte too short', good.subarray(0, good.length - 1), /must be 28 bytes, got 27/],
    ['header only', good.subarray(0, CHUNK_HEADER_BYTES), /must be 28 bytes, got 20/],
    ['shorter than the header', good.subarray(0, 10), /shorter than its 20-byte header/],
    ['count says more', patched(16, 200), /must be 820 bytes/],
    ['phase 2', patched(2, 2), /phase 2/],
    ['encoding byte 2', patched(3, 2), /encoding byte is 2/],
    ['float16 flag on float32-sized values', patched(3, 1), /must be 24 bytes, got 28/],
    ['control frame', encodeMessage({ type: 'requestWeights', gen: 1 }), /got a control message/],
  ];
  for (const [label, input, pattern] of cases) {
    assert.throws(
      () => decodeChunkFrame(input),
      (err: unknown) => err instanceof ProtocolError && pattern.test(err.message),
      label,
    );
  }
  const huge = Uint8Array.from(good);
  huge.set([0xff, 0xff, 0xff, 0xff], 16);
  assert.throws(() => decodeFrame(huge), ProtocolError);
});

/** Decoding arbitrary bytes either fails with a protocol error or yields a message that is itself valid. */
function checkDecodeIsSafe(input: Uint8Array): 'ok' | 'rejected' {
  let frame;
  try {
    frame = decodeFrame(input);
  } catch (err) {
    assert.ok(
      isProtocolFailure(err),
      `decode threw ${String(err)} for ${Buffer.from(input).toString('hex').slice(0, 200)}`,
    );
    return 'rejected';
  }
  if (frame.kind === 'control') {
    assert.deepEqual(normalize(decodeMessage(encodeMessage(frame.message))), normalize(frame.message));
  } else {
    assert.equal(frame.data.length, frame.header.count);
    assert.equal(input.byteLength, chunkFrameBytes(frame.header));
  }
  return 'ok';
}

test('fuzz: random bytes and random mutations of valid frames never crash the decoder', () => {
  const rng = createRng(0xfeed);
  const seeds = [
    ...samples.map((m) => encodeMessage(m)),
    encodeChunkFrame({ generation: 3, step: 9, phase: 1, chunk: 0, count: 5 }, new Float32Array([1, 2, 3, 4, 5])),
  ];
  const outcomes = { ok: 0, rejected: 0 };
  for (let i = 0; i < 3000; i++) {
    const length = rng.nextBelow(64);
    const bytes = new Uint8Array(length);
    for (let j = 0; j < length; j++) bytes[j] = rng.nextBelow(256);
    if (length >= 2 && rng.next() < 0.8) {
      bytes[0] = 1 + rng.nextBelow(2);
      bytes[1] = PROTOCOL_VERSION;
    }
    outcomes[checkDecodeIsSafe(bytes)]++;
  }
  for (let i = 0; i < 6000; i++) {
    const base = seeds[rng.nextBelow(seeds.length)];
    outcomes[checkDecodeIsSafe(mutate(base, rng))]++;
  }
  // The mutations must exercise both paths, or the fuzz proves little.
  assert.ok(outcomes.ok > 100, `accepted ${outcomes.ok}`);
  assert.ok(outcomes.rejected > 1000, `rejected ${outcomes.rejected}`);
});

function mutate(base: Uint8Array, rng: ReturnType<typeof createRng>): Uint8Array {
  const bytes = Array.from(base);
  const edits = 1 + rng.nextBelow(3);
  for (let e = 0; e < edits; e++) {
    const at = 2 + rng.nextBelow(Math.max(1, bytes.length - 2));
    switch (rng.nextBelow(5)) {
      case 0:
        bytes[at] = rng.nextBelow(256);
        break; // overwrite
      case 1:
        bytes[at] ^= 1 << rng.nextBelow(8);
        break; // bit flip
      case 2:
        bytes.length = at;
        break; // truncate
      case 3:
        bytes.splice(at, 0, rng.nextBelow(256));
        break; // insert
      default:
        bytes.splice(at, 1 + rng.nextBelow(4));
        break; // delete
    }
  }
  return Uint8Array.from(bytes);
}
