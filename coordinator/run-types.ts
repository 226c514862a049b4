/** The coordinator's options, the states it holds and hands out, and its run phases. */
import type { Compression } from '../shared/ring/allreduce.js';
import type { TrainConfig } from '../shared/config.js';
import type { Dataset } from '../shared/data/dataset.js';
import type { CoordinatorModel } from '../shared/train/run-model.js';
import type { ControlLink } from '../shared/control-link.js';
import type { Logger } from '../shared/log.js';
import type { DatasetInfo, MessageOf } from '../shared/wire/protocol.js';
import type { Transitions } from '../shared/phases.js';
import type { CheckpointMeta } from './checkpoints.js';
import type { Position } from './epoch-plan.js';
import type { HeldState } from './restore.js';
import type { RunObserver, RunSummaryView } from './events.js';
import type { EpochOutcome, PhaseMeans, WaitSummary } from './run-state.js';

export interface CoordinatorOptions {
  minWorkers: number;
  /** 0 = no limit. */
  maxWorkers: number;
  rendezvousTimeoutMs: number;
  checkEvery: number;
  reportEvery: number;
  heartbeatMs: number;
  heartbeatMisses: number;
  /** Evict the worker a stalled step waits on after this long (0 = never; heartbeats still apply). */
  stallAbortMs: number;
  /** How long stall reports are collected before the verdict (default: two heartbeat intervals). */
  stallGraceMs?: number;
  /** Evict the members of a new ring that are not ready within this time (the rest go on). */
  ringFormTimeoutMs: number;
  /** Checkpoint every this many steps (0 = only at the end of every epoch). */
  checkpointEvery: number;
  /** After the end, how long to wait for evicted workers to come back and learn it (they would retry otherwise). */
  lingerMs: number;
  nonFinite: 'skip' | 'abort';
  /** Gradient wire encoding the workers use (`--compression`); default 'none'. */
  compression?: Compression;
}

/** A replica state the coordinator holds: a checkpoint to resume from, or the last one it committed. */
export interface StoredState {
  position: Position;
  weights: Float32Array;
  optimizer: Float32Array;
  lineage: string;
}

/** The state restores fall back on, and where it came from. */
export type HeldStateRecord = StoredState & { origin: HeldState['origin'] };

export interface ResumeState extends StoredState {
  runId: string;
  /** The checkpoint file it was read from. */
  file?: string;
  history: EpochOutcome[];
  totalSamples: number;
}

/** What --summary-json holds: the fields observers see at the end of a run, and the cluster's details. */
export interface ClusterSummary extends RunSummaryView, WaitSummary {
  runId: string;
  model: string;
  backend: string;
  generations: number;
  phaseMeanMs: PhaseMeans;
  hashChecks: number;
  hashMismatches: number;
  nonFiniteSteps: number;
  history: EpochOutcome[];
  /** Why the run ended. */
  reason: string;
}

/** Where checkpoints go (coordinator/checkpoints.ts's store, or a test's). */
export interface CheckpointSink {
  save(meta: Omit<CheckpointMeta, 'createdAt'>, weights: Float32Array, optimizer: Float32Array): Promise<string>;
}

export type RunPhase = 'rendezvous' | 'waiting' | 'forming' | 'syncing' | 'training' | 'ended';

export const RUN_PHASES: Transitions<RunPhase> = {
  rendezvous: ['forming', 'ended'],
  waiting: ['waiting', 'forming', 'ended'],
  forming: ['forming', 'waiting', 'syncing', 'ended'],
  syncing: ['forming', 'waiting', 'training', 'ended'],
  // training -> training: the next epoch's plan
  training: ['training', 'forming', 'waiting', 'ended'],
  ended: [],
};

export interface CoordinatorDeps {
  runId: string;
  train: TrainConfig;
  opts: CoordinatorOptions;
  data: Dataset;
  /** The full dataset's description (before --train-limit / --test-limit), which local copies must match. */
  dataInfo: DatasetInfo;
  /** The model the workers build (its topology), the weights it brought, and where the trained one is saved. */
  model?: CoordinatorModel;
  checkpoints: CheckpointSink;
  resume?: ResumeState;
  /** For debugging traces only; facts go to the event stream. */
  log: Logger;
  observers: RunObserver[];
}

/** A worker the coordinator holds a control link to. */
export interface WorkerRecord {
  id: string;
  link: ControlLink;
  host: string;
  ringHost: string;
  ringPort: number;
  hasData: boolean;
  backend: string;
  rank: number;
  /** The generation whose membership first included it (a newcomer of the current ring when equal to it). */
  since: number;
  ready?: MessageOf<'ready'>;
  lastSeen: number;
  evicted: boolean;
  log: Logger;
}
