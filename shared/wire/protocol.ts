/**
 * The ringtrain wire protocol, version 1. The only module that touches `msgpackr`.
 *
 * Every WebSocket message is binary and starts with a 2-byte frame prefix:
 *
 *   byte 0   frame kind: 1 = control message, 2 = gradient chunk
 *   byte 1   PROTOCOL_VERSION (1)
 *
 * Control message (kind 1): the prefix, then one msgpack map (plain string keys, no msgpackr
 * records) with a string field `type` naming the message and that message's fields. Byte fields are
 * msgpack `bin`; on decode they are Uint8Array views into the received frame. Unknown extra fields
 * are dropped; unknown types, missing or ill-typed fields are rejected. Every message sent after a
 * worker joined carries `gen`, the membership generation (a positive integer), so messages of an
 * old membership can be fenced off.
 *
 *   worker -> coordinator   hello, ready, heartbeat, stall, metrics, evalResult, epochDone, weights, failed
 *   coordinator -> worker   challenge, welcome, assign, start, shard, requestWeights, stop
 *   worker -> worker        challenge (from the listening successor), then ringHello (from the dialing predecessor)
 *
 * Handshakes: the accepting side of every link first sends `challenge { nonce }`; the dialing side answers with
 * `hello` (control link) or `ringHello` (ring link) carrying `auth` = HMAC-SHA256(token, context | nonce), see
 * shared/auth.ts. Nothing else is accepted on a link before that answer verifies.
 *
 * Gradient chunk (kind 2), all integers little-endian, a 20-byte header then the payload:
 *
 *   offset  size  field
 *        0     1  kind = 2
 *        1     1  version = 1
 *        2     1  phase (0 = reduce-scatter, 1 = allgather)
 *        3     1  encoding of the values: 0 = float32, 1 = float16 (`--compression fp16`); nothing else is valid
 *        4     4  generation (u32)
 *        8     4  step (u32, training step)
 *       12     4  chunk (u32, block index: ring chunk c, or its segment k when chunks are cut into segments for
 *                 pipelining, sent as c + k * worldSize; unsegmented chunks are simply c)
 *       16     4  count (u32, number of values)
 *       20     4*count (float32) or 2*count (float16) bytes: the values, little-endian
 *
 * Frames are identified by (generation, step, phase, chunk); a link carries each such key at most once. Float16
 * frames are decoded by decodeChunkValues (the ring transport's path); decodeFrame and decodeChunkFrame accept float32
 * chunk frames only.
 *
 * Decoding never throws anything but ProtocolVersionError (wrong version byte or version field) or
 * ProtocolError (anything else wrong), whatever the input bytes.
 */
import { Packr, RESERVE_START_SPACE } from 'msgpackr';
import { ProtocolError, ProtocolVersionError } from '../errors.js';
import { Phase, ValueEncoding, type ChunkHeader } from '../ring/allreduce.js';

export const PROTOCOL_VERSION = 1;
export const FrameKind = { control: 1, chunk: 2 } as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];
export const FRAME_PREFIX_BYTES = 2;
export const CHUNK_HEADER_BYTES = 20;

const UINT32_MAX = 0xffffffff;
const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export const MessageType = {
  hello: 'hello',
  ready: 'ready',
  metrics: 'metrics',
  evalResult: 'evalResult',
  epochDone: 'epochDone',
  weights: 'weights',
  failed: 'failed',
  welcome: 'welcome',
  assign: 'assign',
  start: 'start',
  shard: 'shard',
  requestWeights: 'requestWeights',
  stop: 'stop',
  ringHello: 'ringHello',
  challenge: 'challenge',
  heartbeat: 'heartbeat',
  stall: 'stall',
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

// ---- worker -> coordinator ----
/**
 * A worker's own copy of the dataset, described so the coordinator can refuse one that differs from its own:
 * sample shape, classes in label order, split sizes and a content fingerprint (shared/data/info.ts).
 */
export interface DatasetInfo {
  format: string;
  height: number;
  width: number;
  channels: number;
  classNames: string[];
  trainCount: number;
  testCount: number;
  fingerprint: string;
}
/** `auth` answers the coordinator's challenge (shared/auth.ts); `dataset` is present exactly when `hasData`. */
export interface HelloMessage {
  type: 'hello';
  protocolVersion: number;
  workerId: string;
  host: string;
  ringHost: string;
  ringPort: number;
  hasData: boolean;
  dataset?: DatasetInfo;
  backend: string;
  pid: number;
  auth: Uint8Array;
}
/**
 * The worker's ring links are up. `step` is the number of global steps its replica has applied, meaningful when
 * `hasState` (a worker that joined mid-run has no state yet); the coordinator restores every replica from the most
 * advanced one, so no completed step is lost when the membership changes.
 */
export interface ReadyMessage {
  type: 'ready';
  gen: number;
  rank: number;
  step: number;
  hasState: boolean;
}
/** Liveness, every heartbeat interval; `gen` 0 and `rank` -1 before the worker is part of a ring. */
export interface HeartbeatMessage {
  type: 'heartbeat';
  gen: number;
  rank: number;
  step: number;
}
/** A step has waited on the ring predecessor for `waitingMs` (Horovod-style stall warning). */
export interface StallMessage {
  type: 'stall';
  gen: number;
  rank: number;
  step: number;
  waitingMs: number;
  peerRank: number;
}
export interface StepRecord {
  epoch: number;
  step: number;
  /** Any number: a diverging run's NaN/Infinity loss is a fact to report, not a protocol error. */
  loss: number;
  samples: number;
  dataMs: number;
  computeMs: number;
  allreduceMs: number;
  applyMs: number;
  /** The reduce-scatter part of allreduceMs (the rest is allgather). */
  reduceScatterMs: number;
  /** Wall-clock start of the step, Unix epoch milliseconds (for timelines). */
  startedAt: number;
  paramHash?: string;
  /** The averaged gradients held NaN/Inf; every replica skipped this update. */
  nonFinite?: boolean;
}
export interface MetricsMessage {
  type: 'metrics';
  gen: number;
  rank: number;
  records: StepRecord[];
}
/** `lossSum` may be NaN/Infinity like StepRecord.loss. */
export interface EvalResultMessage {
  type: 'evalResult';
  gen: number;
  rank: number;
  epoch: number;
  correct: number;
  total: number;
  lossSum: number;
}
/** `trainMs`: the worker's wall time for the epoch's training steps. */
export interface EpochDoneMessage {
  type: 'epochDone';
  gen: number;
  rank: number;
  epoch: number;
  steps: number;
  trainMs: number;
}
/** Reply to requestWeights: flat float32 bytes (see float32ToBytes). */
export interface WeightsMessage {
  type: 'weights';
  gen: number;
  rank: number;
  step: number;
  epoch: number;
  weights: Uint8Array;
  optimizer: Uint8Array;
}
export interface FailedMessage {
  type: 'failed';
  gen: number;
  rank: number;
  code: string;
  message: string;
}

// ---- coordinator -> worker ----
export interface WelcomeMessage {
  type: 'welcome';
  protocolVersion: number;
  workerId: string;
  runId: string;
}
export interface RingPeer {
  host: string;
  port: number;
  rank: number;
}
export interface AssignMessage {
  type: 'assign';
  gen: number;
  rank: number;
  worldSize: number;
  successor: RingPeer;
  predecessorRank: number;
  /** The training config; validated by its user, here only checked to be a plain object. */
  config: Record<string, unknown>;
}
/** `optimizer` may be empty (fresh optimizer state). */
export interface StartMessage {
  type: 'start';
  gen: number;
  epoch: number;
  step: number;
  weights: Uint8Array;
  optimizer: Uint8Array;
}
/** The shape of one shipped sample: height * width * channels uint8 pixels, HWC order. */
export interface SampleShapeFields {
  height: number;
  width: number;
  channels: number;
}
/**
 * `indices` are uint32 LE (see bytesToUint32); sample bytes only go to workers without local data, and then with
 * `sampleShape` (required whenever images are present; images hold exactly labels * sample bytes).
 */
export interface ShardMessage {
  type: 'shard';
  gen: number;
  epoch: number;
  indices: Uint8Array;
  images?: Uint8Array;
  labels?: Uint8Array;
  sampleShape?: SampleShapeFields;
  /** Global step number of this shard's first batch. */
  firstStep: number;
  /** Samples in the whole epoch, and how many of them earlier generations already trained on (for the lr schedule). */
  epochSamples: number;
  offset: number;
  testStart: number;
  testEnd: number;
  testImages?: Uint8Array;
  testLabels?: Uint8Array;
}
export interface RequestWeightsMessage {
  type: 'requestWeights';
  gen: number;
}
export interface StopMessage {
  type: 'stop';
  reason: string;
  exitCode: number;
}

// ---- worker -> worker ----
/** First message of the dialing predecessor, answering the listener's challenge. */
export interface RingHelloMessage {
  type: 'ringHello';
  gen: number;
  rank: number;
  protocolVersion: number;
  auth: Uint8Array;
}

// ---- either direction: the accepting side of a link opens with a challenge ----
export interface ChallengeMessage {
  type: 'challenge';
  protocolVersion: number;
  nonce: Uint8Array;
}

export type WorkerToCoordinatorMessage =
  | HelloMessage
  | ReadyMessage
  | MetricsMessage
  | EvalResultMessage
  | EpochDoneMessage
  | WeightsMessage
  | FailedMessage
  | HeartbeatMessage
  | StallMessage;
export type CoordinatorToWorkerMessage =
  WelcomeMessage | AssignMessage | StartMessage | ShardMessage | RequestWeightsMessage | StopMessage;
export type Message = WorkerToCoordinatorMessage | CoordinatorToWorkerMessage | RingHelloMessage | ChallengeMessage;
export type MessageOf<T extends MessageType> = Extract<Message, { type: T }>;

export type DecodedFrame =
  { kind: 'control'; message: Message } | { kind: 'chunk'; header: ChunkHeader; data: Float32Array };

// useRecords: false keeps msgpack plain maps (no msgpackr record extension, nothing stateful shared
// between sender and receiver); mapsAsObjects decodes them as plain objects.
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

// ---------------------------------------------------------------------------------------------
// Field validation

type Fields = Record<string, unknown>;

function truncate(text: string, max = 120): string {
  return text.length > max ? `${text.slice(0, max)}...` : text;
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (typeof value === 'number') return Number.isNaN(value) ? 'NaN' : `number ${value}`;
  if (typeof value === 'string') return `string ${JSON.stringify(truncate(value, 40))}`;
  if (typeof value === 'bigint' || typeof value === 'boolean') return `${typeof value} ${String(value)}`;
  if (Array.isArray(value)) return `array of ${value.length}`;
  if (value instanceof Uint8Array) return `${value.byteLength} bytes`;
  if (isPlainObject(value)) return 'a map';
  try {
    // msgpackr turns extensions (and the reserved byte 0xc1) into class instances; name the class.
    const name: unknown = (Object.getPrototypeOf(value) as { constructor?: { name?: unknown } } | null)?.constructor
      ?.name;
    if (typeof name === 'string' && name !== '') return `a ${name}`;
  } catch {
    // an exotic object; fall through to the generic description
  }
  return Object.prototype.toString.call(value);
}

function isPlainObject(value: unknown): value is Fields {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Typed, own-property-only access to a decoded map, with error messages naming the field path. */
class FieldReader {
  private constructor(
    private readonly fields: Fields,
    private readonly path: string,
  ) {}

  static of(value: unknown, path: string): FieldReader {
    if (!isPlainObject(value)) throw new ProtocolError(`${path}: expected a map, got ${describe(value)}`);
    return new FieldReader(value, path);
  }

  private raw(key: string): unknown {
    return Object.hasOwn(this.fields, key) ? this.fields[key] : undefined;
  }

  private fail(key: string, expected: string, value: unknown): never {
    throw new ProtocolError(`${this.path}.${key}: expected ${expected}, got ${describe(value)}`);
  }

  /** An integer in [min, max]. */
  int(key: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    const value = this.raw(key);
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
      this.fail(key, `an integer in [${min}, ${max}]`, value);
    }
    return value;
  }

  /** A membership generation: a positive integer. */
  gen(key = 'gen'): number {
    return this.int(key, 1);
  }

  /** A protocol version field; any integer other than PROTOCOL_VERSION is a version mismatch. */
  version(key = 'protocolVersion'): number {
    const value = this.int(key, 0);
    if (value !== PROTOCOL_VERSION) throw new ProtocolVersionError(PROTOCOL_VERSION, value);
    return value;
  }

  /** Any number, NaN and infinities included. */
  number(key: string): number {
    const value = this.raw(key);
    if (typeof value !== 'number') this.fail(key, 'a number', value);
    return value;
  }

  /** A finite number >= 0 (durations). */
  duration(key: string): number {
    const value = this.raw(key);
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0)
      this.fail(key, 'a finite number >= 0', value);
    return value;
  }

  string(key: string): string {
    const value = this.raw(key);
    if (typeof value !== 'string') this.fail(key, 'a string', value);
    return value;
  }

  optionalString(key: string): string | undefined {
    return this.raw(key) === undefined ? undefined : this.string(key);
  }

  optionalBoolean(key: string): boolean | undefined {
    return this.raw(key) === undefined ? undefined : this.boolean(key);
  }

  boolean(key: string): boolean {
    const value = this.raw(key);
    if (typeof value !== 'boolean') this.fail(key, 'a boolean', value);
    return value;
  }

  bytes(key: string, multipleOf = 1): Uint8Array {
    const value = this.raw(key);
    if (!(value instanceof Uint8Array) || value.byteLength % multipleOf !== 0) {
      this.fail(key, multipleOf === 1 ? 'bytes' : `bytes (a multiple of ${multipleOf})`, value);
    }
    return value;
  }

  optionalBytes(key: string): Uint8Array | undefined {
    return this.raw(key) === undefined ? undefined : this.bytes(key);
  }

  /** A plain object whose contents are left to its user. */
  record(key: string): Record<string, unknown> {
    const value = this.raw(key);
    if (!isPlainObject(value)) this.fail(key, 'a map', value);
    return value;
  }

  nested(key: string): FieldReader {
    return FieldReader.of(this.raw(key), `${this.path}.${key}`);
  }

  /** An array of at most `max` strings. */
  strings(key: string, max: number): string[] {
    const value = this.raw(key);
    if (!Array.isArray(value) || value.length > max || !value.every((v) => typeof v === 'string')) {
      this.fail(key, `an array of at most ${max} strings`, value);
    }
    return value as string[];
  }

  array<T>(key: string, item: (reader: FieldReader) => T): T[] {
    const value = this.raw(key);
    if (!Array.isArray(value)) this.fail(key, 'an array', value);
    return value.map((element, i) => item(FieldReader.of(element, `${this.path}.${key}[${i}]`)));
  }
}

function requireBelow(path: string, value: number, bound: number, boundName: string): void {
  if (value >= bound) throw new ProtocolError(`${path}: ${value} must be below ${boundName} ${bound}`);
}

function stepRecord(r: FieldReader): StepRecord {
  const record: StepRecord = {
    epoch: r.int('epoch'),
    step: r.int('step'),
    loss: r.number('loss'),
    samples: r.int('samples'),
    dataMs: r.duration('dataMs'),
    computeMs: r.duration('computeMs'),
    allreduceMs: r.duration('allreduceMs'),
    applyMs: r.duration('applyMs'),
    reduceScatterMs: r.duration('reduceScatterMs'),
    startedAt: r.duration('startedAt'),
  };
  const paramHash = r.optionalString('paramHash');
  if (paramHash !== undefined) record.paramHash = paramHash;
  if (r.optionalBoolean('nonFinite')) record.nonFinite = true;
  return record;
}

function assign(r: FieldReader): AssignMessage {
  const worldSize = r.int('worldSize', 1);
  const rank = r.int('rank');
  const peer = r.nested('successor');
  const successor: RingPeer = { host: peer.string('host'), port: peer.int('port', 0, 65535), rank: peer.int('rank') };
  const predecessorRank = r.int('predecessorRank');
  requireBelow('assign.rank', rank, worldSize, 'worldSize');
  requireBelow('assign.successor.rank', successor.rank, worldSize, 'worldSize');
  requireBelow('assign.predecessorRank', predecessorRank, worldSize, 'worldSize');
  return { type: 'assign', gen: r.gen(), rank, worldSize, successor, predecessorRank, config: r.record('config') };
}

function shard(r: FieldReader): ShardMessage {
  const testStart = r.int('testStart');
  const testEnd = r.int('testEnd');
  if (testEnd < testStart) throw new ProtocolError(`shard: testEnd ${testEnd} is before testStart ${testStart}`);
  const epochSamples = r.int('epochSamples');
  const offset = r.int('offset');
  if (offset > epochSamples) throw new ProtocolError(`shard: offset ${offset} exceeds epochSamples ${epochSamples}`);
  const message: ShardMessage = {
    type: 'shard',
    gen: r.gen(),
    epoch: r.int('epoch'),
    indices: r.bytes('indices', 4),
    testStart,
    testEnd,
    firstStep: r.int('firstStep'),
    epochSamples,
    offset,
  };
  for (const key of ['images', 'labels', 'testImages', 'testLabels'] as const) {
    const bytes = r.optionalBytes(key);
    if (bytes !== undefined) message[key] = bytes;
  }
  if (message.images !== undefined || message.testImages !== undefined) checkShippedSamples(r, message);
  return message;
}

const MAX_SAMPLE_SIDE = 65535;
const MAX_SAMPLE_CHANNELS = 4;

/** Shipped samples come with their shape, and every image byte array holds exactly one sample per label. */
function checkShippedSamples(r: FieldReader, message: ShardMessage): void {
  const s = r.nested('sampleShape');
  const shape: SampleShapeFields = {
    height: s.int('height', 1, MAX_SAMPLE_SIDE),
    width: s.int('width', 1, MAX_SAMPLE_SIDE),
    channels: s.int('channels', 1, MAX_SAMPLE_CHANNELS),
  };
  const bytesPerSample = shape.height * shape.width * shape.channels;
  for (const [images, labels] of [
    ['images', 'labels'],
    ['testImages', 'testLabels'],
  ] as const) {
    const count = message[labels]?.byteLength ?? 0;
    const length = message[images]?.byteLength ?? 0;
    if (length !== count * bytesPerSample) {
      throw new ProtocolError(`shard.${images}: ${length} bytes for ${count} labels of ${bytesPerSample} bytes each`);
    }
  }
  message.sampleShape = shape;
}

const MAX_CLASS_NAMES = 256;

function datasetInfo(r: FieldReader): DatasetInfo {
  return {
    format: r.string('format'),
    height: r.int('height', 1, MAX_SAMPLE_SIDE),
    width: r.int('width', 1, MAX_SAMPLE_SIDE),
    channels: r.int('channels', 1, MAX_SAMPLE_CHANNELS),
    classNames: r.strings('classNames', MAX_CLASS_NAMES),
    trainCount: r.int('trainCount'),
    testCount: r.int('testCount'),
    fingerprint: r.string('fingerprint'),
  };
}

function evalResult(r: FieldReader): EvalResultMessage {
  const correct = r.int('correct');
  const total = r.int('total');
  if (correct > total) throw new ProtocolError(`evalResult: correct ${correct} exceeds total ${total}`);
  return {
    type: 'evalResult',
    gen: r.gen(),
    rank: r.int('rank'),
    epoch: r.int('epoch'),
    correct,
    total,
    lossSum: r.number('lossSum'),
  };
}

/** One validator per message type; each builds a fresh object holding only the known fields. */
const validators: { [T in MessageType]: (r: FieldReader) => MessageOf<T> } = {
  hello: (r) => {
    const message: HelloMessage = {
      type: 'hello',
      protocolVersion: r.version(),
      workerId: r.string('workerId'),
      host: r.string('host'),
      ringHost: r.string('ringHost'),
      ringPort: r.int('ringPort', 0, 65535),
      hasData: r.boolean('hasData'),
      backend: r.string('backend'),
      pid: r.int('pid'),
      auth: r.bytes('auth'),
    };
    if (message.hasData) message.dataset = datasetInfo(r.nested('dataset'));
    return message;
  },
  ready: (r) => ({
    type: 'ready',
    gen: r.gen(),
    rank: r.int('rank'),
    step: r.int('step'),
    hasState: r.boolean('hasState'),
  }),
  heartbeat: (r) => ({ type: 'heartbeat', gen: r.int('gen'), rank: r.int('rank', -1), step: r.int('step') }),
  stall: (r) => ({
    type: 'stall',
    gen: r.gen(),
    rank: r.int('rank'),
    step: r.int('step'),
    waitingMs: r.duration('waitingMs'),
    peerRank: r.int('peerRank'),
  }),
  challenge: (r) => ({ type: 'challenge', protocolVersion: r.version(), nonce: r.bytes('nonce') }),
  metrics: (r) => ({ type: 'metrics', gen: r.gen(), rank: r.int('rank'), records: r.array('records', stepRecord) }),
  evalResult,
  epochDone: (r) => ({
    type: 'epochDone',
    gen: r.gen(),
    rank: r.int('rank'),
    epoch: r.int('epoch'),
    steps: r.int('steps'),
    trainMs: r.duration('trainMs'),
  }),
  weights: (r) => ({
    type: 'weights',
    gen: r.gen(),
    rank: r.int('rank'),
    step: r.int('step'),
    epoch: r.int('epoch'),
    weights: r.bytes('weights', 4),
    optimizer: r.bytes('optimizer', 4),
  }),
  failed: (r) => ({
    type: 'failed',
    gen: r.gen(),
    rank: r.int('rank'),
    code: r.string('code'),
    message: r.string('message'),
  }),
  welcome: (r) => ({
    type: 'welcome',
    protocolVersion: r.version(),
    workerId: r.string('workerId'),
    runId: r.string('runId'),
  }),
  assign,
  start: (r) => ({
    type: 'start',
    gen: r.gen(),
    epoch: r.int('epoch'),
    step: r.int('step'),
    weights: r.bytes('weights', 4),
    optimizer: r.bytes('optimizer', 4),
  }),
  shard,
  requestWeights: (r) => ({ type: 'requestWeights', gen: r.gen() }),
  stop: (r) => ({ type: 'stop', reason: r.string('reason'), exitCode: r.int('exitCode', 0, 255) }),
  ringHello: (r) => ({
    type: 'ringHello',
    gen: r.gen(),
    rank: r.int('rank'),
    protocolVersion: r.version(),
    auth: r.bytes('auth'),
  }),
};

/** Check a decoded (or about to be encoded) value against the message schemas. */
function validateMessage(value: unknown): Message {
  if (!isPlainObject(value)) throw new ProtocolError(`message: expected a map, got ${describe(value)}`);
  const type = Object.hasOwn(value, 'type') ? value.type : undefined;
  if (typeof type !== 'string' || !Object.hasOwn(validators, type)) {
    throw new ProtocolError(
      `message.type: expected one of ${Object.keys(validators).join(', ')}, got ${describe(type)}`,
    );
  }
  const validate = validators[type as MessageType] as (r: FieldReader) => Message;
  return validate(FieldReader.of(value, type));
}

// ---------------------------------------------------------------------------------------------
// Frames

/** Check the 2-byte prefix and return the frame kind byte. */
function readPrefix(buf: unknown): number {
  if (!(buf instanceof Uint8Array)) throw new ProtocolError(`a frame must be bytes, got ${describe(buf)}`);
  if (buf.byteLength < FRAME_PREFIX_BYTES) {
    throw new ProtocolError(`frame of ${buf.byteLength} bytes is shorter than the ${FRAME_PREFIX_BYTES}-byte prefix`);
  }
  if (buf[1] !== PROTOCOL_VERSION) throw new ProtocolVersionError(PROTOCOL_VERSION, buf[1]);
  return buf[0];
}

function unknownKind(kind: number): ProtocolError {
  return new ProtocolError(`unknown frame kind ${kind} (expected ${FrameKind.control} or ${FrameKind.chunk})`);
}

/** Validate and encode a control message: prefix + msgpack map, in one buffer (no extra copy). */
export function encodeMessage(message: Message): Buffer {
  const normalized = validateMessage(message);
  let frame: Buffer;
  try {
    frame = packr.pack(normalized, RESERVE_START_SPACE | FRAME_PREFIX_BYTES);
  } catch (err) {
    throw new ProtocolError(`cannot encode ${message.type}: ${truncate(String(err))}`, { cause: err });
  }
  frame[0] = FrameKind.control;
  frame[1] = PROTOCOL_VERSION;
  return frame;
}

function decodeControlBody(buf: Uint8Array): Message {
  let body: unknown;
  try {
    body = packr.unpack(buf.subarray(FRAME_PREFIX_BYTES));
  } catch (err) {
    const detail = err instanceof Error ? err.message : String(err);
    throw new ProtocolError(`control message is not valid msgpack: ${truncate(detail)}`, { cause: err });
  }
  return validateMessage(body);
}

/** Decode and validate a control message frame. Byte fields are views into `buf`. */
export function decodeMessage(buf: Uint8Array): Message {
  const kind = readPrefix(buf);
  if (kind === FrameKind.chunk) throw new ProtocolError('expected a control message, got a gradient chunk frame');
  if (kind !== FrameKind.control) throw unknownKind(kind);
  return decodeControlBody(buf);
}

/** Bytes per value of an encoding. */
export function bytesPerValue(encoding: ValueEncoding): 2 | 4 {
  return encoding === ValueEncoding.float16 ? 2 : 4;
}

/** The size of the whole frame (header and values) for this header. */
export function chunkFrameBytes(header: ChunkHeader): number {
  return CHUNK_HEADER_BYTES + bytesPerValue(header.encoding ?? ValueEncoding.float32) * header.count;
}

/**
 * Validate `header` and write it into the first CHUNK_HEADER_BYTES of `frame`, whose length must be
 * chunkFrameBytes(header). The caller writes the values after it (little-endian): this is how the ring transport
 * fills reused frame buffers without a copy of its own.
 */
export function writeChunkHeader(frame: Uint8Array, header: ChunkHeader): void {
  const checked = checkChunkHeader(header);
  const expected = chunkFrameBytes(checked);
  if (frame.byteLength !== expected)
    throw new ProtocolError(`a frame of ${checked.count} values needs ${expected} bytes, got ${frame.byteLength}`);
  const view = new DataView(frame.buffer, frame.byteOffset, CHUNK_HEADER_BYTES);
  frame[0] = FrameKind.chunk;
  frame[1] = PROTOCOL_VERSION;
  frame[2] = checked.phase;
  frame[3] = checked.encoding ?? ValueEncoding.float32;
  view.setUint32(4, checked.generation, true);
  view.setUint32(8, checked.step, true);
  view.setUint32(12, checked.chunk, true);
  view.setUint32(16, checked.count, true);
}

/**
 * Encode a gradient chunk: one allocation of the frame, one copy of the values. `data` holds the values as they
 * travel: a Float32Array, or with header.encoding float16 a Uint16Array of float16 bits.
 */
export function encodeChunkFrame(header: ChunkHeader, data: Float32Array | Uint16Array): Buffer {
  const encoding = header.encoding ?? ValueEncoding.float32;
  const expectedType = encoding === ValueEncoding.float16 ? Uint16Array : Float32Array;
  if (!(data instanceof expectedType)) {
    throw new ProtocolError(
      `chunk data must be a ${expectedType.name} for encoding ${String(encoding)}, got ${describe(data)}`,
    );
  }
  if (header.count !== data.length) {
    throw new ProtocolError(`chunk header count ${String(header.count)} does not match ${data.length} values`);
  }
  const frame = Buffer.allocUnsafe(CHUNK_HEADER_BYTES + data.byteLength);
  writeChunkHeader(frame, header);
  frame.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), CHUNK_HEADER_BYTES);
  if (!HOST_IS_LITTLE_ENDIAN) swapBytes(frame.subarray(CHUNK_HEADER_BYTES), bytesPerValue(encoding));
  return frame;
}

function checkChunkHeader(header: ChunkHeader): ChunkHeader {
  const fields = FieldReader.of(header, 'chunk header');
  const phase = fields.int('phase', 0, 1) as Phase;
  const checked: ChunkHeader = {
    generation: fields.int('generation', 0, UINT32_MAX),
    step: fields.int('step', 0, UINT32_MAX),
    phase,
    chunk: fields.int('chunk', 0, UINT32_MAX),
    count: fields.int('count', 0, UINT32_MAX),
  };
  if (header.encoding !== undefined) checked.encoding = fields.int('encoding', 0, 1) as ValueEncoding;
  return checked;
}

/**
 * Decode a float32 gradient chunk frame. The data is a zero-copy view into `buf` when the payload is 4-byte aligned in
 * its ArrayBuffer (little-endian hosts), otherwise a copy. A float16 frame is refused here (every frame this accepts
 * holds 4 bytes per value); decodeChunkValues, the ring transport's receive path, decodes both encodings.
 */
export function decodeChunkFrame(buf: Uint8Array): { header: ChunkHeader; data: Float32Array } {
  const { header, values } = decodeChunkValues(buf);
  return { header, data: float32Only(values) };
}

/**
 * Decode a gradient chunk frame, its values as they travelled: a Float32Array or (float16) a Uint16Array of the
 * half-precision bits, each a zero-copy view into `buf` when aligned (little-endian hosts), otherwise a copy. The ring
 * transport's receive path.
 */
export function decodeChunkValues(buf: Uint8Array): { header: ChunkHeader; values: Float32Array | Uint16Array } {
  const kind = readPrefix(buf);
  if (kind === FrameKind.control) throw new ProtocolError('expected a gradient chunk frame, got a control message');
  if (kind !== FrameKind.chunk) throw unknownKind(kind);
  return decodeChunkBody(buf);
}

function float32Only(values: Float32Array | Uint16Array): Float32Array {
  if (values instanceof Float32Array) return values;
  throw new ProtocolError('a float16 chunk frame: only decodeChunkValues (the ring transport) decodes those');
}

function decodeChunkBody(buf: Uint8Array): { header: ChunkHeader; values: Float32Array | Uint16Array } {
  if (buf.byteLength < CHUNK_HEADER_BYTES) {
    throw new ProtocolError(
      `chunk frame of ${buf.byteLength} bytes is shorter than its ${CHUNK_HEADER_BYTES}-byte header`,
    );
  }
  const phase = buf[2];
  if (phase !== Phase.reduceScatter && phase !== Phase.allgather)
    throw new ProtocolError(`chunk frame phase ${phase} is not 0 or 1`);
  const encoding = buf[3];
  if (encoding !== ValueEncoding.float32 && encoding !== ValueEncoding.float16) {
    throw new ProtocolError(`chunk frame encoding byte is ${encoding}, not 0 (float32) or 1 (float16)`);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, CHUNK_HEADER_BYTES);
  const header: ChunkHeader = {
    generation: view.getUint32(4, true),
    step: view.getUint32(8, true),
    phase,
    chunk: view.getUint32(12, true),
    count: view.getUint32(16, true),
  };
  if (encoding === ValueEncoding.float16) header.encoding = ValueEncoding.float16;
  const expected = chunkFrameBytes(header);
  if (buf.byteLength !== expected) {
    throw new ProtocolError(`chunk frame of ${header.count} values must be ${expected} bytes, got ${buf.byteLength}`);
  }
  const payload = buf.subarray(CHUNK_HEADER_BYTES);
  return { header, values: encoding === ValueEncoding.float16 ? bytesToUint16(payload) : bytesToFloat32(payload) };
}

/** Decode any frame, dispatching on its kind byte. */
export function decodeFrame(buf: Uint8Array): DecodedFrame {
  const kind = readPrefix(buf);
  if (kind === FrameKind.control) return { kind: 'control', message: decodeControlBody(buf) };
  if (kind === FrameKind.chunk) {
    const { header, values } = decodeChunkBody(buf);
    return { kind: 'chunk', header, data: float32Only(values) };
  }
  throw unknownKind(kind);
}

// ---------------------------------------------------------------------------------------------
// Typed arrays <-> little-endian bytes

/** Reverse the byte order of every `size`-byte word, in place (only needed on big-endian hosts). */
function swapBytes(bytes: Uint8Array, size: 2 | 4): void {
  for (let i = 0; i + size - 1 < bytes.length; i += size) bytes.subarray(i, i + size).reverse();
}

function wordsToBytes(words: Float32Array | Uint32Array): Uint8Array {
  const view = new Uint8Array(words.buffer, words.byteOffset, words.byteLength);
  if (HOST_IS_LITTLE_ENDIAN) return view;
  const copy = view.slice();
  swapBytes(copy, 4);
  return copy;
}

/** The memory of `size`-byte little-endian words as an aligned native region: `bytes` itself when possible, else a copy. */
function alignedWords(
  bytes: Uint8Array,
  what: string,
  size: 2 | 4 = 4,
): { buffer: ArrayBufferLike; byteOffset: number; length: number } {
  if (!(bytes instanceof Uint8Array)) throw new ProtocolError(`${what} must be bytes, got ${describe(bytes)}`);
  if (bytes.byteLength % size !== 0)
    throw new ProtocolError(`${what}: ${bytes.byteLength} bytes is not a multiple of ${size}`);
  const length = bytes.byteLength / size;
  if (HOST_IS_LITTLE_ENDIAN && bytes.byteOffset % size === 0)
    return { buffer: bytes.buffer, byteOffset: bytes.byteOffset, length };
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  if (!HOST_IS_LITTLE_ENDIAN) swapBytes(copy, size);
  return { buffer: copy.buffer, byteOffset: 0, length };
}

/** Little-endian uint16 bytes (float16 bits) as values: a view when 2-byte aligned, else a copy. */
function bytesToUint16(bytes: Uint8Array): Uint16Array {
  const region = alignedWords(bytes, 'float16 bytes', 2);
  return new Uint16Array(region.buffer, region.byteOffset, region.length);
}

/** float32 values as little-endian bytes: a zero-copy view on little-endian hosts. */
export function float32ToBytes(values: Float32Array): Uint8Array {
  return wordsToBytes(values);
}

/** Little-endian float32 bytes as values: a view when 4-byte aligned, else a copy. */
export function bytesToFloat32(bytes: Uint8Array): Float32Array {
  const region = alignedWords(bytes, 'float32 bytes');
  return new Float32Array(region.buffer, region.byteOffset, region.length);
}

/** uint32 values as little-endian bytes: a zero-copy view on little-endian hosts. */
export function uint32ToBytes(values: Uint32Array): Uint8Array {
  return wordsToBytes(values);
}

/** Little-endian uint32 bytes as values: a view when 4-byte aligned, else a copy. */
export function bytesToUint32(bytes: Uint8Array): Uint32Array {
  const region = alignedWords(bytes, 'uint32 bytes');
  return new Uint32Array(region.buffer, region.byteOffset, region.length);
}
