/** The control messages of protocol version 1 (the wire format is documented in protocol.ts). */
import type { RunConfig } from '../config.js';
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
  ringLinkDown: 'ringLinkDown',
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
  auth: Uint8Array;
}
/**
 * The worker's ring links are up. When `hasState`, its replica has applied `step` global steps, standing at
 * (`epoch`, `consumed` samples of that epoch's order), in the history `lineage` (an id the coordinator handed out
 * with the state; see coordinator/restore.ts). A worker that joined mid-run has no state yet (lineage ''). The
 * coordinator restores every replica from the most advanced one of the current lineage, so no completed step is lost
 * when the membership changes, nor when a restarted coordinator resumes.
 */
export interface ReadyMessage {
  type: 'ready';
  gen: number;
  rank: number;
  step: number;
  hasState: boolean;
  epoch: number;
  consumed: number;
  lineage: string;
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
/**
 * A ring link of this worker is down. `during: 'forming'`: its dial to the successor `peerRank` failed `attempts`
 * times (with backoff) within the ring form timeout, so that peer's ring address cannot be reached. `during:
 * 'training'`: an open link to `peerRank` (successor or predecessor) was lost although the ring was not re-formed.
 * Either way the coordinator re-forms the ring; a successor unreachable while forming is evicted.
 */
export interface RingLinkDownMessage {
  type: 'ringLinkDown';
  gen: number;
  rank: number;
  peerRank: number;
  during: 'forming' | 'training';
  attempts: number;
  reason: string;
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
  /** Gradient bytes this worker sent to its ring successor in the step (frames as sent: fp16 halves them). */
  sentBytes?: number;
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
  /**
   * The run config (RunConfig, shared/config.ts): the fields of the option tables' TRAIN_OPTIONS and RUN_OPTIONS.
   * Here only checked to be a map; the worker validates it with the command line's validator (validateRunConfig).
   */
  config: { [K in keyof RunConfig]?: unknown };
  /** The model's topology (layers model JSON) the coordinator built once: workers need no copy of a user's module. */
  modelTopology?: string;
}
/** `optimizer` may be empty (fresh optimizer state). The state stands at (epoch, consumed, step) of `lineage`. */
export interface StartMessage {
  type: 'start';
  gen: number;
  epoch: number;
  step: number;
  consumed: number;
  lineage: string;
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
  | StallMessage
  | RingLinkDownMessage;
export type CoordinatorToWorkerMessage =
  WelcomeMessage | AssignMessage | StartMessage | ShardMessage | RequestWeightsMessage | StopMessage;
export type Message = WorkerToCoordinatorMessage | CoordinatorToWorkerMessage | RingHelloMessage | ChallengeMessage;
export type MessageOf<T extends MessageType> = Extract<Message, { type: T }>;
