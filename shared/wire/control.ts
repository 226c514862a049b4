/** Control messages: validation of every field, and the msgpack codec (the only user of msgpackr). */
import { Packr, RESERVE_START_SPACE } from 'msgpackr';
import { ProtocolError } from '../errors.js';
import { describe, isPlainObject, truncate } from './describe.js';
import { FieldReader, requireBelow } from './fields.js';
import { FRAME_PREFIX_BYTES, FrameKind, PROTOCOL_VERSION, readPrefix, unknownKind } from './framing.js';
import {
  MessageType,
  type AssignMessage,
  type DatasetInfo,
  type HelloMessage,
  type EvalResultMessage,
  type Message,
  type MessageOf,
  type RingPeer,
  type SampleShapeFields,
  type ShardMessage,
  type StepRecord,
} from './messages.js';

// useRecords: false keeps msgpack plain maps (no msgpackr record extension, nothing stateful shared
// between sender and receiver); mapsAsObjects decodes them as plain objects.
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

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
  const sentBytes = r.optionalInt('sentBytes');
  if (sentBytes !== undefined) record.sentBytes = sentBytes;
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
  const modelTopology = r.optionalString('modelTopology');
  return {
    type: 'assign',
    gen: r.gen(),
    rank,
    worldSize,
    successor,
    predecessorRank,
    config: r.record('config'),
    ...(modelTopology !== undefined ? { modelTopology } : {}),
  };
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
    epoch: r.int('epoch'),
    consumed: r.int('consumed'),
    lineage: r.string('lineage'),
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
  ringLinkDown: (r) => {
    const during = r.string('during');
    if (during !== 'forming' && during !== 'training')
      throw new ProtocolError(`ringLinkDown.during: expected 'forming' or 'training', got '${during}'`);
    return {
      type: 'ringLinkDown',
      gen: r.gen(),
      rank: r.int('rank'),
      peerRank: r.int('peerRank'),
      during,
      attempts: r.int('attempts'),
      reason: r.string('reason'),
    };
  },
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
    consumed: r.int('consumed'),
    lineage: r.string('lineage'),
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

export function decodeControlBody(buf: Uint8Array): Message {
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
