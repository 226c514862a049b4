/**
 * One sample of every control message type (the protocol test checks that they cover every type), for the protocol
 * round-trip tests and as the fuzz tests' seeds, and the comparison both need after a decode.
 */
import { float32ToBytes, uint32ToBytes, type Message } from '../../shared/wire/protocol.js';

const weightBytes = float32ToBytes(new Float32Array([0.5, -1.25, 3e-8, 1e30]));
export const sampleMessages: Message[] = [
  {
    type: 'hello',
    protocolVersion: 1,
    workerId: 'w-1',
    host: 'alpha',
    ringHost: '10.0.0.2',
    ringPort: 40123,
    hasData: true,
    dataset: {
      format: 'folders',
      height: 32,
      width: 24,
      channels: 3,
      classNames: ['cat', 'dog', 'ünïcode ✓'],
      trainCount: 60_000,
      testCount: 10_000,
      fingerprint: '0123456789abcdef',
    },
    backend: 'wasm',
    auth: new Uint8Array(32).fill(3),
  },
  { type: 'ready', gen: 3, rank: 1, step: 1250, hasState: true, epoch: 2, consumed: 640, lineage: 'run-1:ab12' },
  { type: 'heartbeat', gen: 0, rank: -1, step: 0 },
  { type: 'stall', gen: 3, rank: 1, step: 17, waitingMs: 10_000.5, peerRank: 0 },
  { type: 'ringLinkDown', gen: 3, rank: 1, peerRank: 2, during: 'forming', attempts: 7, reason: 'ECONNREFUSED' },
  { type: 'challenge', protocolVersion: 1, nonce: new Uint8Array(32).fill(9) },
  {
    type: 'metrics',
    gen: 3,
    rank: 1,
    records: [
      {
        epoch: 0,
        step: 5,
        loss: 2.302585092994046,
        samples: 32,
        dataMs: 0.5,
        computeMs: 12.25,
        allreduceMs: 3.1,
        applyMs: 0.75,
        reduceScatterMs: 1.5,
        startedAt: 1795000000123.5,
        paramHash: 'abc123',
        nonFinite: true,
        sentBytes: 81234,
      },
      {
        epoch: 0,
        step: 6,
        loss: Number.NaN,
        samples: 17,
        dataMs: 0,
        computeMs: 1,
        allreduceMs: 2,
        applyMs: 3,
        reduceScatterMs: 0,
        startedAt: 1795000000200,
      },
    ],
  },
  { type: 'evalResult', gen: 3, rank: 0, epoch: 1, correct: 4900, total: 5000, lossSum: 412.5 },
  { type: 'epochDone', gen: 3, rank: 2, epoch: 1, steps: 625, trainMs: 41_250.5 },
  { type: 'weights', gen: 3, rank: 0, step: 1250, weights: weightBytes, optimizer: new Uint8Array(0) },
  { type: 'failed', gen: 3, rank: 1, code: 'DATA_CORRUPT', message: 'train-images: truncated' },
  { type: 'welcome', protocolVersion: 1, workerId: 'w-1', runId: 'run-2024' },
  {
    type: 'assign',
    gen: 4,
    rank: 1,
    worldSize: 3,
    successor: { host: '10.0.0.3', port: 40124, rank: 2 },
    predecessorRank: 0,
    config: { model: 'cnn', batchSize: 32, lr: 0.01, optimizer: { warmup: [1, 2] }, seed: 'ünïcode ✓' },
  },
  {
    type: 'start',
    gen: 4,
    epoch: 0,
    step: 0,
    consumed: 0,
    lineage: 'run:1',
    weights: weightBytes,
    optimizer: float32ToBytes(new Float32Array(8).fill(0.25)),
  },
  {
    type: 'shard',
    gen: 4,
    epoch: 0,
    indices: uint32ToBytes(new Uint32Array([5, 9, 59_999])),
    images: new Uint8Array(784 * 3).fill(7),
    labels: new Uint8Array([1, 2, 3]),
    sampleShape: { height: 28, width: 28, channels: 1 },
    testStart: 0,
    testEnd: 3334,
    testImages: new Uint8Array(784),
    testLabels: new Uint8Array([9]),
    firstStep: 0,
    epochSamples: 60_000,
    offset: 0,
  },
  {
    type: 'shard',
    gen: 4,
    epoch: 1,
    indices: new Uint8Array(0),
    testStart: 10,
    testEnd: 10,
    firstStep: 937,
    epochSamples: 60_000,
    offset: 60_000,
  },
  { type: 'requestWeights', gen: 4 },
  { type: 'stop', reason: 'training complete', exitCode: 0 },
  { type: 'ringHello', gen: 4, rank: 2, protocolVersion: 1, auth: new Uint8Array(32) },
];

/** Byte fields decode as Buffer views; compare contents as plain Uint8Arrays. */
export function normalize(value: unknown): unknown {
  if (value instanceof Uint8Array) return new Uint8Array(value);
  if (Array.isArray(value)) return value.map(normalize);
  if (value !== null && typeof value === 'object')
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalize(v)]));
  return value;
}
